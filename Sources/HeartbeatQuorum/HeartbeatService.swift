public import FaultToleranceCore
public import Logging
import Metrics
import NIOConcurrencyHelpers
public import ServiceLifecycle
import Synchronization

/// The runtime of a redundancy device: sends heartbeats on every path of a
/// ``FaultToleranceCore/Transport`` (normally a `UDPTransport` with one local address per
/// path), feeds what arrives to a ``HeartbeatEvaluator``, ticks it, runs the local
/// self-check, and publishes every transition.
///
/// Time comes from the injected ``FaultToleranceCore/RuntimeClock``: a `SystemClock` in
/// production, a `VirtualClock` under `DeterministicSimulation`, where this same code runs in
/// virtual time (the service starts no unstructured tasks, so every task it runs inherits
/// the simulation's executor).
///
/// A ServiceLifecycle `Service`: add it to a `ServiceGroup`, and it stops on graceful
/// shutdown or cancellation. Metrics: `ft_heartbeat_phi` (gauge, per path),
/// `ft_heartbeat_healthy_paths`, `ft_heartbeat_state` (the state's raw value) and
/// `ft_heartbeat_transitions` (counter, by target state).
public final class HeartbeatService: Service {
    /// What a service (or a witness) demands of its transport.
    public enum TransportRequirement: Sendable, Hashable {
        /// The transport must prove every sender (``FaultToleranceCore/Transport/authenticatesSenders``:
        /// an `AuthenticatedTransport`, a TCP transport over mutual TLS). The default: over
        /// a bare transport, one forged heartbeat can make a live primary yield or keep a dead
        /// one "alive" (see the trust model).
        case authenticatedSenders
        /// Any transport, for networks the program trusts entirely; said explicitly.
        case insecure

        func check(_ transport: any Transport) throws(HeartbeatServiceError) {
            guard self == .insecure || transport.authenticatesSenders else {
                throw HeartbeatServiceError(
                    .unauthenticatedTransport,
                    detail:
                        "\(type(of: transport)) does not authenticate senders: wrap it in an AuthenticatedTransport, "
                        + "or pass requirement: .insecure")
            }
        }
    }

    /// How the configuration's paths map onto the transport's.
    public enum PathMapping: Sendable, Hashable {
        /// Each configured path is one of the transport's paths (a `UDPTransport` with a
        /// socket per path): heartbeats go out on every path, and each arriving one counts on
        /// the path it came in on. The default.
        case transportPaths
        /// The transport has one unnamed path (a `TCPTransport`, or a
        /// ``FaultToleranceCore/TransportDemultiplexer`` channel over one): the configuration
        /// must have exactly one path, which stands for it. Heartbeats are sent without a path,
        /// and those arriving without one count on it. One path judges the partner by itself:
        /// the threshold is 1, and a cut link is indistinguishable from a dead partner.
        case singleUnnamedPath
    }

    /// The device's partner.
    public let partner: NodeID
    /// Every transition, with its evidence, as it happens.
    public let transitions: AsyncStream<Transition>

    private let configuration: HeartbeatConfiguration
    private let transport: any Transport
    private let selfCheck: (@Sendable () async -> Bool)?
    private let selfCheckInterval: Duration
    private let logger: Logger
    private let continuation: AsyncStream<Transition>.Continuation
    private let clock: any RuntimeClock
    private let evaluator: NIOLockedValueBox<HeartbeatEvaluator>
    private let sequence = Atomic<UInt64>(0)
    private let samePriority = Atomic<Bool>(false)
    private let phiGauges: [PathID: Gauge]
    private let healthyGauge: Gauge
    private let stateGauge: Gauge
    private let transitionCounters: [RedundancyState: Counter]
    private let votesRefused: CountingCounter
    private let requirement: TransportRequirement
    private let pathMapping: PathMapping
    private let random: NIOLockedValueBox<any RandomNumberGenerator & Sendable>
    /// The nonce each recent witness round's query carried, and the round it stands for.
    private let roundNonces = NIOLockedValueBox<[UInt64: UInt64]>([:])

