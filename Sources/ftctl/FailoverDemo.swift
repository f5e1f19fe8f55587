import ArgumentParser
import DeterministicSimulation
import Failover
import FailoverSimulation
import FaultToleranceCore
import FaultToleranceEtcd
import FaultToleranceNIO
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
import ServiceLifecycle
import UnixSignals

/// `ftctl failover node`: one server (or the control server) of a demo pair, as its own process.
struct FailoverNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "node",
        abstract: "Run one failover server, or the control server (--name control), until SIGTERM (started by `demo`).")

    @Option(help: "This node's name: control, or one of --servers.") var name: String
    @Option(help: "The servers, comma-separated.") var servers: String
    @Option(help: "Every node's loopback port: control=P,a=P,b=P,client=P.") var ports: String
    @Option(help: "The service port the primary binds (the same on every server).") var servicePort: Int
    @Option(help: "The report (heartbeat) interval in milliseconds.") var heartbeatMs = 10
    @Option(help: "The control server's epoch file (a temporary one if not given).") var epochFile: String?
    @Option(help: "Backups an acknowledgement waits for at least (0 lets a primary left alone go on).")
    var minimumSyncBackups = 1
    @Option(
        help: """
            A directory for this server's journal (FileReplicaJournal): it acknowledges only what \
            is on disk there, and a restart comes back with that state. In memory only without it.
            """)
    var journal: String?
    @Flag(help: "The control server: the servers journal (a restart that kept its disk keeps the sync set).")
    var durableServers = false
    @OptionGroup var controlPlane: FailoverControlOptions

    func run() async throws {
        var logger = Logger(label: "ftctl.failover.\(name)")
        logger.logLevel = ProcessInfo.processInfo.environment["FT_FAILOVER_DEMO_TRACE"] == "1" ? .info : .warning
        let layout = try FailoverLayout(servers: servers, ports: ports)
        guard let node = NodeID(name), let port = layout.ports[node],
            node == FailoverLayout.control || layout.servers.contains(node)
        else { throw CommandFailure("node \(name): not the control server nor one of --servers") }
        if controlPlane.usesEtcd && node == FailoverLayout.control {
            throw CommandFailure("node \(name): with --control etcd there is no control server to run")
        }
        try require("--heartbeat-ms", heartbeatMs, in: 1...10_000)
        try require("--service-port", servicePort, in: 1...65_535)
        try require("--minimum-sync-backups", minimumSyncBackups, in: 0...layout.servers.count - 1)
        var peers: [NodeID: SocketAddress] = [:]
        for (other, port) in layout.ports where other != node {
            peers[other] = try SocketAddress(ipAddress: "127.0.0.1", port: port)
        }
        // One connection attempt per send: a dead peer must not hold up the event loop that
        // sends (the next report or heartbeat tries again).
        let transport = try await TCPTransport.start(
            configuration: .init(
                localNode: node, bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: port), peers: peers,
                connectAttempts: 1, initialBackoff: .milliseconds(5)), logger: logger)
        let heartbeat = Duration.milliseconds(heartbeatMs)
        let service: any Service
        if node == FailoverLayout.control {
            let store = FileEpochStore(
                path: epochFile ?? NSTemporaryDirectory() + "ftctl-failover-epoch-\(getpid())")
            service = try FailoverControlServer(
                node: node,
                configuration: .init(
                    servers: layout.servers, leaseDuration: heartbeat * 3, renewInterval: heartbeat,
                    minimumSyncBackups: minimumSyncBackups, durableServers: durableServers),
                transport: transport, epochs: store, detectionTimeout: heartbeat * 3, logger: logger)
        } else {
            let endpoint = ServiceEndpoint(node: node)
            let configuration = ServiceConfiguration(
                role: .backup, epoch: 0, host: "127.0.0.1", port: UInt16(servicePort))
            var plane: EtcdControlPlane?
            if controlPlane.usesEtcd {
                plane = EtcdControlPlane(
                    node: node, etcd: try controlPlane.gateway(),
                    configuration: controlPlane.configuration(minimumSyncBackups: minimumSyncBackups),
                    service: configuration, logger: logger)
            }
            let replicaJournal = try journal.map { directory throws(FailoverError) in
                try FileReplicaJournal(directory: directory)
            }
            if let replicaJournal {
                // What the server will restore (it reads the journal again as it starts).
                let held = try await replicaJournal.recover()
                print(
                    "journal: \(held.entries.count) entries" + (held.snapshot == nil ? "" : " after a snapshot")
                        + (held.droppedBytes > 0 ? ", \(held.droppedBytes) bytes of an unfinished write cut off" : ""))
            }
            service = FailoverServer(
                node: node, controller: FailoverLayout.control, servers: layout.servers,
                configuration: ServiceConfiguration(
                    role: .backup, epoch: 0, host: "127.0.0.1", port: UInt16(servicePort)),
                transport: transport,
                settings: ServerCore.Settings(minimumSyncBackups: minimumSyncBackups, reportInterval: heartbeat),
                logger: logger,
                bind: { configuration in endpoint.bind(configuration) }, release: { endpoint.release() },
                controlPlane: plane, journal: replicaJournal)
        }
        print("node \(name) listening on port \(port)")
        fflush(nil)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        await transport.close()
    }
}

