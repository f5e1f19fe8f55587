import CFuseShim
public import DisasterRecovery
public import FaultToleranceCore
import Foundation
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#endif

/// Serves a ``FaultToleranceCore/StorageUnit`` (a ``DisasterRecovery/LazyVolume``, say) as one
/// file on a FUSE mount, so a process — a container's workload — reads and writes the volume
/// with ordinary file calls: `read`/`pread` go to the unit's reads, `write` to its writes,
/// `fsync`/`fdatasync` to ``FaultToleranceCore/StorageUnit/synchronize()``. The file's size is
/// the unit's capacity and fixed. The kernel's page cache is bypassed (direct I/O), so a read
/// always reaches the unit.
///
/// Needs `/dev/fuse` and libfuse3 (Debian's `fuse3`, `libfuse3-3`); the mount is made by the
/// process itself (root, or `fusermount3` for others). One thread serves requests in turn.
public final class FuseVolumeServer: @unchecked Sendable {
    // unchecked: `handle` is written once before the thread starts; `stopped` is in a box.

    /// The mount point.
    public let mountpoint: String
    /// The file's path: `mountpoint/fileName`.
    public let filePath: String
    /// The unit served.
    public let unit: any StorageUnit

    private let handle: OpaquePointer
    private let context: Unmanaged<Box>
    private let finished = ConditionLock(value: 0)
    private let stopped = NIOLockedValueBox(false)
    private let counters = NIOLockedValueBox(Counts())

    /// Requests served, for status lines and tests.
    public struct Counts: Sendable, Hashable {
        /// Reads served.
        public var reads = 0
        /// Writes served.
        public var writes = 0
        /// Synchronizes served.
        public var synchronizes = 0
        /// Requests the unit failed (answered with EIO).
        public var failures = 0
    }

    /// What the C callbacks reach through their context pointer.
    final class Box {
        let unit: any StorageUnit
        weak var server: FuseVolumeServer?
        init(unit: any StorageUnit) { self.unit = unit }
    }

    /// Requests served so far.
    public var counts: Counts { counters.withLockedValue { $0 } }

    /// Mounts `unit` at `mountpoint` (an existing empty directory) as the file `fileName` and
    /// starts serving. A mount left at `mountpoint` by a process that was killed is detached
    /// first. Throws ``DisasterRecovery/RecoveryError/Code/storage`` with the reason when FUSE
    /// cannot mount here (no `/dev/fuse`, not permitted).
    public init(
        unit: any StorageUnit, mountpoint: String, fileName: String = "volume", allowOther: Bool = true
    ) throws(RecoveryError) {
        guard !fileName.isEmpty, !fileName.contains("/") else {
            throw RecoveryError(.invalidField, "file name \(fileName.debugDescription)")
        }
        _ = ft_fuse_detach(mountpoint)
        let box = Box(unit: unit)
        let context = Unmanaged.passRetained(box)
        var error: Int32 = 0
        let mounted = fileName.withCString { name -> OpaquePointer? in
            var callbacks = ft_fuse_callbacks(
                context: context.toOpaque(),
                read: { context, buffer, size, offset in
                    guard let context, let buffer else { return -Int(EINVAL) }
                    let box = Unmanaged<Box>.fromOpaque(context).takeUnretainedValue()
                    do {
                        try box.unit.read(
                            into: UnsafeMutableRawBufferPointer(start: buffer, count: size), at: Int(offset))
                        box.server?.count { $0.reads += 1 }
                        return size
                    } catch {
                        box.server?.count { $0.failures += 1 }
                        return -Int(EIO)
                    }
                },
                write: { context, buffer, size, offset in
                    guard let context, let buffer else { return -Int(EINVAL) }
                    let box = Unmanaged<Box>.fromOpaque(context).takeUnretainedValue()
                    do {
                        try box.unit.write(UnsafeRawBufferPointer(start: buffer, count: size), at: Int(offset))
                        box.server?.count { $0.writes += 1 }
                        return size
                    } catch {
                        box.server?.count { $0.failures += 1 }
                        return -Int(EIO)
                    }
                },
                synchronize: { context in
                    guard let context else { return -EINVAL }
                    let box = Unmanaged<Box>.fromOpaque(context).takeUnretainedValue()
                    do {
                        try box.unit.synchronize()
                        box.server?.count { $0.synchronizes += 1 }
                        return 0
                    } catch {
                        box.server?.count { $0.failures += 1 }
                        return -EIO
                    }
                },
                size: UInt64(unit.capacity), file_name: name)
            return ft_fuse_mount(mountpoint, &callbacks, allowOther ? 1 : 0, &error)
        }
        guard let mounted else {
            context.release()
            let reason = error > 0 ? String(cString: strerror(error)) : "libfuse refused (see its message above)"
            throw RecoveryError(.storage, "FUSE could not mount at \(mountpoint): \(reason)")
        }
        self.mountpoint = mountpoint
        self.filePath = mountpoint + "/" + fileName
        self.unit = unit
        self.handle = mounted
        self.context = context
        box.server = self
        let thread = Thread { [handle = UncheckedHandle(mounted), finished] in
            _ = ft_fuse_loop(handle.pointer)
            finished.lock()
            finished.unlock(withValue: 1)
        }
        thread.name = "ft.dr.fuse"
        thread.start()
    }

    private struct UncheckedHandle: @unchecked Sendable {
        let pointer: OpaquePointer
        init(_ pointer: OpaquePointer) { self.pointer = pointer }
    }

    fileprivate func count(_ update: (inout Counts) -> Void) { counters.withLockedValue(update) }

    /// Unmounts (lazily: files open in other processes keep working until closed) and waits
    /// for the serving thread to end. Safe to call more than once.
    public func stop() {
        let first = stopped.withLockedValue { stopped in
            defer { stopped = true }
            return !stopped
        }
        guard first else { return }
        ft_fuse_stop(handle)
        finished.lock(whenValue: 1)
        finished.unlock()
        ft_fuse_destroy(handle)
        context.release()
    }

    deinit { stop() }
}
