import CFaultToleranceShims
import FaultToleranceCore
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Something that knows which pages of a region were written since it was last asked.
///
/// ``TrackedMemory`` is one (writes go through its API and set bits in an atomic bitmap);
/// ``UserfaultMemory`` is another (plain memory written by any code, tracked by the kernel).
public protocol DirtyTracker: AnyObject, Sendable {
    /// Bytes per page (a power of two).
    var pageSize: Int { get }
    /// Pages in the region.
    var pageCount: Int { get }
    /// Starts a tracking epoch: forgets every page dirtied so far.
    func beginTracking() throws(LiveCopyError)
    /// Moves the pages dirtied since the previous call into `pages` and clears them, one
    /// atomic test-and-clear per 64 pages: a page written during the call is either in
    /// `pages` now or dirty again for the next call, never lost.
    func collectDirtyPages(into pages: inout PageSet)
    /// Ends tracking.
    func endTracking()
}

/// A region a live copy can read from: a ``DirtyTracker`` over memory, with the ``PauseGate``
/// its writers pass and a mirror for duplicated mode.
public protocol LiveCopySource: DirtyTracker {
    /// The gate every writer of the region passes.
    var gate: PauseGate { get }
    /// Copies pages `pages` into `destination` (which has room for them). Writers may be
    /// running: a page written meanwhile may be copied torn, and is then dirty again.
    func copyPages(_ pages: Range<Int>, into destination: UnsafeMutableRawPointer)
    /// Copies pages like ``copyPages(_:into:)`` into a destination that will not be read again
    /// soon (a copy's destination region), with stores that bypass the cache: a copy made in
    /// runs then goes at the speed of one large `memcpy`. The default calls
    /// ``copyPages(_:into:)``.
    func copyPagesBypassingCache(_ pages: Range<Int>, into destination: UnsafeMutableRawPointer)
    /// The CRC32C of page `page` (called with the gate paused, for a stable value).
    func checksum(ofPage page: Int) -> UInt32
    /// Starts (or with `nil` stops) mirroring every later write to `mirror`: duplicated mode.
    /// Called only while the gate is paused.
    func setMirror(_ mirror: (any WriteMirror)?) throws(LiveCopyError)
}

extension LiveCopySource {
    /// Calls ``copyPages(_:into:)``: a source that can do better says so.
    public func copyPagesBypassingCache(_ pages: Range<Int>, into destination: UnsafeMutableRawPointer) {
        copyPages(pages, into: destination)
    }
}

/// Where duplicated mode sends each write after applying it to the source region.
public protocol WriteMirror: AnyObject, Sendable {
    /// Applies (or queues, in order) the write of `bytes` at byte `offset` of the region.
    /// Called inside the source's gate, so a paused gate sees no write half-mirrored.
    func mirrorWrite(_ bytes: UnsafeRawBufferPointer, at offset: Int)
}

/// Sees every write to a region *before* its bytes land, so it can preserve the pages as they
/// were: a checkpoint's copy-before-write guard keeps the state at its cut while writers run.
public protocol WriteGuard: AnyObject, Sendable {
    /// Called inside the source's gate, before the write to pages `pages` changes them.
    func willWrite(pages: ClosedRange<Int>)
}

/// A page-granular memory region whose writes mark pages dirty in an atomic bitmap.
///
/// Any number of threads may read and write; every write passes the ``gate`` (so the copier
/// can hold writers for the final stop-and-copy) and sets its pages' bits *after* the bytes
/// land (release ordering), while the copier clears bits *before* reading pages (acquire):
/// a write is therefore either seen by the copy that cleared its bit or leaves the bit set
/// for the next round.
///
/// ```swift
/// let memory = try TrackedMemory(pageCount: 262_144)          // 1 GiB of 4 KiB pages
/// try memory.write([1, 2, 3], at: 4096 * 7 + 12)
/// ```
public final class TrackedMemory: LiveCopySource, @unchecked Sendable {
    /// Bytes per page.
    public let pageSize: Int
    /// Pages in the region.
    public let pageCount: Int
    /// Bytes in the region.
    public let byteCount: Int
    /// The gate every write passes.
    public let gate: PauseGate

