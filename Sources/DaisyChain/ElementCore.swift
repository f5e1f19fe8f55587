import DequeModule
public import FaultToleranceCore
import HeartbeatQuorum
import NIOCore

/// How often elements and hosts talk when nothing else happens, and how long a silence means death.
public struct ChainTiming: Sendable, Hashable {
    /// Between heartbeats to each neighbour.
    public var heartbeatInterval: Duration
    /// A neighbour silent this long is cut out.
    public var detectionTimeout: Duration
    /// An unacknowledged link entry or host request is sent again after this long.
    public var retransmitAfter: Duration
    /// A catch-up stream without progress for this long is dropped (the rejoining element asks again).
    public var catchUpTimeout: Duration

    /// Creates timing; the detection timeout defaults to 2.5 heartbeat intervals.
    public init(
        heartbeatInterval: Duration = .milliseconds(100), detectionTimeout: Duration? = nil,
        retransmitAfter: Duration? = nil, catchUpTimeout: Duration? = nil
    ) {
        self.heartbeatInterval = heartbeatInterval
        self.detectionTimeout = detectionTimeout ?? heartbeatInterval * 5 / 2
        self.retransmitAfter = retransmitAfter ?? heartbeatInterval / 2
        self.catchUpTimeout = catchUpTimeout ?? heartbeatInterval * 20
    }

    /// How often the runtime ticks (a quarter heartbeat interval).
    public var tick: Duration { heartbeatInterval / 4 }
}

/// The sending side of an ordered, acknowledged stream of entries to one receiver.
struct OutboundLink {
    let target: NodeID
    let id: UInt64
    var next: UInt64 = 1
    var unacked = Deque<(sequence: UInt64, payload: LinkPayload, bytes: Int)>()
    var unackedBytes = 0
    var lastProgress: Instant
    var lastResend: Instant
    /// Doubles with every resend that brought no acknowledgement (up to 64 times the first
    /// wait): a peer that refuses or cannot keep up is not flooded with the same entries.
    var backoff: Int64 = 1

    init(target: NodeID, id: UInt64, now: Instant) {
        self.target = target
        self.id = id
        lastProgress = now
        lastResend = now
    }

    mutating func enqueue(_ payload: LinkPayload) -> ChainMessage {
        let sequence = next
        next += 1
        let bytes = payload.dataBytes + 64
        unacked.append((sequence, payload, bytes))
        unackedBytes += bytes
        return .entry(link: id, sequence: sequence, payload)
    }

    mutating func acknowledge(_ sequence: UInt64, now: Instant) {
        var progressed = false
        while let first = unacked.first, first.sequence <= sequence {
            unackedBytes -= first.bytes
            unacked.removeFirst()
            progressed = true
        }
        if progressed {
            lastProgress = now
            backoff = 1
        }
    }

    /// The unacknowledged entries to send again, up to `limit` bytes, if it is time.
    mutating func resend(now: Instant, after: Duration, limit: Int) -> [ChainMessage] {
        guard !unacked.isEmpty, now - lastProgress >= after, now - lastResend >= after * backoff else { return [] }
        if lastResend > lastProgress { backoff = min(backoff * 2, 64) }
        lastResend = now
        var out: [ChainMessage] = []
        var bytes = 0
        for entry in unacked {
            out.append(.entry(link: id, sequence: entry.sequence, entry.payload))
            bytes += entry.bytes
            if bytes >= limit { break }
        }
        return out
    }
}

/// The receiving side of one sender's stream.
struct InboundLink {
    let id: UInt64
    var through: UInt64 = 0
    var buffered: [UInt64: LinkPayload] = [:]
    var bufferedBytes = 0
}

extension LinkPayload {
    var writeVersion: UInt64? {
        if case .write(_, let version, _, _, _) = self { version } else { nil }
    }

    var traceName: String {
        switch self {
        case .write(_, let version, _, _, _): "write \(version)"
        case .catchUpBegin(let asOf, _): "begin \(asOf)"
        case .fill(let offset, _): "fill \(offset / 4096)"
        case .catchUpEnd: "end"
        }
    }

    var dataBytes: Int {
        switch self {
        case .write(_, _, _, _, let data), .fill(_, let data): data.readableBytes
        default: 0
        }
    }
}

/// What an element has done, for tests, the simulation and metrics.
public struct ElementCounters: Sendable, Hashable {
    /// Host writes applied.
    public var writesApplied = 0
    /// Bytes written to the drive by catch-up fills.
    public var fillBytesReceived = 0
    /// Bytes read from the drive to fill a rejoining element.
    public var fillBytesSent = 0
    /// Signals and registers refused as stale, entries from a sender that is not our upstream.
    public var stale = 0
    /// Messages refused as malformed.
    public var malformed = 0
    /// Reads answered with data.
    public var readsServed = 0
    /// Reads refused (dirty, not ready).
    public var readsRefused = 0
    /// Link entries sent again.
    public var retransmitted = 0
    /// Catch-ups completed as the rejoining element.
    public var catchUps = 0
    /// Catch-ups by block fingerprints (the change log did not reach back far enough).
    public var fingerprintCatchUps = 0
}

/// One chain element's logic over its drive: the registers (``RegisterMachine``), the ordered
/// links to its neighbours, write application, commits, CRAQ reads, failure detection and
/// catch-up. It reads no clock (every call takes `now`) and touches no network (every call
/// returns the messages to send); its only I/O is its own drive, synchronously. The runtime
/// (``ChainElement``) calls it from one task at a time.
public final class ElementCore {
    /// Planted bugs for the simulation to catch.
    public enum Bug: String, Sendable, CaseIterable {
        /// Forward a received signal with the register held before applying it.
        case forwardBeforeApply = "forward-before-apply"
        /// Mirror mode: the head commits a write as soon as it applies it, before the tail has it.
        case commitAtHead = "commit-at-head"
    }

    /// Block granularity of dirty tracking, the change log and catch-up (4 KiB).
    public static let blockSize = 4096
    /// Most change-log entries kept for catch-up (older changes need a fingerprint diff).
    public static let changeLogLimit = 1 << 20
    /// Most unacknowledged bytes on a catch-up stream before fills wait.
    static let fillWindow = 16 << 20
    /// Most bytes sent again at once on a link.
    static let resendLimit = 4 << 20

