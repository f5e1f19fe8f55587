/// The time source of a runtime: what it reads as "now" and how it waits.
///
/// Runtimes in this library (``Transport`` users such as the heartbeat service and its
/// witness) take a clock instead of reading `ContinuousClock`, so the same code runs in real
/// time in production and in virtual time under `DeterministicSimulation`, where a seed fixes
/// every wake-up. Instants are ``Instant``s on the clock's own timeline: compare instants of
/// one clock only.
public protocol RuntimeClock: Sendable {
    /// The current instant.
    var now: Instant { get }

    /// Suspends until `deadline` (returns at once if it has passed). Throws
    /// `CancellationError` if the task is cancelled first.
    func sleep(until deadline: Instant) async throws

    /// The executor the tasks a runtime starts on its own (a receive loop, a send queue)
    /// prefer, or `nil` for Swift's global executor. A simulation's clock returns its
    /// deterministic executor, so those tasks run in virtual time with the rest of the run.
    var taskExecutor: (any TaskExecutor)? { get }
}

extension RuntimeClock {
    /// Swift's global executor.
    public var taskExecutor: (any TaskExecutor)? { nil }

    /// Suspends for `duration`.
    public func sleep(for duration: Duration) async throws {
        try await sleep(until: now + duration)
    }
}

/// Real time: `ContinuousClock`, with instants counted from the moment this value was made.
public struct SystemClock: RuntimeClock {
    private let origin: ContinuousClock.Instant

    /// Creates a clock whose ``now`` starts at ``Instant/zero``.
    public init() { origin = ContinuousClock.now }

    /// Nanoseconds since the clock was made.
    public var now: Instant { Instant(nanoseconds: (ContinuousClock.now - origin).nanoseconds) }

    /// Sleeps on `ContinuousClock` until `deadline`.
    public func sleep(until deadline: Instant) async throws {
        try await ContinuousClock().sleep(until: origin.advanced(by: .nanoseconds(deadline.nanoseconds)))
    }
}