    let base: UnsafeMutableRawPointer
    private let bitmap: UnsafeMutablePointer<UInt64>
    private let wordCount: Int
    /// One bit per word of `bitmap`, set by the writer that makes the word non-empty, so a
    /// collection reads the words that hold dirty pages and not the whole bitmap: taking the
    /// dirty set of a 4 GiB region reads 256 summary words, not 16,384 bitmap words. A word is
    /// non-empty only after its summary bit is set (by the same writer, inside the gate), and a
    /// collector clears a summary bit before it takes its word, so no dirty page is missed.
    private let summary: UnsafeMutablePointer<UInt64>
    private let summaryCount: Int
    let pageShift: Int
    // Read by writers inside the gate, changed only while the gate is paused.
    private var mirror: (any WriteMirror)?
    // The same: read inside the gate, changed only while it is paused.
    private var writeGuard: (any WriteGuard)?
    private let mirrorLocks = (0..<TrackedMemory.stripeCount).map { _ in NIOLock() }

    /// Allocates a zeroed region of `pageCount` pages of `pageSize` bytes (a power of two,
    /// at least 64).
    public convenience init(pageCount: Int, pageSize: Int = 4096) throws(LiveCopyError) {
        try self.init(pageCount: pageCount, pageSize: pageSize, gate: PauseGate())
    }

    /// Allocates a region whose writers pass `gate` (a simulation's gate does not sleep).
    package init(pageCount: Int, pageSize: Int, gate: PauseGate) throws(LiveCopyError) {
        self.gate = gate
        guard pageSize >= 64, pageSize & (pageSize - 1) == 0, pageCount > 0,
            pageCount <= Int.max / pageSize
        else {
            throw LiveCopyError(
                .invalidConfiguration,
                detail: "page size \(pageSize) must be a power of two >= 64 and page count \(pageCount) positive")
        }
        self.pageSize = pageSize
        self.pageCount = pageCount
        self.byteCount = pageCount * pageSize
        self.pageShift = pageSize.trailingZeroBitCount
        self.wordCount = (pageCount + 63) / 64
        guard let memory = RegionAllocation.allocate(byteCount: byteCount) else {
            throw LiveCopyError(.invalidConfiguration, detail: "cannot map \(pageCount * pageSize) bytes")
        }
        self.base = memory
        self.bitmap = .allocate(capacity: wordCount)
        bitmap.initialize(repeating: 0, count: wordCount)
        self.summaryCount = (wordCount + 63) / 64
        self.summary = .allocate(capacity: summaryCount)
        summary.initialize(repeating: 0, count: summaryCount)
    }

    deinit {
        RegionAllocation.free(base, byteCount: byteCount)
        bitmap.deallocate()
        summary.deallocate()
    }

    /// Writes `bytes` at byte `offset`, marking the pages it touches dirty (and mirroring it in
    /// duplicated mode).
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(LiveCopyError) {
        guard offset >= 0, bytes.count <= byteCount - offset else {
            throw LiveCopyError(.outOfBounds, detail: "write of \(bytes.count) bytes at \(offset) in \(byteCount)")
        }
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        gate.enter()
        defer { gate.leave() }
        if let writeGuard {
            writeGuard.willWrite(pages: (offset >> pageShift)...((offset + bytes.count - 1) >> pageShift))
        }
        guard let mirror else {
            (base + offset).copyMemory(from: source, byteCount: bytes.count)
            markDirty(offset: offset, count: bytes.count)
            return
        }
        // Duplicated mode: two writers to the same page must reach the mirror in the order they
        // reached memory, or the copy keeps the older bytes. The page's stripe lock makes
        // "write, then mirror" one step per page (stripes taken in ascending order).
        let first = offset >> pageShift
        let last = (offset + bytes.count - 1) >> pageShift
        if first == last {
            // The common case: one page, one stripe, no allocation.
            let lock = mirrorLocks[first % Self.stripeCount]
            lock.lock()
            defer { lock.unlock() }
            (base + offset).copyMemory(from: source, byteCount: bytes.count)
            markDirty(offset: offset, count: bytes.count)
            mirror.mirrorWrite(bytes, at: offset)
            return
        }
        let stripes = Array(Set((first...last).map { $0 % Self.stripeCount })).sorted()
        for stripe in stripes { mirrorLocks[stripe].lock() }
        defer { for stripe in stripes.reversed() { mirrorLocks[stripe].unlock() } }
        (base + offset).copyMemory(from: source, byteCount: bytes.count)
        markDirty(offset: offset, count: bytes.count)
        mirror.mirrorWrite(bytes, at: offset)
    }

    private static let stripeCount = 256

    /// Writes `bytes` at byte `offset`.
    public func write(_ bytes: some Collection<UInt8>, at offset: Int) throws(LiveCopyError) {
        let array = Array(bytes)
        try Result { () throws(LiveCopyError) in
            try array.withUnsafeBytes { raw in Result { () throws(LiveCopyError) in try write(raw, at: offset) } }.get()
        }.get()
    }

