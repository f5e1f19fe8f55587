import Foundation
import Testing

@Suite("ftctl heartbeat run: misconfigurations are refused, not run", .serialized)
struct HeartbeatRunCommandTests {
    /// Two devices given the same priority: each finds out from the other's first heartbeats
    /// and stops with exit 1 naming both, instead of running a pair that can both operate.
    @Test("equal priorities stop both sides with exit 1")
    func equalPriorities() throws {
        let port = String(Int.random(in: 20_000...40_000))
        let output = Pipe()
        let a = try launchTool(
            [
                "heartbeat", "run", "--node", "A", "--partner", "B", "--priority", "3", "--path",
                "p1=127.0.0.2:\(port)",
                "--partner-path", "p1=127.0.0.3:\(port)", "--seconds", "20",
            ], output: output)
        let b = try runToolBounded([
            "heartbeat", "run", "--node", "B", "--partner", "A", "--priority", "3", "--path", "p1=127.0.0.3:\(port)",
            "--partner-path", "p1=127.0.0.2:\(port)", "--seconds", "20",
        ])
        a.waitUntilExit()
        let aOutput = String(decoding: output.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        #expect(b.status == 1 && !b.timedOut, "\(b.output)")
        #expect(b.output.contains("Error: A has the same priority 3 as B"), "\(b.output)")
        #expect(a.terminationStatus == 1, "\(aOutput)")
        #expect(aOutput.contains("Error: B has the same priority 3 as A"), "\(aOutput)")
    }

    @Test("a UDP port already in use fails the start with exit 1")
    func portInUse() throws {
        let port = String(Int.random(in: 40_001...60_000))
        let output = Pipe()
        let first = try launchTool(
            [
                "heartbeat", "run", "--node", "A", "--partner", "B", "--priority", "2", "--path",
                "p1=127.0.0.2:\(port)",
                "--partner-path", "p1=127.0.0.3:\(port)", "--seconds", "20",
            ], output: output)
        defer {
            first.terminate()
            first.waitUntilExit()
        }
        // Bound once it prints its first line.
        _ = output.fileHandleForReading.availableData
        let second = try runToolBounded([
            "heartbeat", "run", "--node", "A", "--partner", "B", "--priority", "2", "--path", "p1=127.0.0.2:\(port)",
            "--partner-path", "p1=127.0.0.3:\(port)", "--seconds", "20",
        ])
        #expect(second.status == 1 && !second.timedOut, "\(second.output)")
        #expect(second.output.contains("startFailed"), "\(second.output)")
    }
}
