import Synchronization

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
/// No task of its own: whichever channel's consumer needs a message pulls the shared stream
/// and files what it reads for the others. Each channel holds at most `bufferLimit` messages
/// read for it ahead of its consumer; when one is full, nobody reads further until its
/// consumer takes some, so a consumer that stops reading stops the others (as it would stop
/// the shared stream itself) instead of growing memory. Messages for a block no channel
/// claimed are dropped and counted in ``unclaimed``.
public final class TransportDemultiplexer: Sendable {
    /// The transport being shared.
    public let transport: any Transport
    /// The most messages read ahead for one channel.
    public let bufferLimit: Int
    private let state: DemultiplexerState

    /// Shares `transport`; each channel may have up to `bufferLimit` (at least 1) messages read
    /// ahead of its consumer.
    public init(_ transport: any Transport, bufferLimit: Int = 1024) {
        self.transport = transport
        self.bufferLimit = max(1, bufferLimit)
        state = DemultiplexerState(base: transport.incoming.makeAsyncIterator(), limit: max(1, bufferLimit))
    }

    /// The transport for the protocol that owns `block`. Ask once per block: a block has one
    /// consumer, and a second channel for the same block is refused by a precondition.
    public func channel(forBlock block: UInt8) -> any Transport {
        let state = self.state
        let registered = state.claim(block)
        precondition(registered, "block 0x\(String(block, radix: 16)) already has a channel")
        return DemultiplexedChannel(block: block, shared: transport, state: state)
    }

    /// Messages dropped because no channel claimed their block.
    public var unclaimed: Int { state.unclaimedCount }
}

/// One block's view of a shared transport.
private final class DemultiplexedChannel: Transport {
    let block: UInt8
    let shared: any Transport
    let incoming: EnvelopeStream

    init(block: UInt8, shared: any Transport, state: DemultiplexerState) {
        self.block = block
        self.shared = shared
        incoming = EnvelopeStream(AsyncStream(unfolding: { await state.next(for: block) }))
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

/// The shared iterator and what has been read for each block.
private actor DemultiplexerState {
    private var base: EnvelopeStream.Iterator?
    private let limit: Int
    private var queues: [UInt8: [Envelope]] = [:]
    private var heads: [UInt8: Int] = [:]
    private var waiting: [CheckedContinuation<Void, Never>] = []
    private var pulling = false
    private var finished = false
    private nonisolated let claimed = LockedBlocks()

    init(base: EnvelopeStream.Iterator, limit: Int) {
        self.base = base
        self.limit = limit
    }

    nonisolated func claim(_ block: UInt8) -> Bool { claimed.claim(block) }
    nonisolated var unclaimedCount: Int { claimed.dropped }

    private func count(_ block: UInt8) -> Int { (queues[block]?.count ?? 0) - (heads[block] ?? 0) }

    private func pop(_ block: UInt8) -> Envelope? {
        guard count(block) > 0, var queue = queues[block] else { return nil }
        var head = heads[block] ?? 0
        let envelope = queue[head]
        head += 1
        if head == queue.count {
            queue.removeAll(keepingCapacity: true)
            head = 0
        }
        queues[block] = queue
        heads[block] = head
        return envelope
    }

    private func wakeAll() {
        let woken = waiting
        waiting.removeAll()
        for continuation in woken { continuation.resume() }
    }

    /// The next message for `block`, reading the shared stream when nobody else is and no
    /// channel's read-ahead is full; `nil` once the shared stream has ended and nothing is
    /// left for `block`.
    func next(for block: UInt8) async -> Envelope? {
        while true {
            if let envelope = pop(block) {
                wakeAll()  // a full queue just got room
                return envelope
            }
            if finished { return nil }
            if pulling || queues.keys.contains(where: { count($0) >= limit }) {
                await withCheckedContinuation { waiting.append($0) }
                continue
            }
            pulling = true
            var iterator = base
            base = nil
            let envelope = await iterator?.next(isolation: self)
            base = iterator
            pulling = false
            guard let envelope else {
                finished = true
                wakeAll()
                return nil
            }
            let owner = UInt8(truncatingIfNeeded: envelope.message.type >> 8)
            if owner == block {
                wakeAll()
                return envelope
            }
            if claimed.isClaimed(owner) {
                queues[owner, default: []].append(envelope)
            } else {
                claimed.drop()
            }
            wakeAll()
        }
    }
}

/// The claimed blocks and the unclaimed count, readable without the actor.
private final class LockedBlocks: Sendable {
    private let state = Mutex<(blocks: Set<UInt8>, dropped: Int)>(([], 0))

    func claim(_ block: UInt8) -> Bool { state.withLock { $0.blocks.insert(block).inserted } }
    func isClaimed(_ block: UInt8) -> Bool { state.withLock { $0.blocks.contains(block) } }
    func drop() { state.withLock { $0.dropped += 1 } }
    var dropped: Int { state.withLock { $0.dropped } }
}
