public import FaultToleranceCore

/// A group member's side of the group checkpoint protocol: a pure state machine (no clock, no
/// I/O) that ``GroupMemberService`` (or the simulation) drives, answering with ``Effect``s.
///
/// On `prepare` it asks for a capture (``Effect/capture(epoch:full:)``); the runtime takes the
/// checkpoint with ``Checkpointer/prepare(epoch:full:)`` and reports back. A durable capture is
/// announced to the coordinator; then the member waits for the decision, asking the epoch's
/// fate every ``fateInterval`` (a lost `commit` or `abort` costs one question, not a stuck
/// member). A decision becomes ``Effect/decide(_:commit:)``: the runtime records it in the
/// store. An `abort` that arrives while the capture is still running is remembered, and the
/// capture is discarded when it ends.
///
/// Epochs at or below the newest one seen are stale (a delayed or duplicated `prepare`) and
/// ignored. A newer epoch's `prepare` settles a checkpoint still undecided from an earlier one:
/// the coordinator only begins an epoch once the last is decided, and the `prepare` carries its
/// last committed epoch, which is the old one exactly when that committed. So a member is never
/// in doubt about more than one epoch.
public struct GroupMember: Sendable {
    /// Something the runtime must do, in the order given.
    public enum Effect: Sendable, Hashable {
        /// Take this member's checkpoint for `epoch` (prepared, not committed), then call
        /// ``captured(epoch:checkpoint:now:)`` or ``captureFailed(epoch:reason:now:)``.
        case capture(epoch: UInt64, full: Bool)
        /// Record the fate of prepared checkpoint `checkpoint` durably (the store's
        /// ``CheckpointStore/decide(_:commit:)``).
        case decide(CheckpointID, commit: Bool)
        /// Send the message to the coordinator.
        case send(GroupMessage)
        /// Call ``tick(now:)`` at this instant, or never (`nil`).
        case wake(at: Instant?)
    }

    /// Where the member stands.
    public enum Phase: Sendable, Hashable {
        /// No epoch in progress here.
        case idle
        /// Capturing for `epoch`; `aborted` once an `abort` for it arrived.
        case capturing(epoch: UInt64, aborted: Bool)
        /// A durable checkpoint for `epoch` waits for the epoch's fate.
        case prepared(epoch: UInt64, checkpoint: CheckpointID)
    }

    /// How long to wait for a decision before asking the coordinator (again).
    public let fateInterval: Duration
    /// The newest epoch seen in a `prepare` (or held in the store).
    public private(set) var highestEpoch: UInt64
    /// Where the member stands.
    public private(set) var phase: Phase
    /// When to ask the coordinator about the prepared checkpoint's epoch next.
    public private(set) var nextQuestion: Instant?
    /// Set by the simulation only: plant a bug.
    package var bug: GroupCheckpointBug?

    /// A member whose store's newest epoch is `highestEpoch`, holding `inDoubt` (a prepared
    /// checkpoint found in the store at start, with its epoch) if any; `fateInterval` must be
    /// positive.
    public init(
        fateInterval: Duration, highestEpoch: UInt64 = 0, inDoubt: (epoch: UInt64, checkpoint: CheckpointID)? = nil
    ) throws(CheckpointError) {
        guard fateInterval > .zero else {
            throw CheckpointError(.invalidConfiguration, detail: "fate interval \(fateInterval) must be positive")
        }
        self.fateInterval = fateInterval
        self.highestEpoch = max(highestEpoch, inDoubt?.epoch ?? 0)
        self.phase = inDoubt.map { .prepared(epoch: $0.epoch, checkpoint: $0.checkpoint) } ?? .idle
    }

    /// Whether no checkpoint here waits for its epoch's fate.
    public var isSettled: Bool {
        if case .prepared = phase { return false }
        return true
    }

    /// What to do at start: with a checkpoint in doubt, announce it and ask its fate (and keep
    /// asking).
    public mutating func start(now: Instant) -> [Effect] {
        guard case .prepared(let epoch, let checkpoint) = phase else { return [] }
        if bug == .forgetInDoubt {
            // Planted: treat the undecided checkpoint as aborted without asking.
            phase = .idle
            return [.decide(checkpoint, commit: false)]
        }
        return ask(epoch: epoch, checkpoint: checkpoint, now: now)
    }

