public import FaultToleranceCore
import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A destination on another machine: pages go as batches over a ``FaultToleranceCore/Transport``
/// (``LiveCopyWire``) to a ``LiveCopyReceiver``, which applies them to its ``OfflineRegion``.
///
/// Pages that are all zeros travel as a 12-byte entry; pages whose 64-bit fingerprint equals
/// the one last sent are skipped; batches can be deflated. Everything (batches, mirrored
/// writes, barriers, verification requests) goes through one ordered queue, so the receiver
/// applies it in the order the source produced it. The transport's incoming messages from the
/// peer are consumed by this destination: give it a transport of its own.
public final class RemoteDestination: LiveCopyDestination {
    /// Tuning.
    public struct Options: Sendable, Hashable {
        /// Deflate page batches (zlib level 1): worth it on slow links with compressible memory.
        public var compression: Bool
        /// Skip pages whose fingerprint equals the one last sent.
        public var skipUnchanged: Bool
        /// Bytes of page data per batch, from one page to 4 MiB.
        public var batchBytes: Int
        /// Bytes queued for the transport before the copier waits.
        public var maximumQueuedBytes: Int
        /// How long to wait for a reply, or for the transport to take anything from a full
        /// queue, before failing with ``LiveCopyError/Code/transport``.
        public var replyTimeout: Duration

        /// Creates options.
        public init(
            compression: Bool = false, skipUnchanged: Bool = true, batchBytes: Int = 1 << 20,
            maximumQueuedBytes: Int = 4 << 20, replyTimeout: Duration = .seconds(30)
        ) {
            self.compression = compression
            self.skipUnchanged = skipUnchanged
            self.batchBytes = batchBytes
            self.maximumQueuedBytes = maximumQueuedBytes
            self.replyTimeout = replyTimeout
        }
    }

    /// Sends each mirrored write, in order, to the receiver.
    public var mirror: any WriteMirror { remoteMirror }

    private let transport: any Transport
    private let peer: NodeID
    private let options: Options
    private let session: UInt64
    private let sender: OrderedSender
    private let replies = PendingReplies()
    private let remoteMirror: RemoteMirror
    private let nextRequest = NIOLockedValueBox<UInt64>(1)
    private let copier = NIOLockedValueBox<CopierState?>(nil)
    private let receiveTask: Task<Void, Never>
    private let clock: any RuntimeClock

    /// Creates a destination that copies to `peer` over `transport`; `clock` times the reply
    /// timeout, and its ``FaultToleranceCore/RuntimeClock/taskExecutor`` runs the
    /// destination's send and receive tasks (a simulation passes its virtual clock).
    public convenience init(
        transport: any Transport, peer: NodeID, options: Options = Options(), clock: any RuntimeClock = SystemClock()
    ) {
        self.init(
            transport: transport, peer: peer, options: options, clock: clock, session: UInt64.random(in: 1...UInt64.max)
        )
    }

    /// Creates a destination with a given session number (a simulation draws it from its seed).
    package init(transport: any Transport, peer: NodeID, options: Options, clock: any RuntimeClock, session: UInt64) {
        self.transport = transport
        self.peer = peer
        self.options = options
        self.clock = clock
        self.session = session
        let sender = OrderedSender(
            transport: transport, peer: peer, limit: options.maximumQueuedBytes, clock: clock)
        self.sender = sender
        self.remoteMirror = RemoteMirror(sender: sender, session: session, timeout: options.replyTimeout)
        let replies = self.replies
        let peer = self.peer
        let session = self.session
        receiveTask = Task(executorPreference: clock.taskExecutor) {
            for await envelope in transport.incoming
            where envelope.from == peer && envelope.message.type == LiveCopyWire.MessageType.reply {
                do throws(LiveCopyError) {
                    let reply = try LiveCopyWire.Reply.decode(envelope.message.payload)
                    guard reply.session == session else { continue }
                    if reply.kind == .refused {
                        // Request 0 is the session header: the receiver refused the geometry.
                        let code: LiveCopyError.Code =
                            reply.request != 0
                            ? .malformedMessage
                            : reply.detail.hasPrefix(LiveCopyReceiver.sessionActiveReason)
                                ? .sessionActive : .geometryMismatch
                        let error = LiveCopyError(code, detail: "receiver refused: \(reply.detail)")
                        replies.failAll(error)
                        // The copier may be waiting for room in the queue, not for a reply.
                        sender.fail(error)
                    } else {
                        replies.resolve(reply.request, .success(reply))
                    }
                } catch {
                    replies.failAll(error)
                    sender.fail(error)
                }
            }
            replies.failAll(LiveCopyError(.transport, detail: "the transport closed"))
        }
        sender.onFailure = { replies.failAll($0) }
    }

