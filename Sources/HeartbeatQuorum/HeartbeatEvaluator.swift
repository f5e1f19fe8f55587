public import FaultToleranceCore

/// The redundancy device's decision logic: counts the paths on which the partner's
/// heartbeats arrive, compares the count with a threshold, and decides the device's state.
/// A pure state machine in the style of swift-cluster-membership's `SWIM.Instance`: the
/// caller feeds heartbeats, ticks and self-check results with the current time and performs
/// the returned ``Directive``s. It never reads a clock.
///
/// ## Rules
///
/// Evaluated in this order after every event:
///
/// 1. **Own side isolated.** Local self-checks fail: go to not-standby with an alarm, from
///    any state. An isolated side never becomes operating.
/// 2. **Both operating.** Operating, the partner reachable and reporting operating: yield
///    to standby if the partner has the higher priority, or if the partner has heard this
///    side on no path for a whole detection window (it cannot yield to what it cannot hear).
/// 3. **Enough paths.** At least `threshold` healthy paths: standby when the partner is
///    operating; when neither side operates, the higher priority becomes operating.
/// 4. **Every path silent** (none healthy, none heard within its detector's window) while
///    this side is healthy: if at least `threshold` paths carried the partner's last
///    heartbeats (their last arrivals lie within the simultaneity window), or nothing was ever
///    heard since start, the partner is gone —
///    operating (after a witness quorum agrees, when witnesses are configured). Paths that
///    failed one by one read as failing links, not a dead partner: not-standby with an alarm;
///    witnesses, if configured, can still confirm the partner is gone.
/// 5. **Some paths, fewer than the threshold** for longer than the simultaneity window. Not
///    operating: not-standby with an alarm (links too degraded to judge). Operating: stay
///    operating.
///
/// Hysteresis: a failed path counts healthy again only after `riseCount` consecutive
/// heartbeats, and counts failed only after `fallCount` failed evaluations. Transitions
/// between standby and not-standby wait `minimumDwell` in the current state and are limited
/// to `maximumFlaps` per `dampingWindow` (flap damping). Takeovers and the safety rules 1
/// and 2 are never delayed by damping, so the detection bound holds.
public struct HeartbeatEvaluator: Sendable {
    /// What the caller must do.
    public enum Directive: Sendable, Hashable {
        /// The state changed.
        case transition(Transition)
        /// Raise an alarm: the device left standby for not-standby.
        case alarm(reason: TransitionReason, evidence: Evidence)
        /// Ask every witness whether it reaches the partner, tagging the query with `round`.
        case queryWitnesses(round: UInt64)
        /// Call ``HeartbeatEvaluator/tick(at:)`` after this long.
        case scheduleTick(after: Duration)
    }

    private struct PathTracker: Sendable {
        var detector: FailureDetector
        var healthy = false
        var consecutiveHeartbeats = 0
        var consecutiveFailures = 0
    }

    private struct WitnessRound: Sendable {
        var round: UInt64
        var started: Instant
        var votes: [NodeID: Bool] = [:]
    }

    /// The configuration.
    public let configuration: HeartbeatConfiguration
    /// The current state.
    public private(set) var state: RedundancyState = .initializing
    /// When the current state was entered.
    public private(set) var stateSince: Instant
    private let started: Instant
    private let startupWindow: Duration
    private let pathOrder: [PathID]
    private let pathIndex: [PathID: Int]
    /// Trackers in ``pathOrder``: an array, so evaluation walks contiguous memory and hashes
    /// no path names.
    private var paths: [PathTracker]
    private var selfHealthy = true
    private var partner: Heartbeat?
    private var partnerDeafSince: Instant?
    private var belowThresholdSince: Instant?
    private var everHeard = false
    private var flaps: [Instant] = []
    private var witnessRound: WitnessRound?
    private var nextWitnessRound: UInt64 = 1
    private var lastWitnessRoundEnded: Instant?
    private var lastWitnessVotes: [NodeID: Bool] = [:]
    package var plantedBug: HeartbeatBug = .none

    /// Creates an evaluator in the initializing state at `now`.
    public init(configuration: HeartbeatConfiguration, at now: Instant) {
        self.configuration = configuration
        self.started = now
        self.stateSince = now
        self.pathOrder = configuration.paths.keys.sorted()
        self.pathIndex = Dictionary(uniqueKeysWithValues: pathOrder.enumerated().map { ($1, $0) })
        self.startupWindow = configuration.paths.values.map(\.worstCaseSilence).max() ?? .zero
        self.paths = pathOrder.map { path in
            PathTracker(
                detector: FailureDetector(
                    configuration: configuration.paths[path] ?? .fixedTimeout(configuration.heartbeatInterval * 2),
                    expectedInterval: configuration.heartbeatInterval))
        }
    }

    /// The first directives: schedules the first tick.
    public func start() -> [Directive] {
        [.scheduleTick(after: configuration.tickInterval)]
    }

    /// Paths currently counted healthy.
    public var healthyCount: Int {
        var count = 0
        for tracker in paths where tracker.healthy { count += 1 }
        return count
    }

