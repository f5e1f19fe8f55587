import Benchmark
import BenchmarkSupport
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import NIOCore
import NIOPosix

// Against NIOAsyncChannel (the swift-server way to write this): the whole transfer, then the send
// path and the receive path alone (each half ours, the other half NIOAsyncChannel's), with the
// same frames and decoder. Measured: the whole 1.57x, the send path 1.57x, the receive path
// 1.02x (it was 0.69x on an AsyncStream fed a message at a time, with counting of our own;
// it is on NIOAsyncSequenceProducer now).
//
// TCPTransport moving N messages from a to b on loopback against a raw NIO channel writing
// the same framed bytes, message by message, to a server that only counts bytes: the baseline
// re-sends one pre-built buffer and decodes nothing, so the ratio is our overhead over the raw
// wire (framing, checksums, decoding, delivery to a stream), not a comparison with another
// transport. The custom metric is the throughput ratio ours / raw wire, times 100. The smoke
// run moves 2,000 messages once, against a floor of 0.15x.

let mode = BenchmarkMode.current
let messageCount = mode.isReduced ? 2_000 : 20_000
let messageSize = 1024

/// Counts received bytes and fulfils a promise once `expected` have arrived.
final class ByteCounter: ChannelInboundHandler, @unchecked Sendable {
    // unchecked: touched only on the channel's event loop.
    typealias InboundIn = ByteBuffer
    let expected: Int
    let done: EventLoopPromise<Void>
    var received = 0

    init(expected: Int, done: EventLoopPromise<Void>) {
        self.expected = expected
        self.done = done
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received += unwrapInboundIn(data).readableBytes
        if received >= expected { done.succeed(()) }
    }
}

func oursOnce() async throws {
    try await transferOverTCP(count: messageCount, size: messageSize)
}

func rawOnce() async throws {
    let group = MultiThreadedEventLoopGroup.singleton
    var frame = ByteBuffer()
    EnvelopeCodec.encode(Message(type: 1, bytes: [UInt8](repeating: 7, count: messageSize)), from: "a", into: &frame)
    let done = group.next().makePromise(of: Void.self)
    let expected = frame.readableBytes * messageCount
    let server = try await ServerBootstrap(group: group)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(ByteCounter(expected: expected, done: done))
            }
        }
        .bind(to: try SocketAddress(ipAddress: "127.0.0.1", port: 0)).get()
    guard let address = server.localAddress else { throw ChannelError.unknownLocalAddress }
    let client = try await ClientBootstrap(group: group)
        .channelOption(.socketOption(.tcp_nodelay), value: 1)
        .connect(to: address).get()
    for _ in 0..<messageCount {
        if client.isWritable {
            client.writeAndFlush(frame, promise: nil)
        } else {
            try await client.writeAndFlush(frame).get()
        }
    }
    try await done.futureResult.get()
    try await client.close()
    try await server.close()
}

/// A NIOAsyncChannel server on loopback decoding our frames (FrameAssembler) into a watermarked
/// inbound sequence; the task counts `messageCount` messages from its first connection.
func asyncChannelReceiver() async throws -> (address: SocketAddress, received: Task<Int, any Error>) {
    let server = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .bind(host: "127.0.0.1", port: 0) { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(
                    FrameAssembler(maximumPayloadLength: Frame.defaultMaximumPayloadLength))
                return try NIOAsyncChannel<(NodeID, Message), ByteBuffer>(
                    wrappingChannelSynchronously: channel,
                    configuration: .init(backPressureStrategy: .init(lowWatermark: 256, highWatermark: 1024)))
            }
        }
    guard let address = server.channel.localAddress else { throw ChannelError.unknownLocalAddress }
    let received = Task {
        var received = 0
        try await server.executeThenClose { connections in
            for try await connection in connections {
                try await connection.executeThenClose { inbound, _ in
                    for try await _ in inbound {
                        received += 1
                        if received == messageCount { return }
                    }
                }
                return
            }
        }
        return received
    }
    return (address, received)
}

/// Sends `messageCount` framed messages to `address` through a NIOAsyncChannel's
/// NIOAsyncWriter, then waits for `received` to count them all.
func sendWithAsyncChannel(to address: SocketAddress, received: () async throws -> Int) async throws {
    let client = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
        .channelOption(.socketOption(.tcp_nodelay), value: 1)
        .connect(host: "127.0.0.1", port: address.port ?? 0) { channel in
            channel.eventLoop.makeCompletedFuture {
                try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
            }
        }
    let message = Message(type: 1, bytes: [UInt8](repeating: 7, count: messageSize))
    try await client.executeThenClose { _, outbound in
        for _ in 0..<messageCount {
            var buffer = ByteBuffer()
            buffer.reserveCapacity(Frame.headerSize + 2 + messageSize)
            EnvelopeCodec.encode(message, from: "a", into: &buffer)
            try await outbound.write(buffer)
        }
        guard try await received() == messageCount else { throw ChannelError.eof }
    }
}

