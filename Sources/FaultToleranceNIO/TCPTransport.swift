public import FaultToleranceCore
public import Logging
import Metrics
import NIOConcurrencyHelpers
public import NIOCore
public import NIOPosix
import Synchronization

/// A ``FaultToleranceCore/Transport`` over TCP on SwiftNIO: framed, checksummed messages, ordered per peer,
/// with reconnection and back-pressure.
///
/// Each node listens on one address and opens one outbound connection per peer on first
/// use; messages to a peer go over that connection in the order `send` was called, so a
/// single sender sees per-peer FIFO delivery. A connection that fails is dropped and the
/// next `send` reconnects, retrying with exponential backoff up to
/// ``Configuration/connectAttempts`` times before throwing
/// ``FaultToleranceCore/TransportError/Code/unreachable``. A message written just before a connection broke
/// may be lost (at-most-once); protocols retransmit.
///
/// Back-pressure: when the connection's outbound buffer passes
/// ``Configuration/writeBufferHighWatermark``, `send` waits until its own message has been
/// written to the socket, so a fast sender slows to the network's pace instead of growing
/// memory without bound.
///
/// Inbound bytes that are not valid frames (bad magic, checksum, oversize length) close
/// that connection and increment `ft_transport_frames_rejected`; other connections go on.
///
/// ```swift
/// let transport = try await TCPTransport.start(configuration: .init(
///     localNode: "a", bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: 7000),
///     peers: ["b": try SocketAddress(ipAddress: "127.0.0.1", port: 7001)]))
/// try await transport.send(Message(type: 1, bytes: [1, 2, 3]), to: "b")
/// for await envelope in transport.incoming { ... }
/// ```
public final class TCPTransport: Transport {
    /// Settings for a ``TCPTransport``.
    public struct Configuration: Sendable {
        /// This node's identity.
        public var localNode: NodeID
        /// The address to listen on; port 0 picks a free port (see ``TCPTransport/localAddress``).
        public var bindAddress: SocketAddress
        /// Where each peer listens.
        public var peers: [NodeID: SocketAddress]
        /// The largest message payload accepted or sent.
        public var maximumPayloadLength: Int
        /// Connection attempts per `send` before giving up.
        public var connectAttempts: Int
        /// The wait before the second attempt; doubled after each failure.
        public var initialBackoff: Duration
        /// The longest wait between attempts.
        public var maximumBackoff: Duration
        /// Outbound buffer size above which `send` waits for its write to complete.
        public var writeBufferHighWatermark: Int
        /// Outbound buffer size below which the connection counts as writable again.
        public var writeBufferLowWatermark: Int
        /// Received messages waiting for the consumer at which the transport stops reading
        /// from the network (inbound back-pressure).
        public var inboundHighWatermark: Int
        /// Waiting messages at which reading resumes.
        public var inboundLowWatermark: Int
        /// Inbound connections held at once; one more is closed as soon as it is accepted.
        public var maximumInboundConnections: Int
        /// Bytes every inbound connection's frames in progress may hold together (charged
        /// when a frame's header arrives, before its buffer is allocated); a frame that would
        /// pass it ends its connection with ``FaultToleranceCore/FrameError/Code/overBudget``.
        public var maximumPartialFrameBytes: Int
        /// How long a connection may sit on an incomplete frame with no bytes arriving before
        /// it is closed (``FaultToleranceCore/FrameError/Code/stalled``). Idle connections
        /// between frames are not affected.
        public var partialFrameTimeout: Duration
        /// Whether and how connections are secured (``Security/loopbackOnly`` by default: plain
        /// TCP, refused at ``TCPTransport/start(configuration:group:logger:)`` when
        /// ``bindAddress`` is not a loopback address). A secured connection must finish its
        /// handshake within ``partialFrameTimeout``.
        public var security: Security

