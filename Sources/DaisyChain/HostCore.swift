import DequeModule
public import FaultToleranceCore
public import NIOCore

/// The host's side of the chain as a pure state machine: it numbers writes, sends them down the
/// right links (to the head in mirror mode, to each range's element in span mode), completes them
/// on commit, re-drives them when the chain re-links, routes reads (any clean element in mirror
/// mode, CRAQ-style; the holder in span mode) and fails what cannot be served with a typed error
/// naming the element. No clock (calls take `now`), no I/O (calls return effects).
public final class HostCore {
    /// What the runtime must do.
    public enum Effect: Sendable {
        /// Send a message.
        case send(ChainMessage, to: NodeID)
        /// A request finished: the bytes read (empty for writes and syncs), or the error.
        case complete(request: UInt64, Result<ByteBuffer, ChainError>)
    }

    private struct Piece {
        let request: UInt64
        var target: NodeID
        let version: UInt64
        let offset: Int
        let volumeOffset: Int
        let data: ByteBuffer
        let sync: Bool
        var link: UInt64 = 0
        var sequence: UInt64 = 0
    }

    private struct Request {
        var remaining: Int
        var error: ChainError?
        var reads: [(volumeOffset: Int, data: ByteBuffer)] = []
        var volumeOffset = 0
        var count = 0
        var isRead = false
    }

    private struct ReadPiece {
        let request: UInt64
        let volumeOffset: Int
        let count: Int
        var target: NodeID?
        var tried: Set<NodeID> = []
        var sentAt: Instant?
        var waitUntil: Instant?
        var firstSent: Instant?
    }

    /// This host's node.
    public let node: NodeID
    /// Where it listens, named in its hello (empty when the transport needs no address).
    public let address: String
    /// Its epoch: the head refuses writes of older epochs.
    public let epoch: UInt64
    /// The chain register as last heard.
    public private(set) var chain: ChainRegister?
    /// Mirror: the highest committed version heard.
    public private(set) var committed: UInt64 = 0
    /// Writes and syncs waiting for their commit.
    public var pendingWrites: Int { pieces.count }

    let timing: ChainTiming
    private var nextRequest: UInt64 = 1
    private var nextVersion: UInt64 = 1
    private var nextVersionOf: [NodeID: UInt64] = [:]
    private var committedOf: [NodeID: UInt64] = [:]
    private var pieces = Deque<Piece>()
    private var links: [NodeID: OutboundLink] = [:]
    private var requests: [UInt64: Request] = [:]
    private var reads: [UInt64: ReadPiece] = [:]
    private var readCursor = 0
    private var linkCounter: UInt64 = 0
    private var lastProgress: Instant = .zero
    private var lastHello: Instant?
    private var lastRedrive: Instant = .zero
    private var effects: [Effect] = []
    private var now: Instant = .zero
    private(set) var opened = false
    private var heardApplied: [NodeID: UInt64] = [:]
    /// Mirror: since when no element has been linked (writes and reads wait for a head, up to
    /// ``headlessWait``, then fail).
    private var headlessSince: Instant?
    /// Mirror: the bytes of writes that failed but still wait to go to a head (see
    /// ``abandonWaiting(_:)``); beyond ``abandonedLimit`` new writes fail at once.
    private var abandonedBytes = 0
    static let abandonedLimit = 256 << 20

    /// Mirror: how long writes wait for a chain that has no linked element to link one again
    /// before they fail: the element holding the most re-forms the chain after a catch-up
    /// timeout without a serving element, once it has heard from every other member.
    var headlessWait: Duration { timing.catchUpTimeout + timing.detectionTimeout * 4 }

    /// Creates the host's state.
    public init(node: NodeID, epoch: UInt64, timing: ChainTiming = ChainTiming(), address: String = "") {
        self.node = node
        self.address = address
        self.epoch = epoch
        self.timing = timing
    }

    /// The volume's capacity (0 before the first register).
    public var capacity: Int { chain?.volumeCapacity ?? 0 }

    private var greeted: [NodeID] = []

    /// Whether the host has heard the chain (a register from its head) and may send writes.
    public var isOpen: Bool { opened }

    /// The hello to send to every element at start.
    public func hello(to elements: [NodeID], now: Instant) -> [Effect] {
        self.now = now
        lastHello = now
        greeted = elements
        return elements.map { .send(.hello(hostEpoch: epoch, address: address), to: $0) }
    }

    // MARK: Requests

