public import FaultToleranceCore

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

    /// Creates link conditions.
    public init(
        lossProbability: Double = 0,
        duplicateProbability: Double = 0,
        reorderProbability: Double = 0,
        delay: ClosedRange<Duration> = .milliseconds(1) ... .milliseconds(1),
        reorderDelay: Duration = .milliseconds(20)
    ) {
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

    private let simulation: Simulation
    private var handlers: [NodeID: (Envelope) -> Void] = [:]
    private var conditions: [LinkKey: LinkConditions] = [:]
    private var blocked: Set<LinkKey> = []
    private var down: Set<NodeID> = []
    fileprivate var endpoints: [NodeID: AsyncStream<Envelope>.Continuation] = [:]
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

    /// Sends `message` from `from` to `to` on `path`, subject to the link's conditions.
    public func send(_ message: Message, from: NodeID, to: NodeID, path: PathID? = nil) {
        let link =
            conditions[LinkKey(from: from, to: to, path: path)] ?? conditions[LinkKey(from: from, to: to, path: nil)]
            ?? defaultConditions
        // A crashed node sends nothing (its runtime may not have noticed yet).
        guard !down.contains(from) else { return }
        if isCut(from: from, to: to, path: path) {
            simulation.faults.messagesPartitioned += 1
            return
        }
        if simulation.random.chance(link.lossProbability) {
            simulation.faults.messagesLost += 1
            return
        }
        let envelope = Envelope(from: from, path: path, message: message)
        var delay = simulation.random.duration(in: link.delay)
        if simulation.random.chance(link.reorderProbability) {
            delay += link.reorderDelay
            simulation.faults.messagesReordered += 1
        }
        schedule(envelope, to: to, after: delay)
        if simulation.random.chance(link.duplicateProbability) {
            simulation.faults.messagesDuplicated += 1
            schedule(envelope, to: to, after: simulation.random.duration(in: link.delay))
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
            deliveryObserver?(envelope, node)
            handler(envelope)
        }
    }
}

extension SimulatedNetwork {
    /// A ``FaultToleranceCore/Transport`` for `node` on this network: what it sends goes
    /// through the link conditions, partitions and crashes of the network, and what is
    /// delivered to `node` arrives on its ``SimulatedTransport/incoming``. A second transport
    /// for the same node replaces the first (a restart); the first one's stream finishes.
    ///
    /// Use it only inside an ``AsyncSimulation`` run: the network is single-threaded.
    public func transport(for node: NodeID) -> SimulatedTransport {
        let (stream, continuation) = AsyncStream.makeStream(of: Envelope.self)
        endpointGeneration += 1
        let generation = endpointGeneration
        endpoints[node]?.finish()
        endpoints[node] = continuation
        endpointGenerations[node] = generation
        attach(node) { envelope in continuation.yield(envelope) }
        return SimulatedTransport(node: node, generation: generation, incoming: stream, network: self)
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
/// Sending never blocks (the simulated links have no buffers to fill) and follows the real
/// transports' errors: `.closed` after ``close()``, `.reservedType` for transport-owned
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

    fileprivate init(node: NodeID, generation: UInt64, incoming: AsyncStream<Envelope>, network: SimulatedNetwork) {
        self.localNode = node
        self.generation = generation
        self.incoming = EnvelopeStream(incoming)
        self.network = network
    }

    /// Hands `message` to the network, which delivers it after the link's delay unless the
    /// link loses it.
    public func send(_ message: Message, to node: NodeID, over path: PathID?) async throws(TransportError) {
        guard !closed else { throw TransportError(.closed, peer: node, path: path) }
        guard message.type < Message.firstReservedType else {
            throw TransportError(.reservedType, peer: node, path: path, detail: "type \(message.type)")
        }
        network.send(message, from: localNode, to: node, path: path)
    }

    /// Leaves the network and finishes ``incoming``.
    public func close() async {
        guard !closed else { return }
        closed = true
        network.close(localNode, generation: generation)
    }
}