    /// Tells the coordinator (again) that the checkpoint is durable, and asks the epoch's fate:
    /// a coordinator still waiting counts it, one that decided answers.
    private mutating func ask(epoch: UInt64, checkpoint: CheckpointID, now: Instant) -> [Effect] {
        let next = now + fateInterval
        nextQuestion = next
        return [.send(.prepared(epoch: epoch, checkpoint: checkpoint)), .send(.fate(epoch: epoch)), .wake(at: next)]
    }

    /// Handles a message from the coordinator (the runtime checks the sender and the group).
    public mutating func receive(_ message: GroupMessage, now: Instant) -> [Effect] {
        switch message {
        case .prepare(let epoch, let full, let lastCommitted):
            guard epoch > highestEpoch else { return [] }
            highestEpoch = epoch
            var settled: [Effect] = []
            if case .prepared(let pending, let checkpoint) = phase {
                // Decided before this epoch began: committed exactly when it is the last
                // committed one (no later epoch could commit without this member's checkpoint).
                settled = [.decide(checkpoint, commit: pending == lastCommitted), .wake(at: nil)]
                phase = .idle
                nextQuestion = nil
            }
            switch phase {
            case .idle:
                phase = .capturing(epoch: epoch, aborted: false)
                return settled + [.capture(epoch: epoch, full: full)]
            case .capturing(let running, _):
                // The coordinator moved on, so `running` was decided (aborted: it had not heard
                // from this member); this capture's end discards it.
                phase = .capturing(epoch: running, aborted: true)
                return [.send(.failed(epoch: epoch, reason: "still capturing epoch \(running)"))]
            case .prepared:
                // Settled just above.
                return settled
            }
        case .commit(let epoch), .abort(let epoch):
            let commit = if case .commit = message { true } else { false }
            switch phase {
            case .prepared(let pending, let checkpoint) where pending == epoch:
                phase = .idle
                nextQuestion = nil
                return [.decide(checkpoint, commit: commit), .wake(at: nil)]
            case .capturing(let running, _) where running == epoch && !commit:
                phase = .capturing(epoch: running, aborted: true)
                return []
            default:
                return []
            }
        case .prepared, .failed, .fate, .marker:
            return []
        }
    }

    /// The capture for `epoch` is durable as `checkpoint`.
    public mutating func captured(epoch: UInt64, checkpoint: CheckpointID, now: Instant) -> [Effect] {
        guard case .capturing(let running, let aborted) = phase, running == epoch else {
            // Not the capture this machine asked for: it cannot stay undecided.
            return [.decide(checkpoint, commit: false)]
        }
        if aborted {
            phase = .idle
            return [.decide(checkpoint, commit: false)]
        }
        phase = .prepared(epoch: epoch, checkpoint: checkpoint)
        nextQuestion = now + fateInterval
        return [.send(.prepared(epoch: epoch, checkpoint: checkpoint)), .wake(at: nextQuestion)]
    }

    /// The capture for `epoch` failed (nothing durable is left of it).
    public mutating func captureFailed(epoch: UInt64, reason: String, now: Instant) -> [Effect] {
        guard case .capturing(let running, let aborted) = phase, running == epoch else { return [] }
        phase = .idle
        return aborted ? [] : [.send(.failed(epoch: epoch, reason: reason))]
    }

    /// Handles time passing: a decision missing for ``fateInterval`` is asked for again.
    public mutating func tick(now: Instant) -> [Effect] {
        guard case .prepared(let epoch, let checkpoint) = phase, let due = nextQuestion, now >= due else { return [] }
        return ask(epoch: epoch, checkpoint: checkpoint, now: now)
    }
}

/// Bugs the group checkpoint simulation plants in the shipped protocol code, to show that it
/// catches them.
public enum GroupCheckpointBug: String, Sendable, Hashable, CaseIterable, Codable {
    /// The coordinator commits once all members but one have prepared.
    case commitBeforeAllPrepared = "commit-before-all-prepared"
    /// A restarted member discards its undecided checkpoint without asking the coordinator.
    case forgetInDoubt = "forget-in-doubt"
    /// Members neither hold their sends nor hold back their peers' messages at a cut: a
    /// message sent after one member's cut can be received before another's.
    case deliverAcrossTheCut = "deliver-across-the-cut"
}
