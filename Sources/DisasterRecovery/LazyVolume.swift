public import FaultToleranceCore
import NIOConcurrencyHelpers

/// A volume a recovered workload runs on before its data has been copied: blocks are read from
/// the recovery point on first access, writes go to a local overlay, and a full replica is built
/// behind it; once the replica is complete the overlay's blocks are copied onto it in rounds and
/// the volume switches to the replica.
///
/// Four units back it: the recovery point's ``RecoveryPointSource`` (never written), the
/// `overlay` (the workload's writes, at their own offsets), the `replica` (the volume's final
/// home) and a small `state` unit (``LazyVolumeHeader``: the phase, the blocks built, the overlay's
/// dirty-block bitmap). A read of a block goes, in order, to:
/// 1. the replica, once the volume has switched;
/// 2. the overlay, when the workload wrote the block;
/// 3. the replica, when the build has copied the block;
/// 4. the source.
///
/// Durability is the ``FaultToleranceCore/StorageUnit`` contract: after ``synchronize()`` every
/// completed write survives a crash of the recovery site. ``synchronize()`` makes the overlay
/// durable before it records the blocks written, so a block is never marked written with its
/// bytes lost. The build records its progress only after the replica's blocks are durable, and
/// the switch happens under the volume's lock (the freeze) after the last overlay blocks are
/// copied and the replica is durable. After a crash, ``open(identity:source:overlay:replica:state:)``
/// resumes where the state unit says: the build from its last recorded block, a migration from
/// its first round.
public final class LazyVolume: StorageUnit, @unchecked Sendable {
    // unchecked: every mutable field is guarded by `lock`.

    /// What the volume has done, for progress and metrics.
    public struct Progress: Sendable, Hashable {
        /// The phase.
        public var phase: LazyVolumeHeader.Phase
        /// The volume's blocks.
        public var blocks: Int
        /// Blocks the replica holds (durably, for the build's recorded part).
        public var built: Int
        /// Blocks the workload has written to the overlay.
        public var dirty: Int
        /// Of those, blocks still to copy onto the replica in this migration.
        public var uncopied: Int
        /// Blocks read from the source (on demand or by the build).
        public var sourceReads: Int
        /// Migration rounds run.
        public var rounds: Int
        /// Blocks copied from the overlay onto the replica.
        public var overlayBlocksCopied: Int
        /// Blocks copied in the switch, under the lock (the freeze).
        public var blocksCopiedInSwitch: Int
    }

    /// The unit's identity (the state unit's).
    public let id: UnitID
    /// The volume's size in bytes.
    public let capacity: Int
    /// Bytes per block.
    public let blockSize: Int
    /// The caller's identity for this volume, kept in the state unit.
    public let identity: UInt64

    private let source: any RecoveryPointSource
    private let overlay: any StorageUnit
    private let replica: any StorageUnit
    private let stateUnit: any StorageUnit
    private let lock = NIOLock()
    private let blockCount: Int
    package let bug: DisasterRecoveryBug?

    // Guarded by `lock`.
    private var header: LazyVolumeHeader
    private var builtInMemory: Int
    private var dirty: [UInt64]
    private var copied: [UInt64]
    private var unrecordedSectors: Set<Int> = []
    private var counters: Progress

    private init(
        header: LazyVolumeHeader, dirty: [UInt64], source: any RecoveryPointSource, overlay: any StorageUnit,
        replica: any StorageUnit, state: any StorageUnit, bug: DisasterRecoveryBug?
    ) {
        self.id = state.id
        self.capacity = header.capacity
        self.blockSize = header.blockSize
        self.identity = header.identity
        self.blockCount = header.blockCount
        self.header = header
        self.builtInMemory = header.built
        self.dirty = dirty
        self.copied = [UInt64](repeating: 0, count: dirty.count)
        self.source = source
        self.overlay = overlay
        self.replica = replica
        self.stateUnit = state
        self.bug = bug
        self.counters = Progress(
            phase: header.phase, blocks: header.blockCount, built: header.built,
            dirty: dirty.reduce(0) { $0 + $1.nonzeroBitCount }, uncopied: 0, sourceReads: 0, rounds: 0,
            overlayBlocksCopied: 0, blocksCopiedInSwitch: 0)
    }

