import FaultToleranceCore
import NIOCore
import Testing

@Suite("Frames and envelopes")
struct FrameTests {
    static func frame(_ type: UInt16, _ bytes: [UInt8]) -> Frame {
        Frame(type: type, payload: ByteBuffer(bytes: bytes))
    }

    @Test("round trip of many frames fed a byte at a time")
    func roundTrip() throws {
        let frames = (0..<20).map { Self.frame(UInt16($0), (0..<($0 * 13)).map { UInt8(truncatingIfNeeded: $0) }) }
        var stream = ByteBuffer()
        for frame in frames { frame.encode(into: &stream) }
        var decoder = FrameDecoder()
        var pending = ByteBuffer()
        var decoded: [Frame] = []
        while let byte = stream.readInteger(as: UInt8.self) {
            pending.writeInteger(byte)
            while let frame = try decoder.next(from: &pending) { decoded.append(frame) }
        }
        #expect(decoded == frames)
        #expect(decoder.offset == frames.reduce(0) { $0 + Frame.headerSize + $1.payload.readableBytes })
    }

    @Test("every single-bit flip is detected with the frame's offset")
    func bitFlips() throws {
        let first = Self.frame(1, [1, 2, 3, 4])
        let second = Self.frame(2, Array(repeating: 0xAB, count: 40))
        var stream = ByteBuffer()
        first.encode(into: &stream)
        let secondOffset = stream.readableBytes
        second.encode(into: &stream)
        let bytes = Array(stream.readableBytesView)
        for bit in (secondOffset * 8)..<(bytes.count * 8) {
            var damaged = bytes
            damaged[bit / 8] ^= UInt8(1 << (bit % 8))
            do {
                let frames = try FrameDecoder.decodeAll(ByteBuffer(bytes: damaged))
                Issue.record("flip at bit \(bit) went unnoticed: \(frames.count) frames")
            } catch {
                // A flipped length may make the frame look longer (truncated) or too large.
                #expect(error.offset == secondOffset, "bit \(bit): \(error)")
            }
        }
    }

    @Test("hostile headers get typed errors")
    func hostileHeaders() {
        var good = ByteBuffer()
        Self.frame(9, [1, 2, 3]).encode(into: &good)
        let bytes = Array(good.readableBytesView)
        func damaged(_ index: Int, _ value: UInt8) -> ByteBuffer {
            var copy = bytes
            copy[index] = value
            return ByteBuffer(bytes: copy)
        }
        let cases: [(ByteBuffer, FrameError.Code)] = [
            (damaged(0, 0x00), .badMagic),
            (damaged(2, 7), .unsupportedVersion),
            (damaged(3, 1), .unknownFlags),
            (damaged(7, 1), .reservedNotZero),
            (damaged(8, 0x7F), .frameTooLarge),
            (damaged(15, bytes[15] ^ 1), .checksumMismatch),
            (ByteBuffer(bytes: bytes.dropLast()), .truncated),
        ]
        for (input, code) in cases {
            #expect(throws: FrameError.self) { try FrameDecoder.decodeAll(input, maximumPayloadLength: 1 << 20) }
            do {
                _ = try FrameDecoder.decodeAll(input, maximumPayloadLength: 1 << 20)
            } catch {
                #expect(error.code == code)
            }
        }
    }

    @Test("envelopes carry the sender; a missing sender is malformed")
    func envelopes() throws {
        var buffer = ByteBuffer()
        EnvelopeCodec.encode(Message(type: 5, bytes: [9, 9]), from: "node-a", into: &buffer)
        let frames = try FrameDecoder.decodeAll(buffer)
        let (sender, message) = try EnvelopeCodec.decode(frames[0])
        #expect(sender == "node-a")
        #expect(message == Message(type: 5, bytes: [9, 9]))
        #expect(throws: FrameError.self) { try EnvelopeCodec.decode(Self.frame(5, [])) }
        #expect(throws: FrameError.self) { try EnvelopeCodec.decode(Self.frame(5, [10, 65])) }
    }
}

@Suite("Envelope encoding")
struct EnvelopeEncodingTests {
    @Test("in-place envelope encoding writes exactly the frame of the same payload")
    func sameBytesAsFrame() {
        for size in [0, 1, 100, 70_000] {
            let body = (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 13) }
            var direct = ByteBuffer()
            direct.writeBytes([9, 9, 9])  // a prefix: encoding must append, not overwrite
            _ = direct.readInteger(as: UInt8.self)
            EnvelopeCodec.encode(Message(type: 42, bytes: body), from: "sender-x", into: &direct)
            var payload = ByteBuffer()
            payload.writeInteger(UInt8(8))
            payload.writeString("sender-x")
            payload.writeBytes(body)
            var expected = ByteBuffer(bytes: [9, 9])
            Frame(type: 42, payload: payload).encode(into: &expected)
            #expect(direct == expected, "size \(size)")
        }
    }

    @Test func headerThenPayloadIsTheSameFrame() throws {
        let message = Message(type: 0x0202, bytes: (0..<70_000).map { UInt8(truncatingIfNeeded: $0 &* 31) })
        var whole = ByteBuffer()
        EnvelopeCodec.encode(message, from: "online", into: &whole)
        var split = ByteBuffer()
        EnvelopeCodec.encodeHeader(message, from: "online", into: &split)
        var payload = message.payload
        split.writeBuffer(&payload)
        #expect(split == whole)
        // A producer's own checksum of the body gives the same frame without a second read.
        var known = message
        known.payloadChecksum = message.payload.withUnsafeReadableBytes { CRC32C.checksum($0) }
        var joined = ByteBuffer()
        EnvelopeCodec.encodeHeader(known, from: "online", into: &joined)
        payload = message.payload
        joined.writeBuffer(&payload)
        #expect(joined == whole)
    }
}
