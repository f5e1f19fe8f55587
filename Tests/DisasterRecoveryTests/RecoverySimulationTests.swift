import DeterministicSimulation
import Testing

@testable import DisasterRecovery
@testable import DisasterRecoverySimulation

/// The shipped lazy volume in the scenario, and the planted bugs it must catch.
@Suite struct RecoverySimulationTests {
    @Test func theScenarioKeepsItsInvariantsAndReplays() {
        let scenario = RecoveryScenario()
        let seeds = SimulationRunner.seeds(defaultCount: 120)
        let failure = SimulationRunner.firstFailure(in: seeds) { scenario.run(seed: $0) }
        #expect(failure == nil, "\(failure.map { "seed \($0.seed): \($0.violation.map(\.description) ?? "")" } ?? "")")
        let once = scenario.run(seed: 11)
        #expect(once.replayDifference(scenario.run(seed: 11)) == nil)
        #expect(once.operations > 100)
    }

    @Test(arguments: DisasterRecoveryBug.allCases)
    func thePlantedBugIsCaught(_ bug: DisasterRecoveryBug) {
        let scenario = RecoveryScenario(bug: bug)
        let failure = SimulationRunner.firstFailure(in: 1...300) { scenario.run(seed: $0) }
        #expect(failure != nil)
    }
}
