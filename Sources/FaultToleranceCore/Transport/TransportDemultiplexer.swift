import DequeModule
import NIOConcurrencyHelpers

/// One transport shared by several protocols, each owning a block of message types: the
/// block of type `0xMM00` is every type `0xMM00...0xMMFF` (heartbeats 0x01, live copy 0x02,
/// checkpointing 0x03, and so on; see the module table).
///
/// Each ``channel(forBlock:)`` is a ``Transport`` of its own: its ``Transport/incoming`` holds
/// only its block's messages, and it sends only its block's types, over the shared transport.
/// So one process runs a heartbeat service, a live-copy receiver and the modules to come on
/// one port per peer.
///
/// ```swift
/// let shared = TransportDemultiplexer(try await TCPTransport.start(configuration: tcp))
/// let heartbeats = shared.channel(forBlock: 0x01)
/// let liveCopy = shared.channel(forBlock: 0x02)
/// let receiver = LiveCopyReceiver(transport: liveCopy, region: region)
/// ```
///
/// One task of its own reads the shared stream and files each message for its channel, so a
/// channel whose consumer is cancelled (a service stopping before the others, a live copy
/// ending) ends only that iteration: the shared stream goes on for the rest. A channel's
/// ``Transport/incoming`` can be iterated again after that, one consumer at a time (session
/// after session of a live copy over one channel), which a transport's own stream cannot: a
/// cancelled consumer ends it for good.
///
/// Each channel holds at most `bufferLimit` messages read for it ahead of its consumer; when
/// one is full, the reading task waits until its consumer takes some, so a consumer that stops
/// reading stops the others (as it would stop the shared stream itself) instead of growing
/// memory. A channel whose consumer was cancelled and has not come back does not hold the
/// others up: once its read-ahead is full, further messages for it are dropped. Dropped
/// messages, and those for a block no channel claimed, are counted in ``unclaimed``. The
/// reading task ends when the shared transport closes.
public final class TransportDemultiplexer: Sendable {
    /// The transport being shared.
    public let transport: any Transport
    /// The most messages read ahead for one channel.
    public let bufferLimit: Int
    private let state: DemultiplexerState

    /// Shares `transport`; each channel may have up to `bufferLimit` (at least 1) messages read
    /// ahead of its consumer. The reading task prefers `executor` (a simulation passes its
    /// clock's ``RuntimeClock/taskExecutor``; Swift's global executor by default).
    public init(_ transport: any Transport, bufferLimit: Int = 1024, executor: (any TaskExecutor)? = nil) {
        self.transport = transport
        self.bufferLimit = max(1, bufferLimit)
        let state = DemultiplexerState(limit: max(1, bufferLimit))
        self.state = state
        let incoming = transport.incoming
        Task(executorPreference: executor) { await state.pump(incoming) }
    }

    /// The transport for the protocol that owns `block`. Ask once per block: a block has one
    /// consumer, and a second channel for the same block is refused by a precondition.
    public func channel(forBlock block: UInt8) -> any Transport {
        let registered = state.claim(block)
        precondition(registered, "block 0x\(String(block, radix: 16)) already has a channel")
        return DemultiplexedChannel(block: block, shared: transport, state: state)
    }

    /// Messages dropped: no channel claimed their block, or its consumer had gone and its
    /// read-ahead was full.
    public var unclaimed: Int { state.unclaimedCount }
}

/// One block's view of a shared transport.
private final class DemultiplexedChannel: Transport {
    let block: UInt8
    let shared: any Transport
    let state: DemultiplexerState

    init(block: UInt8, shared: any Transport, state: DemultiplexerState) {
        self.block = block
        self.shared = shared
        self.state = state
    }

    /// A new stream each time, so a consumer can start again after an earlier one was
    /// cancelled (one at a time).
    var incoming: EnvelopeStream {
        let (state, block) = (self.state, self.block)
        return EnvelopeStream(AsyncStream(unfolding: { await state.next(for: block) }))
    }

    var localNode: NodeID { shared.localNode }
    var authenticatesSenders: Bool { shared.authenticatesSenders }

    func send(_ message: Message, to node: NodeID, over path: PathID?) async throws(TransportError) {
        guard UInt8(truncatingIfNeeded: message.type >> 8) == block else {
            throw TransportError(
                .typeOutsideBlock, peer: node,
                detail:
                    "type 0x\(String(message.type, radix: 16)) on the channel for block 0x\(String(block, radix: 16))")
        }
        try await shared.send(message, to: node, over: path)
    }

