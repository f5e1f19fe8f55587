import DeterministicSimulation
import Dispatch
import ElasticJournal
import FaultToleranceCore
import NIOConcurrencyHelpers
import Testing

/// Rollovers and age-outs do their I/O without the journal's state lock: appends from other
/// threads stage (and flushes go on) while they run. Each test stops the journal's own
/// thread inside the operation's fsync (a simulated disk's synchronize hook), appends from
/// another thread, and waits for that append. A journal that held its lock across the I/O
/// would keep the append waiting until the operation ended — which cannot happen while the
/// hook waits — so the test fails on the deadlock detector's timeout instead of hanging.
@Suite struct JournalBackgroundWorkTests {
    /// Generous: it only detects an append stuck behind the operation, it measures nothing.
    private let deadlockTimeout = 30.0

    /// Runs `work` on another thread while this one waits; `nil` when it did not finish
    /// within the deadlock timeout (it still runs to its end).
    private func whileBlocked<T: Sendable>(_ work: @escaping @Sendable () throws -> T) -> Result<T, any Error>? {
        let done = ConditionLock(value: 0)
        let outcome = NIOLockedValueBox<Result<T, any Error>?>(nil)
        DispatchQueue.global().async {
            let result: Result<T, any Error>
            do { result = .success(try work()) } catch { result = .failure(error) }
            outcome.withLockedValue { $0 = result }
            done.lock()
            done.unlock(withValue: 1)
        }
        guard done.lock(whenValue: 1, timeoutSeconds: deadlockTimeout) else { return nil }
        done.unlock()
        return outcome.withLockedValue { $0 }
    }

    @Test func appendsStageWhileARolloverWritesTheSealAndTheSuccessorsHeader() throws {
        let units = SimulatedStoragePool(
            unitCapacity: 64 << 10, budget: 16 * (64 << 10), random: SimulationRandom(seed: 7))
        let bases = MemoryStoragePool(unitCapacity: JournalFormat.baseHeaderSize + (16 << 10), budget: 1 << 30)
        let clock = ManualClock()
        let store = try JournalStore(journalPool: units, basePool: bases, clock: { clock.now })
        // Buffered with a batch larger than a unit: nothing is written before the rollover.
        let configuration = JournalConfiguration(
            window: .seconds(3600), quota: 16, durability: .buffered(batchBytes: 1 << 20), indexInterval: 4096)
        let journal = try store.createJournal(1, configuration: configuration, volumes: [1])
        let first = try #require(journal.status.units.first?.unit)
        let during = NIOLockedValueBox<Result<JournalReceipt, any Error>??>(nil)
        units.setSynchronizeHook { [self] unit in
            // The successor's header sync: the rollover is under way, the old unit unsealed.
            guard unit != first, during.withLockedValue({ $0 }) == nil else { return }
            during.withLockedValue { $0 = .some(nil) }
            let result = whileBlocked {
                try journal.stage(volume: 1, offset: 0, bytes: pattern(999, count: 100))
            }
            during.withLockedValue { $0 = .some(result) }
        }
        var receipts: [JournalReceipt] = []
        while journal.status.units.count == 1 {
            clock.advance(.milliseconds(1))
            receipts.append(
                try journal.stage(
                    volume: 1, offset: UInt64(receipts.count % 10 * 1000), bytes: pattern(receipts.count, count: 1000)))
        }
        units.setSynchronizeHook(nil)
        guard let outcome = during.withLockedValue({ $0 }) ?? nil else {
            Issue.record("the append waited for the rollover's I/O (or no rollover happened)")
            return
        }
        let staged = try outcome.get()
        // The append that rolled over staged its record right after the switch, as the
        // successor's first; the one made during the rollover's I/O came next.
        let rolling = try #require(receipts.last)
        #expect(staged.sequence == rolling.sequence + 1)
        let status = journal.status
        // The old unit's seal follows in the background; closing writes it if it has not been.
        #expect(status.units.count == 2 && !status.units[1].sealed)
        #expect(status.units[1].firstSequence == rolling.sequence)
        try journal.synchronize()
        let records = try journal.records(from: .zero, through: clock.now)
        #expect(records.map(\.sequence) == Array(1...staged.sequence))
        #expect(records[Int(staged.sequence) - 1].bytes == pattern(999, count: 100))
        try store.close()
        let reopened = try JournalStore(journalPool: units, basePool: bases, clock: { clock.now })
        #expect(try reopened.journal(1)?.verify().records == Int(staged.sequence))
        #expect(reopened.journal(1)?.status.units.first?.sealed == true)
    }

    @Test func appendsAndSyncsCompleteWhileAnAgeOutAppliesAUnitToTheBase() throws {
        let units = MemoryStoragePool(unitCapacity: 64 << 10, budget: 16 * (64 << 10))
        let bases = SimulatedStoragePool(
            unitCapacity: JournalFormat.baseHeaderSize + (16 << 10), budget: 1 << 30, random: SimulationRandom(seed: 9))
        let clock = ManualClock()
        let store = try JournalStore(journalPool: units, basePool: bases, clock: { clock.now })
        let configuration = JournalConfiguration(window: .seconds(1), quota: 16, durability: .buffered)
        let journal = try store.createJournal(1, configuration: configuration, volumes: [1])
        var model = [UInt8](repeating: 0, count: 16 << 10)
        var index = 0
        while journal.status.units.count < 3 {
            clock.advance(.milliseconds(1))
            let bytes = pattern(index, count: 1000)
            let offset = index % 15 * 1000
            try journal.stage(volume: 1, offset: UInt64(offset), bytes: bytes)
            model.replaceSubrange(offset..<offset + 1000, with: bytes)
            index += 1
        }
        try journal.synchronize()
        clock.advance(.seconds(2))
        let during = NIOLockedValueBox<Result<JournalReceipt, any Error>??>(nil)
        bases.setSynchronizeHook { [self] _ in
            guard during.withLockedValue({ $0 }) == nil else { return }
            during.withLockedValue { $0 = .some(nil) }
            // Made durable (written and synced) while the age-out is stopped here.
            let result = whileBlocked {
                let receipt = try journal.stage(volume: 1, offset: 500, bytes: pattern(777, count: 200))
                try journal.synchronize()
                return receipt
            }
            during.withLockedValue { $0 = .some(result) }
        }
        let released = try journal.maintain()
        bases.setSynchronizeHook(nil)
        #expect(!released.isEmpty && released.allSatisfy { $0.reason == .aged })
        guard let outcome = during.withLockedValue({ $0 }) ?? nil else {
            Issue.record("the append and its sync waited for the age-out (or no age-out happened)")
            return
        }
        let durable = try outcome.get()
        #expect(durable.sequence == UInt64(index) + 1)
        #expect(journal.durableSequence >= durable.sequence)
        model.replaceSubrange(500..<700, with: pattern(777, count: 200))
        #expect(try journal.image(of: 1, at: clock.now) == model)
        #expect(journal.status.units.count < 3)
        try store.close()
    }
}

extension ElasticJournal {
    /// A buffered append of an array.
    @discardableResult
    fileprivate func stage(volume: VolumeID, offset: UInt64, bytes: [UInt8]) throws(JournalError) -> JournalReceipt {
        try bytes.withUnsafeBytes { raw in
            Result { () throws(JournalError) in try appendBuffered(volume: volume, offset: offset, bytes: raw) }
        }.get()
    }
}
