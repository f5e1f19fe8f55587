public import FaultToleranceCore
import NIOCore

/// How one direction of a simulated link behaves.
public struct LinkConditions: Sendable, Hashable {
    /// Probability that a message is lost.
    public var lossProbability: Double
    /// Probability that a message is delivered twice.
    public var duplicateProbability: Double
    /// Probability that a message is held back by ``reorderDelay`` on top of its delay, so
    /// later messages overtake it.
    public var reorderProbability: Double
    /// The range each message's delay is drawn from, uniformly.
    public var delay: ClosedRange<Duration>
    /// The extra delay of a reordered message.
    public var reorderDelay: Duration
    /// Probability that a message's bytes are damaged on the way (one bit flipped in its
    /// frame). The receiving side checks the frame the way the real transports do (CRC32C
    /// over header and payload, ``FaultToleranceCore/FrameDecoder``), so the damage is
    /// detected and the message dropped, as the UDP transport drops a bad datagram.
    public var corruptionProbability: Double
    /// The link's rate in bytes per second (frame bytes: header, sender name, payload), or
    /// `nil` for no limit. Messages on a link leave one after another, and
    /// ``SimulatedTransport/send(_:to:over:)`` returns when its message has left: the
    /// back-pressure of a socket whose buffer is full.
    public var bandwidth: Double?

    /// Creates link conditions.
    public init(
        lossProbability: Double = 0,
        duplicateProbability: Double = 0,
        reorderProbability: Double = 0,
        delay: ClosedRange<Duration> = .milliseconds(1) ... .milliseconds(1),
        reorderDelay: Duration = .milliseconds(20),
        corruptionProbability: Double = 0,
        bandwidth: Double? = nil
    ) {
        self.corruptionProbability = corruptionProbability
        self.bandwidth = bandwidth
        self.lossProbability = lossProbability
        self.duplicateProbability = duplicateProbability
        self.reorderProbability = reorderProbability
        self.delay = delay
        self.reorderDelay = reorderDelay
    }

    /// A perfect link with a 1 ms delay.
    public static let reliable = LinkConditions()
}

/// A network of simulated nodes in virtual time: per-link loss, delay, duplication and
/// reordering drawn from the simulation's seed, symmetric and one-way partitions, and
/// crashed nodes that receive nothing.
///
/// Messages are real ``FaultToleranceCore/Message`` values (`ByteBuffer` payloads), so the code under test
/// encodes and decodes its actual wire format in simulation too.
public final class SimulatedNetwork {
    private struct LinkKey: Hashable {
        var from: NodeID
        var to: NodeID
        var path: PathID?
    }

    fileprivate let simulation: Simulation
    private var busyUntil: [LinkKey: Instant] = [:]
    private var handlers: [NodeID: (Envelope) -> Void] = [:]
    private var conditions: [LinkKey: LinkConditions] = [:]
    private var blocked: Set<LinkKey> = []
    private var down: Set<NodeID> = []
    fileprivate var endpoints: [NodeID: AsyncQueue<Envelope>] = [:]
    fileprivate var endpointGenerations: [NodeID: UInt64] = [:]
    fileprivate var endpointGeneration: UInt64 = 0

    /// Called with every message as it is delivered, and the node it is delivered to: a
    /// scenario's view of what really arrived, for its invariants.
    public var deliveryObserver: ((Envelope, NodeID) -> Void)?

    /// The conditions of every link without its own.
    public var defaultConditions: LinkConditions

    /// Creates a network in `simulation`.
    public init(simulation: Simulation, defaultConditions: LinkConditions = .reliable) {
        self.simulation = simulation
        self.defaultConditions = defaultConditions
    }

    /// Attaches `node`; `handler` receives every message delivered to it while it is up.
    public func attach(_ node: NodeID, handler: @escaping (Envelope) -> Void) {
        handlers[node] = handler
        down.remove(node)
    }

    /// Removes `node` from the network: nothing is delivered to it any more.
    public func detach(_ node: NodeID) {
        handlers[node] = nil
    }

    /// Marks `node` as crashed: messages to it, and whatever it still tries to send, are
    /// dropped until ``restart(_:)``.
    public func crash(_ node: NodeID) {
        down.insert(node)
    }

    /// Brings a crashed node back; it receives messages sent from now on.
    public func restart(_ node: NodeID) {
        down.remove(node)
    }

    /// Whether `node` is up.
    public func isUp(_ node: NodeID) -> Bool { !down.contains(node) && handlers[node] != nil }

    /// Sets the conditions of the one-way link `from` → `to` (on `path`, or every path).
    public func setConditions(_ link: LinkConditions, from: NodeID, to: NodeID, path: PathID? = nil) {
        conditions[LinkKey(from: from, to: to, path: path)] = link
    }

