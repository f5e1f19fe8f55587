import CFaultToleranceShims
import FaultToleranceCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Plain memory whose writes, by any code, are tracked by the kernel: userfaultfd
/// write-protection in asynchronous mode (Linux 6.7+), read and re-armed atomically with
/// `PAGEMAP_SCAN`. No write API, no bitmap: a write to a protected page costs one minor fault
/// (about a microsecond) the first time in each round, then runs at memory speed.
///
/// Soft-dirty bits (often compiled out) and `mprotect` (one mapping per dirty run, which hits
/// `vm.max_map_count` around 1 GiB) are deliberately not used. ``init(pageCount:)`` fails with
/// ``LiveCopyError/Code/unsupported``, naming the missing step and errno, where the kernel
/// lacks any of it.
///
/// Writers write through ``baseAddress`` directly, but must hold the ``gate`` around their
/// writes (``PauseGate/withEntry(_:)``) so the final stop-and-copy can hold them. Duplicated
/// mode needs every write to be seen, which plain memory cannot offer: ``setMirror(_:)``
/// refuses, and ``LiveCopy`` is run with `duplicate: false` (the checksum pass then runs in the
/// pause and the copy is a consistent snapshot of the switchover instant).
public final class UserfaultMemory: LiveCopySource, @unchecked Sendable {
    /// Bytes per page: the kernel's page size.
    public let pageSize: Int
    /// Pages in the region.
    public let pageCount: Int
    /// Bytes in the region.
    public let byteCount: Int
    /// The gate writers hold around their writes.
    public let gate = PauseGate()
    /// The region, for writers.
    public let baseAddress: UnsafeMutableRawPointer

    private let userfault: Int32
    private let pagemap: Int32
    let pageShift: Int

    /// Maps `pageCount` zeroed pages and registers them for write tracking.
    public init(pageCount: Int) throws(LiveCopyError) {
        let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))
        guard pageCount > 0, pageCount <= Int.max / pageSize else {
            throw LiveCopyError(.invalidConfiguration, detail: "page count \(pageCount) must be positive")
        }
        self.pageSize = pageSize
        self.pageCount = pageCount
        self.byteCount = pageCount * pageSize
        self.pageShift = pageSize.trailingZeroBitCount
        guard let memory = RegionAllocation.allocate(byteCount: byteCount) else {
            throw LiveCopyError(.invalidConfiguration, detail: "cannot map \(byteCount) bytes")
        }
        var pagemap: Int32 = -1
        var what = [CChar](repeating: 0, count: 160)
        let fd = ft_uffd_open(memory, byteCount, &pagemap, &what, what.count)
        guard fd >= 0 else {
            let code = errno
            RegionAllocation.free(memory, byteCount: byteCount)
            let step = String(decoding: what.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
            throw LiveCopyError(
                .unsupported,
                detail: "\(step) failed: \(String(cString: strerror(code))) (errno \(code)); "
                    + "the userfaultfd tracker needs Linux 6.7+ with userfaultfd write-protect and PAGEMAP_SCAN")
        }
        self.baseAddress = memory
        self.userfault = fd
        self.pagemap = pagemap
    }

    deinit {
        ft_uffd_close(userfault, pagemap)
        RegionAllocation.free(baseAddress, byteCount: byteCount)
    }

    /// Write-protects every page: from now on the first write to each is recorded.
    public func beginTracking() throws(LiveCopyError) {
        guard ft_uffd_write_protect(userfault, baseAddress, byteCount) == 0 else {
            throw LiveCopyError(.unsupported, detail: "UFFDIO_WRITEPROTECT failed: errno \(errno)")
        }
    }

    /// Moves the pages written since the last call into `pages`, re-protecting them in the same
    /// kernel step.
    public func collectDirtyPages(into pages: inout PageSet) {
        var ranges = [UInt64](repeating: 0, count: 3 * 512)
        var cursor = UnsafeMutableRawPointer(baseAddress)
        let end = baseAddress + byteCount
        let base = UInt(bitPattern: baseAddress)
        while cursor < end {
            var walkEnd: UnsafeMutableRawPointer?
            let found = ranges.withUnsafeMutableBufferPointer { buffer in
                ft_pagemap_scan_written(pagemap, cursor, end, buffer.baseAddress, 512, &walkEnd)
            }
            guard found >= 0 else {
                // The scan failed (it cannot, once probed): report every page dirty, which is
                // always safe, and stop.
                pages.insertAll()
                return
            }
            for index in 0..<Int(found) {
                let first = Int((UInt(ranges[3 * index]) - base) >> UInt(pageShift))
                let last = Int((UInt(ranges[3 * index + 1]) - base) >> UInt(pageShift))
                for page in first..<min(last, pageCount) { pages.insert(page) }
            }
            guard let walkEnd, walkEnd > cursor else { break }
            cursor = walkEnd
        }
    }

    /// Ends tracking (pages stay registered; writes keep costing a fault only while protected).
    public func endTracking() {}

    /// Copies pages (within `0..<pageCount`) into `destination`.
    public func copyPages(_ pages: Range<Int>, into destination: UnsafeMutableRawPointer) {
        precondition(
            pages.lowerBound >= 0 && pages.upperBound <= pageCount, "pages \(pages) outside 0..<\(pageCount)")
        guard !pages.isEmpty else { return }
        ft_copy_concurrent(destination, baseAddress + pages.lowerBound << pageShift, pages.count << pageShift)
    }

    /// Copies pages `pages` into `destination` with stores that bypass the cache.
    public func copyPagesBypassingCache(_ pages: Range<Int>, into destination: UnsafeMutableRawPointer) {
        precondition(
            pages.lowerBound >= 0 && pages.upperBound <= pageCount, "pages \(pages) outside 0..<\(pageCount)")
        guard !pages.isEmpty else { return }
        ft_copy_concurrent_streaming(
            destination, baseAddress + pages.lowerBound << pageShift, pages.count << pageShift)
    }

    /// The CRC32C of page `page` (in `0..<pageCount`).
    public func checksum(ofPage page: Int) -> UInt32 {
        precondition(page >= 0 && page < pageCount, "page \(page) outside 0..<\(pageCount)")
        return CRC32C.checksum(UnsafeRawBufferPointer(start: baseAddress + page << pageShift, count: pageSize))
    }

    /// Refuses: plain memory cannot mirror writes it does not see.
    public func setMirror(_ mirror: (any WriteMirror)?) throws(LiveCopyError) {
        guard mirror == nil else {
            throw LiveCopyError(
                .unsupported,
                detail: "duplicated mode needs writes through TrackedMemory; run LiveCopy with duplicate: false")
        }
    }
}
