import DaisyChain
import DeterministicSimulation
import FaultToleranceCore
import Foundation
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
    var elementTasks: [NodeID: Task<Void, any Error>] = [:]
    let register: ChainRegister
    let timing = ChainTiming(heartbeatInterval: .milliseconds(100))
    var host: ChainHost!

    /// `formed` elements (default: all) form the chain; the others can join it later.
    init(seed: UInt64 = 1, count: Int, mode: ChainMode, blocks: Int = 16, formed: Int? = nil) {
        world = AsyncSimulation(
            seed: seed, linkConditions: LinkConditions(delay: .milliseconds(1) ... .milliseconds(2)))
        nodes = (0..<count).map { NodeID("e\($0)") ?? "e" }
        units = (0..<count).map {
            MemoryStorageUnit(id: UnitID(UInt64($0 + 1)), capacity: ElementDrive.headerSize + blocks * 4096)
        }
        register = ChainRegister.forming(
            mode: mode, elements: Array(nodes.prefix(formed ?? count)), capacity: blocks * 4096)
    }

    func start(_ index: Int, forming: Bool = false, initial: ChainRegister? = nil) throws {
        let node = nodes[index]
        world.network.restart(node)
        let element = try ChainElement(
            node: node, drive: try ElementDrive(unit: units[index]), initial: initial ?? register,
            transport: world.network.transport(for: node), clock: world.clock, timing: timing,
            incarnation: UInt64(world.simulation.now.nanoseconds / 1000) + 1, logger: Self.silent, blockingIO: .inline,
            forming: forming)
        if ProcessInfo.processInfo.environment["FT_CHAIN_TRACE"] != nil {
            let world = self.world
            element.unsafeCore.trace = { line in print("[\(world.simulation.now)] \(node) \(line)") }
        }
        elements[node] = element
        let task = world.spawn { try await element.run() }
        elementTasks[node] = task
        tasks.append(task)
    }

    /// Stops element `index` as a crash would.
    func crash(_ index: Int) {
        elementTasks[nodes[index]]?.cancel()
        world.network.crash(nodes[index])
    }

    func open() async throws {
        let formed = register.members.map(\.node)
        for index in nodes.indices where formed.contains(nodes[index]) { try start(index, forming: true) }
        host = ChainHost(
            node: "host", elements: formed, transport: world.network.transport(for: "host"), clock: world.clock,
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

extension ChainRuntimeTests {
    /// The register a new element starts with: the chain's first, and itself, unlinked.
    func registerGiven(to node: NodeID, by chain: QuietChain, capacity: Int) -> ChainRegister {
        var given = chain.register
        given.members.append(
            ChainMember(
                node: node, linked: false, drive: DriveRegister(driveID: 3, capacity: UInt64(capacity), state: .ready)))
        return given
    }

    /// Moves the chain on two generations or more (e1 crashes and comes back twice), so a new
    /// element's own proposal, made from the register it was given, loses.
    func moveOn(_ chain: QuietChain) async throws {
        for _ in 0..<2 {
            chain.crash(1)
            try await chain.world.clock.sleep(for: .seconds(1))
            try chain.start(1)
            try await chain.world.clock.sleep(for: .seconds(1))
        }
        #expect((chain.host.register?.generation.epoch ?? 0) >= 3)
    }

    @Test(
        "a new element at the tail of a span chain extends the volume, even when the chain moved on since its register")
    func aNewSpanElementExtendsTheVolume() async throws {
        let chain = QuietChain(count: 3, mode: .span, formed: 2)
        let block = 16 * 4096
        try await chain.world.run(timeLimit: .seconds(30)) {
            try await chain.open()
            #expect(chain.host.capacity == 2 * block)
            try await moveOn(chain)
            try chain.start(2, initial: registerGiven(to: "e2", by: chain, capacity: block))
            try await chain.world.clock.sleep(for: .seconds(2))
            #expect(chain.host.capacity == 3 * block)
            let bytes = ByteBuffer(bytes: (0..<8192).map { UInt8(truncatingIfNeeded: $0 * 13) })
            // Crosses from e1's range into the new element's.
            try await chain.host.write(bytes, at: 2 * block - 4096)
            #expect(try await chain.host.read(at: 2 * block - 4096, count: 8192) == bytes)
            let held = await chain.elements["e2"]?.inspect { $0.counters.writesApplied }
            #expect(held == 1)
            chain.stop()
        }
    }

    @Test("a new element at the tail of a mirror chain copies what the chain holds, then links and takes writes")
    func aNewMirrorElementCatchesUpBeforeItLinks() async throws {
        let chain = QuietChain(count: 3, mode: .mirror, formed: 2)
        let block = 16 * 4096
        try await chain.world.run(timeLimit: .seconds(30)) {
            try await chain.open()
            let before = ByteBuffer(bytes: (0..<8192).map { UInt8(truncatingIfNeeded: $0 * 7 + 1) })
            try await chain.host.write(before, at: 4096)
            try await moveOn(chain)
            try chain.start(2, initial: registerGiven(to: "e2", by: chain, capacity: block))
            try await chain.world.clock.sleep(for: .seconds(3))
            #expect(chain.host.register?.linked.last == "e2")
            let after = ByteBuffer(bytes: (0..<4096).map { UInt8(truncatingIfNeeded: $0 * 3 + 2) })
            try await chain.host.write(after, at: 32768)
            // Both writes are on the new element's own drive: the one before it joined by its
            // catch-up, the one after down the chain.
            let drive = try ElementDrive(unit: chain.units[2])
            var copy = [UInt8](repeating: 0, count: 8192)
            try copy.withUnsafeMutableBytes { try drive.read(into: $0, at: 4096) }
            #expect(copy == Array(before.readableBytesView))
            copy = [UInt8](repeating: 0, count: 4096)
            try copy.withUnsafeMutableBytes { try drive.read(into: $0, at: 32768) }
            #expect(copy == Array(after.readableBytesView))
            chain.stop()
        }
    }
}

extension ChainRuntimeTests {
    @Test(
        "an operator's link-down holds the element out of the chain until link-up (it used to re-link itself at once)",
        arguments: [ChainMode.span, .mirror])
    func aLinkDownHoldsUntilLinkUp(mode: ChainMode) async throws {
        let chain = QuietChain(count: 3, mode: mode)
        try await chain.world.run(timeLimit: .seconds(60)) {
            try await chain.open()
            let block = ByteBuffer(repeating: 5, count: 4096)
            // Span: 16 blocks per element, so block 20 is e1's (a mirror volume is 16 blocks).
            let offset = (mode == .span ? 20 : 8) * 4096
            try await chain.host.write(block, at: offset)
            chain.elements["e1"]?.raise(.linkDown)
            // Many detection timeouts and heartbeat rounds: nothing brings it back by itself.
            try await chain.world.clock.sleep(for: .seconds(3))
            for node in ["e0", "e1", "e2"] as [NodeID] {
                let linked = await chain.elements[node]?.inspect { $0.chain.member("e1")?.linked }
                #expect(linked == false, "\(node) sees e1 linked")
            }
            #expect(await chain.elements["e1"]?.inspect { $0.heldDown } == true)
            if mode == .span {
                // Its range is unavailable, with an error naming it, never zeros.
                do throws(ChainError) {
                    _ = try await chain.host.read(at: offset, count: 4096)
                    Issue.record("a read of a held-down element's range succeeded")
                } catch {
                    #expect(error.element == "e1")
                }
            } else {
                // The other two carry on.
                try await chain.host.write(ByteBuffer(repeating: 6, count: 4096), at: offset)
            }
            chain.elements["e1"]?.raise(.linkUp)
            try await chain.world.clock.sleep(for: .seconds(3))
            let back = await chain.elements["e0"]?.inspect { $0.chain.member("e1")?.linked }
            #expect(back == true)
            #expect(await chain.elements["e1"]?.inspect { ($0.heldDown, $0.serves) } ?? (true, false) == (false, true))
            let expected = ByteBuffer(repeating: mode == .span ? 5 : 6, count: 4096)
            #expect(try await chain.host.read(at: offset, count: 4096) == expected)
            chain.stop()
        }
    }
}
