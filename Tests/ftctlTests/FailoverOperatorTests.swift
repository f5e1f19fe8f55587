import Foundation
import Testing

/// `ftctl failover status` and `switch` against a pair of real processes (`ftctl failover node`
/// for the control server and servers a and b) on loopback TCP.
@Suite(.serialized) struct FailoverOperatorTests {
    @Test func statusNamesThePrimaryAndSwitchMovesServiceToTheOtherServer() throws {
        var ports: [String: Int] = [:]
        for node in ["control", "a", "b", "operator"] { ports[node] = try freePort() }
        let layout = ports.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        let servicePort = try freePort()
        var nodes: [Process] = []
        defer {
            for process in nodes where process.isRunning { process.terminate() }
            for process in nodes { process.waitUntilExit() }
        }
        for node in ["control", "a", "b"] {
            // 100 ms reports: the whole test suite (and, in CI, other builds) shares two cores
            // with these processes.
            nodes.append(
                try launchTool([
                    "failover", "node", "--name", node, "--servers", "a,b", "--ports", layout, "--service-port",
                    String(servicePort), "--heartbeat-ms", "100", "--minimum-sync-backups", "0",
                ]))
        }
        // Generous: in CI this runs beside three builds on two cores, and a 5 s wait for the
        // control server's answer ran out once.
        let operatorOptions = ["--servers", "a,b", "--ports", layout, "--timeout-ms", "30000"]

        // Until a primary is promoted and its backup is in the sync set (each attempt waits for
        // the control server's answer).
        var first: String?
        for _ in 0..<20 where first == nil {
            let (status, output) = try runTool(["failover", "status"] + operatorOptions)
            #expect(status == 0, "\(output)")
            // A switchover needs a backup of the sync set: one that caught up since the election.
            first = ["a", "b"].first {
                output.contains(": \($0) serves; sync set [a]") || output.contains(": \($0) serves; sync set [b]")
            }
        }
        _ = try #require(first, "no primary with a backup in its sync set within 20 status calls")

        // "<new> serves in epoch <e> after <t> ms (it was <old> in epoch <e0>)": a different server.
        let (switched, switchOutput) = try runTool(["failover", "switch"] + operatorOptions)
        #expect(switched == 0, "\(switchOutput)")
        let words = switchOutput.split(separator: " ").map(String.init)
        let new = try #require(words.first, "\(switchOutput)")
        let old = try #require(words.firstIndex(of: "(it").map { words[$0 + 2] }, "\(switchOutput)")
        let epoch = try #require(words.firstIndex(of: "epoch").flatMap { Int(words[$0 + 1]) }, "\(switchOutput)")
        #expect(["a", "b"].contains(new) && ["a", "b"].contains(old) && new != old, "\(switchOutput)")

        let (_, after) = try runTool(["failover", "status", "--json"] + operatorOptions)
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(after.utf8)) as? [String: Any], "\(after)")
        // The switched-to server serves, unless a failover under load moved on to a newer epoch since.
        let now = object["epoch"] as? Int ?? 0
        #expect(object["primary"] as? String == new && now == epoch || now > epoch, "\(after)")

        // A target that is not a backup of the pair: refused, named, exit 1.
        let (refused, refusal) = try runTool(["failover", "switch", "--to", "zz"] + operatorOptions)
        #expect(refused == 1)
        #expect(refusal.contains("not a backup of this pair"), "\(refusal)")
    }

    @Test func withoutTheOperatorsPortOrAControlServerTheCommandsExitOneAndSayWhy() throws {
        let control = try freePort()
        let (missing, missingOutput) = try runTool([
            "failover", "status", "--servers", "a,b", "--ports", "control=\(control),a=1,b=2",
        ])
        #expect(missing == 1)
        #expect(missingOutput.contains("operator=PORT"), "\(missingOutput)")
        let (silent, silentOutput) = try runTool([
            "failover", "status", "--servers", "a,b", "--ports",
            "control=\(control),a=1,b=2,operator=\(try freePort())", "--timeout-ms", "200",
        ])
        #expect(silent == 1)
        #expect(silentOutput.contains("timedOut"), "\(silentOutput)")
    }

    /// etcd as the control plane (`FT_ETCD_ENDPOINT`; CI starts one): two server processes and no
    /// control server; `status --control etcd` reads the pair from etcd; `switch --control etcd`
    /// moves service to the other server; after a SIGKILL of that primary, the backup of the sync
    /// record takes the leader key in a newer epoch; and the demo (a switchover, then a SIGKILL)
    /// loses nothing acknowledged.
    @Test(
        .enabled(
            if: ProcessInfo.processInfo.environment["FT_ETCD_ENDPOINT"] != nil,
            "no etcd: set FT_ETCD_ENDPOINT=http://127.0.0.1:2379 (CI starts one)"))
    func anEtcdPairFailsOverAfterASIGKILLAndStatusReadsItFromEtcd() throws {
        let endpoint = ProcessInfo.processInfo.environment["FT_ETCD_ENDPOINT"] ?? ""
        let etcd = [
            "--control", "etcd", "--etcd", endpoint, "--cluster", "test-\(getpid())-\(UUID().uuidString.prefix(8))",
        ]
        var ports: [String: Int] = [:]
        for node in ["control", "a", "b"] { ports[node] = try freePort() }
        let layout = ports.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        let servicePort = try freePort()
        var nodes: [String: Process] = [:]
        defer {
            for process in nodes.values where process.isRunning { process.terminate() }
            for process in nodes.values { process.waitUntilExit() }
        }
        for node in ["a", "b"] {
            nodes[node] = try launchTool(
                [
                    "failover", "node", "--name", node, "--servers", "a,b", "--ports", layout, "--service-port",
                    String(servicePort), "--heartbeat-ms", "100", "--minimum-sync-backups", "0",
                ] + etcd)
        }
        func status() throws -> [String: Any] {
            let (code, output) = try runTool(["failover", "status", "--servers", "a,b", "--json"] + etcd)
            #expect(code == 0, "\(output)")
            return try JSONSerialization.jsonObject(with: Data(output.utf8)) as? [String: Any] ?? [:]
        }
        // Until one serves and the other is in its sync record (each status call is a process).
        var first: (primary: String, epoch: Int)?
        for _ in 0..<100 where first == nil {
            let object = try status()
            if let primary = object["primary"] as? String, let epoch = object["epoch"] as? Int,
                (object["syncSet"] as? [String])?.contains(where: { $0 != primary }) == true
            {
                first = (primary, epoch)
            }
        }
        let (before, _) = try #require(first, "no primary with a backup in its sync record")

        // A planned switchover through etcd: the other server serves in a newer epoch.
        let (switched, switchOutput) = try runTool(
            ["failover", "switch", "--servers", "a,b", "--timeout-ms", "10000"] + etcd)
        #expect(switched == 0, "\(switchOutput)")
        let words = switchOutput.split(separator: " ").map(String.init)
        let primary = try #require(words.first, "\(switchOutput)")
        let epoch = try #require(words.firstIndex(of: "epoch").flatMap { Int(words[$0 + 1]) }, "\(switchOutput)")
        #expect(primary != before && ["a", "b"].contains(primary), "\(switchOutput)")
        // Back in the sync record before the SIGKILL: the old primary catches up as a backup.
        var ready = false
        for _ in 0..<100 where !ready {
            let object = try status()
            ready = object["primary"] as? String == primary && (object["syncSet"] as? [String]) == [before]
        }
        #expect(ready, "\(before) did not rejoin the sync record of \(primary)")

        let process = try #require(nodes[primary])
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
        var second: (primary: String, epoch: Int)?
        for _ in 0..<100 where second == nil {
            let object = try status()
            if let now = object["primary"] as? String, let newEpoch = object["epoch"] as? Int, now != primary {
                second = (now, newEpoch)
            }
        }
        let (successor, newEpoch) = try #require(second, "the backup never took over from \(primary)")
        #expect(newEpoch > epoch)
        #expect(successor != primary)

        // And under a client load: nothing acknowledged is lost across the SIGKILL.
        let (demo, demoOutput) = try runTool(
            ["failover", "demo", "--trials", "1", "--backups", "1", "--heartbeat-ms", "50", "--switchover"] + etcd)
        #expect(demo == 0, "\(demoOutput)")
        #expect(demoOutput.contains(" 0 lost"), "\(demoOutput)")
    }
}