        /// Creates a configuration.
        public init(
            localNode: NodeID,
            bindAddress: SocketAddress,
            peers: [NodeID: SocketAddress] = [:],
            maximumPayloadLength: Int = Frame.defaultMaximumPayloadLength,
            connectAttempts: Int = 5,
            initialBackoff: Duration = .milliseconds(50),
            maximumBackoff: Duration = .seconds(2),
            writeBufferHighWatermark: Int = 1 << 20,
            writeBufferLowWatermark: Int = 256 << 10,
            inboundHighWatermark: Int = 1024,
            inboundLowWatermark: Int = 256,
            maximumInboundConnections: Int = 256,
            maximumPartialFrameBytes: Int = 64 << 20,
            partialFrameTimeout: Duration = .seconds(10),
            security: Security = .loopbackOnly
        ) {
            self.security = security
            self.maximumInboundConnections = maximumInboundConnections
            self.maximumPartialFrameBytes = maximumPartialFrameBytes
            self.partialFrameTimeout = partialFrameTimeout
            self.localNode = localNode
            self.bindAddress = bindAddress
            self.peers = peers
            self.maximumPayloadLength = maximumPayloadLength
            self.connectAttempts = connectAttempts
            self.initialBackoff = initialBackoff
            self.maximumBackoff = maximumBackoff
            self.writeBufferHighWatermark = writeBufferHighWatermark
            self.writeBufferLowWatermark = writeBufferLowWatermark
            self.inboundHighWatermark = inboundHighWatermark
            self.inboundLowWatermark = inboundLowWatermark
        }
    }

    private enum Connection {
        case connecting(Task<CoalescingWriter, any Error>)
        case connected(CoalescingWriter)
    }

    private struct State {
        var peers: [NodeID: SocketAddress]
        var connections: [NodeID: Connection] = [:]
        var closed = false
    }

    /// This node's identity.
    public let localNode: NodeID
    /// Messages from peers, in arrival order per connection.
    public let incoming: EnvelopeStream
    /// The address the transport listens on (with the real port when 0 was asked for).
    public let localAddress: SocketAddress

    private let configuration: Configuration
    private let group: any EventLoopGroup
    private let serverChannel: any Channel
    private let state: NIOLockedValueBox<State>
    private let inbound: ChannelRegistry
    private let queue: InboundQueue
    private let budget: PartialFrameBudget
    private let logger: Logger
    private let sentCounter: Counter
    private let sentBytes: Counter
    private let security: (any ConnectionSecurity)?
    private let refusedSenders: CountingCounter

