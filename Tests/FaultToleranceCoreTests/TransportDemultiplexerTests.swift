import FaultToleranceCore
import NIOCore
import Testing

/// One transport, several protocols: each channel sees its own block's messages, in order.
@Suite("Transport demultiplexer")
struct TransportDemultiplexerTests {
    static func message(_ type: UInt16, _ index: Int) -> Message {
        Message(type: type, bytes: [UInt8(truncatingIfNeeded: index), UInt8(truncatingIfNeeded: index >> 8)])
    }

    static func index(_ envelope: Envelope) -> Int {
        let bytes = Array(envelope.message.payload.readableBytesView)
        return Int(bytes[0]) | Int(bytes[1]) << 8
    }

    @Test("interleaved blocks arrive at their own channels, each in order; unclaimed blocks are dropped and counted")
    func routesByBlock() async throws {
        let network = InMemoryNetwork()
        let sender = network.join("a")
        let shared = TransportDemultiplexer(network.join("b"), bufferLimit: 8)
        let heartbeats = shared.channel(forBlock: 0x01)
        let liveCopy = shared.channel(forBlock: 0x02)
        let count = 200
        for index in 0..<count {
            try await sender.send(Self.message(0x0100 | UInt16(index % 3), index), to: "b")
            try await sender.send(Self.message(0x0202, index), to: "b")
            if index % 10 == 0 { try await sender.send(Self.message(0x0300, index), to: "b") }
        }
        // Two consumers at once, each taking only its block.
        async let first = heartbeats.incoming.prefix(count).reduce(into: [Envelope]()) { $0.append($1) }
        async let second = liveCopy.incoming.prefix(count).reduce(into: [Envelope]()) { $0.append($1) }
        let (beats, pages) = await (first, second)
        #expect(beats.map(Self.index) == Array(0..<count))
        #expect(beats.allSatisfy { $0.message.type >> 8 == 0x01 && $0.from == "a" })
        #expect(pages.map(Self.index) == Array(0..<count))
        #expect(pages.allSatisfy { $0.message.type == 0x0202 })
        #expect(shared.unclaimed == count / 10)
        await sender.close()
        await heartbeats.close()
    }

    @Test("a channel sends only its own block's types, and says whether the shared transport proves senders")
    func sendsItsBlockOnly() async throws {
        let network = InMemoryNetwork()
        let shared = TransportDemultiplexer(network.join("a"))
        let channel = shared.channel(forBlock: 0x02)
        _ = network.join("b")
        do {
            try await channel.send(Message(type: 0x0101, bytes: [1]), to: "b")
            Issue.record("a type outside the block was sent")
        } catch {
            #expect(error.code == .typeOutsideBlock)
        }
        try await channel.send(Message(type: 0x0201, bytes: [1]), to: "b")
        #expect(channel.localNode == "a")
        #expect(!channel.authenticatesSenders)
    }

    @Test("closing the shared transport ends every channel's stream")
    func closeEndsAll() async throws {
        let network = InMemoryNetwork()
        let shared = TransportDemultiplexer(network.join("a"))
        let one = shared.channel(forBlock: 0x01)
        let two = shared.channel(forBlock: 0x02)
        async let ended = one.incoming.reduce(0) { count, _ in count + 1 }
        await two.close()
        #expect(await ended == 0)
        var iterator = two.incoming.makeAsyncIterator()
        #expect(await iterator.next() == nil)
    }

    @Test("a consumer cancelled while waiting ends its own iteration only: the others go on, and it can start again")
    func cancellationEndsOneChannel() async throws {
        let network = InMemoryNetwork()
        let sender = network.join("a")
        let shared = TransportDemultiplexer(network.join("b"))
        let heartbeats = shared.channel(forBlock: 0x01)
        let liveCopy = shared.channel(forBlock: 0x02)
        // The live-copy consumer waits for a message that never comes, then is cancelled (as a
        // ServiceGroup cancels a service that stops before the others).
        let waiting = Task { await liveCopy.incoming.reduce(0) { count, _ in count + 1 } }
        try await sender.send(Self.message(0x0100, 0), to: "b")
        var beats = heartbeats.incoming.makeAsyncIterator()
        #expect(await beats.next().map(Self.index) == 0)
        waiting.cancel()
        #expect(await waiting.value == 0)
        // Heartbeats still arrive; the live-copy message is kept for the channel's next consumer.
        try await sender.send(Self.message(0x0200, 1), to: "b")
        try await sender.send(Self.message(0x0100, 2), to: "b")
        #expect(await beats.next().map(Self.index) == 2)
        var again = liveCopy.incoming.makeAsyncIterator()
        #expect(await again.next().map(Self.index) == 1)
        #expect(shared.unclaimed == 0)
        await sender.close()
        await heartbeats.close()
    }

    @Test("a message behind a full read-ahead arrives once the full channel's consumer takes one")
    func readAheadIsBounded() async throws {
        let network = InMemoryNetwork()
        let sender = network.join("a")
        let shared = TransportDemultiplexer(network.join("b"), bufferLimit: 4)
        let heartbeats = shared.channel(forBlock: 0x01)
        let liveCopy = shared.channel(forBlock: 0x02)
        // Four live-copy messages fill its read-ahead; the heartbeat behind them waits.
        for index in 0..<4 { try await sender.send(Self.message(0x0200, index), to: "b") }
        try await sender.send(Self.message(0x0100, 4), to: "b")
        let beat = Task {
            var iterator = heartbeats.incoming.makeAsyncIterator()
            return await iterator.next().map(Self.index)
        }
        var pages = liveCopy.incoming.makeAsyncIterator()
        // Taking one makes room: the reader goes on and the heartbeat is delivered.
        #expect(await pages.next().map(Self.index) == 0)
        #expect(await beat.value == 4)
        for index in 1..<4 { #expect(await pages.next().map(Self.index) == index) }
        await sender.close()
        await heartbeats.close()
    }
}
