public import FaultToleranceCore
public import Logging
import Metrics
import NIOConcurrencyHelpers
public import NIOCore
public import NIOPosix
import Synchronization

/// A ``FaultToleranceCore/Transport`` of single datagrams over UDP on SwiftNIO, with several local addresses
/// acting as independent paths — the transport for heartbeats.
///
/// Each path binds its own local address (e.g. 127.0.0.2 and 127.0.0.3 on one host, or one
/// address per NIC); a message sent over a path leaves from that path's socket to the peer's
/// address on the same path, and arrives tagged with the receiving path. Every datagram is
/// one ``FaultToleranceCore/Frame`` holding an envelope; datagrams that are not (bad magic, checksum, trailing
/// bytes) are dropped and counted in `ft_transport_frames_rejected`. Datagrams may be lost,
/// duplicated or reordered, as UDP allows.
public final class UDPTransport: Transport {
    /// Settings for a ``UDPTransport``.
    public struct Configuration: Sendable {
        /// This node's identity.
        public var localNode: NodeID
        /// The local address of each path; port 0 picks a free port.
        public var paths: [PathID: SocketAddress]
        /// Each peer's address on each path.
        public var peers: [NodeID: [PathID: SocketAddress]]
        /// The largest payload sent or accepted; must fit a datagram with the frame header.
        public var maximumPayloadLength: Int
        /// Received datagrams waiting for the consumer at which the transport stops reading
        /// (the kernel then drops what overflows its socket buffer, as UDP may).
        public var inboundHighWatermark: Int

        /// Creates a configuration.
        public init(
            localNode: NodeID,
            paths: [PathID: SocketAddress],
            peers: [NodeID: [PathID: SocketAddress]] = [:],
            maximumPayloadLength: Int = 60_000,
            inboundHighWatermark: Int = 4096
        ) {
            self.inboundHighWatermark = inboundHighWatermark
            self.localNode = localNode
            self.paths = paths
            self.peers = peers
            self.maximumPayloadLength = maximumPayloadLength
        }
    }

    private struct State {
        var channels: [PathID: any Channel]
        var closed = false
    }

    /// This node's identity.
    public let localNode: NodeID
    /// Messages from peers, each tagged with the path it arrived on.
    public let incoming: EnvelopeStream
    /// The bound address of each path (with real ports when 0 was asked for).
    public let localAddresses: [PathID: SocketAddress]

    private let configuration: Configuration
    private let queue: InboundQueue
    private let state: NIOLockedValueBox<State>
    /// Where each peer sends from, per path; shared with the receiving handlers.
    private let peers: NIOLockedValueBox<[NodeID: [PathID: SocketAddress]]>
    private let logger: Logger
    private let sentCounter: Counter

    /// Binds every path's socket and returns a running transport.
    public static func start(
        configuration: Configuration,
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton,
        logger: Logger = Logger(label: "ft.transport.udp")
    ) async throws(TransportError) -> UDPTransport {
        guard !configuration.paths.isEmpty else {
            throw TransportError(.startFailed, detail: "a UDP transport needs at least one path")
        }
        guard configuration.maximumPayloadLength + Frame.headerSize + 256 <= 65_507 else {
            throw TransportError(.startFailed, detail: "maximum payload does not fit a UDP datagram")
        }
        let dimensions = [("transport", "udp"), ("node", configuration.localNode.name)]
        let rejected = Counter(label: "ft_transport_frames_rejected", dimensions: dimensions)
        let received = Counter(label: "ft_transport_messages_received", dimensions: dimensions)
        let queue = InboundQueue(
            highWatermark: configuration.inboundHighWatermark, lowWatermark: configuration.inboundHighWatermark / 2)
        let spoofed = Counter(label: "ft_transport_datagrams_spoofed", dimensions: dimensions)
        let peers = NIOLockedValueBox(configuration.peers)
        var channels: [PathID: any Channel] = [:]
        var addresses: [PathID: SocketAddress] = [:]
        for (path, address) in configuration.paths.sorted(by: { $0.key < $1.key }) {
            let handler = DatagramEnvelopeHandler(
                path: path, queue: queue,
                maximumPayloadLength: configuration.maximumPayloadLength,
                logger: logger, rejected: rejected, received: received, peers: peers, spoofed: spoofed)
            do {
                // No SO_REUSEADDR: for UDP it lets a second process bind the same port and
                // silently take a share of the datagrams; a port in use must fail the start.
                let channel = try await DatagramBootstrap(group: group)
                    .channelInitializer { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHandler(handler)
                        }
                    }
                    .bind(to: address).get()
                channels[path] = channel
                addresses[path] = channel.localAddress ?? address
            } catch {
                for channel in channels.values { try? await channel.close() }
                queue.finish()
                throw TransportError(.startFailed, path: path, detail: "bind \(address): \(error)")
            }
        }
        logger.info("udp transport bound", metadata: ["node": "\(configuration.localNode)", "paths": "\(addresses)"])
        return UDPTransport(
            configuration: configuration, channels: channels, addresses: addresses,
            queue: queue, peers: peers,
            logger: logger)
    }

    private init(
        configuration: Configuration,
        channels: [PathID: any Channel],
        addresses: [PathID: SocketAddress],
        queue: InboundQueue,
        peers: NIOLockedValueBox<[NodeID: [PathID: SocketAddress]]>,
        logger: Logger
    ) {
        self.peers = peers
        self.configuration = configuration
        self.localNode = configuration.localNode
        self.localAddresses = addresses
        self.queue = queue
        self.incoming = queue.stream
        self.state = NIOLockedValueBox(State(channels: channels))
        self.logger = logger
        self.sentCounter = Counter(
            label: "ft_transport_messages_sent", dimensions: [("transport", "udp"), ("node", localNode.name)])
    }

    /// The paths still open, in name order.
    public var openPaths: [PathID] { state.withLockedValue { $0.channels.keys.sorted() } }

    /// Adds or changes a peer's address on one path.
    public func setPeer(_ node: NodeID, path: PathID, address: SocketAddress) {
        peers.withLockedValue { $0[node, default: [:]][path] = address }
    }

    /// Sends `message` as one datagram to `node` over `path`; with `nil`, over the first
    /// open path (by name) on which the peer has an address.
    public func send(_ message: Message, to node: NodeID, over path: PathID?) async throws(TransportError) {
        guard message.type < Message.firstReservedType else {
            throw TransportError(.reservedType, peer: node, path: path, detail: "type \(message.type)")
        }
        guard message.payload.readableBytes <= configuration.maximumPayloadLength else {
            throw TransportError(
                .messageTooLarge, peer: node, path: path, detail: "\(message.payload.readableBytes) bytes")
        }
        let known = peers.withLockedValue { $0[node] }
        let route: Result<(any Channel, SocketAddress), TransportError> = state.withLockedValue { state in
            guard !state.closed else { return .failure(TransportError(.closed, peer: node, path: path)) }
            guard let addresses = known else { return .failure(TransportError(.unknownPeer, peer: node)) }
            let chosen = path ?? state.channels.keys.sorted().first { addresses[$0] != nil }
            guard let chosen, let channel = state.channels[chosen], let address = addresses[chosen] else {
                return .failure(TransportError(.unknownPath, peer: node, path: path))
            }
            return .success((channel, address))
        }
        let (channel, address) = try route.get()
        var buffer = channel.allocator.buffer(capacity: Frame.headerSize + 256 + message.payload.readableBytes)
        EnvelopeCodec.encode(message, from: localNode, into: &buffer)
        sentCounter.increment()
        do {
            try await channel.writeAndFlush(AddressedEnvelope(remoteAddress: address, data: buffer)).get()
        } catch {
            throw TransportError(.sendFailed, peer: node, path: path, detail: "\(error)")
        }
    }

    /// Closes one path's socket: nothing more is sent or received on it (a cut link).
    public func closePath(_ path: PathID) async {
        let channel = state.withLockedValue { $0.channels.removeValue(forKey: path) }
        try? await channel?.close()
    }

    /// Closes every path and finishes ``incoming``.
    public func close() async {
        let channels = state.withLockedValue { state -> [any Channel] in
            state.closed = true
            defer { state.channels.removeAll() }
            return Array(state.channels.values)
        }
        for channel in channels { try? await channel.close() }
        queue.finish()
    }
}

