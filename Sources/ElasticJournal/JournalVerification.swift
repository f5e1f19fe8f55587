import FaultToleranceCore

/// What ``ElasticJournal/verify(progress:)`` checked.
public struct JournalVerification: Sendable, Hashable {
    /// Units checked.
    public var units = 0
    /// Records whose checksums verified.
    public var records = 0
    /// Bytes of records read.
    public var bytes = 0
    /// The first and last sequence numbers found.
    public var firstSequence: UInt64 = 0
    /// The last sequence number found.
    public var lastSequence: UInt64 = 0
    /// Base images whose every chunk matched its checksum.
    public var baseImagesChecked = 0
    /// Base images not checked because an age-out was interrupted (their checksum tables are
    /// refreshed by the next read-write open).
    public var baseImagesPending = 0
}

extension ElasticJournal {
    /// Reads every unit end to end and checks every checksum: headers, records (and that
    /// sequence numbers run without gaps and times never go back), seals against what the
    /// records say, the links between units, and every chunk of every base image against
    /// its checksum.
    ///
    /// Throws ``JournalError/Code/damaged`` naming the first bad unit and offset.
    /// `progress` gets the bytes checked so far and the total.
    public func verify(progress: ((_ done: Int, _ total: Int) -> Void)? = nil) throws(JournalError)
        -> JournalVerification
    {
        let snapshot = try snapshot()
        defer { endRead() }
        let total = snapshot.units.indices.reduce(0) { $0 + snapshot.end(of: $1) - JournalFormat.headerPageSize }
        var report = JournalVerification()
        var done = 0
        var previous: JournalUnit?
        for index in snapshot.units.indices {
            let unit = snapshot.units[index]
            func damaged(_ offset: Int, _ detail: String) -> JournalError {
                JournalError(.damaged, journal: id, unit: unit.id, offset: offset, detail: detail)
            }
            let headerBytes: [UInt8]
            do {
                headerBytes = try unit.storage.read(at: 0, count: JournalFormat.headerSize)
            } catch {
                throw JournalError(error, journal: id)
            }
            do throws(JournalFormatError) {
                guard try UnitHeader.decode(headerBytes) == unit.header else {
                    throw JournalFormatError("unit header changed since the journal was opened")
                }
            } catch {
                throw damaged(0, error.reason)
            }
            if let previous {
                guard unit.header.previousLastSequence == previous.lastSequence,
                    unit.header.previousSealChecksum == previous.sealChecksum
                else { throw damaged(0, "unit does not continue \(previous.id)") }
            }
            var expected = unit.header.firstSequence
            var lastTime = unit.header.firstTime
            var count: UInt64 = 0
            let end = snapshot.end(of: index)
            var lastReported = done
            let outcome = try RecordScanner.scan(
                unit.storage, salt: unit.header.salt, from: JournalFormat.headerPageSize, to: end,
                limit: unit.header.trailerOffset
            ) { (header, offset, _) throws(JournalError) -> Bool in
                guard header.sequence == expected else {
                    throw damaged(offset, "sequence \(header.sequence) where \(expected) was expected")
                }
                guard header.time >= lastTime else {
                    throw damaged(offset, "time \(header.time) goes back from \(lastTime)")
                }
                guard let size = snapshot.volumes[header.volume]?.size,
                    header.offset <= UInt64(size), UInt64(header.payloadCount) <= UInt64(size) - header.offset
                else { throw damaged(offset, "record \(header.sequence) writes outside \(header.volume)") }
                expected += 1
                lastTime = header.time
                count += 1
                done += header.footprint
                if let progress, done - lastReported >= 8 << 20 {
                    lastReported = done
                    progress(done, total)
                }
                return true
            }
            switch outcome {
            case .reachedEnd: break
            case .invalid(let offset, let error): throw damaged(offset, error.reason)
            case .empty(let offset), .stopped(let offset):
                throw damaged(offset, "records end before \(end)")
            }
            if unit.isSealed {
                let capacity = JournalFormat.indexCapacity(
                    capacity: unit.header.capacity, indexInterval: unit.header.indexInterval)
                let trailer: [UInt8]
                do {
                    trailer = try unit.storage.read(
                        at: unit.header.trailerOffset,
                        count: JournalFormat.sealFixedSize + capacity * JournalFormat.indexEntrySize)
                } catch {
                    throw JournalError(error, journal: id)
                }
                do throws(JournalFormatError) {
                    guard let (seal, _) = try UnitSeal.decode(trailer, salt: unit.header.salt, maximumEntries: capacity)
                    else { throw JournalFormatError("the seal is missing") }
                    guard seal.count == count, seal.lastSequence == expected - 1, seal.recordsEnd == end else {
                        throw JournalFormatError(
                            "the seal (\(seal.count) records) disagrees with the records (\(count))")
                    }
                } catch {
                    throw damaged(unit.header.trailerOffset, error.reason)
                }
            }
            if report.units == 0 { report.firstSequence = unit.header.firstSequence }
            report.units += 1
            report.records += Int(count)
            report.bytes += end - JournalFormat.headerPageSize
            report.lastSequence = expected - 1
            previous = unit
        }
        for (volume, base) in snapshot.volumes.sorted(by: { $0.key < $1.key }) {
            let image: [UInt8]
            let table = try base.checkedTable(journal: id)
            do {
                image = try base.storage.read(at: JournalFormat.baseHeaderSize, count: base.size)
            } catch {
                throw JournalError(error, journal: id)
            }
            guard table != nil else {
                report.baseImagesPending += 1
                continue
            }
            // `false`: the read differed from what is stored, which checks out (a transient
            // read error or a concurrent age-out): nothing to report.
            _ = try checkBase(volume, image: image, read: base)
            report.baseImagesChecked += 1
        }
        progress?(total, total)
        return report
    }
}
