public import ArgumentParser
import DeterministicSimulation
import FaultToleranceCore
import Foundation
import HeartbeatQuorum
import HeartbeatSimulation

extension HeartbeatBug: ExpressibleByArgument {}
extension HeartbeatFault: ExpressibleByArgument {}

/// `ftctl heartbeat`: the multi-path heartbeat quorum.
struct HeartbeatCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "heartbeat",
        abstract: "Multi-path heartbeats counted against a threshold (HeartbeatQuorum).",
        subcommands: [HeartbeatSimulate.self, HeartbeatRun.self])
}

/// Renders one transition with its evidence on one line.
func describe(_ node: NodeID, _ transition: Transition) -> String {
    let evidence = transition.evidence
    let time = String(format: "%8.3f s", Double(transition.at.nanoseconds) / 1e9)
    return "\(time)  \(node): \(transition.from) → \(transition.to)  [\(transition.reason.rawValue)]  "
        + "healthy \(evidence.healthyCount)/\(evidence.paths.count) (threshold \(evidence.threshold)); "
        + "failed: \(evidence.failedPathsSummary)"
        + (evidence.selfHealthy ? "" : "; own self-check failing")
}

/// `ftctl heartbeat simulate`.
struct HeartbeatSimulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run the two-device heartbeat scenario over many seeds in virtual time.",
        discussion: """
            Devices A (priority 2) and B (priority 1), each the shipped HeartbeatService, \
            exchange heartbeats every 10 ms on three simulated paths in virtual time; each seed \
            injects one fault: partner crash, one/several/all paths cut, asymmetric loss, 5% \
            loss with 20 ms jitter, a partner pause under the acceptable pause, the standby's \
            own links failing, or the pair cut apart while a HeartbeatWitness still reaches \
            both. Invariants are checked throughout. Exits 1 if any seed breaks one.
            """)

    @Option(help: "Number of seeds.") var seeds: Int = 500
    @Option(help: "Run exactly this seed and print its transitions.") var seed: UInt64?
    @Option(help: "Plant a rule error: \(HeartbeatBug.allCases.map(\.rawValue).joined(separator: ", ")).")
    var bug: HeartbeatBug = .none
    @Option(help: "Only this fault: \(HeartbeatFault.allCases.map(\.rawValue).joined(separator: ", ")).")
    var fault: HeartbeatFault?
    @Option(help: "Worker threads.") var jobs: Int = ProcessInfo.processInfo.activeProcessorCount
    @OptionGroup var window: SeedWindowOptions
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        try require("--seeds", seeds, in: 1...maximumSeeds)
        try require("--jobs", jobs, in: 1...maximumJobs)
    }

    func run() async throws {
        let scenario = HeartbeatScenario(bug: bug, fault: fault)
        if let seed {
            let run = await scenario.transitions(seed: seed)
            print("seed \(seed), fault \(run.fault.rawValue)")
            for (node, transition) in run.transitions { print(describe(node, transition)) }
            if let violation = run.violation {
                print("FAILED: \(violation)")
                throw ExitCode(1)
            }
            print("all invariants held")
            return
        }
        let name = "heartbeat-quorum" + (bug == .none ? "" : " (bug: \(bug.rawValue))")
        let plan = window.plan(seeds: seeds)
        let summary = await runSeeds(plan, jobs: jobs, scenario: name) { await scenario.run(seed: $0) }
        try report(summary, json: json, operations: "transitions") { seed in
            "swift run ftctl heartbeat simulate --seed \(seed) --bug \(bug.rawValue)"
        }
    }
}
