public import FaultToleranceCore
public import Logging
public import Metrics
import NIOConcurrencyHelpers

/// What a live copy reports while it runs.
public enum LiveCopyProgress: Sendable, Hashable {
    /// A round finished.
    case roundFinished(RoundSummary)
    /// The writers were paused, the remainder copied, and the writers released in duplicated
    /// mode.
    case switchedOver(SwitchoverSummary)
    /// The checksum pass compared every page and recopied the ones that differed.
    case verified(pagesChecked: Int, pagesRecopied: Int)
    /// The copy gave up; writers run unthrottled.
    case failed(LiveCopyError)
}

/// One round, as reported.
public struct RoundSummary: Sendable, Hashable {
    /// The round (1 = every page).
    public var round: Int
    /// Pages the round copied.
    public var pages: Int
    /// Pages actually transferred.
    public var pagesSent: Int
    /// The round's duration.
    public var duration: Duration
    /// Pages dirtied during the round.
    public var dirtyPages: Int
    /// The dirty rate measured over the round, bytes per second.
    public var dirtyRate: Double
    /// The bandwidth the policy plans with, bytes per second.
    public var bandwidth: Double
    /// The pause predicted if it switched over now.
    public var predictedPause: Duration?
    /// The writers' throttle during the next round, in percent.
    public var throttlePercent: Int

    /// Creates a round summary (for fixtures and mocks).
    public init(
        round: Int, pages: Int, pagesSent: Int, duration: Duration, dirtyPages: Int, dirtyRate: Double,
        bandwidth: Double, predictedPause: Duration?, throttlePercent: Int
    ) {
        self.round = round
        self.pages = pages
        self.pagesSent = pagesSent
        self.duration = duration
        self.dirtyPages = dirtyPages
        self.dirtyRate = dirtyRate
        self.bandwidth = bandwidth
        self.predictedPause = predictedPause
        self.throttlePercent = throttlePercent
    }
}

/// The switchover, as reported.
public struct SwitchoverSummary: Sendable, Hashable {
    /// Rounds before it.
    public var rounds: Int
    /// Pages copied while paused.
    public var pages: Int
    /// The pause the policy predicted.
    public var predictedPause: Duration?
    /// The pause measured (gate closed to gate open).
    public var pause: Duration

    /// Creates a switchover summary (for fixtures and mocks).
    public init(rounds: Int, pages: Int, predictedPause: Duration?, pause: Duration) {
        self.rounds = rounds
        self.pages = pages
        self.predictedPause = predictedPause
        self.pause = pause
    }
}

/// The figures of a completed live copy.
public struct LiveCopyReport: Sendable, Hashable {
    /// Every round.
    public var rounds: [RoundSummary]
    /// The switchover.
    public var switchover: SwitchoverSummary
    /// Pages the checksum pass recopied.
    public var pagesRecopied: Int
    /// Pages transferred in all (rounds, pause, recopies).
    public var pagesSent: Int

    /// Creates a report (for fixtures and mocks).
    public init(rounds: [RoundSummary], switchover: SwitchoverSummary, pagesRecopied: Int, pagesSent: Int) {
        self.rounds = rounds
        self.switchover = switchover
        self.pagesRecopied = pagesRecopied
        self.pagesSent = pagesSent
    }
}

/// Copies a live region to an offline one without stopping its writers, then keeps the two
/// identical (duplicated mode) until ``detach()``.
///
/// ```swift
/// let memory = try TrackedMemory(pageCount: 65_536)
/// let copy = LiveCopy(source: memory, destination: LocalDestination(region: offline))
/// let report = try await copy.run()     // rounds, pause, verification; now duplicated
/// // ... later
/// await copy.detach()
/// ```
///
/// ``run()`` follows ``LiveCopyRounds``: round one copies every page, later rounds the pages
/// dirtied during the previous one, until the policy switches over (pause the gate, copy the
/// rest, install the mirror, release the gate) or fails with a typed error. Then the checksum
/// pass compares every page's CRC32C on both sides, 1,024 pages at a time under a brief pause,
/// and recopies any that differ. Progress goes to ``progress`` and to swift-metrics:
/// `ft_livecopy_rounds_total`, `ft_livecopy_bytes_total{phase}`,
/// `ft_livecopy_dirty_rate_bytes`, `ft_livecopy_predicted_pause_seconds`,
/// `ft_livecopy_pause_seconds`, `ft_livecopy_throttle_percent`,
/// `ft_livecopy_pages_recopied_total`.
public final class LiveCopy: Sendable {
    /// Progress events, in order; finishes when ``run()`` returns.
    public let progress: AsyncStream<LiveCopyProgress>

