import FaultToleranceCore
import Logging
import NIOConcurrencyHelpers

/// Rebuilds every journal of a store from its units (see ``JournalStore``).
struct Recovery {
    let context: JournalStore.Context
    let options: JournalStore.Options
    let configurations: [JournalID: JournalConfiguration]

    private var readOnly: Bool { options.readOnly }

    /// A unit whose header could not be read: a crash between allocation and the header's
    /// fsync, or damage.
    private struct Unrecognised {
        var storage: any StorageUnit
        var reason: String
    }

    func run() throws(JournalError) -> [JournalID: ElasticJournal] {
        let bases = try recoverBases()
        var found: [JournalID: [(any StorageUnit, UnitHeader)]] = [:]
        var unrecognised: [Unrecognised] = []
        for storage in context.journalPool.units {
            let bytes = try read(storage, at: 0, count: JournalFormat.headerSize)
            do throws(JournalFormatError) {
                guard let header = try UnitHeader.decode(bytes) else {
                    unrecognised.append(Unrecognised(storage: storage, reason: "blank header"))
                    continue
                }
                guard header.unit == storage.id, header.capacity == storage.capacity else {
                    unrecognised.append(
                        Unrecognised(
                            storage: storage, reason: "header belongs to \(header.unit) of \(header.capacity) bytes"))
                    continue
                }
                found[header.journal, default: []].append((storage, header))
            } catch {
                unrecognised.append(Unrecognised(storage: storage, reason: error.reason))
            }
        }
        var journals: [JournalID: ElasticJournal] = [:]
        for id in Set(bases.keys).union(found.keys).sorted() {
            do throws(JournalError) {
                journals[id] = try recoverJournal(id, units: found[id] ?? [], volumes: bases[id] ?? [:])
            } catch {
                // A chain broken where an unrecognised unit could have been is that unit's damage.
                if error.code == .damaged, let suspect = unrecognised.first {
                    throw JournalError(
                        .damaged, journal: id, unit: suspect.storage.id, offset: 0,
                        detail: "unreadable unit header (\(suspect.reason)) where \(error) expected a unit")
                }
                throw error
            }
        }
        for orphan in unrecognised {
            // A unit's header is durable before any record is written to it, so a unit whose
            // header is unreadable is either blank (allocated, never used: safe to release)
            // or damaged (never destroyed: reported, or quarantined by a salvage).
            if try isBlank(orphan.storage, from: 0) {
                context.logger.warning(
                    "journal unit without a valid header (allocated, never used): releasing",
                    metadata: ["unit": "\(orphan.storage.id)", "reason": "\(orphan.reason)"])
                if !readOnly { try release(orphan.storage.id, in: context.journalPool) }
                continue
            }
            let detail = "unreadable unit header (\(orphan.reason)), but the unit holds data"
            guard options.salvage && !readOnly else {
                throw JournalError(.damaged, unit: orphan.storage.id, offset: 0, detail: detail)
            }
            try quarantine(orphan.storage.id, in: context.journalPool, detail: detail)
        }
        return journals
    }

    // MARK: - Base images

    private func recoverBases() throws(JournalError) -> [JournalID: [VolumeID: BaseVolume]] {
        var result: [JournalID: [VolumeID: BaseVolume]] = [:]
        for storage in context.basePool.units {
            guard storage.capacity > JournalFormat.baseHeaderSize else {
                throw JournalError(.damaged, unit: storage.id, offset: 0, detail: "base unit too small")
            }
            let bytes = try read(storage, at: 0, count: 2 * BaseManifest.slotSize)
            let slots = [BaseManifest.decode(bytes[0..<512]), BaseManifest.decode(bytes[512..<1024])]
            guard let manifest = slots.compactMap({ $0 }).max(by: { $0.generation < $1.generation }) else {
                // Blank: a crash between allocation and the first manifest. Anything else is a
                // base image whose manifest was damaged: never deleted.
                if try isBlank(storage, from: 0) {
                    context.logger.warning(
                        "base unit without a manifest (allocated, never used): releasing",
                        metadata: ["unit": "\(storage.id)"])
                    if !readOnly { try release(storage.id, in: context.basePool) }
                    continue
                }
                let detail = "base image without a readable manifest, but the unit holds data"
                guard options.salvage && !readOnly else {
                    throw JournalError(.damaged, unit: storage.id, offset: 0, detail: detail)
                }
                try quarantine(storage.id, in: context.basePool, detail: detail)
                continue
            }
            guard result[manifest.journal]?[manifest.volume] == nil else {
                throw JournalError(
                    .damaged, journal: manifest.journal, unit: storage.id, offset: 0,
                    detail: "a second base image for \(manifest.volume)")
            }
            result[manifest.journal, default: [:]][manifest.volume] = BaseVolume(storage: storage, manifest: manifest)
        }
        return result
    }

