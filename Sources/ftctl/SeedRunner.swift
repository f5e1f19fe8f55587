import ArgumentParser
import DeterministicSimulation
import Foundation
import Synchronization

/// `--first-seed` and `--time-limit`, shared by every `simulate` command. CI gives each module's
/// simulation a time budget instead of a seed count tuned to one machine's speed, and starts each
/// run's seeds where the commit says (so that successive commits explore new seeds; a failure
/// still names its seed, which replays on its own).
struct SeedWindowOptions: ParsableArguments {
    @Option(help: "The first seed of the range (the seeds run are consecutive from it).")
    var firstSeed: UInt64 = 1

    @Option(
        help: ArgumentHelp(
            "Start no new seed after this many seconds; the seeds run are reported (all of them still finish).",
            valueName: "seconds"))
    var timeLimit: Double?

    @Flag(help: "Start no new seed once one has failed (the seeds already started still finish).")
    var stopAtFirstFailure = false

    func validate() throws {
        if let timeLimit, !(timeLimit.isFinite && timeLimit > 0 && timeLimit <= 86_400) {
            throw ValidationError("--time-limit must be a number of seconds in (0, 86400], got \(timeLimit)")
        }
        if firstSeed > UInt64.max - UInt64(maximumSeeds) {
            throw ValidationError("--first-seed must be at most \(UInt64.max - UInt64(maximumSeeds)), got \(firstSeed)")
        }
    }

    /// The limit as a duration.
    var duration: Duration? { timeLimit.map { .nanoseconds(Int64(($0 * 1e9).rounded())) } }

    /// `count` seeds from `--first-seed`, or exactly `replay` when one is given.
    func plan(seeds count: Int, replay: UInt64? = nil) -> SeedPlan {
        replay.map(SeedPlan.single)
            ?? SeedPlan(first: firstSeed, count: count, timeLimit: duration, stopAtFirstFailure: stopAtFirstFailure)
    }
}

/// The seeds one `simulate` run covers: `count` consecutive seeds from `first`, of which a time
/// limit, or the first failure, may run only a prefix.
struct SeedPlan: Sendable {
    /// The first seed.
    var first: UInt64
    /// How many consecutive seeds, at most.
    var count: Int
    /// Start no seed after this much time has passed.
    var timeLimit: Duration?
    /// Start no seed after one has failed: enough to show a planted bug is caught.
    var stopAtFirstFailure = false

    /// Exactly one seed: a replay.
    static func single(_ seed: UInt64) -> SeedPlan { SeedPlan(first: seed, count: 1, timeLimit: nil) }
}

/// A merged summary and how much of the plan it covers.
struct SeedRun: Sendable {
    /// Every run seed's report, merged; failures in seed order.
    var summary: SimulationSummary
    /// The plan that was run.
    var plan: SeedPlan
    /// Wall-clock time taken.
    var elapsed: Duration
    /// Failing seeds whose second run, right after the first on the same worker, ended
    /// otherwise: how it did (``DeterministicSimulation/SimulationReport/replayDifference(_:)``).
    var unreplayable: [UInt64: String] = [:]

    /// Whether a time limit or a failure stopped the run before every planned seed ran.
    var stoppedEarly: Bool { summary.seeds < plan.count }

    /// One line saying which seeds ran and why, when the plan was cut short.
    var coverageLine: String? {
        guard stoppedEarly else { return nil }
        let last = plan.first &+ UInt64(max(summary.seeds, 1) - 1)
        let reason: String
        if plan.stopAtFirstFailure, !summary.failures.isEmpty {
            reason = "stopped at the first failure"
        } else {
            let limit = plan.timeLimit.map { String(format: "%.0f s", secondsValue($0)) } ?? "?"
            reason = "time limit \(limit) reached"
        }
        return "  \(reason): ran seeds \(plan.first)-\(last), \(summary.seeds) of \(plan.count)"
    }
}

/// Hands out the plan's seed indices in order, one at a time, to any number of workers, and
/// stops handing them out at the deadline or once told to: the seeds run are always a prefix of
/// the plan.
private final class SeedDispenser: Sendable {
    private let nextIndex = Atomic<Int>(0)
    private let stopped = Atomic<Bool>(false)
    private let count: Int
    private let deadline: ContinuousClock.Instant?

