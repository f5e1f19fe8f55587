public import FaultToleranceCore

/// How the primary replicates to its backups.
public enum ReplicationMode: Sendable, Hashable {
    /// An operation is acknowledged to its client only once every backup of the sync set has it.
    case synchronous
    /// An operation is acknowledged at once; the backups may trail by at most `maximumLag`
    /// entries, beyond which the primary slows or refuses writers (by its policy).
    case asynchronous(maximumLag: UInt64)
}

/// The failover controller: a pure state machine (no clock, no I/O). Its inputs are heartbeat
/// verdicts (from HeartbeatQuorum over several paths), the servers' position reports and
/// client health probes of the primary; its outputs are ``Command``s: lease renewals for the
/// primary, step-down and fencing of a failed primary, and the promotion of the most
/// up-to-date backup with a new epoch.
///
/// Safety, in the order the controller keeps it:
/// - **One primary per epoch.** Every promotion takes a new epoch, recorded
///   (``Command/recordEpoch(_:)``) before the promotion is sent; servers refuse anything of an
///   older epoch.
/// - **The old primary stops before the new one starts.** A primary serves only while its lease
///   holds; the controller promotes only once the last lease it granted has run out on any clock
///   within the drift bound, or once the old primary confirmed it stepped down.
/// - **No acknowledged operation lost (synchronous mode).** Only a member of the sync set (the
///   backups the primary waits for) is promoted; a backup leaves the set in the controller
///   before the primary is told it may stop waiting for it.
///
/// ```swift
/// var controller = FailoverController(configuration: .init(servers: ["a", "b"]), epoch: 0, now: now)
/// var commands = controller.report("a", .init(role: .backup, epoch: 0, position: .start), now: now)
/// commands += controller.report("b", .init(role: .backup, epoch: 0, position: .start), now: now)
/// commands += controller.tick(now: now + .milliseconds(40))  // promotes one, renews its lease
/// ```
public struct FailoverController: Sendable {
    /// A mistake the simulation must catch, planted in this code path (never on outside it).
    public enum Bug: String, Sendable, CaseIterable {
        /// Promote as soon as the primary is judged failed, without waiting out its lease or a
        /// confirmed step-down (no fencing).
        case promoteWithoutFencing = "promote-without-fencing"
        /// Durable servers: keep every restarted server in the sync set, without checking that
        /// it came back with at least the position it had (a replaced disk passes as kept).
        case trustEveryRestart = "trust-every-restart"
    }

    /// The controller's settings.
    public struct Configuration: Sendable, Hashable {
        /// The servers (primary and backups).
        public var servers: [NodeID]
        /// Synchronous or asynchronous replication.
        public var mode: ReplicationMode
        /// How long a granted lease lets the primary serve, counted on the primary's clock from
        /// when it sent the report the grant answers (so a grant delayed on the way cannot
        /// stretch it).
        public var leaseDuration: Duration
        /// How often a server reports (a primary's report asks for its lease to be renewed);
        /// well under ``leaseDuration``.
        public var renewInterval: Duration
        /// The most two clocks' rates may differ (0.01: 1%); the controller waits a lease's
        /// duration stretched by it, plus ``safetyMargin``, before it counts the lease as expired.
        public var clockDriftBound: Double
        /// Added to every lease wait: message delay between the grant leaving and arriving.
        public var safetyMargin: Duration
        /// Consecutive failed client probes of the primary that count as a failure.
        public var probeFailureThreshold: Int
        /// Asynchronous mode: the most entries a backup may trail the primary's last reported
        /// position by and still be promoted (beyond it the controller waits and says why).
        public var promotionLagLimit: UInt64
        /// The fewest backups a primary's sync set must hold for it to acknowledge anything.
        /// Synchronous mode, 1: an acknowledged operation is always on a backup, so no single
        /// failure loses it; 0: a primary left alone keeps acknowledging, and a failure of it
        /// then may lose those operations. Asynchronous mode, 1 or more: the sync set trails
        /// what is acknowledged by at most the lag bound, and only its members are promoted, so
        /// a failover loses at most that many acknowledged entries; 0: no bound.
        public var minimumSyncBackups: Int
        /// Whether the servers journal what they apply (``ReplicaJournal``): a restarted server
        /// that reports at least the position it reported before its restart kept its disk, and
        /// with it everything it acknowledged, so it stays in the sync set (after a whole pair's
        /// power loss, the pair then fails over to one of them). One that reports less lost its
        /// disk and counts as emptied, as every restart does without journals.
        public var durableServers: Bool