    /// On how many paths the partner was heard within each path's detection window, as of
    /// `now` (reported in this side's heartbeats, so the partner knows it is heard).
    public func pathsHearingPartner(at now: Instant) -> UInt8 {
        var count = 0
        for tracker in paths
        where tracker.detector.lastArrival != nil && !tracker.detector.hasFailed(at: now, since: started) {
            count += 1
        }
        return UInt8(clamping: count)
    }

    /// A heartbeat arrived on `path`.
    public mutating func heartbeatReceived(_ heartbeat: Heartbeat, on path: PathID, at now: Instant) -> [Directive] {
        guard let index = pathIndex[path] else { return [] }
        paths[index].detector.heartbeat(at: now)
        paths[index].consecutiveHeartbeats += 1
        paths[index].consecutiveFailures = 0
        if !paths[index].healthy && paths[index].consecutiveHeartbeats >= configuration.riseCount {
            paths[index].healthy = true
        }
        partner = heartbeat
        if heartbeat.pathsHearingReceiver > 0 {
            partnerDeafSince = nil
        } else if partnerDeafSince == nil {
            partnerDeafSince = now
        }
        everHeard = true
        return evaluate(at: now)
    }

    /// Time passed: re-judge every path, expire witness rounds, evaluate; schedules the next
    /// tick.
    public mutating func tick(at now: Instant) -> [Directive] {
        for index in paths.indices where paths[index].detector.hasFailed(at: now, since: started) {
            paths[index].consecutiveFailures += 1
            paths[index].consecutiveHeartbeats = 0
            if paths[index].healthy && paths[index].consecutiveFailures >= configuration.fallCount {
                paths[index].healthy = false
            }
        }
        if let round = witnessRound, now - round.started >= configuration.witnessTimeout {
            lastWitnessVotes = round.votes
            witnessRound = nil
            lastWitnessRoundEnded = now
        }
        return evaluate(at: now) + [.scheduleTick(after: configuration.tickInterval)]
    }

    /// The local self-checks (own NIC, own gateway) passed or failed.
    public mutating func selfCheck(healthy: Bool, at now: Instant) -> [Directive] {
        selfHealthy = healthy
        return evaluate(at: now)
    }

    /// A witness answered round `round`.
    public mutating func witnessVote(from witness: NodeID, round: UInt64, partnerReachable: Bool, at now: Instant)
        -> [Directive]
    {
        guard var current = witnessRound, current.round == round, configuration.witnesses.contains(witness) else {
            return []
        }
        current.votes[witness] = partnerReachable
        witnessRound = current
        return evaluate(at: now)
    }

    /// The evidence as of `now`: every path's health, phi and silence.
    public func evidence(at now: Instant) -> Evidence {
        Evidence(
            paths: zip(pathOrder, paths).map { path, tracker in
                PathEvidence(
                    path: path, healthy: tracker.healthy, phi: tracker.detector.phi(at: now),
                    silence: tracker.detector.silence(at: now), detector: tracker.detector.configuration)
            },
            healthyCount: healthyCount, threshold: configuration.threshold, selfHealthy: selfHealthy,
            partnerState: partner?.state, witnessVotes: witnessRound?.votes ?? lastWitnessVotes)
    }

    // MARK: - Rules

    /// Whether at least `threshold` paths carried the partner's last heartbeats: their last
    /// arrivals lie within the simultaneity window of the latest one. Judged from the arrival
    /// times themselves, not from when evaluations happened to run, so a slow or starved
    /// caller cannot turn a dead partner into "links failing one by one", or the reverse.
    private var pathsFellSilentTogether: Bool {
        let arrivals = paths.compactMap(\.detector.lastArrival)
        guard let latest = arrivals.max() else { return false }
        let together = arrivals.filter { latest - $0 <= configuration.simultaneityWindow }.count
        return together >= configuration.threshold
    }

    /// Whether any path has heard the partner recently enough that its detector has not
    /// declared failure.
    private func partnerReachable(at now: Instant) -> Bool {
        for tracker in paths
        where tracker.detector.lastArrival != nil && !tracker.detector.hasFailed(at: now, since: started) {
            return true
        }
        return false
    }

