import Foundation
import Testing

/// `ftctl dr plan`: an environment planned, stored and read back; every bad input refused with
/// exit 1 (or 64 for bad options) and the reason, never a crash.
@Suite struct RecoveryPlanCommandTests {
    let directory = FileManager.default.temporaryDirectory.path + "/ftctl-plan-\(UUID().uuidString)"

    func file(_ name: String, _ text: String) throws -> String {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let path = directory + "/" + name
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
        return path
    }

    static func environment(webDependsOn: String = "database", mount: String = "db") -> String {
        """
        {"name": "shop",
         "volumes": [{"name": "db", "journalVolume": 1, "capacity": 1048576, "blockSize": 4096}],
         "workloads": [
          {"name": "database", "command": ["/bin/db"], "mounts": [{"volume": "\(mount)", "path": "/data"}],
           "ports": [5432], "environment": {}, "dependsOn": []},
          {"name": "web", "command": ["/bin/web"], "mounts": [], "ports": [8080], "environment": {},
           "dependsOn": ["\(webDependsOn)"]},
          {"name": "worker", "command": ["/bin/worker"], "mounts": [], "ports": [], "environment": {},
           "dependsOn": ["database"]}]}
        """
    }

    @Test func anEnvironmentIsPlannedInStagesStoredAndReadBack() throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let environment = try file("shop.json", Self.environment())
        let stored = directory + "/shop.plan"
        let (made, output) = try runTool([
            "dr", "plan", "--environment", environment, "--at", "2026-12-07T16:00:00Z", "--test", "--out", stored,
        ])
        #expect(made == 0, "\(output)")
        #expect(output.contains("plan for shop (test failover): recover to"), "\(output)")
        #expect(output.contains("3 workloads in 2 stages, 1 volumes"), "\(output)")
        #expect(
            output.contains("  stage 1:\n    database mounts db (1048576 bytes)\n  stage 2:\n    web\n    worker"),
            "\(output)")
        let (shown, again) = try runTool(["dr", "plan", "--show", stored])
        #expect(shown == 0, "\(again)")
        // The same plan, read back and checked (the "written to" line aside).
        #expect(output.hasPrefix(again.trimmingCharacters(in: .newlines)), "\(again)")

        // One byte of the stored plan damaged: refused, and said why.
        var bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: stored)))
        bytes[bytes.count - 3] ^= 0x20
        try Data(bytes).write(to: URL(fileURLWithPath: stored))
        let (damaged, refusal) = try runTool(["dr", "plan", "--show", stored])
        #expect(damaged == 1, "\(refusal)")
        #expect(refusal.contains(stored), "\(refusal)")
    }

    @Test(arguments: [
        (environment(webDependsOn: "web"), "the start order has a cycle"),
        (environment(mount: "logs"), "logs"),
        (environment(webDependsOn: "cache"), "depends on cache, which the environment lacks"),
        ("{\"name\": \"shop\", \"volumes\": []}", "the key \"workloads\" is missing"),
        ("not json", "is not an environment"),
        ("", "is not an environment"),
    ])
    func aBadEnvironmentIsRefusedWithTheReason(text: String, reason: String) throws {
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let environment = try file("bad.json", text)
        let (status, output) = try runTool(["dr", "plan", "--environment", environment])
        #expect(status == 1, "\(output)")
        #expect(output.contains(reason), "\(output)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/bad.plan"))
    }

    @Test func badOptionsAndMissingFilesAreRefused() throws {
        let (neither, neitherOutput) = try runTool(["dr", "plan"])
        #expect(neither == 64, "\(neitherOutput)")
        let (badPoint, badPointOutput) = try runTool(["dr", "plan", "--environment", "x.json", "--at", "yesterday"])
        #expect(badPoint == 64 && badPointOutput.contains("ISO 8601"), "\(badPointOutput)")
        let (mixed, mixedOutput) = try runTool(["dr", "plan", "--show", "p", "--test"])
        #expect(mixed == 64, "\(mixedOutput)")
        let (missing, missingOutput) = try runTool(["dr", "plan", "--show", "/nonexistent/plan"])
        #expect(missing == 1 && missingOutput.contains("cannot be read"), "\(missingOutput)")
    }
}
