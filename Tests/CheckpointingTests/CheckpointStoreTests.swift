import DeterministicSimulation
import FaultToleranceCore
import Foundation
import LiveCopy
import Logging
import MetricsTestKit
import Testing

@testable import Checkpointing

/// An application of one region and one volume, and snapshots of its bytes.
struct Application {
    let pool: MemoryStoragePool
    let store: CheckpointStore
    let memory: TrackedMemory
    let volume: TrackedVolume
    let checkpointer: Checkpointer

    init(
        application: String = "app", pages: Int = 64, budgetUnits: Int = 16, deflate: Bool = true,
        pool existing: MemoryStoragePool? = nil
    ) throws {
        pool = existing ?? MemoryStoragePool(unitCapacity: 1 << 20, budget: budgetUnits << 20)
        store = try CheckpointStore.open(pool: pool, configuration: .init(deflateLevel: deflate ? 1 : nil))
        memory = try TrackedMemory(pageCount: pages)
        volume = try TrackedVolume(
            MemoryStorageUnit(id: UnitID(999_999), capacity: pages * 1024), blockSize: 1024, gate: memory.gate)
        checkpointer = try Checkpointer(
            application: application, store: store, regions: ["heap": memory], volumes: ["disk": volume])
    }

    func snapshot() throws -> (memory: [UInt8], volume: [UInt8]) {
        (try memory.read(at: 0, count: memory.byteCount), try volume.read(at: 0, count: volume.capacity))
    }

    func restored(_ id: CheckpointID) throws -> (memory: [UInt8], volume: [UInt8]) {
        var memoryBytes = [UInt8](repeating: 0xEE, count: memory.byteCount)
        try memoryBytes.withUnsafeMutableBytes { try store.restore(id, item: "heap", into: $0) }
        let unit = MemoryStorageUnit(id: UnitID(1), capacity: volume.capacity)
        try unit.write([UInt8](repeating: 0xEE, count: volume.capacity), at: 0)
        try store.restore(id, item: "disk", into: unit)
        return (memoryBytes, try unit.read(at: 0, count: unit.capacity))
    }

    /// Writes `count` random small pieces into the region and the volume.
    func scribble(_ count: Int, using generator: inout some RandomNumberGenerator) throws {
        for _ in 0..<count {
            let length = Int.random(in: 1...300, using: &generator)
            let bytes = (0..<length).map { _ in UInt8.random(in: 1...255, using: &generator) }
            try memory.write(bytes, at: Int.random(in: 0...(memory.byteCount - length), using: &generator))
            try volume.write(bytes, at: Int.random(in: 0...(volume.capacity - length), using: &generator))
        }
    }
}

@Suite("Checkpoint store: capture, restore, merge, delete, garbage, damage")
struct CheckpointStoreTests {
    @Test func fullThenIncrementalsRestoreBitExactly() throws {
        let app = try Application()
        var generator = SystemRandomNumberGenerator()
        var expected: [(CheckpointID, (memory: [UInt8], volume: [UInt8]))] = []
        for round in 0..<6 {
            try app.scribble(round == 0 ? 200 : 15, using: &generator)
            let snapshot = try app.snapshot()
            let report = try app.checkpointer.checkpointBlocking()
            #expect(report.summary.kind == (round == 0 ? .full : .incremental))
            expected.append((report.summary.id, snapshot))
        }
        for (id, snapshot) in expected {
            let restored = try app.restored(id)
            #expect(restored.memory == snapshot.memory, "memory at \(id)")
            #expect(restored.volume == snapshot.volume, "volume at \(id)")
        }
        // An incremental stores only what changed: far fewer pages than the full.
        let summaries = app.store.checkpoints
        #expect(summaries[1].capturedBytes < summaries[0].capturedBytes)
        #expect(app.store.verify().problems.isEmpty)
    }

    @Test func zeroPagesCostNothingAndAPageZeroedLaterRestoresAsZeros() throws {
        let app = try Application(pages: 64)
        try app.memory.write([UInt8](repeating: 7, count: 4096), at: 4096 * 5)
        let first = try app.checkpointer.checkpointBlocking()
        #expect(first.storedPages == 1)
        #expect(first.zeroPages == 64 - 1 + 64)
        try app.memory.write([UInt8](repeating: 0, count: 4096), at: 4096 * 5)
        let second = try app.checkpointer.checkpointBlocking()
        #expect(second.storedPages == 0)
        #expect(try app.restored(second.summary.id).memory.allSatisfy { $0 == 0 })
        #expect(try app.restored(first.summary.id).memory[4096 * 5] == 7)
    }

