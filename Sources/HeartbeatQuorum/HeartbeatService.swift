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

    /// Creates the service. `selfCheck`, when given, runs every `selfCheckInterval` and
    /// reports whether this side's own links are up. `clock` is the time source (real time
    /// unless a simulation supplies its own).
    public init(
        configuration: HeartbeatConfiguration,
        partner: NodeID,
        transport: any Transport,
        selfCheck: (@Sendable () async -> Bool)? = nil,
        selfCheckInterval: Duration = .milliseconds(100),
        clock: any RuntimeClock = SystemClock(),
        logger: Logger = Logger(label: "ft.heartbeat")
    ) {
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
    }

    /// Plants a deliberately wrong rule in the service's evaluator, for simulations that
    /// must show they catch it (off unless a scenario turns it on).
    package func plant(_ bug: HeartbeatBug) {
        evaluator.withLockedValue { $0.plantedBug = bug }
    }

    /// Whether the partner's heartbeats carry this device's own priority: a misconfiguration
    /// (when both operate, neither yields), logged once as an error when first heard.
    public var partnerHasSamePriority: Bool { samePriority.load(ordering: .relaxed) }

    /// The device's current state.
    public var state: RedundancyState { evaluator.withLockedValue { $0.state } }

    /// The evidence the evaluator would give now: per-path health, phi and silence.
    public var evidence: Evidence {
        let now = self.now
        return evaluator.withLockedValue { $0.evidence(at: now) }
    }

    private var now: Instant { clock.now }

    /// Runs until cancelled or asked to shut down gracefully; then finishes ``transitions``.
    public func run() async throws {
        defer { continuation.finish() }
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
                guard envelope.from == partner, let path = envelope.path else { continue }
                if heartbeat.priority == configuration.priority,
                    !samePriority.exchange(true, ordering: .relaxed)
                {
                    logger.error(
                        "the partner has this device's priority: when both operate neither yields; give them different priorities",
                        metadata: ["partner": "\(partner)", "priority": "\(heartbeat.priority)"])
                }
                await perform(evaluator.withLockedValue { $0.heartbeatReceived(heartbeat, on: path, at: now) })
            case .witnessVote(let round, let reachable):
                guard configuration.witnesses.contains(envelope.from) else { continue }
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

    private func sendHeartbeats() async {
        let now = self.now
        let (state, hearing) = evaluator.withLockedValue { ($0.state, $0.pathsHearingPartner(at: now)) }
        let heartbeat = Heartbeat(
            state: state, priority: configuration.priority, pathsHearingReceiver: hearing,
            sequence: sequence.add(1, ordering: .relaxed).newValue)
        let message = HeartbeatMessage.heartbeat(heartbeat).message
        for path in configuration.paths.keys.sorted() {
            do {
                try await transport.send(message, to: partner, over: path)
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
                Counter(label: "ft_heartbeat_transitions", dimensions: [("to", transition.to.description)]).increment()
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
                // that does not vote.
                let query = HeartbeatMessage.witnessQuery(
                    round: round, partner: partner, answerWithin: configuration.witnessTimeout
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