    /// This element.
    public let node: NodeID
    /// Its drive.
    public let drive: ElementDrive
    /// Its registers.
    public private(set) var machine: RegisterMachine
    /// The last version applied.
    public private(set) var applied: UInt64 = 0
    /// The highest version this element knows to be committed.
    public private(set) var committed: UInt64 = 0
    /// The highest host epoch seen.
    public private(set) var hostEpoch: UInt64 = 0
    /// Counters.
    public private(set) var counters = ElementCounters()
    /// Whether this element is receiving a catch-up stream.
    public private(set) var catchingUp = false
    /// Whether an operator's link-down holds this element out of the chain: it neither links
    /// itself again nor asks to join until a link-up, hot-plug, drive-ready or reset (or a
    /// restart, which forgets it), and if another element's register links it, it unlinks
    /// itself again. Without the hold, the element's own recovery undid the signal at once.
    public private(set) var heldDown = false
    /// A planted bug.
    public let bug: Bug?
    /// Called on every signal this element raises (the simulation measures convergence from it).
    public var onRaise: ((SignalKind, Instant) -> Void)?
    /// Told of each step of catch-ups, links and membership, for a simulation's trace.
    package var trace: ((String) -> Void)?
    /// Called at the end of every event (start, message, tick, raise), for the simulation's
    /// checks the instant a register changes.
    package var afterEvent: (() -> Void)?

    let timing: ChainTiming
    private let incarnation: UInt64
    private var linkCounter: UInt64 = 0
    private var dirty: [Int: UInt64] = [:]
    private var changeLog = Deque<(version: UInt64, first: Int, count: Int)>()
    private var logStart: UInt64 = 0
    private var uncommitted = Deque<(version: UInt64, payload: LinkPayload)>()
    /// The latest committed writes (at most ``retainedLimit`` entries and ``retainedBytes``
    /// bytes): a new successor gets those it may lack, since a commit made under a membership
    /// that lost to a concurrent one does not prove the winning tail holds the write.
    private var retained = Deque<(version: UInt64, payload: LinkPayload)>()
    private var retainedData = 0
    static let retainedLimit = 1024
    static let retainedBytes = 32 << 20
    private var outbound: OutboundLink?
    private var inbound: [NodeID: InboundLink] = [:]
    private var expectedLink: [NodeID: UInt64] = [:]
    private var resets: [NodeID: (stale: UInt64, next: UInt64, at: Instant)] = [:]
    private var lastRefusal: [NodeID: Instant] = [:]
    private var learner: Learner?
    private var detectors: [NodeID: (detector: FailureDetector, since: Instant)] = [:]
    private var lastHeartbeat: Instant?
    private var lastJoin: Instant?
    private var lastCommitAnnounce: Instant?
    private var catchUpSource: NodeID?
    /// While a catch-up is unfinished: the version held before it began (what the next catch-up
    /// must start from; ``applied`` already counts writes past fills still missing).
    private var catchUpFrom: UInt64?
    /// What each element said it holds (registers and join requests), for re-forming a chain.
    private var peerApplied: [NodeID: UInt64] = [:]
    private var orphanedSince: Instant?
    private var linkedUninitializedSince: Instant?
    private var lastCommitProgress: Instant = .zero
    private var lastReopen: Instant = .zero
    private var lastCatchUpProgress: Instant = .zero
    private var outbox: [RegisterMachine.Outbound] = []
    private var now: Instant = .zero
    private let startedAt: Instant
    /// A fingerprint listing in progress: to whom, and the next block (a page per event).
    private var fingerprintJob: (source: NodeID, next: Int)?
    /// A catch-up by fingerprints whose last page went out: the fills (or the end) come next.
    private var fingerprintsSent = false

    /// A catch-up stream: to a joiner not yet linked (`linked` false: when the fills are done it is
    /// linked behind us and handed the tail), or to a linked successor that is still initializing
    /// (its link stands in for ``outbound`` until the catch-up ends).
    private struct Learner {
        var link: OutboundLink
        var drive: DriveRegister
        var pending: [Range<Int>]
        var waitingForFingerprints: Bool
        var linked = false
        /// The joiner's version when it asked (where a log catch-up starts).
        var from: UInt64 = 0
        /// When the last fingerprint page came (or the catch-up began).
        var heard: Instant = .zero
    }

    /// The element our outbound writes go to, whether on the plain link or a catch-up link.
    private var outboundTarget: NodeID? {
        outbound?.target ?? (learner?.linked == true ? learner?.link.target : nil)
    }

    /// Starts an element over `drive`. With `forming`, a blank drive takes `initial` as it is
    /// (a new chain, every element starting together). Otherwise the element rejoins: with the
    /// registers its drive saved (mirror: by catch-up; span: at its place), or, on a blank drive,
    /// as a new element that copies what the chain holds before it serves.
    ///
    /// `incarnation` grows with every start of this element (the runtime passes the wall clock in
    /// microseconds), so the links it names are newer than any before a restart.
    public init(
        node: NodeID, drive: ElementDrive, initial: ChainRegister, timing: ChainTiming = ChainTiming(),
        incarnation: UInt64, forming: Bool = false, bug: Bug? = nil, now: Instant
    ) throws(ChainError) {
        self.node = node
        self.drive = drive
        self.timing = timing
        self.incarnation = incarnation
        self.bug = bug
        self.now = now
        self.startedAt = now
        if let saved = drive.load() {
            var chain = saved.chain
            chain.merge(initial)
            machine = try RegisterMachine(node: node, chain: chain, incarnation: incarnation)
            applied = saved.applied
            committed = 0
            hostEpoch = saved.hostEpoch
            logStart = applied
            restartedFromSavedRegisters = true
        } else {
            machine = try RegisterMachine(node: node, chain: initial, incarnation: incarnation)
            restartedFromSavedRegisters = !forming
        }
        if bug == .forwardBeforeApply { machine.bug = .forwardBeforeApply }
    }

    private let restartedFromSavedRegisters: Bool

    /// The first effects after start: a restarted element leaves the chain and asks back in.
    public func start(now: Instant) -> [RegisterMachine.Outbound] {
        self.now = now
        if restartedFromSavedRegisters {
            if machine.chain.mode == .mirror {
                // Stamped with this incarnation, the drive register outranks anything the
                // last one said and never saved.
                send(machine.changeDrive(.hotPlug) { $0.state = .initializing })
                onRaise?(.hotPlug, now)
                send(machine.propose(linking: node, linked: false))
                becomeRejoiner()
            } else {
                send(machine.changeDrive(.driveReady) { _ in })
                send(machine.propose(linking: node, linked: true))
            }
        } else {
            try? persist()
        }
        registerChanged()
        return flush()
    }

    /// This element's chain register.
    public var chain: ChainRegister { machine.chain }

    /// Whether this element answers reads now.
    public var serves: Bool {
        guard machine.drive.state.serves, machine.isLinked else { return false }
        return !catchingUp
    }

    // MARK: Events

    /// Handles one message.
    public func handle(_ envelope: Envelope, now: Instant) -> [RegisterMachine.Outbound] {
        self.now = now
        let message: ChainMessage
        do {
            message = try ChainMessage.decode(envelope.message)
        } catch {
            counters.malformed += 1
            return []
        }
        handle(message, from: envelope.from)
        pump()
        pumpFingerprints()
        return flush()
    }

