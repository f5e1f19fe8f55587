import DequeModule
public import FaultToleranceCore
import NIOCore

/// One server of a primary-backup pair as a pure state machine (no clock, no I/O): the
/// replicated store, its role and epoch, its lease, and what it owes its backups and clients.
/// Messages and ticks go in with the time; ``Effect``s come out.
///
/// - **Primary.** Serves requests only while its lease holds. Applies each operation, streams
///   the entry to every verified backup, and acknowledges it to the client once every backup
///   of its sync set has it (synchronous mode; at least ``Settings/minimumSyncBackups`` of them)
///   or at once (asynchronous mode, while the sync set, or without a minimum one every caught-up
///   backup, trails by less than the lag bound). Reads wait the same way, so a read
///   never shows a value a failover could take back. Steps down on the controller's command or
///   by itself when its lease lapses.
/// - **Backup.** Follows the primary of the newest epoch it has heard of. Before applying
///   anything from a new primary it asks to catch up from its position; the primary checks
///   that position is in its own history and answers with the entries after it, or with a
///   snapshot (when its log no longer reaches back, or the backup's tail diverged).
/// - **Promotion.** Adopts the replicated service configuration with the new epoch, writes it
///   into the log (so the backups learn it), and asks the runtime to bind its address.
public struct ServerCore: Sendable {
    /// A mistake the simulation must catch, planted in this code path (never on outside it).
    public enum Bug: String, Sendable, CaseIterable {
        /// Synchronous mode: acknowledge a write as soon as the primary applied it, before any
        /// backup has it. Asynchronous mode with a minimum sync set: count the lag against
        /// whichever backups are caught up, as without one, so that a primary left alone
        /// acknowledges without bound.
        case acknowledgeBeforeBackup = "acknowledge-before-backup"
    }

    /// A server's settings.
    public struct Settings: Sendable, Hashable {
        /// Synchronous or asynchronous replication.
        public var mode: ReplicationMode
        /// The fewest backups of the sync set (the controller's
        /// ``FailoverController/Configuration/minimumSyncBackups``). Synchronous mode: they must
        /// hold an operation before it is acknowledged. Asynchronous mode: with 1 or more, an
        /// operation is acknowledged once they trail it by at most the lag bound, and writers wait
        /// (or are refused) while they trail by more or are too few, so a failover loses at most
        /// that many acknowledged entries; with 0, the lag counts whichever backups are caught up,
        /// and a primary left alone acknowledges without bound.
        public var minimumSyncBackups: Int
        /// Asynchronous mode, when backups trail by the bound: hold writers (`true`) or refuse them.
        public var waitWhenLagging: Bool
        /// How often to report to the controller (a primary's report asks for its lease).
        public var reportInterval: Duration
        /// Entries kept for backups that catch up.
        public var logEntries: Int
        /// Bytes kept for backups that catch up.
        public var logBytes: Int
        /// Entries per catch-up message.
        public var catchUpBatch: Int
        /// The largest snapshot a backup accepts, in bytes.
        public var maximumSnapshotBytes: Int
        /// The most requests held (waiting for acknowledgements or for the lag to shrink).
        public var maximumPending: Int
        /// Whether the server journals what it applies (``Effect/journal(_:)``, written by the
        /// runtime's ``ReplicaJournal`` before what follows): a backup then acknowledges an entry
        /// only once it is on its disk, and a restarted server comes back with its state.
        public var journaled: Bool
        /// Journaled entry bytes after which the journal is compacted into one snapshot.
        public var journalCompactionBytes: Int

        /// Settings to match the controller's defaults.
        public init(
            mode: ReplicationMode = .synchronous, minimumSyncBackups: Int = 1, waitWhenLagging: Bool = true,
            reportInterval: Duration = .milliseconds(10), logEntries: Int = 100_000, logBytes: Int = 64 << 20,
            catchUpBatch: Int = 1024, maximumSnapshotBytes: Int = 1 << 30, maximumPending: Int = 65_536,
            journaled: Bool = false, journalCompactionBytes: Int = 64 << 20
        ) {
            self.journaled = journaled
            self.journalCompactionBytes = journalCompactionBytes
            self.mode = mode
            self.minimumSyncBackups = minimumSyncBackups
            self.waitWhenLagging = waitWhenLagging
            self.reportInterval = reportInterval
            self.logEntries = logEntries
            self.logBytes = logBytes
            self.catchUpBatch = catchUpBatch
            self.maximumSnapshotBytes = maximumSnapshotBytes
            self.maximumPending = maximumPending
        }
    }