    private let source: any LiveCopySource
    private let destination: any LiveCopyDestination
    private let policy: ConvergencePolicy
    private let duplicate: Bool
    private let logger: Logger
    private let continuation: AsyncStream<LiveCopyProgress>.Continuation
    private let metrics: LiveCopyMetrics
    private let clock: any RuntimeClock
    private let plantedBug = NIOLockedValueBox<LiveCopyBug?>(nil)

    /// Creates a copy of `source` to `destination` under `policy`.
    ///
    /// With `duplicate` (the default) the writers are released in duplicated mode and the
    /// checksum pass runs while they write. Without it (a source that cannot mirror, such as
    /// ``UserfaultMemory``) the checksum pass runs inside the pause and the destination is a
    /// consistent snapshot of the switchover instant; the pause then includes the pass.
    ///
    /// `clock` times the rounds and the pause (a simulation passes its virtual clock).
    public init(
        source: any LiveCopySource,
        destination: any LiveCopyDestination,
        policy: ConvergencePolicy = .adaptive(),
        duplicate: Bool = true,
        logger: Logger = Logger(label: "ft.livecopy"),
        metricsFactory: (any MetricsFactory)? = nil,
        clock: any RuntimeClock = SystemClock()
    ) {
        self.clock = clock
        self.source = source
        self.destination = destination
        self.policy = policy
        self.duplicate = duplicate
        self.logger = logger
        (progress, continuation) = AsyncStream.makeStream(of: LiveCopyProgress.self, bufferingPolicy: .unbounded)
        metrics = LiveCopyMetrics(factory: metricsFactory ?? MetricsSystem.factory)
    }

    private var now: Instant { clock.now }

    /// Plants `bug` in this copy's own code path, for the simulation to show that it is caught
    /// (off unless a simulation turns it on).
    package func plant(_ bug: LiveCopyBug?) {
        plantedBug.withLockedValue { $0 = bug }
    }

    /// Runs the rounds, the switchover and the checksum pass; returns in duplicated mode.
    /// On failure the writers run unthrottled and undisturbed, and the error says why.
    public func run() async throws(LiveCopyError) -> LiveCopyReport {
        defer { continuation.finish() }
        try policy.validate()
        do {
            return try await copy()
        } catch {
            source.gate.setThrottle(percent: 0)
            if source.gate.isPaused { source.gate.resume() }
            source.endTracking()
            metrics.throttle.record(0)
            // Thrown to the caller and yielded as progress: logged here at debug only.
            logger.debug("live copy failed", metadata: ["error": "\(error)"])
            continuation.yield(.failed(error))
            throw error
        }
    }

    /// Stops duplicated mode and ends the session.
    public func detach() async {
        await source.gate.pause()
        try? source.setMirror(nil)
        source.gate.resume()
        source.endTracking()
        await destination.finish()
    }

