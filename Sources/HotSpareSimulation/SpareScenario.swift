public import DeterministicSimulation
import FaultToleranceCore
public import HotSpare
import NIOConcurrencyHelpers

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A randomized run of the shipped ``HotSpare/StorageArray`` and ``HotSpare/SpareController``
/// in virtual time, over members that keep a disk's crash semantics (``DeterministicSimulation/SimulatedDisk``)
/// and a flash drive's wear (``HotSpare/SimulatedFlash``).
///
/// Each seed picks a layout (mirror of two or four members, or two or three concatenated), one
/// or two spares and the blocks per role; one member has little over-provisioning, so random
/// host writes wear it and the controller's monitor proposes its migration. Host writes,
/// discards, synchronizes and reads of whole blocks run every millisecond; the controller polls
/// every 5 ms (8 role slots a step). Faults, each on some seeds: a member dies (a mirror then
/// runs degraded and the controller rebuilds onto a spare; a concatenated range becomes
/// unavailable), the migration's target dies, and the power is cut (at a random moment, or
/// right before the migration's last step, so that it falls in the swap) — every disk then
/// loses, keeps or tears its unsynchronized writes, and the array is assembled again from its
/// members.
///
/// Invariants:
/// - `reads-acknowledged`: every read returns, sector by sector, the block's last acknowledged
///   content or something written after it; never anything else, never zeros in place of
///   data. A read may fail only for a concatenated range whose member died.
/// - `copies-acknowledged`: after a restart, and at every step of a proactive mirror migration
///   with no member failed, each serving copy of a block (both members of its pair, and the
///   migration's target below its resume point) holds such content: no block is ever down to one
///   copy while a member is replaced.
/// - `migration-finishes`: once the faults stop, a migration that started has finished, the
///   member it left erased and made a spare.
public struct SpareScenario: Sendable {
    /// A planted bug, or `nil` for the shipped array.
    package var bug: HotSpareBug?

    /// Creates a scenario.
    package init(bug: HotSpareBug? = nil) { self.bug = bug }

    /// Creates a scenario running the shipped array.
    public init() { self.bug = nil }

    /// The planted bugs, by name.
    public static var bugNames: [String] { HotSpareBug.allCases.map(\.rawValue) }

    /// A scenario with the planted bug `name`, or `nil` when there is none of that name.
    public init?(bugNamed name: String) {
        guard let bug = HotSpareBug(rawValue: name) else { return nil }
        self.bug = bug
    }

    /// Runs one seed.
    public func run(seed: UInt64) -> SimulationReport {
        let run = SpareRun(seed: seed, bug: bug)
        run.run()
        return run.report()
    }
}

/// A member: a disk for the bytes and their crash semantics, a flash model for the wear, and
/// a switch that kills it.
final class WornDisk: StorageUnit, WearSource, @unchecked Sendable {
    // unchecked: `dead` is guarded by its box; the disk and the flash lock themselves.
    let disk: SimulatedDisk
    let flash: SimulatedFlash
    private let dead = NIOLockedValueBox(false)

    init(disk: SimulatedDisk, flash: SimulatedFlash) {
        self.disk = disk
        self.flash = flash
    }

    var id: UnitID { disk.id }
    var capacity: Int { disk.capacity }
    var isDead: Bool { dead.withLockedValue { $0 } }
    func kill() { dead.withLockedValue { $0 = true } }

    private func alive() throws(StorageError) {
        if isDead { throw StorageError(.ioFailed, unit: id, errno: 5, detail: "the member died") }
    }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        try alive()
        try disk.read(into: buffer, at: offset)
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        try alive()
        try disk.write(bytes, at: offset)
        try flash.write(bytes, at: offset)
    }

    func synchronize() throws(StorageError) {
        try alive()
        try disk.synchronize()
    }

    func discard(_ range: Range<Int>) throws(StorageError) {
        try alive()
        try disk.discard(range)
        try flash.discard(range)
    }

    func wearCounts() -> (media: UInt64, host: UInt64)? {
        isDead ? nil : flash.wearCounts()
    }
}

/// Carries the run, weakly (the disks' hooks must not keep it alive), into a `@Sendable` hook
/// that runs on the simulation's one thread.
final class WeakRun: @unchecked Sendable {
    // unchecked: set once, read on the simulation's thread.
    weak var value: SpareRun?
    init(_ value: SpareRun) { self.value = value }
}

/// One seed's run; lives on the calling thread.
final class SpareRun {
    static let block = 4096
    static let sector = 512
    static let arrayID: UInt64 = 0x5A4E_5EED

