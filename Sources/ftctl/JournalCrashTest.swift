import ArgumentParser
import DeterministicSimulation
import ElasticJournal
import ElasticJournalSimulation
import FaultToleranceCore
import Foundation

/// `ftctl journal crash-test`: SIGKILL a `journal stress` child at random moments.
struct JournalCrashTest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crash-test",
        abstract: "Kill a `journal stress` child with SIGKILL at random moments and check what survived.",
        discussion: """
            Each round starts `ftctl journal stress DIR`, reads the sequence numbers it prints \
            as acknowledged, kills it with SIGKILL after a random delay, reopens the journal \
            (recovery) and checks: every acknowledged sequence is present, every record's \
            payload is intact, and the journal verifies. Exits 1 on the first failure.
            """)

    @Option(help: "Rounds, 1...100000.") var rounds = 20
    @Option(help: "Journal directory, new or empty, kept afterwards (default: a temporary one, removed).")
    var directory: String?
    @Option(help: "Longest time before the kill, in milliseconds, 20...600000.") var maximumDelay = 600
    @Option(help: "Seed for the kill delays and record sizes.") var seed: UInt64 = 1

    func validate() throws {
        try require("--rounds", rounds, in: 1...100_000)
        try require("--maximum-delay", maximumDelay, in: 20...600_000)
        // The test fills the directory with a journal: never one that holds anything else.
        if let directory, let contents = try? FileManager.default.contentsOfDirectory(atPath: directory),
            !contents.isEmpty
        {
            throw ValidationError(
                "--directory must be new or empty; \(directory) already holds \(contents.count) entries")
        }
    }

    func run() async throws {
        let path = directory ?? (NSTemporaryDirectory() + "ftctl-crash-\(getpid())")
        if directory == nil { try? FileManager.default.removeItem(atPath: path) }
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: path) } }
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var random = SimulationRandom(seed: seed)
        var totalAcknowledged = 0
        for round in 1...rounds {
            let delay = Int.random(in: 20...max(20, maximumDelay), using: &random)
            let size = [64, 512, 4096, 20_000].randomElement(using: &random) ?? 512
            let lines = try await linesOfKilledChild(
                executable, ["journal", "stress", path, "--size", "\(size)", "--concurrency", "16"],
                after: .milliseconds(delay))
            let acknowledged = lines.compactMap { $0.hasPrefix("ack ") ? UInt64($0.dropFirst(4)) : nil }
            totalAcknowledged += acknowledged.count
            let highest = acknowledged.max() ?? 0

            // A kill during `create` leaves no journal (it is built aside and renamed into
            // place), which is fine only if nothing was acknowledged.
            let folder = JournalDirectory(path: path)
            guard try FileStoragePool.storedUnitCapacity(in: folder.units) != nil else {
                if acknowledged.isEmpty {
                    print("round \(round): killed after \(delay) ms before the journal existed")
                    continue
                }
                throw failure("round \(round): no journal after \(acknowledged.count) acknowledgements")
            }
            let store = try folder.openStore(readOnly: false, budgetUnits: 64)
            guard let journal = store.journal(1) else {
                if acknowledged.isEmpty {
                    print("round \(round): killed after \(delay) ms before the journal existed")
                    continue
                }
                throw failure("round \(round): journal 1 is missing after \(acknowledged.count) acknowledgements")
            }
            let recovered = journal.lastSequence
            guard recovered >= highest else {
                throw failure("round \(round): acknowledged \(highest) but recovered only through \(recovered)")
            }
            let verification = try journal.verify()
            var damaged = 0
            try journal.forEachRecord(from: .zero, through: Instant(nanoseconds: .max)) { record in
                if !stressPayloadIsIntact(record.bytes) { damaged += 1 }
            }
            guard damaged == 0 else { throw failure("round \(round): \(damaged) records have damaged payloads") }
            let torn = store.recentEvents.filter { if case .tornTailTruncated = $0 { true } else { false } }.count
            print(
                "round \(round): killed after \(delay) ms (\(size)-byte records); \(acknowledged.count) acknowledged, "
                    + "highest \(highest); recovered through \(recovered)\(torn > 0 ? ", torn tail cut" : ""); "
                    + "verify OK (\(verification.records) records)")
            try store.close()
        }
        print("crash test passed: \(rounds) SIGKILLs, \(totalAcknowledged) acknowledged records, none lost")
    }

    private func failure(_ message: String) -> ExitCode {
        print("FAILED " + message)
        return ExitCode(1)
    }
}

