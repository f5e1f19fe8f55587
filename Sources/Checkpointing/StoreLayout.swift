import FaultToleranceCore

/// The 64-byte header at the start of every unit of a checkpoint store:
///
/// ```
/// 0  magic "FTCS" (u32 LE 0x53435446)   16 generation (u64): the log's, 0 for data units
/// 4  version (u16) = 1                  24 reserved, zero, to 60
/// 6  role (u8): 1 log, 2 data           60 CRC32C of bytes 0..<60
/// 7  reserved (u8) = 0
/// 8  store salt (u64): random, the same in every unit of one store
/// ```
struct UnitHeader: Equatable {
    static let size = 64
    static let magic: UInt32 = 0x5343_5446
    static let version: UInt16 = 1

    enum Role: UInt8 {
        case log = 1
        case data = 2
    }

    var role: Role
    var salt: UInt64
    var generation: UInt64

    func encoded() -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.size)
        bytes.withUnsafeMutableBytes { raw in
            guard let base = raw.baseAddress else { return }
            base.storeLE(Self.magic, at: 0)
            base.storeLE(Self.version, at: 4)
            base.storeLE(role.rawValue, at: 6)
            base.storeLE(salt, at: 8)
            base.storeLE(generation, at: 16)
            base.storeLE(CRC32C.checksum(UnsafeRawBufferPointer(start: base, count: 60)), at: 60)
        }
        return bytes
    }

    enum Decoded: Equatable {
        /// All zeros: a unit allocated but never given its header (a crash right after).
        case blank
        case header(UnitHeader)
        case invalid(String)
    }

    static func decode(_ bytes: [UInt8]) -> Decoded {
        guard bytes.count >= size else { return .invalid("short header") }
        if bytes[0..<size].allSatisfy({ $0 == 0 }) { return .blank }
        return bytes.withUnsafeBytes { raw -> Decoded in
            guard let base = raw.baseAddress else { return .invalid("short header") }
            guard base.loadLE(UInt32.self, at: 0) == magic else { return .invalid("not a checkpoint store unit") }
            guard base.loadLE(UInt32.self, at: 60) == CRC32C.checksum(UnsafeRawBufferPointer(start: base, count: 60))
            else { return .invalid("unit header checksum mismatch") }
            let version = base.loadLE(UInt16.self, at: 4)
            guard version == Self.version else { return .invalid("unit format version \(version)") }
            guard let role = Role(rawValue: base.loadLE(UInt8.self, at: 6)) else {
                return .invalid("unknown unit role")
            }
            return .header(
                UnitHeader(
                    role: role, salt: base.loadLE(UInt64.self, at: 8), generation: base.loadLE(UInt64.self, at: 16)))
        }
    }
}

/// One record of the store's log, the index that lets a store open without reading every
/// manifest:
///
/// ```
/// 0 body length (u32)   4 CRC32C (u32) of the log's generation (u64 LE), the type and the body
/// 8 type (u8)           9 body
/// ```
///
/// Bodies: `commit` and `replace` (a new manifest for the same checkpoint): id, epoch, parent
/// (0 = none), kind (u8), capture time, manifest unit, manifest offset, manifest frame length
/// (u32), captured bytes, stored bytes (u64 each unless marked), application name length (u16)
/// and name. `delete`: id. `seal` (ends a log's opening snapshot): the next id and the next
/// chunk serial. `prepare` (a group member's checkpoint, durable but not yet decided): the same
/// body as `commit`. `decide` (a prepared checkpoint's group epoch committed): id. A prepared
/// checkpoint whose epoch aborted is deleted with `delete`.
enum LogRecord: Equatable {
    case commit(CheckpointSummary)
    case replace(CheckpointSummary)
    case delete(CheckpointID)
    case seal(nextID: UInt64, nextSerial: UInt64)
    case prepare(CheckpointSummary)
    case decide(CheckpointID)

    static let headerSize = 9
    static let maximumBody = 1024

    var type: UInt8 {
        switch self {
        case .commit: 1
        case .replace: 2
        case .delete: 3
        case .seal: 4
        case .prepare: 5
        case .decide: 6
        }
    }

