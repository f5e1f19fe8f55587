import ElasticJournal
import FaultToleranceCore
import Testing

/// A buffered journal writes its full batches up to the last boundary of its write alignment
/// (16 KiB for 16 KiB batches) and carries the rest unwritten; a read or a sync writes it all.
@Suite struct AlignedWriteTests {
    static let recordBytes = 1000
    /// A record's footprint: 40 header bytes and the payload, rounded to 8.
    static let footprint = 1040
    static let alignment = 16 << 10

    /// Every byte of the journal's unit.
    func unitBytes(_ fixture: Fixture) throws -> [UInt8] {
        let unit = try #require(fixture.pool.units.first)
        var bytes = [UInt8](repeating: 0, count: unit.capacity)
        try bytes.withUnsafeMutableBytes { try unit.read(into: $0, at: 0) }
        return bytes
    }

    func stage(_ count: Int, into journal: ElasticJournal) throws {
        for index in 0..<count {
            try pattern(index, count: Self.recordBytes).withUnsafeBytes {
                _ = try journal.appendBuffered(volume: 1, offset: UInt64(index % 8 * 1000), bytes: $0)
            }
        }
    }

    func openJournal(_ fixture: Fixture) throws -> (JournalStore, ElasticJournal) {
        let store = try fixture.open()
        let journal = try store.createJournal(
            1,
            configuration: JournalConfiguration(
                window: .seconds(3600), quota: 4, durability: .buffered(batchBytes: Self.alignment)),
            volumes: [1])
        return (store, journal)
    }

    @Test func fullBatchesAreWrittenUpToAnAlignedBoundaryAndReadsWriteTheRest() throws {
        let fixture = Fixture(unitCapacity: 256 << 10)
        let (store, journal) = try openJournal(fixture)
        try stage(40, into: journal)
        // Records start after the 4 KiB header page; 40 records end at 45,696. Two batches
        // filled: the first written up to 16 KiB, the second up to 32 KiB.
        let end = JournalFormat.headerPageSize + 40 * Self.footprint
        let written = 2 * Self.alignment
        var bytes = try unitBytes(fixture)
        #expect(bytes[written..<end].allSatisfy { $0 == 0 }, "bytes past the last boundary were written")
        // Record 28 straddles the boundary: its head is written, its tail carried.
        let straddler = JournalFormat.headerPageSize + 27 * Self.footprint
        #expect(straddler < written && written < straddler + Self.footprint)
        #expect(!bytes[straddler..<written].allSatisfy { $0 == 0 }, "the straddling record's head was not written")

        // A read writes everything staged, and sees every record.
        let records = try journal.records(from: .zero, through: Instant(nanoseconds: .max))
        #expect(records.count == 40)
        #expect(records.map(\.bytes) == (0..<40).map { pattern($0, count: Self.recordBytes) })
        bytes = try unitBytes(fixture)
        #expect(!bytes[(end - Self.footprint)..<end].allSatisfy { $0 == 0 }, "the read did not write the carried bytes")
        try store.close()
    }

    @Test func aCrashLosesOnlyTheUnwrittenTailAndRecoveryKeepsEveryWholeRecord() throws {
        let fixture = Fixture(unitCapacity: 256 << 10)
        do {
            let (_, journal) = try openJournal(fixture)
            try stage(40, into: journal)
            // The process dies here: no sync, no close.
        }
        let store = try fixture.open()
        let journal = try #require(store.journal(1))
        let records = try journal.records(from: .zero, through: Instant(nanoseconds: .max))
        // Whole on storage: the records ending at or before 32 KiB, (32,768 - 4,096) / 1,040.
        let whole = (2 * Self.alignment - JournalFormat.headerPageSize) / Self.footprint
        #expect(whole == 27)
        #expect(records.count == whole)
        #expect(records.map(\.bytes) == (0..<whole).map { pattern($0, count: Self.recordBytes) })
        try store.close()
    }

    @Test func aSyncWritesTheCarriedTail() throws {
        let fixture = Fixture(unitCapacity: 256 << 10)
        let (store, journal) = try openJournal(fixture)
        try stage(40, into: journal)
        try journal.synchronize()
        #expect(journal.durableSequence == 40)
        let bytes = try unitBytes(fixture)
        let end = JournalFormat.headerPageSize + 40 * Self.footprint
        #expect(!bytes[(end - Self.footprint)..<end].allSatisfy { $0 == 0 })
        try store.close()
    }
}