    /// Queues a write of `data` at `offset` of the volume; completes when every element that
    /// should hold it has it (mirror: the tail's commit; span: the holder's).
    public func write(_ data: ByteBuffer, at offset: Int, now: Instant) -> (request: UInt64, effects: [Effect]) {
        self.now = now
        let request = nextRequest
        nextRequest += 1
        guard let chain, opened else {
            effects.append(
                .complete(request: request, .failure(ChainError(.unavailable, detail: "the chain has not answered"))))
            return (request, flush())
        }
        let count = data.readableBytes
        guard offset >= 0, count <= chain.volumeCapacity, offset <= chain.volumeCapacity - count else {
            effects.append(
                .complete(
                    request: request,
                    .failure(
                        ChainError(
                            .outOfBounds,
                            detail: "write of \(count) bytes at \(offset) past the volume's \(chain.volumeCapacity)"))))
            return (request, flush())
        }
        var parts: [(NodeID?, Int, Int, Int)] = []  // target, drive offset, volume offset, count
        switch chain.mode {
        case .mirror:
            var start = 0
            repeat {
                let length = min(ChainMessage.maximumData, count - start)
                parts.append((nil, offset + start, offset + start, length))
                start += length
            } while start < count
        case .span:
            for piece in chain.spanPieces(offset..<(offset + count)) {
                var start = 0
                while start < piece.volume.count {
                    let length = min(ChainMessage.maximumData, piece.volume.count - start)
                    parts.append((piece.node, piece.driveOffset + start, piece.volume.lowerBound + start, length))
                    start += length
                }
            }
        }
        if parts.isEmpty {
            effects.append(.complete(request: request, .success(ByteBuffer())))
            return (request, flush())
        }
        requests[request] = Request(remaining: parts.count)
        for (target, driveOffset, volumeOffset, length) in parts {
            let slice = data.getSlice(at: data.readerIndex + (volumeOffset - offset), length: length) ?? ByteBuffer()
            submit(
                request: request, target: target, offset: driveOffset, volumeOffset: volumeOffset, data: slice,
                sync: false)
        }
        return (request, flush())
    }

    /// Queues a durability barrier: completes when every element has flushed every write before it.
    public func synchronize(now: Instant) -> (request: UInt64, effects: [Effect]) {
        self.now = now
        let request = nextRequest
        nextRequest += 1
        guard let chain, opened else {
            effects.append(
                .complete(request: request, .failure(ChainError(.unavailable, detail: "the chain has not answered"))))
            return (request, flush())
        }
        switch chain.mode {
        case .mirror:
            requests[request] = Request(remaining: 1)
            submit(request: request, target: nil, offset: 0, volumeOffset: 0, data: ByteBuffer(), sync: true)
        case .span:
            let targets = chain.members.filter { $0.linked && $0.drive.state.serves }.map(\.node)
            // An element that cannot serve but still has writes pending cannot flush them.
            if let gone = chain.members.first(where: { member in
                !(member.linked && member.drive.state.serves) && pieces.contains(where: { $0.target == member.node })
            }) {
                effects.append(
                    .complete(
                        request: request, .failure(ChainError(.unavailable, element: gone.node, detail: "cannot flush"))
                    ))
                return (request, flush())
            }
            requests[request] = Request(remaining: targets.count)
            if targets.isEmpty { finish(request) }
            for target in targets {
                submit(request: request, target: target, offset: 0, volumeOffset: 0, data: ByteBuffer(), sync: true)
            }
        }
        return (request, flush())
    }

    /// Queues a read of `count` bytes at `offset` of the volume.
    public func read(at offset: Int, count: Int, now: Instant) -> (request: UInt64, effects: [Effect]) {
        self.now = now
        let request = nextRequest
        nextRequest += 1
        guard let chain, opened else {
            effects.append(
                .complete(request: request, .failure(ChainError(.unavailable, detail: "the chain has not answered"))))
            return (request, flush())
        }
        guard offset >= 0, count >= 0, count <= chain.volumeCapacity, offset <= chain.volumeCapacity - count else {
            effects.append(
                .complete(
                    request: request,
                    .failure(
                        ChainError(
                            .outOfBounds,
                            detail: "read of \(count) bytes at \(offset) past the volume's \(chain.volumeCapacity)"))))
            return (request, flush())
        }
        var parts: [(Int, Int)] = []
        var start = 0
        while start < count {
            let length = min(ChainMessage.maximumData, count - start)
            parts.append((offset + start, length))
            start += length
        }
        var state = Request(remaining: parts.count)
        state.isRead = true
        state.volumeOffset = offset
        state.count = count
        requests[request] = state
        if parts.isEmpty { finish(request) }
        for (volumeOffset, length) in parts {
            let id = nextRequest
            nextRequest += 1
            reads[id] = ReadPiece(request: request, volumeOffset: volumeOffset, count: length)
            issueRead(id)
        }
        return (request, flush())
    }

