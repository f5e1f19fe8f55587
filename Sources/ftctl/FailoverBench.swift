import ArgumentParser
import FaultToleranceCore
import Foundation

/// `ftctl failover bench`.
struct FailoverBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench",
        abstract: "Recovery figures: planned switchovers and SIGKILLs of the primary, at each report interval.",
        discussion: """
            For each report (heartbeat) interval of --heartbeats-ms, runs --trials trials of \
            `ftctl failover demo --switchover` (a control server and servers a, b and c as OS \
            processes on loopback, three clients in synchronous mode, a planned switchover, then \
            the new primary SIGKILLed) and prints one table row per interval: the client-observed \
            switchover and recovery times (p50, p99, max), and the operations acknowledged and \
            lost per trial. With --control etcd, the servers elect through etcd instead of a \
            control server. Exits 1 if any trial lost an acknowledged operation, broke a \
            history's linearizability or left the service address unserved. Redis Sentinel \
            beside it: Benchmarks/peers/failover-recovery.py.
            """)

    @Option(help: "Trials per report interval.") var trials = 20
    @Option(help: "Report intervals in milliseconds, comma-separated.") var heartbeatsMs = "10,100"
    @Flag(help: "Print the rows as JSON.") var json = false
    @OptionGroup var controlPlane: FailoverControlOptions

    /// The report intervals, or `nil` when --heartbeats-ms is not a list of 1...1000.
    private var intervals: [Int]? {
        let parsed = heartbeatsMs.split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
        guard !parsed.isEmpty, parsed.count == heartbeatsMs.split(separator: ",").count,
            parsed.allSatisfy({ (1...1000).contains($0) })
        else { return nil }
        return parsed
    }

    func validate() throws {
        try require("--trials", trials, in: 1...1000)
        guard intervals != nil else {
            throw ValidationError(
                "--heartbeats-ms: \(heartbeatsMs.debugDescription) is not a list of numbers in 1...1000")
        }
    }

    func run() async throws {
        let intervals = self.intervals ?? []
        var rows: [[String: Any]] = []
        var failed: [String] = []
        if !json {
            print(
                "| Reports | Switchover p50 / p99 / max | Recovery p50 / p99 / max | Acknowledged per trial | Lost per trial |"
            )
            print("|---|---|---|---|---|")
        }
        for heartbeat in intervals {
            var results: [FailoverTrial.Result] = []
            for number in 1...trials {
                let result = try await FailoverTrial(
                    number: number, heartbeatMs: heartbeat, loadMs: 500, backups: 2, switchover: true,
                    control: controlPlane.choice
                ).run()
                if !result.passed { failed.append("\(heartbeat) ms trial \(number): \(result.problem ?? "?")") }
                results.append(result)
            }
            func milliseconds(_ values: [Duration?]) -> [Double] {
                values.compactMap { $0 }.map { Double($0.nanoseconds) / 1e6 }.sorted()
            }
            let switches = milliseconds(results.map(\.switchTime))
            let recoveries = milliseconds(results.map(\.recovery))
            let acknowledged = results.map(\.acknowledged).reduce(0, +) / trials
            let lost = results.map(\.lost).reduce(0, +)
            func summary(_ values: [Double]) -> [String: Double] {
                ["p50": percentile(values, 0.5), "p99": percentile(values, 0.99), "max": values.last ?? 0]
            }
            rows.append([
                "heartbeatMs": heartbeat, "trials": trials, "switchoverMs": summary(switches),
                "recoveryMs": summary(recoveries), "acknowledgedPerTrial": acknowledged, "lost": lost,
            ])
            if !json {
                func cell(_ values: [Double]) -> String {
                    String(
                        format: "%.1f / %.1f / %.1f ms", percentile(values, 0.5), percentile(values, 0.99),
                        values.last ?? 0)
                }
                print(
                    "| \(heartbeat) ms | \(cell(switches)) | \(cell(recoveries)) | \(acknowledged) | "
                        + String(format: "%.1f", Double(lost) / Double(trials)) + " |")
            }
        }
        if json {
            let data = try JSONSerialization.data(withJSONObject: rows, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        }
        if !failed.isEmpty {
            throw CommandFailure("\(failed.count) trial(s) failed: \(failed.joined(separator: "; "))")
        }
    }
}
