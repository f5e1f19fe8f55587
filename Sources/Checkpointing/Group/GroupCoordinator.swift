public import FaultToleranceCore

/// The group checkpoint coordinator's logic: a pure state machine (no clock, no I/O) that a
/// runtime (``GroupCoordinatorService``) or the simulation drives with events and the current
/// time, and that answers with ``Effect``s to perform in order.
///
/// One epoch at a time, two-phase commit with presumed abort:
/// 1. ``start(now:full:)`` records the epoch as begun (durably: ``Effect/persist(_:)``, before
///    anything is sent, so an epoch number is never used twice) and sends `prepare` to every
///    member.
/// 2. Each member pauses its writers for its cut, lets them go, copies while they run and
///    answers `prepared` once its checkpoint is durable (still uncommitted).
/// 3. When every member has answered, the coordinator records the epoch as committed (durably,
///    before telling anyone) and sends `commit`; members mark their checkpoints committed.
///
/// A `failed` answer, a question about the epoch in progress from a member whose checkpoint it
/// has not counted, or the epoch's deadline passing aborts it: `abort` goes to every member, who discard their
/// prepared checkpoints. Nothing is recorded for an abort: an epoch is committed exactly when
/// its commit is recorded, so an epoch begun and not committed is aborted, also across a
/// coordinator crash.
///
/// The durable ``Record`` is two numbers, because a member can only ever be in doubt about
/// the last committed epoch or a later one: an epoch commits only with every member's
/// `prepared`, and a member holding an undecided checkpoint takes no other until it learns its
/// fate. So `fate(e)` is answered `commit` exactly when `e` is the last committed epoch.
public struct GroupCoordinator: Sendable {
    /// What the coordinator keeps durably.
    public struct Record: Sendable, Hashable {
        /// The newest epoch begun (0: none).
        public var lastBegun: UInt64
        /// The newest epoch committed (0: none); at most ``lastBegun``.
        public var lastCommitted: UInt64

        /// Creates a record.
        public init(lastBegun: UInt64 = 0, lastCommitted: UInt64 = 0) {
            self.lastBegun = lastBegun
            self.lastCommitted = lastCommitted
        }
    }

    /// Something the runtime must do, in the order given.
    public enum Effect: Sendable, Hashable {
        /// Write the record durably before performing the effects after this one.
        case persist(Record)
        /// Send the message to each of the nodes.
        case send(GroupMessage, to: [NodeID])
        /// Call ``tick(now:)`` at this instant (replaces any earlier deadline), or never (`nil`).
        case wake(at: Instant?)
        /// An epoch ended.
        case ended(epoch: UInt64, Outcome)
    }

    /// How an epoch ended.
    public enum Outcome: Sendable, Hashable {
        /// Every member's checkpoint is committed, with these checkpoint ids.
        case committed([NodeID: CheckpointID])
        /// Aborted, with why.
        case aborted(String)
    }

    /// Where the epoch in progress stands.
    public struct Progress: Sendable, Hashable {
        /// The epoch.
        public var epoch: UInt64
        /// The members that reported their checkpoints durable, with their ids.
        public var prepared: [NodeID: CheckpointID]
        /// When the epoch aborts unless every member has reported.
        public var deadline: Instant
    }

    /// The group's members.
    public let members: [NodeID]
    /// How long an epoch may take from `prepare` to the last `prepared`.
    public let epochTimeout: Duration
    /// The durable record as of the last ``Effect/persist(_:)``.
    public private(set) var record: Record
    /// The epoch in progress, if any.
    public private(set) var progress: Progress?
    /// Set by the simulation only: plant a bug.
    package var bug: GroupCheckpointBug?