    private func copy() async throws(LiveCopyError) -> LiveCopyReport {
        let pageSize = source.pageSize
        let pageCount = source.pageCount
        try await destination.begin(pageSize: pageSize, pageCount: pageCount)
        try source.beginTracking()
        var rounds = LiveCopyRounds(pageCount: pageCount, pageSize: pageSize, policy: policy)
        var summaries: [RoundSummary] = []
        var pages = PageSet.all(pageCount: pageCount)
        var sentTotal = 0
        var decision = rounds.start()
        while true {
            switch decision {
            case .copyRound(let round, let throttle):
                source.gate.setThrottle(percent: throttle)
                metrics.throttle.record(throttle)
                let started = now
                let sent = try await destination.copy(pages, round: round, from: source)
                let barrierStart = now
                try await destination.barrier()
                let finished = now
                var dirty = PageSet(pageCount: pageCount)
                source.collectDirtyPages(into: &dirty)
                RuntimeInvariants.check(
                    sent <= pages.count && dirty.count <= pageCount,
                    "round \(round) sent \(sent) of \(pages.count) pages, \(dirty.count) dirty of \(pageCount)")
                let measurement = RoundMeasurement(
                    round: round, pagesCopied: pages.count, pagesSent: sent, started: started, finished: finished,
                    dirtyPages: dirty.count, fixedCost: finished - barrierStart)
                decision = rounds.roundCompleted(measurement)
                let estimates = rounds.estimates
                let summary = RoundSummary(
                    round: round, pages: pages.count, pagesSent: sent, duration: measurement.duration,
                    dirtyPages: dirty.count, dirtyRate: estimates.dirtyRate, bandwidth: estimates.bandwidth,
                    predictedPause: estimates.predictedPause, throttlePercent: estimates.throttlePercent)
                summaries.append(summary)
                sentTotal += sent
                metrics.record(summary, pageSize: pageSize)
                logger.debug(
                    "live copy round",
                    metadata: [
                        "round": "\(round)", "pages": "\(pages.count)", "sent": "\(sent)", "dirty": "\(dirty.count)",
                        "throttle": "\(estimates.throttlePercent)",
                    ])
                continuation.yield(.roundFinished(summary))
                pages = dirty
            case .switchover(let predicted):
                var recopied = 0
                let switchover = try await switchOver(pages, rounds: summaries.count, predicted: predicted) {
                    () async throws(LiveCopyError) in
                    // Snapshot mode: compare everything before the writers go on.
                    if !duplicate { recopied = try await verifyPaused() }
                }
                sentTotal += switchover.pages
                if duplicate { recopied = try await verify() }
                return LiveCopyReport(
                    rounds: summaries, switchover: switchover, pagesRecopied: recopied,
                    pagesSent: sentTotal + recopied)
            case .fail(let error):
                throw error
            }
        }
    }

    private func switchOver(
        _ remaining: PageSet, rounds: Int, predicted: Duration?,
        whilePaused: () async throws(LiveCopyError) -> Void
    ) async throws(LiveCopyError) -> SwitchoverSummary {
        let pauseStart = now
        // The planted bug closes the gate only after the final copy: writers go on during it.
        let holdsWriters = plantedBug.withLockedValue { $0 } != .pauseWithoutHoldingWriters
        if holdsWriters { await source.gate.pause() }
        var pages = remaining
        source.collectDirtyPages(into: &pages)
        _ = try await destination.copy(pages, round: rounds + 1, from: source)
        try await destination.barrier()
        if !holdsWriters { await source.gate.pause() }
        try await whilePaused()
        if duplicate { try source.setMirror(destination.mirror) } else { source.endTracking() }
        source.gate.setThrottle(percent: 0)
        source.gate.resume()
        let pause = now - pauseStart
        metrics.throttle.record(0)
        metrics.pause.recordNanoseconds(pause.nanoseconds)
        metrics.pauseBytes.increment(by: Int64(pages.count * source.pageSize))
        let summary = SwitchoverSummary(rounds: rounds, pages: pages.count, predictedPause: predicted, pause: pause)
        logger.info(
            "live copy switched over",
            metadata: [
                "rounds": "\(rounds)", "pages": "\(pages.count)", "pause_ms": "\(Double(pause.nanoseconds) / 1e6)",
                "predicted_ms": "\(predicted.map { "\(Double($0.nanoseconds) / 1e6)" } ?? "none")",
            ])
        continuation.yield(.switchedOver(summary))
        return summary
    }

