internal import CFaultToleranceShims

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// The handful of system calls the file-backed storage makes, gathered so tests can make
/// one of them fail (a failing `fdatasync` cannot be provoked on a healthy disk).
struct SystemCalls: Sendable {
    var pread: @Sendable (Int32, UnsafeMutableRawPointer?, Int, Int) -> Int
    var pwrite: @Sendable (Int32, UnsafeRawPointer?, Int, Int) -> Int
    var fdatasync: @Sendable (Int32) -> Int32
    var fsync: @Sendable (Int32) -> Int32
    var fallocate: @Sendable (Int32, Int32, Int, Int) -> Int32

    static let live = SystemCalls(
        pread: { fd, buffer, count, offset in systemPread(fd, buffer, count, offset) },
        pwrite: { fd, buffer, count, offset in systemPwrite(fd, buffer, count, offset) },
        fdatasync: { fd in systemFdatasync(fd) },
        fsync: { fd in systemFsync(fd) },
        fallocate: { fd, mode, offset, length in systemFallocate(fd, mode, offset, length) }
    )

    /// Closes a descriptor, ignoring the result: after `close` the descriptor is gone either
    /// way, and data durability was already decided by the last `fdatasync`.
    static func close(_ fd: Int32) -> Int32 { systemClose(fd) }

    /// The current thread's `errno`.
    static var errno: Int32 { currentErrno() }
}

/// `fallocate` mode bits from `<linux/falloc.h>`, which the Glibc module does not export.
enum FallocateMode {
    static let keepSize: Int32 = 0x01
    static let punchHole: Int32 = 0x02
}

private func currentErrno() -> Int32 {
    #if canImport(Glibc) || canImport(Musl) || canImport(Darwin)
        return errno
    #endif
}

private func systemPread(_ fd: Int32, _ buffer: UnsafeMutableRawPointer?, _ count: Int, _ offset: Int) -> Int {
    pread(fd, buffer, count, off_t(offset))
}

private func systemPwrite(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int, _ offset: Int) -> Int {
    pwrite(fd, buffer, count, off_t(offset))
}

private func systemFdatasync(_ fd: Int32) -> Int32 {
    #if os(Linux)
        return fdatasync(fd)
    #else
        return fsync(fd)
    #endif
}

private func systemFsync(_ fd: Int32) -> Int32 { fsync(fd) }

private func systemFallocate(_ fd: Int32, _ mode: Int32, _ offset: Int, _ length: Int) -> Int32 {
    ft_fallocate(fd, mode, Int64(offset), Int64(length))
}

private func systemClose(_ fd: Int32) -> Int32 { close(fd) }
