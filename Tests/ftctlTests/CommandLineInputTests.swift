import Foundation
import Testing

/// Runs the built `ftctl` (beside this test bundle: `swift test` builds every product) and
/// returns its exit status and output.
func runTool(_ arguments: [String]) throws -> (status: Int32, output: String) {
    let tool = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        .appendingPathComponent("ftctl")
    try #require(
        FileManager.default.isExecutableFile(atPath: tool.path), "no ftctl at \(tool.path): run `swift build` first")
    let process = Process()
    process.executableURL = tool
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    process.waitUntilExit()
    return (process.terminationStatus, String(decoding: data, as: UTF8.self))
}

/// Starts the built `ftctl` with `arguments` in the background, its output going to
/// `output` (discarded when `nil`).
func launchTool(_ arguments: [String], output: Pipe? = nil) throws -> Process {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
        .appendingPathComponent("ftctl")
    process.arguments = arguments
    process.standardOutput = output ?? FileHandle.nullDevice
    process.standardError = output ?? FileHandle.nullDevice
    try process.run()
    return process
}

/// One bad input: the arguments and the option the refusal must name.
struct BadInput: Sendable, CustomTestStringConvertible {
    let arguments: [String]
    let option: String

    init(_ option: String, _ arguments: String...) {
        self.arguments = arguments
        self.option = option
    }

    var testDescription: String { arguments.joined(separator: " ") }
}

