import ArgumentParser
import Checkpointing
import CheckpointingSimulation
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import LiveCopy
import Logging
import NIOCore

/// The group's identity on the wire in the demo.
private let demoGroup: UInt64 = 1
private let coordinatorNode: NodeID = "coordinator"

/// `ftctl checkpoint group-demo`: a coordinator (this process) and three member processes on
/// loopback TCP; one member SIGKILLed in the middle of an epoch.
struct CheckpointGroupDemo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "group-demo",
        abstract: "Group checkpoints of three member processes on loopback TCP, one SIGKILLed mid-checkpoint.",
        discussion: """
            This process is the coordinator. It starts three `ftctl checkpoint group-member` \
            processes, each an application writing its memory region from a thread of its own \
            and sending numbered messages to the others through its member service, with a \
            checkpoint store on real files, and asks for group checkpoints one after \
            another. During epoch --kill-at (a full one, so the capture takes a while) it kills \
            member b with SIGKILL; that epoch commits everywhere or nowhere. b restarts, settles \
            any checkpoint it left in doubt by asking the coordinator, restores its newest \
            committed checkpoint, and the next epochs commit with it. At the end every store is \
            opened here and checked: no checkpoint in doubt, the same committed epochs at every \
            member and exactly the ones the coordinator committed, every chunk verified, and \
            every committed epoch a consistent cut (no member's checkpoint has handled a message \
            its sender's checkpoint had not sent). Exits 1 if any check fails.
            """)

    @Option(help: "Group epochs to ask for, 2...1000.") var epochs = 6
    @Option(help: "The epoch during which member b is killed, 1...epochs.") var killAt = 3
    @Option(help: "Each member's region in MiB, 1...4096.") var megabytes = 64
    @Option(help: "Directory for the stores, new or empty, kept afterwards (default: a temporary one, removed).")
    var directory: String?
    @Flag(help: "Print the outcome as JSON.") var json = false

    func validate() throws {
        try require("--epochs", epochs, in: 2...1000)
        try require("--kill-at", killAt, in: 1...epochs)
        try require("--megabytes", megabytes, in: 1...4096)
        if let directory, let contents = try? FileManager.default.contentsOfDirectory(atPath: directory),
            !contents.isEmpty
        {
            throw ValidationError(
                "--directory must be new or empty; \(directory) already holds \(contents.count) entries")
        }
    }

    struct Outcome: Codable {
        var committed: [UInt64] = []
        var aborted: [UInt64: String] = [:]
        var killedDuring: UInt64 = 0
        var members: [String: [UInt64]] = [:]
        var settledAtEnd = 0
        var problems: [String] = []
    }

    func run() async throws {
        let path = directory ?? (NSTemporaryDirectory() + "ftctl-group-demo-\(getpid())")
        if directory == nil { try? FileManager.default.removeItem(atPath: path) }
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: path) } }
        try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        var logger = Logger(label: "ftctl.group-demo")
        logger.logLevel = .error

        let pool = try FileStoragePool(
            directories: [path + "/coordinator"], unitCapacity: 64 << 10, budget: 64 << 10, preallocation: .reserved)
        let unit = try pool.units.first ?? pool.allocate()
        let log = try GroupCoordinatorLog(unit: unit, group: demoGroup)
        let transport = try await TCPTransport.start(
            configuration: .init(
                localNode: coordinatorNode, bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: 0)),
            logger: logger)
        guard let port = transport.localAddress.port else { throw CommandFailure("the coordinator has no port") }
        let names: [NodeID] = ["a", "b", "c"]
        let coordinator = try GroupCoordinatorService(
            group: demoGroup, members: names, epochTimeout: .seconds(10), log: log, transport: transport, logger: logger
        )
        let running = Task { try await coordinator.run() }

        var ports: [NodeID: Int] = [:]
        var members: [NodeID: MemberProcess] = [:]
        func startMember(_ node: NodeID) async throws -> MemberProcess {
            let member = try MemberProcess(
                executable: executable,
                arguments: [
                    "checkpoint", "group-member", "--node", node.name, "--directory", path + "/" + node.name,
                    "--coordinator-port", "\(port)", "--megabytes", "\(megabytes)",
                ])
            guard let line = await member.line(startingWith: "port "), let memberPort = Int(line.dropFirst(5)) else {
                throw CommandFailure("member \(node) did not start")
            }
            transport.setPeer(node, address: try SocketAddress(ipAddress: "127.0.0.1", port: memberPort))
            // Every member learns where the others listen.
            ports[node] = memberPort
            for (other, process) in members where other != node { process.tell("peer \(node.name) \(memberPort)") }
            for (other, otherPort) in ports where other != node { member.tell("peer \(other.name) \(otherPort)") }
            guard let settled = await member.line(startingWith: "ready") else {
                throw CommandFailure("member \(node) did not settle")
            }
            if !json { print("  member \(node): pid \(member.pid), \(settled.dropFirst(6))") }
            return member
        }

        if !json {
            print("Group checkpoint demo: coordinator on 127.0.0.1:\(port), members a, b, c (\(megabytes) MiB each)")
        }
        for node in names { members[node] = try await startMember(node) }
        var outcome = Outcome()
        for epoch in 1...epochs {
            let killing = epoch == killAt
            let request = Task { try await coordinator.checkpoint(full: killing || epoch == 1) }
            if killing, let victim = members["b"] {
                // Long enough for the prepare to arrive, short of the full capture's end.
                try await Task.sleep(for: .milliseconds(max(5, megabytes / 4)))
                victim.kill()
                if !json { print("  epoch \(epoch): member b (pid \(victim.pid)) killed with SIGKILL mid-checkpoint") }
            }
            do {
                let committed = try await request.value
                outcome.committed.append(committed.epoch)
                if !json {
                    let ids = committed.checkpoints.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
                    print("  epoch \(committed.epoch): committed at every member (\(ids.joined(separator: " ")))")
                }
            } catch {
                let record = coordinator.record
                outcome.aborted[record.lastBegun] = "\(error)"
                if !json { print("  epoch \(record.lastBegun): aborted everywhere: \(error)") }
            }
            if killing {
                outcome.killedDuring = coordinator.record.lastBegun
                members["b"] = try await startMember("b")
            }
        }
        for member in members.values { member.stop() }
        running.cancel()
        _ = try? await running.value
        await transport.close()

        // Every store, opened here.
        var stores: [CheckpointStore] = []
        for node in names {
            do {
                let (store, _) = try openCheckpointStore(path + "/" + node.name, create: false)
                // A member stopped before the last decision reached it holds that checkpoint in
                // doubt; settled here as it would settle on restart, from the coordinator's record.
                for doubt in store.inDoubt {
                    try store.decide(doubt.id, commit: doubt.epoch == log.record.lastCommitted)
                    outcome.settledAtEnd += 1
                }
                let epochs = store.checkpoints.map(\.epoch).sorted()
                outcome.members[node.name] = epochs
                if epochs != outcome.committed {
                    outcome.problems.append(
                        "\(node) holds epochs \(epochs); the coordinator committed \(outcome.committed)")
                }
                if let problem = store.verify().problems.first { outcome.problems.append("\(node): \(problem)") }
                stores.append(store)
            } catch {
                outcome.problems.append("\(node): \(error)")
            }
        }
        if stores.count == names.count {
            for epoch in outcome.committed {
                if let problem = inconsistency(at: epoch, stores: stores, names: names) {
                    outcome.problems.append("epoch \(epoch) is not a consistent cut: \(problem)")
                }
            }
        }
        for store in stores { store.close() }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(outcome), as: UTF8.self))
        } else {
            for node in names {
                print(
                    "  \(node)'s store: committed epochs \(outcome.members[node.name] ?? []), none in doubt, verified")
            }
            if outcome.settledAtEnd > 0 {
                print(
                    "  (\(outcome.settledAtEnd) checkpoint in doubt at the stop, settled from the coordinator's record)"
                )
            }
            for problem in outcome.problems { print("  PROBLEM: \(problem)") }
            print(
                outcome.problems.isEmpty
                    ? "OK: \(outcome.committed.count) epochs committed at all three members, \(outcome.aborted.count) aborted at all"
                    : "FAILED: \(outcome.problems.count) problems")
        }
        if !outcome.problems.isEmpty { throw ExitCode(1) }
    }
}