    // MARK: - One journal

    private func recoverJournal(
        _ id: JournalID, units found: [(any StorageUnit, UnitHeader)], volumes: [VolumeID: BaseVolume]
    ) throws(JournalError) -> ElasticJournal {
        guard let anyVolume = volumes.values.first else {
            throw JournalError(
                .damaged, journal: id, unit: found.first?.0.id, offset: 0, detail: "journal units without base images")
        }
        let stored = anyVolume.manifest
        let configuration =
            configurations[id] ?? JournalConfiguration(window: stored.window, quota: max(2, stored.quota))
        let applied = volumes.values.map(\.manifest.appliedThrough).max() ?? 0
        let appliedTime = volumes.values.map(\.manifest.appliedTime).max() ?? .zero
        var volumes = volumes

        var units: [JournalUnit] = []
        var sealErrors: [UnitID: (Int, JournalFormatError)] = [:]
        for (storage, header) in found.sorted(by: { $0.1.firstSequence < $1.1.firstSequence }) {
            var unit = JournalUnit(storage: storage, header: header)
            let capacity = JournalFormat.indexCapacity(capacity: header.capacity, indexInterval: header.indexInterval)
            let trailer = try read(
                storage, at: header.trailerOffset,
                count: JournalFormat.sealFixedSize + capacity * JournalFormat.indexEntrySize)
            do throws(JournalFormatError) {
                if let (seal, checksum) = try UnitSeal.decode(trailer, salt: header.salt, maximumEntries: capacity) {
                    guard seal.firstSequence == header.firstSequence,
                        seal.recordsEnd >= JournalFormat.headerPageSize, seal.recordsEnd <= header.trailerOffset,
                        seal.lastSequence &+ 1 &- seal.firstSequence == seal.count
                    else { throw JournalFormatError("seal disagrees with the unit header") }
                    unit.recordsEnd = seal.recordsEnd
                    unit.count = seal.count
                    unit.lastSequence = seal.lastSequence
                    unit.firstRecordTime = seal.count > 0 ? seal.minimumTime : nil
                    unit.lastTime = seal.maximumTime
                    unit.index = seal.index
                    unit.sealChecksum = checksum
                }
            } catch {
                sealErrors[storage.id] = (header.trailerOffset, error)
            }
            units.append(unit)
        }

        // A rollover that stopped before its seal (the last unit follows an unsealed one, or
        // one whose seal write was torn) first: its unsealed unit is not damage, even to a
        // salvage (see finishRollover).
        var scanned: UnitID?
        if units.count >= 2, !units[units.count - 1].isSealed, !units[units.count - 2].isSealed {
            units[units.count - 1] = try scanActive(units[units.count - 1], journal: id)
            let unsealed = units[units.count - 2].id
            units = try finishRollover(units, journal: id)
            sealErrors[unsealed] = nil
            scanned = units.last?.id  // the unit left active was scanned there
        }
        if options.salvage && !readOnly { units = try salvage(units, journal: id, sealErrors: sealErrors) }
        // The active unit: scan it (once: a salvage may have cut it since).
        if let last = units.last, !last.isSealed {
            if last.id != scanned || options.salvage { units[units.count - 1] = try scanActive(last, journal: id) }
            sealErrors[last.id] = nil
        }
        for (index, unit) in units.enumerated() where index < units.count - 1 && !unit.isSealed {
            let (offset, error) =
                sealErrors[unit.id] ?? (unit.header.trailerOffset, JournalFormatError("unit is not sealed"))
            throw JournalError(.damaged, journal: id, unit: unit.id, offset: offset, detail: error.reason)
        }
        // The chain: each unit continues exactly where the one before ended.
        for index in units.indices.dropFirst() {
            let previous = units[index - 1]
            let header = units[index].header
            guard header.previousLastSequence == previous.lastSequence,
                header.firstSequence == previous.lastSequence + 1,
                header.previousSealChecksum == previous.sealChecksum
            else {
                throw JournalError(
                    .damaged, journal: id, unit: units[index].id, offset: 0,
                    detail: "unit does not continue \(previous.id) (sequence \(previous.lastSequence))")
            }
        }
        if let first = units.first, first.header.previousLastSequence > applied {
            throw JournalError(
                .damaged, journal: id, unit: first.id, offset: 0,
                detail: "records \(applied + 1)...\(first.header.previousLastSequence) are missing")
        }
        // Finish age-outs a crash interrupted: apply again (idempotent), then release.
        if !readOnly {
            while units.count > 1, units[0].isSealed, units[0].lastSequence <= applied {
                do throws(StorageError) {
                    for volume in volumes.keys {
                        try volumes[volume]?.markChecksumsStale { manifest in
                            manifest.appliedThrough = applied
                            manifest.appliedTime = appliedTime
                        }
                    }
                } catch {
                    throw JournalError(error, journal: id)
                }
                try ElasticJournal.apply(unit: units[0], through: applied, to: volumes, journal: id)
                let done = units.removeFirst()
                try release(done.id, in: context.journalPool)
                context.emit(.unitReleased(id, done.id, reason: .aged, windowStart: appliedTime))
            }
        }
        // Base images whose checksum table is stale (an age-out was interrupted, or a
        // version-1 manifest without a table) get it recomputed from the image.
        if !readOnly {
            do throws(StorageError) {
                for volume in volumes.keys.sorted() where volumes[volume]?.manifest.checksums == nil {
                    try volumes[volume]?.refreshChecksums(touched: [], full: true)
                }
            } catch {
                throw JournalError(error, journal: id)
            }
        }
        // A unit is sealed only once its successor's header is durable, so a sealed last
        // unit means the successor is gone: deleted, or its header unreadable. Its records
        // are lost; say so instead of starting over from the seal.
        if let last = units.last, last.isSealed {
            let detail =
                "\(last.id) is sealed, so a unit with records from \(last.lastSequence + 1) followed it, "
                + "but that unit is missing (deleted, or its header is unreadable)"
            guard options.salvage && !readOnly else {
                throw JournalError(
                    .damaged, journal: id, unit: last.id, offset: last.header.trailerOffset, detail: detail)
            }
            context.logger.warning(
                "journal salvaged: continuing after a missing unit",
                metadata: ["journal": "\(id)", "detail": "\(detail)", "last": "\(last.lastSequence)"])
            context.emit(
                .salvaged(id, last.id, offset: last.header.trailerOffset, lastSequence: last.lastSequence))
        }
        // A journal whose last unit is sealed (after salvage) or that has none yet gets a
        // fresh active unit.
        if units.last?.isSealed ?? true {
            guard !readOnly else {
                throw JournalError(
                    .invalidConfiguration, journal: id,
                    detail: "the journal has no active unit; open read-write once to finish its rollover")
            }
            let previous = units.last
            let next = (previous?.lastSequence ?? applied) + 1
            let time = max(previous?.lastTime ?? appliedTime, appliedTime)
            let fresh = try JournalStore.startUnit(
                context: context, journal: id, configuration: configuration, firstSequence: next, time: time,
                previous: previous)
            units.append(fresh)
            context.emit(.unitAllocated(id, fresh.id))
        }
        context.manager.withLockedValue { manager in
            manager.addJournal(
                id, policy: JournalManager.Policy(window: configuration.window, quota: configuration.quota),
                units: units.map(\.span), windowStart: appliedTime)
        }
        return ElasticJournal(id: id, configuration: configuration, context: context, units: units, volumes: volumes)
    }

