import DeterministicSimulation
import ElasticJournal
import ElasticJournalSimulation
import Testing

@Suite struct JournalSimulationTests {
    @Test func everyInvariantHoldsAcrossCrashes() {
        var faults = FaultCounters()
        let seeds = SimulationRunner.seeds(defaultCount: 80)
        for seed in seeds {
            let report = JournalScenario().run(seed: seed)
            #expect(report.passed, "\(SimulationRunner.failureMessage(report, filter: "JournalSimulationTests"))")
            if !report.passed { return }
            faults.add(report.faults)
        }
        // Unless one seed is replayed, the run really crashed, lost, tore and damaged, and
        // every damage was reported.
        guard seeds.count >= 80 else { return }
        #expect(faults.nodeCrashes > 80)
        #expect(faults.writesLost > 0 && faults.writesTorn > 0 && faults.writesSurvived > 0)
        #expect(faults.synchronizeFailures > 0)
        #expect(faults.damageInjected > 0)
        #expect(faults.damageDetected == faults.damageInjected)
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

    @Test(arguments: [UInt64(4), 12, 33])
    func replayGivesTheSameTrace(seed: UInt64) {
        let first = JournalScenario().run(seed: seed)
        let second = JournalScenario().run(seed: seed)
        #expect(first.traceHash != 0 && first == second)
        #expect(JournalScenario().run(seed: seed + 1000).traceHash != first.traceHash)
    }

    /// The group-commit path (flushes, waiters, poisoning of waiters on a failed fsync) on
    /// every seed, and the planted acknowledgement bug caught there too.
    @Test func groupCommitPathHolds() {
        var faults = FaultCounters()
        var operations = 0
        for seed in UInt64(1)...30 {
            let report = JournalScenario(groupCommit: true).run(seed: seed)
            #expect(report.passed, "\(SimulationRunner.failureMessage(report, filter: "groupCommitPathHolds"))")
            faults.add(report.faults)
            operations += report.operations
        }
        #expect(faults.nodeCrashes > 20 && faults.synchronizeFailures > 0)
        #expect(operations > 30 * 100)
        let failure = SimulationRunner.firstFailure(in: 1...100) {
            JournalScenario(bug: .acknowledgeBeforeSync, groupCommit: true).run(seed: $0)
        }
        #expect(failure != nil, "acknowledging before the fsync survived 100 group-commit seeds")
    }
}