/// Runs `executable` with `arguments`, kills it with SIGKILL after `delay`, and returns the
/// whole lines it wrote to standard output (the kill may cut the last one, which does not
/// count). Shared by the crash tests.
func linesOfKilledChild(_ executable: String, _ arguments: [String], after delay: Duration) async throws
    -> [Substring]
{
    let child = Process()
    child.executableURL = URL(fileURLWithPath: executable)
    child.arguments = arguments
    let output = Pipe()
    child.standardOutput = output
    child.standardError = FileHandle.nullDevice
    let collected = CollectedOutput()
    // A thread of its own blocks on the pipe, not the cooperative pool.
    let reader = Thread { collected.set(output.fileHandleForReading.readDataToEndOfFile()) }
    try child.run()
    reader.start()
    try await Task.sleep(for: delay)
    kill(child.processIdentifier, SIGKILL)
    child.waitUntilExit()
    let text = String(decoding: collected.wait(), as: UTF8.self)
    var lines = text.split(separator: "\n", omittingEmptySubsequences: false)
    if !text.hasSuffix("\n") { lines.removeLast() }
    return lines
}

/// Bytes read by a background thread, handed over once.
private final class CollectedOutput: @unchecked Sendable {
    private let condition = NSCondition()
    private var data: Data?

    func set(_ value: Data) {
        condition.lock()
        data = value
        condition.signal()
        condition.unlock()
    }

    func wait() -> Data {
        condition.lock()
        defer { condition.unlock() }
        while data == nil { condition.wait() }
        return data ?? Data()
    }
}

/// `ftctl journal simulate`.
struct JournalSimulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run the journal scenario (crashes, power cuts, torn writes, fsync failures) over many seeds.",
        discussion: """
            Each seed runs the shipped journal and its recovery on simulated disks: crashes, power \
            cuts inside multi-step operations, lost and torn unsynchronized writes, fsync \
            failures, damage at rest (one seed in eight) and bits flipped on read (one in eight). \
            Half the seeds append buffered, half in group commit with the flusher's work run as \
            steps of the seed. Exits 1 if any seed breaks an invariant.
            """)

    @Option(help: "Number of seeds.") var seeds: Int = 500
    @Option(help: "Run exactly this seed.") var seed: UInt64?
    @Option(help: "Steps per seed.") var steps = 400
    @Option(help: "Plant a bug: \(JournalBug.allCases.map(\.rawValue).joined(separator: ", ")).") var bug: JournalBug?
    @Flag(help: "Every seed in group commit (default: half the seeds).") var groupCommit = false
    @Option(help: "Worker threads.") var jobs: Int = ProcessInfo.processInfo.activeProcessorCount
    @OptionGroup var window: SeedWindowOptions
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        try require("--seeds", seeds, in: 1...maximumSeeds)
        try require("--steps", steps, in: 1...1_000_000)
        try require("--jobs", jobs, in: 1...maximumJobs)
    }

    func run() async throws {
        let scenario = JournalScenario(steps: steps, bug: bug, groupCommit: groupCommit ? true : nil)
        let plan = window.plan(seeds: seeds, replay: seed)
        let name = "elastic-journal" + (bug.map { " (bug: \($0.rawValue))" } ?? "")
        let summary = await runSeeds(plan, jobs: jobs, scenario: name) { scenario.run(seed: $0) }
        try report(summary, json: json, operations: "operations") { seed in
            "swift run ftctl journal simulate --seed \(seed)" + (bug.map { " --bug \($0.rawValue)" } ?? "")
                + (groupCommit ? " --group-commit" : "")
        }
    }
}
