import ElasticJournal
import FaultToleranceCore
import Testing

/// Damage is never silent: it is told apart from a crash's torn tail, reported with the
/// unit and offset, and a salvage never destroys bytes (it quarantines them).
@Suite struct DamageTests {
    private let configuration = JournalConfiguration(
        window: .seconds(10), quota: 8, durability: .groupCommit, indexInterval: 4096)
    private static let footprint = 640  // a record of 600 bytes

    /// A journal of `count` acknowledged 600-byte records; returns the fixture, closed.
    private func journal(records count: Int, durability: JournalConfiguration.Durability = .groupCommit)
        async throws -> Fixture
    {
        let fixture = Fixture()
        let store = try fixture.open()
        let journal = try store.createJournal(
            1, configuration: JournalConfiguration(window: .seconds(10), quota: 8, durability: durability),
            volumes: [1])
        for index in 0..<count { try await journal.append(volume: 1, offset: 0, bytes: pattern(index, count: 600)) }
        if case .buffered = durability { try journal.synchronize() }
        try store.close()
        return fixture
    }

    private func salvage(_ fixture: Fixture) throws(JournalError) -> JournalStore {
        let clock = fixture.clock
        return try JournalStore(
            journalPool: fixture.pool, basePool: fixture.bases, options: JournalStore.Options(salvage: true),
            clock: { clock.now })
    }

    @Test(
        "zeros or garbage in the middle of the active unit are damage, not a torn tail",
        arguments: [UInt8(0), 0xA5])
    func damageInTheActiveUnit(fill: UInt8) async throws {
        let fixture = try await journal(records: 40)
        let active = try #require(fixture.pool.units.last)
        let damage = JournalFormat.headerPageSize + 10 * Self.footprint
        try active.write([UInt8](repeating: fill, count: 4096), at: damage)

        for readOnly in [false, true] {
            do {
                _ = try fixture.open(readOnly: readOnly)
                Issue.record("a journal with 4 KiB of \(fill) in its active unit opened (read-only: \(readOnly))")
            } catch {
                #expect(error.code == .damaged)
                #expect(error.unit == active.id)
                #expect(error.offset == damage)
                #expect(
                    "\(error)".contains(
                        "records 11...17 were durable (record 18 at offset \(damage + 4096 + 384) says so)"))
            }
        }
        // Nothing was cut by the failed opens.
        let after = try active.read(at: damage + 4096, count: 64)
        #expect(after.contains { $0 != 0 })