    /// Periodic work: heartbeats, failure detection, retransmission, rejoin requests, commit announcements.
    /// `heard` holds when the runtime's receiving task last saw a heartbeat from each element
    /// (heartbeats queued behind a burst of writes still count from their arrival).
    public func tick(now: Instant, heard: [NodeID: Instant] = [:]) -> [RegisterMachine.Outbound] {
        self.now = now
        for (sender, at) in heard {
            guard var watch = detectors[sender], (watch.detector.lastArrival ?? .zero) < at else { continue }
            watch.detector.heartbeat(at: at)
            detectors[sender] = watch
        }
        let neighbours = self.neighbours
        if lastHeartbeat.map({ now - $0 >= timing.heartbeatInterval }) ?? true {
            lastHeartbeat = now
            // Neighbours, and every element cut out of the chain (or all of them when we are):
            // a cut element hears no signals, so digests are how two of them find each other.
            for target in heartbeatTargets {
                outbox.append(
                    .init(message: .heartbeat(digest: chain.digest, epoch: chain.generation.epoch), to: target))
            }
        }
        for neighbour in neighbours {
            guard let watch = detectors[neighbour] else { continue }
            if watch.detector.hasFailed(at: now, since: watch.since) {
                detectors[neighbour] = nil
                // Only a serving element cuts a neighbour out: one still catching up would cut
                // its own source (and, winning the tie, leave a chain nobody can serve).
                guard serves else { continue }
                send(machine.propose(linking: neighbour, linked: false))
                registerChanged()
            }
        }
        if var link = outbound {
            let again = link.resend(now: now, after: timing.retransmitAfter, limit: Self.resendLimit)
            counters.retransmitted += again.count
            for message in again { outbox.append(.init(message: message, to: link.target)) }
            outbound = link
        }
        if var current = learner {
            let fingerprintsLost =
                current.waitingForFingerprints && now - current.heard >= timing.retransmitAfter * 4
            if fingerprintsLost
                || (now - current.link.lastProgress >= timing.catchUpTimeout && !current.link.unacked.isEmpty)
            {
                learner = nil
                if current.linked { openOutbound(to: current.link.target) }
            } else {
                let again = current.link.resend(now: now, after: timing.retransmitAfter, limit: Self.resendLimit)
                counters.retransmitted += again.count
                for message in again { outbox.append(.init(message: message, to: current.link.target)) }
                learner = current
            }
        }
        reformIfOrphaned()
        // Writes we forwarded that never committed (our successor restarted after acknowledging
        // them, say): send them again on a new link; the successor skips what it holds.
        if chain.mode == .mirror, let link = outbound, let oldest = uncommitted.first, oldest.version > committed,
            now - lastCommitProgress >= timing.detectionTimeout, now - lastReopen >= timing.detectionTimeout
        {
            lastReopen = now
            openOutbound(to: link.target)
        }
        // Linked in a membership that won over our own unlinking (we restarted, or our
        // proposal lost a tie) while our drive is still initializing and no catch-up runs:
        // we would be a member that cannot serve (a tail that never commits). Leave again.
        if machine.isLinked, machine.chain.mode == .mirror, machine.drive.state == .initializing, !catchingUp {
            if let since = linkedUninitializedSince, now - since >= timing.detectionTimeout * 2 {
                linkedUninitializedSince = nil
                send(machine.propose(linking: node, linked: false))
                becomeRejoiner()
                registerChanged()
            } else if linkedUninitializedSince == nil {
                linkedUninitializedSince = now
            }
        } else {
            linkedUninitializedSince = nil
        }
        if machine.isLinked, machine.chain.mode == .mirror, catchingUp,
            now - lastCatchUpProgress >= timing.catchUpTimeout
        {
            // Linked while its catch-up stalled (the source went): leave and ask again.
            send(machine.propose(linking: node, linked: false))
            catchingUp = false
            becomeRejoiner()
            registerChanged()
        }
        if !heldDown, !machine.isLinked, machine.chain.mode == .mirror,
            lastJoin.map({ now - $0 >= timing.heartbeatInterval * 2 }) ?? true
        {
            // Fingerprint pages are not acknowledged: when the last went out and nothing came
            // back for 8 retransmission intervals, one was lost (the source gave up on it after
            // 4); ask again (the fills already written stay: the new diff skips them).
            let fingerprintsLost = fingerprintsSent && now - lastCatchUpProgress >= timing.retransmitAfter * 8
            if catchingUp, now - lastCatchUpProgress < timing.catchUpTimeout, !fingerprintsLost {
                // The catch-up is moving; wait for it.
            } else {
                fingerprintsSent = false
                catchingUp = false
                askToJoin()
            }
        }
        let commits = isCommitter || (chain.mode == .span && machine.isLinked && applied > 0)
        if commits, lastCommitAnnounce.map({ now - $0 >= timing.heartbeatInterval }) ?? true {
            announceCommit()
        }
        pump()
        pumpFingerprints()
        return flush()
    }

    /// An operator's signal (or a fault a test injects): the element raises it about itself.
    public func raise(_ kind: SignalKind, now: Instant) -> [RegisterMachine.Outbound] {
        self.now = now
        operatorSignal(kind)
        pump()
        return flush()
    }

    // MARK: Messages

    private func handle(_ message: ChainMessage, from sender: NodeID) {
        switch message {
        case .signal(let signal):
            do {
                trace?("signal \(signal.kind) from \(sender) of \(signal.register.generation)")
                send(try machine.receive(signal, from: sender))
                registerChanged()
            } catch {
                trace?("refused \(signal.kind) from \(sender): \(error)")
                counters.stale += 1
                outbox.append(.init(message: .registers(chain, applied: applied, reply: false), to: sender))
            }
        case .registers(let register, let theirs, let reply):
            if theirs > 0 { peerApplied[sender] = theirs }
            do {
                if try machine.exchange(register, from: sender) { registerChanged() }
                if reply {
                    outbox.append(.init(message: .registers(chain, applied: applied, reply: false), to: sender))
                }
            } catch {
                counters.stale += 1
                outbox.append(.init(message: .registers(chain, applied: applied, reply: false), to: sender))
            }
        case .heartbeat(let digest, _):
            if var watch = detectors[sender] {
                watch.detector.heartbeat(at: now)
                detectors[sender] = watch
            }
            if digest != chain.digest {
                outbox.append(.init(message: .registers(chain, applied: applied, reply: true), to: sender))
            }
        case .entry(let link, let sequence, let payload):
            receiveEntry(link: link, sequence: sequence, payload, from: sender)
        case .linkAck(let link, let sequence):
            if outbound?.id == link { outbound?.acknowledge(sequence, now: now) }
            if learner?.link.id == link { learner?.link.acknowledge(sequence, now: now) }
        case .linkReset(let link, let next):
            trace?(
                "link reset from \(sender): \(link) -> \(next); outbound \(outbound?.id ?? 0) learner \(learner?.link.id ?? 0)"
            )
            if let current = outbound, current.id == link { openOutbound(to: current.target, id: next) }
            if let current = learner, current.link.id == link {
                learner = nil
                if current.linked {
                    openOutbound(to: current.link.target, id: next)
                } else {
                    startCatchUp(for: current.link.target, drive: current.drive, from: current.from, id: next)
                }
            }
        case .committed(let version):
            learnCommitted(version)
        case .read(let request, let offset, let count, let atLeast):
            answerRead(request: request, offset: Int(offset), count: Int(count), atLeast: atLeast, to: sender)
        case .join(let register, let theirs):
            peerApplied[sender] = theirs
            receiveJoin(from: sender, drive: register, applied: theirs)
        case .hello(let epoch, _):
            if epoch > hostEpoch { hostEpoch = epoch }
            outbox.append(.init(message: .registers(chain, applied: applied, reply: false), to: sender))
        case .fingerprints(let firstBlock, let blocks, let last):
            receiveFingerprints(from: sender, firstBlock: Int(firstBlock), blocks, last: last)
        case .statusRequest:
            outbox.append(.init(message: .statusReply(status), to: sender))
        case .operatorSignal(let kind):
            operatorSignal(kind)
        case .readReply, .statusReply:
            counters.stale += 1
        }
    }

