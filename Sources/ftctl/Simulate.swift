public import ArgumentParser
import DeterministicSimulation
import Foundation

extension RegisterBug: ExpressibleByArgument {}

/// `ftctl simulate`: the example scenario over many seeds.
struct Simulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run the simulator's replicated-register scenario over many seeds.",
        discussion: """
            Each seed builds a world of three replicas, a writer and two readers, and injects \
            faults drawn from the seed: message loss, delay, duplication and reordering; \
            symmetric and one-way partitions; replica crashes that lose or tear unsynchronized \
            writes; fsync and read failures. After every read and every recovery the \
            invariants are checked. Plant a bug with --bug to watch the simulator catch it; \
            replay any seed with --seed. Exits with status 1 if any seed broke an invariant.
            """)

    @Option(help: "Number of seeds to run (consecutive, starting at --first-seed).")
    var seeds: Int = 200

    @Option(help: "Run exactly this seed (a replay); overrides --seeds.")
    var seed: UInt64?

    @Option(help: "Plant a bug: \(RegisterBug.allCases.map(\.rawValue).joined(separator: ", ")).")
    var bug: RegisterBug = .none

    @Option(help: "Virtual milliseconds simulated per seed.")
    var durationMs: Int64 = 3000

    @Option(help: "Worker threads (default: the number of cores).")
    var jobs: Int = ProcessInfo.processInfo.activeProcessorCount

    @OptionGroup var window: SeedWindowOptions

    @Flag(help: "Print the summary as JSON.")
    var json = false

    func validate() throws {
        try require("--seeds", seeds, in: 1...maximumSeeds)
        try require("--duration-ms", durationMs, in: 1...3_600_000)
        try require("--jobs", jobs, in: 1...maximumJobs)
    }

    func run() async throws {
        let scenario = ReplicatedRegisterScenario(bug: bug, duration: .milliseconds(durationMs))
        let plan = window.plan(seeds: seeds, replay: seed)
        let name = "replicated-register" + (bug == .none ? "" : " (bug: \(bug.rawValue))")
        let run = await runSeeds(plan, jobs: jobs, scenario: name) { scenario.run(seed: $0) }
        let summary = run.summary
        if json {
            try printJSON(summary)
        } else {
            print(render(run))
        }
        if !summary.failures.isEmpty { throw ExitCode(1) }
    }

    private func render(_ run: SeedRun) -> String {
        let summary = run.summary
        var lines: [String] = []
        lines.append(
            "Scenario \(summary.scenario): \(summary.seeds) seeds × \(durationMs) ms of virtual time in "
                + String(format: "%.1f s", secondsValue(run.elapsed)))
        if let coverage = run.coverageLine { lines.append(coverage) }
        lines.append("")
        lines.append(row("seeds passed", summary.passed))
        lines.append(row("seeds failed", summary.failures.count))
        lines.append(row("invariant checks", summary.invariantChecks))
        lines.append(row("operations completed", summary.operations))
        lines.append(row("events simulated", summary.events))
        lines.append("")
        lines.append("Faults injected")
        for entry in summary.faults.entries { lines.append(row(entry.name, entry.value)) }
        for failure in summary.failures.prefix(10) {
            lines.append("")
            lines.append("FAILED seed \(failure.seed): \(failure.violation.map(\.description) ?? "")")
            lines.append("  replay: swift run ftctl simulate --seed \(failure.seed) --bug \(bug.rawValue)")
        }
        if summary.failures.count > 10 { lines.append("... and \(summary.failures.count - 10) more failing seeds") }
        return lines.joined(separator: "\n")
    }

    private func row(_ name: String, _ value: Int) -> String {
        let padded = name + String(repeating: " ", count: max(1, 26 - name.count))
        let number = String(value)
        return "  " + padded + String(repeating: " ", count: max(0, 12 - number.count)) + number
    }
}
