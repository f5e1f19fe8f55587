/// When a live copy stops copying rounds and pauses the writers for the final stop-and-copy.
///
/// ``adaptive(downtimeBudget:throttling:)`` is this library's policy; ``qemu``, ``fixedRounds(_:)`` and
/// ``stopAndCopy`` exist so the same state machine can be compared with the usual
/// alternatives on the same workloads (`ftctl livecopy compare`).
public struct ConvergencePolicy: Sendable, Hashable {
    /// How the decision is made.
    public enum Strategy: Sendable, Hashable {
        /// Switch over when the remaining pages, at a conservative estimate of the bandwidth
        /// (the lowest of the last three rounds, less ``ConvergencePolicy/safetyMargin``) plus
        /// the measured fixed cost, fit the budget. A round whose dirty set did not shrink by
        /// 10 %, or whose shrink rate cannot reach the budget within the round limit, is a
        /// stall: the writers are throttled to the share that lets the copy converge (at
        /// least one ``Throttling/increment`` more), or the copy fails with
        /// ``LiveCopyError/Code/notConverging``.
        case adaptive
        /// QEMU's pre-copy: bandwidth from the last round alone, switch over when remaining
        /// bytes / bandwidth fit the budget (no fixed cost, no margin); throttle when the bytes
        /// dirtied exceed ``ConvergencePolicy/triggerRatio`` of the bytes sent in two rounds,
        /// starting at ``Throttling/initial`` and adding ``Throttling/increment``.
        case qemu
        /// Exactly this many rounds, then switch over whatever remains.
        case fixedRounds(Int)
        /// No rounds: pause at once and copy everything.
        case stopAndCopy
    }

    /// Throttle steps, in percent of writer time held at the gate.
    public struct Throttling: Sendable, Hashable {
        /// The first step.
        public var initial: Int
        /// The increase of each later step.
        public var increment: Int
        /// The most writers are ever held.
        public var maximum: Int

        /// Creates throttle steps (QEMU's defaults: 20, 10, 99).
        public init(initial: Int = 20, increment: Int = 10, maximum: Int = 99) {
            self.initial = initial
            self.increment = increment
            self.maximum = maximum
        }
    }

    /// How the decision is made.
    public var strategy: Strategy
    /// The longest acceptable pause of the writers.
    public var downtimeBudget: Duration
    /// The most rounds before giving up with ``LiveCopyError/Code/roundLimit``.
    public var maximumRounds: Int
    /// Throttle steps; `nil` fails with ``LiveCopyError/Code/notConverging`` on a stall instead.
    public var throttling: Throttling?
    /// The share by which the adaptive policy plans below the lowest bandwidth it measured.
    public var safetyMargin: Double
    /// The qemu policy's throttle trigger: bytes dirtied over bytes sent in a round.
    public var triggerRatio: Double

    /// Creates a policy.
    public init(
        strategy: Strategy,
        downtimeBudget: Duration = .milliseconds(300),
        maximumRounds: Int = 30,
        throttling: Throttling? = Throttling(),
        safetyMargin: Double = 0.1,
        triggerRatio: Double = 0.5
    ) {
        self.strategy = strategy
        self.downtimeBudget = downtimeBudget
        self.maximumRounds = maximumRounds
        self.throttling = throttling
        self.safetyMargin = safetyMargin
        self.triggerRatio = triggerRatio
    }

    /// This library's policy.
    public static func adaptive(
        downtimeBudget: Duration = .milliseconds(300), throttling: Throttling? = Throttling()
    ) -> ConvergencePolicy {
        ConvergencePolicy(strategy: .adaptive, downtimeBudget: downtimeBudget, throttling: throttling)
    }

    /// QEMU's defaults: 300 ms downtime limit, 50 % trigger, throttle 20 % + 10 % up to 99 %.
    /// QEMU itself has no round limit; 200 stands for "never converged" in comparisons.
    public static let qemu = ConvergencePolicy(strategy: .qemu, maximumRounds: 200)

    /// A fixed number of rounds, then stop-and-copy.
    public static func fixedRounds(_ rounds: Int) -> ConvergencePolicy {
        ConvergencePolicy(strategy: .fixedRounds(max(1, rounds)), maximumRounds: max(1, rounds), throttling: nil)
    }

    /// Throws ``LiveCopyError/Code/invalidConfiguration`` naming the first setting out of
    /// range: a downtime budget that is not positive, a negative round limit, a safety margin
    /// outside [0, 1) or a trigger ratio that is not a positive finite number (NaN included),
    /// throttle steps outside 0...99 or not increasing. ``LiveCopy/run()`` checks it first.
    public func validate() throws(LiveCopyError) {
        func reject(_ setting: String, _ value: String, _ range: String) -> LiveCopyError {
            LiveCopyError(.invalidConfiguration, detail: "\(setting) must be \(range), got \(value)")
        }
        guard downtimeBudget > .zero else { throw reject("downtimeBudget", "\(downtimeBudget)", "positive") }
        guard maximumRounds >= 0 else { throw reject("maximumRounds", "\(maximumRounds)", "0 or more") }
        guard safetyMargin.isFinite, safetyMargin >= 0, safetyMargin < 1 else {
            throw reject("safetyMargin", "\(safetyMargin)", "in [0, 1)")
        }
        guard triggerRatio.isFinite, triggerRatio > 0 else {
            throw reject("triggerRatio", "\(triggerRatio)", "a positive finite number")
        }
        if case .fixedRounds(let rounds) = strategy, rounds < 1 {
            throw reject("fixedRounds", "\(rounds)", "1 or more")
        }
        if let throttling {
            guard (0...99).contains(throttling.initial), (0...99).contains(throttling.maximum),
                throttling.initial <= throttling.maximum, throttling.increment >= 0
            else {
                throw reject(
                    "throttling", "\(throttling.initial)+\(throttling.increment) up to \(throttling.maximum)",
                    "steps within 0...99, increasing")
            }
        }
    }

    /// Pause at once and copy everything.
    public static let stopAndCopy = ConvergencePolicy(strategy: .stopAndCopy, maximumRounds: 0, throttling: nil)
}