    /// Reads every record of every unit and cuts the journal before the first damage: the
    /// damaged unit keeps its valid prefix and becomes the active unit (its tail and seal are
    /// zeroed by ``scanActive(_:journal:)``), later units are released.
    private func salvage(
        _ units: [JournalUnit], journal: JournalID, sealErrors: [UnitID: (Int, JournalFormatError)]
    ) throws(JournalError) -> [JournalUnit] {
        for index in units.indices {
            let unit = units[index]
            var cut: Int?
            if index > 0 {
                let previous = units[index - 1]
                if unit.header.previousLastSequence != previous.lastSequence
                    || unit.header.firstSequence != previous.lastSequence + 1
                    || unit.header.previousSealChecksum != previous.sealChecksum
                {
                    // This unit does not continue the previous one: cut at the previous one's end.
                    return try cutAt(units, index: index - 1, offset: previous.recordsEnd, journal: journal)
                }
            }
            var expected = unit.header.firstSequence
            var valid = 0
            let end = try RecordScanner.scan(
                unit.storage, salt: unit.header.salt, from: JournalFormat.headerPageSize,
                to: unit.isSealed ? unit.recordsEnd : unit.header.trailerOffset, limit: unit.header.trailerOffset
            ) { (header, offset, _) throws(JournalError) -> Bool in
                guard header.sequence == expected else { return false }
                expected += 1
                valid = offset + header.footprint
                return true
            }
            let isLast = index == units.count - 1
            if unit.isSealed {
                if case .reachedEnd = end, expected - 1 == unit.lastSequence {
                } else {
                    cut = max(JournalFormat.headerPageSize, valid)
                }
            } else if !isLast || sealErrors[unit.id] != nil {
                cut = end.offset
            }
            if let cut { return try cutAt(units, index: index, offset: cut, journal: journal) }
        }
        return units
    }

