public import FaultToleranceCore
import Logging
import Metrics
import NIOConcurrencyHelpers
public import NIOCore

/// Cuts a TCP byte stream into envelopes.
///
/// A frame that arrives whole within one read is sliced out of it without a copy. A frame
/// split across reads is assembled in a buffer sized from its header (large ones from
/// `ByteBufferAllocator.retainingLargeBuffers`, whose blocks stay resident), its checksum
/// computed piece by piece while each piece is still in cache. Growing one cumulation buffer
/// instead, as `ByteToMessageHandler` does, faulted in fresh pages and copied each megabyte
/// frame about twice.
///
/// Every header field is checked by `FrameHeader` before its length is trusted; hostile
/// bytes surface as a `FrameError` through `errorCaught`, after which the stream is out of
/// step and nothing more is decoded. ``TCPTransport`` puts one on every inbound connection;
/// it is public for programs that carry this library's frames over a channel of their own.
///
/// ```swift
/// try channel.pipeline.syncOperations.addHandler(FrameAssembler(maximumPayloadLength: 16 << 20))
/// // ... then a handler whose InboundIn is (NodeID, Message)
/// ```
public final class FrameAssembler: ChannelInboundHandler {
    /// Bytes from the stream.
    public typealias InboundIn = ByteBuffer
    /// Each decoded envelope: its sender and message.
    public typealias InboundOut = (NodeID, Message)

    /// A frame whose payload is still arriving.
    private struct Pending {
        var header: FrameHeader
        var payload: ByteBuffer
        var checksum: CRC32C
        var remaining: Int
    }

    /// Frames at least this long are assembled in buffers from
    /// `ByteBufferAllocator.retainingLargeBuffers`.
    static let largeFrame = 64 << 10

    private let maximumPayloadLength: Int
    private let budget: PartialFrameBudget?
    /// Bytes of `budget` this connection holds for its frame in progress.
    private var reserved = 0
    /// Header bytes received so far when a header is split across reads.
    private var partialHeader = ByteBuffer()
    private var pending: Pending?
    /// Stream offset of the frame being decoded, for errors.
    private var offset = 0
    private var failed = false

    /// Creates an assembler that refuses frames longer than `maximumPayloadLength`, and, with
    /// a `budget`, frames whose payload would take the frames in progress of every connection
    /// sharing it past its limit (``FaultToleranceCore/FrameError/Code/overBudget``): the
    /// memory held for a frame is charged before it is allocated and returned when the frame
    /// completes or the connection goes. An `IdleStateHandler` read event while a frame is
    /// incomplete ends the stream with ``FaultToleranceCore/FrameError/Code/stalled``.
    public init(maximumPayloadLength: Int, budget: PartialFrameBudget? = nil) {
        self.maximumPayloadLength = maximumPayloadLength
        self.budget = budget
    }

    /// Returns this connection's reservation when it goes.
    public func handlerRemoved(context: ChannelHandlerContext) {
        releaseReservation()
    }

    /// A read timeout (`IdleStateHandler`) while a frame is incomplete: the peer stalled
    /// mid-frame, holding memory; the stream ends.
    public func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let idle = event as? IdleStateHandler.IdleStateEvent, idle == .read, !failed,
            pending != nil || partialHeader.readableBytes > 0
        {
            failed = true
            releaseReservation()
            pending = nil
            context.fireErrorCaught(
                FrameError(.stalled, offset: offset, detail: "no bytes arrived for a frame in progress"))
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func releaseReservation() {
        if reserved > 0 { budget?.release(reserved) }
        reserved = 0
    }

    /// Decodes every frame completed by `data`.
    public func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        guard !failed else { return }
        var input = unwrapInboundIn(data)
        do throws(FrameError) {
            while input.readableBytes > 0 {
                if pending != nil {
                    try continuePending(with: &input, context: context)
                } else if partialHeader.readableBytes > 0 || input.readableBytes < Frame.headerSize {
                    var piece =
                        input.readSlice(
                            length: min(Frame.headerSize - partialHeader.readableBytes, input.readableBytes))
                        ?? ByteBuffer()
                    partialHeader.writeBuffer(&piece)
                    guard partialHeader.readableBytes == Frame.headerSize else { continue }
                    let header = try decodeHeader(partialHeader, at: partialHeader.readerIndex)
                    partialHeader.clear()
                    try start(header, context: context)
                } else {
                    let header = try decodeHeader(input, at: input.readerIndex)
                    let total = Frame.headerSize + Int(header.length)
                    if input.readableBytes >= total {
                        // Whole in this read: checksum it where it lies and slice it out.
                        var checksum = header.partialChecksum
                        input.withUnsafeReadableBytes { raw in
                            checksum.update(UnsafeRawBufferPointer(rebasing: raw[Frame.headerSize..<total]))
                        }
                        try header.verify(checksum, offset: offset)
                        input.moveReaderIndex(forwardBy: Frame.headerSize)
                        let payload = input.readSlice(length: Int(header.length)) ?? ByteBuffer()
                        try deliver(type: header.type, payload: payload, length: total, context: context)
                    } else {
                        input.moveReaderIndex(forwardBy: Frame.headerSize)
                        try start(header, context: context)
                    }
                }
            }
        } catch {
            failed = true
            releaseReservation()
            pending = nil
            context.fireErrorCaught(error)
        }
    }