        /// Whether the controller keeps a sync set and promotes only from it: synchronous mode,
        /// or asynchronous with a minimum sync set (a bound on what a failover loses).
        public var keepsSyncSet: Bool {
            if case .synchronous = mode { return true }
            return minimumSyncBackups > 0
        }

        /// Settings for a 10 ms heartbeat: a 30 ms lease, asked for every 10 ms.
        public init(
            servers: [NodeID], mode: ReplicationMode = .synchronous, leaseDuration: Duration = .milliseconds(30),
            renewInterval: Duration = .milliseconds(10), clockDriftBound: Double = 0.01,
            safetyMargin: Duration = .milliseconds(2), probeFailureThreshold: Int = 3, promotionLagLimit: UInt64 = 1000,
            minimumSyncBackups: Int = 1, durableServers: Bool = false
        ) {
            self.minimumSyncBackups = minimumSyncBackups
            self.durableServers = durableServers
            self.servers = servers
            self.mode = mode
            self.leaseDuration = leaseDuration
            self.renewInterval = renewInterval
            self.clockDriftBound = clockDriftBound
            self.safetyMargin = safetyMargin
            self.probeFailureThreshold = probeFailureThreshold
            self.promotionLagLimit = promotionLagLimit
        }

        /// Throws ``FailoverError/Code/invalidConfiguration`` for settings the controller cannot run with.
        public func validate() throws(FailoverError) {
            guard servers.count >= 1, Set(servers).count == servers.count else {
                throw FailoverError(.invalidConfiguration, detail: "servers must be distinct and at least one")
            }
            guard leaseDuration > .zero, renewInterval > .zero, renewInterval < leaseDuration else {
                throw FailoverError(.invalidConfiguration, detail: "need 0 < renew interval < lease duration")
            }
            guard clockDriftBound >= 0, clockDriftBound < 0.5, safetyMargin >= .zero, probeFailureThreshold >= 1 else {
                throw FailoverError(
                    .invalidConfiguration, detail: "drift bound, margin or probe threshold out of range")
            }
        }

        /// How long after sending a grant the controller counts it as run out everywhere.
        var leaseWait: Duration { leaseDuration * (1 + clockDriftBound) + safetyMargin }
    }

    /// What a server says of itself.
    public struct Report: Sendable, Hashable {
        /// Its role.
        public var role: ServiceConfiguration.Role
        /// The epoch it is in.
        public var epoch: UInt64
        /// The last entry it applied.
        public var position: LogPosition
        /// A primary's sync set: the backups it waits for before acknowledging (it adds a backup
        /// once that backup has caught up; it drops one only when released).
        public var syncSet: [NodeID]
        /// The sender's clock when it sent the report (nanoseconds); a lease granted in answer
        /// runs from it.
        public var stamp: Int64
        /// Which run of the server this is (a memory database forgets everything in a restart:
        /// a new incarnation holds nothing the old one was counted for).
        public var incarnation: UInt64

        /// Creates a report.
        public init(
            role: ServiceConfiguration.Role, epoch: UInt64, position: LogPosition, syncSet: [NodeID] = [],
            stamp: Int64 = 0, incarnation: UInt64 = 0
        ) {
            self.incarnation = incarnation
            self.role = role
            self.epoch = epoch
            self.position = position
            self.syncSet = syncSet
            self.stamp = stamp
        }
    }