    // MARK: Messages and time

    /// Handles a message from an element.
    public func handle(_ envelope: Envelope, now: Instant) -> [Effect] {
        self.now = now
        guard let message = try? ChainMessage.decode(envelope.message) else { return [] }
        switch message {
        case .registers(let register, let applied, _):
            heardApplied[envelope.from] = max(heardApplied[envelope.from] ?? 0, applied)
            if register.mode == .span {
                nextVersionOf[envelope.from] = max(nextVersionOf[envelope.from] ?? 1, applied + 1)
            }
            learn(register)
        case .signal(let signal):
            learn(signal.register)
        case .committed(let version):
            commit(version, from: envelope.from)
        case .linkAck(let link, let sequence):
            if var current = links[envelope.from], current.id == link {
                current.acknowledge(sequence, now: now)
                links[envelope.from] = current
                if chain?.mode == .span {
                    // Span: the holder applied the entry; that is the commit.
                    var done: [UInt64] = []
                    pieces.removeAll { piece in
                        guard piece.target == envelope.from, piece.link == link, piece.sequence <= sequence else {
                            return false
                        }
                        done.append(piece.request)
                        return true
                    }
                    if !done.isEmpty { lastProgress = now }
                    for request in done { pieceDone(request) }
                }
            }
        case .linkReset(let link, let next):
            if let current = links[envelope.from], current.id == link {
                openLink(envelope.from, id: next, resend: true)
            }
        case .readReply(let id, let status, let data):
            readReply(id, from: envelope.from, status: status, data: data)
        default:
            break
        }
        return flush()
    }

    /// Periodic work: sends again what was not acknowledged, retries reads, asks for registers when stuck.
    public func tick(now: Instant) -> [Effect] {
        self.now = now
        // Dictionaries are walked in sorted order: a simulation seed must replay the same sends.
        for target in links.keys.sorted() {
            guard var link = links[target] else { continue }
            for message in link.resend(now: now, after: timing.retransmitAfter, limit: ElementCore.resendLimit) {
                effects.append(.send(message, to: target))
            }
            links[target] = link
        }
        // An element that acknowledges nothing for the detection timeout is gone as far as the
        // requests waiting on it go (span: they fail naming it; mirror: only when the whole
        // chain has been silent four times as long).
        for target in links.keys.sorted() {
            guard let link = links[target], !link.unacked.isEmpty, now - link.lastProgress >= timing.detectionTimeout
            else { continue }
            if chain?.mode == .span {
                var failed: [UInt64] = []
                pieces.removeAll { piece in
                    guard piece.target == target else { return false }
                    failed.append(piece.request)
                    return true
                }
                links[target] = nil
                for request in failed {
                    fail(request, ChainError(.unavailable, element: target, detail: "does not acknowledge"))
                }
            } else if now - link.lastProgress >= timing.detectionTimeout * 4,
                now - lastProgress >= timing.detectionTimeout * 4
            {
                lastProgress = now
                abandonWaiting(ChainError(.unavailable, element: target, detail: "no element of the chain answers"))
            }
        }
        if let since = headlessSince, now - since >= headlessWait {
            headlessSince = now
            abandonWaiting(
                ChainError(.unavailable, detail: "no element of the chain has been linked for \(headlessWait)"))
        }
        // Mirror: writes the head acknowledged but the tail never committed (the head died, or
        // came back, before forwarding them) are sent again on a new link; elements skip what
        // they already hold.
        if chain?.mode == .mirror, !pieces.isEmpty, now - lastProgress >= timing.detectionTimeout,
            now - lastRedrive >= timing.detectionTimeout, let head = chain?.head
        {
            lastRedrive = now
            for index in pieces.indices { pieces[index].target = head }
            openLink(head, resend: true)
        }
        for id in reads.keys.sorted() {
            guard let piece = reads[id] else { continue }
            if let until = piece.waitUntil, now >= until {
                issueRead(id)
            } else if let sent = piece.sentAt, now - sent >= timing.retransmitAfter {
                issueRead(id)
            }
        }
        let stuck = (!pieces.isEmpty || !reads.isEmpty || !opened) && now - lastProgress >= timing.heartbeatInterval
        if stuck || chain == nil, lastHello.map({ now - $0 >= timing.heartbeatInterval }) ?? true {
            lastHello = now
            // Before any register, the elements first greeted (a lost hello or a lost answer
            // left the host greeting no one).
            for member in chain?.members.map(\.node) ?? greeted {
                effects.append(.send(.hello(hostEpoch: epoch, address: address), to: member))
            }
        }
        return flush()
    }

