import DaisyChain
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import Logging
import NIOCore
import Testing

/// The runtimes on real threads: three elements and a host on loopback TCP, drive I/O on the
/// thread pool, the host's volume written from a thread of its own.
///
/// Heartbeats every 100 ms do not survive the parallel test step on a 2-core machine (its
/// cooperative pool starved the host's greeting for 10 s there), so the suite runs alone, in
/// CI's real-process step (`FT_CHAIN_PROCESSES=1 swift test --filter ChainLoopbackTests`). Not
/// under ThreadSanitizer: there, on the slower machine of this kind, the heartbeats did not
/// survive either (see `.ci/run`).
@Suite(
    "Daisy chain on loopback TCP, real threads", .timeLimit(.minutes(10)),
    .enabled(
        if: ProcessInfo.processInfo.environment["FT_CHAIN_PROCESSES"] != nil,
        "runs alone in CI's real-process and ThreadSanitizer steps; set FT_CHAIN_PROCESSES=1"))
struct ChainLoopbackTests {
    static let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    /// A TCP transport on loopback for each of `nodes`, every one knowing the others.
    static func loopbackTransports(for nodes: [NodeID]) async throws -> [NodeID: TCPTransport] {
        let any = try SocketAddress(ipAddress: "127.0.0.1", port: 0)
        var transports: [NodeID: TCPTransport] = [:]
        for node in nodes {
            transports[node] = try await TCPTransport.start(configuration: .init(localNode: node, bindAddress: any))
        }
        for (node, transport) in transports {
            for (peer, other) in transports where peer != node { transport.setPeer(peer, address: other.localAddress) }
        }
        return transports
    }

    @Test("a mirror chain takes writes through its volume, loses an element, and reads back every write")
    func mirrorChainOnLoopback() async throws {
        let nodes: [NodeID] = ["e0", "e1", "e2"]
        let capacity = 64 * 4096
        let register = ChainRegister.forming(mode: .mirror, elements: nodes, capacity: capacity)
        let transports = try await Self.loopbackTransports(for: nodes + ["host"])
        let timing = ChainTiming(heartbeatInterval: .milliseconds(100))
        var tasks: [NodeID: Task<Void, any Error>] = [:]
        for (index, node) in nodes.enumerated() {
            guard let transport = transports[node] else { continue }
            let unit = MemoryStorageUnit(id: UnitID(UInt64(index + 1)), capacity: ElementDrive.headerSize + capacity)
            let element = try ChainElement(
                node: node, drive: try ElementDrive(unit: unit), initial: register, transport: transport,
                timing: timing, logger: Self.quiet, blockingIO: .threadPool, forming: true)
            tasks[node] = Task { try await element.run() }
        }
        guard let hostTransport = transports["host"] else { return }
        let host = ChainHost(
            node: "host", elements: nodes, transport: hostTransport, timing: timing, logger: Self.quiet)
        let hostTask = Task { try await host.run() }
        try await host.open(timeout: .seconds(60))
        let volume = ChainVolume(host: host)
        #expect(volume.capacity == capacity)

        @Sendable func block(_ index: Int, _ round: Int) -> [UInt8] {
            (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index &* 7 &+ round) }
        }
        // The volume is a synchronous StorageUnit: drive it from a thread of its own.
        func onThread(_ body: @escaping @Sendable () throws -> Void) async throws {
            try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
                Thread { continuation.resume(with: Result { try body() }) }.start()
            }
        }
        try await onThread {
            for index in 0..<64 { try volume.write(block(index, 1), at: index * 4096) }
            try volume.synchronize()
        }
        // The middle element goes; the chain re-links and takes the second round.
        tasks["e1"]?.cancel()
        await transports["e1"]?.close()
        try await onThread {
            for index in stride(from: 0, to: 64, by: 2) { try volume.write(block(index, 2), at: index * 4096) }
            try volume.synchronize()
        }
        try await onThread {
            for index in 0..<64 {
                let expected = block(index, index % 2 == 0 ? 2 : 1)
                let read = try volume.read(at: index * 4096, count: 4096)
                guard read == expected else { throw ChainError(.malformed, detail: "block \(index) differs") }
            }
        }
        #expect(host.register?.member("e1")?.linked == false)
        hostTask.cancel()
        for task in tasks.values { task.cancel() }
        for transport in transports.values { await transport.close() }
    }
}

