public import ArgumentParser
import DeterministicSimulation
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import LiveCopy
import LiveCopySimulation
import Logging
import NIOCore

extension LiveCopyBug: ExpressibleByArgument {}
extension WritePattern: ExpressibleByArgument {}

/// `ftctl livecopy`: copying online memory to an offline copy without stopping the writers.
struct LiveCopyCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "livecopy",
        abstract: "Dirty-page live copy of online memory to an offline copy (LiveCopy).",
        subcommands: [LiveCopySimulate.self, LiveCopyCompare.self, LiveCopyDemo.self])
}

/// `ftctl livecopy simulate`.
struct LiveCopySimulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run the live-copy scenario over many seeds in virtual time.",
        discussion: """
            Each seed runs the shipped LiveCopy, RemoteDestination and LiveCopyReceiver (one \
            seed in eight a LocalDestination) in virtual time on a deterministic executor: a \
            4 MiB region of 4 KiB pages under uniform, skewed or sweeping writes at 0.1, 0.5, \
            0.9 or 1.1 times the link's bandwidth (which drifts and jitters), then a second of \
            duplicated mode, with a bit flipped at rest in the copy on one seed in eight. \
            Invariants: clean verification after the switchover, pause within budget when \
            predicted, bounded rounds, throttle or typed error above the bandwidth, writers \
            released, damage found and repaired, identical after duplicated mode. Exits 1 if \
            any seed breaks one.
            """)

    @Option(help: "Number of seeds.") var seeds: Int = 500
    @Option(help: "Run exactly this seed and print how it ended.") var seed: UInt64?
    @Option(help: "Plant a bug: \(LiveCopyBug.allCases.map(\.rawValue).joined(separator: ", ")).")
    var bug: LiveCopyBug?
    @Option(help: "Only this write pattern.") var pattern: WritePattern?
    @Option(help: "Only this dirty rate, as a multiple of the bandwidth.") var factor: Double?
    @Flag(help: "Fail on a stall instead of throttling the writers.") var noThrottle = false
    @Option(help: "Worker threads.") var jobs: Int = ProcessInfo.processInfo.activeProcessorCount
    @OptionGroup var window: SeedWindowOptions
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        try require("--seeds", seeds, in: 1...maximumSeeds)
        try require("--jobs", jobs, in: 1...maximumJobs)
        // Above ten times the bandwidth every run ends at once in notConverging; NaN is no rate.
        try require("--factor", factor, in: 0.01...10)
    }

    func run() async throws {
        let policy: ConvergencePolicy = noThrottle ? .adaptive(throttling: nil) : .adaptive()
        let scenario = LiveCopyScenario(policy: policy, pattern: pattern, dirtyFactor: factor, bug: bug)
        if let seed {
            let (report, outcome) = await scenario.runWithOutcome(seed: seed)
            if let outcome { print(describe(outcome)) }
            if let violation = report.violation {
                print("FAILED: \(violation)")
                throw ExitCode(1)
            }
            print("all invariants held (\(report.invariantChecks) checks, \(report.operations) writes)")
            return
        }
        let name = "live-copy" + (bug.map { " (bug: \($0.rawValue))" } ?? "")
        let plan = window.plan(seeds: seeds)
        let summary = await runSeeds(plan, jobs: jobs, scenario: name) { await scenario.run(seed: $0) }
        try report(summary, json: json, operations: "writes") { seed in
            "swift run ftctl livecopy simulate --seed \(seed)" + (bug.map { " --bug \($0.rawValue)" } ?? "")
        }
    }
}

/// One outcome on one line.
func describe(_ outcome: LiveCopyOutcome) -> String {
    let ending =
        outcome.switchedOver
        ? String(
            format: "switched over after %d rounds, pause %.1f ms (predicted %@)", outcome.rounds,
            outcome.pause * 1000, outcome.predictedPause.map { String(format: "%.1f ms", $0 * 1000) } ?? "none")
        : "failed with \(outcome.error ?? "?") after \(outcome.rounds) rounds"
    return "\(outcome.pattern.rawValue) writes at \(outcome.dirtyFactor)x, \(outcome.destination.rawValue): \(ending), "
        + String(format: "%.2f MiB copied", Double(outcome.bytes) / 1_048_576)
        + ", throttle up to \(outcome.maximumThrottle) %"
}

