import DeterministicSimulation
import ElasticJournal
import FaultToleranceCore
import Foundation
import MetricsTestKit
import NIOConcurrencyHelpers
import Testing

@Suite struct ElasticJournalTests {
    private let configuration = JournalConfiguration(
        window: .seconds(10), quota: 8, durability: .groupCommit, indexInterval: 4096)

    @Test func imagesAtEveryInstantMatchReplayAndRecordsSeekByTime() async throws {
        let fixture = Fixture()
        let store = try fixture.open()
        let journal = try store.createJournal(1, configuration: configuration, volumes: [1, 2])
        var model = [[UInt8]](repeating: [UInt8](repeating: 0, count: 16 << 10), count: 3)
        var snapshots: [(Instant, [UInt8])] = [(fixture.clock.now, model[1])]
        for step in 0..<300 {
            fixture.clock.advance(.milliseconds(10))
            let volume = VolumeID(UInt32(step % 2 + 1))
            let bytes = pattern(step, count: 100 + step * 7 % 900)
            let offset = step * 131 % (16 << 10 - bytes.count)
            let receipt = try await journal.append(volume: volume, offset: UInt64(offset), bytes: bytes)
            #expect(receipt.sequence == UInt64(step + 1))
            #expect(journal.durableSequence >= receipt.sequence)
            model[Int(volume.rawValue)].replaceSubrange(offset..<offset + bytes.count, with: bytes)
            if volume == 1 { snapshots.append((receipt.time, model[1])) }
        }
        #expect(journal.status.units.count > 2)  // rolled over several times
        for (instant, expected) in snapshots.enumerated().filter({ $0.offset % 10 == 0 }).map(\.element) {
            #expect(try journal.image(of: 1, at: instant) == expected)
        }
        let from = snapshots[20].0
        let through = snapshots[40].0
        let records = try journal.records(from: from, through: through)
        #expect(records.first?.time == from)
        #expect(records.last?.time == through)
        #expect(records.count == 41)
        #expect(zip(records, records.dropFirst()).allSatisfy { $0.sequence + 1 == $1.sequence })
        try store.close()
    }

