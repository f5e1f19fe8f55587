public import FaultToleranceCore

/// Identifies a protected volume within a journal.
public struct VolumeID: Hashable, Sendable, Comparable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    /// The volume's number.
    public let rawValue: UInt32

    /// Creates a volume identity.
    public init(_ rawValue: UInt32) { self.rawValue = rawValue }

    /// Creates a volume identity from an integer literal.
    public init(integerLiteral value: UInt32) { self.rawValue = value }

    /// `volume-N`.
    public var description: String { "volume-\(rawValue)" }

    /// Orders volumes by number.
    public static func < (lhs: VolumeID, rhs: VolumeID) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// Identifies one journal among those sharing a storage pool.
public struct JournalID: Hashable, Sendable, Comparable, CustomStringConvertible, ExpressibleByIntegerLiteral {
    /// The journal's number.
    public let rawValue: UInt64

    /// Creates a journal identity.
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    /// Creates a journal identity from an integer literal.
    public init(integerLiteral value: UInt64) { self.rawValue = value }

    /// `journal-N`.
    public var description: String { "journal-\(rawValue)" }

    /// Orders journals by number.
    public static func < (lhs: JournalID, rhs: JournalID) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// One journaled write command: `bytes` written to `volume` at `offset`, at `time`, as the
/// journal's `sequence`-th record.
public struct JournalRecord: Sendable, Hashable {
    /// The record's position in its journal: 1, 2, 3, ... with no gaps.
    public var sequence: UInt64
    /// When the write was journaled (never earlier than the record before it).
    public var time: Instant
    /// The volume written.
    public var volume: VolumeID
    /// The byte offset within the volume.
    public var offset: UInt64
    /// The bytes written.
    public var bytes: [UInt8]

    /// Creates a record.
    public init(sequence: UInt64, time: Instant, volume: VolumeID, offset: UInt64, bytes: [UInt8]) {
        self.sequence = sequence
        self.time = time
        self.volume = volume
        self.offset = offset
        self.bytes = bytes
    }
}

/// Why bytes read from a journal unit are not a valid record, header or seal.
public struct JournalFormatError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong.
    public var reason: String

    /// Creates a format error.
    public init(_ reason: String) { self.reason = reason }

    /// The reason.
    public var description: String { reason }
}

/// The on-disk layout of journal units. Every integer is little-endian; see the
/// "Elastic write journal" article for the full description.
///
/// ```
/// unit:    [header page, 4 KiB][records ..., 8-byte aligned][zeros][seal trailer]
/// record:  length u32 | type u16 | durable u16 | sequence u64 | time i64 |
///          volume u32 | crc u32 | offset u64 | payload
/// ```
///
/// `durable` is the record's knowledge of durability when it was written: `d` in 1...65535
/// says every record up to `sequence - d` was already durable (fsynced), 0 says nothing.
/// Recovery uses it to tell a torn tail from damage: a gap followed by a valid record whose
/// `durable` covers the gap cannot be a crash's loss of unsynced writes.
public enum JournalFormat {
    /// The format version written in every unit header and seal.
    public static let version: UInt16 = 1
    /// Bytes reserved for the unit header at the start of every unit.
    public static let headerPageSize = 4096
    /// Bytes in the fixed part of the unit header.
    public static let headerSize = 96
    /// Bytes in a record header (payload follows).
    public static let recordHeaderSize = 40
    /// Bytes in the fixed part of the seal (index entries follow).
    public static let sealFixedSize = 64
    /// Bytes per sparse time-index entry: time i64, sequence u64, offset u64.
    public static let indexEntrySize = 24
    /// Record type of a journaled write.
    public static let writeRecordType: UInt16 = 1
    /// "FTJUNIT1" as a little-endian UInt64.
    public static let unitMagic: UInt64 = 0x3154_494E_554A_5446
    /// "SEAL" as a little-endian UInt32.
    public static let sealMagic: UInt32 = 0x4C41_4553
    /// Bytes of a base image unit's manifest area (two 512-byte slots) before the volume's data.
    public static let baseHeaderSize = 4096
    /// "FTBASE01" as a little-endian UInt64.
    public static let baseMagic: UInt64 = 0x3130_4553_4142_5446