/// Whether some member's checkpoint of `epoch` handled a message its sender's checkpoint of
/// the epoch had not sent (page 0 of each region: incarnation, sent counts, newest handled).
private func inconsistency(at epoch: UInt64, stores: [CheckpointStore], names: [NodeID]) -> String? {
    var ledgers: [[UInt64]] = []
    for (index, store) in stores.enumerated() {
        guard let summary = store.checkpoints.first(where: { $0.epoch == epoch }) else {
            return "\(names[index]) has no checkpoint of it"
        }
        do {
            let manifest = try store.resolve(summary.id)
            guard let item = manifest.items.first else { return "\(names[index]): no item" }
            var region = [UInt8](repeating: 0, count: item.unitSize * item.unitCount)
            try region.withUnsafeMutableBytes { try store.restore(summary.id, item: item.name, into: $0) }
            ledgers.append(MessageLedger.words(of: region))
        } catch {
            return "\(names[index]): \(error)"
        }
    }
    return MessageLedger.inconsistency(ledgers, names: names.map(\.name))
}

/// A member process whose standard output is read line by line by a thread of its own.
private final class MemberProcess: @unchecked Sendable {
    // unchecked: `process` and `input` are used by the owning task only; `lines` is Sendable.
    let process = Process()
    let input = Pipe()
    let lines: AsyncStream<String>
    private var iterator: AsyncStream<String>.Iterator

