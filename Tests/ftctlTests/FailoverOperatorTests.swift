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
        let operatorOptions = ["--servers", "a,b", "--ports", layout, "--timeout-ms", "5000"]

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
}
