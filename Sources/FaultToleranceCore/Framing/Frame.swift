public import NIOCore

/// One framed message: the unit of every wire protocol in this library.
///
/// Layout (16-byte header, big-endian, then the payload):
///
/// | offset | size | field |
/// |-------:|-----:|-------|
/// | 0  | 2 | magic `0x4654` ("FT") |
/// | 2  | 1 | format version (1) |
/// | 3  | 1 | flags (none defined; must be 0) |
/// | 4  | 2 | message type |
/// | 6  | 2 | reserved (0) |
/// | 8  | 4 | payload length |
/// | 12 | 4 | CRC32C of bytes 0..<12 followed by the payload |
///
/// The checksum covers the header too, so a damaged type or length cannot pass as another
/// valid frame. Decoding never trusts the length before checking it against a limit.
public struct Frame: Sendable, Hashable {
    /// The magic that opens every frame.
    public static let magic: UInt16 = 0x4654
    /// The format version this build writes and reads.
    public static let version: UInt8 = 1
    /// The size of the header in bytes.
    public static let headerSize = 16
    /// The default largest payload a decoder accepts (16 MiB).
    public static let defaultMaximumPayloadLength = 16 << 20

    /// The message type; its meaning belongs to the protocol that sends it.
    public var type: UInt16
    /// The message body.
    public var payload: ByteBuffer

    /// Creates a frame.
    public init(type: UInt16, payload: ByteBuffer) {
        self.type = type
        self.payload = payload
    }

    /// Appends the frame's header and payload to `buffer`.
    public func encode(into buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        buffer.writeInteger(Self.magic)
        buffer.writeInteger(Self.version)
        buffer.writeInteger(UInt8(0))
        buffer.writeInteger(type)
        buffer.writeInteger(UInt16(0))
        buffer.writeInteger(UInt32(truncatingIfNeeded: payload.readableBytes))
        var crc = CRC32C()
        buffer.withUnsafeReadableBytes { raw in
            crc.update(UnsafeRawBufferPointer(rebasing: raw[(start - buffer.readerIndex)...]))
        }
        payload.withUnsafeReadableBytes { crc.update($0) }
        buffer.writeInteger(crc.value)
        var body = payload
        buffer.writeBuffer(&body)
    }

    /// The frame's bytes in a new buffer.
    public func encoded(allocator: ByteBufferAllocator = ByteBufferAllocator()) -> ByteBuffer {
        var buffer = allocator.buffer(capacity: Self.headerSize + payload.readableBytes)
        encode(into: &buffer)
        return buffer
    }
}

/// Cuts frames out of a byte stream, checking every header field and the checksum.
///
/// Feed it the bytes received so far; ``next(from:)`` consumes one whole frame or nothing.
/// Errors carry the stream offset of the bad frame. After an error the stream is out of
/// step: a transport closes the connection rather than hunting for the next magic.
public struct FrameDecoder: Sendable {
    /// The largest payload accepted; longer declared lengths throw
    /// ``FrameError/Code/frameTooLarge`` before any of the payload is buffered.
    public let maximumPayloadLength: Int
    /// Bytes consumed so far: the stream offset of the next frame.
    public private(set) var offset = 0

    /// Creates a decoder with a payload limit.
    public init(maximumPayloadLength: Int = Frame.defaultMaximumPayloadLength) {
        self.maximumPayloadLength = maximumPayloadLength
    }

    /// Decodes the next frame from the front of `buffer`, or returns `nil` (consuming
    /// nothing) when the buffer does not yet hold a whole frame.
    public mutating func next(from buffer: inout ByteBuffer) throws(FrameError) -> Frame? {
        guard
            let header = try FrameHeader.decode(
                buffer, at: buffer.readerIndex, maximumPayloadLength: maximumPayloadLength, offset: offset)
        else { return nil }
        let length = Int(header.length)
        let total = Frame.headerSize + length
        guard buffer.readableBytes >= total else { return nil }
        var crc = header.partialChecksum
        buffer.withUnsafeReadableBytes { raw in
            crc.update(UnsafeRawBufferPointer(rebasing: raw[Frame.headerSize..<total]))
        }
        try header.verify(crc, offset: offset)
        buffer.moveReaderIndex(forwardBy: Frame.headerSize)
        // safe: the readable-bytes check above guarantees `length` bytes are present.
        let payload = buffer.readSlice(length: length) ?? ByteBuffer()
        offset += total
        return Frame(type: header.type, payload: payload)
    }

