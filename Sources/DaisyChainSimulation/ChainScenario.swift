public import DaisyChain
public import DeterministicSimulation
import FaultToleranceCore
import Foundation
import Logging
import NIOCore

/// A randomized run of the shipped chain runtimes (``DaisyChain/ChainElement`` on every
/// element, ``DaisyChain/ChainHost`` on the host) on a simulated network, in virtual time.
///
/// Each seed builds a chain of 1–8 elements in span or mirror mode, each over a memory drive
/// that can be made to fail, and a host that writes whole blocks (each stamped with the write's
/// number), reads them back and flushes, one operation at a time. For three seconds the links
/// lose, duplicate and reorder messages, links between elements are cut and healed, elements
/// crash and restart (keeping their drives, as after SIGKILL), drives fail and are reset, and
/// operators raise signals (an identify, or a link-down that holds an element out until its
/// link-up). Then every element comes back, the network heals, and the run goes on quietly
/// for five seconds.
///
/// Invariants:
/// - `reads-last-acknowledged`: every read returns, per block, the last acknowledged write or a
///   write that was in flight or failed since; never older data, never zeros for written data.
///   A failed read in span mode names the element holding the range.
/// - `acknowledged-on-every-holder`: at the end, every linked element holds, per block it should
///   hold (mirror: all; span: its range), the last acknowledged write.
/// - `registers-converge`: at the end every live element holds the same chain register, and in
///   the quiet phase the registers were equal within 2·n message delays of the last signal.
/// - `one-head-per-generation`: at no time do two elements believe they are the head of the
///   same generation.
/// - `quiet-progress`: in the quiet phase, every operation completes.
/// - `quiet-latency`: from two seconds into the quiet phase, no operation waits three.
public struct ChainScenario: Sendable {
    /// A planted bug, or `nil` for the shipped code.
    public var bug: ElementCore.Bug?

    /// Creates a scenario.
    public init(bug: ElementCore.Bug? = nil) { self.bug = bug }

    /// Runs one seed.
    public func run(seed: UInt64) async -> SimulationReport {
        let world = AsyncSimulation(seed: seed, linkConditions: ChainRun.faulty)
        let run = ChainRun(world: world, bug: bug)
        do {
            try await world.run(timeLimit: .seconds(60), maximumJobs: 20_000_000) { try await run.run() }
        } catch {
            run.fail("ends", "\(error)")
        }
        return run.report(seed: seed)
    }
}

/// A drive that fails writes and flushes while `failing` is set.
final class FaultyUnit: StorageUnit, @unchecked Sendable {
    let inner: MemoryStorageUnit
    var failing = false
    init(_ inner: MemoryStorageUnit) { self.inner = inner }
    var id: UnitID { inner.id }
    var capacity: Int { inner.capacity }
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        try inner.read(into: buffer, at: offset)
    }
    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        if failing { throw StorageError(.ioFailed, unit: id, offset: offset, detail: "injected drive fault") }
        try inner.write(bytes, at: offset)
    }
    func synchronize() throws(StorageError) {
        if failing { throw StorageError(.synchronizeFailed, unit: id, detail: "injected drive fault") }
    }
    func discard(_ range: Range<Int>) throws(StorageError) { try inner.discard(range) }
}

/// One simulated run; lives on the simulation's driver thread, hence unchecked Sendable.
final class ChainRun: @unchecked Sendable {
    static let faulty = LinkConditions(
        lossProbability: 0.02, duplicateProbability: 0.02, reorderProbability: 0.03,
        delay: .milliseconds(1) ... .milliseconds(5))
    static let quiet = LinkConditions(delay: .milliseconds(1) ... .milliseconds(5))
    static let maximumDelay: Duration = .milliseconds(5)
    static let silent = Logger(label: "ft.chain.simulation", factory: { _ in SwiftLogNoOpLogHandler() })
    static let hostNode: NodeID = "host"
    static let blockSize = ElementCore.blockSize