/// The same transfer written the way the swift-server ecosystem would write it without our
/// transport: NIOAsyncChannel on both ends (its NIOAsyncWriter for sending, its
/// NIOAsyncSequenceProducer with high/low watermarks for receiving), with the same frames
/// (EnvelopeCodec) and the same decoder (FrameAssembler), and the consumer iterating the one
/// connection's inbound sequence directly. Our transport also merges every connection into one
/// stream and reconnects; this baseline does neither, so it is the cheapest NIOAsyncChannel
/// version, and a ratio above 1 is what ours is worth over it.
func asyncChannelOnce() async throws {
    let (address, received) = try await asyncChannelReceiver()
    try await sendWithAsyncChannel(to: address) { try await received.value }
}

/// The send path alone: TCPTransport's coalescing writer sending to the NIOAsyncChannel
/// receiver of ``asyncChannelOnce()``, against that baseline (whose sender is NIOAsyncWriter).
func sendOursReceiveAsyncChannel() async throws {
    let (address, received) = try await asyncChannelReceiver()
    let a = try await TCPTransport.start(
        configuration: .init(localNode: "a", bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: 0)))
    a.setPeer("b", address: address)
    let message = Message(type: 1, bytes: [UInt8](repeating: 7, count: messageSize))
    for _ in 0..<messageCount { try await a.send(message, to: "b") }
    guard try await received.value == messageCount else { throw ChannelError.eof }
    await a.close()
}

/// The receive path alone: the NIOAsyncChannel sender of ``asyncChannelOnce()`` sending to
/// TCPTransport (its inbound stream on NIOAsyncSequenceProducer, fed a batch per read),
/// against that baseline.
func sendAsyncChannelReceiveOurs() async throws {
    let b = try await TCPTransport.start(
        configuration: .init(localNode: "b", bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: 0)))
    let received = Task {
        var received = 0
        for await _ in b.incoming {
            received += 1
            if received == messageCount { break }
        }
        return received
    }
    try await sendWithAsyncChannel(to: b.localAddress) { await received.value }
    await b.close()
}

/// A benchmark timing `ours` and `baseline` in the same iteration (alternating which goes
/// first) and recording baseline time / our time against `floor`.
func comparison(
    _ name: String, floor: Double, ours: @escaping @Sendable () async throws -> Void,
    baseline: @escaping @Sendable () async throws -> Void
) {
    Benchmark(
        "\(name), \(messageCount) x 1 KiB on loopback",
        configuration: .init(
            metrics: [throughputRatio], maxDuration: .seconds(mode.isReduced ? 3 : 15),
            maxIterations: mode.pick(full: 20, quick: 3, smoke: 1))
    ) { benchmark in
        do {
            var oursTime = 0.0
            var baselineTime = 0.0
            if benchmark.currentIteration % 2 == 0 {
                oursTime = try await seconds(ours)
                baselineTime = try await seconds(baseline)
            } else {
                baselineTime = try await seconds(baseline)
                oursTime = try await seconds(ours)
            }
            record(ratio: baselineTime / oursTime, floor: floor, in: benchmark)
        } catch {
            fail(benchmark, "transport benchmark failed: \(error)")
        }
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration.warmupIterations = mode.warmupIterations
    comparison(
        "TCPTransport overhead over the raw wire (NIO channel, pre-framed bytes, byte counter)", floor: 0.15,
        ours: oursOnce, baseline: rawOnce)
    comparison(
        "TCPTransport against NIOAsyncChannel (same frames and decoder; NIOAsyncWriter, watermarked inbound sequence)",
        floor: 0.3, ours: oursOnce, baseline: asyncChannelOnce)
    comparison(
        "send path: TCPTransport's coalescing writer against NIOAsyncWriter", floor: 0.3,
        ours: sendOursReceiveAsyncChannel, baseline: asyncChannelOnce)
    comparison(
        "receive path: TCPTransport's inbound stream against NIOAsyncChannel's", floor: 0.3,
        ours: sendAsyncChannelReceiveOurs, baseline: asyncChannelOnce)
}
