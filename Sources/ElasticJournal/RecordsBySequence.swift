public import FaultToleranceCore
import NIOConcurrencyHelpers

extension ElasticJournal {
    /// Records `first...last` in sequence order, stopping once their payloads reach
    /// `maximumBytes` (at least one record is returned when `first <= last`). For shipping the
    /// journal elsewhere: pass `last` no higher than ``durableSequence`` so that only
    /// acknowledged records leave (a record not yet durable may be lost in a crash, and its
    /// sequence number then reused).
    ///
    /// Seeks with the units' indexes (each entry names a sequence number), so the cost grows
    /// with the records returned, not with the journal's length. Throws
    /// ``JournalError/Code/outsideWindow`` when `first` has aged out (``oldestSequence`` is
    /// later) and ``JournalError/Code/damaged`` with the unit and offset of a damaged record.
    public func records(
        fromSequence first: UInt64, through last: UInt64, maximumBytes: Int
    ) throws(JournalError) -> [JournalRecord] {
        guard first <= last else { return [] }
        let snapshot = try snapshot()
        defer { endRead() }
        let units = snapshot.units
        guard let oldest = units.first?.header.firstSequence, first >= oldest else {
            throw JournalError(
                .outsideWindow, journal: id,
                detail: "record \(first) has aged out; the oldest held is \(units.first?.header.firstSequence ?? 0)")
        }
        // The last unit whose first sequence is at most `first`.
        var low = 0
        var high = units.count
        while low < high {
            let middle = (low + high) / 2
            if units[middle].header.firstSequence <= first { low = middle + 1 } else { high = middle }
        }
        let index = max(0, low - 1)
        var result: [JournalRecord] = []
        var bytes = 0
        try scanRecords(
            of: snapshot, fromUnit: index, offset: Self.seekOffset(in: units[index], forSequence: first)
        ) { (header, payload) throws(JournalError) -> Bool in
            if header.sequence > last || (bytes >= maximumBytes && !result.isEmpty) { return false }
            if header.sequence >= first {
                result.append(
                    JournalRecord(
                        sequence: header.sequence, time: header.time, volume: header.volume, offset: header.offset,
                        bytes: Array(payload)))
                bytes += payload.count
            }
            return true
        }
        return result
    }

    /// Scans `snapshot`'s records in order from unit `first` at `offset` to the end of the last
    /// unit, until `visit` returns `false`; a damaged record throws ``JournalError/Code/damaged``
    /// naming its unit and offset.
    func scanRecords(
        of snapshot: Snapshot, fromUnit first: Int, offset: Int,
        _ visit: (RecordHeader, UnsafeRawBufferPointer) throws(JournalError) -> Bool
    ) throws(JournalError) {
        var index = first
        var offset = offset
        while index < snapshot.units.count {
            let unit = snapshot.units[index]
            var finished = false
            let outcome = try RecordScanner.scan(
                unit.storage, salt: unit.header.salt, from: offset, to: snapshot.end(of: index),
                limit: unit.header.trailerOffset
            ) { (header, _, payload) throws(JournalError) -> Bool in
                let more = try visit(header, payload)
                if !more { finished = true }
                return more
            }
            if case .invalid(let at, let error) = outcome {
                throw JournalError(.damaged, journal: id, unit: unit.id, offset: at, detail: error.reason)
            }
            if finished { return }
            index += 1
            offset = JournalFormat.headerPageSize
        }
    }

    /// Where to start scanning `unit` for record `sequence`: its last index entry before it.
    static func seekOffset(in unit: JournalUnit, forSequence sequence: UInt64) -> Int {
        var low = 0
        var high = unit.index.count
        while low < high {
            let middle = (low + high) / 2
            if unit.index[middle].sequence <= sequence { low = middle + 1 } else { high = middle }
        }
        return low > 0 ? unit.index[low - 1].offset : JournalFormat.headerPageSize
    }
}

extension ElasticJournal {
    /// A range of a volume's base image, checked against its chunk checksums.
    public struct BaseRead: Sendable, Hashable {
        /// The bytes asked for.
        public var bytes: [UInt8]
        /// The base holds every record through this sequence number.
        public var appliedThrough: UInt64
        /// The time of that record: the start of the journal's window.
        public var appliedTime: Instant
    }

    /// The size in bytes of `volume`'s image, or `nil` when the journal does not protect it.
    public func size(of volume: VolumeID) -> Int? { baseVolume(volume)?.size }

    /// Reads `count` bytes at `offset` of `volume`'s base image (the volume at the window's
    /// start), for a reader that needs part of a volume rather than all of it (a lazily served
    /// recovery). Reads the whole checksum chunks the range falls in and checks them while the
    /// table is current; a mismatch throws ``JournalError/Code/damaged`` naming the base unit
    /// and offset. Holds the lock age-outs hold while they change a base, so the bytes and the
    /// `appliedThrough` returned belong together.
    public func readBase(of volume: VolumeID, at offset: Int, count: Int) throws(JournalError) -> BaseRead {
        applier.lock()
        defer { applier.unlock() }
        do {
            guard let base = baseVolume(volume) else {
                throw JournalError(.unknownVolume, journal: id, detail: "\(volume) is not protected")
            }
            guard offset >= 0, count >= 0, offset <= base.size, count <= base.size - offset else {
                throw JournalError(
                    .outOfBounds, journal: id, detail: "\(count) bytes at \(offset) of \(volume)'s \(base.size)")
            }
            guard let chunks = base.chunks(offset: offset, count: count) else {
                return BaseRead(
                    bytes: [], appliedThrough: base.manifest.appliedThrough, appliedTime: base.manifest.appliedTime)
            }
            let start = base.range(of: chunks.lowerBound).lowerBound
            let end = base.range(of: chunks.upperBound).upperBound
            let bytes: [UInt8]
            do throws(StorageError) {
                bytes = try base.storage.read(at: JournalFormat.baseHeaderSize + start, count: end - start)
            } catch {
                throw JournalError(error, journal: id)
            }
            if let table = try base.checkedTable(journal: id) {
                for chunk in chunks where chunk < table.count {
                    let range = base.range(of: chunk)
                    let computed = CRC32C.checksum(bytes[(range.lowerBound - start)..<(range.upperBound - start)])
                    if computed != table[chunk] {
                        throw base.damage(chunk: chunk, stored: table[chunk], computed: computed, journal: id)
                    }
                }
            }
            return BaseRead(
                bytes: Array(bytes[(offset - start)..<(offset - start + count)]),
                appliedThrough: base.manifest.appliedThrough, appliedTime: base.manifest.appliedTime)
        }
    }
}
