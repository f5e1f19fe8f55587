public import Benchmark
import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// How much of each benchmark runs, chosen by the environment:
/// - `FT_BENCH_SMOKE=1`: CI's smoke run — each target's smallest case, once, its ratio checked
///   against a generous floor (a large regression fails the run);
/// - `FT_BENCH_QUICK=1`: smaller inputs and fewer iterations than the full run;
/// - neither: the full run the documentation quotes.
public enum BenchmarkMode: Sendable {
    case full
    case quick
    case smoke

    /// The mode of this process.
    public static let current: BenchmarkMode = {
        let environment = ProcessInfo.processInfo.environment
        if environment["FT_BENCH_SMOKE"] != nil { return .smoke }
        if environment["FT_BENCH_QUICK"] != nil { return .quick }
        return .full
    }()

    /// Whether inputs are reduced (quick and smoke runs).
    public var isReduced: Bool { self != .full }

    /// Whether this is the smoke run.
    public var isSmoke: Bool { self == .smoke }

    /// Warm-up iterations before the measured ones: none in the smoke run, which runs once.
    public var warmupIterations: Int { self == .smoke ? 0 : 1 }

    /// `full`, `quick` or `smoke`, picked by the current mode.
    public func pick<T>(full: T, quick: T, smoke: T) -> T {
        switch self {
        case .full: full
        case .quick: quick
        case .smoke: smoke
        }
    }
}

/// Throughput of ours over the baseline's, times 100 (so 250 means 2.5x the baseline).
public let throughputRatio = BenchmarkMetric.custom(
    "throughput ratio x100 (ours / baseline)", polarity: .prefersLarger, useScalingFactor: false)

/// Whole nanoseconds in a duration.
public func nanoseconds(_ duration: Duration) -> Int64 {
    let (whole, fraction) = duration.components
    return whole * 1_000_000_000 + fraction / 1_000_000_000
}

/// Seconds in a duration.
public func seconds(_ duration: Duration) -> Double {
    let (whole, fraction) = duration.components
    return Double(whole) + Double(fraction) * 1e-18
}

/// Seconds `body` takes.
public func seconds(_ body: () throws -> Void) rethrows -> Double {
    let start = ContinuousClock.now
    try body()
    return seconds(ContinuousClock.now - start)
}

/// Seconds `body` takes.
public func seconds(_ body: () async throws -> Void) async rethrows -> Double {
    let start = ContinuousClock.now
    try await body()
    return seconds(ContinuousClock.now - start)
}

/// Fails `benchmark`: a failed operation never counts as fast. In the smoke run the process
/// also exits with status 1 after saying why, so the run fails however it was started.
public func fail(_ benchmark: Benchmark, _ reason: String) {
    benchmark.error(reason)
    if BenchmarkMode.current.isSmoke {
        print("smoke: \(benchmark.name): FAILED: \(reason)")
        exit(1)
    }
}

/// Records `ratio` (ours over the baseline, larger is better) as `metric` times 100. In the
/// smoke run, prints it beside its floor and fails the benchmark when it is below the floor
/// or not a finite positive number.
public func record(
    ratio: Double, as metric: BenchmarkMetric = throughputRatio, floor: Double, in benchmark: Benchmark
) {
    guard ratio.isFinite, ratio > 0 else {
        fail(benchmark, "\(metric.description) is \(ratio): an operation failed or took no time")
        return
    }
    benchmark.measurement(metric, Int((ratio * 100).rounded()))
    guard BenchmarkMode.current.isSmoke, !isWarmup(benchmark) else { return }
    var line = String(format: "%.2fx (floor %.2fx)", ratio, floor)
    if metric != throughputRatio { line = "\(metric.description): " + line }
    if ratio < floor {
        fail(benchmark, "\(metric.description): \(line): below its floor")
    } else {
        print("smoke: \(benchmark.name): \(line)")
    }
}

/// Records `value` (smaller is better) as `metric`, scaled by `scale`. In the smoke run, prints it
/// beside its ceiling and fails the benchmark when it is above the ceiling or not finite.
public func record(
    cost value: Double, as metric: BenchmarkMetric, scale: Double = 1, ceiling: Double, in benchmark: Benchmark
) {
    guard value.isFinite, value >= 0 else {
        fail(benchmark, "\(metric.description) is \(value): an operation failed")
        return
    }
    benchmark.measurement(metric, Int((value * scale).rounded()))
    guard BenchmarkMode.current.isSmoke, !isWarmup(benchmark) else { return }
    let line = String(format: "%.2f (ceiling %.2f)", value, ceiling)
    if value > ceiling {
        fail(benchmark, "\(metric.description): \(line): above its ceiling")
    } else {
        print("smoke: \(benchmark.name): \(line)")
    }
}

/// Whether `benchmark` is running a warm-up iteration (whose measurements are discarded).
func isWarmup(_ benchmark: Benchmark) -> Bool {
    benchmark.currentIteration < benchmark.configuration.warmupIterations
}