    private func decodeHeader(_ buffer: ByteBuffer, at index: Int) throws(FrameError) -> FrameHeader {
        // safe: both callers made sure 16 bytes are readable at `index`.
        guard
            let header = try FrameHeader.decode(
                buffer, at: index, maximumPayloadLength: maximumPayloadLength, offset: offset)
        else { throw FrameError(.truncated, offset: offset, detail: "incomplete frame header") }
        return header
    }

    /// Begins assembling a frame whose header has been consumed.
    private func start(_ header: FrameHeader, context: ChannelHandlerContext) throws(FrameError) {
        let length = Int(header.length)
        guard length > 0 else {
            try header.verify(header.partialChecksum, offset: offset)
            try deliver(type: header.type, payload: ByteBuffer(), length: Frame.headerSize, context: context)
            return
        }
        if let budget {
            guard budget.reserve(length) else {
                throw FrameError(
                    .overBudget, offset: offset,
                    detail:
                        "a frame of \(length) bytes with \(budget.held) of \(budget.limit) held for frames in progress")
            }
            reserved = length
        }
        let allocator = length >= Self.largeFrame ? .retainingLargeBuffers : context.channel.allocator
        let payload = allocator.buffer(capacity: length)
        pending = Pending(header: header, payload: payload, checksum: header.partialChecksum, remaining: length)
    }

    private func continuePending(with input: inout ByteBuffer, context: ChannelHandlerContext) throws(FrameError) {
        guard var frame = pending else { return }
        pending = nil
        let count = min(frame.remaining, input.readableBytes)
        input.withUnsafeReadableBytes { raw in
            let piece = UnsafeRawBufferPointer(rebasing: raw[0..<count])
            frame.payload.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { target in
                // safe: minimumWritableBytes guarantees room for `count` bytes.
                guard let base = target.baseAddress else { return 0 }
                frame.checksum.update(copying: piece, to: base)
                return count
            }
        }
        input.moveReaderIndex(forwardBy: count)
        frame.remaining -= count
        guard frame.remaining == 0 else {
            pending = frame
            return
        }
        releaseReservation()
        try frame.header.verify(frame.checksum, offset: offset)
        try deliver(
            type: frame.header.type, payload: frame.payload, length: Frame.headerSize + Int(frame.header.length),
            context: context)
    }

    private func deliver(type: UInt16, payload: ByteBuffer, length: Int, context: ChannelHandlerContext)
        throws(FrameError)
    {
        let decoded = try EnvelopeCodec.decode(Frame(type: type, payload: payload), offset: offset)
        offset += length
        context.fireChannelRead(wrapInboundOut(decoded))
    }
}

@available(*, unavailable)
extension FrameAssembler: Sendable {}

/// Delivers decoded envelopes to the transport's stream, what one read brought as one batch;
/// closes the connection on the first protocol error, since the stream is then out of step.
final class EnvelopeDeliveryHandler: ChannelInboundHandler, @unchecked Sendable {
    // unchecked: `proven` and `pending` are touched only on the channel's event loop; the rest
    // is immutable.
    typealias InboundIn = (NodeID, Message)

