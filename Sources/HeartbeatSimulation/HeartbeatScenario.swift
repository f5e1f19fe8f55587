public import DeterministicSimulation
import FaultToleranceAuthentication
public import FaultToleranceCore
public import HeartbeatQuorum
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// The fault a ``HeartbeatScenario`` seed injects.
public enum HeartbeatFault: String, Sendable, Hashable, CaseIterable, Codable {
    /// The operating partner crashes (and later restarts).
    case partnerCrash = "partner-crash"
    /// One path is cut both ways.
    case cutOnePath = "cut-one-path"
    /// Two paths are cut, one after the other, then the partner crashes.
    case cutSeveralPaths = "cut-several-paths"
    /// Every path is cut at once, then healed.
    case cutAllPaths = "cut-all-paths"
    /// One path loses everything in one direction only.
    case asymmetricLoss = "asymmetric-loss"
    /// 5% loss and 20 ms of jitter on every path.
    case lossWithJitter = "loss-with-jitter"
    /// The partner stops for less than the acceptable pause (a GC pause): nothing it sends
    /// or is sent gets through meanwhile.
    case partnerPause = "partner-pause"
    /// The standby's own links fail and its self-check says so.
    case ownLinksFailing = "own-links-failing"
    /// With a witness configured, every path between the pair is cut while the witness still
    /// reaches both; later the partner really crashes.
    case pairCutWithWitness = "pair-cut-with-witness"
}

/// Two redundancy devices — A (priority 2, starts operating) and B (priority 1, standby) —
/// each a shipped ``HeartbeatQuorum/HeartbeatService`` exchanging heartbeats every 10 ms on
/// three paths of a simulated network in virtual time, with a
/// ``HeartbeatQuorum/HeartbeatWitness`` when the fault calls for one, and one
/// ``HeartbeatFault`` per seed. On every seed one datagram in a thousand also has a bit
/// flipped on the way, which the real frame check (CRC32C) must catch: the datagram is dropped,
/// as the UDP transport drops it.
///
/// The services run unchanged: their tasks run on an
/// ``DeterministicSimulation/AsyncSimulation``'s deterministic
/// executor, read its ``DeterministicSimulation/VirtualClock`` and talk through
/// ``DeterministicSimulation/SimulatedTransport``s, so a seed
/// replays the same interleaving of the real code.
///
/// Invariants:
/// - `no-takeover-while-partner-reachable`: a device never becomes operating while its
///   partner is alive, operating and delivering heartbeats to it on some path (for longer
///   than the detection window, so the device could know);
/// - `no-dual-operating-while-reachable`: both never stay operating longer than the grace
///   of one detection window while either hears the other;
/// - `isolated-side-never-operates`: a device whose self-check fails is never operating;
/// - `dead-partner-detected-within-bound`: after a clean partner crash the standby is
///   operating within the configured detection bound (plus the network's delay);
/// - `witness-veto`: while only the pair's own paths are cut and the witness reaches the
///   partner, the standby never becomes operating;
/// - `flap-damping`: degradation transitions respect the minimum dwell and the flap limit.
public struct HeartbeatScenario: Sendable {
    /// A planted rule error, or none.
    public var bug: HeartbeatBug
    /// Virtual time per seed.
    public var duration: Duration
    /// Restrict seeds to one fault kind (`nil`: the seed picks).
    public var fault: HeartbeatFault?
    /// The phi detector's acceptable pause (30 ms by default; the partner-pause fault stays
    /// below it).
    public var acceptablePause: Duration
    /// The phi detector's minimum standard deviation (2 ms by default).
    public var minimumDeviation: Duration

    /// Creates a scenario.
    public init(
        bug: HeartbeatBug = .none,
        duration: Duration = .seconds(3),
        fault: HeartbeatFault? = nil,
        acceptablePause: Duration = .milliseconds(30),
        minimumDeviation: Duration = .milliseconds(2)
    ) {
        self.minimumDeviation = minimumDeviation
        self.bug = bug
        self.duration = duration
        self.fault = fault
        self.acceptablePause = acceptablePause
    }

