import CFaultToleranceShims
public import FaultToleranceCore
public import LiveCopy
import NIOConcurrencyHelpers

/// A ``FaultToleranceCore/StorageUnit`` that keeps a dirty-block bitmap of what was written
/// since the last checkpoint, so an incremental capture of a volume never scans it.
///
/// Write through the volume, not the unit under it: each write passes the ``gate`` (so a
/// checkpoint can take its cut), sees the checkpoint's copy-before-write guard, then lands
/// and marks its blocks dirty.
///
/// ```swift
/// let volume = try TrackedVolume(pool.allocate(), blockSize: 4096)
/// try volume.write(bytes, at: 8192)
/// ```
///
/// A volume that is also written behind the library's back (by another process, or a device
/// under the unit) can be made with `findsChangesByHashing`: before each capture the
/// ``Checkpointer`` then calls ``markChangedBlocks(progress:)``, which reads every block and
/// marks dirty those whose digest changed since the last scan. Slower (a read of the whole
/// volume per capture), and such writes are captured as of the scan, not the cut.
public final class TrackedVolume: StorageUnit, @unchecked Sendable {
    /// The unit the bytes live on.
    public let base: any StorageUnit
    /// Bytes per block (a power of two, at least 512).
    public let blockSize: Int
    /// Blocks in the volume.
    public let blockCount: Int
    /// The gate every write passes.
    public let gate: PauseGate

    private let bitmap: UnsafeMutablePointer<UInt64>
    private let wordCount: Int
    private let blockShift: Int
    // Read by writers inside the gate, changed only while the gate is paused.
    private var writeGuard: CutGuard?
    /// Whether captures first look for blocks changed behind the volume's back.
    public let findsChangesByHashing: Bool
    /// Each block's digest at the last scan (a keyed 64-bit fingerprint and a CRC32C), under a
    /// key drawn when the volume was made; `nil` before the first scan.
    private let digests = NIOLockedValueBox<[Digest]?>(nil)
    private let digestKey: ft_fingerprint_key

    struct Digest: Equatable {
        var fingerprint: UInt64
        var checksum: UInt32
    }

    /// Wraps `base`; its capacity must be a whole number of `blockSize` blocks. Pass the
    /// region's gate to make writers of a region and a volume stop at one cut.
    public init(
        _ base: any StorageUnit, blockSize: Int = 4096, gate: PauseGate = PauseGate(),
        findsChangesByHashing: Bool = false
    ) throws(CheckpointError) {
        guard blockSize >= CheckpointLimits.minimumUnitSize, blockSize <= CheckpointLimits.maximumUnitSize,
            blockSize & (blockSize - 1) == 0, base.capacity > 0, base.capacity % blockSize == 0
        else {
            throw CheckpointError(
                .invalidConfiguration,
                detail:
                    "block size \(blockSize) must be a power of two in 512...1 MiB dividing the capacity \(base.capacity)"
            )
        }
        self.base = base
        self.blockSize = blockSize
        self.blockCount = base.capacity / blockSize
        self.blockShift = blockSize.trailingZeroBitCount
        self.gate = gate
        self.wordCount = (blockCount + 63) / 64
        self.bitmap = .allocate(capacity: wordCount)
        bitmap.initialize(repeating: 0, count: wordCount)
        self.findsChangesByHashing = findsChangesByHashing
        var generator = SystemRandomNumberGenerator()
        let words = (0..<8).map { _ in generator.next() as UInt64 }
        digestKey = ft_fingerprint_key(
            words: (words[0], words[1], words[2], words[3], words[4], words[5], words[6], words[7]))
    }