    private static func check(
        capacity: Int, blockSize: Int, overlay: any StorageUnit, replica: any StorageUnit, state: any StorageUnit
    ) throws(RecoveryError) {
        guard blockSize >= 512, blockSize <= 1 << 20, blockSize.nonzeroBitCount == 1 else {
            throw RecoveryError(.invalidField, "block size \(blockSize): a power of two from 512 to 1 MiB")
        }
        guard capacity > 0 else { throw RecoveryError(.invalidField, "a volume of \(capacity) bytes") }
        for (name, unit) in [("overlay", overlay), ("replica", replica)] where unit.capacity < capacity {
            throw RecoveryError(
                .mismatchedUnits, "the \(name) \(unit.id) holds \(unit.capacity) bytes of the volume's \(capacity)")
        }
        let needed = LazyVolumeHeader.stateSize(capacity: capacity, blockSize: blockSize)
        guard state.capacity >= needed else {
            throw RecoveryError(
                .mismatchedUnits, "the state unit \(state.id) holds \(state.capacity) bytes of \(needed)")
        }
    }

    /// Sets up a new lazy volume over `source`: writes a fresh state (phase building, nothing
    /// built, nothing written) to `state` and makes it durable. The overlay and replica may hold
    /// anything; nothing is read from them before it is written.
    public static func create(
        identity: UInt64, source: any RecoveryPointSource, overlay: any StorageUnit, replica: any StorageUnit,
        state: any StorageUnit, blockSize: Int = 4096
    ) throws(RecoveryError) -> LazyVolume {
        try create(
            identity: identity, source: source, overlay: overlay, replica: replica, state: state, blockSize: blockSize,
            bug: nil)
    }

    package static func create(
        identity: UInt64, source: any RecoveryPointSource, overlay: any StorageUnit, replica: any StorageUnit,
        state: any StorageUnit, blockSize: Int, bug: DisasterRecoveryBug?
    ) throws(RecoveryError) -> LazyVolume {
        try check(capacity: source.capacity, blockSize: blockSize, overlay: overlay, replica: replica, state: state)
        let header = LazyVolumeHeader(
            phase: .building, blockSize: blockSize, identity: identity, capacity: source.capacity, generation: 1,
            built: 0)
        let stateSize = LazyVolumeHeader.stateSize(capacity: source.capacity, blockSize: blockSize)
        try storage(state) { () throws(StorageError) in
            try state.write(
                [UInt8](repeating: 0, count: stateSize - LazyVolumeHeader.bitmapOffset),
                at: LazyVolumeHeader.bitmapOffset)
            try state.write(header.encoded(), at: 0)
            try state.write([UInt8](repeating: 0, count: LazyVolumeHeader.slotSize), at: LazyVolumeHeader.slotSize)
            try state.synchronize()
        }
        let words = [UInt64](repeating: 0, count: (header.blockCount + 63) / 64)
        return LazyVolume(
            header: header, dirty: words, source: source, overlay: overlay, replica: replica, state: state, bug: bug)
    }

    /// Opens a lazy volume after a restart, from what `state` holds. Throws
    /// ``RecoveryError/Code/mismatchedUnits`` when the state belongs to another volume (another
    /// identity or size), and ``RecoveryError/Code/damaged`` naming the offset when the state
    /// fails its checks.
    public static func open(
        identity: UInt64, source: any RecoveryPointSource, overlay: any StorageUnit, replica: any StorageUnit,
        state: any StorageUnit
    ) throws(RecoveryError) -> LazyVolume {
        try open(identity: identity, source: source, overlay: overlay, replica: replica, state: state, bug: nil)
    }

