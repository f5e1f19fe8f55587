import ElasticJournal
import FaultToleranceCore
import NIOConcurrencyHelpers
import Testing

@testable import DisasterRecovery

/// A volume at a point in time served from a journal, range by range.
@Suite struct JournalRecoveryPointTests {
    /// A journal over memory pools with 200 writes to two volumes, one millisecond apart.
    struct Fixture {
        let units = MemoryStoragePool(unitCapacity: 64 << 10, budget: 64 * (64 << 10))
        let bases = MemoryStoragePool(unitCapacity: JournalFormat.baseHeaderSize + (256 << 10), budget: 1 << 30)
        let clock = NIOLockedValueBox(Instant(nanoseconds: 1_000_000))
        let store: JournalStore
        let journal: ElasticJournal

        init() async throws {
            let clock = self.clock
            store = try JournalStore(journalPool: units, basePool: bases, clock: { clock.withLockedValue { $0 } })
            journal = try store.createJournal(
                1, configuration: JournalConfiguration(window: .seconds(3600), quota: 64, indexInterval: 4096),
                volumes: [1, 2])
            for step in 0..<200 {
                clock.withLockedValue { $0 = $0 + .milliseconds(1) }
                let length = 1 + step * 997 % 9000
                let offset = step * 7919 % (256 << 10 - length)
                try await journal.append(
                    volume: VolumeID(UInt32(1 + step % 2)), offset: UInt64(offset),
                    bytes: [UInt8](repeating: UInt8(truncatingIfNeeded: step + 1), count: length))
            }
        }

        func instant(afterStep step: Int) -> Instant { Instant(nanoseconds: 1_000_000) + .milliseconds(step + 1) }
    }

    @Test func servesTheVolumeAtEachPointRangeByRange() async throws {
        let fixture = try await Fixture()
        for step in [-1, 0, 57, 120, 199] {
            let instant = fixture.instant(afterStep: step)
            let point = try JournalRecoveryPoint(journal: fixture.journal, volume: 1, at: .at(instant))
            let image = try fixture.journal.image(of: 1, at: instant)
            var whole = [UInt8](repeating: 0xFF, count: point.capacity)
            try whole.withUnsafeMutableBytes { try point.read(into: $0, at: 0) }
            #expect(whole == image, "at step \(step)")
            for (offset, count) in [(0, 1), (4095, 2), (70_000, 20_000), (point.capacity - 3, 3)] {
                var part = [UInt8](repeating: 0xFF, count: count)
                try part.withUnsafeMutableBytes { try point.read(into: $0, at: offset) }
                #expect(part[...] == image[offset..<offset + count])
            }
        }
        let latest = try JournalRecoveryPoint(journal: fixture.journal, volume: 2, at: .latest)
        #expect(latest.instant == fixture.instant(afterStep: 199))
        #expect(latest.recordCount == 100)
        var buffer = [UInt8](repeating: 0, count: 10)
        #expect(throws: RecoveryError.self) {
            try buffer.withUnsafeMutableBytes { try latest.read(into: $0, at: latest.capacity - 5) }
        }
        #expect { try JournalRecoveryPoint(journal: fixture.journal, volume: 3, at: .latest) } throws: {
            ($0 as? RecoveryError)?.code == .invalidPlan
        }
        #expect { try JournalRecoveryPoint(journal: fixture.journal, volume: 1, at: .at(.zero)) } throws: {
            ($0 as? RecoveryError)?.code == .sourceUnavailable
        }
    }

    /// The base chunks last read are kept for the next read within them, but not past an
    /// age-out that changed the base: the point is then refused, never served from the old bytes.
    @Test func readsWithinTheLastChunksNoticeAnAgeOut() async throws {
        let fixture = try await Fixture()
        let instant = fixture.instant(afterStep: 57)
        let point = try JournalRecoveryPoint(journal: fixture.journal, volume: 1, at: .at(instant))
        let image = try fixture.journal.image(of: 1, at: instant)
        func read(_ offset: Int) throws -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: 4096)
            try bytes.withUnsafeMutableBytes { try point.read(into: $0, at: offset) }
            return bytes
        }
        #expect(try read(0)[...] == image[0..<4096])
        #expect(try read(4096)[...] == image[4096..<8192])
        _ = try fixture.journal.maintain(now: fixture.instant(afterStep: 199) + .seconds(7200))
        #expect { try read(8192) } throws: {
            ($0 as? RecoveryError)?.code == .sourceUnavailable
        }
    }

    @Test func aDamagedRecordRefusesThePointNamingWhere() async throws {
        let fixture = try await Fixture()
        let unitID = try #require(fixture.journal.status.units.first?.unit)
        let unit = try #require(fixture.units.unit(unitID))
        // A few bytes inside the first records' payloads.
        try unit.write([0xDE, 0xAD, 0xBE, 0xEF], at: JournalFormat.headerPageSize + 100)
        #expect { try JournalRecoveryPoint(journal: fixture.journal, volume: 1, at: .latest) } throws: { error in
            guard let error = error as? RecoveryError else { return false }
            return error.code == .damaged && error.detail.contains("volume-1") && error.detail.contains("\(unitID)")
                && error.detail.contains("offset")
        }
    }

    @Test func aLazyVolumeOverTheJournalServesAtOnceAndBuildsTheSameReplica() async throws {
        let fixture = try await Fixture()
        let instant = fixture.instant(afterStep: 150)
        let point = try JournalRecoveryPoint(journal: fixture.journal, volume: 2, at: .at(instant))
        let capacity = point.capacity
        let volume = try LazyVolume.create(
            identity: 2, source: point, overlay: MemoryStorageUnit(id: UnitID(10), capacity: capacity),
            replica: MemoryStorageUnit(id: UnitID(11), capacity: capacity),
            state: MemoryStorageUnit(
                id: UnitID(12), capacity: LazyVolumeHeader.stateSize(capacity: capacity, blockSize: 4096)))
        var expected = try fixture.journal.image(of: 2, at: instant)
        #expect(try volume.read(at: 8192, count: 4096)[...] == expected[8192..<12288])
        try volume.write([UInt8](repeating: 7, count: 5000), at: 1000)
        expected.replaceSubrange(1000..<6000, with: [UInt8](repeating: 7, count: 5000))
        _ = try await VolumeRecovery(volume: volume, configuration: .init(stepBlocks: 16)).run()
        #expect(try volume.read(at: 0, count: capacity) == expected)
    }
}