    /// Stores a little-endian `UInt64` at byte `offset` (a common small write).
    public func storeWord(_ value: UInt64, at offset: Int) throws(LiveCopyError) {
        var word = value.littleEndian
        try Swift.withUnsafeBytes(of: &word) { raw in Result { () throws(LiveCopyError) in try write(raw, at: offset) }
        }
        .get()
    }

    /// Reads `count` bytes at byte `offset`. Concurrent writers may make the result a mix of
    /// before and after a write.
    public func read(at offset: Int, count: Int) throws(LiveCopyError) -> [UInt8] {
        guard offset >= 0, count >= 0, count <= byteCount - offset else {
            throw LiveCopyError(.outOfBounds, detail: "read of \(count) bytes at \(offset) in \(byteCount)")
        }
        return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            if let destination = buffer.baseAddress, count > 0 {
                ft_copy_concurrent(destination, base + offset, count)
            }
            initialized = count
        }
    }

    /// Calls `body` with the whole region, read-only. Pause the ``gate`` first for a stable view.
    public func withUnsafeBytes<Result>(_ body: (UnsafeRawBufferPointer) throws -> Result) rethrows -> Result {
        try body(UnsafeRawBufferPointer(start: base, count: byteCount))
    }

    /// The CRC32C of page `page` (in `0..<pageCount`). Pause the ``gate`` first for a stable
    /// value.
    public func checksum(ofPage page: Int) -> UInt32 {
        precondition(page >= 0 && page < pageCount, "page \(page) outside 0..<\(pageCount)")
        return CRC32C.checksum(UnsafeRawBufferPointer(start: base + page << pageShift, count: pageSize))
    }

    // MARK: DirtyTracker

    /// Forgets every page dirtied so far.
    public func beginTracking() throws(LiveCopyError) {
        for index in 0..<summaryCount { _ = ft_bitmap_take(summary + index) }
        for index in 0..<wordCount { _ = ft_bitmap_take(bitmap + index) }
    }

    /// Calls `body` with the index and bits of every non-empty bitmap word, taking each
    /// (atomically cleared) after clearing its summary bit. Costs a read of the summary and
    /// of the words that hold dirty pages.
    private func takeDirtyWords(limit: Int, _ body: (Int, UInt64) -> Void) {
        for group in 0..<summaryCount where ft_bitmap_load(summary + group) != 0 {
            var bits = ft_bitmap_take(summary + group)
            while bits != 0 {
                let index = group << 6 | bits.trailingZeroBitCount
                bits &= bits - 1
                let word = ft_bitmap_take(bitmap + index)
                guard word != 0 else { continue }
                if index < limit {
                    body(index, word)
                } else {
                    // Outside the consumer's bitmap: kept for a later collection.
                    restore(word, at: index)
                }
            }
        }
    }

    /// ORs `word` back into bitmap word `index`, telling the summary when the word was empty.
    private func restore(_ word: UInt64, at index: Int) {
        if ft_bitmap_fetch_or(bitmap + index, word) == 0 {
            ft_bitmap_or(summary + (index >> 6), 1 << UInt64(index & 63))
        }
    }

    /// Moves the dirty pages into `words` (a bitmap of at least `(pageCount + 63) / 64` words,
    /// ORed into), clearing them atomically: for a consumer that keeps its own bitmap. Reads
    /// only the words that hold dirty pages (found through a summary level).
    public func collectDirtyPages(into words: UnsafeMutableBufferPointer<UInt64>) {
        takeDirtyWords(limit: min(wordCount, words.count)) { index, word in words[index] |= word }
    }

    /// Moves the dirty pages into `pages`, clearing them atomically. Reads only the words that
    /// hold dirty pages (found through a summary level); a bit set meanwhile stays for the next
    /// call.
    public func collectDirtyPages(into pages: inout PageSet) {
        let count = min(wordCount, pages.words.count)
        takeDirtyWords(limit: count) { index, word in pages.words[index] |= word }
    }

    /// Ends tracking (bits keep being set; they are simply not asked for).
    public func endTracking() {}

    // MARK: LiveCopySource

    /// Copies pages (within `0..<pageCount`) into `destination`.
    public func copyPages(_ pages: Range<Int>, into destination: UnsafeMutableRawPointer) {
        precondition(
            pages.lowerBound >= 0 && pages.upperBound <= pageCount, "pages \(pages) outside 0..<\(pageCount)")
        guard !pages.isEmpty else { return }
        ft_copy_concurrent(destination, base + pages.lowerBound << pageShift, pages.count << pageShift)
    }

    /// Copies pages `pages` into `destination` with stores that bypass the cache.
    public func copyPagesBypassingCache(_ pages: Range<Int>, into destination: UnsafeMutableRawPointer) {
        precondition(
            pages.lowerBound >= 0 && pages.upperBound <= pageCount, "pages \(pages) outside 0..<\(pageCount)")
        guard !pages.isEmpty else { return }
        ft_copy_concurrent_streaming(destination, base + pages.lowerBound << pageShift, pages.count << pageShift)
    }

    /// Sets the duplicated-mode mirror; the gate must be paused.
    public func setMirror(_ mirror: (any WriteMirror)?) throws(LiveCopyError) {
        guard gate.isPaused else {
            throw LiveCopyError(.invalidConfiguration, detail: "the mirror changes only while the gate is paused")
        }
        self.mirror = mirror
    }

    /// Sets the guard that sees every write before it lands (`nil` removes it); the gate must
    /// be paused, so no writer is half-way past the old one.
    public func setWriteGuard(_ writeGuard: (any WriteGuard)?) throws(LiveCopyError) {
        guard gate.isPaused else {
            throw LiveCopyError(.invalidConfiguration, detail: "the write guard changes only while the gate is paused")
        }
        self.writeGuard = writeGuard
    }

    /// How many pages are dirty now (a snapshot: writers may be adding more).
    public var dirtyPageCount: Int {
        var count = 0
        for group in 0..<summaryCount {
            var bits = ft_bitmap_load(summary + group)
            while bits != 0 {
                count += ft_bitmap_load(bitmap + (group << 6 | bits.trailingZeroBitCount)).nonzeroBitCount
                bits &= bits - 1
            }
        }
        return count
    }

    /// Marks `pages` dirty again (a consumer that took them and could not use them gives them
    /// back, so the next collection sees them).
    public func markDirty(_ pages: PageSet) {
        let count = min(wordCount, pages.words.count)
        for index in 0..<count where pages.words[index] != 0 { restore(pages.words[index], at: index) }
    }

    private func markDirty(offset: Int, count: Int) {
        let first = offset >> pageShift
        let last = (offset + count - 1) >> pageShift
        if first == last {
            markDirty(page: first)
            return
        }
        for page in first...last { markDirty(page: page) }
    }

    /// Sets the page's bit; the first bit of an empty word also sets the word's summary bit.
    @inline(__always)
    private func markDirty(page: Int) {
        if ft_bitmap_fetch_set(bitmap, page) == 0 {
            ft_bitmap_or(summary + (page >> 12), 1 << UInt64((page >> 6) & 63))
        }
    }
}