    /// What the runtime does, in order.
    public enum Command: Sendable, Hashable {
        /// Durably record the epoch before sending anything after it (a restarted controller
        /// must never hand out an epoch twice).
        case recordEpoch(UInt64)
        /// Tell the primary it may serve in `epoch` for `duration` from `stamp` (its clock when it
        /// sent the report this answers); `syncSet` is the backups the controller counts as
        /// holding every acknowledged operation (the primary acknowledges only while at least
        /// the minimum of them are in its own sync set).
        case renewLease(to: NodeID, epoch: UInt64, duration: Duration, stamp: Int64, syncSet: [NodeID])
        /// Tell a server to stop serving and refuse anything older than `epoch`.
        case stepDown(to: NodeID, epoch: UInt64)
        /// Cut a failed primary off (the runtime's fencing hook: close its connections, power it
        /// off); it belongs to an epoch older than `epoch`.
        case fence(NodeID, epoch: UInt64)
        /// Make a backup the primary of `epoch`: it adopts the replicated configuration, and
        /// waits for every backup of `syncSet` (which hold every operation acknowledged so far)
        /// before it acknowledges anything, until the controller releases one.
        /// `minimum` is the position it last reported: a server that holds less (it restarted)
        /// refuses the promotion.
        case promote(to: NodeID, epoch: UInt64, syncSet: [NodeID], minimum: LogPosition)
        /// Tell the primary it may stop waiting for `backup` (synchronous mode): the controller
        /// already no longer counts it as holding every acknowledged operation.
        case releaseBackup(to: NodeID, epoch: UInt64, backup: NodeID)
        /// The controller holds back a promotion; the reason, for logs and `status`.
        case waiting(reason: String)
    }

    /// Where the controller stands.
    public enum Phase: Sendable, Hashable {
        /// Just started: no promotion until any lease a former controller granted has run out.
        case starting(until: Instant)
        /// `primary` serves in the current epoch.
        case serving(NodeID)
        /// The primary `from` failed (or is being switched over to `target`); the next epoch is
        /// reserved; a promotion waits until `leaseEnds` or a confirmed step-down.
        case failingOver(from: NodeID?, target: NodeID?, leaseEnds: Instant)
    }

    struct Member: Sendable, Hashable {
        var alive = true
        var report: Report?
        var probeFailures = 0
    }

    /// The settings.
    public let configuration: Configuration
    /// The newest epoch handed out.
    public private(set) var epoch: UInt64
    /// Where the controller stands.
    public private(set) var phase: Phase
    /// The backups known to hold every acknowledged operation (synchronous mode). While the
    /// primary may acknowledge (its reported sync set is non-empty, or the minimum is 0) it is
    /// that set, less the backups the controller released; while it may not, it keeps what it
    /// was; at a promotion it carries over, less the promoted backup, plus any backup that
    /// holds the confirmed final position of the old primary.
    public private(set) var syncSet: [NodeID] = []
    /// Backups released from the sync set whose release the primary has not yet reported.
    private var released: Set<NodeID> = []
    /// The epochs promoted since a primary was last granted a non-empty sync set, with the
    /// position each was promoted at: none of them acknowledged anything, so each starting
    /// point holds every acknowledged operation.
    private var ungranted: [UInt64: LogPosition] = [:]
    /// Servers that restarted (an empty memory) and have not reported catching up from the
    /// current primary since: a primary's report naming one in its sync set is out of date.
    private var emptied: Set<NodeID> = []
    /// Whether any primary may have acknowledged an operation: false until a sync set the
    /// controller granted was non-empty (a primary acknowledges only with one), so until then
    /// any backup may be promoted.
    private var mayHaveAcknowledged = false
    /// Backups released from an otherwise empty sync set: the primary can have acknowledged
    /// nothing since, so they still hold everything acknowledged (a false suspicion of the
    /// detector must not leave nobody to promote). Also, with durable servers, a primary back
    /// on its journal (it journaled everything it acknowledged). Cleared when the set fills again.
    private var dormant: Set<NodeID> = []
    /// Whether the failed primary may be promoted again once it confirms its step-down (not
    /// after failing its clients' probes, not in a switchover).
    private var oldMayReturn = true
    /// Durable servers (``Configuration/durableServers``) whose last restart kept their disk: a
    /// former primary among them confirms its step-down from its new run, since it holds what
    /// it acknowledged.
    private var keptDisks: Set<NodeID> = []
    /// The last primary granted a lease with a sync set it could acknowledge with: every
    /// primary promoted since acknowledged nothing.
    private var lastAcknowledging: NodeID?
    /// The current primary's epoch and the position it was promoted at, and whether it was ever
    /// granted a non-empty sync set (without one it acknowledged nothing of its own).
    private var serving: Serving?