    /// Rounds `value` up to a multiple of 8.
    @inlinable
    public static func aligned8(_ value: Int) -> Int { (value + 7) & ~7 }

    /// The bytes a record with `payloadCount` payload bytes occupies, padding included.
    @inlinable
    public static func footprint(payloadCount: Int) -> Int { aligned8(recordHeaderSize + payloadCount) }

    /// Where the seal trailer of a unit of `capacity` bytes starts, with one index entry per
    /// `indexInterval` bytes of records. Records must end at or before this offset.
    public static func trailerOffset(capacity: Int, indexInterval: Int) -> Int {
        let area = capacity - headerPageSize
        let entries = area / max(1, indexInterval) + 2
        let trailer = (sealFixedSize + entries * indexEntrySize + 4095) & ~4095
        return capacity - trailer
    }

    /// The most index entries the seal of a unit with this geometry can hold.
    public static func indexCapacity(capacity: Int, indexInterval: Int) -> Int {
        (capacity - trailerOffset(capacity: capacity, indexInterval: indexInterval) - sealFixedSize) / indexEntrySize
    }
}

// MARK: - Records

/// The fixed fields of a record, as decoded from its header.
public struct RecordHeader: Sendable, Hashable {
    /// Header plus payload bytes, padding excluded.
    public var length: Int
    /// The record's sequence number.
    public var sequence: UInt64
    /// The record's time.
    public var time: Instant
    /// The volume written.
    public var volume: VolumeID
    /// The offset within the volume.
    public var offset: UInt64
    /// The stored checksum.
    public var checksum: UInt32
    /// Every record up to this sequence was durable when this record was written (`nil`: the
    /// writer did not say).
    public var durableThrough: UInt64? = nil

    /// Payload bytes.
    public var payloadCount: Int { length - JournalFormat.recordHeaderSize }
    /// Bytes the record occupies, padding included.
    public var footprint: Int { JournalFormat.aligned8(length) }
}

/// Encodes and decodes records. The checksum covers the unit's salt, the header (without
/// the checksum field) and the payload, so a record left over from a unit's previous life
/// (another salt) never verifies.
public enum RecordCodec {
    /// Writes a record at `destination` (which must have room for its footprint), computing
    /// the checksum over the bytes just copied, while they are still in cache. Returns the
    /// footprint. Padding bytes are zeroed.
    @inlinable
    public static func encode(
        into destination: UnsafeMutableRawPointer,
        salt: UInt64,
        sequence: UInt64,
        time: Instant,
        volume: VolumeID,
        offset: UInt64,
        payload: UnsafeRawBufferPointer,
        durableThrough: UInt64? = nil
    ) -> Int {
        let length = JournalFormat.recordHeaderSize + payload.count
        let footprint = JournalFormat.aligned8(length)
        // The header in five 8-byte stores (the checksum field, the high half of the fourth,
        // zero for now), and the checksummed bytes (the salt, the header around its checksum
        // field) composed from the same words on the stack: a checksum that read the header
        // back from `destination` would wait on narrower stores still in flight.
        let distance = durableDistance(sequence: sequence, durableThrough: durableThrough)
        let first =
            UInt64(UInt32(truncatingIfNeeded: length)) | UInt64(JournalFormat.writeRecordType) << 32
            | UInt64(distance) << 48
        let time = UInt64(bitPattern: time.nanoseconds)
        let volume = UInt64(volume.rawValue)
        destination.storeLE(first, at: 0)
        destination.storeLE(sequence, at: 8)
        destination.storeLE(time, at: 16)
        destination.storeLE(volume, at: 24)
        destination.storeLE(offset, at: 32)
        if footprint > length {
            (destination + length).initializeMemory(as: UInt8.self, repeating: 0, count: footprint - length)
        }
        var crc = CRC32C()
        withUnsafeTemporaryAllocation(byteCount: 48, alignment: 8) { prefix in
            guard let start = prefix.baseAddress else { return }
            start.storeLE(salt, at: 0)
            start.storeLE(first, at: 8)
            start.storeLE(sequence, at: 16)
            start.storeLE(time, at: 24)
            start.storeLE(volume | offset << 32, at: 32)
            start.storeLE(UInt32(truncatingIfNeeded: offset >> 32), at: 40)
            crc.update(UnsafeRawBufferPointer(rebasing: prefix[0..<44]))
        }
        crc.update(copying: payload, to: destination + JournalFormat.recordHeaderSize)
        destination.storeLE(crc.value, at: 28)
        return footprint
    }

