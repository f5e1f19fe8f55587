import ArgumentParser
import DeterministicSimulation
import FaultToleranceCore
import Foundation
import HotSpare
import HotSpareSimulation

/// `ftctl spare`: an array that moves a worn member's data to a hot spare, then erases it.
struct SpareCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "spare",
        abstract: "Migrate a worn array member to the hot spare and erase it (HotSpare).",
        subcommands: [
            SpareSimulate.self, SpareDemo.self, SpareCreate.self, SpareStatus.self, SpareMigrate.self,
            SpareWear.self, SpareCrashTest.self, SpareCrashChild.self,
        ])
}

/// `ftctl spare simulate`.
struct SpareSimulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run the hot-spare scenario over many seeds in virtual time.",
        discussion: """
            Each seed runs the shipped StorageArray and SpareController over members with a disk's \
            crash semantics and a flash drive's wear: a mirror of 2 or 4 members or 2 to 3 \
            concatenated, one or two spares, one member with little over-provisioning that random \
            writes wear until the controller migrates it. Members and the migration's target die, \
            and the power is cut (at random, in the migration's last step, or in the swap); the \
            array is assembled again from its members. Every read and every serving copy must hold \
            each block's last acknowledged content or a later write, a mirror must keep two copies \
            through a proactive migration, and a migration must finish once the faults stop. \
            Exits 1 if any seed breaks an invariant.
            """)

    @Option(help: "Number of seeds.") var seeds: Int = 1000
    @Option(help: "Run exactly this seed.") var seed: UInt64?
    @Option(help: "Plant a bug: \(SpareScenario.bugNames.joined(separator: ", ")).") var bug: String?
    @Option(help: "Worker threads.") var jobs: Int = ProcessInfo.processInfo.activeProcessorCount
    @OptionGroup var window: SeedWindowOptions
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        try require("--seeds", seeds, in: 1...maximumSeeds)
        try require("--jobs", jobs, in: 1...maximumJobs)
        if let bug, SpareScenario(bugNamed: bug) == nil {
            throw ValidationError(
                "--bug \(bug) is not a planted bug; one of: " + SpareScenario.bugNames.joined(separator: ", "))
        }
    }

    func run() async throws {
        let plan = window.plan(seeds: seeds, replay: seed)
        let scenario = bug.flatMap(SpareScenario.init(bugNamed:)) ?? SpareScenario()
        let summary = await runSeeds(plan, jobs: jobs, scenario: "spare" + (bug.map { " (bug: \($0))" } ?? "")) {
            scenario.run(seed: $0)
        }
        try report(summary, json: json, operations: "host writes") { seed in
            "swift run ftctl spare simulate --seed \(seed)" + (bug.map { " --bug \($0)" } ?? "")
        }
    }
}

/// `ftctl spare demo`: a mirrored array of simulated flash drives under random writes, one
/// with little over-provisioning; the controller migrates it to the spare and erases it.
struct SpareDemo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "A mirror of simulated flash under random writes: the worn member moves to the spare and is erased.")

    @Option(help: "Megabytes of each member.") var megabytes = 64

    func validate() throws { try require("--megabytes", megabytes, in: 8...4096) }

    func run() async throws { try await SpareScene(megabytes: megabytes).run() }
}