    package static func open(
        identity: UInt64, source: any RecoveryPointSource, overlay: any StorageUnit, replica: any StorageUnit,
        state: any StorageUnit, bug: DisasterRecoveryBug?
    ) throws(RecoveryError) -> LazyVolume {
        guard state.capacity >= LazyVolumeHeader.bitmapOffset else {
            throw RecoveryError(.mismatchedUnits, "the state unit \(state.id) holds only \(state.capacity) bytes")
        }
        let slots = try storage(state) { () throws(StorageError) in
            try state.read(at: 0, count: 2 * LazyVolumeHeader.slotSize)
        }
        let header: LazyVolumeHeader
        do {
            header = try LazyVolumeHeader.newest(
                first: Array(slots[0..<LazyVolumeHeader.slotSize]), second: Array(slots[LazyVolumeHeader.slotSize...]))
        } catch  where error.code == .notInitialized {
            throw error
        } catch {
            throw RecoveryError(.damaged, "state unit \(state.id), offset 0: \(error)")
        }
        guard header.identity == identity else {
            throw RecoveryError(
                .mismatchedUnits, "the state unit \(state.id) belongs to volume \(header.identity), not \(identity)")
        }
        guard header.capacity == source.capacity else {
            throw RecoveryError(
                .mismatchedUnits, "the state says \(header.capacity) bytes, the source holds \(source.capacity)")
        }
        try check(
            capacity: header.capacity, blockSize: header.blockSize, overlay: overlay, replica: replica, state: state)
        var words = [UInt64](repeating: 0, count: (header.blockCount + 63) / 64)
        let sectors =
            (header.blockCount + LazyVolumeHeader.blocksPerBitmapSector - 1)
            / LazyVolumeHeader.blocksPerBitmapSector
        let bitmap = try storage(state) { () throws(StorageError) in
            try state.read(at: LazyVolumeHeader.bitmapOffset, count: sectors * LazyVolumeHeader.bitmapSectorSize)
        }
        for sector in 0..<sectors {
            let start = sector * LazyVolumeHeader.bitmapSectorSize
            do {
                try LazyVolumeHeader.decodeBitmapSector(
                    bitmap[start..<start + LazyVolumeHeader.bitmapSectorSize], index: sector, blocks: header.blockCount,
                    into: &words)
            } catch {
                throw RecoveryError(
                    .damaged, "state unit \(state.id), offset \(LazyVolumeHeader.bitmapOffset + start): \(error)")
            }
        }
        return LazyVolume(
            header: header, dirty: words, source: source, overlay: overlay, replica: replica, state: state, bug: bug)
    }

    private static func storage<T>(_ unit: any StorageUnit, _ body: () throws(StorageError) -> T) throws(RecoveryError)
        -> T
    {
        do {
            return try body()
        } catch {
            throw RecoveryError(.storage, "\(error)")
        }
    }

    /// Runs `body` holding the lock, passing its typed error on.
    private func locked<T, E: Error>(_ body: () throws(E) -> T) throws(E) -> T {
        lock.lock()
        defer { lock.unlock() }
        return try body()
    }

    // MARK: - State

    /// Where the volume stands.
    public var progress: Progress {
        locked {
            var progress = counters
            progress.phase = header.phase
            progress.built = builtInMemory
            progress.dirty = dirty.reduce(0) { $0 + $1.nonzeroBitCount }
            progress.uncopied = header.phase == .migrating ? uncopiedCount() : 0
            return progress
        }
    }

    /// The phase.
    public var phase: LazyVolumeHeader.Phase { locked { header.phase } }

    private func isDirty(_ block: Int) -> Bool { dirty[block / 64] & (1 << UInt64(block % 64)) != 0 }
    private func isCopied(_ block: Int) -> Bool { copied[block / 64] & (1 << UInt64(block % 64)) != 0 }

    private func uncopiedCount() -> Int {
        var count = 0
        for index in dirty.indices { count += (dirty[index] & ~copied[index]).nonzeroBitCount }
        return count
    }

    private func blockRange(_ block: Int) -> Range<Int> {
        block * blockSize..<min(capacity, (block + 1) * blockSize)
    }

    private func fail(_ error: RecoveryError, offset: Int) -> StorageError {
        StorageError(.ioFailed, unit: id, offset: offset, detail: error.description)
    }

    /// Writes the header with the next generation into the other slot and makes it durable.
    private func recordHeader(_ update: (inout LazyVolumeHeader) -> Void) throws(StorageError) {
        var next = header
        update(&next)
        next.generation = header.generation + 1
        let slot = Int(next.generation % 2) * LazyVolumeHeader.slotSize
        try stateUnit.write(next.encoded(), at: slot)
        try stateUnit.synchronize()
        header = next
    }

    // MARK: - StorageUnit

