import Foundation
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// Whether this machine can run a recovery's real parts: root, FUSE, runc and busybox.
let recoveryToolsPresent =
    geteuid() == 0 && FileManager.default.fileExists(atPath: "/dev/fuse")
    && FileManager.default.fileExists(atPath: "/bin/busybox")
    && ["/usr/sbin/runc", "/usr/bin/runc"].contains(where: FileManager.default.isExecutableFile(atPath:))

/// `ftctl dr protect`, `status`, `test-failover`, `recover --at` and `down` as an operator runs
/// them: real site processes on loopback TCP, a SIGKILL, runc containers on FUSE lazy volumes.
@Suite(.serialized, .enabled(if: recoveryToolsPresent, "needs root, /dev/fuse, runc and busybox-static"))
struct RecoveryCommandTests {
    /// The `--json` status as an object.
    func status(_ directory: String) throws -> [String: Any] {
        let (code, output) = try runTool(["dr", "status", "--directory", directory, "--json"])
        #expect(code == 0, "\(output)")
        return try #require(try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any], "\(output)")
    }

    @Test func protectTestFailoverKillRecoverAtAnInstant() throws {
        let directory = FileManager.default.temporaryDirectory.path + "/ftctl-dr-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (none, noneOutput) = try runTool(["dr", "status", "--directory", directory])
        #expect(none == 1 && noneOutput.contains("holds no protection"), "\(noneOutput)")

        let (protected, protectOutput) = try runTool([
            "dr", "protect", "--directory", directory, "--megabytes", "4", "--rate", "2000",
        ])
        try #require(protected == 0, "\(protectOutput)")
        let protection = try #require(
            try JSONSerialization.jsonObject(
                with: try Data(contentsOf: URL(fileURLWithPath: directory + "/protection.json"))) as? [String: Any])
        let protectedPid = try #require(protection["protectedPid"] as? Int32)
        let recoveryPid = try #require(protection["recoveryPid"] as? Int32)
        defer {
            for pid in [protectedPid, recoveryPid] { kill(pid, SIGKILL) }
        }

        // Shipping: the recovery site acknowledges writes (polled; nothing here depends on how fast).
        var acknowledged = 0
        for _ in 0..<300 where acknowledged < 2000 {
            let site = try status(directory)["protectedSite"] as? [String: Any]
            acknowledged = site?["acknowledged"] as? Int ?? 0
            usleep(100_000)
        }
        try #require(acknowledged >= 2000, "the recovery site acknowledged \(acknowledged) writes")
        let (_, text) = try runTool(["dr", "status", "--directory", directory])
        #expect(text.contains("protected site  pid \(protectedPid) running") && text.contains("RPO"), "\(text)")

        // A takeover is refused while the protected site runs.
        let (refused, refusal) = try runTool(["dr", "recover", "--directory", directory])
        #expect(refused == 1 && refusal.contains("still running"), "\(refusal)")

        // A test failover at an instant inside the window, both sites running throughout.
        let site = try #require(try status(directory)["recoverySite"] as? [String: Any])
        let first = try #require(site["windowStartNanoseconds"] as? Int64)
        let last = try #require(site["lastTimeNanoseconds"] as? Int64)
        let instant = Double(first + (last - first) / 2) / 1e9
        let (tested, testOutput) = try runTool([
            "dr", "test-failover", "--directory", directory, "--at", String(format: "%.3f", instant),
            "--workload-writes", "40",
        ])
        #expect(tested == 0, "\(testOutput)")
        #expect(testOutput.contains("2 workloads in 2 stages") && testOutput.contains("stage 2 answering"))
        #expect(testOutput.contains("0 writes lost across the migration"), "\(testOutput)")
        #expect(testOutput.contains("the protected site kept running"), "\(testOutput)")
        #expect(kill(protectedPid, 0) == 0 && kill(recoveryPid, 0) == 0)
        let afterTest = try status(directory)
        #expect((afterTest["recovery"] as? [String: Any])?["test"] as? Bool == true, "\(afterTest)")
        #expect((afterTest["recovery"] as? [String: Any])?["phase"] as? String == "switched", "\(afterTest)")