    private mutating func evaluate(at now: Instant) -> [Directive] {
        let count = healthyCount
        let reachable = partnerReachable(at: now)
        if count > 0 && count < configuration.threshold {
            belowThresholdSince = belowThresholdSince ?? now
        } else {
            belowThresholdSince = nil
        }
        let startingUp = state == .initializing && now - started < startupWindow

        // Rule 1: an isolated side never operates.
        if !selfHealthy {
            return move(to: .notStandby, reason: .ownSideIsolated, at: now, damped: false)
        }
        // Rule 2: both operating.
        if state == .operating {
            // A partner that has not heard this side for a whole detection window cannot
            // yield to it, so this side must, whatever the priorities.
            let partnerDeaf = partnerDeafSince.map { now - $0 >= startupWindow } ?? false
            if reachable, let partner, partner.state == .operating,
                partner.priority > configuration.priority || partnerDeaf
            {
                return move(to: .standby, reason: .yieldedToPartner, at: now, damped: false)
            }
            return []
        }
        if plantedBug == .takeOverBelowThreshold && count < configuration.threshold && everHeard {
            return move(to: .operating, reason: .partnerGone, at: now, damped: false)
        }
        // Rule 3: enough healthy paths.
        if count >= configuration.threshold {
            // The partner is heard again: any witness round or its votes are stale.
            witnessRound = nil
            lastWitnessVotes = [:]
            if let partner, partner.state != .operating, configuration.priority > partner.priority {
                return move(to: .operating, reason: .electedByPriority, at: now, damped: false)
            }
            return move(to: .standby, reason: .partnerHealthy, at: now, damped: state == .notStandby)
        }
        // While starting up, paths are still rising: wait for the threshold or the window.
        if startingUp { return [] }
        // Rule 4: every path silent.
        if count == 0 && !reachable {
            let allAtOnce = !everHeard || pathsFellSilentTogether
            let takeoverReason: TransitionReason = everHeard ? .partnerGone : .noPartnerAtStartup
            if configuration.witnesses.isEmpty {
                if allAtOnce || state == .operating {
                    return move(to: .operating, reason: takeoverReason, at: now, damped: false)
                }
                return move(to: .notStandby, reason: .linksDegraded, at: now, damped: state == .standby)
            }
            // Witnesses decide; meanwhile a gradual loss is reported as degraded links.
            var directives: [Directive] = []
            if let round = witnessRound {
                let unreachable = round.votes.values.filter { !$0 }.count
                let reaching = round.votes.values.filter { $0 }.count
                let quorum = configuration.witnesses.count / 2 + 1
                if unreachable >= quorum {
                    lastWitnessVotes = round.votes
                    witnessRound = nil
                    lastWitnessRoundEnded = now
                    return move(to: .operating, reason: .witnessesConfirmPartnerGone, at: now, damped: false)
                }
                if reaching >= quorum {
                    lastWitnessVotes = round.votes
                    witnessRound = nil
                    lastWitnessRoundEnded = now
                    return move(to: .notStandby, reason: .witnessesReachPartner, at: now, damped: false)
                }
            } else if allAtOnce || state == .notStandby || state == .initializing,
                lastWitnessRoundEnded.map({ now - $0 >= configuration.witnessTimeout }) ?? true
            {
                // Rounds are spaced by the witness timeout so a standing partition does not
                // flood the witnesses.
                witnessRound = WitnessRound(round: nextWitnessRound, started: now)
                directives.append(.queryWitnesses(round: nextWitnessRound))
                nextWitnessRound += 1
            }
            if !allAtOnce {
                directives += move(to: .notStandby, reason: .linksDegraded, at: now, damped: state == .standby)
            }
            return directives
        }
        // Rule 5: some paths, fewer than the threshold (or paths heard but not yet risen).
        // A partner that dies takes its paths down within the simultaneity window of each
        // other; wait that long before calling it degraded links, so a death does not flash
        // a degraded-links alarm on the way to the takeover.
        if let since = belowThresholdSince, now - since < configuration.simultaneityWindow { return [] }
        if count > 0 || state == .initializing {
            return move(to: .notStandby, reason: .linksDegraded, at: now, damped: state == .standby)
        }
        return []
    }

    /// Moves to `target` unless already there or, for a damped transition, dwell or flap
    /// damping forbid it now.
    private mutating func move(to target: RedundancyState, reason: TransitionReason, at now: Instant, damped: Bool)
        -> [Directive]
    {
        guard target != state else { return [] }
        if damped {
            guard now - stateSince >= configuration.minimumDwell else { return [] }
            flaps.removeAll { now - $0 >= configuration.dampingWindow }
            guard flaps.count < configuration.maximumFlaps else { return [] }
            flaps.append(now)
        }
        // The rules' own guarantees, checked where a state is entered: a side whose self-check
        // failed never operates, and nothing goes back to initializing.
        RuntimeInvariants.check(
            target != .operating || selfHealthy, "\(state) -> operating (\(reason)) with the self-check failing")
        RuntimeInvariants.check(target != .initializing, "\(state) -> initializing (\(reason))")
        let transition = Transition(from: state, to: target, at: now, reason: reason, evidence: evidence(at: now))
        state = target
        stateSince = now
        var directives: [Directive] = [.transition(transition)]
        if target == .notStandby { directives.append(.alarm(reason: reason, evidence: transition.evidence)) }
        return directives
    }
}

/// Deliberately wrong rules, planted to show the simulation catches them.
public enum HeartbeatBug: String, Sendable, Hashable, CaseIterable, Codable {
    /// The correct rules.
    case none
    /// Take over as soon as fewer paths than the threshold are healthy, without waiting for
    /// every path to fall silent (the classic split-brain mistake).
    case takeOverBelowThreshold = "take-over-below-threshold"
}
