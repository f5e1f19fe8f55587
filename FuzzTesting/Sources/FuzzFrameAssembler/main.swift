import FaultToleranceCore
import FaultToleranceNIO
import FuzzSupport
import NIOCore
import NIOEmbedded

// Differential harness for TCPTransport's inbound decoder: the stream is fed to FrameAssembler
// in pieces whose sizes come from the first bytes of the input, and what it delivers must
// equal what the whole-frame FrameDecoder and EnvelopeCodec make of the same bytes: the same
// envelopes in the same order, and an error exactly when they report one. Must never crash.
// As in FuzzFrameDecoder, an odd first byte repairs each frame's CRC32C first so mutations
// reach the envelope parsing.

/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = Array(UnsafeRawBufferPointer(start: start, count: count))
    guard input.count >= 3 else { return 0 }
    // Byte 0 steers checksum repair, bytes 1-2 the piece sizes; the rest is the stream.
    let pieces = [Int(input[1]) + 1, Int(input[2]) * 37 + 1]
    let raw = Array(input.dropFirst(3))
    let stream = input[0] & 1 == 1 ? repairChecksums(raw) : raw
    let expected = reference(stream)
    let actual = assemble(stream, pieces: pieces)
    guard actual.envelopes.count == expected.envelopes.count,
        zip(actual.envelopes, expected.envelopes).allSatisfy({ $0.0 == $1.0 && $0.1 == $1.1 })
    else { fatalError("the assembler delivered other envelopes than the frame decoder") }
    guard actual.failed == expected.failed else {
        fatalError("the assembler \(actual.failed ? "failed" : "did not fail") where the frame decoder did not")
    }
    return 0
}

let limit = 1 << 16

func reference(_ stream: [UInt8]) -> (envelopes: [(NodeID, Message)], failed: Bool) {
    var decoder = FrameDecoder(maximumPayloadLength: limit)
    var buffer = ByteBuffer(bytes: stream)
    var envelopes: [(NodeID, Message)] = []
    do {
        while let frame = try decoder.next(from: &buffer) {
            envelopes.append(try EnvelopeCodec.decode(frame))
        }
    } catch {
        return (envelopes, true)
    }
    return (envelopes, false)
}

func assemble(_ stream: [UInt8], pieces: [Int]) -> (envelopes: [(NodeID, Message)], failed: Bool) {
    let channel = EmbeddedChannel()
    var envelopes: [(NodeID, Message)] = []
    var failed = false
    do {
        try channel.pipeline.syncOperations.addHandler(
            FrameAssembler(maximumPayloadLength: limit, budget: PartialFrameBudget(limit: 4 * limit)))
    } catch {
        fatalError("cannot set up the channel: \(error)")
    }
    var offset = 0
    var index = 0
    while offset < stream.count {
        let count = min(pieces[index % pieces.count], stream.count - offset)
        do {
            try channel.writeInbound(ByteBuffer(bytes: stream[offset..<(offset + count)]))
        } catch is FrameError {
            failed = true
        } catch {
            fatalError("unexpected error type: \(error)")
        }
        while let envelope = try? channel.readInbound(as: (NodeID, Message).self) { envelopes.append(envelope) }
        offset += count
        index += 1
    }
    _ = try? channel.finish()
    return (envelopes, failed)
}