/// A source whose pages are plain memory at known addresses, so a copier can copy a page,
/// fingerprint it and checksum it in one pass (`ft_copy_page_digest`) instead of copying it out
/// with ``LiveCopySource/copyPages(_:into:)`` and reading it twice more.
///
/// Conform a source of your own to take this fast path (``RemoteDestination`` checks for it).
/// The pages must be laid out contiguously: page `p` is at `address(ofPage: 0) + p *
/// pageSize`, readable for as long as the source lives, while writers run (a torn read is
/// fine: the page is dirty again).
public protocol PageAddressableSource: LiveCopySource {
    /// The address of page `page` (0 ..< `pageCount`).
    func address(ofPage page: Int) -> UnsafeRawPointer
}

extension TrackedMemory: PageAddressableSource {
    /// The address of page `page`; traps on a page outside the region.
    public func address(ofPage page: Int) -> UnsafeRawPointer {
        precondition(page >= 0 && page < pageCount, "page \(page) outside 0..<\(pageCount)")
        return UnsafeRawPointer(base + page << pageShift)
    }
}

extension UserfaultMemory: PageAddressableSource {
    /// The address of page `page`; traps on a page outside the region.
    public func address(ofPage page: Int) -> UnsafeRawPointer {
        precondition(page >= 0 && page < pageCount, "page \(page) outside 0..<\(pageCount)")
        return UnsafeRawPointer(baseAddress + page << pageShift)
    }
}

/// Anonymous, page-aligned, zero-filled memory from `mmap` (untouched pages cost nothing).
enum RegionAllocation {
    static func allocate(byteCount: Int, populate: Bool = false) -> UnsafeMutableRawPointer? {
        #if os(Linux)
            let flags = MAP_PRIVATE | MAP_ANONYMOUS | (populate ? MAP_POPULATE : 0)
        #else
            let flags = MAP_PRIVATE | MAP_ANONYMOUS
        #endif
        let pointer = mmap(nil, byteCount, PROT_READ | PROT_WRITE, flags, -1, 0)
        guard let pointer, pointer != MAP_FAILED else { return nil }
        return pointer
    }

    static func free(_ pointer: UnsafeMutableRawPointer, byteCount: Int) {
        munmap(pointer, byteCount)
    }
}
