import FaultToleranceCore

/// A growable byte buffer that records are encoded into before one write carries a whole
/// batch to its unit. Owned by one journal; handed between the staging side and the
/// flushing side under the journal's locks, never used by two threads at once.
///
/// A buffered journal writes its batches in pieces that start and end on boundaries of
/// ``ElasticJournal``'s write alignment (64 KiB by default), carrying the rest, at most
/// one alignment's worth, into the next batch unwritten: the page cache backs aligned writes
/// with large folios and takes about 0.65x the time of the same writes off the boundaries
/// (Linux 6.18, ext4, 64 MiB in 64 KiB writes). A carried batch may begin in the middle of a
/// record whose head is already written; ``firstRecord`` is where its first whole record
/// starts.
final class BatchBuffer: @unchecked Sendable {
    // The fields are touched on every record staged, always under the journal's locks: no
    // dynamic exclusivity checks (they were 5 % of a 256-byte buffered append).
    @exclusivity(unchecked) private(set) var base: UnsafeMutableRawPointer
    @exclusivity(unchecked) private(set) var capacity: Int
    /// Bytes in the buffer, all unwritten; they always end at the end of a record.
    @exclusivity(unchecked) var count = 0
    /// Where the first record that starts in this buffer begins: 0, or just past the tail of a
    /// record carried over from the previous batch.
    private(set) var firstRecord = 0

    init(capacity: Int) {
        self.capacity = max(4096, capacity)
        self.base = UnsafeMutableRawPointer.allocate(byteCount: self.capacity, alignment: 64)
    }

    deinit { base.deallocate() }

    /// Makes room for `extra` more bytes, doubling as needed.
    func reserve(_ extra: Int) {
        guard count + extra > capacity else { return }
        var newCapacity = capacity * 2
        while newCapacity < count + extra { newCapacity *= 2 }
        let newBase = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 64)
        newBase.copyMemory(from: base, byteCount: count)
        base.deallocate()
        base = newBase
        capacity = newCapacity
    }

    /// Empties the buffer.
    func reset() {
        count = 0
        firstRecord = 0
    }

    /// The bytes written so far.
    var bytes: UnsafeRawBufferPointer { UnsafeRawBufferPointer(start: base, count: count) }

    /// What a write of the first `cut` bytes carries to storage whole.
    struct Split {
        /// Records that end at or before the cut.
        var records = 0
        /// The last of them, if any.
        var lastSequence: UInt64?
        /// Where the last of them ends (`firstRecord` when there is none).
        var recordsEnd: Int
        /// Where the first record after the cut starts: the end of the record the cut falls
        /// in, or the cut itself.
        var nextRecord: Int
    }

    /// Walks the records (the buffer's own, well-formed) up to byte `cut`.
    func split(at cut: Int) -> Split {
        var split = Split(recordsEnd: firstRecord, nextRecord: firstRecord)
        var position = firstRecord
        let raw = UnsafeRawPointer(base)
        while position < cut, position + JournalFormat.recordHeaderSize <= count {
            let end = position + JournalFormat.aligned8(Int(raw.loadLE(UInt32.self, at: position)))
            split.nextRecord = end
            guard end <= cut else { break }
            split.records += 1
            split.lastSequence = raw.loadLE(UInt64.self, at: position + 8)
            split.recordsEnd = end
            position = end
        }
        if position >= cut { split.nextRecord = position }
        return split
    }

    /// Empties the buffer and fills it with `previous`'s bytes from `offset` on, unwritten,
    /// the first whole record among them at `nextRecord` in `previous`.
    func reset(carrying previous: BatchBuffer, from offset: Int, nextRecord: Int) {
        reset()
        let length = previous.count - offset
        reserve(length)
        base.copyMemory(from: previous.base + offset, byteCount: length)
        count = length
        firstRecord = nextRecord - offset
    }
}
