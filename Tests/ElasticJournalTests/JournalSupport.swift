import DeterministicSimulation
import ElasticJournal
import FaultToleranceCore
import NIOConcurrencyHelpers

/// A clock the test moves by hand.
final class ManualClock: Sendable {
    private let current = NIOLockedValueBox(Instant(nanoseconds: 1_000_000_000))
    var now: Instant { current.withLockedValue { $0 } }
    func advance(_ duration: Duration) { current.withLockedValue { $0 = $0 + duration } }
}

/// Two memory pools, a manual clock and a store over them.
struct Fixture {
    let clock = ManualClock()
    let pool: MemoryStoragePool
    let bases: MemoryStoragePool

    init(unitCapacity: Int = 64 << 10, units: Int = 16, volumeSize: Int = 16 << 10) {
        pool = MemoryStoragePool(unitCapacity: unitCapacity, budget: units * unitCapacity)
        bases = MemoryStoragePool(unitCapacity: JournalFormat.baseHeaderSize + volumeSize, budget: 1 << 30)
    }

    func open(configurations: [JournalID: JournalConfiguration] = [:], readOnly: Bool = false) throws(JournalError)
        -> JournalStore
    {
        let clock = self.clock
        return try JournalStore(
            journalPool: pool, basePool: bases, configurations: configurations,
            options: JournalStore.Options(readOnly: readOnly), clock: { clock.now })
    }
}

func pattern(_ seed: Int, count: Int) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ seed &* 17 &+ 1) }
}
