public import FaultToleranceCore
import HeapModule

/// A seeded discrete-event simulation: a virtual clock, an event queue and the random source
/// every fault is drawn from.
///
/// Everything that happens in a simulated world is an event scheduled at a virtual instant;
/// ``run(until:)`` pops events in time order (ties in scheduling order) and advances ``now``
/// to each. Nothing reads a real clock or sleeps, so a run of minutes of virtual time takes
/// milliseconds, and the same seed always produces the same run — the approach of
/// FoundationDB's simulator and TigerBeetle's VOPR.
///
/// Timers belong to an owner (a node); ``cancelTimers(of:)`` drops a crashed node's timers.
/// Not thread-safe: a simulation runs on one thread.
public final class Simulation {
    /// The seed this run was built from; print it with any failure.
    public let seed: UInt64
    /// The random source for every scheduling and fault decision.
    public var random: SimulationRandom
    /// The current virtual time.
    public private(set) var now: Instant = .zero
    /// Faults injected so far, by kind.
    public var faults = FaultCounters()
    /// Events executed so far.
    public private(set) var eventsProcessed = 0
    /// A running hash of the run: every event's instant and scheduling order, every message
    /// delivered (``SimulatedNetwork``) and whatever a scenario adds with ``trace(_:)``. Two
    /// runs of one seed have the same hash; a run that diverges anywhere has another one, so
    /// a replay can be checked to be the same run, not only the same verdict.
    public var traceHash: UInt64 { trace.value }
    private var trace = TraceHash()

    private var queue = EventQueue()
    private var nextSequence: UInt64 = 0
    private var cancelled: Set<UInt64> = []
    private var timersByOwner: [NodeID: Set<UInt64>] = [:]

    /// Creates a simulation at virtual time zero.
    public init(seed: UInt64) {
        self.seed = seed
        self.random = SimulationRandom(seed: seed)
    }

    /// A handle for cancelling a scheduled event.
    public struct TimerID: Hashable, Sendable {
        fileprivate let sequence: UInt64
    }

    /// Schedules `action` at `instant` (or now, if `instant` is in the past).
    @discardableResult
    public func schedule(at instant: Instant, owner: NodeID? = nil, _ action: @escaping () -> Void) -> TimerID {
        let sequence = nextSequence
        nextSequence += 1
        queue.push(Event(time: max(instant, now), sequence: sequence, owner: owner, action: action))
        if let owner { timersByOwner[owner, default: []].insert(sequence) }
        return TimerID(sequence: sequence)
    }

    /// Schedules `action` after `delay` of virtual time.
    @discardableResult
    public func schedule(after delay: Duration, owner: NodeID? = nil, _ action: @escaping () -> Void) -> TimerID {
        schedule(at: now + delay, owner: owner, action)
    }

    /// Cancels a scheduled event; cancelling a fired or cancelled event does nothing.
    public func cancel(_ timer: TimerID) {
        cancelled.insert(timer.sequence)
    }

    /// Cancels every pending event owned by `owner` (its process died).
    public func cancelTimers(of owner: NodeID) {
        if let timers = timersByOwner.removeValue(forKey: owner) { cancelled.formUnion(timers) }
    }

    /// Mixes `value` into ``traceHash`` (a scenario's observations: what it wrote, read or
    /// was told).
    public func trace(_ value: UInt64) {
        trace.mix(value)
    }

    /// Runs the next event. Returns `false` when the queue is empty.
    @discardableResult
    public func step() -> Bool {
        while let event = queue.pop() {
            if let owner = event.owner { timersByOwner[owner]?.remove(event.sequence) }
            if cancelled.remove(event.sequence) != nil { continue }
            now = event.time
            eventsProcessed += 1
            trace(UInt64(bitPattern: event.time.nanoseconds))
            trace(event.sequence)
            event.action()
            return true
        }
        return false
    }

    /// The time of the next live event, or `nil` when none is scheduled. Cancelled events at
    /// the head of the queue are dropped on the way.
    public var nextEventTime: Instant? {
        while let event = queue.peek, cancelled.contains(event.sequence) {
            _ = queue.pop()
            cancelled.remove(event.sequence)
            if let owner = event.owner { timersByOwner[owner]?.remove(event.sequence) }
        }
        return queue.peekTime
    }

    /// Runs events until the queue is empty or the next event is after `deadline`; the clock
    /// ends at `deadline`.
    public func run(until deadline: Instant) {
        while let next = queue.peekTime, next <= deadline {
            step()
        }
        if now < deadline { now = deadline }
    }

    /// Runs for `duration` of virtual time from now.
    public func run(for duration: Duration) {
        run(until: now + duration)
    }
}

private struct Event: Comparable {
    let time: Instant
    let sequence: UInt64
    let owner: NodeID?
    let action: () -> Void

    /// Earlier first; ties in scheduling order, which keeps runs deterministic.
    static func < (lhs: Event, rhs: Event) -> Bool {
        lhs.time != rhs.time ? lhs.time < rhs.time : lhs.sequence < rhs.sequence
    }

    /// Sequence numbers are unique: one event each.
    static func == (lhs: Event, rhs: Event) -> Bool { lhs.sequence == rhs.sequence }
}

/// The pending events, soonest first (swift-collections' min-max heap).
private struct EventQueue {
    private var heap = Heap<Event>()

    var peekTime: Instant? { heap.min?.time }
    var peek: Event? { heap.min }

    mutating func push(_ event: Event) { heap.insert(event) }

    mutating func pop() -> Event? { heap.popMin() }
}

/// A running hash of everything a simulated run did, for checking that a replay is the same
/// run: mix in each event, delivery or observation, in order.
public struct TraceHash: Sendable, Hashable {
    /// The hash so far.
    public private(set) var value: UInt64 = 0xcbf2_9ce4_8422_2325

    /// An empty trace.
    public init() {}

    /// Mixes in `input`: any change in any input, or in their order, changes ``value``.
    public mutating func mix(_ input: UInt64) {
        // splitmix64's finaliser over the running value and the input.
        var z = (value ^ input) &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        value = z ^ (z >> 31)
    }
}
