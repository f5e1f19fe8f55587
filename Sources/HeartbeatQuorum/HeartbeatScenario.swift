public import DeterministicSimulation
public import FaultToleranceCore

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
    /// The partner stops for less than the acceptable pause (a GC pause).
    case partnerPause = "partner-pause"
    /// The standby's own links fail and its self-check says so.
    case ownLinksFailing = "own-links-failing"
}

/// Two redundancy devices — A (priority 2, starts operating) and B (priority 1, standby) —
/// exchanging heartbeats every 10 ms over three paths in virtual time, with one
/// ``HeartbeatFault`` per seed.
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
    /// paths needed, 100 ms detection bound.
    public static func configuration(
        priority: UInt8,
        acceptablePause: Duration = .milliseconds(30),
        minimumDeviation: Duration = .milliseconds(2)
    ) throws(ConfigurationError) -> HeartbeatConfiguration {
        let detector = DetectorConfiguration.phiAccrual(
            threshold: 8, minimumStandardDeviation: minimumDeviation, acceptablePause: acceptablePause,
            maximumSilence: .milliseconds(60))
        return try HeartbeatConfiguration(
            paths: ["p1": detector, "p2": detector, "p3": detector], heartbeatInterval: .milliseconds(10), threshold: 2,
            detectionBound: .milliseconds(100), priority: priority)
    }

    /// Runs one seed; the report's `operations` counts transitions.
    public func run(seed: UInt64) -> SimulationReport {
        let world = HeartbeatWorld(
            seed: seed, bug: bug, fault: fault, acceptablePause: acceptablePause, minimumDeviation: minimumDeviation)
        world.start()
        world.simulation.run(until: Instant.zero + duration)
        return SimulationReport(
            seed: seed, faults: world.simulation.faults, invariantChecks: world.checks,
            operations: world.transitions.count,
            virtualTime: world.simulation.now.nanoseconds, events: world.simulation.eventsProcessed,
            violation: world.violation)
    }

    /// Runs one seed and returns every transition with its evidence, for demos.
    public func transitions(seed: UInt64) -> (
        fault: HeartbeatFault, transitions: [(NodeID, Transition)], violation: InvariantViolation?
    ) {
        let world = HeartbeatWorld(
            seed: seed, bug: bug, fault: fault, acceptablePause: acceptablePause, minimumDeviation: minimumDeviation)
        world.start()
        world.simulation.run(until: Instant.zero + duration)
        return (world.fault, world.transitions, world.violation)
    }

    /// Detection times after clean partner crashes over `seeds`, from the crash to the
    /// standby's takeover, for benchmarks.
    public func detectionTimes(seeds: some Sequence<UInt64>) -> [Duration] {
        seeds.compactMap { seed in
            let world = HeartbeatWorld(
                seed: seed, bug: bug, fault: .partnerCrash, acceptablePause: acceptablePause,
                minimumDeviation: minimumDeviation)
            world.start()
            world.simulation.run(until: Instant.zero + duration)
            return world.detectionTime
        }
    }
}

/// One simulated run.
final class HeartbeatWorld {
    let simulation: Simulation
    let network: SimulatedNetwork
    let fault: HeartbeatFault
    let nodes: [NodeID] = ["A", "B"]
    let pathIDs: [PathID] = ["p1", "p2", "p3"]
    var evaluators: [HeartbeatEvaluator?] = [nil, nil]
    var sequences: [UInt64] = [0, 0]
    var paused: [Bool] = [false, false]
    var selfHealthy: [Bool] = [true, true]
    var cuts: Set<String> = []  // "from>to@path"
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
    let bug: HeartbeatBug
    let configurations: [HeartbeatConfiguration]
    static let maximumDelay = Duration.milliseconds(2)

    let acceptablePause: Duration

    init(seed: UInt64, bug: HeartbeatBug, fault: HeartbeatFault?, acceptablePause: Duration, minimumDeviation: Duration)
    {
        self.acceptablePause = acceptablePause
        simulation = Simulation(seed: seed)
        self.bug = bug
        self.fault = fault ?? HeartbeatFault.allCases[Int(seed % UInt64(HeartbeatFault.allCases.count))]
        network = SimulatedNetwork(
            simulation: simulation,
            defaultConditions: LinkConditions(delay: .microseconds(100)...Self.maximumDelay))
        // safe: the scenario's configuration is a constant that validates.
        configurations = [2, 1].map { priority in
            try? HeartbeatScenario.configuration(
                priority: priority, acceptablePause: acceptablePause, minimumDeviation: minimumDeviation)
        }
        .compactMap { $0 }
        for (index, node) in nodes.enumerated() {
            network.attach(node) { [unowned self] envelope in received(index, envelope) }
        }
    }

