import ArgumentParser
import Failover
import FaultToleranceCore
import FaultToleranceEtcd
import FaultToleranceNIO
import Foundation
import Logging
import NIOCore

/// The options `status` and `switch` share: where the pair's control server is, and the
/// operator's own port (the control server answers there, so `--ports` must name it, as for
/// every `ftctl failover node` of the pair).
struct FailoverOperatorOptions: ParsableArguments {
    @Option(help: "The servers, comma-separated (as given to the pair's nodes).") var servers: String = "a,b"
    @Option(
        help:
            "Every node's loopback port, as given to the pair's nodes; must include operator=P (not with --control etcd)."
    )
    var ports: String?
    @Option(help: "Milliseconds to wait for the control server's answers.") var timeoutMs = 2000

    func validate() throws {
        try require("--timeout-ms", timeoutMs, in: 10...600_000)
    }

    /// An operator client on its own transport; the caller closes both.
    func connect() async throws -> (FailoverClient, TCPTransport) {
        guard let ports else { throw CommandFailure("--ports is needed to reach the control server") }
        let layout = try FailoverLayout(servers: servers, ports: ports)
        guard let port = layout.ports[FailoverLayout.operator] else {
            throw CommandFailure("--ports must give operator=PORT: the control server answers the operator there")
        }
        var peers: [NodeID: SocketAddress] = [:]
        for (node, peerPort) in layout.ports where node != FailoverLayout.operator {
            peers[node] = try SocketAddress(ipAddress: "127.0.0.1", port: peerPort)
        }
        var logger = Logger(label: "ftctl.failover.operator")
        logger.logLevel = .warning
        let transport: TCPTransport
        do {
            transport = try await TCPTransport.start(
                configuration: .init(
                    localNode: FailoverLayout.operator,
                    bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: port), peers: peers,
                    connectAttempts: 3, initialBackoff: .milliseconds(20)), logger: logger)
        } catch {
            throw CommandFailure("the operator port \(port) cannot be bound: \(error)")
        }
        let client = FailoverClient(
            id: 0, transport: transport, servers: layout.servers, controller: FailoverLayout.control,
            timeout: .milliseconds(min(200, timeoutMs)), deadline: .milliseconds(timeoutMs))
        return (client, transport)
    }
}

/// `ftctl failover status`.
struct FailoverStatusCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Ask a running pair's control server how the pair stands.",
        discussion: """
            Prints the epoch, who serves (or what a failover waits for), the sync set, and each \
            server's last report: alive or silent, role, epoch and log position. The pair's nodes \
            must have been started with the same --ports, including operator=PORT. Exits 1 if the \
            control server does not answer within --timeout-ms.
            """)

    @OptionGroup var options: FailoverOperatorOptions
    @OptionGroup var controlPlane: FailoverControlOptions
    @Flag(help: "Print the status as JSON.") var json = false

    func run() async throws {
        let status: FailoverStatus
        if controlPlane.usesEtcd {
            let servers = options.servers.split(separator: ",").compactMap { NodeID(String($0)) }
            guard !servers.isEmpty else { throw CommandFailure("--servers: no server names") }
            do {
                status = try await EtcdPairView.read(
                    from: try controlPlane.gateway(), controlPlane.configuration(minimumSyncBackups: 1)
                ).status(servers: servers)
            } catch {
                throw CommandFailure("no status from etcd: \(error)")
            }
        } else {
            let (client, transport) = try await options.connect()
            do {
                status = try await client.status()
            } catch {
                await client.close()
                await transport.close()
                throw CommandFailure("no status: \(error)")
            }
            await client.close()
            await transport.close()
        }
        if json {
            let servers: [[String: Any]] = status.servers.map { server in
                var line: [String: Any] = ["node": server.node.name, "alive": server.alive]
                if let report = server.report {
                    line["role"] = report.role.description
                    line["epoch"] = report.epoch
                    line["position"] = ["epoch": report.position.epoch, "index": report.position.index]
                }
                return line
            }
            var object: [String: Any] = [
                "epoch": status.epoch, "failingOver": status.failingOver, "syncSet": status.syncSet.map(\.name),
                "servers": servers,
            ]
            object["primary"] = status.primary?.name
            object["waitingReason"] = status.waitingReason
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(status)
        }
    }
}

