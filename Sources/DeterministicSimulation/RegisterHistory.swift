public import FaultToleranceCore

/// The operations clients ran on one register (one key of a store), with when each was invoked
/// and answered, and a linearizability check of them: is there one order of the operations,
/// each taking effect at an instant between its invocation and its answer, in which every
/// read saw the latest write? (The check Knossos and Porcupine make, by the search of Wing and
/// Gong with Lowe's memoization.)
///
/// Values are integers the caller assigns (distinct per write); ``absent`` is the register
/// before any write, and after a delete.
///
/// An operation whose answer never came (the client timed out) may have taken effect, or not:
/// it is *open*. Give it the latest instant it could still take effect, when one is known (a
/// later request of the same client that the server's session makes it refuse), or nil.
///
/// ```swift
/// var history = RegisterHistory()
/// history.record(.write(1), invoked: t0, answered: t1)
/// history.record(.read(1), invoked: t2, answered: t3)
/// guard case .linearizable = history.check() else { ... }
/// ```
public struct RegisterHistory: Sendable {
    /// The value of a register nobody wrote (or that was deleted).
    public static let absent = 0

    /// What an operation did, and what it answered.
    public enum Operation: Sendable, Hashable, CustomStringConvertible {
        /// Set the value (``RegisterHistory/absent``: delete).
        case write(Int)
        /// Read, and saw this value.
        case read(Int)
        /// Set `new` if the value was `expected`; whether it did (nil: the answer never came).
        case compareAndSet(expected: Int, new: Int, succeeded: Bool?)

        /// A short account, for failure messages.
        public var description: String {
            switch self {
            case .write(let value): "write \(value)"
            case .read(let value): "read \(value)"
            case .compareAndSet(let expected, let new, let succeeded):
                "cas \(expected)->\(new) \(succeeded.map { $0 ? "ok" : "failed" } ?? "?")"
            }
        }

        /// The value after this operation on `value`, or nil when its answer rules it out there.
        func apply(to value: Int) -> Int? {
            switch self {
            case .write(let new): return new
            case .read(let seen): return seen == value ? value : nil
            case .compareAndSet(let expected, let new, let succeeded):
                switch succeeded {
                case true?: return value == expected ? new : nil
                case false?: return value != expected ? value : nil
                case nil: return value == expected ? new : value
                }
            }
        }
    }

    /// One recorded operation.
    public struct Record: Sendable, Hashable {
        /// What it did and answered.
        public var operation: Operation
        /// The client that ran it (for failure messages).
        public var client: UInt64
        /// When the client sent it.
        public var invoked: Instant
        /// When the answer arrived; for an open operation, the latest instant it may take
        /// effect (nil: any time).
        public var answered: Instant?
        /// Whether the answer arrived.
        public var completed: Bool
    }

    /// The outcome of ``check(initial:budget:)``.
    public enum Outcome: Sendable, Hashable {
        /// An order exists.
        case linearizable
        /// None exists; the message names the operations around where every order failed.
        case violation(String)
        /// The search ran out of its budget of steps before deciding.
        case undecided(steps: Int)
    }

    /// The operations, in the order recorded.
    public private(set) var records: [Record] = []
    /// The indexes of open operations not yet given a latest instant.
    private var unbounded: [Int] = []

    /// An empty history.
    public init() {}

    /// Records an answered operation.
    public mutating func record(_ operation: Operation, client: UInt64 = 0, invoked: Instant, answered: Instant) {
        records.append(
            Record(
                operation: operation, client: client, invoked: invoked, answered: max(invoked, answered),
                completed: true))
    }

    /// Records an operation whose answer never came; it may have taken effect at any instant
    /// from `invoked` up to `latest` (nil: any later instant), or never. A read that was not
    /// answered changed nothing: it is not recorded.
    public mutating func recordOpen(_ operation: Operation, client: UInt64 = 0, invoked: Instant, latest: Instant?) {
        if case .read = operation { return }
        if latest == nil { unbounded.append(records.count) }
        records.append(
            Record(
                operation: operation, client: client, invoked: invoked, answered: latest.map { max(invoked, $0) },
                completed: false))
    }

    /// Adds `other`'s operations (another client's, on the same register).
    public mutating func append(_ other: RegisterHistory) {
        unbounded += other.unbounded.map { $0 + records.count }
        records += other.records
    }

    /// Sets the latest instant open operations of `client` invoked before `instant` may take
    /// effect (a later request of the client took effect by then, and the server refuses older
    /// ones), where none was set.
    public mutating func closeOpenOperations(of client: UInt64, by instant: Instant) {
        unbounded.removeAll { index in
            guard records[index].client == client, records[index].invoked < instant else { return false }
            records[index].answered = instant
            return true
        }
    }

    /// Searches for an order. `budget` bounds the steps (each a linearization tried or undone).
    public func check(initial: Int = RegisterHistory.absent, budget: Int = 2_000_000) -> Outcome {
        var search = Search(records: records)
        return search.run(initial: initial, budget: budget)
    }
}

/// The search of Wing and Gong over a doubly linked list of invocation and answer events, with
/// Lowe's cache of (operations done, value) pairs already explored.
private struct Search {
    struct Event {
        var record: Int
        var isCall: Bool
        var time: Int64
    }

    enum Frame {
        /// The operation was linearized here, on `value`.
        case applied(record: Int, value: Int, call: Int)
        /// The open operation was given up (it never took effect).
        case dropped(record: Int, call: Int)
    }

    struct Key: Hashable {
        var done: [UInt64]
        var value: Int
    }

