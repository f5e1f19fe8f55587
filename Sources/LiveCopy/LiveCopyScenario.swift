public import DeterministicSimulation
import FaultToleranceCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Where the writers of a simulated region write.
public enum WritePattern: String, Sendable, Hashable, CaseIterable, Codable {
    /// Every page equally likely.
    case uniform
    /// 90 % of writes to a hot tenth of the region, the rest anywhere.
    case skewed
    /// Page after page, wrapping at the end (a log, a ring buffer, a sequential scan).
    case sweeping
}

/// A bug planted in the simulated copier, to show the simulation catches it.
public enum LiveCopyBug: String, Sendable, Hashable, CaseIterable, Codable {
    /// The stop-and-copy does not hold the writers: writes land during the final copy.
    case pauseWithoutHoldingWriters = "pause-without-holding-writers"
}

/// How one simulated live copy ended.
public struct LiveCopyOutcome: Sendable, Hashable, Codable {
    /// The write pattern.
    public var pattern: WritePattern
    /// Write rate over copy bandwidth.
    public var dirtyFactor: Double
    /// Whether it switched over (false: the typed error).
    public var switchedOver: Bool
    /// The error's code when it did not.
    public var error: String?
    /// Rounds copied before the pause.
    public var rounds: Int
    /// The writers' pause in seconds (0 when it did not switch over).
    public var pause: Double
    /// The predicted pause in seconds, when the policy predicted one.
    public var predictedPause: Double?
    /// Bytes copied in all (rounds and pause).
    public var bytes: Int
    /// The highest throttle applied, in percent.
    public var maximumThrottle: Int
}

/// A live copy in virtual time: a ``TrackedMemory`` under a seeded write load, copied to an
/// ``OfflineRegion`` in batches at a bandwidth that drifts (±10 % over seconds) and jitters
/// (±5 % per batch), rounds decided by ``LiveCopyRounds``, the final stop-and-copy, the
/// checksum pass, then duplicated mode.
///
/// Invariants checked: `identical-after-switchover` (byte for byte when writers resume),
/// `pause-within-budget` (whenever the adaptive policy predicted it would fit),
/// `ends` (switchover or a typed error within the round limit, never running on),
/// `over-bandwidth-throttles-or-fails` (at a dirty rate above the bandwidth with uniform or
/// sweeping writes, a switchover only after throttling), `verification-clean` (the checksum
/// pass finds nothing to recopy), `duplicated-identical` (after a second of mirrored writes),
/// `writers-released` (gate open and unthrottled at the end).
public struct LiveCopyScenario: Sendable {
    /// Pages in the region.
    public var pageCount: Int
    /// Bytes per page.
    public var pageSize: Int
    /// The policy under test.
    public var policy: ConvergencePolicy
    /// The write pattern; nil picks one from the seed.
    public var pattern: WritePattern?
    /// Write rate over copy bandwidth; nil picks one of 0.1, 0.5, 0.9, 1.1 from the seed.
    public var dirtyFactor: Double?
    /// A planted bug.
    public var bug: LiveCopyBug?

    /// Creates a scenario (1,024 pages of 4 KiB at about 1 MiB/s: a full copy takes about 4 s
    /// of virtual time, so a 300 ms budget holds about 7 % of the region).
    public init(
        pageCount: Int = 1024, pageSize: Int = 4096, policy: ConvergencePolicy = .adaptive(),
        pattern: WritePattern? = nil, dirtyFactor: Double? = nil, bug: LiveCopyBug? = nil
    ) {
        self.pageCount = pageCount
        self.pageSize = pageSize
        self.policy = policy
        self.pattern = pattern
        self.dirtyFactor = dirtyFactor
        self.bug = bug
    }

    /// The dirty factors the issue names.
    public static let dirtyFactors: [Double] = [0.1, 0.5, 0.9, 1.1]

    /// Runs one seed.
    public func run(seed: UInt64) -> SimulationReport { runWithOutcome(seed: seed).report }

