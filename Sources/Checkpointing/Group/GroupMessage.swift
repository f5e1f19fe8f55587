public import FaultToleranceCore
public import NIOCore

/// The group checkpoint protocol's messages on a ``FaultToleranceCore/Transport``: message types
/// `0x0301`–`0x0307` (and ``GroupChannelData``, `0x0308`).
///
/// Every payload is `version (u8) = 1, group (u64), epoch (u64)`, then, by type: `prepare` a
/// flag byte (bit 0: full) and the coordinator's last committed epoch (u64); `prepared` the checkpoint id (u64, not 0); `failed` the reason's
/// length (u16, at most 512) and its UTF-8 bytes; the others nothing. Integers are big-endian
/// (NIO's default, as in the live copy's messages). The transport's frame carries a CRC32C over
/// the payload. A payload with anything else, or with bytes left over, is refused.
public enum GroupMessage: Sendable, Hashable {
    /// Coordinator to member: take your checkpoint for `epoch` now (`full`: not incremental).
    /// `lastCommitted` is the coordinator's last committed epoch, which settles a checkpoint the
    /// member still holds undecided from an earlier epoch (committed exactly when it is that
    /// epoch).
    case prepare(epoch: UInt64, full: Bool, lastCommitted: UInt64)
    /// Member to coordinator: my checkpoint for `epoch` is durable, not yet committed.
    case prepared(epoch: UInt64, checkpoint: CheckpointID)
    /// Member to coordinator: I could not take my checkpoint for `epoch`.
    case failed(epoch: UInt64, reason: String)
    /// Coordinator to member: `epoch` is committed (also the answer to ``fate(epoch:)``).
    case commit(epoch: UInt64)
    /// Coordinator to member: `epoch` is aborted (also the answer to ``fate(epoch:)``).
    case abort(epoch: UInt64)
    /// Member to coordinator: what became of `epoch`? (Asked by a member holding a prepared
    /// checkpoint without a decision: after a restart, or when the decision is late.)
    case fate(epoch: UInt64)
    /// Member to member, on the channel between them: everything I sent you before this was
    /// sent before my cut for `epoch`; everything after it, after.
    case marker(epoch: UInt64)

    /// The format version this code writes and reads.
    public static let version: UInt8 = 1
    /// The first message type of the block (Checkpointing owns `0x0300`–`0x03FF`).
    public static let firstType: UInt16 = 0x0301
    /// The longest failure reason carried, in UTF-8 bytes; longer ones are cut.
    public static let maximumReasonBytes = 512

    /// The epoch the message is about.
    public var epoch: UInt64 {
        switch self {
        case .prepare(let epoch, _, _), .prepared(let epoch, _), .failed(let epoch, _), .commit(let epoch),
            .abort(let epoch), .fate(let epoch), .marker(let epoch):
            epoch
        }
    }

    /// The message type on the wire.
    public var type: UInt16 {
        switch self {
        case .prepare: 0x0301
        case .prepared: 0x0302
        case .failed: 0x0303
        case .commit: 0x0304
        case .abort: 0x0305
        case .fate: 0x0306
        case .marker: 0x0307
        }
    }

    /// Whether `type` is one of this protocol's message types.
    public static func handles(_ type: UInt16) -> Bool { (0x0301...0x0307).contains(type) }

    /// The message for group `group`, ready to send.
    public func message(group: UInt64) -> Message {
        var buffer = ByteBuffer()
        buffer.writeMultipleIntegers(Self.version, group, epoch)
        switch self {
        case .prepare(_, let full, let lastCommitted):
            buffer.writeMultipleIntegers(UInt8(full ? 1 : 0), lastCommitted)
        case .prepared(_, let checkpoint): buffer.writeInteger(checkpoint.rawValue)
        case .failed(_, let reason):
            // Cut to the limit on a character boundary.
            var text = Substring(String(decoding: reason.utf8.prefix(Self.maximumReasonBytes), as: UTF8.self))
            while text.utf8.count > Self.maximumReasonBytes { text = text.dropLast() }
            let bytes = Array(text.utf8)
            buffer.writeInteger(UInt16(bytes.count))
            buffer.writeBytes(bytes)
        case .commit, .abort, .fate, .marker: break
        }
        return Message(type: type, payload: buffer)
    }

