import Foundation
import Testing

/// Runs the built `ftctl` with `arguments`, killing it after `limit`; returns how it ended.
func runToolBounded(_ arguments: [String], limit: Duration = .seconds(120)) throws -> (
    status: Int32, signalled: Bool, timedOut: Bool, output: String
) {
    let tool = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        .appendingPathComponent("ftctl")
    let process = Process()
    process.executableURL = tool
    process.arguments = arguments
    let output = FileManager.default.temporaryDirectory.appendingPathComponent("ftctl-\(UUID().uuidString).out")
    FileManager.default.createFile(atPath: output.path, contents: nil)
    let handle = try FileHandle(forWritingTo: output)
    process.standardOutput = handle
    process.standardError = handle
    try process.run()
    let deadline = ContinuousClock.now + limit
    var timedOut = false
    while process.isRunning {
        if ContinuousClock.now > deadline {
            timedOut = true
            process.terminate()
            break
        }
        usleep(10_000)
    }
    process.waitUntilExit()
    try handle.close()
    let text = (try? String(contentsOf: output, encoding: .utf8)) ?? ""
    try? FileManager.default.removeItem(at: output)
    return (process.terminationStatus, process.terminationReason == .uncaughtSignal, timedOut, text)
}

/// Hostile values for numbers, durations and addresses.
let hostileValues = [
    "nan", "-nan", "inf", "-inf", "0", "-0", "-1", "1e30", "1e-30", "9223372036854775807",
    "-9223372036854775808", "18446744073709551616", "4e9", "0x10", "", " ", "1s", "-2s", "nans", "infs",
    String(repeating: "9", count: 400), "1.5", "NaN", "1_000", "+5", "--", "127.0.0.1:99999",
]

/// Each command with one option to vary; the other arguments make any valid run short (a
/// directory that cannot exist, a seed count of one, a one-second time limit).
let propertyCommands: [(option: String, arguments: [String])] = [
    ("--volumes", ["journal", "create", "/dev/null/ftctl/j"]),
    ("--volume-size", ["journal", "create", "/dev/null/ftctl/j"]),
    ("--unit-size", ["journal", "create", "/dev/null/ftctl/j"]),
    ("--units", ["journal", "create", "/dev/null/ftctl/j"]),
    ("--window", ["journal", "create", "/dev/null/ftctl/j"]),
    ("--quota", ["journal", "create", "/dev/null/ftctl/j"]),
    ("--count", ["journal", "stress", "/dev/null/ftctl/j"]),
    ("--size", ["journal", "stress", "/dev/null/ftctl/j"]),
    ("--before", ["journal", "recover", "/dev/null/ftctl/j", "--out", "/dev/null/ftctl/o"]),
    ("--at", ["journal", "recover", "/dev/null/ftctl/j", "--out", "/dev/null/ftctl/o"]),
    ("--seeds", ["simulate", "--time-limit", "1"]),
    ("--time-limit", ["simulate", "--seeds", "1"]),
    ("--jobs", ["simulate", "--seeds", "1"]),
    ("--seeds", ["heartbeat", "simulate", "--time-limit", "1"]),
    ("--seed", ["heartbeat", "simulate"]),
    ("--seeds", ["journal", "simulate", "--time-limit", "1"]),
    ("--steps", ["journal", "simulate", "--seeds", "1"]),
    ("--factor", ["livecopy", "simulate", "--seeds", "1"]),
    ("--seeds", ["livecopy", "simulate", "--time-limit", "1"]),
    ("--megabytes", ["spare", "create", "/dev/null/ftctl/a"]),
    ("--block-kib", ["spare", "create", "/dev/null/ftctl/a"]),
    ("--member", ["spare", "migrate", "/dev/null/ftctl/a"]),
    ("--rounds", ["spare", "crash-test", "--maximum-delay", "20"]),
    ("--at", ["dr", "plan", "--environment", "/dev/null/ftctl/e"]),
    ("--seeds", ["dr", "simulate", "--shipping", "--runtimes", "--time-limit", "1"]),
    ("--megabytes", ["dr", "protect", "--directory", "/dev/null/ftctl/p"]),
    ("--rate", ["dr", "protect", "--directory", "/dev/null/ftctl/p"]),
    ("--at", ["dr", "recover", "--directory", "/dev/null/ftctl/p"]),
    ("--workload-writes", ["dr", "test-failover", "--directory", "/dev/null/ftctl/p"]),
    ("--step-blocks", ["dr", "recover", "--directory", "/dev/null/ftctl/p"]),
]

@Suite("ftctl survives hostile values in every option")
struct CommandLinePropertyTests {
    /// Every command × a seeded sample of hostile values: the tool exits (never a signal,
    /// never a hang past the bound) with 0, 1 or 64, and a refusal is one line naming the
    /// option. The sample is seeded, so a failure names its case and replays.
    @Test("no trap, no hang, a clear refusal", arguments: propertyCommands.indices)
    func hostile(_ index: Int) throws {
        let command = propertyCommands[index]
        var generator = SplitMix(seed: UInt64(index) &+ 0x5EED)
        let sample = (0..<6).map { _ in hostileValues[Int(generator.next() % UInt64(hostileValues.count))] }
        for value in Set(sample).sorted() {
            let arguments = command.arguments + ["\(command.option)=\(value)"]
            let run = try runToolBounded(arguments)
            let shown = arguments.joined(separator: " ")
            #expect(!run.signalled, "\(shown): killed by a signal (\(run.status)): \(run.output.suffix(300))")
            #expect(!run.timedOut, "\(shown): still running after 30 s")
            #expect([0, 1, 64].contains(run.status), "\(shown): exit \(run.status): \(run.output.suffix(300))")
            if run.status == 64 {
                let first = run.output.split(separator: "\n").first.map(String.init) ?? ""
                #expect(first.hasPrefix("Error: ") && first.contains(command.option), "\(shown): \(first)")
            }
        }
    }
}

/// A small seeded generator (SplitMix64) for the sample.
struct SplitMix {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}
