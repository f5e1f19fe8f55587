public import Checkpointing
public import DeterministicSimulation
import FaultToleranceCore
import LiveCopy
import Logging
import NIOCore

/// A randomized run of the shipped group checkpoint runtimes (``Checkpointing/GroupCoordinatorService``
/// and three ``Checkpointing/GroupMemberService``s, each over its own store on
/// ``DeterministicSimulation/SimulatedDisk``s) on a simulated network, in virtual time.
///
/// Every member's application (an 8-page region and an 8-block volume) is written every few
/// milliseconds throughout, and sends numbered messages to the other members through its
/// service (``Checkpointing/GroupMemberService/send(_:to:)``): page 0 of its region counts,
/// per peer, the messages it sent and the newest it handled (with the sender's incarnation). The coordinator asks for group checkpoints one after another
/// while faults come at random: a member or the coordinator crashes (its disks lose or tear
/// unsynchronized writes; it restarts, settles any checkpoint left in doubt, and restores the
/// newest committed one), the power fails inside a member's next storage operations (a
/// capture, a decision), a member is cut off from the coordinator for a while; the links lose,
/// duplicate and delay messages throughout. At the end the network heals, everyone restarts
/// and settles.
///
/// The report's operations are the epochs committed.
///
/// Invariants, checked at the end:
/// - `settles`: no member still holds a checkpoint in doubt.
/// - `no-partial-epoch`: every group epoch with a committed checkpoint at one member has one
///   at every member.
/// - `decided-by-coordinator`: no member committed an epoch the coordinator did not commit.
/// - `committed-everywhere`: every epoch the coordinator committed is at every member.
/// - `restore-exact`: every committed checkpoint restores exactly its member's state at its
///   cut; `verifies`: each store's ``Checkpointing/CheckpointStore/verify(progress:)`` is clean.
/// - `consistent-cut`: in every committed epoch, no member has handled a message its sender's
///   checkpoint of that epoch has not sent.
public struct GroupCheckpointScenario: Sendable {
    /// Virtual time the faults and checkpoints run for, before the final healing.
    public var duration: Duration
    /// A planted bug, or `nil` for the shipped protocol.
    public var bug: GroupCheckpointBug?

    /// Creates a scenario.
    public init(duration: Duration = .seconds(5), bug: GroupCheckpointBug? = nil) {
        self.duration = duration
        self.bug = bug
    }

    /// Runs one seed.
    public func run(seed: UInt64) async -> SimulationReport {
        let world = AsyncSimulation(
            seed: seed,
            linkConditions: LinkConditions(
                lossProbability: 0.02, duplicateProbability: 0.02, delay: .milliseconds(1) ... .milliseconds(15)))
        let run = GroupRun(world: world, scenario: self)
        // Between members, ordered channels (as TCP's): a fixed delay, nothing lost or doubled.
        for from in run.members.map(\.node) {
            for to in run.members.map(\.node) where from != to {
                world.network.setConditions(
                    LinkConditions(delay: .milliseconds(2) ... .milliseconds(2)), from: from, to: to)
            }
        }
        do {
            try await world.run(timeLimit: duration + .seconds(600), maximumJobs: 20_000_000) { try await run.run() }
        } catch {
            run.fail("ends", "\(error)")
        }
        return run.report(seed: seed)
    }
}

/// One simulated run. Lives on the simulation's driver thread (every method runs in a job of
/// the run), hence unchecked Sendable.
final class GroupRun: @unchecked Sendable {
    static let silent = Logger(label: "ft.checkpoint.group.simulation", factory: { _ in SwiftLogNoOpLogHandler() })
    static let group: UInt64 = 0x6772_6F75_70
    static let coordinatorNode: NodeID = "coordinator"
    static let pages = 8
    static let pageSize = 4096