    /// Runs one seed and also returns how the copy ended.
    public func runWithOutcome(seed: UInt64) -> (report: SimulationReport, outcome: LiveCopyOutcome?) {
        let simulation = Simulation(seed: seed)
        var random = simulation.random
        let pattern = self.pattern ?? WritePattern.allCases[Int(random.next() % 3)]
        let factor = self.dirtyFactor ?? Self.dirtyFactors[Int(random.next() % 4)]
        do {
            let run = try SimulatedLiveCopy(
                simulation: simulation, random: random, scenario: self, pattern: pattern, factor: factor)
            let outcome = run.execute()
            let report = SimulationReport(
                seed: seed, faults: simulation.faults, invariantChecks: run.checks, operations: run.writes,
                virtualTime: simulation.now.nanoseconds, events: simulation.eventsProcessed, violation: run.violation)
            return (report, outcome)
        } catch {
            let violation = InvariantViolation(invariant: "setup", detail: "\(error)", at: simulation.now)
            let report = SimulationReport(
                seed: seed, faults: simulation.faults, invariantChecks: 0, operations: 0, virtualTime: 0, events: 0,
                violation: violation)
            return (report, nil)
        }
    }
}

/// One simulated run (a class: the scheduled events share its state).
private final class SimulatedLiveCopy {
    let simulation: Simulation
    var random: SimulationRandom
    let scenario: LiveCopyScenario
    let pattern: WritePattern
    let factor: Double
    let memory: TrackedMemory
    let offline: OfflineRegion
    var rounds: LiveCopyRounds
    let bandwidth: Double
    let drift: Double
    let driftPeriod: Double
    let driftPhase: Double
    let latency: Duration
    let batchPages = 8
    let hotStart: Int
    var sweep = 0

    var paused = false
    var throttle = 0
    var maximumThrottle = 0
    var writes = 0
    var checks = 0
    var bytesCopied = 0
    var violation: InvariantViolation?
    var finished = false
    var outcome: LiveCopyOutcome?
    var predictedPause: Duration?

    init(
        simulation: Simulation, random: SimulationRandom, scenario: LiveCopyScenario, pattern: WritePattern,
        factor: Double
    ) throws(LiveCopyError) {
        self.simulation = simulation
        self.random = random
        self.scenario = scenario
        self.pattern = pattern
        self.factor = factor
        memory = try TrackedMemory(pageCount: scenario.pageCount, pageSize: scenario.pageSize)
        offline = try OfflineRegion(pageCount: scenario.pageCount, pageSize: scenario.pageSize)
        rounds = LiveCopyRounds(pageCount: scenario.pageCount, pageSize: scenario.pageSize, policy: scenario.policy)
        let regionBytes = Double(scenario.pageCount * scenario.pageSize)
        bandwidth = regionBytes / (3.5 + Double(self.random.next() % 1000) / 1000)  // a full copy in 3.5-4.5 s
        drift = Double(self.random.next() % 1000) / 10_000  // up to ±10 %
        driftPeriod = 3 + Double(self.random.next() % 3000) / 1000
        driftPhase = Double(self.random.next() % 6283) / 1000
        latency = .microseconds(500 + Int64(self.random.next() % 2500))
        hotStart = Int(self.random.next() % UInt64(scenario.pageCount))
    }

    func execute() -> LiveCopyOutcome? {
        // Some data before the copy starts.
        for _ in 0..<(scenario.pageCount / 2) { write() }
        scheduleNextWrite()
        do {
            try memory.beginTracking()
        } catch {
            fail("setup", "\(error)")
            return nil
        }
        decide(rounds.start(), roundStart: simulation.now, pages: PageSet.all(pageCount: scenario.pageCount))
        let deadline = simulation.now + .seconds(600)
        while !finished, violation == nil, simulation.now < deadline, simulation.step() {}
        if !finished, violation == nil {
            fail("ends", "no switchover and no error after \(rounds.roundsCompleted) rounds")
        }
        return outcome
    }

    // MARK: Writers

    var writeRate: Double { factor * bandwidth / Double(scenario.pageSize) * Double(100 - throttle) / 100 }

