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