    private func cutAt(_ units: [JournalUnit], index: Int, offset: Int, journal: JournalID) throws(JournalError)
        -> [JournalUnit]
    {
        for later in units[(index + 1)...] {
            try quarantine(
                later.id, in: context.journalPool,
                detail:
                    "follows the cut in \(units[index].id) at offset \(offset) (records from \(later.header.firstSequence))"
            )
        }
        var kept = Array(units[...index])
        var unit = kept[index]
        unit.sealChecksum = nil
        try preserveCopy(of: unit, journal: journal, detail: "before zeroing from offset \(offset)")
        // Zero the damaged rest now, so the rescan cannot run past the cut.
        if offset < unit.storage.capacity {
            do throws(StorageError) {
                try unit.storage.write([UInt8](repeating: 0, count: unit.storage.capacity - offset), at: offset)
                try unit.storage.synchronize()
            } catch {
                throw JournalError(error, journal: journal)
            }
        }
        unit = try scanActive(unit, journal: journal)
        kept[index] = unit
        context.logger.warning(
            "journal salvaged: cut at the first damage",
            metadata: [
                "journal": "\(journal)", "unit": "\(unit.id)", "offset": "\(offset)", "last": "\(unit.lastSequence)",
            ])
        context.emit(.salvaged(journal, unit.id, offset: offset, lastSequence: unit.lastSequence))
        return kept
    }

    /// A crash during a rollover left the last unit's predecessor unsealed. A rollover makes
    /// the old unit's records and the successor's header durable together, then writes
    /// records to the successor, and seals the old unit after, so:
    /// - the predecessor holds exactly the records its successor's header names (the header
    ///   carries the seal's checksum): the rollover reached storage; the predecessor is
    ///   sealed now and the successor kept;
    /// - otherwise, with an empty successor, the rollover did not: the successor is dropped
    ///   and the predecessor is active again;
    /// - otherwise records are missing from the predecessor that were durable before the
    ///   successor's first record was written: damage, never a silent cut (a salvage cuts
    ///   the journal there and quarantines the successor).
    private func finishRollover(_ units: [JournalUnit], journal: JournalID) throws(JournalError) -> [JournalUnit] {
        var units = units
        let successor = units[units.count - 1]
        var predecessor = try scanActive(units[units.count - 2], journal: journal)
        let seal = predecessor.seal.encoded(salt: predecessor.header.salt)
        let checksum = seal.withUnsafeBytes { $0.loadLE(UInt32.self, at: 60) ?? 0 }
        if predecessor.lastSequence == successor.header.previousLastSequence
            && checksum == successor.header.previousSealChecksum
        {
            if !readOnly {
                do throws(StorageError) {
                    try predecessor.storage.write(seal, at: predecessor.header.trailerOffset)
                    try predecessor.storage.synchronize()
                } catch {
                    throw JournalError(error, journal: journal)
                }
            }
            predecessor.sealChecksum = checksum
            units[units.count - 2] = predecessor
            return units
        }
        if successor.count > 0 {
            let detail =
                "records \(predecessor.lastSequence + 1)...\(successor.header.previousLastSequence) were durable "
                + "(\(successor.id) holds records written after them) but are unreadable from here"
            guard options.salvage && !readOnly else {
                throw JournalError(
                    .damaged, journal: journal, unit: predecessor.id, offset: predecessor.recordsEnd, detail: detail)
            }
            // Salvage: the journal ends where the predecessor's readable records end; the
            // successor is kept in quarantine, not deleted.
            context.logger.warning(
                "journal salvaged: cut before a unit that follows missing records",
                metadata: ["journal": "\(journal)", "unit": "\(successor.id)", "detail": "\(detail)"])
            context.emit(
                .salvaged(
                    journal, predecessor.id, offset: predecessor.recordsEnd, lastSequence: predecessor.lastSequence))
            try quarantine(successor.id, in: context.journalPool, detail: detail)
            units.removeLast()
            units[units.count - 1] = predecessor
            return units
        }
        units.removeLast()
        units[units.count - 1] = predecessor
        if !readOnly { try release(successor.id, in: context.journalPool) }
        return units
    }

