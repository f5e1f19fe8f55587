public import FaultToleranceCore

/// The pure decision-maker behind ``ElasticJournal``: which storage units each journal
/// holds, when to take one more from the pool, when a unit has aged out of its journal's
/// window, and what to drop early when a quota or the pool runs out.
///
/// It never performs I/O or reads a clock: callers pass the time and carry out the
/// ``AgeOut``s it returns (apply the unit's writes to the base images, then release it)
/// before reporting back with ``released(journal:unit:)``. The simulation drives this same
/// value.
///
/// Rules:
/// 1. A journal's last unit is its *active* unit; records go there until it is full.
/// 2. A unit other than the active one ages out once its newest record is older than
///    `now - window` (``expired(journal:now:)``). So a journal holds the units its window needs,
///    plus its active unit.
/// 3. A full active unit needs a new one (``planRollover(journal:now:)``). At its quota,
///    the journal drops its oldest unit early; when the pool is exhausted, likewise. Early
///    drops are reported (``AgeOut/reason``) and shorten the ``effectiveWindow(journal:now:)``
///    — never silently. Units past the window that are not needed for room are handed back
///    apart (``RolloverPlan/allocate(dropping:expiring:)``): the appender who rolls over
///    need not wait for them.
/// 4. When a new unit is needed and nothing can be dropped, the answer is
///    ``RolloverPlan/wait`` if another journal is releasing units (back-pressure), else
///    ``RolloverPlan/reject(_:)``.
public struct JournalManager: Sendable {
    /// How a journal may use the pool.
    public struct Policy: Sendable, Hashable {
        /// How much history the journal keeps.
        public var window: Duration
        /// The most units the journal may hold (at least 2: a sealed one and the active one).
        public var quota: Int

        /// Creates a policy.
        public init(window: Duration, quota: Int) {
            self.window = window
            self.quota = quota
        }
    }

    /// What a unit holds, as far as the manager needs to know.
    public struct UnitSpan: Sendable, Hashable {
        /// The unit.
        public var unit: UnitID
        /// The first sequence number the unit holds or will hold.
        public var firstSequence: UInt64
        /// The last sequence number in the unit (`firstSequence - 1` when empty).
        public var lastSequence: UInt64
        /// The earliest time in the unit.
        public var firstTime: Instant
        /// The latest time in the unit.
        public var lastTime: Instant

        /// Creates a span.
        public init(unit: UnitID, firstSequence: UInt64, lastSequence: UInt64, firstTime: Instant, lastTime: Instant) {
            self.unit = unit
            self.firstSequence = firstSequence
            self.lastSequence = lastSequence
            self.firstTime = firstTime
            self.lastTime = lastTime
        }

        /// Whether the unit holds no record.
        public var isEmpty: Bool { lastSequence < firstSequence }
    }

    /// Why history leaves a journal.
    public enum Reason: String, Sendable, Hashable, CaseIterable {
        /// Every record is older than the window: the normal case.
        case aged
        /// The journal's quota forced an early drop.
        case quota
        /// The pool had no unit left, so the journal gave up its own oldest history.
        case poolExhausted
    }

    /// One unit leaving a journal: apply its writes (sequence ≤ ``applyThrough``) to the
    /// base images, then release it and call ``JournalManager/released(journal:unit:)``.
    public struct AgeOut: Sendable, Hashable {
        /// The journal.
        public var journal: JournalID
        /// The unit to release.
        public var unit: UnitID
        /// The last sequence in the unit: the base images will contain every write up to it.
        public var applyThrough: UInt64
        /// The time of that record: the journal's new window start.
        public var throughTime: Instant
        /// Why: aged out normally, or dropped early.
        public var reason: Reason
    }

    /// The answer to "the active unit is full".
    public enum RolloverPlan: Sendable, Hashable {
        /// Carry out `dropping` (possibly none: the age-outs that make room), then allocate a
        /// unit; `expiring` (units past the window, not needed for room) may be carried out
        /// after, off the appending thread.
        case allocate(dropping: [AgeOut], expiring: [AgeOut])
        /// Back-pressure: another journal is releasing units; try again after it has.
        case wait
        /// No unit can be had: the append fails with this reason.
        case reject(String)
    }

    private struct Journal {
        var policy: Policy
        var units: [UnitSpan]
        var releasing: Set<UnitID> = []
        var windowStart: Instant
        var earlyDrops = 0
    }

    /// How many units the pool can hold in all.
    public let poolCapacity: Int
    private var journals: [JournalID: Journal] = [:]

    /// Creates a manager for a pool of `poolCapacity` units.
    public init(poolCapacity: Int) {
        self.poolCapacity = poolCapacity
    }

    /// Registers a journal with the units it holds (oldest first; the last is active) and
    /// the oldest instant its base images can reconstruct.
    public mutating func addJournal(_ id: JournalID, policy: Policy, units: [UnitSpan], windowStart: Instant) {
        journals[id] = Journal(policy: policy, units: units, windowStart: windowStart)
    }

    /// Units held by every journal, those being released included.
    public var unitsHeld: Int { journals.values.reduce(0) { $0 + $1.units.count } }