    /// What the runtime does.
    public enum Effect: Sendable, Hashable {
        /// Send a message.
        case send(FailoverMessage, to: NodeID)
        /// Start serving clients on the configuration's address (promotion).
        case bindService(ServiceConfiguration)
        /// Stop serving clients (step-down).
        case releaseService
        /// Write this to the journal, durably, before carrying out the effects after it
        /// (``Settings/journaled``).
        case journal(JournalRecord)
    }

    struct Backup: Sendable {
        var acked: UInt64 = 0
        var verified = false
        var sentUpTo: UInt64 = 0
        /// When entries (or a snapshot) last went to it.
        var sentAt: Instant = .zero
        /// A snapshot went to it, and no position of this log has come back since: new entries
        /// wait (they would not follow its log).
        var snapshotPending = false
    }

    struct Pending: Sendable {
        var index: UInt64
        var client: UInt64
        var request: UInt64
        var replyTo: NodeID
        /// A write's result, or a read's key and the value it had when the read arrived.
        var result: OperationResult?
        var key: StoreKey?
        var value: [UInt8]? = nil
    }

    /// This server.
    public let node: NodeID
    /// The controller it obeys.
    public let controller: NodeID
    /// Every server of the pair, this one included.
    public let servers: [NodeID]
    /// The settings.
    public let settings: Settings
    /// The role.
    public private(set) var role: ServiceConfiguration.Role = .backup
    /// The newest epoch heard of.
    public private(set) var epoch: UInt64 = 0
    /// The memory database.
    public private(set) var store = ReplicatedStore()
    /// Recent entries, for backups that catch up.
    public private(set) var log: ReplicationLog
    /// The service configuration this server starts with (its address; used when the store
    /// carries none yet).
    public let ownConfiguration: ServiceConfiguration
    /// A primary's lease: it serves until then.
    public private(set) var leaseUntil: Instant?
    /// The primary this backup follows.
    public private(set) var following: NodeID?
    /// The backups a primary waits for.
    public private(set) var syncSet: [NodeID] = []
    /// The backups the controller last said it counts as complete: a synchronous primary
    /// acknowledges only while at least the minimum of them are in ``syncSet``, so whatever it
    /// acknowledges is on a backup the controller would promote.
    public private(set) var grantedSyncSet: [NodeID] = []
    /// The highest index acknowledged to a client.
    public private(set) var acknowledgedUpTo: UInt64 = 0
    /// Which run of this server this is (reported, so the controller notices a restart).
    public let incarnation: UInt64
    /// The planted mistake, if any.
    public let bug: Bug?
    private var backups: [NodeID: Backup] = [:]
    private var pending: Deque<Pending> = []
    private var held: Deque<(from: NodeID, client: UInt64, request: UInt64, operation: StoreOperation)> = []
    private var snapshotBytes = ByteBuffer()
    private var lastReport: Instant?
    /// Journaled mode: entries applied since the last journal record, whether the store was
    /// replaced since (a snapshot record then), and the entry bytes journaled since the last
    /// snapshot.
    private var unjournaled: [ReplicationEntry] = []
    private var storeReplaced = false
    private var journaledBytes = 0
    /// Whether a release is followed at once by a report (the etcd control plane tells a released
    /// backup's return from a report made before the release by it; the control server does not
    /// need it, and its timing is what its simulation's seeds were checked with).
    package var reportsAfterRelease = false
    /// Called with a line on each step-down and promotion (the simulation's `FT_FAILOVER_TRACE`).
    package var trace: (@Sendable (String) -> Void)?
    /// Counters: requests refused, messages ignored as stale or malformed.
    public private(set) var refused = 0
    /// Messages ignored: of an older epoch, from a server that is not the primary, or not valid here.
    public private(set) var ignored = 0