    /// Finds the valid records of an unsealed unit; zeroes whatever follows them (a torn
    /// tail, or writes that landed out of order) so it can never be mistaken for records.
    private func scanActive(_ unit: JournalUnit, journal: JournalID) throws(JournalError) -> JournalUnit {
        var unit = unit
        unit.recordsEnd = JournalFormat.headerPageSize
        unit.count = 0
        unit.lastSequence = unit.header.firstSequence &- 1
        unit.firstRecordTime = nil
        unit.lastTime = unit.header.firstTime
        unit.index = []
        unit.nextIndexBoundary = JournalFormat.headerPageSize
        unit.sealChecksum = nil
        let end = try RecordScanner.scan(
            unit.storage, salt: unit.header.salt, from: JournalFormat.headerPageSize, to: unit.header.trailerOffset,
            limit: unit.header.trailerOffset
        ) { (header, offset, _) throws(JournalError) -> Bool in
            guard header.sequence == unit.lastSequence &+ 1, header.time >= unit.lastTime else { return false }
            unit.noteRecord(sequence: header.sequence, time: header.time, offset: offset, footprint: header.footprint)
            return true
        }
        let tailStart = end.offset
        if case .reachedEnd = end {
        } else if let proof = try durableRecordPast(tailStart, in: unit, lastSequence: unit.lastSequence) {
            // Not a torn tail: a record written after a sync that covered the gap survived
            // it, so what is missing here was durable. Damage, never cut silently.
            let missing = "records \(unit.lastSequence + 1)...\(proof.durableThrough)"
            let detail =
                "\(missing) were durable (record \(proof.sequence) at offset \(proof.offset) says so) "
                + "but are unreadable from here"
            guard options.salvage && !readOnly else {
                throw JournalError(.damaged, journal: journal, unit: unit.id, offset: tailStart, detail: detail)
            }
            context.logger.warning(
                "journal salvaged: cut at damage in the active unit",
                metadata: [
                    "journal": "\(journal)", "unit": "\(unit.id)", "offset": "\(tailStart)",
                    "last": "\(unit.lastSequence)", "lost": "\(missing) and every later record",
                ])
            context.emit(.salvaged(journal, unit.id, offset: tailStart, lastSequence: unit.lastSequence))
            try preserveCopy(of: unit, journal: journal, detail: "before zeroing from offset \(tailStart)")
        } else if case .empty = end {
        } else {
            context.logger.notice(
                "journal torn tail",
                metadata: ["journal": "\(journal)", "unit": "\(unit.id)", "offset": "\(tailStart)"])
        }
        if try zeroTail(of: unit.storage, from: tailStart) {
            context.emit(.tornTailTruncated(journal, unit.id, offset: tailStart))
        } else if !readOnly {
            // The records found may sit in the page cache only (the writer was killed before
            // its fsync); new records will say they are durable, so make that true.
            do { try unit.storage.synchronize() } catch { throw JournalError(error, journal: journal) }
        }
        return unit
    }

