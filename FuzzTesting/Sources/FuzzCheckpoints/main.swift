import Checkpointing
import FaultToleranceCore
import LiveCopy

// Feeds arbitrary bytes to the checkpoint store's decoders. The first byte steers:
//   mode 0 (byte % 4 == 0): a manifest; with bit 2 set its trailing CRC32C is repaired first,
//     so mutations reach the fields behind the checksum. A manifest accepted must re-encode
//     to exactly its bytes.
//   mode 1: a data-chunk frame (bit 2: its frame checksum repaired first); a frame accepted
//     must give back a payload of the length it declares.
//   mode 2: the record area of a real store's log unit; mode 3: a real store's data unit
//     after its header. The store is then opened, listed, verified and every checkpoint
//     restored: each must work or throw a CheckpointError, never crash.

/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard let first = input.first else { return 0 }
    var bytes = Array(input.dropFirst().prefix(256 << 10))
    let repair = first & 4 != 0
    switch first % 4 {
    case 0:
        if repair && bytes.count >= 4 {
            let checksum = CRC32C.checksum(bytes[0..<bytes.count - 4])
            for index in 0..<4 { bytes[bytes.count - 4 + index] = UInt8(truncatingIfNeeded: checksum >> (8 * index)) }
        }
        if let manifest = try? CheckpointManifest(decoding: bytes), manifest.encoded() != bytes {
            fatalError("a manifest decoded but does not re-encode to its bytes")
        }
    case 1:
        if repair && bytes.count >= 32 {
            var crc = CRC32C()
            crc.update(bytes[0..<28])
            crc.update(bytes[32...])
            for index in 0..<4 { bytes[28 + index] = UInt8(truncatingIfNeeded: crc.value >> (8 * index)) }
        }
        if let payload = try? CheckpointChunk.payload(ofFrame: bytes) {
            let declared = Int(bytes[8]) | Int(bytes[9]) << 8 | Int(bytes[10]) << 16 | Int(bytes[11]) << 24
            if payload.count != declared { fatalError("a chunk gave \(payload.count) bytes, declared \(declared)") }
        }
    default:
        openStore(over: bytes, logUnit: first % 4 == 2)
    }
    return 0
}

/// A store with two checkpoints, then `bytes` written over its log's records or its data.
func openStore(over bytes: [UInt8], logUnit: Bool) {
    let pool = MemoryStoragePool(unitCapacity: 1 << 20, budget: 8 << 20)
    do {
        let store = try CheckpointStore.open(pool: pool)
        let memory = try TrackedMemory(pageCount: 4, pageSize: 4096)
        let checkpointer = try Checkpointer(application: "fuzz", store: store, regions: ["heap": memory])
        try memory.write([UInt8](repeating: 7, count: 5000), at: 100)
        _ = try checkpointer.checkpointBlocking()
        try memory.write([1, 2, 3], at: 3 * 4096)
        _ = try checkpointer.checkpointBlocking()
        // The log unit is allocated first, the data unit second.
        let units = pool.units
        guard units.count >= 2 else { fatalError("the store has \(units.count) units") }
        let target = logUnit ? units[0] : units[1]
        try target.write(bytes, at: 64)
    } catch {
        fatalError("setting up the store failed: \(error)")
    }
    guard let reopened = try? CheckpointStore.open(pool: pool) else { return }
    _ = reopened.verify()
    var buffer = [UInt8](repeating: 0, count: 4 * 4096)
    for summary in reopened.checkpoints {
        _ = try? reopened.manifest(summary.id)
        try? buffer.withUnsafeMutableBytes { try reopened.restore(summary.id, item: "heap", into: $0) }
        _ = try? reopened.merge(summary.id)
    }
    _ = try? reopened.collectGarbage()
}
