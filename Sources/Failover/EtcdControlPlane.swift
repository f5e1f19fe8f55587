public import FaultToleranceCore
public import FaultToleranceEtcd
public import Logging

/// What a ``FailoverServer`` obeys in place of a control server on the network: it takes the
/// messages the server's core sends its controller (reports) and sends the core the
/// controller's commands (lease renewals, promotions, step-downs, releases).
public protocol FailoverControlPlane: Sendable {
    /// A message the core sent its controller.
    func deliver(_ message: FailoverMessage) async
    /// Runs until cancelled, handing each command for the core to `command`.
    func run(command: @escaping @Sendable (FailoverMessage) -> Void) async
    /// The core serves with `configuration` (it was promoted): clients are to find it there.
    func serving(_ configuration: ServiceConfiguration) async
    /// The server restored its state from a journal named `identity`
    /// (``RecoveredReplica/identity``), before the plane runs. What a journaled server
    /// acknowledged is on that journal, and outlives the run: a plane that records which
    /// servers hold every acknowledged operation may name the journal rather than the run, so
    /// that a server back from a power loss on the same disk still counts as holding them.
    func journalRestored(identity: UInt64) async
}

extension FailoverControlPlane {
    /// Nothing to do by default.
    public func serving(_ configuration: ServiceConfiguration) async {}
    /// Nothing to do by default.
    public func journalRestored(identity: UInt64) async {}
}

/// How a pair uses etcd.
public struct EtcdControlConfiguration: Sendable, Hashable {
    /// The prefix of the pair's keys (`/ft/failover/NAME/`).
    public var prefix: String
    /// The lease time to live asked for (etcd grants at least 1.5 times its election timeout;
    /// the one granted is used).
    public var ttl: Duration
    /// How often each server renews its lease, writes its report and reads the pair's keys
    /// (a watch also wakes it when the keys change).
    public var interval: Duration
    /// The most two clocks' rates may differ: a primary's own lease is the granted TTL shrunk by
    /// it, less ``safetyMargin``, counted from before the renewal left.
    public var clockDriftBound: Double
    /// Taken off every lease a primary grants itself.
    public var safetyMargin: Duration
    /// The fewest backups a primary waits for before acknowledging (as ``ServerCore/Settings``).
    public var minimumSyncBackups: Int

    /// The keys of pair `cluster`, a lease of `ttl` renewed every quarter of it.
    public init(
        cluster: String, ttl: Duration = .seconds(1), interval: Duration? = nil, clockDriftBound: Double = 0.01,
        safetyMargin: Duration = .milliseconds(50), minimumSyncBackups: Int = 1
    ) {
        prefix = "/ft/failover/\(cluster)/"
        self.ttl = ttl
        self.interval = interval ?? ttl / 4
        self.clockDriftBound = clockDriftBound
        self.safetyMargin = safetyMargin
        self.minimumSyncBackups = minimumSyncBackups
    }

    var leaderKey: [UInt8] { Array((prefix + "leader").utf8) }
    var syncKey: [UInt8] { Array((prefix + "sync").utf8) }
    var primaryKey: [UInt8] { Array((prefix + "primary").utf8) }
    var membersPrefix: [UInt8] { Array((prefix + "members/").utf8) }
    var switchoverKey: [UInt8] { Array((prefix + "switchover").utf8) }
    func memberKey(_ node: NodeID) -> [UInt8] { membersPrefix + Array(node.name.utf8) }
    func isControlKey(_ key: [UInt8]) -> Bool { key == leaderKey || key == syncKey || key == switchoverKey }
}