    /// The `durable` field: how far back from `sequence` everything was durable, or 0 when
    /// unknown or farther than the field holds (never an overclaim).
    @inlinable
    public static func durableDistance(sequence: UInt64, durableThrough: UInt64?) -> UInt16 {
        guard let durableThrough, durableThrough < sequence else { return 0 }
        let distance = sequence - durableThrough
        return distance <= UInt64(UInt16.max) ? UInt16(distance) : 0
    }

    /// The checksum of a record whose bytes (checksum field included, ignored) are `record`.
    @inlinable
    public static func checksum(salt: UInt64, record: UnsafeRawBufferPointer) -> UInt32 {
        var crc = CRC32C()
        withUnsafeBytes(of: salt.littleEndian) { crc.update($0) }
        crc.update(UnsafeRawBufferPointer(rebasing: record[0..<28]))
        crc.update(UnsafeRawBufferPointer(rebasing: record[32...]))
        return crc.value
    }

    /// What was found at a position where a record may start.
    public enum Probe: Sendable, Hashable {
        /// A valid record.
        case record(RecordHeader)
        /// Zeros: nothing was ever written here (the end of the records).
        case empty
        /// Bytes that are not a valid record (torn, corrupt, or from another life).
        case invalid(JournalFormatError)
        /// The record continues past the end of `bytes`; read more and probe again.
        case needMore(Int)
    }

    /// Decodes the record at the start of `bytes`, verifying length, type and checksum.
    /// `limit` is the most bytes a record may span from here (the end of the record area).
    public static func probe(_ bytes: UnsafeRawBufferPointer, salt: UInt64, limit: Int) -> Probe {
        guard let length32 = bytes.loadLE(UInt32.self, at: 0) else { return .needMore(JournalFormat.recordHeaderSize) }
        guard bytes.count >= JournalFormat.recordHeaderSize else {
            return .needMore(JournalFormat.recordHeaderSize)
        }
        let type = bytes.loadLE(UInt16.self, at: 4) ?? 0
        if length32 == 0 && type == 0 { return .empty }
        let length = Int(length32)
        guard type == JournalFormat.writeRecordType else {
            return .invalid(JournalFormatError("unknown record type \(type)"))
        }
        guard length >= JournalFormat.recordHeaderSize, JournalFormat.aligned8(length) <= limit else {
            return .invalid(JournalFormatError("record length \(length) outside 40...\(limit)"))
        }
        guard length <= bytes.count else { return .needMore(length) }
        let stored = bytes.loadLE(UInt32.self, at: 28) ?? 0
        let computed = checksum(salt: salt, record: UnsafeRawBufferPointer(rebasing: bytes[0..<length]))
        guard stored == computed else {
            return .invalid(
                JournalFormatError(
                    "record checksum \(hex(stored)) does not match computed \(hex(computed))"))
        }
        let sequence = bytes.loadLE(UInt64.self, at: 8) ?? 0
        let distance = UInt64(bytes.loadLE(UInt16.self, at: 6) ?? 0)
        // A writer never claims durability before sequence 0.
        guard distance <= sequence else {
            return .invalid(JournalFormatError("durable field \(distance) reaches before sequence 0 from \(sequence)"))
        }
        return .record(
            RecordHeader(
                length: length,
                sequence: sequence,
                time: Instant(nanoseconds: bytes.loadLE(Int64.self, at: 16) ?? 0),
                volume: VolumeID(bytes.loadLE(UInt32.self, at: 24) ?? 0),
                offset: bytes.loadLE(UInt64.self, at: 32) ?? 0,
                checksum: stored,
                durableThrough: distance == 0 ? nil : sequence - distance))
    }