    let records: [RegisterHistory.Record]
    var events: [Event] = []
    /// Links, with index `events.count` as the head sentinel.
    var next: [Int] = []
    var previous: [Int] = []
    /// Each record's call and answer events (the answer of an open one without a bound: none).
    var callEvent: [Int] = []
    var answerEvent: [Int?] = []

    init(records: [RegisterHistory.Record]) {
        self.records = records
        for (index, record) in records.enumerated() {
            events.append(Event(record: index, isCall: true, time: record.invoked.nanoseconds))
            if let answered = record.answered {
                events.append(Event(record: index, isCall: false, time: answered.nanoseconds))
            }
        }
        // In time order; at one instant, calls first (overlapping: the more orders allowed).
        events.sort { lhs, rhs in
            if lhs.time != rhs.time { return lhs.time < rhs.time }
            if lhs.isCall != rhs.isCall { return lhs.isCall }
            return lhs.record < rhs.record
        }
        let head = events.count
        next = Array(repeating: head, count: events.count + 1)
        previous = Array(repeating: head, count: events.count + 1)
        var last = head
        for index in events.indices {
            next[last] = index
            previous[index] = last
            last = index
        }
        next[last] = head
        previous[head] = last
        callEvent = Array(repeating: 0, count: records.count)
        answerEvent = Array(repeating: nil, count: records.count)
        for (index, event) in events.enumerated() {
            if event.isCall { callEvent[event.record] = index } else { answerEvent[event.record] = index }
        }
    }

    var head: Int { events.count }

    mutating func unlink(_ event: Int) {
        next[previous[event]] = next[event]
        previous[next[event]] = previous[event]
    }

    mutating func relink(_ event: Int) {
        next[previous[event]] = event
        previous[next[event]] = event
    }

    /// Takes a record's events out of the list (answer first, so relinking in reverse order
    /// restores the list).
    mutating func remove(_ record: Int) {
        if let answer = answerEvent[record] { unlink(answer) }
        unlink(callEvent[record])
    }

    mutating func restore(_ record: Int) {
        relink(callEvent[record])
        if let answer = answerEvent[record] { relink(answer) }
    }

    mutating func run(initial: Int, budget: Int) -> RegisterHistory.Outcome {
        var remaining = records.filter(\.completed).count
        var done = [UInt64](repeating: 0, count: (records.count + 63) / 64)
        var value = initial
        var stack: [Frame] = []
        var cache: Set<Key> = []
        var steps = 0
        var cursor = next[head]
        // The furthest the search got, for the failure message.
        var deepest = 0
        var stuckAt: Int?
        while remaining > 0 {
            steps += 1
            if steps > budget { return .undecided(steps: steps) }
            if cursor == head {
                // Only calls of open operations were left to try, and none fit: undo.
                guard backtrack(&stack, &value, &done, &remaining, &cursor) else { return failure(stuckAt) }
                continue
            }
            let event = events[cursor]
            let record = event.record
            if event.isCall {
                if let after = records[record].operation.apply(to: value) {
                    var key = Key(done: done, value: after)
                    key.done[record / 64] |= 1 << UInt64(record % 64)
                    if cache.insert(key).inserted {
                        stack.append(.applied(record: record, value: value, call: callEvent[record]))
                        value = after
                        done = key.done
                        if records[record].completed { remaining -= 1 }
                        remove(record)
                        cursor = next[head]
                        if stack.count > deepest { deepest = stack.count }
                        continue
                    }
                }
                cursor = next[cursor]
            } else if !records[record].completed {
                // The last instant an open operation could take effect passed without it: it
                // never did.
                var key = Key(done: done, value: value)
                key.done[record / 64] |= 1 << UInt64(record % 64)
                if cache.insert(key).inserted {
                    stack.append(.dropped(record: record, call: callEvent[record]))
                    done = key.done
                    remove(record)
                    cursor = next[head]
                } else {
                    guard backtrack(&stack, &value, &done, &remaining, &cursor) else { return failure(stuckAt) }
                }
            } else {
                // An answered operation not placed before its answer: undo the last choice.
                if stack.count >= deepest { stuckAt = record }
                guard backtrack(&stack, &value, &done, &remaining, &cursor) else { return failure(stuckAt) }
            }
        }
        return .linearizable
    }

    /// Undoes the newest linearization (and any give-ups above it) and moves the cursor past
    /// its call; false when nothing is left to undo.
    mutating func backtrack(
        _ stack: inout [Frame], _ value: inout Int, _ done: inout [UInt64], _ remaining: inout Int, _ cursor: inout Int
    ) -> Bool {
        while let frame = stack.popLast() {
            switch frame {
            case .dropped(let record, _):
                restore(record)
                done[record / 64] &= ~(1 << UInt64(record % 64))
            case .applied(let record, let before, let call):
                restore(record)
                done[record / 64] &= ~(1 << UInt64(record % 64))
                value = before
                if records[record].completed { remaining += 1 }
                cursor = next[call]
                return true
            }
        }
        return false
    }

    func failure(_ record: Int?) -> RegisterHistory.Outcome {
        guard let record else { return .violation("no order of the operations fits their answers") }
        let stuck = records[record]
        // The operations that overlap it, for the reader.
        let window = records.filter { other in
            guard let answered = stuck.answered else { return false }
            let otherEnd = other.answered ?? Instant(nanoseconds: .max)
            return other.invoked <= answered && otherEnd >= stuck.invoked
        }
        let around = window.prefix(8).map {
            "client \($0.client) \($0.operation) [\($0.invoked), \($0.answered.map { "\($0)" } ?? "open")]"
        }
        return .violation(
            "client \(stuck.client)'s \(stuck.operation) answered at \(stuck.answered.map { "\($0)" } ?? "-") fits no order; "
                + "around it: \(around.joined(separator: "; "))")
    }
}