    /// "I closed it" is not "the disk failed": after close, appends and synchronize say
    /// `closed`, not `poisoned`.
    @Test func operationsAfterCloseSayClosed() async throws {
        let fixture = Fixture()
        let store = try fixture.open()
        let journal = try store.createJournal(1, configuration: configuration, volumes: [1])
        try await journal.append(volume: 1, offset: 0, bytes: [1, 2, 3])
        try journal.close()
        await #expect { try await journal.append(volume: 1, offset: 0, bytes: [4]) } throws: {
            ($0 as? JournalError)?.code == .closed
        }
        #expect { try journal.synchronize() } throws: { ($0 as? JournalError)?.code == .closed }
        try store.close()
    }

    @Test func concurrentAppendsShareFsyncs() async throws {
        let fixture = Fixture(unitCapacity: 1 << 20)
        let store = try fixture.open()
        let journal = try store.createJournal(1, configuration: configuration, volumes: [1])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for task in 0..<64 {
                group.addTask {
                    for index in 0..<20 {
                        try await journal.append(volume: 1, offset: UInt64(task * 64), bytes: pattern(index, count: 64))
                    }
                }
            }
            try await group.waitForAll()
        }
        #expect(journal.durableSequence == 64 * 20)
        let verification = try journal.verify()
        #expect(verification.records == 64 * 20)
        try store.close()
    }

    @Test func reopeningFindsEveryDurableRecordAndContinuesTheSequence() async throws {
        let fixture = Fixture()
        let first = try fixture.open()
        let journal = try first.createJournal(1, configuration: configuration, volumes: [1])
        for index in 0..<200 {
            fixture.clock.advance(.milliseconds(1))
            try await journal.append(volume: 1, offset: UInt64(index * 8), bytes: pattern(index, count: 300))
        }
        let expected = try journal.image(of: 1, at: fixture.clock.now)
        try first.close()
        let second = try fixture.open()
        let reopened = try #require(second.journal(1))
        #expect(reopened.lastSequence == 200)
        #expect(try reopened.image(of: 1, at: fixture.clock.now) == expected)
        let receipt = try await reopened.append(volume: 1, offset: 0, bytes: [1, 2, 3])
        #expect(receipt.sequence == 201)
        #expect(try reopened.verify().records == 201)
    }

    @Test func windowSlidesUnitsAreReleasedAndBaseKeepsAgedWrites() async throws {
        let fixture = Fixture()
        let store = try fixture.open()
        let config = JournalConfiguration(window: .seconds(1), quota: 16, durability: .buffered, indexInterval: 4096)
        let journal = try store.createJournal(1, configuration: config, volumes: [1])
        var model = [UInt8](repeating: 0, count: 16 << 10)
        for index in 0..<600 {
            fixture.clock.advance(.milliseconds(20))
            let bytes = pattern(index, count: 500)
            let offset = index * 97 % (16 << 10 - 500)
            try await journal.append(volume: 1, offset: UInt64(offset), bytes: bytes)
            model.replaceSubrange(offset..<offset + 500, with: bytes)
            if index % 50 == 0 { try store.maintain() }
        }
        try journal.synchronize()
        let released = try store.maintain()
        let status = journal.status
        let horizon = fixture.clock.now + .seconds(-1)
        #expect(status.windowStart <= horizon)
        #expect(status.units.dropLast().allSatisfy { $0.lastTime >= horizon })
        #expect(store.recentEvents.contains { if case .unitReleased(1, _, .aged, _) = $0 { true } else { false } })
        #expect(released.allSatisfy { $0.reason == .aged })
        #expect(try journal.image(of: 1, at: fixture.clock.now) == model)
        #expect(throws: JournalError.self) { try journal.image(of: 1, at: status.windowStart + .nanoseconds(-1)) }
        #expect(journal.effectiveWindow(now: fixture.clock.now) == .seconds(1))
    }

    @Test func quotaShortensTheWindowVisibly() async throws {
        let fixture = Fixture()
        let store = try fixture.open()
        let config = JournalConfiguration(window: .seconds(3600), quota: 2, durability: .buffered, indexInterval: 4096)
        let journal = try store.createJournal(1, configuration: config, volumes: [1])
        for index in 0..<400 {
            fixture.clock.advance(.milliseconds(10))
            try await journal.append(volume: 1, offset: 0, bytes: pattern(index, count: 1000))
        }
        #expect(journal.status.units.count <= 2)
        #expect(journal.status.earlyDrops > 0)
        #expect(journal.effectiveWindow(now: fixture.clock.now) < .seconds(3600))
        #expect(store.recentEvents.contains { if case .historyDropped(1, _, .quota, _) = $0 { true } else { false } })
    }

    @Test func badInputGetsTypedErrors() async throws {
        let fixture = Fixture(units: 2)
        let store = try fixture.open()
        let journal = try store.createJournal(1, configuration: configuration, volumes: [1])
        await #expect(throws: JournalError.self) { try await journal.append(volume: 9, offset: 0, bytes: [1]) }
        do {
            try await journal.append(volume: 1, offset: UInt64(16 << 10) - 1, bytes: [1, 2])
            Issue.record("a write past the volume's end was accepted")
        } catch {
            #expect(error.code == .outOfBounds)
        }
        do {
            try await journal.append(volume: 1, offset: 0, bytes: [UInt8](repeating: 1, count: 70_000))
            Issue.record("a record larger than a unit was accepted")
        } catch {
            #expect(error.code == .outOfBounds || error.code == .recordTooLarge)
        }
        #expect(throws: JournalError.self) {
            try store.createJournal(2, configuration: JournalConfiguration(window: .seconds(1), quota: 1), volumes: [1])
        }
        #expect(throws: JournalError.self) { try store.createJournal(1, configuration: configuration, volumes: [1]) }
    }

    @Test func fullPoolRejectsWithoutWritingHalfARecord() async throws {
        let fixture = Fixture(units: 2)
        let store = try fixture.open()
        let config = JournalConfiguration(
            window: .seconds(3600), quota: 8, durability: .buffered, indexInterval: 4096, backPressureTimeout: .zero)
        let first = try store.createJournal(1, configuration: config, volumes: [1])
        _ = try store.createJournal(2, configuration: config, volumes: [1])
        var rejected: JournalError?
        for index in 0..<200 {
            do {
                try await first.append(volume: 1, offset: 0, bytes: pattern(index, count: 1000))
            } catch {
                rejected = error
                break
            }
        }
        #expect(rejected?.code == .full)
        let last = first.lastSequence
        try first.synchronize()
        #expect(try first.verify().lastSequence == last)
    }

    @Test func failedFsyncPoisonsTheJournal() async throws {
        let random = SimulationRandom(seed: 1)
        let pool = SimulatedStoragePool(unitCapacity: 64 << 10, budget: 1 << 20, random: random)
        let bases = SimulatedStoragePool(unitCapacity: 8192, budget: 1 << 20, random: random, firstUnit: 1000)
        let store = try JournalStore(journalPool: pool, basePool: bases)
        let journal = try store.createJournal(1, configuration: configuration, volumes: [1])
        try await journal.append(volume: 1, offset: 0, bytes: [1])
        pool.units.last?.failNextSynchronize()
        await #expect(throws: JournalError.self) { try await journal.append(volume: 1, offset: 0, bytes: [2]) }
        do {
            try await journal.append(volume: 1, offset: 0, bytes: [3])
            Issue.record("an append after a failed fsync was acknowledged")
        } catch {
            #expect(error.code == .poisoned)
        }
        #expect(journal.durableSequence == 1)
    }

    @Test func flippedByteInASealedUnitIsNamedByUnitAndOffset() async throws {
        let fixture = Fixture()
        let store = try fixture.open()
        let journal = try store.createJournal(1, configuration: configuration, volumes: [1])
        for index in 0..<200 {
            try await journal.append(volume: 1, offset: 0, bytes: pattern(index, count: 600))
        }
        try store.close()
        let sealed = try #require(fixture.pool.units.first)
        // The 11th record of the first unit: every record is 640 bytes.
        let target = JournalFormat.headerPageSize + 10 * 640 + 100
        var byte = try sealed.read(at: target, count: 1)
        byte[0] ^= 0x40
        try sealed.write(byte, at: target)
        let reopened = try #require(try fixture.open().journal(1))
        do {
            _ = try reopened.verify()
            Issue.record("verify passed over a flipped byte")
        } catch {
            #expect(error.code == .damaged)
            #expect(error.unit == sealed.id)
            #expect(error.offset == JournalFormat.headerPageSize + 10 * 640)
        }
        // Damage to the seal itself stops the open.
        let header = try UnitHeader.decode(try sealed.read(at: 0, count: 96))
        let trailer = try #require(header).trailerOffset
        var seal = try sealed.read(at: trailer + 8, count: 1)
        seal[0] ^= 1
        try sealed.write(seal, at: trailer + 8)
        do {
            _ = try fixture.open()
            Issue.record("a store with a damaged seal opened")
        } catch {
            #expect(error.code == .damaged)
            #expect(error.unit == sealed.id)
            #expect(error.offset == trailer)
        }
    }

    @Test func tornTailIsCutAndZeroed() async throws {
        let fixture = Fixture()
        let store = try fixture.open()
        let journal = try store.createJournal(1, configuration: configuration, volumes: [1])
        for index in 0..<10 { try await journal.append(volume: 1, offset: 0, bytes: pattern(index, count: 200)) }
        try store.close()
        let unit = try #require(fixture.pool.units.last)
        let end = JournalFormat.headerPageSize + 10 * 240
        // A torn eleventh record: a header and half a payload.
        try unit.write(Array(try unit.read(at: end - 240, count: 120)), at: end)
        let reopened = try fixture.open()
        #expect(reopened.journal(1)?.lastSequence == 10)
        #expect(reopened.recentEvents.contains(.tornTailTruncated(1, unit.id, offset: end)))
        #expect(try unit.read(at: end, count: 240).allSatisfy { $0 == 0 })
    }
}