    init(executable: String, arguments: [String]) throws {
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        let output = Pipe()
        process.standardOutput = output
        process.standardInput = input
        // FT_GROUP_DEMO_TRACE=DIR: each member process's log, at trace level, in a file of DIR.
        let trace = ProcessInfo.processInfo.environment["FT_GROUP_DEMO_TRACE"].map {
            $0 + "/member-\(arguments.dropFirst(3).first ?? "")-\(UInt64(Date().timeIntervalSince1970 * 1000)).log"
        }
        if let trace, FileManager.default.createFile(atPath: trace, contents: nil),
            let log = FileHandle(forWritingAtPath: trace)
        {
            process.standardError = log
        } else {
            process.standardError = FileHandle.nullDevice
        }
        let (stream, continuation) = AsyncStream.makeStream(of: String.self)
        lines = stream
        iterator = stream.makeAsyncIterator()
        let reader = Thread {
            var pending = Data()
            let handle = output.fileHandleForReading
            while true {
                let chunk = handle.availableData
                if chunk.isEmpty { break }
                pending.append(chunk)
                while let newline = pending.firstIndex(of: 10) {
                    continuation.yield(String(decoding: pending[pending.startIndex..<newline], as: UTF8.self))
                    pending.removeSubrange(pending.startIndex...newline)
                }
            }
            continuation.finish()
        }
        try process.run()
        reader.start()
    }

    var pid: Int32 { process.processIdentifier }

    /// Writes `line` to its standard input.
    func tell(_ line: String) {
        try? input.fileHandleForWriting.write(contentsOf: Data((line + "\n").utf8))
    }

    /// The next line starting with `prefix` (earlier lines skipped), or `nil` when the output ends.
    func line(startingWith prefix: String) async -> String? {
        while let line = await iterator.next() {
            if line.hasPrefix(prefix) { return line }
        }
        return nil
    }

    func kill() {
        Foundation.kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }

    /// Closes its standard input (it exits) and waits.
    func stop() {
        guard process.isRunning else { return }
        try? input.fileHandleForWriting.close()
        process.waitUntilExit()
    }
}

