import Benchmark
import BenchmarkSupport
import CZlibBenchmark
import FaultToleranceCore
import Foundation

// CRC32C hardware and table paths against two baselines on the same bytes, in the same
// iteration: zlib's table-driven IEEE crc32 (the common alternative), and the physical limit,
// a read-only pass that adds up the bytes eight 64-bit lanes at a time (vectorised by the
// compiler) and computes nothing else. The custom metrics are the throughput ratios ours /
// zlib and ours / read-only pass, times 100 (250 means 2.5x zlib; 50 means half the speed of
// just reading the bytes). Targets: hardware >= 2x zlib, and as close to the read-only pass
// as the CRC instruction's latency allows. The smoke run checks the preferred implementation
// only, against floors of 1.2x zlib (the table walk is slower than zlib) and 0.1x the read
// pass.

let mode = BenchmarkMode.current
let size = 1 << 20
let repetitions = mode.pick(full: 32, quick: 4, smoke: 32)
let bytes: [UInt8] = {
    var generator = SystemRandomNumberGenerator()
    return (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
}()

func zlibPass() -> Void {
    var crc: UInt = 0
    bytes.withUnsafeBufferPointer { buffer in
        for _ in 0..<repetitions { crc = crc32(0, buffer.baseAddress, uInt(buffer.count)) }
    }
    blackHole(crc)
}

/// The physical limit: every byte read once, nothing computed but a sum.
func readPass() -> Void {
    var total = SIMD8<UInt64>()
    bytes.withUnsafeBytes { raw in
        let lanes = raw.count / 64
        for _ in 0..<repetitions {
            for index in 0..<lanes {
                total &+= raw.loadUnaligned(fromByteOffset: index * 64, as: SIMD8<UInt64>.self)
            }
        }
    }
    blackHole(total)
}

let readPassRatio = BenchmarkMetric.custom(
    "CRC32C throughput / read-only pass (x100)", polarity: .prefersLarger, useScalingFactor: false)

func crc32cPass(_ implementation: CRC32C.Implementation) -> Void {
    bytes.withUnsafeBytes { raw in
        for _ in 0..<repetitions {
            var crc = CRC32C(implementation: implementation)
            crc.update(raw)
            blackHole(crc.value)
        }
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration.warmupIterations = mode.warmupIterations
    let configuration = Benchmark.Configuration(
        metrics: [throughputRatio, readPassRatio], maxDuration: .seconds(mode.isReduced ? 1 : 5),
        maxIterations: mode.pick(full: 50, quick: 5, smoke: 1))
    let implementations = mode.isSmoke ? [CRC32C.preferredImplementation] : CRC32C.Implementation.allCases
    for implementation in implementations {
        Benchmark(
            "CRC32C \(implementation.rawValue) vs zlib crc32 and a read-only pass, 1 MiB", configuration: configuration
        ) { benchmark in
            // The input is made before either side is timed (it is a lazily initialised global).
            blackHole(bytes.count)
            // Alternate the order so neither side always runs with a warmer cache.
            let flip = benchmark.currentIteration % 2 == 0
            var ours = 0.0
            var baseline = 0.0
            var limit = 0.0
            if flip {
                ours = seconds { crc32cPass(implementation) }
                baseline = seconds { zlibPass() }
                limit = seconds { readPass() }
            } else {
                limit = seconds { readPass() }
                baseline = seconds { zlibPass() }
                ours = seconds { crc32cPass(implementation) }
            }
            let floor = implementation == .table ? 0.25 : 1.2
            record(ratio: baseline / ours, floor: floor, in: benchmark)
            record(ratio: limit / ours, as: readPassRatio, floor: implementation == .table ? 0.01 : 0.1, in: benchmark)
        }
    }
    if mode.isSmoke { return }
    Benchmark(
        "CRC32C \(CRC32C.preferredImplementation.rawValue) throughput, 1 MiB",
        configuration: .init(metrics: [.throughput, .wallClock], maxDuration: .seconds(mode.isReduced ? 1 : 3))
    ) { benchmark in
        bytes.withUnsafeBytes { raw in
            for _ in benchmark.scaledIterations {
                var crc = CRC32C()
                crc.update(raw)
                blackHole(crc.value)
            }
        }
    }
}
