public import DeterministicSimulation
import FaultToleranceCore
public import LiveCopy
import Logging

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

/// Where a simulated live copy lands.
public enum LiveCopyDestinationKind: String, Sendable, Hashable, CaseIterable, Codable {
    /// ``LiveCopy/RemoteDestination`` over a simulated link to a ``LiveCopy/LiveCopyReceiver``.
    case remote
    /// ``LiveCopy/LocalDestination``: copying takes no virtual time, so rounds converge at
    /// once; what it tests is the orchestration (switchover, verification, mirror, detach).
    case local
}

/// How one simulated live copy ended.
public struct LiveCopyOutcome: Sendable, Hashable, Codable {
    /// The write pattern.
    public var pattern: WritePattern
    /// Write rate over copy bandwidth.
    public var dirtyFactor: Double
    /// The destination.
    public var destination: LiveCopyDestinationKind
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
    /// Bytes copied in all (rounds, pause, recopies).
    public var bytes: Int
    /// The highest throttle applied, in percent.
    public var maximumThrottle: Int
}

/// The shipped live copy in virtual time: ``LiveCopy/LiveCopy`` copies a
/// ``LiveCopy/TrackedMemory`` under a seeded write load, through a
/// ``LiveCopy/RemoteDestination`` on a ``DeterministicSimulation/SimulatedNetwork`` link (its
/// bandwidth drifts ±10 % over seconds and jitters ±5 %) to a ``LiveCopy/LiveCopyReceiver``
/// and its ``LiveCopy/OfflineRegion`` — or, one seed in eight, through a
/// ``LiveCopy/LocalDestination``. Every task (copier, send queue, receiver, writers) runs on
/// the deterministic executor of an ``DeterministicSimulation/AsyncSimulation``.
///
/// Faults: the link's drift and jitter, and one seed in eight a bit flipped at rest in the
/// offline copy during duplicated mode, which ``LiveCopy/LiveCopy/verify()`` must find by its
/// checksums and repair.
///
/// Invariants checked: `verification-clean` (the checksum pass right after the switchover
/// finds nothing to recopy: the copy was identical when the writers resumed),
/// `pause-within-budget` (whenever the adaptive policy predicted it would fit), `ends`
/// (switchover or a typed error within the round limit), `over-bandwidth-throttles-or-fails`
/// (at a dirty rate above the bandwidth with uniform or sweeping writes and no compression, a
/// switchover only after throttling), `writers-released` (gate open and unthrottled after the copy),
/// `damage-repaired` (a flipped bit is found and recopied), `duplicated-identical` (byte for
/// byte after a second of mirrored writes and detaching).
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
    /// The destination; nil picks remote (seven seeds in eight) or local from the seed.
    public var destination: LiveCopyDestinationKind?
    /// A bug planted in the shipped ``LiveCopy/LiveCopy``.
    public var bug: LiveCopyBug?

    /// Creates a scenario (1,024 pages of 4 KiB at about 1 MiB/s: a full copy takes about 4 s
    /// of virtual time, so a 300 ms budget holds about 7 % of the region).
    public init(
        pageCount: Int = 1024, pageSize: Int = 4096, policy: ConvergencePolicy = .adaptive(),
        pattern: WritePattern? = nil, dirtyFactor: Double? = nil, destination: LiveCopyDestinationKind? = nil,
        bug: LiveCopyBug? = nil
    ) {
        self.pageCount = pageCount
        self.pageSize = pageSize
        self.policy = policy
        self.pattern = pattern
        self.dirtyFactor = dirtyFactor
        self.destination = destination
        self.bug = bug
    }

    /// The dirty factors the issue names.
    public static let dirtyFactors: [Double] = [0.1, 0.5, 0.9, 1.1]

    /// Runs one seed.
    public func run(seed: UInt64) async -> SimulationReport { await runWithOutcome(seed: seed).report }

    /// Runs one seed and also returns how the copy ended.
    public func runWithOutcome(seed: UInt64) async -> (report: SimulationReport, outcome: LiveCopyOutcome?) {
        let world = AsyncSimulation(seed: seed)
        let random = { world.simulation.random.next() }
        let pattern = self.pattern ?? WritePattern.allCases[Int(random() % 3)]
        let factor = self.dirtyFactor ?? Self.dirtyFactors[Int(random() % 4)]
        let destination = self.destination ?? (random() % 8 == 0 ? .local : .remote)
        let damage = random() % 8 == 1
        let run: LiveCopyRun
        do {
            run = try LiveCopyRun(
                world: world, scenario: self, pattern: pattern, factor: factor, destination: destination, damage: damage
            )
        } catch {
            let violation = InvariantViolation(invariant: "setup", detail: "\(error)", at: world.simulation.now)
            let report = SimulationReport(
                seed: seed, faults: world.simulation.faults, invariantChecks: 0, operations: 0, virtualTime: 0,
                events: 0, violation: violation)
            return (report, nil)
        }
        let sink = RuntimeInvariantSink()
        do {
            try await RuntimeInvariants.$sink.withValue(sink) {
                try await world.run(timeLimit: .seconds(900)) { try await run.run() }
            }
        } catch {
            run.fail("ends", "\(error)")
        }
        var report = run.report
        report.include(sink)
        return (report, run.outcome)
    }
}

