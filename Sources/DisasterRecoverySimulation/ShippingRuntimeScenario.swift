public import DeterministicSimulation
package import DisasterRecovery
import ElasticJournal
import FaultToleranceCore
import Logging

/// A randomized run of the shipped shipping runtimes in virtual time: ``DisasterRecovery/JournalShipper``
/// and ``DisasterRecovery/JournalReceiver`` themselves (their event loops, tasks, timers and
/// wire handling, on the simulation's executor and ``DeterministicSimulation/VirtualClock``, with
/// `BlockingIO.inline`), over ``DeterministicSimulation/SimulatedNetwork`` transports, between
/// two real ``ElasticJournal/ElasticJournal``s on simulated disks. ``ShippingScenario`` drives
/// the state machines under the same faults by hand; this one runs the code a program links.
///
/// The protected site's process appends 1 to 3 writes every millisecond and synchronizes at
/// random; its shipper polls every 2 ms. The link goes through phases: clean (delays of 0.5 to
/// 3 ms), lossy (messages dropped, duplicated, reordered) and cut. Either site loses power at
/// random moments: its process (runtime and transport) stops, its disks keep, lose or tear what
/// was not synchronized, and a new process starts on the journal 3 ms later.
///
/// Invariants, as in ``ShippingScenario``: `same-records` (checked after every restart and at
/// the end), `rpo-bound` (after 60 ms of a clean link and no restart, the shipper's published
/// RPO stays within 40 ms), `catches-up` (400 ms after the faults stop, the recovery site holds
/// every durable protected record) and `reopens`.
public struct ShippingRuntimeScenario: Sendable {
    /// A planted bug, or `nil` for the shipped code.
    package var bug: DisasterRecoveryBug?

    /// Creates a scenario with a planted bug, or `nil` for the shipped code.
    package init(bug: DisasterRecoveryBug?) { self.bug = bug }

    /// Creates a scenario running the shipped code.
    public init() { self.bug = nil }

    /// The planted bugs this scenario catches, by name.
    public static var bugNames: [String] { [DisasterRecoveryBug.shipBeforeDurable.rawValue] }

    /// A scenario with the planted bug `name`, or `nil` when this scenario has none of that name.
    public init?(bugNamed name: String) {
        guard Self.bugNames.contains(name), let bug = DisasterRecoveryBug(rawValue: name) else { return nil }
        self.bug = bug
    }

    /// Runs one seed.
    public func run(seed: UInt64) async -> SimulationReport {
        let world = AsyncSimulation(seed: seed, linkConditions: ShippingRuntimeRun.clean)
        let run = ShippingRuntimeRun(world: world, bug: bug)
        do {
            try await world.run(timeLimit: .seconds(5)) { await run.run() }
        } catch {
            run.fail("simulation", "\(error)")
        }
        return run.report
    }
}

/// One seed's run. Lives on the simulation's driver thread (every method runs in a job of the
/// run), hence unchecked Sendable.
final class ShippingRuntimeRun: ShippingSites, @unchecked Sendable {
    static let clean = LinkConditions(delay: .microseconds(500) ... .milliseconds(3))
    static let lossy = LinkConditions(
        lossProbability: 0.2, duplicateProbability: 0.1, reorderProbability: 0.2,
        delay: .microseconds(500) ... .milliseconds(3), reorderDelay: .milliseconds(6))
    static let silent = Logger(label: "ft.dr.simulation", factory: { _ in SwiftLogNoOpLogHandler() })
    static let protectedNode: NodeID = "protected"
    static let recoveryNode: NodeID = "recovery"

    /// A site's process: its runtime's task and its transport.
    struct Process {
        var task: Task<Void, Never>
        var transport: SimulatedTransport
    }

