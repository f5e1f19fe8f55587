import DeterministicSimulation
import FaultToleranceCore
import Testing

private func ms(_ value: Int) -> Instant { Instant(nanoseconds: Int64(value) * 1_000_000) }

private func isLinearizable(_ history: RegisterHistory) -> Bool {
    if case .linearizable = history.check() { return true }
    return false
}

private func isViolation(_ history: RegisterHistory) -> Bool {
    if case .violation = history.check() { return true }
    return false
}

@Suite("RegisterHistory: per-key linearizability")
struct RegisterHistoryTests {
    @Test("a read after a write completed must see it; overlapping, it may see either")
    func readsAndWrites() {
        var sequential = RegisterHistory()
        sequential.record(.write(1), client: 1, invoked: ms(0), answered: ms(1))
        sequential.record(.read(1), client: 2, invoked: ms(2), answered: ms(3))
        #expect(isLinearizable(sequential))

        var stale = RegisterHistory()
        stale.record(.write(1), client: 1, invoked: ms(0), answered: ms(1))
        stale.record(.write(2), client: 1, invoked: ms(2), answered: ms(3))
        stale.record(.read(1), client: 2, invoked: ms(4), answered: ms(5))
        #expect(isViolation(stale))

        var overlapping = RegisterHistory()
        overlapping.record(.write(1), client: 1, invoked: ms(0), answered: ms(10))
        overlapping.record(.read(RegisterHistory.absent), client: 2, invoked: ms(1), answered: ms(2))
        overlapping.record(.read(1), client: 3, invoked: ms(3), answered: ms(4))
        #expect(isLinearizable(overlapping))
        // Once one reader saw the new value, a later read may not see the old one.
        overlapping.record(.read(RegisterHistory.absent), client: 2, invoked: ms(5), answered: ms(6))
        #expect(isViolation(overlapping))
    }

    @Test("an unanswered write may take effect, or not, but not after its latest instant")
    func openWrites() {
        var history = RegisterHistory()
        history.record(.write(1), client: 1, invoked: ms(0), answered: ms(1))
        history.recordOpen(.write(2), client: 2, invoked: ms(2), latest: nil)
        history.record(.read(1), client: 3, invoked: ms(3), answered: ms(4))
        history.record(.write(3), client: 1, invoked: ms(10), answered: ms(11))
        history.record(.read(2), client: 3, invoked: ms(20), answered: ms(21))
        // Open for ever, it can land after the write of 3.
        #expect(isLinearizable(history))
        // Client 2's next request took effect by 5 ms: its open write cannot land after 3.
        var bounded = history
        bounded.closeOpenOperations(of: 2, by: ms(5))
        #expect(isViolation(bounded))
        // Never taking effect is allowed too.
        var never = RegisterHistory()
        never.recordOpen(.write(2), client: 2, invoked: ms(0), latest: ms(5))
        never.record(.read(RegisterHistory.absent), client: 1, invoked: ms(10), answered: ms(11))
        #expect(isLinearizable(never))
    }

    @Test("compare-and-set succeeds only on the expected value and fails only on another")
    func compareAndSet() {
        var history = RegisterHistory()
        history.record(.write(1), client: 1, invoked: ms(0), answered: ms(1))
        history.record(.compareAndSet(expected: 1, new: 2, succeeded: true), client: 2, invoked: ms(2), answered: ms(3))
        history.record(
            .compareAndSet(expected: 1, new: 3, succeeded: false), client: 1, invoked: ms(4), answered: ms(5))
        history.record(.read(2), client: 3, invoked: ms(6), answered: ms(7))
        #expect(isLinearizable(history))
        var lost = history
        lost.record(.compareAndSet(expected: 2, new: 4, succeeded: false), client: 3, invoked: ms(8), answered: ms(9))
        #expect(isViolation(lost))
        var twice = RegisterHistory()
        twice.record(.write(1), client: 1, invoked: ms(0), answered: ms(1))
        twice.record(.compareAndSet(expected: 1, new: 2, succeeded: true), client: 2, invoked: ms(2), answered: ms(5))
        twice.record(.compareAndSet(expected: 1, new: 3, succeeded: true), client: 3, invoked: ms(2), answered: ms(5))
        #expect(isViolation(twice))
    }

    @Test("random histories from a real order pass; one read changed to an unwritten value fails")
    func randomHistories() {
        var random = SimulationRandom(seed: 42)
        for _ in 0..<200 {
            // A sequential run: each operation takes effect at its own instant; clients see it
            // inside an interval around that instant.
            var history = RegisterHistory()
            var value = RegisterHistory.absent
            var reads: [Int] = []
            let count = 5 + Int(random.next() % 40)
            for step in 0..<count {
                let point = step * 10
                let invoked = ms(point - Int(random.next() % 25))
                let answered = ms(point + Int(random.next() % 25))
                let client = random.next() % 4
                switch random.next() % 4 {
                case 0:
                    value = step + 1
                    history.record(.write(value), client: client, invoked: invoked, answered: answered)
                case 1:
                    let expected = random.next() % 2 == 0 ? value : step + 1000
                    let succeeded = expected == value
                    if succeeded { value = step + 1 }
                    history.record(
                        .compareAndSet(expected: expected, new: step + 1, succeeded: succeeded), client: client,
                        invoked: invoked, answered: answered)
                default:
                    reads.append(history.records.count)
                    history.record(.read(value), client: client, invoked: invoked, answered: answered)
                }
            }
            #expect(isLinearizable(history))
            guard let read = reads.randomElement(using: &random) else { continue }
            var broken = RegisterHistory()
            for (index, record) in history.records.enumerated() {
                let operation = index == read ? .read(999_999) : record.operation
                broken.record(
                    operation, client: record.client, invoked: record.invoked, answered: record.answered ?? ms(0))
            }
            #expect(isViolation(broken))
        }
    }

    @Test("the search stops at its budget and says it did not decide")
    func budget() {
        var history = RegisterHistory()
        // Twelve overlapping writes: thousands of orders to try before every one fails.
        for index in 0..<12 {
            history.record(.write(index + 1), client: UInt64(index), invoked: ms(0), answered: ms(100))
        }
        history.record(.read(RegisterHistory.absent), client: 99, invoked: ms(200), answered: ms(201))
        if case .undecided = history.check(budget: 50) {
        } else {
            Issue.record("expected the search to stop undecided")
        }
        #expect(isViolation(history))
    }
}
