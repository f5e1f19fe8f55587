import Checkpointing
import CheckpointingSimulation
import DeterministicSimulation
import Testing

@Suite("Checkpoint simulation: the shipped store under power cuts")
struct CheckpointSimulationTests {
    @Test func seedsPassAndReplayExactly() {
        let scenario = CheckpointScenario(steps: 80)
        for seed in UInt64(1)...12 {
            let report = scenario.run(seed: seed)
            #expect(report.passed, "seed \(seed): \(report.violation.map { "\($0)" } ?? "")")
            #expect(report.invariantChecks > 0)
            #expect(scenario.run(seed: seed).traceHash == report.traceHash, "seed \(seed) does not replay")
        }
    }

    @Test(arguments: CheckpointBug.allCases)
    func everyPlantedBugIsCaught(bug: CheckpointBug) {
        let scenario = CheckpointScenario(steps: 150, bug: bug)
        let caught = (UInt64(1)...40).contains { !scenario.run(seed: $0).passed }
        #expect(caught, "\(bug.rawValue) went unnoticed over 40 seeds")
    }
}

@Suite("Group checkpoint simulation: the shipped coordinator and members under crashes and partitions")
struct GroupCheckpointSimulationTests {
    @Test func seedsPassAndReplayExactly() async {
        let scenario = GroupCheckpointScenario(duration: .seconds(10))
        var committed = 0
        for seed in UInt64(1)...6 {
            let report = await scenario.run(seed: seed)
            #expect(report.passed, "seed \(seed): \(report.violation.map { "\($0)" } ?? "")")
            #expect(report.invariantChecks > 3)
            #expect(report.faults.nodeCrashes > 0)
            #expect(report.operations >= 1, "seed \(seed): no epoch committed")
            committed += report.operations
            #expect(await scenario.run(seed: seed).traceHash == report.traceHash, "seed \(seed) does not replay")
        }
        // Faults abort many epochs; most must still commit.
        #expect(committed >= 40, "\(committed) epochs committed over six seeds")
    }

    @Test(arguments: GroupCheckpointBug.allCases)
    func everyPlantedBugIsCaught(bug: GroupCheckpointBug) async {
        let scenario = GroupCheckpointScenario(duration: .seconds(20), bug: bug)
        var caught = false
        for seed in UInt64(1)...40 where !caught {
            caught = await !scenario.run(seed: seed).passed
        }
        #expect(caught, "\(bug.rawValue) went unnoticed over 40 seeds")
    }
}