    let world: AsyncSimulation
    let scenario: GroupCheckpointScenario
    var members: [MemberSlot] = []
    let coordinatorPool: SimulatedStoragePool
    var coordinator: GroupCoordinatorService?
    var coordinatorTask: Task<Void, any Error>?
    /// Epochs some coordinator incarnation committed (seen ending, or found in its record).
    var committedEpochs = Set<UInt64>()
    var violation: InvariantViolation?
    /// Whether a group checkpoint request is outstanding.
    var requesting = false
    var checks = 0

    init(world: AsyncSimulation, scenario: GroupCheckpointScenario) {
        self.world = world
        self.scenario = scenario
        let random = world.simulation.random.split()
        coordinatorPool = SimulatedStoragePool(
            unitCapacity: 16 << 10, budget: 16 << 10, faults: .init(), random: random, firstUnit: 1 << 30)
        for (index, node) in (["a", "b", "c"] as [NodeID]).enumerated() {
            members.append(MemberSlot(run: self, node: node, firstUnit: UInt64(index + 1) << 20))
        }
    }

    var random: SimulationRandom {
        get { world.simulation.random }
        set { world.simulation.random = newValue }
    }

    func fail(_ invariant: String, _ detail: String) {
        guard violation == nil else { return }
        violation = InvariantViolation(invariant: invariant, detail: detail, at: world.simulation.now)
    }

    func report(seed: UInt64) -> SimulationReport {
        SimulationReport(
            seed: seed, faults: world.simulation.faults, invariantChecks: checks, operations: committedEpochs.count,
            virtualTime: world.simulation.now.nanoseconds, events: world.simulation.eventsProcessed,
            violation: violation, traceHash: world.simulation.traceHash)
    }

    func run() async throws {
        try startCoordinator()
        for member in members { try await member.start() }
        let end = world.clock.now + scenario.duration
        while world.clock.now < end && violation == nil {
            if !requesting {
                requesting = true
                let coordinator = self.coordinator
                let full = random.chance(0.1)
                world.spawn { [unowned self] in
                    if let epoch = try? await coordinator?.checkpoint(full: full) {
                        committedEpochs.insert(epoch.epoch)
                    }
                    requesting = false
                }
            }
            try await world.clock.sleep(for: random.duration(in: .milliseconds(20) ... .milliseconds(300)))
            let roll = random.next() % 100
            switch roll {
            case 0..<8:
                // A member crashes now and comes back a little later.
                if let member = members.filter(\.isUp).randomElement(using: &random) {
                    let delay = random.duration(in: .milliseconds(10) ... .milliseconds(800))
                    member.crash()
                    world.spawn { [unowned self] in
                        try? await world.clock.sleep(for: delay)
                        do { try await member.start() } catch { fail("restarts", "\(member.node): \(error)") }
                    }
                }
            case 8..<14:
                // The power fails inside the member's next storage operations; it restarts.
                if let member = members.filter(\.isUp).randomElement(using: &random) {
                    member.pool.power.cut(afterOperations: Int(random.next() % 10))
                    let delay = random.duration(in: .milliseconds(5) ... .milliseconds(400))
                    world.spawn { [unowned self] in
                        try? await world.clock.sleep(for: delay)
                        guard member.isUp else { return }
                        member.crash()
                        do { try await member.start() } catch { fail("restarts", "\(member.node): \(error)") }
                    }
                }
            case 14..<18:
                // The coordinator crashes and restarts.
                crashCoordinator()
                try await world.clock.sleep(for: random.duration(in: .milliseconds(10) ... .milliseconds(500)))
                try startCoordinator()
            case 18..<26:
                // A member is cut off from the coordinator for a while (sometimes crashing there).
                if let member = members.randomElement(using: &random) {
                    let node = member.node
                    world.network.partition([node], from: [Self.coordinatorNode])
                    world.simulation.faults.partitions += 1
                    let span = random.duration(in: .milliseconds(100) ... .seconds(2))
                    let crashInside = random.chance(0.3)
                    world.spawn { [unowned self] in
                        if crashInside {
                            try? await world.clock.sleep(for: span / 2)
                            if member.isUp {
                                member.crash()
                                try? await world.clock.sleep(for: .milliseconds(50))
                                do { try await member.start() } catch { fail("restarts", "\(node): \(error)") }
                            }
                        }
                        try? await world.clock.sleep(for: span / 2)
                        world.network.restore(from: node, to: Self.coordinatorNode)
                        world.network.restore(from: Self.coordinatorNode, to: node)
                    }
                }
            default:
                break
            }
        }
        // Heal and settle: every link restored, pending restarts done (they take at most about a
        // second), every member up, time to ask and answer.
        world.network.heal()
        try await world.clock.sleep(for: .milliseconds(1500))
        for member in members where !member.isUp {
            member.pool.power.restore()
            try await member.start()
        }
        if coordinator == nil { try startCoordinator() }
        // Up to 4 s to settle (members ask the fate of what they hold every 300 ms); done as
        // soon as no request is running and no member holds a checkpoint in doubt.
        for _ in 0..<40 {
            try await world.clock.sleep(for: .milliseconds(100))
            if !requesting && members.allSatisfy({ $0.store?.inDoubt.isEmpty == true }) { break }
        }
        try check()
        for member in members { member.crash() }
        crashCoordinator()
    }

