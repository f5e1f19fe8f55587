public import FaultToleranceCore
import NIOConcurrencyHelpers

/// The coordinator's durable ``GroupCoordinator/Record`` on a ``FaultToleranceCore/StorageUnit``
/// of at least 8 KiB (a file of a `FileStoragePool`, a disk region).
///
/// Two slots, at offsets 0 and 4096 (separate sectors), written alternately: a crash while
/// one is written leaves the other, the previous record, intact. Each slot (64 bytes,
/// little-endian):
/// ```
/// 0  magic "FTGC" (4 bytes)   4  version (u16) = 1    6  reserved (u16) = 0
/// 8  sequence (u64)           16 last begun (u64)     24 last committed (u64)
/// 32 group (u64)              40 CRC32C of bytes 0..<40 (u32)   44 zeros to 64
/// ```
/// Opening takes the valid slot with the higher sequence. A slot of zeros is empty; a slot
/// that is neither empty nor valid is a write torn by a crash when the other slot is valid,
/// and damage (``CheckpointError/Code/damaged``, with the offset) when it is not.
public final class GroupCoordinatorLog: Sendable {
    /// The unit holding the record.
    public let unit: any StorageUnit
    /// The group the record belongs to.
    public let group: UInt64
    private let state: NIOLockedValueBox<(sequence: UInt64, record: GroupCoordinator.Record)>

    static let magic: [UInt8] = Array("FTGC".utf8)
    static let slotSize = 64
    static let slotOffsets = [0, 4096]

    /// Opens the record of `group` in `unit` (a fresh record when the unit is blank).
    public init(unit: any StorageUnit, group: UInt64) throws(CheckpointError) {
        guard unit.capacity >= 8192 else {
            throw CheckpointError(
                .invalidConfiguration, unit: unit.id, detail: "unit of \(unit.capacity) bytes; at least 8 KiB")
        }
        var best: (sequence: UInt64, record: GroupCoordinator.Record)?
        var bad: (offset: Int, reason: String)?
        for offset in Self.slotOffsets {
            let bytes: [UInt8]
            do throws(StorageError) { bytes = try unit.read(at: offset, count: Self.slotSize) } catch {
                throw CheckpointError(error)
            }
            switch Self.decode(bytes, group: group) {
            case .empty: break
            case .invalid(let reason): bad = bad ?? (offset, reason)
            case .valid(let sequence, let record):
                if best.map({ sequence > $0.sequence }) ?? true { best = (sequence, record) }
            }
        }
        if best == nil, let bad {
            throw CheckpointError(
                .damaged, unit: unit.id, offset: bad.offset, detail: "coordinator record: \(bad.reason)")
        }
        self.unit = unit
        self.group = group
        state = NIOLockedValueBox(best ?? (0, GroupCoordinator.Record()))
    }

    /// The record as last written.
    public var record: GroupCoordinator.Record { state.withLockedValue { $0.record } }

    /// Writes `record` durably (into the older slot, then synchronizes).
    public func write(_ record: GroupCoordinator.Record) throws(CheckpointError) {
        try state.withLocked { (state) throws(CheckpointError) in
            let sequence = state.sequence + 1
            let bytes = Self.encode(sequence: sequence, record: record, group: group)
            do throws(StorageError) {
                try unit.write(bytes, at: Self.slotOffsets[Int(sequence % 2)])
                try unit.synchronize()
            } catch { throw CheckpointError(error) }
            state = (sequence, record)
        }
    }

    static func encode(sequence: UInt64, record: GroupCoordinator.Record, group: UInt64) -> [UInt8] {
        var bytes = magic
        bytes.appendLE(UInt16(1))
        bytes.appendLE(UInt16(0))
        bytes.appendLE(sequence)
        bytes.appendLE(record.lastBegun)
        bytes.appendLE(record.lastCommitted)
        bytes.appendLE(group)
        bytes.appendLE(CRC32C.checksum(bytes))
        bytes += [UInt8](repeating: 0, count: slotSize - bytes.count)
        return bytes
    }

    enum Decoded: Equatable {
        case empty
        case invalid(String)
        case valid(sequence: UInt64, record: GroupCoordinator.Record)
    }

    static func decode(_ bytes: [UInt8], group: UInt64) -> Decoded {
        guard bytes.count >= slotSize else { return .invalid("short slot") }
        if bytes.allSatisfy({ $0 == 0 }) { return .empty }
        guard Array(bytes[0..<4]) == magic else { return .invalid("bad magic") }
        guard CRC32C.checksum(Array(bytes[0..<40])) == bytes.loadLE(UInt32.self, at: 40) else {
            return .invalid("checksum mismatch")
        }
        let version = bytes.loadLE(UInt16.self, at: 4)
        guard version == 1 else { return .invalid("version \(version)") }
        let record = GroupCoordinator.Record(
            lastBegun: bytes.loadLE(UInt64.self, at: 16), lastCommitted: bytes.loadLE(UInt64.self, at: 24))
        guard bytes.loadLE(UInt64.self, at: 32) == group else { return .invalid("record of another group") }
        guard record.lastCommitted <= record.lastBegun else { return .invalid("committed after begun") }
        return .valid(sequence: bytes.loadLE(UInt64.self, at: 8), record: record)
    }
}
