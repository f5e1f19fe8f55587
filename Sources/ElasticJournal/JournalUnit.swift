import FaultToleranceCore

/// What a journal knows about one of its units.
struct JournalUnit: Sendable {
    let storage: any StorageUnit
    let header: UnitHeader
    /// The offset just past the last staged record.
    var recordsEnd: Int
    var count: UInt64 = 0
    var lastSequence: UInt64
    var firstRecordTime: Instant?
    var lastTime: Instant
    var index: [TimeIndexEntry] = []
    var nextIndexBoundary: Int
    /// Set once the unit is sealed.
    var sealChecksum: UInt32?

    init(storage: any StorageUnit, header: UnitHeader) {
        self.storage = storage
        self.header = header
        self.recordsEnd = JournalFormat.headerPageSize
        self.lastSequence = header.firstSequence &- 1
        self.lastTime = header.firstTime
        self.nextIndexBoundary = JournalFormat.headerPageSize
    }

    var id: UnitID { storage.id }
    var isSealed: Bool { sealChecksum != nil }

    /// Accounts for a record placed at `offset`.
    mutating func noteRecord(sequence: UInt64, time: Instant, offset: Int, footprint: Int) {
        if offset >= nextIndexBoundary {
            index.append(TimeIndexEntry(time: time, sequence: sequence, offset: offset))
            let interval = header.indexInterval
            let relative = offset - JournalFormat.headerPageSize
            nextIndexBoundary = JournalFormat.headerPageSize + (relative / interval + 1) * interval
        }
        count += 1
        lastSequence = sequence
        if firstRecordTime == nil { firstRecordTime = time }
        lastTime = max(lastTime, time)
        recordsEnd = offset + footprint
    }

    var seal: UnitSeal {
        UnitSeal(
            count: count, firstSequence: header.firstSequence, lastSequence: lastSequence,
            minimumTime: firstRecordTime ?? header.firstTime, maximumTime: lastTime, recordsEnd: recordsEnd,
            index: index)
    }

    var span: JournalManager.UnitSpan {
        JournalManager.UnitSpan(
            unit: id, firstSequence: header.firstSequence, lastSequence: lastSequence,
            firstTime: firstRecordTime ?? header.firstTime, lastTime: lastTime)
    }

    /// Where to start scanning for the first record at or after `instant`.
    func seekOffset(for instant: Instant) -> Int {
        var low = 0
        var high = index.count
        while low < high {
            let middle = (low + high) / 2
            if index[middle].time < instant { low = middle + 1 } else { high = middle }
        }
        return low > 0 ? index[low - 1].offset : JournalFormat.headerPageSize
    }
}

/// A volume's base image: its manifest and the unit holding it.
struct BaseVolume: Sendable {
    let storage: any StorageUnit
    var manifest: BaseManifest
    /// The table's checksum before ``markChecksumsStale(_:)``, while an age-out changes the
    /// image (so the refresh recomputes only the chunks it touched).
    var tableBeforeChange: UInt32?

    init(storage: any StorageUnit, manifest: BaseManifest) {
        self.storage = storage
        self.manifest = manifest
    }

    var size: Int { storage.capacity - JournalFormat.baseHeaderSize }

    /// Writes the next manifest into the older slot and makes it durable.
    mutating func update(_ body: (inout BaseManifest) -> Void) throws(StorageError) {
        var next = manifest
        body(&next)
        next.generation = manifest.generation + 1
        let slot = Int(next.generation % 2) * BaseManifest.slotSize
        try storage.write(next.encoded(), at: slot)
        try storage.synchronize()
        manifest = next
    }
}
