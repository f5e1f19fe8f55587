import FaultToleranceCore
import LiveCopy
import Testing

@testable import Checkpointing

/// The store's log: torn tails, damage, compaction (one thread; out of CI's sanitizer run).
@Suite("Checkpoint store log: torn tails, damage, compaction")
struct CheckpointLogTests {
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

}
