import DeterministicSimulation
import Testing

@Suite("Replicated register under simulation")
struct RegisterSimulationTests {
    @Test("the correct protocol keeps every invariant on every seed")
    func correctProtocolPasses() {
        var checks = 0
        var faults = FaultCounters()
        for seed in SimulationRunner.seeds(defaultCount: 40) {
            let report = ReplicatedRegisterScenario().run(seed: seed)
            #expect(report.passed, "\(SimulationRunner.failureMessage(report, filter: "correctProtocolPasses"))")
            checks += report.invariantChecks
            faults.add(report.faults)
        }
        // The runs must actually exercise what they claim to.
        #expect(checks > 0)
        #expect(faults.nodeCrashes > 0 && faults.writesLost + faults.writesTorn > 0)
        #expect(faults.messagesLost > 0 && faults.messagesPartitioned > 0)
    }

    @Test(
        "each planted bug is caught, and its seed replays the same failure",
        arguments: [
            RegisterBug.acknowledgeOnFirstReply, RegisterBug.replyBeforeSynchronize,
        ])
    func plantedBugIsCaught(bug: RegisterBug) {
        let scenario = ReplicatedRegisterScenario(bug: bug)
        guard let failure = SimulationRunner.firstFailure(in: UInt64(1)...200, scenario.run(seed:)) else {
            Issue.record("bug \(bug.rawValue) survived 200 seeds")
            return
        }
        // Replaying the seed reproduces the run exactly: same violation, same event count.
        let replay = scenario.run(seed: failure.seed)
        #expect(replay == failure)
        #expect(SimulationRunner.failureMessage(failure, filter: "x").contains("FT_SIMULATION_SEED=\(failure.seed)"))
    }

    @Test("one seed run twice gives the same trace hash; another seed another one")
    func replayGivesTheSameTrace() {
        for seed in UInt64(1)...5 {
            let first = ReplicatedRegisterScenario().run(seed: seed)
            let second = ReplicatedRegisterScenario().run(seed: seed)
            #expect(first.traceHash != 0 && first == second)
            #expect(ReplicatedRegisterScenario().run(seed: seed + 100).traceHash != first.traceHash)
        }
    }
}
