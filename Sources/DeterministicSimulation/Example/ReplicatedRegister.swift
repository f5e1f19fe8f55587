import FaultToleranceCore
import NIOCore

/// A deliberate mistake to plant in the example register, to show the simulator finds it.
public enum RegisterBug: String, CaseIterable, Sendable, Codable {
    /// The correct protocol: majority quorums, durable before acknowledged.
    case none
    /// The writer treats the first acknowledgement as a quorum, so a read from a majority
    /// that missed the write returns an older value.
    case acknowledgeOnFirstReply = "ack-on-first-reply"
    /// Replicas acknowledge a write before making it durable, so a crash can lose an
    /// acknowledged write.
    case replyBeforeSynchronize = "reply-before-sync"
}

/// The example register's messages, framed on the wire as ``Message`` types 1-4 with
/// big-endian fields.
enum RegisterMessage: Equatable {
    case write(operation: UInt64, version: UInt64, value: UInt64)
    case writeAcknowledged(operation: UInt64, version: UInt64)
    case read(operation: UInt64)
    case readReply(operation: UInt64, version: UInt64, value: UInt64)

    var message: Message {
        var buffer = ByteBuffer()
        switch self {
        case .write(let operation, let version, let value):
            buffer.writeMultipleIntegers(operation, version, value)
            return Message(type: 1, payload: buffer)
        case .writeAcknowledged(let operation, let version):
            buffer.writeMultipleIntegers(operation, version)
            return Message(type: 2, payload: buffer)
        case .read(let operation):
            buffer.writeInteger(operation)
            return Message(type: 3, payload: buffer)
        case .readReply(let operation, let version, let value):
            buffer.writeMultipleIntegers(operation, version, value)
            return Message(type: 4, payload: buffer)
        }
    }

    init(_ message: Message) throws(FrameError) {
        var payload = message.payload
        let decoded: RegisterMessage?
        switch message.type {
        case 1:
            decoded = payload.readMultipleIntegers(as: (UInt64, UInt64, UInt64).self).map {
                .write(operation: $0.0, version: $0.1, value: $0.2)
            }
        case 2:
            decoded = payload.readMultipleIntegers(as: (UInt64, UInt64).self).map {
                .writeAcknowledged(operation: $0.0, version: $0.1)
            }
        case 3:
            decoded = payload.readInteger(as: UInt64.self).map { .read(operation: $0) }
        case 4:
            decoded = payload.readMultipleIntegers(as: (UInt64, UInt64, UInt64).self).map {
                .readReply(operation: $0.0, version: $0.1, value: $0.2)
            }
        default:
            decoded = nil
        }
        guard let decoded, payload.readableBytes == 0 else {
            throw FrameError(.malformedPayload, offset: 0, detail: "register message type \(message.type)")
        }
        self = decoded
    }
}

/// One replica of the example register: keeps the highest-versioned value it has seen,
/// durably, in two checksummed slots so a torn write of one leaves the other intact.
struct RegisterReplica {
    static let slotSize = 512
    static let magic: UInt32 = 0x5245_4731  // "REG1"

    let disk: any StorageUnit
    let bug: RegisterBug
    private(set) var version: UInt64 = 0
    private(set) var value: UInt64 = 0

    /// Recovers the replica's state from its disk: the valid slot with the highest version.
    init(disk: any StorageUnit, bug: RegisterBug) throws(StorageError) {
        self.disk = disk
        self.bug = bug
        for slot in 0..<2 {
            let bytes = try disk.read(at: slot * Self.slotSize, count: 24)
            guard let (version, value) = Self.decodeSlot(bytes), version > self.version else { continue }
            self.version = version
            self.value = value
        }
    }

    /// Handles a request and returns the reply. Throws when the disk fails; the replica must
    /// then stop (fail-stop), as its durable state is unknown.
    mutating func handle(_ request: RegisterMessage) throws(StorageError) -> RegisterMessage? {
        switch request {
        case .write(let operation, let newVersion, let newValue):
            if newVersion > version {
                let slot = Int(newVersion % 2) * Self.slotSize
                try disk.write(Self.encodeSlot(version: newVersion, value: newValue), at: slot)
                if bug != .replyBeforeSynchronize { try disk.synchronize() }
                version = newVersion
                value = newValue
            }
            return .writeAcknowledged(operation: operation, version: newVersion)
        case .read(let operation):
            return .readReply(operation: operation, version: version, value: value)
        case .writeAcknowledged, .readReply:
            return nil
        }
    }

    static func encodeSlot(version: UInt64, value: UInt64) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(24)
        for byte in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: magic >> (8 * byte))) }
        for byte in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: version >> (8 * byte))) }
        for byte in 0..<8 { bytes.append(UInt8(truncatingIfNeeded: value >> (8 * byte))) }
        let crc = CRC32C.checksum(bytes)
        for byte in 0..<4 { bytes.append(UInt8(truncatingIfNeeded: crc >> (8 * byte))) }
        return bytes
    }

    static func decodeSlot(_ bytes: [UInt8]) -> (version: UInt64, value: UInt64)? {
        guard bytes.count == 24 else { return nil }
        func integer<T: FixedWidthInteger>(_ offset: Int, _: T.Type) -> T {
            (0..<MemoryLayout<T>.size).reduce(T.zero) { $0 | T(bytes[offset + $1]) << (8 * $1) }
        }
        guard integer(0, UInt32.self) == magic, integer(20, UInt32.self) == CRC32C.checksum(bytes[0..<20]) else {
            return nil
        }
        return (integer(4, UInt64.self), integer(12, UInt64.self))
    }
}