@Suite struct HostileRecordTests {
    @Test func aChecksummedRecordOutsideItsVolumeIsDamageNotAWildWrite() async throws {
        let fixture = Fixture()
        let store = try fixture.open()
        let journal = try store.createJournal(
            1, configuration: JournalConfiguration(window: .seconds(10), quota: 4, indexInterval: 4096), volumes: [1])
        try await journal.append(volume: 1, offset: 0, bytes: [1, 2, 3])
        try store.close()
        let unit = try #require(fixture.pool.units.first)
        let header = try #require(try UnitHeader.decode(try unit.read(at: 0, count: 96)))
        // A second record, correctly checksummed, that claims an offset far past the volume.
        var record = [UInt8](repeating: 0, count: JournalFormat.footprint(payloadCount: 16))
        let payload = [UInt8](repeating: 9, count: 16)
        record.withUnsafeMutableBytes { target in
            payload.withUnsafeBytes { source in
                if let base = target.baseAddress {
                    _ = RecordCodec.encode(
                        into: base, salt: header.salt, sequence: 2, time: fixture.clock.now, volume: 1,
                        offset: 1 << 40, payload: source)
                }
            }
        }
        let at = JournalFormat.headerPageSize + JournalFormat.footprint(payloadCount: 3)
        try unit.write(record, at: at)
        let reopened = try #require(try fixture.open().journal(1))
        for attempt in 0..<2 {
            do {
                if attempt == 0 {
                    _ = try reopened.verify()
                } else {
                    _ = try reopened.image(of: 1, at: fixture.clock.now)
                }
                Issue.record("a record outside its volume was accepted")
            } catch {
                #expect(error.code == .damaged)
                #expect(error.unit == unit.id)
                #expect(error.offset == at)
            }
        }
    }
}

