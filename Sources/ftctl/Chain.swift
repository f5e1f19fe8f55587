public import ArgumentParser
import DaisyChain
import DaisyChainSimulation
import DeterministicSimulation
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import Logging
import NIOCore
import ServiceLifecycle
import UnixSignals

extension ElementCore.Bug: ExpressibleByArgument {}

/// `ftctl chain`: chained elements with drive-state and chain-state registers, one volume to the host.
struct ChainCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "chain",
        abstract: "Run a daisy chain of elements on loopback and drive it (DaisyChain).",
        subcommands: [
            ChainSimulate.self, ChainUp.self, ChainStatus.self, ChainSignalCommand.self, ChainKill.self,
            ChainRestart.self, ChainBench.self, ChainDemo.self, ChainDown.self, ChainElementCommand.self,
        ])
}

/// `ftctl chain demo`: the chain scene of `ftctl demo` alone.
struct ChainDemo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "A journal on a 4-element mirror chain of processes; the second element SIGKILLed and restarted.")

    @Option(help: "Journal writes.") var writes = 600

    func validate() throws { try require("--writes", writes, in: 30...1_000_000) }

    func run() async throws { try await ChainScene(writes: writes).run() }
}

/// `ftctl chain simulate`.
struct ChainSimulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run the chain scenario over many seeds in virtual time.",
        discussion: """
            Each seed runs the shipped ChainElement and ChainHost runtimes on a simulated network: \
            a chain of 1 to 8 elements in span or mirror mode, a host writing, reading and flushing \
            stamped blocks, while messages are lost, doubled and reordered, links are cut, elements \
            crash and restart with their drives, drives fail and are reset, operators hold elements \
            down and let them up. Then everything heals. \
            Reads must return the last acknowledged write (never older, never zeros), every holder \
            must hold every acknowledged block, registers must converge within 2·n message delays \
            of the last signal, and no two elements may be head of one generation. Exits 1 if any \
            seed breaks an invariant.
            """)

    @Option(help: "Number of seeds.") var seeds: Int = 1000
    @Option(help: "Run exactly this seed.") var seed: UInt64?
    @Option(help: "Plant a bug: \(ElementCore.Bug.allCases.map(\.rawValue).joined(separator: ", ")).")
    var bug: ElementCore.Bug?
    @Option(help: "Worker threads.") var jobs: Int = ProcessInfo.processInfo.activeProcessorCount
    @OptionGroup var window: SeedWindowOptions
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        try require("--seeds", seeds, in: 1...maximumSeeds)
        try require("--jobs", jobs, in: 1...maximumJobs)
    }

    func run() async throws {
        let plan = window.plan(seeds: seeds, replay: seed)
        let scenario = ChainScenario(bug: bug)
        let summary = await runSeeds(plan, jobs: jobs, scenario: "chain" + (bug.map { " (bug: \($0.rawValue))" } ?? ""))
        {
            await scenario.run(seed: $0)
        }
        try report(summary, json: json, operations: "host operations") { seed in
            "swift run ftctl chain simulate --seed \(seed)" + (bug.map { " --bug \($0.rawValue)" } ?? "")
        }
    }
}

/// A chain started by `ftctl chain up`: its directory holds `chain.state`, one line per element
/// (`NAME PORT PID`) after a line `MODE ELEMENTS CAPACITY HEARTBEAT_MS`.
struct ChainState {
    var mode: ChainMode
    var capacity: Int
    var heartbeatMilliseconds: Int
    var elements: [(name: NodeID, port: Int, pid: Int32)]

    static func path(_ directory: String) -> String { directory + "/chain.state" }

