import ArgumentParser
import FaultToleranceAuthentication
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import HeartbeatQuorum
import Logging
import NIOCore
import ServiceLifecycle
import UnixSignals

/// A `NAME=HOST:PORT` path binding on the command line.
struct PathBinding: ExpressibleByArgument {
    let path: PathID
    let address: SocketAddress

    init?(argument: String) {
        let parts = argument.split(separator: "=", maxSplits: 1)
        guard parts.count == 2, let path = PathID(String(parts[0])) else { return nil }
        let hostPort = parts[1].split(separator: ":")
        guard hostPort.count == 2, let port = Int(hostPort[1]), (1...65_535).contains(port),
            let address = try? SocketAddress(ipAddress: String(hostPort[0]), port: port)
        else { return nil }
        self.path = path
        self.address = address
    }
}

/// `ftctl heartbeat run`: one redundancy device over UDP.
struct HeartbeatRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run one redundancy device: heartbeats over UDP on several paths, printing each transition.",
        discussion: """
            Each --path binds one local address (one NIC, or 127.0.0.x on one machine); each \
            --partner-path gives the partner's address on the path of the same name. Stops on \
            SIGINT or SIGTERM. Every datagram is sealed with a key both devices share \
            (--key-file: lines `ID HEX`, 32 bytes of hex; the first line seals, every line is \
            accepted, for rotations) and checked against a replay window; --insecure runs \
            without, on any address, only when asked. Example, two terminals:
              ftctl heartbeat run --node A --partner B --priority 2 --key-file ha.keys \\
                --path p1=127.0.0.2:7101 --path p2=127.0.0.3:7101 \\
                --partner-path p1=127.0.0.4:7101 --partner-path p2=127.0.0.5:7101
              ftctl heartbeat run --node B --partner A --priority 1 --key-file ha.keys \\
                --path p1=127.0.0.4:7101 --path p2=127.0.0.5:7101 \\
                --partner-path p1=127.0.0.2:7101 --partner-path p2=127.0.0.3:7101
            """)

    @Option(help: "This device's name.") var node: String
    @Option(help: "The partner's name.") var partner: String
    @Option(help: "Priority; when both operate, the lower yields. Must differ from the partner's.") var priority:
        UInt8 = 1
    @Option(
        name: .customLong("path"), help: "A local path, NAME=IPV4-OR-IPV6:PORT with PORT 1...65535 (repeat).")
    var paths: [PathBinding] = []
    @Option(
        name: .customLong("partner-path"),
        help: "The partner's address on a path, NAME=IPV4-OR-IPV6:PORT with PORT 1...65535 (repeat).")
    var partnerPaths: [PathBinding] = []
    @Option(help: "Heartbeat interval in milliseconds, 1...60000.") var intervalMs: Int64 = 100
    @Option(help: "Healthy paths needed, 1...paths (default: a majority of the paths).") var threshold: Int?
    @Option(help: "Promised detection bound in milliseconds, 1...3600000.") var boundMs: Int64 = 2000
    @Option(help: "Stop after this many seconds, 1...31536000 (default: run until interrupted).") var seconds: Int?
    @Option(help: "The shared keys: lines `ID HEX` (32+ bytes of hex); the first seals, all are accepted.")
    var keyFile: String?
    @Flag(help: "Run without authenticating datagrams (anyone who can reach the ports can steer this device).")
    var insecure = false

    func validate() throws {
        guard NodeID(node) != nil else { throw ValidationError("--node must be a valid node name, got \(node)") }
        guard NodeID(partner) != nil else {
            throw ValidationError("--partner must be a valid node name, got \(partner)")
        }
        guard node != partner else { throw ValidationError("--node and --partner must differ, both are \(node)") }
        guard !paths.isEmpty else { throw ValidationError("give at least one --path") }
        for (option, bindings) in [("--path", paths), ("--partner-path", partnerPaths)] {
            let names = bindings.map(\.path)
            if let repeated = names.first(where: { name in names.filter { $0 == name }.count > 1 }) {
                throw ValidationError("\(option) names path \(repeated) more than once")
            }
        }
        guard Set(paths.map(\.path)) == Set(partnerPaths.map(\.path)) else {
            throw ValidationError("--path and --partner-path must name the same paths")
        }
        try require("--interval-ms", intervalMs, in: 1...60_000)
        try require("--threshold", threshold, in: 1...paths.count)
        try require("--bound-ms", boundMs, in: 1...3_600_000)
        try require("--seconds", seconds, in: 1...31_536_000)
        guard (keyFile != nil) != insecure else {
            throw ValidationError(
                "give --key-file with the key both devices share, or --insecure to run without authentication")
        }
    }

    func run() async throws {
        let interval = Duration.milliseconds(intervalMs)
        let detector = DetectorConfiguration.phiAccrual(
            threshold: 8, minimumStandardDeviation: interval / 5, acceptablePause: interval * 3,
            maximumSilence: interval * 6)
        let configuration: HeartbeatConfiguration
        do {
            configuration = try HeartbeatConfiguration(
                paths: Dictionary(uniqueKeysWithValues: paths.map { ($0.path, detector) }), heartbeatInterval: interval,
                threshold: threshold ?? (paths.count / 2 + 1), detectionBound: .milliseconds(boundMs),
                priority: priority)
        } catch {
            throw ValidationError("\(error)")
        }
        let localNode = NodeID(node) ?? "invalid"
        let partnerNode = NodeID(partner) ?? "invalid"
        var logger = Logger(label: "ftctl.heartbeat")
        logger.logLevel = .warning
        var keys: MessageKeys?
        if let keyFile {
            do {
                keys = try MessageKeys.load(contentsOf: String(contentsOfFile: keyFile, encoding: .utf8))
            } catch {
                throw CommandFailure("\(keyFile): \(error)")
            }
        }
        let udp = try await UDPTransport.start(
            configuration: .init(
                localNode: localNode, paths: Dictionary(uniqueKeysWithValues: paths.map { ($0.path, $0.address) }),
                peers: [partnerNode: Dictionary(uniqueKeysWithValues: partnerPaths.map { ($0.path, $0.address) })]),
            logger: logger)
        let transport: any Transport = keys.map { AuthenticatedTransport(udp, keys: $0) } ?? udp
        // --insecure was said when there are no keys (checked above).
        let service = HeartbeatService(
            configuration: configuration, partner: partnerNode, transport: transport,
            requirement: keys == nil ? .insecure : .authenticatedSenders, logger: logger)
        print(
            "\(localNode): heartbeats every \(intervalMs) ms on \(paths.count) paths, threshold \(configuration.threshold), "
                + "detection bound \(boundMs) ms (worst case from settings: \(configuration.worstCaseDetection))")
        // One line per transition, flushed at once so a file or pipe sees it as it happens.
        let printer = Task {
            for await transition in service.transitions {
                print(describe(localNode, transition))
                fflush(nil)  // every stream: stdout, without touching its global
            }
        }
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: service)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        // Equal priorities are a misconfiguration only the partner's heartbeats reveal.
        let conflict = Task {
            while !Task.isCancelled {
                if service.partnerHasSamePriority {
                    // Keep sending a few more heartbeats, so the partner finds out too.
                    try? await Task.sleep(for: interval * 5)
                    await group.triggerGracefulShutdown()
                    return true
                }
                try? await Task.sleep(for: .milliseconds(50))
            }
            return false
        }
        defer { conflict.cancel() }
        if let seconds {
            // Whichever comes first ends the run: the time limit, a signal, or a conflict.
            let timer = Task {
                try await Task.sleep(for: .seconds(seconds))
                await group.triggerGracefulShutdown()
            }
            defer { timer.cancel() }
            try await group.run()
        } else {
            try await group.run()
        }
        printer.cancel()
        conflict.cancel()
        await transport.close()
        if await conflict.value {
            throw CommandFailure(
                "\(partnerNode) has the same priority \(priority) as \(localNode): when both operate neither yields; "
                    + "give them different --priority values")
        }
    }
}
