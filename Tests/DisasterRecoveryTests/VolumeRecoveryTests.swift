import FaultToleranceCore
import Foundation
import NIOConcurrencyHelpers
import Testing

@testable import DisasterRecovery

/// The runtime over real files: build, rounds, freeze, switch, thaw, with a writer running throughout.
@Suite struct VolumeRecoveryTests {
    @Test func runsAFileBackedVolumeToItsReplicaWhileAWriterWrites() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("dr-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let block = 4096
        let blocks = 2048
        let capacity = blocks * block
        let data = try FileStoragePool(
            directories: [directory + "/data"], unitCapacity: capacity, budget: 3 * capacity)
        let states = try FileStoragePool(
            directories: [directory + "/state"],
            unitCapacity: LazyVolumeHeader.stateSize(capacity: capacity, blockSize: block),
            budget: LazyVolumeHeader.stateSize(capacity: capacity, blockSize: block))
        defer {
            data.close()
            states.close()
        }
        let sourceUnit = try data.allocate()
        var image = (0..<capacity).map { UInt8(truncatingIfNeeded: $0 / block &* 3 &+ 1) }
        try sourceUnit.write(image, at: 0)
        let volume = try LazyVolume.create(
            identity: 5, source: ImageRecoveryPoint(unit: sourceUnit), overlay: data.allocate(),
            replica: data.allocate(), state: states.allocate())
        let replica = try #require(data.units.last)

        let events = NIOLockedValueBox<[String]>([])
        let stop = NIOLockedValueBox(false)
        let writer = Task {
            var written: [Int: UInt8] = [:]
            var step = 0
            while !stop.withLockedValue({ $0 }) || step < 200 {
                let target = step * 37 % blocks
                let value = UInt8(truncatingIfNeeded: step % 200 + 10)
                try volume.write([UInt8](repeating: value, count: block), at: target * block)
                written[target] = value
                if step % 16 == 0 { try volume.synchronize() }
                step += 1
                await Task.yield()
            }
            try volume.synchronize()
            return written
        }
        let summary = try await VolumeRecovery(
            volume: volume, configuration: .init(stepBlocks: 128, policy: MigrationPolicy(switchAtBlocks: 8))
        ).run(
            freeze: { events.withLockedValue { $0.append("freeze \(volume.phase)") } },
            thaw: { events.withLockedValue { $0.append("thaw \(volume.phase)") } })
        stop.withLockedValue { $0 = true }
        let written = try await writer.value
        #expect(events.withLockedValue { $0 } == ["freeze migrating", "thaw switched"])
        #expect(volume.phase == .switched)
        #expect(summary.roundCount >= 1)
        #expect(summary.progress.built == blocks)
        for (target, value) in written {
            image.replaceSubrange(target * block..<(target + 1) * block, with: repeatElement(value, count: block))
        }
        #expect(try replica.read(at: 0, count: capacity) == image)
        #expect(try volume.read(at: 0, count: capacity) == image)
    }
}
