public import Logging
public import Metrics
import NIOConcurrencyHelpers
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A persistent ``StoragePool``: one preallocated file per unit, spread over one or more
/// directories (one per disk), under a capacity budget.
///
/// Layout of each directory:
///
/// ```
/// pool.state            identity counter (first directory only; see below)
/// unit-000000000000002a.ftu
/// unit-000000000000002b.ftu
/// ```
///
/// Every change to a directory is made durable before it is acknowledged: a new unit is
/// created as `*.tmp`, preallocated with `fallocate`, `fdatasync`ed, renamed into place and
/// the directory `fsync`ed; a release unlinks and `fsync`s the directory. On open, leftover
/// `*.tmp` files (a crash mid-create) are removed and every unit is found again.
///
/// `pool.state` holds the next unit number so identities are never reused across restarts:
/// 36 bytes — magic `FTPOOL01`, format version (UInt32, 1), reserved (UInt32, 0), next unit
/// number (UInt64), unit capacity (UInt64), and a CRC32C of those 32 bytes (UInt32); all
/// little-endian. It is replaced atomically (write temp, `fdatasync`, rename, `fsync` dir),
/// so it is never torn; a damaged one is reported, not guessed around (delete it to have the
/// counter rebuilt from the highest unit on disk).
public final class FileStoragePool: StoragePool {
    /// The capacity of every unit in bytes.
    public let unitCapacity: Int
    /// The most bytes the pool's units may occupy together.
    public let budget: Int
    /// The directories units are spread over, in the order given.
    public let directories: [String]

    private struct State {
        var units: [FileStorageUnit] = []
        var directoryOfUnit: [UnitID: Int] = [:]
        var nextID: UInt64 = 1
    }

    /// How a pool is opened.
    public enum Access: Sendable, Hashable {
        /// Allocations, releases and writes; the pool's directory is locked against every
        /// other writer (`pool.lock` holds the owner's PID) until ``FileStoragePool/close()``.
        case readWrite
        /// Reads only: files open `O_RDONLY` (so a read-only mount works), nothing is created,
        /// cleaned up or locked, and changes throw ``StorageError/Code/readOnly``.
        case readOnly
    }

    /// How the pool was opened.
    public let access: Access

    /// How a new unit's space is set aside.
    public enum Preallocation: Sendable, Hashable {
        /// `fallocate`: blocks reserved, not written. Creating a unit is quick, but the file
        /// system records each block's first write as a metadata change, which the `fdatasync`
        /// after it must commit too (on ext4 here, a 4 KiB append + `fdatasync` takes 1.5x the
        /// time of the same over written blocks).
        case reserved
        /// Reserved, then written with zeros and synced, once: appends then overwrite blocks
        /// the file system already counts as written, and `fdatasync` flushes data alone (what
        /// PostgreSQL's `wal_init_zero` does for its WAL). Creating a unit writes its whole
        /// capacity. Of no use on copy-on-write file systems (btrfs, ZFS).
        case zeroFilled
    }

    /// How new units are preallocated.
    public let preallocation: Preallocation
    /// The modes new files and directories are created with.
    public let permissions: Permissions
    private let state = NIOLockedValueBox(State())
    private let calls: SystemCalls
    private let logger: Logger
    private let metrics: StorageMetrics
    private let lockDescriptor = NIOLockedValueBox<Int32?>(nil)