@Suite struct SalvageTests {
    @Test func salvageCutsBeforeTheFirstDamageOnlyWhenAsked() async throws {
        let fixture = Fixture()
        let store = try fixture.open()
        let journal = try store.createJournal(
            1, configuration: JournalConfiguration(window: .seconds(10), quota: 8, indexInterval: 4096), volumes: [1])
        for index in 0..<200 {
            try await journal.append(volume: 1, offset: 0, bytes: pattern(index, count: 600))
        }
        try store.close()
        #expect(fixture.pool.units.count == 3)
        let first = try #require(fixture.pool.units.first)
        // Damage the 11th record of the first (sealed) unit.
        let target = JournalFormat.headerPageSize + 10 * 640 + 50
        var byte = try first.read(at: target, count: 1)
        byte[0] ^= 0x01
        try first.write(byte, at: target)
        // Without salvage the damage is reported, not cut.
        let plain = try #require(try fixture.open().journal(1))
        #expect(plain.lastSequence == 200)
        #expect(throws: JournalError.self) { try plain.verify() }
        // With salvage the journal ends at record 10 and verifies.
        let salvaged = try JournalStore(
            journalPool: fixture.pool, basePool: fixture.bases, options: JournalStore.Options(salvage: true),
            clock: { fixture.clock.now })
        let cut = try #require(salvaged.journal(1))
        #expect(cut.lastSequence == 10)
        #expect(fixture.pool.units.count == 1)
        #expect(
            salvaged.recentEvents.contains(
                .salvaged(1, first.id, offset: JournalFormat.headerPageSize + 10 * 640, lastSequence: 10)))
        #expect(try cut.verify().records == 10)
        let next = try await cut.append(volume: 1, offset: 0, bytes: [1])
        #expect(next.sequence == 11)
    }
}

