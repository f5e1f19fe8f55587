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

    func run() async throws {
        let page = 4096
        let capacity = megabytes << 20
        func flash(_ id: UInt64, _ overProvisioning: Double) throws -> SimulatedFlash {
            try SimulatedFlash(id: UnitID(id), capacity: capacity, geometry: .init(overProvisioning: overProvisioning))
        }
        let healthy = try flash(1, 0.28)
        let worn = try flash(2, 0.07)
        let spare = try flash(3, 0.28)
        let array = try StorageArray.create(
            id: UnitID(100), members: [healthy, worn], spares: [spare],
            configuration: .init(layout: .mirror, blockSize: 64 << 10, arrayID: 0xDE30))
        let blocks = array.capacity / page
        print(
            "A mirror of two \(megabytes) MiB simulated flash drives (unit-1 at 28 % over-provisioning, unit-2 at 7 %), "
                + "unit-3 the spare; the host writes 4 KiB pages at random.")
        let controller = SpareController(
            array: array, sources: [UnitID(1): healthy, UnitID(2): worn, UnitID(3): spare],
            policy: .init(
                threshold: 3, clearBelow: 2.5, window: .seconds(10), minimumDwell: .seconds(2),
                minimumHostBytes: UInt64(capacity / 4)),
            stepBlocks: 16)
        var random = SystemRandomNumberGenerator()
        let bytes = [UInt8](repeating: 0xA5, count: page)
        // Fill, then random writes; virtual time: one millisecond per 64 writes.
        for index in 0..<blocks { try array.write(bytes, at: index * page) }
        var now = Instant.zero
        var written = 0
        var wornBefore: Double?
        var started = false
        var lastShown = -1
        let beforeWear = worn.wear
        while true {
            for _ in 0..<64 {
                try array.write(bytes, at: Int.random(in: 0..<blocks, using: &random) * page)
                written += 1
            }
            now = now + .milliseconds(1)
            guard written % 4096 == 0 else { continue }
            switch try controller.poll(now: now) {
            case .migrationStarted(let member, let amplification)?:
                started = true
                wornBefore = amplification
                let wear = worn.wear
                print(
                    "  after \(written) random writes: \(member) write amplification "
                        + String(format: "%.2f", amplification) + " over the window (since new: "
                        + String(format: "%.2f", ratio(wear, beforeWear)) + "); migrating it to the spare")
                for transition in controller.transitions { print("    monitor: \(transition)") }
            case .copied(let done, let total)?:
                let percent = done * 100 / max(1, total)
                if percent / 10 != lastShown / 10 {
                    lastShown = percent
                    print("  copying live blocks: \(percent) % (host writes go on)")
                }
            case .finished(let report)?:
                print(
                    "  swapped: role \(report.role) is now \(report.to); \(report.from) erased and made the spare; "
                        + "\(report.bytesCopied >> 20) MiB copied (live data; md would copy the whole member)")
                print(
                    "  \(report.from) after the erase: \(worn.livePages) flash pages still mapped (label and records)")
                let rejoin = worn.wear
                try array.beginMigration(of: UnitID(1))
                let second = try await array.runMigration(stepBlocks: 64)
                let end = worn.wear
                print(
                    "  \(report.from) rejoins as the target of the next migration (of \(second.from)): "
                        + "write amplification " + String(format: "%.2f", ratio(end, rejoin)) + " while it takes "
                        + "\(second.bytesCopied >> 20) MiB, against " + String(format: "%.2f", wornBefore ?? 0)
                        + " before it was moved")
                return
            default:
                if !started, written > 200 * blocks {
                    print("  no member crossed the threshold after \(written) writes")
                    return
                }
            }
        }
    }

    private func ratio(_ end: SimulatedFlash.Wear, _ start: SimulatedFlash.Wear) -> Double {
        let host = end.hostBytesWritten - start.hostBytesWritten
        return host == 0 ? 0 : Double(end.mediaBytesWritten - start.mediaBytesWritten) / Double(host)
    }
}