    /// Finds the blocks changed since the last scan by reading the whole volume (1 MiB at a
    /// time) and comparing each block's 96-bit digest, marks them dirty, and returns how many
    /// there were. The first scan knows no earlier digests and marks every block. Writes made
    /// through the volume are tracked anyway; this is for writes made behind its back.
    /// `progress` gets the blocks scanned and the total.
    @discardableResult
    public func markChangedBlocks(progress: (Int, Int) -> Void = { _, _ in }) throws(CheckpointError) -> Int {
        let blocksPerRead = max(1, (1 << 20) / blockSize)
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: blocksPerRead * blockSize, alignment: 64)
        defer { buffer.deallocate() }
        let previous = digests.withLockedValue { $0 }
        var current: [Digest] = []
        current.reserveCapacity(blockCount)
        var changed = 0
        var block = 0
        while block < blockCount {
            let count = min(blocksPerRead, blockCount - block)
            let bytes = UnsafeMutableRawBufferPointer(rebasing: buffer[0..<count * blockSize])
            do throws(StorageError) { try base.read(into: bytes, at: block * blockSize) } catch {
                throw CheckpointError(error)
            }
            guard let start = bytes.baseAddress else { break }
            for index in 0..<count {
                let page = UnsafeRawPointer(start + index * blockSize)
                var key = digestKey
                let digest = Digest(
                    fingerprint: ft_page_fingerprint(page, blockSize, &key),
                    checksum: CRC32C.checksum(UnsafeRawBufferPointer(start: page, count: blockSize)))
                if previous?[block + index] != digest {
                    ft_bitmap_set(bitmap, block + index)
                    changed += 1
                }
                current.append(digest)
            }
            block += count
            progress(block, blockCount)
        }
        digests.withLockedValue { $0 = current }
        return changed
    }

    deinit { bitmap.deallocate() }

    /// The base unit's identity.
    public var id: UnitID { base.id }
    /// The volume's size in bytes.
    public var capacity: Int { base.capacity }
    /// The base unit's location.
    public var location: String? { base.location }

    /// Reads from the base unit.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        try base.read(into: buffer, at: offset)
    }

    /// Writes through the gate and the guard, then marks the blocks dirty.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkBounds(offset: offset, count: bytes.count)
        guard bytes.count > 0 else { return }
        gate.enter()
        defer { gate.leave() }
        if let writeGuard { try writeGuard.preserve(blocks: blocks(offset: offset, count: bytes.count)) }
        try base.write(bytes, at: offset)
        markDirty(blocks(offset: offset, count: bytes.count))
    }

    /// Synchronizes the base unit.
    public func synchronize() throws(StorageError) { try base.synchronize() }

    /// Discards a range (it reads as zeros), like a write of zeros.
    public func discard(_ range: Range<Int>) throws(StorageError) {
        try checkBounds(offset: range.lowerBound, count: range.count)
        guard !range.isEmpty else { return }
        gate.enter()
        defer { gate.leave() }
        if let writeGuard { try writeGuard.preserve(blocks: blocks(offset: range.lowerBound, count: range.count)) }
        try base.discard(range)
        markDirty(blocks(offset: range.lowerBound, count: range.count))
    }

    private func blocks(offset: Int, count: Int) -> ClosedRange<Int> {
        (offset >> blockShift)...((offset + count - 1) >> blockShift)
    }

    private func markDirty(_ blocks: ClosedRange<Int>) {
        for block in blocks { ft_bitmap_set(bitmap, block) }
    }

    /// How many blocks are dirty now.
    public var dirtyBlockCount: Int {
        var count = 0
        for index in 0..<wordCount { count += ft_bitmap_load(bitmap + index).nonzeroBitCount }
        return count
    }

    /// Moves the dirty blocks into `blocks`, clearing them atomically.
    public func collectDirtyBlocks(into blocks: inout PageSet) {
        for index in 0..<min(wordCount, blocks.words.count) where ft_bitmap_load(bitmap + index) != 0 {
            blocks.words[index] |= ft_bitmap_take(bitmap + index)
        }
    }

    /// Moves the dirty blocks into `words` (a bitmap, ORed into), clearing them atomically.
    public func collectDirtyBlocks(into words: UnsafeMutableBufferPointer<UInt64>) {
        for index in 0..<min(wordCount, words.count) where ft_bitmap_load(bitmap + index) != 0 {
            words[index] |= ft_bitmap_take(bitmap + index)
        }
    }

    /// Marks `blocks` dirty again.
    public func markDirty(_ blocks: PageSet) {
        for index in 0..<min(wordCount, blocks.words.count) where blocks.words[index] != 0 {
            ft_bitmap_or(bitmap + index, blocks.words[index])
        }
    }

    /// Forgets every block dirtied so far.
    public func clearDirtyBlocks() {
        for index in 0..<wordCount { _ = ft_bitmap_take(bitmap + index) }
    }

    /// Sets the copy-before-write guard; the gate must be paused.
    func setGuard(_ writeGuard: CutGuard?) throws(CheckpointError) {
        guard gate.isPaused else {
            throw CheckpointError(
                .invalidConfiguration, detail: "the volume's guard changes only while its gate is paused")
        }
        self.writeGuard = writeGuard
    }
}