    @Test func mergeWritesOnlyAManifestAndDeletesRebaseTheirChildren() throws {
        let app = try Application()
        var generator = SystemRandomNumberGenerator()
        var expected: [CheckpointID: (memory: [UInt8], volume: [UInt8])] = [:]
        var ids: [CheckpointID] = []
        for round in 0..<5 {
            try app.scribble(round == 0 ? 100 : 10, using: &generator)
            let snapshot = try app.snapshot()
            let id = try app.checkpointer.checkpointBlocking().summary.id
            expected[id] = snapshot
            ids.append(id)
        }
        let chunksBefore = app.store.verify().chunks
        let merged = try app.store.merge(ids[3])
        #expect(merged.kind == .synthetic)
        #expect(merged.parent == nil)
        #expect(app.store.verify().chunks == chunksBefore)
        // The newest incremental now builds on a synthetic full; everything still restores.
        for id in ids { #expect(try app.restored(id) == expected[id]!, "\(id) after merge") }
        // Delete the middle of the chain and the old full: the rest restores as before.
        try app.store.delete(ids[1])
        try app.store.delete(ids[0])
        #expect(app.store.checkpoints.map(\.id) == [ids[2], ids[3], ids[4]])
        for id in ids.dropFirst(2) { #expect(try app.restored(id) == expected[id]!, "\(id) after deletes") }
        // And after a reopen, which reads the log only.
        let reopened = try CheckpointStore.open(pool: app.pool)
        #expect(reopened.checkpoints == app.store.checkpoints)
    }

    @Test func retentionKeepsTheNewestAndGarbageCollectionFreesUnits() throws {
        let app = try Application(pages: 256, budgetUnits: 40, deflate: false)
        var generator = SystemRandomNumberGenerator()
        var last: (CheckpointID, (memory: [UInt8], volume: [UInt8]))?
        for _ in 0..<8 {
            try app.scribble(400, using: &generator)
            let snapshot = try app.snapshot()
            last = (try app.checkpointer.checkpointBlocking().summary.id, snapshot)
        }
        let unitsBefore = app.pool.units.count
        let deleted = try app.store.retain(last: 2, application: "app")
        #expect(deleted.count == 6)
        let collected = try app.store.collectGarbage()
        #expect(!collected.releasedUnits.isEmpty)
        #expect(app.pool.units.count < unitsBefore)
        let (id, snapshot) = try #require(last)
        #expect(try app.restored(id) == snapshot)
        #expect(app.store.verify().problems.isEmpty)
    }

    /// A full checkpoint, then incrementals each touching a few pages, then all but the
    /// newest two deleted: what is left references a little of each old unit, so garbage
    /// collection can release none of them; compaction copies those chunks out and then can.
    @Test func compactionMovesLiveChunksOutOfSparseUnitsSoTheyAreReleased() throws {
        let app = try Application(pages: 256, budgetUnits: 60, deflate: false)
        let kept = try CheckpointMaintenanceTests.sparse(app)
        try app.store.collectGarbage()
        let unitsBefore = app.pool.units.count
        #expect(try app.store.collectGarbage().releasedUnits.isEmpty)

        let compaction = try app.store.compact(liveFraction: 0.6)
        #expect(compaction.movedChunks > 0 && compaction.rewrittenCheckpoints > 0)
        #expect(!compaction.garbage.releasedUnits.isEmpty)
        #expect(app.pool.units.count < unitsBefore)
        for (id, snapshot) in kept { #expect(try app.restored(id) == snapshot) }
        #expect(app.store.verify().problems.isEmpty)
        // Nothing sparse is left: a second compaction moves nothing.
        #expect(try app.store.compact(liveFraction: 0.6).movedChunks == 0)
        // And the store reopens with the compacted manifests.
        let reopened = try CheckpointStore.open(pool: app.pool, configuration: .init(deflateLevel: nil))
        #expect(reopened.verify().problems.isEmpty)
        #expect(throws: CheckpointError.self) { try app.store.compact(liveFraction: 0) }
    }

    /// A damaged chunk in a sparse unit is reported, never copied; nothing is released and the
    /// other checkpoints still restore.
    @Test func compactionRefusesToCopyADamagedChunk() throws {
        let app = try Application(pages: 256, budgetUnits: 60, deflate: false)
        var generator = SystemRandomNumberGenerator()
        try app.scribble(2000, using: &generator)
        let full = try app.checkpointer.checkpointBlocking(full: true).summary.id
        for _ in 0..<12 {
            try app.scribble(120, using: &generator)
            _ = try app.checkpointer.checkpointBlocking()
        }
        let newest = try #require(app.store.latest(application: "app")).id
        let newestSnapshot = try app.snapshot()
        for summary in app.store.checkpoints where summary.id != full && summary.id != newest {
            try app.store.delete(summary.id)
        }
        // Damage one chunk of the full checkpoint (in the sparse first unit).
        let manifest = try app.store.manifest(full)
        guard case .chunk(let reference, _) = try #require(manifest.items[0].extents.first).source else {
            Issue.record("no chunk in the full checkpoint")
            return
        }
        let unit = try #require(app.pool.unit(reference.unit))
        var byte = try unit.read(at: reference.offset + 40, count: 1)
        byte[0] ^= 0xFF
        try unit.write(byte, at: reference.offset + 40)
        let unitsBefore = app.pool.units.count
        let error = try #require(throws: CheckpointError.self) { try app.store.compact(liveFraction: 1) }
        #expect(error.code == .damaged && error.unit == reference.unit && error.offset == reference.offset)
        #expect(app.pool.units.count >= unitsBefore)
        #expect(throws: CheckpointError.self) { try app.restored(full) }
        // Every problem verify finds is that chunk.
        let problems = app.store.verify().problems
        #expect(!problems.isEmpty && problems.allSatisfy { $0.offset == reference.offset })
        // The newest (rebased onto the full, it may still use that chunk) restores exactly or
        // names that chunk; never other bytes.
        do {
            #expect(try app.restored(newest) == newestSnapshot)
        } catch let error as CheckpointError {
            #expect(error.code == .damaged && error.unit == reference.unit && error.offset == reference.offset)
        }
    }

    /// Raw chunks are restored straight into the destination and checked there; deflated ones
    /// through a buffer. Both name the damage.
    @Test(arguments: [true, false])
    func aDamagedChunkIsNamedAndOtherCheckpointsStillRestore(deflate: Bool) throws {
        let app = try Application(deflate: deflate)
        try app.memory.write([UInt8](repeating: 3, count: 4096), at: 0)
        let first = try app.checkpointer.checkpointBlocking(full: true)
        let firstSnapshot = try app.snapshot()
        try app.memory.write([UInt8](repeating: 9, count: 100), at: 4096 * 9)
        let second = try app.checkpointer.checkpointBlocking()
        // Damage the chunk only the second checkpoint holds.
        let manifest = try app.store.manifest(second.summary.id)
        guard case .chunk(let reference, _) = try #require(manifest.items[0].extents.first).source else {
            Issue.record("no chunk in the incremental")
            return
        }
        let unit = try #require(app.pool.unit(reference.unit))
        var byte = try unit.read(at: reference.offset + 40, count: 1)
        byte[0] ^= 0xFF
        try unit.write(byte, at: reference.offset + 40)
        let error = try #require(throws: CheckpointError.self) { try app.restored(second.summary.id) }
        #expect(error.code == .damaged)
        #expect(error.checkpoint == second.summary.id)
        #expect(error.unit == reference.unit)
        #expect(error.offset == reference.offset)
        #expect(try app.restored(first.summary.id) == firstSnapshot)
        let verification = app.store.verify()
        #expect(verification.problems.count == 1)
        #expect(verification.problems.first?.offset == reference.offset)
    }

    @Test func capturesAreCountedAndTheirPausesTimed() throws {
        let metrics = TestMetrics()
        let pool = MemoryStoragePool(unitCapacity: 1 << 20, budget: 3 << 20)
        let store = try CheckpointStore.open(pool: pool)
        let memory = try TrackedMemory(pageCount: 64)
        let checkpointer = try Checkpointer(
            application: "orders", store: store, regions: ["heap": memory], metricsFactory: metrics)
        var stored = 0
        for round in 0..<3 {
            try memory.write([UInt8](repeating: UInt8(round + 1), count: 5000), at: round * 9000)
            stored += try checkpointer.checkpointBlocking().storedPages
        }
        // A region larger than the budget: refused before the pause, counted as failed.
        let big = try TrackedMemory(pageCount: 1024)
        let refused = try Checkpointer(
            application: "orders", store: store, regions: ["big": big], metricsFactory: metrics)
        #expect(throws: CheckpointError.self) { try refused.checkpointBlocking() }
        let dimensions = [("application", "orders")]
        #expect(
            try metrics.expectCounter("ft_checkpoint_captures_total", dimensions + [("outcome", "committed")])
                .totalValue == 3)
        #expect(
            try metrics.expectCounter("ft_checkpoint_captures_total", dimensions + [("outcome", "failed")])
                .totalValue == 1)
        #expect(try metrics.expectTimer("ft_checkpoint_pause_seconds", dimensions).values.count == 3)
        // Deflated, the repeated bytes store far less than the pages they fill.
        let storedBytes = try metrics.expectCounter("ft_checkpoint_stored_bytes_total", dimensions).totalValue
        #expect(storedBytes > 0 && storedBytes < Int64(stored * 4096))
    }

    @Test func aFullBudgetFailsBeforePausingAndTheNextCaptureStillHoldsThePages() throws {
        let app = try Application(pages: 200, budgetUnits: 3, deflate: false)
        try app.memory.write([UInt8](repeating: 1, count: 4096 * 200), at: 0)
        let first = try app.checkpointer.checkpointBlocking()
        var generator = SystemRandomNumberGenerator()
        for page in 0..<200 {
            try app.memory.write((0..<4096).map { _ in UInt8.random(in: 0...255, using: &generator) }, at: page * 4096)
        }
        let unitsBefore = app.pool.units.count
        #expect {
            _ = try app.checkpointer.checkpointBlocking()
        } throws: { ($0 as? CheckpointError)?.code == .budgetExceeded }
        #expect(app.pool.units.count == unitsBefore)
        #expect(app.store.checkpoints.map(\.id) == [first.summary.id])
        #expect(app.memory.gate.isPaused == false)
        #expect(try app.restored(first.summary.id).memory.allSatisfy { $0 == 1 })
    }

    @Test func aCaptureThatFailsMidwayGivesItsPagesToTheNext() throws {
        let faulty = FaultyPool(unitCapacity: 1 << 20, budget: 16 << 20)
        let store = try CheckpointStore.open(pool: faulty)
        let memory = try TrackedMemory(pageCount: 64)
        let checkpointer = try Checkpointer(application: "app", store: store, regions: ["heap": memory])
        try memory.write([UInt8](repeating: 1, count: 100), at: 0)
        let first = try checkpointer.checkpointBlocking()
        try memory.write([UInt8](repeating: 2, count: 4096 * 3), at: 4096 * 10)
        faulty.failWrites = true
        #expect(throws: CheckpointError.self) { _ = try checkpointer.checkpointBlocking() }
        #expect(memory.gate.isPaused == false)
        faulty.failWrites = false
        #expect(store.checkpoints.map(\.id) == [first.summary.id])
        try memory.write([UInt8](repeating: 3, count: 10), at: 4096 * 30)
        let snapshot = try memory.read(at: 0, count: memory.byteCount)
        let report = try checkpointer.checkpointBlocking()
        #expect(report.summary.kind == .incremental)
        #expect(report.summary.parent == first.summary.id)
        #expect(report.storedPages == 4)
        var restored = [UInt8](repeating: 0xEE, count: memory.byteCount)
        try restored.withUnsafeMutableBytes { try store.restore(report.summary.id, item: "heap", into: $0) }
        #expect(restored == snapshot)
    }
}