    let world: AsyncSimulation
    let bug: DisasterRecoveryBug?
    let protected: ShippingRun.Site
    let recovery: ShippingRun.Site
    /// The protected site's clock: the virtual time, set before each of its operations.
    let protectedClock = ShippedClock()
    var shippedClock = ShippedClock()
    var shipper: JournalShipper?
    var receiver: JournalReceiver?
    var shipperProcess: Process?
    var receiverProcess: Process?
    var linkClean = true
    var cleanSince = Instant.zero
    var faultsStopAt = Instant.zero
    var violation: InvariantViolation?
    var checks = 0
    var operations = 0

    var simulation: Simulation { world.simulation }
    var now: Instant { world.clock.now }

    init(world: AsyncSimulation, bug: DisasterRecoveryBug?) {
        self.world = world
        self.bug = bug
        var random = world.simulation.random
        protected = ShippingRun.Site(random: &random)
        recovery = ShippingRun.Site(random: &random)
        world.simulation.random = random
    }

    /// The body: both sites, the workload, the faults; then the quiet and the final checks.
    func run() async {
        guard createJournals(protectedClock: protectedClock, shippedClock: shippedClock) else { return }
        faultsStopAt = Instant.zero + .milliseconds(int(400...1200))
        startReceiver()
        startShipper()
        var nextPhase = now + .milliseconds(int(20...150))
        var powerCuts = (0..<int(0...3)).map { _ in
            (
                at: Instant.zero + .milliseconds(int(10...Int(faultsStopAt.nanoseconds / 1_000_000))),
                protectedSite: simulation.random.chance(0.5), after: int(0...20)
            )
        }
        var faultsStopped = false
        let end = faultsStopAt + .milliseconds(400)
        // One millisecond per turn: the protected workload, the journals' background work, the
        // link's phases, power, and the checks.
        while now < end, violation == nil {
            do {
                try await world.clock.sleep(for: .milliseconds(1))
            } catch {
                break
            }
            if now < faultsStopAt + .milliseconds(50) { await write() }
            if !recovery.down { recovery.settle() }
            if now >= nextPhase { changeLink(&nextPhase) }
            for cut in powerCuts where cut.at <= now {
                // A switch already cut stays cut (arming it again would bring the power back).
                let site = cut.protectedSite ? protected : recovery
                if !site.down, !site.power.isCut { site.power.cut(afterOperations: cut.after) }
            }
            powerCuts.removeAll { $0.at <= now }
            if !faultsStopped, now >= faultsStopAt {
                // The faults stop: a cut armed that has not struck is called off.
                faultsStopped = true
                for site in [protected, recovery] where !site.power.isCut { site.power.restore() }
            }
            // A site whose power went off: its process dies, a new one starts on its journal.
            if protected.power.isCut { await restartProtected() }
            if recovery.power.isCut { await restartRecovery() }
            checkRPO()
        }
        guard violation == nil else { return await stopAll() }
        checks += 1
        guard let source = protected.journal, let replica = recovery.journal else {
            fail("reopens", "a site is down at the end")
            return await stopAll()
        }
        if replica.durableSequence != source.durableSequence {
            let status = shipper?.status
            fail(
                "catches-up",
                "the recovery site holds \(replica.durableSequence) of \(source.durableSequence) durable records "
                    + "(shipper acknowledged \(status?.acknowledged ?? 0), \(status?.inFlight ?? 0) in flight, "
                    + "last error \(status?.lastError ?? "none"))")
        }
        compareRecords("at the end")
        simulation.trace(source.durableSequence << 20 | UInt64(shipper?.status.reconnects ?? 0))
        await stopAll()
    }

    // MARK: - Processes

    func startShipper() {
        guard let journal = protected.journal else { return }
        let transport = world.network.transport(for: Self.protectedNode)
        let world = self.world
        let shipper = JournalShipper(
            journal: journal, transport: transport,
            configuration: .init(
                recoverySite: Self.recoveryNode, pollInterval: .milliseconds(2),
                acknowledgementTimeout: .milliseconds(30), maximumInFlightBytes: 64 << 10,
                maximumBatchBytes: 8 << 10),
            clock: { world.clock.now }, pacing: world.clock, blockingIO: .inline, logger: Self.silent, bug: bug)
        self.shipper = shipper
        shipperProcess = Process(task: world.spawn { await shipper.run() }, transport: transport)
    }