        // Salvage cuts at the damage, keeps a copy of the whole unit in quarantine, and the
        // journal continues from record 11.
        let store = try salvage(fixture)
        let salvaged = try #require(store.journal(1))
        #expect(salvaged.lastSequence == 10)
        #expect(store.recentEvents.contains(.salvaged(1, active.id, offset: damage, lastSequence: 10)))
        let copy = try #require(fixture.pool.quarantined.first)
        #expect(try copy.read(at: damage + 4096, count: 64) == after)
        #expect(try active.read(at: damage + 4096, count: 64).allSatisfy { $0 == 0 })
        #expect(try salvaged.verify().records == 10)
    }

    @Test("damage at rest under a seal: a plain open trusts the seal, verifyOnOpen finds it and names the unit")
    func damageUnderASealFoundByVerifyOnOpen() async throws {
        let fixture = try await journal(records: 250)
        #expect(fixture.pool.units.count >= 3)
        let sealed = try #require(fixture.pool.units.first)
        let damage = JournalFormat.headerPageSize + 20 * Self.footprint
        try sealed.write([UInt8](repeating: 0xA5, count: 64), at: damage)

        // Opening checks seals and links, not the records under them: it opens, fast.
        let trusting = try fixture.open(readOnly: true)
        #expect(trusting.journal(1)?.lastSequence == 250)
        try trusting.close()
        // Asked to, it reads everything first and refuses the journal, naming the damage.
        let clock = fixture.clock
        do {
            _ = try JournalStore(
                journalPool: fixture.pool, basePool: fixture.bases,
                options: JournalStore.Options(readOnly: true, verifyOnOpen: true), clock: { clock.now })
            Issue.record("a journal with damage under a seal opened with verifyOnOpen")
        } catch {
            #expect(error.code == .damaged)
            #expect(error.unit == sealed.id)
        }
    }

    @Test("a torn tail is still cut silently: records written after it were never covered by a sync")
    func tornTailAfterUnsyncedRecords() async throws {
        let fixture = Fixture()
        let store = try fixture.open()
        let journal = try store.createJournal(
            1,
            configuration: JournalConfiguration(
                window: .seconds(10), quota: 8, durability: .buffered(batchBytes: 1 << 20)), volumes: [1])
        for index in 0..<30 { try await journal.append(volume: 1, offset: 0, bytes: pattern(index, count: 600)) }
        try store.close()
        // Writes landed out of order before a crash: a hole, then later unsynced records.
        let unit = try #require(fixture.pool.units.last)
        let hole = JournalFormat.headerPageSize + 10 * Self.footprint
        try unit.write([UInt8](repeating: 0, count: Self.footprint), at: hole)
        let reopened = try fixture.open()
        #expect(reopened.journal(1)?.lastSequence == 10)
        #expect(reopened.recentEvents.contains(.tornTailTruncated(1, unit.id, offset: hole)))
    }

    @Test("a deleted active unit is damage naming the sealed unit before it; salvage continues after it")
    func deletedActiveUnit() async throws {
        let fixture = try await journal(records: 200)
        #expect(fixture.pool.units.count == 3)
        let sealed = fixture.pool.units[1]
        let active = fixture.pool.units[2]
        try fixture.pool.release(active.id)
        do {
            _ = try fixture.open()
            Issue.record("a journal whose active unit was deleted opened")
        } catch {
            #expect(error.code == .damaged)
            #expect(error.unit == sealed.id)
            #expect("\(error)".contains("missing"))
        }
        let store = try salvage(fixture)
        let journal = try #require(store.journal(1))
        #expect(store.recentEvents.contains { if case .salvaged(1, sealed.id, _, _) = $0 { true } else { false } })
        #expect(try journal.verify().records == Int(journal.lastSequence))
    }

    @Test("a unit whose header is unreadable but holds records is never released: damage, or quarantine")
    func unreadableHeaderWithData() async throws {
        let fixture = try await journal(records: 200)
        let victim = fixture.pool.units[1]
        try victim.write([UInt8](repeating: 0, count: 96), at: 0)
        do {
            _ = try fixture.open()
            Issue.record("a journal with a zeroed unit header opened")
        } catch {
            #expect(error.code == .damaged)
            #expect(error.unit == victim.id)
        }
        #expect(fixture.pool.units.contains { $0.id == victim.id })
        _ = try salvage(fixture)
        #expect(!fixture.pool.units.contains { $0.id == victim.id })
        #expect(fixture.pool.quarantined.contains { $0.id == victim.id })
    }

    @Test("garbage in a base image is damage for verify and for every image read, named by unit and offset")
    func garbageInABaseImage() async throws {
        let fixture = try await journal(records: 5)
        let base = try #require(fixture.bases.units.first)
        let target = JournalFormat.baseHeaderSize + 8192
        try base.write([UInt8](repeating: 0xA5, count: 4096), at: target)
        let store = try fixture.open()
        let journal = try #require(store.journal(1))
        do {
            _ = try journal.verify()
            Issue.record("verify passed over a damaged base image")
        } catch {
            #expect(error.code == .damaged)
            #expect(error.unit == base.id)
            #expect(error.offset == JournalFormat.baseHeaderSize)  // the chunk holding the garbage
        }
        #expect(throws: JournalError.self) { try journal.image(of: 1, at: fixture.clock.now) }
    }

    @Test("age-outs keep the checksum table current: images and verify pass after the window slides")
    func checksumsFollowAgeOuts() async throws {
        let fixture = Fixture()
        let store = try fixture.open()
        let journal = try store.createJournal(
            1, configuration: JournalConfiguration(window: .seconds(1), quota: 8, durability: .groupCommit),
            volumes: [1])
        for index in 0..<300 {
            try await journal.append(
                volume: 1, offset: UInt64((index * 97) % (15 << 10)), bytes: pattern(index, count: 600))
            fixture.clock.advance(.milliseconds(20))
            if index % 20 == 0 { try journal.maintain() }
        }
        #expect(store.recentEvents.contains { if case .unitReleased = $0 { true } else { false } })
        let report = try journal.verify()
        #expect(report.baseImagesChecked == 1)
        _ = try journal.image(of: 1, at: fixture.clock.now)
    }

    @Test("a base image whose manifest is zeroed is damage, and is never deleted")
    func baseWithoutManifest() async throws {
        let fixture = try await journal(records: 5)
        let base = try #require(fixture.bases.units.first)
        try base.write([UInt8](repeating: 7, count: 512), at: JournalFormat.baseHeaderSize)
        try base.write([UInt8](repeating: 0, count: 1024), at: 0)
        do {
            _ = try fixture.open()
            Issue.record("a store with a manifest-less base image opened")
        } catch {
            #expect(error.code == .damaged)
            #expect(error.unit == base.id)
        }
        #expect(fixture.bases.units.contains { $0.id == base.id })
        // Salvage cannot rebuild a base image; it moves it to quarantine (never deletes it)
        // and then says the journal has no base image.
        #expect(throws: JournalError.self) { try salvage(fixture) }
        #expect(fixture.bases.quarantined.contains { $0.id == base.id })
        #expect(try fixture.bases.quarantined.first?.read(at: JournalFormat.baseHeaderSize, count: 4) == [7, 7, 7, 7])
    }
}
