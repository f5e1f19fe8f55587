import ArgumentParser
import Checkpointing
import DeterministicSimulation
import FaultToleranceCore
import Foundation

/// `ftctl checkpoint crash-test`: SIGKILL a `checkpoint create` child at random moments.
struct CheckpointCrashTest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crash-test",
        abstract: "Kill a `checkpoint create` child with SIGKILL at random moments and check every checkpoint.",
        discussion: """
            Each round starts `ftctl checkpoint create DIR` on the same store (it restores the \
            newest checkpoint and goes on), reads the checkpoints it acknowledges, kills it with \
            SIGKILL after a random delay — during a capture, a merge, a delete's rebase, a \
            compaction or a garbage collection — then reopens the store and checks: it verifies; the newest \
            acknowledged checkpoint (or a newer one) is there; and every checkpoint restores \
            exactly the region and volume of its round, rebuilt from the seed. Exits 1 on the \
            first failure.
            """)

    @Option(help: "Rounds, 1...100000.") var rounds = 20
    @Option(help: "Store directory, new or empty, kept afterwards (default: a temporary one, removed).")
    var directory: String?
    @Option(help: "Longest time before the kill, in milliseconds, 20...600000.") var maximumDelay = 800
    @Option(help: "Seed for the kill delays and the write pattern.") var seed: UInt64 = 1

    func validate() throws {
        try require("--rounds", rounds, in: 1...100_000)
        try require("--maximum-delay", maximumDelay, in: 20...600_000)
        if let directory, let contents = try? FileManager.default.contentsOfDirectory(atPath: directory),
            !contents.isEmpty
        {
            throw ValidationError(
                "--directory must be new or empty; \(directory) already holds \(contents.count) entries")
        }
    }

    func run() async throws {
        let path = directory ?? (NSTemporaryDirectory() + "ftctl-checkpoint-crash-\(getpid())")
        if directory == nil { try? FileManager.default.removeItem(atPath: path) }
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: path) } }
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var random = SimulationRandom(seed: seed)
        let workload = DemoWorkload(pages: 512, writes: 48, seed: seed)
        var highestAcknowledged: UInt64 = 0
        var acknowledgements = 0
        for round in 1...rounds {
            let delay = Int.random(in: 20...max(20, maximumDelay), using: &random)
            let lines = try await linesOfKilledChild(
                executable,
                [
                    "checkpoint", "create", path, "--rounds", "1000000", "--pages", "\(workload.pages)", "--writes",
                    "\(workload.writes)", "--keep", "3", "--merge-every", "3", "--gc-every", "2", "--budget", "256",
                    "--seed", "\(seed)",
                ],
                after: .milliseconds(delay))
            let acknowledged = lines.compactMap { line -> UInt64? in
                guard line.hasPrefix("ack ") else { return nil }
                return line.split(separator: " ").dropFirst().first.flatMap { UInt64($0) }
            }
            acknowledgements += acknowledged.count
            highestAcknowledged = max(highestAcknowledged, acknowledged.max() ?? 0)

            guard try FileStoragePool.storedUnitCapacity(in: path + "/units") != nil else {
                if highestAcknowledged == 0 {
                    print("round \(round): killed after \(delay) ms before the store existed")
                    continue
                }
                throw failure("round \(round): the store is gone after \(acknowledgements) acknowledgements")
            }
            let (store, pool) = try openCheckpointStore(path, create: false, budgetMiB: 256)
            defer { pool.close() }
            let verification = store.verify()
            if let problem = verification.problems.first {
                throw failure("round \(round): verify: \(problem)")
            }
            let present = store.checkpoints
            guard let newest = present.last, newest.id.rawValue >= highestAcknowledged else {
                throw failure(
                    "round \(round): acknowledged \(highestAcknowledged), newest present \(present.last.map { "\($0.id)" } ?? "none")"
                )
            }
            for summary in present {
                let expected = workload.expected(through: Int(summary.epoch))
                var memory = [UInt8](repeating: 0, count: expected.memory.count)
                var volume = [UInt8](repeating: 0, count: expected.volume.count)
                try memory.withUnsafeMutableBytes { try store.restore(summary.id, item: "heap", into: $0) }
                try volume.withUnsafeMutableBytes { try store.restore(summary.id, item: "disk", into: $0) }
                guard memory == expected.memory, volume == expected.volume else {
                    throw failure("round \(round): \(summary.id) (round \(summary.epoch)) does not restore its state")
                }
            }
            print(
                "round \(round): killed after \(delay) ms, \(acknowledged.count) acknowledged; "
                    + "\(present.count) checkpoints (\(present.first.map { "\($0.id)" } ?? "")...\(newest.id)) "
                    + "restore exactly, \(pool.units.count) units, verify OK")
        }
        print(
            "crash test passed: \(rounds) SIGKILLs, \(acknowledgements) acknowledged checkpoints, every one restorable")
    }

    private func failure(_ message: String) -> ExitCode {
        print("FAILED " + message)
        return ExitCode(1)
    }
}
