import Benchmark
import BenchmarkSupport
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import NIOCore
import NIOPosix

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

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration.warmupIterations = mode.warmupIterations
    Benchmark(
        "TCPTransport overhead over the raw wire (NIO channel, pre-framed bytes, byte counter), \(messageCount) x 1 KiB on loopback",
        configuration: .init(
            metrics: [throughputRatio], maxDuration: .seconds(mode.isReduced ? 3 : 15),
            maxIterations: mode.pick(full: 20, quick: 3, smoke: 1))
    ) { benchmark in
        do {
            let flip = benchmark.currentIteration % 2 == 0
            var ours = 0.0
            var raw = 0.0
            if flip {
                ours = try await seconds(oursOnce)
                raw = try await seconds(rawOnce)
            } else {
                raw = try await seconds(rawOnce)
                ours = try await seconds(oursOnce)
            }
            record(ratio: raw / ours, floor: 0.15, in: benchmark)
        } catch {
            fail(benchmark, "transport benchmark failed: \(error)")
        }
    }
}
