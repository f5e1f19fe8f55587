public import FaultToleranceCore
public import Logging
public import Metrics
import NIOConcurrencyHelpers
import NIOCore
public import ServiceLifecycle

/// The offline side of a remote live copy: applies page batches and mirrored writes from a
/// ``RemoteDestination`` to an ``OfflineRegion`` and answers barriers and verification
/// requests.
///
/// Every message is decoded with bounds checks against the region; anything malformed is
/// answered with a refusal and ends ``serveSession()`` with ``LiveCopyError/Code/malformedMessage``, so
/// hostile bytes never reach the region.
public final class LiveCopyReceiver: Service, Sendable {
    /// The region the copy lands in.
    public let region: OfflineRegion

    private let transport: any Transport
    private let logger: Logger
    private let metricsFactory: any MetricsFactory
    private let refusals = NIOLockedValueBox<(counts: [String: Int], counters: [String: Counter])>(([:], [:]))
    private let logLimiter = LogLimiter()
    private let sessionContinuation: AsyncStream<Summary>.Continuation

    /// Each session the receiver finished while running as a `Service` (``run()``), in order;
    /// the newest 64 are kept for a consumer that falls behind. Finishes when ``run()`` returns.
    public let sessions: AsyncStream<Summary>

    /// Creates a receiver that applies what arrives on `transport` to `region`; refusals are
    /// counted in `ft_livecopy_receiver_refused_total{reason}`.
    public init(
        transport: any Transport, region: OfflineRegion, logger: Logger = Logger(label: "ft.livecopy.receiver"),
        metricsFactory: (any MetricsFactory)? = nil
    ) {
        self.transport = transport
        self.region = region
        self.logger = logger
        self.metricsFactory = metricsFactory ?? MetricsSystem.factory
        (sessions, sessionContinuation) = AsyncStream.makeStream(
            of: Summary.self, bufferingPolicy: .bufferingNewest(64))
    }

    /// What a finished session did.
    public struct Summary: Sendable, Hashable {
        /// Page batches applied.
        public var batches = 0
        /// Pages applied (zero pages included).
        public var pages = 0
        /// Mirrored writes applied.
        public var mirroredWrites = 0
        /// Verification requests answered.
        public var verifications = 0
    }

    /// Serves one session: returns at its end message (or when the transport closes), throws
    /// on malformed input from the session's peer after telling it why.
    ///
    /// The session is pinned to the peer whose `begin` opened it: messages from any other
    /// node, a second `begin` among them, are refused (the sender is told) and counted in
    /// ``refused``, and never reach the region or end the session; so are malformed messages
    /// before a session begins. Refusals are logged at most once a second.
    ///
    /// To serve session after session for as long as a program runs, run the receiver as a
    /// `Service` (``run()``) instead.
    public func serveSession() async throws(LiveCopyError) -> Summary {
        var incoming = transport.incoming.makeAsyncIterator()
        return try await serveSession(from: &incoming).summary
    }

    /// As a ServiceLifecycle `Service`: serves sessions one after another until the group
    /// shuts down gracefully, the task is cancelled or the transport closes. Each finished
    /// session is yielded to ``sessions``; a session that fails (malformed input, a geometry
    /// that does not match the region) is logged at warning and the receiver waits for the
    /// next one, so one bad peer does not stop the program. A session in progress at shutdown
    /// is abandoned: its source sees the copy fail.
    public func run() async throws {
        defer { sessionContinuation.finish() }
        await cancelWhenGracefulShutdown {
            var incoming = self.transport.incoming.makeAsyncIterator()
            while !Task.isCancelled {
                do {
                    let (summary, transportClosed) = try await self.serveSession(from: &incoming)
                    if transportClosed { return }
                    self.sessionContinuation.yield(summary)
                } catch {
                    self.logger.warning("live copy session failed", metadata: ["error": "\(error)"])
                }
            }
        }
    }

