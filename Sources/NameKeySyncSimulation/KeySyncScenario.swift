public import DeterministicSimulation
import FaultToleranceCore
import Logging
public import NameKeySync

/// A randomized run of the shipped name-key sync runtimes (a ``NameKeySync/KeySyncClient`` on
/// the backup, a ``NameKeySync/KeySyncServer`` on the active, each over a
/// ``NameKeySync/MemoryNameKeyStore``) on a simulated network, in virtual time.
///
/// Each seed picks the stores' schema versions (the backup's at least the active's; on one seed
/// in five the active runs code that knows one version fewer, so fingerprints are taken at
/// different versions and the sync must stream), a conflict rule, a backup-only policy, a sketch
/// of 128 symbols (so large differences overflow it) and, on one seed in seven, the seed's
/// key-list protocol. Then three rounds: both stores are written and deleted from at random,
/// one or both may be migrated, and the backup syncs from the active while the links lose,
/// duplicate and reorder messages and either side may crash mid-sync (the backup's sync is cut
/// off and retried; the active restarts after a while).
///
/// Invariants:
/// - `agrees-after-sync`: after a completed sync, every key of the backup is what the conflict
///   rule and the backup-only policy say (the active's record migrated to the backup's version,
///   the backup's own, or absent), and no other key exists.
/// - `interrupted-keeps-applied`: after an interrupted sync, every key holds its value from
///   before the sync or the one the sync should give it, and a key that got its new value keeps
///   it through later attempts.
/// - `retry-completes`: some attempt of each round completes.
/// - `remembers-last-sync`: after a completed sync, the backup's mark for the active holds the
///   active's generation and the backup's own (nothing writes either store during a sync).
public struct KeySyncScenario: Sendable {
    /// A planted bug, or `nil` for the shipped protocol.
    public var bug: KeySyncSession.Bug?

    /// Creates a scenario.
    public init(bug: KeySyncSession.Bug? = nil) { self.bug = bug }

    /// Runs one seed.
    public func run(seed: UInt64) async -> SimulationReport {
        let world = AsyncSimulation(
            seed: seed,
            linkConditions: LinkConditions(
                lossProbability: 0.03, duplicateProbability: 0.03, reorderProbability: 0.05,
                delay: .milliseconds(1) ... .milliseconds(10)))
        let run = KeySyncRun(world: world, bug: bug)
        do {
            try await world.run(timeLimit: .seconds(3600), maximumJobs: 20_000_000) { try await run.run() }
        } catch {
            run.fail("ends", "\(error)")
        }
        return run.report(seed: seed)
    }
}

/// One simulated run; lives on the simulation's driver thread, hence unchecked Sendable.
final class KeySyncRun: @unchecked Sendable {
    static let silent = Logger(label: "ft.keysync.simulation", factory: { _ in SwiftLogNoOpLogHandler() })
    static let activeNode: NodeID = "active"
    static let backupNode: NodeID = "backup"

    let world: AsyncSimulation
    let bug: KeySyncSession.Bug?
    var violation: InvariantViolation?
    var checks = 0
    var written = 0
    var stamp: UInt64 = 0
    var serverTask: Task<Void, any Error>?

    init(world: AsyncSimulation, bug: KeySyncSession.Bug?) {
        self.world = world
        self.bug = bug
    }

    var random: SimulationRandom {
        get { world.simulation.random }
        set { world.simulation.random = newValue }
    }

    func fail(_ invariant: String, _ detail: String) {
        guard violation == nil else { return }
        violation = InvariantViolation(invariant: invariant, detail: detail, at: world.simulation.now)
    }

    func report(seed: UInt64) -> SimulationReport {
        SimulationReport(
            seed: seed, faults: world.simulation.faults, invariantChecks: checks, operations: written,
            virtualTime: world.simulation.now.nanoseconds, events: world.simulation.eventsProcessed,
            violation: violation, traceHash: world.simulation.traceHash)
    }

    func int(_ range: ClosedRange<Int>) -> Int {
        range.lowerBound + Int(random.next() % UInt64(range.count))
    }

    func randomRecord(key: String) -> NameKeyRecord {
        stamp += 1 + random.next() % 3
        var fields = ["qty": "\(random.next() % 50)", "name": "item \(random.next() % 7)"]
        if random.chance(0.5) { fields["legacy"] = "l\(random.next() % 3)" }
        return NameKeyRecord(key: key, version: 1, stamp: stamp, fields: fields)
    }

