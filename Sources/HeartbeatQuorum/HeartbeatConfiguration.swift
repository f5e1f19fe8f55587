public import FaultToleranceCore

/// The settings of a ``HeartbeatEvaluator``, checked when built: a configuration that cannot
/// keep its promised detection bound, or asks for more healthy paths than it has, is
/// rejected with a ``ConfigurationError`` that says which setting and why.
public struct HeartbeatConfiguration: Sendable, Hashable {
    /// The paths heartbeats travel on, each with its detector.
    public let paths: [PathID: DetectorConfiguration]
    /// How often the partner sends a heartbeat on each path.
    public let heartbeatInterval: Duration
    /// Healthy paths needed to judge the partner: fewer (but not none) means the links are
    /// too degraded and the evaluator leaves standby with an alarm.
    public let threshold: Int
    /// Consecutive heartbeats a failed path needs before it counts as healthy again.
    public let riseCount: Int
    /// Consecutive failed evaluations before a path counts as failed.
    public let fallCount: Int
    /// How often the evaluator re-evaluates without a heartbeat (its tick).
    public let tickInterval: Duration
    /// The shortest time between a degradation transition (standby ⇄ not-standby) and the
    /// next one.
    public let minimumDwell: Duration
    /// At most this many degradation transitions in ``dampingWindow``; past it the state is
    /// held (flap damping).
    public let maximumFlaps: Int
    /// The window flap damping counts in.
    public let dampingWindow: Duration
    /// When the last heartbeats of at least `threshold` paths arrived within this span of each
    /// other before every path fell silent, the partner died; otherwise the links failed one
    /// by one.
    public let simultaneityWindow: Duration
    /// Witnesses asked before taking over (empty: none asked).
    public let witnesses: [NodeID]
    /// How long to wait for witness votes.
    public let witnessTimeout: Duration
    /// The promised bound from the partner's last heartbeat to operating.
    public let detectionBound: Duration
    /// This node's priority: when both sides claim operating, the lower one yields.
    public let priority: UInt8

    /// The worst case from the partner's last heartbeat to the takeover, derived from the
    /// settings: the slowest detector's cap, the fall count in ticks, one tick of
    /// granularity, and the witness round when witnesses are asked.
    public var worstCaseDetection: Duration {
        let slowest = paths.values.map(\.worstCaseSilence).max() ?? .zero
        let witnessRound = witnesses.isEmpty ? Duration.zero : witnessTimeout
        return slowest + tickInterval * (fallCount + 1) + witnessRound
    }

    /// Builds and validates a configuration.
    public init(
        paths: [PathID: DetectorConfiguration],
        heartbeatInterval: Duration,
        threshold: Int,
        detectionBound: Duration,
        riseCount: Int = 2,
        fallCount: Int = 1,
        tickInterval: Duration? = nil,
        minimumDwell: Duration? = nil,
        maximumFlaps: Int = 4,
        dampingWindow: Duration? = nil,
        simultaneityWindow: Duration? = nil,
        witnesses: [NodeID] = [],
        witnessTimeout: Duration? = nil,
        priority: UInt8 = 0
    ) throws(ConfigurationError) {
        self.paths = paths
        self.heartbeatInterval = heartbeatInterval
        self.threshold = threshold
        self.detectionBound = detectionBound
        self.riseCount = riseCount
        self.fallCount = fallCount
        self.tickInterval = tickInterval ?? heartbeatInterval / 2
        self.minimumDwell = minimumDwell ?? heartbeatInterval * 10
        self.maximumFlaps = maximumFlaps
        self.dampingWindow = dampingWindow ?? heartbeatInterval * 200
        self.simultaneityWindow = simultaneityWindow ?? heartbeatInterval * 5
        self.witnesses = witnesses
        self.witnessTimeout = witnessTimeout ?? heartbeatInterval * 5
        self.priority = priority
        try validate()
    }

    private func validate() throws(ConfigurationError) {
        func reject(_ setting: String, _ reason: String) -> ConfigurationError {
            ConfigurationError(setting: setting, reason: reason)
        }
        guard !paths.isEmpty else { throw reject("paths", "at least one path is needed") }
        guard heartbeatInterval > .zero else { throw reject("heartbeatInterval", "must be positive") }
        guard threshold >= 1, threshold <= paths.count else {
            throw reject("threshold", "\(threshold) healthy paths asked of \(paths.count) paths")
        }
        guard riseCount >= 1 else { throw reject("riseCount", "must be at least 1") }
        guard fallCount >= 1 else { throw reject("fallCount", "must be at least 1") }
        guard tickInterval > .zero, tickInterval <= heartbeatInterval else {
            throw reject("tickInterval", "must be positive and no longer than the heartbeat interval")
        }
        guard maximumFlaps >= 1 else { throw reject("maximumFlaps", "must be at least 1") }
        for (path, detector) in paths {
            switch detector {
            case .fixedTimeout(let timeout):
                guard timeout >= heartbeatInterval * 2 else {
                    throw reject(
                        "paths[\(path)]",
                        "timeout \(timeout) is under two heartbeat intervals: one late packet would fail the path")
                }
            case .phiAccrual(let phi, let deviation, let pause, let silence):
                guard phi > 0 else { throw reject("paths[\(path)]", "phi threshold must be positive") }
                guard deviation > .zero else { throw reject("paths[\(path)]", "minimum deviation must be positive") }
                guard pause >= .zero else { throw reject("paths[\(path)]", "acceptable pause must not be negative") }
                guard silence >= heartbeatInterval * 2 else {
                    throw reject("paths[\(path)]", "maximum silence \(silence) is under two heartbeat intervals")
                }
                guard silence >= pause + heartbeatInterval else {
                    throw reject(
                        "paths[\(path)]",
                        "maximum silence \(silence) cuts the acceptable pause \(pause) short: a tolerated pause would fail the path"
                    )
                }
            }
        }
        guard witnesses.isEmpty || witnessTimeout > .zero else { throw reject("witnessTimeout", "must be positive") }
        guard worstCaseDetection <= detectionBound else {
            throw reject(
                "detectionBound",
                "the settings detect a dead partner in up to \(worstCaseDetection), over the promised \(detectionBound)"
            )
        }
    }
}

/// A configuration that cannot work, naming the setting and the reason.
public struct ConfigurationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The offending setting.
    public var setting: String
    /// Why it is rejected.
    public var reason: String

    /// One line: the setting and the reason.
    public var description: String { "invalid heartbeat configuration: \(setting): \(reason)" }
}
