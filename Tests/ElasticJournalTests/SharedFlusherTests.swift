import DeterministicSimulation
import ElasticJournal
import FaultToleranceCore
import Testing

/// Group-commit journals of one store share its flusher threads (at most four), take turns
/// on them, and fail alone: one journal's fsync failure poisons that journal only.
@Suite struct SharedFlusherTests {
    private let configuration = JournalConfiguration(window: .seconds(3600), quota: 4, durability: .groupCommit)

    @Test func sixtyFourJournalsShareAtMostFourFlusherThreadsAndEveryAppendBecomesDurable() async throws {
        let fixture = Fixture(units: 160)
        let store = try fixture.open()
        #expect(store.flusherThreads == 0)
        var journals: [ElasticJournal] = []
        for id in 1...64 {
            journals.append(try store.createJournal(JournalID(UInt64(id)), configuration: configuration, volumes: [1]))
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, journal) in journals.enumerated() {
                group.addTask {
                    for record in 0..<20 {
                        try await journal.append(
                            volume: 1, offset: UInt64(record * 100), bytes: pattern(index * 100 + record, count: 100))
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(store.flusherThreads == 4)
        for (index, journal) in journals.enumerated() {
            #expect(journal.durableSequence == 20)
            let records = try journal.records(from: .zero, through: fixture.clock.now)
            #expect(records.map(\.bytes) == (0..<20).map { pattern(index * 100 + $0, count: 100) })
        }
        try store.close()
        #expect(store.flusherThreads == 0)
    }

    @Test func oneJournalsFailedFsyncPoisonsThatJournalOnly() async throws {
        let units = SimulatedStoragePool(
            unitCapacity: 64 << 10, budget: 16 * (64 << 10), random: SimulationRandom(seed: 3))
        let bases = MemoryStoragePool(unitCapacity: JournalFormat.baseHeaderSize + (16 << 10), budget: 1 << 30)
        let clock = ManualClock()
        let store = try JournalStore(journalPool: units, basePool: bases, clock: { clock.now })
        let failing = try store.createJournal(1, configuration: configuration, volumes: [1])
        let healthy = try store.createJournal(2, configuration: configuration, volumes: [1])
        try await failing.append(volume: 1, offset: 0, bytes: pattern(1, count: 64))
        try await healthy.append(volume: 1, offset: 0, bytes: pattern(2, count: 64))
        let disk = try #require(units.units.first { $0.id == failing.status.units.last?.unit })
        disk.failNextSynchronize()
        await #expect(throws: JournalError.self) {
            try await failing.append(volume: 1, offset: 64, bytes: pattern(3, count: 64))
        }
        // The other journal, on the same flusher threads, goes on acknowledging.
        for record in 0..<50 {
            try await healthy.append(volume: 1, offset: UInt64(record * 64), bytes: pattern(100 + record, count: 64))
        }
        #expect(healthy.durableSequence == 51)
        do {
            try await failing.append(volume: 1, offset: 0, bytes: pattern(4, count: 64))
            Issue.record("a poisoned journal acknowledged an append")
        } catch {
            #expect(error.code == .poisoned)
        }
        #expect(failing.durableSequence == 1)
        try? store.close()
    }
}