    let world: AsyncSimulation
    let bug: ElementCore.Bug?
    let timing = ChainTiming(heartbeatInterval: .milliseconds(200))
    var violation: InvariantViolation?
    var checks = 0
    var operations = 0

    var nodes: [NodeID] = []
    var units: [NodeID: FaultyUnit] = [:]
    var elements: [NodeID: ChainElement] = [:]
    var tasks: [NodeID: Task<Void, any Error>] = [:]
    var initial: ChainRegister?
    var mode: ChainMode = .span
    var lastRaise: Instant = .zero
    var quietSince: Instant?
    /// Elements an operator's link-down holds out (a crash forgets the hold, as the element does).
    var heldDown: Set<NodeID> = []
    var convergedAt: Instant?
    var heads: [ChainGeneration: NodeID] = [:]
    /// Each live element's register as last checked, and its digest.
    var seen: [NodeID: ChainRegister] = [:]
    var digests: [NodeID: UInt64] = [:]
    var host: ChainHost?
    var operationStarted: Instant?
    var operationName = ""
    var failedAt: Instant?

    // The model: per block, the last acknowledged write and writes that may have landed since.
    var acknowledged: [Int: UInt64] = [:]
    var uncertain: [Int: Set<UInt64>] = [:]
    var nextWrite: UInt64 = 1

    init(world: AsyncSimulation, bug: ElementCore.Bug?) {
        self.world = world
        self.bug = bug
    }

    var random: SimulationRandom {
        get { world.simulation.random }
        set { world.simulation.random = newValue }
    }

