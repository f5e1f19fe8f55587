public import FaultToleranceCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A broken invariant: what was expected, what happened, and when in virtual time.
public struct InvariantViolation: Error, Sendable, Hashable, Codable, CustomStringConvertible {
    /// The invariant's name, e.g. `"read-sees-acknowledged-write"`.
    public var invariant: String
    /// What happened, with the values involved.
    public var detail: String
    /// The virtual time of the violation, in nanoseconds.
    public var time: Int64

    /// Creates a violation.
    public init(invariant: String, detail: String, at time: Instant) {
        self.invariant = invariant
        self.detail = detail
        self.time = time.nanoseconds
    }

    /// One line: invariant, time and detail.
    public var description: String {
        "invariant \(invariant) broken at \(Instant(nanoseconds: time)): \(detail)"
    }
}

/// The outcome of one simulated run.
public struct SimulationReport: Sendable, Hashable, Codable {
    /// The seed that produced the run.
    public var seed: UInt64
    /// Faults injected, by kind.
    public var faults: FaultCounters
    /// How many times invariants were evaluated.
    public var invariantChecks: Int
    /// Operations the scenario completed (acknowledged writes, finished reads, ...).
    public var operations: Int
    /// Virtual time simulated, in nanoseconds.
    public var virtualTime: Int64
    /// Events executed.
    public var events: Int
    /// The first broken invariant, or `nil` if every check held.
    public var violation: InvariantViolation?
    /// The run's ``Simulation/traceHash``: equal for two runs of one seed (a replay is the same
    /// run), 0 when the scenario does not report one.
    public var traceHash: UInt64

    /// Creates a report.
    public init(
        seed: UInt64,
        faults: FaultCounters,
        invariantChecks: Int,
        operations: Int,
        virtualTime: Int64,
        events: Int,
        violation: InvariantViolation?,
        traceHash: UInt64 = 0
    ) {
        self.traceHash = traceHash
        self.seed = seed
        self.faults = faults
        self.invariantChecks = invariantChecks
        self.operations = operations
        self.virtualTime = virtualTime
        self.events = events
        self.violation = violation
    }

    /// Whether every invariant held.
    public var passed: Bool { violation == nil }

    /// How `replay`, a second run of this report's seed, ended otherwise than this run, or `nil`
    /// when it ended the same way (the same violation, trace hash, events and operations). A
    /// difference means the scenario is not deterministic for this seed: something outside the
    /// seed (a task off the simulation's executor, a real clock, hashing order, state shared
    /// between runs) steered it, and the failure may not replay.
    public func replayDifference(_ replay: SimulationReport) -> String? {
        var differences: [String] = []
        if replay.violation != violation {
            differences.append(replay.violation.map { "broke \($0)" } ?? "passed")
        }
        if replay.traceHash != traceHash {
            differences.append("trace hash \(String(replay.traceHash, radix: 16)) for \(String(traceHash, radix: 16))")
        }
        if replay.events != events { differences.append("\(replay.events) events for \(events)") }
        if replay.operations != operations { differences.append("\(replay.operations) operations for \(operations)") }
        return differences.isEmpty ? nil : differences.joined(separator: "; ")
    }
}

/// Picks seeds, runs a scenario over them and explains failures in a way that can be
/// replayed.
///
/// Environment:
/// - `FT_SIMULATION_SEED=S` runs exactly seed `S` (a replay).
/// - `FT_SIMULATION_SEEDS=N` runs `N` seeds (CI raises it; `swift test` keeps its default).
public enum SimulationRunner {
    /// The seeds to run: the one in `FT_SIMULATION_SEED`, else `FT_SIMULATION_SEEDS` (or
    /// `defaultCount`) consecutive seeds from `base`.
    public static func seeds(defaultCount: Int, base: UInt64 = 1) -> [UInt64] {
        if let single = environment("FT_SIMULATION_SEED").flatMap({ UInt64($0) }) { return [single] }
        let count = environment("FT_SIMULATION_SEEDS").flatMap { Int($0) }.map { max(1, $0) } ?? defaultCount
        return (0..<UInt64(count)).map { base &+ $0 }
    }

    /// The first seed in `seeds` whose run breaks an invariant, or `nil` if every one
    /// passes: how a test proves a planted bug is found.
    public static func firstFailure(
        in seeds: some Sequence<UInt64>,
        _ run: (UInt64) -> SimulationReport
    ) -> SimulationReport? {
        for seed in seeds {
            let report = run(seed)
            if !report.passed { return report }
        }
        return nil
    }

    /// The first failing report over `seeds` of an async scenario, or `nil` if all passed.
    public static func firstFailure(
        in seeds: some Sequence<UInt64>,
        _ run: (UInt64) async -> SimulationReport
    ) async -> SimulationReport? {
        for seed in seeds {
            let report = await run(seed)
            if !report.passed { return report }
        }
        return nil
    }

    /// The command that replays `seed` of the test or scenario named `name`.
    public static func replayCommand(seed: UInt64, filter name: String) -> String {
        "FT_SIMULATION_SEED=\(seed) swift test --filter \(name)"
    }

    /// Explains a failed report in two lines: the violation and how to replay it.
    public static func failureMessage(_ report: SimulationReport, filter name: String) -> String {
        let violation = report.violation.map(\.description) ?? "no violation"
        return "simulation seed \(report.seed) failed: \(violation)\n"
            + "replay: \(replayCommand(seed: report.seed, filter: name))"
    }

    private static func environment(_ name: String) -> String? {
        getenv(name).map { String(cString: $0) }
    }
}

extension SimulationReport {
    /// Fails the report with the first runtime invariant `sink` recorded during the run
    /// (``FaultToleranceCore/RuntimeInvariants``), unless a scenario invariant already failed
    /// it; the invariant is named `runtime-assertion` and the detail says where.
    public mutating func include(_ sink: RuntimeInvariantSink) {
        guard violation == nil, let broken = sink.firstViolation else { return }
        violation = InvariantViolation(
            invariant: "runtime-assertion", detail: "\(broken) (\(sink.count) in all)",
            at: Instant(nanoseconds: virtualTime))
    }
}
