/// A fixed-capacity, randomly addressable byte store: a segment file, a disk region, a
/// buffer.
///
/// The durability contract is the one `fdatasync(2)` gives: a completed ``write(_:at:)`` is
/// visible to later reads at once but survives a crash only after ``synchronize()`` returns.
/// A failed ``synchronize()`` poisons the unit: it and every later call throw, because the
/// data written since the last successful barrier may already be gone.
///
/// Implementations must be safe to call from several threads; reads and writes to
/// overlapping ranges from different threads at once have no defined order.
public protocol StorageUnit: AnyObject, Sendable {
    /// The unit's identity within its pool.
    var id: UnitID { get }

    /// The unit's size in bytes; valid offsets are `0..<capacity`.
    var capacity: Int { get }

    /// Fills `buffer` with the bytes at `offset..<offset + buffer.count`. Never-written and
    /// discarded ranges read as zeros.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError)

    /// Writes `bytes` at `offset`. The write is complete (visible to reads) when this returns,
    /// durable only after the next ``synchronize()``.
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(StorageError)

    /// Makes every completed write durable. On failure the unit is poisoned.
    func synchronize() throws(StorageError)

    /// Releases the storage behind `range` (TRIM, hole punching); it reads as zeros after.
    func discard(_ range: Range<Int>) throws(StorageError)

    /// Where the unit lives, for people and tools (a file's path), or `nil` for storage with
    /// no place to point at (memory).
    var location: String? { get }

    /// Reads like ``read(into:at:)`` and returns the ``CRC32C`` of the bytes read, for callers
    /// that check what they read. The default reads, then checksums the buffer (while it is
    /// still in cache); a unit in memory copies and checksums in one pass.
    func readChecksummed(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) -> UInt32

    /// Starts writing `range`'s completed writes back to the medium without waiting for them,
    /// so that a later ``synchronize()`` has less left to wait for (a copy that syncs every few
    /// megabytes then overlaps its reads with the disk's writes). A hint: it makes nothing
    /// durable, reports nothing, and by default does nothing.
    func startWriteBack(_ range: Range<Int>)
}

extension StorageUnit {
    /// `nil`: a unit has a location only if it says so.
    public var location: String? { nil }

    /// Does nothing: a unit with no write-back of its own to start.
    public func startWriteBack(_ range: Range<Int>) {}

    /// Reads, then checksums what was read.
    public func readChecksummed(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError)
        -> UInt32
    {
        try read(into: buffer, at: offset)
        return CRC32C.checksum(UnsafeRawBufferPointer(buffer))
    }

    /// Reads `count` bytes at `offset` into a new array.
    public func read(at offset: Int, count: Int) throws(StorageError) -> [UInt8] {
        guard count >= 0 else {
            throw StorageError(.outOfBounds, unit: id, offset: offset, detail: "negative count \(count)")
        }
        var result = [UInt8](repeating: 0, count: count)
        try result.withUnsafeMutableBytes { buffer in
            Result { () throws(StorageError) in try read(into: buffer, at: offset) }
        }.get()
        return result
    }

    /// Writes the bytes of an array at `offset`.
    public func write(_ bytes: [UInt8], at offset: Int) throws(StorageError) {
        try bytes.withUnsafeBytes { buffer in
            Result { () throws(StorageError) in try write(buffer, at: offset) }
        }.get()
    }

    /// Throws ``StorageError/Code/outOfBounds`` unless `offset..<offset + count` lies inside
    /// the unit.
    public func checkBounds(offset: Int, count: Int) throws(StorageError) {
        guard offset >= 0, count >= 0, offset <= capacity, count <= capacity - offset else {
            throw StorageError(
                .outOfBounds, unit: id, offset: offset,
                detail: "range \(offset)..<\(offset &+ count) outside capacity \(capacity)")
        }
    }
}

/// Allocates and releases ``StorageUnit``s of one size under a capacity budget.
///
/// A persistent pool finds its units again after a restart (``units``), so a journal or a
/// checkpoint store can rebuild its state from them.
public protocol StoragePool: AnyObject, Sendable {
    /// The kind of unit this pool hands out.
    associatedtype Unit: StorageUnit

    /// The capacity of every unit, in bytes.
    var unitCapacity: Int { get }

    /// The most bytes the pool's units may occupy together.
    var budget: Int { get }

    /// Every unit currently allocated, in allocation order.
    var units: [Unit] { get }

    /// Allocates a new unit, zero-filled. Throws ``StorageError/Code/budgetExceeded`` when it
    /// would not fit the budget.
    func allocate() throws(StorageError) -> Unit

    /// Releases a unit: its storage is freed and its identity never reused.
    func release(_ unit: UnitID) throws(StorageError)

    /// Takes a unit out of the pool without destroying its bytes, so a person can examine
    /// what a salvage gave up: a file pool moves the file into a `quarantine` folder beside
    /// its units; in-memory pools keep the unit in a `quarantined` list. The identity is never
    /// reused.
    func quarantine(_ unit: UnitID) throws(StorageError)
}

extension StoragePool {
    /// How many more units the budget allows.
    public var availableUnits: Int {
        guard unitCapacity > 0 else { return 0 }
        return max(0, budget / unitCapacity - units.count)
    }

    /// The allocated unit with identity `id`, or `nil` (released, quarantined or never
    /// allocated).
    public func unit(_ id: UnitID) -> Unit? {
        units.first { $0.id == id }
    }
}
