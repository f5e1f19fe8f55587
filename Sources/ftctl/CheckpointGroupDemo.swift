import ArgumentParser
import Checkpointing
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
            This process is the coordinator. It starts three `ftctl checkpoint group-member` \\
            processes, each an application writing its memory region from a thread of its own, \\
            with a checkpoint store on real files, and asks for group checkpoints one after \\
            another. During epoch --kill-at (a full one, so the capture takes a while) it kills \\
            member b with SIGKILL; that epoch commits everywhere or nowhere. b restarts, settles \\
            any checkpoint it left in doubt by asking the coordinator, restores its newest \\
            committed checkpoint, and the next epochs commit with it. At the end every store is \\
            opened here and checked: no checkpoint in doubt, the same committed epochs at every \\
            member and exactly the ones the coordinator committed, every chunk verified. Exits 1 \\
            if any check fails.
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
            group: demoGroup, members: names, epochTimeout: .seconds(5), log: log, transport: transport, logger: logger)
        let running = Task { try await coordinator.run() }

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
            guard let settled = await member.line(startingWith: "ready") else {
                throw CommandFailure("member \(node) did not settle")
            }
            if !json { print("  member \(node): pid \(member.pid), \(settled.dropFirst(6))") }
            return member
        }

        if !json {
            print("Group checkpoint demo: coordinator on 127.0.0.1:\(port), members a, b, c (\(megabytes) MiB each)")
        }
        var members: [NodeID: MemberProcess] = [:]
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
        for node in names {
            do {
                let (store, _) = try openCheckpointStore(path + "/" + node.name, create: false)
                if let doubt = store.inDoubt.first {
                    outcome.problems.append(
                        "\(node) still holds checkpoint \(doubt.id) of epoch \(doubt.epoch) in doubt")
                }
                let epochs = store.checkpoints.map(\.epoch).sorted()
                outcome.members[node.name] = epochs
                if epochs != outcome.committed {
                    outcome.problems.append(
                        "\(node) holds epochs \(epochs); the coordinator committed \(outcome.committed)")
                }
                if let problem = store.verify().problems.first { outcome.problems.append("\(node): \(problem)") }
                store.close()
            } catch {
                outcome.problems.append("\(node): \(error)")
            }
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(outcome), as: UTF8.self))
        } else {
            for node in names {
                print(
                    "  \(node)'s store: committed epochs \(outcome.members[node.name] ?? []), none in doubt, verified")
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
        process.standardError = FileHandle.nullDevice
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
        logger.logLevel = .error
        guard let name = NodeID(node) else { return }
        let (store, _) = try openCheckpointStore(directory, create: true, budgetMiB: max(256, megabytes * 8))
        let transport = try await TCPTransport.start(
            configuration: .init(
                localNode: name, bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: 0),
                peers: [coordinatorNode: try SocketAddress(ipAddress: "127.0.0.1", port: coordinatorPort)]),
            logger: logger)
        let service = GroupMemberService(
            group: demoGroup, coordinator: coordinatorNode, store: store, application: node, transport: transport,
            fateInterval: .milliseconds(500), logger: logger)
        emit("port \(transport.localAddress.port ?? 0)")
        let running = Task { try await service.run() }
        let doubts = store.inDoubt.count
        let resumeFrom = await service.settled()
        let pages = megabytes << 8
        let memory = try TrackedMemory(pageCount: pages)
        if let resumeFrom { try store.restore(resumeFrom.id, item: "heap", into: memory) }
        let checkpointer = try Checkpointer(
            application: node, store: store, regions: ["heap": memory], resumingFrom: resumeFrom?.id, logger: logger)
        service.attach(checkpointer)
        emit(
            "ready "
                + (resumeFrom.map { "restored epoch \($0.epoch) (checkpoint \($0.id))" } ?? "fresh")
                + (doubts > 0 ? ", after settling \(doubts) checkpoint in doubt" : ""))
        // The application: a thread writing 8-byte words all over the region, about 200,000 a
        // second (three members share this machine's cores with their captures).
        let writer = Thread {
            var state: UInt64 = 0x9E37_79B9_7F4A_7C15 ^ UInt64(getpid())
            while true {
                for _ in 0..<200 {
                    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    try? memory.storeWord(state, at: Int(state >> 20) % (pages * 4096 / 8) * 8)
                }
                usleep(1000)
            }
        }
        writer.start()
        // Until the demo closes standard input (read on a thread of its own, not the pool).
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            Thread {
                _ = FileHandle.standardInput.readDataToEndOfFile()
                continuation.resume()
            }.start()
        }
        running.cancel()
        Foundation.exit(0)
    }

    private func emit(_ line: String) {
        print(line)
        fflush(nil)
    }
}