/// A memory pool whose units' writes fail while ``failWrites`` is set.
final class FaultyPool: StoragePool, @unchecked Sendable {
    final class Unit: StorageUnit, @unchecked Sendable {
        let inner: MemoryStorageUnit
        unowned let pool: FaultyPool
        init(_ inner: MemoryStorageUnit, pool: FaultyPool) {
            self.inner = inner
            self.pool = pool
        }
        var id: UnitID { inner.id }
        var capacity: Int { inner.capacity }
        func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
            try inner.read(into: buffer, at: offset)
        }
        func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
            if pool.failWrites { throw StorageError(.ioFailed, unit: id, offset: offset, detail: "injected") }
            try inner.write(bytes, at: offset)
        }
        func synchronize() throws(StorageError) { try inner.synchronize() }
        func discard(_ range: Range<Int>) throws(StorageError) { try inner.discard(range) }
    }

    let inner: MemoryStoragePool
    var failWrites = false
    private var wrappers: [UnitID: Unit] = [:]

    init(unitCapacity: Int, budget: Int) { inner = MemoryStoragePool(unitCapacity: unitCapacity, budget: budget) }

    var unitCapacity: Int { inner.unitCapacity }
    var budget: Int { inner.budget }
    var units: [Unit] { inner.units.map { wrap($0) } }
    func allocate() throws(StorageError) -> Unit { wrap(try inner.allocate()) }
    func release(_ unit: UnitID) throws(StorageError) { try inner.release(unit) }
    func quarantine(_ unit: UnitID) throws(StorageError) { try inner.quarantine(unit) }

    private func wrap(_ unit: MemoryStorageUnit) -> Unit {
        if let existing = wrappers[unit.id] { return existing }
        let wrapper = Unit(unit, pool: self)
        wrappers[unit.id] = wrapper
        return wrapper
    }
}