    var grace: Duration { .milliseconds(60) + .milliseconds(10) * 4 + Self.maximumDelay * 2 }

    func start() {
        guard configurations.count == 2 else {
            violation = InvariantViolation(invariant: "configuration", detail: "invalid", at: simulation.now)
            return
        }
        for index in nodes.indices { boot(index) }
        simulation.schedule(after: .milliseconds(1)) { [unowned self] in check() }
        let at = simulation.random.duration(in: .milliseconds(800)...(.milliseconds(1500)))
        simulation.schedule(after: at) { [unowned self] in inject() }
    }

    func boot(_ index: Int) {
        var evaluator = HeartbeatEvaluator(configuration: configurations[index], at: simulation.now)
        evaluator.plantedBug = bug
        evaluators[index] = evaluator
        perform(index, evaluator.start())
        // Stagger the first heartbeat so the two senders do not tick in lockstep.
        let offset = simulation.random.duration(in: .zero...(.milliseconds(10)))
        simulation.schedule(after: offset, owner: nodes[index]) { [unowned self] in sendHeartbeats(index) }
    }

    func sendHeartbeats(_ index: Int) {
        guard let evaluator = evaluators[index] else { return }
        if !paused[index] {
            sequences[index] += 1
            let heartbeat = Heartbeat(
                state: evaluator.state, priority: evaluator.configuration.priority,
                pathsHearingReceiver: evaluator.pathsHearingPartner(at: simulation.now), sequence: sequences[index])
            for path in pathIDs {
                network.send(
                    HeartbeatMessage.heartbeat(heartbeat).message, from: nodes[index], to: nodes[1 - index], path: path)
            }
        }
        simulation.schedule(after: .milliseconds(10), owner: nodes[index]) { [unowned self] in sendHeartbeats(index) }
    }

    func received(_ index: Int, _ envelope: Envelope) {
        guard !paused[index], var evaluator = evaluators[index], let path = envelope.path,
            case .heartbeat(let heartbeat)? = try? HeartbeatMessage(envelope.message)
        else { return }
        let key = "\(envelope.from)>\(nodes[index])"
        if let last = lastDelivered[key], simulation.now - last > .milliseconds(60) {
            reachableSince[key] = simulation.now
        }
        if lastDelivered[key] == nil { reachableSince[key] = simulation.now }
        lastDelivered[key] = simulation.now
        let directives = evaluator.heartbeatReceived(heartbeat, on: path, at: simulation.now)
        evaluators[index] = evaluator
        perform(index, directives)
    }

    func tick(_ index: Int) {
        guard !paused[index], var evaluator = evaluators[index] else {
            if evaluators[index] != nil {
                simulation.schedule(after: .milliseconds(5), owner: nodes[index]) { [unowned self] in tick(index) }
            }
            return
        }
        let directives = evaluator.tick(at: simulation.now)
        evaluators[index] = evaluator
        perform(index, directives)
    }

    func perform(_ index: Int, _ directives: [HeartbeatEvaluator.Directive]) {
        for directive in directives {
            switch directive {
            case .scheduleTick(let delay):
                simulation.schedule(after: delay, owner: nodes[index]) { [unowned self] in tick(index) }
            case .transition(let transition):
                transitions.append((nodes[index], transition))
                observe(index, transition)
            case .alarm, .queryWitnesses:
                break
            }
        }
    }

    // MARK: Faults

    func cut(_ path: PathID, from: Int, to: Int) {
        network.cut(from: nodes[from], to: nodes[to], path: path)
        cuts.insert("\(from)>\(to)@\(path)")
    }