/// The names and loopback ports of a demo pair.
struct FailoverLayout {
    static let control: NodeID = "control"
    static let clients: [NodeID] = ["client1", "client2", "client3"]
    /// Where `ftctl failover status` and `switch` listen: the control server answers there.
    static let `operator`: NodeID = "operator"
    var servers: [NodeID]
    var ports: [NodeID: Int]

    init(servers: [NodeID], ports: [NodeID: Int]) {
        self.servers = servers
        self.ports = ports
    }

    init(servers: String, ports: String) throws {
        self.servers = servers.split(separator: ",").compactMap { NodeID(String($0)) }
        var parsed: [NodeID: Int] = [:]
        for item in ports.split(separator: ",") {
            let parts = item.split(separator: "=")
            guard parts.count == 2, let node = NodeID(String(parts[0])), let port = Int(parts[1]),
                (1...65_535).contains(port)
            else { throw CommandFailure("--ports: \(item.debugDescription) is not name=port") }
            parsed[node] = port
        }
        self.ports = parsed
        guard !self.servers.isEmpty, Set(self.servers).count == self.servers.count,
            self.servers.allSatisfy({ parsed[$0] != nil }), parsed[Self.control] != nil
        else { throw CommandFailure("--servers and --ports must name distinct servers and the control server") }
    }

    var portArgument: String {
        ports.sorted { $0.key.name < $1.key.name }.map { "\($0.key.name)=\($0.value)" }.joined(separator: ",")
    }
}

/// The service address a primary binds: a TCP listener that answers each connection with one
/// line, the node's name and epoch, so a client can see who serves there.
final class ServiceEndpoint: Sendable {
    let node: NodeID
    private let channel = NIOLockedValueBox<(generation: UInt64, channel: (any Channel)?)>((0, nil))

    init(node: NodeID) { self.node = node }

    /// Binds the configuration's address (retrying while the old primary's socket lingers).
    func bind(_ configuration: ServiceConfiguration) {
        let generation = channel.withLockedValue { state -> UInt64 in
            state.generation += 1
            return state.generation
        }
        let line = "\(node) \(configuration.epoch)\n"
        // The bind retries on its own task: the failover loop that calls this must not wait.
        Task {
            for _ in 0..<100 {
                guard channel.withLockedValue({ $0.generation }) == generation else { return }
                do {
                    let bound = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
                        .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                        .childChannelInitializer { child in
                            child.eventLoop.makeCompletedFuture {
                                try child.pipeline.syncOperations.addHandler(AnnounceHandler(line: line))
                            }
                        }
                        .bind(host: configuration.host, port: Int(configuration.port)).get()
                    let kept = channel.withLockedValue { state -> Bool in
                        guard state.generation == generation else { return false }
                        state.channel = bound
                        return true
                    }
                    if kept {
                        print(
                            "\(node) serves \(configuration.host):\(configuration.port) in epoch \(configuration.epoch)"
                        )
                        fflush(nil)
                    } else {
                        try? await bound.close()
                    }
                    return
                } catch {
                    // The address is still held (the old primary's socket): again shortly.
                    // A retry pause on the endpoint's own task, never a test's timing.
                    try? await Task.sleep(for: .milliseconds(10))
                }
            }
        }
    }

    /// Closes the service address.
    func release() {
        let old = channel.withLockedValue { state -> (any Channel)? in
            state.generation += 1
            defer { state.channel = nil }
            return state.channel
        }
        old?.close(promise: nil)
    }
}

/// Answers a connection with one line, then closes it.
private final class AnnounceHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer
    let line: String

    init(line: String) { self.line = line }

    func channelActive(context: ChannelHandlerContext) {
        let channel = context.channel
        context.writeAndFlush(wrapOutboundOut(ByteBuffer(string: line))).whenComplete { _ in
            channel.close(promise: nil)
        }
    }
}

/// Reads the line the service address answers with (who serves there), or nil.
func askService(port: Int) async -> String? {
    do {
        let channel = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .connect(host: "127.0.0.1", port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try NIOAsyncChannel<ByteBuffer, ByteBuffer>(wrappingChannelSynchronously: channel)
                }
            }
        return try await channel.executeThenClose { inbound, _ in
            var text = ""
            for try await buffer in inbound { text += String(buffer: buffer) }
            return text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
    } catch {
        return nil
    }
}