    func run() async throws {
        let full = Schema.inventory
        let olderCode = random.chance(0.2)
        let activeSchema = olderCode ? Schema(migrations: Array(full.migrations.prefix(1))) : full
        let active = try MemoryNameKeyStore(
            schema: activeSchema, version: int(1...activeSchema.latest), sketchCapacity: 128)
        let backup = try MemoryNameKeyStore(
            schema: full, version: int(active.version...full.latest), sketchCapacity: 128)
        let seedProtocol = random.chance(1.0 / 7)
        let rule: ConflictRule = random.chance(0.5) ? .activeWins : .lastWriterWins
        let policy = BackupOnlyPolicy.allCases[int(0...2)]
        let options = KeySyncSession.Options(
            syncProtocol: seedProtocol ? .seed : .reconcile, conflictRule: seedProtocol ? .activeWins : rule,
            backupOnly: policy, firstSymbols: 16, batch: int(8...64), fetchBatch: int(8...64))
        // A common history, then drift.
        let keys = (0..<int(10...120)).map { "k\($0)" }
        var common: [StoreChange] = []
        for key in keys { common.append(.put(randomRecord(key: key))) }
        try active.apply(common)
        try backup.apply(common)
        startServer(active)
        for round in 0..<3 {
            try write(active, keys: keys, fraction: [0.0, 0.02, 0.2, 0.8][int(0...3)])
            try write(backup, keys: keys, fraction: [0.0, 0.02, 0.1][int(0...2)])
            if random.chance(0.2), active.version < activeSchema.latest { try active.migrate(to: active.version + 1) }
            if random.chance(0.2), backup.version < full.latest { try backup.migrate(to: backup.version + 1) }
            if active.version > backup.version { try backup.migrate(to: active.version) }
            let expected = try expectation(active: active, backup: backup, options: options)
            try await sync(backup: backup, options: options, expected: expected, round: round)
            if violation != nil { return }
        }
        serverTask?.cancel()
    }

    func write(_ store: MemoryNameKeyStore, keys: [String], fraction: Double) throws {
        var changes: [StoreChange] = []
        for key in keys where random.chance(fraction) {
            changes.append(random.chance(0.15) ? .delete(key) : .put(randomRecord(key: key)))
        }
        // New keys on this side only.
        for _ in 0..<Int(Double(keys.count) * fraction / 4) {
            changes.append(.put(randomRecord(key: "n\(random.next() % 100_000)")))
        }
        try store.apply(changes)
    }

    /// What the backup must hold after a completed sync, by key.
    func expectation(
        active: MemoryNameKeyStore, backup: MemoryNameKeyStore, options: KeySyncSession.Options
    ) throws -> [String: NameKeyRecord] {
        var expected: [String: NameKeyRecord] = [:]
        for record in backup.allRecords { expected[record.key] = record }
        let schema = backup.schema
        if options.syncProtocol == .seed {
            for record in active.allRecords where expected[record.key] != nil {
                let migrated = try schema.migrate(record, to: backup.version)
                expected[migrated.key] = migrated
            }
            return expected
        }
        var activeKeys = Set<String>()
        for record in active.allRecords {
            let migrated = try schema.migrate(record, to: backup.version)
            activeKeys.insert(migrated.key)
            if let mine = expected[migrated.key] {
                if try schema.fingerprint(of: mine) == schema.fingerprint(of: migrated) { continue }
                let takesActive: Bool
                switch options.conflictRule {
                case .lastWriterWins: takesActive = migrated.stamp >= mine.stamp
                default: takesActive = true
                }
                if takesActive { expected[migrated.key] = migrated }
            } else {
                expected[migrated.key] = migrated
            }
        }
        if options.backupOnly == .delete {
            for key in Array(expected.keys) where !activeKeys.contains(key) { expected[key] = nil }
        }
        return expected
    }

    func startServer(_ store: MemoryNameKeyStore) {
        world.network.restart(Self.activeNode)
        let server = KeySyncServer(
            store: store, transport: world.network.transport(for: Self.activeNode), logger: Self.silent,
            blockingIO: .inline)
        serverTask = world.spawn { try await server.run() }
        activeStore = store
    }