    /// Closes the shared transport: every channel's stream ends.
    func close() async { await shared.close() }
}

/// What has been read for each block, who waits for it, and the reading task's own wait.
private final class DemultiplexerState: Sendable {
    private struct Queues {
        var claimed: Set<UInt8> = []
        /// Blocks whose consumer was cancelled and has not asked again: messages past their
        /// read-ahead are dropped instead of holding the reader.
        var gone: Set<UInt8> = []
        var queues: [UInt8: Deque<Envelope>] = [:]
        var consumers: [UInt8: CheckedContinuation<Envelope?, Never>] = [:]
        /// The reading task, waiting for room in `full`'s queue.
        var reader: (full: UInt8, continuation: CheckedContinuation<Void, Never>)?
        var finished = false
        var dropped = 0

        func count(_ block: UInt8) -> Int { queues[block]?.count ?? 0 }

        mutating func pop(_ block: UInt8) -> Envelope? { queues[block]?.popFirst() }

        /// The reading task's continuation, if it waits on `block` and that queue has room now.
        mutating func releaseReader(after block: UInt8, limit: Int) -> CheckedContinuation<Void, Never>? {
            guard let reader, reader.full == block, count(block) < limit || gone.contains(block) else { return nil }
            self.reader = nil
            return reader.continuation
        }
    }

    private let limit: Int
    private let state = NIOLockedValueBox(Queues())

    init(limit: Int) { self.limit = limit }

    func claim(_ block: UInt8) -> Bool { state.withLockedValue { $0.claimed.insert(block).inserted } }
    var unclaimedCount: Int { state.withLockedValue { $0.dropped } }

    /// Reads the shared stream until it ends, filing each message for its block's consumer and
    /// waiting while that block's read-ahead is full.
    func pump(_ incoming: EnvelopeStream) async {
        for await envelope in incoming {
            let owner = UInt8(truncatingIfNeeded: envelope.message.type >> 8)
            let (consumer, mustWait) = state.withLockedValue {
                state -> (CheckedContinuation<Envelope?, Never>?, Bool) in
                guard state.claimed.contains(owner), !state.gone.contains(owner) || state.count(owner) < limit else {
                    state.dropped += 1
                    return (nil, false)
                }
                if let consumer = state.consumers.removeValue(forKey: owner) { return (consumer, false) }
                state.queues[owner, default: []].append(envelope)
                return (nil, state.count(owner) >= limit && !state.gone.contains(owner))
            }
            consumer?.resume(returning: envelope)
            if mustWait {
                await withCheckedContinuation { continuation in
                    let resumeNow = state.withLockedValue { state -> Bool in
                        if state.count(owner) < limit || state.gone.contains(owner) { return true }
                        state.reader = (owner, continuation)
                        return false
                    }
                    if resumeNow { continuation.resume() }
                }
            }
        }
        let waiting = state.withLockedValue { state in
            state.finished = true
            defer { state.consumers.removeAll() }
            return Array(state.consumers.values)
        }
        for consumer in waiting { consumer.resume(returning: nil) }
    }

    /// The next message for `block`; `nil` once the shared stream has ended and nothing is
    /// left for `block`, or when the consumer's task is cancelled (that iteration ends).
    func next(for block: UInt8) async -> Envelope? {
        await withTaskCancellationHandler {
            await withCheckedContinuation { (continuation: CheckedContinuation<Envelope?, Never>) in
                let (ready, reader) = state.withLockedValue {
                    state -> (Envelope??, CheckedContinuation<Void, Never>?) in
                    if Task.isCancelled { return (.some(nil), nil) }
                    state.gone.remove(block)
                    if let envelope = state.pop(block) {
                        return (.some(envelope), state.releaseReader(after: block, limit: limit))
                    }
                    if state.finished { return (.some(nil), nil) }
                    state.consumers[block] = continuation
                    return (nil, nil)
                }
                reader?.resume()
                if let ready { continuation.resume(returning: ready) }
            }
        } onCancel: {
            let (consumer, reader) = state.withLockedValue { state in
                state.gone.insert(block)
                return (state.consumers.removeValue(forKey: block), state.releaseReader(after: block, limit: limit))
            }
            consumer?.resume(returning: nil)
            reader?.resume()
        }
    }
}
