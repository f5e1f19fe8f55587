public import DeterministicSimulation
package import DisasterRecovery
import FaultToleranceCore

/// A randomized run of the shipped ``DisasterRecovery/LazyVolume`` in virtual time: a recovered
/// workload reads, writes, discards and synchronizes through it from the first millisecond
/// while the replica builds behind it, the migration copies the overlay in rounds under
/// ``DisasterRecovery/MigrationPolicy`` and the volume switches to the replica, over overlay,
/// replica and state disks with a disk's crash semantics (``DeterministicSimulation/SimulatedDisk``).
///
/// Each seed picks the block size (512 B to 4 KiB), the volume's blocks (8 to 160), the build
/// and copy steps, the policy, and the recovery point's content (a source disk never written
/// after). Faults, on some seeds: the recovery site loses power (after a random number of
/// storage operations, so a cut falls inside a build step, a round or the switch), every disk
/// loses, keeps or tears its unsynchronized writes, and the volume is opened again from its
/// state unit.
///
/// Invariants:
/// - `reads-acknowledged`: every read returns, sector by sector, the recovery point's content
///   or, once written, the last acknowledged write or a later one; never zeros in place of data.
/// - `reopens`: after every power cut the volume opens again from its units.
/// - `migration-finishes`: once the faults stop, the volume has switched to its replica.
/// - `replica-complete`: after the switch and a last synchronize, the replica unit itself holds
///   every sector's last acknowledged content, the same that reads through the volume return.
public struct RecoveryScenario: Sendable {
    /// A planted bug, or `nil` for the shipped volume.
    package var bug: DisasterRecoveryBug?

    /// Creates a scenario.
    package init(bug: DisasterRecoveryBug? = nil) { self.bug = bug }

    /// Creates a scenario running the shipped volume.
    public init() { self.bug = nil }

    /// The planted bugs this scenario catches, by name.
    public static var bugNames: [String] {
        [DisasterRecoveryBug.switchBeforeOverlayCopied, .recordBuildBeforeSync].map(\.rawValue)
    }

    /// A scenario with the planted bug `name`, or `nil` when this scenario has none of that name.
    public init?(bugNamed name: String) {
        guard Self.bugNames.contains(name), let bug = DisasterRecoveryBug(rawValue: name) else { return nil }
        self.bug = bug
    }

    /// Runs one seed.
    public func run(seed: UInt64) -> SimulationReport {
        let run = RecoveryRun(seed: seed, bug: bug)
        run.run()
        return run.report()
    }
}

/// One seed's run; lives on the calling thread.
final class RecoveryRun {
    static let sector = 512
    static let identity: UInt64 = 0xD15A_57E2

    /// What a sector may read as, by version (0 is the recovery point's content, -1 zeros).
    typealias SectorModel = AcknowledgedContent<Int>

    let simulation: Simulation
    let bug: DisasterRecoveryBug?
    let power = PowerSwitch()
    var source: SimulatedDisk?
    var overlay: SimulatedDisk?
    var replica: SimulatedDisk?
    var state: SimulatedDisk?
    var volume: LazyVolume?
    var models: [SectorModel] = []
    var violation: InvariantViolation?
    var checks = 0
    var operations = 0
    var version = 0
    var blockSize = 4096
    var capacity = 0
    var stepBlocks = 4
    var policy = MigrationPolicy()
    var rounds = 0
    var previousRemaining: Int?
    var cuts = 0
    var restarting = false

    init(seed: UInt64, bug: DisasterRecoveryBug?) {
        simulation = Simulation(seed: seed)
        self.bug = bug
    }

    var random: SimulationRandom {
        get { simulation.random }
        set { simulation.random = newValue }
    }

