public import FaultToleranceCore
import NIOConcurrencyHelpers

/// A flash drive's translation layer in memory, as a ``FaultToleranceCore/StorageUnit`` that
/// reports its wear: the host writes logical pages; the drive programs each into a free
/// physical page of an open erase block (a page is never rewritten in place), and when free
/// blocks run short it reclaims the closed block with the fewest live pages (greedy garbage
/// collection), copying those pages forward before erasing it. Those copies are the write
/// amplification: media bytes written over host bytes written. Over-provisioning (physical
/// space beyond the capacity) gives the collector room; a discard (TRIM) of whole pages tells
/// it what no longer needs copying.
///
/// It models wear, not power loss: ``synchronize()`` has nothing to do, and what was written
/// stays. The content is kept by logical address; the layer tracks placement only, for the
/// counts ``wear`` reports.
///
/// ```swift
/// let flash = try SimulatedFlash(id: UnitID(1), capacity: 64 << 20,
///                                geometry: .init(overProvisioning: 0.07))
/// try flash.write(page, at: 0)
/// print(flash.wear.writeAmplification)
/// ```
public final class SimulatedFlash: StorageUnit, @unchecked Sendable {
    // unchecked: every field below `lock` is read and written under it.

    /// The drive's shape.
    public struct Geometry: Sendable, Hashable {
        /// Bytes per flash page: the unit the drive programs (a smaller host write costs a page).
        public var pageSize: Int
        /// Pages per erase block: the unit the drive erases.
        public var pagesPerBlock: Int
        /// Physical space beyond the capacity, as a fraction of it (0.07: 7 % more).
        public var overProvisioning: Double

        /// A geometry; the defaults are a consumer drive's: 4 KiB pages, 256 KiB blocks, 7 %.
        public init(pageSize: Int = 4096, pagesPerBlock: Int = 64, overProvisioning: Double = 0.07) {
            self.pageSize = pageSize
            self.pagesPerBlock = pagesPerBlock
            self.overProvisioning = overProvisioning
        }
    }

    /// What the drive has written, as a `smartctl` or an NVMe log reports it.
    public struct Wear: Sendable, Hashable {
        /// Bytes the host asked to write.
        public var hostBytesWritten: UInt64
        /// Bytes programmed into flash: the host's pages and the collector's copies.
        public var mediaBytesWritten: UInt64
        /// Blocks erased.
        public var erases: UInt64

        /// Creates a report.
        public init(hostBytesWritten: UInt64, mediaBytesWritten: UInt64, erases: UInt64) {
            self.hostBytesWritten = hostBytesWritten
            self.mediaBytesWritten = mediaBytesWritten
            self.erases = erases
        }

        /// Media bytes over host bytes since the drive was new (0 before any write).
        public var writeAmplification: Double {
            hostBytesWritten == 0 ? 0 : Double(mediaBytesWritten) / Double(hostBytesWritten)
        }
    }

    private enum BlockState {
        case free, open, closed
    }

    /// The unit's identity.
    public let id: UnitID
    /// Logical bytes: a multiple of the page size.
    public let capacity: Int
    /// The drive's shape.
    public let geometry: Geometry
    /// Erase blocks in flash, over-provisioning included.
    public let physicalBlocks: Int

    private let lock = NIOLock()
    private var content: [UInt8]
    /// Logical page to physical page, -1 when unmapped (never written, or discarded).
    private var mapping: [Int32]
    /// Physical page to the logical page it holds, -1 when free or stale.
    private var owner: [Int32]
    private var livePagesInBlock: [Int]
    private var blockState: [BlockState]
    /// Erased blocks, the next to open last.
    private var freeBlocks: [Int]
    private var openBlock: Int
    private var nextPageInBlock: Int
    private var collecting = false
    private var counts = Wear(hostBytesWritten: 0, mediaBytesWritten: 0, erases: 0)

    /// An empty drive of `capacity` logical bytes. Throws
    /// ``FaultToleranceCore/StorageError/Code/invalidConfiguration`` unless the capacity is a
    /// positive multiple of the page size, the geometry is positive and the over-provisioning
    /// is in 0...4; the drive gets at least three spare blocks whatever the over-provisioning
    /// (the collector needs one to copy into).
    public init(id: UnitID, capacity: Int, geometry: Geometry = Geometry()) throws(StorageError) {
        guard geometry.pageSize > 0, geometry.pagesPerBlock > 0, geometry.pageSize <= 1 << 20,
            geometry.pagesPerBlock <= 1 << 16, geometry.overProvisioning.isFinite,
            (0...4).contains(geometry.overProvisioning), capacity > 0, capacity % geometry.pageSize == 0,
            capacity / geometry.pageSize < Int(Int32.max) / 8
        else {
            throw StorageError(
                .invalidConfiguration, unit: id,
                detail: "capacity \(capacity) with pages of \(geometry.pageSize), blocks of \(geometry.pagesPerBlock) "
                    + "pages, over-provisioning \(geometry.overProvisioning)")
        }
        self.id = id
        self.capacity = capacity
        self.geometry = geometry
        let logicalPages = capacity / geometry.pageSize
        let blocksForData = (logicalPages + geometry.pagesPerBlock - 1) / geometry.pagesPerBlock
        let provisioned = Int((Double(logicalPages) * (1 + geometry.overProvisioning)).rounded(.up))
        physicalBlocks = max((provisioned + geometry.pagesPerBlock - 1) / geometry.pagesPerBlock, blocksForData + 3)
        content = [UInt8](repeating: 0, count: capacity)
        mapping = [Int32](repeating: -1, count: logicalPages)
        owner = [Int32](repeating: -1, count: physicalBlocks * geometry.pagesPerBlock)
        livePagesInBlock = [Int](repeating: 0, count: physicalBlocks)
        blockState = [BlockState](repeating: .free, count: physicalBlocks)
        freeBlocks = Array((1..<physicalBlocks).reversed())
        openBlock = 0
        blockState[0] = .open
        nextPageInBlock = 0
    }