    func startCoordinator() throws {
        let unit: any StorageUnit
        if let existing = coordinatorPool.units.first { unit = existing } else { unit = try coordinatorPool.allocate() }
        let log = try GroupCoordinatorLog(unit: unit, group: Self.group)
        if log.record.lastCommitted > 0 { committedEpochs.insert(log.record.lastCommitted) }
        let service = try GroupCoordinatorService(
            group: Self.group, members: members.map(\.node), epochTimeout: .milliseconds(800), log: log,
            transport: world.network.transport(for: Self.coordinatorNode), clock: world.clock,
            tickInterval: .milliseconds(50), logger: Self.silent, blockingIO: .inline, bug: scenario.bug)
        let outcomes = service.outcomes
        world.spawn { [unowned self] in
            for await (epoch, outcome) in outcomes {
                if case .committed = outcome { committedEpochs.insert(epoch) }
            }
        }
        coordinator = service
        coordinatorTask = world.spawn { try await service.run() }
        world.network.restart(Self.coordinatorNode)
    }

    /// Whether some member of epoch `epoch` handled a message its sender's checkpoint of the
    /// epoch had not sent (page 0 of each: incarnation, sent counts, newest handled).
    func inconsistency(at epoch: UInt64) throws -> String? {
        var ledgers: [[UInt64]] = []
        for member in members {
            guard let store = member.store,
                let summary = store.checkpoints.first(where: { $0.epoch == epoch && $0.application == "app" })
            else { return nil }
            var region = [UInt8](repeating: 0, count: Self.pages * Self.pageSize)
            try region.withUnsafeMutableBytes { try store.restore(summary.id, item: "heap", into: $0) }
            ledgers.append(MessageLedger.words(of: region))
        }
        checks += 1
        return MessageLedger.inconsistency(ledgers, names: members.map(\.node.name))
    }

    func crashCoordinator() {
        coordinatorTask?.cancel()
        coordinatorTask = nil
        coordinator = nil
        world.network.crash(Self.coordinatorNode)
        let outcome = coordinatorPool.crash()
        world.simulation.faults.nodeCrashes += 1
        world.simulation.faults.writesLost += outcome.lost
        world.simulation.faults.writesTorn += outcome.torn
    }