/// `ftctl livecopy compare`: our policy against QEMU's, five passes and stop-and-copy.
struct LiveCopyCompare: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "compare",
        abstract: "Compare convergence policies on the same simulated workloads (pause and bytes).",
        discussion: """
            For every write pattern and dirty rate, runs the same seeds under the adaptive policy, \
            QEMU's (300 ms limit, 50% trigger, 20/10/99 throttle), five fixed passes and \
            stop-and-copy, and prints mean pause and mean bytes copied. Exits 1 if the adaptive \
            policy is beaten on pause and bytes at once by QEMU's or five passes in any case, if \
            its pause is not 10x shorter than stop-and-copy's at dirty rates up to half the \
            bandwidth, or if any run of any policy breaks an invariant of the scenario (the \
            shipped LiveCopy over a simulated link, as in `livecopy simulate`).
            """)

    @Option(help: "Seeds per case, 1...100000.") var seeds: Int = 20
    @Option(help: "Worker threads.") var jobs: Int = ProcessInfo.processInfo.activeProcessorCount

    func validate() throws {
        try require("--seeds", seeds, in: 1...100_000)
        try require("--jobs", jobs, in: 1...maximumJobs)
    }

    struct Row: Sendable {
        var switchedOver = 0
        var runs = 0
        var pause = 0.0
        var bytes = 0.0
        var overBudget = 0
        var throttle = 0
    }

    func run() async throws {
        let policies: [(String, ConvergencePolicy)] = [
            ("adaptive", .adaptive()), ("qemu", .qemu), ("5 passes", .fixedRounds(5)), ("stop-and-copy", .stopAndCopy),
        ]
        var failures: [String] = []
        print("pattern   rate  policy          switched  pause ms (mean)  over budget  MiB copied (mean)  throttle max")
        for pattern in WritePattern.allCases {
            for factor in LiveCopyScenario.dirtyFactors {
                var rows: [String: Row] = [:]
                for (name, policy) in policies {
                    let scenario = LiveCopyScenario(
                        policy: policy, pattern: pattern, dirtyFactor: factor, destination: .remote)
                    let (outcomes, violations) = await runOutcomes(scenario, seeds: seeds, jobs: jobs)
                    // Every policy's runs must keep the scenario's invariants, not only ours.
                    for (seed, violation) in violations {
                        failures.append(
                            "\(pattern.rawValue) \(factor)x \(name): seed \(seed) broke \(violation.invariant): \(violation.detail)"
                        )
                    }
                    var row = Row()
                    for outcome in outcomes {
                        row.runs += 1
                        row.bytes += Double(outcome.bytes) / Double(outcomes.count)
                        row.throttle = max(row.throttle, outcome.maximumThrottle)
                        if outcome.switchedOver {
                            row.switchedOver += 1
                            row.pause += outcome.pause / Double(outcomes.count)
                            if outcome.pause > 0.3 { row.overBudget += 1 }
                        }
                    }
                    rows[name] = row
                    print(
                        pattern.rawValue.padding(toLength: 10, withPad: " ", startingAt: 0)
                            + String(format: "%4.1fx  ", factor)
                            + name.padding(toLength: 16, withPad: " ", startingAt: 0)
                            + String(
                                format: "%3d/%-3d   %10.1f       %5d        %10.2f         %3d %%", row.switchedOver,
                                row.runs, row.pause * 1000, row.overBudget, row.bytes / 1_048_576, row.throttle))
                }
                guard let ours = rows["adaptive"] else { continue }
                for other in ["qemu", "5 passes"] {
                    guard let theirs = rows[other], theirs.switchedOver == theirs.runs else { continue }
                    let beaten =
                        theirs.pause <= ours.pause && theirs.bytes <= ours.bytes
                        && (theirs.pause < ours.pause || theirs.bytes < ours.bytes)
                    if beaten || ours.switchedOver < ours.runs {
                        failures.append("\(pattern.rawValue) \(factor)x: \(other) beats adaptive on pause and bytes")
                    }
                }
                if factor <= 0.5, let stop = rows["stop-and-copy"], ours.pause * 10 > stop.pause {
                    failures.append("\(pattern.rawValue) \(factor)x: pause not 10x shorter than stop-and-copy")
                }
            }
        }
        for failure in failures { print("FAILED: \(failure)") }
        if !failures.isEmpty { throw ExitCode(1) }
        print("adaptive is beaten on pause and bytes at once in no case; 10x shorter pause than stop-and-copy held")
    }

    private func runOutcomes(_ scenario: LiveCopyScenario, seeds: Int, jobs: Int) async -> (
        [LiveCopyOutcome], [(UInt64, InvariantViolation)]
    ) {
        let workers = max(1, min(jobs, seeds))
        return await withTaskGroup(of: ([LiveCopyOutcome], [(UInt64, InvariantViolation)]).self) { group in
            for worker in 0..<workers {
                group.addTask {
                    var outcomes: [LiveCopyOutcome] = []
                    var violations: [(UInt64, InvariantViolation)] = []
                    for index in stride(from: worker, to: seeds, by: workers) {
                        let seed = UInt64(index + 1)
                        let (report, outcome) = await scenario.runWithOutcome(seed: seed)
                        if let outcome { outcomes.append(outcome) }
                        if let violation = report.violation { violations.append((seed, violation)) }
                    }
                    return (outcomes, violations)
                }
            }
            var all: [LiveCopyOutcome] = []
            var violations: [(UInt64, InvariantViolation)] = []
            for await part in group {
                all += part.0
                violations += part.1
            }
            return (all, violations.sorted { $0.0 < $1.0 })
        }
    }
}