    // MARK: Internals

    private func submit(
        request: UInt64, target: NodeID?, offset: Int, volumeOffset: Int, data: ByteBuffer, sync: Bool
    ) {
        guard let chain else { return }
        let resolved: NodeID
        let version: UInt64
        if let target {
            resolved = target
            version = nextVersionOf[target] ?? 1
            nextVersionOf[target] = version + 1
            guard let member = chain.member(target), member.linked, member.drive.state.serves else {
                fail(
                    request,
                    ChainError(
                        .unavailable, element: target,
                        detail: "holds \(volumeOffset)..<\(volumeOffset + data.readableBytes)"))
                return
            }
        } else {
            guard abandonedBytes <= Self.abandonedLimit else {
                // Failed writes still waiting for a head hold this much: refuse more (taking
                // no version, so the next head still sees none missing).
                fail(
                    request,
                    ChainError(
                        .unavailable,
                        detail: "\(abandonedBytes) bytes of failed writes wait for the chain to take them"))
                return
            }
            version = nextVersion
            nextVersion += 1
            guard let head = chain.head else {
                // No element is linked for now: the write waits (unsent, addressed to no
                // element) until one is, when the new head's link takes every waiting piece.
                headlessSince = headlessSince ?? now
                pieces.append(
                    Piece(
                        request: request, target: node, version: version, offset: offset,
                        volumeOffset: volumeOffset, data: data, sync: sync))
                return
            }
            resolved = head
        }
        let piece = Piece(
            request: request, target: resolved, version: version, offset: offset, volumeOffset: volumeOffset,
            data: data, sync: sync)
        pieces.append(piece)
        sendPiece(pieces.count - 1)
    }

    private func sendPiece(_ index: Int) {
        let piece = pieces[index]
        if links[piece.target] == nil { openLink(piece.target, resend: false) }
        guard var link = links[piece.target] else { return }
        pieces[index].link = link.id
        pieces[index].sequence = link.next
        let message = link.enqueue(
            .write(
                hostEpoch: epoch, version: piece.version, offset: UInt64(piece.offset), sync: piece.sync,
                data: piece.data))
        links[piece.target] = link
        effects.append(.send(message, to: piece.target))
    }

    private func openLink(_ target: NodeID, id: UInt64? = nil, resend: Bool) {
        linkCounter += 1
        let named = ElementCore.linkID(node: node, incarnation: epoch, counter: linkCounter, namedByReceiver: false)
        var link = OutboundLink(target: target, id: id ?? named, now: now)
        if resend {
            for index in pieces.indices where pieces[index].target == target {
                let piece = pieces[index]
                pieces[index].link = link.id
                pieces[index].sequence = link.next
                effects.append(
                    .send(
                        link.enqueue(
                            .write(
                                hostEpoch: epoch, version: piece.version, offset: UInt64(piece.offset),
                                sync: piece.sync, data: piece.data)), to: target))
            }
        }
        links[target] = link
    }

    private func learn(_ register: ChainRegister) {
        var merged = chain ?? register
        merged.merge(register)
        let changed = merged != chain
        chain = merged
        if !opened, let head = merged.head, merged.mode == .span || heardApplied[head] != nil {
            opened = true
            if merged.mode == .mirror { nextVersion = (heardApplied.values.max() ?? 0) + 1 }
            lastProgress = now
        }
        if changed { registerChanged() }
    }