    private func operatorSignal(_ kind: SignalKind) {
        trace?("operator \(kind)")
        switch kind {
        case .reset:
            heldDown = false
            send(
                machine.changeDrive(.reset) {
                    $0.readErrors = 0
                    $0.writeErrors = 0
                    $0.state = .ready
                })
            if machine.chain.mode == .mirror, machine.isLinked {
                // Its data may be behind: leave and catch up.
                send(machine.propose(linking: node, linked: false))
                becomeRejoiner()
            } else if !machine.isLinked {
                if machine.chain.mode == .mirror { becomeRejoiner() } else { relinkSelf() }
            }
        case .driveFault:
            driveFailed(write: true)
        case .driveRemoved:
            send(machine.changeDrive(.driveRemoved) { $0.state = .removed })
            if machine.isLinked, machine.chain.mode == .mirror { send(machine.propose(linking: node, linked: false)) }
        case .hotPlug, .linkUp, .driveReady:
            heldDown = false
            if machine.chain.mode == .mirror {
                if !machine.isLinked || machine.drive.state != .ready { becomeRejoiner() }
            } else {
                send(machine.changeDrive(kind) { $0.state = .ready })
                if !machine.isLinked { relinkSelf() }
            }
        case .linkDown:
            heldDown = true
            if machine.isLinked { send(machine.propose(linking: node, linked: false)) }
        case .capacityChange:
            send(machine.changeDrive(.capacityChange) { $0.capacity = UInt64(self.drive.dataCapacity) })
        case .identify:
            send(machine.emit(.identify, subject: node))
        }
        onRaise?(kind, now)
        registerChanged()
    }

    private func relinkSelf() {
        send(machine.propose(linking: node, linked: true))
        onRaise?(.linkUp, now)
    }

    // MARK: Links

    /// The element or host this element takes writes from.
    private func isUpstream(_ sender: NodeID) -> Bool {
        let chain = self.chain
        if chain.mode == .span { return sender == chain.host }
        if !machine.isLinked { return catchUpSource == sender }
        if let predecessor = chain.predecessor(of: node) { return sender == predecessor }
        return sender == chain.host
    }

    private func receiveEntry(link: UInt64, sequence: UInt64, _ payload: LinkPayload, from sender: NodeID) {
        if case .catchUpBegin = payload, !machine.isLinked, machine.chain.mode == .mirror {
            // A new catch-up stream from the tail we asked.
            if inbound[sender]?.id != link {
                inbound[sender] = nil
                catchUpSource = sender
            }
        }
        guard isUpstream(sender) else {
            counters.stale += 1
            // Once per retransmission interval, not once per entry of a resent window.
            if lastRefusal[sender].map({ now - $0 >= timing.retransmitAfter }) ?? true {
                lastRefusal[sender] = now
                outbox.append(.init(message: .registers(chain, applied: applied, reply: false), to: sender))
            }
            return
        }
        var state: InboundLink
        if let current = inbound[sender], current.id == link {
            state = current
        } else if expectedLink[sender] == link {
            state = InboundLink(id: link)
        } else {
            // Only links this element named are taken: name one (once per stale link).
            counters.stale += 1
            if let previous = resets[sender], previous.stale == link {
                // Named already: say it again once per retransmission interval, not once per
                // entry of a resent window.
                expectedLink[sender] = previous.next
                guard now - previous.at >= timing.retransmitAfter else { return }
                resets[sender]?.at = now
                outbox.append(.init(message: .linkReset(link: link, next: previous.next), to: sender))
                return
            }
            let next = newLinkID(namedByReceiver: true)
            resets[sender] = (link, next, now)
            expectedLink[sender] = next
            outbox.append(.init(message: .linkReset(link: link, next: next), to: sender))
            return
        }
        trace?("entry \(sequence) link \(link) from \(sender) through \(state.through): \(payload.traceName)")
        if sequence <= state.through {
            // Already applied: acknowledge again.
        } else if sequence == state.through + 1 {
            state.through = sequence
            inbound[sender] = state
            guard apply(payload, from: sender) else {
                // The drive failed it: not acknowledged, and nothing after it is applied.
                inbound[sender]?.through = sequence - 1
                return
            }
            guard var current = inbound[sender], current.id == link else { return }
            while let next = current.buffered[current.through + 1] {
                current.buffered[current.through + 1] = nil
                current.bufferedBytes -= next.dataBytes
                current.through += 1
                inbound[sender] = current
                guard apply(next, from: sender) else {
                    inbound[sender]?.through = current.through - 1
                    return
                }
                guard let again = inbound[sender], again.id == link else { return }
                current = again
            }
            state = current
        } else if state.buffered.count < 4096, state.bufferedBytes + payload.dataBytes <= 256 << 20 {
            state.buffered[sequence] = payload
            state.bufferedBytes += payload.dataBytes
        }
        inbound[sender] = state
        outbox.append(.init(message: .linkAck(link: link, sequence: state.through), to: sender))
    }