    struct Serving: Sendable {
        var epoch: UInt64
        var start: LogPosition
        var granted: Bool
        /// The primary's incarnation when it was promoted.
        var incarnation: UInt64?
        /// The servers that held every acknowledged operation when this primary was promoted
        /// (it, the sync set it was given, and the primary before it), by incarnation. While the
        /// primary acknowledges nothing of its own, each that keeps its incarnation still does:
        /// following a complete primary can only cut entries nobody acknowledged.
        var complete: [NodeID: UInt64]
    }
    /// Why the last promotion was held back, while it is.
    public private(set) var waitingReason: String?
    private var members: [NodeID: Member]
    private var lastRenewal: Instant?

    /// The planted mistake, if any.
    public let bug: Bug?

    /// A controller whose last recorded epoch is `epoch`, started at `now`.
    public init(configuration: Configuration, epoch: UInt64, now: Instant, bug: Bug? = nil) {
        self.bug = bug
        self.configuration = configuration
        self.epoch = epoch
        phase = .starting(until: now + configuration.leaseWait)
        members = Dictionary(uniqueKeysWithValues: configuration.servers.map { ($0, Member()) })
    }

    /// The primary, while one serves.
    public var primary: NodeID? {
        if case .serving(let node) = phase { return node }
        return nil
    }

    /// The last position `node` reported.
    public func position(of node: NodeID) -> LogPosition? { members[node]?.report?.position }

    /// The last report `node` sent, if it is a server of the pair and one arrived.
    public func report(of node: NodeID) -> Report? { members[node]?.report }

    /// Whether the heartbeat detector holds `node` alive.
    public func isAlive(_ node: NodeID) -> Bool { members[node]?.alive ?? false }

    // MARK: Inputs

    /// A heartbeat verdict on `node`.
    public mutating func heartbeat(_ node: NodeID, alive: Bool, now: Instant) -> [Command] {
        guard members[node] != nil else { return [] }
        members[node]?.alive = alive
        if alive { members[node]?.probeFailures = 0 }
        return evaluate(now: now)
    }

    /// A client health probe of `node` (the primary): whether it served.
    public mutating func probe(_ node: NodeID, healthy: Bool, now: Instant) -> [Command] {
        guard members[node] != nil else { return [] }
        if healthy { members[node]?.probeFailures = 0 } else { members[node]?.probeFailures += 1 }
        return evaluate(now: now)
    }

