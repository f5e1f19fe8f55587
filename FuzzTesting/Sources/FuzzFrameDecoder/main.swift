import FaultToleranceCore
import FuzzSupport
import NIOCore

// Feeds arbitrary bytes to the stream frame decoder in two pieces (the split point taken
// from the first byte) and decodes each frame's envelope. Every input must decode or throw
// FrameError, never crash; every decoded frame must re-encode to exactly the input bytes it
// was cut from (the decoder accepts nothing the encoder would not write).
//
// A random mutation almost never carries a valid CRC32C, which would keep the fuzzer in front
// of the checksum check; so when the first byte is odd the harness first repairs the checksum
// of every frame it can find, letting mutations reach the envelope and payload parsing.
/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard let first = input.first else { return 0 }
    // The first byte steers the harness; the rest is the stream.
    let stream = Array(input.dropFirst())
    let bytes = first & 1 == 1 ? repairChecksums(stream) : stream
    return bytes.withUnsafeBytes { decode($0, split: Int(first >> 1)) }
}

func decode(_ bytes: UnsafeRawBufferPointer, split: Int) -> CInt {
    let split = min(bytes.count, split)
    var decoder = FrameDecoder(maximumPayloadLength: 1 << 16)
    var pending = ByteBuffer(bytes: bytes[0..<split])
    var consumed = 0

    func drain() throws(FrameError) {
        while let frame = try decoder.next(from: &pending) {
            let encoded = Array(frame.encoded().readableBytesView)
            if encoded != Array(bytes[consumed..<(consumed + encoded.count)]) {
                fatalError("a decoded frame does not re-encode to its input bytes")
            }
            consumed += encoded.count
            _ = try? EnvelopeCodec.decode(frame)
        }
    }

    do {
        try drain()
        pending.writeBytes(bytes[split...])
        try drain()
    } catch {
        // A typed FrameError is the expected outcome for hostile bytes.
    }
    return 0
}