/// Decodes each datagram as exactly one envelope frame, tagging it with its path; what one
/// read brought is handed over as one batch.
private final class DatagramEnvelopeHandler: ChannelInboundHandler, @unchecked Sendable {
    // unchecked: `pending` is touched only on the channel's event loop; the rest is immutable.
    typealias InboundIn = AddressedEnvelope<ByteBuffer>

    private let path: PathID
    private let queue: InboundQueue
    private var pending: [Envelope] = []
    private let maximumPayloadLength: Int
    private let logger: Logger
    private let rejected: Counter
    private let received: Counter
    private let peers: NIOLockedValueBox<[NodeID: [PathID: SocketAddress]]>
    private let spoofed: Counter

    init(
        path: PathID,
        queue: InboundQueue,
        maximumPayloadLength: Int,
        logger: Logger,
        rejected: Counter,
        received: Counter,
        peers: NIOLockedValueBox<[NodeID: [PathID: SocketAddress]]>,
        spoofed: Counter
    ) {
        self.peers = peers
        self.spoofed = spoofed
        self.path = path
        self.queue = queue
        self.maximumPayloadLength = maximumPayloadLength
        self.logger = logger
        self.rejected = rejected
        self.received = received
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let datagram = unwrapInboundIn(data)
        do {
            let frames = try FrameDecoder.decodeAll(datagram.data, maximumPayloadLength: maximumPayloadLength + 256)
            guard frames.count == 1 else {
                throw FrameError(.malformedPayload, offset: 0, detail: "\(frames.count) frames in one datagram")
            }
            let (sender, message) = try EnvelopeCodec.decode(frames[0])
            guard message.type < Message.firstReservedType else { return }
            // A sender whose address on this path is configured must send from it: a datagram
            // naming it from anywhere else is forged (or misrouted) and dropped.
            if let expected = peers.withLockedValue({ $0[sender]?[path] }), expected != datagram.remoteAddress {
                spoofed.increment()
                logger.debug(
                    "dropped a datagram from the wrong address",
                    metadata: [
                        "path": "\(path)", "claims": "\(sender)", "from": "\(datagram.remoteAddress)",
                        "expected": "\(expected)",
                    ])
                return
            }
            pending.append(Envelope(from: sender, path: path, message: message))
        } catch {
            rejected.increment()
            logger.debug(
                "dropped a bad datagram",
                metadata: ["path": "\(path)", "from": "\(datagram.remoteAddress)", "error": "\(error)"])
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        if !pending.isEmpty {
            received.increment(by: pending.count)
            queue.deliver(pending, from: context.channel)
            pending.removeAll(keepingCapacity: true)
        }
        context.fireChannelReadComplete()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        // ICMP port-unreachable from a peer that is down surfaces here; UDP carries on.
        logger.debug("udp path error", metadata: ["path": "\(path)", "error": "\(error)"])
    }
}