    func scheduleNextWrite() {
        guard !finished else { return }
        let rate = max(writeRate, 1e-3)
        let uniform = Double(random.next() % 1_000_000 + 1) / 1_000_001
        let gap = -log(uniform) / rate
        _ = simulation.schedule(after: .seconds(gap)) { [self] in
            if !paused || scenario.bug == .pauseWithoutHoldingWriters { write() }
            scheduleNextWrite()
        }
    }

    func write() {
        let page: Int
        switch pattern {
        case .uniform:
            page = Int(random.next() % UInt64(scenario.pageCount))
        case .skewed:
            let hot = max(1, scenario.pageCount / 10)
            page =
                random.chance(0.9)
                ? (hotStart + Int(random.next() % UInt64(hot))) % scenario.pageCount
                : Int(random.next() % UInt64(scenario.pageCount))
        case .sweeping:
            page = sweep
            sweep = (sweep + 1) % scenario.pageCount
        }
        let word = Int(random.next() % UInt64(scenario.pageSize / 8))
        do {
            try memory.storeWord(random.next(), at: page * scenario.pageSize + word * 8)
            writes += 1
        } catch {
            fail("setup", "\(error)")
        }
    }

    // MARK: Copier

    func currentBandwidth() -> Double {
        let t = Double(simulation.now.nanoseconds) / 1e9
        let jitter = 0.95 + Double(random.next() % 1000) / 10_000
        return bandwidth * (1 + drift * sin(2 * Double.pi * t / driftPeriod + driftPhase)) * jitter
    }

    /// Copies `pages` batch by batch from now on, then calls `done`.
    func copy(_ pages: PageSet, then done: @escaping (Int) -> Void) {
        var batches: [Range<Int>] = []
        pages.forEachRun(maximumLength: batchPages) { batches.append($0) }
        copyBatch(batches, index: 0, sent: 0, then: done)
    }

    func copyBatch(_ batches: [Range<Int>], index: Int, sent: Int, then done: @escaping (Int) -> Void) {
        guard index < batches.count else {
            _ = simulation.schedule(after: latency) { done(sent) }
            return
        }
        let batch = batches[index]
        let size = batch.count * scenario.pageSize
        var staging = [UInt8](repeating: 0, count: size)
        staging.withUnsafeMutableBytes { raw in
            if let base = raw.baseAddress { memory.copyPages(batch, into: base) }
        }
        let duration = Duration.seconds(Double(size) / currentBandwidth())
        _ = simulation.schedule(after: duration) { [self] in
            let applied = staging.withUnsafeBytes { raw in
                Result { () throws(LiveCopyError) in try offline.write(raw, at: batch.lowerBound * scenario.pageSize) }
            }
            if case .failure(let error) = applied { fail("setup", "\(error)") }
            bytesCopied += size
            copyBatch(batches, index: index + 1, sent: sent + batch.count, then: done)
        }
    }

    func decide(_ decision: LiveCopyRounds.Decision, roundStart: Instant, pages: PageSet) {
        switch decision {
        case .copyRound(let round, let percent):
            throttle = percent
            maximumThrottle = max(maximumThrottle, percent)
            memory.gate.setThrottle(percent: percent)
            let started = simulation.now
            copy(pages) { [self] sent in
                var dirty = PageSet(pageCount: scenario.pageCount)
                memory.collectDirtyPages(into: &dirty)
                let measurement = RoundMeasurement(
                    round: round, pagesCopied: pages.count, pagesSent: sent, started: started,
                    finished: simulation.now, dirtyPages: dirty.count, fixedCost: latency)
                decide(rounds.roundCompleted(measurement), roundStart: simulation.now, pages: dirty)
            }
        case .switchover(let predicted):
            predictedPause = predicted
            switchover(remaining: pages)
        case .fail(let error):
            throttle = 0
            memory.gate.setThrottle(percent: 0)
            checkEnds(error: error)
            finish(switchedOver: false, error: error, pause: .zero)
        }
    }

    func checkEnds(error: LiveCopyError?) {
        checks += 1
        if rounds.roundsCompleted > max(1, scenario.policy.maximumRounds) {
            fail("ends", "\(rounds.roundsCompleted) rounds exceed the limit \(scenario.policy.maximumRounds)")
        }
        if let error, error.code != .notConverging, error.code != .roundLimit {
            fail("ends", "unexpected error \(error)")
        }
    }