    deinit { receiveTask.cancel() }

    /// Sends the session header and waits until the receiver accepts the geometry.
    public func begin(pageSize: Int, pageCount: Int) async throws(LiveCopyError) {
        // A batch holds at most about twice batchBytes: it must fit a frame (16 MiB by default)
        // and the receiver's bound on a batch.
        guard options.batchBytes >= pageSize, options.batchBytes <= 4 << 20 else {
            throw LiveCopyError(
                .invalidConfiguration, detail: "batchBytes \(options.batchBytes) outside \(pageSize)...\(4 << 20)")
        }
        copier.withLockedValue {
            $0 = CopierState(
                pageSize: pageSize, pageCount: pageCount, session: session, batchBytes: options.batchBytes,
                queuedBytes: options.maximumQueuedBytes)
        }
        replies.register(0)
        try sender.enqueue(
            Message(
                type: LiveCopyWire.MessageType.begin,
                payload: LiveCopyWire.Begin(session: session, pageSize: pageSize, pageCount: pageCount).encode()))
        _ = try await wait(for: 0)
    }

    /// Sends `pages` in batches, waiting whenever the queue is full.
    public func copy(_ pages: PageSet, round: Int, from source: any LiveCopySource) async throws(LiveCopyError)
        -> Int
    {
        guard var state = takeCopierState() else {
            throw LiveCopyError(.invalidConfiguration, detail: "copy before begin")
        }
        defer { returnCopierState(state) }
        state.builder.round = round
        var runs: [Range<Int>] = []
        pages.forEachRun(maximumLength: max(1, options.batchBytes / state.pageSize)) { runs.append($0) }
        var sent = 0
        for run in runs {
            sent += state.append(run, from: source, skipUnchanged: options.skipUnchanged)
            if state.builder.bodyBytes >= options.batchBytes {
                try await sender.waitForCapacity(timeout: options.replyTimeout)
                try sender.enqueue(try state.finishBatch(deflate: options.compression))
            }
            if Task.isCancelled { throw LiveCopyError(.cancelled, round: round) }
        }
        if state.builder.count > 0 { try sender.enqueue(try state.finishBatch(deflate: options.compression)) }
        return sent
    }

    /// Takes the copier's state out of its box, so its fingerprint table and batch buffer are
    /// uniquely referenced while a round writes them (a copy left in the box made the first
    /// write of every round copy both).
    private func takeCopierState() -> CopierState? {
        copier.withLockedValue { state in
            defer { state = nil }
            return state
        }
    }

    private func returnCopierState(_ state: CopierState) {
        copier.withLockedValue { $0 = state }
    }