    /// Decodes a message of this protocol, returning its group and contents.
    public static func decode(_ message: Message) throws(CheckpointError) -> (group: UInt64, message: GroupMessage) {
        var buffer = message.payload
        guard let (version, group, epoch) = buffer.readMultipleIntegers(as: (UInt8, UInt64, UInt64).self) else {
            throw malformed(message.type, "payload of \(message.payload.readableBytes) bytes is short")
        }
        guard version == Self.version else { throw malformed(message.type, "version \(version)") }
        let decoded: GroupMessage
        switch message.type {
        case 0x0301:
            guard let (flags, lastCommitted) = buffer.readMultipleIntegers(as: (UInt8, UInt64).self), flags <= 1,
                lastCommitted < epoch
            else { throw malformed(message.type, "bad prepare flags or last committed epoch") }
            decoded = .prepare(epoch: epoch, full: flags == 1, lastCommitted: lastCommitted)
        case 0x0302:
            guard let id = buffer.readInteger(as: UInt64.self), id > 0 else {
                throw malformed(message.type, "bad checkpoint id")
            }
            decoded = .prepared(epoch: epoch, checkpoint: CheckpointID(id))
        case 0x0303:
            guard let length = buffer.readInteger(as: UInt16.self), Int(length) <= maximumReasonBytes,
                let bytes = buffer.readBytes(length: Int(length))
            else { throw malformed(message.type, "bad reason") }
            decoded = .failed(epoch: epoch, reason: String(decoding: bytes, as: UTF8.self))
        case 0x0304: decoded = .commit(epoch: epoch)
        case 0x0305: decoded = .abort(epoch: epoch)
        case 0x0306: decoded = .fate(epoch: epoch)
        case 0x0307: decoded = .marker(epoch: epoch)
        default: throw malformed(message.type, "not a group checkpoint message")
        }
        guard buffer.readableBytes == 0 else {
            throw malformed(message.type, "\(buffer.readableBytes) bytes after the message")
        }
        return (group, decoded)
    }

    private static func malformed(_ type: UInt16, _ detail: String) -> CheckpointError {
        CheckpointError(.malformedMessage, detail: "group message 0x\(String(type, radix: 16)): \(detail)")
    }
}

/// An application message between group members, carried by ``GroupMemberService/send(_:to:)``
/// in a message of type `0x0308`: version (u8) = 1, group (u64), the application message's
/// type (u16, below `0xFF00`), then its payload. Carried this way it travels on the same
/// ordered channel as the members' markers, which is what lets a group cut be consistent.
public enum GroupChannelData {
    /// The message type.
    public static let type: UInt16 = 0x0308

    /// Wraps `message` for group `group`.
    public static func encode(_ message: Message, group: UInt64) -> Message {
        var buffer = ByteBuffer()
        buffer.reserveCapacity(11 + message.payload.readableBytes)
        buffer.writeMultipleIntegers(GroupMessage.version, group, message.type)
        var payload = message.payload
        buffer.writeBuffer(&payload)
        return Message(type: type, payload: buffer)
    }

    /// Unwraps a message of type ``type``: its group and the application message.
    public static func decode(_ message: Message) throws(CheckpointError) -> (group: UInt64, message: Message) {
        var buffer = message.payload
        guard message.type == type,
            let (version, group, inner) = buffer.readMultipleIntegers(as: (UInt8, UInt64, UInt16).self)
        else { throw CheckpointError(.malformedMessage, detail: "group channel data: short or of another type") }
        guard version == GroupMessage.version else {
            throw CheckpointError(.malformedMessage, detail: "group channel data: version \(version)")
        }
        guard inner < Message.firstReservedType else {
            throw CheckpointError(.malformedMessage, detail: "group channel data: reserved type \(inner)")
        }
        return (group, Message(type: inner, payload: buffer))
    }
}
