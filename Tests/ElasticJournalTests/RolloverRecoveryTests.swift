import ElasticJournal
import FaultToleranceCore
import Foundation
import Testing

/// Recovery after a crash between a rollover's acknowledgement and its seal: the old unit is
/// unsealed and its successor already holds records. Recovery seals the old unit when it
/// holds exactly the records the successor's header names; when records the successor
/// follows are missing from it, that is damage (a salvage cuts there and keeps the successor
/// in quarantine).
@Suite struct RolloverRecoveryTests {
    private let configuration = JournalConfiguration(window: .seconds(3600), quota: 8, durability: .groupCommit)

    /// A closed journal of 200 records of 600 bytes in 64 KiB units (three units), whose
    /// second unit's seal is then erased, as if the crash came before it was written; returns
    /// the fixture and that unit.
    private func journalWithUnsealedUnit() async throws -> (Fixture, any StorageUnit, UnitHeader) {
        let fixture = Fixture()
        let store = try fixture.open()
        let journal = try store.createJournal(1, configuration: configuration, volumes: [1])
        for index in 0..<200 { try await journal.append(volume: 1, offset: 0, bytes: pattern(index, count: 600)) }
        try store.close()
        let units = journal.status.units
        try #require(units.count == 3)
        let unit = try #require(fixture.pool.unit(units[1].unit))
        let header = try #require(try UnitHeader.decode(try unit.read(at: 0, count: 96)))
        try unit.write(
            [UInt8](repeating: 0, count: unit.capacity - header.trailerOffset), at: header.trailerOffset)
        return (fixture, unit, header)
    }

    @Test func anUnsealedUnitHoldingWhatItsSuccessorNamesIsSealedAndKept() async throws {
        let (fixture, unit, header) = try await journalWithUnsealedUnit()
        let reopened = try #require(try fixture.open().journal(1))
        #expect(reopened.lastSequence == 200)
        #expect(try reopened.verify().records == 200)
        #expect(reopened.status.units.dropLast().allSatisfy { $0.sealed })
        // The seal is on storage again.
        #expect(try unit.read(at: header.trailerOffset, count: 64).contains { $0 != 0 })
    }

    @Test func recordsMissingBeforeASuccessorWithRecordsAreDamageAndASalvageCutsThere() async throws {
        let (fixture, unit, _) = try await journalWithUnsealedUnit()
        // The unsealed unit's last record is lost, though the successor holds later records.
        let records = try #require(try fixture.open(readOnly: true).journal(1)).status.units[1]
        let lastRecord = JournalFormat.headerPageSize + Int(records.lastSequence - records.firstSequence) * 640
        try unit.write([UInt8](repeating: 0, count: 640), at: lastRecord)
        do {
            _ = try fixture.open()
            Issue.record("records missing before a successor were not reported")
        } catch {
            #expect(error.code == .damaged && error.unit == unit.id, "\(error)")
        }
        let salvaged = try JournalStore(
            journalPool: fixture.pool, basePool: fixture.bases, options: JournalStore.Options(salvage: true),
            clock: { fixture.clock.now })
        let journal = try #require(salvaged.journal(1))
        #expect(journal.lastSequence == records.lastSequence - 1)
        #expect(try journal.verify().records == Int(records.lastSequence - 1))
        #expect(fixture.pool.quarantined.count == 1)
    }
}

/// A reader keeps reading a unit that ages out under it: the unit's storage goes back to the
/// pool only when the reader is done (on a file pool, releasing closes and deletes the file).
@Suite struct ReaderAcrossAgeOutTests {
    @Test func recordsBeingReadSurviveAnAgeOutOfTheirUnit() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("ft-reader-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = try JournalStore.create(
            directory: root, unitSize: 64 << 10, journalUnits: 16, volumes: [1], volumeSize: 8192,
            configuration: JournalConfiguration(window: .seconds(5), quota: 16, durability: .buffered))
        let journal = try #require(store.journal(1))
        for index in 0..<200 {
            try journal.appendBuffered(
                contentsOf: [
                    JournalWrite(volume: 1, offset: UInt64(index % 10 * 600), bytes: pattern(index, count: 600))
                ])
        }
        try journal.synchronize()
        let first = try #require(journal.status.units.first)
        try #require(journal.status.units.count >= 3)
        var read: [UInt64] = []
        var released: [JournalManager.AgeOut] = []
        try journal.forEachRecord(from: .zero, through: Instant(nanoseconds: .max)) {
            (record) throws(JournalError) in
            if read.isEmpty {
                // Every unit but the active one leaves the 5 s window 10 s on: age them out now,
                // under the reader.
                released = try journal.maintain(now: JournalStore.wallClock() + .seconds(10))
            }
            read.append(record.sequence)
        }
        #expect(released.contains { $0.unit == first.unit })
        #expect(read == Array(1...200))
        // The reader is done: the aged-out units' files are gone.
        #expect(!FileManager.default.fileExists(atPath: try #require(first.location)))
        try store.close()
    }
}
