import FaultToleranceCore
import Logging
import Metrics
import NIOCore

/// Cuts a TCP byte stream into envelopes with ``FrameDecoder``; hostile bytes surface as a
/// ``FrameError`` through `errorCaught`.
struct EnvelopeStreamDecoder: ByteToMessageDecoder {
    typealias InboundOut = (NodeID, Message)

    var frames: FrameDecoder

    init(maximumPayloadLength: Int) {
        frames = FrameDecoder(maximumPayloadLength: maximumPayloadLength)
    }

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        let offset = frames.offset
        guard let frame = try frames.next(from: &buffer) else { return .needMoreData }
        let decoded = try EnvelopeCodec.decode(frame, offset: offset)
        context.fireChannelRead(wrapInboundOut(decoded))
        return .continue
    }

    mutating func decodeLast(context: ChannelHandlerContext, buffer: inout ByteBuffer, seenEOF: Bool) throws
        -> DecodingState
    {
        while try decode(context: context, buffer: &buffer) == .continue {}
        return .needMoreData
    }
}

/// Delivers decoded envelopes to the transport's stream; closes the connection on the first
/// protocol error, since the stream is then out of step.
final class EnvelopeDeliveryHandler: ChannelInboundHandler, Sendable {
    typealias InboundIn = (NodeID, Message)

    private let continuation: AsyncStream<Envelope>.Continuation
    private let flow: InboundFlowControl
    private let logger: Logger
    private let rejected: Counter
    private let received: Counter

    init(
        continuation: AsyncStream<Envelope>.Continuation,
        flow: InboundFlowControl,
        logger: Logger,
        rejected: Counter,
        received: Counter
    ) {
        self.continuation = continuation
        self.flow = flow
        self.logger = logger
        self.rejected = rejected
        self.received = received
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let (sender, message) = unwrapInboundIn(data)
        guard message.type < Message.firstReservedType else { return }
        received.increment()
        continuation.yield(Envelope(from: sender, path: nil, message: message))
        flow.delivered(on: context.channel)
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        if let frameError = error as? FrameError {
            rejected.increment()
            logger.warning(
                "closing connection after a bad frame",
                metadata: ["peer": "\(context.remoteAddress.map { "\($0)" } ?? "?")", "error": "\(frameError)"])
        } else {
            logger.debug("connection error", metadata: ["error": "\(error)"])
        }
        context.close(promise: nil)
    }
}