    /// A server's report of its role, epoch and position.
    public mutating func report(_ node: NodeID, _ report: Report, now: Instant) -> [Command] {
        guard members[node] != nil else { return [] }
        if let last = members[node]?.report, last.incarnation == report.incarnation, report.stamp < last.stamp {
            // Sent before the last one taken (reordered on the way): what it says is out of date.
            // A primary's older sync set, taken now, would drop a backup it waits for.
            return []
        }
        let restarted = members[node]?.report.map { $0.incarnation != report.incarnation } ?? false
        let keptItsDisk =
            configuration.durableServers
            && (bug == .trustEveryRestart || (members[node]?.report.map { report.position >= $0.position } ?? false))
        if restarted, keptItsDisk {
            keptDisks.insert(node)
            // The last primary that may have acknowledged, back on its journal, holds everything
            // acknowledged, until a new primary acknowledges more (seeds 276 and 1716 of the
            // journaled simulation: the only backup lost its disk in a power loss, and nobody
            // else was left to promote).
            if node == lastAcknowledging { dormant.insert(node) }
        }
        if restarted, !keptItsDisk {
            keptDisks.remove(node)
            // The server restarted: whatever it held for the sync set is gone.
            syncSet.removeAll { $0 == node }
            dormant.remove(node)
            emptied.insert(node)
        }
        members[node]?.report = report
        if emptied.contains(node), let serving, report.position.epoch == serving.epoch,
            report.position.index >= serving.start.index
        {
            // It caught up from the primary of this epoch since: it holds what that primary had.
            emptied.remove(node)
        }
        var out: [Command] = []
        if restarted, primary == node {
            // The primary restarted (faster than the detector noticed): its memory is gone, so
            // it is replaced, never promoted again in its epoch.
            return beginFailover(from: node, target: nil, now: now)
        }
        if case .starting = phase, report.role == .primary, report.epoch == epoch, epoch > 0,
            members[node]?.alive == true
        {
            // A restarted controller finds the primary it made before: keep it. Where it started
            // is unknown: from here on is the least a follower must reach; and it may have
            // acknowledged operations.
            phase = .serving(node)
            lastRenewal = nil
            serving = Serving(
                epoch: epoch, start: report.position, granted: true, incarnation: report.incarnation, complete: [:])
        }
        if primary == node, report.role == .steppedDown, report.epoch == epoch {
            // The primary stepped down by itself (its lease lapsed): replace it.
            return out + beginFailover(from: node, target: nil, now: now)
        }
        if case .failingOver(let old?, _, _) = phase, old == node, report.role != .primary, report.epoch < epoch {
            // The failed primary stepped down by itself but has not heard of the new epoch (the
            // step-down was lost): tell it again, so that it can confirm where it stopped.
            out.append(.stepDown(to: node, epoch: epoch))
        }
        if report.role == .primary, primary != node || report.epoch < epoch {
            // A primary the controller did not make in this epoch: stop it.
            out.append(.stepDown(to: node, epoch: epoch))
        } else if primary == node, report.role != .primary || report.epoch < epoch {
            // The promotion was lost on the way: send it again.
            out.append(.promote(to: node, epoch: epoch, syncSet: syncSet, minimum: report.position))
        }
        if primary == node, report.role == .primary, report.epoch == epoch {
            // The primary's own account of whom it waits for, less what was released since.
            released = released.filter { report.syncSet.contains($0) }
            if !report.syncSet.isEmpty || configuration.minimumSyncBackups == 0 {
                // Not a backup that restarted and has not caught up since: the primary may not
                // know yet (its report left before it heard from the new incarnation).
                syncSet = report.syncSet.filter { !released.contains($0) && !emptied.contains($0) && $0 != node }
                    .sorted()
            }
            if !syncSet.isEmpty || configuration.minimumSyncBackups == 0 {
                mayHaveAcknowledged = true
                dormant = []
            }
            // A release the primary has not acted on (lost on the way): again.
            for backup in released.sorted() { out.append(.releaseBackup(to: node, epoch: epoch, backup: backup)) }
            if members[node]?.alive == true,
                members[node].map({ $0.probeFailures < configuration.probeFailureThreshold }) ?? false
            {
                // The primary asks for its lease: the grant runs from the report's stamp.
                lastRenewal = now
                if !syncSet.isEmpty || configuration.minimumSyncBackups == 0 {
                    serving?.granted = true
                    ungranted = [:]
                    lastAcknowledging = node
                }
                out.append(
                    .renewLease(
                        to: node, epoch: epoch, duration: configuration.leaseDuration, stamp: report.stamp,
                        syncSet: syncSet))
            }
        }
        return out + evaluate(now: now)
    }

