import DeterministicSimulation
import LiveCopy
import Testing

@Suite struct LiveCopySimulationTests {
    /// Every pattern at every dirty factor, several seeds each (more with FT_SIMULATION_SEEDS).
    @Test(arguments: WritePattern.allCases, LiveCopyScenario.dirtyFactors)
    func everyInvariantHolds(pattern: WritePattern, factor: Double) {
        for seed in SimulationRunner.seeds(defaultCount: 4) {
            let report = LiveCopyScenario(pattern: pattern, dirtyFactor: factor).run(seed: seed)
            #expect(report.passed, "\(SimulationRunner.failureMessage(report, filter: "LiveCopySimulationTests"))")
            if !report.passed { return }
        }
    }

    /// Without throttling, writes faster than the copy end in the typed error, not in a copy
    /// that runs on.
    @Test(arguments: [WritePattern.uniform, .sweeping])
    func overBandwidthWithoutThrottlingFailsWithTypedError(pattern: WritePattern) {
        for seed in SimulationRunner.seeds(defaultCount: 4) {
            let scenario = LiveCopyScenario(
                policy: .adaptive(throttling: nil), pattern: pattern, dirtyFactor: 1.1)
            let (report, outcome) = scenario.runWithOutcome(seed: seed)
            #expect(report.passed, "\(SimulationRunner.failureMessage(report, filter: "LiveCopySimulationTests"))")
            #expect(outcome?.switchedOver == false, "seed \(seed) switched over at 1.1x without throttling")
            #expect(outcome?.error == "notConverging" || outcome?.error == "roundLimit")
        }
    }

    @Test(arguments: LiveCopyBug.allCases)
    func plantedBugIsCaught(_ bug: LiveCopyBug) {
        let failure = SimulationRunner.firstFailure(in: 1...100) { LiveCopyScenario(bug: bug).run(seed: $0) }
        #expect(failure != nil, "planted bug \(bug.rawValue) survived 100 seeds")
        if let failure {
            #expect(LiveCopyScenario(bug: bug).run(seed: failure.seed) == failure)
        }
    }
}
