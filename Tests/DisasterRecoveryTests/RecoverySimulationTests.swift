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

    @Test(arguments: [DisasterRecoveryBug.switchBeforeOverlayCopied, .recordBuildBeforeSync])
    func thePlantedBugIsCaught(_ bug: DisasterRecoveryBug) {
        let scenario = RecoveryScenario(bug: bug)
        let failure = SimulationRunner.firstFailure(in: 1...300) { scenario.run(seed: $0) }
        #expect(failure != nil)
    }
}

/// The shipped shipping state machines and append between two journals on simulated disks.
@Suite struct ShippingSimulationTests {
    @Test func theScenarioKeepsItsInvariantsAndReplays() {
        let scenario = ShippingScenario()
        let seeds = SimulationRunner.seeds(defaultCount: 20)
        let failure = SimulationRunner.firstFailure(in: seeds) { scenario.run(seed: $0) }
        #expect(failure == nil, "\(failure.map { "seed \($0.seed): \($0.violation.map(\.description) ?? "")" } ?? "")")
        let once = scenario.run(seed: 5)
        #expect(once.replayDifference(scenario.run(seed: 5)) == nil)
        #expect(once.faults.messagesLost + once.faults.partitions > 0)
    }

    @Test func shippingBeforeDurableIsCaught() {
        let scenario = ShippingScenario(bug: .shipBeforeDurable)
        let failure = SimulationRunner.firstFailure(in: 1...50) { scenario.run(seed: $0) }
        #expect(failure != nil)
    }
}

/// The shipped runtimes, JournalShipper and JournalReceiver, on the simulation's executor.
@Suite struct ShippingRuntimeSimulationTests {
    @Test func theRuntimesKeepTheInvariantsUnderFaultsAndReplay() async {
        let scenario = ShippingRuntimeScenario()
        let seeds = SimulationRunner.seeds(defaultCount: 4)
        let failure = await SimulationRunner.firstFailure(in: seeds) { await scenario.run(seed: $0) }
        #expect(failure == nil, "\(failure.map { "seed \($0.seed): \($0.violation.map(\.description) ?? "")" } ?? "")")
        let once = await scenario.run(seed: 5)
        #expect(once.replayDifference(await scenario.run(seed: 5)) == nil)
        #expect(once.faults.messagesLost + once.faults.partitions > 0 && once.faults.nodeCrashes > 0)
        #expect(once.operations > 0 && once.invariantChecks > 0)
    }

    @Test func shippingBeforeDurableIsCaughtInTheRuntime() async {
        let scenario = ShippingRuntimeScenario(bug: .shipBeforeDurable)
        let failure = await SimulationRunner.firstFailure(in: 1...20) { await scenario.run(seed: $0) }
        #expect(failure != nil)
    }
}