    private let queue: InboundQueue
    /// Envelopes of the read in progress, handed over when it completes.
    private var pending: [Envelope] = []
    private let logger: Logger
    private let rejected: Counter
    private let received: Counter
    private let limiter: LogLimiter
    /// The node the connection proved to be, when it is secured; `nil` for plain TCP.
    private let identity: ConnectionIdentity?
    /// `identity`'s nodes once settled, read once instead of locking on every frame.
    private var proven: Set<NodeID>?
    private let refusedSenders: CountingCounter?

    init(
        queue: InboundQueue,
        logger: Logger,
        rejected: Counter,
        received: Counter,
        limiter: LogLimiter,
        identity: ConnectionIdentity? = nil,
        refusedSenders: CountingCounter? = nil
    ) {
        self.identity = identity
        self.refusedSenders = refusedSenders
        self.queue = queue
        self.logger = logger
        self.rejected = rejected
        self.received = received
        self.limiter = limiter
    }

    /// Hands over what the read brought.
    private func flush(_ channel: any Channel) {
        guard !pending.isEmpty else { return }
        received.increment(by: pending.count)
        queue.deliver(pending, from: channel)
        pending.removeAll(keepingCapacity: true)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flush(context.channel)
        context.fireChannelReadComplete()
    }

    func channelInactive(context: ChannelHandlerContext) {
        flush(context.channel)
        context.fireChannelInactive()
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let (sender, message) = unwrapInboundIn(data)
        guard message.type < Message.firstReservedType else { return }
        if let identity {
            if proven == nil { proven = identity.nodes }
            // A credential for one node does not let its holder speak as another.
            guard let proven, proven.contains(sender) else {
                refusedSenders?.increment()
                let refusal =
                    proven.map {
                        "a frame from '\(sender)' on a connection authenticated as \($0.sorted().map(\.name))"
                    }
                    ?? "a frame before the connection authenticated"
                close(context, after: "a frame from a sender it did not authenticate as", refusal)
                return
            }
        }
        pending.append(Envelope(from: sender, path: nil, message: message))
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let frameError = error as? FrameError {
            rejected.increment()
            close(context, after: "a bad frame", "\(frameError)")
        } else {
            logger.debug("connection error", metadata: ["error": "\(error)"])
            context.close(promise: nil)
        }
    }

    /// Closes the connection and logs why. A peer can provoke this as fast as it likes: one
    /// line a second at most, with how many were not logged.
    private func close(_ context: ChannelHandlerContext, after what: String, _ reason: String) {
        // What arrived before the bad frame was sound: it is delivered.
        flush(context.channel)
        if let suppressed = limiter.admit() {
            logger.warning(
                "closing connection after \(what)",
                metadata: [
                    "peer": "\(context.remoteAddress.map { "\($0)" } ?? "?")", "reason": "\(reason)",
                    "not_logged": "\(suppressed)",
                ])
        }
        context.close(promise: nil)
    }
}

/// Bytes that frames in progress may hold, shared by every connection of a listener: a peer
/// that declares a large frame and sends it slowly (or never) holds its reservation, and
/// beyond the limit new large frames are refused instead of allocated. Thread-safe.
public final class PartialFrameBudget: Sendable {
    /// The most bytes frames in progress may hold at once.
    public let limit: Int
    private let state: NIOLockedValueBox<Int>

    /// Creates a budget of `limit` bytes.
    public init(limit: Int) {
        self.limit = max(0, limit)
        state = NIOLockedValueBox(0)
    }

    /// Bytes held now.
    public var held: Int { state.withLockedValue { $0 } }

    /// Reserves `bytes`; `false` (nothing reserved) when that would pass the limit.
    public func reserve(_ bytes: Int) -> Bool {
        state.withLockedValue { held in
            guard bytes <= limit - held else { return false }
            held += bytes
            return true
        }
    }

    /// Returns `bytes` reserved earlier.
    public func release(_ bytes: Int) {
        state.withLockedValue { $0 = max(0, $0 - bytes) }
    }
}
