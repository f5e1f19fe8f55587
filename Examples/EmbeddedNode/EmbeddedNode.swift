// An example of embedding swift-fault-tolerance in one program: an elastic journal, a
// heartbeat service and a live-copy receiver (or copier) share one TCP port per peer through
// a TransportDemultiplexer, every message sealed with a shared key, all run by one
// ServiceGroup that shuts down cleanly on SIGTERM or SIGINT.
//
//     EmbeddedNode --name a --port 7101 --partner b=7102 --priority 2 \
//         --journal /tmp/a.journal --key-file ha.keys --copy-pages 256
//     EmbeddedNode --name b --port 7102 --partner a=7101 --priority 1 \
//         --journal /tmp/b.journal --key-file ha.keys
//
// Node a copies 256 pages of its memory live to b once it hears b's heartbeats; b serves
// live-copy sessions. Both append a record to their journal every 20 ms. Each prints one
// line per event, and a summary when it stops. Tests/ftctlTests/EmbeddedNodeTests.swift
// runs two of them and stops them with SIGTERM.
import ArgumentParser
import FaultTolerance
import Logging
import ServiceLifecycle
import Synchronization
import UnixSignals

#if canImport(Glibc)
    import Glibc
#endif

@main
struct EmbeddedNode: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "One node: a journal, heartbeats and live copy over one demultiplexed TCP transport.")

    @Option(help: "This node's name.") var name: String
    @Option(help: "The loopback port this node listens on.") var port: Int
    @Option(help: "The partner, as NAME=PORT on loopback.") var partner: String
    @Option(help: "Heartbeat priority: the higher of two operating nodes stays operating.") var priority: UInt8
    @Option(help: "The journal directory (created when missing).") var journal: String
    @Option(help: "The shared keys: lines `ID HEX`; the first seals, all are accepted.") var keyFile: String
    @Option(help: "Copy this many pages of memory live to the partner (0: serve copies instead).")
    var copyPages = 0

    func run() async throws {
        var logger = Logger(label: "embedded")
        logger.logLevel = .warning
        let parts = partner.split(separator: "=")
        guard parts.count == 2, let partnerName = NodeID(String(parts[0])), let partnerPort = Int(parts[1]),
            let localName = NodeID(name)
        else { throw ValidationError("--partner is NAME=PORT and --name a node name") }

        // One TCP listener; every message sealed with the shared key; one channel per module's
        // block of message types.
        let keys = try MessageKeys.load(contentsOf: String(decoding: try readFile(keyFile), as: UTF8.self))
        let tcp = try await TCPTransport.start(
            configuration: .init(
                localNode: localName, listeningOn: Endpoint(host: "127.0.0.1", port: port),
                peers: [partnerName: Endpoint(host: "127.0.0.1", port: partnerPort)]),
            logger: logger)
        let shared = TransportDemultiplexer(AuthenticatedTransport(tcp, keys: keys))
        let heartbeatChannel = shared.channel(forBlock: 0x01)
        let liveCopyChannel = shared.channel(forBlock: 0x02)

        // The journal: one directory, journal 1 protecting one 1 MiB volume for an hour.
        let store = try openJournal(logger: logger)
        guard let journal = store.journal(1) else { throw ValidationError("\(self.journal) has no journal 1") }

        // Heartbeats on the transport's one path, every 100 ms.
        let interval = Duration.milliseconds(100)
        let heartbeats = HeartbeatService(
            configuration: try HeartbeatConfiguration(
                paths: [
                    "tcp": .phiAccrual(
                        threshold: 8, minimumStandardDeviation: interval / 5, acceptablePause: interval * 3,
                        maximumSilence: interval * 6)
                ],
                heartbeatInterval: interval, threshold: 1, detectionBound: .seconds(2), priority: priority),
            partner: partnerName, transport: heartbeatChannel, pathMapping: .singleUnnamedPath, logger: logger)

        // The live-copy side: a receiver serving sessions, or a copier sending one.
        let liveCopy: any Service =
            copyPages > 0
            ? Copier(
                pages: copyPages, partner: partnerName, heartbeats: heartbeats,
                destination: RemoteDestination(transport: liveCopyChannel, peer: partnerName), logger: logger)
            : Receiver(
                receiver: LiveCopyReceiver(transport: liveCopyChannel, region: try OfflineRegion(pageCount: 256)))

        // The transport first and the journal before what appends to it: a ServiceGroup shuts
        // services down in reverse order, so the writer stops, then the journal flushes and
        // closes, and the transport closes last.
        let writer = Writer(journal: journal)
        let group = ServiceGroup(
            configuration: .init(
                services: [
                    .init(service: tcp), .init(service: store), .init(service: heartbeats),
                    .init(service: TransitionPrinter(heartbeats: heartbeats, node: name)),
                    .init(service: liveCopy), .init(service: writer),
                ],
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        say("\(name): listening on \(tcp.localEndpoint), partner \(partnerName)")
        try await group.run()
        say(
            "\(name): stopped; journal: \(writer.acknowledged.value) appends acknowledged, durable sequence "
                + "\(journal.durableSequence), closed")
    }

    /// Opens the journal directory, or creates it (crash-safely) on first start.
    func openJournal(logger: Logger) throws -> JournalStore {
        if access(journal, F_OK) == 0 { return try JournalStore.open(directory: journal, logger: logger) }
        return try JournalStore.create(
            directory: journal, unitSize: 1 << 20, journalUnits: 64, volumes: [1], volumeSize: 1 << 20,
            configuration: JournalConfiguration(window: .seconds(3600), quota: 64), logger: logger)
    }
}

/// Prints a line and flushes it, so a pipe sees it at once.
func say(_ line: String) {
    print(line)
    fflush(nil)  // every stream: stdout, without touching its global
}

func readFile(_ path: String) throws -> [UInt8] {
    guard let file = fopen(path, "r") else { throw ValidationError("cannot open \(path)") }
    defer { fclose(file) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let count = fread(&chunk, 1, chunk.count, file)
        if count <= 0 { return bytes }
        bytes += chunk[..<count]
    }
}

/// The program's own work: a journal record every 20 ms, each acknowledged once durable.
final class Writer: Service, Sendable {
    let journal: ElasticJournal
    let acknowledged = LockedCount()

    init(journal: ElasticJournal) { self.journal = journal }

    func run() async throws {
        var offset: UInt64 = 0
        while !Task.isCancelled && !Task.isShuttingDownGracefully {
            _ = try await journal.append(
                volume: 1, offset: offset, bytes: [UInt8](repeating: UInt8(offset % 251), count: 512))
            acknowledged.add(1)
            offset = (offset + 512) % (1 << 20)
            // The application's own pace, not a synchronisation: a write every 20 ms.
            try? await Task.sleep(for: .milliseconds(20))
        }
    }
}

/// Prints every heartbeat transition.
struct TransitionPrinter: Service {
    let heartbeats: HeartbeatService
    let node: String

    func run() async throws {
        for await transition in heartbeats.transitions.cancelOnGracefulShutdown() {
            say("\(node): heartbeat \(transition.from) -> \(transition.to) (\(transition.reason.rawValue))")
        }
    }
}

/// Serves live-copy sessions, printing each with the checksum of the region it left.
struct Receiver: Service {
    let receiver: LiveCopyReceiver

    func run() async throws {
        let printer = Task {
            for await session in receiver.sessions {
                say("live copy received: \(session.pages) pages, region checksum \(checksum(receiver.region))")
            }
        }
        defer { printer.cancel() }
        try await receiver.run()
        await printer.value
    }
}

/// Copies memory live to the partner once its heartbeats arrive, and ends the session.
struct Copier: Service {
    let pages: Int
    let partner: NodeID
    let heartbeats: HeartbeatService
    let destination: RemoteDestination
    let logger: Logger

    func run() async throws {
        let memory = try TrackedMemory(pageCount: pages)
        for page in 0..<pages { try memory.storeWord(UInt64(page) &* 0x9E37_79B9_7F4A_7C15 | 1, at: page * 4096) }
        // Wait for the partner: the heartbeat path is healthy once its heartbeats arrive.
        while heartbeats.evidence.healthyCount == 0 {
            if Task.isCancelled || Task.isShuttingDownGracefully { return }
            // Polling the service's published evidence; a copy needs no sharper signal.
            try? await Task.sleep(for: .milliseconds(50))
        }
        let copy = LiveCopy(source: memory, destination: destination, logger: logger)
        let report = try await copy.run()
        // A program would stay in duplicated mode while it moves over; this one ends the session.
        await copy.detach()
        let sum = memory.withUnsafeBytes { CRC32C.checksum($0) }
        say("live copy sent: \(report.pagesSent) pages to \(partner), source checksum \(sum)")
        // A service that returns early ends the group: this one waits for the shutdown.
        try? await gracefulShutdown()
    }
}

func checksum(_ region: OfflineRegion) -> UInt32 {
    region.withUnsafeBytes { CRC32C.checksum($0) }
}

/// A count shared across tasks.
final class LockedCount: Sendable {
    private let count = Mutex<Int>(0)
    func add(_ amount: Int) { count.withLock { $0 += amount } }
    var value: Int { count.withLock { $0 } }
}