    /// A server that starts as a backup in epoch 0 with an empty store.
    public init(
        node: NodeID, controller: NodeID, servers: [NodeID], configuration: ServiceConfiguration,
        settings: Settings = Settings(), incarnation: UInt64 = 0, bug: Bug? = nil
    ) {
        self.bug = bug
        self.incarnation = incarnation
        self.node = node
        self.controller = controller
        self.servers = servers
        self.settings = settings
        ownConfiguration = configuration
        log = ReplicationLog(maximumEntries: settings.logEntries, maximumBytes: settings.logBytes)
    }

    /// Restores the state a journal held (``ReplicaJournal/recover()``): its snapshot, then its
    /// entries, before the server handles anything. Throws ``FailoverError/Code/malformed`` when
    /// the snapshot does not decode or an entry does not follow the one before.
    public mutating func restore(_ recovered: RecoveredReplica) throws(FailoverError) {
        store =
            try recovered.snapshot.map { bytes throws(FailoverError) in try ReplicatedStore(snapshot: bytes) }
            ?? ReplicatedStore()
        log = ReplicationLog(
            maximumEntries: settings.logEntries, maximumBytes: settings.logBytes, startingAfter: store.position.index)
        journaledBytes = 0
        for entry in recovered.entries {
            guard entry.position.index == store.position.index + 1 else {
                throw FailoverError(
                    .malformed, detail: "journal entry \(entry.position) does not follow \(store.position)")
            }
            try store.apply(entry)
            log.append(entry)
            journaledBytes += entry.encodedSize
        }
        // The newest epoch it knew of: a stale primary of an older one is not followed back.
        epoch = max(epoch, store.position.epoch, store.configuration?.epoch ?? 0)
    }

    /// Whether this server may answer clients now: the primary, with its lease holding.
    public func serves(now: Instant) -> Bool {
        role == .primary && leaseUntil.map { now < $0 } == true
    }

    /// The report this server sends the controller. A primary's sync set in it is every backup
    /// it waits for (a backup that restarted stays in it, and is waited for, until released;
    /// the controller learns of the restart from that backup's own report). The whole set, not
    /// only the backups caught up at the moment: a report that left one out while it was briefly
    /// behind (or after a reordered acknowledgement) would read as a release.
    public func report(now: Instant) -> FailoverController.Report {
        .init(
            role: role, epoch: epoch, position: store.position, syncSet: role == .primary ? syncSet : [],
            stamp: now.nanoseconds, incarnation: incarnation)
    }

    // MARK: Inputs

    /// Time passes: reports, a lapsed lease, greetings to backups not yet verified.
    public mutating func tick(now: Instant) -> [Effect] {
        journalFirst(ticked(now: now))
    }

    /// A message arrives from `sender`.
    public mutating func receive(_ message: FailoverMessage, from sender: NodeID, now: Instant) -> [Effect] {
        journalFirst(received(message, from: sender, now: now))
    }

    /// Journaled mode: what the event applied, as a journal record placed before the first
    /// effect that is not a replication message to a backup (those may leave before the disk
    /// write; an acknowledgement, a reply or a report may not).
    private mutating func journalFirst(_ effects: [Effect]) -> [Effect] {
        guard settings.journaled, storeReplaced || !unjournaled.isEmpty else { return effects }
        let record: JournalRecord
        if storeReplaced || journaledBytes >= settings.journalCompactionBytes {
            record = .snapshot(store.snapshot())
            journaledBytes = 0
        } else {
            record = .entries(unjournaled)
            journaledBytes += unjournaled.reduce(0) { $0 + $1.encodedSize }
        }
        unjournaled = []
        storeReplaced = false
        let first =
            effects.firstIndex { effect in
                switch effect {
                case .send(.replicate, _), .send(.snapshot, _): false
                default: true
                }
            } ?? effects.endIndex
        var out = effects
        out.insert(.journal(record), at: first)
        return out
    }

    /// Notes an entry applied to the store (journaled mode).
    private mutating func applied(_ entry: ReplicationEntry) {
        log.append(entry)
        if settings.journaled { unjournaled.append(entry) }
    }