    /// A coordinator for `members` (1 to 256, no duplicates) that restarts from `record` (a
    /// fresh group: the default); `epochTimeout` must be positive.
    public init(
        members: [NodeID], epochTimeout: Duration, record: Record = Record()
    ) throws(CheckpointError) {
        guard (1...256).contains(members.count), Set(members).count == members.count else {
            throw CheckpointError(.invalidConfiguration, detail: "1 to 256 distinct members, got \(members)")
        }
        guard epochTimeout > .zero else {
            throw CheckpointError(.invalidConfiguration, detail: "epoch timeout \(epochTimeout) must be positive")
        }
        guard record.lastCommitted <= record.lastBegun else {
            throw CheckpointError(
                .damaged, detail: "coordinator record: committed \(record.lastCommitted) > begun \(record.lastBegun)")
        }
        self.members = members
        self.epochTimeout = epochTimeout
        self.record = record
    }

    /// What to do after a restart: an epoch begun and not committed is aborted, and members
    /// still holding its checkpoints are told.
    public func recover() -> [Effect] {
        guard record.lastBegun > record.lastCommitted else { return [] }
        return [
            .send(.abort(epoch: record.lastBegun), to: members),
            .ended(epoch: record.lastBegun, .aborted("the coordinator restarted before deciding")),
        ]
    }

    /// Begins the next epoch, or does nothing (returns `[]`) while one is in progress.
    public mutating func start(now: Instant, full: Bool = false) -> [Effect] {
        guard progress == nil, record.lastBegun < UInt64.max else { return [] }
        record.lastBegun += 1
        let epoch = record.lastBegun
        let deadline = now + epochTimeout
        progress = Progress(epoch: epoch, prepared: [:], deadline: deadline)
        return [
            .persist(record),
            .send(.prepare(epoch: epoch, full: full, lastCommitted: record.lastCommitted), to: members),
            .wake(at: deadline),
        ]
    }

    /// Handles a message from `sender`; messages from non-members, and about other epochs
    /// than the one in progress (late, duplicated), change nothing.
    public mutating func receive(_ message: GroupMessage, from sender: NodeID, now: Instant) -> [Effect] {
        guard members.contains(sender) else { return [] }
        switch message {
        case .prepared(let epoch, let checkpoint):
            guard var current = progress, current.epoch == epoch else { return [] }
            current.prepared[sender] = checkpoint
            progress = current
            let needed = bug == .commitBeforeAllPrepared ? max(1, members.count - 1) : members.count
            guard current.prepared.count >= needed else { return [] }
            record.lastCommitted = epoch
            progress = nil
            return [
                .persist(record), .send(.commit(epoch: epoch), to: members), .wake(at: nil),
                .ended(epoch: epoch, .committed(current.prepared)),
            ]
        case .failed(let epoch, let reason):
            guard progress?.epoch == epoch else { return [] }
            return abort(because: "\(sender) failed: \(reason)")
        case .fate(let epoch):
            if let current = progress, current.epoch == epoch {
                // Undecided. A member whose checkpoint was counted waits; one whose `prepared`
                // never arrived (it re-sends it just before asking) is taken as lost.
                if current.prepared[sender] != nil { return [] }
                return abort(because: "\(sender) asked its fate without a prepared checkpoint")
            }
            let committed = epoch == record.lastCommitted && epoch != 0
            return [.send(committed ? .commit(epoch: epoch) : .abort(epoch: epoch), to: [sender])]
        case .prepare, .commit, .abort, .marker:
            return []
        }
    }

    /// Handles time passing: past its deadline, the epoch in progress aborts.
    public mutating func tick(now: Instant) -> [Effect] {
        guard let current = progress, now >= current.deadline else { return [] }
        let missing = members.filter { current.prepared[$0] == nil }
        return abort(because: "no prepared from \(missing.map(\.description).joined(separator: ", ")) in time")
    }

    private mutating func abort(because reason: String) -> [Effect] {
        guard let current = progress else { return [] }
        progress = nil
        return [
            .send(.abort(epoch: current.epoch), to: members), .wake(at: nil),
            .ended(epoch: current.epoch, .aborted(reason)),
        ]
    }
}