    /// What a block may read as (a cut may also leave a mix of its candidates' sectors).
    typealias BlockModel = AcknowledgedContent<[UInt8]>

    let simulation: Simulation
    let bug: HotSpareBug?
    let power = PowerSwitch()
    var units: [WornDisk] = []
    var array: StorageArray?
    var controller: SpareController?
    var models: [BlockModel] = []
    var violation: InvariantViolation?
    var checks = 0
    var operations = 0
    var version = 0
    var stepBlocks = 8
    var migrationsStarted = 0
    var migrationsFinished = 0
    var cutBeforeLastStep = false
    var faultsStopAt = Instant.zero
    var layout = ArrayLayout.mirror

    init(seed: UInt64, bug: HotSpareBug?) {
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

    static func pattern(block index: Int, version: Int) -> [UInt8] {
        [UInt8](unsafeUninitializedCapacity: block) { buffer, initialized in
            for position in 0..<block / sector {
                let value = UInt8(truncatingIfNeeded: position &* 31 &+ index &* 7 &+ version &* 13) | 1
                UnsafeMutableBufferPointer(rebasing: buffer[position * sector..<(position + 1) * sector])
                    .initialize(repeating: value)
            }
            initialized = block
        }
    }

    /// Whether each sector of `bytes` is the same sector of the acknowledged content or of a
    /// later write.
    static func allows(_ model: BlockModel, _ bytes: [UInt8]) -> Bool {
        guard bytes.count == block else { return false }
        return bytes.withUnsafeBytes { read -> Bool in
            guard let readBase = read.baseAddress else { return false }
            for start in stride(from: 0, to: block, by: sector) {
                var matched = false
                for candidate in model.candidates where !matched {
                    matched = candidate.withUnsafeBytes { expected in
                        guard let base = expected.baseAddress, expected.count == block else { return false }
                        return memcmp(base + start, readBase + start, sector) == 0
                    }
                }
                if !matched { return false }
            }
            return true
        }
    }

    func run() {
        defer { for unit in units { unit.disk.setSynchronizeHook(nil) } }
        layout = random.chance(0.7) ? .mirror : .concatenated
        let memberCount = layout == .mirror ? (random.chance(0.5) ? 2 : 4) : int(2...3)
        let spareCount = int(1...2)
        let blocksPerRole = int(24...64)
        stepBlocks = int(3...10)
        // Label, two record slots (one page each at these sizes), the data region.
        let capacity = (3 + blocksPerRole) * Self.block
        let worn = int(0...memberCount - 1)
        for index in 0..<memberCount + spareCount {
            let id = UnitID(UInt64(index + 1))
            let disk = SimulatedDisk(id: id, capacity: capacity, random: random.split(), power: power)
            let overProvisioning = index == worn ? 0.07 : 0.6
            guard
                let flash = try? SimulatedFlash(
                    id: id, capacity: capacity, geometry: .init(pagesPerBlock: 2, overProvisioning: overProvisioning))
            else {
                fail("setup", "flash geometry refused")
                return
            }
            units.append(WornDisk(disk: disk, flash: flash))
        }
        do {
            let array = try StorageArray.create(
                id: UnitID(100), members: Array(units[0..<memberCount]), spares: Array(units[memberCount...]),
                configuration: .init(layout: layout, blockSize: Self.block, arrayID: Self.arrayID), bug: bug)
            self.array = array
            models = (0..<array.geometry.blockCount).map { _ in
                BlockModel([UInt8](repeating: 0, count: Self.block))
            }
            makeController(array)
        } catch {
            fail("setup", "\(error)")
            return
        }
        let duration = Duration.milliseconds(int(1500...2500))
        faultsStopAt = Instant.zero + duration * 0.7
        scheduleFaults(duration: duration * 0.7, memberCount: memberCount)
        scheduleHost(until: Instant.zero + duration)
        schedulePolls()
        simulation.run(until: Instant.zero + duration)
        guard violation == nil, array != nil else { return }
        // Quiet: no faults, no host writes; any migration must finish.
        for _ in 0..<1000 {
            guard let array, array.status.migration != nil || !array.status.erasing.isEmpty else { break }
            poll()
            guard violation == nil else { return }
        }
        if let array {
            let status = array.status
            checks += 1
            if status.migration != nil || !status.erasing.isEmpty {
                fail("migration-finishes", "after the faults stopped: \(status)")
            }
            checkEveryCopy("at the end")
        }
        simulation.trace(UInt64(migrationsStarted) << 32 | UInt64(migrationsFinished))
    }

    func makeController(_ array: StorageArray) {
        var sources: [UnitID: any WearSource] = [:]
        for unit in units { sources[unit.id] = unit }
        controller = SpareController(
            array: array, sources: sources,
            policy: .init(
                threshold: 1.4, clearBelow: 1.2, window: .milliseconds(300), minimumDwell: .milliseconds(40),
                minimumHostBytes: UInt64(Self.block * array.geometry.blocksPerRole)),
            stepBlocks: stepBlocks)
    }

    // MARK: - Host

    func scheduleHost(until end: Instant) {
        _ = simulation.schedule(after: .milliseconds(1)) { [weak self] in
            guard let self else { return }
            guard violation == nil, simulation.now < end else { return }
            hostOperation()
            scheduleHost(until: end)
        }
    }

    func hostOperation() {
        guard let array else { return }
        let index = int(0...models.count - 1)
        let roll = int(0...99)
        do {
            switch roll {
            case 0..<60:
                version += 1
                let bytes = Self.pattern(block: index, version: version)
                models[index].written(bytes)
                try array.write(bytes, at: index * Self.block)
                operations += 1
            case 60..<66:
                models[index].written([UInt8](repeating: 0, count: Self.block))
                try array.discard(index * Self.block..<(index + 1) * Self.block)
            case 66..<80:
                try array.synchronize()
                for position in models.indices { models[position].synchronized() }
            default:
                checks += 1
                let bytes = try array.read(at: index * Self.block, count: Self.block)
                if !Self.allows(models[index], bytes) {
                    fail(
                        "reads-acknowledged",
                        "block \(index) read what was never written there (\(array.status); dead "
                            + "\(units.filter(\.isDead).map(\.id)), power cut \(power.isCut), "
                            + "\(models[index].later.count) later writes; first bytes \(bytes[0]) \(bytes[512]), "
                            + "acknowledged \(models[index].acknowledged[0]))")
                }
            }
            simulation.trace(UInt64(roll) << 32 | UInt64(index))
        } catch {
            handle(error, during: "host operation on block \(index)")
        }
    }

    /// A power cut restarts the array; a dead member's range of a concatenated array may be
    /// unavailable; anything else is a violation.
    func handle(_ error: StorageError, during what: String) {
        if power.isCut {
            restart()
            return
        }
        if error.code == .unavailable, layout == .concatenated, units.contains(where: \.isDead) { return }
        fail("reads-acknowledged", "\(what): \(error)")
    }

    // MARK: - Controller

    func schedulePolls() {
        _ = simulation.schedule(after: .milliseconds(5)) { [weak self] in
            guard let self else { return }
            guard violation == nil else { return }
            poll()
            schedulePolls()
        }
    }

    func poll() {
        guard let controller, let array else { return }
        if pendingLastStepCut, !cutBeforeLastStep, let migration = array.status.migration,
            migration.resumeFrom + stepBlocks >= array.geometry.blocksPerRole
        {
            // Cut the power somewhere in the last step: its copies, the progress record, the
            // swap, the erase.
            cutBeforeLastStep = true
            power.cut(afterOperations: int(0...40))
            simulation.faults.nodeCrashes += 1
        }
        do {
            let event = try controller.poll(now: simulation.now)
            switch event {
            case .migrationStarted, .rebuildStarted:
                migrationsStarted += 1
                swapWatch.withLockedValue { $0.target = array.status.migration?.target }
                simulation.trace(1)
            case .finished(let report):
                migrationsFinished += 1
                simulation.trace(2 &+ UInt64(report.bytesCopied))
            case .copied(let done, _):
                simulation.trace(3 &+ UInt64(done))
                checkMirrorCopiesDuringMigration()
            case nil:
                break
            }
        } catch {
            if power.isCut {
                restart()
            } else if error.code == .unavailable, units.contains(where: \.isDead) {
                // Nothing left to copy from (a concatenated member died): abandoned.
            } else {
                fail("migration-finishes", "poll: \(error)")
            }
        }
    }

    var pendingLastStepCut = false

    func checkMirrorCopiesDuringMigration() {
        guard layout == .mirror, let array, !units.contains(where: \.isDead),
            array.status.migration?.kind == .proactive
        else { return }
        checkEveryCopy("during the migration")
    }

    /// Each serving copy of every block: the roles' members that have not failed, and the
    /// migration's target below its resume point.
    func checkEveryCopy(_ when: String) {
        guard let array, violation == nil else { return }
        for index in models.indices {
            for copy in array.copies(ofBlock: index) {
                guard let unit = copy.unit as? WornDisk, !unit.isDead else { continue }
                checks += 1
                guard let bytes = try? unit.read(at: copy.offset, count: Self.block) else { continue }
                if !Self.allows(models[index], bytes) {
                    fail(
                        "copies-acknowledged",
                        "\(when): block \(index)'s copy on \(copy.member) is wrong (at \(copy.offset), first bytes "
                            + "\(bytes[0]) \(bytes[512]), may be \(models[index].candidates.map { $0[0] }); \(array.status))"
                    )
                    return
                }
            }
        }
    }

    // MARK: - Faults

    /// The swap the power cut waits for: the migration's target, once the array names it in
    /// its role (the swap's record is being written).
    struct SwapWatch {
        var armed = false
        var target: UnitID?
    }

    let swapWatch = NIOLockedValueBox(SwapWatch())

    /// Arms a power cut at the first synchronize of the swap's record (on its first member):
    /// the record may be lost there, and the old member must still hold its data.
    func armSwapCut() {
        swapWatch.withLockedValue { $0.armed = true }
        let box = WeakRun(self)
        for unit in units {
            unit.disk.setSynchronizeHook { _ in
                guard let run = box.value else { return }
                let target = run.swapWatch.withLockedValue { $0.armed ? $0.target : nil }
                guard let target, let status = run.array?.status, status.migration == nil,
                    status.roles.contains(target)
                else { return }
                run.swapWatch.withLockedValue { $0.armed = false }
                run.power.cut(afterOperations: 0)
                run.simulation.faults.nodeCrashes += 1
            }
        }
    }

    func scheduleFaults(duration: Duration, memberCount: Int) {
        func at(_ action: @escaping () -> Void) {
            _ = simulation.schedule(after: random.duration(in: .zero...duration), action)
        }
        if random.chance(0.3) {
            let victim = int(0...memberCount - 1)
            at { [weak self] in
                guard let self else { return }
                guard let array, !units[victim].isDead, array.status.roles.contains(units[victim].id) else { return }
                // One member at a time: a mirror's pair must keep a copy.
                guard !units.contains(where: \.isDead) else { return }
                units[victim].kill()
                simulation.faults.nodeCrashes += 1
                simulation.trace(0xDEAD &+ UInt64(victim))
            }
        }
        if random.chance(0.15) {
            at { [weak self] in
                guard let self else { return }
                guard let target = array?.status.migration?.target,
                    let unit = units.first(where: { $0.id == target }), !units.contains(where: \.isDead)
                else { return }
                unit.kill()
                simulation.faults.nodeCrashes += 1
            }
        }
        if random.chance(0.6) {
            switch int(0...2) {
            case 0:
                armSwapCut()
            case 1:
                pendingLastStepCut = true
            default:
                at { [weak self] in
                    guard let self else { return }
                    power.cut(afterOperations: int(0...30))
                    simulation.faults.nodeCrashes += 1
                }
            }
        }
    }

    /// Power is back: every disk loses, keeps or tears what it had not synchronized, and the
    /// array is assembled again from the members that still answer.
    func restart() {
        power.restore()
        for position in models.indices { models[position].powerCut() }
        for unit in units {
            let outcome = unit.disk.crash()
            simulation.faults.writesLost += outcome.lost
            simulation.faults.writesTorn += outcome.torn
            simulation.faults.writesSurvived += outcome.survived
        }
        simulation.faults.nodeRestarts += 1
        let alive = units.filter { !$0.isDead }
        do {
            let array = try StorageArray.open(
                id: UnitID(100), units: alive, allowMissing: alive.count < units.count, bug: bug)
            self.array = array
            makeController(array)
        } catch {
            if layout == .concatenated, alive.count < units.count {
                // A dead member's only copy is gone: nothing to assemble, nothing to check.
                array = nil
                return
            }
            fail("copies-acknowledged", "the array did not assemble after a power cut: \(error)")
            return
        }
        // Everything acknowledged survived, on every copy.
        for index in models.indices {
            guard let array else { return }
            checks += 1
            do {
                let bytes = try array.read(at: index * Self.block, count: Self.block)
                if !Self.allows(models[index], bytes) {
                    fail("reads-acknowledged", "after the restart, block \(index) read what was never written there")
                    return
                }
            } catch {
                handle(error, during: "read of block \(index) after the restart")
                if violation != nil { return }
            }
        }
        checkEveryCopy("after the restart")
    }
}
