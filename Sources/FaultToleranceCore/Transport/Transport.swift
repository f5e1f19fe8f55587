public import NIOCore

/// Sends framed messages to other nodes and delivers the messages they send.
///
/// Protocols in this library talk through a `Transport` so programs can embed them over
/// their own networks. Implementations: ``InMemoryTransport`` for tests, and in
/// `FaultToleranceNIO` a TCP transport (reliable, ordered per peer) and a UDP transport
/// (datagrams over several paths, for heartbeats).
///
/// Delivery is at most once: a message sent just before a connection breaks may be lost,
/// and protocols that need more retransmit, as they must over any real network.
public protocol Transport: Sendable {
    /// This node's identity; receivers see it as ``Envelope/from``.
    var localNode: NodeID { get }

    /// Messages from other nodes, in arrival order. Each transport has one such sequence;
    /// it finishes when the transport closes. A consumer that falls behind slows the
    /// transport's reading from the network rather than growing its buffer without bound.
    var incoming: EnvelopeStream { get }

    /// Sends `message` to `node`, over `path` when the transport has several. Returns once
    /// the transport has taken the message, waiting while its buffers are full
    /// (back-pressure).
    func send(_ message: Message, to node: NodeID, over path: PathID?) async throws(TransportError)

    /// Sends one message to `node` whose payload is `message.payload` followed by `body`: the
    /// receiver sees exactly what ``send(_:to:over:)`` of the joined payload delivers. A
    /// transport that can write `body` where it lies (TCP) does, so a protocol that puts a
    /// small header before bulk data neither allocates nor copies a buffer for the two; the
    /// default joins them and sends that.
    func send(_ message: Message, appending body: ByteBuffer, to node: NodeID) async throws(TransportError)

    /// Stops sending and receiving and finishes ``incoming``.
    func close() async

    /// Whether every delivered ``Envelope/from`` has been proved (a message key, a
    /// certificate), not merely claimed by the bytes that arrived. Protocols that act on a
    /// peer's word (``HeartbeatQuorum``'s services among them) refuse to run over a
    /// transport without it unless told they may. `false` unless a transport says otherwise.
    var authenticatesSenders: Bool { get }
}

extension Transport {
    /// `false`: a transport proves its senders only if it says so.
    public var authenticatesSenders: Bool { false }

    /// Sends `message` to `node` over the transport's default path.
    public func send(_ message: Message, to node: NodeID) async throws(TransportError) {
        try await send(message, to: node, over: nil)
    }

    /// Joins `body` to `message`'s payload and sends the result over the default path.
    public func send(_ message: Message, appending body: ByteBuffer, to node: NodeID) async throws(TransportError) {
        var joined = message.payload
        var tail = body
        joined.writeBuffer(&tail)
        try await send(Message(type: message.type, payload: joined), to: node, over: nil)
    }
}

/// A failure to send, saying to whom and why.
public struct TransportError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// The transport has no address for this node.
        public static let unknownPeer = Code("unknownPeer")
        /// The transport has no such path, or the peer has no address on it.
        public static let unknownPath = Code("unknownPath")
        /// Every connection attempt within the retry budget failed.
        public static let unreachable = Code("unreachable")
        /// The transport was closed.
        public static let closed = Code("closed")
        /// The message exceeds the frame size limit.
        public static let messageTooLarge = Code("messageTooLarge")
        /// Message types at or above ``Message/firstReservedType`` belong to transports.
        public static let reservedType = Code("reservedType")
        /// The network refused the message (a socket error).
        public static let sendFailed = Code("sendFailed")
        /// The transport could not start (a bind failed, a bad address).
        public static let startFailed = Code("startFailed")
        /// The peer could not prove it is the node it should be (a certificate that does not
        /// name it or that no trusted authority signed, a failed or unfinished handshake).
        /// Not retried: a wrong credential stays wrong.
        public static let authenticationFailed = Code("authenticationFailed")
        /// A message sent on a ``TransportDemultiplexer`` channel has a type outside the
        /// channel's block.
        public static let typeOutsideBlock = Code("typeOutsideBlock")

        /// The code's name.
        public var description: String { name }
    }

    /// The kind of failure.
    public var code: Code
    /// The node the message was for, when there is one.
    public var peer: NodeID?
    /// The path, when there is one.
    public var path: PathID?
    /// More detail for people, including any underlying error.
    public var detail: String?

    /// Creates an error.
    public init(_ code: Code, peer: NodeID? = nil, path: PathID? = nil, detail: String? = nil) {
        self.code = code
        self.peer = peer
        self.path = path
        self.detail = detail
    }

    /// One line naming the code, the peer, the path and the detail.
    public var description: String {
        var parts = ["transport error \(code)"]
        if let peer { parts.append("peer \(peer)") }
        if let path { parts.append("path \(path)") }
        if let detail { parts.append(detail) }
        return parts.joined(separator: ", ")
    }
}
