public import FaultToleranceCore

/// Decides when a worn member's data should move to the hot spare, as a pure state machine (no
/// clock, no I/O): a runtime feeds it each member's cumulative media and host byte counts
/// (``SimulatedFlash/Wear``, `smartctl`, an NVMe log) with the time, and asks it what to do.
///
/// A member's write amplification is taken over a sliding window: media bytes over host bytes
/// written between its oldest sample in the window and its newest, and only once the host
/// wrote at least ``Policy/minimumHostBytes`` in it (a quiet member is not judged). A member
/// becomes *worn* when that rises to ``Policy/threshold``, and *healthy* again only when it
/// falls below ``Policy/clearBelow`` (hysteresis: a member near the threshold does not flap). A
/// migration is proposed for the worn member with the highest write amplification that has
/// stayed worn for ``Policy/minimumDwell``, only while no migration runs and a spare is free.
/// Every change of a member's state and every proposal is recorded with its reason
/// (``transitions``), as HeartbeatQuorum records its evidence.
public struct WearMonitor: Sendable {
    /// When a member counts as worn, and when its migration may start.
    public struct Policy: Sendable, Hashable {
        /// Write amplification at or above which a member is worn.
        public var threshold: Double
        /// Write amplification below which a worn member is healthy again (at most `threshold`).
        public var clearBelow: Double
        /// The span the write amplification is taken over.
        public var window: Duration
        /// How long a member must have been worn before its migration is proposed.
        public var minimumDwell: Duration
        /// The fewest host bytes in the window for a member to be judged at all.
        public var minimumHostBytes: UInt64

        /// A policy; the defaults migrate a member whose write amplification stayed at 3 or
        /// more for five minutes, over a ten-minute window with at least 64 MiB written.
        public init(
            threshold: Double = 3, clearBelow: Double = 2.5, window: Duration = .seconds(600),
            minimumDwell: Duration = .seconds(300), minimumHostBytes: UInt64 = 64 << 20
        ) {
            self.threshold = threshold
            self.clearBelow = min(clearBelow, threshold)
            self.window = window
            self.minimumDwell = minimumDwell
            self.minimumHostBytes = minimumHostBytes
        }
    }

    /// A member's standing.
    public enum State: Sendable, Hashable {
        /// Not judged yet, or below the threshold (or back below ``Policy/clearBelow``).
        case healthy
        /// At or above the threshold since `since`.
        case worn(since: Instant)
    }

    /// One change, with its reason.
    public struct Transition: Sendable, Hashable, CustomStringConvertible {
        /// The member.
        public var member: UnitID
        /// When it was decided.
        public var at: Instant
        /// Its state after.
        public var state: State
        /// Why, in words with the figures.
        public var reason: String

        /// Creates a record.
        public init(member: UnitID, at: Instant, state: State, reason: String) {
            self.member = member
            self.at = at
            self.state = state
            self.reason = reason
        }

        /// `unit-1 at 300.000s: worn (write amplification 3.41 over ...)`.
        public var description: String {
            let word: String
            switch state {
            case .healthy: word = "healthy"
            case .worn: word = "worn"
            }
            return "\(member) at \(at): \(word) (\(reason))"
        }
    }

    /// What ``evaluate(now:freeSpares:migrating:)`` proposes.
    public enum Verdict: Sendable, Hashable {
        /// Nothing to do; the reason when a worn member waits (dwell, no spare, a migration
        /// running), or `nil`.
        case none(waiting: String?)
        /// Move `member`'s live data to a spare; `writeAmplification` over the window.
        case migrate(member: UnitID, writeAmplification: Double)
    }

    private struct Sample: Sendable {
        var at: Instant
        var media: UInt64
        var host: UInt64
    }

    /// The policy.
    public let policy: Policy
    /// Each member's standing.
    public private(set) var states: [UnitID: State] = [:]
    /// Every change of standing and every proposal, oldest first (the last 256).
    public private(set) var transitions: [Transition] = []
    private var samples: [UnitID: [Sample]] = [:]