@Suite("Checkpoint store: retention by count, hour and day")
struct RetentionTests {
    @Test func keepsTheNewestAndOnePerHourAndDayAndTheRestStillRestore() throws {
        let pool = MemoryStoragePool(unitCapacity: 1 << 20, budget: 64 << 20)
        let store = try CheckpointStore.open(pool: pool)
        let memory = try TrackedMemory(pageCount: 16)
        let time = SettableTime()
        let checkpointer = try Checkpointer(
            application: "app", store: store, regions: ["heap": memory], wallClock: { time.value })
        let hour = RetentionPolicy.nanosecondsPerHour
        // Day 0: hours 1, 1, 2, 5; day 1: hours 3, 3, 7; day 2: hour 0 twice.
        let times: [UInt64] = [1, 1, 2, 5, 24 + 3, 24 + 3, 24 + 7, 48, 48].map { $0 * hour + 60_000_000_000 }
        var states: [CheckpointID: [UInt8]] = [:]
        var ids: [CheckpointID] = []
        for (index, at) in times.enumerated() {
            try memory.write([UInt8](repeating: UInt8(index + 1), count: 5000), at: (index % 12) * 4096)
            time.value = at + UInt64(index)
            let id = try checkpointer.checkpointBlocking().summary.id
            ids.append(id)
            states[id] = try memory.read(at: 0, count: memory.byteCount)
        }
        let policy = RetentionPolicy(last: 2, hourly: 3, daily: 2)
        let deleted = try store.retain(policy, application: "app")
        // Last 2: the two of day 2. Hourly 3: day 2 hour 0 (newest), day 1 hour 7, day 1 hour 3
        // (the second of its two). Daily 2: day 2's newest, day 1's newest (hour 7).
        let kept = [ids[4 + 1], ids[6], ids[7], ids[8]]
        #expect(store.checkpoints.map(\.id) == kept)
        #expect(deleted == ids.filter { !kept.contains($0) })
        for id in kept {
            var bytes = [UInt8](repeating: 0xEE, count: memory.byteCount)
            try bytes.withUnsafeMutableBytes { try store.restore(id, item: "heap", into: $0) }
            #expect(bytes == states[id], "\(id) restores other bytes after retention")
        }
        #expect(store.verify().problems.isEmpty)
        // Applying it again deletes nothing more.
        #expect(try store.retain(policy, application: "app").isEmpty)
    }
}