    /// The configuration both devices use: 10 ms heartbeats on three paths, phi accrual
    /// (threshold 8, the minimum deviation, the acceptable pause, 60 ms cap), two healthy
    /// paths needed, 100 ms detection bound — 200 ms when witnesses are asked, whose round
    /// (50 ms by default) comes on top.
    public static func configuration(
        priority: UInt8,
        acceptablePause: Duration = .milliseconds(30),
        minimumDeviation: Duration = .milliseconds(2),
        witnesses: [NodeID] = []
    ) throws(ConfigurationError) -> HeartbeatConfiguration {
        let detector = DetectorConfiguration.phiAccrual(
            threshold: 8, minimumStandardDeviation: minimumDeviation, acceptablePause: acceptablePause,
            maximumSilence: .milliseconds(60))
        return try HeartbeatConfiguration(
            paths: ["p1": detector, "p2": detector, "p3": detector], heartbeatInterval: .milliseconds(10), threshold: 2,
            detectionBound: witnesses.isEmpty ? .milliseconds(100) : .milliseconds(200), witnesses: witnesses,
            priority: priority)
    }

    /// The fault seed `seed` injects.
    public func fault(of seed: UInt64) -> HeartbeatFault {
        fault ?? HeartbeatFault.allCases[Int(seed % UInt64(HeartbeatFault.allCases.count))]
    }

    /// Runs one seed; the report's `operations` counts transitions.
    public func run(seed: UInt64) async -> SimulationReport {
        await record(seed: seed, fault: fault(of: seed)).report
    }

    /// Runs one seed and returns every transition with its evidence, for demos and replays.
    public func transitions(seed: UInt64) async -> (
        fault: HeartbeatFault, transitions: [(NodeID, Transition)], violation: InvariantViolation?
    ) {
        let run = await record(seed: seed, fault: fault(of: seed))
        return (run.fault, run.transitions, run.report.violation)
    }

    /// For each seed, the time from a clean crash of the operating partner to the standby's
    /// takeover, or `nil` when the standby never took over within the run (a failure the
    /// caller must count, not drop).
    public func detectionTimes(seeds: some Sequence<UInt64>) async -> [Duration?] {
        var times: [Duration?] = []
        for seed in seeds { times.append(await record(seed: seed, fault: .partnerCrash).detectionTime) }
        return times
    }

    private func record(seed: UInt64, fault: HeartbeatFault) async -> HeartbeatRun {
        let world = AsyncSimulation(
            seed: seed,
            linkConditions: LinkConditions(
                delay: .microseconds(100)...HeartbeatRun.maximumDelay,
                corruptionProbability: HeartbeatRun.corruptionProbability))
        let run = HeartbeatRun(world: world, scenario: self, fault: fault)
        let sink = RuntimeInvariantSink()
        do {
            try await RuntimeInvariants.$sink.withValue(sink) {
                try await world.run(timeLimit: duration + .seconds(1)) { try await run.run() }
            }
        } catch {
            run.fail("simulation", "\(error)")
        }
        if let broken = sink.firstViolation { run.fail("runtime-assertion", broken) }
        return run
    }
}

/// One simulated run: the services, the faults, the invariants. Lives on the simulation's
/// driver thread (every method runs in a job of the run), hence unchecked Sendable.
final class HeartbeatRun: @unchecked Sendable {
    static let maximumDelay = Duration.milliseconds(2)
    /// One datagram in a thousand has a bit flipped on the way; the frame check must drop it.
    static let corruptionProbability = 0.001
    /// Thousands of seeds would print every transition; the scenario records them instead.
    static let silent = Logger(label: "ft.heartbeat.simulation", factory: { _ in SwiftLogNoOpLogHandler() })

    let world: AsyncSimulation
    let scenario: HeartbeatScenario
    let fault: HeartbeatFault
    let nodes: [NodeID] = ["A", "B"]
    let pathIDs: [PathID] = ["p1", "p2", "p3"]
    var configurations: [HeartbeatConfiguration] = []
    var services: [HeartbeatService?] = [nil, nil]
    var tasks: [Task<Void, any Error>?] = [nil, nil]
    var transports: [AuthenticatedTransport?] = [nil, nil]
    /// The key every node seals with: the services run over authenticated transports, as
    /// `ftctl heartbeat run --key-file` does.
    static let keys = MessageKeys(sealing: MessageKey(id: 1, bytes: SIMD32(repeating: 0x42)))
    /// Sealed messages delivered so far (for the attacker to replay), and the payload
    /// checksums of what it injected (which the oracle must not count as delivered).
    var captured: [(Envelope, NodeID)] = []
    var injectedPayloads: [UInt32: Int] = [:]

