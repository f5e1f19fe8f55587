import Benchmark
import BenchmarkSupport
import Failover
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import Glibc
import Logging
import NIOCore

// A pair in this process: a control server, a primary and a synchronous backup, and eight
// clients, each on its own TCPTransport on loopback (the protocol, its wire and its runtimes;
// every process shares this machine's two cores).
//
// Replicated writes: each client executes batches of 16 puts of 128-byte values, one batch at a
// time, in synchronous mode (a batch is acknowledged only once the backup has it), against the
// same eight clients each making a raw TCP round trip per batch: the very bytes of the request
// message sent over TCPTransport to a peer that answers with the very bytes of the reply. The
// baseline does one round trip per batch; ours does two (client to primary, primary to backup
// and back, primary to client) plus the store and the replication log on both servers. Ratio:
// the round trips' time over ours (issue #18 asks >= 0.7x).
//
// Journaled: the same with each server journaling what it applies to a file (fdatasync before it
// acknowledges), against the same round trips with the echo peer appending each request to a
// file and fdatasyncing it before it answers: the naive durable protocol, one sync per batch.
// A journaled server syncs once for every entry decided while its last sync ran (its effects
// batched: one write, one acknowledgement, one replicate message).
//
// The smoke run: 400 batches against a generous floor.

let mode = BenchmarkMode.current
let quiet = Logger(label: "ft.failover.bench", factory: { _ in SwiftLogNoOpLogHandler() })
let clientCount = 8
let putsPerBatch = 16
let valueBytes = 128
let servers: [NodeID] = ["a", "b"]

/// A pair and its clients on loopback TCP.
final class LoopbackPair: @unchecked Sendable {
    // unchecked: built and closed by one benchmark task; the clients are actors.
    var transports: [TCPTransport] = []
    var tasks: [Task<Void, any Error>] = []
    var clients: [FailoverClient] = []

    /// Where the journals are, if the servers journal.
    let journalDirectory: String?

    init(journaled: Bool = false) async throws {
        journalDirectory = journaled ? try temporaryDirectory() : nil
        let any = try SocketAddress(ipAddress: "127.0.0.1", port: 0)
        let nodes: [NodeID] = ["control"] + servers + (1...clientCount).compactMap { NodeID("client\($0)") }
        var byNode: [NodeID: TCPTransport] = [:]
        for node in nodes {
            let transport = try await TCPTransport.start(
                configuration: .init(localNode: node, bindAddress: any), logger: quiet)
            transports.append(transport)
            byNode[node] = transport
        }
        for transport in transports {
            for (node, peer) in byNode where peer !== transport { transport.setPeer(node, address: peer.localAddress) }
        }
        // A 20 ms report interval and a 200 ms lease: under a full benchmark's load on two cores a
        // shorter lease lapses on scheduling stalls, and what is measured here is the steady state.
        let report = Duration.milliseconds(20)
        guard let controlTransport = byNode["control"] else { throw FailoverError(.invalidConfiguration) }
        let control = try FailoverControlServer(
            node: "control",
            configuration: .init(
                servers: servers, leaseDuration: .milliseconds(200), renewInterval: report, minimumSyncBackups: 1),
            transport: controlTransport, detectionTimeout: .milliseconds(200), logger: quiet)
        tasks.append(Task { try await control.run() })
        for server in servers {
            guard let transport = byNode[server] else { continue }
            let journal = try journalDirectory.map { try FileReplicaJournal(directory: "\($0)/\(server)") }
            let runtime = FailoverServer(
                node: server, controller: "control", servers: servers,
                configuration: ServiceConfiguration(role: .backup, epoch: 0, host: "127.0.0.1", port: 7400),
                transport: transport, settings: ServerCore.Settings(minimumSyncBackups: 1, reportInterval: report),
                logger: quiet, journal: journal)
            tasks.append(Task { try await runtime.run() })
        }
        for index in 1...clientCount {
            guard let node = NodeID("client\(index)"), let transport = byNode[node] else { continue }
            clients.append(
                FailoverClient(
                    id: UInt64(index), transport: transport, servers: servers, controller: "control",
                    timeout: .milliseconds(500), deadline: .seconds(30)))
        }
    }

    func close() async {
        for client in clients { await client.close() }
        for task in tasks { task.cancel() }
        for transport in transports { await transport.close() }
        if let journalDirectory { try? FileManager.default.removeItem(atPath: journalDirectory) }
    }
}

/// The baseline could not do its work: the run fails rather than counting as fast.
struct EchoFailure: Error, CustomStringConvertible {
    let reason: String
    var description: String { reason }
}

/// A fresh directory under the system's temporary one.
func temporaryDirectory() throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("ft-failover-bench-\(UUID().uuidString)")
        .path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// Batch `number` of client `client`: 16 puts of new keys.
func batch(client: Int, number: Int) -> StoreOperation {
    .batch(
        (0..<putsPerBatch).map { put in
            .put(
                key: StoreKey("c\(client)-\(number)-\(put)") ?? "k",
                value: [UInt8](repeating: UInt8(truncatingIfNeeded: put), count: valueBytes))
        })
}

/// Every client executes `batches / clientCount` batches, one at a time.
func replicatedWrites(_ pair: LoopbackPair, batches: Int, first: Int) async throws {
    try await withThrowingTaskGroup(of: Void.self) { group in
        for (index, client) in pair.clients.enumerated() {
            group.addTask {
                for number in 0..<(batches / clientCount) {
                    _ = try await client.execute(batch(client: index, number: first + number))
                }
            }
        }
        try await group.waitForAll()
    }
}

