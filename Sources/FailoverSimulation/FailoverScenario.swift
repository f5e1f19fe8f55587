public import DeterministicSimulation
public import Failover
import FaultToleranceCore
import FaultToleranceEtcd
import Foundation
import Logging

/// A randomized run of the shipped Failover runtimes (``Failover/FailoverServer`` on two or
/// three servers, ``Failover/FailoverControlServer`` on the control server,
/// ``Failover/FailoverClient`` on three clients) on a simulated network, in virtual time.
///
/// Each seed runs synchronous replication (asynchronous with ``maximumLag``) with a 10 ms report
/// interval, a lease of 30–90 ms and a failure detector of 18–40 ms. Each server runs on its
/// own clock, up to 1% fast or slow (the controller's drift bound) from its own offset. For
/// three seconds links lose, duplicate and reorder messages, servers crash (a memory database:
/// a restart forgets everything) and come back, links are cut (the primary from the control
/// server only, or a server from everyone), the control server crashes and restarts on its
/// recorded epoch, and an operator asks the control server for a planned switchover (to a
/// given server or to the newest backup of the sync set). One fault at a time, with time to recover between: the guarantees are for
/// any single failure. Then the network heals and clients go on for three quiet seconds.
///
/// Each client runs one request at a time, retrying on the new primary after a switch (the
/// same request number): puts of a new key each time, and puts, deletes, compare-and-sets and
/// reads of three shared keys.
///
/// Invariants:
/// - `one-server-serves`: at no instant do two servers hold a lease (serve) at once.
/// - `one-promotion-per-epoch`: the control server never promotes two servers in one epoch.
/// - `no-acknowledged-write-lost`: at the end, every write acknowledged to a client is on the
///   primary, and on every backup of its sync set.
/// - `quiet-progress`: in the quiet phase, clients' writes complete.
/// - `quiet-stability`: in the quiet phase, at most two promotions (no failover storm).
/// - `linearizable`: each shared key's history (every operation with when it was sent and
///   answered; an unanswered write may have taken effect or not), ending with the primary's
///   final value, has an order in which each read sees the latest write
///   (``DeterministicSimulation/RegisterHistory``).
/// - `backups-converge`: at the end, every live server that follows the primary holds exactly
///   its state (the same snapshot).
///
/// With ``maximumLag`` the servers replicate asynchronously (a write is acknowledged at once
/// while the sync set, of at least one backup, trails by less than that many entries; writers
/// wait beyond it; the controller promotes only from the sync set, and no backup further
/// behind): a failover may then lose acknowledged writes by design, so
/// `no-acknowledged-write-lost` and `linearizable` do not apply; the others do, and
/// `bounded-loss`: when a server is promoted, and at the end, the acknowledged writes the
/// (new) primary lacks are at most the lag bound for each promotion so far.
public struct FailoverScenario: Sendable {
    /// A planted server bug, or `nil`.
    public var serverBug: ServerCore.Bug?
    /// A planted controller bug, or `nil`.
    public var controllerBug: FailoverController.Bug?
    /// A planted bug of the etcd control plane (etcd runs), or `nil`.
    public var etcdBug: EtcdControlPlane.Bug?
    /// Servers' clocks 30% slow, far beyond the 1% drift bound the controller allows for: a
    /// lease then outlasts the controller's wait for it, and the simulation must see two
    /// servers serve (the planted fault `clocks-beyond-drift-bound`).
    public var clocksBeyondDriftBound = false

    /// The servers elect through etcd (``Failover/EtcdControlPlane`` on each, over a
    /// ``FaultToleranceEtcd/MemoryEtcd`` whose leases run out in virtual time) instead of
    /// obeying a control server; the control server's faults become etcd's: a server cut from
    /// etcd, etcd unreachable for everyone, switchovers asked through etcd.
    public var etcd = false

    /// Asynchronous replication with this bound on a backup's lag (entries), also the
    /// controller's promotion lag limit; `nil`: synchronous.
    public var maximumLag: UInt64?