    /// Applies one entry; `false` when the drive failed it (the entry is not acknowledged).
    private func apply(_ payload: LinkPayload, from sender: NodeID) -> Bool {
        switch payload {
        case .write(let epoch, let version, let offset, let sync, let data):
            if sender == chain.host {
                guard epoch >= hostEpoch else {
                    counters.stale += 1
                    return true
                }
                hostEpoch = epoch
            }
            return applyWrite(
                version: version, offset: Int(offset), sync: sync, data: data, payload: payload, from: sender)
        case .catchUpBegin(let asOf, let byFingerprint):
            trace?(
                "catch-up from \(sender) as of \(asOf) fingerprints \(byFingerprint); applied \(applied) from \(catchUpFrom.map(String.init) ?? "-")"
            )
            if catchUpFrom == nil { catchUpFrom = applied }
            // What the fills bring is not in our change log: it only covers writes after asOf.
            changeLog.removeAll()
            logStart = max(applied, asOf)
            catchingUp = true
            lastCatchUpProgress = now
            applied = max(applied, asOf)
            fingerprintJob = nil
            fingerprintsSent = false
            if byFingerprint { sendFingerprints(to: sender) }
            return true
        case .fill(let offset, let data):
            lastCatchUpProgress = now
            guard writeToDrive(Int(offset), data) else { return false }
            trace?("fill from \(sender) blocks \(Int(offset) / Self.blockSize)+\(data.readableBytes / Self.blockSize)")
            counters.fillBytesReceived += data.readableBytes
            return true
        case .catchUpEnd(let register):
            do {
                try drive.synchronize()
            } catch {
                driveFailed(write: true)
                return false
            }
            trace?("catch-up from \(sender) done; applied \(applied)")
            catchingUp = false
            fingerprintsSent = false
            catchUpSource = nil
            catchUpFrom = nil
            counters.catchUps += 1
            _ = try? machine.exchange(register, from: sender)
            send(machine.changeDrive(.driveReady) { $0.state = .ready })
            onRaise?(.driveReady, now)
            try? persist()
            registerChanged()
            if isCommitter { commit(applied) }
            return true
        }
    }

    private func applyWrite(
        version: UInt64, offset: Int, sync: Bool, data: ByteBuffer, payload: LinkPayload, from sender: NodeID
    ) -> Bool {
        let mirror = chain.mode == .mirror
        if mirror, version <= applied {
            // A write a catch-up's fills already brought, sent again because it is not yet
            // committed: keep it to forward on a new link, and keep its blocks from reads.
            if version > committed, !uncommitted.contains(where: { $0.version == version }) {
                let index = uncommitted.firstIndex { $0.version > version } ?? uncommitted.endIndex
                uncommitted.insert((version, payload), at: index)
                markDirty(offset: offset, count: data.readableBytes, version: version)
            }
            // The host sends a write again when no commit of it came back: the elements after
            // us may lack it even if we saw it committed (under a membership that since lost),
            // so it goes on down the chain.
            if sender == chain.host, var link = outbound,
                !link.unacked.contains(where: { $0.payload.writeVersion == version })
            {
                outbox.append(.init(message: link.enqueue(payload), to: link.target))
                outbound = link
            }
            return true
        }
        if mirror, version > applied + 1, !catchingUp {
            // Writes between ours and this one went by without us (a membership merge linked us
            // again after we were cut out): our data is behind, so leave and catch up.
            send(machine.propose(linking: node, linked: false))
            becomeRejoiner()
            registerChanged()
            return false
        }
        if !data.readableBytesView.isEmpty {
            guard writeToDrive(offset, data) else { return false }
        }
        if sync {
            do {
                try drive.synchronize()
            } catch {
                driveFailed(write: true)
                return false
            }
        }
        applied = mirror ? version : max(applied, version)
        counters.writesApplied += 1
        trace?("write \(version) blocks \(offset / Self.blockSize)+\(data.readableBytes / Self.blockSize)")
        if sync { try? persist() }
        guard mirror else {
            committed = applied
            outbox.append(.init(message: .committed(version: version), to: chain.host))
            return true
        }
        if data.readableBytes > 0 {
            let first = offset / Self.blockSize
            let last = (offset + data.readableBytes - 1) / Self.blockSize
            markDirty(offset: offset, count: data.readableBytes, version: version)
            changeLog.append((version, first, last - first + 1))
            if changeLog.count > Self.changeLogLimit, let dropped = changeLog.popFirst() {
                logStart = dropped.version
            }
        }
        uncommitted.append((version, payload))
        if var link = outbound {
            outbox.append(.init(message: link.enqueue(payload), to: link.target))
            outbound = link
        }
        if var current = learner {
            outbox.append(.init(message: current.link.enqueue(payload), to: current.link.target))
            learner = current
        }
        if isCommitter || (bug == .commitAtHead && chain.head == node) { commit(version) }
        return true
    }

    private func retain(_ entry: (version: UInt64, payload: LinkPayload)) {
        retained.append(entry)
        retainedData += entry.payload.dataBytes
        while retained.count > Self.retainedLimit || retainedData > Self.retainedBytes,
            let dropped = retained.popFirst()
        {
            retainedData -= dropped.payload.dataBytes
        }
    }

    /// What a new link to `target` starts with: with `retained`, the retained committed
    /// writes it may lack (by what it last said it applied); then every write not yet committed.
    private func resendable(to target: NodeID, retained withRetained: Bool) -> [LinkPayload] {
        let floor = min(peerApplied[target] ?? 0, committed)
        let old = withRetained ? retained.filter { $0.version > floor }.map(\.payload) : []
        return old + uncommitted.filter { $0.version > committed }.map(\.payload)
    }

    private func markDirty(offset: Int, count: Int, version: UInt64) {
        guard count > 0 else { return }
        for block in (offset / Self.blockSize)...((offset + count - 1) / Self.blockSize) {
            dirty[block] = max(dirty[block] ?? 0, version)
        }
    }

    private func writeToDrive(_ offset: Int, _ data: ByteBuffer) -> Bool {
        do {
            try data.withUnsafeReadableBytes { raw throws(StorageError) in try drive.write(raw, at: offset) }
            return true
        } catch {
            if error.code == .outOfBounds {
                counters.malformed += 1
                return false
            }
            driveFailed(write: true)
            return false
        }
    }

    private func driveFailed(write: Bool) {
        send(
            machine.changeDrive(.driveFault) {
                if write { $0.writeErrors &+= 1 } else { $0.readErrors &+= 1 }
                $0.state = write ? .failed : .degraded
            })
        onRaise?(.driveFault, now)
        if write, machine.isLinked, chain.mode == .mirror {
            send(machine.propose(linking: node, linked: false))
            onRaise?(.linkDown, now)
        }
        registerChanged()
    }

    /// Mirror: whether this element commits what it applies: it is the linked tail of a chain
    /// that links a majority of the members. Two views of the membership that each link a
    /// majority share an element, and that element follows one view at a time, so a partition
    /// can never leave two sub-chains both acknowledging writes.
    private var isCommitter: Bool {
        guard chain.mode == .mirror, machine.isLinked, chain.successor(of: node) == nil else { return false }
        guard chain.linked.count * 2 > chain.members.count else { return false }
        return !catchingUp
    }

    private func commit(_ version: UInt64) {
        learnCommitted(version)
        announceCommit()
    }