extension ChainLoopbackTests {
    @Test("a stopped tail that missed 1% of the volume rejoins by copying about that, not the volume")
    func rejoinCopiesWhatWasMissed() async throws {
        let nodes: [NodeID] = ["e0", "e1", "e2"]
        let blocks = 4096
        let capacity = blocks * 4096
        let register = ChainRegister.forming(mode: .mirror, elements: nodes, capacity: capacity)
        var transports = try await Self.loopbackTransports(for: nodes + ["host"])
        let addresses = transports.mapValues(\.localAddress)
        let timing = ChainTiming(heartbeatInterval: .milliseconds(100))
        let units = nodes.indices.map {
            MemoryStorageUnit(id: UnitID(UInt64($0 + 1)), capacity: ElementDrive.headerSize + capacity)
        }
        var tasks: [NodeID: Task<Void, any Error>] = [:]
        var elements: [NodeID: ChainElement] = [:]
        func start(_ index: Int, forming: Bool) throws {
            let node = nodes[index]
            guard let transport = transports[node] else { return }
            let element = try ChainElement(
                node: node, drive: try ElementDrive(unit: units[index]), initial: register, transport: transport,
                timing: timing, logger: Self.quiet, forming: forming)
            elements[node] = element
            if ProcessInfo.processInfo.environment["FT_CHAIN_TRACE"] == "1" {
                element.unsafeCore.trace = { print("\(node) \($0)") }
            }
            tasks[node] = Task { try await element.run() }
        }
        for index in nodes.indices { try start(index, forming: true) }
        guard let hostTransport = transports["host"] else { return }
        let host = ChainHost(
            node: "host", elements: nodes, transport: hostTransport, timing: timing, logger: Self.quiet)
        let hostTask = Task { try await host.run() }
        try await host.open(timeout: .seconds(60))
        let data = ByteBuffer(repeating: 3, count: 1 << 20)
        for offset in stride(from: 0, to: capacity, by: 1 << 20) { try await host.write(data, at: offset) }
        try await host.synchronize()
        // The tail stops; 1% of the blocks change; it starts again over its drive.
        tasks.removeValue(forKey: "e2")?.cancel()
        await transports["e2"]?.close()
        let missed = blocks / 100
        for index in 0..<missed { try await host.write(ByteBuffer(repeating: 9, count: 4096), at: index * 100 * 4096) }
        try await host.synchronize()
        if ProcessInfo.processInfo.environment["FT_CHAIN_TRACE"] == "1" {
            let saved = try ElementDrive(unit: units[2]).load()
            print("e2 drive holds applied \(saved.map { String($0.applied) } ?? "nothing")")
        }
        guard let address = addresses["e2"] else { return }
        let restarted = try await TCPTransport.start(configuration: .init(localNode: "e2", bindAddress: address))
        for (peer, other) in addresses where peer != "e2" { restarted.setPeer(peer, address: other) }
        transports["e2"] = restarted
        try start(2, forming: false)
        var copied = -1
        let clock = ContinuousClock()
        let deadline = clock.now + .seconds(60)
        while clock.now < deadline, let element = elements["e2"] {
            let (serves, bytes) = await element.inspect { ($0.serves, $0.counters.fillBytesReceived) }
            if serves {
                copied = bytes
                break
            }
            try await Task.sleep(for: .milliseconds(20))
        }
        #expect(copied >= 0, "e2 did not rejoin")
        #expect(copied <= 2 * missed * 4096, "the catch-up copied \(copied) bytes for \(missed) missed blocks")
        hostTask.cancel()
        for task in tasks.values { task.cancel() }
        for transport in transports.values { await transport.close() }
    }
}