    /// Decodes a whole record (header and payload copied out) from the start of `bytes`.
    public static func decode(_ bytes: [UInt8], salt: UInt64) throws(JournalFormatError) -> JournalRecord {
        let found = bytes.withUnsafeBytes { raw -> Probe in probe(raw, salt: salt, limit: Int.max / 2) }
        switch found {
        case .record(let header):
            return JournalRecord(
                sequence: header.sequence, time: header.time, volume: header.volume, offset: header.offset,
                bytes: Array(bytes[JournalFormat.recordHeaderSize..<header.length]))
        case .empty: throw JournalFormatError("no record (zeros)")
        case .invalid(let error): throw error
        case .needMore(let count):
            throw JournalFormatError("truncated record: needs \(count) bytes, has \(bytes.count)")
        }
    }
}

func hex(_ value: UInt32) -> String { "0x" + String(value, radix: 16) }

// MARK: - Unit header

/// The header at the start of every journal unit.
public struct UnitHeader: Sendable, Hashable {
    /// The journal the unit belongs to.
    public var journal: JournalID
    /// The unit's identity in its pool (a unit copied elsewhere is recognised as foreign).
    public var unit: UnitID
    /// A random value mixed into every record checksum of this life of the unit.
    public var salt: UInt64
    /// The sequence number of the unit's first record.
    public var firstSequence: UInt64
    /// The time the unit was started (no record in it is earlier).
    public var firstTime: Instant
    /// The last sequence number of the journal's previous unit (or of the base image).
    public var previousLastSequence: UInt64
    /// The checksum of the previous unit's seal (0 for the first unit).
    public var previousSealChecksum: UInt32
    /// Bytes of records between two time-index entries.
    public var indexInterval: Int
    /// Where the records must end and the seal starts.
    public var trailerOffset: Int
    /// The unit's capacity when it was formatted.
    public var capacity: Int

    /// Creates a header.
    public init(
        journal: JournalID, unit: UnitID, salt: UInt64, firstSequence: UInt64, firstTime: Instant,
        previousLastSequence: UInt64, previousSealChecksum: UInt32, indexInterval: Int, trailerOffset: Int,
        capacity: Int
    ) {
        self.journal = journal
        self.unit = unit
        self.salt = salt
        self.firstSequence = firstSequence
        self.firstTime = firstTime
        self.previousLastSequence = previousLastSequence
        self.previousSealChecksum = previousSealChecksum
        self.indexInterval = indexInterval
        self.trailerOffset = trailerOffset
        self.capacity = capacity
    }