    /// Sends `pages` at once (the gate is paused), bypassing the queue limit.
    public func copyNow(_ pages: PageSet, from source: any LiveCopySource) throws(LiveCopyError) {
        guard var state = takeCopierState() else {
            throw LiveCopyError(.invalidConfiguration, detail: "copy before begin")
        }
        defer { returnCopierState(state) }
        var failure: LiveCopyError?
        pages.forEachRun(maximumLength: max(1, options.batchBytes / state.pageSize)) { run in
            guard failure == nil else { return }
            // Recopies are forced: the fingerprint said "unchanged" for a page that differs.
            _ = state.append(run, from: source, skipUnchanged: false)
            do throws(LiveCopyError) {
                try sender.enqueue(try state.finishBatch(deflate: options.compression))
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
    }

    /// Waits until the receiver has applied everything sent before.
    public func barrier() async throws(LiveCopyError) {
        let id = nextRequest.withLockedValue { id in
            defer { id += 1 }
            return id
        }
        replies.register(id)
        try sender.enqueue(
            Message(
                type: LiveCopyWire.MessageType.barrier,
                payload: LiveCopyWire.encodeRequest(session: session, request: id)))
        _ = try await wait(for: id)
    }

    /// Queues a verification request in order with everything sent before.
    public func startVerification(of pages: Range<Int>, checksums: [UInt32]) throws(LiveCopyError)
        -> VerificationTicket
    {
        let id = nextRequest.withLockedValue { id in
            defer { id += 1 }
            return id
        }
        replies.register(id)
        let request = LiveCopyWire.Verify(
            session: session, request: id, firstPage: pages.lowerBound, checksums: checksums)
        try sender.enqueue(Message(type: LiveCopyWire.MessageType.verify, payload: request.encode()))
        return VerificationTicket { () async throws(LiveCopyError) -> [Int] in try await self.wait(for: id).pages }
    }

    /// Tells the receiver the session ended.
    public func finish() async {
        try? sender.enqueue(
            Message(
                type: LiveCopyWire.MessageType.end, payload: LiveCopyWire.encodeRequest(session: session, request: 0)))
        try? await sender.drain(timeout: options.replyTimeout)
    }

    private func wait(for id: UInt64) async throws(LiveCopyError) -> LiveCopyWire.Reply {
        let timeout = options.replyTimeout
        let replies = self.replies
        let clock = self.clock
        let timer = Task(executorPreference: clock.taskExecutor) {
            try await clock.sleep(for: timeout)
            replies.resolve(
                id, .failure(LiveCopyError(.transport, detail: "no reply from the receiver within \(timeout)")))
        }
        defer { timer.cancel() }
        return try await replies.wait(id).get()
    }
}

/// The copier's private state: the batch being built and the page fingerprints.
private struct CopierState: Sendable {
    let pageSize: Int
    let pageCount: Int
    var builder: PageBatchBuilder
    var fingerprints: [UInt64]
    let zeroFingerprint: UInt64

    init(pageSize: Int, pageCount: Int, session: UInt64, batchBytes: Int, queuedBytes: Int) {
        self.pageSize = pageSize
        self.pageCount = pageCount
        // A batch closes once it reaches batchBytes after a run of at most batchBytes of pages,
        // so it never holds more than two such runs with their entry headers.
        let run = batchBytes + (batchBytes / pageSize + 1) * PageBatch.entryHeaderSize
        builder = PageBatchBuilder(
            session: session, pageSize: pageSize, capacity: PageBatch.headerSize + 2 * run + pageSize)
        // A fresh fingerprint key per session (see PageDigest).
        zeroFingerprint = builder.digest.zeroFingerprint(pageSize: pageSize)
        // The receiver's region starts zeroed.
        fingerprints = Array(repeating: zeroFingerprint, count: pageCount)
    }

    /// Appends the pages of `run`, skipping unchanged ones; returns the pages that will travel.
    mutating func append(_ run: Range<Int>, from source: any LiveCopySource, skipUnchanged: Bool) -> Int {
        var sent = 0
        // Pages of a run are contiguous: one lookup gives every page's address.
        let first = (source as? any PageAddressableSource)?.address(ofPage: run.lowerBound)
        for page in run {
            let address = first.map { $0 + (page - run.lowerBound) * pageSize }
            let fingerprint = builder.appendData(page: page, at: address, from: source)
            if skipUnchanged, fingerprint == fingerprints[page] {
                builder.dropLastData()
                continue
            }
            if fingerprint == zeroFingerprint {
                builder.dropLastData()
                builder.appendZero(page: page)
            } else {
                builder.commitLast()
            }
            fingerprints[page] = fingerprint
            sent += 1
        }
        return sent
    }

    mutating func finishBatch(deflate: Bool) throws(LiveCopyError) -> Message {
        let (payload, checksum) = try builder.finish(deflate: deflate)
        return Message(type: LiveCopyWire.MessageType.pageBatch, payload: payload, payloadChecksum: checksum)
    }
}

/// Duplicated mode over the wire: each write becomes one message in the ordered queue.
private final class RemoteMirror: WriteMirror, Sendable {
    let sender: OrderedSender
    let session: UInt64
    let timeout: Duration

    init(sender: OrderedSender, session: UInt64, timeout: Duration) {
        self.sender = sender
        self.session = session
        self.timeout = timeout
    }

    func mirrorWrite(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        // Duplicated mode runs at the link's pace: a writer waits while the queue is over twice
        // its limit (writers are threads; they also wait at the gate), at most the reply
        // timeout without progress, after which the queue fails and writes go unmirrored.
        sender.waitForRoomBlocking(timeout: timeout)
        sender.mirror(bytes, at: offset, session: session)
    }
}

/// One task sends queued messages in order; producers enqueue without suspending and wait for
/// room separately. Mirrored writes are gathered into one buffer that the sending task takes
/// whole when it gets to it, so duplicated mode sends as many writes per message as arrive
/// during one send; any other message first takes the gathered writes, keeping the order.
final class OrderedSender: Sendable {
    private enum Item {
        case message(Message)
        /// The gathered writes of generation `n`, if no other message has taken them since.
        case mirrored(UInt64)
    }

    private struct State {
        var queuedBytes = 0
        var waiters: [CheckedContinuation<Void, Never>] = []
        /// ``drain(timeout:)`` callers, woken after every message sent and on failure.
        var drainWaiters: [CheckedContinuation<Void, Never>] = []
        var failure: LiveCopyError?
        var onFailure: (@Sendable (LiveCopyError) -> Void)?
        var mirrored = ByteBuffer()
        var mirroredCount = 0
        var mirroredGeneration: UInt64 = 0
        /// Messages handed to the transport so far: the watchdog's measure of progress.
        var sent: UInt64 = 0
    }

    private let state = NIOLockedValueBox(State())
    private let continuation: AsyncStream<Item>.Continuation
    private let limit: Int
    private let task: Task<Void, Never>
    private let clock: any RuntimeClock

    init(transport: any Transport, peer: NodeID, limit: Int, clock: any RuntimeClock) {
        let (stream, continuation) = AsyncStream.makeStream(of: Item.self)
        self.continuation = continuation
        self.limit = limit
        self.clock = clock
        let state = self.state
        task = Task(executorPreference: clock.taskExecutor) {
            for await item in stream {
                let message: Message
                switch item {
                case .message(let queued):
                    message = queued
                case .mirrored(let generation):
                    // A later message may already have taken these writes (keeping them ahead of
                    // itself); then a newer buffer belongs to a newer token, behind that message.
                    guard
                        let gathered = state.withLockedValue({ state in
                            state.mirroredGeneration == generation ? Self.takeMirrored(&state) : nil
                        })
                    else { continue }
                    message = gathered
                }
                let size = message.payload.readableBytes
                var failure: LiveCopyError?
                do throws(TransportError) {
                    try await transport.send(message, to: peer, over: nil)
                } catch {
                    failure = LiveCopyError(.transport, transport: error)
                }
                let (waiters, handler) = state.withLockedValue { state in
                    state.queuedBytes -= size
                    state.sent &+= 1
                    RuntimeInvariants.check(state.queuedBytes >= 0, "send queue at \(state.queuedBytes) bytes")
                    if let failure, state.failure == nil { state.failure = failure }
                    let draining = state.drainWaiters
                    state.drainWaiters.removeAll()
                    guard state.queuedBytes < limit || state.failure != nil else {
                        return (draining, (@Sendable (LiveCopyError) -> Void)?.none)
                    }
                    defer { state.waiters.removeAll() }
                    return (state.waiters + draining, failure == nil ? nil : state.onFailure)
                }
                for waiter in waiters { waiter.resume() }
                if let failure { handler?(failure) }
            }
        }
    }

    deinit {
        continuation.finish()
    }

    private static func takeMirrored(_ state: inout State) -> Message? {
        guard state.mirroredCount > 0 else { return nil }
        var payload = state.mirrored
        LiveCopyWire.MirrorWrites.setCount(state.mirroredCount, in: &payload)
        state.mirrored = ByteBuffer()
        state.mirroredCount = 0
        return Message(type: LiveCopyWire.MessageType.mirrorWrites, payload: payload)
    }

    var onFailure: (@Sendable (LiveCopyError) -> Void)? {
        get { state.withLockedValue { $0.onFailure } }
        set { state.withLockedValue { $0.onFailure = newValue } }
    }

    func enqueue(_ message: Message) throws(LiveCopyError) {
        let failure = state.withLockedValue { state -> LiveCopyError? in
            if let failure = state.failure { return failure }
            state.queuedBytes += message.payload.readableBytes
            // Yielded under the lock so the order of the queue is the order of the calls.
            if let gathered = Self.takeMirrored(&state) { continuation.yield(.message(gathered)) }
            continuation.yield(.message(message))
            return nil
        }
        if let failure { throw failure }
    }

    /// Gathers one mirrored write.
    func mirror(_ bytes: UnsafeRawBufferPointer, at offset: Int, session: UInt64) {
        state.withLockedValue { state in
            guard state.failure == nil else { return }
            // Keep each message well under the transport's payload limit.
            if state.mirrored.readableBytes >= 1 << 20, let full = Self.takeMirrored(&state) {
                continuation.yield(.message(full))
            }
            if state.mirroredCount == 0 {
                state.mirrored.clear()
                LiveCopyWire.MirrorWrites.start(session: session, into: &state.mirrored)
                state.mirroredGeneration += 1
                continuation.yield(.mirrored(state.mirroredGeneration))
                state.queuedBytes += LiveCopyWire.MirrorWrites.headerSize
            }
            LiveCopyWire.MirrorWrites.append(offset: offset, bytes: bytes, to: &state.mirrored)
            state.mirroredCount += 1
            state.queuedBytes += 12 + bytes.count
        }
    }

    /// Waits until the queue is below its limit. Fails the queue (and so the copy) with
    /// ``LiveCopyError/Code/transport`` when the transport takes nothing for `timeout`: a
    /// receiver that stopped reading must not hold the copier forever.
    func waitForCapacity(timeout: Duration) async throws(LiveCopyError) {
        while true {
            let ready = state.withLockedValue { state -> Result<UInt64?, LiveCopyError> in
                if let failure = state.failure { return .failure(failure) }
                return .success(state.queuedBytes < limit ? nil : state.sent)
            }
            guard let progress = try ready.get() else { return }
            let clock = self.clock
            let watchdog = Task(executorPreference: clock.taskExecutor) { [weak self] in
                do { try await clock.sleep(for: timeout) } catch { return }
                self?.fail(
                    LiveCopyError(
                        .transport, detail: "the transport took nothing for \(timeout): the receiver is stalled"),
                    ifNoProgressSince: progress)
            }
            defer { watchdog.cancel() }
            await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLockedValue { state -> Bool in
                    if state.failure != nil || state.queuedBytes < limit { return true }
                    state.waiters.append(waiter)
                    return false
                }
                if resumeNow { waiter.resume() }
            }
        }
    }

    /// Fails the queue with `error`: waiters wake and throw it, later enqueues throw it.
    func fail(_ error: LiveCopyError) {
        fail(error, ifNoProgressSince: nil)
    }

    private func fail(_ error: LiveCopyError, ifNoProgressSince progress: UInt64?) {
        let (waiters, handler) = state.withLockedValue { state in
            guard state.failure == nil, progress == nil || progress == state.sent else {
                return ([CheckedContinuation<Void, Never>](), (@Sendable (LiveCopyError) -> Void)?.none)
            }
            state.failure = error
            defer {
                state.waiters.removeAll()
                state.drainWaiters.removeAll()
            }
            return (state.waiters + state.drainWaiters, state.onFailure)
        }
        for waiter in waiters { waiter.resume() }
        handler?(error)
    }

    /// Blocks the calling thread while more than twice the limit is queued (and the queue has
    /// not failed); when the transport takes nothing for `timeout`, fails the queue (the
    /// copy's next wait throws) and returns.
    func waitForRoomBlocking(timeout: Duration) {
        // Called on a writer's own thread (duplicated mode), never on the cooperative pool.
        var pause = timespec(tv_sec: 0, tv_nsec: 20_000)
        var progress = state.withLockedValue { $0.sent }
        var since = ContinuousClock.now
        while state.withLockedValue({ $0.failure == nil && $0.queuedBytes > 2 * limit }) {
            nanosleep(&pause, nil)
            let sent = state.withLockedValue { $0.sent }
            if sent != progress {
                progress = sent
                since = ContinuousClock.now
            } else if ContinuousClock.now - since >= timeout {
                fail(
                    LiveCopyError(
                        .transport, detail: "the transport took nothing for \(timeout): the receiver is stalled"),
                    ifNoProgressSince: progress)
            }
        }
    }

    /// Waits until everything queued has been handed to the transport, at most `timeout`
    /// without progress: suspended between messages (woken by each one sent), never polling.
    func drain(timeout: Duration) async throws(LiveCopyError) {
        var progress = state.withLockedValue { $0.sent }
        var since = clock.now
        while true {
            let (empty, failure, sent) = state.withLockedValue { ($0.queuedBytes == 0, $0.failure, $0.sent) }
            if let failure { throw failure }
            if empty { return }
            if sent != progress {
                progress = sent
                since = clock.now
            }
            let remaining = timeout - (clock.now - since)
            guard remaining > .zero else {
                throw LiveCopyError(.transport, detail: "the transport took nothing for \(timeout) while draining")
            }
            // Woken by the next message sent, by a failure, or by this watchdog at the deadline.
            let clock = self.clock
            let watchdog = Task(executorPreference: clock.taskExecutor) { [weak self] in
                do { try await clock.sleep(for: remaining) } catch { return }
                self?.wakeDrainers()
            }
            defer { watchdog.cancel() }
            await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
                let resumeNow = state.withLockedValue { state -> Bool in
                    if state.failure != nil || state.queuedBytes == 0 || state.sent != progress { return true }
                    state.drainWaiters.append(waiter)
                    return false
                }
                if resumeNow { waiter.resume() }
            }
        }
    }