    init(count: Int, deadline: ContinuousClock.Instant?) {
        self.count = count
        self.deadline = deadline
    }

    /// Hands out no more indices.
    func stop() { stopped.store(true, ordering: .relaxed) }

    func next() -> Int? {
        if stopped.load(ordering: .relaxed) { return nil }
        if let deadline, ContinuousClock.now >= deadline { return nil }
        let index = nextIndex.add(1, ordering: .relaxed).oldValue
        return index < count ? index : nil
    }
}

/// Runs `run` over the seeds of `plan` on `jobs` worker tasks and merges the reports into one
/// summary. Seeds are never materialised as an array, so any count is fine.
func runSeeds(
    _ plan: SeedPlan,
    jobs: Int,
    scenario name: String,
    _ run: @escaping @Sendable (UInt64) async -> SimulationReport
) async -> SeedRun {
    let clock = ContinuousClock()
    let start = clock.now
    let dispenser = SeedDispenser(count: plan.count, deadline: plan.timeLimit.map { start + $0 })
    let workers = max(1, min(jobs, plan.count))
    let (merged, unreplayable) = await withTaskGroup(of: (SimulationSummary, [UInt64: String]).self) { group in
        for _ in 0..<workers {
            group.addTask {
                var partial = SimulationSummary(scenario: name)
                var unreplayable: [UInt64: String] = [:]
                while let index = dispenser.next() {
                    let seed = plan.first &+ UInt64(index)
                    let report = await run(seed)
                    if report.violation != nil {
                        if plan.stopAtFirstFailure { dispenser.stop() }
                        // A failure must replay from its seed: run it again at once, after
                        // whatever this worker ran before, and say so when it ends otherwise.
                        if let difference = report.replayDifference(await run(seed)) {
                            unreplayable[seed] = difference
                        }
                    }
                    partial.add(report)
                }
                return (partial, unreplayable)
            }
        }
        var total = SimulationSummary(scenario: name)
        var unreplayable: [UInt64: String] = [:]
        for await (partial, seeds) in group {
            total.merge(partial)
            unreplayable.merge(seeds) { first, _ in first }
        }
        return (total, unreplayable)
    }
    var total = merged
    total.failures.sort { $0.seed < $1.seed }
    return SeedRun(summary: total, plan: plan, elapsed: clock.now - start, unreplayable: unreplayable)
}

/// Prints `summary` (or any report) as pretty JSON with sorted keys.
func printJSON(_ summary: some Encodable) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
    print(String(decoding: try encoder.encode(summary), as: UTF8.self))
}

/// Prints a summary (as JSON, or as a short table with a `FAILED seed N` line for every
/// failing seed and the command replaying it) and exits 1 if any seed failed.
func report(
    _ run: SeedRun, json: Bool, operations: String, replay: (UInt64) -> String
) throws {
    let summary = run.summary
    if json {
        try printJSON(summary)
        for (seed, difference) in run.unreplayable.sorted(by: { $0.key < $1.key }) {
            FileHandle.standardError.write(Data("seed \(seed) does not replay: run again, it \(difference)\n".utf8))
        }
    } else {
        print(
            "Scenario \(summary.scenario): \(summary.seeds) seeds in \(String(format: "%.1f", secondsValue(run.elapsed))) s"
        )
        if let coverage = run.coverageLine { print(coverage) }
        print("  seeds passed      \(summary.passed)")
        print("  seeds failed      \(summary.failures.count)")
        print("  invariant checks  \(summary.invariantChecks)")
        print("  " + operations.padding(toLength: 18, withPad: " ", startingAt: 0) + "\(summary.operations)")
        for entry in summary.faults.entries where entry.value > 0 { print("  \(entry.name): \(entry.value)") }
        for failure in summary.failures {
            print("FAILED seed \(failure.seed): \(failure.violation.map(\.description) ?? "")")
            print("  replay: " + replay(failure.seed))
            if let difference = run.unreplayable[failure.seed] {
                print(
                    "  does not replay: run again at once, it \(difference) (the simulation is not deterministic here)")
            }
        }
    }
    if !summary.failures.isEmpty { throw ExitCode(1) }
}