    /// Cuts the one-way link `from` → `to` (on `path`, or every path): an asymmetric
    /// partition.
    public func cut(from: NodeID, to: NodeID, path: PathID? = nil) {
        blocked.insert(LinkKey(from: from, to: to, path: path))
        simulation.faults.partitions += 1
    }

    /// Cuts every link between the two groups, both ways.
    public func partition(_ side: [NodeID], from other: [NodeID]) {
        for a in side {
            for b in other {
                blocked.insert(LinkKey(from: a, to: b, path: nil))
                blocked.insert(LinkKey(from: b, to: a, path: nil))
            }
        }
        simulation.faults.partitions += 1
    }

    /// Restores the one-way link `from` → `to` on `path` (or the all-paths cut when `nil`),
    /// leaving other cuts in place.
    public func restore(from: NodeID, to: NodeID, path: PathID? = nil) {
        blocked.remove(LinkKey(from: from, to: to, path: path))
    }

    /// Restores every cut link. Messages already dropped stay lost.
    public func heal() {
        blocked.removeAll()
    }

    /// Whether the link `from` → `to` on `path` is cut now.
    public func isCut(from: NodeID, to: NodeID, path: PathID?) -> Bool {
        blocked.contains(LinkKey(from: from, to: to, path: nil))
            || (path != nil && blocked.contains(LinkKey(from: from, to: to, path: path)))
    }

    /// Sends `message` from `from` to `to` on `path`, subject to the link's conditions, and
    /// returns the instant the message has left the sender (later than now only on a link
    /// with a ``LinkConditions/bandwidth`` that is busy).
    @discardableResult
    public func send(_ message: Message, from: NodeID, to: NodeID, path: PathID? = nil) -> Instant {
        send(message, from: from, to: to, path: path, spoofed: false)
    }

    /// Sends `message` in `from`'s name whether or not `from` is up: an attacker forging a
    /// node's messages (or replaying them after it died). The link from `from` to `to`
    /// applies, as it would to packets with `from`'s address.
    @discardableResult
    public func inject(_ message: Message, claimingToBe from: NodeID, to: NodeID, path: PathID? = nil) -> Instant {
        send(message, from: from, to: to, path: path, spoofed: true)
    }

    private func send(_ message: Message, from: NodeID, to: NodeID, path: PathID?, spoofed: Bool) -> Instant {
        let key = LinkKey(from: from, to: to, path: path)
        let link = conditions[key] ?? conditions[LinkKey(from: from, to: to, path: nil)] ?? defaultConditions
        // A crashed node sends nothing (its runtime may not have noticed yet).
        guard spoofed || !down.contains(from) else { return simulation.now }
        var departure = simulation.now
        if let bandwidth = link.bandwidth, bandwidth > 0 {
            let bytes = Frame.headerSize + 1 + from.name.utf8.count + message.payload.readableBytes
            departure = max(departure, busyUntil[key] ?? departure) + .seconds(Double(bytes) / bandwidth)
            busyUntil[key] = departure
        }
        if isCut(from: from, to: to, path: path) {
            simulation.faults.messagesPartitioned += 1
            return departure
        }
        if simulation.random.chance(link.lossProbability) {
            simulation.faults.messagesLost += 1
            return departure
        }
        var envelope = Envelope(from: from, path: path, message: message)
        if simulation.random.chance(link.corruptionProbability) {
            guard let received = corrupted(envelope) else { return departure }
            envelope = received
        }
        var delay = (departure - simulation.now) + simulation.random.duration(in: link.delay)
        if simulation.random.chance(link.reorderProbability) {
            delay += link.reorderDelay
            simulation.faults.messagesReordered += 1
        }
        schedule(envelope, to: to, after: delay)
        if simulation.random.chance(link.duplicateProbability) {
            simulation.faults.messagesDuplicated += 1
            schedule(envelope, to: to, after: (departure - simulation.now) + simulation.random.duration(in: link.delay))
        }
        return departure
    }

    /// Flips one bit of `envelope`'s frame and decodes it as a receiving transport would:
    /// `nil` when the frame checks fail (the message is dropped, the damage detected),
    /// otherwise what the receiver would be handed.
    private func corrupted(_ envelope: Envelope) -> Envelope? {
        var frame = ByteBuffer()
        EnvelopeCodec.encode(envelope.message, from: envelope.from, into: &frame)
        let bit = Int(simulation.random.next() % UInt64(frame.readableBytes * 8))
        if let byte = frame.getInteger(at: frame.readerIndex + bit / 8, as: UInt8.self) {
            frame.setInteger(byte ^ (1 << UInt8(bit % 8)), at: frame.readerIndex + bit / 8)
        }
        simulation.faults.damageInjected += 1
        var decoder = FrameDecoder()
        do throws(FrameError) {
            guard let decoded = try decoder.next(from: &frame) else {
                // A damaged length field: the receiver waits for bytes that never come, until
                // the stream's next frame fails its check; the message is lost either way.
                simulation.faults.damageDetected += 1
                return nil
            }
            let (sender, message) = try EnvelopeCodec.decode(decoded)
            return Envelope(from: sender, path: envelope.path, message: message)
        } catch {
            simulation.faults.damageDetected += 1
            return nil
        }
    }

