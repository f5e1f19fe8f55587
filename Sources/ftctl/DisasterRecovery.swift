import ArgumentParser
import DeterministicSimulation
import DisasterRecovery
import DisasterRecoverySimulation
import Foundation

/// `ftctl dr`: disaster recovery — a workload runs at once on a lazy volume while the replica
/// builds behind it, then migrates onto the replica.
struct RecoveryCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dr",
        abstract: "Run a recovered workload at once on a lazy volume, build the replica, migrate (DisasterRecovery).",
        subcommands: [
            RecoveryProtect.self, RecoveryStatus.self, RecoveryPlanCommand.self, RecoveryTestFailover.self,
            RecoveryRecover.self, RecoveryDown.self, RecoverySimulate.self, RecoveryDrill.self,
            RecoverySiteChild.self, ProtectedSiteChild.self,
        ])
}

/// `ftctl dr simulate`.
struct RecoverySimulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run the lazy-volume recovery scenario over many seeds in virtual time.",
        discussion: """
            Each seed runs the shipped LazyVolume over overlay, replica and state disks with a \
            disk's crash semantics: a workload reads, writes, discards and synchronizes through it \
            from the first millisecond while the replica builds from the recovery point, the \
            overlay is copied onto the replica in rounds and the volume switches to it. The \
            recovery site loses power at random moments (inside build steps, rounds and the \
            switch) and the volume opens again from its state. Every read must return the recovery \
            point's content or the last acknowledged write or a later one, the migration must \
            finish, and the replica must then hold what reads return. Exits 1 if any seed breaks \
            an invariant.
            """)

    @Option(help: "Number of seeds.") var seeds: Int = 1000
    @Option(help: "Run exactly this seed.") var seed: UInt64?
    @Option(
        help: """
            Plant a bug: \(RecoveryScenario.bugNames.joined(separator: ", ")); with --shipping, \
            \(ShippingScenario.bugNames.joined(separator: ", ")).
            """) var bug: String?
    @Flag(help: "Run the shipping scenario: two journals, a lossy link, power cuts at both sites.") var shipping = false
    @Flag(
        help: """
            With --shipping: run the shipped runtimes (JournalShipper and JournalReceiver on the \
            simulation's executor and virtual clock, over simulated transports) instead of driving \
            their state machines by hand.
            """) var runtimes = false
    @Option(help: "Worker threads.") var jobs: Int = ProcessInfo.processInfo.activeProcessorCount
    @OptionGroup var window: SeedWindowOptions
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        try require("--seeds", seeds, in: 1...maximumSeeds)
        try require("--jobs", jobs, in: 1...maximumJobs)
        if runtimes && !shipping { throw ValidationError("--runtimes goes with --shipping") }
        let names = shipping ? ShippingScenario.bugNames : RecoveryScenario.bugNames
        if let bug, !names.contains(bug) {
            throw ValidationError(
                "--bug \(bug) is not a planted bug of this scenario; one of: " + names.joined(separator: ", "))
        }
    }

    func run() async throws {
        let plan = window.plan(seeds: seeds, replay: seed)
        let name =
            (runtimes ? "dr shipping runtimes" : shipping ? "dr shipping" : "dr") + (bug.map { " (bug: \($0))" } ?? "")
        let summary: SeedRun
        if runtimes {
            let scenario = bug.flatMap(ShippingRuntimeScenario.init(bugNamed:)) ?? ShippingRuntimeScenario()
            summary = await runSeeds(plan, jobs: jobs, scenario: name) { await scenario.run(seed: $0) }
        } else if shipping {
            let scenario = bug.flatMap(ShippingScenario.init(bugNamed:)) ?? ShippingScenario()
            summary = await runSeeds(plan, jobs: jobs, scenario: name) { scenario.run(seed: $0) }
        } else {
            let scenario = bug.flatMap(RecoveryScenario.init(bugNamed:)) ?? RecoveryScenario()
            summary = await runSeeds(plan, jobs: jobs, scenario: name) { scenario.run(seed: $0) }
        }
        try report(summary, json: json, operations: shipping ? "writes" : "operations") { seed in
            "swift run ftctl dr simulate --seed \(seed)" + (shipping ? " --shipping" : "")
                + (runtimes ? " --runtimes" : "")
                + (bug.map { " --bug \($0)" } ?? "")
        }
    }
}