    var witnessTask: Task<Void, any Error>?
    let selfHealthy = NIOLockedValueBox<[Bool]>([true, true])
    var cuts: Set<String> = []  // "from>to@path"
    var pairCutWithWitnessAlive = false
    var lastDelivered: [String: Instant] = [:]  // "from>to" → last heartbeat delivered
    var reachableSince: [String: Instant] = [:]
    var transitions: [(NodeID, Transition)] = []
    var degradationTimes: [[Instant]] = [[], []]
    var bothOperatingSince: Instant?
    var crashAt: Instant?
    var detectionTime: Duration?
    var cleanCrash = false
    var checks = 0
    var violation: InvariantViolation?
    var simulation: Simulation { world.simulation }
    var network: SimulatedNetwork { world.network }
    var now: Instant { world.clock.now }

    init(world: AsyncSimulation, scenario: HeartbeatScenario, fault: HeartbeatFault) {
        self.world = world
        self.scenario = scenario
        self.fault = fault
    }

    var report: SimulationReport {
        SimulationReport(
            seed: simulation.seed, faults: simulation.faults, invariantChecks: checks, operations: transitions.count,
            virtualTime: simulation.now.nanoseconds, events: simulation.eventsProcessed, violation: violation,
            traceHash: simulation.traceHash)
    }

    var grace: Duration { .milliseconds(60) + .milliseconds(10) * 4 + Self.maximumDelay * 2 }

    /// The body of the simulation: boots the pair, injects the fault, checks invariants
    /// every 2 ms, and stops everything at the scenario's duration.
    func run() async throws {
        let witnesses: [NodeID] = fault == .pairCutWithWitness ? ["W"] : []
        configurations = try [2, 1].map { (priority: UInt8) in
            try HeartbeatScenario.configuration(
                priority: priority, acceptablePause: scenario.acceptablePause,
                minimumDeviation: scenario.minimumDeviation, witnesses: witnesses)
        }
        network.deliveryObserver = { [unowned self] envelope, node in delivered(envelope, to: node) }
        if !witnesses.isEmpty {
            let witness = HeartbeatWitness(
                transport: AuthenticatedTransport(
                    network.transport(for: "W"), keys: Self.keys, counterStart: UInt64(now.nanoseconds) + 1),
                randomNumbers: SimulationRandom(seed: simulation.random.next()), clock: world.clock,
                logger: Self.silent)
            witnessTask = world.spawn { try await witness.run() }
        }
        for index in nodes.indices { boot(index) }
        world.spawn { [unowned self] in await attack() }
        let injectAt = now + simulation.random.duration(in: .milliseconds(800)...(.milliseconds(1500)))
        let end = Instant.zero + scenario.duration
        var injected = false
        while now < end {
            try await world.clock.sleep(for: .milliseconds(2))
            check()
            if !injected && now >= injectAt {
                injected = true
                inject()
            }
        }
        for index in nodes.indices { await stop(index) }
        witnessTask?.cancel()
        _ = await witnessTask?.result
    }

    func boot(_ index: Int) {
        // The counter starts at the virtual time: a restarted node continues above what its
        // previous life sent, as the wall clock does in production.
        let transport = AuthenticatedTransport(
            network.transport(for: nodes[index]), keys: Self.keys, counterStart: UInt64(now.nanoseconds) + 1)
        let healthy = selfHealthy
        let service = HeartbeatService(
            configuration: configurations[index], partner: nodes[1 - index], transport: transport,
            selfCheck: { healthy.withLockedValue { $0[index] } }, selfCheckInterval: .milliseconds(5),
            randomNumbers: SimulationRandom(seed: simulation.random.next()), clock: world.clock,
            logger: Self.silent)
        service.plant(scenario.bug)
        services[index] = service
        transports[index] = transport
        // Stagger the first heartbeat so the two senders do not tick in lockstep.
        let offset = simulation.random.duration(in: .zero...(.milliseconds(10)))
        let stream = service.transitions
        world.spawn { [unowned self] in
            for await transition in stream { observe(index, transition) }
        }
        tasks[index] = world.spawn { [world] in
            try await world.clock.sleep(for: offset)
            try await service.run()
        }
    }

    /// Stops node `index`'s service and closes its transport.
    func stop(_ index: Int) async {
        let task = tasks[index]
        let transport = transports[index]
        services[index] = nil
        tasks[index] = nil
        transports[index] = nil
        task?.cancel()
        _ = await task?.result
        simulation.faults.forgeriesRejected += transport?.rejected.values.reduce(0, +) ?? 0
        await transport?.close()
    }

