public import FaultToleranceCore
public import Logging
import NIOConcurrencyHelpers
public import ServiceLifecycle
import Synchronization

/// A witness for redundancy devices: when a device asks whether its partner is reachable, the
/// witness probes the partner and votes on what it sees.
///
/// A device that has lost every path to its partner cannot tell a dead partner from a cut
/// between the two; a quorum of witnesses elsewhere in the network can. If they still reach
/// the partner, the device releases redundancy instead of taking over, so a cut between the
/// pair alone never produces two operating sides.
///
/// A ServiceLifecycle `Service`.
public final class HeartbeatWitness: Service {
    private struct PendingProbe: Sendable {
        var asker: NodeID
        var partner: NodeID
        var round: UInt64
        var deadline: Instant
    }

    private let transport: any Transport
    private let probeTimeout: Duration
    private let clock: any RuntimeClock
    private let logger: Logger
    private let pending = NIOLockedValueBox<[UInt64: PendingProbe]>([:])
    private let random: NIOLockedValueBox<any RandomNumberGenerator & Sendable>
    private let requirement: HeartbeatService.TransportRequirement

    /// Creates a witness answering over `transport`; a partner that does not answer a probe
    /// within `probeTimeout` (or half the time the asking device waits, if shorter) is voted
    /// unreachable. The probe is sent again every 5 ms (or quarter of the timeout) until
    /// answered, so one lost datagram does not make a live partner look gone. `clock` is the
    /// time source (real time unless a simulation supplies its own).
    ///
    /// Probes carry random nonces drawn from `randomNumbers` (the system's generator unless a
    /// simulation supplies a seeded one), and only the probed partner's reply counts: a host
    /// that cannot see the probe cannot answer it. `requirement` is as for
    /// ``HeartbeatService``: a transport that does not authenticate senders makes ``run()``
    /// throw unless it is ``HeartbeatService/TransportRequirement/insecure``.
    public init(
        transport: any Transport, probeTimeout: Duration = .milliseconds(100),
        requirement: HeartbeatService.TransportRequirement = .authenticatedSenders,
        randomNumbers: any RandomNumberGenerator & Sendable = SystemRandomNumberGenerator(),
        clock: any RuntimeClock = SystemClock(), logger: Logger = Logger(label: "ft.witness")
    ) {
        self.requirement = requirement
        self.random = NIOLockedValueBox(randomNumbers)
        self.transport = transport
        self.probeTimeout = probeTimeout
        self.clock = clock
        self.logger = logger
    }

    /// Answers queries until cancelled or shut down gracefully; throws
    /// ``HeartbeatServiceError/Code/unauthenticatedTransport`` at once when the transport does
    /// not authenticate senders and the witness was not told it may run insecure.
    public func run() async throws {
        try requirement.check(transport)
        await withTaskGroup(of: Void.self) { group in
            group.addTask { await self.receive() }
            group.addTask { await self.expire() }
            await parkUntilShutdown()
            group.cancelAll()
        }
    }

    private func receive() async {
        for await envelope in transport.incoming {
            if Task.isCancelled { return }
            guard let message = try? HeartbeatMessage(envelope.message) else { continue }
            switch message {
            case .witnessQuery(let round, let partner, let answerWithin):
                // The vote must reach the asker before its round ends: wait for the probe
                // reply at most half of the asker's budget (the rest covers the query's and
                // the vote's trips), and never longer than this witness's own timeout.
                let timeout = min(probeTimeout, answerWithin / 2)
                let deadline = clock.now + timeout
                let nonce = pending.withLockedValue { pending in
                    var nonce = random.withLockedValue { $0.next() }
                    while pending[nonce] != nil { nonce &+= 1 }
                    pending[nonce] = PendingProbe(
                        asker: envelope.from, partner: partner, round: round, deadline: deadline)
                    return nonce
                }
                do {
                    try await transport.send(HeartbeatMessage.probe(nonce: nonce).message, to: partner)
                } catch {
                    // Cannot even send: the partner is unreachable from here.
                    await vote(nonce: nonce, reachable: false)
                }
            case .probeReply(let nonce):
                await vote(nonce: nonce, reachable: true, from: envelope.from)
            case .heartbeat, .witnessVote, .probe:
                continue
            }
        }
    }

    /// Votes "unreachable" on probes past their deadline and sends the others again: a probe
    /// or its reply is a datagram, and one lost on the way must not read as a dead partner
    /// (the simulation's corrupted datagrams showed a single lost probe confirming a live
    /// partner gone).
    private func expire() async {
        while !Task.isCancelled {
            let now = clock.now
            let (expired, waiting) = pending.withLockedValue { pending in
                (
                    pending.filter { $0.value.deadline <= now }.map(\.key).sorted(),
                    pending.filter { $0.value.deadline > now }.map { ($0.key, $0.value.partner) }.sorted { $0.0 < $1.0 }
                )
            }
            for nonce in expired { await vote(nonce: nonce, reachable: false) }
            for (nonce, partner) in waiting {
                try? await transport.send(HeartbeatMessage.probe(nonce: nonce).message, to: partner)
            }
            // Deadlines are checked every 5 ms (or a quarter of the timeout, if shorter).
            do { try await clock.sleep(for: min(probeTimeout / 4, .milliseconds(5))) } catch { return }
        }
    }

    /// Votes on the probe `nonce`; a reply (`from` set) counts only from the probed partner.
    private func vote(nonce: UInt64, reachable: Bool, from replier: NodeID? = nil) async {
        let taken = pending.withLockedValue { pending -> PendingProbe? in
            guard let probe = pending[nonce], replier == nil || replier == probe.partner else { return nil }
            return pending.removeValue(forKey: nonce)
        }
        guard let probe = taken else { return }
        logger.debug("witness vote", metadata: ["asker": "\(probe.asker)", "reachable": "\(reachable)"])
        try? await transport.send(
            HeartbeatMessage.witnessVote(roundNonce: probe.round, partnerReachable: reachable).message, to: probe.asker)
    }
}
