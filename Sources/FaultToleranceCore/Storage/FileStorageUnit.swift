internal import CFaultToleranceShims
import Metrics
import NIOConcurrencyHelpers
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A ``StorageUnit`` backed by one preallocated file: `pread`/`pwrite` at offsets,
/// `fdatasync` for ``synchronize()``, `fallocate(PUNCH_HOLE)` for ``discard(_:)``.
///
/// Units normally come from a ``FileStoragePool``, which preallocates them and makes their
/// creation durable. A failed `fdatasync` poisons the unit: that call and every later one
/// throw, since Linux may already have dropped the dirty pages that failed to write back
/// and would report success on a retry.
public final class FileStorageUnit: StorageUnit {
    /// The unit's identity within its pool.
    public let id: UnitID
    /// The unit's size in bytes.
    public let capacity: Int
    /// The file behind the unit.
    public let path: String
    /// The file behind the unit (``path``).
    public var location: String? { path }

    private let descriptor: Int32
    private let calls: SystemCalls
    /// 0 healthy, 1 poisoned, 2 closed: checked on every call without taking a lock.
    private let status = Atomic<Int>(0)
    private let poison = NIOLockedValueBox<StorageError?>(nil)

    private let metrics: StorageMetrics

    init(id: UnitID, path: String, descriptor: Int32, capacity: Int, calls: SystemCalls, metrics: StorageMetrics) {
        self.metrics = metrics
        self.id = id
        self.path = path
        self.descriptor = descriptor
        self.capacity = capacity
        self.calls = calls
    }

    deinit {
        if status.load(ordering: .acquiring) != 2 { _ = SystemCalls.close(descriptor) }
    }

    /// Whether a failed ``synchronize()`` has poisoned this unit.
    public var isPoisoned: Bool { status.load(ordering: .acquiring) == 1 }

    /// Reads with `pread`, retrying on `EINTR` and short reads; bytes past the end of the
    /// file read as zeros.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkUsable(offset: offset)
        try checkBounds(offset: offset, count: buffer.count)
        var done = 0
        while done < buffer.count {
            let result = calls.pread(
                descriptor, buffer.baseAddress.map { $0 + done }, buffer.count - done, offset + done)
            if result > 0 {
                done += result
            } else if result == 0 {
                UnsafeMutableRawBufferPointer(rebasing: buffer[done...]).initializeMemory(as: UInt8.self, repeating: 0)
                done = buffer.count
            } else {
                let code = SystemCalls.errno
                if code == EINTR { continue }
                throw StorageError(.ioFailed, unit: id, path: path, offset: offset + done, errno: code, detail: "pread")
            }
        }
    }

    /// Writes with `pwrite`, retrying on `EINTR` and short writes.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkUsable(offset: offset)
        try checkBounds(offset: offset, count: bytes.count)
        var done = 0
        while done < bytes.count {
            let result = calls.pwrite(
                descriptor, bytes.baseAddress.map { $0 + done }, bytes.count - done, offset + done)
            if result > 0 {
                done += result
            } else {
                let code = SystemCalls.errno
                if result < 0 && code == EINTR { continue }
                throw StorageError(
                    .ioFailed, unit: id, path: path, offset: offset + done, errno: code, detail: "pwrite")
            }
        }
    }

    /// Calls `fdatasync`; on failure poisons the unit and throws
    /// ``StorageError/Code/synchronizeFailed``. Its latency is recorded in the
    /// `ft_storage_fsync_seconds` timer, failures in `ft_storage_fsync_failures`.
    public func synchronize() throws(StorageError) {
        try checkUsable(offset: nil)
        let start = ContinuousClock.now
        let result = calls.fdatasync(descriptor)
        metrics.fsyncLatency.recordInterval(since: start)
        if result != 0 {
            metrics.fsyncFailures.increment()
            let error = StorageError(
                .synchronizeFailed, unit: id, path: path, errno: SystemCalls.errno, detail: "fdatasync")
            poison.withLockedValue { $0 = error }
            status.store(1, ordering: .releasing)
            throw error
        }
    }

    /// Starts the range's write-back with `sync_file_range(SYNC_FILE_RANGE_WRITE)` (Linux), so
    /// that the next ``synchronize()`` finds most of it on the disk already. Out-of-range parts
    /// are clipped; a closed or poisoned unit, or a failed call, does nothing.
    public func startWriteBack(_ range: Range<Int>) {
        let clipped = range.clamped(to: 0..<capacity)
        guard !clipped.isEmpty, status.load(ordering: .acquiring) == 0 else { return }
        _ = ft_start_writeback(descriptor, Int64(clipped.lowerBound), Int64(clipped.count))
    }

    /// Punches a hole over `range` (the file keeps its size); where the file system cannot,
    /// writes zeros instead.
    public func discard(_ range: Range<Int>) throws(StorageError) {
        try checkUsable(offset: range.lowerBound)
        try checkBounds(offset: range.lowerBound, count: range.count)
        guard !range.isEmpty else { return }
        let mode = FallocateMode.punchHole | FallocateMode.keepSize
        if calls.fallocate(descriptor, mode, range.lowerBound, range.count) == 0 { return }
        let code = SystemCalls.errno
        guard code == EOPNOTSUPP || code == ENOSYS else {
            throw StorageError(
                .ioFailed, unit: id, path: path, offset: range.lowerBound, errno: code, detail: "fallocate punch hole")
        }
        let zeros = [UInt8](repeating: 0, count: min(range.count, 1 << 20))
        var offset = range.lowerBound
        while offset < range.upperBound {
            let count = min(zeros.count, range.upperBound - offset)
            try zeros.withUnsafeBytes { raw in
                Result { () throws(StorageError) in
                    try write(UnsafeRawBufferPointer(rebasing: raw[0..<count]), at: offset)
                }
            }.get()
            offset += count
        }
    }

    /// Closes the file; later calls throw ``StorageError/Code/closed``. Closing twice does
    /// nothing.
    public func close() {
        if status.exchange(2, ordering: .acquiringAndReleasing) != 2 {
            _ = SystemCalls.close(descriptor)
        }
    }

    private func checkUsable(offset: Int?) throws(StorageError) {
        switch status.load(ordering: .acquiring) {
        case 0: return
        case 1:
            let cause = poison.withLockedValue { $0 }
            throw StorageError(
                .poisoned, unit: id, path: path, offset: offset, errno: cause?.errno,
                detail: "an earlier fdatasync failed; the unit accepts no further calls")
        default:
            throw StorageError(.closed, unit: id, path: path, offset: offset)
        }
    }
}

/// A pool's storage metrics, made once per pool from the factory it was given.
final class StorageMetrics: Sendable {
    let fsyncLatency: Metrics.Timer
    let fsyncFailures: Counter

    init(factory: any MetricsFactory) {
        fsyncLatency = Metrics.Timer(label: "ft_storage_fsync_seconds", factory: factory)
        fsyncFailures = Counter(label: "ft_storage_fsync_failures", factory: factory)
    }
}

extension Metrics.Timer {
    /// Records the time elapsed since `start` on the continuous clock.
    func recordInterval(since start: ContinuousClock.Instant) {
        recordNanoseconds((ContinuousClock.now - start).nanoseconds)
    }
}
