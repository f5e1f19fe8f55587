import DeterministicSimulation
import Failover
import FailoverSimulation
import Foundation
import Testing

@Suite struct FailoverSimulationTests {
    @Test func theShippedRuntimesKeepEveryInvariantOverFiveSeeds() async {
        var operations = 0
        var crashes = 0
        for seed in 1...5 as ClosedRange<UInt64> {
            let report = await FailoverScenario().run(seed: seed)
            #expect(report.violation == nil, "seed \(seed): \(report.violation.map { "\($0)" } ?? "")")
            operations += report.operations
            crashes += report.faults.nodeCrashes
        }
        #expect(operations > 250)
        #expect(crashes > 5)
    }

    @Test func aSeedReplaysExactly() async {
        let first = await FailoverScenario().run(seed: 7)
        let second = await FailoverScenario().run(seed: 7)
        #expect(first.traceHash == second.traceHash)
        #expect(first.operations == second.operations)
    }

    @Test(arguments: FailoverScenario.bugNames)
    func eachPlantedBugIsCaught(_ name: String) async throws {
        let scenario = try #require(FailoverScenario(bug: name))
        var caught = false
        for seed in 1...40 as ClosedRange<UInt64> {
            if await scenario.run(seed: seed).violation != nil {
                caught = true
                break
            }
        }
        #expect(caught, "\(name) went unnoticed over 40 seeds")
    }
}