/// A write load on real threads: each writer writes 8-byte words at `rate` writes per second.
final class WriteLoad: @unchecked Sendable {
    // unchecked: the counters are behind `lock`.
    private let lock = NSLock()
    private var stopped = false
    private var running = 0
    private var writes = 0

    init(memory: TrackedMemory, threads: Int, rate: Int, pattern: WritePattern) {
        running = threads
        for index in 0..<threads {
            Thread { [self] in
                var state = UInt64(index + 1) &* 0x9E37_79B9_7F4A_7C15
                var sweep = index * memory.pageCount / max(1, threads)
                let hot = max(1, memory.pageCount / 10)
                let perThread = max(1, rate / threads)
                let burst = max(1, perThread / 1000)  // writes per millisecond
                var done = 0
                while !isStopped {
                    let started = ContinuousClock.now
                    for _ in 0..<burst {
                        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                        let page: Int
                        switch pattern {
                        case .uniform: page = Int((state >> 33) % UInt64(memory.pageCount))
                        case .skewed:
                            page =
                                state % 10 == 0
                                ? Int((state >> 33) % UInt64(memory.pageCount)) : Int((state >> 33) % UInt64(hot))
                        case .sweeping:
                            page = sweep
                            sweep = (sweep + 1) % memory.pageCount
                        }
                        let slot = Int((state >> 17) % UInt64(memory.pageSize / 8))
                        try? memory.storeWord(state, at: page * memory.pageSize + slot * 8)
                    }
                    done += burst
                    // Pace the load at about `rate`: a load generator, not a measurement. This
                    // is one of the demo's own writer threads, not the cooperative pool.
                    let spent = ContinuousClock.now - started
                    if spent < .milliseconds(1) {
                        Thread.sleep(forTimeInterval: secondsValue(.milliseconds(1) - spent))
                    }
                }
                lock.withLock {
                    writes += done
                    running -= 1
                }
            }.start()
        }
    }

    private var isStopped: Bool { lock.withLock { stopped } }

    /// Stops the writers, waits for them, and returns how many writes they made.
    func stop() async -> Int {
        lock.withLock { stopped = true }
        while lock.withLock({ running > 0 }) { try? await Task.sleep(for: .milliseconds(1)) }
        return lock.withLock { writes }
    }
}

func secondsValue(_ duration: Duration) -> Double {
    let (whole, fraction) = duration.components
    return Double(whole) + Double(fraction) * 1e-18
}

func milliseconds(_ duration: Duration?) -> String {
    duration.map { String(format: "%.1f ms", secondsValue($0) * 1000) } ?? "-"
}

/// `ftctl livecopy demo`.
struct LiveCopyDemo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Copy a region live under a write load, round by round, with the pause and the verification.",
        discussion: """
            A region of --megabytes MiB is filled, then --threads writer threads write 8-byte \
            words at --rate writes per second (uniform, skewed or sweeping) while it is copied \
            to an offline region, locally or with --tcp over loopback TCP. Each round is printed \
            with its dirty rate, the bandwidth the policy plans with and the pause it predicts; \
            then the switchover (predicted and measured pause), the checksum pass, a second of \
            duplicated mode with the writers still running, and a byte-for-byte comparison. \
            Exits 1 if the regions differ.
            """)

    @Option(help: "Region size in MiB; two regions must fit in a third of physical memory.") var megabytes: Int = 256
    @Option(help: "Writer threads, 1...64.") var threads: Int = 2
    @Option(help: "Writes per second, all writers together, 1...100000000.") var rate: Int = 200_000
    @Option(help: "Write pattern: uniform, skewed or sweeping.") var pattern: WritePattern = .uniform
    @Option(help: "Downtime budget in milliseconds, 1...60000.") var budget: Int = 300
    @Flag(help: "Copy over loopback TCP instead of in-process.") var tcp = false
    @Flag(help: "Deflate page batches (with --tcp).") var compress = false

    func validate() throws {
        let largest = max(1, Int(ProcessInfo.processInfo.physicalMemory / 6 / 1_048_576))
        try require("--megabytes", megabytes, in: 1...largest)
        try require("--threads", threads, in: 1...64)
        try require("--rate", rate, in: 1...100_000_000)
        try require("--budget", budget, in: 1...60_000)
    }

    func run() async throws {
        try await LiveCopyScene(
            megabytes: megabytes, threads: threads, rate: rate, pattern: pattern, budget: .milliseconds(budget),
            tcp: tcp, compress: compress
        ).run()
    }
}