    /// Time passes.
    public mutating func tick(now: Instant) -> [Command] { evaluate(now: now) }

    /// A planned switchover to `target` (or, when `nil`, the live backup with the newest
    /// reported position): the primary steps down first (it is not fenced), and the target is
    /// promoted once it holds everything the primary confirmed. Should the target die before,
    /// the failover goes on as after a failure, the old primary among the candidates.
    ///
    /// Throws ``FailoverError/Code/notPrimary`` when no primary serves (nothing to switch from)
    /// and ``FailoverError/Code/invalidConfiguration`` for a target that is not a live backup
    /// of the pair that has reported.
    public mutating func switchover(to target: NodeID? = nil, now: Instant) throws(FailoverError) -> [Command] {
        guard case .serving(let old) = phase else {
            throw FailoverError(.notPrimary, detail: "no primary serves to switch from")
        }
        // With a sync set, only a backup of it (it holds every acknowledged operation, or in
        // asynchronous mode all but the lag bound's last) may take over.
        let restricted = configuration.keepsSyncSet && mayHaveAcknowledged
        let candidates = configuration.servers.filter {
            $0 != old && members[$0]?.alive == true && members[$0]?.report != nil
                && (!restricted || syncSet.contains($0))
        }
        if let target {
            guard configuration.servers.contains(target), target != old else {
                throw FailoverError(.invalidConfiguration, node: target, detail: "not a backup of this pair")
            }
            guard candidates.contains(target) else {
                throw FailoverError(
                    .invalidConfiguration, node: target,
                    detail: "not a live backup of the sync set that has reported its position")
            }
        }
        let newest = candidates.max { lhs, rhs in
            let left = members[lhs]?.report?.position ?? .start
            let right = members[rhs]?.report?.position ?? .start
            return left != right ? left < right : lhs > rhs
        }
        guard let chosen = target ?? newest else {
            throw FailoverError(
                .invalidConfiguration, detail: "no live backup of the sync set has reported its position")
        }
        return beginFailover(from: old, target: chosen, now: now)
    }

    // MARK: Decisions

    private mutating func evaluate(now: Instant) -> [Command] {
        var out: [Command] = []
        switch phase {
        case .starting(let until):
            guard now >= until else { return [] }
            epoch += 1
            phase = .failingOver(from: nil, target: nil, leaseEnds: until)
            return [.recordEpoch(epoch)] + evaluate(now: now)
        case .serving(let node):
            if let member = members[node],
                !member.alive || member.probeFailures >= configuration.probeFailureThreshold
            {
                // Failing its clients is not a false suspicion: it is not promoted again.
                return beginFailover(
                    from: node, target: nil, now: now,
                    mayReturn: member.probeFailures < configuration.probeFailureThreshold)
            }
            out += releaseDeadBackups(primary: node)
        case .failingOver(let old, let target, let leaseEnds):
            // Confirmed by the run of the server that served: a restarted one (another
            // incarnation, an empty memory) confirms nothing of what the old one held, unless
            // it came back on its journal (durable servers).
            let servedBy = serving?.incarnation
            let confirmed =
                old.flatMap { old in
                    members[old]?.report.map { report in
                        report.role != .primary && report.epoch >= epoch
                            && (servedBy == nil || report.incarnation == servedBy || keptDisks.contains(old))
                    }
                } ?? false
            guard now >= leaseEnds || confirmed || bug == .promoteWithoutFencing else {
                return note("waiting for the lease of \(old?.description ?? "the former primary") to run out")
            }
            guard let candidate = chooseCandidate(old: old, target: target, stepDownConfirmed: confirmed, out: &out)
            else { return out }
            if candidate == old {
                // The old primary again: in an epoch of its own, so that a report it sent while
                // stepped down in the failover's epoch cannot read as a new step-down.
                epoch += 1
                out.append(.recordEpoch(epoch))
            }
            waitingReason = nil
            phase = .serving(candidate)
            lastRenewal = now
            syncSet = Array(Set(syncSet).union(holdingAll(of: old, confirmed: confirmed)).union(dormant))
                .filter { $0 != candidate }
                .sorted()
            released = []
            dormant = []
            let start = members[candidate]?.report?.position ?? .start
            var complete: [NodeID: UInt64] = [:]
            for node in syncSet + [candidate] {
                if let incarnation = members[node]?.report?.incarnation { complete[node] = incarnation }
            }
            if let old, let before = serving, let incarnation = before.incarnation {
                // The primary before: it held everything acknowledged when it was promoted and
                // everything it acknowledged since (unless it restarted: another incarnation).
                complete[old] = incarnation
            }
            if ungranted.count >= 64, let oldest = ungranted.keys.min() { ungranted[oldest] = nil }
            ungranted[epoch] = start
            serving = Serving(
                epoch: epoch, start: start, granted: false, incarnation: members[candidate]?.report?.incarnation,
                complete: complete)
            out.append(.promote(to: candidate, epoch: epoch, syncSet: syncSet, minimum: start))
        }
        return out
    }