    private func schedule(_ envelope: Envelope, to node: NodeID, after delay: Duration) {
        simulation.schedule(after: delay) { [self] in
            // A partition that began while the message was in flight drops it too.
            guard isUp(node), !isCut(from: envelope.from, to: node, path: envelope.path),
                let handler = handlers[node]
            else {
                simulation.faults.messagesPartitioned += 1
                return
            }
            simulation.faults.messagesDelivered += 1
            traceDelivery(envelope, to: node)
            deliveryObserver?(envelope, node)
            handler(envelope)
        }
    }
}

extension SimulatedNetwork {
    /// Mixes a delivery (endpoints, path, type and payload) into the simulation's trace hash.
    fileprivate func traceDelivery(_ envelope: Envelope, to node: NodeID) {
        // Names and bytes through CRC32C, not `Hasher` (seeded per process): the hash must be
        // the same in every process that replays the seed.
        let route = "\(envelope.from.name)>\(node.name)/\(envelope.path?.name ?? "")"
        simulation.trace(UInt64(CRC32C.checksum(route.utf8)))
        simulation.trace(
            UInt64(truncatingIfNeeded: envelope.message.type) << 32 | UInt64(envelope.message.payload.readableBytes))
        simulation.trace(UInt64(envelope.message.payload.readableBytesView.withUnsafeBytes { CRC32C.checksum($0) }))
    }

    /// A ``FaultToleranceCore/Transport`` for `node` on this network: what it sends goes
    /// through the link conditions, partitions and crashes of the network, and what is
    /// delivered to `node` arrives on its ``SimulatedTransport/incoming``. A second transport
    /// for the same node replaces the first (a restart); the first one's stream finishes.
    ///
    /// Use it only inside an ``AsyncSimulation`` run: the network is single-threaded.
    public func transport(for node: NodeID) -> SimulatedTransport {
        let queue = AsyncQueue<Envelope>()
        endpointGeneration += 1
        let generation = endpointGeneration
        endpoints[node]?.finish()
        endpoints[node] = queue
        endpointGenerations[node] = generation
        attach(node) { envelope in queue.yield(envelope) }
        return SimulatedTransport(node: node, generation: generation, incoming: queue, network: self)
    }

    fileprivate func close(_ node: NodeID, generation: UInt64) {
        guard endpointGenerations[node] == generation else { return }
        endpointGenerations[node] = nil
        endpoints.removeValue(forKey: node)?.finish()
        detach(node)
    }
}

/// A node's ``FaultToleranceCore/Transport`` on a ``SimulatedNetwork``; see
/// ``SimulatedNetwork/transport(for:)``.
///
/// Sending waits only on a link with a ``LinkConditions/bandwidth`` (until the message has
/// left, as a full socket buffer holds a sender) and follows the real transports' errors: `.closed` after ``close()``, `.reservedType` for transport-owned
/// message types. Messages to a node that is down or cut off are lost silently, as on a
/// network.
public final class SimulatedTransport: Transport, @unchecked Sendable {
    /// This node.
    public let localNode: NodeID
    /// Messages delivered to this node.
    public let incoming: EnvelopeStream
    private let network: SimulatedNetwork
    private let generation: UInt64
    private var closed = false

    fileprivate init(node: NodeID, generation: UInt64, incoming: AsyncQueue<Envelope>, network: SimulatedNetwork) {
        self.localNode = node
        self.generation = generation
        self.incoming = EnvelopeStream(incoming)
        self.network = network
    }

    /// Hands `message` to the network, which delivers it after the link's delay unless the
    /// link loses it; on a link with a bandwidth, returns once the message has left (in
    /// virtual time).
    public func send(_ message: Message, to node: NodeID, over path: PathID?) async throws(TransportError) {
        guard !closed else { throw TransportError(.closed, peer: node, path: path) }
        guard message.type < Message.firstReservedType else {
            throw TransportError(.reservedType, peer: node, path: path, detail: "type \(message.type)")
        }
        let departure = network.send(message, from: localNode, to: node, path: path)
        let simulation = network.simulation
        guard departure > simulation.now else { return }
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            simulation.schedule(at: departure) { continuation.resume() }
        }
    }

    /// Leaves the network and finishes ``incoming``.
    public func close() async {
        guard !closed else { return }
        closed = true
        network.close(localNode, generation: generation)
    }
}
