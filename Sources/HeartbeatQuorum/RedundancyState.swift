public import FaultToleranceCore

/// Where a redundancy device stands.
public enum RedundancyState: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Just started; has not yet heard enough to judge.
    case initializing = 0
    /// The partner is operating and healthy; ready to take over.
    case standby = 1
    /// Serving: the partner is gone (or this side won the election).
    case operating = 2
    /// Redundancy released: the links are too degraded, or this side is isolated, to judge
    /// the partner safely. An alarm accompanies it.
    case notStandby = 3

    /// The state's name as the seed patent and the docs use it.
    public var description: String {
        switch self {
        case .initializing: "initializing"
        case .standby: "standby"
        case .operating: "operating"
        case .notStandby: "not-standby"
        }
    }
}

/// Why a transition happened.
public enum TransitionReason: String, Sendable, Hashable, Codable {
    /// Enough paths are healthy and the partner is operating.
    case partnerHealthy = "partner-healthy"
    /// Both sides healthy and neither operating: the higher priority operates.
    case electedByPriority = "elected-by-priority"
    /// Every path went silent at once while this side is healthy: the partner is gone.
    case partnerGone = "partner-gone"
    /// No partner was ever heard within the detection window after start.
    case noPartnerAtStartup = "no-partner-at-startup"
    /// Some paths but fewer than the threshold are healthy, or the paths failed one by one.
    case linksDegraded = "links-degraded"
    /// Local self-checks fail: this side may be the one cut off.
    case ownSideIsolated = "own-side-isolated"
    /// Both sides operating: this one yields (lower priority, or the partner cannot hear it).
    case yieldedToPartner = "yielded-to-partner"
    /// A witness quorum confirmed the partner is unreachable for them too.
    case witnessesConfirmPartnerGone = "witnesses-confirm-partner-gone"
    /// A witness quorum still reaches the partner: only the link between the two is cut.
    case witnessesReachPartner = "witnesses-reach-partner"
}

/// The state of one path when a decision was taken.
public struct PathEvidence: Sendable, Hashable {
    /// The path.
    public var path: PathID
    /// Whether it counted as healthy.
    public var healthy: Bool
    /// Phi at the time (0 for fixed-timeout detectors).
    public var phi: Double
    /// Time since its last heartbeat, `nil` if none ever arrived.
    public var silence: Duration?
    /// The detector and its thresholds.
    public var detector: DetectorConfiguration

    /// Creates path evidence (for fixtures and mocks).
    public init(path: PathID, healthy: Bool, phi: Double, silence: Duration?, detector: DetectorConfiguration) {
        self.path = path
        self.healthy = healthy
        self.phi = phi
        self.silence = silence
        self.detector = detector
    }
}

/// What a transition was based on.
public struct Evidence: Sendable, Hashable {
    /// Every path, in name order.
    public var paths: [PathEvidence]
    /// Healthy paths counted.
    public var healthyCount: Int
    /// The threshold compared against.
    public var threshold: Int
    /// Whether local self-checks passed.
    public var selfHealthy: Bool
    /// The partner's last reported state, if heard.
    public var partnerState: RedundancyState?
    /// Witness votes of the last round: `true` means the witness still reaches the partner.
    public var witnessVotes: [NodeID: Bool]

    /// The failed paths with their phi or silence, e.g. `p2 (phi 9.1, silent 45ms)`.
    public var failedPathsSummary: String {
        let failed = paths.filter { !$0.healthy }
        guard !failed.isEmpty else { return "none" }
        return failed.map { path in
            let silence = path.silence.map { "silent \($0.nanoseconds / 1_000_000)ms" } ?? "never heard"
            return "\(path.path) (phi \((path.phi * 10).rounded() / 10), \(silence))"
        }.joined(separator: ", ")
    }

    /// Creates evidence (for fixtures and mocks).
    public init(
        paths: [PathEvidence], healthyCount: Int, threshold: Int, selfHealthy: Bool, partnerState: RedundancyState?,
        witnessVotes: [NodeID: Bool]
    ) {
        self.paths = paths
        self.healthyCount = healthyCount
        self.threshold = threshold
        self.selfHealthy = selfHealthy
        self.partnerState = partnerState
        self.witnessVotes = witnessVotes
    }
}

/// A change of state, with its reason and evidence.
public struct Transition: Sendable, Hashable {
    /// The state left.
    public var from: RedundancyState
    /// The state entered.
    public var to: RedundancyState
    /// When.
    public var at: Instant
    /// Why.
    public var reason: TransitionReason
    /// What the decision saw.
    public var evidence: Evidence

    /// Creates a transition (for fixtures and mocks).
    public init(from: RedundancyState, to: RedundancyState, at: Instant, reason: TransitionReason, evidence: Evidence) {
        self.from = from
        self.to = to
        self.at = at
        self.reason = reason
        self.evidence = evidence
    }
}