    /// The units a journal holds, oldest first.
    public func units(of journal: JournalID) -> [UnitSpan] { journals[journal]?.units ?? [] }

    /// The oldest instant the journal can reconstruct.
    public func windowStart(of journal: JournalID) -> Instant? { journals[journal]?.windowStart }

    /// How many times the journal lost history early.
    public func earlyDrops(of journal: JournalID) -> Int { journals[journal]?.earlyDrops ?? 0 }

    /// The history actually available at `now`: the configured window, or less when history
    /// was dropped early (or the journal is younger than its window).
    public func effectiveWindow(journal: JournalID, now: Instant) -> Duration {
        guard let state = journals[journal] else { return .zero }
        let available = now - state.windowStart
        return available < state.policy.window ? max(.zero, available) : state.policy.window
    }

    /// Records that the journal's active unit now ends at `sequence`/`time`.
    public mutating func recordsAppended(journal: JournalID, through sequence: UInt64, at time: Instant) {
        guard var state = journals[journal], var active = state.units.last else { return }
        active.lastSequence = sequence
        active.lastTime = max(active.lastTime, time)
        state.units[state.units.count - 1] = active
        journals[journal] = state
    }

    /// Records that the journal started a new active unit.
    public mutating func unitStarted(journal: JournalID, span: UnitSpan) {
        journals[journal]?.units.append(span)
    }

    /// Decides how the journal gets its next unit (rule 3 and 4).
    public mutating func planRollover(journal: JournalID, now: Instant) -> RolloverPlan {
        guard var state = journals[journal] else { return .reject("unknown journal \(journal)") }
        let expired = expiredUnits(of: state, now: now)
        // Room comes first, oldest first; a unit past the window goes as aged either way.
        var drops: [AgeOut] = []
        var held = state.units.count
        var poolHeld = unitsHeld
        var candidates = state.units.dropLast().filter { !state.releasing.contains($0.unit) }[...]
        while held + 1 > state.policy.quota || poolHeld + 1 > poolCapacity {
            let reason: Reason = held + 1 > state.policy.quota ? .quota : .poolExhausted
            guard let oldest = candidates.popFirst() else {
                if reason == .poolExhausted && journals.values.contains(where: { !$0.releasing.isEmpty }) {
                    return .wait
                }
                return .reject(
                    reason == .quota
                        ? "journal \(journal) holds its quota of \(state.policy.quota) units and none can be dropped"
                        : "the pool's \(poolCapacity) units are all in use and \(journal) has no history to drop")
            }
            let aged = expired.contains { $0.unit == oldest.unit }
            drops.append(ageOut(of: oldest, journal: journal, reason: aged ? .aged : reason))
            held -= 1
            poolHeld -= 1
        }
        let expiring = expired.filter { span in !drops.contains { $0.unit == span.unit } }.map {
            ageOut(of: $0, journal: journal, reason: .aged)
        }
        for drop in drops + expiring {
            state.releasing.insert(drop.unit)
            if drop.reason != .aged { state.earlyDrops += 1 }
        }
        journals[journal] = state
        return .allocate(dropping: drops, expiring: expiring)
    }

    /// Age-outs of `journal` due at `now` (rule 2), oldest first. Each is marked as
    /// releasing until ``released(journal:unit:)`` or ``abandoned(journal:unit:)``.
    public mutating func expired(journal: JournalID, now: Instant) -> [AgeOut] {
        guard var state = journals[journal] else { return [] }
        let due = expiredUnits(of: state, now: now)
        for span in due { state.releasing.insert(span.unit) }
        journals[journal] = state
        return due.map { ageOut(of: $0, journal: journal, reason: .aged) }
    }

    /// Records that an age-out finished: the unit is gone, the window starts at its last
    /// record. Age-outs of one journal must finish oldest first.
    public mutating func released(journal: JournalID, unit: UnitID) {
        guard var state = journals[journal], let index = state.units.firstIndex(where: { $0.unit == unit }) else {
            return
        }
        let span = state.units.remove(at: index)
        state.releasing.remove(unit)
        if !span.isEmpty { state.windowStart = max(state.windowStart, span.lastTime) }
        journals[journal] = state
    }

    /// Forgets an age-out that could not be carried out, so it can be planned again.
    public mutating func abandoned(journal: JournalID, unit: UnitID) {
        journals[journal]?.releasing.remove(unit)
    }

    private func expiredUnits(of state: Journal, now: Instant) -> [UnitSpan] {
        let horizon = now + .nanoseconds(-state.policy.window.nanoseconds)
        var result: [UnitSpan] = []
        for span in state.units.dropLast() {
            guard span.lastTime < horizon else { break }
            if !state.releasing.contains(span.unit) { result.append(span) }
        }
        return result
    }

    private func ageOut(of span: UnitSpan, journal: JournalID, reason: Reason) -> AgeOut {
        AgeOut(
            journal: journal, unit: span.unit, applyThrough: span.lastSequence, throughTime: span.lastTime,
            reason: reason)
    }
}
