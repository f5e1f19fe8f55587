public import ArgumentParser
import DeterministicSimulation
import FaultToleranceCore
import Foundation
import LiveCopy

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
            Each seed copies a 4 MiB region of 4 KiB pages under uniform, skewed or sweeping \
            writes at 0.1, 0.5, 0.9 or 1.1 times the copy bandwidth (which drifts and jitters), \
            then runs duplicated for a second. Invariants: identical after switchover, pause \
            within budget when predicted, bounded rounds, throttle or typed error above the \
            bandwidth, clean verification, identical in duplicated mode, writers released. \
            Exits 1 if any seed breaks one.
            """)

    @Option(help: "Number of seeds.") var seeds: Int = 500
    @Option(help: "Run exactly this seed and print how it ended.") var seed: UInt64?
    @Option(help: "Plant a bug: \(LiveCopyBug.allCases.map(\.rawValue).joined(separator: ", ")).")
    var bug: LiveCopyBug?
    @Option(help: "Only this write pattern.") var pattern: WritePattern?
    @Option(help: "Only this dirty rate, as a multiple of the bandwidth.") var factor: Double?
    @Flag(help: "Fail on a stall instead of throttling the writers.") var noThrottle = false
    @Option(help: "Worker threads.") var jobs: Int = ProcessInfo.processInfo.activeProcessorCount
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        guard seeds > 0, jobs > 0 else { throw ValidationError("--seeds and --jobs must be positive") }
    }

    func run() async throws {
        let policy: ConvergencePolicy = noThrottle ? .adaptive(throttling: nil) : .adaptive()
        let scenario = LiveCopyScenario(policy: policy, pattern: pattern, dirtyFactor: factor, bug: bug)
        if let seed {
            let (report, outcome) = scenario.runWithOutcome(seed: seed)
            if let outcome { print(describe(outcome)) }
            if let violation = report.violation {
                print("FAILED: \(violation)")
                throw ExitCode(1)
            }
            print("all invariants held (\(report.invariantChecks) checks, \(report.operations) writes)")
            return
        }
        let name = "live-copy" + (bug.map { " (bug: \($0.rawValue))" } ?? "")
        let summary = await runSeeds(Array(1...UInt64(seeds)), jobs: jobs, scenario: name) { scenario.run(seed: $0) }
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
    return "\(outcome.pattern.rawValue) writes at \(outcome.dirtyFactor)x: \(ending), "
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
            policy is beaten on pause and bytes at once by QEMU's or five passes in any case, or \
            if its pause is not 10x shorter than stop-and-copy's at dirty rates up to half the \
            bandwidth.
            """)

    @Option(help: "Seeds per case.") var seeds: Int = 20
    @Option(help: "Worker threads.") var jobs: Int = ProcessInfo.processInfo.activeProcessorCount

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
                    let scenario = LiveCopyScenario(policy: policy, pattern: pattern, dirtyFactor: factor)
                    let outcomes = await runOutcomes(scenario, seeds: seeds, jobs: jobs)
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

    private func runOutcomes(_ scenario: LiveCopyScenario, seeds: Int, jobs: Int) async -> [LiveCopyOutcome] {
        let workers = max(1, min(jobs, seeds))
        return await withTaskGroup(of: [LiveCopyOutcome].self) { group in
            for worker in 0..<workers {
                group.addTask {
                    stride(from: worker, to: seeds, by: workers).compactMap {
                        scenario.runWithOutcome(seed: UInt64($0 + 1)).outcome
                    }
                }
            }
            var all: [LiveCopyOutcome] = []
            for await part in group { all += part }
            return all
        }
    }
}

/// `ftctl livecopy demo` (filled in with the runtime).
struct LiveCopyDemo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "demo", abstract: "A live copy under load.")
    func run() async throws {}
}