    /// The header's 96 bytes, checksum included.
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(JournalFormat.headerSize)
        bytes.appendLE(JournalFormat.unitMagic)
        bytes.appendLE(JournalFormat.version)
        bytes.appendLE(UInt16(JournalFormat.headerSize))
        bytes.appendLE(UInt32(0))
        bytes.appendLE(journal.rawValue)
        bytes.appendLE(unit.rawValue)
        bytes.appendLE(salt)
        bytes.appendLE(firstSequence)
        bytes.appendLE(firstTime.nanoseconds)
        bytes.appendLE(previousLastSequence)
        bytes.appendLE(previousSealChecksum)
        bytes.appendLE(UInt32(truncatingIfNeeded: indexInterval))
        bytes.appendLE(UInt64(trailerOffset))
        bytes.appendLE(UInt64(capacity))
        bytes.appendLE(CRC32C.checksum(bytes))
        bytes.appendLE(UInt32(0))
        return bytes
    }

    /// Decodes and verifies a header; `nil` for an all-zero (never written) header.
    public static func decode(_ bytes: [UInt8]) throws(JournalFormatError) -> UnitHeader? {
        guard bytes.count >= JournalFormat.headerSize else { throw JournalFormatError("unit header truncated") }
        if bytes[0..<JournalFormat.headerSize].allSatisfy({ $0 == 0 }) { return nil }
        return try bytes.withUnsafeBytes { raw in
            Result { () throws(JournalFormatError) -> UnitHeader in
                guard raw.loadLE(UInt64.self, at: 0) == JournalFormat.unitMagic else {
                    throw JournalFormatError("not a journal unit (bad magic)")
                }
                let stored = raw.loadLE(UInt32.self, at: 88) ?? 0
                let computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<88]))
                guard stored == computed else {
                    throw JournalFormatError("unit header checksum \(hex(stored)) does not match \(hex(computed))")
                }
                let version = raw.loadLE(UInt16.self, at: 8) ?? 0
                guard version == JournalFormat.version else {
                    throw JournalFormatError(
                        "unit format version \(version); this build reads \(JournalFormat.version)")
                }
                let header = UnitHeader(
                    journal: JournalID(raw.loadLE(UInt64.self, at: 16) ?? 0),
                    unit: UnitID(raw.loadLE(UInt64.self, at: 24) ?? 0),
                    salt: raw.loadLE(UInt64.self, at: 32) ?? 0,
                    firstSequence: raw.loadLE(UInt64.self, at: 40) ?? 0,
                    firstTime: Instant(nanoseconds: raw.loadLE(Int64.self, at: 48) ?? 0),
                    previousLastSequence: raw.loadLE(UInt64.self, at: 56) ?? 0,
                    previousSealChecksum: raw.loadLE(UInt32.self, at: 64) ?? 0,
                    indexInterval: Int(raw.loadLE(UInt32.self, at: 68) ?? 0),
                    trailerOffset: Int(truncatingIfNeeded: raw.loadLE(UInt64.self, at: 72) ?? 0),
                    capacity: Int(truncatingIfNeeded: raw.loadLE(UInt64.self, at: 80) ?? 0))
                guard header.indexInterval > 0, header.capacity > JournalFormat.headerPageSize,
                    header.trailerOffset > JournalFormat.headerPageSize, header.trailerOffset < header.capacity,
                    header.trailerOffset
                        == JournalFormat.trailerOffset(
                            capacity: header.capacity, indexInterval: header.indexInterval)
                else { throw JournalFormatError("unit header geometry is inconsistent") }
                return header
            }
        }.get()
    }
}

// MARK: - Seal

/// One sparse time-index entry: the first record at or after an index boundary.
public struct TimeIndexEntry: Sendable, Hashable {
    /// The record's time.
    public var time: Instant
    /// The record's sequence number.
    public var sequence: UInt64
    /// The record's byte offset in its unit.
    public var offset: Int

    /// Creates an index entry.
    public init(time: Instant, sequence: UInt64, offset: Int) {
        self.time = time
        self.sequence = sequence
        self.offset = offset
    }
}

/// The trailer written when a unit is full: what it holds and where to seek in it.
public struct UnitSeal: Sendable, Hashable {
    /// Records in the unit.
    public var count: UInt64
    /// The first sequence number.
    public var firstSequence: UInt64
    /// The last sequence number.
    public var lastSequence: UInt64
    /// The earliest record time.
    public var minimumTime: Instant
    /// The latest record time.
    public var maximumTime: Instant
    /// The offset just past the last record.
    public var recordsEnd: Int
    /// The sparse time index.
    public var index: [TimeIndexEntry]

    /// Creates a seal.
    public init(
        count: UInt64, firstSequence: UInt64, lastSequence: UInt64, minimumTime: Instant, maximumTime: Instant,
        recordsEnd: Int, index: [TimeIndexEntry]
    ) {
        self.count = count
        self.firstSequence = firstSequence
        self.lastSequence = lastSequence
        self.minimumTime = minimumTime
        self.maximumTime = maximumTime
        self.recordsEnd = recordsEnd
        self.index = index
    }