    /// Reads the volume: each block from the replica, the overlay or the source (see the type's notes).
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkBounds(offset: offset, count: buffer.count)
        guard buffer.count > 0 else { return }
        try locked { () throws(StorageError) in
            var position = offset
            while position < offset + buffer.count {
                let block = position / blockSize
                let end = min(offset + buffer.count, (block + 1) * blockSize)
                let part = UnsafeMutableRawBufferPointer(rebasing: buffer[(position - offset)..<(end - offset)])
                try readLocked(block: block, into: part, at: position)
                position = end
            }
        }
    }

    private func readLocked(block: Int, into part: UnsafeMutableRawBufferPointer, at position: Int) throws(StorageError)
    {
        if header.phase == .switched {
            try replica.read(into: part, at: position)
        } else if isDirty(block) {
            try overlay.read(into: part, at: position)
        } else if block < builtInMemory {
            try replica.read(into: part, at: position)
        } else {
            do {
                try source.read(into: part, at: position)
            } catch {
                throw fail(error, offset: position)
            }
            counters.sourceReads += 1
        }
    }

    /// Writes to the overlay (or, once switched, to the replica). A write that covers part of a
    /// block the overlay does not hold yet first brings in the rest of that block.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkBounds(offset: offset, count: bytes.count)
        guard bytes.count > 0 else { return }
        try locked { () throws(StorageError) in
            if header.phase == .switched {
                try replica.write(bytes, at: offset)
                return
            }
            var position = offset
            while position < offset + bytes.count {
                let block = position / blockSize
                let range = blockRange(block)
                let end = min(offset + bytes.count, range.upperBound)
                let part = UnsafeRawBufferPointer(rebasing: bytes[(position - offset)..<(end - offset)])
                if isDirty(block) || (position == range.lowerBound && end == range.upperBound) {
                    try overlay.write(part, at: position)
                } else {
                    let whole = UnsafeMutableRawBufferPointer.allocate(byteCount: range.count, alignment: 64)
                    defer { whole.deallocate() }
                    try readLocked(block: block, into: whole, at: range.lowerBound)
                    UnsafeMutableRawBufferPointer(
                        rebasing: whole[(position - range.lowerBound)..<(end - range.lowerBound)]
                    ).copyMemory(from: part)
                    try overlay.write(UnsafeRawBufferPointer(whole), at: range.lowerBound)
                }
                markWritten(block)
                position = end
            }
        }
    }

    private func markWritten(_ block: Int) {
        let bit: UInt64 = 1 << UInt64(block % 64)
        if dirty[block / 64] & bit == 0 {
            dirty[block / 64] |= bit
            unrecordedSectors.insert(block / LazyVolumeHeader.blocksPerBitmapSector)
        }
        copied[block / 64] &= ~bit
    }

    /// Makes every completed write durable: the overlay's bytes, then the record of which blocks
    /// the overlay holds (or, once switched, the replica).
    public func synchronize() throws(StorageError) {
        try locked { () throws(StorageError) in
            if header.phase == .switched {
                try replica.synchronize()
                return
            }
            try overlay.synchronize()
            try recordDirtyBlocks()
        }
    }

    private func recordDirtyBlocks() throws(StorageError) {
        guard !unrecordedSectors.isEmpty else { return }
        for sector in unrecordedSectors.sorted() {
            let bytes = LazyVolumeHeader.encodeBitmapSector(index: sector, words: dirty)
            try stateUnit.write(
                bytes, at: LazyVolumeHeader.bitmapOffset + sector * LazyVolumeHeader.bitmapSectorSize)
        }
        try stateUnit.synchronize()
        unrecordedSectors.removeAll()
    }

    /// Writes zeros over `range`: reads return zeros after it, as the protocol asks.
    public func discard(_ range: Range<Int>) throws(StorageError) {
        try checkBounds(offset: range.lowerBound, count: range.count)
        let zeros = UnsafeMutableRawBufferPointer.allocate(byteCount: min(range.count, 1 << 20), alignment: 64)
        defer { zeros.deallocate() }
        zeros.initializeMemory(as: UInt8.self, repeating: 0)
        var position = range.lowerBound
        while position < range.upperBound {
            let count = min(zeros.count, range.upperBound - position)
            try write(UnsafeRawBufferPointer(rebasing: zeros[0..<count]), at: position)
            position += count
        }
    }

    // MARK: - Build, migration, switch

    /// Copies up to `maximumBlocks` more blocks from the source onto the replica, makes them
    /// durable and records them as built. Returns `true` once every block is built (the phase
    /// is then migrating). The source is read outside the volume's lock, so the workload's I/O
    /// goes on meanwhile.
    @discardableResult
    public func buildStep(maximumBlocks: Int) throws(RecoveryError) -> Bool {
        let (start, phase) = locked { (builtInMemory, header.phase) }
        guard phase == .building else { return true }
        let end = min(blockCount, start + max(1, maximumBlocks))
        if start < end {
            // A megabyte at a time through one buffer that stays in the CPU's cache (a buffer
            // the size of the step, 8 MiB by default, made the build half as fast as a copy),
            // and the replica made durable outside the lock: the workload's reads and writes
            // (to the overlay, while building) go on meanwhile.
            let range = start * blockSize..<min(capacity, end * blockSize)
            let bytes = UnsafeMutableRawBufferPointer.allocate(
                byteCount: min(range.count, Self.copyChunk), alignment: 4096)
            defer { bytes.deallocate() }
            var position = range.lowerBound
            while position < range.upperBound {
                let part = UnsafeMutableRawBufferPointer(
                    rebasing: bytes[0..<min(bytes.count, range.upperBound - position)])
                try source.read(into: part, at: position)
                try Self.storage(replica) { () throws(StorageError) in
                    try replica.write(UnsafeRawBufferPointer(part), at: position)
                }
                // The disk writes this megabyte while the next one is read: the step's
                // synchronize then waits for little more than the last one.
                replica.startWriteBack(position..<position + part.count)
                position += part.count
            }
            if bug != .recordBuildBeforeSync {
                try Self.storage(replica) { () throws(StorageError) in try replica.synchronize() }
            }
        }
        return try locked { () throws(RecoveryError) -> Bool in
            counters.sourceReads += end - start
            builtInMemory = end
            try Self.storage(stateUnit) { () throws(StorageError) in
                // One header record: the blocks built and, with the last, the phase.
                try recordHeader {
                    $0.built = end
                    if end == blockCount { $0.phase = .migrating }
                }
                if bug == .recordBuildBeforeSync { try replica.synchronize() }
            }
            return end == blockCount
        }
    }

    /// The build's copy unit: a buffer this size stays in the CPU's cache between the read and
    /// the write.
    private static let copyChunk = 1 << 20

    /// Copies up to `maximumBlocks` overlay blocks not yet copied in this migration onto the
    /// replica, one block at a time under the lock (a write to a block after its copy marks it
    /// to copy again). Returns how many remain to copy. Throws
    /// ``RecoveryError/Code/wrongPhase`` before the build has finished.
    @discardableResult
    public func copyRound(maximumBlocks: Int = .max) throws(RecoveryError) -> Int {
        var copiedNow = 0
        var block = 0
        while block < blockCount && copiedNow < maximumBlocks {
            let done = try locked { () throws(RecoveryError) -> Bool in
                guard header.phase == .migrating else {
                    if header.phase == .switched { return true }
                    throw RecoveryError(.wrongPhase, "a migration round while the replica is \(header.phase)")
                }
                if isDirty(block) && !isCopied(block) {
                    try copyOverlayBlock(block)
                    copiedNow += 1
                }
                return false
            }
            if done { return 0 }
            block += 1
        }
        return locked {
            counters.rounds += 1
            return header.phase == .migrating ? uncopiedCount() : 0
        }
    }

    private func copyOverlayBlock(_ block: Int) throws(RecoveryError) {
        let range = blockRange(block)
        try Self.storage(overlay) { () throws(StorageError) in
            let bytes = try overlay.read(at: range.lowerBound, count: range.count)
            try replica.write(bytes, at: range.lowerBound)
        }
        copied[block / 64] |= 1 << UInt64(block % 64)
        counters.overlayBlocksCopied += 1
    }

    /// Blocks still to copy before the switch.
    public var uncopiedBlocks: Int { locked { header.phase == .migrating ? uncopiedCount() : 0 } }

    /// The switch, under the lock, so no write lands meanwhile (the freeze): copies every overlay
    /// block not yet copied, makes the replica durable, records the phase switched. From then
    /// on the replica is the volume. Returns the blocks copied during the freeze.
    @discardableResult
    public func switchToReplica() throws(RecoveryError) -> Int {
        try locked { () throws(RecoveryError) -> Int in
            guard header.phase == .migrating else {
                if header.phase == .switched { return 0 }
                throw RecoveryError(.wrongPhase, "a switch while the replica is \(header.phase)")
            }
            var copiedNow = 0
            if bug != .switchBeforeOverlayCopied {
                for block in 0..<blockCount where isDirty(block) && !isCopied(block) {
                    try copyOverlayBlock(block)
                    copiedNow += 1
                }
            }
            try Self.storage(replica) { () throws(StorageError) in
                try overlay.synchronize()
                try recordDirtyBlocks()
                try replica.synchronize()
                try recordHeader { $0.phase = .switched }
            }
            counters.blocksCopiedInSwitch += copiedNow
            return copiedNow
        }
    }
}