        // The disaster, and the takeover at the latest point the recovery site holds.
        kill(protectedPid, SIGKILL)
        let (recovered, recoverOutput) = try runTool(["dr", "recover", "--directory", directory])
        #expect(recovered == 0, "\(recoverOutput)")
        #expect(recoverOutput.contains("recovered volume = protected volume at the recovery point"), "\(recoverOutput)")
        #expect(recoverOutput.contains("RTO") && recoverOutput.contains("0 writes lost across the migration"))
        let after = try status(directory)
        #expect((after["recovery"] as? [String: Any])?["test"] as? Bool == false, "\(after)")
        #expect((after["protectedSite"] as? [String: Any])?["running"] as? Bool == false, "\(after)")
        #expect((after["recoverySite"] as? [String: Any])?["running"] as? Bool == false, "\(after)")

        // Once is enough: a second takeover into the same directory is refused.
        let (again, againOutput) = try runTool(["dr", "recover", "--directory", directory])
        #expect(again == 1 && againOutput.contains("earlier recovery"), "\(againOutput)")
        let (down, _) = try runTool(["dr", "down", "--directory", directory])
        #expect(down == 0)
    }

    /// A record damaged at the recovery site: `recover` refuses the point, naming the unit and
    /// offset, rather than start a workload on wrong data.
    @Test func aDamagedRecordAtTheRecoverySiteRefusesTheRecovery() throws {
        let directory = FileManager.default.temporaryDirectory.path + "/ftctl-dr-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (protected, protectOutput) = try runTool([
            "dr", "protect", "--directory", directory, "--megabytes", "4", "--rate", "4000",
        ])
        try #require(protected == 0, "\(protectOutput)")
        let protection = try #require(
            try JSONSerialization.jsonObject(
                with: try Data(contentsOf: URL(fileURLWithPath: directory + "/protection.json"))) as? [String: Any])
        let protectedPid = try #require(protection["protectedPid"] as? Int32)
        let recoveryPid = try #require(protection["recoveryPid"] as? Int32)
        defer {
            for pid in [protectedPid, recoveryPid] { kill(pid, SIGKILL) }
        }
        // Enough shipped to fill more than one of the recovery journal's 4 MiB units.
        var acknowledged = 0
        for _ in 0..<300 where acknowledged < 3000 {
            acknowledged = (try status(directory)["protectedSite"] as? [String: Any])?["acknowledged"] as? Int ?? 0
            usleep(100_000)
        }
        try #require(acknowledged >= 3000, "the recovery site acknowledged \(acknowledged) writes")
        kill(protectedPid, SIGKILL)
        let (down, _) = try runTool(["dr", "down", "--directory", directory])
        #expect(down == 0)
        for _ in 0..<100 where kill(recoveryPid, 0) == 0 { usleep(50_000) }

        // 4 KiB of the oldest unit's records zeroed.
        let units = try FileManager.default.contentsOfDirectory(atPath: directory + "/recovery-journal/units")
            .filter { $0.hasSuffix(".ftu") }.sorted()
        let oldest = try #require(units.first, "no units in \(directory)/recovery-journal/units")
        let handle = try #require(FileHandle(forUpdatingAtPath: directory + "/recovery-journal/units/" + oldest))
        try handle.seek(toOffset: 64 << 10)
        try handle.write(contentsOf: Data(count: 4096))
        try handle.close()

        let (refused, output) = try runTool(["dr", "recover", "--directory", directory])
        #expect(refused == 1, "\(output)")
        #expect(output.contains("damaged") && output.contains("offset"), "\(output)")
        #expect(!output.contains("answering"), "a workload started on damaged data: \(output)")
    }
}