    /// The seal's bytes; the checksum (at offset 60) covers the salt and every other byte.
    public func encoded(salt: UInt64) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(JournalFormat.sealFixedSize + index.count * JournalFormat.indexEntrySize)
        bytes.appendLE(JournalFormat.sealMagic)
        bytes.appendLE(JournalFormat.version)
        bytes.appendLE(UInt16(0))
        bytes.appendLE(count)
        bytes.appendLE(firstSequence)
        bytes.appendLE(lastSequence)
        bytes.appendLE(minimumTime.nanoseconds)
        bytes.appendLE(maximumTime.nanoseconds)
        bytes.appendLE(UInt64(recordsEnd))
        bytes.appendLE(UInt32(truncatingIfNeeded: index.count))
        bytes.appendLE(UInt32(0))
        for entry in index {
            bytes.appendLE(entry.time.nanoseconds)
            bytes.appendLE(entry.sequence)
            bytes.appendLE(UInt64(entry.offset))
        }
        let checksum = Self.checksum(salt: salt, bytes: bytes)
        bytes.withUnsafeMutableBytes { raw in
            if let base = raw.baseAddress { base.storeLE(checksum, at: 60) }
        }
        return bytes
    }

    static func checksum(salt: UInt64, bytes: [UInt8]) -> UInt32 {
        var crc = CRC32C()
        withUnsafeBytes(of: salt.littleEndian) { crc.update($0) }
        crc.update(bytes[0..<60])
        crc.update(bytes[64...])
        return crc.value
    }

    /// Decodes and verifies a seal; `nil` when the trailer is all zeros (the unit is not
    /// sealed). Returns the seal and its checksum.
    public static func decode(
        _ bytes: [UInt8], salt: UInt64, maximumEntries: Int
    ) throws(JournalFormatError) -> (seal: UnitSeal, checksum: UInt32)? {
        guard bytes.count >= JournalFormat.sealFixedSize else { throw JournalFormatError("seal truncated") }
        if bytes[0..<JournalFormat.sealFixedSize].allSatisfy({ $0 == 0 }) { return nil }
        return try bytes.withUnsafeBytes { raw in
            Result { () throws(JournalFormatError) -> (UnitSeal, UInt32) in
                guard raw.loadLE(UInt32.self, at: 0) == JournalFormat.sealMagic else {
                    throw JournalFormatError("seal has a bad magic")
                }
                let entries = Int(raw.loadLE(UInt32.self, at: 56) ?? 0)
                guard entries <= maximumEntries,
                    JournalFormat.sealFixedSize + entries * JournalFormat.indexEntrySize <= bytes.count
                else { throw JournalFormatError("seal claims \(entries) index entries, at most \(maximumEntries) fit") }
                let end = JournalFormat.sealFixedSize + entries * JournalFormat.indexEntrySize
                let stored = raw.loadLE(UInt32.self, at: 60) ?? 0
                let computed = checksum(salt: salt, bytes: Array(bytes[0..<end]))
                guard stored == computed else {
                    throw JournalFormatError("seal checksum \(hex(stored)) does not match \(hex(computed))")
                }
                var index: [TimeIndexEntry] = []
                index.reserveCapacity(entries)
                for entry in 0..<entries {
                    let base = JournalFormat.sealFixedSize + entry * JournalFormat.indexEntrySize
                    index.append(
                        TimeIndexEntry(
                            time: Instant(nanoseconds: raw.loadLE(Int64.self, at: base) ?? 0),
                            sequence: raw.loadLE(UInt64.self, at: base + 8) ?? 0,
                            offset: Int(truncatingIfNeeded: raw.loadLE(UInt64.self, at: base + 16) ?? 0)))
                }
                let seal = UnitSeal(
                    count: raw.loadLE(UInt64.self, at: 8) ?? 0,
                    firstSequence: raw.loadLE(UInt64.self, at: 16) ?? 0,
                    lastSequence: raw.loadLE(UInt64.self, at: 24) ?? 0,
                    minimumTime: Instant(nanoseconds: raw.loadLE(Int64.self, at: 32) ?? 0),
                    maximumTime: Instant(nanoseconds: raw.loadLE(Int64.self, at: 40) ?? 0),
                    recordsEnd: Int(truncatingIfNeeded: raw.loadLE(UInt64.self, at: 48) ?? 0),
                    index: index)
                return (seal, stored)
            }
        }.get()
    }
}

// MARK: - Base image manifest

