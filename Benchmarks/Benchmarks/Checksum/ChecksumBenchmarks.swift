import Benchmark
import CZlibBenchmark
import FaultToleranceCore
import Foundation

// CRC32C hardware and table paths against zlib's crc32 on the same bytes, in the same
// iteration. The custom metric is the throughput ratio ours / zlib, times 100 (so 250 means
// 2.5x zlib); the target is hardware >= 2x zlib.

let quick = ProcessInfo.processInfo.environment["FT_BENCH_QUICK"] != nil
let size = 1 << 20
let repetitions = quick ? 4 : 32
let bytes: [UInt8] = {
    var generator = SystemRandomNumberGenerator()
    return (0..<size).map { _ in UInt8.random(in: 0...255, using: &generator) }
}()

let ratio = BenchmarkMetric.custom(
    "throughput ratio x100 (ours / baseline)", polarity: .prefersLarger, useScalingFactor: false)

func seconds(_ body: () -> Void) -> Double {
    let clock = ContinuousClock()
    let elapsed = clock.measure(body)
    let (whole, fraction) = elapsed.components
    return Double(whole) + Double(fraction) * 1e-18
}

func zlibPass() -> Void {
    var crc: UInt = 0
    bytes.withUnsafeBufferPointer { buffer in
        for _ in 0..<repetitions { crc = crc32(0, buffer.baseAddress, uInt(buffer.count)) }
    }
    blackHole(crc)
}

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
    let configuration = Benchmark.Configuration(
        metrics: [ratio], maxDuration: .seconds(quick ? 1 : 5), maxIterations: quick ? 5 : 50)
    for implementation in CRC32C.Implementation.allCases {
        Benchmark("CRC32C \(implementation.rawValue) vs zlib crc32, 1 MiB", configuration: configuration) { benchmark in
            // Alternate the order so neither side always runs with a warmer cache.
            let flip = benchmark.currentIteration % 2 == 0
            var ours = 0.0
            var baseline = 0.0
            if flip {
                ours = seconds { crc32cPass(implementation) }
                baseline = seconds { zlibPass() }
            } else {
                baseline = seconds { zlibPass() }
                ours = seconds { crc32cPass(implementation) }
            }
            benchmark.measurement(ratio, Int((baseline / ours * 100).rounded()))
        }
    }
    Benchmark(
        "CRC32C \(CRC32C.preferredImplementation.rawValue) throughput, 1 MiB",
        configuration: .init(metrics: [.throughput, .wallClock], maxDuration: .seconds(quick ? 1 : 3))
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
