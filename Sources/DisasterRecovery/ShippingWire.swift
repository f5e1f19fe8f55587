public import ElasticJournal
public import FaultToleranceCore
public import NIOCore

/// What the protected site and the recovery site say to each other while the protected site's
/// journal is shipped (message types 0x0801–0x0805, DisasterRecovery's block).
///
/// Every payload starts with the format version (UInt8, 1) and the journal's id (UInt64);
/// integers are little-endian. The transport frames and checksums each message. A batch of
/// records carries consecutive sequence numbers; each record: sequence (UInt64), time in
/// nanoseconds (Int64), volume (UInt32), offset (UInt64), length (UInt32), the bytes.
public enum ShippingMessage: Sendable, Hashable {
    /// Protected → recovery: the journal is durable through `durableThrough`; where should shipping resume?
    case hello(journal: UInt64, durableThrough: UInt64)
    /// Recovery → protected: send records from `from` on (everything before is durable here).
    case resume(journal: UInt64, from: UInt64)
    /// Protected → recovery: consecutive records.
    case records(journal: UInt64, [JournalRecord])
    /// Recovery → protected: every record through `through` is durable at the recovery site.
    case acknowledged(journal: UInt64, through: UInt64)
    /// Protected → recovery: record `requested` has aged out of the protected journal (the
    /// oldest held is `oldest`); the recovery site needs a new initial copy.
    case unavailable(journal: UInt64, requested: UInt64, oldest: UInt64)

    /// The message types.
    public enum MessageType {
        /// ``ShippingMessage/hello(journal:durableThrough:)``.
        public static let hello: UInt16 = 0x0801
        /// ``ShippingMessage/resume(journal:from:)``.
        public static let resume: UInt16 = 0x0802
        /// ``ShippingMessage/records(journal:_:)``.
        public static let records: UInt16 = 0x0803
        /// ``ShippingMessage/acknowledged(journal:through:)``.
        public static let acknowledged: UInt16 = 0x0804
        /// ``ShippingMessage/unavailable(journal:requested:oldest:)``.
        public static let unavailable: UInt16 = 0x0805

        /// Whether `type` belongs to this protocol.
        public static func contains(_ type: UInt16) -> Bool { type >= hello && type <= unavailable }
    }

    /// The format version this code writes and reads.
    public static let version: UInt8 = 1
    /// Most records in one batch.
    public static let maximumRecords = 65_536
    /// Most bytes of record data in one batch (8 MiB, inside a transport frame's 16 MiB).
    public static let maximumBatchBytes = 8 << 20

    /// The journal the message is about.
    public var journal: UInt64 {
        switch self {
        case .hello(let journal, _), .resume(let journal, _), .records(let journal, _),
            .acknowledged(let journal, _), .unavailable(let journal, _, _):
            journal
        }
    }

    /// Encodes the message.
    public func encode() -> Message {
        var buffer = ByteBuffer()
        buffer.writeInteger(Self.version)
        buffer.writeInteger(journal, endianness: .little)
        let type: UInt16
        switch self {
        case .hello(_, let durable):
            type = MessageType.hello
            buffer.writeInteger(durable, endianness: .little)
        case .resume(_, let from):
            type = MessageType.resume
            buffer.writeInteger(from, endianness: .little)
        case .records(_, let records):
            type = MessageType.records
            buffer.writeInteger(UInt32(truncatingIfNeeded: records.count), endianness: .little)
            for record in records {
                buffer.writeMultipleIntegers(
                    record.sequence, record.time.nanoseconds, record.volume.rawValue, record.offset,
                    UInt32(truncatingIfNeeded: record.bytes.count), endianness: .little)
                buffer.writeBytes(record.bytes)
            }
        case .acknowledged(_, let through):
            type = MessageType.acknowledged
            buffer.writeInteger(through, endianness: .little)
        case .unavailable(_, let requested, let oldest):
            type = MessageType.unavailable
            buffer.writeMultipleIntegers(requested, oldest, endianness: .little)
        }
        return Message(type: type, payload: buffer)
    }