    func startReceiver() {
        guard let journal = recovery.journal else { return }
        let transport = world.network.transport(for: Self.recoveryNode)
        let receiver = JournalReceiver(
            journal: journal, transport: transport, protectedSite: Self.protectedNode, clock: shippedClock,
            blockingIO: .inline, logger: Self.silent)
        self.receiver = receiver
        receiverProcess = Process(task: world.spawn { await receiver.run() }, transport: transport)
    }

    /// A process dies with its site's power: its transport closes (nothing more arrives) and its
    /// runtime is cancelled.
    func stop(_ process: Process?) async {
        guard let process else { return }
        await process.transport.close()
        process.task.cancel()
        await process.task.value
    }

    func stopAll() async {
        await stop(shipperProcess)
        await stop(receiverProcess)
        shipperProcess = nil
        receiverProcess = nil
    }

    // MARK: - Protected site

    func write() async {
        protectedClock.advance(to: now)
        guard let journal = protected.journal, !protected.down else { return }
        let writes = randomWrites()
        operations += writes.count
        do {
            _ = try journal.appendBuffered(contentsOf: writes)
            if simulation.random.chance(0.4) { try journal.synchronize() }
            protected.settle()
        } catch  where protected.power.isCut {
            await restartProtected()
        } catch {
            fail("workload", "a write to the protected journal failed with power on: \(error)")
        }
    }

    /// The protected site lost power: its process stops, its disks crash, a new process starts on
    /// its journal 3 ms later (the workload pauses meanwhile).
    func restartProtected() async {
        guard !protected.down else { return }
        protected.down = true
        await stop(shipperProcess)
        shipperProcess = nil
        try? await world.clock.sleep(for: .milliseconds(3))
        count(protected.crash())
        guard reopen(protected, clock: protectedClock, "the protected site") else { return }
        protected.down = false
        cleanSince = now
        startShipper()
        compareRecords("after the protected site restarted")
    }

    /// The recovery site lost power: the same, with a new shipped clock.
    func restartRecovery() async {
        guard !recovery.down else { return }
        recovery.down = true
        await stop(receiverProcess)
        receiverProcess = nil
        try? await world.clock.sleep(for: .milliseconds(3))
        count(recovery.crash())
        shippedClock = ShippedClock()
        guard reopen(recovery, clock: shippedClock, "the recovery site") else { return }
        recovery.down = false
        cleanSince = now
        startReceiver()
        compareRecords("after the recovery site restarted")
    }

    // MARK: - Link

    func changeLink(_ next: inout Instant) {
        let network = world.network
        next = now + .milliseconds(int(20...150))
        let phase =
            now >= faultsStopAt ? 0 : (simulation.random.chance(0.5) ? 0 : (simulation.random.chance(0.6) ? 1 : 2))
        network.heal()
        for (from, to) in [(Self.protectedNode, Self.recoveryNode), (Self.recoveryNode, Self.protectedNode)] {
            network.setConditions(phase == 1 ? Self.lossy : Self.clean, from: from, to: to)
        }
        if phase == 2 { network.partition([Self.protectedNode], from: [Self.recoveryNode]) }
        if phase == 0 && !linkClean { cleanSince = now }
        linkClean = phase == 0
    }

    // MARK: - Checks

    func checkRPO() {
        guard linkClean, !recovery.down, !protected.down, let shipper, now - cleanSince > .milliseconds(60) else {
            return
        }
        checks += 1
        let status = shipper.status
        if status.recoveryPointObjective > .milliseconds(40) {
            fail(
                "rpo-bound",
                "RPO \(status.recoveryPointObjective) after \(now - cleanSince) of a clean link: shipper durable "
                    + "\(status.durable), acknowledged \(status.acknowledged), \(status.inFlight) in flight, "
                    + "\(status.reconnects) reconnects; last error \(status.lastError ?? "none")")
        }
    }
}