    /// Decodes every frame in `bytes`, which must hold whole frames only: trailing bytes
    /// throw ``FrameError/Code/truncated``.
    public static func decodeAll(
        _ bytes: ByteBuffer,
        maximumPayloadLength: Int = Frame.defaultMaximumPayloadLength
    ) throws(FrameError) -> [Frame] {
        var decoder = FrameDecoder(maximumPayloadLength: maximumPayloadLength)
        var buffer = bytes
        var frames: [Frame] = []
        while let frame = try decoder.next(from: &buffer) { frames.append(frame) }
        if buffer.readableBytes > 0 {
            throw FrameError(
                .truncated, offset: decoder.offset, detail: "\(buffer.readableBytes) bytes of an incomplete frame")
        }
        return frames
    }
}

/// A frame's 16-byte header, checked field by field before anything trusts its length.
///
/// ``FrameDecoder`` uses it for whole frames; a transport that assembles a long payload as it
/// arrives uses it to learn the length first and ``partialChecksum`` to checksum the payload
/// piece by piece.
public struct FrameHeader: Sendable, Hashable {
    /// The message type.
    public var type: UInt16
    /// The payload length (at most the decoder's limit).
    public var length: UInt32
    /// The checksum the frame declares.
    public var checksum: UInt32
    /// The CRC32C of the header's first 12 bytes: continue it over the payload, then
    /// ``verify(_:offset:)``.
    public var partialChecksum: CRC32C

    /// Decodes and checks the header at `index`, or returns `nil` when fewer than 16 bytes are
    /// readable there. `offset` is the frame's stream offset, for errors.
    public static func decode(
        _ buffer: ByteBuffer, at index: Int, maximumPayloadLength: Int, offset: Int
    ) throws(FrameError) -> FrameHeader? {
        guard index >= buffer.readerIndex, buffer.writerIndex - index >= Frame.headerSize,
            let magic = buffer.getInteger(at: index, as: UInt16.self),
            let version = buffer.getInteger(at: index + 2, as: UInt8.self),
            let flags = buffer.getInteger(at: index + 3, as: UInt8.self),
            let type = buffer.getInteger(at: index + 4, as: UInt16.self),
            let reserved = buffer.getInteger(at: index + 6, as: UInt16.self),
            let length = buffer.getInteger(at: index + 8, as: UInt32.self),
            let checksum = buffer.getInteger(at: index + 12, as: UInt32.self)
        else { return nil }
        guard magic == Frame.magic else {
            throw FrameError(.badMagic, offset: offset, detail: "magic 0x\(String(magic, radix: 16)), expected 0x4654")
        }
        guard version == Frame.version else {
            throw FrameError(.unsupportedVersion, offset: offset, detail: "version \(version), this build reads 1")
        }
        guard flags == 0 else {
            throw FrameError(.unknownFlags, offset: offset, detail: "flags 0x\(String(flags, radix: 16))")
        }
        guard reserved == 0 else { throw FrameError(.reservedNotZero, offset: offset, detail: "reserved \(reserved)") }
        guard Int(length) <= maximumPayloadLength else {
            throw FrameError(
                .frameTooLarge, offset: offset, detail: "payload of \(length) bytes exceeds \(maximumPayloadLength)")
        }
        var crc = CRC32C()
        buffer.withUnsafeReadableBytes { raw in
            let start = index - buffer.readerIndex
            crc.update(UnsafeRawBufferPointer(rebasing: raw[start..<(start + 12)]))
        }
        return FrameHeader(type: type, length: length, checksum: checksum, partialChecksum: crc)
    }

    /// Throws ``FrameError/Code/checksumMismatch`` unless `computed` (``partialChecksum``
    /// continued over the whole payload) matches the declared checksum.
    public func verify(_ computed: CRC32C, offset: Int) throws(FrameError) {
        guard computed.value == checksum else {
            throw FrameError(
                .checksumMismatch, offset: offset,
                detail: "stored 0x\(String(checksum, radix: 16)), computed 0x\(String(computed.value, radix: 16))")
        }
    }
}