/// The manifest of a volume's base image: which journal and volume it belongs to and which
/// journaled writes it already contains. Stored twice (512-byte slots A and B, alternately
/// written); the valid slot with the higher generation wins, so a torn update leaves the
/// other intact.
public struct BaseManifest: Sendable, Hashable {
    /// The journal the base belongs to.
    public var journal: JournalID
    /// The volume.
    public var volume: VolumeID
    /// The image contains exactly the volume's writes with sequence ≤ this.
    public var appliedThrough: UInt64
    /// The time of the record `appliedThrough` (the start of the window).
    public var appliedTime: Instant
    /// Incremented on every update; picks the newer slot.
    public var generation: UInt64
    /// The journal's configured window, kept so tools can report the effective window.
    public var window: Duration
    /// The journal's configured quota in units.
    public var quota: Int
    /// The CRC32C of the image's chunk checksum table when the table matches the image;
    /// `nil` while an age-out is changing the image (or for a version-1 manifest, which has
    /// no table). See ``BaseChecksums``.
    public var checksums: UInt32?

    /// The manifest's own format version: 2 adds the chunk checksum table.
    public static let version: UInt32 = 2

    /// Creates a manifest.
    public init(
        journal: JournalID, volume: VolumeID, appliedThrough: UInt64, appliedTime: Instant, generation: UInt64,
        window: Duration, quota: Int, checksums: UInt32? = nil
    ) {
        self.checksums = checksums
        self.journal = journal
        self.volume = volume
        self.appliedThrough = appliedThrough
        self.appliedTime = appliedTime
        self.generation = generation
        self.window = window
        self.quota = quota
    }

    /// Bytes of one encoded slot.
    public static let slotSize = 512

    /// The slot's bytes: 60 bytes of fields and their CRC32C at 60; then (version 2) whether
    /// the checksum table is current (u32), the table's CRC32C (u32) and the CRC32C of those
    /// 8 bytes; zeros to 512.
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.appendLE(JournalFormat.baseMagic)
        bytes.appendLE(journal.rawValue)
        bytes.appendLE(volume.rawValue)
        bytes.appendLE(Self.version)
        bytes.appendLE(appliedThrough)
        bytes.appendLE(appliedTime.nanoseconds)
        bytes.appendLE(generation)
        bytes.appendLE(window.nanoseconds)
        bytes.appendLE(UInt32(clamping: quota))
        bytes.appendLE(CRC32C.checksum(bytes))
        var extension2: [UInt8] = []
        extension2.appendLE(UInt32(checksums == nil ? 0 : 1))
        extension2.appendLE(checksums ?? 0)
        bytes += extension2
        bytes.appendLE(CRC32C.checksum(extension2))
        bytes.append(contentsOf: [UInt8](repeating: 0, count: Self.slotSize - bytes.count))
        return bytes
    }

    /// Decodes one slot; `nil` when it is blank or does not verify.
    public static func decode(_ bytes: ArraySlice<UInt8>) -> BaseManifest? {
        let bytes = Array(bytes)
        guard bytes.count >= 64 else { return nil }
        return bytes.withUnsafeBytes { raw -> BaseManifest? in
            guard raw.loadLE(UInt64.self, at: 0) == JournalFormat.baseMagic,
                raw.loadLE(UInt32.self, at: 60) == CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[0..<60])),
                let version = raw.loadLE(UInt32.self, at: 20), version == 1 || version == Self.version
            else { return nil }
            var checksums: UInt32?
            if version == Self.version {
                guard
                    raw.loadLE(UInt32.self, at: 72) == CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[64..<72])),
                    let current = raw.loadLE(UInt32.self, at: 64), current <= 1
                else { return nil }
                checksums = current == 1 ? raw.loadLE(UInt32.self, at: 68) : nil
            }
            return BaseManifest(
                journal: JournalID(raw.loadLE(UInt64.self, at: 8) ?? 0),
                volume: VolumeID(raw.loadLE(UInt32.self, at: 16) ?? 0),
                appliedThrough: raw.loadLE(UInt64.self, at: 24) ?? 0,
                appliedTime: Instant(nanoseconds: raw.loadLE(Int64.self, at: 32) ?? 0),
                generation: raw.loadLE(UInt64.self, at: 40) ?? 0,
                window: .nanoseconds(raw.loadLE(Int64.self, at: 48) ?? 0),
                quota: Int(raw.loadLE(UInt32.self, at: 56) ?? 0),
                checksums: checksums)
        }
    }
}
