import CFaultToleranceShims
import FaultToleranceCore
import NIOConcurrencyHelpers

/// The offline copy: a plain memory region of the same geometry as the source, written only
/// by the live copy (pages, mirrored writes) and readable for checks.
///
/// Thread-safe through one lock: the copier applies pages and writes in order, readers see a
/// consistent snapshot of whatever has been applied.
public final class OfflineRegion: @unchecked Sendable {
    /// Bytes per page.
    public let pageSize: Int
    /// Pages in the region.
    public let pageCount: Int
    /// Bytes in the region.
    public let byteCount: Int

    private let base: UnsafeMutableRawPointer
    private let lock = NIOLock()

    /// Allocates a zeroed region. With `populate`, the kernel maps every page up front
    /// (`MAP_POPULATE`), so the copy does not pay a first-touch fault per page.
    public init(pageCount: Int, pageSize: Int = 4096, populate: Bool = false) throws(LiveCopyError) {
        guard pageSize >= 64, pageSize & (pageSize - 1) == 0, pageCount > 0, pageCount <= Int.max / pageSize else {
            throw LiveCopyError(
                .invalidConfiguration,
                detail: "page size \(pageSize) must be a power of two >= 64 and page count \(pageCount) positive")
        }
        guard let memory = RegionAllocation.allocate(byteCount: pageCount * pageSize, populate: populate) else {
            throw LiveCopyError(.invalidConfiguration, detail: "cannot map \(pageCount * pageSize) bytes")
        }
        self.pageSize = pageSize
        self.pageCount = pageCount
        self.byteCount = pageCount * pageSize
        self.base = memory
    }

    deinit { RegionAllocation.free(base, byteCount: byteCount) }

    /// Copies pages `pages` out of `source` straight into this region.
    func copyPages(_ pages: Range<Int>, from source: any LiveCopySource) {
        precondition(
            pages.lowerBound >= 0 && pages.upperBound <= pageCount, "pages \(pages) outside 0..<\(pageCount)")
        precondition(source.pageSize == pageSize, "page size \(source.pageSize) is not \(pageSize)")
        lock.withLock { source.copyPagesBypassingCache(pages, into: base + pages.lowerBound * pageSize) }
    }

    /// Writes `bytes` at byte `offset` (bounds checked).
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(LiveCopyError) {
        guard offset >= 0, bytes.count <= byteCount - offset else {
            throw LiveCopyError(.outOfBounds, detail: "write of \(bytes.count) bytes at \(offset) in \(byteCount)")
        }
        guard let source = bytes.baseAddress, !bytes.isEmpty else { return }
        lock.withLock { (base + offset).copyMemory(from: source, byteCount: bytes.count) }
    }

    /// Applies a decoded page batch under one lock (its pages were bounds-checked against this
    /// region's geometry when it was decoded).
    func apply(_ batch: PageBatch) {
        lock.withLock {
            batch.forEachPage(pageSize: pageSize) { page, bytes in
                let target = base + page * pageSize
                if let source = bytes?.baseAddress {
                    // The region is not read again soon: stores that bypass the cache.
                    ft_copy_concurrent_streaming(target, source, pageSize)
                } else {
                    _ = target.initializeMemory(as: UInt8.self, repeating: 0, count: pageSize)
                }
            }
        }
    }

    /// Fills page `page` with zeros.
    func zeroPage(_ page: Int) {
        lock.withLock { _ = (base + page * pageSize).initializeMemory(as: UInt8.self, repeating: 0, count: pageSize) }
    }

    /// Reads `count` bytes at byte `offset`.
    public func read(at offset: Int, count: Int) throws(LiveCopyError) -> [UInt8] {
        guard offset >= 0, count >= 0, count <= byteCount - offset else {
            throw LiveCopyError(.outOfBounds, detail: "read of \(count) bytes at \(offset) in \(byteCount)")
        }
        return lock.withLock { Array(UnsafeRawBufferPointer(start: base + offset, count: count)) }
    }

    /// The CRC32C of each page in `pages` (within `0..<pageCount`).
    public func checksums(of pages: Range<Int>) -> [UInt32] {
        precondition(
            pages.lowerBound >= 0 && pages.upperBound <= pageCount, "pages \(pages) outside 0..<\(pageCount)")
        return lock.withLock {
            pages.map { CRC32C.checksum(UnsafeRawBufferPointer(start: base + $0 * pageSize, count: pageSize)) }
        }
    }

    /// Calls `body` with the whole region under the lock.
    public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try lock.withLock { try body(UnsafeRawBufferPointer(start: base, count: byteCount)) }
    }
}
