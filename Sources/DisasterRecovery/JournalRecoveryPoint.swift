public import ElasticJournal
public import FaultToleranceCore
import NIOConcurrencyHelpers

/// A volume at a point in time, served from the recovery site's journal without rebuilding
/// the image first: each read takes the range from the base image (checked against its chunk
/// checksums) and lays over it the journaled writes up to the point that touch the range.
///
/// Opening it reads the journal's records up to the point once (their checksums checked), so
/// its cost grows with the journal's window, not with the volume's size: a recovery can start
/// serving at once. A damaged record or base chunk refuses the point in time with an error
/// naming the volume, the journal unit and the offset, rather than serving wrong data.
///
/// The journal's age-out must not pass the point while the source serves (an age-out that
/// did makes reads throw ``RecoveryError/Code/sourceUnavailable``): a recovery site pauses
/// ``ElasticJournal/ElasticJournal/maintain(now:)`` for the journal during a recovery.
public final class JournalRecoveryPoint: RecoveryPointSource {
    /// The journal.
    public let journal: ElasticJournal
    /// The volume.
    public let volume: VolumeID
    /// The point in time served.
    public let instant: Instant
    /// The volume's size in bytes.
    public let capacity: Int
    /// Records of the volume up to the point.
    public let recordCount: Int
    private let records: [JournalRecord]
    private let index: [Int: [Int]]
    static let indexGranularity = 64 << 10
    /// The base image's checksum chunks last read and checked (whole chunks are read to check
    /// them anyway): the next read within them, such as the replica build's next step, takes
    /// its bytes from here instead of reading and checking the chunk again.
    private let lastChunks = NIOLockedValueBox<CachedChunks?>(nil)
    /// The most bytes of base chunks kept.
    static let maximumCachedBytes = 64 << 20

    private struct CachedChunks {
        var range: Range<Int>
        var appliedThrough: UInt64
        var appliedTime: Instant
        var bytes: [UInt8]
    }

    /// Opens `volume` of `journal` at `point` (``RecoveryPoint/latest``: the newest durable record's time).
    public init(journal: ElasticJournal, volume: VolumeID, at point: RecoveryPoint) throws(RecoveryError) {
        guard let size = journal.size(of: volume) else {
            throw RecoveryError(.invalidPlan, "\(journal.id) does not hold \(volume)")
        }
        self.journal = journal
        self.volume = volume
        self.capacity = size
        let instant: Instant
        do {
            switch point {
            case .at(let at):
                instant = at
            case .latest:
                let durable = journal.durableSequence
                instant =
                    try journal.records(fromSequence: durable, through: durable, maximumBytes: 1).last?.time
                    ?? journal.readBase(of: volume, at: 0, count: 0).appliedTime
            }
            let base = try journal.readBase(of: volume, at: 0, count: 0)
            guard instant >= base.appliedTime else {
                throw RecoveryError(
                    .sourceUnavailable,
                    "\(volume) at \(instant): before the journal's window, which starts at \(base.appliedTime)")
            }
            var records: [JournalRecord] = []
            var index: [Int: [Int]] = [:]
            try journal.forEachRecord(from: Instant(nanoseconds: .min), through: instant) { record in
                guard record.volume == volume else { return }
                let first = Int(record.offset) / Self.indexGranularity
                let last = (Int(record.offset) + max(record.bytes.count, 1) - 1) / Self.indexGranularity
                for slot in first...last { index[slot, default: []].append(records.count) }
                records.append(record)
            }
            self.records = records
            self.index = index
        } catch let error as RecoveryError {
            throw error
        } catch let error as JournalError {
            throw RecoveryError(
                error.code == .damaged ? .damaged : .sourceUnavailable, "\(volume) at \(point): \(error)")
        } catch {
            throw RecoveryError(.sourceUnavailable, "\(volume) at \(point): \(error)")
        }
        self.instant = instant
        self.recordCount = records.count
    }

    /// The base image's bytes with the journaled writes up to the point laid over them.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(RecoveryError) {
        guard offset >= 0, buffer.count <= capacity, offset <= capacity - buffer.count else {
            throw RecoveryError(.outOfBounds, "\(buffer.count) bytes at \(offset) of \(volume)'s \(capacity)")
        }
        guard buffer.count > 0 else { return }
        let end = offset + buffer.count
        let base = try readBase(offset..<end)
        guard base.appliedTime <= instant else {
            throw RecoveryError(
                .sourceUnavailable,
                "\(volume): the journal aged out past \(instant) (its window now starts at \(base.appliedTime))")
        }
        base.bytes.withUnsafeBytes { bytes in
            buffer.copyMemory(
                from: UnsafeRawBufferPointer(
                    rebasing: bytes[(offset - base.range.lowerBound)..<(end - base.range.lowerBound)]))
        }
        var touching = Set<Int>()
        for slot in offset / Self.indexGranularity...(end - 1) / Self.indexGranularity {
            touching.formUnion(index[slot] ?? [])
        }
        for position in touching.sorted() {
            let record = records[position]
            let start = max(offset, Int(record.offset))
            let stop = min(end, Int(record.offset) + record.bytes.count)
            guard start < stop else { continue }
            record.bytes.withUnsafeBytes { bytes in
                UnsafeMutableRawBufferPointer(rebasing: buffer[(start - offset)..<(stop - offset)]).copyMemory(
                    from: UnsafeRawBufferPointer(
                        rebasing: bytes[(start - Int(record.offset))..<(stop - Int(record.offset))]))
            }
        }
    }

    /// The base image's bytes covering `range`, from the chunks last read when they cover it
    /// and the base has not changed since (its `appliedThrough`, checked by a zero-byte read);
    /// otherwise the whole chunks read, checked, and kept.
    private func readBase(_ range: Range<Int>) throws(RecoveryError) -> CachedChunks {
        do {
            let chunk = BaseChecksums.chunkSize(imageSize: capacity)
            let start = range.lowerBound / chunk * chunk
            let stop = min(capacity, (range.upperBound + chunk - 1) / chunk * chunk)
            if stop - start > Self.maximumCachedBytes {
                let base = try journal.readBase(of: volume, at: range.lowerBound, count: range.count)
                return CachedChunks(
                    range: range, appliedThrough: base.appliedThrough, appliedTime: base.appliedTime, bytes: base.bytes)
            }
            if let cached = lastChunks.withLockedValue({ $0 }), cached.range.lowerBound <= range.lowerBound,
                range.upperBound <= cached.range.upperBound,
                try journal.readBase(of: volume, at: 0, count: 0).appliedThrough == cached.appliedThrough
            {
                return cached
            }
            let base = try journal.readBase(of: volume, at: start, count: stop - start)
            let read = CachedChunks(
                range: start..<stop, appliedThrough: base.appliedThrough, appliedTime: base.appliedTime,
                bytes: base.bytes)
            lastChunks.withLockedValue { $0 = read }
            return read
        } catch {
            throw RecoveryError(
                error.code == .damaged ? .damaged : .sourceUnavailable, "\(volume) at \(instant): \(error)")
        }
    }
}
