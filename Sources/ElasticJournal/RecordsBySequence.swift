public import FaultToleranceCore

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
        var index = max(0, low - 1)
        var result: [JournalRecord] = []
        var bytes = 0
        var offset = Self.seekOffset(in: units[index], forSequence: first)
        while index < units.count {
            let unit = units[index]
            var finished = false
            let outcome = try RecordScanner.scan(
                unit.storage, salt: unit.header.salt, from: offset, to: snapshot.end(of: index),
                limit: unit.header.trailerOffset
            ) { (header, _, payload) throws(JournalError) -> Bool in
                if header.sequence > last || (bytes >= maximumBytes && !result.isEmpty) {
                    finished = true
                    return false
                }
                if header.sequence >= first {
                    result.append(
                        JournalRecord(
                            sequence: header.sequence, time: header.time, volume: header.volume,
                            offset: header.offset, bytes: Array(payload)))
                    bytes += payload.count
                }
                return true
            }
            if case .invalid(let at, let error) = outcome {
                throw JournalError(.damaged, journal: id, unit: unit.id, offset: at, detail: error.reason)
            }
            if finished { break }
            index += 1
            offset = JournalFormat.headerPageSize
        }
        return result
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
