import ArgumentParser
import DeterministicSimulation
import Foundation

/// Runs `run` over `seeds` on `jobs` worker tasks and merges the reports into one summary.
func runSeeds(
    _ seeds: [UInt64],
    jobs: Int,
    scenario name: String,
    _ run: @escaping @Sendable (UInt64) -> SimulationReport
) async -> SimulationSummary {
    let workers = max(1, min(jobs, seeds.count))
    return await withTaskGroup(of: SimulationSummary.self) { group in
        for worker in 0..<workers {
            group.addTask {
                var partial = SimulationSummary(scenario: name)
                for index in stride(from: worker, to: seeds.count, by: workers) { partial.add(run(seeds[index])) }
                return partial
            }
        }
        var total = SimulationSummary(scenario: name)
        for await partial in group { total.merge(partial) }
        return total
    }
}

/// Prints `summary` as pretty JSON.
func printJSON(_ summary: SimulationSummary) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(summary), as: UTF8.self))
}

/// Prints a summary (as JSON, or as a short table with up to five failures and the command
/// replaying each) and exits 1 if any seed failed.
func report(
    _ summary: SimulationSummary, json: Bool, operations: String, replay: (UInt64) -> String
) throws {
    if json {
        try printJSON(summary)
    } else {
        print("Scenario \(summary.scenario): \(summary.seeds) seeds")
        print("  seeds passed      \(summary.passed)")
        print("  seeds failed      \(summary.failures.count)")
        print("  invariant checks  \(summary.invariantChecks)")
        print("  " + operations.padding(toLength: 18, withPad: " ", startingAt: 0) + "\(summary.operations)")
        for entry in summary.faults.entries where entry.value > 0 { print("  \(entry.name): \(entry.value)") }
        for failure in summary.failures.prefix(5) {
            print("FAILED seed \(failure.seed): \(failure.violation.map(\.description) ?? "")")
            print("  replay: " + replay(failure.seed))
        }
    }
    if !summary.failures.isEmpty { throw ExitCode(1) }
}