    private func announceCommit() {
        lastCommitAnnounce = now
        let chain = self.chain
        if chain.mode == .span {
            outbox.append(.init(message: .committed(version: applied), to: chain.host))
            return
        }
        outbox.append(.init(message: .committed(version: committed), to: chain.host))
        for member in chain.linked where member != node {
            outbox.append(.init(message: .committed(version: committed), to: member))
        }
    }

    private func learnCommitted(_ version: UInt64) {
        guard version > committed, chain.mode == .mirror else { return }
        lastCommitProgress = now
        committed = version
        while let first = uncommitted.first, first.version <= committed {
            uncommitted.removeFirst()
            retain(first)
            if case .write(_, _, let offset, _, let data) = first.payload, data.readableBytes > 0 {
                let low = Int(offset) / Self.blockSize
                let high = (Int(offset) + data.readableBytes - 1) / Self.blockSize
                for block in low...high where (dirty[block] ?? .max) <= committed { dirty[block] = nil }
            }
        }
    }

    /// A link id no other link between any two elements has had: this element's name, its
    /// incarnation, a counter and who named it, mixed. (Ids built from the incarnation alone
    /// collided when two elements started at the same instant: a receiver took the sender's
    /// new link for the one it had named itself, and skipped entries as already applied.)
    private func newLinkID(namedByReceiver: Bool) -> UInt64 {
        linkCounter += 1
        return Self.linkID(node: node, incarnation: incarnation, counter: linkCounter, namedByReceiver: namedByReceiver)
    }

    static func linkID(node: NodeID, incarnation: UInt64, counter: UInt64, namedByReceiver: Bool) -> UInt64 {
        var hash = TraceHashLike()
        hash.mix(node.name.hashValueStable)
        hash.mix(incarnation)
        hash.mix(counter)
        hash.mix(namedByReceiver ? 1 : 2)
        return hash.value
    }

    /// Opens the stream to `target`. A new successor (`newSuccessor`) also gets the retained
    /// committed writes it may lack; a link opened again to the same one gets only what is
    /// not yet committed (re-sending the retained window on every reopen flooded a slow chain).
    private func openOutbound(to target: NodeID, id: UInt64? = nil, newSuccessor: Bool = false) {
        var link = OutboundLink(target: target, id: id ?? newLinkID(namedByReceiver: false), now: now)
        if let member = chain.member(target), member.drive.state == .initializing {
            // A successor still catching up: the link starts a catch-up of its own by
            // fingerprints (the writes it missed are in the fills).
            outbound = nil
            outbox.append(.init(message: link.enqueue(.catchUpBegin(asOf: applied, byFingerprint: true)), to: target))
            for payload in resendable(to: target, retained: newSuccessor) {
                outbox.append(.init(message: link.enqueue(payload), to: target))
            }
            learner = Learner(
                link: link, drive: member.drive, pending: [], waitingForFingerprints: true, linked: true, heard: now)
            counters.fingerprintCatchUps += 1
            return
        }
        for payload in resendable(to: target, retained: newSuccessor) {
            outbox.append(.init(message: link.enqueue(payload), to: target))
        }
        outbound = link
    }

    // MARK: Register changes

    /// Whom heartbeats go to: the neighbours, and every element cut out of the chain (or all of
    /// them when this one is cut): a cut element hears no signals, so digests are how two of
    /// them find each other.
    public var heartbeatTargets: [NodeID] {
        var targets = neighbours
        for member in chain.members where member.node != node && (!member.linked || !machine.isLinked) {
            targets.append(member.node)
        }
        return targets
    }

    private var neighbours: [NodeID] {
        guard machine.isLinked else { return [] }
        return [chain.predecessor(of: node), chain.successor(of: node)].compactMap { $0 }
    }

    /// After any change of the register: relink, watch the new neighbours, tell the host, save.
    private func registerChanged() {
        let chain = self.chain
        trace?("register \(chain.generation) linked \(chain.linked) \(machine.drive.state)")
        let watched = Set(neighbours)
        for gone in detectors.keys where !watched.contains(gone) { detectors[gone] = nil }
        for neighbour in watched where detectors[neighbour] == nil {
            detectors[neighbour] = (
                FailureDetector(
                    configuration: .fixedTimeout(timing.detectionTimeout), expectedInterval: timing.heartbeatInterval),
                // Right after a start, connections are still being made: a longer first silence.
                max(now, startedAt + timing.detectionTimeout * 2)
            )
        }
        if chain.mode == .mirror {
            let successor = machine.isLinked ? chain.successor(of: node) : nil
            if successor != outboundTarget {
                if learner?.linked == true { learner = nil }
                if let successor {
                    openOutbound(to: successor, newSuccessor: true)
                } else {
                    outbound = nil
                }
            }
            if let current = learner, !current.linked,
                chain.member(current.link.target)?.linked == true || successor != nil
            {
                // Someone else linked the joiner, or we are no longer the tail.
                learner = nil
            }
            if isCommitter, applied > committed { commit(applied) }
            if !heldDown, !machine.isLinked, machine.drive.state == .ready, !catchingUp { becomeRejoiner() }
        } else if !heldDown, !machine.isLinked, machine.drive.state.serves {
            relinkSelf()
        }
        if heldDown, machine.isLinked {
            // Linked by a register that had not seen the operator's link-down: out again.
            send(machine.propose(linking: node, linked: false))
        }
        if savedDigest != chain.digest { try? persist() }
        outbox.append(.init(message: .registers(chain, applied: applied, reply: false), to: chain.host))
    }

    private var savedDigest: UInt64 = 0

    private func persist() throws {
        savedDigest = chain.digest
        do {
            try drive.save(ElementDrive.Saved(chain: chain, applied: catchUpFrom ?? applied, hostEpoch: hostEpoch))
            trace?("saved registers, applied \(catchUpFrom ?? applied)")
        } catch {
            trace?("saving registers failed: \(error)")
            throw error
        }
    }

    // MARK: Rejoin and catch-up

    private func becomeRejoiner() {
        guard chain.mode == .mirror else { return }
        if machine.drive.state != .initializing {
            send(machine.changeDrive(.hotPlug) { $0.state = .initializing })
            onRaise?(.hotPlug, now)
        }
        outbound = nil
        learner = nil
        askToJoin()
    }