    func switchover(remaining: PageSet) {
        paused = true
        // The planted bug forgets to close the gate: writers keep writing during the final copy.
        if scenario.bug != .pauseWithoutHoldingWriters { memory.gate.pause() }
        let pauseStart = simulation.now
        var pages = remaining
        memory.collectDirtyPages(into: &pages)
        copy(pages) { [self] _ in
            let pause = simulation.now - pauseStart
            checkIdentical("identical-after-switchover")
            checks += 1
            if let predictedPause, scenario.policy.strategy == .adaptive,
                predictedPause <= scenario.policy.downtimeBudget, pause > scenario.policy.downtimeBudget
            {
                fail(
                    "pause-within-budget",
                    "paused \(pause) with \(pages.count) pages, predicted \(predictedPause) within \(scenario.policy.downtimeBudget)"
                )
            }
            checks += 1
            if factor > 1, pattern != .skewed, maximumThrottle == 0, scenario.policy.strategy == .adaptive {
                fail("over-bandwidth-throttles-or-fails", "switched over at \(factor)x without throttling")
            }
            checkEnds(error: nil)
            enterDuplicatedMode(pause: pause)
        }
    }

    func enterDuplicatedMode(pause: Duration) {
        // Verification pass: CRC32C of every page on both sides, recopy any that differ.
        checks += 1
        let mismatched = (0..<scenario.pageCount).filter { page in
            memory.checksum(ofPage: page) != offline.checksums(of: page..<(page + 1)).first
        }
        if !mismatched.isEmpty, scenario.bug == nil {
            fail("verification-clean", "\(mismatched.count) pages differed after the switchover")
        }
        if !memory.gate.isPaused { memory.gate.pause() }
        do {
            try memory.setMirror(LocalMirror(offline))
        } catch {
            fail("setup", "\(error)")
        }
        throttle = 0
        memory.gate.setThrottle(percent: 0)
        paused = false
        memory.gate.resume()
        _ = simulation.schedule(after: .seconds(1)) { [self] in
            memory.gate.pause()
            checkIdentical("duplicated-identical")
            try? memory.setMirror(nil)
            memory.gate.resume()
            finish(switchedOver: true, error: nil, pause: pause)
        }
    }

    func checkIdentical(_ invariant: String) {
        checks += 1
        let difference = memory.withUnsafeBytes { source in
            offline.withUnsafeBytes { copy -> Int? in
                guard let a = source.baseAddress, let b = copy.baseAddress else { return nil }
                if memcmp(a, b, source.count) == 0 { return nil }
                return (0..<source.count).first { source[$0] != copy[$0] }
            }
        }
        if let difference {
            fail(invariant, "regions differ at byte \(difference) (page \(difference / scenario.pageSize))")
        }
    }

    func finish(switchedOver: Bool, error: LiveCopyError?, pause: Duration) {
        checks += 1
        if memory.gate.isPaused || memory.gate.throttlePercent != 0 {
            fail("writers-released", "gate paused \(memory.gate.isPaused), throttle \(memory.gate.throttlePercent)")
        }
        finished = true
        outcome = LiveCopyOutcome(
            pattern: pattern, dirtyFactor: factor, switchedOver: switchedOver, error: error.map { "\($0.code)" },
            rounds: rounds.roundsCompleted, pause: pause.seconds, predictedPause: predictedPause?.seconds,
            bytes: bytesCopied, maximumThrottle: maximumThrottle)
    }

    func fail(_ invariant: String, _ detail: String) {
        if violation == nil {
            violation = InvariantViolation(
                invariant: invariant, detail: "\(pattern) writes at \(factor)x: \(detail)", at: simulation.now)
        }
    }
}

/// Duplicated mode to a local ``OfflineRegion``: each write applied to both sides in the gate.
final class LocalMirror: WriteMirror, Sendable {
    let region: OfflineRegion

    init(_ region: OfflineRegion) { self.region = region }

    func mirrorWrite(_ bytes: UnsafeRawBufferPointer, at offset: Int) {
        // The source already checked the bounds; both regions have the same geometry.
        try? region.write(bytes, at: offset)
    }
}