    func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(random.next() % UInt64(range.count))
    }

    func fail(_ invariant: String, _ detail: String) {
        guard violation == nil else { return }
        violation = InvariantViolation(invariant: invariant, detail: detail, at: world.simulation.now)
    }

    func report(seed: UInt64) -> SimulationReport {
        SimulationReport(
            seed: seed, faults: world.simulation.faults, invariantChecks: checks, operations: operations,
            virtualTime: world.simulation.now.nanoseconds, events: world.simulation.eventsProcessed,
            violation: violation, traceHash: world.simulation.traceHash)
    }

    // MARK: Setup

    func run() async throws {
        let count = int(1...8)
        mode = random.chance(0.5) ? .mirror : .span
        nodes = (0..<count).map { NodeID("e\($0)") ?? "e" }
        var members: [ChainMember] = []
        for (index, node) in nodes.enumerated() {
            let blocks = mode == .mirror ? 32 : int(8...24)
            let unit = FaultyUnit(
                MemoryStorageUnit(
                    id: UnitID(UInt64(index + 1)), capacity: ElementDrive.headerSize + blocks * Self.blockSize))
            units[node] = unit
            members.append(
                ChainMember(
                    node: node, linked: true,
                    drive: DriveRegister(
                        driveID: UInt64(index + 1), capacity: UInt64(blocks * Self.blockSize), state: .ready)))
        }
        initial = ChainRegister(
            mode: mode, generation: ChainGeneration(epoch: 1, proposer: "init"), members: members, host: Self.hostNode)
        for node in nodes { try start(node, forming: true) }
        world.network.restart(Self.hostNode)
        let host = ChainHost(
            node: Self.hostNode, elements: nodes, transport: world.network.transport(for: Self.hostNode),
            clock: world.clock, timing: timing, epoch: 1, logger: Self.silent)
        self.host = host
        if Self.tracing {
            // Every signal the network delivers (one lost or doubled shows as such).
            let world = self.world
            world.network.deliveryObserver = { envelope, to in
                if envelope.message.type == ChainMessage.MessageType.signal,
                    case .signal(let signal)? = try? ChainMessage.decode(envelope.message)
                {
                    let what = "\(signal.kind) \(signal.register.generation)"
                    print("[\(world.simulation.now)] net \(envelope.from)->\(to) \(what)")
                }
            }
        }
        let hostTask = world.spawn { try await host.run() }
        let watcher = world.spawn { [unowned self] in await self.watch() }
        do {
            try await host.open(timeout: .seconds(5))
        } catch {
            fail(
                "quiet-progress",
                "the host could not open the chain: \(error)\n\(host.unsafeCore.debugState)\n" + statusDump())
            return
        }
        // Faults for three seconds, while the host works.
        let faultEnd = world.simulation.now + .seconds(3)
        let chaos = world.spawn { [unowned self] in await self.chaos(until: faultEnd) }
        await workload(host: host, until: faultEnd, quiet: false)
        _ = await chaos.value
        // Heal everything and let it settle.
        world.network.heal()
        world.network.defaultConditions = Self.quiet
        for node in nodes {
            for other in nodes + [Self.hostNode] where other != node {
                world.network.setConditions(Self.quiet, from: node, to: other)
                world.network.setConditions(Self.quiet, from: other, to: node)
            }
        }
        for node in nodes where elements[node] == nil { try start(node) }
        for node in nodes where units[node]?.failing == true {
            units[node]?.failing = false
            elements[node]?.raise(.reset)
        }
        quietSince = world.simulation.now
        let quietEnd = world.simulation.now + .seconds(5)
        await workload(host: host, until: quietEnd, quiet: true)
        if violation == nil { try await settleAndCheck(host: host) }
        watcher.cancel()
        for node in nodes { tasks[node]?.cancel() }
        hostTask.cancel()
    }

    /// `FT_CHAIN_TRACE=1` prints each element's catch-ups, writes and register changes.
    static let tracing = ProcessInfo.processInfo.environment["FT_CHAIN_TRACE"] == "1"

    func start(_ node: NodeID, forming: Bool = false) throws {
        guard let unit = units[node], let initial else { return }
        world.network.restart(node)
        let element = try ChainElement(
            node: node, drive: try ElementDrive(unit: unit), initial: initial,
            transport: world.network.transport(for: node), clock: world.clock, timing: timing,
            incarnation: UInt64(world.simulation.now.nanoseconds) / 1000 + 1, logger: Self.silent,
            blockingIO: .inline, forming: forming, bug: bug)
        element.observeSignals { [unowned self] _, at in lastRaise = max(lastRaise, at) }
        if Self.tracing {
            let world = self.world
            element.unsafeCore.trace = { line in print("[\(world.simulation.now)] \(node) \(line)") }
            print("[\(world.simulation.now)] \(node) starts")
        }
        element.unsafeCore.afterEvent = { [unowned self] in registersMayHaveChanged(node) }
        elements[node] = element
        digests[node] = element.unsafeCore.chain.digest
        checkRegisters()
        tasks[node] = world.spawn { try await element.run() }
    }

    func crash(_ node: NodeID) {
        tasks.removeValue(forKey: node)?.cancel()
        elements[node] = nil
        digests[node] = nil
        heldDown.remove(node)
        checkRegisters()
        world.network.crash(node)
        world.simulation.faults.nodeCrashes += 1
    }

    /// After each event of `node`'s: if its register changed, the head and convergence checks.
    func registersMayHaveChanged(_ node: NodeID) {
        guard let core = elements[node]?.unsafeCore else { return }
        let register = core.chain
        // Unchanged, and no signal since the registers were last found equal: nothing to do.
        if seen[node] == register, convergedAt.map({ $0 >= lastRaise }) ?? true { return }
        seen[node] = register
        digests[node] = register.digest
        checkRegisters()
    }

    /// `one-head-per-generation` over the live elements, and when their registers last became equal.
    func checkRegisters() {
        for (node, element) in elements {
            let core = element.unsafeCore
            guard core.chain.head == node, core.machine.isLinked else { continue }
            let generation = core.chain.generation
            if let other = heads[generation], other != node {
                fail(
                    "one-head-per-generation",
                    "\(node) and \(other) both believe they are the head of generation \(generation)")
            }
            heads[generation] = node
        }
        if Set(digests.values).count <= 1 {
            if convergedAt == nil || (convergedAt ?? .zero) < lastRaise { convergedAt = world.simulation.now }
        } else {
            convergedAt = nil
        }
    }

    // MARK: Faults

    func chaos(until end: Instant) async {
        while world.simulation.now < end {
            try? await world.clock.sleep(for: random.duration(in: .milliseconds(50) ... .milliseconds(400)))
            if world.simulation.now >= end { break }
            // Mirror mode keeps one element serving (the chain cannot re-form from nothing).
            let live = nodes.filter { node in
                guard let element = elements[node], units[node]?.failing == false else { return false }
                return mode == .span || element.unsafeCore.serves
            }
            guard let node = nodes.randomElement(using: &random) else { continue }
            switch int(0...9) {
            case 0...2:
                // Crash, come back later; mirror mode keeps one element healthy.
                guard elements[node] != nil, mode == .span || live.count > 1 || !live.contains(node) else { continue }
                crash(node)
                let delay = random.duration(in: .milliseconds(100) ... .milliseconds(1500))
                world.spawn { [unowned self] in
                    try? await world.clock.sleep(for: delay)
                    if elements[node] == nil, world.simulation.now < end {
                        try? start(node)
                        world.simulation.faults.nodeRestarts += 1
                    }
                }
            case 3...4:
                guard let other = nodes.randomElement(using: &random), other != node else { continue }
                world.network.cut(from: node, to: other)
                world.network.cut(from: other, to: node)
                world.simulation.faults.partitions += 1
                let delay = random.duration(in: .milliseconds(50) ... .milliseconds(800))
                world.spawn { [unowned self] in
                    try? await world.clock.sleep(for: delay)
                    world.network.restore(from: node, to: other)
                    world.network.restore(from: other, to: node)
                }
            case 5:
                guard let unit = units[node], !unit.failing, mode == .span || live.count > 1 else { continue }
                unit.failing = true
                world.simulation.faults.synchronizeFailures += 1
                let delay = random.duration(in: .milliseconds(100) ... .milliseconds(1000))
                world.spawn { [unowned self] in
                    try? await world.clock.sleep(for: delay)
                    unit.failing = false
                    elements[node]?.raise(.reset)
                }
            case 6:
                elements[node]?.raise(.identify)
            case 7:
                // An operator's link-down, and its link-up later: the element stays out between.
                guard elements[node] != nil, mode == .span || live.count > 1 || !live.contains(node) else { continue }
                elements[node]?.raise(.linkDown)
                heldDown.insert(node)
                world.simulation.faults.linksHeldDown += 1
                let delay = random.duration(in: .milliseconds(50) ... .milliseconds(800))
                world.spawn { [unowned self] in
                    try? await world.clock.sleep(for: delay)
                    guard world.simulation.now < end, heldDown.remove(node) != nil else { return }
                    elements[node]?.raise(.linkUp)
                }
            default:
                continue
            }
        }
        // The faults end: every element comes back (an operation may be waiting for it: a
        // mirror chain with elements held down may link too few to commit).
        for node in nodes where elements[node] == nil { try? start(node) }
        for node in heldDown.sorted() { elements[node]?.raise(.linkUp) }
        heldDown.removeAll()
        for node in nodes where units[node]?.failing == true {
            units[node]?.failing = false
            elements[node]?.raise(.reset)
        }
    }

    // MARK: Workload

    func pattern(write: UInt64, block: Int) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: Self.blockSize)
        for index in 0..<8 { bytes[index] = UInt8(truncatingIfNeeded: write >> (8 * index)) }
        for index in 8..<16 { bytes[index] = UInt8(truncatingIfNeeded: UInt64(block) >> (8 * (index - 8))) }
        for index in 16..<Self.blockSize { bytes[index] = UInt8(truncatingIfNeeded: write &* 31 &+ UInt64(index)) }
        return bytes
    }

    func decode(_ bytes: some Collection<UInt8>) -> UInt64 {
        var value: UInt64 = 0
        for (index, byte) in bytes.prefix(8).enumerated() { value |= UInt64(byte) << (8 * index) }
        return value
    }

    func workload(host: ChainHost, until end: Instant, quiet: Bool) async {
        let blocks = host.capacity / Self.blockSize
        guard blocks > 0 else { return }
        while world.simulation.now < end, violation == nil {
            if failedAt != nil {
                // A failed operation took no time: wait before the next, as a caller would.
                failedAt = nil
                try? await world.clock.sleep(for: .milliseconds(20))
            }
            let roll = int(0...9)
            let first = int(0...(blocks - 1))
            let count = min(int(1...3), blocks - first)
            operationStarted = world.simulation.now
            operationName = "\(roll < 6 ? "write" : roll < 9 ? "read" : "flush") of blocks \(first)..<\(first + count)"
            defer { operationStarted = nil }
            if roll < 6 {
                let write = nextWrite
                nextWrite += 1
                var data = ByteBuffer()
                for block in first..<(first + count) { data.writeBytes(pattern(write: write, block: block)) }
                for block in first..<(first + count) { uncertain[block, default: []].insert(write) }
                do {
                    try await host.write(data, at: first * Self.blockSize)
                    operations += 1
                    for block in first..<(first + count) {
                        acknowledged[block] = write
                        uncertain[block] = nil
                    }
                } catch {
                    if !checkFailure(error, quiet: quiet, what: "write of blocks \(first)..<\(first + count)") {
                        return
                    }
                }
            } else if roll < 9 {
                do {
                    let data = try await host.read(at: first * Self.blockSize, count: count * Self.blockSize)
                    operations += 1
                    checks += 1
                    let bytes = Array(data.readableBytesView)
                    for index in 0..<count {
                        let block = first + index
                        let slice = bytes[(index * Self.blockSize)..<((index + 1) * Self.blockSize)]
                        let found = decode(slice)
                        guard accepts(block: block, found: found), Array(slice) == expectedBytes(found, block) else {
                            fail(
                                "reads-last-acknowledged",
                                "\(mode) chain of \(nodes.count): block \(block) read as write \(found), acknowledged "
                                    + "\(acknowledged[block] ?? 0), in flight \(uncertain[block]?.sorted() ?? [])\n"
                                    + (host.unsafeCore.debugState + "\n" + statusDump() + "\n" + blockDump(block)))
                            return
                        }
                        // What a read saw is what later reads must see at least.
                        if found != (acknowledged[block] ?? 0) {
                            acknowledged[block] = found
                            uncertain[block]?.remove(found)
                        }
                    }
                } catch {
                    if !checkFailure(error, quiet: quiet, what: "read of blocks \(first)..<\(first + count)") { return }
                }
            } else {
                do {
                    try await host.synchronize()
                    operations += 1
                } catch {
                    if !checkFailure(error, quiet: quiet, what: "flush") { return }
                }
            }
        }
    }

    func expectedBytes(_ write: UInt64, _ block: Int) -> [UInt8] {
        write == 0 ? [UInt8](repeating: 0, count: Self.blockSize) : pattern(write: write, block: block)
    }

    func accepts(block: Int, found: UInt64) -> Bool {
        found == (acknowledged[block] ?? 0) || uncertain[block]?.contains(found) == true
    }

    /// A failed operation: allowed in the fault phase when it is typed (span: naming the element).
    func checkFailure(_ error: ChainError, quiet: Bool, what: String) -> Bool {
        checks += 1
        failedAt = world.simulation.now
        if quiet && error.code != .unavailable {
            fail("quiet-progress", "\(what) failed in the quiet phase: \(error)\n" + statusDump())
            return false
        }
        if mode == .span, error.code == .unavailable, error.element == nil, what != "flush" {
            fail("reads-last-acknowledged", "\(what) failed without naming the element: \(error)")
            return false
        }
        if mode == .mirror && quiet {
            fail("quiet-progress", "\(what) failed in the quiet phase of a mirror chain: \(error)")
            return false
        }
        return true
    }

    /// What every element's drive holds in `block` (mirror), for a failure's detail.
    func blockDump(_ block: Int) -> String {
        nodes.map { node in
            guard let unit = units[node] else { return "" }
            let bytes = (try? unit.read(at: ElementDrive.headerSize + block * Self.blockSize, count: 8)) ?? []
            return "\(node): write \(decode(bytes))"
        }.joined(separator: ", ")
    }

    /// Every element's status, for a failure's detail.
    func statusDump() -> String {
        nodes.map { node in elements[node].map { $0.unsafeCore.status } ?? "element \(node) down" }
            .joined(separator: "\n")
    }

    // MARK: Watching

    /// Every millisecond: heads per generation, and when the registers became equal.
    func watch() async {
        while !Task.isCancelled {
            // The register checks run after every element's event (`registersMayHaveChanged`);
            // this loop only watches how long operations wait.
            do { try await world.clock.sleep(for: .milliseconds(100)) } catch { return }
            // Once the network healed and restarted elements had two seconds, no operation may
            // wait three (a resend storm once stalled writes for 12-20 s in real processes).
            if let started = operationStarted, let quiet = quietSince, started >= quiet + .seconds(2),
                world.simulation.now - started > .seconds(3)
            {
                fail(
                    "quiet-latency",
                    "the \(operationName) started at \(started), in the quiet phase, has waited 3 s\n"
                        + "\(host?.unsafeCore.debugState ?? "")\n" + statusDump())
                return
            }
            if let started = operationStarted, world.simulation.now - started > .seconds(10) {
                fail(
                    "progress",
                    "the \(operationName) has waited since \(started)\n\(host?.unsafeCore.debugState ?? "")\n"
                        + statusDump())
                return
            }
        }
    }

    func settleAndCheck(host: ChainHost) async throws {
        // Let the last rejoin finish, and give a signal raised just now (a chain re-formed by
        // its last element at the end of the wait) its 2·n message delays.
        try await world.clock.sleep(for: .seconds(3))
        let bound = Self.maximumDelay * (2 * nodes.count) + .milliseconds(2)
        if world.simulation.now - lastRaise < bound {
            try await world.clock.sleep(for: bound - (world.simulation.now - lastRaise))
        }
        let cores = nodes.compactMap { elements[$0]?.unsafeCore }
        checks += 1
        let digests = Set(cores.map(\.chain.digest))
        guard digests.count == 1 else {
            let described = cores.map { "\($0.node): \($0.chain.generation) \($0.chain.linked)" }
            fail("registers-converge", "registers differ at the end: \(described)")
            return
        }
        // A signal raised at the instant of the heal but before it (the faults' last) travelled
        // the faulty network.
        if let quietSince, lastRaise > quietSince {
            guard let convergedAt, convergedAt >= lastRaise, convergedAt - lastRaise <= bound else {
                fail(
                    "registers-converge",
                    "the last signal was at \(lastRaise), the registers were equal from \(String(describing: convergedAt)), "
                        + "more than 2·n delays (\(bound))")
                return
            }
        }
        // Every holder has every acknowledged block.
        guard let chain = cores.first?.chain else { return }
        for core in cores where core.machine.isLinked && core.serves {
            let holderRange: Range<Int>
            if mode == .mirror {
                holderRange = 0..<chain.volumeCapacity
            } else {
                var start = 0
                var range = 0..<0
                for member in chain.members {
                    let end = start + Int(member.drive.capacity)
                    if member.node == core.node { range = start..<end }
                    start = end
                }
                holderRange = range
            }
            for block in (holderRange.lowerBound / Self.blockSize)..<(holderRange.upperBound / Self.blockSize) {
                guard let written = acknowledged[block] else { continue }
                checks += 1
                let offset = block * Self.blockSize - holderRange.lowerBound
                let bytes =
                    (try? core.drive.unit.read(at: ElementDrive.headerSize + offset, count: Self.blockSize)) ?? []
                let found = decode(bytes)
                if found != written && uncertain[block]?.contains(found) != true {
                    fail(
                        "acknowledged-on-every-holder",
                        "\(core.node) holds write \(found) in block \(block), the last acknowledged is \(written)")
                    return
                }
            }
        }
    }
}