    /// Mirror: when no linked element serves (every one died or is catching up), or those linked
    /// are too few to commit, for a catch-up timeout, the element that holds the most (ties: the
    /// smallest name) links itself and the others rejoin it. Without this a chain whose last
    /// serving element dies waits forever; so does a minority left linked while the elements
    /// cut out hold writes it never saw (its tail refuses joiners that are ahead of it, and a
    /// minority cannot commit). The re-former holds every committed write: a committed write
    /// was applied by a majority's tail and every element before it, and none holds more.
    private func reformIfOrphaned() {
        let serving = chain.members.contains { $0.linked && $0.drive.state.serves }
        guard chain.mode == .mirror, !heldDown, !serves, machine.drive.state == .initializing,
            !serving || chain.linked.count * 2 <= chain.members.count
        else {
            orphanedSince = nil
            return
        }
        guard let since = orphanedSince else {
            orphanedSince = now
            return
        }
        guard now - since >= timing.catchUpTimeout else { return }
        let mine = catchUpFrom ?? applied
        for member in chain.members where member.node != node {
            // Every other element must have said what it holds: one not heard from may hold more.
            guard let theirs = peerApplied[member.node] else { return }
            if theirs > mine || (theirs == mine && member.node < node) { return }
        }
        orphanedSince = nil
        trace?("re-forms the chain at \(mine)")
        catchingUp = false
        catchUpFrom = nil
        catchUpSource = nil
        applied = mine
        // What a half-done catch-up wrote is in no log: joiners compare fingerprints.
        changeLog.removeAll()
        logStart = applied
        send(machine.changeDrive(.driveReady) { $0.state = .ready })
        if !machine.isLinked { send(machine.propose(linking: node, linked: true)) }
        registerChanged()
    }

    private func askToJoin() {
        lastJoin = now
        let chain = self.chain
        let targets: [NodeID]
        if let tail = chain.tail, tail != node {
            targets = [tail]
        } else {
            targets = chain.members.map(\.node).filter { $0 != node }
        }
        for target in targets {
            outbox.append(.init(message: .join(machine.drive, applied: catchUpFrom ?? applied), to: target))
        }
    }

    private func receiveJoin(from joiner: NodeID, drive theirs: DriveRegister, applied theirApplied: UInt64) {
        let chain = self.chain
        if chain.mode == .span {
            if machine.isLinked, chain.member(joiner)?.linked == false {
                send(machine.propose(linking: joiner, linked: true, drive: theirs))
                onRaise?(.linkUp, now)
                registerChanged()
            } else {
                outbox.append(.init(message: .registers(chain, applied: applied, reply: false), to: joiner))
            }
            return
        }
        guard machine.isLinked, chain.successor(of: node) == nil, serves, joiner != node else {
            outbox.append(.init(message: .registers(chain, applied: applied, reply: false), to: joiner))
            return
        }
        if let current = learner, current.link.target != joiner { return }
        guard theirApplied <= applied else {
            // The joiner holds writes we lack: our data cannot be its source (a tail that lost
            // its data and re-formed would spread what it lost). Wait until we hold as much.
            trace?("refuses \(joiner): it applied \(theirApplied), we \(applied)")
            outbox.append(.init(message: .registers(chain, applied: applied, reply: false), to: joiner))
            return
        }
        if chain.member(joiner)?.linked == true {
            send(machine.propose(linking: joiner, linked: false))
            onRaise?(.linkDown, now)
            registerChanged()
        }
        startCatchUp(for: joiner, drive: theirs, from: theirApplied, id: nil)
    }

    /// Opens a catch-up stream to a joiner: its log-covered changes since `from`, or a
    /// fingerprint diff.
    private func startCatchUp(for joiner: NodeID, drive theirs: DriveRegister, from theirApplied: UInt64, id: UInt64?) {
        var link = OutboundLink(target: joiner, id: id ?? newLinkID(namedByReceiver: false), now: now)
        let covered = logStart <= theirApplied && theirApplied <= applied
        trace?(
            "catch-up for \(joiner) from \(theirApplied): log from \(logStart), applied \(applied), covered \(covered)")
        outbox.append(.init(message: link.enqueue(.catchUpBegin(asOf: applied, byFingerprint: !covered)), to: joiner))
        // Writes not yet committed go again: the fills bring their data, but the joiner must
        // hold them to send on when it links (a successor may lack them) and to keep their
        // blocks from reads until they commit.
        for entry in uncommitted where entry.version > committed {
            outbox.append(.init(message: link.enqueue(entry.payload), to: joiner))
        }
        var pending: [Range<Int>] = []
        if covered {
            var blocks = Set<Int>()
            for entry in changeLog where entry.version > theirApplied {
                for block in entry.first..<(entry.first + entry.count) { blocks.insert(block) }
            }
            pending = Self.extents(of: blocks.sorted())
        } else {
            counters.fingerprintCatchUps += 1
        }
        learner = Learner(
            link: link, drive: theirs, pending: pending, waitingForFingerprints: !covered, from: theirApplied,
            heard: now)
    }

    /// Consecutive blocks as ranges of at most 64 blocks (256 KiB per fill).
    static func extents(of blocks: [Int]) -> [Range<Int>] {
        var result: [Range<Int>] = []
        for block in blocks {
            if let last = result.last, last.upperBound == block, last.count < 64 {
                result[result.count - 1] = last.lowerBound..<(block + 1)
            } else {
                result.append(block..<(block + 1))
            }
        }
        return result
    }

    private func sendFingerprints(to source: NodeID) {
        fingerprintJob = (source, 0)
        pumpFingerprints()
    }

    /// Sends the next page of block fingerprints (4,096 blocks, 16 MiB read), so a large drive's
    /// listing does not hold up heartbeats.
    private func pumpFingerprints() {
        guard let job = fingerprintJob else { return }
        let blocks = drive.dataCapacity / Self.blockSize
        let end = min(blocks, job.next + 4096)
        var page: [UInt32] = []
        page.reserveCapacity(end - job.next)
        var buffer = [UInt8](repeating: 0, count: 256 * Self.blockSize)
        var block = job.next
        while block < end {
            let count = min(256, end - block)
            let ok = buffer.withUnsafeMutableBytes { raw -> Bool in
                let slice = UnsafeMutableRawBufferPointer(rebasing: raw[0..<(count * Self.blockSize)])
                return (try? drive.read(into: slice, at: block * Self.blockSize)) != nil
            }
            for index in 0..<count {
                let checksum = buffer.withUnsafeBytes { raw in
                    CRC32C.checksum(
                        UnsafeRawBufferPointer(rebasing: raw[(index * Self.blockSize)..<((index + 1) * Self.blockSize)])
                    )
                }
                page.append(ok ? checksum : 0)
            }
            block += count
        }
        lastCatchUpProgress = now
        outbox.append(
            .init(
                message: .fingerprints(firstBlock: UInt64(job.next), blocks: page, last: end == blocks), to: job.source)
        )
        fingerprintJob = end == blocks ? nil : (job.source, end)
        fingerprintsSent = end == blocks
    }