    private mutating func ticked(now: Instant) -> [Effect] {
        var out: [Effect] = []
        if role == .primary, let until = leaseUntil, now >= until {
            // The lease ran out without renewal: stop serving by ourselves.
            out += stepDown(to: epoch, because: "the lease ran out at \(until)")
        }
        if lastReport.map({ now - $0 >= settings.reportInterval }) ?? true {
            lastReport = now
            out.append(.send(.report(report(now: now)), to: controller))
            if role == .primary {
                for server in servers where server != node {
                    // A beat to every backup: a new or restarted one asks to catch up, the others
                    // answer with their position (so a backup that lost its memory is noticed).
                    out.append(.send(.replicate(epoch: epoch, previous: store.position, entries: []), to: server))
                }
            }
        }
        return out
    }

    private mutating func received(_ message: FailoverMessage, from sender: NodeID, now: Instant) -> [Effect] {
        switch message {
        case .renewLease(let leaseEpoch, let duration, let stamp, let granted):
            guard sender == controller, role == .primary, leaseEpoch == epoch, stamp <= now.nanoseconds else {
                ignored += 1
                return []
            }
            let until = Instant(nanoseconds: stamp) + duration
            leaseUntil = max(leaseUntil ?? until, until)
            grantedSyncSet = granted
            return complete(now: now)
        case .promote(let newEpoch, let waitFor, let minimum):
            // The same epoch only for a backup that heard of it from the controller's step-down of
            // the old primary or from a peer; a server that stepped down in it is promoted in a newer one.
            guard sender == controller, newEpoch > epoch || (newEpoch == epoch && role == .backup) else {
                ignored += 1
                return []
            }
            guard store.position.index >= minimum.index else {
                // Chosen for what this server held before a restart: say what it holds now.
                ignored += 1
                lastReport = now
                return [.send(.report(report(now: now)), to: controller)]
            }
            return promote(to: newEpoch, syncSet: waitFor, now: now)
        case .stepDown(let newEpoch):
            guard sender == controller, newEpoch >= epoch else {
                ignored += 1
                return []
            }
            var out = stepDown(to: newEpoch, because: "the control server said so")
            lastReport = now
            out.append(.send(.report(report(now: now)), to: controller))
            return out
        case .releaseBackup(let releaseEpoch, let backup):
            guard sender == controller, role == .primary, releaseEpoch == epoch else {
                ignored += 1
                return []
            }
            syncSet.removeAll { $0 == backup }
            guard reportsAfterRelease else { return complete(now: now) }
            // Said at once: the etcd control plane must see a report without the backup before
            // one that has it again (it may catch up and rejoin before the next regular report).
            lastReport = now
            return complete(now: now) + [.send(.report(report(now: now)), to: controller)]
        case .replicate(let primaryEpoch, let previous, let entries):
            return replicate(primaryEpoch, previous: previous, entries, from: sender, now: now)
        case .snapshot(let primaryEpoch, let chunk, let last):
            return snapshot(primaryEpoch, chunk, last: last, from: sender)
        case .catchUp(let backupEpoch, let after):
            return catchUp(backupEpoch, after: after, from: sender, now: now)
        case .replicated(let backupEpoch, let position):
            guard role == .primary, backupEpoch == epoch, servers.contains(sender), sender != node else {
                ignored += 1
                return []
            }
            if backups[sender]?.verified != true {
                // Its request to catch up was lost: the position it reports is the same question.
                return catchUp(backupEpoch, after: position, from: sender, now: now)
            }
            return acknowledged(position, by: sender, now: now)
        case .request(let client, let request, let requestEpoch, let operation):
            return handleRequest(
                client: client, request: request, epoch: requestEpoch, operation: operation, from: sender, now: now)
        case .read(let client, let request, let requestEpoch, let key):
            if let refusal = refusal(requestEpoch, now: now) {
                refused += 1
                return [
                    .send(
                        .readReply(client: client, request: request, epoch: epoch, value: nil, error: refusal),
                        to: sender)
                ]
            }
            guard pending.count < settings.maximumPending else {
                refused += 1
                return [
                    .send(
                        .readReply(client: client, request: request, epoch: epoch, value: nil, error: .lagExceeded),
                        to: sender)
                ]
            }
            // Answered once everything applied so far is acknowledged, with the value it has now: never
            // a value a failover takes back. (The value when the answer goes out may come from a write
            // applied since and not yet acknowledged, seed 1978600087 with journals: a failover took
            // back a compare-and-set whose new value a read had shown.)
            pending.append(
                Pending(
                    index: store.position.index, client: client, request: request, replyTo: sender, result: nil,
                    key: key, value: store[key]))
            return complete(now: now)
        case .whoIsPrimary:
            let configuration = store.configuration ?? ownConfiguration
            let primary = role == .primary ? node : following
            return [
                .send(
                    .primaryIs(node: primary, epoch: epoch, host: configuration.host, port: configuration.port),
                    to: sender)
            ]
        case .report, .reply, .readReply, .primaryIs, .statusQuery, .status, .switchover, .switchoverAnswer:
            // For clients, the control server and operators: not a server's business.
            ignored += 1
            return []
        }
    }

