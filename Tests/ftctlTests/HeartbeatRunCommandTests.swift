import Foundation
import Testing

@Suite("ftctl heartbeat run: misconfigurations are refused, not run", .serialized)
struct HeartbeatRunCommandTests {
    /// Two devices given the same priority: each finds out from the other's first heartbeats
    /// and stops with exit 1 naming both, instead of running a pair that can both operate.
    @Test("equal priorities stop both sides with exit 1")
    func equalPriorities() throws {
        let port = String(Int.random(in: 20_000...40_000))
        // Both sealed with one shared key: each must authenticate the other's heartbeats to
        // see the conflict at all.
        let keyFile = FileManager.default.temporaryDirectory.appendingPathComponent("ft-keys-\(port)").path
        try "1 \(String(repeating: "5a", count: 32))\n".write(toFile: keyFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: keyFile) }
        let output = Pipe()
        let a = try launchTool(
            [
                "heartbeat", "run", "--node", "A", "--partner", "B", "--priority", "3", "--path",
                "p1=127.0.0.2:\(port)",
                "--partner-path", "p1=127.0.0.3:\(port)", "--seconds", "20", "--key-file", keyFile,
            ], output: output)
        let b = try runToolBounded([
            "heartbeat", "run", "--node", "B", "--partner", "A", "--priority", "3", "--path", "p1=127.0.0.3:\(port)",
            "--partner-path", "p1=127.0.0.2:\(port)", "--seconds", "20", "--key-file", keyFile,
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
                "--partner-path", "p1=127.0.0.3:\(port)", "--seconds", "20", "--insecure",
            ], output: output)
        defer {
            first.terminate()
            first.waitUntilExit()
        }
        // Bound once it prints its first line.
        _ = output.fileHandleForReading.availableData
        let second = try runToolBounded([
            "heartbeat", "run", "--node", "A", "--partner", "B", "--priority", "2", "--path", "p1=127.0.0.2:\(port)",
            "--partner-path", "p1=127.0.0.3:\(port)", "--seconds", "20", "--insecure",
        ])
        #expect(second.status == 1 && !second.timedOut, "\(second.output)")
        #expect(second.output.contains("startFailed"), "\(second.output)")
    }

    @Test("without --key-file or --insecure the device does not start; a bad key file is named")
    func keyRequired() throws {
        let base = [
            "heartbeat", "run", "--node", "A", "--partner", "B", "--path", "p1=127.0.0.2:7301", "--partner-path",
            "p1=127.0.0.3:7301", "--seconds", "1",
        ]
        let neither = try runToolBounded(base)
        #expect(neither.status == 64 && neither.output.contains("--key-file"), "\(neither.output)")
        let both = try runToolBounded(base + ["--insecure", "--key-file", "/nonexistent"])
        #expect(both.status == 64, "\(both.output)")
        let keyFile = FileManager.default.temporaryDirectory.appendingPathComponent("ft-bad-keys").path
        try "1 abcd\n".write(toFile: keyFile, atomically: true, encoding: .utf8)
        defer { try? FileManager.default.removeItem(atPath: keyFile) }
        let short = try runToolBounded(base + ["--key-file", keyFile])
        #expect(short.status == 1 && short.output.contains("at least 16 are needed"), "\(short.output)")
    }
}