    /// Opens (creating if needed, unless read-only) a pool over `directories`, finding every
    /// unit already there. Throws ``StorageError/Code/malformedUnit`` if a unit file has the
    /// wrong size, ``StorageError/Code/locked`` when another process has the pool open for
    /// writing, and ``StorageError/Code/invalidConfiguration`` for an empty directory list or
    /// a non-positive unit capacity or a capacity different from the one the pool was
    /// created with. Its units' `fdatasync` latency and failures go to `metricsFactory`
    /// (`MetricsSystem.factory` by default) as `ft_storage_fsync_seconds` and
    /// `ft_storage_fsync_failures`.
    public convenience init(
        directories: [String],
        unitCapacity: Int,
        budget: Int,
        access: Access = .readWrite,
        permissions: Permissions = .ownerOnly,
        preallocation: Preallocation = .reserved,
        logger: Logger = Logger(label: "ft.storage.pool"),
        metricsFactory: (any MetricsFactory)? = nil
    ) throws(StorageError) {
        try self.init(
            directories: directories, unitCapacity: unitCapacity, budget: budget, access: access,
            permissions: permissions, preallocation: preallocation, logger: logger, metricsFactory: metricsFactory,
            calls: .live)
    }

    /// The modes files and directories are created with (the process's umask still applies).
    /// Units hold volume data: by default only their owner may read them.
    public struct Permissions: Sendable, Hashable {
        /// The mode of unit, state and lock files.
        public var file: UInt32
        /// The mode of the pool's directories and their quarantine folders.
        public var directory: UInt32

        /// Creates permissions.
        public init(file: UInt32, directory: UInt32) {
            self.file = file
            self.directory = directory
        }

        /// 0600 files, 0700 directories: the default.
        public static let ownerOnly = Permissions(file: 0o600, directory: 0o700)
        /// 0640 files, 0750 directories: the owner's group may read (a backup agent).
        public static let groupReadable = Permissions(file: 0o640, directory: 0o750)
    }

    init(
        directories: [String],
        unitCapacity: Int,
        budget: Int,
        access: Access = .readWrite,
        permissions: Permissions = .ownerOnly,
        preallocation: Preallocation = .reserved,
        logger: Logger,
        metricsFactory: (any MetricsFactory)? = nil,
        calls: SystemCalls
    ) throws(StorageError) {
        self.preallocation = preallocation
        metrics = StorageMetrics(factory: metricsFactory ?? MetricsSystem.factory)
        guard !directories.isEmpty else {
            throw StorageError(.invalidConfiguration, detail: "a file pool needs at least one directory")
        }
        guard unitCapacity > 0, budget >= 0 else {
            throw StorageError(.invalidConfiguration, detail: "unit capacity \(unitCapacity), budget \(budget)")
        }
        self.directories = directories
        self.unitCapacity = unitCapacity
        self.budget = budget
        self.logger = logger
        self.calls = calls
        self.access = access
        self.permissions = permissions
        if access == .readWrite {
            if mkdir(directories[0], mode_t(permissions.directory)) != 0 && SystemCalls.errno != EEXIST {
                throw StorageError(
                    .fileOperationFailed, path: directories[0], errno: SystemCalls.errno, detail: "mkdir")
            }
            try lock()
        }
        do {
            try recover()
        } catch {
            close()
            throw error
        }
    }

    deinit { unlock() }