/// Inputs that crashed, hung or were silently accepted before, each refused before anything
/// runs or touches a file (the directories named here do not exist).
let badInputs: [BadInput] = [
    BadInput("--before", "journal", "recover", "/nonexistent/j", "--out", "/nonexistent/o", "--before", "nan"),
    BadInput("--before", "journal", "recover", "/nonexistent/j", "--out", "/nonexistent/o", "--before", "inf"),
    BadInput("--before", "journal", "recover", "/nonexistent/j", "--out", "/nonexistent/o", "--before", "1e30s"),
    BadInput("--before", "journal", "recover", "/nonexistent/j", "--out", "/nonexistent/o", "--before=-2s"),
    BadInput("--at", "journal", "recover", "/nonexistent/j", "--out", "/nonexistent/o", "--at=-5"),
    BadInput(
        "--out", "journal", "recover", "/nonexistent/j", "--out", "/nonexistent/j/units/unit-0000000000000001.ftu"),
    BadInput("--out", "journal", "recover", "/nonexistent/j/", "--out", "/nonexistent/x/../j/base/image"),
    BadInput("--out", "journal", "recover", "/nonexistent/j", "--out", "/nonexistent/j"),
    BadInput("--window", "journal", "create", "/nonexistent/j", "--window", "nan"),
    BadInput("--window", "journal", "create", "/nonexistent/j", "--window", "0s"),
    BadInput("--volumes", "journal", "create", "/nonexistent/j", "--volumes", "0"),
    BadInput("--volumes", "journal", "create", "/nonexistent/j", "--volumes=-1"),
    BadInput("--rounds", "journal", "crash-test", "--rounds", "0"),
    BadInput("--rounds", "journal", "crash-test", "--rounds=-1"),
    BadInput("--size", "journal", "stress", "/nonexistent/j", "--size", "0"),
    BadInput("--size", "journal", "stress", "/nonexistent/j", "--size", "4"),
    BadInput("--size", "journal", "stress", "/nonexistent/j", "--size=-1"),
    BadInput("--count", "journal", "stress", "/nonexistent/j", "--count=-5"),
    BadInput("--seeds", "journal", "simulate", "--seeds", "0"),
    BadInput("--factor", "livecopy", "simulate", "--factor", "nan"),
    BadInput("--factor", "livecopy", "simulate", "--factor", "inf"),
    BadInput("--factor", "livecopy", "simulate", "--factor", "1e12"),
    BadInput("--megabytes", "livecopy", "demo", "--megabytes", "9223372036854775807"),
    BadInput("--rate", "livecopy", "demo", "--rate", "9223372036854775807"),
    BadInput("--rate", "livecopy", "demo", "--rate", "0"),
    BadInput("--threads", "livecopy", "demo", "--threads", "100000"),
    BadInput("--seeds", "livecopy", "compare", "--seeds", "0"),
    BadInput(
        "--path", "heartbeat", "run", "--node", "A", "--partner", "B", "--path", "p1=127.0.0.1:99999",
        "--partner-path", "p1=127.0.0.2:7000"),
    BadInput(
        "--path", "heartbeat", "run", "--node", "A", "--partner", "B", "--path=p1=127.0.0.1:-1",
        "--partner-path", "p1=127.0.0.2:7000"),
    BadInput(
        "--path", "heartbeat", "run", "--node", "A", "--partner", "B", "--path", "p1=127.0.0.1:7000",
        "--path", "p1=127.0.0.3:7000", "--partner-path", "p1=127.0.0.2:7000"),
    BadInput(
        "--node", "heartbeat", "run", "--node", "A", "--partner", "A", "--path", "p1=127.0.0.1:7000",
        "--partner-path", "p1=127.0.0.2:7000"),
    BadInput(
        "--seconds", "heartbeat", "run", "--node", "A", "--partner", "B", "--path", "p1=127.0.0.1:7000",
        "--partner-path", "p1=127.0.0.2:7000", "--seconds", "0"),
    BadInput("--seeds", "simulate", "--seeds", "4e9"),
    BadInput("--seeds", "heartbeat", "simulate", "--seeds", "9223372036854775807"),
    BadInput("--time-limit", "heartbeat", "simulate", "--time-limit", "nan"),
    BadInput("--time-limit", "simulate", "--time-limit", "0"),
    BadInput("--first-seed", "chain", "simulate", "--first-seed", "18446744073709551615"),
    BadInput("--first-seed", "livecopy", "simulate", "--first-seed=-1"),
    BadInput("--heartbeats-ms", "failover", "bench", "--heartbeats-ms", "10,x"),
    BadInput("--heartbeats-ms", "failover", "bench", "--heartbeats-ms", "0"),
    BadInput("--trials", "failover", "bench", "--trials", "0"),
    BadInput("--timeout-ms", "failover", "status", "--ports", "control=1,a=2,b=3,operator=4", "--timeout-ms", "1"),
    BadInput("--trials", "failover", "demo", "--trials", "0"),
    BadInput("--kill-all-servers", "failover", "demo", "--kill-all-servers"),
    BadInput("--kill-all-servers", "failover", "demo", "--journal", "--kill-all-servers", "--switchover"),
    BadInput("--control", "failover", "status", "--control", "zookeeper"),
    BadInput("--etcd", "failover", "status", "--control", "etcd", "--etcd", "http://no-port"),
    BadInput("--cluster", "failover", "demo", "--control", "etcd", "--cluster", "../../other"),
    BadInput("--control", "failover", "switch", "--control", "raft"),
    BadInput("--maximum-lag", "failover", "simulate", "--maximum-lag", "0"),
    BadInput("--bug", "failover", "simulate", "--bug", "trust-last-primary-by-name", "--journal"),
    BadInput("--maximum-lag", "failover", "simulate", "--maximum-lag", "8", "--control", "etcd"),
    BadInput("--members", "spare", "create", "/nonexistent/a", "--members", "3"),
    BadInput("--members", "spare", "create", "/nonexistent/a", "--members", "0"),
    BadInput("--layout", "spare", "create", "/nonexistent/a", "--layout", "raid5"),
    BadInput("--block-kib", "spare", "create", "/nonexistent/a", "--block-kib", "48"),
    BadInput("--fill", "spare", "create", "/nonexistent/a", "--fill", "101"),
    BadInput("--step-blocks", "spare", "migrate", "/nonexistent/a", "--step-blocks", "0"),
    BadInput("--maximum-delay", "spare", "crash-test", "--maximum-delay", "5"),
    BadInput("--device", "spare", "wear", "--device", "/dev/sda", "--file", "/nonexistent/s.json"),
]