    // MARK: Roles

    private mutating func promote(to newEpoch: UInt64, syncSet waitFor: [NodeID], now: Instant) -> [Effect] {
        epoch = newEpoch
        role = .primary
        leaseUntil = nil
        following = nil
        // The controller counts these as holding every acknowledged operation: wait for them
        // (they catch up first) until it releases one, so that stays true.
        syncSet = Set(waitFor).filter { servers.contains($0) && $0 != node }.sorted()
        grantedSyncSet = syncSet
        acknowledgedUpTo = 0
        pending = []
        held = []
        snapshotBytes = ByteBuffer()
        backups = Dictionary(uniqueKeysWithValues: servers.filter { $0 != node }.map { ($0, Backup()) })
        let adopted = (store.configuration ?? ownConfiguration).adopted(epoch: newEpoch)
        var out: [Effect] = []
        // The adopted configuration goes into the log: the backups learn the new epoch's.
        if let entry = try? store.execute(.configure(adopted), client: 0, request: 0, epoch: newEpoch).entry {
            applied(entry)
        }
        out.append(.bindService(adopted))
        lastReport = now
        out.append(.send(.report(report(now: now)), to: controller))
        for server in servers where server != node {
            out.append(.send(.replicate(epoch: epoch, previous: store.position, entries: []), to: server))
        }
        return out
    }

    private mutating func stepDown(to newEpoch: UInt64, because reason: String) -> [Effect] {
        var out: [Effect] = []
        let wasPrimary = role == .primary
        if wasPrimary { trace?("steps down to epoch \(newEpoch): \(reason)") }
        if newEpoch > epoch { following = nil }
        epoch = newEpoch
        leaseUntil = nil
        if wasPrimary {
            role = .steppedDown
            out.append(.releaseService)
            // Whether these reach the backups is unknown: the client retries on the new primary,
            // whose idempotent sessions give the true answer.
            for waiting in pending { out.append(notPrimaryReply(to: waiting)) }
            for request in held {
                out.append(
                    .send(
                        .reply(
                            client: request.client, request: request.request, epoch: epoch,
                            outcome: .refused(.notPrimary, serverEpoch: epoch)), to: request.from))
            }
            pending = []
            held = []
            syncSet = []
        }
        return out
    }

    private func notPrimaryReply(to waiting: Pending) -> Effect {
        if waiting.key != nil {
            return .send(
                .readReply(
                    client: waiting.client, request: waiting.request, epoch: epoch, value: nil, error: .notPrimary),
                to: waiting.replyTo)
        }
        return .send(
            .reply(
                client: waiting.client, request: waiting.request, epoch: epoch,
                outcome: .refused(.notPrimary, serverEpoch: epoch)), to: waiting.replyTo)
    }

    // MARK: Backup side