    /// Decodes a message; throws ``RecoveryError`` (``RecoveryError/Code/truncated``,
    /// ``RecoveryError/Code/unsupportedVersion``, ``RecoveryError/Code/invalidField``) for
    /// anything but a valid encoding.
    public static func decode(_ message: Message) throws(RecoveryError) -> ShippingMessage {
        var buffer = message.payload
        guard MessageType.contains(message.type) else {
            throw RecoveryError(.notRecoveryData, "message type 0x\(String(message.type, radix: 16))")
        }
        guard let (version, journal) = buffer.readMultipleIntegers(endianness: .little, as: (UInt8, UInt64).self) else {
            throw RecoveryError(.truncated, "shipping message header")
        }
        guard version == Self.version else { throw RecoveryError(.unsupportedVersion, "shipping version \(version)") }
        let decoded: ShippingMessage
        switch message.type {
        case MessageType.hello:
            guard let durable = buffer.readInteger(endianness: .little, as: UInt64.self) else {
                throw RecoveryError(.truncated, "hello")
            }
            decoded = .hello(journal: journal, durableThrough: durable)
        case MessageType.resume:
            guard let from = buffer.readInteger(endianness: .little, as: UInt64.self), from >= 1 else {
                throw RecoveryError(.truncated, "resume")
            }
            decoded = .resume(journal: journal, from: from)
        case MessageType.records:
            guard let count = buffer.readInteger(endianness: .little, as: UInt32.self) else {
                throw RecoveryError(.truncated, "records count")
            }
            guard count >= 1, count <= maximumRecords else {
                throw RecoveryError(.invalidField, "a batch of \(count) records (1 to \(maximumRecords))")
            }
            var records: [JournalRecord] = []
            records.reserveCapacity(Int(min(count, 1024)))
            var total = 0
            for index in 0..<Int(count) {
                guard
                    let (sequence, time, volume, offset, length) = buffer.readMultipleIntegers(
                        endianness: .little, as: (UInt64, Int64, UInt32, UInt64, UInt32).self)
                else { throw RecoveryError(.truncated, "record \(index) of \(count)") }
                total += Int(length)
                guard total <= maximumBatchBytes else {
                    throw RecoveryError(.invalidField, "a batch of more than \(maximumBatchBytes) bytes")
                }
                guard offset <= UInt64(Int.max / 2), let bytes = buffer.readBytes(length: Int(length)) else {
                    throw RecoveryError(.truncated, "record \(index)'s \(length) bytes")
                }
                if let previous = records.last {
                    guard sequence == previous.sequence &+ 1, time >= previous.time.nanoseconds else {
                        throw RecoveryError(
                            .invalidField,
                            "record \(sequence) at \(time) ns after record \(previous.sequence) at \(previous.time)")
                    }
                }
                guard sequence >= 1 else { throw RecoveryError(.invalidField, "record sequence 0") }
                records.append(
                    JournalRecord(
                        sequence: sequence, time: Instant(nanoseconds: time), volume: VolumeID(volume), offset: offset,
                        bytes: bytes))
            }
            decoded = .records(journal: journal, records)
        case MessageType.acknowledged:
            guard let through = buffer.readInteger(endianness: .little, as: UInt64.self) else {
                throw RecoveryError(.truncated, "acknowledged")
            }
            decoded = .acknowledged(journal: journal, through: through)
        default:
            guard let (requested, oldest) = buffer.readMultipleIntegers(endianness: .little, as: (UInt64, UInt64).self)
            else { throw RecoveryError(.truncated, "unavailable") }
            decoded = .unavailable(journal: journal, requested: requested, oldest: oldest)
        }
        guard buffer.readableBytes == 0 else {
            throw RecoveryError(.invalidField, "\(buffer.readableBytes) bytes after the message")
        }
        return decoded
    }
}
