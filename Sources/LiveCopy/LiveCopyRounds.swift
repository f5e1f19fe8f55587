public import FaultToleranceCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What one round of copying measured.
public struct RoundMeasurement: Sendable, Hashable {
    /// The round (1 for the first, full one).
    public var round: Int
    /// Pages the round was asked to copy.
    public var pagesCopied: Int
    /// Pages actually transferred (zero and unchanged pages skipped do not count).
    public var pagesSent: Int
    /// When the round started.
    public var started: Instant
    /// When the destination had applied all of it.
    public var finished: Instant
    /// Pages dirtied during the round: what the next round, or the pause, must copy.
    public var dirtyPages: Int
    /// The part of the round's time that does not depend on its size (the round trip of the
    /// final barrier).
    public var fixedCost: Duration

    /// Creates a measurement.
    public init(
        round: Int, pagesCopied: Int, pagesSent: Int, started: Instant, finished: Instant, dirtyPages: Int,
        fixedCost: Duration = .zero
    ) {
        self.round = round
        self.pagesCopied = pagesCopied
        self.pagesSent = pagesSent
        self.started = started
        self.finished = finished
        self.dirtyPages = dirtyPages
        self.fixedCost = fixedCost
    }

    /// The round's duration.
    public var duration: Duration { finished - started }
}

/// The live copy's rounds as a pure state machine: fed what each round measured, it says what
/// to do next. It never reads a clock or touches memory.
///
/// Round one copies every page; each later round copies the pages dirtied during the previous
/// one; the ``ConvergencePolicy`` decides when the remainder fits the downtime budget
/// (``Decision/switchover(predictedPause:)``), when writers must be throttled, and when to
/// give up. The number of rounds is bounded by ``ConvergencePolicy/maximumRounds``, so the
/// machine never copies forever.
public struct LiveCopyRounds: Sendable {
    /// What to do next.
    public enum Decision: Sendable, Hashable {
        /// Copy round `round` (the pages dirtied during the previous one) with writers held
        /// `throttlePercent` percent of the time.
        case copyRound(Int, throttlePercent: Int)
        /// Pause the writers and copy what remains; the policy predicts this pause (nil when it
        /// has measured nothing).
        case switchover(predictedPause: Duration?)
        /// Stop: the copy cannot converge within the policy. Writers run unthrottled again.
        case fail(LiveCopyError)
    }

    /// The estimates behind the last decision.
    public struct Estimates: Sendable, Hashable {
        /// The bandwidth the policy plans with, in bytes per second.
        public var bandwidth: Double = 0
        /// The measured dirty rate of the last round, in bytes per second.
        public var dirtyRate: Double = 0
        /// The predicted pause if the switchover happened now.
        public var predictedPause: Duration?
        /// The writers' throttle in percent.
        public var throttlePercent = 0
    }

    /// The policy.
    public let policy: ConvergencePolicy
    /// Pages in the region.
    public let pageCount: Int
    /// Bytes per page.
    public let pageSize: Int
    /// The estimates behind the last decision.
    public private(set) var estimates = Estimates()
    /// Rounds completed so far.
    public private(set) var roundsCompleted = 0

    private var throughputs: [Double] = []
    private var fixedCosts: [Duration] = []
    private var previousDirty: Int
    private var highDirtyRounds = 0
    private var stallsAtMaximum = 0

    /// Creates the machine for a region of `pageCount` pages of `pageSize` bytes.
    public init(pageCount: Int, pageSize: Int, policy: ConvergencePolicy) {
        self.policy = policy
        self.pageCount = pageCount
        self.pageSize = pageSize
        self.previousDirty = pageCount
    }

    /// The first decision: round one, or the pause at once for ``ConvergencePolicy/stopAndCopy``.
    public mutating func start() -> Decision {
        if case .stopAndCopy = policy.strategy { return .switchover(predictedPause: nil) }
        return .copyRound(1, throttlePercent: 0)
    }

    /// The decision after a round.
    public mutating func roundCompleted(_ round: RoundMeasurement) -> Decision {
        roundsCompleted = round.round
        let seconds = max(round.duration.seconds, 1e-9)
        let variable = max((round.duration - round.fixedCost).seconds, 1e-9)
        let sentBytes = Double(max(1, round.pagesSent) * pageSize)
        let throughput = policy.strategy == .qemu ? sentBytes / seconds : sentBytes / variable
        // Rounds of a handful of pages measure latency, not bandwidth.
        if round.pagesSent >= 16 || throughputs.isEmpty { throughputs.append(throughput) }
        fixedCosts.append(round.fixedCost)
        estimates.dirtyRate = Double(round.dirtyPages * pageSize) / seconds
        defer { previousDirty = max(1, round.dirtyPages) }

        switch policy.strategy {
        case .stopAndCopy:
            return .switchover(predictedPause: nil)
        case .fixedRounds(let rounds):
            _ = adaptivePrediction(dirtyPages: round.dirtyPages)
            return round.round >= rounds
                ? .switchover(predictedPause: estimates.predictedPause)
                : .copyRound(round.round + 1, throttlePercent: 0)
        case .qemu:
            return qemuDecision(round, sentBytes: sentBytes)
        case .adaptive:
            return adaptiveDecision(round)
        }
    }

