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
            // 50 ms reports: the whole test suite shares two cores with these processes.
            nodes.append(
                try launchTool([
                    "failover", "node", "--name", node, "--servers", "a,b", "--ports", layout, "--service-port",
                    String(servicePort), "--heartbeat-ms", "50", "--minimum-sync-backups", "0",
                ]))
        }
        let operatorOptions = ["--servers", "a,b", "--ports", layout, "--timeout-ms", "5000"]

        // Until a primary is promoted (each attempt waits for the control server's answer).
        var first: String?
        for _ in 0..<20 where first == nil {
            let (status, output) = try runTool(["failover", "status"] + operatorOptions)
            #expect(status == 0, "\(output)")
            first = ["a", "b"].first { output.contains(": \($0) serves") }
        }
        let old = try #require(first, "no primary within 20 status calls")
        let other = old == "a" ? "b" : "a"

        let (switched, switchOutput) = try runTool(["failover", "switch"] + operatorOptions)
        #expect(switched == 0, "\(switchOutput)")
        #expect(switchOutput.contains("\(other) serves in epoch"), "\(switchOutput)")
        #expect(switchOutput.contains("(it was \(old) in epoch"), "\(switchOutput)")

        let (_, after) = try runTool(["failover", "status", "--json"] + operatorOptions)
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(after.utf8)) as? [String: Any], "\(after)")
        #expect(object["primary"] as? String == other, "\(after)")
        #expect((object["epoch"] as? Int ?? 0) >= 2, "\(after)")

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