/// `ftctl checkpoint group-member`: one member of `group-demo` (started by it).
struct CheckpointGroupMember: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "group-member",
        abstract: "One member process of `checkpoint group-demo` (started by it).",
        shouldDisplay: false)

    @Option(help: "This member's node name.") var node: String
    @Option(help: "Its store directory (created if needed).") var directory: String
    @Option(help: "The coordinator's TCP port on 127.0.0.1.") var coordinatorPort: Int
    @Option(help: "The region in MiB, 1...4096.") var megabytes = 64

    func validate() throws {
        try require("--megabytes", megabytes, in: 1...4096)
        try require("--coordinator-port", coordinatorPort, in: 1...65_535)
        guard NodeID(node) != nil else { throw ValidationError("--node \(node) is not a node name") }
    }

    func run() async throws {
        var logger = Logger(label: "ftctl.group-member")
        logger.logLevel = ProcessInfo.processInfo.environment["FT_GROUP_DEMO_TRACE"] != nil ? .trace : .error
        guard let name = NodeID(node) else { return }
        let (store, _) = try openCheckpointStore(directory, create: true, budgetMiB: max(256, megabytes * 8))
        let transport = try await TCPTransport.start(
            configuration: .init(
                localNode: name, bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: 0),
                peers: [coordinatorNode: try SocketAddress(ipAddress: "127.0.0.1", port: coordinatorPort)]),
            logger: logger)
        let names: [NodeID] = ["a", "b", "c"]
        let service = GroupMemberService(
            group: demoGroup, coordinator: coordinatorNode, peers: names, store: store, application: node,
            transport: transport, fateInterval: .milliseconds(500), logger: logger)
        emit("port \(transport.localAddress.port ?? 0)")
        let running = Task { try await service.run() }
        let doubts = store.inDoubt.count
        let resumeFrom = await service.settled()
        let pages = megabytes << 8
        let memory = try TrackedMemory(pageCount: pages)
        if let resumeFrom { try store.restore(resumeFrom.id, item: "heap", into: memory) }
        let checkpointer = try Checkpointer(
            application: node, store: store, regions: ["heap": memory], resumingFrom: resumeFrom?.id, logger: logger)
        // Page 0 counts the messages (see MessageLedger).
        let incarnation = Checkpointer.wallClock()
        try MessageLedger.begin(incarnation: incarnation, in: memory)
        service.setMessageHandler { sender, message in
            MessageLedger.handle(message, from: names.firstIndex(of: sender) ?? -1, in: memory)
        }
        service.attach(checkpointer)
        emit(
            "ready "
                + (resumeFrom.map { "restored epoch \($0.epoch) (checkpoint \($0.id))" } ?? "fresh")
                + (doubts > 0 ? ", after settling \(doubts) checkpoint in doubt" : ""))
        // The application: a thread writing 8-byte words all over the region after page 0, about
        // 200,000 a second (three members share this machine's cores with their captures).
        let writer = Thread {
            var state: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(getpid())
            while true {
                for _ in 0..<200 {
                    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    let word = 512 + Int(state >> 20) % ((pages - 1) * 4096 / 8)
                    try? memory.storeWord(state, at: word * 8)
                }
                // Pacing on this thread of the writer's own, never the cooperative pool.
                usleep(1000)
            }
        }
        writer.start()
        // And numbered messages to the others, about a thousand a second: counted, then sent.
        let me = names.firstIndex(of: name) ?? 0
        let sender = Task {
            var sent = [UInt64](repeating: 0, count: names.count)
            var turn = 0
            while !Task.isCancelled {
                turn += 1
                let peer = (me + 1 + turn % 2) % names.count
                sent[peer] += 1
                if let message = try? MessageLedger.send(sent[peer], to: peer, incarnation: incarnation, in: memory) {
                    try? await service.send(message, to: names[peer])
                }
                try? await Task.sleep(for: .milliseconds(1))
            }
        }
        // Lines from the demo (where the other members listen) until it closes standard input
        // (read on a thread of its own, not the pool).
        let peerLines = AsyncStream<String> { continuation in
            Thread {
                while let line = readLine() { continuation.yield(line) }
                continuation.finish()
            }.start()
        }
        for await line in peerLines {
            let fields = line.split(separator: " ")
            guard fields.count == 3, fields[0] == "peer", let peer = NodeID(String(fields[1])),
                let port = Int(fields[2]), let address = try? SocketAddress(ipAddress: "127.0.0.1", port: port)
            else { continue }
            transport.setPeer(peer, address: address)
        }
        sender.cancel()
        running.cancel()
        Foundation.exit(0)
    }

    private func emit(_ line: String) {
        print(line)
        fflush(nil)
    }
}