    /// Each server journals what it applies (a ``Failover/MemoryReplicaJournal`` per server, kept
    /// across its crashes): a backup acknowledges only what its journal holds, and a crashed
    /// server comes back with its state, unless its disk was replaced too (half the restarts).
    /// A quarter of the crashes are a whole pair's power loss instead: every server down at
    /// once, and in half of them one server's disk lost as well. The control server then counts
    /// the servers as durable; through etcd, the sync record names each by its journal.
    public var journaled = false

    /// The planted fault that runs the servers' clocks beyond the drift bound.
    public static let slowClocks = "clocks-beyond-drift-bound"

    /// Bug names `ftctl failover simulate --bug` accepts.
    public static let bugNames =
        ServerCore.Bug.allCases.map(\.rawValue) + FailoverController.Bug.allCases.map(\.rawValue)
        + EtcdControlPlane.Bug.allCases.map(\.rawValue) + [slowClocks]

    /// A scenario with the named planted bug (or none); nil for an unknown name.
    public init?(bug name: String?) {
        guard let name else { return }
        if let bug = ServerCore.Bug(rawValue: name) {
            serverBug = bug
        } else if let bug = FailoverController.Bug(rawValue: name) {
            controllerBug = bug
        } else if let bug = EtcdControlPlane.Bug(rawValue: name) {
            etcdBug = bug
        } else if name == Self.slowClocks {
            clocksBeyondDriftBound = true
        } else {
            return nil
        }
    }

    /// The shipped code.
    public init() {}

    /// Runs one seed.
    public func run(seed: UInt64) async -> SimulationReport {
        let world = AsyncSimulation(seed: seed, linkConditions: FailoverRun.faulty)
        let run = FailoverRun(
            world: world, serverBug: serverBug, controllerBug: controllerBug, slowClocks: clocksBeyondDriftBound)
        run.useEtcd = etcd
        run.etcdBug = etcdBug
        run.maximumLag = maximumLag
        run.journaled = journaled
        do {
            try await world.run(timeLimit: .seconds(30), maximumJobs: 20_000_000) { try await run.run() }
        } catch {
            run.fail("ends", "\(error)")
        }
        return run.report(seed: seed)
    }
}

/// One simulated run; lives on the simulation's driver thread, hence unchecked Sendable.
final class FailoverRun: @unchecked Sendable {
    static let faulty = LinkConditions(
        lossProbability: 0.01, duplicateProbability: 0.01, reorderProbability: 0.02,
        delay: .microseconds(200) ... .milliseconds(3))
    static let quiet = LinkConditions(delay: .microseconds(200) ... .milliseconds(2))
    static let slow = LinkConditions(
        lossProbability: 0.01, duplicateProbability: 0.01, reorderProbability: 0.02,
        delay: .microseconds(200) ... .milliseconds(30))
    static let silent = Logger(label: "ft.failover.simulation", factory: { _ in SwiftLogNoOpLogHandler() })
    static let control: NodeID = "control"

    let world: AsyncSimulation
    let serverBug: ServerCore.Bug?
    let controllerBug: FailoverController.Bug?
    let slowClocks: Bool
    var violation: InvariantViolation?
    var checks = 0
    var operations = 0

    var servers: [NodeID] = []
    var runtimes: [NodeID: FailoverServer] = [:]
    var tasks: [NodeID: Task<Void, any Error>] = [:]
    var controlServer: FailoverControlServer?
    var controlTask: Task<Void, any Error>?
    let epochs = MemoryEpochStore()
    var promoted: [UInt64: NodeID] = [:]
    var acknowledged: [(client: UInt64, request: UInt64)] = []
    /// Each shared key's operations, for the linearizability check.
    var histories: [StoreKey: RegisterHistory] = [:]
    var lastFault: Instant = .zero
    var quiet = false
    var quietFailures = 0
    var quietPromotions = 0
    /// Planned switchovers the control server accepted (traced; the unit tests count them).
    var switchovers = 0
    /// The control server's detector: 18–40 ms of silence, against a 30 ms lease (a fast
    /// detector must not let a promotion overtake the old lease).
    var detection: Duration = .milliseconds(30)
    /// The lease: 30–90 ms, so often longer than the detector's silence (only the controller's
    /// wait for it keeps two primaries apart then).
    var lease: Duration = .milliseconds(30)