/// `ftctl failover switch`.
struct FailoverSwitchCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "switch",
        abstract: "A planned switchover: the primary steps down, a backup of the sync set takes over.",
        discussion: """
            Asks the control server to switch to --to (default: the live backup of the sync set \
            with the newest position). The primary steps down first (it is not fenced); the \
            target is promoted in the next epoch once the old primary has confirmed, and adopts \
            the service configuration. Waits until the target serves and prints how long the \
            switch took. Exits 1 if the control server refuses (no primary serves, or the target \
            is not a live backup that holds every acknowledged operation) or the switch does not \
            finish within --timeout-ms.
            """)

    @OptionGroup var options: FailoverOperatorOptions
    @OptionGroup var controlPlane: FailoverControlOptions
    @Option(help: "The backup to switch to (default: the newest backup of the sync set).") var to: String?

    func run() async throws {
        var target: NodeID?
        if let to {
            guard let node = NodeID(to) else { throw CommandFailure("--to: \(to.debugDescription) is not a node name") }
            target = node
        }
        if controlPlane.usesEtcd {
            do {
                print(
                    try await etcdSwitchover(
                        etcd: try controlPlane.gateway(),
                        configuration: controlPlane.configuration(minimumSyncBackups: 1),
                        to: target, timeout: .milliseconds(options.timeoutMs)))
            } catch {
                throw CommandFailure("switchover: \(error)")
            }
            return
        }
        let (client, transport) = try await options.connect()
        do {
            let line = try await switchover(client, to: target)
            await client.close()
            await transport.close()
            print(line)
        } catch {
            await client.close()
            await transport.close()
            throw CommandFailure("switchover: \(error)")
        }
    }

    private func switchover(_ client: FailoverClient, to target: NodeID?) async throws -> String {
        let clock = ContinuousClock()
        let before = try await client.status()
        let started = clock.now
        let epoch = try await client.switchover(to: target)
        let giveUp = started + .milliseconds(options.timeoutMs)
        while clock.now < giveUp {
            let status = try await client.status()
            if let primary = status.primary, status.epoch >= epoch {
                let elapsed = clock.now - started
                let milliseconds =
                    Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) / 1e15
                return "\(primary) serves in epoch \(status.epoch) after \(String(format: "%.1f", milliseconds)) ms "
                    + "(it was \(before.primary?.name ?? "nobody") in epoch \(before.epoch))"
            }
            // The control server's view, polled: it changes on the servers' next reports.
            try await Task.sleep(for: .milliseconds(5))
        }
        throw FailoverError(.timedOut, detail: "no primary in epoch \(epoch) within \(options.timeoutMs) ms")
    }
}

/// A planned switchover through etcd: the request, then etcd's leader key polled until the
/// target holds it in a newer epoch. Returns the line `switch` prints.
func etcdSwitchover(
    etcd: any EtcdClient, configuration: EtcdControlConfiguration, to target: NodeID?, timeout: Duration
) async throws -> String {
    let clock = ContinuousClock()
    let started = clock.now
    let (from, epoch, chosen) = try await EtcdControlPlane.requestSwitchover(
        etcd: etcd, configuration: configuration, to: target)
    while clock.now < started + timeout {
        let view = try await EtcdPairView.read(from: etcd, configuration)
        if let leader = view.leader, leader.node == chosen, leader.epoch > epoch {
            let elapsed = clock.now - started
            let milliseconds = Double(elapsed.components.seconds) * 1e3 + Double(elapsed.components.attoseconds) / 1e15
            return "\(chosen) serves in epoch \(leader.epoch) after \(String(format: "%.1f", milliseconds)) ms "
                + "(it was \(from) in epoch \(epoch))"
        }
        // etcd's keys, polled: they change on the servers' next rounds.
        try await Task.sleep(for: .milliseconds(5))
    }
    throw FailoverError(.timedOut, detail: "\(chosen) did not take the leader key within \(timeout)")
}
