import Foundation
import Logging
import Synchronization
import Testing

@testable import FaultToleranceCore

#if canImport(Glibc)
    import Glibc
#endif

/// A fresh directory under the system's temporary folder, removed by `cleanup()`.
struct TemporaryDirectory {
    let path: String

    init() throws {
        let base = FileManager.default.temporaryDirectory.path + "/ft-test-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        path = base
    }

    func cleanup() { try? FileManager.default.removeItem(atPath: path) }
}

@Suite("Storage")
struct StorageTests {
    @Test("memory units check bounds and discard to zeros")
    func memoryUnit() throws {
        let pool = MemoryStoragePool(unitCapacity: 1024, budget: 2048)
        let unit = try pool.allocate()
        try unit.write([1, 2, 3], at: 1021)
        #expect(try unit.read(at: 1020, count: 4) == [0, 1, 2, 3])
        #expect(throws: StorageError.self) { try unit.write([1, 2], at: 1023) }
        #expect(throws: StorageError.self) { try unit.read(at: -1, count: 1) }
        #expect(throws: StorageError.self) { try unit.read(at: 0, count: -1) }
        try unit.discard(1021..<1023)
        #expect(try unit.read(at: 1021, count: 3) == [0, 0, 3])
        _ = try pool.allocate()
        #expect(throws: StorageError.self) { try pool.allocate() }
        try pool.release(unit.id)
        #expect(throws: StorageError.self) { try pool.release(unit.id) }
        #expect(try pool.allocate().id == UnitID(3))
    }