    /// A valid record of this unit's life at or after `start` (8-byte aligned positions)
    /// whose `durable` field says records after `lastSequence` were durable when it was
    /// written; `nil` when there is none (the end of the records is a torn tail).
    ///
    /// Cheap on garbage and zeros: a position is checksummed only when its header claims a
    /// later sequence of this unit and durability past `lastSequence`.
    private func durableRecordPast(_ start: Int, in unit: JournalUnit, lastSequence: UInt64) throws(JournalError)
        -> (offset: Int, sequence: UInt64, durableThrough: UInt64)?
    {
        let end = unit.header.trailerOffset
        let chunk = 1 << 20
        var chunkStart = start
        while chunkStart < end {
            let count = min(chunk, end - chunkStart)
            let bytes = try read(unit.storage, at: chunkStart, count: count)
            var position = 0
            while position + JournalFormat.recordHeaderSize <= count {
                defer { position += 8 }
                let claim = bytes.withUnsafeBytes { raw -> (length: Int, sequence: UInt64, distance: UInt64)? in
                    guard raw.loadLE(UInt16.self, at: position + 4) == JournalFormat.writeRecordType,
                        let length = raw.loadLE(UInt32.self, at: position).map(Int.init),
                        let distance = raw.loadLE(UInt16.self, at: position + 6).map(UInt64.init), distance > 0,
                        let sequence = raw.loadLE(UInt64.self, at: position + 8)
                    else { return nil }
                    return (length, sequence, distance)
                }
                guard let claim, claim.sequence > lastSequence, claim.distance <= claim.sequence,
                    claim.sequence - claim.distance > lastSequence,
                    claim.length >= JournalFormat.recordHeaderSize,
                    chunkStart + position + JournalFormat.aligned8(claim.length) <= end
                else { continue }
                let record =
                    position + claim.length <= count
                    ? Array(bytes[position..<(position + claim.length)])
                    : try read(unit.storage, at: chunkStart + position, count: claim.length)
                if case .record(let header) = record.withUnsafeBytes({
                    RecordCodec.probe($0, salt: unit.header.salt, limit: claim.length + 8)
                }), let durableThrough = header.durableThrough {
                    return (chunkStart + position, header.sequence, durableThrough)
                }
            }
            // Overlap by a header so a record starting near the chunk's end is not skipped.
            chunkStart += max(8, position)
        }
        return nil
    }

    /// Zeroes every nonzero chunk from `start` to the end of the unit; returns whether any
    /// was found. Read-only stores only report.
    private func zeroTail(of storage: any StorageUnit, from start: Int) throws(JournalError) -> Bool {
        let chunk = 1 << 20
        var position = start
        var found = false
        while position < storage.capacity {
            let count = min(chunk, storage.capacity - position)
            let bytes = try read(storage, at: position, count: count)
            if bytes.contains(where: { $0 != 0 }) {
                found = true
                if readOnly { return true }
                do {
                    try storage.write([UInt8](repeating: 0, count: count), at: position)
                } catch {
                    throw JournalError(error)
                }
            }
            position += count
        }
        if found {
            do { try storage.synchronize() } catch { throw JournalError(error) }
        }
        return found
    }

    private func read(_ storage: any StorageUnit, at offset: Int, count: Int) throws(JournalError) -> [UInt8] {
        do {
            return try storage.read(at: offset, count: count)
        } catch {
            throw JournalError(error)
        }
    }

    /// Copies a unit that salvage is about to cut into a new unit of the pool and quarantines
    /// the copy, so the bytes given up stay available to a person.
    private func preserveCopy(of unit: JournalUnit, journal: JournalID, detail: String) throws(JournalError) {
        let copy: any StorageUnit
        do {
            copy = try context.journalPool.allocate()
        } catch {
            throw JournalError(
                .full, journal: journal, unit: unit.id, storage: error,
                detail: "salvage keeps a copy of \(unit.id) before cutting it, and the pool has no room for one")
        }
        let chunk = 1 << 20
        var position = 0
        do throws(StorageError) {
            while position < unit.storage.capacity {
                let count = min(chunk, unit.storage.capacity - position, copy.capacity - position)
                guard count > 0 else { break }
                try copy.write(try unit.storage.read(at: position, count: count), at: position)
                position += count
            }
            try copy.synchronize()
        } catch {
            throw JournalError(error, journal: journal)
        }
        try quarantine(copy.id, in: context.journalPool, detail: "copy of \(unit.id) \(detail)")
    }

    /// Whether every byte of `storage` from `start` on is zero.
    private func isBlank(_ storage: any StorageUnit, from start: Int) throws(JournalError) -> Bool {
        let chunk = 1 << 20
        var position = start
        while position < storage.capacity {
            let count = min(chunk, storage.capacity - position)
            if try read(storage, at: position, count: count).contains(where: { $0 != 0 }) { return false }
            position += count
        }
        return true
    }

    private func quarantine(_ unit: UnitID, in pool: any StoragePool, detail: String) throws(JournalError) {
        context.logger.warning(
            "journal salvage: quarantining a damaged unit (its bytes are kept, out of the pool)",
            metadata: ["unit": "\(unit)", "detail": "\(detail)"])
        do {
            try pool.quarantine(unit)
        } catch {
            throw JournalError(error)
        }
        context.emit(.quarantined(unit, detail: detail))
    }

    private func release(_ unit: UnitID, in pool: any StoragePool) throws(JournalError) {
        do {
            try pool.release(unit)
        } catch {
            throw JournalError(error)
        }
    }
}