    static func load(_ directory: String) throws -> ChainState {
        guard let text = try? String(contentsOfFile: path(directory), encoding: .utf8) else {
            throw CommandFailure("no chain in \(directory): run `ftctl chain up --dir \(directory)` first")
        }
        let lines = text.split(separator: "\n").map { $0.split(separator: " ").map(String.init) }
        guard let header = lines.first, header.count == 4,
            let mode = header[0] == "mirror" ? ChainMode.mirror : header[0] == "span" ? .span : nil,
            let capacity = Int(header[2]), let heartbeat = Int(header[3])
        else { throw CommandFailure("\(path(directory)) is not a chain state file") }
        var elements: [(NodeID, Int, Int32)] = []
        for line in lines.dropFirst() {
            guard line.count == 3, let name = NodeID(line[0]), let port = Int(line[1]), let pid = Int32(line[2]) else {
                throw CommandFailure("\(path(directory)) has a bad line: \(line.joined(separator: " "))")
            }
            elements.append((name, port, pid))
        }
        return ChainState(mode: mode, capacity: capacity, heartbeatMilliseconds: heartbeat, elements: elements)
    }

    func save(_ directory: String) throws {
        var text = "\(mode) \(elements.count) \(capacity) \(heartbeatMilliseconds)\n"
        for element in elements { text += "\(element.name) \(element.port) \(element.pid)\n" }
        try text.write(toFile: Self.path(directory), atomically: true, encoding: .utf8)
    }

    /// The arguments that start element `index` (`forming`: with the others, as a new chain).
    func arguments(_ index: Int, directory: String, forming: Bool = false) -> [String] {
        [
            "chain", "element", "--name", elements[index].name.name, "--dir", directory, "--mode", "\(mode)",
            "--elements", elements.map(\.name.name).joined(separator: ","),
            "--ports", elements.map { String($0.port) }.joined(separator: ","), "--capacity", String(capacity),
            "--heartbeat-ms", String(heartbeatMilliseconds),
        ] + (forming ? ["--form"] : [])
    }

    var peers: [NodeID: SocketAddress] {
        var peers: [NodeID: SocketAddress] = [:]
        for element in elements {
            if let address = try? SocketAddress(ipAddress: "127.0.0.1", port: element.port) {
                peers[element.name] = address
            }
        }
        return peers
    }
}

/// A loopback port that was free a moment ago.
func freeLoopbackPort() throws -> Int {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { throw CommandFailure("cannot open a socket") }
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { pointer in
            bind(descriptor, pointer, length) == 0 && getsockname(descriptor, pointer, &length) == 0
        }
    }
    guard bound else { throw CommandFailure("cannot bind a loopback port") }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// Starts `ftctl` (this executable) detached, its output in `log`.
func spawnSelf(_ arguments: [String], log: String) throws -> Int32 {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: CommandLine.arguments[0]).standardizedFileURL
    if !FileManager.default.isExecutableFile(atPath: process.executableURL?.path ?? "") {
        process.executableURL = URL(fileURLWithPath: ProcessInfo.processInfo.arguments[0])
    }
    process.arguments = arguments
    FileManager.default.createFile(atPath: log, contents: nil)
    let output = try FileHandle(forWritingTo: URL(fileURLWithPath: log))
    output.seekToEndOfFile()
    process.standardOutput = output
    process.standardError = output
    try process.run()
    return process.processIdentifier
}

/// Waits (polling the file, up to 30 s) for a line containing `text` in `log`.
func waitForLog(_ log: String, containing text: String) -> Bool {
    for _ in 0..<600 {
        if let contents = try? String(contentsOfFile: log, encoding: .utf8), contents.contains(text) { return true }
        // Another process's start, polled from ftctl's main thread (a synchronous command),
        // never the cooperative pool.
        usleep(50_000)
    }
    return false
}