    @Test("a checksummed read returns the bytes and their CRC32C, in memory (one pass) and on files (default)")
    func checksummedRead() throws {
        let bytes = (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31 >> 3) }
        let memory = MemoryStorageUnit(id: UnitID(1), capacity: 80_000)
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let pool = try FileStoragePool(directories: [directory.path], unitCapacity: 80_000, budget: 80_000)
        defer { pool.close() }
        let file = try pool.allocate()
        for unit in [memory, file] as [any StorageUnit] {
            try unit.write(bytes, at: 5000)
            for (offset, count) in [(5000, 70_000), (5001, 333), (0, 0), (79_990, 10)] {
                var buffer = [UInt8](repeating: 0xEE, count: count)
                let checksum = try buffer.withUnsafeMutableBytes { try unit.readChecksummed(into: $0, at: offset) }
                let expected = try unit.read(at: offset, count: count)
                #expect(buffer == expected)
                #expect(checksum == CRC32C.checksum(expected))
            }
            #expect(throws: StorageError.self) {
                var buffer = [UInt8](repeating: 0, count: 11)
                _ = try buffer.withUnsafeMutableBytes { try unit.readChecksummed(into: $0, at: 79_990) }
            }
        }
    }

    @Test("file pool: units, state and lock files are 0600 and new directories 0700 by default; configurable")
    func filePoolPermissions() throws {
        let root = try TemporaryDirectory()
        defer { root.cleanup() }
        func mode(_ path: String) -> UInt32 {
            var info = stat()
            guard stat(path, &info) == 0 else { return 0 }
            return UInt32(info.st_mode) & 0o777
        }
        let previous = umask(0o022)
        defer { umask(previous) }
        let privatePath = root.path + "/private"
        let pool = try FileStoragePool(directories: [privatePath], unitCapacity: 64 * 1024, budget: 4 * 64 * 1024)
        let unit = try pool.allocate()
        #expect(mode(privatePath) == 0o700)
        #expect(mode(privatePath + "/pool.lock") == 0o600)
        #expect(mode(privatePath + "/pool.state") == 0o600)
        let files = try FileManager.default.contentsOfDirectory(atPath: privatePath).filter { $0.hasPrefix("unit-") }
        #expect(files.count == 1)
        #expect(files.allSatisfy { mode(privatePath + "/" + $0) == 0o600 })
        try pool.release(unit.id)

        let sharedPath = root.path + "/shared"
        let shared = try FileStoragePool(
            directories: [sharedPath], unitCapacity: 64 * 1024, budget: 4 * 64 * 1024, permissions: .groupReadable)
        _ = try shared.allocate()
        #expect(mode(sharedPath) == 0o750)
        let sharedFiles = try FileManager.default.contentsOfDirectory(atPath: sharedPath).filter {
            $0.hasPrefix("unit-")
        }
        #expect(sharedFiles.allSatisfy { mode(sharedPath + "/" + $0) == 0o640 })
    }

    @Test("file unit: starting write-back clips its range, changes no byte, and is quiet once closed")
    func fileUnitStartsWriteBack() throws {
        let root = try TemporaryDirectory()
        defer { root.cleanup() }
        let pool = try FileStoragePool(directories: [root.path], unitCapacity: 256 * 1024, budget: 1 << 20)
        let unit = try pool.allocate()
        let bytes = (0..<unit.capacity).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        try unit.write(bytes, at: 0)
        for range in [0..<unit.capacity, -4096..<8192, 200_000..<1 << 40, 5..<5, Int.min..<Int.max] {
            unit.startWriteBack(range)
        }
        try unit.synchronize()
        #expect(try unit.read(at: 0, count: unit.capacity) == bytes)
        let memory = MemoryStorageUnit(id: UnitID(1), capacity: 4096)
        memory.startWriteBack(0..<4096)
        pool.close()
        unit.startWriteBack(0..<4096)
    }

    @Test("file pool: reopening with another unit size is a configuration error, not a damaged unit")
    func filePoolReopenWithAnotherSize() throws {
        let root = try TemporaryDirectory()
        defer { root.cleanup() }
        do {
            let pool = try FileStoragePool(directories: [root.path], unitCapacity: 64 * 1024, budget: 1 << 20)
            _ = try pool.allocate()
        }
        #expect {
            _ = try FileStoragePool(directories: [root.path], unitCapacity: 128 * 1024, budget: 1 << 20)
        } throws: { ($0 as? StorageError)?.code == .invalidConfiguration }
        #expect(
            try FileStoragePool(directories: [root.path], unitCapacity: 64 * 1024, budget: 1 << 20).units.count == 1)
    }

    @Test("file pool: synchronized writes survive a reopen after power loss; ids are never reused")
    func filePoolReopen() throws {
        let first = try TemporaryDirectory()
        let second = try TemporaryDirectory()
        defer {
            first.cleanup()
            second.cleanup()
        }
        let directories = [first.path, second.path]
        var expected: [UnitID: [UInt8]] = [:]
        do {
            let pool = try FileStoragePool(directories: directories, unitCapacity: 64 * 1024, budget: 4 * 64 * 1024)
            for index in 0..<4 {
                let unit = try pool.allocate()
                let data = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* (index + 3)) }
                try unit.write(data, at: 8192)
                try unit.synchronize()
                expected[unit.id] = data
            }
            #expect(throws: StorageError.self) { try pool.allocate() }
            // Units alternate between the two directories (disks).
            let inFirst = pool.units.filter { $0.path.hasPrefix(first.path) }.count
            #expect(inFirst == 2)
            try pool.release(UnitID(4))
            expected[UnitID(4)] = nil
            // A crash mid-create leaves a temporary file behind.
            _ = FileManager.default.createFile(
                atPath: first.path + "/unit-0000000000000063.ftu.tmp", contents: Data([1]))
            // Power loss: the process stops using the pool without any further barrier.
            pool.close()
        }
        let reopened = try FileStoragePool(directories: directories, unitCapacity: 64 * 1024, budget: 4 * 64 * 1024)
        #expect(reopened.units.map(\.id) == [UnitID(1), UnitID(2), UnitID(3)])
        for unit in reopened.units {
            #expect(try unit.read(at: 8192, count: 4096) == expected[unit.id])
            #expect(try unit.read(at: 0, count: 16) == [UInt8](repeating: 0, count: 16))
        }
        #expect(!FileManager.default.fileExists(atPath: first.path + "/unit-0000000000000063.ftu.tmp"))
        // Unit 4 was released; its number must not come back.
        #expect(try reopened.allocate().id == UnitID(5))
        #expect(throws: StorageError.self) {
            try FileStoragePool(directories: directories, unitCapacity: 4096, budget: 1 << 20)
        }
        #expect(throws: StorageError.self) { try FileStoragePool(directories: [], unitCapacity: 4096, budget: 1) }
    }

    @Test(
        "one writer per pool: a second read-write open is refused with the holder's PID; read-only opens write nothing")
    func filePoolLockAndReadOnly() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let writer = try FileStoragePool(directories: [directory.path], unitCapacity: 4096, budget: 1 << 20)
        let unit = try writer.allocate()
        try unit.write([7, 7, 7], at: 0)
        try unit.synchronize()
        do {
            _ = try FileStoragePool(directories: [directory.path], unitCapacity: 4096, budget: 1 << 20)
            Issue.record("a second writer opened a locked pool")
        } catch {
            #expect(error.code == .locked)
            #expect("\(error)".contains("process \(getpid())"))
        }
        // A reader needs no lock, and can change nothing.
        let reader = try FileStoragePool(
            directories: [directory.path], unitCapacity: 4096, budget: 1 << 20, access: .readOnly)
        let seen = try #require(reader.units.first)
        #expect(try seen.read(at: 0, count: 3) == [7, 7, 7])
        #expect(throws: StorageError.self) { try seen.write([1], at: 0) }
        #expect(throws: StorageError.self) { try reader.allocate() }
        #expect(throws: StorageError.self) { try reader.release(seen.id) }
        reader.close()
        // Quarantine keeps the bytes, out of the pool.
        try writer.quarantine(unit.id)
        #expect(writer.units.isEmpty)
        let moved = directory.path + "/quarantine/unit-0000000000000001.ftu"
        #expect(FileManager.default.contents(atPath: moved)?.prefix(3) == Data([7, 7, 7]))
        writer.close()
        // Closed: the next writer gets the lock, and finds no unit (the quarantined one is out).
        let next = try FileStoragePool(directories: [directory.path], unitCapacity: 4096, budget: 1 << 20)
        #expect(next.units.isEmpty)
        #expect(try next.allocate().id == UnitID(2))
        next.close()
    }

    @Test("a failed fdatasync poisons the unit: every later call throws")
    func poisonedUnit() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let failSync = FailSwitch()
        var calls = SystemCalls.live
        calls.fdatasync = { fd in
            if failSync.isOn {
                errno = EIO
                return -1
            }
            return SystemCalls.live.fdatasync(fd)
        }
        let pool = try FileStoragePool(
            directories: [directory.path], unitCapacity: 4096, budget: 8192, logger: .init(label: "test"), calls: calls)
        let unit = try pool.allocate()
        try unit.write([1, 2, 3], at: 0)
        try unit.synchronize()
        failSync.isOn = true
        do {
            try unit.synchronize()
            Issue.record("fdatasync failure was not reported")
        } catch {
            #expect(error.code == .synchronizeFailed)
            #expect(error.errno == EIO)
            #expect(error.unit == unit.id)
            #expect(error.path == unit.path)
        }
        failSync.isOn = false
        #expect(unit.isPoisoned)
        for operation in [
            { try unit.write([4], at: 0) }, { _ = try unit.read(at: 0, count: 1) }, { try unit.synchronize() },
            { try unit.discard(0..<1) },
        ] {
            do {
                try operation()
                Issue.record("a poisoned unit accepted a call")
            } catch let error as StorageError {
                #expect(error.code == .poisoned)
                #expect(error.errno == EIO)
            }
        }
    }

    @Test("zero-filled preallocation writes every block of a new unit; reserved leaves them to the file system")
    func zeroFilledPreallocation() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let capacity = 3 << 20 | 4096  // more than one 1 MiB chunk, and a partial one
        // Writes to units, not the 36-byte pool.state.
        let writes = Atomic<Int>(0)
        var calls = SystemCalls.live
        calls.pwrite = { fd, buffer, count, offset in
            if count > 36 { writes.add(1, ordering: .relaxed) }
            return SystemCalls.live.pwrite(fd, buffer, count, offset)
        }
        let pool = try FileStoragePool(
            directories: [directory.path + "/zeroed"], unitCapacity: capacity, budget: 2 * capacity,
            preallocation: .zeroFilled, logger: .init(label: "test"), calls: calls)
        let unit = try pool.allocate()
        #expect(writes.load(ordering: .relaxed) == 4)
        #expect(try unit.read(at: 0, count: capacity).allSatisfy { $0 == 0 })
        // Every byte is data, no hole (a file system that keeps fallocated blocks unwritten,
        // ext4 or XFS, reports those as a hole).
        let fd = open(unit.path, O_RDONLY)
        defer { _ = close(fd) }
        let seekHole: Int32 = 4  // SEEK_HOLE on Linux; Glibc's module leaves it out (_GNU_SOURCE)
        #expect(lseek(fd, 0, seekHole) == off_t(capacity))
        pool.close()

        writes.store(0, ordering: .relaxed)
        let reserved = try FileStoragePool(
            directories: [directory.path + "/reserved"], unitCapacity: capacity, budget: 2 * capacity,
            logger: .init(label: "test"), calls: calls)
        let plain = try reserved.allocate()
        #expect(writes.load(ordering: .relaxed) == 0)
        #expect(try plain.read(at: capacity - 8, count: 8) == [UInt8](repeating: 0, count: 8))
        reserved.close()
    }

    @Test("a failed write while zero-filling fails the allocation and leaves no file behind")
    func zeroFillFailure() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        var calls = SystemCalls.live
        calls.pwrite = { fd, buffer, count, offset in
            // pool.state (36 bytes) is written; a unit's zeros are not.
            guard count > 36 else { return SystemCalls.live.pwrite(fd, buffer, count, offset) }
            errno = ENOSPC
            return -1
        }
        let pool = try FileStoragePool(
            directories: [directory.path], unitCapacity: 1 << 20, budget: 4 << 20, preallocation: .zeroFilled,
            logger: .init(label: "test"), calls: calls)
        #expect {
            _ = try pool.allocate()
        } throws: { error in
            guard let error = error as? StorageError else { return false }
            return error.code == .ioFailed && error.errno == ENOSPC && error.offset == 0
        }
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path)
        #expect(!files.contains { $0.hasSuffix(".ftu") || $0.hasSuffix(".tmp") }, "left behind: \(files)")
        #expect(pool.units.isEmpty)
        pool.close()
    }

    @Test("discard punches a hole that reads as zeros; out-of-bounds calls name the offset")
    func fileDiscardAndBounds() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let pool = try FileStoragePool(directories: [directory.path], unitCapacity: 1 << 20, budget: 1 << 20)
        let unit = try pool.allocate()
        try unit.write([UInt8](repeating: 7, count: 1 << 20), at: 0)
        try unit.discard(4096..<(8 * 4096))
        #expect(try unit.read(at: 4095, count: 2) == [7, 0])
        #expect(try unit.read(at: 8 * 4096 - 1, count: 2) == [0, 7])
        do {
            try unit.write([1], at: 1 << 20)
            Issue.record("write past capacity accepted")
        } catch {
            #expect(error.code == .outOfBounds)
            #expect(error.offset == 1 << 20)
        }
    }

    @Test("a damaged pool.state is reported with its path and offset, not guessed around")
    func damagedPoolState() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        do {
            let pool = try FileStoragePool(directories: [directory.path], unitCapacity: 4096, budget: 8192)
            _ = try pool.allocate()
            pool.close()
        }
        let path = directory.path + "/pool.state"
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        bytes[20] ^= 0x01
        try Data(bytes).write(to: URL(fileURLWithPath: path))
        do {
            _ = try FileStoragePool(directories: [directory.path], unitCapacity: 4096, budget: 8192)
            Issue.record("damaged pool state accepted")
        } catch {
            #expect(error.code == .malformedUnit)
            #expect(error.path == path)
            #expect(error.offset == 32)
        }
    }

    @Test("a unit file of the wrong size is reported with its path")
    func malformedUnit() throws {
        let directory = try TemporaryDirectory()
        defer { directory.cleanup() }
        let path = directory.path + "/unit-0000000000000001.ftu"
        _ = FileManager.default.createFile(atPath: path, contents: Data([1, 2, 3]))
        do {
            _ = try FileStoragePool(directories: [directory.path], unitCapacity: 4096, budget: 8192)
            Issue.record("malformed unit accepted")
        } catch {
            #expect(error.code == .malformedUnit)
            #expect(error.path == path)
        }
    }
}

/// A flag shared with a `@Sendable` system-call stub.
final class FailSwitch: Sendable {
    private let flag = Atomic<Bool>(false)
    var isOn: Bool {
        get { flag.load(ordering: .acquiring) }
        set { flag.store(newValue, ordering: .releasing) }
    }
}
