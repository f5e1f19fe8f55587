public import NIOCore

/// A message as protocols see it: a type and a body. Transports frame it, add the sender
/// and check it on arrival.
public struct Message: Sendable, Hashable {
    /// The first type reserved for transports' own use (handshakes); protocols use types
    /// below it.
    public static let firstReservedType: UInt16 = 0xFF00

    /// The message type; its meaning belongs to the protocol that sends it.
    public var type: UInt16
    /// The message body.
    public var payload: ByteBuffer
    /// The CRC32C of `payload`'s readable bytes, when its producer already computed it (while
    /// building the payload, with the data hot in cache); a transport then joins it to the
    /// frame's checksum with ``CRC32C/combine(_:_:secondLength:)`` instead of reading the body
    /// again. A wrong value makes the receiver reject the frame. Not part of equality.
    public var payloadChecksum: UInt32?

    /// Creates a message.
    public init(type: UInt16, payload: ByteBuffer, payloadChecksum: UInt32? = nil) {
        self.type = type
        self.payload = payload
        self.payloadChecksum = payloadChecksum
    }

    /// Equal when type and payload are.
    public static func == (lhs: Message, rhs: Message) -> Bool {
        lhs.type == rhs.type && lhs.payload == rhs.payload
    }

    /// Hashes type and payload.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(type)
        hasher.combine(payload)
    }

    /// A copy of the body's bytes, for code that does not work with NIO's `ByteBuffer`.
    public var bytes: [UInt8] { Array(payload.readableBytesView) }

    /// Creates a message whose body is a copy of `bytes`.
    public init(type: UInt16, bytes: some Sequence<UInt8>) {
        self.type = type
        var buffer = ByteBuffer()
        buffer.writeBytes(Array(bytes))
        self.payload = buffer
    }
}

/// A message as it arrived: who sent it and on which path.
public struct Envelope: Sendable, Hashable {
    /// The sender.
    public var from: NodeID
    /// The path it arrived on, for transports with several (UDP); `nil` for a single stream.
    public var path: PathID?
    /// The message.
    public var message: Message

    /// Creates an envelope.
    public init(from: NodeID, path: PathID?, message: Message) {
        self.from = from
        self.path = path
        self.message = message
    }
}

/// The wire form of an envelope: a ``Frame`` whose type is the message's and whose payload
/// is the sender's name (one length byte, then UTF-8) followed by the message body.
public enum EnvelopeCodec {
    /// Frames `message` from `sender` into `buffer`, writing header, sender and body in
    /// place (one copy of the body, no intermediate payload buffer) and checksumming the
    /// header and payload around the checksum field. The bytes are exactly those of
    /// ``Frame/encode(into:)`` for the same payload.
    public static func encode(_ message: Message, from sender: NodeID, into buffer: inout ByteBuffer) {
        buffer.reserveCapacity(
            minimumWritableBytes: Frame.headerSize + 1 + sender.name.utf8.count + message.payload.readableBytes)
        encodeHeader(message, from: sender, into: &buffer)
        var body = message.payload
        buffer.writeBuffer(&body)
    }

    /// Encodes only the frame header and sender name of `message` into `buffer`; the caller
    /// writes `message.payload` right after it, unchanged. The checksum covers the payload
    /// where it lies, so a large body is sent without being copied into the frame. Together
    /// the two are byte for byte what ``encode(_:from:into:)`` writes.
    public static func encodeHeader(_ message: Message, from sender: NodeID, into buffer: inout ByteBuffer) {
        encodeHeader(message, inline: false, bodyCount: 0, from: sender, into: &buffer) { crc in
            if let known = message.payloadChecksum {
                return CRC32C.combine(crc.value, known, secondLength: message.payload.readableBytes)
            }
            message.payload.withUnsafeReadableBytes { crc.update($0) }
            return crc.value
        }
    }

    /// Encodes the frame header, the sender's name and `message.payload` into `buffer`, for a
    /// frame whose payload goes on with `body`: the caller writes `body` right after, unchanged
    /// (see ``Transport/send(_:appending:to:)``). The checksum reads `body` where it lies.
    public static func encodeHeader(
        _ message: Message, appending body: ByteBuffer, from sender: NodeID, into buffer: inout ByteBuffer
    ) {
        encodeHeader(message, inline: true, bodyCount: body.readableBytes, from: sender, into: &buffer) { crc in
            body.withUnsafeReadableBytes { crc.update($0) }
            return crc.value
        }
    }

    /// The frame header and sender (and, `inline`, `message.payload`) for a payload that ends
    /// `bodyCount` bytes later; `finish` adds what is not in `buffer` to the checksum.
    private static func encodeHeader(
        _ message: Message, inline: Bool, bodyCount: Int, from sender: NodeID, into buffer: inout ByteBuffer,
        finish: (inout CRC32C) -> UInt32
    ) {
        let nameLength = sender.name.utf8.count
        let payloadLength = 1 + nameLength + message.payload.readableBytes + bodyCount
        let start = buffer.writerIndex
        buffer.writeMultipleIntegers(
            Frame.magic, Frame.version, UInt8(0), message.type, UInt16(0), UInt32(truncatingIfNeeded: payloadLength),
            UInt32(0))
        buffer.writeInteger(UInt8(truncatingIfNeeded: nameLength))
        buffer.writeString(sender.name)
        if inline {
            var head = message.payload
            buffer.writeBuffer(&head)
        }
        var crc = CRC32C()
        buffer.withUnsafeReadableBytes { raw in
            let frame = UnsafeRawBufferPointer(rebasing: raw[(start - buffer.readerIndex)...])
            crc.update(UnsafeRawBufferPointer(rebasing: frame[0..<12]))
            crc.update(UnsafeRawBufferPointer(rebasing: frame[Frame.headerSize...]))
        }
        buffer.setInteger(finish(&crc), at: start + 12)
    }

    /// Splits a decoded frame back into sender and message; throws
    /// ``FrameError/Code/malformedPayload`` for a missing or invalid sender name.
    public static func decode(_ frame: Frame, offset: Int = 0) throws(FrameError) -> (NodeID, Message) {
        var payload = frame.payload
        guard let length = payload.readInteger(as: UInt8.self), length > 0,
            let name = payload.readString(length: Int(length)),
            let sender = NodeID(name)
        else {
            throw FrameError(.malformedPayload, offset: offset, detail: "envelope has no valid sender name")
        }
        return (sender, Message(type: frame.type, payload: payload))
    }
}