/// `ftctl failover demo`.
struct FailoverDemo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "A control server and two servers as OS processes on loopback; the primary SIGKILLed under load.",
        discussion: """
            Each trial starts `ftctl failover node` three times (the control server, servers a \
            and b), runs a client writing and reading continuously in synchronous mode (a new key \
            per write, and puts, deletes, compare-and-sets and reads of three shared keys), then \
            kills the primary with SIGKILL and keeps the load going. It prints the \
            client-observed recovery time (from the kill to the first operation the new primary \
            acknowledged), the operations acknowledged and lost (every acknowledged key is read \
            back from the new primary), whether each shared key's history is linearizable, and \
            who answers on the service address. With --journal each server journals to a file \
            and the killed primary is started again on it. Exits 1 if anything acknowledged was \
            lost, a history is not linearizable, the new primary does not serve the old address, \
            or (with --journal) the restarted server does not rejoin the sync set.
            """)

    @Option(help: "Trials (each with fresh processes).") var trials = 1
    @Option(help: "The report (heartbeat) interval in milliseconds.") var heartbeatMs = 10
    @Option(help: "Milliseconds of load before the kill, and again after recovery.") var loadMs = 500
    @Option(
        help: """
            Backups beside the primary: 2 (the default: after the kill the new primary still has             a backup to wait for) or 1 (a pair; the survivor then acknowledges alone, and a second             failure could lose what it acknowledged).
            """)
    var backups = 2
    @Flag(
        help: """
            Before the kill, a planned switchover under load to another server, asked over the \
            wire as `ftctl failover switch` asks it; the client-observed switch time is printed, \
            and the kill then takes the new primary.
            """)
    var switchover = false
    @Flag(
        help: """
            Each server journals to a file (FileReplicaJournal) and acknowledges only what is on \
            its disk; after the checks the SIGKILLed primary is started again on its journal, and \
            must come back with its entries and rejoin the sync set (control server only).
            """)
    var journal = false
    @Flag(
        help: """
            With --journal: instead of the primary alone, every server is SIGKILLed at once (a \
            whole pair's power loss, as far as processes go: their files keep what the kernel \
            holds) and started again on its journal at once; a primary must serve again with \
            every acknowledged write (with the control server, or through etcd, where each server \
            is named by its journal's identity).
            """)
    var killAllServers = false
    @Flag(help: "Print the summary as JSON.") var json = false
    @OptionGroup var controlPlane: FailoverControlOptions

    func validate() throws {
        if killAllServers, !journal {
            throw ValidationError("--kill-all-servers: servers that come back empty hold nothing; add --journal")
        }
        if killAllServers, switchover {
            throw ValidationError("--kill-all-servers and --switchover: one at a time")
        }
        if journal, !killAllServers, controlPlane.usesEtcd {
            throw ValidationError(
                "--journal: the restarted server's rejoin is read from the control server's status "
                    + "(through etcd, --journal --kill-all-servers runs)")
        }
        try require("--trials", trials, in: 1...1000)
        try require("--heartbeat-ms", heartbeatMs, in: 1...1000)
        try require("--load-ms", loadMs, in: 50...60_000)
        try require("--backups", backups, in: 1...2)
    }

    func run() async throws {
        var results: [FailoverTrial.Result] = []
        for trial in 1...trials {
            let result = try await FailoverTrial(
                number: trial, heartbeatMs: heartbeatMs, loadMs: loadMs, backups: backups, switchover: switchover,
                journal: journal, killAllServers: killAllServers, control: controlPlane.choice
            ).run()
            if !json { print(result.line) }
            results.append(result)
        }
        let recoveries = results.compactMap(\.recovery).map { Double($0.nanoseconds) / 1e6 }.sorted()
        let lost = results.map(\.lost).reduce(0, +)
        let acknowledged = results.map(\.acknowledged).reduce(0, +)
        let failures = results.filter { !$0.passed }
        let p50 = percentile(recoveries, 0.5)
        let p99 = percentile(recoveries, 0.99)
        let worst = recoveries.last ?? 0
        let switches = results.compactMap(\.switchTime).map { Double($0.nanoseconds) / 1e6 }.sorted()
        if json {
            var object: [String: Any] = [
                "trials": trials, "heartbeatMs": heartbeatMs, "acknowledged": acknowledged, "lost": lost,
                "recoveryMs": ["p50": p50, "p99": p99, "max": worst], "failedTrials": failures.map(\.number),
            ]
            if switchover {
                object["switchoverMs"] = [
                    "p50": percentile(switches, 0.5), "p99": percentile(switches, 0.99), "max": switches.last ?? 0,
                ]
            }
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(
                String(
                    format: "%d trial(s), heartbeat %d ms: recovery p50 %.1f ms, p99 %.1f ms, max %.1f ms; "
                        + "%d operations acknowledged, %d lost", trials, heartbeatMs, p50, p99, worst, acknowledged,
                    lost))
            if switchover {
                print(
                    String(
                        format: "planned switchovers: p50 %.1f ms, p99 %.1f ms, max %.1f ms", percentile(switches, 0.5),
                        percentile(switches, 0.99), switches.last ?? 0))
            }
        }
        if !failures.isEmpty {
            throw CommandFailure(
                "\(failures.count) trial(s) failed: \(failures.map { "\($0.number)" }.joined(separator: ", "))")
        }
    }
}