    private mutating func replicate(
        _ primaryEpoch: UInt64, previous: LogPosition, _ entries: [ReplicationEntry], from sender: NodeID,
        now: Instant
    ) -> [Effect] {
        guard servers.contains(sender), sender != node, primaryEpoch >= epoch else {
            ignored += 1
            return []
        }
        if primaryEpoch > epoch || following != sender || role != .backup {
            // A new primary: leave whatever role this server had, and ask where to start.
            var out: [Effect] = []
            if role == .primary {
                out += stepDown(to: primaryEpoch, because: "\(sender) replicates in epoch \(primaryEpoch)")
            }
            epoch = primaryEpoch
            role = .backup
            following = sender
            snapshotBytes = ByteBuffer()
            out.append(.send(.catchUp(epoch: epoch, after: store.position), to: sender))
            return out
        }
        let askAgain: [Effect] = [.send(.catchUp(epoch: epoch, after: store.position), to: sender)]
        if !entries.isEmpty {
            // The entries follow `previous` in the primary's log: applied only onto a log that
            // holds it (and the same entries where they overlap), or this log would mix two
            // histories. A gap, or a tail the primary does not have: ask (entries or a snapshot).
            guard previous.index <= store.position.index,
                store.epoch(ofEntry: previous.index, in: log) == previous.epoch
            else { return askAgain }
        }
        for entry in entries {
            if entry.position.index <= store.position.index {
                guard store.epoch(ofEntry: entry.position.index, in: log) == entry.position.epoch else {
                    return askAgain
                }
                continue
            }
            do {
                try store.apply(entry)
                applied(entry)
            } catch {
                ignored += 1
                return [.send(.catchUp(epoch: epoch, after: store.position), to: sender)]
            }
        }
        return [.send(.replicated(epoch: epoch, position: store.position), to: sender)]
    }

    private mutating func snapshot(_ primaryEpoch: UInt64, _ chunk: ByteBuffer, last: Bool, from sender: NodeID)
        -> [Effect]
    {
        guard primaryEpoch == epoch, following == sender, role == .backup else {
            ignored += 1
            return []
        }
        guard snapshotBytes.readableBytes + chunk.readableBytes <= settings.maximumSnapshotBytes else {
            ignored += 1
            snapshotBytes = ByteBuffer()
            return []
        }
        var piece = chunk
        snapshotBytes.writeBuffer(&piece)
        guard last else { return [] }
        defer { snapshotBytes = ByteBuffer() }
        do {
            store = try ReplicatedStore(snapshot: snapshotBytes)
            trace?("installed a snapshot from \(sender) at \(store.position)")
            log = ReplicationLog(
                maximumEntries: settings.logEntries, maximumBytes: settings.logBytes,
                startingAfter: store.position.index)
            unjournaled = []
            storeReplaced = true
        } catch {
            ignored += 1
            return [.send(.catchUp(epoch: epoch, after: store.position), to: sender)]
        }
        return [.send(.replicated(epoch: epoch, position: store.position), to: sender)]
    }

    // MARK: Primary side

    private mutating func catchUp(_ backupEpoch: UInt64, after: LogPosition, from sender: NodeID, now: Instant)
        -> [Effect]
    {
        guard servers.contains(sender), sender != node else {
            ignored += 1
            return []
        }
        if backupEpoch > epoch {
            // The backup has heard of a newer epoch: this server is stale. (`stepDown` moves
            // the epoch, and forgets whom it followed, as for any newer epoch.)
            return stepDown(to: backupEpoch, because: "\(sender) is in epoch \(backupEpoch)")
        }
        guard role == .primary, backupEpoch == epoch else {
            ignored += 1
            return []
        }
        var backup = backups[sender] ?? Backup()
        backup.verified = true
        backup.acked = min(after.index, store.position.index)
        // The backup's position must be in this server's history: the same epoch at that index.
        let inHistory =
            after.index <= store.position.index && store.epoch(ofEntry: after.index, in: log) == after.epoch
        trace?(
            "catch-up of \(sender) after \(after): \(inHistory ? "from the log" : "a snapshot") (at \(store.position))")
        if inHistory, let entries = try? log.entries(after: after.index, limit: settings.catchUpBatch) {
            backup.sentUpTo = entries.last?.position.index ?? after.index
            backup.sentAt = now
            backup.snapshotPending = false
            backups[sender] = backup
            return [.send(.replicate(epoch: epoch, previous: after, entries: entries), to: sender)]
        }
        // Its log does not reach back, or the backup's tail diverged: the whole state.
        backup.acked = 0
        backup.sentUpTo = store.position.index
        backup.sentAt = now
        backup.snapshotPending = true
        backups[sender] = backup
        // Still in the sync set if it was: acknowledgements wait until it has caught up again.
        var bytes = store.snapshot()
        var out: [Effect] = []
        let piece = 1 << 20
        while bytes.readableBytes > piece {
            if let slice = bytes.readSlice(length: piece) {
                out.append(.send(.snapshot(epoch: epoch, chunk: slice, last: false), to: sender))
            }
        }
        out.append(.send(.snapshot(epoch: epoch, chunk: bytes, last: true), to: sender))
        return out
    }