    /// Takes the pool's exclusive lock (`flock` on `pool.lock` in the first directory) and
    /// writes this process's PID into the file, or says who holds it.
    private func lock() throws(StorageError) {
        let path = directories[0] + "/pool.lock"
        let fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, mode_t(permissions.file))
        guard fd >= 0 else {
            throw StorageError(.fileOperationFailed, path: path, errno: SystemCalls.errno, detail: "open")
        }
        guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
            let code = SystemCalls.errno
            var buffer = [UInt8](repeating: 0, count: 32)
            let count = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
            _ = SystemCalls.close(fd)
            guard code == EWOULDBLOCK else {
                throw StorageError(.fileOperationFailed, path: path, errno: code, detail: "flock")
            }
            let holder = String(
                decoding: buffer.prefix(max(0, count)).filter { $0 >= 0x30 && $0 <= 0x39 }, as: UTF8.self)
            throw StorageError(
                .locked, path: path,
                detail: "the pool is open for writing by process \(holder.isEmpty ? "unknown" : holder)")
        }
        let pid = Array("\(getpid())\n".utf8)
        _ = ftruncate(fd, 0)
        _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
        lockDescriptor.withLockedValue { $0 = fd }
    }

    private func unlock() {
        if let fd = lockDescriptor.withLockedValue({ descriptor -> Int32? in
            defer { descriptor = nil }
            return descriptor
        }) {
            _ = SystemCalls.close(fd)
        }
    }

    private func requireWritable(_ operation: String) throws(StorageError) {
        guard access == .readWrite else {
            throw StorageError(.readOnly, detail: "\(operation) in a pool opened read-only")
        }
    }

    /// Every allocated unit, in allocation order.
    public var units: [FileStorageUnit] { state.withLockedValue { $0.units } }

    /// Creates and preallocates a new unit in the directory holding the fewest units.
    public func allocate() throws(StorageError) -> FileStorageUnit {
        try requireWritable("allocate")
        // One allocation at a time: allocations are rare, and serialising them keeps the
        // budget check and the identity counter exact without holding the lock across I/O.
        return try allocationLock.withLockedValue { _ in
            Result { () throws(StorageError) -> FileStorageUnit in try allocateLocked() }
        }.get()
    }

    /// The body of ``allocate()``, run under the allocation lock.
    private func allocateLocked() throws(StorageError) -> FileStorageUnit {
        let slot: Result<(UnitID, Int), StorageError> = state.withLockedValue { state in
            guard (state.units.count + 1) * unitCapacity <= budget else {
                return .failure(
                    StorageError(
                        .budgetExceeded,
                        detail: "\(state.units.count) units of \(unitCapacity) bytes in a budget of \(budget) bytes"))
            }
            var counts = [Int](repeating: 0, count: directories.count)
            for index in state.directoryOfUnit.values { counts[index] += 1 }
            let directoryIndex = counts.indices.min { counts[$0] < counts[$1] } ?? 0
            return .success((UnitID(state.nextID), directoryIndex))
        }
        let (id, directoryIndex) = try slot.get()
        try writePoolState(nextID: id.rawValue + 1)
        state.withLockedValue { $0.nextID = id.rawValue + 1 }
        let unit = try createUnit(id: id, directory: directories[directoryIndex])
        state.withLockedValue { state in
            state.units.append(unit)
            state.directoryOfUnit[id] = directoryIndex
        }
        logger.debug("allocated unit", metadata: ["unit": "\(id)", "path": "\(unit.path)"])
        return unit
    }

    private let allocationLock = NIOLockedValueBox(())

    /// Removes `unit` from the pool's lists and closes its file; returns it with the index of
    /// its directory.
    private func takeOut(_ unit: UnitID) throws(StorageError) -> (FileStorageUnit, Int) {
        let found = state.withLockedValue { state -> (FileStorageUnit, Int)? in
            guard let index = state.units.firstIndex(where: { $0.id == unit }),
                let directoryIndex = state.directoryOfUnit[unit]
            else { return nil }
            let removed = state.units.remove(at: index)
            state.directoryOfUnit[unit] = nil
            return (removed, directoryIndex)
        }
        guard let (removed, directoryIndex) = found else { throw StorageError(.unknownUnit, unit: unit) }
        removed.close()
        return (removed, directoryIndex)
    }

    /// Deletes a unit's file, then forgets and closes the unit, and makes the deletion
    /// durable. A failed unlink leaves the unit in the pool (nothing is forgotten that is
    /// still on disk).
    public func release(_ unit: UnitID) throws(StorageError) {
        try requireWritable("release")
        let path = state.withLockedValue { state in state.units.first { $0.id == unit }?.path }
        guard let path else { throw StorageError(.unknownUnit, unit: unit) }
        if unlink(path) != 0 {
            throw StorageError(.fileOperationFailed, unit: unit, path: path, errno: SystemCalls.errno, detail: "unlink")
        }
        let (_, directoryIndex) = try takeOut(unit)
        try synchronizeDirectory(directories[directoryIndex])
        logger.debug("released unit", metadata: ["unit": "\(unit)"])
    }

    /// Moves a unit's file into `quarantine/` in its directory (created if needed), out of the
    /// pool but intact; both directories are synchronized.
    public func quarantine(_ unit: UnitID) throws(StorageError) {
        try requireWritable("quarantine")
        let (removed, directoryIndex) = try takeOut(unit)
        let folder = directories[directoryIndex] + "/quarantine"
        if mkdir(folder, mode_t(permissions.directory)) != 0 && SystemCalls.errno != EEXIST {
            throw StorageError(
                .fileOperationFailed, unit: unit, path: folder, errno: SystemCalls.errno, detail: "mkdir")
        }
        let target = folder + "/" + Self.fileName(for: unit)
        if rename(removed.path, target) != 0 {
            throw StorageError(
                .fileOperationFailed, unit: unit, path: removed.path, errno: SystemCalls.errno,
                detail: "rename to \(target)")
        }
        try synchronizeDirectory(folder)
        try synchronizeDirectory(directories[directoryIndex])
        logger.warning("quarantined unit", metadata: ["unit": "\(unit)", "path": "\(target)"])
    }

    /// Closes every unit's file. The pool and its units are unusable afterwards; reopen the
    /// directories with a new pool.
    public func close() {
        for unit in units { unit.close() }
        unlock()
    }

    // MARK: - Files

    static func fileName(for id: UnitID) -> String {
        let hex = String(id.rawValue, radix: 16)
        return "unit-" + String(repeating: "0", count: max(0, 16 - hex.count)) + hex + ".ftu"
    }

    static func unitID(fromFileName name: String) -> UnitID? {
        guard name.hasPrefix("unit-"), name.hasSuffix(".ftu"), name.utf8.count == 5 + 16 + 4 else { return nil }
        let hex = name.dropFirst(5).dropLast(4)
        return UInt64(hex, radix: 16).map(UnitID.init)
    }

    private func createUnit(id: UnitID, directory: String) throws(StorageError) -> FileStorageUnit {
        let finalPath = directory + "/" + Self.fileName(for: id)
        let temporaryPath = finalPath + ".tmp"
        let fd = open(temporaryPath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, mode_t(permissions.file))
        guard fd >= 0 else {
            throw StorageError(
                .fileOperationFailed, unit: id, path: temporaryPath, errno: SystemCalls.errno, detail: "open")
        }
        var succeeded = false
        defer {
            if !succeeded {
                _ = SystemCalls.close(fd)
                _ = unlink(temporaryPath)
            }
        }
        if calls.fallocate(fd, 0, 0, unitCapacity) != 0 {
            let code = SystemCalls.errno
            guard code == EOPNOTSUPP || code == ENOSYS else {
                throw StorageError(
                    .fileOperationFailed, unit: id, path: temporaryPath, errno: code, detail: "fallocate")
            }
            // File systems without fallocate (tmpfs on old kernels): size the file instead.
            guard ftruncate(fd, off_t(unitCapacity)) == 0 else {
                throw StorageError(
                    .fileOperationFailed, unit: id, path: temporaryPath, errno: SystemCalls.errno, detail: "ftruncate")
            }
        }
        if preallocation == .zeroFilled { try fillWithZeros(fd, unit: id, path: temporaryPath) }
        guard calls.fsync(fd) == 0 else {
            throw StorageError(
                .synchronizeFailed, unit: id, path: temporaryPath, errno: SystemCalls.errno, detail: "fsync new unit")
        }
        guard rename(temporaryPath, finalPath) == 0 else {
            throw StorageError(
                .fileOperationFailed, unit: id, path: finalPath, errno: SystemCalls.errno, detail: "rename")
        }
        succeeded = true
        try synchronizeDirectory(directory)
        return FileStorageUnit(
            id: id, path: finalPath, descriptor: fd, capacity: unitCapacity, calls: calls, metrics: metrics)
    }

    /// Writes zeros over a new unit's whole capacity (``Preallocation/zeroFilled``).
    private func fillWithZeros(_ fd: Int32, unit: UnitID, path: String) throws(StorageError) {
        let chunk = min(unitCapacity, 1 << 20)
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: chunk, alignment: 4096)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        var offset = 0
        while offset < unitCapacity {
            let count = min(chunk, unitCapacity - offset)
            let written = calls.pwrite(fd, zeros.baseAddress, count, offset)
            guard written > 0 else {
                throw StorageError(
                    .ioFailed, unit: unit, path: path, offset: offset, errno: written < 0 ? SystemCalls.errno : 0,
                    detail: "zero-filling a new unit")
            }
            offset += written
        }
    }

    private func synchronizeDirectory(_ directory: String) throws(StorageError) {
        let fd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else {
            throw StorageError(
                .fileOperationFailed, path: directory, errno: SystemCalls.errno, detail: "open directory")
        }
        defer { _ = SystemCalls.close(fd) }
        guard calls.fsync(fd) == 0 else {
            throw StorageError(.synchronizeFailed, path: directory, errno: SystemCalls.errno, detail: "fsync directory")
        }
    }

    // MARK: - Recovery

    private func recover() throws(StorageError) {
        // The pool's own record of its unit size first: opening with another size is a
        // configuration error, not damage to the (healthy) unit files it would then blame.
        let stored = try readPoolState()
        var found: [(UnitID, Int, String)] = []
        for (index, directory) in directories.enumerated() {
            if access == .readWrite && mkdir(directory, mode_t(permissions.directory)) != 0
                && SystemCalls.errno != EEXIST
            {
                throw StorageError(.fileOperationFailed, path: directory, errno: SystemCalls.errno, detail: "mkdir")
            }
            var removedTemporary = false
            for name in try Directories.list(directory) {
                if name.hasSuffix(".tmp") {
                    guard access == .readWrite else { continue }
                    // A crash between create and rename: the unit was never handed out.
                    _ = unlink(directory + "/" + name)
                    removedTemporary = true
                    logger.info("removed unfinished unit", metadata: ["path": "\(directory)/\(name)"])
                } else if let id = Self.unitID(fromFileName: name) {
                    found.append((id, index, directory + "/" + name))
                }
            }
            if removedTemporary { try synchronizeDirectory(directory) }
        }
        found.sort { $0.0 < $1.0 }
        var units: [FileStorageUnit] = []
        var directoryOfUnit: [UnitID: Int] = [:]
        for (id, index, path) in found {
            let fd = open(path, (access == .readWrite ? O_RDWR : O_RDONLY) | O_CLOEXEC)
            guard fd >= 0 else {
                throw StorageError(.fileOperationFailed, unit: id, path: path, errno: SystemCalls.errno, detail: "open")
            }
            var info = stat()
            guard fstat(fd, &info) == 0 else {
                let code = SystemCalls.errno
                _ = SystemCalls.close(fd)
                throw StorageError(.fileOperationFailed, unit: id, path: path, errno: code, detail: "fstat")
            }
            guard Int(info.st_size) == unitCapacity else {
                _ = SystemCalls.close(fd)
                throw StorageError(
                    .malformedUnit, unit: id, path: path,
                    detail: "file is \(info.st_size) bytes, pool units are \(unitCapacity)")
            }
            units.append(
                FileStorageUnit(
                    id: id, path: path, descriptor: fd, capacity: unitCapacity, calls: calls, metrics: metrics))
            directoryOfUnit[id] = index
        }
        let highest = found.last.map { $0.0.rawValue + 1 } ?? 1
        let nextID = max(stored ?? 1, highest)
        state.withLockedValue { state in
            state.units = units
            state.directoryOfUnit = directoryOfUnit
            state.nextID = nextID
        }
        if !units.isEmpty {
            logger.info("pool recovered", metadata: ["units": "\(units.count)", "next": "\(nextID)"])
        }
    }

    // MARK: - Pool state file

    private static let stateMagic: [UInt8] = Array("FTPOOL01".utf8)
    private static let stateVersion: UInt32 = 1
    private static let stateSize = 36

    private var statePath: String { directories[0] + "/pool.state" }

    private func writePoolState(nextID: UInt64) throws(StorageError) {
        var bytes = Self.stateMagic
        bytes.appendLE(Self.stateVersion)
        bytes.appendLE(UInt32(0))
        bytes.appendLE(nextID)
        bytes.appendLE(UInt64(unitCapacity))
        bytes.appendLE(CRC32C.checksum(bytes))
        let temporary = statePath + ".tmp"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode_t(permissions.file))
        guard fd >= 0 else {
            throw StorageError(.fileOperationFailed, path: temporary, errno: SystemCalls.errno, detail: "open")
        }
        defer { _ = SystemCalls.close(fd) }
        let written = bytes.withUnsafeBytes { calls.pwrite(fd, $0.baseAddress, $0.count, 0) }
        guard written == bytes.count else {
            throw StorageError(.fileOperationFailed, path: temporary, errno: SystemCalls.errno, detail: "pwrite")
        }
        guard calls.fdatasync(fd) == 0 else {
            throw StorageError(.synchronizeFailed, path: temporary, errno: SystemCalls.errno, detail: "fdatasync")
        }
        guard rename(temporary, statePath) == 0 else {
            throw StorageError(.fileOperationFailed, path: statePath, errno: SystemCalls.errno, detail: "rename")
        }
        try synchronizeDirectory(directories[0])
    }

    private func readPoolState() throws(StorageError) -> UInt64? {
        guard let (next, capacity) = try Self.readState(at: statePath, pread: calls.pread) else { return nil }
        guard capacity == UInt64(unitCapacity) else {
            throw StorageError(
                .invalidConfiguration, path: statePath,
                detail: "pool was created with units of \(capacity) bytes, opened with \(unitCapacity)")
        }
        return next
    }

    /// The unit capacity a pool in `directory` (its first directory) was created with, or
    /// `nil` if there is no pool there — so tools can open a pool without being told.
    public static func storedUnitCapacity(in directory: String) throws(StorageError) -> Int? {
        let path = directory + "/pool.state"
        return try readState(at: path, pread: SystemCalls.live.pread).map { Int(truncatingIfNeeded: $0.capacity) }
    }

    /// Reads and verifies `pool.state`: the next unit number and the unit capacity.
    private static func readState(
        at statePath: String, pread: (Int32, UnsafeMutableRawPointer?, Int, Int) -> Int
    ) throws(StorageError) -> (next: UInt64, capacity: UInt64)? {
        let fd = open(statePath, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            if SystemCalls.errno == ENOENT { return nil }
            throw StorageError(.fileOperationFailed, path: statePath, errno: SystemCalls.errno, detail: "open")
        }
        defer { _ = SystemCalls.close(fd) }
        var bytes = [UInt8](repeating: 0, count: Self.stateSize)
        let count = bytes.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, 0) }
        guard count == Self.stateSize, Array(bytes[0..<8]) == Self.stateMagic else {
            throw StorageError(
                .malformedUnit, path: statePath, offset: 0, detail: "pool state is truncated or not a pool state")
        }
        let version = bytes.loadLE(UInt32.self, at: 8)
        guard version == Self.stateVersion else {
            throw StorageError(
                .malformedUnit, path: statePath, offset: 8, detail: "unsupported pool state version \(version)")
        }
        let checksum = bytes.loadLE(UInt32.self, at: 32)
        guard CRC32C.checksum(bytes[0..<32]) == checksum else {
            throw StorageError(
                .malformedUnit, path: statePath, offset: 32,
                detail: "pool state checksum mismatch; delete it to rebuild the counter from the units")
        }
        return (bytes.loadLE(UInt64.self, at: 16), bytes.loadLE(UInt64.self, at: 24))
    }
}