extension EtcdControlPlane {
    /// Asks the pair's primary, through etcd, to hand over to `target` (or, when `nil`, to the
    /// live backup of the sync record with the newest position): the primary stops serving,
    /// then gives up the leader key, and the target takes it in a newer epoch. The request is
    /// bound to a lease of `ttl`, so one nobody carries out goes by itself. Returns the primary
    /// and epoch it moves away from and the target; throws
    /// ``FailoverError/Code/switchoverRefused`` when no primary serves or the target is not a
    /// live backup of the sync record (it may lack acknowledged operations).
    public static func requestSwitchover(
        etcd: any EtcdClient, configuration: EtcdControlConfiguration, to target: NodeID?, ttl: Duration = .seconds(5)
    ) async throws -> (from: NodeID, epoch: UInt64, to: NodeID) {
        let view = try await EtcdPairView.read(from: etcd, configuration)
        guard let leader = view.leader else {
            throw FailoverError(.switchoverRefused, detail: "no primary holds the leader key")
        }
        let candidates = (view.sync ?? []).filter { member in
            member.node != leader.node && view.members[member.node]?.incarnation == member.incarnation
        }
        let chosen =
            target
            ?? candidates.max {
                (view.members[$0.node]?.position ?? .start) < (view.members[$1.node]?.position ?? .start)
            }?
            .node
        guard let chosen, candidates.contains(where: { $0.node == chosen }) else {
            throw FailoverError(
                .switchoverRefused,
                detail: "\(target.map { "\($0)" } ?? "no server") is not a live backup of the sync record "
                    + "\((view.sync ?? []).map(\.node.name)) of \(leader.node)")
        }
        let lease = try await etcd.grant(ttl: ttl)
        _ = try await etcd.put(
            configuration.switchoverKey, FailoverEtcdRecord.switchover(target: chosen).encoded(), lease: lease.id)
        return (leader.node, leader.epoch, chosen)
    }
}

/// What etcd says of a pair at one revision.
public struct EtcdPairView: Sendable, Hashable {
    /// The primary's record and its epoch (the leader key's create revision), if one holds the key.
    public var leader: (node: NodeID, incarnation: UInt64, host: String, port: UInt16, epoch: UInt64, lease: Int64)? {
        leaderValue.map { ($0.node, $0.incarnation, $0.host, $0.port, $0.epoch, $0.lease) }
    }
    var leaderValue: Leader?
    /// Whether a leader key exists but its record does not decode (nobody campaigns then).
    public var leaderUnreadable = false
    /// The sync record, if one was ever written, and its last change's revision.
    public var sync: [FailoverEtcdRecord.SyncMember]?
    /// The sync key's last change (0: none).
    public var syncRevision: Int64 = 0
    /// The last server to take the leader key, as the run (or journal) it took it as.
    public var lastPrimary: FailoverEtcdRecord.SyncMember?
    /// The primary key's last change (0: none).
    public var lastPrimaryRevision: Int64 = 0
    /// Each live server's last report.
    public var members: [NodeID: FailoverController.Report] = [:]
    /// The backup an operator asked the primary to hand over to, while the request stands.
    public var switchoverTarget: NodeID?
    /// The store's revision.
    public var revision: Int64 = 0

    struct Leader: Sendable, Hashable {
        var node: NodeID
        var incarnation: UInt64
        var host: String
        var port: UInt16
        var epoch: UInt64
        var lease: Int64
    }

    /// Reads the pair's keys.
    public static func read(from etcd: any EtcdClient, _ configuration: EtcdControlConfiguration)
        async throws(EtcdError)
        -> EtcdPairView
    {
        let (revision, keys) = try await etcd.range(prefix: Array(configuration.prefix.utf8))
        var view = EtcdPairView()
        view.revision = revision
        for entry in keys {
            let record = try? FailoverEtcdRecord.decode(entry.value)
            if entry.key == configuration.leaderKey {
                if case .leader(let node, let incarnation, let host, let port)? = record {
                    view.leaderValue = Leader(
                        node: node, incarnation: incarnation, host: host, port: port,
                        epoch: UInt64(max(0, entry.createRevision)), lease: entry.lease)
                } else {
                    view.leaderUnreadable = true
                }
            } else if entry.key == configuration.syncKey {
                view.syncRevision = entry.modRevision
                // An unreadable sync record names nobody: no one may campaign on it.
                if case .sync(let members)? = record { view.sync = members } else { view.sync = [] }
            } else if entry.key == configuration.primaryKey {
                view.lastPrimaryRevision = entry.modRevision
                if case .primary(let member)? = record { view.lastPrimary = member }
            } else if entry.key == configuration.switchoverKey {
                if case .switchover(let target)? = record { view.switchoverTarget = target }
            } else if entry.key.starts(with: configuration.membersPrefix),
                case .member(let node, let report)? = record
            {
                view.members[node] = report
            }
        }
        return view
    }