    /// The checksum pass, which ``run()`` performs after the switchover and which may be
    /// repeated any time in duplicated mode: 1,024 pages at a time, source checksums taken
    /// under a brief pause and compared by the destination in order with the mirrored writes;
    /// differing pages are recopied under a pause and compared again. Returns the number of
    /// pages recopied; throws ``LiveCopyError/Code/verificationFailed`` if any still differ.
    public func verify() async throws(LiveCopyError) -> Int {
        let chunk = 1024
        var recopied = 0
        var first = 0
        while first < source.pageCount {
            let range = first..<min(source.pageCount, first + chunk)
            let differing = try await compare(range)
            if !differing.isEmpty {
                var pages = PageSet(pageCount: source.pageCount)
                for page in differing { pages.insert(page) }
                await source.gate.pause()
                var tickets: [VerificationTicket] = []
                do {
                    try destination.copyNow(pages, from: source)
                    // Recheck the recopied pages as of this same pause.
                    for page in differing {
                        tickets.append(
                            try destination.startVerification(
                                of: page..<(page + 1), checksums: [source.checksum(ofPage: page)]))
                    }
                } catch {
                    source.gate.resume()
                    throw error
                }
                source.gate.resume()
                var remaining: [Int] = []
                for ticket in tickets { remaining += try await ticket.mismatches() }
                guard remaining.isEmpty else {
                    throw LiveCopyError(
                        .verificationFailed, detail: "pages \(remaining.prefix(8)) still differ after recopying")
                }
                recopied += differing.count
                metrics.recopied.increment(by: Int64(differing.count))
                logger.warning("live copy recopied pages that differed", metadata: ["pages": "\(differing.count)"])
            }
            first = range.upperBound
        }
        continuation.yield(.verified(pagesChecked: source.pageCount, pagesRecopied: recopied))
        return recopied
    }

    /// The checksum pass with the gate already paused (snapshot mode).
    private func verifyPaused() async throws(LiveCopyError) -> Int {
        var recopied = 0
        var first = 0
        while first < source.pageCount {
            let range = first..<min(source.pageCount, first + 1024)
            let checksums = range.map { source.checksum(ofPage: $0) }
            let differing = try await destination.startVerification(of: range, checksums: checksums).mismatches()
            if !differing.isEmpty {
                var pages = PageSet(pageCount: source.pageCount)
                for page in differing { pages.insert(page) }
                try destination.copyNow(pages, from: source)
                for page in differing {
                    let again = try await destination.startVerification(
                        of: page..<(page + 1), checksums: [source.checksum(ofPage: page)]
                    ).mismatches()
                    guard again.isEmpty else {
                        throw LiveCopyError(.verificationFailed, detail: "page \(page) still differs after recopying")
                    }
                }
                recopied += differing.count
                metrics.recopied.increment(by: Int64(differing.count))
            }
            first = range.upperBound
        }
        continuation.yield(.verified(pagesChecked: source.pageCount, pagesRecopied: recopied))
        return recopied
    }

    private func compare(_ range: Range<Int>) async throws(LiveCopyError) -> [Int] {
        await source.gate.pause()
        let ticket: VerificationTicket
        do {
            let checksums = range.map { source.checksum(ofPage: $0) }
            ticket = try destination.startVerification(of: range, checksums: checksums)
        } catch {
            source.gate.resume()
            throw error
        }
        source.gate.resume()
        return try await ticket.mismatches()
    }
}

/// The live copy's swift-metrics instruments.
struct LiveCopyMetrics: Sendable {
    let rounds: Counter
    let roundBytes: Counter
    let pauseBytes: Counter
    let dirtyRate: Gauge
    let predictedPause: Gauge
    let pause: Timer
    let throttle: Recorder
    let recopied: Counter

    init(factory: any MetricsFactory) {
        rounds = Counter(label: "ft_livecopy_rounds_total", dimensions: [], factory: factory)
        roundBytes = Counter(label: "ft_livecopy_bytes_total", dimensions: [("phase", "round")], factory: factory)
        pauseBytes = Counter(label: "ft_livecopy_bytes_total", dimensions: [("phase", "pause")], factory: factory)
        dirtyRate = Gauge(label: "ft_livecopy_dirty_rate_bytes", dimensions: [], factory: factory)
        predictedPause = Gauge(label: "ft_livecopy_predicted_pause_seconds", dimensions: [], factory: factory)
        pause = Timer(label: "ft_livecopy_pause_seconds", dimensions: [], factory: factory)
        throttle = Recorder(label: "ft_livecopy_throttle_percent", dimensions: [], aggregate: false, factory: factory)
        recopied = Counter(label: "ft_livecopy_pages_recopied_total", dimensions: [], factory: factory)
    }

    func record(_ round: RoundSummary, pageSize: Int) {
        rounds.increment()
        roundBytes.increment(by: Int64(round.pagesSent * pageSize))
        dirtyRate.record(round.dirtyRate)
        if let predicted = round.predictedPause { predictedPause.record(predicted.seconds) }
        throttle.record(round.throttlePercent)
    }
}