    func delivered(_ envelope: Envelope, to node: NodeID) {
        let checksum = envelope.message.payload.readableBytesView.withUnsafeBytes { CRC32C.checksum($0) }
        if let count = injectedPayloads[checksum], count > 0 {
            // The attacker's: not evidence that the sender is alive.
            injectedPayloads[checksum] = count - 1
            return
        }
        // Everything the attacker sent was skipped above, so what is left is genuine: no need
        // to check its MAC again here (the receiving transport does).
        guard let content = AuthenticatedTransport.uncheckedContent(of: envelope.message) else { return }
        if captured.count < 64 { captured.append((envelope, node)) }
        guard case .heartbeat? = try? HeartbeatMessage(content) else { return }
        let key = "\(envelope.from)>\(node)"
        if let last = lastDelivered[key], now - last > .milliseconds(60) { reachableSince[key] = now }
        if lastDelivered[key] == nil { reachableSince[key] = now }
        lastDelivered[key] = now
    }

    // MARK: Faults

    /// An attacker on the network, in every seed: every 100-300 ms it sends a forged
    /// heartbeat ("operating, priority 255", not sealed) as each node's partner, and replays
    /// a sealed message captured earlier, from its sender to its receiver. The authenticated
    /// transports drop both; the invariants must hold as if the attacker were not there.
    func attack() async {
        while true {
            do {
                try await world.clock.sleep(
                    for: simulation.random.duration(in: .milliseconds(100)...(.milliseconds(300))))
            } catch { return }
            for index in nodes.indices {
                let forged = HeartbeatMessage.heartbeat(
                    Heartbeat(
                        state: .operating, priority: 255, pathsHearingReceiver: 3,
                        sequence: UInt64(simulation.faults.forgeriesInjected)))
                let path = pathIDs[Int(simulation.random.next() % UInt64(pathIDs.count))]
                inject(forged.message, from: nodes[1 - index], to: nodes[index], path: path)
            }
            if !captured.isEmpty {
                let (envelope, receiver) = captured[Int(simulation.random.next() % UInt64(captured.count))]
                inject(envelope.message, from: envelope.from, to: receiver, path: envelope.path)
            }
        }
    }

    func inject(_ message: Message, from sender: NodeID, to receiver: NodeID, path: PathID?) {
        let checksum = message.payload.readableBytesView.withUnsafeBytes { CRC32C.checksum($0) }
        injectedPayloads[checksum, default: 0] += 1
        simulation.faults.forgeriesInjected += 1
        // In the sender's name even when it is down: replaying a dead partner is the attack.
        network.inject(message, claimingToBe: sender, to: receiver, path: path)
    }

    func cut(_ path: PathID, from: Int, to: Int) {
        network.cut(from: nodes[from], to: nodes[to], path: path)
        cuts.insert("\(from)>\(to)@\(path)")
    }

    func cutPair() {
        for path in pathIDs {
            cut(path, from: 0, to: 1)
            cut(path, from: 1, to: 0)
        }
    }

    func inject() {
        switch fault {
        case .partnerCrash:
            crash(0)
            world.spawn { [unowned self] in
                try? await world.clock.sleep(for: .seconds(1))
                restart(0)
            }
        case .cutOnePath:
            let path = pathIDs[Int.random(in: 0..<3, using: &simulation.random)]
            cut(path, from: 0, to: 1)
            cut(path, from: 1, to: 0)
        case .cutSeveralPaths:
            cut("p1", from: 0, to: 1)
            cut("p1", from: 1, to: 0)
            let gap = simulation.random.duration(in: .milliseconds(200)...(.milliseconds(400)))
            world.spawn { [unowned self] in
                try? await world.clock.sleep(for: gap)
                cut("p2", from: 0, to: 1)
                cut("p2", from: 1, to: 0)
                try? await world.clock.sleep(for: gap)
                crash(0)
            }
        case .cutAllPaths:
            cutPair()
            let outage = simulation.random.duration(in: .milliseconds(200)...(.milliseconds(600)))
            world.spawn { [unowned self] in
                try? await world.clock.sleep(for: outage)
                network.heal()
                cuts.removeAll()
            }
        case .asymmetricLoss:
            let direction = Int.random(in: 0...1, using: &simulation.random)
            cut(pathIDs[Int.random(in: 0..<3, using: &simulation.random)], from: direction, to: 1 - direction)
        case .lossWithJitter:
            network.defaultConditions = LinkConditions(
                lossProbability: 0.05, delay: .microseconds(100)...(.milliseconds(20)))
        case .partnerPause:
            // A stopped process neither sends nor reads: both directions go quiet, not cut
            // (the pause is not a network fault the invariants should excuse).
            network.cut(from: "A", to: "B")
            network.cut(from: "B", to: "A")
            let pause = simulation.random.duration(in: .milliseconds(1)...(scenario.acceptablePause - .milliseconds(5)))
            world.spawn { [unowned self] in
                try? await world.clock.sleep(for: pause)
                network.restore(from: "A", to: "B")
                network.restore(from: "B", to: "A")
            }
        case .ownLinksFailing:
            selfHealthy.withLockedValue { $0[1] = false }
            cutPair()
        case .pairCutWithWitness:
            cutPair()
            pairCutWithWitnessAlive = true
            let outage = simulation.random.duration(in: .milliseconds(300)...(.milliseconds(800)))
            world.spawn { [unowned self] in
                try? await world.clock.sleep(for: outage)
                pairCutWithWitnessAlive = false
                // The partner really dies now: the witness stops reaching it, and the standby
                // must take over within the bound, witness round included.
                crash(0, clean: true)
            }
        }
    }