/// A capture-time source the test sets (captures run on the test's thread).
private final class SettableTime: @unchecked Sendable {
    var value: UInt64 = 0
}

@Suite("Tracked volume: blocks changed behind its back, found by hashing")
struct HashedVolumeTests {
    @Test func writesBehindTheVolumesBackAreFoundAndCaptured() throws {
        let pool = MemoryStoragePool(unitCapacity: 1 << 20, budget: 32 << 20)
        let store = try CheckpointStore.open(pool: pool, configuration: .init(deflateLevel: nil))
        let base = MemoryStorageUnit(id: UnitID(77), capacity: 256 * 4096)
        let volume = try TrackedVolume(base, blockSize: 4096, findsChangesByHashing: true)
        let checkpointer = try Checkpointer(application: "app", store: store, volumes: ["disk": volume])
        var generator = SystemRandomNumberGenerator()
        // The first scan knows nothing: every block.
        #expect(try volume.markChangedBlocks() == 256)
        _ = try checkpointer.checkpointBlocking()
        for round in 0..<4 {
            // Written straight to the unit under the volume: no dirty bit is set.
            var touched = Set<Int>()
            for _ in 0..<10 {
                let block = Int.random(in: 0..<256, using: &generator)
                touched.insert(block)
                try base.write(
                    (0..<100).map { _ in UInt8.random(in: 1...255, using: &generator) },
                    at: block * 4096 + Int.random(in: 0..<3996, using: &generator))
            }
            // And one through the volume, tracked as usual.
            try volume.write([UInt8(round + 1)], at: 5)
            let expected = try base.read(at: 0, count: base.capacity)
            let report = try checkpointer.checkpointBlocking()
            #expect(report.storedPages == touched.union([0]).count, "round \(round)")
            var restored = [UInt8](repeating: 0, count: base.capacity)
            try restored.withUnsafeMutableBytes { try store.restore(report.summary.id, item: "disk", into: $0) }
            #expect(restored == expected, "round \(round): the restore misses writes made behind the volume's back")
        }
        // Nothing changed since: a scan finds nothing.
        #expect(try volume.markChangedBlocks() == 0)
    }
}

