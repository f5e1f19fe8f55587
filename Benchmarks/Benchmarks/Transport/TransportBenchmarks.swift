import Benchmark
import BenchmarkSupport
import FaultToleranceCore
import FaultToleranceNIO
import FaultToleranceTLS
import Foundation
import NIOCore
import NIOPosix

// TCPTransport moving N messages from a to b on loopback against a raw NIO channel writing
// the same framed bytes, message by message, to a server that only counts bytes: the baseline
// re-sends one pre-built buffer and decodes nothing, so the ratio is our overhead over the raw
// wire (framing, checksums, decoding, delivery to a stream), not a comparison with another
// transport. The custom metric is the throughput ratio ours / raw wire, times 100. The smoke
// run moves 2,000 messages once, against a floor of 0.15x.
//
// Then TCPTransport over mutual TLS (FaultToleranceTLS, TLS 1.3 with certificates from a
// NodeCertificateAuthority) against the same transport in plain TCP, for 1 KiB and 1 MiB
// messages: the ratio is what encryption and authentication cost (plain / TLS throughput
// ratio, so 0.5x means TLS moves half as much). The handshake is inside each run, as a
// reconnecting sender pays it.

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

/// Credentials for a and b, made once.
let tlsPair: (a: MutualTLS, b: MutualTLS)? = {
    guard let authority = try? NodeCertificateAuthority(name: "benchmark"),
        let a = try? authority.mutualTLS(for: ["a"]), let b = try? authority.mutualTLS(for: ["b"])
    else { return nil }
    return (a, b)
}()

func oursOnce(tls: Bool = false, size: Int = messageSize, count messageCount: Int = messageCount) async throws {
    let any = try SocketAddress(ipAddress: "127.0.0.1", port: 0)
    var securityA = TCPTransport.Security.loopbackOnly
    var securityB = TCPTransport.Security.loopbackOnly
    if tls {
        guard let tlsPair else { throw CredentialsUnavailable() }
        securityA = .secured(by: tlsPair.a)
        securityB = .secured(by: tlsPair.b)
    }
    let a = try await TCPTransport.start(configuration: .init(localNode: "a", bindAddress: any, security: securityA))
    let b = try await TCPTransport.start(configuration: .init(localNode: "b", bindAddress: any, security: securityB))
    a.setPeer("b", address: b.localAddress)
    let message = Message(type: 1, bytes: [UInt8](repeating: 7, count: size))
    let receiver = Task {
        var count = 0
        for await _ in b.incoming {
            count += 1
            if count == messageCount { break }
        }
    }
    for _ in 0..<messageCount { try await a.send(message, to: "b") }
    await receiver.value
    await a.close()
    await b.close()
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
                ours = try await seconds { try await oursOnce() }
                raw = try await seconds(rawOnce)
            } else {
                raw = try await seconds(rawOnce)
                ours = try await seconds { try await oursOnce() }
            }
            record(ratio: raw / ours, floor: 0.15, in: benchmark)
        } catch {
            fail(benchmark, "transport benchmark failed: \(error)")
        }
    }
    for (size, count) in [(1 << 10, messageCount), (1 << 20, mode.pick(full: 400, quick: 100, smoke: 50))] {
        let label = size == 1024 ? "1 KiB" : "1 MiB"
        Benchmark(
            "TCPTransport over mutual TLS vs plain TCPTransport, \(count) x \(label) on loopback",
            configuration: .init(
                metrics: [throughputRatio], maxDuration: .seconds(mode.isReduced ? 3 : 15),
                maxIterations: mode.pick(full: 10, quick: 3, smoke: 1))
        ) { benchmark in
            do {
                let flip = benchmark.currentIteration % 2 == 0
                var secured = 0.0
                var plain = 0.0
                if flip {
                    secured = try await seconds { try await oursOnce(tls: true, size: size, count: count) }
                    plain = try await seconds { try await oursOnce(size: size, count: count) }
                } else {
                    plain = try await seconds { try await oursOnce(size: size, count: count) }
                    secured = try await seconds { try await oursOnce(tls: true, size: size, count: count) }
                }
                record(ratio: plain / secured, floor: 0.1, in: benchmark)
            } catch {
                fail(benchmark, "TLS transport benchmark failed: \(error)")
            }
        }
    }
}

/// The benchmark's certificates could not be made.
struct CredentialsUnavailable: Error {}
