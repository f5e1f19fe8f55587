import Checkpointing
import FaultToleranceCore
import Foundation
import LiveCopy
import Synchronization

/// The checkpoint scene of `ftctl demo`: checkpoints of a region and a volume while two
/// threads write to them, on real files.
struct CheckpointScene {
    var megabytes = 128

    func run() async throws {
        print("== Checkpointing: \(megabytes) MiB of memory and a 16 MiB volume, two writer threads")
        let directory = NSTemporaryDirectory() + "ftctl-demo-checkpoint-\(getpid())"
        try? FileManager.default.removeItem(atPath: directory)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (store, pool) = try openCheckpointStore(directory, create: true, budgetMiB: 4096)
        defer { pool.close() }
        let pages = megabytes << 8
        let memory = try TrackedMemory(pageCount: pages)
        let volume = try TrackedVolume(MemoryStorageUnit(id: UnitID(1), capacity: 16 << 20), gate: memory.gate)
        // Half the region holds data before the first checkpoint; the rest stays zero.
        for page in stride(from: 0, to: pages, by: 2) {
            try memory.storeWord(UInt64(page) &* 0x9E37_79B9_7F4A_7C15, at: page * 4096)
        }
        let checkpointer = try Checkpointer(
            application: "demo", store: store, regions: ["heap": memory], volumes: ["disk": volume])
        let stop = Atomic<Bool>(false)
        let writes = Atomic<Int>(0)
        let writers = (0..<2).map { index in
            Thread {
                var state = UInt64(index + 1)
                while !stop.load(ordering: .relaxed) {
                    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    let page = Int(state >> 33) % (pages / 64)  // a hot 1/64 of the region
                    try? memory.storeWord(state, at: page * 4096 + 8)
                    if state & 15 == 0 {
                        try? volume.write(
                            [UInt8](repeating: UInt8(truncatingIfNeeded: state), count: 512),
                            at: Int(state >> 40) % 32_768 * 512)
                    }
                    writes.add(1, ordering: .relaxed)
                    // About 100,000 writes a second per thread. This is a Foundation thread the
                    // scene owns, never the cooperative pool: it may sleep.
                    if state & 63 == 0 { usleep(500) }
                }
            }
        }
        for writer in writers { writer.start() }
        var ids: [CheckpointID] = []
        for index in 0..<4 {
            if index > 0 { try await Task.sleep(for: .milliseconds(300)) }
            let report = try await checkpointer.checkpoint()
            ids.append(report.summary.id)
            print(
                "  \(report.summary.kind) \(report.summary.id): writers held \(Self.micros(report.pause)); "
                    + "\(report.storedPages) pages stored (\(report.summary.storedBytes >> 10) KiB), \(report.zeroPages) zero, "
                    + "\(report.preservedPages) preserved before a write")
        }
        stop.store(true, ordering: .relaxed)
        for _ in 0..<100 where writers.contains(where: { $0.isExecuting }) {
            try await Task.sleep(for: .milliseconds(5))
        }
        let final = try await checkpointer.checkpoint()
        ids.append(final.summary.id)
        print("  writers stopped after \(writes.load(ordering: .relaxed)) writes; last checkpoint \(final.summary.id)")
        // Restore the last one into a fresh region and volume and compare byte for byte.
        let restored = try TrackedMemory(pageCount: pages)
        try store.restore(final.summary.id, item: "heap", into: restored)
        let restoredVolume = MemoryStorageUnit(id: UnitID(2), capacity: 16 << 20)
        try store.restore(final.summary.id, item: "disk", into: restoredVolume)
        let same =
            try restored.read(at: 0, count: restored.byteCount) == memory.read(at: 0, count: memory.byteCount)
            && restoredVolume.read(at: 0, count: 16 << 20) == volume.read(at: 0, count: 16 << 20)
        print("  restored \(final.summary.id) into a new region and volume: \(same ? "identical" : "DIFFERENT")")
        guard same else { throw CommandFailure("the restored checkpoint differs") }
        let merged = try store.merge(final.summary.id)
        try store.retain(last: 1, application: "demo")
        let collected = try store.collectGarbage()
        print(
            "  merged \(merged.id) into a synthetic full (one \(merged.manifest.length)-byte manifest, no data "
                + "copied), deleted the older four, released \(collected.releasedUnits.count) units")
        let verification = store.verify()
        print(
            "  verify: \(verification.problems.isEmpty ? "OK" : "FAILED"), \(verification.checkpoints) checkpoint, "
                + "\(verification.chunks) chunks")
        guard verification.problems.isEmpty else { throw CommandFailure("verify failed") }
    }

    static func micros(_ duration: Duration) -> String {
        String(format: "%.0f µs", Double(duration.nanoseconds) / 1e3)
    }
}
