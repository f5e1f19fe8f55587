public import Checkpointing
public import DeterministicSimulation
import FaultToleranceCore
import LiveCopy
import Logging

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A randomized run of the shipped ``Checkpointing/CheckpointStore`` and
/// ``Checkpointing/Checkpointer`` on a pool of ``DeterministicSimulation/SimulatedDisk``s.
///
/// An application (a 16-page region and a 16-block volume) is written, checkpointed (full or
/// incremental), and its checkpoints merged, deleted, garbage collected and compacted, in a
/// random order. Between steps the power fails: at once, or after a random number of storage
/// operations so that it lands inside a capture, a commit, a merge, a delete's rebase, a
/// log compaction, a garbage collection or a data-unit compaction. Every disk then loses, keeps or tears its
/// unsynchronized writes; one seed in five also fails an `fdatasync` now and then. The store
/// is reopened, and the application restarts from its newest checkpoint.
///
/// Invariants, checked after every reopen and at the end:
/// - `reopens`: the store opens.
/// - `committed-survives`: every checkpoint whose capture (or merge) returned is there, unless
///   a delete of it was attempted.
/// - `deleted-stays-deleted`: no checkpoint whose delete returned comes back.
/// - `restore-exact`: a checkpoint restores exactly the region and volume as they were at its
///   cut (the epoch of each capture names the snapshot taken at its cut). After a reopen this
///   is checked for every checkpoint made, merged into or rebased since the last reopen, the
///   newest, and three more at random; at the end, for every checkpoint there.
/// - `verifies`: ``Checkpointing/CheckpointStore/verify(progress:)`` finds no problem.
/// - `space-within-budget` (after every operation): the store's units fit its pool's budget.
public struct CheckpointScenario: Sendable {
    /// Steps per run.
    public var steps: Int
    /// A planted bug, or `nil` for the real store.
    public var bug: CheckpointBug?

    /// Creates a scenario.
    public init(steps: Int = 120, bug: CheckpointBug? = nil) {
        self.steps = steps
        self.bug = bug
    }

    static let pages = 16
    static let pageSize = 4096

    /// The application: its items and the checkpointer over them.
    struct Application {
        let memory: TrackedMemory
        let volume: TrackedVolume
        let checkpointer: Checkpointer

        init(store: CheckpointStore, resumingFrom parent: CheckpointID?) throws {
            memory = try TrackedMemory(pageCount: CheckpointScenario.pages)
            volume = try TrackedVolume(
                MemoryStorageUnit(
                    id: UnitID(1 << 40), capacity: CheckpointScenario.pages * CheckpointScenario.pageSize),
                gate: memory.gate)
            if let parent {
                try store.restore(parent, item: "heap", into: memory)
                try store.restore(parent, item: "disk", into: volume)
            }
            var logger = Logger(label: "checkpoint.simulation")
            logger.logLevel = .critical
            checkpointer = try Checkpointer(
                application: "app", store: store, regions: ["heap": memory], volumes: ["disk": volume],
                resumingFrom: parent, wallClock: { 0 }, logger: logger)
        }

        func snapshot() throws -> (memory: [UInt8], volume: [UInt8]) {
            (try memory.read(at: 0, count: memory.byteCount), try volume.read(at: 0, count: volume.capacity))
        }
    }

    /// Whether two byte arrays are equal, compared with `memcmp` (`==` goes byte by byte).
    static func same(_ a: [UInt8], _ b: [UInt8]) -> Bool {
        guard a.count == b.count else { return false }
        return a.withUnsafeBytes { x in
            b.withUnsafeBytes { y in
                guard let left = x.baseAddress, let right = y.baseAddress else { return true }
                return memcmp(left, right, x.count) == 0
            }
        }
    }

