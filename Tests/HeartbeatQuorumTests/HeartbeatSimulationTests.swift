import DeterministicSimulation
import HeartbeatQuorum
import HeartbeatSimulation
import Testing

@Suite("Heartbeat quorum under simulation: the shipped services in virtual time")
struct HeartbeatSimulationTests {
    @Test("the services keep every invariant on every seed, and every fault is really injected")
    func correctRulesPass() async {
        var seedsByFault: [HeartbeatFault: Int] = [:]
        var faults = FaultCounters()
        var checks = 0
        var transitions = 0
        let scenario = HeartbeatScenario()
        for seed in SimulationRunner.seeds(defaultCount: 45) {
            let report = await scenario.run(seed: seed)
            #expect(report.passed, "\(SimulationRunner.failureMessage(report, filter: "correctRulesPass"))")
            checks += report.invariantChecks
            transitions += report.operations
            faults.add(report.faults)
            seedsByFault[scenario.fault(of: seed), default: 0] += 1
        }
        // Unless one seed is replayed, every fault kind ran, and the network really cut,
        // lost, crashed and restarted.
        if SimulationRunner.seeds(defaultCount: 45).count >= 45 {
            #expect(Set(seedsByFault.keys) == Set(HeartbeatFault.allCases))
            #expect(faults.partitions > 0)
            #expect(faults.messagesPartitioned > 0)
            #expect(faults.messagesLost > 0)
            #expect(faults.nodeCrashes > 0)
            #expect(faults.nodeRestarts > 0)
            // Corrupted datagrams: every one fails the frame check and is dropped.
            #expect(faults.damageInjected > 0)
            #expect(faults.damageDetected == faults.damageInjected)
            // An attacker forged and replayed datagrams in every seed; the sealed transports
            // refused them (the invariants above held regardless).
            #expect(faults.forgeriesInjected > 45)
            #expect(faults.forgeriesRejected > 45)
            #expect(checks > 1000)
            #expect(transitions > 45)
        }
    }

    @Test("taking over on the threshold alone is caught and replays from its seed")
    func plantedBugCaught() async {
        let scenario = HeartbeatScenario(bug: .takeOverBelowThreshold)
        guard let failure = await SimulationRunner.firstFailure(in: UInt64(1)...200, scenario.run(seed:)) else {
            Issue.record("the planted bug survived 200 seeds")
            return
        }
        #expect(await scenario.run(seed: failure.seed) == failure)
    }

    @Test("a seed replays the identical trace: every transition, at the same virtual instant", arguments: [9, 17])
    func replay(seed: UInt64) async {
        let scenario = HeartbeatScenario()
        let first = await scenario.transitions(seed: seed)
        let second = await scenario.transitions(seed: seed)
        #expect(first.transitions.count > 1)
        #expect(first.transitions.map(\.0) == second.transitions.map(\.0))
        #expect(first.transitions.map(\.1) == second.transitions.map(\.1))
    }

    @Test("a seed run twice gives the same trace hash (events, deliveries, bytes), with the async runtimes in the loop")
    func traceHashReplays() async {
        let scenario = HeartbeatScenario()
        for seed in [UInt64(2), 5, 11] {
            let first = await scenario.run(seed: seed)
            let second = await scenario.run(seed: seed)
            #expect(first.traceHash != 0 && first == second)
            #expect(await scenario.run(seed: seed + 1000).traceHash != first.traceHash)
        }
    }
}