    private mutating func beginFailover(
        from old: NodeID, target: NodeID?, now: Instant, mayReturn: Bool = true
    ) -> [Command] {
        // In a switchover the old primary is a candidate only if the target dies first.
        oldMayReturn = mayReturn
        let leaseEnds = (lastRenewal ?? now) + configuration.leaseWait
        epoch += 1
        phase = .failingOver(from: old, target: target, leaseEnds: leaseEnds)
        var out: [Command] = [.recordEpoch(epoch), .stepDown(to: old, epoch: epoch)]
        if target == nil { out.append(.fence(old, epoch: epoch)) }
        return out + evaluate(now: now)
    }

    private mutating func note(_ reason: String) -> [Command] {
        guard waitingReason != reason else { return [] }
        waitingReason = reason
        return [.waiting(reason: reason)]
    }

    /// The live servers (other than `old`) whose reported position holds the old primary's
    /// confirmed final one: they have everything it had.
    ///
    /// Also, when the old primary was never granted a non-empty sync set (so it acknowledged
    /// nothing of its own), those that followed it in its epoch (they hold everything it was
    /// promoted with) and those that held everything when it was promoted, unrestarted since.
    private func holdingAll(of old: NodeID?, confirmed: Bool) -> [NodeID] {
        guard let old else { return [] }
        var complete: [NodeID] = []
        if confirmed, let final = members[old]?.report?.position {
            complete += configuration.servers.filter { node in
                (members[node]?.report?.position).map { $0.index >= final.index } == true
            }
        }
        if let serving, !serving.granted, configuration.minimumSyncBackups > 0 {
            complete += configuration.servers.filter { node in
                guard node != old, let report = members[node]?.report else { return false }
                // A follower of that primary: one that merely reached its reported starting
                // point may lack entries it held but had not reported yet.
                // A follower of any primary promoted since the last that may have acknowledged
                // (none of them acknowledged anything): it holds what that one was promoted
                // with, which held every acknowledged operation. So does a server whose log
                // reaches that starting point in the same epoch.
                for (promotedIn, start) in ungranted
                where (report.position.epoch == promotedIn || report.position.epoch == start.epoch)
                    && report.position.index >= start.index
                {
                    return true
                }
                // Or one that held everything when it was promoted, in the same incarnation.
                return serving.complete[node] == report.incarnation
            }
        }
        return Array(Set(complete)).sorted()
    }