/// One simulated run. Lives on the simulation's driver thread (every method runs in a job of
/// the run), hence unchecked Sendable.
final class LiveCopyRun: @unchecked Sendable {
    static let silent = Logger(label: "ft.livecopy.simulation", factory: { _ in SwiftLogNoOpLogHandler() })
    static let source: NodeID = "source"
    static let offlineNode: NodeID = "offline"

    let world: AsyncSimulation
    let scenario: LiveCopyScenario
    let pattern: WritePattern
    let factor: Double
    let destinationKind: LiveCopyDestinationKind
    let damage: Bool
    let memory: TrackedMemory
    let offline: OfflineRegion
    let bandwidth: Double
    let drift: Double
    let driftPeriod: Double
    let driftPhase: Double
    let latency: Duration
    let hotStart: Int
    var sweep = 0

    var compression = false
    var writes = 0
    var writing = true
    var checks = 0
    var rounds: [RoundSummary] = []
    var violation: InvariantViolation?
    var outcome: LiveCopyOutcome?
    var simulation: Simulation { world.simulation }

    init(
        world: AsyncSimulation, scenario: LiveCopyScenario, pattern: WritePattern, factor: Double,
        destination: LiveCopyDestinationKind, damage: Bool
    ) throws(LiveCopyError) {
        self.world = world
        self.scenario = scenario
        self.pattern = pattern
        self.factor = factor
        self.destinationKind = destination
        self.damage = damage
        // The gate records the throttle; the writer task below slows itself by it (a task on
        // the simulation's one thread must not sleep in real time).
        memory = try TrackedMemory(
            pageCount: scenario.pageCount, pageSize: scenario.pageSize,
            gate: PauseGate(holdsThrottledWriters: false))
        offline = try OfflineRegion(pageCount: scenario.pageCount, pageSize: scenario.pageSize)
        let simulation = world.simulation
        let regionBytes = Double(scenario.pageCount * scenario.pageSize)
        bandwidth = regionBytes / (3.5 + Double(simulation.random.next() % 1000) / 1000)  // a full copy in 3.5-4.5 s
        drift = Double(simulation.random.next() % 1000) / 10_000  // up to ±10 %
        driftPeriod = 3 + Double(simulation.random.next() % 3000) / 1000
        driftPhase = Double(simulation.random.next() % 6283) / 1000
        latency = .microseconds(500 + Int64(simulation.random.next() % 2500))
        hotStart = Int(simulation.random.next() % UInt64(scenario.pageCount))
    }

    var report: SimulationReport {
        SimulationReport(
            seed: simulation.seed, faults: simulation.faults, invariantChecks: checks, operations: writes,
            virtualTime: simulation.now.nanoseconds, events: simulation.eventsProcessed, violation: violation,
            traceHash: simulation.traceHash)
    }

