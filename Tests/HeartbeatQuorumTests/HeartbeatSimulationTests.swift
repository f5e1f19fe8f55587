import DeterministicSimulation
import HeartbeatQuorum
import Testing

@Suite("Heartbeat quorum under simulation")
struct HeartbeatSimulationTests {
    @Test("the rules keep every invariant on every seed and fault")
    func correctRulesPass() {
        var byFault: [HeartbeatFault: Int] = [:]
        var checks = 0
        for seed in SimulationRunner.seeds(defaultCount: 60) {
            let scenario = HeartbeatScenario()
            let report = scenario.run(seed: seed)
            #expect(report.passed, "\(SimulationRunner.failureMessage(report, filter: "correctRulesPass"))")
            checks += report.invariantChecks
            let fault = HeartbeatFault.allCases[Int(seed % UInt64(HeartbeatFault.allCases.count))]
            byFault[fault, default: 0] += 1
        }
        #expect(checks > 0)
    }

    @Test("taking over on the threshold alone is caught and replays from its seed")
    func plantedBugCaught() {
        let scenario = HeartbeatScenario(bug: .takeOverBelowThreshold)
        guard let failure = SimulationRunner.firstFailure(in: UInt64(1)...200, scenario.run(seed:)) else {
            Issue.record("the planted bug survived 200 seeds")
            return
        }
        #expect(scenario.run(seed: failure.seed) == failure)
    }
}
