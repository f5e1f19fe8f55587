import FaultToleranceCore
import Foundation
import LiveCopy
import Synchronization
import Testing

@testable import Checkpointing

@Suite("Checkpoint store recovery and cuts under concurrent writers")
struct CheckpointRecoveryTests {
    /// The pool's log unit and the end of its records.
    static func logUnit(of pool: some StoragePool) throws -> (unit: any StorageUnit, end: Int) {
        for unit in pool.units {
            guard case .header(let header) = UnitHeader.decode(try unit.read(at: 0, count: UnitHeader.size)),
                header.role == .log
            else { continue }
            let bytes = try unit.read(at: 0, count: unit.capacity)
            var offset = UnitHeader.size
            while case .record(_, let length) = bytes.withUnsafeBytes({
                LogRecord.decode($0, at: offset, generation: header.generation)
            }) { offset += length }
            return (unit, offset)
        }
        throw CheckpointError(.damaged, detail: "no log unit")
    }

    @Test func aTornLogTailIsDroppedAndDamageBeforeItIsReported() throws {
        let app = try Application(pages: 16)
        var ids: [CheckpointID] = []
        for value in 1...3 {
            try app.memory.storeWord(UInt64(value), at: 0)
            ids.append(try app.checkpointer.checkpointBlocking().summary.id)
        }
        let (log, end) = try Self.logUnit(of: app.pool)
        // A record cut off mid-write: its header promises more bytes than arrived.
        try log.write([60, 0, 0, 0, 0x12, 0x34, 0x56, 0x78, 1, 9, 9, 9], at: end)
        let reopened = try CheckpointStore.open(pool: app.pool)
        #expect(reopened.checkpoints.map(\.id) == ids)
        // The store goes on from the tail, and reopens again.
        let checkpointer = try Checkpointer(
            application: "app", store: reopened, regions: ["heap": app.memory], volumes: ["disk": app.volume],
            resumingFrom: ids.last)
        try app.memory.storeWord(99, at: 4096)
        let next = try checkpointer.checkpointBlocking()
        #expect(next.summary.kind == .incremental)
        #expect(try CheckpointStore.open(pool: app.pool).checkpoints.map(\.id) == ids + [next.summary.id])

        // Damage in the middle of the log is not a torn tail.
        var byte = try log.read(at: UnitHeader.size + 40, count: 1)
        byte[0] ^= 0x40
        try log.write(byte, at: UnitHeader.size + 40)
        let error = try #require(throws: CheckpointError.self) { _ = try CheckpointStore.open(pool: app.pool) }
        #expect(error.code == .damaged)
        #expect(error.unit == log.id)
    }

    @Test func aFullLogIsCompactedIntoTheNextGeneration() throws {
        let pool = MemoryStoragePool(unitCapacity: 1 << 20, budget: 64 << 20)
        let store = try CheckpointStore.open(pool: pool)
        let memory = try TrackedMemory(pageCount: 4)
        let checkpointer = try Checkpointer(application: "app", store: store, regions: ["heap": memory])
        let (firstLog, _) = try Self.logUnit(of: pool)
        var value: UInt64 = 0
        var kept: CheckpointID?
        // Each round appends a commit and a delete: about 9,000 rounds fill a 1 MiB log.
        while pool.unit(firstLog.id) != nil {
            value += 1
            try memory.storeWord(value, at: 8)
            let id = try checkpointer.checkpointBlocking().summary.id
            if let kept { try store.delete(kept) }
            kept = id
            if value % 500 == 0 { try store.collectGarbage() }
            try #require(value < 20_000)
        }
        #expect(pool.unit(firstLog.id) == nil)
        let reopened = try CheckpointStore.open(pool: pool)
        #expect(
            reopened.checkpoints.map(\.id) == [try #require(kept)],
            "\(reopened.checkpoints.map(\.id)) kept \(String(describing: kept))")
        #expect(store.checkpoints.map(\.id) == [try #require(kept)])
        var restored = [UInt8](repeating: 0, count: memory.byteCount)
        try restored.withUnsafeMutableBytes { try reopened.restore(try #require(kept), item: "heap", into: $0) }
        #expect(restored == (try memory.read(at: 0, count: memory.byteCount)))
        // Identities are never reused after a compaction.
        let checkpointer2 = try Checkpointer(application: "app", store: reopened, regions: ["heap": memory])
        #expect(try checkpointer2.checkpointBlocking().summary.id > (try #require(kept)))
    }

    /// A writer stores 1, 2, 3, ... into page v mod N while checkpoints are taken. Each
    /// restored checkpoint must be one instant of that sequence: some V, with every page
    /// holding the last value up to V that belongs to it.
    @Test func everyCheckpointIsOneCutOfAWriterThatNeverStops() throws {
        let pages = 2048
        let app = try Application(pages: pages, budgetUnits: 200)
        let stop = Atomic<Bool>(false)
        let writer = Thread {
            var value: UInt64 = 0
            while !stop.load(ordering: .relaxed) {
                value += 1
                try? app.memory.storeWord(value, at: Int(value % UInt64(pages)) * 4096)
            }
        }
        writer.start()
        var preserved = 0
        var ids: [CheckpointID] = []
        for _ in 0..<8 {
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
            let top = values.max() ?? 0
            for page in 0..<pages {
                // The largest v <= top with v % pages == page, or 0 if there is none.
                let offset = (Int(top % UInt64(pages)) - page + pages) % pages
                let expected = top >= UInt64(offset) ? top - UInt64(offset) : 0
                if values[page] != expected {
                    Issue.record(
                        "checkpoint \(id): page \(page) holds \(values[page]), the cut at \(top) says \(expected)")
                    break
                }
            }
        }
        #expect(preserved > 0, "no page was written during a copy: the guard was not exercised")
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
