import DisasterRecoverySite
import FaultToleranceCore
import Foundation
import Testing

@testable import DisasterRecovery

#if canImport(Glibc)
    import Glibc
#endif

/// A lazy volume as a file on a real FUSE mount, read and written with system calls.
@Suite(.enabled(if: FileManager.default.fileExists(atPath: "/dev/fuse"), "needs /dev/fuse"))
struct FuseVolumeTests {
    @Test func aProcessReadsAndWritesTheLazyVolumeAsAFile() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("fuse-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fixture = try LazyVolumeTests.Fixture(blocks: 64)
        let volume = try fixture.create()
        let server = try FuseVolumeServer(unit: volume, mountpoint: directory, allowOther: false)
        defer { server.stop() }

        let descriptor = open(server.filePath, O_RDWR)
        #expect(descriptor >= 0, "open: \(String(cString: strerror(errno)))")
        defer { close(descriptor) }
        var status = stat()
        #expect(fstat(descriptor, &status) == 0 && Int(status.st_size) == volume.capacity)
        var expected = LazyVolumeTests.Fixture.image(blocks: 64, blockSize: LazyVolumeTests.block)
        func readAll() -> [UInt8] {
            var bytes = [UInt8](repeating: 0, count: volume.capacity)
            var done = 0
            while done < bytes.count {
                let count = bytes.withUnsafeMutableBytes {
                    pread(descriptor, $0.baseAddress.map { $0 + done }, $0.count - done, off_t(done))
                }
                guard count > 0 else { break }
                done += count
            }
            return bytes
        }
        #expect(readAll() == expected)
        let patch = [UInt8](repeating: 0x42, count: 10_000)
        #expect(patch.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, 5_000) } == 10_000)
        #expect(fsync(descriptor) == 0)
        expected.replaceSubrange(5_000..<15_000, with: patch)
        #expect(readAll() == expected)
        // The volume switches to its replica under the open file: reads go on, unchanged.
        while try !volume.buildStep(maximumBlocks: 16) {}
        try volume.switchToReplica()
        #expect(readAll() == expected)
        #expect(try fixture.replica.read(at: 0, count: volume.capacity) == expected)
        // Past the end: nothing read, and a write refused.
        var byte: UInt8 = 0
        #expect(pread(descriptor, &byte, 1, off_t(volume.capacity)) == 0)
        #expect(pwrite(descriptor, &byte, 1, off_t(volume.capacity)) < 0)
        #expect(server.counts.writes >= 1 && server.counts.synchronizes >= 1)
    }
}
