import Benchmark
import BenchmarkSupport
import CZlibBenchmark
import Checkpointing
import FaultToleranceCore
import Foundation
import LiveCopy

// Checkpointing against its baselines, in the same iteration (ratios x100, larger is better):
// (a) an incremental capture of 1% of a region's pages, uncompressed, vs memcpy of the same
//     dirty bytes into newly mapped memory (target >= 0.7x). New, because a capture's bytes always go
//     to space not written before (the store appends), and on this machine's VM the first
//     write to a page costs far more than the copy (a copy into a buffer reused every round
//     measured 0.04-0.8x over the same run, by how recently the guest had touched the memory);
//     both sides now pay that alike, and the ratio is the library's own work;
// (b) the writers' pause at the cut with the same dirty count in a small and a large region:
//     small pause / large pause (target >= 0.5, "within 2x"; the absolute pauses are printed);
// (c) merging a chain of 10 incrementals over a large region vs over a small one, same dirty
//     counts: small time / large time (target >= 0.5: a merge touches metadata only);
// (d) a capture with deflate vs zlib level 1 (deflate, one call per 256 KiB) on the same bytes;
// (e) restoring a checkpoint vs memcpy of the region, uncompressed (target >= 0.5x).
// The store is on memory units, so what is measured is the library's work, not a disk's.
// Full sizes: 1 GiB (a, e), 64 MiB vs 4 GiB (b, c); quick and smoke runs use smaller ones.

let mode = BenchmarkMode.current
let pageSize = 4096
let regionPages = mode.pick(full: 262_144, quick: 65_536, smoke: 16_384)
let smallPages = 16_384
let largePages = mode.pick(full: 1_048_576, quick: 262_144, smoke: 262_144)

let pauseRatio = BenchmarkMetric.custom(
    "pause ratio x100 (small region / large region)", polarity: .prefersLarger, useScalingFactor: false)
let mergeRatio = BenchmarkMetric.custom(
    "merge time ratio x100 (small region / large region)", polarity: .prefersLarger, useScalingFactor: false)

/// A store on memory units large enough for the run.
func makeStore(deflate: Bool) throws -> CheckpointStore {
    let pool = MemoryStoragePool(unitCapacity: 64 << 20, budget: 64 << 30)
    return try CheckpointStore.open(pool: pool, configuration: .init(deflateLevel: deflate ? 1 : nil))
}

/// A region whose every page holds distinct, incompressible bytes.
func filledRegion(pages: Int) throws -> TrackedMemory {
    let memory = try TrackedMemory(pageCount: pages)
    var state: UInt64 = 0x1234_5678
    var page = [UInt64](repeating: 0, count: pageSize / 8)
    for index in 0..<pages {
        for word in page.indices {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            page[word] = state
        }
        try page.withUnsafeBytes { try memory.write($0, at: index * pageSize) }
    }
    return memory
}