    func check() throws {
        var epochsByMember: [NodeID: Set<UInt64>] = [:]
        for member in members {
            guard let store = member.store else { continue }
            checks += 1
            if let doubt = store.inDoubt.first {
                fail("settles", "\(member.node) still holds \(doubt.id) of epoch \(doubt.epoch) in doubt")
                return
            }
            let committed = store.checkpoints
            epochsByMember[member.node] = Set(committed.map(\.epoch))
            for summary in committed {
                checks += 1
                guard let expected = member.cuts[summary.captureTime] else {
                    fail("restore-exact", "\(member.node): \(summary.id) has no recorded cut")
                    return
                }
                var memory = [UInt8](repeating: 0, count: Self.pages * Self.pageSize)
                var volume = memory
                do {
                    try memory.withUnsafeMutableBytes { try store.restore(summary.id, item: "heap", into: $0) }
                    try volume.withUnsafeMutableBytes { try store.restore(summary.id, item: "disk", into: $0) }
                } catch {
                    fail("restore-exact", "\(member.node): \(summary.id) (epoch \(summary.epoch)): \(error)")
                    return
                }
                if !CheckpointScenario.same(memory, expected.memory)
                    || !CheckpointScenario.same(volume, expected.volume)
                {
                    fail("restore-exact", "\(member.node): \(summary.id) (epoch \(summary.epoch)) restores other bytes")
                    return
                }
            }
            checks += 1
            if let problem = store.verify().problems.first {
                fail("verifies", "\(member.node): \(problem)")
                return
            }
        }
        let all = epochsByMember.values.reduce(into: Set<UInt64>()) { $0.formUnion($1) }
        for epoch in all.sorted() {
            checks += 1
            let holders = members.filter { epochsByMember[$0.node]?.contains(epoch) == true }.map(\.node)
            if holders.count != members.count {
                fail("no-partial-epoch", "epoch \(epoch) is committed at \(holders) only")
                return
            }
            if let problem = try inconsistency(at: epoch) {
                fail("consistent-cut", "epoch \(epoch): \(problem)")
                return
            }
            if !committedEpochs.contains(epoch) {
                fail("decided-by-coordinator", "epoch \(epoch) is committed at members; the coordinator never did")
                return
            }
        }
        if let missing = committedEpochs.subtracting(all).min() {
            fail("committed-everywhere", "epoch \(missing) was committed by the coordinator and is at no member")
        }
    }
}

/// One member: its disks (which survive its crashes), and, while it is up, its store,
/// application and service.
final class MemberSlot: @unchecked Sendable {
    unowned let run: GroupRun
    let node: NodeID
    let pool: SimulatedStoragePool
    var store: CheckpointStore?
    var memory: TrackedMemory?
    var volume: TrackedVolume?
    var service: GroupMemberService?
    var serviceTask: Task<Void, any Error>?
    var writerTask: Task<Void, Never>?
    /// The application's bytes at each cut, by the capture time the cut was stamped with.
    var cuts: [UInt64: (memory: [UInt8], volume: [UInt8])] = [:]
    var nextCut: UInt64 = 1
    /// Starts so far (written to word 0 of the region).
    var incarnation: UInt64 = 0

    init(run: GroupRun, node: NodeID, firstUnit: UInt64) {
        self.run = run
        self.node = node
        pool = SimulatedStoragePool(
            unitCapacity: 128 << 10, budget: 8 << 20,
            faults: SimulatedDisk.Faults(loseUnsynchronized: 0.5, tearUnsynchronized: 0.25),
            random: run.random.split(), firstUnit: firstUnit)
    }

    var isUp: Bool { service != nil }