    func encoded(generation: UInt64) -> [UInt8] {
        var body: [UInt8] = []
        switch self {
        case .commit(let summary), .replace(let summary), .prepare(let summary):
            body.appendLE(summary.id.rawValue)
            body.appendLE(summary.epoch)
            body.appendLE(summary.parent?.rawValue ?? 0)
            body.appendLE(summary.kind.rawValue)
            body.appendLE(summary.captureTime)
            body.appendLE(summary.manifest.unit.rawValue)
            body.appendLE(UInt64(summary.manifest.offset))
            body.appendLE(UInt32(summary.manifest.length))
            body.appendLE(UInt64(summary.capturedBytes))
            body.appendLE(UInt64(summary.storedBytes))
            body.appendLE(UInt16(summary.application.utf8.count))
            body.append(contentsOf: summary.application.utf8)
        case .delete(let id), .decide(let id):
            body.appendLE(id.rawValue)
        case .seal(let nextID, let nextSerial):
            body.appendLE(nextID)
            body.appendLE(nextSerial)
        }
        var crc = CRC32C()
        withUnsafeBytes(of: generation.littleEndian) { crc.update($0) }
        crc.update([type])
        crc.update(body)
        var record: [UInt8] = []
        record.reserveCapacity(Self.headerSize + body.count)
        record.appendLE(UInt32(body.count))
        record.appendLE(crc.value)
        record.append(type)
        record.append(contentsOf: body)
        return record
    }

    enum Decoded: Equatable {
        /// Zeros where a record would start: the log's end.
        case end
        case record(LogRecord, length: Int)
        case invalid(String)
    }

    static func decode(_ bytes: UnsafeRawBufferPointer, at offset: Int, generation: UInt64) -> Decoded {
        guard let length = bytes.loadLE(UInt32.self, at: offset),
            let checksum = bytes.loadLE(UInt32.self, at: offset + 4),
            let type = bytes.loadLE(UInt8.self, at: offset + 8)
        else { return .end }
        if length == 0 && checksum == 0 && type == 0 { return .end }
        guard Int(length) <= maximumBody, offset + headerSize + Int(length) <= bytes.count else {
            return .invalid("record length \(length)")
        }
        let body = UnsafeRawBufferPointer(rebasing: bytes[offset + headerSize..<offset + headerSize + Int(length)])
        var crc = CRC32C()
        withUnsafeBytes(of: generation.littleEndian) { crc.update($0) }
        crc.update([type])
        crc.update(body)
        guard crc.value == checksum else { return .invalid("record checksum mismatch") }
        var reader = Reader(bytes: body)
        let record: LogRecord
        switch type {
        case 1, 2, 5:
            guard let id = reader.u64(), id > 0, let epoch = reader.u64(), let parent = reader.u64(),
                let kindByte = reader.u8(), let kind = CheckpointManifest.Kind(rawValue: kindByte),
                let captureTime = reader.u64(), let unit = reader.u64(), let manifestOffset = reader.u64(),
                let manifestLength = reader.u32(), let captured = reader.u64(), let stored = reader.u64(),
                let nameLength = reader.u16(), let application = reader.name(Int(nameLength)), reader.remaining == 0,
                manifestOffset <= UInt64(Int.max / 2), captured <= UInt64(Int.max / 2), stored <= UInt64(Int.max / 2)
            else { return .invalid("malformed commit record") }
            let summary = CheckpointSummary(
                id: CheckpointID(id), application: application, epoch: epoch,
                parent: parent == 0 ? nil : CheckpointID(parent), kind: kind, captureTime: captureTime,
                manifest: ChunkReference(unit: UnitID(unit), offset: Int(manifestOffset), length: Int(manifestLength)),
                capturedBytes: Int(captured), storedBytes: Int(stored))
            record = type == 1 ? .commit(summary) : type == 2 ? .replace(summary) : .prepare(summary)
        case 3, 6:
            guard let id = reader.u64(), reader.remaining == 0 else { return .invalid("malformed delete record") }
            record = type == 3 ? .delete(CheckpointID(id)) : .decide(CheckpointID(id))
        case 4:
            guard let nextID = reader.u64(), let nextSerial = reader.u64(), reader.remaining == 0 else {
                return .invalid("malformed seal record")
            }
            record = .seal(nextID: nextID, nextSerial: nextSerial)
        default:
            return .invalid("unknown record type \(type)")
        }
        return .record(record, length: headerSize + Int(length))
    }
}