/// `ftctl chain up`.
struct ChainUp: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "up",
        abstract: "Start N element processes on loopback TCP, each with a file-backed drive, and leave them running.")

    @Option(help: "Elements in the chain.") var elements = 4
    @Option(help: "span (capacities concatenated) or mirror (chain replication).") var mode: String = "mirror"
    @Option(help: "The chain's directory (drives, logs, chain.state).") var dir: String
    @Option(help: "Each drive's data capacity in MiB.") var capacityMib = 64
    @Option(help: "Heartbeat interval in milliseconds (a silent neighbour is cut after 2.5 of them).")
    var heartbeatMs = 100

    func validate() throws {
        try require("--elements", elements, in: 1...ChainRegister.maximumElements)
        try require("--capacity-mib", capacityMib, in: 1...1 << 20)
        try require("--heartbeat-ms", heartbeatMs, in: 5...60_000)
        guard mode == "span" || mode == "mirror" else {
            throw ValidationError("--mode \(mode) is not a chain mode; one of: span, mirror")
        }
    }

    func run() throws {
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        if FileManager.default.fileExists(atPath: ChainState.path(dir)) {
            throw CommandFailure("\(dir) already holds a chain; `ftctl chain down --dir \(dir)` stops it")
        }
        var state = ChainState(
            mode: mode == "span" ? .span : .mirror, capacity: capacityMib << 20, heartbeatMilliseconds: heartbeatMs,
            elements: try (0..<elements).map { (NodeID("e\($0)") ?? "e", try freeLoopbackPort(), 0) })
        for index in state.elements.indices {
            let log = dir + "/\(state.elements[index].name).log"
            state.elements[index].pid = try spawnSelf(
                state.arguments(index, directory: dir, forming: true), log: log)
        }
        for element in state.elements where !waitForLog(dir + "/\(element.name).log", containing: "listening") {
            throw CommandFailure("element \(element.name) did not start; see \(dir)/\(element.name).log")
        }
        try state.save(dir)
        print("chain of \(elements) elements (\(mode), \(capacityMib) MiB each) in \(dir)")
        for element in state.elements { print("  \(element.name)  port \(element.port)  pid \(element.pid)") }
    }
}

/// `ftctl chain element` (started by `up` and `restart`).
struct ChainElementCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "element", abstract: "Run one chain element until SIGTERM (started by `up` and `restart`).")

    @Option(help: "This element's name.") var name: String
    @Option(help: "The chain's directory.") var dir: String
    @Option(help: "span or mirror.") var mode: String
    @Option(help: "Every element's name, in chain order, comma-separated.") var elements: String
    @Option(help: "Every element's loopback port, in the same order.") var ports: String
    @Option(help: "Each drive's data capacity in bytes.") var capacity: Int
    @Option(help: "Heartbeat interval in milliseconds.") var heartbeatMs = 50
    @Flag(help: "Form a new chain with the others (a blank drive takes the initial registers).") var form = false

    func run() async throws {
        var logger = Logger(label: "ftctl.chain.element")
        logger.logLevel = .warning
        let names = elements.split(separator: ",").compactMap { NodeID(String($0)) }
        let portList = ports.split(separator: ",").compactMap { Int($0) }
        guard let node = NodeID(name), let index = names.firstIndex(of: node), names.count == portList.count,
            mode == "span" || mode == "mirror", capacity > 0
        else { throw CommandFailure("element \(name): inconsistent --elements, --ports, --mode or --capacity") }
        let directory = dir + "/\(name)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let unitCapacity = capacity + ElementDrive.headerSize
        let pool = try FileStoragePool(directories: [directory], unitCapacity: unitCapacity, budget: unitCapacity)
        let unit = try pool.units.first ?? pool.allocate()
        let drive = try ElementDrive(unit: unit)
        let register = ChainRegister.forming(
            mode: mode == "span" ? .span : .mirror, elements: names, capacity: capacity)
        var peers: [NodeID: SocketAddress] = [:]
        for (other, port) in zip(names, portList) where other != node {
            peers[other] = try SocketAddress(ipAddress: "127.0.0.1", port: port)
        }
        let transport = try await TCPTransport.start(
            configuration: .init(
                localNode: node, bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: portList[index]),
                peers: peers), logger: logger)
        let element = try ChainElement(
            node: node, drive: drive, initial: register, transport: transport,
            timing: ChainTiming(heartbeatInterval: .milliseconds(heartbeatMs)), logger: logger, forming: form
        ) { peer, address in
            if let parsed = HostPort(argument: address) { transport.setPeer(peer, address: parsed.address) }
        }
        if ProcessInfo.processInfo.environment["FT_CHAIN_TRACE"] == "1" {
            // Each step of catch-ups, links and membership, in this element's log.
            element.unsafeCore.trace = { line in
                print(
                    String(format: "[%.3f] ", Date().timeIntervalSince1970.truncatingRemainder(dividingBy: 1000)) + line
                )
                fflush(nil)
            }
        }
        print("element \(name) listening on port \(portList[index])")
        fflush(nil)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: element)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        await transport.close()
    }
}