    /// The backup to promote, or nil (with the reason noted) when none may be yet.
    ///
    /// Synchronous mode: a backup of the sync set (it holds every acknowledged operation), or
    /// one that holds the old primary's confirmed final position; on a fresh start (no epoch
    /// handed out before) any; the same in asynchronous mode with a minimum sync set. Asynchronous
    /// mode: the most up-to-date of those (of all, without a minimum sync set), within the lag limit.
    /// A switchover's target, once the old primary confirmed, only when it holds its final position.
    private mutating func chooseCandidate(
        old: NodeID?, target: NodeID?, stepDownConfirmed: Bool, out: inout [Command]
    ) -> NodeID? {
        // A failed primary that confirmed its step-down in the new epoch holds everything it
        // had: after a false suspicion it is promoted again rather than nobody.
        let eligible = configuration.servers.filter { node in
            (node != old || (stepDownConfirmed && oldMayReturn)) && members[node]?.alive == true
                && members[node]?.report != nil
        }
        guard !eligible.isEmpty else {
            out += note("no live backup has reported its position")
            return nil
        }
        if old == nil, epoch > 1,
            let silent = configuration.servers.first(where: { members[$0]?.report == nil })
        {
            // After a controller restart with no primary found, the newest data may be on a
            // server not yet heard from.
            out += note("waiting for \(silent) to report before choosing a primary")
            return nil
        }
        let complete = holdingAll(of: old, confirmed: stepDownConfirmed)
        var pool = eligible
        // A switchover's target, once the old primary confirmed its step-down, if it holds what
        // the old one confirmed; otherwise the pool below decides (it keeps the target when the
        // target holds every acknowledged operation: what it lacks was never acknowledged, and
        // the stepped-down primary, which answers no catch-up, cannot give it).
        if let target, stepDownConfirmed, members[target]?.alive == true, complete.contains(target) {
            return target
        }
        if configuration.keepsSyncSet {
            pool = eligible.filter { syncSet.contains($0) || complete.contains($0) || dormant.contains($0) }
            if pool.isEmpty, !mayHaveAcknowledged { pool = eligible }
            guard !pool.isEmpty else {
                out += note("no live backup of the sync set \(syncSet.map(\.name)) to promote")
                return nil
            }
        }
        let best = pool.max { lhs, rhs in
            let left = members[lhs]?.report?.position ?? .start
            let right = members[rhs]?.report?.position ?? .start
            return left != right ? left < right : lhs > rhs
        }
        guard var chosen = best else { return nil }
        if let target, pool.contains(target) { chosen = target }
        let position = members[chosen]?.report?.position ?? .start
        let newest = members.values.compactMap { $0.report?.position }.max() ?? .start
        if case .asynchronous = configuration.mode, newest.index > position.index,
            newest.index - position.index > configuration.promotionLagLimit
        {
            out += note(
                "backup \(chosen) at \(position) trails \(newest) by more than \(configuration.promotionLagLimit) entries"
            )
            return nil
        }
        return chosen
    }

    /// With a sync set (``Configuration/keepsSyncSet``): a backup of it that the heartbeat
    /// detector holds dead leaves it here first (so it is never promoted as holding everything), then the primary is told
    /// it may stop waiting for it.
    private mutating func releaseDeadBackups(primary: NodeID) -> [Command] {
        guard configuration.keepsSyncSet else { return [] }
        var out: [Command] = []
        let dead = syncSet.filter { members[$0]?.alive != true }
        for node in dead {
            released.insert(node)
            out.append(.releaseBackup(to: primary, epoch: epoch, backup: node))
        }
        syncSet.removeAll { released.contains($0) }
        if syncSet.isEmpty, configuration.minimumSyncBackups > 0 {
            // With nobody left to count, the primary can acknowledge nothing more: what it
            // acknowledged is on the released ones, which stay candidates until someone rejoins.
            dormant.formUnion(dead)
        }
        return out
    }
}