    private mutating func adaptivePrediction(dirtyPages: Int) -> Duration {
        let recent = throughputs.suffix(3)
        let bandwidth = (recent.min() ?? 1) * (1 - policy.safetyMargin)
        estimates.bandwidth = bandwidth
        let fixed = fixedCosts.suffix(3).max() ?? .zero
        let predicted = fixed + .seconds(Double(dirtyPages * pageSize) / max(bandwidth, 1))
        estimates.predictedPause = predicted
        return predicted
    }

    private mutating func adaptiveDecision(_ round: RoundMeasurement) -> Decision {
        let predicted = adaptivePrediction(dirtyPages: round.dirtyPages)
        let shrink = Double(round.dirtyPages) / Double(max(1, previousDirty))
        if predicted <= policy.downtimeBudget {
            // The budget is a ceiling, not a target: while another round at least halves the
            // remainder it costs fewer bytes than it saves pause, so copy on until the pause is
            // down to twice the fixed cost (which no round can remove).
            let floor = max((fixedCosts.suffix(3).max() ?? .zero) * 2, .microseconds(100))
            if shrink <= 0.5, round.dirtyPages > 0, predicted > floor, round.round < policy.maximumRounds {
                return .copyRound(round.round + 1, throttlePercent: estimates.throttlePercent)
            }
            return .switchover(predictedPause: predicted)
        }
        if round.round >= policy.maximumRounds { return .fail(error(.roundLimit, round)) }

        // Stall: the dirty set did not shrink by 10 %, or shrinking at this rate would not fit
        // the budget within the round limit.
        let budgetPages = max(
            1,
            (policy.downtimeBudget - (fixedCosts.suffix(3).max() ?? .zero)).seconds * estimates.bandwidth
                / Double(pageSize))
        var stalled = shrink >= 0.9
        if !stalled {
            let needed = (log(budgetPages / Double(max(1, round.dirtyPages))) / log(shrink)).rounded(.up)
            stalled = round.round + Int(max(0, needed)) > policy.maximumRounds
        }
        guard stalled else { return .copyRound(round.round + 1, throttlePercent: estimates.throttlePercent) }
        guard let throttling = policy.throttling else { return .fail(error(.notConverging, round)) }
        if estimates.throttlePercent >= throttling.maximum {
            stallsAtMaximum += 1
            if stallsAtMaximum >= 2 { return .fail(error(.notConverging, round)) }
            return .copyRound(round.round + 1, throttlePercent: estimates.throttlePercent)
        }
        // Throttle to the share that halves the dirty rate relative to the bandwidth.
        let ratio = estimates.dirtyRate / max(estimates.bandwidth, 1)
        let wanted = Int((100 * (1 - 0.5 / max(ratio, 0.5))).rounded(.up))
        let step =
            estimates.throttlePercent == 0 ? throttling.initial : estimates.throttlePercent + throttling.increment
        estimates.throttlePercent = min(throttling.maximum, max(step, wanted))
        return .copyRound(round.round + 1, throttlePercent: estimates.throttlePercent)
    }

    private mutating func qemuDecision(_ round: RoundMeasurement, sentBytes: Double) -> Decision {
        let bandwidth = throughputs.last ?? 1
        estimates.bandwidth = bandwidth
        let predicted = Duration.seconds(Double(round.dirtyPages * pageSize) / max(bandwidth, 1))
        estimates.predictedPause = predicted
        if predicted <= policy.downtimeBudget { return .switchover(predictedPause: predicted) }
        if round.round >= policy.maximumRounds { return .fail(error(.roundLimit, round)) }
        if let throttling = policy.throttling,
            Double(round.dirtyPages * pageSize) > policy.triggerRatio * sentBytes
        {
            highDirtyRounds += 1
            if highDirtyRounds >= 2 {
                highDirtyRounds = 0
                estimates.throttlePercent =
                    estimates.throttlePercent == 0
                    ? throttling.initial : min(throttling.maximum, estimates.throttlePercent + throttling.increment)
            }
        }
        return .copyRound(round.round + 1, throttlePercent: estimates.throttlePercent)
    }

    private func error(_ code: LiveCopyError.Code, _ round: RoundMeasurement) -> LiveCopyError {
        let predicted = estimates.predictedPause.map { "\($0.milliseconds) ms" } ?? "unknown"
        return LiveCopyError(
            code, round: round.round,
            detail:
                "\(round.dirtyPages) pages still dirty, predicted pause \(predicted) over a budget of "
                + "\(policy.downtimeBudget.milliseconds) ms; dirty rate \(Int(estimates.dirtyRate)) B/s, "
                + "bandwidth \(Int(estimates.bandwidth)) B/s, throttle \(estimates.throttlePercent) %")
    }
}

extension Duration {
    /// The duration in seconds, as a `Double`.
    package var seconds: Double {
        let (seconds, attoseconds) = components
        return Double(seconds) + Double(attoseconds) * 1e-18
    }

    /// The duration in whole milliseconds.
    package var milliseconds: Int64 {
        let (seconds, attoseconds) = components
        return seconds * 1000 + attoseconds / 1_000_000_000_000_000
    }
}