    /// Host and media bytes written so far, and blocks erased.
    public var wear: Wear { lock.withLock { counts } }

    /// Logical pages that hold data (written and not discarded since).
    public var livePages: Int { lock.withLock { mapping.count(where: { $0 >= 0 }) } }

    /// Where it lives: nowhere but memory.
    public var location: String? { nil }

    /// Copies the bytes at `offset` (zeros where nothing was written or a page was discarded).
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkBounds(offset: offset, count: buffer.count)
        guard let target = buffer.baseAddress, buffer.count > 0 else { return }
        lock.withLock {
            content.withUnsafeBytes { source in
                guard let base = source.baseAddress else { return }
                target.copyMemory(from: base + offset, byteCount: buffer.count)
            }
        }
    }

    /// Writes `bytes` at `offset`: every page it touches is programmed anew (a partial page
    /// costs a whole one).
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkBounds(offset: offset, count: bytes.count)
        guard let source = bytes.baseAddress, bytes.count > 0 else { return }
        let pageSize = geometry.pageSize
        lock.lock()
        defer { lock.unlock() }
        content.withUnsafeMutableBytes { target in
            guard let base = target.baseAddress else { return }
            (base + offset).copyMemory(from: source, byteCount: bytes.count)
        }
        counts.hostBytesWritten += UInt64(bytes.count)
        for page in offset / pageSize...(offset + bytes.count - 1) / pageSize {
            try program(page)
        }
    }

    /// Nothing to do: the model keeps every completed write.
    public func synchronize() throws(StorageError) {}

    /// Reads as zeros after; the pages wholly inside `range` are unmapped (TRIM), so the
    /// collector no longer copies them. A partial page at either end keeps its page.
    public func discard(_ range: Range<Int>) throws(StorageError) {
        try checkBounds(offset: range.lowerBound, count: range.count)
        guard !range.isEmpty else { return }
        let pageSize = geometry.pageSize
        lock.withLock {
            content.withUnsafeMutableBytes { target in
                guard let base = target.baseAddress else { return }
                (base + range.lowerBound).initializeMemory(as: UInt8.self, repeating: 0, count: range.count)
            }
            let first = (range.lowerBound + pageSize - 1) / pageSize
            let end = range.upperBound / pageSize
            guard first < end else { return }
            for page in first..<end { unmap(page) }
        }
    }

    // MARK: The translation layer (under `lock`)

    private func unmap(_ page: Int) {
        let physical = Int(mapping[page])
        guard physical >= 0 else { return }
        owner[physical] = -1
        livePagesInBlock[physical / geometry.pagesPerBlock] -= 1
        mapping[page] = -1
    }

    /// Programs logical `page` into the next free physical page.
    private func program(_ page: Int) throws(StorageError) {
        let physical = try allocate()
        unmap(page)
        mapping[page] = Int32(physical)
        owner[physical] = Int32(page)
        livePagesInBlock[physical / geometry.pagesPerBlock] += 1
        counts.mediaBytesWritten += UInt64(geometry.pageSize)
    }

    private func allocate() throws(StorageError) -> Int {
        if nextPageInBlock == geometry.pagesPerBlock {
            blockState[openBlock] = .closed
            // Keep one erased block in reserve for the collector's copies (which may open it).
            while !collecting, freeBlocks.count < 2 {
                guard try collect() else { break }
            }
            if nextPageInBlock == geometry.pagesPerBlock {
                // (The collector may have filled a block it opened: closed too.)
                blockState[openBlock] = .closed
                guard let next = freeBlocks.popLast() else {
                    throw StorageError(
                        .ioFailed, unit: id, detail: "no erased block left (the collector made no room)")
                }
                openBlock = next
                blockState[next] = .open
                nextPageInBlock = 0
            }
        }
        defer { nextPageInBlock += 1 }
        return openBlock * geometry.pagesPerBlock + nextPageInBlock
    }

    /// Reclaims the closed block with the fewest live pages: copies them forward, erases it.
    /// (A linear scan of the blocks: a model's drives have thousands, not millions.)
    /// Returns false when every closed block is full of live pages (no room to gain).
    private func collect() throws(StorageError) -> Bool {
        var victim: Int?
        for block in 0..<physicalBlocks where blockState[block] == .closed {
            if victim.map({ livePagesInBlock[block] < livePagesInBlock[$0] }) ?? true { victim = block }
        }
        guard let victim, livePagesInBlock[victim] < geometry.pagesPerBlock else { return false }
        collecting = true
        defer { collecting = false }
        let first = victim * geometry.pagesPerBlock
        for physical in first..<first + geometry.pagesPerBlock where owner[physical] >= 0 {
            try program(Int(owner[physical]))
        }
        blockState[victim] = .free
        counts.erases += 1
        // Erased blocks are opened oldest first, which spreads the erases.
        freeBlocks.insert(victim, at: 0)
        return true
    }
}