    /// Whether the servers elect through etcd (no control server).
    var useEtcd = false
    /// A planted bug of each server's etcd control plane.
    var etcdBug: EtcdControlPlane.Bug?
    /// Asynchronous replication with this lag bound; nil: synchronous.
    var maximumLag: UInt64?
    var mode: ReplicationMode { maximumLag.map { .asynchronous(maximumLag: $0) } ?? .synchronous }
    /// The etcd of an etcd run, its clock the simulation's.
    var etcd: MemoryEtcd?
    /// Each server's link to etcd, cut by the faults.
    var etcdLinks: [NodeID: SimulatedEtcdLink] = [:]
    /// Journaled runs: each server's journal, kept across its crashes.
    var journaled = false
    var journals: [NodeID: MemoryReplicaJournal] = [:]
    /// Journals created so far (each one's identity is its number).
    var journalsCreated: UInt64 = 0
    var etcdConfiguration: EtcdControlConfiguration {
        // A short lease (150 ms asked, etcd's floor 100 ms here) against the control server's
        // 30-90 ms: failovers within the three seconds of faults.
        EtcdControlConfiguration(
            cluster: "simulation", ttl: .milliseconds(150), interval: .milliseconds(30), safetyMargin: .milliseconds(5))
    }

    /// Each server's own clock: 1% fast to 1% slow (the controller's default drift bound), from
    /// an offset of up to half a second; a restarted server keeps its machine's clock.
    var clocks: [NodeID: DriftingClock] = [:]

    init(
        world: AsyncSimulation, serverBug: ServerCore.Bug?, controllerBug: FailoverController.Bug?, slowClocks: Bool
    ) {
        self.world = world
        self.serverBug = serverBug
        self.controllerBug = controllerBug
        self.slowClocks = slowClocks
    }

    var random: SimulationRandom {
        get { world.simulation.random }
        set { world.simulation.random = newValue }
    }

    func int(_ range: ClosedRange<Int>) -> Int { range.lowerBound + Int(random.next() % UInt64(range.count)) }

    /// `FT_FAILOVER_TRACE=1` prints the faults and the control server's commands; `2` also
    /// every message delivered (sender, receiver, type).
    static let tracing = ["1", "2"].contains(ProcessInfo.processInfo.environment["FT_FAILOVER_TRACE"])