    func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(random.next() % UInt64(range.count))
    }

    func fail(_ invariant: String, _ detail: String) {
        guard violation == nil else { return }
        violation = InvariantViolation(invariant: invariant, detail: detail, at: simulation.now)
    }

    func report() -> SimulationReport {
        SimulationReport(
            seed: simulation.seed, faults: simulation.faults, invariantChecks: checks, operations: operations,
            virtualTime: simulation.now.nanoseconds, events: simulation.eventsProcessed, violation: violation,
            traceHash: simulation.traceHash)
    }

    /// Sector `sector`'s bytes at `version`: a stamp of both, then a fill derived from them.
    static func pattern(sector: Int, version: Int) -> [UInt8] {
        guard version >= 0 else { return [UInt8](repeating: 0, count: Self.sector) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.sector)
        bytes.appendLE(UInt64(sector))
        bytes.appendLE(UInt64(version))
        let fill = UInt8(truncatingIfNeeded: sector &* 31 &+ version &* 13) | 1
        bytes += [UInt8](repeating: fill, count: Self.sector - 16)
        return bytes
    }

    func run() {
        blockSize = [512, 1024, 4096][int(0...2)]
        let blocks = int(8...160)
        capacity = blocks * blockSize
        stepBlocks = int(1...16)
        policy = MigrationPolicy(switchAtBlocks: int(0...8), maximumRounds: int(2...24))
        let faults = SimulatedDisk.Faults(loseUnsynchronized: 0.3, tearUnsynchronized: 0.3)
        let sourceDisk = SimulatedDisk(id: UnitID(1), capacity: capacity, random: random.split())
        let stateSize = LazyVolumeHeader.stateSize(capacity: capacity, blockSize: blockSize)
        overlay = SimulatedDisk(id: UnitID(2), capacity: capacity, faults: faults, random: random.split(), power: power)
        replica = SimulatedDisk(id: UnitID(3), capacity: capacity, faults: faults, random: random.split(), power: power)
        state = SimulatedDisk(id: UnitID(4), capacity: stateSize, faults: faults, random: random.split(), power: power)
        models = Array(repeating: SectorModel(0), count: capacity / Self.sector)
        do {
            for sector in 0..<models.count {
                try sourceDisk.write(Self.pattern(sector: sector, version: 0), at: sector * Self.sector)
            }
            try sourceDisk.synchronize()
            source = sourceDisk
            guard let overlay, let replica, let state else { return }
            // The replica and overlay start with stale bytes: nothing may read them unwritten.
            try replica.write([UInt8](repeating: 0xEE, count: capacity), at: 0)
            try overlay.write([UInt8](repeating: 0xDD, count: capacity), at: 0)
            try replica.synchronize()
            try overlay.synchronize()
            volume = try LazyVolume.create(
                identity: Self.identity, source: ImageRecoveryPoint(unit: sourceDisk), overlay: overlay,
                replica: replica, state: state, blockSize: blockSize, bug: bug)
        } catch {
            fail("setup", "\(error)")
            return
        }
        let duration = Duration.milliseconds(int(300...1200))
        if random.chance(0.7) {
            for _ in 0..<int(1...3) {
                let at = Instant.zero + .milliseconds(int(1...Int(duration.components.seconds * 1000 + 300) - 1))
                _ = simulation.schedule(at: at) { [unowned self] in
                    guard !power.isCut, !restarting else { return }
                    power.cut(afterOperations: int(0...30))
                }
            }
        }
        scheduleWorkload(until: Instant.zero + duration)
        scheduleRecovery()
        simulation.run(until: Instant.zero + duration)
        guard violation == nil else { return }
        // Quiet: no faults, the workload stopped; the migration must finish.
        if power.isCut || volume == nil { restart() }
        for _ in 0..<10_000 {
            guard violation == nil, let volume, volume.phase != .switched else { break }
            recoveryStep()
        }
        guard violation == nil, let volume else { return }
        checks += 1
        guard volume.phase == .switched else {
            fail("migration-finishes", "after the faults stopped the volume is \(volume.progress)")
            return
        }
        synchronize()
        checkReplica()
        let progress = volume.progress
        simulation.trace(UInt64(progress.overlayBlocksCopied) << 32 | UInt64(progress.blocksCopiedInSwitch))
    }

    // MARK: - Workload

    func scheduleWorkload(until end: Instant) {
        _ = simulation.schedule(after: .milliseconds(1)) { [unowned self] in
            guard violation == nil, simulation.now < end else { return }
            workloadStep()
            scheduleWorkload(until: end)
        }
    }

    func workloadStep() {
        guard !power.isCut, volume != nil else { return }
        let sectors = models.count
        let first = int(0...sectors - 1)
        let count = min(sectors - first, int(1...max(1, 2 * blockSize / Self.sector)))
        switch int(0...99) {
        case 0..<45: write(first: first, count: count)
        case 45..<50: discard(first: first, count: count)
        case 50..<75: read(first: first, count: count)
        default: synchronize()
        }
    }

    func write(first: Int, count: Int) {
        guard let volume else { return }
        operations += 1
        version += 1
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count * Self.sector)
        for sector in first..<first + count {
            models[sector].written(version)
            bytes += Self.pattern(sector: sector, version: version)
        }
        do {
            try volume.write(bytes, at: first * Self.sector)
        } catch {
            failed("write", error)
        }
    }

    func discard(first: Int, count: Int) {
        guard let volume else { return }
        operations += 1
        for sector in first..<first + count { models[sector].written(-1) }
        do {
            try volume.discard(first * Self.sector..<(first + count) * Self.sector)
        } catch {
            failed("discard", error)
        }
    }

    func read(first: Int, count: Int) {
        guard let volume else { return }
        operations += 1
        let bytes: [UInt8]
        do {
            bytes = try volume.read(at: first * Self.sector, count: count * Self.sector)
        } catch {
            failed("read", error)
            return
        }
        checks += 1
        for sector in first..<first + count {
            let start = (sector - first) * Self.sector
            let got = bytes[start..<start + Self.sector]
            if !models[sector].candidates.contains(where: { Self.pattern(sector: sector, version: $0)[...] == got }) {
                fail(
                    "reads-acknowledged",
                    "sector \(sector) (block \(sector * Self.sector / blockSize)) read as \(describe(got)); "
                        + "acknowledged \(models[sector].acknowledged), unacknowledged "
                        + "\(models[sector].beforeCut + models[sector].later); \(volume.progress)")
                return
            }
        }
    }

    func synchronize() {
        guard let volume else { return }
        operations += 1
        do {
            try volume.synchronize()
            for index in models.indices { models[index].synchronized() }
        } catch {
            failed("synchronize", error)
        }
    }

    func describe(_ bytes: ArraySlice<UInt8>) -> String {
        let raw = Array(bytes)
        if raw.allSatisfy({ $0 == 0 }) { return "zeros" }
        return
            "stamp sector \(raw.loadLE(UInt64.self, at: 0)) version \(Int64(bitPattern: raw.loadLE(UInt64.self, at: 8)))"
    }

    /// An operation failed: fine while the power is out (the site is going down), a violation otherwise.
    func failed(_ operation: String, _ error: any Error) {
        if power.isCut {
            scheduleRestart()
        } else {
            fail("reads-acknowledged", "\(operation) failed with the power on: \(error)")
        }
    }

    // MARK: - Recovery

    func scheduleRecovery() {
        _ = simulation.schedule(after: .milliseconds(2)) { [unowned self] in
            guard violation == nil else { return }
            if !power.isCut, let volume, volume.phase != .switched { recoveryStep() }
            scheduleRecovery()
        }
    }

    func recoveryStep() {
        guard let volume else { return }
        do {
            switch volume.phase {
            case .building:
                try volume.buildStep(maximumBlocks: stepBlocks)
            case .migrating:
                let remaining = try volume.copyRound(maximumBlocks: stepBlocks)
                rounds += 1
                if policy.decide(rounds: rounds, remaining: remaining, previous: previousRemaining) == .switchNow {
                    try volume.switchToReplica()
                }
                previousRemaining = remaining
            case .switched:
                return
            }
        } catch {
            failed("recovery step", error)
        }
    }

    // MARK: - Power

    func scheduleRestart() {
        guard !restarting else { return }
        restarting = true
        _ = simulation.schedule(after: .milliseconds(3)) { [unowned self] in restart() }
    }

    /// The recovery site comes back: every disk keeps, loses or tears its unsynchronized writes,
    /// and the volume opens from its state unit.
    func restart() {
        restarting = false
        guard let source, let overlay, let replica, let state else { return }
        cuts += 1
        simulation.faults.nodeCrashes += 1
        power.restore()
        for disk in [overlay, replica, state] {
            let outcome = disk.crash()
            simulation.faults.writesLost += outcome.lost
            simulation.faults.writesTorn += outcome.torn
            simulation.faults.writesSurvived += outcome.survived
        }
        for index in models.indices { models[index].powerCut() }
        rounds = 0
        previousRemaining = nil
        volume = nil
        checks += 1
        do {
            volume = try LazyVolume.open(
                identity: Self.identity, source: ImageRecoveryPoint(unit: source), overlay: overlay, replica: replica,
                state: state, bug: bug)
        } catch {
            fail("reopens", "after power cut \(cuts): \(error)")
        }
    }

    /// After the switch and a last synchronize: the replica unit holds what reads return.
    func checkReplica() {
        guard let replica, let volume else { return }
        checks += 1
        do {
            let stored = try replica.read(at: 0, count: capacity)
            let seen = try volume.read(at: 0, count: capacity)
            for sector in models.indices {
                let range = sector * Self.sector..<(sector + 1) * Self.sector
                let candidates = [models[sector].acknowledged] + models[sector].beforeCut
                guard candidates.contains(where: { Self.pattern(sector: sector, version: $0)[...] == stored[range] }),
                    stored[range] == seen[range]
                else {
                    fail(
                        "replica-complete",
                        "sector \(sector) of the replica holds \(describe(stored[range])), reads return "
                            + "\(describe(seen[range])); acknowledged \(models[sector].acknowledged)")
                    return
                }
            }
        } catch {
            fail("replica-complete", "reading the replica: \(error)")
        }
    }
}