    /// Creates the service. `selfCheck`, when given, runs every `selfCheckInterval` and
    /// reports whether this side's own links are up. `clock` is the time source (real time
    /// unless a simulation supplies its own).
    ///
    /// `pathMapping` says whether the configuration's paths are the transport's own
    /// (``PathMapping/transportPaths``, the default) or one path stands for a transport
    /// without paths (``PathMapping/singleUnnamedPath``).
    ///
    /// `requirement` (``TransportRequirement/authenticatedSenders`` by default) makes
    /// ``run()`` throw over a transport that does not prove its senders, unless it is
    /// ``TransportRequirement/insecure``. Each witness round's query carries a random nonce
    /// from `randomNumbers` (the system's generator unless a simulation supplies a seeded one),
    /// and only votes that echo the nonce of a recent round count.
    public init(
        configuration: HeartbeatConfiguration,
        partner: NodeID,
        transport: any Transport,
        requirement: TransportRequirement = .authenticatedSenders,
        pathMapping: PathMapping = .transportPaths,
        selfCheck: (@Sendable () async -> Bool)? = nil,
        selfCheckInterval: Duration = .milliseconds(100),
        randomNumbers: any RandomNumberGenerator & Sendable = SystemRandomNumberGenerator(),
        clock: any RuntimeClock = SystemClock(),
        logger: Logger = Logger(label: "ft.heartbeat")
    ) {
        self.requirement = requirement
        self.pathMapping = pathMapping
        self.random = NIOLockedValueBox(randomNumbers)
        self.configuration = configuration
        self.partner = partner
        self.transport = transport
        self.selfCheck = selfCheck
        self.selfCheckInterval = selfCheckInterval
        self.logger = logger
        (transitions, continuation) = AsyncStream.makeStream(of: Transition.self)
        self.clock = clock
        evaluator = NIOLockedValueBox(HeartbeatEvaluator(configuration: configuration, at: clock.now))
        let node = transport.localNode.name
        var gauges: [PathID: Gauge] = [:]
        for path in configuration.paths.keys {
            gauges[path] = Gauge(label: "ft_heartbeat_phi", dimensions: [("node", node), ("path", path.name)])
        }
        phiGauges = gauges
        healthyGauge = Gauge(label: "ft_heartbeat_healthy_paths", dimensions: [("node", node)])
        stateGauge = Gauge(label: "ft_heartbeat_state", dimensions: [("node", node)])
        var counters: [RedundancyState: Counter] = [:]
        for state in RedundancyState.allCases {
            counters[state] = Counter(
                label: "ft_heartbeat_transitions", dimensions: [("node", node), ("to", state.description)])
        }
        transitionCounters = counters
        votesRefused = CountingCounter(
            Counter(label: "ft_heartbeat_witness_votes_refused", dimensions: [("node", node)]))
    }

    /// Plants a deliberately wrong rule in the service's evaluator, for simulations that
    /// must show they catch it (off unless a scenario turns it on).
    package func plant(_ bug: HeartbeatBug) {
        evaluator.withLockedValue { $0.plantedBug = bug }
    }

    /// Whether the partner's heartbeats carry this device's own priority: a misconfiguration
    /// (when both operate, neither yields), logged once as an error when first heard.
    public var partnerHasSamePriority: Bool { samePriority.load(ordering: .relaxed) }

    /// Witness votes refused: from a node that is not a configured witness, or echoing a
    /// nonce no recent query carried (the `ft_heartbeat_witness_votes_refused` metric).
    public var witnessVotesRefused: Int { votesRefused.value }

    /// The device's current state.
    public var state: RedundancyState { evaluator.withLockedValue { $0.state } }

    /// The evidence the evaluator would give now: per-path health, phi and silence.
    public var evidence: Evidence {
        let now = self.now
        return evaluator.withLockedValue { $0.evidence(at: now) }
    }