/// A control connection to a running chain: a TCP transport named `node` that elements answer.
func chainControl(_ state: ChainState, node: NodeID) async throws -> (TCPTransport, String) {
    var logger = Logger(label: "ftctl.chain")
    logger.logLevel = .error
    let transport = try await TCPTransport.start(
        configuration: .init(
            localNode: node, bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: 0), peers: state.peers),
        logger: logger)
    return (transport, "127.0.0.1:\(transport.localAddress.port ?? 0)")
}

/// `ftctl chain status`.
struct ChainStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status", abstract: "Every element's drive-state and chain-state registers, one block each.")

    @Option(help: "The chain's directory.") var dir: String

    func run() async throws {
        let state = try ChainState.load(dir)
        let (transport, address) = try await chainControl(state, node: "ctl")
        for element in state.elements {
            try? await transport.send(ChainMessage.hello(hostEpoch: 0, address: address).encode(), to: element.name)
            try? await transport.send(ChainMessage.statusRequest.encode(), to: element.name)
        }
        var replies: [NodeID: String] = [:]
        let collector = Task {
            var found: [NodeID: String] = [:]
            for await envelope in transport.incoming {
                if case .statusReply(let text)? = try? ChainMessage.decode(envelope.message) {
                    found[envelope.from] = text
                    if found.count == state.elements.count { break }
                }
            }
            return found
        }
        let timer = Task {
            try? await Task.sleep(for: .seconds(2))
            collector.cancel()
        }
        replies = await collector.value
        timer.cancel()
        for element in state.elements {
            print(replies[element.name] ?? "element \(element.name): no answer (pid \(element.pid))")
            print("")
        }
        await transport.close()
    }
}

/// `ftctl chain signal`.
struct ChainSignalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "signal", abstract: "Raise an out-of-band signal on an element.")

    @Argument(help: "The element (e0, e1, …).") var element: String
    @Argument(help: "reset, hot-unplug, hot-plug, drive-fault, identify, link-down or link-up.") var kind: String
    @Option(help: "The chain's directory.") var dir: String

    static let kinds: [String: SignalKind] = [
        "reset": .reset, "hot-unplug": .driveRemoved, "hot-plug": .hotPlug, "drive-fault": .driveFault,
        "identify": .identify, "link-down": .linkDown, "link-up": .linkUp,
    ]

    func validate() throws {
        guard Self.kinds[kind] != nil else {
            throw ValidationError(
                "\(kind) is not a signal; one of: \(Self.kinds.keys.sorted().joined(separator: ", "))")
        }
    }

    func run() async throws {
        let state = try ChainState.load(dir)
        guard let target = state.elements.first(where: { $0.name.name == element }), let signal = Self.kinds[kind]
        else {
            throw CommandFailure("no element \(element) in \(dir)")
        }
        let (transport, _) = try await chainControl(state, node: "ctl")
        do {
            try await transport.send(ChainMessage.operatorSignal(signal).encode(), to: target.name)
        } catch {
            throw CommandFailure("cannot reach \(element): \(error)")
        }
        print("raised \(kind) on \(element)")
        await transport.close()
    }
}

/// `ftctl chain kill`.
struct ChainKill: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "kill", abstract: "SIGKILL an element's process.")

    @Argument(help: "The element.") var element: String
    @Option(help: "The chain's directory.") var dir: String

    func run() throws {
        let state = try ChainState.load(dir)
        guard let target = state.elements.first(where: { $0.name.name == element }) else {
            throw CommandFailure("no element \(element) in \(dir)")
        }
        guard Foundation.kill(target.pid, SIGKILL) == 0 else {
            throw CommandFailure("element \(element) (pid \(target.pid)) is not running")
        }
        print("killed \(element) (pid \(target.pid))")
    }
}

