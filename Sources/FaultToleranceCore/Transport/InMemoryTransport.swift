import NIOConcurrencyHelpers
import Synchronization

/// A network inside one process, connecting ``InMemoryTransport`` endpoints, with hooks to
/// cut links and drop messages in tests.
///
/// Delivery is immediate and ordered per sender-receiver pair. For randomized faults in
/// virtual time use `DeterministicSimulation`'s simulated network instead; this one is for
/// tests of runtimes that need a real `Transport`.
public final class InMemoryNetwork: Sendable {
    private struct Link: Hashable {
        var from: NodeID
        var to: NodeID
        var path: PathID?
    }

    private struct State {
        var endpoints: [NodeID: AsyncStream<Envelope>.Continuation] = [:]
        var generations: [NodeID: UInt64] = [:]
        var nextGeneration: UInt64 = 0
        var cut: Set<Link> = []
        var delivered = 0
        var dropped = 0
    }

    private let state = NIOLockedValueBox(State())

    /// Creates an empty network.
    public init() {}

    /// Adds a node to the network and returns its transport. Joining with a name already in
    /// use replaces the old endpoint (a restart).
    public func join(_ node: NodeID) -> InMemoryTransport {
        let (stream, continuation) = AsyncStream.makeStream(of: Envelope.self)
        let (previous, generation) = state.withLockedValue { state in
            let previous = state.endpoints[node]
            state.endpoints[node] = continuation
            state.nextGeneration += 1
            state.generations[node] = state.nextGeneration
            return (previous, state.nextGeneration)
        }
        previous?.finish()
        return InMemoryTransport(localNode: node, generation: generation, incoming: stream, network: self)
    }

    /// Cuts the one-way link from `from` to `to` on `path` (all paths when `nil`): messages
    /// on it are dropped silently, as a network would.
    public func cut(from: NodeID, to: NodeID, path: PathID? = nil) {
        _ = state.withLockedValue { $0.cut.insert(Link(from: from, to: to, path: path)) }
    }

    /// Restores every link.
    public func heal() {
        state.withLockedValue { $0.cut.removeAll() }
    }

    /// Messages delivered and dropped so far.
    public var counts: (delivered: Int, dropped: Int) {
        state.withLockedValue { ($0.delivered, $0.dropped) }
    }

    fileprivate func deliver(_ envelope: Envelope, to node: NodeID) throws(TransportError) {
        let result: Result<Void, TransportError> = state.withLockedValue { state in
            guard let endpoint = state.endpoints[node] else {
                return .failure(TransportError(.unknownPeer, peer: node, path: envelope.path))
            }
            let links = [
                Link(from: envelope.from, to: node, path: nil),
                Link(from: envelope.from, to: node, path: envelope.path),
            ]
            if links.contains(where: state.cut.contains) {
                state.dropped += 1
                return .success(())
            }
            state.delivered += 1
            endpoint.yield(envelope)
            return .success(())
        }
        try result.get()
    }

    fileprivate func leave(_ node: NodeID, generation: UInt64) {
        // A node that rejoined since has a new endpoint; leaving must not remove that one.
        let endpoint = state.withLockedValue { state -> AsyncStream<Envelope>.Continuation? in
            guard state.generations[node] == generation else { return nil }
            state.generations[node] = nil
            return state.endpoints.removeValue(forKey: node)
        }
        endpoint?.finish()
    }
}

/// A ``Transport`` on an ``InMemoryNetwork``.
public final class InMemoryTransport: Transport {
    /// This node's identity.
    public let localNode: NodeID
    /// Messages delivered to this node.
    public let incoming: EnvelopeStream
    private let network: InMemoryNetwork
    private let generation: UInt64
    private let closed = Atomic<Bool>(false)

    fileprivate init(localNode: NodeID, generation: UInt64, incoming: AsyncStream<Envelope>, network: InMemoryNetwork) {
        self.localNode = localNode
        self.generation = generation
        self.incoming = EnvelopeStream(incoming)
        self.network = network
    }

    /// Delivers `message` to `node` at once, unless a cut link drops it.
    public func send(_ message: Message, to node: NodeID, over path: PathID?) async throws(TransportError) {
        guard !closed.load(ordering: .acquiring) else { throw TransportError(.closed, peer: node, path: path) }
        guard message.type < Message.firstReservedType else {
            throw TransportError(.reservedType, peer: node, path: path, detail: "type \(message.type)")
        }
        try network.deliver(Envelope(from: localNode, path: path, message: message), to: node)
    }

    /// Leaves the network and finishes ``incoming``.
    public func close() async {
        if !closed.exchange(true, ordering: .acquiringAndReleasing) { network.leave(localNode, generation: generation) }
    }
}
