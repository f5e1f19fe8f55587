import FaultToleranceCore
import Foundation
import LiveCopy
import Synchronization
import Testing

@testable import Checkpointing

@Suite("Checkpoints under concurrent writers and on real files")
struct CheckpointRecoveryTests {
    /// Why `values` (page p's first word) is not one instant of a writer storing 1, 2, 3, ...
    /// into page v mod N: with top the largest, page p must hold the largest v <= top with
    /// v mod N == p, or 0 if there is none. `nil` when it is.
    static func notOneInstant(_ values: [UInt64]) -> String? {
        let pages = values.count
        let top = values.max() ?? 0
        for page in 0..<pages {
            let offset = (Int(top % UInt64(pages)) - page + pages) % pages
            let expected = top >= UInt64(offset) ? top - UInt64(offset) : 0
            if values[page] != expected {
                return "page \(page) holds \(values[page]), the cut at \(top) says \(expected)"
            }
        }
        return nil
    }

    /// A writer stores 1, 2, 3, ... into page v mod N while checkpoints are taken. Each
    /// restored checkpoint must be one instant of that sequence: some V, with every page
    /// holding the last value up to V that belongs to it.
    @Test func everyCheckpointIsOneCutOfAWriterThatNeverStops() throws {
        let pages = 2048
        let app = try Application(pages: pages, budgetUnits: 200)
        let stop = Atomic<Bool>(false)
        let progress = Atomic<UInt64>(0)
        let writer = Thread {
            var value: UInt64 = 0
            while !stop.load(ordering: .relaxed) {
                value += 1
                try? app.memory.storeWord(value, at: Int(value % UInt64(pages)) * 4096)
                progress.store(value, ordering: .relaxed)
            }
        }
        writer.start()
        var preserved = 0
        var ids: [CheckpointID] = []
        // Eight checkpoints, and more (up to 24) until the writer has hit a page during a copy:
        // on a loaded machine it may not be scheduled during the first ones. Each starts only
        // once the writer is seen running (progress, not a timed wait).
        while ids.count < 8 || (preserved == 0 && ids.count < 24) {
            let mark = progress.load(ordering: .relaxed)
            while progress.load(ordering: .relaxed) < mark + 10_000 { sched_yield() }
            let report = try app.checkpointer.checkpointBlocking()
            preserved += report.preservedPages
            ids.append(report.summary.id)
        }
        stop.store(true, ordering: .relaxed)
        for id in ids {
            var bytes = [UInt8](repeating: 0, count: app.memory.byteCount)
            try bytes.withUnsafeMutableBytes { try app.store.restore(id, item: "heap", into: $0) }
            let values = (0..<pages).map { page in
                bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: page * 4096, as: UInt64.self) }
            }
            if let problem = Self.notOneInstant(values) { Issue.record("checkpoint \(id): \(problem)") }
        }
        #expect(preserved > 0, "no page was written during a copy: the guard was not exercised")
    }

    /// The same for a ``UserfaultMemory`` region, written through its pointer (inside the gate):
    /// its pages are copied around the pause instead of guarded, and every checkpoint, full and
    /// incremental, must still be one instant of the writer's sequence. Runs wherever the kernel
    /// has userfaultfd write-protect, and must run where `FT_REQUIRE_USERFAULTFD` is set (CI).
    @Test(
        .enabled(
            if: (try? UserfaultMemory(pageCount: 1)) != nil || getenv("FT_REQUIRE_USERFAULTFD") != nil,
            "the kernel lacks userfaultfd write-protect"))
    func aUserfaultRegionCheckpointIsOneCutOfAWriterThatNeverStops() throws {
        let pages = 2048
        let memory = try UserfaultMemory(pageCount: pages)
        let pageSize = memory.pageSize
        let pool = MemoryStoragePool(unitCapacity: 1 << 20, budget: 400 << 20)
        let store = try CheckpointStore.open(pool: pool, configuration: .init(deflateLevel: nil))
        let checkpointer = try Checkpointer(application: "app", store: store, userfaultRegions: ["heap": memory])
        let stop = Atomic<Bool>(false)
        let writer = Thread {
            var value: UInt64 = 0
            while !stop.load(ordering: .relaxed) {
                value += 1
                memory.gate.withEntry {
                    memory.baseAddress.storeBytes(
                        of: value, toByteOffset: Int(value % UInt64(pages)) * pageSize, as: UInt64.self)
                }
            }
        }
        writer.start()
        var ids: [CheckpointID] = []
        var kinds: [CheckpointManifest.Kind] = []
        for round in 0..<8 {
            let report = try checkpointer.checkpointBlocking(full: round == 4)
            ids.append(report.summary.id)
            kinds.append(report.summary.kind)
        }
        stop.store(true, ordering: .relaxed)
        #expect(kinds.contains(.full) && kinds.contains(.incremental))
        for id in ids {
            var bytes = [UInt8](repeating: 0, count: memory.byteCount)
            try bytes.withUnsafeMutableBytes { try store.restore(id, item: "heap", into: $0) }
            let values = (0..<pages).map { page in
                bytes.withUnsafeBytes { $0.loadUnaligned(fromByteOffset: page * pageSize, as: UInt64.self) }
            }
            #expect(values.max() ?? 0 > 0, "checkpoint \(id) holds none of the writer's values")
            if let problem = Self.notOneInstant(values) { Issue.record("checkpoint \(id): \(problem)") }
        }
    }

    @Test func aStoreOnRealFilesReopensAndRestores() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ckpt-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let memory = try TrackedMemory(pageCount: 32)
        var expected: [UInt8] = []
        var id: CheckpointID?
        do {
            let pool = try FileStoragePool(directories: [directory], unitCapacity: 1 << 20, budget: 8 << 20)
            defer { pool.close() }
            let store = try CheckpointStore.open(pool: pool)
            let checkpointer = try Checkpointer(application: "app", store: store, regions: ["heap": memory])
            try memory.write([UInt8](repeating: 5, count: 5000), at: 1000)
            _ = try checkpointer.checkpointBlocking()
            try memory.write([UInt8](repeating: 6, count: 10), at: 4096 * 20)
            expected = try memory.read(at: 0, count: memory.byteCount)
            id = try checkpointer.checkpointBlocking().summary.id
        }
        let pool = try FileStoragePool(directories: [directory], unitCapacity: 1 << 20, budget: 8 << 20)
        defer { pool.close() }
        let store = try CheckpointStore.open(pool: pool)
        #expect(store.checkpoints.count == 2)
        let restored = try TrackedMemory(pageCount: 32)
        try store.restore(try #require(id), item: "heap", into: restored)
        #expect(try restored.read(at: 0, count: restored.byteCount) == expected)
        #expect(store.verify().problems.isEmpty)
    }
}