    func crash(_ index: Int, clean: Bool? = nil) {
        cleanCrash = clean ?? (cuts.isEmpty && services[1 - index]?.state == .standby && index == 0)
        crashAt = now
        network.crash(nodes[index])
        simulation.faults.nodeCrashes += 1
        world.spawn { [unowned self] in await stop(index) }
        guard cleanCrash else { return }
        let deadline = configurations[1].detectionBound + Self.maximumDelay
        world.spawn { [unowned self] in
            try? await world.clock.sleep(for: deadline)
            checks += 1
            if services[1]?.state != .operating {
                fail(
                    "dead-partner-detected-within-bound",
                    "B is \(services[1].map { "\($0.state)" } ?? "down") \(deadline) after A crashed")
            }
        }
    }

    func restart(_ index: Int) {
        network.restart(nodes[index])
        simulation.faults.nodeRestarts += 1
        boot(index)
    }

    // MARK: Invariants

    func fail(_ invariant: String, _ detail: String) {
        if violation == nil { violation = InvariantViolation(invariant: invariant, detail: detail, at: now) }
    }

    /// Whether `from`'s heartbeats have been reaching `to` for longer than a detection window.
    func establishedReachability(from: Int, to: Int) -> Bool {
        let key = "\(nodes[from])>\(nodes[to])"
        guard let last = lastDelivered[key], let since = reachableSince[key] else { return false }
        return now - last < .milliseconds(20) && now - since > grace
    }

    func observe(_ index: Int, _ transition: Transition) {
        checks += 1
        transitions.append((nodes[index], transition))
        let partner = 1 - index
        if transition.to == .operating, services[partner]?.state == .operating,
            establishedReachability(from: partner, to: index)
        {
            fail(
                "no-takeover-while-partner-reachable",
                "\(nodes[index]) became operating (\(transition.reason.rawValue)) while \(nodes[partner]) is operating and "
                    + "heard on some path; failed paths: \(transition.evidence.failedPathsSummary)")
        }
        if transition.to == .operating, index == 1, pairCutWithWitnessAlive, services[0] != nil {
            fail(
                "witness-veto",
                "B became operating (\(transition.reason.rawValue)) while only the pair's paths were cut and the "
                    + "witness reached A; votes: \(transition.evidence.witnessVotes)")
        }
        if transition.to == .operating && index == 1 && detectionTime == nil, let crashAt, cleanCrash {
            detectionTime = now - crashAt
        }
        let degradation = Set([transition.from, transition.to]) == [.standby, .notStandby]
        if degradation {
            let configuration = configurations[index]
            if let previous = degradationTimes[index].last, now - previous < configuration.minimumDwell {
                fail("flap-damping", "\(nodes[index]) flapped after \(now - previous)")
            }
            degradationTimes[index].append(now)
            let recent = degradationTimes[index].filter { now - $0 < configuration.dampingWindow }
            if recent.count > configuration.maximumFlaps {
                fail("flap-damping", "\(nodes[index]) made \(recent.count) degradation transitions in one window")
            }
        }
    }

    func check() {
        checks += 1
        let healthy = selfHealthy.withLockedValue { $0 }
        for index in nodes.indices where !healthy[index] && services[index]?.state == .operating {
            fail("isolated-side-never-operates", "\(nodes[index]) is operating with failing self-checks")
        }
        if services[0]?.state == .operating && services[1]?.state == .operating
            && (establishedReachability(from: 0, to: 1) || establishedReachability(from: 1, to: 0))
        {
            let since = bothOperatingSince ?? now
            bothOperatingSince = since
            if now - since > grace {
                fail("no-dual-operating-while-reachable", "A and B both operating and in contact for \(now - since)")
            }
        } else {
            bothOperatingSince = nil
        }
    }
}