    /// Starts (or restarts) the member: opens the store, settles, restores the newest committed
    /// checkpoint, attaches the checkpointer and starts writing.
    func start() async throws {
        pool.power.restore()
        let store = try CheckpointStore.open(
            pool: pool, configuration: .init(deflateLevel: nil), logger: GroupRun.silent)
        let world = run.world
        world.network.restart(node)
        let service = GroupMemberService(
            group: GroupRun.group, coordinator: GroupRun.coordinatorNode, peers: run.members.map(\.node), store: store,
            application: "app", transport: world.network.transport(for: node), clock: world.clock,
            fateInterval: .milliseconds(300), markerTimeout: .milliseconds(400), holdLimit: .seconds(2),
            tickInterval: .milliseconds(50), logger: GroupRun.silent, blockingIO: .inline, bug: run.scenario.bug)
        self.store = store
        self.service = service
        serviceTask = world.spawn { try await service.run() }
        let resumeFrom = await service.settled()
        // Crashed again while settling: that incarnation is gone.
        guard self.service === service else { return }
        let memory = try TrackedMemory(pageCount: GroupRun.pages)
        let volume = try TrackedVolume(
            MemoryStorageUnit(id: UnitID(1 << 50), capacity: GroupRun.pages * GroupRun.pageSize), gate: memory.gate)
        if let resumeFrom {
            try store.restore(resumeFrom.id, item: "heap", into: memory)
            try store.restore(resumeFrom.id, item: "disk", into: volume)
        }
        let checkpointer = try Checkpointer(
            application: "app", store: store, regions: ["heap": memory], volumes: ["disk": volume],
            resumingFrom: resumeFrom?.id, clock: world.clock, wallClock: { [unowned self] in recordCut() },
            logger: GroupRun.silent)
        // A new incarnation: its messages are numbered from 1 again.
        incarnation += 1
        try MessageLedger.begin(incarnation: incarnation, in: memory)
        let members = run.members.map(\.node)
        service.setMessageHandler { sender, message in
            MessageLedger.handle(message, from: members.firstIndex(of: sender) ?? -1, in: memory)
        }
        self.memory = memory
        self.volume = volume
        service.attach(checkpointer)
        world.simulation.faults.nodeRestarts += 1
        writerTask = world.spawn { [unowned self] in await write(memory: memory, volume: volume, service: service) }
    }

    /// Called by the checkpointer inside the pause, at the cut: the bytes now are the cut's.
    /// Reads past the gate (the pause holds it).
    func recordCut() -> UInt64 {
        guard let memory, let volume else { return 0 }
        let stamp = nextCut
        nextCut += 1
        let bytes = [UInt8](UnsafeRawBufferPointer(start: memory.address(ofPage: 0), count: memory.byteCount))
        let disk = (try? volume.base.read(at: 0, count: volume.capacity)) ?? []
        cuts[stamp] = (bytes, disk)
        return stamp
    }

    private func write(memory: TrackedMemory, volume: TrackedVolume, service: GroupMemberService) async {
        let world = run.world
        let members = run.members.map(\.node)
        var sent = [UInt64](repeating: 0, count: members.count)
        while !Task.isCancelled {
            do {
                try await world.clock.sleep(for: .milliseconds(Int64(world.simulation.random.next() % 16 + 5)))
            } catch { return }
            if world.simulation.random.next() % 2 == 0 {
                // A message to a peer: counted in the region first, then sent.
                let peer = Int(world.simulation.random.next() % UInt64(members.count))
                if members[peer] != node {
                    sent[peer] += 1
                    if let message = try? MessageLedger.send(
                        sent[peer], to: peer, incarnation: incarnation, in: memory)
                    {
                        try? await service.send(message, to: members[peer])
                    }
                }
            }
            var state = world.simulation.random.next() | 1
            let length = Int(state % 700) + 1
            let bytes = (0..<length).map { _ -> UInt8 in
                state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                return UInt8(truncatingIfNeeded: state >> 56)
            }
            // Page 0 holds the message counts: the random writes go to the pages after it.
            let span = UInt64((GroupRun.pages - 1) * GroupRun.pageSize - length)
            try? memory.write(bytes, at: GroupRun.pageSize + Int(world.simulation.random.next() % span))
            try? volume.write(bytes, at: Int(world.simulation.random.next() % span))
        }
    }

    /// Power loss: the service and writer stop, unsynchronized writes are lost or torn.
    func crash() {
        serviceTask?.cancel()
        writerTask?.cancel()
        serviceTask = nil
        writerTask = nil
        service = nil
        store = nil
        memory = nil
        volume = nil
        run.world.network.crash(node)
        let outcome = pool.crash()
        run.world.simulation.faults.nodeCrashes += 1
        run.world.simulation.faults.writesLost += outcome.lost
        run.world.simulation.faults.writesTorn += outcome.torn
    }
}
