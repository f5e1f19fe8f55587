import ArgumentParser
import DeterministicSimulation
import Failover
import FailoverSimulation
import Foundation

/// `ftctl failover`: primary-backup switching with a control server (Failover).
struct FailoverCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "failover",
        abstract: "Primary-backup switching with a control server and a replicated memory database (Failover).",
        subcommands: [
            FailoverSimulate.self, FailoverDemo.self, FailoverNode.self, FailoverStatusCommand.self,
            FailoverSwitchCommand.self, FailoverBench.self,
        ])
}

/// `ftctl failover simulate`.
struct FailoverSimulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run the failover scenario over many seeds in virtual time.",
        discussion: """
            Each seed runs the shipped FailoverServer, FailoverControlServer and FailoverClient \
            runtimes on a simulated network: two or three servers in synchronous mode, a control \
            server, three clients (puts of a new key per request, and puts, deletes, \
            compare-and-sets and reads of three shared keys). For three seconds messages are \
            lost, doubled and reordered, servers crash and come back empty (a memory database), \
            servers are cut from the control server or from everyone, the control server \
            restarts on its recorded epoch, and an operator asks for planned switchovers over the \
            wire, one fault at a time. Then everything heals. \
            No two servers may serve at once, no epoch may be promoted twice, no acknowledged \
            write may be missing from the primary, its sync set or a promoted server, each shared \
            key's history must be linearizable, writes must complete once quiet, and every \
            backup must end with the primary's state. With --maximum-lag N replication is \
            asynchronous (a failover may lose up to N acknowledged writes: the loss and \
            linearizability checks give way to that bound, checked at each promotion and at the \
            end). With \
            --control etcd the servers elect through an etcd in memory instead (leases in virtual \
            time; a server cut from etcd, etcd out of reach, switchovers through etcd). Exits 1 if \
            any seed breaks an invariant.
            """)

    @Option(help: "Number of seeds.") var seeds: Int = 1000
    @Option(help: "Run exactly this seed.") var seed: UInt64?
    @Option(help: "Plant a bug: \(FailoverScenario.bugNames.joined(separator: ", ")).") var bug: String?
    @Option(help: "The control plane: server (a control server) or etcd (the servers elect through an etcd in memory).")
    var control = "server"
    @Option(
        help: """
            Replicate asynchronously: the sync set trails what is acknowledged by at most this \
            many entries (writers wait beyond it), and no backup further behind is promoted. \
            Synchronous without it.
            """)
    var maximumLag: UInt64?
    @Flag(
        help: """
            Each server journals what it applies (in memory, kept across its crashes): a backup \
            acknowledges only what its journal holds, and a crashed server comes back with its \
            state, unless its disk was replaced too (half the restarts). With the control server \
            a quarter of the crashes take every server down at once (a power loss; in half of \
            them one server's disk is lost too).
            """)
    var journal = false
    @Option(help: "Worker threads.") var jobs: Int = ProcessInfo.processInfo.activeProcessorCount
    @OptionGroup var window: SeedWindowOptions
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        guard control == "server" || control == "etcd" else {
            throw ValidationError("--control: \(control.debugDescription) is neither server nor etcd")
        }
        if let maximumLag {
            guard (1...1_000_000).contains(maximumLag) else {
                throw ValidationError("--maximum-lag must be within 1...1000000 entries (got \(maximumLag))")
            }
            guard control == "server" else {
                throw ValidationError("--maximum-lag: the etcd control plane replicates synchronously only")
            }
        }
        if bug == FailoverController.Bug.trustEveryRestart.rawValue, !journal {
            throw ValidationError("--bug trust-every-restart is about journaled servers' restarts: add --journal")
        }
        if let bug, EtcdControlPlane.Bug(rawValue: bug) != nil, control != "etcd" || !journal {
            throw ValidationError(
                "--bug \(bug) is the etcd plane's, about journaled servers: add --control etcd --journal")
        }
        if control == "etcd", let bug, FailoverController.Bug(rawValue: bug) != nil {
            throw ValidationError("--bug \(bug) is the control server's: there is none with --control etcd")
        }
        try require("--seeds", seeds, in: 1...maximumSeeds)
        try require("--jobs", jobs, in: 1...maximumJobs)
        if let bug, FailoverScenario(bug: bug) == nil {
            throw ValidationError(
                "unknown bug \(bug.debugDescription); known: \(FailoverScenario.bugNames.joined(separator: ", "))")
        }
    }

    func run() async throws {
        let plan = window.plan(seeds: seeds, replay: seed)
        var chosen = FailoverScenario(bug: bug) ?? FailoverScenario()
        chosen.etcd = control == "etcd"
        chosen.maximumLag = maximumLag
        chosen.journaled = journal
        let scenario = chosen
        let name =
            "failover" + (scenario.etcd ? " through etcd" : "")
            + (maximumLag.map { ", asynchronous (lag \($0))" } ?? "") + (journal ? ", journaled" : "")
            + (bug.map { " (bug: \($0))" } ?? "")
        let summary = await runSeeds(plan, jobs: jobs, scenario: name) { await scenario.run(seed: $0) }
        try report(summary, json: json, operations: "client writes") { seed in
            "swift run ftctl failover simulate --seed \(seed)" + (scenario.etcd ? " --control etcd" : "")
                + (maximumLag.map { " --maximum-lag \($0)" } ?? "") + (journal ? " --journal" : "")
                + (bug.map { " --bug \($0)" } ?? "")
        }
    }
}
