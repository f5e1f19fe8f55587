/// Totals over many simulated runs, for `ftctl simulate` and CI logs.
public struct SimulationSummary: Sendable, Hashable, Codable {
    /// The scenario's name.
    public var scenario: String
    /// Seeds run.
    public var seeds = 0
    /// Seeds whose invariants all held.
    public var passed = 0
    /// Reports of the seeds that failed, in seed order.
    public var failures: [SimulationReport] = []
    /// Faults injected over all runs.
    public var faults = FaultCounters()
    /// Invariant evaluations over all runs.
    public var invariantChecks = 0
    /// Operations completed over all runs.
    public var operations = 0
    /// Events executed over all runs.
    public var events = 0
    /// Virtual time simulated over all runs, in nanoseconds.
    public var virtualTime: Int64 = 0

    /// Creates an empty summary.
    public init(scenario: String) {
        self.scenario = scenario
    }

    /// Adds one run.
    public mutating func add(_ report: SimulationReport) {
        seeds += 1
        if report.passed { passed += 1 } else { failures.append(report) }
        faults.add(report.faults)
        invariantChecks += report.invariantChecks
        operations += report.operations
        events += report.events
        virtualTime += report.virtualTime
    }

    /// Combines the summaries of runs split across workers.
    public mutating func merge(_ other: SimulationSummary) {
        seeds += other.seeds
        passed += other.passed
        failures = (failures + other.failures).sorted { $0.seed < $1.seed }
        faults.add(other.faults)
        invariantChecks += other.invariantChecks
        operations += other.operations
        events += other.events
        virtualTime += other.virtualTime
    }
}