    /// The body of the simulation: the receiver, the writers and the link's drift as tasks of
    /// the run, then the shipped copy from start to detach, checking invariants on the way.
    func run() async throws {
        for _ in 0..<(scenario.pageCount / 2) { write() }  // some data before the copy starts
        let destination: any LiveCopyDestination
        var receiverTask: Task<LiveCopyReceiver.Summary, any Error>?
        if destinationKind == .remote {
            let network = world.network
            network.setConditions(link(bandwidth: bandwidth), from: Self.source, to: Self.offlineNode)
            network.setConditions(link(bandwidth: nil), from: Self.offlineNode, to: Self.source)
            let receiver = LiveCopyReceiver(
                transport: network.transport(for: Self.offlineNode), region: offline, logger: Self.silent)
            receiverTask = world.spawn { try await receiver.serveSession() }
            // Batches of 8 pages; the queue is deep enough that mirrored writes never wait for
            // room (a writer waiting for room blocks its thread, and a simulation has one).
            compression = simulation.random.chance(0.25)
            let options = RemoteDestination.Options(
                compression: compression, batchBytes: 8 * scenario.pageSize,
                maximumQueuedBytes: 1 << 20)
            destination = RemoteDestination(
                transport: network.transport(for: Self.source), peer: Self.offlineNode, options: options,
                clock: world.clock, session: simulation.random.next() | 1)
            world.spawn { [unowned self] in await driftBandwidth() }
        } else {
            destination = LocalDestination(region: offline)
        }
        let copy = LiveCopy(
            source: memory, destination: destination, policy: scenario.policy, logger: Self.silent, clock: world.clock)
        copy.plant(scenario.bug)
        let progress = world.spawn { [unowned self] in
            for await event in copy.progress { if case .roundFinished(let round) = event { rounds.append(round) } }
        }
        let writer = world.spawn { [unowned self] in await writeLoad() }

        let result: Result<LiveCopyReport, LiveCopyError>
        do throws(LiveCopyError) {
            result = .success(try await copy.run())
        } catch {
            result = .failure(error)
        }
        await progress.value
        checkWritersReleased()
        switch result {
        case .failure(let error):
            checkEnds(error: error)
            writing = false
            writer.cancel()
            await destination.finish()
            receiverTask?.cancel()
            finish(nil, error: error)
        case .success(let report):
            checkSwitchover(report)
            checkEnds(error: nil)
            // Duplicated mode for a second of writes, a bit flipped at rest on some seeds, then
            // detach and compare.
            try? await world.clock.sleep(for: .milliseconds(500))
            var recopied = 0
            if damage { recopied = await damageAndVerify(copy) }
            try? await world.clock.sleep(for: .milliseconds(500))
            writing = false
            writer.cancel()
            await copy.detach()
            if let receiverTask {
                do {
                    _ = try await receiverTask.value
                } catch {
                    fail("duplicated-identical", "the receiver failed: \(error)")
                }
            }
            checkIdentical("duplicated-identical")
            finish(report, error: nil, extraPages: recopied)
        }
        offline.withUnsafeBytes { simulation.trace(UInt64(CRC32C.checksum($0))) }
    }

    // MARK: The world around the copy

    func link(bandwidth: Double?) -> LinkConditions {
        LinkConditions(delay: latency...latency, bandwidth: bandwidth)
    }

    /// Moves the link's bandwidth every 50 ms: a slow drift (±10 %) and a jitter (±5 %).
    func driftBandwidth() async {
        while writing {
            let t = Double(simulation.now.nanoseconds) / 1e9
            let jitter = 0.95 + Double(simulation.random.next() % 1000) / 10_000
            let rate = bandwidth * (1 + drift * sin(2 * Double.pi * t / driftPeriod + driftPhase)) * jitter
            world.network.setConditions(link(bandwidth: rate), from: Self.source, to: Self.offlineNode)
            do { try await world.clock.sleep(for: .milliseconds(50)) } catch { return }
        }
    }

    /// Writes at `factor` times the bandwidth (in pages per second), slowed by the gate's
    /// throttle, waiting while the gate is paused as a writer thread would.
    func writeLoad() async {
        while writing {
            let rate = max(
                factor * bandwidth / Double(scenario.pageSize) * Double(100 - memory.gate.throttlePercent) / 100, 1e-3)
            let uniform = Double(simulation.random.next() % 1_000_000 + 1) / 1_000_001
            do { try await world.clock.sleep(for: .seconds(-log(uniform) / rate)) } catch { return }
            while memory.gate.isPaused {
                do { try await world.clock.sleep(for: .milliseconds(1)) } catch { return }
            }
            guard writing else { return }
            write()
        }
    }