    private func registerChanged() {
        guard let chain else { return }
        switch chain.mode {
        case .mirror:
            guard let head = chain.head else {
                // The element holding the most re-forms the chain after a catch-up timeout:
                // the writes wait for it (``tick(now:)`` fails them after ``headlessWait``).
                headlessSince = headlessSince ?? now
                links = [:]
                return
            }
            headlessSince = nil
            if pieces.contains(where: { $0.target != head }) || links[head] == nil {
                for index in pieces.indices { pieces[index].target = head }
                links = [:]
                openLink(head, resend: true)
            }
        case .span:
            var failed: [(UInt64, NodeID)] = []
            pieces.removeAll { piece in
                guard let member = chain.member(piece.target), member.linked, member.drive.state.serves else {
                    failed.append((piece.request, piece.target))
                    return true
                }
                return false
            }
            for (request, target) in failed {
                fail(
                    request,
                    ChainError(.unavailable, element: target, detail: "cut out of the chain or its drive failed"))
            }
        }
    }

    private func commit(_ version: UInt64, from sender: NodeID) {
        guard let chain else { return }
        var done: [UInt64] = []
        switch chain.mode {
        case .mirror:
            guard version > committed else { return }
            committed = version
            while let first = pieces.first, first.version <= version {
                pieces.removeFirst()
                if requests[first.request] == nil { abandonedBytes -= first.data.readableBytes }
                done.append(first.request)
            }
        case .span:
            guard version > (committedOf[sender] ?? 0) else { return }
            committedOf[sender] = version
            pieces.removeAll { piece in
                if piece.target == sender && piece.version <= version {
                    done.append(piece.request)
                    return true
                }
                return false
            }
        }
        lastProgress = now
        for request in done { pieceDone(request) }
    }

    private func pieceDone(_ request: UInt64) {
        if var state = requests[request] {
            state.remaining -= 1
            requests[request] = state
            if state.remaining <= 0 { finish(request) }
        }
        // Reads held back by this write may go now.
        for id in reads.keys.sorted() {
            guard let piece = reads[id], piece.target == nil, piece.sentAt == nil, piece.waitUntil == nil else {
                continue
            }
            issueRead(id)
        }
    }

    private func finish(_ request: UInt64) {
        guard let state = requests.removeValue(forKey: request) else { return }
        if let error = state.error {
            effects.append(.complete(request: request, .failure(error)))
        } else if state.isRead {
            var buffer = ByteBuffer()
            buffer.reserveCapacity(state.count)
            for part in state.reads.sorted(by: { $0.volumeOffset < $1.volumeOffset }) {
                var data = part.data
                buffer.writeBuffer(&data)
            }
            effects.append(.complete(request: request, .success(buffer)))
        } else {
            effects.append(.complete(request: request, .success(ByteBuffer())))
        }
    }

    /// Mirror: the waiting writes and flushes fail, but their pieces stay and go to the next
    /// head, so the versions it sees have no gap (a head that sees one leaves to catch up). A
    /// failed write may still land later, as a failed write to a disk may have.
    private func abandonWaiting(_ error: ChainError) {
        for request in Set(pieces.map(\.request)).sorted() {
            guard var state = requests[request] else { continue }
            if state.error == nil { state.error = error }
            requests[request] = state
            finish(request)
        }
        abandonedBytes = pieces.reduce(0) { $0 + (requests[$1.request] == nil ? $1.data.readableBytes : 0) }
    }

    private func fail(_ request: UInt64, _ error: ChainError) {
        guard var state = requests[request] else { return }
        if state.error == nil { state.error = error }
        state.remaining -= 1
        requests[request] = state
        // Other pieces of a failed write still complete or fail on their own; the request ends
        // with the first error once all are accounted for.
        if state.remaining <= 0 { finish(request) }
    }

    private func overlapsPendingWrite(_ range: Range<Int>) -> Bool {
        for piece in pieces where !piece.sync {
            let written = piece.volumeOffset..<(piece.volumeOffset + piece.data.readableBytes)
            if written.overlaps(range) { return true }
        }
        return false
    }