/// The nearest-rank percentile of sorted values (0 when empty).
func percentile(_ sorted: [Double], _ fraction: Double) -> Double {
    guard !sorted.isEmpty else { return 0 }
    let rank = Int((fraction * Double(sorted.count)).rounded(.up)) - 1
    return sorted[min(max(rank, 0), sorted.count - 1)]
}

/// One trial of `ftctl failover demo`: fresh processes, a load, one SIGKILL of the primary.
struct FailoverTrial {
    struct Result {
        var number: Int
        var victim: NodeID?
        var successor: NodeID?
        var recovery: Duration?
        var acknowledged = 0
        var lost = 0
        var linearizable = true
        var service: String?
        var problem: String?
        /// The planned switchover's servers and client-observed time, when one ran.
        var switchFrom: NodeID?
        var switchTo: NodeID?
        var switchTime: Duration?
        /// Journaled runs: what the killed primary's journal held when it was started again, and
        /// how long it took to rejoin the sync set.
        var restoredFrom: String?
        var rejoin: Duration?
        /// Every server was killed at once and started again on its journal.
        var everyServerKilled = false

        var passed: Bool { problem == nil }

        var line: String {
            let recovered = recovery.map { String(format: "%.1f ms", Double($0.nanoseconds) / 1e6) } ?? "never"
            var switched = ""
            if let switchTo {
                let time = switchTime.map { String(format: "%.1f ms", Double($0.nanoseconds) / 1e6) } ?? "never"
                switched = "switched over \(switchFrom?.name ?? "?") -> \(switchTo) in \(time); "
            }
            var text =
                "trial \(number): " + switched
                + (everyServerKilled
                    ? "every server SIGKILLed at once (primary \(victim?.name ?? "?")) and started on its journal; "
                    : "primary \(victim?.name ?? "?") SIGKILLed; ") + "\(successor?.name ?? "nobody") "
                + "serves after \(recovered); \(acknowledged) operations acknowledged, \(lost) lost; histories "
                + (linearizable ? "linearizable" : "NOT linearizable")
                + "; the service address answers \(service.map { "\"\($0)\"" } ?? "nothing")"
            if let restoredFrom {
                let time = rejoin.map { String(format: "%.1f ms", Double($0.nanoseconds) / 1e6) } ?? "never"
                text += "; \(victim?.name ?? "?") restarted on its \(restoredFrom), in the sync set after \(time)"
            }
            if let problem { text += "\n  FAILED: \(problem)" }
            return text
        }
    }

    let number: Int
    let heartbeatMs: Int
    let loadMs: Int
    let backups: Int
    let switchover: Bool
    /// Each server journals to a file; the killed primary is started again on it.
    var journal = false
    /// Every server is killed at once and started again on its journal (``journal`` must be set).
    var killAllServers = false
    /// The control server (a process of its own), or etcd.
    var control = FailoverControlChoice.server

    /// ``control`` for this trial: in etcd, a pair of its own per trial (nothing left from an
    /// earlier one counts).
    var trialControl: FailoverControlChoice {
        guard case .etcd(let endpoint, let cluster) = control else { return control }
        return .etcd(endpoint: endpoint, cluster: "\(cluster)-\(getpid())-\(number)")
    }

    func run() async throws -> Result {
        var result = Result(number: number)
        let directory = NSTemporaryDirectory() + "ftctl-failover-\(getpid())-\(number)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let servers: [NodeID] = Array((["a", "b", "c"] as [NodeID]).prefix(backups + 1))
        var ports: [NodeID: Int] = [:]
        for node in servers + [FailoverLayout.control, FailoverLayout.operator] + FailoverLayout.clients {
            ports[node] = try freeLoopbackPort()
        }
        let servicePort = try freeLoopbackPort()
        let layout = FailoverLayout(servers: servers, ports: ports)
        var pids: [NodeID: Int32] = [:]
        defer {
            for pid in pids.values { Foundation.kill(pid, SIGKILL) }
            // FT_FAILOVER_DEMO_KEEP=1 keeps the nodes' logs for a look afterwards.
            if ProcessInfo.processInfo.environment["FT_FAILOVER_DEMO_KEEP"] != "1" {
                try? FileManager.default.removeItem(atPath: directory)
            }
        }
        let control = trialControl
        let journal = self.journal
        let start = { (node: NodeID, log: String) throws -> Int32 in
            try spawnSelf(
                [
                    "failover", "node", "--name", node.name, "--servers", servers.map(\.name).joined(separator: ","),
                    "--ports", layout.portArgument, "--service-port", String(servicePort),
                    "--heartbeat-ms", String(heartbeatMs), "--minimum-sync-backups", backups == 1 ? "0" : "1",
                    "--epoch-file", directory + "/epoch",
                ] + control.arguments
                    + (journal && node != FailoverLayout.control ? ["--journal", directory + "/\(node)-journal"] : [])
                    + (journal && node == FailoverLayout.control ? ["--durable-servers"] : []),
                log: log)
        }
        for node in (control.usesEtcd ? [] : [FailoverLayout.control]) + servers {
            let log = directory + "/\(node).log"
            pids[node] = try start(node, log)
            guard await waitForLine(log, containing: "listening") else {
                throw CommandFailure("node \(node) did not start; see \(log)")
            }
        }
        var peers: [NodeID: SocketAddress] = [:]
        for node in servers + [FailoverLayout.control] {
            peers[node] = try SocketAddress(ipAddress: "127.0.0.1", port: ports[node] ?? 0)
        }
        let clock = SystemClock()
        var quiet = Logger(label: "ftctl.failover.demo")
        quiet.logLevel = .warning
        var loads: [FailoverLoad] = []
        var transports: [TCPTransport] = []
        // The clients and their transports close on every way out, failures included.
        do {
            let restart = { (node: NodeID) async throws -> Int32 in
                let log = directory + "/\(node)-restarted.log"
                let pid = try start(node, log)
                guard await waitForLine(log, containing: "listening") else {
                    throw CommandFailure("node \(node) did not start again; see \(log)")
                }
                return pid
            }
            try await measure(
                &result, loads: &loads, transports: &transports, pids: &pids, ports: ports, peers: peers,
                servers: servers, servicePort: servicePort, clock: clock, logger: quiet, restart: restart)
            if journal, !killAllServers, result.problem == nil, let victim = result.victim {
                let log = directory + "/\(victim)-restarted.log"
                pids[victim] = try start(victim, log)
                try await rejoin(&result, victim: victim, log: log, loads: loads, clock: clock)
            }
        } catch {
            await close(loads, transports)
            throw error
        }
        await close(loads, transports)
        return result
    }

    /// The killed primary, started again on its journal: what it restored, and its time to be
    /// a caught-up backup of the sync set again (read from the control server's status).
    private func rejoin(
        _ result: inout Result, victim: NodeID, log: String, loads: [FailoverLoad], clock: SystemClock
    ) async throws {
        let started = clock.now
        guard await waitForLine(log, containing: "listening"),
            let line = (try? String(contentsOfFile: log, encoding: .utf8))?.split(separator: "\n")
                .first(where: { $0.hasPrefix("journal: ") })
        else {
            result.problem = "\(victim) did not start again on its journal; see \(log)"
            return
        }
        result.restoredFrom = "journal (" + line.dropFirst("journal: ".count) + ")"
        guard !line.hasPrefix("journal: 0 entries") || line.contains("snapshot") else {
            result.problem = "\(victim)'s journal came back empty"
            return
        }
        while clock.now < started + .seconds(10) {
            if let status = try? await loads[0].client.status(), status.syncSet.contains(victim),
                let report = status.servers.first(where: { $0.node == victim })?.report,
                report.role == .backup, report.epoch == status.epoch
            {
                result.rejoin = clock.now - started
                return
            }
            // Polling the control server's status as an operator would.
            try await clock.sleep(for: .milliseconds(20))
        }
        result.problem = "\(victim) did not rejoin the sync set within 10 s of its restart"
    }

    private func close(_ loads: [FailoverLoad], _ transports: [TCPTransport]) async {
        for load in loads { await load.client.close() }
        for transport in transports { await transport.close() }
    }

    /// Starts the clients, loads the pair, kills the primary, loads again and checks.
    private func measure(
        _ result: inout Result, loads: inout [FailoverLoad], transports: inout [TCPTransport],
        pids: inout [NodeID: Int32], ports: [NodeID: Int], peers: [NodeID: SocketAddress], servers: [NodeID],
        servicePort: Int, clock: SystemClock, logger quiet: Logger,
        restart: (NodeID) async throws -> Int32
    ) async throws {
        for (index, node) in FailoverLayout.clients.enumerated() {
            let transport = try await TCPTransport.start(
                configuration: .init(
                    localNode: node, bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: ports[node] ?? 0),
                    peers: peers, connectAttempts: 1, initialBackoff: .milliseconds(5)), logger: quiet)
            transports.append(transport)
            let client = FailoverClient(
                id: UInt64(number * 16 + index), transport: transport, servers: servers,
                controller: control.usesEtcd ? nil : FailoverLayout.control, clock: clock,
                timeout: .milliseconds(max(20, heartbeatMs * 2)),
                deadline: .seconds(5))
            loads.append(FailoverLoad(client: client, clock: clock))
        }
        let loadTime = Duration.milliseconds(loadMs)

        // Load until the pair has served a while (and acknowledged something); then kill
        // whoever serves.
        try await runAll(loads, until: clock.now + loadTime)
        try await runAll(loads, until: clock.now + .seconds(10), stopAfterAcknowledgements: 1)
        if switchover, case .etcd(let endpoint, let cluster) = trialControl {
            try await etcdPlannedSwitchover(
                &result, loads: loads, servers: servers, endpoint: endpoint, cluster: cluster)
            guard result.problem == nil else { return }
        } else if switchover {
            try await plannedSwitchover(
                &result, loads: loads, transports: &transports, ports: ports, peers: peers, servers: servers,
                clock: clock, logger: quiet)
            guard result.problem == nil else { return }
        }
        guard let victim = await loads[0].client.primary, let pid = pids[victim] else {
            result.problem = "no primary served within the load"
            return
        }
        if case .etcd(let endpoint, let cluster) = trialControl, let etcd = EtcdGateway(endpoint: endpoint) {
            // Only a backup of the sync record may take over: kill once one is in it (after a
            // switchover the old primary must first catch up as a backup).
            guard try await waitForSyncBackup(of: victim, etcd: etcd, cluster: cluster) != nil else {
                result.problem = "no backup entered the sync record of \(victim)"
                return
            }
        }
        result.victim = victim
        let killedAt = clock.now
        if killAllServers {
            result.everyServerKilled = true
            progress("killing every server: \(servers)")
            for server in servers { pids[server].map { _ = Foundation.kill($0, SIGKILL) } }
            for server in servers { pids[server] = nil }
            for server in servers { pids[server] = try await restart(server) }
        } else {
            progress("killing \(victim)")
            Foundation.kill(pid, SIGKILL)
            pids[victim] = nil
        }
        // Load until each client had an operation acknowledged by another server (by any, once
        // every server was killed), then as long again. The recovery each client saw: from the
        // kill to that first acknowledgement.
        let avoided = killAllServers ? nil : victim
        try await runAll(loads, until: clock.now + .seconds(20), stopAfterAcknowledgements: 1, avoiding: avoided)
        var recoveries: [Duration] = []
        for load in loads {
            if let first = await load.completions.first(where: { $0.at > killedAt && $0.server != avoided }) {
                recoveries.append(first.at - killedAt)
                result.successor = first.server
            }
        }
        if recoveries.count == loads.count { result.recovery = recoveries.max() }
        progress("recovered: \(recoveries)")
        try await runAll(loads, until: clock.now + loadTime)
        progress("load done; reading back")

        // Every acknowledged write must be on the new primary; every history must have an order.
        let reader = loads[0]
        var histories: [StoreKey: RegisterHistory] = [:]
        var unreadable: String?
        for load in loads {
            for key in await load.acknowledgedKeys where unreadable == nil {
                do {
                    if try await reader.client.read(key) == nil { result.lost += 1 }
                } catch {
                    unreadable = "reading back \(key) failed: \(error)"
                }
            }
            result.acknowledged += await load.completions.count
            for (key, history) in await load.histories { histories[key, default: RegisterHistory()].append(history) }
        }
        progress("checking histories")
        let historyProblem = await reader.checkHistories(histories)
        result.linearizable = historyProblem == nil
        result.service = await askService(port: servicePort)
        let successor = await reader.client.primary
        if let unreadable {
            result.problem = unreadable
        } else if result.recovery == nil {
            result.problem = "not every client had an operation acknowledged by another server after the kill"
        } else if result.lost > 0 {
            result.problem = "\(result.lost) acknowledged write(s) missing from the new primary"
        } else if let historyProblem {
            result.problem = historyProblem
        } else if result.service?.hasPrefix("\(successor?.name ?? "?") ") != true {
            result.problem =
                "the service address 127.0.0.1:\(servicePort) is not served by the new primary \(successor?.name ?? "?")"
        }
    }

    /// Asks the control server, as an operator over the wire, to switch to a backup while the
    /// clients go on; measures each client's time from the request to its first operation the
    /// target acknowledged, and checks that the control server then names the target.
    private func plannedSwitchover(
        _ result: inout Result, loads: [FailoverLoad], transports: inout [TCPTransport], ports: [NodeID: Int],
        peers: [NodeID: SocketAddress], servers: [NodeID], clock: SystemClock, logger: Logger
    ) async throws {
        let transport = try await TCPTransport.start(
            configuration: .init(
                localNode: FailoverLayout.operator,
                bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: ports[FailoverLayout.operator] ?? 0),
                peers: peers, connectAttempts: 1, initialBackoff: .milliseconds(5)), logger: logger)
        transports.append(transport)
        let operatorClient = FailoverClient(
            id: 0, transport: transport, servers: servers, controller: FailoverLayout.control, clock: clock,
            timeout: .milliseconds(max(20, heartbeatMs * 2)), deadline: .seconds(5))
        do {
            try await switchAndMeasure(&result, operatorClient, loads: loads, servers: servers, clock: clock)
        } catch {
            await operatorClient.close()
            throw error
        }
        await operatorClient.close()
    }

    private func switchAndMeasure(
        _ result: inout Result, _ operatorClient: FailoverClient, loads: [FailoverLoad], servers: [NodeID],
        clock: SystemClock
    ) async throws {
        guard let from = await loads[0].client.primary, let target = servers.first(where: { $0 != from }) else {
            result.problem = "no primary to switch from"
            return
        }
        result.switchFrom = from
        result.switchTo = target
        progress("switching over from \(from) to \(target)")
        let asked = clock.now
        let epoch: UInt64
        do {
            epoch = try await operatorClient.switchover(to: target)
        } catch {
            result.problem = "the switchover to \(target) was not accepted: \(error)"
            return
        }
        let times = try await timesToTarget(loads, from: from, to: target, since: asked)
        let status = try? await operatorClient.status()
        if times.count == loads.count { result.switchTime = times.max() }
        progress("switched: \(times); control server: \(status.map { "\($0)" } ?? "no answer")")
        if result.switchTime == nil {
            result.problem = "not every client had an operation acknowledged by \(target) after the switchover"
        } else if status?.primary != target || (status?.epoch ?? 0) < epoch {
            result.problem =
                "after the switchover the control server names \(status?.primary?.name ?? "nobody") in epoch "
                + "\(status?.epoch ?? 0), not \(target) in \(epoch)"
        }
    }

    /// The planned switchover through etcd: the request written to etcd, then each client's
    /// time to its first operation the target acknowledged.
    private func etcdPlannedSwitchover(
        _ result: inout Result, loads: [FailoverLoad], servers: [NodeID], endpoint: String, cluster: String
    ) async throws {
        guard let etcd = EtcdGateway(endpoint: endpoint) else { throw CommandFailure("--etcd: \(endpoint)") }
        let configuration = EtcdControlConfiguration(cluster: cluster)
        guard let from = await loads[0].client.primary else {
            result.problem = "no primary to switch from"
            return
        }
        // The target must be in the sync record: wait until the primary has counted a backup in.
        guard let target = try await waitForSyncBackup(of: from, etcd: etcd, cluster: cluster) else {
            result.problem = "no backup entered the sync record of \(from)"
            return
        }
        result.switchFrom = from
        result.switchTo = target
        // The loads' own clock: their completions are instants on it.
        let clock = loads[0].clock
        let asked = clock.now
        progress("switching over from \(from) to \(target) through etcd")
        let line: String
        do {
            line = try await etcdSwitchover(etcd: etcd, configuration: configuration, to: target, timeout: .seconds(10))
        } catch {
            result.problem = "the switchover to \(target) did not happen: \(error)"
            return
        }
        let times = try await timesToTarget(loads, from: from, to: target, since: asked)
        if times.count == loads.count { result.switchTime = times.max() }
        progress("switched: \(line); clients: \(times)")
        if result.switchTime == nil {
            result.problem = "not every client had an operation acknowledged by \(target) after the switchover"
        }
    }

    /// Runs the loads until each had an operation acknowledged by a server other than `from`,
    /// and returns each client's time from `asked` to its first operation `target` acknowledged.
    private func timesToTarget(_ loads: [FailoverLoad], from: NodeID, to target: NodeID, since asked: Instant)
        async throws -> [Duration]
    {
        try await runAll(loads, until: loads[0].clock.now + .seconds(10), stopAfterAcknowledgements: 1, avoiding: from)
        var times: [Duration] = []
        for load in loads {
            if let first = await load.completions.first(where: { $0.at > asked && $0.server == target }) {
                times.append(first.at - asked)
            }
        }
        return times
    }

    /// A live backup in the sync record of `primary` (polled for up to 10 s), or `nil`.
    private func waitForSyncBackup(of primary: NodeID, etcd: EtcdGateway, cluster: String) async throws -> NodeID? {
        let configuration = EtcdControlConfiguration(cluster: cluster)
        for _ in 0..<400 {
            let view = try await EtcdPairView.read(from: etcd, configuration)
            if view.leader?.node == primary,
                let backup = (view.sync ?? []).map(\.node).first(where: { $0 != primary && view.members[$0] != nil })
            {
                return backup
            }
            // etcd's keys, polled.
            try await Task.sleep(for: .milliseconds(25))
        }
        return nil
    }

    /// `FT_FAILOVER_DEMO_TRACE=1`: each step of a trial, on standard error.
    private func progress(_ line: String) {
        guard ProcessInfo.processInfo.environment["FT_FAILOVER_DEMO_TRACE"] == "1" else { return }
        FileHandle.standardError.write(Data("trial \(number): \(line)\n".utf8))
    }

    /// Runs every client's load at once.
    private func runAll(
        _ loads: [FailoverLoad], until end: Instant, stopAfterAcknowledgements: Int? = nil, avoiding: NodeID? = nil
    ) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for load in loads {
                group.addTask {
                    try await load.run(
                        until: end, stopAfterAcknowledgements: stopAfterAcknowledgements, avoiding: avoiding)
                }
            }
            try await group.waitForAll()
        }
    }

    /// Waits (polling, up to 30 s) for a line containing `text` in `log`.
    private func waitForLine(_ log: String, containing text: String) async -> Bool {
        for _ in 0..<600 {
            if let contents = try? String(contentsOfFile: log, encoding: .utf8), contents.contains(text) { return true }
            // Another process's start-up, polled.
            try? await Task.sleep(for: .milliseconds(50))
        }
        return false
    }
}