    var activeStore: MemoryNameKeyStore?

    func sync(
        backup: MemoryNameKeyStore, options: KeySyncSession.Options, expected: [String: NameKeyRecord], round: Int
    ) async throws {
        var before: [String: NameKeyRecord] = [:]
        for record in backup.allRecords { before[record.key] = record }
        var settled = Set<String>()
        for attempt in 0..<8 {
            world.network.restart(Self.backupNode)
            let transport = world.network.transport(for: Self.backupNode)
            let base = random.next() >> 2
            let client = KeySyncClient(
                store: backup, transport: transport, clock: world.clock, replyTimeout: .milliseconds(100),
                logger: Self.silent, blockingIO: .inline, requestBase: { base })
            let bug = self.bug
            let syncTask = world.spawn { try await client.sync(with: Self.activeNode, options: options, bug: bug) }
            // Faults in the later attempts are rarer, so a round ends.
            let faulty = attempt < 5 && random.chance(0.4)
            var crashedActive = false
            if faulty {
                try await world.clock.sleep(for: random.duration(in: .milliseconds(1) ... .milliseconds(60)))
                if random.chance(0.5) {
                    syncTask.cancel()
                    world.network.crash(Self.backupNode)
                    world.simulation.faults.nodeCrashes += 1
                } else {
                    serverTask?.cancel()
                    world.network.crash(Self.activeNode)
                    world.simulation.faults.nodeCrashes += 1
                    crashedActive = true
                    // The active comes back while the backup still retries (or after it gave up).
                    let delay = random.duration(in: .milliseconds(10) ... .milliseconds(600))
                    world.spawn { [unowned self] in
                        try? await world.clock.sleep(for: delay)
                        if let activeStore { startServer(activeStore) }
                        world.simulation.faults.nodeRestarts += 1
                    }
                }
            }
            let outcome = await syncTask.result
            client.close()
            await transport.close()
            if crashedActive {
                // Wait until the active is back before the next attempt.
                try await world.clock.sleep(for: .milliseconds(700))
            }
            switch outcome {
            case .success(let result):
                written += result.written
                checks += 1
                let now = backup.allRecords
                var actual: [String: NameKeyRecord] = [:]
                for record in now { actual[record.key] = record }
                for key in Set(actual.keys).union(expected.keys).sorted() where actual[key] != expected[key] {
                    fail(
                        "agrees-after-sync",
                        "round \(round), attempt \(attempt) (\(result.mode), \(result.passes) passes): key \(key) is "
                            + "\(describe(actual[key])), expected \(describe(expected[key]))")
                    return
                }
                let mark = SyncMark(
                    peer: "\(Self.activeNode)", peerGeneration: activeStore?.generation ?? 0,
                    generation: backup.generation)
                if backup.lastSync(with: mark.peer) != mark {
                    fail(
                        "remembers-last-sync",
                        "round \(round), attempt \(attempt): the mark is \(String(describing: backup.lastSync(with: mark.peer))), "
                            + "expected \(mark)")
                }
                return
            case .failure(let error):
                if !faulty, !(error is CancellationError) {
                    if let error = error as? KeySyncError, error.code != .transport {
                        fail("retry-completes", "round \(round), attempt \(attempt) failed without a fault: \(error)")
                        return
                    }
                }
                checks += 1
                var actual: [String: NameKeyRecord] = [:]
                for record in backup.allRecords { actual[record.key] = record }
                for key in Set(actual.keys).union(expected.keys).union(before.keys) {
                    let now = actual[key]
                    if now == expected[key] {
                        settled.insert(key)
                    } else if settled.contains(key) || now != before[key] {
                        fail(
                            "interrupted-keeps-applied",
                            "round \(round), attempt \(attempt): key \(key) is \(describe(now)), was \(describe(before[key])), "
                                + "should become \(describe(expected[key]))")
                        return
                    }
                }
            }
        }
        fail("retry-completes", "round \(round): no attempt of 8 completed")
    }

    func describe(_ record: NameKeyRecord?) -> String {
        guard let record else { return "absent" }
        let fields = record.fields.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }.joined(separator: ",")
        return "v\(record.version)@\(record.stamp){\(fields)}"
    }
}