    private mutating func acknowledged(_ position: LogPosition, by sender: NodeID, now: Instant) -> [Effect] {
        guard var backup = backups[sender], backup.verified else {
            ignored += 1
            return []
        }
        guard position.index <= store.position.index, store.epoch(ofEntry: position.index, in: log) == position.epoch
        else {
            // Not a position of this server's log (its snapshot is on the way, or its tail
            // diverged, perhaps past this log's end: entries of an old primary this one never
            // had, seed 1978600044 with a lag of 8): it counts for nothing. Still there after a
            // while: the snapshot was lost.
            ignored += 1
            if now - backup.sentAt >= settings.reportInterval * 3 {
                return catchUp(epoch, after: position, from: sender, now: now)
            }
            return []
        }
        backup.snapshotPending = false
        if position.index < backup.acked {
            // It holds less than it said (it restarted): send again from where it is.
            backup.sentUpTo = position.index
        } else if position.index == backup.acked, backup.sentUpTo > backup.acked,
            now - backup.sentAt >= settings.reportInterval * 3
        {
            // What went to it last never arrived (lost on the way, and nothing followed to show
            // the gap): start again from where it is, entries or a snapshot.
            return catchUp(epoch, after: position, from: sender, now: now)
        }
        backup.acked = position.index
        var out: [Effect] = []
        if backup.sentUpTo <= backup.acked, backup.acked < store.position.index {
            // From where it is: its position was checked against this log above.
            guard let entries = try? log.entries(after: backup.acked, limit: settings.catchUpBatch) else {
                // The log no longer reaches back that far (a backup back empty whose request to
                // catch up was lost, seed 68: its beats' answers alone asked for entries the log
                // no longer had, for ever): the whole state, as for a request to catch up.
                backups[sender] = backup
                return catchUp(epoch, after: position, from: sender, now: now) + complete(now: now)
            }
            // Catching up: the next batch.
            backup.sentUpTo = entries.last?.position.index ?? backup.acked
            backup.sentAt = now
            out.append(.send(.replicate(epoch: epoch, previous: position, entries: entries), to: sender))
        }
        backups[sender] = backup
        if !syncSet.contains(sender), backup.acked >= max(acknowledgedUpTo, 1) {
            // It holds everything acknowledged so far: from now on acknowledgements wait for it too.
            syncSet.append(sender)
            syncSet.sort()
        }
        return out + complete(now: now)
    }

    /// The highest index the primary may acknowledge; nil when it may acknowledge nothing (too
    /// few backups in the sync set). Synchronous: what every backup of the sync set holds.
    /// Asynchronous with a minimum sync set: up to the lag bound beyond that. Asynchronous
    /// without: everything.
    private var acknowledgedIndex: UInt64? {
        switch settings.mode {
        case .asynchronous(let maximumLag):
            guard settings.minimumSyncBackups > 0, bug != .acknowledgeBeforeBackup else { return store.position.index }
            guard let slowest = slowestOfSyncSet else { return nil }
            let (bound, overflow) = slowest.addingReportingOverflow(maximumLag)
            return overflow ? store.position.index : min(bound, store.position.index)
        case .synchronous:
            if bug == .acknowledgeBeforeBackup { return store.position.index }
            return slowestOfSyncSet
        }
    }

    /// What the slowest backup of the sync set holds; nil when the sync set has fewer than the
    /// minimum, or fewer than the minimum the controller granted (it would not promote the others
    /// as holding everything).
    private var slowestOfSyncSet: UInt64? {
        guard syncSet.count >= settings.minimumSyncBackups,
            syncSet.filter({ grantedSyncSet.contains($0) }).count >= settings.minimumSyncBackups
        else { return nil }
        return syncSet.map { backups[$0]?.acked ?? 0 }.min() ?? store.position.index
    }