@Suite struct JournalBatchTests {
    @Test("a batch crossing rollovers is journaled in order with one wait; a bad write in it journals none")
    func batchAppend() async throws {
        let fixture = Fixture()
        let store = try fixture.open()
        let journal = try store.createJournal(
            1, configuration: JournalConfiguration(window: .seconds(60), quota: 8), volumes: [1])
        let writes = (0..<200).map { JournalWrite(volume: 1, offset: UInt64($0 * 8), bytes: pattern($0, count: 1000)) }
        let receipts = try await journal.append(contentsOf: writes)
        #expect(receipts.map(\.sequence) == Array(1...200))
        #expect(journal.durableSequence == 200)
        #expect(journal.status.units.count >= 3)
        // Every durable record counted once, the rollovers' included; flushes' alone beside it.
        #expect(journal.statistics.recordsSynchronized == 200)
        #expect(journal.statistics.recordsSynchronizedByFlushes < 200)
        let records = try journal.records(from: .zero, through: receipts[199].time)
        #expect(records.map(\.sequence) == Array(1...200))
        #expect(records.map(\.bytes) == writes.map(\.bytes))
        // A write outside its volume, last in the batch: nothing of the batch is journaled.
        let bad = [
            JournalWrite(volume: 1, offset: 0, bytes: [1]), JournalWrite(volume: 1, offset: 1 << 40, bytes: [2]),
        ]
        do {
            try await journal.append(contentsOf: bad)
            Issue.record("a batch with a write outside its volume was journaled")
        } catch {
            #expect(error.code == .outOfBounds)
        }
        #expect(journal.lastSequence == 200)
        // Buffered, then made durable by one synchronize.
        let buffered = try journal.appendBuffered(contentsOf: Array(writes.prefix(10)))
        #expect(buffered.map(\.sequence) == Array(201...210))
        try journal.synchronize()
        #expect(journal.durableSequence == 210)
        try store.close()
    }
}

@Suite struct JournalMetricsTests {
    @Test func bytesRecordsUnitsWindowAndFsyncLatencyAreReported() async throws {
        let metrics = TestMetrics()
        let fixture = Fixture()
        let store = try JournalStore(
            journalPool: fixture.pool, basePool: fixture.bases, clock: { fixture.clock.now }, metricsFactory: metrics)
        let journal = try store.createJournal(
            1, configuration: JournalConfiguration(window: .seconds(1), quota: 8, indexInterval: 4096), volumes: [1])
        for index in 0..<150 {
            fixture.clock.advance(.milliseconds(20))
            try await journal.append(volume: 1, offset: 0, bytes: pattern(index, count: 1000))
        }
        try journal.maintain()
        let dimensions = [("journal", "1")]
        #expect(try metrics.expectCounter("ft_journal_records_total", dimensions).totalValue == 150)
        #expect(try metrics.expectCounter("ft_journal_bytes_total", dimensions).totalValue == 150 * 1040)
        #expect(try metrics.expectTimer("ft_journal_fsync_seconds", dimensions).values.count > 0)
        #expect(
            try metrics.expectRecorder("ft_journal_units_held", dimensions).lastValue
                == Double(journal.status.units.count))
        #expect(try metrics.expectGauge("ft_journal_effective_window_seconds", dimensions).lastValue == 1.0)
        try store.close()
    }

    @Test("a journal directory's file pools report fsyncs to the factory the store was given, not the global one")
    func storageMetricsGoToTheInjectedFactory() async throws {
        let metrics = TestMetrics()
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("ft-metrics-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = try JournalStore.create(
            directory: root, unitSize: 64 << 10, journalUnits: 4, volumes: [1], volumeSize: 4096,
            configuration: JournalConfiguration(window: .seconds(60), quota: 4), metricsFactory: metrics)
        _ = try await store.journal(1)?.append(volume: 1, offset: 0, bytes: [1])
        #expect(try metrics.expectTimer("ft_storage_fsync_seconds").values.count > 0)
        #expect(try metrics.expectCounter("ft_storage_fsync_failures").totalValue == 0)
        try store.close()
    }
}