    /// Binds the listening socket and returns a running transport.
    public static func start(
        configuration: Configuration,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "ft.transport.tcp")
    ) async throws(TransportError) -> TCPTransport {
        let security: (any ConnectionSecurity)?
        switch configuration.security.mode {
        case .loopbackOnly:
            guard configuration.bindAddress.isLoopback else {
                throw TransportError(
                    .startFailed,
                    detail:
                        "plain TCP on \(configuration.bindAddress), which is not a loopback address: choose a security "
                        + "(.secured(by:), for example mutual TLS) or say .insecure")
            }
            security = nil
        case .insecure:
            security = nil
        case .secured(let chosen):
            try chosen.validate(localNode: configuration.localNode)
            security = chosen
        }
        let dimensions = [("transport", "tcp"), ("node", configuration.localNode.name)]
        let rejected = Counter(label: "ft_transport_frames_rejected", dimensions: dimensions)
        let received = Counter(label: "ft_transport_messages_received", dimensions: dimensions)
        let inbound = ChannelRegistry()
        let queue = InboundQueue(
            highWatermark: configuration.inboundHighWatermark, lowWatermark: configuration.inboundLowWatermark)
        let maximum = configuration.maximumPayloadLength
        let budget = PartialFrameBudget(limit: configuration.maximumPartialFrameBytes)
        let limiter = LogLimiter()
        let connectionLimit = configuration.maximumInboundConnections
        let stallTimeout = TimeAmount.nanoseconds(configuration.partialFrameTimeout.nanoseconds)
        let refusedConnections = Counter(label: "ft_transport_connections_refused", dimensions: dimensions)
        let refusedSenders = CountingCounter(Counter(label: "ft_transport_senders_refused", dimensions: dimensions))
        let server: any Channel
        do {
            server = try await ServerBootstrap(group: group)
                .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
                .childChannelOption(.socketOption(.tcp_nodelay), value: 1)
                // Reads of up to 256 KiB (adaptive; NIO's default stops at 64 KiB), at most four
                // per wakeup: large frames take few reads, and a consumer's backlog overshoots
                // the high watermark by at most two such read loops (2 MiB) once reading pauses.
                .childChannelOption(
                    .recvAllocator,
                    value: AdaptiveRecvByteBufferAllocator(minimum: 1 << 12, initial: 1 << 16, maximum: 256 << 10)
                )
                .childChannelOption(.maxMessagesPerRead, value: 4)
                .childChannelInitializer { channel in
                    channel.eventLoop.makeCompletedFuture {
                        // Over the connection limit: accepted and closed at once.
                        guard inbound.count < connectionLimit else {
                            refusedConnections.increment()
                            channel.close(promise: nil)
                            return
                        }
                        var identity: ConnectionIdentity?
                        if let security {
                            let settled = ConnectionIdentity()
                            identity = settled
                            try security.secure(channel, connectingTo: nil, identity: settled)
                            // A handshake that never finishes holds a connection slot: bounded too.
                            // Only a handshake still pending counts: one that failed was counted by
                            // the security (a failed handshake) and its connection is gone.
                            let deadline = channel.eventLoop.scheduleTask(in: stallTimeout) {
                                guard settled.nodes == nil, settled.rejection == nil, channel.isActive else { return }
                                settled.reject("no handshake within the partial-frame timeout")
                                refusedSenders.increment()
                                channel.close(promise: nil)
                            }
                            channel.closeFuture.whenComplete { _ in deadline.cancel() }
                        }
                        try channel.pipeline.syncOperations.addHandler(IdleStateHandler(readTimeout: stallTimeout))
                        try channel.pipeline.syncOperations.addHandler(
                            FrameAssembler(maximumPayloadLength: maximum, budget: budget))
                        try channel.pipeline.syncOperations.addHandler(
                            EnvelopeDeliveryHandler(
                                queue: queue, logger: logger, rejected: rejected,
                                received: received, limiter: limiter, identity: identity,
                                refusedSenders: refusedSenders))
                        inbound.track(channel)
                    }
                }
                .bind(to: configuration.bindAddress).get()
        } catch {
            queue.finish()
            throw TransportError(.startFailed, detail: "bind \(configuration.bindAddress): \(error)")
        }
        guard let address = server.localAddress else {
            try? await server.close()
            queue.finish()
            throw TransportError(.startFailed, detail: "listening socket has no address")
        }
        logger.info(
            "tcp transport listening",
            metadata: [
                "node": "\(configuration.localNode)", "address": "\(address)",
                "security": "\(configuration.security.name)",
            ])
        return TCPTransport(
            configuration: configuration, group: group, server: server, address: address,
            queue: queue, inbound: inbound, budget: budget, refusedSenders: refusedSenders, logger: logger)
    }

    /// Inbound connections closed because their peer sent a frame under a name it had not
    /// authenticated as, or never finished its handshake (the `ft_transport_senders_refused`
    /// metric); always 0 without a ``Configuration/security``.
    public var sendersRefused: Int { refusedSenders.value }

    /// Bytes held now for inbound frames in progress (at most
    /// ``Configuration/maximumPartialFrameBytes``).
    public var framesInProgressBytes: Int { budget.held }

    /// `true` when connections are secured (``Configuration/security`` is
    /// ``Security/secured(by:)``): each inbound frame's sender is a node its connection proved
    /// to be.
    public var authenticatesSenders: Bool { security != nil }

    /// Inbound connections open now (at most ``Configuration/maximumInboundConnections``).
    public var inboundConnections: Int { inbound.count }

    private init(
        configuration: Configuration,
        group: any EventLoopGroup,
        server: any Channel,
        address: SocketAddress,
        queue: InboundQueue,
        inbound: ChannelRegistry,
        budget: PartialFrameBudget,
        refusedSenders: CountingCounter,
        logger: Logger
    ) {
        self.refusedSenders = refusedSenders
        self.budget = budget
        self.queue = queue
        self.configuration = configuration
        self.localNode = configuration.localNode
        self.group = group
        self.serverChannel = server
        self.localAddress = address
        self.incoming = queue.stream
        self.state = NIOLockedValueBox(State(peers: configuration.peers))
        self.logger = logger
        let dimensions = [("transport", "tcp"), ("node", configuration.localNode.name)]
        self.sentCounter = Counter(label: "ft_transport_messages_sent", dimensions: dimensions)
        self.sentBytes = Counter(label: "ft_transport_bytes_sent", dimensions: dimensions)
        self.inbound = inbound
        if case .secured(let security) = configuration.security.mode {
            self.security = security
        } else {
            self.security = nil
        }
    }

    /// The most received messages that were ever waiting for the consumer at once; bounded
    /// by ``Configuration/inboundHighWatermark`` plus what the reads in flight when reading
    /// pauses hold (at most two read loops of four 256 KiB reads: 2 MiB of messages).
    public var inboundBacklogPeak: Int { queue.maximumBuffered }

    /// Adds or changes a peer's address; an open connection to its old address is closed.
    public func setPeer(_ node: NodeID, address: SocketAddress) {
        let old = state.withLockedValue { state -> Connection? in
            state.peers[node] = address
            return state.connections.removeValue(forKey: node)
        }
        if case .connected(let writer)? = old { writer.channel.close(promise: nil) }
        if case .connecting(let task)? = old { task.cancel() }
    }

    /// Frames and sends `message` to `node`. `path` must be `nil`: TCP has one path.
    public func send(_ message: Message, to node: NodeID, over path: PathID?) async throws(TransportError) {
        guard path == nil else {
            throw TransportError(.unknownPath, peer: node, path: path, detail: "TCP has one path")
        }
        guard message.type < Message.firstReservedType else {
            throw TransportError(.reservedType, peer: node, detail: "type \(message.type)")
        }
        guard message.payload.readableBytes + 1 + localNode.name.utf8.count <= configuration.maximumPayloadLength else {
            throw TransportError(.messageTooLarge, peer: node, detail: "\(message.payload.readableBytes) bytes")
        }
        let writer = try await connection(to: node)
        let channel = writer.channel
        // A large body is written where it lies, after a separate header: no copy into a frame.
        let large = message.payload.readableBytes >= 16 << 10
        var buffer = channel.allocator.buffer(
            capacity: Frame.headerSize + 1 + 255 + (large ? 0 : message.payload.readableBytes))
        if large {
            EnvelopeCodec.encodeHeader(message, from: localNode, into: &buffer)
        } else {
            EnvelopeCodec.encode(message, from: localNode, into: &buffer)
        }
        try await write(buffer, large ? message.payload : nil, with: writer, to: node)
    }

    /// Frames and sends one message whose payload is `message.payload` then `body`; `body` is
    /// written where it lies, after a header that holds the rest.
    public func send(_ message: Message, appending body: ByteBuffer, to node: NodeID) async throws(TransportError) {
        guard message.type < Message.firstReservedType else {
            throw TransportError(.reservedType, peer: node, detail: "type \(message.type)")
        }
        let count = message.payload.readableBytes + body.readableBytes
        guard count + 1 + localNode.name.utf8.count <= configuration.maximumPayloadLength else {
            throw TransportError(.messageTooLarge, peer: node, detail: "\(count) bytes")
        }
        let writer = try await connection(to: node)
        var buffer = writer.channel.allocator.buffer(
            capacity: Frame.headerSize + 1 + 255 + message.payload.readableBytes)
        EnvelopeCodec.encodeHeader(message, appending: body, from: localNode, into: &buffer)
        try await write(buffer, body.readableBytes > 0 ? body : nil, with: writer, to: node)
    }

    /// Queues a frame (its header and, apart, its body), waiting while the channel is full.
    private func write(
        _ buffer: ByteBuffer, _ body: ByteBuffer?, with writer: CoalescingWriter, to node: NodeID
    ) async throws(TransportError) {
        let channel = writer.channel
        sentCounter.increment()
        sentBytes.increment(by: buffer.readableBytes + (body?.readableBytes ?? 0))
        if channel.isWritable {
            writer.write(buffer, body, promise: nil)
            return
        }
        let written = channel.eventLoop.makePromise(of: Void.self)
        writer.write(buffer, body, promise: written)
        do {
            try await written.futureResult.get()
        } catch {
            throw TransportError(.sendFailed, peer: node, detail: "\(error)")
        }
    }

    /// Closes every connection and the listener, and finishes ``incoming``.
    public func close() async {
        let connections = state.withLockedValue { state -> [Connection] in
            state.closed = true
            defer { state.connections.removeAll() }
            return Array(state.connections.values)
        }
        for connection in connections {
            switch connection {
            case .connected(let writer): try? await writer.channel.close()
            case .connecting(let task): task.cancel()
            }
        }
        try? await serverChannel.close()
        for channel in inbound.all { try? await channel.close() }
        queue.finish()
    }

    // MARK: - Connections

    private func connection(to node: NodeID) async throws(TransportError) -> CoalescingWriter {
        let lookup: Result<Connection, TransportError> = state.withLockedValue { state in
            guard !state.closed else { return .failure(TransportError(.closed, peer: node)) }
            if let existing = state.connections[node] {
                if case .connected(let writer) = existing, !writer.channel.isActive {
                    state.connections[node] = nil
                } else {
                    return .success(existing)
                }
            }
            guard let address = state.peers[node] else { return .failure(TransportError(.unknownPeer, peer: node)) }
            let task = Task { try await self.connect(to: node, address: address) }
            state.connections[node] = .connecting(task)
            return .success(.connecting(task))
        }
        switch try lookup.get() {
        case .connected(let writer):
            return writer
        case .connecting(let task):
            do {
                return try await task.value
            } catch let error as TransportError {
                throw error
            } catch {
                throw TransportError(.unreachable, peer: node, detail: "\(error)")
            }
        }
    }

    /// Waits until a new outbound connection's far end has proved to be `node`; closes it and
    /// throws ``FaultToleranceCore/TransportError/Code/authenticationFailed`` when it does not
    /// within the partial-frame timeout.
    private func authenticate(
        _ channel: any Channel, as node: NodeID, identity: ConnectionIdentity, settled: EventLoopFuture<Set<NodeID>>
    ) async throws(TransportError) {
        let deadline = channel.eventLoop.scheduleTask(in: .nanoseconds(configuration.partialFrameTimeout.nanoseconds)) {
            identity.reject("no handshake within the partial-frame timeout")
        }
        channel.closeFuture.whenComplete { _ in identity.reject("the connection closed during the handshake") }
        do {
            let nodes = try await settled.get()
            deadline.cancel()
            guard nodes.contains(node) else {
                channel.close(promise: nil)
                throw TransportError(
                    .authenticationFailed, peer: node,
                    detail: "the peer proved to be \(nodes.sorted().map(\.name)), not '\(node)'")
            }
        } catch {
            deadline.cancel()
            channel.close(promise: nil)
            var failure = error as? TransportError ?? TransportError(.authenticationFailed, detail: "\(error)")
            failure.peer = node
            logger.warning("peer failed to authenticate", metadata: ["peer": "\(node)", "error": "\(failure)"])
            throw failure
        }
    }

    private func connect(to node: NodeID, address: SocketAddress) async throws -> CoalescingWriter {
        var backoff = configuration.initialBackoff
        var lastError: (any Error)?
        for attempt in 1...max(1, configuration.connectAttempts) {
            let loop = group.next()
            let authenticated = loop.makePromise(of: Set<NodeID>.self)
            let identity = ConnectionIdentity(promise: authenticated)
            // Settles the promise on every way out (a no-op once the handshake settled it).
            defer { identity.reject("the connection attempt ended") }
            do {
                let security = self.security
                let channel = try await ClientBootstrap(group: loop)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try security?.secure(channel, connectingTo: node, identity: identity)
                        }
                    }
                    .channelOption(.socketOption(.tcp_nodelay), value: 1)
                    .channelOption(
                        .writeBufferWaterMark,
                        value: .init(
                            low: configuration.writeBufferLowWatermark, high: configuration.writeBufferHighWatermark)
                    )
                    .connectTimeout(.seconds(2))
                    .connect(to: address).get()
                if security != nil {
                    try await authenticate(channel, as: node, identity: identity, settled: authenticated.futureResult)
                } else {
                    authenticated.succeed([node])
                }
                let writer = CoalescingWriter(channel: channel)
                let installed = state.withLockedValue { state -> Bool in
                    guard !state.closed else { return false }
                    state.connections[node] = .connected(writer)
                    return true
                }
                guard installed else {
                    channel.close(promise: nil)
                    throw TransportError(.closed, peer: node)
                }
                channel.closeFuture.whenComplete { [weak self] _ in
                    self?.state.withLockedValue { state in
                        if case .connected(let current)? = state.connections[node], current.channel === channel {
                            state.connections[node] = nil
                        }
                    }
                }
                logger.debug(
                    "connected", metadata: ["peer": "\(node)", "address": "\(address)", "attempt": "\(attempt)"])
                return writer
            } catch let error as TransportError {
                throw error
            } catch {
                lastError = error
                logger.debug(
                    "connect failed", metadata: ["peer": "\(node)", "attempt": "\(attempt)", "error": "\(error)"])
                if attempt < configuration.connectAttempts {
                    try await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, configuration.maximumBackoff)
                }
            }
        }
        state.withLockedValue { state in
            if case .connecting? = state.connections[node] { state.connections[node] = nil }
        }
        throw TransportError(
            .unreachable, peer: node,
            detail:
                "\(configuration.connectAttempts) attempts to \(address) failed; last: \(lastError.map { "\($0)" } ?? "?")"
        )
    }
}

/// The open inbound connections of a listener, so closing the transport closes them too.
final class ChannelRegistry: Sendable {
    private let channels = NIOLockedValueBox<[ObjectIdentifier: any Channel]>([:])

    func track(_ channel: any Channel) {
        let key = ObjectIdentifier(channel)
        channels.withLockedValue { $0[key] = channel }
        channel.closeFuture.whenComplete { [self] _ in _ = channels.withLockedValue { $0.removeValue(forKey: key) } }
    }

    var all: [any Channel] { channels.withLockedValue { Array($0.values) } }

    /// Connections open now.
    var count: Int { channels.withLockedValue { $0.count } }
}