    /// Runs one seed.
    public func run(seed: UInt64) -> SimulationReport {
        var random = SimulationRandom(seed: seed)
        var faults = FaultCounters()
        var checks = 0
        var operations = 0
        var trace = TraceHash()
        var logger = Logger(label: "checkpoint.simulation")
        logger.logLevel = .critical
        let failingSyncs = random.chance(0.2)
        let diskFaults = SimulatedDisk.Faults(
            loseUnsynchronized: 0.5, tearUnsynchronized: 0.25, synchronizeFailure: failingSyncs ? 0.01 : 0)
        // The store is made without failing fsyncs; the faults start after.
        var setupFaults = diskFaults
        setupFaults.synchronizeFailure = 0
        let pool = SimulatedStoragePool(
            unitCapacity: 128 << 10, budget: 6 << 20, faults: setupFaults, random: random.split())
        let configuration = CheckpointStore.Configuration(deflateLevel: random.chance(0.5) ? 1 : nil)

        func report(_ violation: InvariantViolation?) -> SimulationReport {
            SimulationReport(
                seed: seed, faults: faults, invariantChecks: checks, operations: operations, virtualTime: 0,
                events: steps, violation: violation, traceHash: trace.value)
        }
        func violation(_ invariant: String, _ detail: String) -> SimulationReport {
            report(InvariantViolation(invariant: invariant, detail: detail, at: .zero))
        }

        // The model: the bytes at each capture's cut, by epoch; what must be there.
        var snapshots: [UInt64: (memory: [UInt8], volume: [UInt8])] = [:]
        var committed = Set<CheckpointID>()
        var deleted = Set<CheckpointID>()
        var touched = Set<CheckpointID>()
        var epoch: UInt64 = 0

        var store: CheckpointStore
        var application: Application
        do {
            store = try CheckpointStore.open(pool: pool, configuration: configuration, logger: logger, bug: bug)
            application = try Application(store: store, resumingFrom: nil)
        } catch {
            return violation("setup", "\(error)")
        }
        pool.setFaults(diskFaults)

        /// Power loss, reopen, every check, and the application's restart.
        func crashAndCheck(final: Bool = false) -> SimulationReport? {
            let outcome = pool.crash()
            faults.writesLost += outcome.lost
            faults.writesTorn += outcome.torn
            faults.nodeCrashes += 1
            trace.mix(UInt64(outcome.lost) << 32 | UInt64(outcome.torn))
            do {
                store = try CheckpointStore.open(pool: pool, configuration: configuration, logger: logger, bug: bug)
            } catch {
                return violation("reopens", "\(error)")
            }
            checks += 1
            let present = store.checkpoints
            let ids = Set(present.map(\.id))
            if let lost = committed.subtracting(ids).min() {
                return violation("committed-survives", "\(lost) was committed and is gone (present: \(ids.sorted()))")
            }
            if let back = deleted.intersection(ids).min() {
                return violation("deleted-stays-deleted", "\(back) was deleted and is back")
            }
            // Restored: every checkpoint made or rewritten (merged into) since the last check,
            // the newest, and three others at random; every one of them at the end. (Restoring
            // all after every reopen made inflating pages most of a seed's time; the damage a
            // crash could do to an older checkpoint stays until the end, and `verify` below
            // reads every chunk.)
            // (The newest is restored by the application's restart below and compared there.)
            var sample = Set(present.filter { touched.contains($0.id) }.map(\.id))
            for _ in 0..<3 where !present.isEmpty {
                sample.insert(present[Int(random.next() % UInt64(present.count))].id)
            }
            touched.removeAll()
            let newest = store.latest(application: "app")
            for summary in present where final || (sample.contains(summary.id) && summary.id != newest?.id) {
                checks += 1
                guard let expected = snapshots[summary.epoch] else {
                    return violation("restore-exact", "\(summary.id) has epoch \(summary.epoch), never captured")
                }
                var memory = [UInt8](repeating: 0, count: Self.pages * Self.pageSize)
                var volume = memory
                do {
                    try memory.withUnsafeMutableBytes { try store.restore(summary.id, item: "heap", into: $0) }
                    try volume.withUnsafeMutableBytes { try store.restore(summary.id, item: "disk", into: $0) }
                } catch {
                    return violation("restore-exact", "\(summary.id) (epoch \(summary.epoch)): \(error)")
                }
                if !Self.same(memory, expected.memory) || !Self.same(volume, expected.volume) {
                    return violation("restore-exact", "\(summary.id) (epoch \(summary.epoch)) restores other bytes")
                }
            }
            // Verify reads every chunk again: one reopen in four, and at the end.
            if final || random.chance(0.25) {
                checks += 1
                if let problem = store.verify().problems.first { return violation("verifies", "\(problem)") }
            }
            // What is there now is what the application stands on.
            committed = ids
            do {
                application = try Application(store: store, resumingFrom: newest?.id)
                if let newest, !final {
                    checks += 1
                    let restored = try application.snapshot()
                    guard let expected = snapshots[newest.epoch] else {
                        return violation("restore-exact", "\(newest.id) has epoch \(newest.epoch), never captured")
                    }
                    if !Self.same(restored.memory, expected.memory) || !Self.same(restored.volume, expected.volume) {
                        return violation("restore-exact", "\(newest.id) (epoch \(newest.epoch)) restores other bytes")
                    }
                }
            } catch {
                return violation("restore-exact", "restarting from the newest checkpoint: \(error)")
            }
            return nil
        }

        for _ in 0..<steps {
            let roll = random.next() % 100
            trace.mix(roll)
            if roll < 16 {
                // Power fails now, or inside the next operation.
                if random.chance(0.6) {
                    pool.power.cut(afterOperations: Int(random.next() % 12))
                    attempt(&random)
                }
                if let failure = crashAndCheck() { return failure }
                continue
            }
            if roll < 50 {
                let count = Int(random.next() % 8) + 1
                do {
                    for _ in 0..<count {
                        let length = Int(random.next() % 600) + 1
                        // One draw per write: the bytes follow from it (a byte per draw cost more
                        // than the store's work).
                        var state = random.next() | 1
                        let bytes = (0..<length).map { _ -> UInt8 in
                            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                            return UInt8(truncatingIfNeeded: state >> 56) | 1
                        }
                        let span = Self.pages * Self.pageSize - length
                        try application.memory.write(bytes, at: Int(random.next() % UInt64(span)))
                        try application.volume.write(bytes, at: Int(random.next() % UInt64(span)))
                    }
                    if random.chance(0.1) {
                        // A page zeroed: an incremental must record it as zeros.
                        let page = Int(random.next() % UInt64(Self.pages))
                        try application.memory.write(
                            [UInt8](repeating: 0, count: Self.pageSize), at: page * Self.pageSize)
                    }
                } catch {
                    return violation("setup", "a write failed: \(error)")
                }
                continue
            }
            attempt(&random)
            // The store never holds more than its pool's budget (the issue allows the budget
            // plus one checkpoint; a capture that would pass it is refused before it starts).
            checks += 1
            if pool.units.count * pool.unitCapacity > pool.budget {
                return violation(
                    "space-within-budget", "\(pool.units.count) units of \(pool.unitCapacity) over \(pool.budget)")
            }
        }
        if let failure = crashAndCheck(final: true) { return failure }
        return report(nil)

        /// One store operation, which may fail (a failed fsync, power cut): then the store is
        /// reopened at the next crash.
        func attempt(_ random: inout SimulationRandom) {
            let roll = random.next() % 100
            operations += 1
            do {
                switch roll {
                case 0..<50:
                    epoch += 1
                    snapshots[epoch] = try application.snapshot()
                    let report = try application.checkpointer.checkpointBlocking(epoch: epoch, full: random.chance(0.1))
                    committed.insert(report.summary.id)
                    touched.insert(report.summary.id)
                    trace.mix(report.summary.id.rawValue)
                case 50..<65:
                    if let id = committed.sorted().randomElement(using: &random) {
                        touched.insert(id)
                        _ = try store.merge(id)
                    }
                case 65..<80:
                    if let id = committed.sorted().randomElement(using: &random) {
                        // Until the delete returns, the checkpoint may or may not be gone.
                        committed.remove(id)
                        // A delete rebases the checkpoints built on this one.
                        touched.formUnion(store.checkpoints.filter { $0.parent == id }.map(\.id))
                        try store.delete(id)
                        deleted.insert(id)
                    }
                case 80..<89:
                    try store.collectGarbage()
                case 89..<95:
                    // Compaction gives the checkpoints pointing into sparse units new manifests.
                    touched.formUnion(store.checkpoints.map(\.id))
                    try store.compact(liveFraction: [0.25, 0.5, 1][Int(random.next() % 3)])
                default:
                    // The oldest beyond the newest three may go; the ones it returns did.
                    let all = store.checkpoints.map(\.id)
                    committed.subtract(all.dropLast(3))
                    touched.formUnion(all)
                    deleted.formUnion(try store.retain(last: 3, application: "app"))
                }
            } catch {
                if let failure = error as? CheckpointError, failure.storage?.code == .synchronizeFailed {
                    faults.synchronizeFailures += 1
                }
            }
        }
    }
}
