package import FaultToleranceCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// How one path decides that heartbeats have stopped.
public enum DetectorConfiguration: Sendable, Hashable {
    /// The phi accrual detector (Hayashibara et al., SRDS 2004, as Akka and Cassandra use
    /// it): suspicion grows continuously with the silence, scaled by the observed
    /// inter-arrival distribution, and the path fails when phi reaches `threshold` (Akka's
    /// default 8 means a 1e-8 chance the heartbeat is merely late). `maximumSilence` caps
    /// the wait however noisy the history, so the detection bound holds.
    case phiAccrual(
        threshold: Double,
        minimumStandardDeviation: Duration,
        acceptablePause: Duration,
        maximumSilence: Duration
    )
    /// A fixed timeout: the path fails after `timeout` without a heartbeat.
    case fixedTimeout(Duration)

    /// The longest silence after which this detector has certainly declared failure.
    public var worstCaseSilence: Duration {
        switch self {
        case .phiAccrual(_, _, _, let maximumSilence): maximumSilence
        case .fixedTimeout(let timeout): timeout
        }
    }
}

/// The per-path detector state: arrival history and the suspicion it implies.
package struct FailureDetector: Sendable {
    let configuration: DetectorConfiguration
    package private(set) var lastArrival: Instant?
    private var intervals: [Int64] = []
    private var nextSlot = 0
    // Running sums make phi O(1) per evaluation. In doubles the variance's rounding error
    // is far below a nanosecond squared for intervals under a minute.
    private var sum = 0.0
    private var sumOfSquares = 0.0
    private static let window = 200

    /// The standardized silence y at which phi reaches the threshold. phi is monotonic in
    /// y, so "phi >= threshold" is "silence >= mean + pause + y* x deviation": one
    /// comparison per evaluation instead of an `exp` and a `log10`.
    private let failureScore: Double

    package init(configuration: DetectorConfiguration, expectedInterval: Duration) {
        self.configuration = configuration
        if case .phiAccrual(let threshold, _, _, _) = configuration {
            failureScore = Self.score(forPhi: threshold)
        } else {
            failureScore = .infinity
        }
        // Seed the history as Akka does: the expected interval plus and minus a quarter, so
        // the first silences are judged before real samples exist.
        let interval = expectedInterval.nanoseconds
        for sample in [interval - interval / 4, interval + interval / 4] { record(sample) }
    }

    private mutating func record(_ interval: Int64) {
        let value = Double(interval)
        if intervals.count < Self.window {
            intervals.append(interval)
        } else {
            let old = Double(intervals[nextSlot])
            sum -= old
            sumOfSquares -= old * old
            intervals[nextSlot] = interval
            nextSlot = (nextSlot + 1) % Self.window
        }
        sum += value
        sumOfSquares += value * value
    }

    package mutating func heartbeat(at now: Instant) {
        if let last = lastArrival, now > last {
            record((now - last).nanoseconds)
        }
        lastArrival = now
    }

    /// Solves phi(y) = `phi` for y > 0 (bisection on the logistic approximation).
    static func score(forPhi phi: Double) -> Double {
        // phi = -log10(e / (1 + e)) with e = exp(-y (1.5976 + 0.070566 y^2)).
        func phiAt(_ y: Double) -> Double {
            let e = exp(-y * (1.5976 + 0.070566 * y * y))
            return -log10(e / (1 + e))
        }
        var low = 0.0
        var high = 1.0
        while phiAt(high) < phi && high < 1e6 { high *= 2 }
        for _ in 0..<100 {
            let middle = (low + high) / 2
            if phiAt(middle) < phi { low = middle } else { high = middle }
        }
        return high
    }

    /// The mean inter-arrival time and the deviation used for phi, in nanoseconds.
    private var statistics: (mean: Double, deviation: Double, pause: Double) {
        let count = Double(intervals.count)
        let mean = sum / count
        var deviation = max(0, sumOfSquares / count - mean * mean).squareRoot()
        var pause = 0.0
        if case .phiAccrual(_, let minimum, let acceptable, _) = configuration {
            deviation = max(deviation, Double(minimum.nanoseconds))
            pause = Double(acceptable.nanoseconds)
        }
        return (mean, max(deviation, 1), pause)
    }

    /// Time since the last heartbeat (`nil` before the first).
    func silence(at now: Instant) -> Duration? {
        lastArrival.map { now - $0 }
    }

    /// Phi for the current silence; 0 before the first heartbeat.
    func phi(at now: Instant) -> Double {
        guard let silence = silence(at: now) else { return 0 }
        let (mean, deviation, pause) = statistics
        let y = (Double(silence.nanoseconds) - (mean + pause)) / deviation
        // Logistic approximation of the normal CDF (Bowling et al. 2009), as Akka uses.
        let e = exp(-y * (1.5976 + 0.070566 * y * y))
        let phi = Double(silence.nanoseconds) > mean + pause ? -log10(e / (1 + e)) : -log10(1 - 1 / (1 + e))
        return phi.isFinite ? (phi > 0 ? phi : 0) : 100
    }

    /// Whether the detector currently declares the path failed. A path never heard from is
    /// failed once the worst-case silence has passed since `start`.
    package func hasFailed(at now: Instant, since start: Instant) -> Bool {
        guard let silence = silence(at: now) else {
            return now - start >= configuration.worstCaseSilence
        }
        if silence >= configuration.worstCaseSilence { return true }
        guard failureScore.isFinite else { return false }
        let (mean, deviation, pause) = statistics
        return Double(silence.nanoseconds) >= mean + pause + failureScore * deviation
    }
}