    private func serveSession(
        from incoming: inout EnvelopeStream.Iterator
    ) async throws(LiveCopyError) -> (summary: Summary, transportClosed: Bool) {
        var summary = Summary()
        var session: UInt64?
        var owner: NodeID?
        while let envelope = await incoming.next() {
            let message = envelope.message
            if let owner, envelope.from != owner {
                // Not the session's peer: whatever it sends, refuse it and go on.
                let detail = "\(Self.sessionActiveReason) (from \(owner))"
                refuse(envelope, reason: "foreign-peer", detail: detail)
                // A copier's `begin` is answered in its own session, so it fails at once.
                if message.type == LiveCopyWire.MessageType.begin,
                    let begin = try? LiveCopyWire.Begin.decode(message.payload)
                {
                    await reply(.init(kind: .refused, session: begin.session, request: 0, detail: detail), to: envelope)
                }
                continue
            }
            do throws(LiveCopyError) {
                switch message.type {
                case LiveCopyWire.MessageType.begin:
                    let begin = try LiveCopyWire.Begin.decode(message.payload)
                    if session != nil {
                        let detail = Self.sessionActiveReason
                        refuse(envelope, reason: "second-begin", detail: detail)
                        await reply(
                            .init(kind: .refused, session: begin.session, request: 0, detail: detail), to: envelope)
                        continue
                    }
                    guard begin.pageSize == region.pageSize, begin.pageCount == region.pageCount else {
                        let detail =
                            "region is \(region.pageCount) pages of \(region.pageSize) bytes, "
                            + "copy is \(begin.pageCount) of \(begin.pageSize)"
                        await reply(
                            .init(kind: .refused, session: begin.session, request: 0, detail: detail), to: envelope)
                        throw LiveCopyError(.geometryMismatch, detail: detail)
                    }
                    session = begin.session
                    owner = envelope.from
                    await reply(.init(kind: .ready, session: begin.session, request: 0), to: envelope)
                case LiveCopyWire.MessageType.pageBatch:
                    let batch = try PageBatch.decode(
                        message.payload, pageSize: region.pageSize, pageCount: region.pageCount)
                    try expect(batch.session, session)
                    region.apply(batch)
                    summary.batches += 1
                    summary.pages += batch.entries.count
                case LiveCopyWire.MessageType.mirrorWrites:
                    let mirrored = try LiveCopyWire.MirrorWrites.decode(message.payload, byteCount: region.byteCount)
                    try expect(mirrored.session, session)
                    for write in mirrored.writes {
                        try write.bytes.withUnsafeReadableBytes { raw in
                            Result { () throws(LiveCopyError) in try region.write(raw, at: write.offset) }
                        }.get()
                    }
                    summary.mirroredWrites += mirrored.writes.count
                case LiveCopyWire.MessageType.barrier:
                    let (id, request) = try LiveCopyWire.decodeRequest(message.payload)
                    try expect(id, session)
                    await reply(.init(kind: .barrier, session: id, request: request), to: envelope)
                case LiveCopyWire.MessageType.verify:
                    let verify = try LiveCopyWire.Verify.decode(message.payload, pageCount: region.pageCount)
                    try expect(verify.session, session)
                    let pages = verify.firstPage..<(verify.firstPage + verify.checksums.count)
                    let differing = zip(pages, zip(region.checksums(of: pages), verify.checksums))
                        .compactMap { $1.0 == $1.1 ? nil : $0 }
                    summary.verifications += 1
                    await reply(
                        .init(kind: .mismatches, session: verify.session, request: verify.request, pages: differing),
                        to: envelope)
                case LiveCopyWire.MessageType.end:
                    let (id, _) = try LiveCopyWire.decodeRequest(message.payload)
                    try expect(id, session)
                    logger.info(
                        "live copy session ended",
                        metadata: ["batches": "\(summary.batches)", "mirrored": "\(summary.mirroredWrites)"])
                    return (summary, false)
                default:
                    logger.debug("ignoring message", metadata: ["type": "\(message.type)"])
                }
            } catch {
                if error.code != .geometryMismatch {
                    await reply(
                        .init(kind: .refused, session: session ?? 0, request: .max, detail: error.description),
                        to: envelope)
                }
                // Before a session, garbage from anyone must not stop the receiver.
                guard owner != nil else {
                    refuse(envelope, reason: "malformed", detail: error.description)
                    if error.code == .geometryMismatch { throw error }
                    continue
                }
                // Thrown to the caller (and told to the sender): logged here at debug only.
                logger.debug("refusing live copy message", metadata: ["error": "\(error)"])
                throw error
            }
        }
        return (summary, true)
    }

    /// The start of a refusal's detail when a session is already active.
    static let sessionActiveReason = "a session is already active"

    /// Messages refused without ending the session (from another peer, a second `begin`,
    /// malformed before a session), by reason.
    public var refused: [String: Int] { refusals.withLockedValue { $0.counts } }

    private func refuse(_ envelope: Envelope, reason: String, detail: String) {
        let counter = refusals.withLockedValue { state -> Counter in
            state.counts[reason, default: 0] += 1
            if let counter = state.counters[reason] { return counter }
            let counter = Counter(
                label: "ft_livecopy_receiver_refused_total", dimensions: [("reason", reason)], factory: metricsFactory)
            state.counters[reason] = counter
            return counter
        }
        counter.increment()
        // A peer can send refusable messages as fast as it likes: one line a second at most.
        if let suppressed = logLimiter.admit() {
            logger.warning(
                "refusing live copy messages",
                metadata: [
                    "from": "\(envelope.from)", "reason": "\(reason)", "detail": "\(detail)",
                    "refusals_not_logged": "\(suppressed)",
                ])
        }
    }

    private func expect(_ received: UInt64, _ session: UInt64?) throws(LiveCopyError) {
        guard let session, received == session else {
            throw LiveCopyError(.malformedMessage, detail: "message for session \(received) outside session")
        }
    }

    private func reply(_ reply: LiveCopyWire.Reply, to envelope: Envelope) async {
        do {
            try await transport.send(
                Message(type: LiveCopyWire.MessageType.reply, payload: reply.encode()), to: envelope.from, over: nil)
        } catch {
            logger.warning("cannot reply to the live copy source", metadata: ["error": "\(error)"])
        }
    }
}
