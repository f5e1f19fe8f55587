import FaultToleranceCore
import FaultToleranceNIO
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import Testing

/// What a hostile peer can make a listener hold: connections, memory for frames it declares
/// and never finishes, and time.
@Suite("TCPTransport bounds against a hostile peer", .timeLimit(.minutes(10)))
struct TCPTransportBoundsTests {
    /// A frame header declaring `length` payload bytes, and the first `sent` of them.
    static func stalledFrame(length: Int, sent: Int) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeMultipleIntegers(
            Frame.magic, Frame.version, UInt8(0), UInt16(1), UInt16(0), UInt32(length), UInt32(0))
        buffer.writeBytes([UInt8](repeating: 0x5A, count: sent))
        return buffer
    }

    @Test("1,000 connections each declaring a 16 MiB frame and stalling: memory stays in budget, all are closed")
    func stalledLargeFrames() async throws {
        let listener = try await TCPTransport.start(
            configuration: .init(
                localNode: "listener", bindAddress: try SocketAddress(ipAddress: "127.0.0.61", port: 0),
                maximumPartialFrameBytes: 64 << 20, partialFrameTimeout: .seconds(1)))
        let clients = NIOLockedValueBox<[any Channel]>([])
        let budgetSeen = NIOLockedValueBox(0)
        let connectionsSeen = NIOLockedValueBox(0)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for batch in 0..<10 {
                group.addTask {
                    for _ in 0..<100 {
                        // A refused connection may be reset before the write: that is fine.
                        // From an address of their own, so a thousand client ports do not crowd
                        // the ones other tests' listeners on 127.0.0.1 are given.
                        guard
                            let channel = try? await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                                .bind(to: SocketAddress(ipAddress: "127.0.0.60", port: 0))
                                .connect(to: listener.localAddress).get()
                        else { continue }
                        clients.withLockedValue { $0.append(channel) }
                        try? await channel.writeAndFlush(Self.stalledFrame(length: 16 << 20 - 64, sent: 4096)).get()
                        budgetSeen.withLockedValue { $0 = max($0, listener.framesInProgressBytes) }
                        connectionsSeen.withLockedValue { $0 = max($0, listener.inboundConnections) }
                    }
                    _ = batch
                }
            }
            try await group.waitForAll()
        }
        // Every connection ends: refused at once (over the connection limit or the budget) or
        // closed when its frame stalls past the timeout. None is left holding memory.
        for channel in clients.withLockedValue({ $0 }) { try? await channel.closeFuture.get() }
        #expect(clients.withLockedValue { $0.count } > 900)
        #expect(budgetSeen.withLockedValue { $0 } <= 64 << 20)
        #expect(connectionsSeen.withLockedValue { $0 } <= 256)
        #expect(listener.framesInProgressBytes == 0)
        await listener.close()
    }

    @Test("a connection that stalls mid-frame is closed after the timeout; one that idles between frames is not")
    func stallTimeout() async throws {
        let listener = try await TCPTransport.start(
            configuration: .init(
                localNode: "listener", bindAddress: try SocketAddress(ipAddress: "127.0.0.61", port: 0),
                partialFrameTimeout: .milliseconds(300)))
        let stalled = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(to: listener.localAddress).get()
        try await stalled.writeAndFlush(Self.stalledFrame(length: 1000, sent: 10)).get()
        let idle = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(to: listener.localAddress).get()
        var whole = ByteBuffer()
        EnvelopeCodec.encode(Message(type: 1, bytes: [1, 2, 3]), from: "peer", into: &whole)
        try await idle.writeAndFlush(whole).get()
        var incoming = listener.incoming.makeAsyncIterator()
        #expect(await incoming.next()?.message.payload.readableBytes == 3)
        // The stalled one is closed by the listener.
        try await stalled.closeFuture.get()
        // The idle one, between frames, still delivers.
        var another = ByteBuffer()
        EnvelopeCodec.encode(Message(type: 1, bytes: [4]), from: "peer", into: &another)
        try await idle.writeAndFlush(another).get()
        #expect(await incoming.next()?.message.payload.readableBytes == 1)
        try await idle.close()
        await listener.close()
    }
}
