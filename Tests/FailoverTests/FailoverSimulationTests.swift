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

    /// The same scenario with the servers electing through etcd (``EtcdControlPlane`` over a
    /// ``MemoryEtcd`` in virtual time): seeds pass, replay exactly, and a server bug is caught.
    @Test func throughEtcdTheInvariantsHoldAndASeedReplays() async {
        var etcd = FailoverScenario()
        etcd.etcd = true
        var operations = 0
        for seed in 1...5 as ClosedRange<UInt64> {
            let report = await etcd.run(seed: seed)
            #expect(report.violation == nil, "seed \(seed): \(report.violation.map { "\($0)" } ?? "")")
            operations += report.operations
        }
        #expect(operations > 250)
        let first = await etcd.run(seed: 7)
        let second = await etcd.run(seed: 7)
        #expect(first.traceHash == second.traceHash && first.operations == second.operations)
    }

    @Test(arguments: ["acknowledge-before-backup", FailoverScenario.slowClocks])
    func throughEtcdAPlantedBugIsCaught(_ name: String) async throws {
        var scenario = try #require(FailoverScenario(bug: name))
        scenario.etcd = true
        var caught = false
        for seed in 1...40 as ClosedRange<UInt64> {
            if await scenario.run(seed: seed).violation != nil {
                caught = true
                break
            }
        }
        #expect(caught, "\(name) went unnoticed over 40 seeds through etcd")
    }
}