    /// The pair as ``FailoverStatus`` tells it, for `servers` in that order.
    public func status(servers: [NodeID]) -> FailoverStatus {
        FailoverStatus(
            epoch: leaderValue?.epoch ?? members.values.map(\.epoch).max() ?? 0, primary: leaderValue?.node,
            failingOver: leaderValue == nil && sync != nil, failingOverFrom: nil,
            waitingReason: leaderValue == nil && sync?.isEmpty == true
                ? "the sync record names no server: only a restarted primary's return can end this" : nil,
            syncSet: (sync ?? []).map(\.node),
            servers: servers.map { .init(node: $0, alive: members[$0] != nil, report: members[$0]) })
    }
}

/// A server's side of the etcd control plane: in place of a control server, each server of the
/// pair keeps a lease in etcd and follows these rules, which keep the same promises.
///
/// - **One primary per epoch.** The primary holds the `leader` key, created in a transaction
///   that succeeds only if no one holds it; the key's create revision is the epoch. etcd deletes
///   the key when the holder's lease runs out.
/// - **The old primary stops before the new one starts.** A primary grants its own core a lease
///   of the TTL etcd granted, shrunk by the drift bound and a margin, counted from before the
///   renewal left; etcd counts the TTL from when the renewal arrived. So the core stops serving
///   before etcd can delete the key, and a primary cut off from etcd stops by itself.
/// - **No acknowledged operation lost (synchronous mode).** The `sync` key names the backups
///   (each with its run) the primary waits for; only they may take the leader key, in a
///   transaction that also checks the sync key is unchanged. A backup joins it once the primary
///   counts it caught up; it leaves it (written first, in a transaction that checks the
///   primary still holds the leader key) before the primary stops waiting for it.
/// - **A whole pair's power loss (journaled servers).** A server that restored from a journal
///   is named by the journal's identity instead of its run (``journalRestored(identity:)``), so
///   the servers of the sync record that come back on their disks may take the leader key; one
///   whose disk was replaced comes back with a new journal and must catch up.
///
/// ```swift
/// let etcd = EtcdGateway(host: "127.0.0.1", port: 2379)
/// let service = ServiceConfiguration(role: .backup, epoch: 0, host: "127.0.0.1", port: 7400)
/// let control = EtcdControlPlane(node: "a", etcd: etcd, configuration: .init(cluster: "orders"), service: service)
/// let server = FailoverServer(
///     node: "a", controller: "etcd", servers: ["a", "b"], configuration: service, transport: transport,
///     controlPlane: control)
/// ```
public actor EtcdControlPlane: FailoverControlPlane {
    /// Bugs the simulation plants to show its invariants catch them.
    public enum Bug: String, Sendable, CaseIterable {
        /// Take the leader key again as the last primary by name alone, whatever run or journal
        /// this is (a primary back on a replaced disk, empty, takes over).
        case trustLastPrimaryByName = "trust-last-primary-by-name"
    }

    /// This server.
    public nonisolated let node: NodeID
    private let bug: Bug?
    private let etcd: any EtcdClient
    private let configuration: EtcdControlConfiguration
    private let clock: any RuntimeClock
    private let logger: Logger
    private var lease: EtcdLease?
    private var leaseStamp = Instant(nanoseconds: 0)
    /// The epoch this server leads, while it holds the leader key.
    public private(set) var leading: UInt64?
    private var report: FailoverController.Report?
    /// The journal this server restored from, if any: the sync record names it instead of the run.
    private var journalIdentity: UInt64?
    private var released: Set<NodeID> = []
    private var written: FailoverController.Report?
    private var writtenUnder: Int64 = 0
    private var waiter: CheckedContinuation<Void, Never>?
    private var woken = false
    private var pauses: UInt64 = 0
    /// Transactions that found the pair changed under them (lost races to campaign).
    public private(set) var lostRaces = 0

    /// A server `node`'s side of the pair's keys in `etcd`; the leader record names `service`'s
    /// address until the core says it serves on another.
    public init(
        node: NodeID, etcd: any EtcdClient, configuration: EtcdControlConfiguration, service: ServiceConfiguration,
        clock: any RuntimeClock = SystemClock(), logger: Logger = Logger(label: "ft.failover.etcd"), bug: Bug? = nil
    ) {
        self.node = node
        self.bug = bug
        serviceAddress = (service.host, service.port)
        self.etcd = etcd
        self.configuration = configuration
        self.clock = clock
        self.logger = logger
    }

    /// Names this server by the journal it restored from, in its reports, the sync record and the
    /// leader record, instead of by its run: what it acknowledged is on that journal, so after a
    /// restart on the same disk (a whole pair's power loss) it may still take the leader key.
    /// A server whose disk was replaced has a new journal, a new identity, and must catch up
    /// like a new run.
    public func journalRestored(identity: UInt64) {
        journalIdentity = identity
    }

    /// Takes the core's report (the others are not a controller's business).
    public func deliver(_ message: FailoverMessage) {
        guard case .report(var new) = message else { return }
        if let journalIdentity { new.incarnation = journalIdentity }
        let changed = report.map { $0.role != new.role || $0.epoch != new.epoch || $0.syncSet != new.syncSet } ?? true
        for backup in released where !new.syncSet.contains(backup) { released.remove(backup) }
        report = new
        if changed { wake() }
    }

    /// Renews, reads and decides every ``EtcdControlConfiguration/interval``, and at once when
    /// the pair's keys change or the core's role or sync set does.
    public func run(command: @escaping @Sendable (FailoverMessage) -> Void) async {
        let watcher = Task(executorPreference: clock.taskExecutor) { [etcd, configuration, logger, clock] in
            while !Task.isCancelled {
                do {
                    // Only the leader and sync keys matter at once (reports change all the time).
                    for try await events in etcd.watch(prefix: Array(configuration.prefix.utf8), from: 0)
                    where events.contains(where: { configuration.isControlKey($0.key) }) {
                        await self.wake()
                    }
                } catch {
                    logger.debug("etcd watch broke; again", metadata: ["error": "\(error)"])
                }
                // A pause before watching again (etcd out of reach): the rounds go on meanwhile.
                try? await clock.sleep(for: configuration.interval)
            }
        }
        defer { watcher.cancel() }
        while !Task.isCancelled {
            await step(command)
            await pause()
        }
        // The lease is left to run out, not revoked: a server that stops is treated as one that
        // crashed (its core may have served until the last moment of its own lease).
    }

    private func wake() {
        if let waiter {
            self.waiter = nil
            waiter.resume()
        } else {
            woken = true
        }
    }

    private func pause() async {
        if woken {
            woken = false
            return
        }
        let (clock, interval) = (clock, configuration.interval)
        pauses &+= 1
        let pause = pauses
        let timer = Task(executorPreference: clock.taskExecutor) { [weak self] in
            // The round's period on the server's clock; a wake (a watch, the core) may end it first.
            do { try await clock.sleep(for: interval) } catch { return }
            await self?.timerFired(pause)
        }
        await withCheckedContinuation { waiter = $0 }
        timer.cancel()
    }

    /// Ends pause number `pause` if it is still the one under way.
    private func timerFired(_ pause: UInt64) {
        if pause == pauses, waiter != nil { wake() }
    }

    /// One round: renew the lease, write the report, read the pair, act.
    func step(_ command: @Sendable (FailoverMessage) -> Void) async {
        do {
            guard let lease = try await renew(command) else { return }
            if let report, report != written || lease.id != writtenUnder {
                written = report
                writtenUnder = lease.id
                _ = try await etcd.put(
                    configuration.memberKey(node), FailoverEtcdRecord.member(node: node, report: report).encoded(),
                    lease: lease.id)
            }
            let view = try await EtcdPairView.read(from: etcd, configuration)
            if let leader = view.leaderValue {
                if leader.lease == lease.id && leader.node == node {
                    try await lead(view, epoch: leader.epoch, command)
                } else {
                    follow(epoch: leader.epoch, command)
                }
            } else {
                if let epoch = leading {
                    // Our key is gone though our lease holds: stop, then campaign like anyone.
                    leading = nil
                    command(.stepDown(epoch: epoch))
                }
                if !view.leaderUnreadable { try await campaign(view, lease: lease, command) }
            }
        } catch {
            // Nothing renewed: a primary's own lease runs out and it stops by itself.
            logger.debug("etcd unreachable", metadata: ["node": "\(node)", "error": "\(error)"])
        }
    }

    /// Grants or renews this server's lease; a lease that ran out ends its leadership.
    private func renew(_ command: @Sendable (FailoverMessage) -> Void) async throws(EtcdError) -> EtcdLease? {
        let stamp = clock.now
        if let current = lease {
            if let ttl = try await etcd.keepAlive(current.id) {
                lease = EtcdLease(id: current.id, ttl: ttl)
                leaseStamp = stamp
                return lease
            }
            lease = nil
            if let epoch = leading {
                leading = nil
                logger.warning("lease ran out in etcd: stepping down", metadata: ["epoch": "\(epoch)"])
                command(.stepDown(epoch: epoch))
            }
        }
        let granted = try await etcd.grant(ttl: configuration.ttl)
        lease = granted
        leaseStamp = stamp
        return granted
    }

    /// How long the core may serve from ``leaseStamp``.
    private func ownLease(_ ttl: Duration) -> Duration {
        let shrunk = ttl * (1 - configuration.clockDriftBound) - configuration.safetyMargin
        return max(.zero, shrunk)
    }

    private func follow(epoch: UInt64, _ command: @Sendable (FailoverMessage) -> Void) {
        if let mine = leading {
            leading = nil
            command(.stepDown(epoch: max(mine, epoch)))
        } else if let report, report.epoch < epoch {
            // Refuse anything older than the leader's epoch from now on.
            command(.stepDown(epoch: epoch))
        }
    }

    private func lead(_ view: EtcdPairView, epoch: UInt64, _ command: @Sendable (FailoverMessage) -> Void)
        async throws(EtcdError)
    {
        leading = epoch
        var record = view.sync ?? []
        if report?.role == .steppedDown, report?.epoch == epoch {
            // The core stopped serving in this epoch (its own lease ran out while etcd was out of
            // reach, or a switchover asked it to): give up the key, or no one could take it.
            _ = try await etcd.transaction(
                compare: [.createRevision(key: configuration.leaderKey, equals: Int64(epoch))],
                success: [.delete(key: configuration.leaderKey)], failure: [])
            leading = nil
            logger.info("gave up the leader key", metadata: ["epoch": "\(epoch)"])
            return
        }
        if let target = view.switchoverTarget, target != node, view.members[target] != nil,
            record.contains(where: { $0.node == target })
        {
            // A planned switchover: stop serving first; the key goes once the core says it stopped.
            command(.stepDown(epoch: epoch))
            return
        }
        // Backups gone from etcd (their lease ran out) or back as a new run leave the record
        // first; then the core stops waiting for them.
        let gone = record.filter { member in
            member.node != node && view.members[member.node]?.incarnation != member.incarnation
        }
        if !gone.isEmpty {
            var kept = record.filter { !gone.contains($0) }
            // Gone from an otherwise empty record: a primary that needs a backup acknowledges
            // nothing more, so the ones only silent (not back as a new run, whose memory is
            // gone) still hold everything acknowledged and stay candidates.
            if kept.isEmpty && configuration.minimumSyncBackups > 0 {
                kept = gone.filter { view.members[$0.node] == nil }
            }
            if kept != record {
                guard try await writeSync(kept, epoch: epoch) else { return }
                record = kept
            }
            for member in gone where report?.syncSet.contains(member.node) == true {
                released.insert(member.node)
                command(.releaseBackup(epoch: epoch, backup: member.node))
            }
        }
        // Backups the core counts as caught up join the record before it counts on them.
        if let report, report.role == .primary, report.epoch == epoch {
            var joined = record
            for backup in report.syncSet where !released.contains(backup) && backup != node {
                guard let incarnation = view.members[backup]?.incarnation else { continue }
                let member = FailoverEtcdRecord.SyncMember(node: backup, incarnation: incarnation)
                guard !joined.contains(member) else { continue }
                joined.removeAll { $0.node == backup }
                joined.append(member)
            }
            if joined != record {
                guard try await writeSync(joined.sorted(), epoch: epoch) else { return }
                record = joined.sorted()
            }
        }
        guard let lease else { return }
        command(
            .renewLease(
                epoch: epoch, duration: ownLease(lease.ttl), stamp: leaseStamp.nanoseconds,
                syncSet: record.map(\.node).filter { $0 != node }))
    }

    /// Writes the sync record if this server still holds the leader key of `epoch`.
    private func writeSync(_ members: [FailoverEtcdRecord.SyncMember], epoch: UInt64) async throws(EtcdError) -> Bool {
        let (succeeded, _) = try await etcd.transaction(
            compare: [.createRevision(key: configuration.leaderKey, equals: Int64(epoch))],
            success: [.put(key: configuration.syncKey, value: FailoverEtcdRecord.sync(members).encoded(), lease: 0)],
            failure: [])
        if !succeeded { lostRaces += 1 }
        return succeeded
    }

    /// Takes the leader key if this server may: it is named in the sync record as the run (or
    /// journal) it is, or it was the last to take the key, as the same run or journal (it holds
    /// everything acknowledged: nobody acknowledged anything since without taking the key), or
    /// no record was ever written (a new pair); and neither record has changed since read.
    private func campaign(_ view: EtcdPairView, lease: EtcdLease, _ command: @Sendable (FailoverMessage) -> Void)
        async throws(EtcdError)
    {
        guard let report, report.role != .primary else { return }
        // An operator's switchover names another: leave the key to it while the request stands.
        if let target = view.switchoverTarget, target != node, view.members[target] != nil { return }
        let me = FailoverEtcdRecord.SyncMember(node: node, incarnation: report.incarnation)
        if let sync = view.sync {
            let lastPrimary =
                bug == .trustLastPrimaryByName ? view.lastPrimary?.node == node : view.lastPrimary == me
            guard sync.contains(me) || lastPrimary else { return }
        }
        let others = (view.sync ?? []).filter { $0.node != node }
        let configuration = self.configuration
        let (succeeded, revision) = try await etcd.transaction(
            compare: [
                .createRevision(key: configuration.leaderKey, equals: 0),
                .modRevision(key: configuration.syncKey, equals: view.syncRevision),
                .modRevision(key: configuration.primaryKey, equals: view.lastPrimaryRevision),
            ],
            success: [
                .put(
                    key: configuration.leaderKey, value: leaderRecord(incarnation: report.incarnation), lease: lease.id),
                .put(key: configuration.syncKey, value: FailoverEtcdRecord.sync(others).encoded(), lease: 0),
                .put(key: configuration.primaryKey, value: FailoverEtcdRecord.primary(me).encoded(), lease: 0),
                .delete(key: configuration.switchoverKey),
            ], failure: [])
        guard succeeded else {
            lostRaces += 1
            return
        }
        let epoch = UInt64(revision)
        leading = epoch
        logger.info("took the leader key", metadata: ["node": "\(node)", "epoch": "\(epoch)"])
        command(.promote(epoch: epoch, syncSet: others.map(\.node), minimum: report.position))
        command(
            .renewLease(
                epoch: epoch, duration: ownLease(lease.ttl), stamp: leaseStamp.nanoseconds,
                syncSet: others.map(\.node)))
    }

    private var serviceAddress: (host: String, port: UInt16)

    /// The leader record names `configuration`'s address from now on (rewritten at once while
    /// this server holds the leader key).
    public func serving(_ configuration: ServiceConfiguration) async {
        serviceAddress = (configuration.host, configuration.port)
        guard let epoch = leading, let lease, let report else { return }
        _ = try? await etcd.transaction(
            compare: [.createRevision(key: self.configuration.leaderKey, equals: Int64(epoch))],
            success: [
                .put(
                    key: self.configuration.leaderKey, value: leaderRecord(incarnation: report.incarnation),
                    lease: lease.id)
            ], failure: [])
    }

    private func leaderRecord(incarnation: UInt64) -> [UInt8] {
        FailoverEtcdRecord.leader(
            node: node, incarnation: incarnation, host: serviceAddress.host, port: serviceAddress.port
        ).encoded()
    }
}
