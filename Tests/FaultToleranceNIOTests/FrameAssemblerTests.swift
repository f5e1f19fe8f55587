import FaultToleranceCore
import FaultToleranceNIO
import NIOCore
import NIOEmbedded
import Testing

@Suite("FrameAssembler")
struct FrameAssemblerTests {
    /// Deterministic bytes for a seed.
    static func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
    }

    /// Messages of every size class: empty, small, just under and over the reuse threshold, and
    /// a megabyte.
    static let messages: [Message] = [0, 1, 100, 4096, 65_535, 65_536, 70_000, 1 << 20, 3, 200_000].enumerated().map {
        index, size in
        Message(type: UInt16(index + 1), payload: ByteBuffer(bytes: bytes(size, seed: UInt64(index))))
    }

    static func stream(_ messages: [Message]) -> [UInt8] {
        var buffer = ByteBuffer()
        for message in messages { EnvelopeCodec.encode(message, from: "peer", into: &buffer) }
        return Array(buffer.readableBytesView)
    }

    /// Feeds `stream` in pieces whose sizes cycle through `pieces`, collecting what comes out.
    static func feed(_ stream: [UInt8], pieces: [Int]) throws -> (
        received: [(NodeID, Message)], channel: EmbeddedChannel
    ) {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(FrameAssembler(maximumPayloadLength: 4 << 20))
        var received: [(NodeID, Message)] = []
        var offset = 0
        var index = 0
        while offset < stream.count {
            let count = min(pieces[index % pieces.count], stream.count - offset)
            try channel.writeInbound(ByteBuffer(bytes: stream[offset..<(offset + count)]))
            while let decoded = try channel.readInbound(as: (NodeID, Message).self) { received.append(decoded) }
            offset += count
            index += 1
        }
        return (received, channel)
    }

    @Test(
        "every split of the stream yields the same messages as the whole-frame decoder",
        arguments: [[1], [7, 13], [16], [15, 1, 2], [4096], [65_536], [100_000, 3], [1 << 22]])
    func anySplitDecodesTheSame(pieces: [Int]) throws {
        let stream = Self.stream(Self.messages)
        let (received, channel) = try Self.feed(stream, pieces: pieces)
        #expect(received.count == Self.messages.count)
        for ((sender, message), expected) in zip(received, Self.messages) {
            #expect(sender == "peer")
            #expect(message == expected, "type \(expected.type), \(expected.payload.readableBytes) bytes")
        }
        _ = try channel.finish()
    }

    @Test("payloads held by the consumer stay intact while later large frames reuse buffers")
    func heldPayloadsAreNotOverwritten() throws {
        // Twenty large frames with different contents, split so every one is assembled; the
        // test keeps every payload, so a reused buffer that was still referenced would show.
        let messages = (0..<20).map { index in
            Message(type: 1, payload: ByteBuffer(bytes: Self.bytes(100_000 + index, seed: 1000 + UInt64(index))))
        }
        let (received, channel) = try Self.feed(Self.stream(messages), pieces: [30_000])
        #expect(received.map(\.1) == messages)
        _ = try channel.finish()
    }

    @Test("a damaged byte anywhere is a FrameError, and nothing after it is decoded")
    func damageIsAnError() throws {
        let stream = Self.stream(Array(Self.messages.prefix(8)))
        let lengths = Self.messages.prefix(8).map { Frame.headerSize + 1 + 4 + $0.payload.readableBytes }
        for position in [0, 5, 9, 14, 40, lengths[0] + lengths[1] + 2, stream.count - 1] {
            var damaged = stream
            damaged[position] ^= 0x10
            let channel = EmbeddedChannel()
            try channel.pipeline.syncOperations.addHandler(FrameAssembler(maximumPayloadLength: 4 << 20))
            var failure: (any Error)?
            var received = 0
            var offset = 0
            while offset < damaged.count {
                let count = min(5000, damaged.count - offset)
                do {
                    try channel.writeInbound(ByteBuffer(bytes: damaged[offset..<(offset + count)]))
                } catch {
                    failure = failure ?? error
                }
                while try channel.readInbound(as: (NodeID, Message).self) != nil { received += 1 }
                offset += count
            }
            #expect(failure is FrameError, "damage at \(position)")
            // Frames wholly before the damage still arrive; none after it.
            let before = lengths.reduce(into: [0]) { $0.append($0.last! + $1) }.filter { $0 <= position }.count - 1
            #expect(received == before, "damage at \(position)")
            _ = try? channel.finish()
        }
    }

    @Test("a header declaring more than the limit is refused before any payload is buffered")
    func oversizedHeaderIsRefused() throws {
        let channel = EmbeddedChannel()
        try channel.pipeline.syncOperations.addHandler(FrameAssembler(maximumPayloadLength: 1024))
        var header = ByteBuffer()
        header.writeMultipleIntegers(
            Frame.magic, Frame.version, UInt8(0), UInt16(1), UInt16(0), UInt32(1 << 30), UInt32(0))
        #expect(throws: FrameError.self) { try channel.writeInbound(header) }
        _ = try? channel.finish()
    }

    @Test("frames in progress are charged to a shared budget before allocation, and returned when done or gone")
    func budgetIsChargedAndReturned() throws {
        let budget = PartialFrameBudget(limit: 300_000)
        func header(_ length: Int) -> ByteBuffer {
            var header = ByteBuffer()
            header.writeMultipleIntegers(
                Frame.magic, Frame.version, UInt8(0), UInt16(1), UInt16(0), UInt32(length), UInt32(0))
            return header
        }
        let first = EmbeddedChannel()
        try first.pipeline.syncOperations.addHandler(FrameAssembler(maximumPayloadLength: 1 << 20, budget: budget))
        try first.writeInbound(header(200_000))
        #expect(budget.held == 200_000)
        // A second connection's frame would pass the limit: refused, nothing more held.
        let second = EmbeddedChannel()
        try second.pipeline.syncOperations.addHandler(FrameAssembler(maximumPayloadLength: 1 << 20, budget: budget))
        #expect { try second.writeInbound(header(200_000)) } throws: { ($0 as? FrameError)?.code == .overBudget }
        #expect(budget.held == 200_000)
        // The first connection goes: its reservation is returned.
        _ = try? first.finish()
        #expect(budget.held == 0)
        // A whole frame split across reads is charged while it assembles, then returned.
        let third = EmbeddedChannel()
        try third.pipeline.syncOperations.addHandler(FrameAssembler(maximumPayloadLength: 1 << 20, budget: budget))
        var frame = ByteBuffer()
        EnvelopeCodec.encode(Message(type: 1, bytes: [UInt8](repeating: 3, count: 100_000)), from: "peer", into: &frame)
        let head = frame.readSlice(length: 50_000) ?? ByteBuffer()
        try third.writeInbound(head)
        #expect(budget.held > 0)
        try third.writeInbound(frame)
        #expect(budget.held == 0)
        #expect(try third.readInbound(as: (NodeID, Message).self)?.1.payload.readableBytes == 100_000)
        _ = try? third.finish()
        _ = try? second.finish()
    }
}