/// A client's load on the pair, recording what was acknowledged and each shared key's history
/// (in the client's real time).
actor FailoverLoad {
    struct Completion {
        var at: Instant
        var server: NodeID?
    }

    let client: FailoverClient
    let clock: SystemClock
    private(set) var acknowledgedKeys: [StoreKey] = []
    private(set) var completions: [Completion] = []
    private(set) var histories: [StoreKey: RegisterHistory] = [:]
    private var seen: [StoreKey: [UInt8]?] = [:]
    private var random = SystemRandomNumberGenerator()

    init(client: FailoverClient, clock: SystemClock) {
        self.client = client
        self.clock = clock
    }

    /// Runs operations one after another until `end`, or until `stopAfterAcknowledgements`
    /// operations were acknowledged (by a server other than `avoiding`).
    func run(until end: Instant, stopAfterAcknowledgements: Int? = nil, avoiding: NodeID? = nil) async throws {
        var counted = 0
        while clock.now < end {
            if let stop = stopAfterAcknowledgements, counted >= stop { return }
            let started = clock.now
            let request = await client.nextRequestNumber
            let key = SharedRegisters.keys[Int.random(in: 0..<SharedRegisters.keys.count, using: &random)]
            let (value, id) = SharedRegisters.value(client: client.id, request: request)
            var operation: RegisterHistory.Operation?
            let choice = Int.random(in: 0...9, using: &random)
            do {
                switch choice {
                case 0...3:
                    guard let fresh = StoreKey("w\(client.id)-\(request)") else { continue }
                    _ = try await client.execute(.put(key: fresh, value: [1]))
                    acknowledgedKeys.append(fresh)
                case 4, 5:
                    operation = .write(id)
                    _ = try await client.execute(.put(key: key, value: value))
                    histories[key, default: RegisterHistory()].record(
                        .write(id), client: client.id, invoked: started, answered: clock.now)
                case 6:
                    operation = .write(RegisterHistory.absent)
                    _ = try await client.execute(.delete(key: key))
                    histories[key, default: RegisterHistory()].record(
                        .write(RegisterHistory.absent), client: client.id, invoked: started, answered: clock.now)
                case 7:
                    let expected = seen[key] ?? nil
                    operation = .compareAndSet(expected: SharedRegisters.id(of: expected), new: id, succeeded: nil)
                    let outcome = try await client.execute(.compareAndSet(key: key, expected: expected, new: value))
                    histories[key, default: RegisterHistory()].record(
                        .compareAndSet(
                            expected: SharedRegisters.id(of: expected), new: id, succeeded: outcome == .applied),
                        client: client.id, invoked: started, answered: clock.now)
                default:
                    let bytes = try await client.read(key)
                    seen[key] = bytes
                    histories[key, default: RegisterHistory()].record(
                        .read(SharedRegisters.id(of: bytes)), client: client.id, invoked: started, answered: clock.now)
                }
                if choice <= 7 {
                    // A write took effect: the server now refuses this client's older requests.
                    for key in histories.keys { histories[key]?.closeOpenOperations(of: client.id, by: clock.now) }
                }
                let server = await client.primary
                completions.append(Completion(at: clock.now, server: server))
                if server != avoiding { counted += 1 }
            } catch {
                if let operation {
                    histories[key, default: RegisterHistory()].recordOpen(
                        operation, client: client.id, invoked: started, latest: nil)
                }
            }
        }
    }

    /// Reads each shared key once more and checks its history (all clients' operations);
    /// the problem, or nil when every history has an order.
    func checkHistories(_ histories: [StoreKey: RegisterHistory]) async -> String? {
        for key in SharedRegisters.keys {
            let started = clock.now
            let bytes: [UInt8]?
            do {
                bytes = try await client.read(key)
            } catch {
                return "the final read of \(key) failed: \(error)"
            }
            var history = histories[key] ?? RegisterHistory()
            history.record(
                .read(SharedRegisters.id(of: bytes)), client: client.id, invoked: started, answered: clock.now)
            if ProcessInfo.processInfo.environment["FT_FAILOVER_DEMO_TRACE"] == "1" {
                let open = history.records.filter { !$0.completed }
                FileHandle.standardError.write(
                    Data(
                        "checking \(key): \(history.records.count) operations, \(open.count) open (\(open.filter { $0.answered == nil }.count) for ever)\n"
                            .utf8))
            }
            switch history.check() {
            case .linearizable:
                continue
            case .violation(let detail):
                return "key \(key): \(detail)"
            case .undecided(let steps):
                return "key \(key): the check gave up after \(steps) steps"
            }
        }
        return nil
    }
}