    private func receiveFingerprints(from sender: NodeID, firstBlock: Int, _ blocks: [UInt32], last: Bool) {
        guard var current = learner, current.link.target == sender, current.waitingForFingerprints else { return }
        current.heard = now
        var differing: [Int] = []
        var buffer = [UInt8](repeating: 0, count: Self.blockSize)
        let ours = drive.dataCapacity / Self.blockSize
        for (index, theirs) in blocks.enumerated() {
            let block = firstBlock + index
            guard block < ours else { break }
            let checksum = buffer.withUnsafeMutableBytes { raw -> UInt32? in
                try? drive.unit.readChecksummed(into: raw, at: ElementDrive.headerSize + block * Self.blockSize)
            }
            if checksum != theirs { differing.append(block) }
        }
        current.pending += Self.extents(of: differing)
        trace?("fingerprints from \(sender) at \(firstBlock): \(differing.count) differ \(differing.prefix(8))")
        if last { current.waitingForFingerprints = false }
        learner = current
    }

    /// Sends fills while the catch-up window has room; finishes the catch-up when none are left.
    private func pump() {
        guard var current = learner else { return }
        while current.link.unackedBytes < Self.fillWindow, !current.pending.isEmpty {
            let extent = current.pending.removeFirst()
            let offset = extent.lowerBound * Self.blockSize
            let count = min(extent.count * Self.blockSize, drive.dataCapacity - offset)
            guard count > 0 else { continue }
            var data = ByteBuffer()
            data.reserveCapacity(count)
            let ok = data.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { raw -> Int in
                do {
                    try drive.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<count]), at: offset)
                    return count
                } catch {
                    return 0
                }
            }
            guard ok == count else {
                learner = nil
                driveFailed(write: false)
                return
            }
            counters.fillBytesSent += count
            trace?("fill to \(current.link.target) blocks \(extent) seq \(current.link.next) link \(current.link.id)")
            outbox.append(
                .init(message: current.link.enqueue(.fill(offset: UInt64(offset), data: data)), to: current.link.target)
            )
        }
        learner = current
        guard current.pending.isEmpty, !current.waitingForFingerprints else { return }
        let target = current.link.target
        learner = nil
        if current.linked {
            // Our successor has every fill: the link goes on as the plain one.
            outbox.append(.init(message: current.link.enqueue(.catchUpEnd(chain)), to: target))
            outbound = current.link
            return
        }
        // Every fill is on the stream: link the joiner behind us and hand it the tail.
        send(machine.propose(linking: target, linked: true, drive: current.drive))
        onRaise?(.linkUp, now)
        outbox.append(.init(message: current.link.enqueue(.catchUpEnd(chain)), to: target))
        outbound = current.link
        registerChanged()
    }

    // MARK: Reads

    private func answerRead(request: UInt64, offset: Int, count: Int, atLeast: UInt64, to sender: NodeID) {
        func refuse(_ status: ReadStatus) {
            counters.readsRefused += 1
            outbox.append(.init(message: .readReply(request: request, status: status, data: ByteBuffer()), to: sender))
        }
        guard serves else { return refuse(.notReady) }
        guard offset >= 0, count >= 0, offset <= drive.dataCapacity, count <= drive.dataCapacity - offset else {
            return refuse(.outOfRange)
        }
        if applied < atLeast {
            if chain.mode == .mirror, machine.isLinked, !catchingUp {
                // The host saw a write committed that we, linked and caught up, never applied:
                // a membership that has since lost committed it, and the element that applied it
                // for us crashed before it reached its drive. This chain lacks a committed write
                // (the tail refuses the element cut out holding it): leave and rejoin, so the
                // chain re-forms around whoever holds the most.
                trace?("read needs \(atLeast), applied \(applied): leaves to rejoin")
                send(machine.propose(linking: node, linked: false))
                becomeRejoiner()
                registerChanged()
            }
            return refuse(.dirty)
        }
        if chain.mode == .mirror, count > 0, !dirty.isEmpty {
            for block in (offset / Self.blockSize)...((offset + count - 1) / Self.blockSize)
            where (dirty[block] ?? 0) > committed {
                return refuse(.dirty)
            }
        }
        var data = ByteBuffer()
        data.reserveCapacity(count)
        let read = data.writeWithUnsafeMutableBytes(minimumWritableBytes: max(count, 1)) { raw -> Int in
            do {
                try drive.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<count]), at: offset)
                return count
            } catch {
                return -1
            }
        }
        guard read == count else {
            driveFailed(write: false)
            return refuse(.driveFault)
        }
        counters.readsServed += 1
        outbox.append(.init(message: .readReply(request: request, status: .ok, data: data), to: sender))
    }

    // MARK: Status

    /// The registers and counters as text, for `ftctl chain status`.
    public var status: String {
        let drive = machine.drive
        let chain = self.chain
        var lines: [String] = []
        lines.append("element \(node)")
        lines.append(
            "drive: id \(String(drive.driveID, radix: 16)) capacity \(drive.capacity) state \(drive.state) "
                + "read-errors \(drive.readErrors) write-errors \(drive.writeErrors) v\(drive.version)")
        let position = chain.position(of: node).map(String.init) ?? "-"
        let up = chain.predecessor(of: node).map { "\($0) up" } ?? (chain.mode == .mirror ? "host" : "-")
        let down = chain.successor(of: node).map { "\($0) up" } ?? "-"
        lines.append(
            "chain: \(chain.mode) generation \(chain.generation) length \(chain.linked.count) position \(position) "
                + "upstream \(up) downstream \(down)")
        lines.append(
            "members: "
                + chain.members.map { "\($0.node)\($0.linked ? "" : "(cut)"):\($0.drive.state):\($0.drive.capacity)" }
                .joined(separator: " "))
        lines.append(
            "applied \(applied) committed \(committed) catching-up \(catchingUp) held-down \(heldDown) "
                + "writes \(counters.writesApplied) "
                + "reads \(counters.readsServed)/\(counters.readsRefused) stale \(counters.stale) "
                + "malformed \(counters.malformed) fills-in \(counters.fillBytesReceived) "
                + "fills-out \(counters.fillBytesSent)")
        var links: [String] = []
        if let outbound {
            links.append(
                "out \(outbound.target) id \(outbound.id) next \(outbound.next) unacked \(outbound.unacked.count)")
        }
        if let learner {
            links.append(
                "learner \(learner.link.target) next \(learner.link.next) unacked \(learner.link.unacked.count) "
                    + "pending \(learner.pending.count) waiting \(learner.waitingForFingerprints)")
        }
        for (sender, link) in inbound.sorted(by: { $0.key < $1.key }) {
            links.append("in \(sender) id \(link.id) through \(link.through) buffered \(link.buffered.count)")
        }
        if !links.isEmpty { lines.append("links: " + links.joined(separator: "; ")) }
        return lines.joined(separator: "\n")
    }

    // MARK: Output

    private func send(_ messages: [RegisterMachine.Outbound]) {
        for message in messages {
            if case .signal(let signal) = message.message, signal.origin == node, signal.hops == 0 {
                onRaise?(signal.kind, now)
            }
            outbox.append(message)
        }
    }

    private func flush() -> [RegisterMachine.Outbound] {
        afterEvent?()
        defer { outbox.removeAll(keepingCapacity: true) }
        return outbox
    }
}