/// `ftctl chain restart`.
struct ChainRestart: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restart", abstract: "Start a killed element again over its drive; it rejoins the chain.")

    @Argument(help: "The element.") var element: String
    @Option(help: "The chain's directory.") var dir: String

    func run() throws {
        var state = try ChainState.load(dir)
        guard let index = state.elements.firstIndex(where: { $0.name.name == element }) else {
            throw CommandFailure("no element \(element) in \(dir)")
        }
        if isRunning(state.elements[index].pid) {
            throw CommandFailure("element \(element) (pid \(state.elements[index].pid)) is still running")
        }
        let log = dir + "/\(element).log"
        try? FileManager.default.removeItem(atPath: log)
        state.elements[index].pid = try spawnSelf(state.arguments(index, directory: dir), log: log)
        guard waitForLog(log, containing: "listening") else {
            throw CommandFailure("element \(element) did not start; see \(log)")
        }
        try state.save(dir)
        print("restarted \(element) (pid \(state.elements[index].pid))")
    }
}

/// Whether `pid` is alive and not a zombie (a killed element whose parent, `up`, is gone may
/// stay one where nothing reaps orphans).
func isRunning(_ pid: Int32) -> Bool {
    guard Foundation.kill(pid, 0) == 0 else { return false }
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
        let close = stat.lastIndex(of: ")")
    else { return true }
    return !stat[close...].hasPrefix(") Z")
}

/// `ftctl chain down`.
struct ChainDown: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "down", abstract: "Stop every element (SIGTERM).")

    @Option(help: "The chain's directory.") var dir: String

    func run() throws {
        let state = try ChainState.load(dir)
        for element in state.elements where Foundation.kill(element.pid, SIGTERM) == 0 {
            print("stopped \(element.name) (pid \(element.pid))")
        }
        try? FileManager.default.removeItem(atPath: ChainState.path(dir))
    }
}

/// `ftctl chain bench`.
struct ChainBench: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "bench", abstract: "Sequential 1 MiB writes and reads through the running chain as its host.")

    @Option(help: "The chain's directory.") var dir: String
    @Option(help: "MiB to write (and read back).") var mib = 256

    func validate() throws { try require("--mib", mib, in: 1...1 << 20) }

    func run() async throws {
        let state = try ChainState.load(dir)
        let (transport, address) = try await chainControl(state, node: "host")
        let host = ChainHost(
            node: "host", elements: state.elements.map(\.name), transport: transport,
            timing: ChainTiming(heartbeatInterval: .milliseconds(state.heartbeatMilliseconds)), address: address)
        let service = Task { try await host.run() }
        do {
            try await host.open()
        } catch {
            throw CommandFailure("the chain did not answer: \(error)")
        }
        let chunk = 1 << 20
        let total = min(mib, host.capacity / chunk)
        guard total > 0 else { throw CommandFailure("the volume holds less than 1 MiB") }
        let data = ByteBuffer(bytes: (0..<chunk).map { UInt8(truncatingIfNeeded: $0 &* 2_654_435_761 >> 13) })
        let clock = ContinuousClock()
        var inFlight: [Task<Void, any Error>] = []
        let writeStart = clock.now
        for index in 0..<total {
            inFlight.append(Task { try await host.write(data, at: index * chunk) })
            if inFlight.count >= 16 { try await inFlight.removeFirst().value }
        }
        for task in inFlight { try await task.value }
        try await host.synchronize()
        let writeTime = clock.now - writeStart
        let readStart = clock.now
        var readTasks: [Task<ByteBuffer, any Error>] = []
        for index in 0..<total {
            readTasks.append(Task { try await host.read(at: index * chunk, count: chunk) })
            if readTasks.count >= 16 {
                guard try await readTasks.removeFirst().value == data else {
                    throw CommandFailure("a read returned other bytes")
                }
            }
        }
        for task in readTasks {
            guard try await task.value == data else { throw CommandFailure("a read returned other bytes") }
        }
        let readTime = clock.now - readStart
        func rate(_ duration: Duration) -> String {
            String(
                format: "%.1f MiB/s",
                Double(total)
                    / max(1e-9, Double(duration.components.seconds) + Double(duration.components.attoseconds) * 1e-18))
        }
        print(
            "\(state.mode) chain of \(state.elements.count): wrote \(total) MiB at \(rate(writeTime)) (flushed), read at \(rate(readTime))"
        )
        service.cancel()
        await transport.close()
    }
}
