import DeterministicSimulation
import ElasticJournal
import Testing

@Suite struct JournalSimulationTests {
    @Test func everyInvariantHoldsAcrossCrashes() {
        for seed in SimulationRunner.seeds(defaultCount: 40) {
            let report = JournalScenario().run(seed: seed)
            #expect(report.passed, "\(SimulationRunner.failureMessage(report, filter: "JournalSimulationTests"))")
            if !report.passed { return }
        }
    }

    @Test(arguments: JournalBug.allCases)
    func plantedBugIsCaught(_ bug: JournalBug) {
        let failure = SimulationRunner.firstFailure(in: 1...300) { JournalScenario(bug: bug).run(seed: $0) }
        #expect(failure != nil, "planted bug \(bug.rawValue) survived 300 seeds")
        if let failure {
            // Replays exactly.
            #expect(JournalScenario(bug: bug).run(seed: failure.seed) == failure)
        }
    }
}
