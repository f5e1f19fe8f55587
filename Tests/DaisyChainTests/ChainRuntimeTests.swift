import DaisyChain
import DeterministicSimulation
import FaultToleranceCore
import Logging
import NIOCore
import Testing

/// A quiet chain in virtual time: the shipped runtimes over a reliable simulated network.
final class QuietChain: @unchecked Sendable {
    static let silent = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
    let world: AsyncSimulation
    let nodes: [NodeID]
    let units: [MemoryStorageUnit]
    var elements: [NodeID: ChainElement] = [:]
    var tasks: [Task<Void, any Error>] = []
    let register: ChainRegister
    let timing = ChainTiming(heartbeatInterval: .milliseconds(100))
    var host: ChainHost!

    init(seed: UInt64 = 1, count: Int, mode: ChainMode, blocks: Int = 16) {
        world = AsyncSimulation(
            seed: seed, linkConditions: LinkConditions(delay: .milliseconds(1) ... .milliseconds(2)))
        nodes = (0..<count).map { NodeID("e\($0)") ?? "e" }
        units = (0..<count).map {
            MemoryStorageUnit(id: UnitID(UInt64($0 + 1)), capacity: ElementDrive.headerSize + blocks * 4096)
        }
        register = ChainRegister.forming(mode: mode, elements: nodes, capacity: blocks * 4096)
    }

    func start(_ index: Int, forming: Bool = false) throws {
        let node = nodes[index]
        world.network.restart(node)
        let element = try ChainElement(
            node: node, drive: try ElementDrive(unit: units[index]), initial: register,
            transport: world.network.transport(for: node), clock: world.clock, timing: timing,
            incarnation: UInt64(world.simulation.now.nanoseconds / 1000) + 1, logger: Self.silent, blockingIO: .inline,
            forming: forming)
        elements[node] = element
        tasks.append(world.spawn { try await element.run() })
    }

    func open() async throws {
        for index in nodes.indices { try start(index, forming: true) }
        host = ChainHost(
            node: "host", elements: nodes, transport: world.network.transport(for: "host"), clock: world.clock,
            timing: timing, epoch: 1, logger: Self.silent)
        guard let host else { return }
        tasks.append(world.spawn { try await host.run() })
        try await host.open()
    }

    func stop() { for task in tasks { task.cancel() } }
}

@Suite struct ChainRuntimeTests {
    @Test(arguments: [ChainMode.span, .mirror])
    func aWriteOnAQuietChainIsReadBackFromEveryHolder(mode: ChainMode) async throws {
        let chain = QuietChain(count: 3, mode: mode)
        try await chain.world.run(timeLimit: .seconds(30)) {
            try await chain.open()
            let bytes = ByteBuffer(bytes: (0..<8192).map { UInt8(truncatingIfNeeded: $0 * 7) })
            // 16 blocks per element: offset 60 KiB crosses from e0 into e1 in span mode.
            let offset = mode == .span ? 60 << 10 : 40 << 10
            try await chain.host.write(bytes, at: offset)
            let back = try await chain.host.read(at: offset, count: 8192)
            #expect(back == bytes)
            try await chain.host.synchronize()
            chain.stop()
        }
    }
}

extension ChainRuntimeTests {
    @Test func aRestartedSpanElementRelinksItself() async throws {
        let chain = QuietChain(count: 3, mode: .span)
        try await chain.world.run(timeLimit: .seconds(30)) {
            try await chain.open()
            chain.tasks[1].cancel()
            chain.world.network.crash("e1")
            try await chain.world.clock.sleep(for: .seconds(1))
            let cut = await chain.elements["e0"]!.inspect { $0.chain.member("e1")?.linked }
            #expect(cut == false)
            try chain.start(1)
            try await chain.world.clock.sleep(for: .seconds(1))
            let status = await chain.elements["e1"]!.inspect { $0.status }
            print(status)
            let linked = await chain.elements["e0"]!.inspect { $0.chain.member("e1")?.linked }
            #expect(linked == true)
            chain.stop()
        }
    }
}