    private func wakeDrainers() {
        let waiters = state.withLockedValue { state in
            defer { state.drainWaiters.removeAll() }
            return state.drainWaiters
        }
        for waiter in waiters { waiter.resume() }
    }
}

/// Replies the copier waits for, by request id; a reply may arrive before anyone waits.
final class PendingReplies: Sendable {
    private enum Slot {
        case waiting(CheckedContinuation<Result<LiveCopyWire.Reply, LiveCopyError>, Never>?)
        case done(Result<LiveCopyWire.Reply, LiveCopyError>)
    }

    private struct State {
        var slots: [UInt64: Slot] = [:]
        var failure: LiveCopyError?
    }

    private let state = NIOLockedValueBox(State())

    func register(_ id: UInt64) {
        state.withLockedValue { state in
            state.slots[id] = state.failure.map { .done(.failure($0)) } ?? .waiting(nil)
        }
    }

    func resolve(_ id: UInt64, _ result: Result<LiveCopyWire.Reply, LiveCopyError>) {
        let waiter = state.withLockedValue {
            state -> CheckedContinuation<Result<LiveCopyWire.Reply, LiveCopyError>, Never>? in
            guard case .waiting(let waiter)? = state.slots[id] else { return nil }
            if let waiter {
                state.slots[id] = nil
                return waiter
            }
            state.slots[id] = .done(result)
            return nil
        }
        waiter?.resume(returning: result)
    }

    func failAll(_ error: LiveCopyError) {
        let waiters = state.withLockedValue { state in
            if state.failure == nil { state.failure = error }
            var waiters: [CheckedContinuation<Result<LiveCopyWire.Reply, LiveCopyError>, Never>] = []
            for (id, slot) in state.slots {
                guard case .waiting(let waiter) = slot else { continue }
                if let waiter {
                    waiters.append(waiter)
                    state.slots[id] = nil
                } else {
                    state.slots[id] = .done(.failure(error))
                }
            }
            return waiters
        }
        for waiter in waiters { waiter.resume(returning: .failure(error)) }
    }

    func wait(_ id: UInt64) async -> Result<LiveCopyWire.Reply, LiveCopyError> {
        await withCheckedContinuation { continuation in
            let ready = state.withLockedValue { state -> Result<LiveCopyWire.Reply, LiveCopyError>? in
                switch state.slots[id] {
                case .done(let result)?:
                    state.slots[id] = nil
                    return result
                case .waiting?:
                    state.slots[id] = .waiting(continuation)
                    return nil
                case nil:
                    return .failure(
                        state.failure ?? LiveCopyError(.invalidConfiguration, detail: "no request \(id) pending"))
                }
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }
}