    private func issueRead(_ id: UInt64) {
        guard var piece = reads[id], let chain else { return }
        piece.waitUntil = nil
        let range = piece.volumeOffset..<(piece.volumeOffset + piece.count)
        if overlapsPendingWrite(range) {
            // Read your writes: wait for the writes to this range to commit.
            piece.target = nil
            piece.sentAt = nil
            reads[id] = piece
            return
        }
        switch chain.mode {
        case .span:
            let parts = chain.spanPieces(range)
            guard let part = parts.first, parts.count == 1 else {
                // A piece across elements: split it into per-element pieces.
                reads[id] = nil
                if var state = requests[piece.request] {
                    state.remaining += parts.count - 1
                    requests[piece.request] = state
                }
                for part in parts {
                    let sub = nextRequest
                    nextRequest += 1
                    reads[sub] = ReadPiece(
                        request: piece.request, volumeOffset: part.volume.lowerBound, count: part.volume.count)
                    issueRead(sub)
                }
                return
            }
            let silent = piece.firstSent.map { now - $0 >= timing.detectionTimeout } ?? false
            guard let member = chain.member(part.node), member.linked, member.drive.state.serves, !silent else {
                reads[id] = nil
                fail(
                    piece.request,
                    ChainError(.unavailable, element: part.node, detail: silent ? "does not answer" : "holds \(range)"))
                return
            }
            if piece.firstSent == nil { piece.firstSent = now }
            piece.target = part.node
            piece.sentAt = now
            reads[id] = piece
            effects.append(
                .send(
                    .read(
                        request: id, offset: UInt64(part.driveOffset), count: UInt32(piece.count),
                        // Span: the host is the range's only writer and a commit means the holder
                        // has the bytes; its version counter restarts with it.
                        atLeast: 0), to: part.node))
        case .mirror:
            let serving = chain.members.filter { $0.linked && $0.drive.state.serves }.map(\.node)
            guard !serving.isEmpty else {
                if chain.head == nil, let since = headlessSince, now - since >= headlessWait {
                    reads[id] = nil
                    fail(
                        piece.request,
                        ChainError(.unavailable, detail: "no element of the chain has been linked for \(headlessWait)"))
                } else {
                    // A chain re-linking (or re-forming, with no element linked: see
                    // ``headlessWait``) answers soon: ask again.
                    if chain.head == nil { headlessSince = headlessSince ?? now }
                    piece.waitUntil = now + timing.retransmitAfter
                    piece.sentAt = nil
                    reads[id] = piece
                }
                return
            }
            var candidates = serving.filter { !piece.tried.contains($0) }
            if candidates.isEmpty {
                piece.tried = []
                candidates = serving
                if piece.sentAt != nil {
                    // Every element refused or was silent: wait a little for the commit.
                    piece.waitUntil = now + timing.retransmitAfter / 4
                    piece.sentAt = nil
                    reads[id] = piece
                    return
                }
            }
            readCursor &+= 1
            let target = candidates[readCursor % candidates.count]
            piece.tried.insert(target)
            piece.target = target
            piece.sentAt = now
            reads[id] = piece
            effects.append(
                .send(
                    .read(
                        request: id, offset: UInt64(piece.volumeOffset), count: UInt32(piece.count), atLeast: committed),
                    to: target))
        }
    }

    private func readReply(_ id: UInt64, from sender: NodeID, status: ReadStatus, data: ByteBuffer) {
        guard var piece = reads[id], piece.target == sender else { return }
        switch status {
        case .ok:
            guard data.readableBytes == piece.count else {
                issueRead(id)
                return
            }
            reads[id] = nil
            lastProgress = now
            guard var state = requests[piece.request] else { return }
            state.reads.append((piece.volumeOffset, data))
            state.remaining -= 1
            requests[piece.request] = state
            if state.remaining <= 0 { finish(piece.request) }
        case .outOfRange:
            reads[id] = nil
            fail(piece.request, ChainError(.outOfBounds, element: sender, detail: "the element's drive is smaller"))
        case .dirty, .notReady, .driveFault:
            if chain?.mode == .span {
                piece.waitUntil = now + timing.retransmitAfter / 4
                piece.sentAt = nil
                reads[id] = piece
            } else {
                reads[id] = piece
                issueRead(id)
            }
        }
    }

    /// Pending work, for a failure's detail.
    public var debugState: String {
        let writes = pieces.map { "v\($0.version)->\($0.target)\($0.sync ? "(sync)" : "")" }.joined(separator: " ")
        let links = links.map { "\($0.key): id \($0.value.id) next \($0.value.next) unacked \($0.value.unacked.count)" }
            .joined(separator: "; ")
        let reads = reads.map { "r\($0.key)->\($0.value.target.map(\.name) ?? "-")" }.joined(separator: " ")
        return
            "host: generation \(chain?.generation.description ?? "-") linked \(chain?.linked ?? []) committed \(committed) "
            + "pending [\(writes)] reads [\(reads)] links [\(links)]"
    }

    private func flush() -> [Effect] {
        defer { effects.removeAll(keepingCapacity: true) }
        return effects
    }
}