/// The baseline: the same clients, each on its own TCPTransport, and an echo peer that answers
/// every message with the bytes of a reply.
final class EchoPeers: @unchecked Sendable {
    // unchecked: built and closed by one benchmark task.
    let echo: TCPTransport
    let echoTask: Task<Void, Never>
    var senders: [TCPTransport] = []

    /// The echo peer's answer when it could not make a request durable.
    static let refusal = FailoverMessage.reply(
        client: 1, request: 1, epoch: 1, outcome: .refused(.malformed, serverEpoch: 1)
    ).encode()
    /// The file the echo peer appends each request to and syncs before answering, if durable.
    let logPath: String?

    init(durable: Bool = false) async throws {
        let any = try SocketAddress(ipAddress: "127.0.0.1", port: 0)
        let echo = try await TCPTransport.start(
            configuration: .init(localNode: "echo", bindAddress: any), logger: quiet)
        self.echo = echo
        let reply = FailoverMessage.reply(client: 1, request: 1, epoch: 1, outcome: .done(.applied)).encode()
        let logPath = durable ? "\(try temporaryDirectory())/echo.log" : nil
        self.logPath = logPath
        let descriptor = logPath.map { open($0, O_WRONLY | O_CREAT | O_APPEND, 0o644) } ?? -1
        if logPath != nil, descriptor < 0 {
            throw FailoverError(.invalidConfiguration, detail: "cannot open the echo log")
        }
        echoTask = Task {
            for await envelope in echo.incoming {
                if descriptor >= 0 {
                    // The naive durable protocol: each request appended and synced before the answer.
                    let written = envelope.message.payload.withUnsafeReadableBytes {
                        write(descriptor, $0.baseAddress, $0.count)
                    }
                    guard written == envelope.message.payload.readableBytes, fdatasync(descriptor) == 0 else {
                        // Not durable: answered as a refusal, which fails the run.
                        try? await echo.send(EchoPeers.refusal, to: envelope.from)
                        continue
                    }
                }
                try? await echo.send(reply, to: envelope.from)
            }
            if descriptor >= 0 { Glibc.close(descriptor) }
        }
        for index in 1...clientCount {
            let transport = try await TCPTransport.start(
                configuration: .init(localNode: NodeID("client\(index)") ?? "client", bindAddress: any), logger: quiet)
            transport.setPeer("echo", address: echo.localAddress)
            echo.setPeer(transport.localNode, address: transport.localAddress)
            senders.append(transport)
        }
    }

    /// Every client sends `batches / clientCount` request messages, one at a time, each
    /// answered before the next: one raw TCP round trip per batch.
    func roundTrips(batches: Int, first: Int) async throws {
        try await withThrowingTaskGroup(of: Void.self) { group in
            for (index, transport) in senders.enumerated() {
                group.addTask {
                    var answers = transport.incoming.makeAsyncIterator()
                    for number in 0..<(batches / clientCount) {
                        let request = FailoverMessage.request(
                            client: UInt64(index), request: UInt64(first + number + 2), epoch: 1,
                            operation: batch(client: index, number: first + number))
                        try await transport.send(request.encode(), to: "echo")
                        guard let answer = await answers.next() else {
                            throw FailoverError(.timedOut, detail: "the echo peer closed")
                        }
                        guard answer.message != EchoPeers.refusal else {
                            throw EchoFailure(reason: "the echo peer could not sync its file")
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    func close() async {
        echoTask.cancel()
        for transport in senders { await transport.close() }
        await echo.close()
        if let logPath { try? FileManager.default.removeItem(atPath: (logPath as NSString).deletingLastPathComponent) }
    }
}

let cpuRatio = BenchmarkMetric.custom(
    "CPU per batch x100 (round trips / ours, every end in this process)", polarity: .prefersLarger,
    useScalingFactor: false)

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration.warmupIterations = mode.warmupIterations
    let batches = mode.pick(full: 8_000, quick: 2_000, smoke: 400)
    for journaled in [false, true] {
        let name =
            journaled
            ? "journaled pair (fdatasync), 8 clients: \(batches) batches of 16 x 128-byte puts, against a raw TCP round trip per batch with the echo peer syncing each to a file"
            : "synchronous pair, 8 clients: \(batches) batches of 16 x 128-byte puts, against a raw TCP round trip per batch"
        Benchmark(
            name,
            configuration: .init(
                metrics: [throughputRatio, cpuRatio], maxDuration: .seconds(mode.isReduced ? 10 : 60),
                maxIterations: mode.pick(full: 5, quick: 2, smoke: 1))
        ) { benchmark in
            do {
                let pair = try await LoopbackPair(journaled: journaled)
                // One batch per client first: the election, the connections and the first lease are
                // not what is measured.
                try await replicatedWrites(pair, batches: clientCount, first: -1)
                let oursStart = processCPUSeconds()
                let ours = try await seconds { try await replicatedWrites(pair, batches: batches, first: 0) }
                let oursCPU = processCPUSeconds() - oursStart
                await pair.close()
                let peers = try await EchoPeers(durable: journaled)
                try await peers.roundTrips(batches: clientCount, first: -1)
                let baselineStart = processCPUSeconds()
                let baseline = try await seconds { try await peers.roundTrips(batches: batches, first: 0) }
                let baselineCPU = processCPUSeconds() - baselineStart
                await peers.close()
                record(ratio: baseline / ours, floor: 0.1, in: benchmark)
                // Where the time goes: the CPU each batch costs (every end is in this process).
                benchmark.measurement(cpuRatio, Int((baselineCPU / oursCPU * 100).rounded()))
            } catch {
                fail(benchmark, "failover replicated-write benchmark failed: \(error)")
            }
        }
    }
}