/// Dirties `count` pages spread over the region (one word each) and returns them.
func dirty(_ memory: TrackedMemory, count: Int, round: Int) throws -> [Int] {
    let stride = max(1, memory.pageCount / count)
    let pages = (0..<count).map { ($0 * stride + round * 7) % memory.pageCount }
    for page in pages { try memory.storeWord(UInt64(round), at: page * pageSize + 64) }
    return pages
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration.warmupIterations = mode.warmupIterations
    let configuration = Benchmark.Configuration(
        metrics: [throughputRatio, .wallClock], maxDuration: .seconds(mode.isReduced ? 2 : 20),
        maxIterations: mode.pick(full: 20, quick: 5, smoke: 1))

    Benchmark("(a) incremental capture of 1% dirty pages vs memcpy of them, uncompressed", configuration: configuration)
    {
        benchmark in
        do {
            let memory = try filledRegion(pages: regionPages)
            let store = try makeStore(deflate: false)
            let checkpointer = try Checkpointer(application: "bench", store: store, regions: ["heap": memory])
            _ = try checkpointer.checkpointBlocking()
            for round in benchmark.scaledIterations {
                let pages = try dirty(memory, count: regionPages / 100, round: round + 1)
                // New memory for the copy, mapped here as the store's units are (a fresh mapping
                // each round: malloc would hand back memory an earlier round had touched).
                let byteCount = pages.count * pageSize
                guard let target = mmap(nil, byteCount, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0),
                    target != MAP_FAILED
                else {
                    fail(benchmark, "cannot map the baseline's target")
                    return
                }
                defer { munmap(target, byteCount) }
                benchmark.startMeasurement()
                let ours = try seconds { blackHole(try checkpointer.checkpointBlocking()) }
                let baseline = seconds {
                    for (slot, page) in pages.enumerated() {
                        (target + slot * pageSize).copyMemory(from: memory.address(ofPage: page), byteCount: pageSize)
                    }
                }
                benchmark.stopMeasurement()
                blackHole(target)
                record(ratio: baseline / ours, floor: 0.05, in: benchmark)
            }
        } catch {
            fail(benchmark, "\(error)")
        }
    }

    var pauseConfiguration = configuration
    pauseConfiguration.metrics = [pauseRatio, .wallClock]
    var mergeConfiguration = configuration
    mergeConfiguration.metrics = [mergeRatio, .wallClock]

    Benchmark(
        "(b) writer pause at the cut: 64 MiB vs a large region, same dirty count", configuration: pauseConfiguration
    ) {
        benchmark in
        do {
            let store = try makeStore(deflate: false)
            let small = try TrackedMemory(pageCount: smallPages)
            let large = try TrackedMemory(pageCount: largePages)
            let smallCheckpointer = try Checkpointer(application: "small", store: store, regions: ["heap": small])
            let largeCheckpointer = try Checkpointer(application: "large", store: store, regions: ["heap": large])
            _ = try smallCheckpointer.checkpointBlocking()
            _ = try largeCheckpointer.checkpointBlocking()
            for round in benchmark.scaledIterations {
                _ = try dirty(small, count: 512, round: round + 1)
                _ = try dirty(large, count: 512, round: round + 1)
                benchmark.startMeasurement()
                let smallPause = try smallCheckpointer.checkpointBlocking().pause
                let largePause = try largeCheckpointer.checkpointBlocking().pause
                benchmark.stopMeasurement()
                print(
                    "(b) pause \((smallPages * pageSize) >> 20) MiB: \(nanoseconds(smallPause) / 1000) µs, "
                        + "\((largePages * pageSize) >> 20) MiB: \(nanoseconds(largePause) / 1000) µs")
                record(
                    ratio: seconds(smallPause) / seconds(largePause), as: pauseRatio, floor: 0.2, in: benchmark)
            }
        } catch {
            fail(benchmark, "\(error)")
        }
    }

    Benchmark("(c) merging 10 incrementals: 64 MiB vs a large region, same dirty counts", configuration: configuration)
    {
        benchmark in
        do {
            let store = try makeStore(deflate: false)
            var chains: [(Checkpointer, TrackedMemory)] = []
            for (name, pages) in [("small", smallPages), ("large", largePages)] {
                let memory = try TrackedMemory(pageCount: pages)
                let checkpointer = try Checkpointer(application: name, store: store, regions: ["heap": memory])
                _ = try dirty(memory, count: 1024, round: 0)
                _ = try checkpointer.checkpointBlocking()
                chains.append((checkpointer, memory))
            }
            for round in benchmark.scaledIterations {
                var tips: [CheckpointID] = []
                for (checkpointer, memory) in chains {
                    var tip = CheckpointID(0)
                    for step in 0..<10 {
                        _ = try dirty(memory, count: 256, round: round * 10 + step + 1)
                        tip = try checkpointer.checkpointBlocking().summary.id
                    }
                    tips.append(tip)
                }
                benchmark.startMeasurement()
                let smallTime = try seconds { blackHole(try store.merge(tips[0])) }
                let largeTime = try seconds { blackHole(try store.merge(tips[1])) }
                benchmark.stopMeasurement()
                print(
                    String(
                        format: "(c) merge of 10 incrementals, %d MiB: %.2f ms, %d MiB: %.2f ms, ratio %.2f",
                        (smallPages * pageSize) >> 20, smallTime * 1e3, (largePages * pageSize) >> 20, largeTime * 1e3,
                        smallTime / largeTime))
                record(ratio: smallTime / largeTime, as: mergeRatio, floor: 0.2, in: benchmark)
            }
        } catch {
            fail(benchmark, "\(error)")
        }
    }

    Benchmark("(d) capture with deflate vs zlib level 1 on the same bytes", configuration: configuration) { benchmark in
        do {
            let pages = regionPages / 4
            let memory = try TrackedMemory(pageCount: pages)
            // Half of each page compresses (a repeated word), half does not.
            var state: UInt64 = 99
            var page = [UInt64](repeating: 0, count: pageSize / 8)
            for index in 0..<pages {
                for word in page.indices {
                    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    page[word] = word < 256 ? UInt64(index) : state
                }
                try page.withUnsafeBytes { try memory.write($0, at: index * pageSize) }
            }
            var output = [UInt8](repeating: 0, count: Int(compressBound(uLong(64 * pageSize))))
            for _ in benchmark.scaledIterations {
                let store = try makeStore(deflate: true)
                let checkpointer = try Checkpointer(application: "bench", store: store, regions: ["heap": memory])
                benchmark.startMeasurement()
                let ours = try seconds { blackHole(try checkpointer.checkpointBlocking(full: true)) }
                let baseline = seconds {
                    output.withUnsafeMutableBufferPointer { out in
                        for first in stride(from: 0, to: pages, by: 64) {
                            var length = uLongf(out.count)
                            _ = compress2(
                                out.baseAddress, &length,
                                memory.address(ofPage: first).assumingMemoryBound(to: Bytef.self),
                                uLong(min(64, pages - first) * pageSize), 1)
                        }
                    }
                }
                benchmark.stopMeasurement()
                record(ratio: baseline / ours, floor: 0.3, in: benchmark)
            }
        } catch {
            fail(benchmark, "\(error)")
        }
    }

    Benchmark("(e) restore vs memcpy of the region, uncompressed", configuration: configuration) { benchmark in
        do {
            let memory = try filledRegion(pages: regionPages)
            let store = try makeStore(deflate: false)
            let checkpointer = try Checkpointer(application: "bench", store: store, regions: ["heap": memory])
            let id = try checkpointer.checkpointBlocking().summary.id
            let target = UnsafeMutableRawBufferPointer.allocate(byteCount: regionPages * pageSize, alignment: 4096)
            defer { target.deallocate() }
            target.initializeMemory(as: UInt8.self, repeating: 0)
            for _ in benchmark.scaledIterations {
                benchmark.startMeasurement()
                let ours = try seconds { try store.restore(id, item: "heap", into: target) }
                let baseline = seconds {
                    memory.withUnsafeBytes { source in
                        if let from = source.baseAddress {
                            target.baseAddress?.copyMemory(from: from, byteCount: source.count)
                        }
                    }
                }
                benchmark.stopMeasurement()
                record(ratio: baseline / ours, floor: 0.05, in: benchmark)
            }
        } catch {
            fail(benchmark, "\(error)")
        }
    }
}