    private var now: Instant { clock.now }

    /// Runs until cancelled or asked to shut down gracefully; then finishes ``transitions``.
    /// Throws ``HeartbeatServiceError/Code/unauthenticatedTransport`` at once when the
    /// transport does not authenticate senders and the service was not told it may run
    /// insecure, and ``HeartbeatServiceError/Code/pathMismatch`` when
    /// ``PathMapping/singleUnnamedPath`` is asked of a configuration with several paths.
    public func run() async throws {
        defer { continuation.finish() }
        try requirement.check(transport)
        if pathMapping == .singleUnnamedPath, configuration.paths.count != 1 {
            throw HeartbeatServiceError(
                .pathMismatch,
                detail:
                    "a transport without paths carries one path, and the configuration has \(configuration.paths.count)"
            )
        }
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.receive() }
            group.addTask {
                await self.repeatEvery(self.configuration.heartbeatInterval) { await self.sendHeartbeats() }
            }
            group.addTask { await self.repeatEvery(self.configuration.tickInterval) { await self.tick() } }
            if let selfCheck {
                group.addTask {
                    await self.repeatEvery(self.selfCheckInterval) {
                        let healthy = await selfCheck()
                        let now = self.now
                        await self.perform(self.evaluator.withLockedValue { $0.selfCheck(healthy: healthy, at: now) })
                    }
                }
            }
            // Park until graceful shutdown (returns) or cancellation (throws); the work happens
            // in the tasks above.
            await parkUntilShutdown()
            group.cancelAll()
        }
    }

    private func repeatEvery(_ interval: Duration, _ body: @Sendable () async -> Void) async {
        var next = clock.now
        while !Task.isCancelled {
            await body()
            next = next + interval
            if next < clock.now { next = clock.now }
            do { try await clock.sleep(until: next) } catch { return }
        }
    }

    private func receive() async {
        for await envelope in transport.incoming {
            if Task.isCancelled { return }
            // Heartbeats come from the partner, votes from witnesses; probes from any witness
            // of the partner, which this side cannot list, so they are answered for anyone.
            let decoded: HeartbeatMessage
            do {
                decoded = try HeartbeatMessage(envelope.message)
            } catch {
                logger.debug(
                    "ignored a malformed heartbeat", metadata: ["from": "\(envelope.from)", "error": "\(error)"])
                continue
            }
            let now = self.now
            switch decoded {
            case .heartbeat(let heartbeat):
                guard envelope.from == partner, let path = configuredPath(envelope.path) else { continue }
                if heartbeat.priority == configuration.priority,
                    !samePriority.exchange(true, ordering: .relaxed)
                {
                    logger.error(
                        "the partner has this device's priority: when both operate neither yields; give them different priorities",
                        metadata: ["partner": "\(partner)", "priority": "\(heartbeat.priority)"])
                }
                await perform(evaluator.withLockedValue { $0.heartbeatReceived(heartbeat, on: path, at: now) })
            case .witnessVote(let nonce, let reachable):
                guard configuration.witnesses.contains(envelope.from),
                    let round = roundNonces.withLockedValue({ $0[nonce] })
                else {
                    // Not a witness, or a nonce no recent query carried: forged or stale.
                    votesRefused.increment()
                    continue
                }
                await perform(
                    evaluator.withLockedValue {
                        $0.witnessVote(from: envelope.from, round: round, partnerReachable: reachable, at: now)
                    })
            case .probe(let nonce):
                // A witness checking that this device is alive: answer on the same path.
                try? await transport.send(
                    HeartbeatMessage.probeReply(nonce: nonce).message, to: envelope.from, over: envelope.path)
            case .witnessQuery, .probeReply:
                continue
            }
        }
    }

    /// The configured path an envelope that came over `path` counts on.
    private func configuredPath(_ path: PathID?) -> PathID? {
        switch pathMapping {
        case .transportPaths: path
        case .singleUnnamedPath: path == nil ? configuration.paths.keys.first : nil
        }
    }

    private func sendHeartbeats() async {
        let now = self.now
        let (state, hearing) = evaluator.withLockedValue { ($0.state, $0.pathsHearingPartner(at: now)) }
        let heartbeat = Heartbeat(
            state: state, priority: configuration.priority, pathsHearingReceiver: hearing,
            sequence: sequence.add(1, ordering: .relaxed).newValue)
        let message = HeartbeatMessage.heartbeat(heartbeat).message
        for path in configuration.paths.keys.sorted() {
            do {
                try await transport.send(message, to: partner, over: pathMapping == .transportPaths ? path : nil)
            } catch {
                // A closed or unreachable path is exactly what the partner's detector measures.
                logger.trace("heartbeat not sent", metadata: ["path": "\(path)", "error": "\(error)"])
            }
        }
    }

    private func tick() async {
        let now = self.now
        let (directives, evidence) = evaluator.withLockedValue { evaluator in
            (evaluator.tick(at: now), evaluator.evidence(at: now))
        }
        for path in evidence.paths { phiGauges[path.path]?.record(path.phi) }
        healthyGauge.record(evidence.healthyCount)
        await perform(directives)
    }

    private func perform(_ directives: [HeartbeatEvaluator.Directive]) async {
        for directive in directives {
            switch directive {
            case .transition(let transition):
                stateGauge.record(Int(transition.to.rawValue))
                transitionCounters[transition.to]?.increment()
                logger.notice(
                    "redundancy state changed",
                    metadata: [
                        "from": "\(transition.from)", "to": "\(transition.to)",
                        "reason": "\(transition.reason.rawValue)",
                        "healthy": "\(transition.evidence.healthyCount)/\(transition.evidence.paths.count)",
                        "failed": "\(transition.evidence.failedPathsSummary)",
                    ])
                continuation.yield(transition)
            case .alarm(let reason, let evidence):
                logger.warning(
                    "redundancy released",
                    metadata: ["reason": "\(reason.rawValue)", "failed": "\(evidence.failedPathsSummary)"])
            case .queryWitnesses(let round):
                // Sent inline (datagrams do not wait long); an unreachable witness is one
                // that does not vote. The query carries a fresh random nonce for the round
                // (the last four rounds' are kept), so a vote cannot be forged by counting.
                let nonce = roundNonces.withLockedValue { nonces in
                    var nonce = random.withLockedValue { $0.next() }
                    while nonces[nonce] != nil { nonce &+= 1 }
                    nonces = nonces.filter { $0.value + 4 > round }
                    nonces[nonce] = round
                    return nonce
                }
                let query = HeartbeatMessage.witnessQuery(
                    roundNonce: nonce, partner: partner, answerWithin: configuration.witnessTimeout
                ).message
                for witness in configuration.witnesses {
                    do {
                        try await transport.send(query, to: witness)
                    } catch {
                        logger.debug(
                            "witness query not sent", metadata: ["witness": "\(witness)", "error": "\(error)"])
                    }
                }
            case .scheduleTick:
                // The runtime ticks at the configured rate already.
                break
            }
        }
    }
}

/// Why a heartbeat service or witness cannot run.
public struct HeartbeatServiceError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// The transport does not authenticate senders and
        /// ``HeartbeatService/TransportRequirement/insecure`` was not chosen.
        public static let unauthenticatedTransport = Code("unauthenticatedTransport")
        /// ``HeartbeatService/PathMapping/singleUnnamedPath`` over a configuration that does
        /// not have exactly one path.
        public static let pathMismatch = Code("pathMismatch")

        /// The code's name.
        public var description: String { name }
    }

    /// The kind of failure.
    public var code: Code
    /// More detail for people.
    public var detail: String

    /// Creates an error.
    public init(_ code: Code, detail: String) {
        self.code = code
        self.detail = detail
    }

    /// One line naming the code and the detail.
    public var description: String { "heartbeat service error \(code): \(detail)" }
}