    func inject() {
        switch fault {
        case .partnerCrash:
            crash(0)
            simulation.schedule(after: .seconds(1)) { [unowned self] in restart(0) }
        case .cutOnePath:
            let path = pathIDs[Int.random(in: 0..<3, using: &simulation.random)]
            cut(path, from: 0, to: 1)
            cut(path, from: 1, to: 0)
        case .cutSeveralPaths:
            cut("p1", from: 0, to: 1)
            cut("p1", from: 1, to: 0)
            let gap = simulation.random.duration(in: .milliseconds(200)...(.milliseconds(400)))
            simulation.schedule(after: gap) { [unowned self] in
                cut("p2", from: 0, to: 1)
                cut("p2", from: 1, to: 0)
                simulation.schedule(after: gap) { [unowned self] in crash(0) }
            }
        case .cutAllPaths:
            for path in pathIDs {
                cut(path, from: 0, to: 1)
                cut(path, from: 1, to: 0)
            }
            let outage = simulation.random.duration(in: .milliseconds(200)...(.milliseconds(600)))
            simulation.schedule(after: outage) { [unowned self] in
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
            paused[0] = true
            let pause = simulation.random.duration(in: .milliseconds(1)...(acceptablePause - .milliseconds(5)))
            simulation.schedule(after: pause) { [unowned self] in paused[0] = false }
        case .ownLinksFailing:
            selfHealthy[1] = false
            for path in pathIDs {
                cut(path, from: 0, to: 1)
                cut(path, from: 1, to: 0)
            }
            if var evaluator = evaluators[1] {
                let directives = evaluator.selfCheck(healthy: false, at: simulation.now)
                evaluators[1] = evaluator
                perform(1, directives)
            }
        }
    }

    func crash(_ index: Int) {
        cleanCrash = cuts.isEmpty && evaluators[1 - index]?.state == .standby && index == 0
        crashAt = simulation.now
        evaluators[index] = nil
        simulation.cancelTimers(of: nodes[index])
        network.crash(nodes[index])
        simulation.faults.nodeCrashes += 1
        if cleanCrash {
            let deadline = configurations[1].detectionBound + Self.maximumDelay
            simulation.schedule(after: deadline) { [unowned self] in
                checks += 1
                if evaluators[1]?.state != .operating {
                    fail(
                        "dead-partner-detected-within-bound",
                        "B is \(evaluators[1].map { "\($0.state)" } ?? "down") \(deadline) after A crashed")
                }
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
        if violation == nil { violation = InvariantViolation(invariant: invariant, detail: detail, at: simulation.now) }
    }

    /// Whether `from`'s heartbeats have been reaching `to` for longer than a detection window.
    func establishedReachability(from: Int, to: Int) -> Bool {
        let key = "\(nodes[from])>\(nodes[to])"
        guard let last = lastDelivered[key], let since = reachableSince[key] else { return false }
        return simulation.now - last < .milliseconds(20) && simulation.now - since > grace
    }

    func observe(_ index: Int, _ transition: Transition) {
        checks += 1
        let partner = 1 - index
        if transition.to == .operating, evaluators[partner]?.state == .operating,
            establishedReachability(from: partner, to: index)
        {
            fail(
                "no-takeover-while-partner-reachable",
                "\(nodes[index]) became operating (\(transition.reason.rawValue)) while \(nodes[partner]) is operating and "
                    + "heard on some path; failed paths: \(transition.evidence.failedPathsSummary)")
        }
        if transition.to == .operating && index == 1 && detectionTime == nil, let crashAt, cleanCrash {
            detectionTime = simulation.now - crashAt
        }
        let degradation = Set([transition.from, transition.to]) == [.standby, .notStandby]
        if degradation {
            let configuration = configurations[index]
            if let previous = degradationTimes[index].last, simulation.now - previous < configuration.minimumDwell {
                fail("flap-damping", "\(nodes[index]) flapped after \(simulation.now - previous)")
            }
            degradationTimes[index].append(simulation.now)
            let recent = degradationTimes[index].filter { simulation.now - $0 < configuration.dampingWindow }
            if recent.count > configuration.maximumFlaps {
                fail("flap-damping", "\(nodes[index]) made \(recent.count) degradation transitions in one window")
            }
        }
    }

    func check() {
        checks += 1
        for index in nodes.indices where !selfHealthy[index] && evaluators[index]?.state == .operating {
            fail("isolated-side-never-operates", "\(nodes[index]) is operating with failing self-checks")
        }
        if evaluators[0]?.state == .operating && evaluators[1]?.state == .operating
            && (establishedReachability(from: 0, to: 1) || establishedReachability(from: 1, to: 0))
        {
            let since = bothOperatingSince ?? simulation.now
            bothOperatingSince = since
            if simulation.now - since > grace {
                fail(
                    "no-dual-operating-while-reachable",
                    "A and B both operating and in contact for \(simulation.now - since)")
            }
        } else {
            bothOperatingSince = nil
        }
        simulation.schedule(after: .milliseconds(2)) { [unowned self] in check() }
    }
}