@Suite("ftctl refuses bad input before running")
struct CommandLineInputTests {
    @Test("each bad input exits 64 with one line naming the option", arguments: badInputs)
    func refused(_ input: BadInput) throws {
        let (status, output) = try runTool(input.arguments)
        #expect(status == 64, "exit \(status): \(output)")
        let first = output.split(separator: "\n").first.map(String.init) ?? ""
        #expect(first.hasPrefix("Error: "), "\(output)")
        #expect(first.contains(input.option), "first line does not name \(input.option): \(first)")
    }

    @Test("a time limit the run does not reach leaves every seed run and says nothing of it")
    func generousTimeLimitRunsEverySeed() throws {
        let (status, output) = try runTool(["simulate", "--seeds", "5", "--time-limit", "60"])
        #expect(status == 0, "\(output)")
        let lines = output.split(separator: "\n")
        #expect(lines.first?.contains("5 seeds") == true, "\(output)")
        #expect(lines.first { $0.contains("seeds passed") }?.hasSuffix(" 5") == true, "\(output)")
        #expect(lines.first { $0.contains("seeds failed") }?.hasSuffix(" 0") == true, "\(output)")
        // Five seeds take far less than the limit: no line says the limit cut the run short.
        #expect(!output.contains("time limit"), "\(output)")
    }

    /// The register scenario's seeds that fail with `ack-on-first-reply`, among the first 60.
    static func failingRegisterSeeds() throws -> [UInt64] {
        let (status, output) = try runTool(["simulate", "--seeds", "60", "--bug", "ack-on-first-reply"])
        #expect(status == 1, "\(output)")
        return output.split(separator: "\n").compactMap { line in
            guard line.hasPrefix("FAILED seed ") else { return nil }
            return UInt64(line.dropFirst("FAILED seed ".count).prefix { $0.isNumber })
        }
    }

    @Test("--first-seed moves the window: the same seed fails at the same number from any start")
    func firstSeedMovesTheWindow() throws {
        let failing = try Self.failingRegisterSeeds()
        let seed = try #require(failing.first { $0 > 1 }, "no failing seed above 1 among 60")
        // A window that starts at that seed fails on it; one that ends just before it does not
        // contain it.
        let (status, output) = try runTool([
            "simulate", "--seeds", "1", "--first-seed", "\(seed)", "--bug", "ack-on-first-reply",
        ])
        #expect(status == 1, "\(output)")
        #expect(output.contains("FAILED seed \(seed):"), "\(output)")
        let before = try runTool([
            "simulate", "--seeds", "\(seed - 1)", "--first-seed", "1", "--bug", "ack-on-first-reply",
        ]).output
        #expect(!before.contains("FAILED seed \(seed):"), "\(before)")
    }

    @Test("--stop-at-first-failure starts no seed after a failure and says where it stopped")
    func stopAtFirstFailure() throws {
        let failing = try Self.failingRegisterSeeds()
        let first = try #require(failing.first, "no failing seed among 60")
        // One worker: the run is exactly the seeds up to the first failure.
        let (status, output) = try runTool([
            "simulate", "--seeds", "100000", "--jobs", "1", "--bug", "ack-on-first-reply", "--stop-at-first-failure",
        ])
        #expect(status == 1, "\(output)")
        #expect(output.contains("stopped at the first failure: ran seeds 1-\(first), \(first) of 100000"), "\(output)")
        #expect(output.components(separatedBy: "FAILED seed ").count == 2, "\(output)")
        // The failing seed was run twice and ended the same way both times.
        #expect(!output.contains("does not replay"), "\(output)")
    }
}