/// The live-copy scene, shared by `ftctl livecopy demo` and `ftctl demo`.
struct LiveCopyScene {
    var megabytes = 64
    var threads = 2
    var rate = 200_000
    var pattern = WritePattern.uniform
    var budget = Duration.milliseconds(300)
    var tcp = false
    var compress = false

    func run() async throws {
        let pageCount = megabytes * 256
        print(
            "== Live copy: \(megabytes) MiB of 4 KiB pages, \(threads) writers at \(rate) writes/s (\(pattern.rawValue)), "
                + "budget \(milliseconds(budget)), " + (tcp ? "over loopback TCP" : "in-process")
                + "; vector path \(VectorPath.current.rawValue)")
        let memory = try TrackedMemory(pageCount: pageCount)
        for page in 0..<pageCount { try memory.storeWord(UInt64(page) &* 0x9E37_79B9_7F4A_7C15 | 1, at: page * 4096) }
        let region = try OfflineRegion(pageCount: pageCount, populate: true)
        var logger = Logger(label: "ftctl.livecopy")
        logger.logLevel = .error
        var transports: [TCPTransport] = []
        var receiver: Task<LiveCopyReceiver.Summary, any Error>?
        let destination: any LiveCopyDestination
        if tcp {
            let any = try SocketAddress(ipAddress: "127.0.0.1", port: 0)
            let online = try await TCPTransport.start(
                configuration: .init(localNode: "online", bindAddress: any), logger: logger)
            let offline = try await TCPTransport.start(
                configuration: .init(localNode: "offline", bindAddress: any), logger: logger)
            online.setPeer("offline", address: offline.localAddress)
            offline.setPeer("online", address: online.localAddress)
            transports = [online, offline]
            let served = LiveCopyReceiver(transport: offline, region: region, logger: logger)
            receiver = Task { try await served.serveSession() }
            destination = RemoteDestination(
                transport: online, peer: "offline", options: .init(compression: compress))
        } else {
            destination = LocalDestination(region: region)
        }
        let load = WriteLoad(memory: memory, threads: threads, rate: rate, pattern: pattern)
        let copy = LiveCopy(
            source: memory, destination: destination, policy: .adaptive(downtimeBudget: budget), logger: logger)
        let printer = Task {
            print(
                "round      pages       sent   duration   dirty pages   dirty rate    bandwidth   predicted  throttle")
            for await event in copy.progress {
                switch event {
                case .roundFinished(let round):
                    print(
                        String(
                            format: "%5d %10d %10d %8.1f ms %13d %8.1f MB/s %8.1f MB/s %11@ %8d %%", round.round,
                            round.pages, round.pagesSent, secondsValue(round.duration) * 1000, round.dirtyPages,
                            round.dirtyRate / 1e6, round.bandwidth / 1e6, milliseconds(round.predictedPause),
                            round.throttlePercent))
                case .switchedOver(let switchover):
                    print(
                        "switchover after \(switchover.rounds) rounds: \(switchover.pages) pages copied with writers "
                            + "paused; predicted pause \(milliseconds(switchover.predictedPause)), "
                            + "measured \(milliseconds(switchover.pause))")
                case .verified(let checked, let recopied):
                    print("checksum pass: \(checked) pages compared by CRC32C, \(recopied) recopied")
                case .failed(let error):
                    print("FAILED: \(error)")
                }
            }
        }
        let report: LiveCopyReport
        do {
            report = try await copy.run()
        } catch {
            _ = await load.stop()
            await printer.value
            for transport in transports { await transport.close() }
            throw error
        }
        await printer.value
        print(
            "(pages: to copy this round; sent: pages that travelled, zero and unchanged pages skipped; dirty pages: "
                + "written during the round, the next round's work; predicted: the pause if the copy stopped the "
                + "writers now; throttle: share of the writers' time held back so the copy converges)")
        print("duplicated mode: writers keep running for 1 s, every write applied to both sides")
        try await Task.sleep(for: .seconds(1))
        let writes = await load.stop()
        _ = try await copy.verify()
        let same = memory.withUnsafeBytes { source in region.withUnsafeBytes { source.elementsEqual($0) } }
        await copy.detach()
        if let receiver { _ = try await receiver.value }
        for transport in transports { await transport.close() }
        print(
            "\(writes) writes during the demo; \(report.pagesSent) pages sent in all; "
                + "regions " + (same ? "byte-identical" : "DIFFER"))
        if !same { throw ExitCode(1) }
    }
}
