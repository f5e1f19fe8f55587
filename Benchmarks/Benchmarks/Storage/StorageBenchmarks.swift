import Benchmark
import BenchmarkSupport
import FaultToleranceCore
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

// FileStorageUnit sequential writes against a plain pwrite loop writing the same bytes in
// the same chunk sizes to a file preallocated the same way, in the same iteration. The
// custom metric is the throughput ratio ours / raw pwrite, times 100 (target: >= 90). The smoke
// run writes 16 MiB in 256 KiB chunks once, against a floor of 0.5x.

let mode = BenchmarkMode.current
let unitSize = mode.isReduced ? 16 << 20 : 64 << 20

/// A pool with two units: one written through FileStorageUnit, one through a raw descriptor.
final class Fixture {
    let directory: String
    let pool: FileStoragePool
    let unit: FileStorageUnit
    let rawDescriptor: Int32

    init() throws {
        directory = NSTemporaryDirectory() + "ft-bench-" + UUID().uuidString
        pool = try FileStoragePool(directories: [directory], unitCapacity: unitSize, budget: 2 * unitSize)
        unit = try pool.allocate()
        let rawUnit = try pool.allocate()
        rawDescriptor = open(rawUnit.path, O_RDWR)
        rawUnit.close()
    }

    deinit {
        close(rawDescriptor)
        pool.close()
        try? FileManager.default.removeItem(atPath: directory)
    }
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration.warmupIterations = mode.warmupIterations
    let configuration = Benchmark.Configuration(
        metrics: [throughputRatio], maxDuration: .seconds(mode.isReduced ? 2 : 10),
        maxIterations: mode.pick(full: 30, quick: 5, smoke: 1))
    for chunk in mode.isSmoke ? [256 << 10] : [4096, 256 << 10] {
        Benchmark(
            "FileStorageUnit sequential write vs raw pwrite, \(chunk / 1024) KiB chunks", configuration: configuration
        ) {
            benchmark in
            let fixture: Fixture
            do {
                fixture = try Fixture()
            } catch {
                fail(benchmark, "could not create the benchmark files: \(error)")
                return
            }
            let data = [UInt8](repeating: 0x5A, count: chunk)
            let ours = {
                try data.withUnsafeBytes { raw in
                    var offset = 0
                    while offset + chunk <= unitSize {
                        try fixture.unit.write(raw, at: offset)
                        offset += chunk
                    }
                }
            }
            let baseline = {
                data.withUnsafeBytes { raw in
                    var offset = 0
                    while offset + chunk <= unitSize {
                        let written = pwrite(fixture.rawDescriptor, raw.baseAddress, chunk, off_t(offset))
                        if written != chunk { fail(benchmark, "pwrite failed: \(String(cString: strerror(errno)))") }
                        offset += chunk
                    }
                }
            }
            // Warm both files' page cache once, then measure with alternating order.
            try? ours()
            baseline()
            var oursTime = 0.0
            var baselineTime = 0.0
            for round in 0..<4 {
                if round % 2 == 0 {
                    oursTime += (try? seconds(ours)) ?? .infinity
                    baselineTime += seconds(baseline)
                } else {
                    baselineTime += seconds(baseline)
                    oursTime += (try? seconds(ours)) ?? .infinity
                }
            }
            record(ratio: baselineTime / oursTime, floor: 0.5, in: benchmark)
        }
    }
}