    /// A monitor with no members yet (each appears with its first sample).
    public init(policy: Policy = Policy()) {
        self.policy = policy
    }

    /// Records `member`'s cumulative counts at `now`. Counts that went backwards (a replaced
    /// drive, a reset counter) start its window again; samples older than the window are
    /// dropped, all but the newest of them (the window's base).
    public mutating func observe(_ member: UnitID, media: UInt64, host: UInt64, at now: Instant) {
        var history = samples[member] ?? []
        if let last = history.last, media < last.media || host < last.host || now < last.at {
            history.removeAll()
            record(member, at: now, state: .healthy, reason: "counters went backwards: its window starts again")
        }
        history.append(Sample(at: now, media: media, host: host))
        let start = now - policy.window
        while history.count > 1, history[1].at <= start { history.removeFirst() }
        samples[member] = history
        if states[member] == nil { states[member] = .healthy }
    }

    /// `member`'s write amplification over the window, or `nil` while the host wrote less than
    /// ``Policy/minimumHostBytes`` in it.
    public func writeAmplification(of member: UnitID) -> Double? {
        guard let history = samples[member], let first = history.first, let last = history.last else { return nil }
        let host = last.host - first.host
        guard host >= max(policy.minimumHostBytes, 1) else { return nil }
        return Double(last.media - first.media) / Double(host)
    }

    /// Updates every member's standing at `now` and proposes at most one migration.
    public mutating func evaluate(now: Instant, freeSpares: Int, migrating: Bool) -> Verdict {
        // Each member's figure once: the standing below and the choice after use the same.
        var amplifications: [UnitID: Double] = [:]
        for member in states.keys.sorted() {
            guard let amplification = writeAmplification(of: member) else { continue }
            amplifications[member] = amplification
            let figures = "write amplification \(rounded(amplification)) over \(policy.window)"
            switch states[member] ?? .healthy {
            case .healthy where amplification >= policy.threshold:
                record(member, at: now, state: .worn(since: now), reason: "\(figures), at or above \(policy.threshold)")
            case .worn where amplification < policy.clearBelow:
                record(member, at: now, state: .healthy, reason: "\(figures), below \(policy.clearBelow)")
            default:
                break
            }
        }
        let worn = states.compactMap { member, state -> (UnitID, Instant, Double)? in
            guard case .worn(let since) = state, let amplification = amplifications[member] else { return nil }
            return (member, since, amplification)
        }
        guard !worn.isEmpty else { return .none(waiting: nil) }
        let ready = worn.filter { now - $0.1 >= policy.minimumDwell }
        // The most amplified first; equal ones by member, so the choice does not depend on order.
        guard let chosen = ready.max(by: { ($0.2, $1.0) < ($1.2, $0.0) }) else {
            return .none(waiting: "worn for less than \(policy.minimumDwell)")
        }
        if migrating { return .none(waiting: "a migration is running (one at a time)") }
        guard freeSpares > 0 else { return .none(waiting: "no spare is free") }
        return .migrate(member: chosen.0, writeAmplification: chosen.2)
    }

    /// `member`'s data has moved and its old area is erased: it is judged afresh (it becomes
    /// the new spare, or leaves).
    public mutating func migrated(_ member: UnitID, at now: Instant) {
        samples[member] = nil
        record(member, at: now, state: .healthy, reason: "migrated and erased: judged afresh")
    }

    /// `member` left the array: forgotten.
    public mutating func remove(_ member: UnitID) {
        samples[member] = nil
        states[member] = nil
    }

    private mutating func record(_ member: UnitID, at now: Instant, state: State, reason: String) {
        states[member] = state
        transitions.append(Transition(member: member, at: now, state: state, reason: reason))
        if transitions.count > 256 { transitions.removeFirst() }
    }

    private func rounded(_ value: Double) -> String {
        String((value * 100).rounded() / 100)
    }
}
