import Benchmark
import BenchmarkSupport
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import LiveCopy
import NIOCore
import NIOPosix

// (a) Round one of a live copy of a 1 GiB region (256 MiB with FT_BENCH_QUICK) into a local
//     OfflineRegion, against memcpy of the same region. Both destinations are new mappings
//     populated up front (MAP_POPULATE): first-touch faults on 1 GiB vary by a factor of ten
//     from run to run on this VM (transparent huge pages or not) and would drown the copy.
// (b) Round one of a live copy of a 64 MiB region (16 MiB quick) of nonzero pages over
//     loopback TCP (RemoteDestination -> LiveCopyReceiver) against a raw NIO channel moving the
//     same number of bytes in 256 KiB writes to a server that only counts them: the ratio is
//     our overhead over the raw wire (batching, fingerprints, framing, checksums, applying
//     pages), not a comparison with another copier. The receiving
//     region is populated up front (MAP_POPULATE) so neither side pays first-touch faults.
// The custom metric is the throughput ratio ours / baseline, times 100; the order of the two
// alternates between iterations. The smoke run copies 64 MiB locally (floor 0.25x) and 16 MiB
// over TCP (floor 0.1x), once each.

let mode = BenchmarkMode.current
let localPages = mode.pick(full: 1024, quick: 256, smoke: 64) * 256  // 4 KiB pages
let remotePages = mode.pick(full: 64, quick: 16, smoke: 16) * 256

func localRoundOne(_ memory: TrackedMemory) async throws -> Double {
    let region = try OfflineRegion(pageCount: memory.pageCount, populate: true)
    let copy = LiveCopy(source: memory, destination: LocalDestination(region: region))
    let report = try await copy.run()
    await copy.detach()
    return seconds(report.rounds[0].duration)
}

func memcpyOnce(_ memory: TrackedMemory) -> Double {
    let count = memory.byteCount
    guard let target = mmap(nil, count, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0),
        target != MAP_FAILED
    else { return .nan }
    defer { munmap(target, count) }
    let start = ContinuousClock.now
    memory.withUnsafeBytes { source in
        if let base = source.baseAddress { memcpy(target, base, count) }
    }
    return seconds(ContinuousClock.now - start)
}

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

let cpuRatio = BenchmarkMetric.custom(
    "CPU per byte x100 (raw wire / ours, both ends in this process)", polarity: .prefersLarger,
    useScalingFactor: false)
let coresBusy = BenchmarkMetric.custom(
    "cores busy x100 during ours (CPU seconds / seconds)", polarity: .prefersLarger, useScalingFactor: false)

func rawNIO(bytes total: Int) async throws -> Double {
    try await rawNIOMeasured(bytes: total).seconds
}

/// ``rawNIO(bytes:)`` with the CPU the process used while sending.
func rawNIOMeasured(bytes total: Int) async throws -> (seconds: Double, cpuSeconds: Double) {
    let group = MultiThreadedEventLoopGroup.singleton
    let chunk = ByteBuffer(repeating: 7, count: 256 << 10)
    let done = group.next().makePromise(of: Void.self)
    let server = try await ServerBootstrap(group: group)
        .childChannelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                try channel.pipeline.syncOperations.addHandler(ByteCounter(expected: total, done: done))
            }
        }
        .bind(to: try SocketAddress(ipAddress: "127.0.0.1", port: 0)).get()
    guard let address = server.localAddress else { throw ChannelError.unknownLocalAddress }
    let client = try await ClientBootstrap(group: group)
        .channelOption(.socketOption(.tcp_nodelay), value: 1)
        .connect(to: address).get()
    let cpuStart = processCPUSeconds()
    let start = ContinuousClock.now
    var sent = 0
    while sent < total {
        if client.isWritable {
            client.writeAndFlush(chunk, promise: nil)
        } else {
            try await client.writeAndFlush(chunk).get()
        }
        sent += chunk.readableBytes
    }
    try await done.futureResult.get()
    let elapsed = seconds(ContinuousClock.now - start)
    let cpu = processCPUSeconds() - cpuStart
    try await client.close()
    try await server.close()
    return (elapsed, cpu)
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration.warmupIterations = mode.warmupIterations
    // Which vector code the copy, digest and checksums ran (FT_DISABLE_AVX512=1 and
    // FT_DISABLE_AVX2=1 lower it).
    print("live copy benchmarks on vector path \(VectorPath.current.rawValue)")
    Benchmark(
        "(a) live copy round one of \(localPages / 256) MiB vs memcpy",
        configuration: .init(
            metrics: [throughputRatio], maxDuration: .seconds(mode.isReduced ? 10 : 60),
            maxIterations: mode.pick(full: 10, quick: 3, smoke: 1))
    ) { benchmark in
        do {
            let memory = try filledMemory(pages: localPages)
            var ours = 0.0
            var raw = 0.0
            if benchmark.currentIteration % 2 == 0 {
                ours = try await localRoundOne(memory)
                raw = memcpyOnce(memory)
            } else {
                raw = memcpyOnce(memory)
                ours = try await localRoundOne(memory)
            }
            record(ratio: raw / ours, floor: 0.25, in: benchmark)
        } catch {
            fail(benchmark, "live copy benchmark failed: \(error)")
        }
    }

    Benchmark(
        "(b) live copy round one of \(remotePages / 256) MiB over loopback TCP: overhead over the raw wire (NIO channel, byte counter)",
        configuration: .init(
            metrics: [throughputRatio, cpuRatio, coresBusy], maxDuration: .seconds(mode.isReduced ? 10 : 60),
            maxIterations: mode.pick(full: 10, quick: 3, smoke: 1))
    ) { benchmark in
        do {
            let memory = try filledMemory(pages: remotePages)
            var ours = (seconds: 0.0, cpuSeconds: 0.0)
            var raw = (seconds: 0.0, cpuSeconds: 0.0)
            if benchmark.currentIteration % 2 == 0 {
                ours = try await remoteRoundOneMeasured(memory)
                raw = try await rawNIOMeasured(bytes: memory.byteCount)
            } else {
                raw = try await rawNIOMeasured(bytes: memory.byteCount)
                ours = try await remoteRoundOneMeasured(memory)
            }
            record(ratio: raw.seconds / ours.seconds, floor: 0.1, in: benchmark)
            // Where the time goes: with both ends on two cores, the raw wire already keeps
            // both busy, so the ratio is about the CPU each byte costs.
            benchmark.measurement(cpuRatio, Int((raw.cpuSeconds / ours.cpuSeconds * 100).rounded()))
            benchmark.measurement(coresBusy, Int((ours.cpuSeconds / ours.seconds * 100).rounded()))
        } catch {
            fail(benchmark, "live copy benchmark failed: \(error)")
        }
    }
}