    /// Replies to every held request now acknowledged, and admits held writers once the lag allows.
    private mutating func complete(now: Instant) -> [Effect] {
        var out: [Effect] = []
        if let index = acknowledgedIndex {
            acknowledgedUpTo = max(acknowledgedUpTo, min(index, store.position.index))
            while let first = pending.first, first.index <= index {
                pending.removeFirst()
                if first.key != nil {
                    out.append(
                        .send(
                            .readReply(
                                client: first.client, request: first.request, epoch: epoch, value: first.value,
                                error: nil), to: first.replyTo))
                } else if let result = first.result {
                    out.append(
                        .send(
                            .reply(client: first.client, request: first.request, epoch: epoch, outcome: .done(result)),
                            to: first.replyTo))
                }
            }
        }
        while !held.isEmpty, !lagging, let request = held.popFirst() {
            out += handleRequest(
                client: request.client, request: request.request, epoch: epoch, operation: request.operation,
                from: request.from, now: now)
        }
        return out
    }

    /// Asynchronous mode: whether the slowest backup that counts trails by the bound or more (with
    /// a minimum sync set: its slowest, and too few count as lagging; without: the slowest
    /// verified backup, if any).
    private var lagging: Bool {
        guard case .asynchronous(let maximumLag) = settings.mode else { return false }
        let slowest: UInt64
        if settings.minimumSyncBackups > 0, bug != .acknowledgeBeforeBackup {
            guard let counted = slowestOfSyncSet else { return true }
            slowest = counted
        } else {
            slowest = backups.values.filter(\.verified).map(\.acked).min() ?? store.position.index
        }
        return store.position.index - min(slowest, store.position.index) >= maximumLag
    }

    private func refusal(_ requestEpoch: UInt64, now: Instant) -> FailoverMessage.RefusalCode? {
        guard serves(now: now), requestEpoch <= epoch else { return .notPrimary }
        return requestEpoch < epoch ? .staleEpoch : nil
    }

    private mutating func handleRequest(
        client: UInt64, request: UInt64, epoch requestEpoch: UInt64, operation: StoreOperation, from sender: NodeID,
        now: Instant
    ) -> [Effect] {
        func refuse(_ code: FailoverMessage.RefusalCode) -> [Effect] {
            refused += 1
            return [
                .send(
                    .reply(client: client, request: request, epoch: epoch, outcome: .refused(code, serverEpoch: epoch)),
                    to: sender)
            ]
        }
        if let code = refusal(requestEpoch, now: now) { return refuse(code) }
        if client != 0, let answer = store.lastAnswer(for: client), answer.request == request {
            // A retry: answer as the first time, once that entry is acknowledged (no second application).
            if let index = pending.firstIndex(where: { $0.client == client && $0.request == request && $0.key == nil })
            {
                pending[index].replyTo = sender
                return []
            }
            pending.append(
                Pending(
                    index: answer.index, client: client, request: request, replyTo: sender, result: answer.result,
                    key: nil))
            return complete(now: now)
        }
        if lagging {
            guard settings.waitWhenLagging, held.count < settings.maximumPending else { return refuse(.lagExceeded) }
            held.append((sender, client, request, operation))
            return []
        }
        guard pending.count < settings.maximumPending else { return refuse(.lagExceeded) }
        let before = store.position
        let entry: ReplicationEntry
        let result: OperationResult
        do {
            let executed = try store.execute(operation, client: client, request: request, epoch: epoch)
            guard let made = executed.entry else { return refuse(.staleRequest) }
            entry = made
            result = executed.result
        } catch {
            switch error.code {
            case .staleRequest: return refuse(.staleRequest)
            case .tooLarge: return refuse(.tooLarge)
            case .staleEpoch: return refuse(.staleEpoch)
            default: return refuse(.malformed)
            }
        }
        applied(entry)
        var out: [Effect] = []
        for (server, backup) in backups.sorted(by: { $0.key < $1.key })
        where backup.verified && !backup.snapshotPending && backup.sentUpTo + 1 == entry.position.index {
            backups[server]?.sentUpTo = entry.position.index
            backups[server]?.sentAt = now
            out.append(.send(.replicate(epoch: epoch, previous: before, entries: [entry]), to: server))
        }
        pending.append(
            Pending(
                index: entry.position.index, client: client, request: request, replyTo: sender, result: result, key: nil
            )
        )
        return out + complete(now: now)
    }
}