    func trace(_ text: @autoclosure () -> String) {
        if Self.tracing { print("[\(world.simulation.now)] \(text())") }
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

    static func key(_ client: UInt64, _ request: UInt64) -> StoreKey { StoreKey("c\(client)-\(request)") ?? "k" }

    // MARK: Setup

    func run() async throws {
        servers = int(2...3) == 2 ? ["a", "b"] : ["a", "b", "c"]
        for server in servers {
            let drift = Double(int(-1000...1000)) / 100_000
            clocks[server] = DriftingClock(
                base: world.clock, rate: slowClocks ? 0.7 : 1 + drift, offset: .milliseconds(int(0...500)))
        }
        if ProcessInfo.processInfo.environment["FT_FAILOVER_TRACE"] == "2" {
            let world = self.world
            world.network.deliveryObserver = { envelope, node in
                print(
                    "[\(world.simulation.now)] \(envelope.from)->\(node) 0x\(String(envelope.message.type, radix: 16))")
            }
        }
        if int(0...3) == 0 {
            // A slow network (or starved processes): delays beyond the detector's silence, so
            // suspicion is often false and failovers follow one another.
            world.network.defaultConditions = Self.slow
        }
        detection = .milliseconds(int(18...40))
        lease = .milliseconds(int(30...90))
        try startControl()
        for server in servers { start(server) }
        let faultEnd = world.simulation.now + .seconds(3)
        // An operator asks the control server for planned switchovers, over the wire.
        let operatorNode: NodeID = "operator"
        world.network.restart(operatorNode)
        let operatorClient = FailoverClient(
            id: 99, transport: world.network.transport(for: operatorNode), servers: servers, controller: Self.control,
            clock: world.clock, timeout: .milliseconds(40), deadline: .milliseconds(200))
        let chaos = world.spawn { [unowned self] in await self.chaos(until: faultEnd, operator: operatorClient) }
        var clients: [Task<Void, Never>] = []
        let end = faultEnd + .seconds(3)
        for index in 0..<3 {
            let id = UInt64(index + 1)
            guard let node = NodeID("client\(index)") else { continue }
            world.network.restart(node)
            let client = FailoverClient(
                id: id, transport: world.network.transport(for: node), servers: servers, controller: Self.control,
                clock: world.clock, timeout: .milliseconds(40), deadline: .milliseconds(500))
            clients.append(world.spawn { [unowned self] in await self.workload(client, until: end) })
        }
        _ = await chaos.value
        world.network.heal()
        world.network.defaultConditions = Self.quiet
        for from in servers + [Self.control] {
            for to in servers + [Self.control] where from != to {
                world.network.setConditions(Self.quiet, from: from, to: to)
            }
        }
        for link in etcdLinks.values { link.isCut = false }
        etcd?.isReachable = true
        for server in servers where runtimes[server] == nil { start(server) }
        if controlServer == nil { try startControl() }
        // A second to settle, then the quiet phase counts.
        try? await world.clock.sleep(for: .seconds(1))
        quiet = true
        for client in clients { _ = await client.value }
        // The last writes reach the backups (at once in synchronous mode, a moment later in
        // asynchronous mode) before the final checks compare them.
        await sleep(.milliseconds(100))
        if violation == nil { checkAcknowledged() }
        for server in servers { tasks[server]?.cancel() }
        controlTask?.cancel()
    }

    func startControl() throws {
        if useEtcd {
            if etcd == nil { etcd = MemoryEtcd(clock: world.clock, minimumTTL: .milliseconds(100)) }
            return
        }
        world.network.restart(Self.control)
        let control = try FailoverControlServer(
            node: Self.control,
            configuration: .init(
                servers: servers, mode: mode, leaseDuration: lease, promotionLagLimit: maximumLag ?? 1000,
                minimumSyncBackups: 1, durableServers: journaled),
            transport: world.network.transport(for: Self.control),
            clock: world.clock, epochs: epochs, detectionTimeout: detection, bug: controllerBug, logger: Self.silent)
        control.trace = { [unowned self] line in trace("control: \(line)") }
        control.onCommand = { [unowned self] command in
            if case .renewLease = command, world.simulation.now < .zero + .milliseconds(1400) {
            } else {
                trace("control: \(command)")
            }
            guard case .promote(let to, let epoch, _, let minimum) = command else { return }
            observePromotion(to: to, epoch: epoch, minimumIndex: minimum.index)
        }
        controlServer = control
        controlTask = world.spawn { try await control.run() }
    }

    /// A promotion of `to` in `epoch` (the control server's command, or in an etcd run the
    /// server's own bind): one per epoch, to a server that holds every acknowledged write (if it
    /// holds at least `minimumIndex`, so that it takes the promotion), and few once quiet.
    func observePromotion(to: NodeID, epoch: UInt64, minimumIndex: UInt64) {
        if maximumLag == nil, promoted[epoch] == nil, let store = runtimes[to]?.unsafeCore.store,
            store.position.index >= minimumIndex,
            let missing = acknowledged.first(where: { store[Self.key($0.client, $0.request)] == nil })
        {
            // The server will take the promotion (it holds the minimum) but lacks an
            // acknowledged write: the controller chose a server that is not complete.
            fail(
                "no-acknowledged-write-lost",
                "\(to) promoted in epoch \(epoch) at \(store.position) lacks client \(missing.client) request "
                    + "\(missing.request), acknowledged before")
        }
        if let maximumLag, promoted[epoch] == nil, let store = runtimes[to]?.unsafeCore.store,
            store.position.index >= minimumIndex
        {
            // Asynchronous: each failover may lose at most the lag bound's worth.
            let promotions = UInt64(promoted.count + 1)
            let missing = acknowledged.filter { store[Self.key($0.client, $0.request)] == nil }
            if UInt64(missing.count) > maximumLag * promotions {
                fail(
                    "bounded-loss",
                    "\(to) promoted in epoch \(epoch) at \(store.position) lacks \(missing.count) acknowledged writes, "
                        + "more than \(maximumLag) for each of \(promotions) promotions")
            }
        }
        if let other = promoted[epoch], other != to {
            fail("one-promotion-per-epoch", "epoch \(epoch) promoted \(other), then \(to)")
        }
        if promoted[epoch] == nil, quiet {
            quietPromotions += 1
            if quietPromotions > 2 {
                fail(
                    "quiet-stability",
                    "\(quietPromotions) promotions in the quiet phase, the last \(to) in epoch \(epoch)")
            }
        }
        promoted[epoch] = to
    }

    func start(_ server: NodeID) {
        trace("start \(server)" + (journaled && journals[server] != nil ? " with its journal" : ""))
        world.network.restart(server)
        let runtime = FailoverServer(
            node: server, controller: Self.control, servers: servers,
            configuration: ServiceConfiguration(role: .backup, epoch: 0, host: "127.0.0.1", port: 7400),
            transport: world.network.transport(for: server),
            clock: clocks[server] ?? DriftingClock(base: world.clock, rate: 1),
            settings: ServerCore.Settings(mode: mode, minimumSyncBackups: 1),
            incarnation: random.next(),
            bug: serverBug, logger: Self.silent,
            bind: { [unowned self] configuration in
                trace("\(server) serves in epoch \(configuration.epoch)")
                if useEtcd { observePromotion(to: server, epoch: configuration.epoch, minimumIndex: 0) }
            },
            release: { [unowned self] in trace("\(server) steps down") }, controlPlane: etcdControlPlane(for: server),
            journal: journaled ? journal(for: server) : nil)
        if Self.tracing {
            let world = self.world
            runtime.unsafeCore.trace = { line in print("[\(world.simulation.now)] \(server) \(line)") }
        }
        runtime.afterEvent = { [unowned self] in checkServing() }
        runtimes[server] = runtime
        tasks[server] = world.spawn { try await runtime.run() }
    }

    /// A journaled run's journal of `server` (a new one after its disk was replaced).
    func journal(for server: NodeID) -> MemoryReplicaJournal {
        if let journal = journals[server] { return journal }
        // Identities from a counter, not the random source: the seeds' draws stay as they were.
        journalsCreated += 1
        let journal = MemoryReplicaJournal(identity: journalsCreated)
        journals[server] = journal
        return journal
    }

    /// In an etcd run, the server's side of the etcd control plane, on the server's own clock.
    func etcdControlPlane(for server: NodeID) -> EtcdControlPlane? {
        guard useEtcd, let etcd else { return nil }
        let link = etcdLinks[server] ?? SimulatedEtcdLink(etcd)
        etcdLinks[server] = link
        return EtcdControlPlane(
            node: server, etcd: link, configuration: etcdConfiguration,
            service: ServiceConfiguration(role: .backup, epoch: 0, host: "127.0.0.1", port: 7400),
            clock: clocks[server] ?? DriftingClock(base: world.clock, rate: 1), logger: Self.silent, bug: etcdBug)
    }

    func crash(_ server: NodeID) {
        trace(
            "crash \(server) (\(runtimes[server].map { "\($0.unsafeCore.role) at \($0.unsafeCore.store.position)" } ?? "-"))"
        )
        tasks.removeValue(forKey: server)?.cancel()
        runtimes[server] = nil
        world.network.crash(server)
        world.simulation.faults.nodeCrashes += 1
    }

    // MARK: Invariants

    /// After every event of every server: no two servers serve at once. (Serving starts only
    /// with an event, a promotion or a lease grant; time passing only ends it.)
    func checkServing() {
        // Each server by its own clock's reading at this instant.
        let now = world.simulation.now
        let serving = servers.filter { server in
            runtimes[server]?.unsafeServes(now: clocks[server]?.reading(at: now) ?? now) == true
        }
        checks += 1
        if serving.count > 1 {
            let epochs = serving.map { "\($0)@\(runtimes[$0]?.unsafeCore.epoch ?? 0)" }
            fail("one-server-serves", "\(epochs.joined(separator: " and ")) serve at once")
        }
    }

    func checkAcknowledged() {
        let primaries = servers.filter { runtimes[$0]?.unsafeCore.role == .primary }
        guard primaries.count == 1, let primary = primaries.first, let core = runtimes[primary]?.unsafeCore else {
            let states = servers.map { server in
                runtimes[server].map {
                    "\(server) \($0.unsafeCore.role)@\($0.unsafeCore.epoch) at \($0.unsafeCore.store.position)"
                }
                    ?? "\(server) down"
            }
            let controller = controlServer?.unsafeController
            fail(
                "quiet-progress",
                "no single primary at the end: \(states.joined(separator: ", ")); control epoch \(controller?.epoch ?? 0) "
                    + "\(controller?.waitingReason ?? "")")
            return
        }
        // Every live server that follows the primary has caught up with it after the quiet seconds.
        let state = core.store.snapshot()
        for server in servers where server != primary {
            guard let other = runtimes[server]?.unsafeCore, other.role == .backup, other.epoch == core.epoch else {
                continue
            }
            checks += 1
            if other.store.snapshot() != state {
                fail(
                    "backups-converge",
                    "\(server) at \(other.store.position) does not hold the state of primary \(primary) at "
                        + "\(core.store.position)")
                return
            }
        }
        // Asynchronous: a failover may lose what the new primary had not received yet, up to the
        // lag bound each.
        if let maximumLag {
            let promotions = UInt64(max(promoted.count, 1))
            let missing = acknowledged.filter { core.store[Self.key($0.client, $0.request)] == nil }
            checks += 1
            if UInt64(missing.count) > maximumLag * promotions {
                fail(
                    "bounded-loss",
                    "primary \(primary) at \(core.store.position) lacks \(missing.count) acknowledged writes, more "
                        + "than \(maximumLag) for each of \(promotions) promotions")
            }
            return
        }
        let holders = [primary] + core.syncSet
        for holder in holders {
            guard let store = runtimes[holder]?.unsafeCore.store else { continue }
            checks += 1
            if let lost = acknowledged.first(where: { store[Self.key($0.client, $0.request)] == nil }) {
                fail(
                    "no-acknowledged-write-lost",
                    "client \(lost.client) request \(lost.request) was acknowledged; \(holder) (of primary \(primary)) lacks it"
                )
                return
            }
        }
        checkHistories(primary: core.store)
    }

    // MARK: Faults

    func chaos(until end: Instant, operator operatorClient: FailoverClient) async {
        while world.simulation.now < end {
            // A sleep fails only once the run has ended (it stopped on an error): so does this.
            guard await sleep(random.duration(in: .milliseconds(100) ... .milliseconds(400))) else { return }
            if world.simulation.now >= end { break }
            guard let server = servers.randomElement(using: &random) else { continue }
            let downFor = random.duration(in: .milliseconds(10) ... .milliseconds(300))
            let kind = int(0...5)
            if kind <= 1, journaled, int(0...3) == 0 {
                // Journaled: the whole pair loses power at once; every server comes back on its
                // journal, and the control server (or, through etcd, a server the sync record
                // names by its journal) must fail over to one of the sync set.
                trace("power loss: every server down for \(downFor)")
                for each in servers where runtimes[each] != nil { crash(each) }
                if int(0...1) == 0 {
                    // One disk does not come back: every acknowledged write is on another.
                    trace("\(server)'s journal lost in the power loss")
                    journals[server] = nil
                }
                await sleep(downFor)
                for each in servers where world.simulation.now < end && runtimes[each] == nil {
                    start(each)
                    world.simulation.faults.nodeRestarts += 1
                }
                continue
            }
            switch kind {
            case 0, 1:
                // A server crashes; with memory lost, it comes back empty.
                guard runtimes[server] != nil else { continue }
                crash(server)
                if journaled, int(0...1) == 0 {
                    // Its disk is replaced too: it comes back empty.
                    trace("\(server)'s journal lost")
                    journals[server] = nil
                }
                await sleep(downFor)
                if world.simulation.now < end, runtimes[server] == nil {
                    start(server)
                    world.simulation.faults.nodeRestarts += 1
                }
            case 2 where useEtcd:
                // A server (the primary, say) cut from etcd only.
                trace("cut \(server) from etcd for \(downFor)")
                etcdLinks[server]?.isCut = true
                world.simulation.faults.partitions += 1
                await sleep(downFor)
                etcdLinks[server]?.isCut = false
            case 4 where useEtcd:
                // etcd unreachable for everyone.
                trace("etcd unreachable for \(downFor)")
                etcd?.isReachable = false
                world.simulation.faults.partitions += 1
                await sleep(downFor)
                etcd?.isReachable = true
            case 5 where useEtcd:
                // A planned switchover asked through etcd.
                guard let etcd else { continue }
                do {
                    let (from, epoch, target) = try await EtcdControlPlane.requestSwitchover(
                        etcd: etcd, configuration: etcdConfiguration, to: int(0...1) == 0 ? nil : server,
                        ttl: .milliseconds(500))
                    trace("operator: switchover from \(from)@\(epoch) to \(target) through etcd")
                    switchovers += 1
                } catch {
                    trace("operator: switchover through etcd: \(error)")
                }
            case 2:
                // The primary (or any server) cut from the control server only.
                trace("cut \(server) from control for \(downFor)")
                world.network.cut(from: server, to: Self.control)
                world.network.cut(from: Self.control, to: server)
                world.simulation.faults.partitions += 1
                await sleep(downFor)
                world.network.restore(from: server, to: Self.control)
                world.network.restore(from: Self.control, to: server)
            case 3:
                // A server cut from everyone.
                trace("cut \(server) from everyone for \(downFor)")
                let others = servers.filter { $0 != server } + [Self.control]
                for other in others {
                    world.network.cut(from: server, to: other)
                    world.network.cut(from: other, to: server)
                }
                etcdLinks[server]?.isCut = true
                world.simulation.faults.partitions += 1
                await sleep(downFor)
                etcdLinks[server]?.isCut = false
                for other in others {
                    world.network.restore(from: server, to: other)
                    world.network.restore(from: other, to: server)
                }
            case 4:
                // The control server crashes and restarts on its recorded epoch.
                trace("crash control for \(downFor)")
                controlTask?.cancel()
                controlServer = nil
                world.network.crash(Self.control)
                world.simulation.faults.nodeCrashes += 1
                await sleep(downFor)
                try? startControl()
            case 5:
                // A planned switchover, to this server or to the newest backup of the sync set
                // (refused when no primary serves or the target may not take over).
                let target: NodeID? = int(0...1) == 0 ? nil : server
                do {
                    let epoch = try await operatorClient.switchover(to: target)
                    trace("operator: switchover to \(target?.description ?? "the newest backup") in epoch \(epoch)")
                    switchovers += 1
                } catch {
                    trace("operator: switchover to \(target?.description ?? "the newest backup"): \(error)")
                }
            default:
                continue
            }
            // Time to recover (a backup catches up) before the next fault.
            guard await sleep(.milliseconds(300)) else { return }
        }
    }

    /// Sleeps in virtual time; false once the run has ended (every sleep then fails at once,
    /// so a loop must stop on it rather than spin).
    @discardableResult
    func sleep(_ duration: Duration) async -> Bool {
        do {
            try await world.clock.sleep(for: duration)
            return true
        } catch {
            return false
        }
    }

    // MARK: Workload

    func workload(_ client: FailoverClient, until end: Instant) async {
        // What this client last read of each shared key: its compare-and-sets expect it.
        var seen: [StoreKey: [UInt8]?] = [:]
        while world.simulation.now < end, violation == nil {
            let started = world.simulation.now
            let choice = int(0...9)
            let key = SharedRegisters.keys[int(0...SharedRegisters.keys.count - 1)]
            // The request number the client will use (execute and read each take the next).
            let request = await client.nextRequestNumber
            var operation: RegisterHistory.Operation?
            do {
                switch choice {
                case 0...3:
                    // A fresh key per write: at the end, every acknowledged one must be there.
                    _ = try await client.execute(.put(key: Self.key(client.id, request), value: [1]))
                    acknowledged.append((client.id, request))
                    if Self.tracing {
                        let primary = await client.primary
                        trace("client \(client.id) request \(request) acknowledged by \(primary?.name ?? "?")")
                    }
                case 4, 5:
                    let value = SharedRegisters.value(client: client.id, request: request)
                    operation = .write(value.id)
                    _ = try await client.execute(.put(key: key, value: value.bytes))
                    histories[key, default: RegisterHistory()].record(
                        .write(value.id), client: client.id, invoked: started, answered: world.simulation.now)
                case 6:
                    operation = .write(RegisterHistory.absent)
                    _ = try await client.execute(.delete(key: key))
                    histories[key, default: RegisterHistory()].record(
                        .write(RegisterHistory.absent), client: client.id, invoked: started,
                        answered: world.simulation.now)
                case 7:
                    // Expects what this client last read of the key.
                    let expected = seen[key] ?? nil
                    let value = SharedRegisters.value(client: client.id, request: request)
                    operation = .compareAndSet(
                        expected: SharedRegisters.id(of: expected), new: value.id, succeeded: nil)
                    let result = try await client.execute(
                        .compareAndSet(key: key, expected: expected, new: value.bytes))
                    histories[key, default: RegisterHistory()].record(
                        .compareAndSet(
                            expected: SharedRegisters.id(of: expected), new: value.id, succeeded: result == .applied),
                        client: client.id, invoked: started, answered: world.simulation.now)
                default:
                    let bytes = try await client.read(key)
                    seen[key] = bytes
                    histories[key, default: RegisterHistory()].record(
                        .read(SharedRegisters.id(of: bytes)), client: client.id, invoked: started,
                        answered: world.simulation.now)
                }
                if choice <= 7 {
                    // A write took effect: the server now refuses this client's older requests.
                    for key in histories.keys {
                        histories[key]?.closeOpenOperations(of: client.id, by: world.simulation.now)
                    }
                }
                operations += 1
                // A little think time: fewer events per seed, the same interleavings of interest.
                guard await sleep(random.duration(in: .zero ... .milliseconds(8))) else { break }
            } catch {
                if let operation {
                    // No answer: it may have taken effect, or may yet.
                    histories[key, default: RegisterHistory()].recordOpen(
                        operation, client: client.id, invoked: started, latest: nil)
                }
                if quiet, started >= world.simulation.now - .milliseconds(500) {
                    quietFailures += 1
                    if quietFailures > 3 {
                        fail(
                            "quiet-progress",
                            "client \(client.id) request \(request) failed in the quiet phase: \(error)")
                    }
                }
                // The run may have ended on an error: then every sleep fails, and so does this loop.
                guard await sleep(.zero) else { break }
            }
        }
        await client.close()
    }

    /// Every shared key's history, with the primary's final value as a last read, must have an
    /// order (per-key linearizability).
    func checkHistories(primary store: ReplicatedStore) {
        for key in SharedRegisters.keys {
            var history = histories[key] ?? RegisterHistory()
            let now = world.simulation.now
            history.record(.read(SharedRegisters.id(of: store[key])), client: 0, invoked: now, answered: now)
            checks += 1
            switch history.check() {
            case .linearizable:
                continue
            case .violation(let detail):
                fail("linearizable", "key \(key): \(detail)")
                return
            case .undecided(let steps):
                fail("linearizable", "key \(key): the search gave up after \(steps) steps")
                return
            }
        }
    }
}