    func write() {
        let pageCount = UInt64(scenario.pageCount)
        let page: Int
        switch pattern {
        case .uniform:
            page = Int(simulation.random.next() % pageCount)
        case .skewed:
            let hot = UInt64(max(1, scenario.pageCount / 10))
            page =
                simulation.random.chance(0.9)
                ? (hotStart + Int(simulation.random.next() % hot)) % scenario.pageCount
                : Int(simulation.random.next() % pageCount)
        case .sweeping:
            page = sweep
            sweep = (sweep + 1) % scenario.pageCount
        }
        let word = Int(simulation.random.next() % UInt64(scenario.pageSize / 8))
        do {
            try memory.storeWord(simulation.random.next(), at: page * scenario.pageSize + word * 8)
            writes += 1
        } catch {
            fail("setup", "\(error)")
        }
    }

    /// Flips one bit of the offline copy, at rest, and runs the shipped checksum pass, which
    /// must find the page and recopy it. Returns the pages recopied.
    func damageAndVerify(_ copy: LiveCopy) async -> Int {
        let offset = Int(simulation.random.next() % UInt64(offline.byteCount))
        let bit = UInt8(1) << UInt8(simulation.random.next() % 8)
        guard let byte = try? offline.read(at: offset, count: 1).first else { return 0 }
        // Written straight to the region, behind the receiver's back: damage at rest.
        _ = try? [byte ^ bit].withUnsafeBytes { raw in try offline.write(raw, at: offset) }
        simulation.faults.damageInjected += 1
        checks += 1
        do {
            let recopied = try await copy.verify()
            if recopied >= 1 {
                simulation.faults.damageDetected += 1
            } else {
                fail("damage-repaired", "a bit flipped at byte \(offset) of the offline copy was not found")
            }
            return recopied
        } catch {
            fail("damage-repaired", "the checksum pass failed: \(error)")
            return 0
        }
    }

    // MARK: Invariants

    func checkWritersReleased() {
        checks += 1
        if memory.gate.isPaused || memory.gate.throttlePercent != 0 {
            fail("writers-released", "gate paused \(memory.gate.isPaused), throttle \(memory.gate.throttlePercent)")
        }
    }

    func checkEnds(error: LiveCopyError?) {
        checks += 1
        if rounds.count > max(1, scenario.policy.maximumRounds) {
            fail("ends", "\(rounds.count) rounds exceed the limit \(scenario.policy.maximumRounds)")
        }
        if let error, error.code != .notConverging, error.code != .roundLimit {
            fail("ends", "unexpected error \(error)")
        }
    }

    func checkSwitchover(_ report: LiveCopyReport) {
        checks += 3
        if report.pagesRecopied > 0 {
            fail(
                "verification-clean",
                "\(report.pagesRecopied) pages differed after the switchover (\(report.switchover.pages) copied in the pause)"
            )
        }
        let pause = report.switchover.pause
        let budget = scenario.policy.downtimeBudget
        if let predicted = report.switchover.predictedPause, scenario.policy.strategy == .adaptive,
            predicted <= budget, pause > budget
        {
            fail(
                "pause-within-budget",
                "paused \(pause) with \(report.switchover.pages) pages, predicted \(predicted) within \(budget)")
        }
        let maximumThrottle = rounds.map(\.throttlePercent).max() ?? 0
        // Compressed pages (the writers leave most bytes zero) travel faster than the link's
        // rate, so the factor over the raw bandwidth says nothing there.
        if factor > 1, pattern != .skewed, maximumThrottle == 0, scenario.policy.strategy == .adaptive,
            destinationKind == .remote, !compression
        {
            fail("over-bandwidth-throttles-or-fails", "switched over at \(factor)x without throttling")
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

    func finish(_ report: LiveCopyReport?, error: LiveCopyError?, extraPages: Int = 0) {
        outcome = LiveCopyOutcome(
            pattern: pattern, dirtyFactor: factor, destination: destinationKind, switchedOver: report != nil,
            error: error.map { "\($0.code)" }, rounds: rounds.count, pause: report?.switchover.pause.seconds ?? 0,
            predictedPause: report?.switchover.predictedPause?.seconds,
            bytes: ((report?.pagesSent ?? rounds.map(\.pagesSent).reduce(0, +)) + extraPages) * scenario.pageSize,
            maximumThrottle: rounds.map(\.throttlePercent).max() ?? 0)
    }

    func fail(_ invariant: String, _ detail: String) {
        if violation == nil {
            violation = InvariantViolation(
                invariant: invariant, detail: "\(pattern) writes at \(factor)x to \(destinationKind): \(detail)",
                at: simulation.now)
        }
    }
}