@Suite("Checkpoint store maintenance in the background")
struct CheckpointMaintenanceTests {
    /// Makes `app`'s store sparse: a full checkpoint, twelve small incrementals, all but the
    /// newest two deleted. Returns the two kept with their snapshots.
    static func sparse(_ app: Application) throws -> [(CheckpointID, (memory: [UInt8], volume: [UInt8]))] {
        var generator = SystemRandomNumberGenerator()
        try app.scribble(2000, using: &generator)
        _ = try app.checkpointer.checkpointBlocking(full: true)
        var kept: [(CheckpointID, (memory: [UInt8], volume: [UInt8]))] = []
        for _ in 0..<12 {
            try app.scribble(120, using: &generator)
            let snapshot = try app.snapshot()
            kept.append((try app.checkpointer.checkpointBlocking().summary.id, snapshot))
        }
        try app.store.retain(last: 2, application: "app")
        return Array(kept.suffix(2))
    }

    /// In virtual time: a pass at once and one every interval after, each compacting and
    /// collecting; a failing pass is counted and the next one runs.
    @Test func passesRunEveryIntervalAndReleaseWhatIsSparse() async throws {
        let app = try Application(pages: 256, budgetUnits: 60, deflate: false)
        let kept = try Self.sparse(app)
        let unitsBefore = app.pool.units.count
        let world = AsyncSimulation(seed: 3)
        let metrics = TestMetrics()
        let maintenance = try CheckpointMaintenance(
            store: app.store, interval: .seconds(10), liveFraction: 0.6, clock: world.clock,
            logger: Logger(label: "test"), metricsFactory: metrics, blockingIO: .inline)
        let totals = try await world.run(timeLimit: .seconds(120)) {
            () async throws -> [CheckpointMaintenance.Totals] in
            let running = world.spawn { try await maintenance.run() }
            var seen: [CheckpointMaintenance.Totals] = []
            try await world.clock.sleep(for: .seconds(5))
            seen.append(maintenance.totals)
            try await world.clock.sleep(for: .seconds(20))
            seen.append(maintenance.totals)
            running.cancel()
            _ = try? await running.value
            return seen
        }
        #expect(totals[0].passes == 1 && totals[0].failures == 0)
        #expect(totals[0].releasedUnits > 0 && totals[0].movedChunks > 0)
        #expect(totals[1].passes == 3)
        #expect(
            try metrics.expectCounter("ft_checkpoint_units_released_total").totalValue
                == Int64(totals[1].releasedUnits))
        #expect(
            try metrics.expectCounter("ft_checkpoint_maintenance_passes_total", [("outcome", "ok")]).totalValue == 3)
        #expect(app.pool.units.count < unitsBefore)
        for (id, snapshot) in kept { #expect(try app.restored(id) == snapshot) }
        #expect(app.store.verify().problems.isEmpty)

        // A closed store: the pass fails, is counted, and says why.
        app.store.close()
        await maintenance.pass()
        #expect(maintenance.totals.failures == 1 && maintenance.totals.lastFailure?.code == .unavailable)
        #expect(throws: CheckpointError.self) {
            try CheckpointMaintenance(store: app.store, interval: .zero)
        }
        #expect(throws: CheckpointError.self) {
            try CheckpointMaintenance(store: app.store, liveFraction: 1.5)
        }
    }
}
