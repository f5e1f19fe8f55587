public import DeterministicSimulation
public import ElasticJournal
import FaultToleranceCore
import Logging
import NIOConcurrencyHelpers

/// A randomized run of one or two journals sharing a pool of ``DeterministicSimulation/SimulatedDisk``s,
/// checked against a reference model.
///
/// Each step advances virtual time and does one of: append a random write, synchronize
/// (acknowledging everything staged), run the group-commit flushes, age out
/// (``ElasticJournal/JournalStore/maintain(now:)``),
/// reconstruct a volume at a random instant of the window, verify, or crash — power loss
/// at once, or a power cut after a random number of storage operations so that the crash
/// lands inside a batch write, a rollover or an age-out. After a crash every disk loses,
/// keeps or tears its unsynchronized writes and the store is reopened.
///
/// Half the seeds append buffered (acknowledged at `synchronize`), half in group commit
/// (``ElasticJournal/JournalConfiguration/Durability/groupCommit``): each append waits for its
/// record to be durable, and the flusher's work — writing and syncing batches, acknowledging
/// waiters, failing them when a write or fsync fails — runs as steps of the run through the
/// journal's flush seam instead of on its thread.
///
/// Invariants:
/// - `waiters-resolved`: once the flushes have run, every staged record is durable and its
///   append acknowledged (or failed with the error that poisoned the journal).
/// - `acknowledged-survives`: after every reopen each journal holds every acknowledged
///   sequence number, and nothing that was never appended.
/// - `records-intact`: every record read back equals the one appended with its number.
/// - `image-at-instant`: the image reconstructed at `t` equals the model's: zeros plus
///   exactly the writes with time ≤ `t`, in order.
/// - `units-bounded`: after ageing, a journal holds no more units than those holding a
///   record inside its window, plus its active unit.
/// - `window-not-silently-short`: the window only starts later than `now - window` if
///   history was reported dropped early.
/// - `verifies`: ``ElasticJournal/ElasticJournal/verify(progress:)`` passes.
/// - `appends-not-blocked`: on half the seeds, appends are made from inside the journal's own
///   fsyncs (a flush's, a rollover's seal and successor header, an age-out's base images);
///   each stages at once when the active unit has room, with the next sequence number.
/// - `failure-isolated`: with two journals, after one journal's flush fails (one flush in ten
///   fails its fsync on purpose), the other, whose flushes share the same driver, still
///   appends and acknowledges.
///
/// About one seed in eight also damages storage at rest during one crash: garbage in a
/// record of a sealed unit, garbage in a base image whose checksum table is current, or a
/// deleted unit in the middle of a journal's chain. Invariant `damage-reported`: the reopen
/// or the first read or `verify` after it reports ``ElasticJournal/JournalError/Code/damaged`` — never
/// wrong data (the image and record checks above still apply), never a silent cut
/// (`acknowledged-survives` still applies). The seed ends once the damage is reported.
public struct JournalScenario: Sendable {
    /// Steps per run.
    public var steps: Int
    /// A planted bug, or `nil` for the real journal.
    public var bug: JournalBug?
    /// Group commit (`true`), buffered appends (`false`), or either, by seed (`nil`).
    public var groupCommit: Bool?

    /// Creates a scenario.
    public init(steps: Int = 400, bug: JournalBug? = nil, groupCommit: Bool? = nil) {
        self.steps = steps
        self.bug = bug
        self.groupCommit = groupCommit
    }

    private struct ModelJournal {
        var id: JournalID
        var window: Duration
        var volumes: [VolumeID]
        var created: Instant
        var records: [JournalRecord] = []  // every record that may exist, by sequence - 1
        var acknowledged: UInt64 = 0
        var earlyDrops = 0
    }

    private final class Clock: Sendable {
        let now = NIOLockedValueBox(Instant(nanoseconds: 1_000_000_000))
        let salts: NIOLockedValueBox<SimulationRandom>
        init(random: SimulationRandom) { salts = NIOLockedValueBox(random) }
    }

    /// Runs one seed; an internal invariant of the journal broken on the way
    /// (``FaultToleranceCore/RuntimeInvariants``) fails it too.
    public func run(seed: UInt64) -> SimulationReport {
        let sink = RuntimeInvariantSink()
        var report = RuntimeInvariants.$sink.withValue(sink) { runChecked(seed: seed) }
        report.include(sink)
        return report
    }

    private func runChecked(seed: UInt64) -> SimulationReport {
        var random = SimulationRandom(seed: seed)
        var faults = FaultCounters()
        var checks = 0
        var operations = 0
        var trace = TraceHash()
        let clock = Clock(random: random.split())
        let unitCapacity = 64 << 10
        let volumeSize = 8 << 10
        let journalCount = random.chance(0.3) ? 2 : 1
        // Half the seeds append in group commit: every append waits for its record to be
        // durable, and the flusher's work runs as steps of the run (a ManualFlushDriver).
        let drawn = random.chance(0.5)
        let groupCommit = self.groupCommit ?? drawn
        let flushes = ManualFlushDriver()
        let acknowledgedByFlush = NIOLockedValueBox<[JournalID: UInt64]>([:])
        let flushFailures = NIOLockedValueBox<[JournalID: JournalError]>([:])
        /// The durability callback of an append to `journal` whose sequence number will be in
        /// `sequence` (set once the append returns, before any flush runs): records the
        /// acknowledgement, or the error that failed it.
        @Sendable func acknowledger(_ journal: JournalID, sequence: NIOLockedValueBox<UInt64>) -> DurabilityWaiter {
            { result in
                switch result {
                case .success:
                    let acknowledged = sequence.withLockedValue { $0 }
                    acknowledgedByFlush.withLockedValue { $0[journal] = max($0[journal] ?? 0, acknowledged) }
                case .failure(let error):
                    flushFailures.withLockedValue { $0[journal] = $0[journal] ?? error }
                }
            }
        }
        var models: [JournalID: ModelJournal] = [:]
        var quotaSum = 0
        var configurations: [JournalID: JournalConfiguration] = [:]
        for index in 0..<journalCount {
            let id = JournalID(UInt64(index + 1))
            let window = Duration.milliseconds(Int64.random(in: 100...1500, using: &random))
            let quota = Int.random(in: 2...6, using: &random)
            quotaSum += quota
            configurations[id] = JournalConfiguration(
                window: window, quota: quota,
                durability: groupCommit
                    ? .groupCommit(maxBatchBytes: 4096 * Int.random(in: 1...4, using: &random), maxDelay: .zero)
                    : .buffered(batchBytes: 4096 * Int.random(in: 1...4, using: &random)),
                indexInterval: 4096, backPressureTimeout: .zero)
            let volumes = (1...Int.random(in: 1...2, using: &random)).map { VolumeID(UInt32($0)) }
            models[id] = ModelJournal(
                id: id, window: window, volumes: volumes, created: clock.now.withLockedValue { $0 })
        }
        let power = PowerSwitch()
        let diskFaults = SimulatedDisk.Faults(
            loseUnsynchronized: 0.4, tearUnsynchronized: 0.3,
            synchronizeFailure: random.chance(0.3) ? 0.002 : 0, readFailure: 0)
        var setupFaults = diskFaults
        setupFaults.synchronizeFailure = 0
        // Sometimes fewer units than the quotas add up to, so the pool runs out.
        let poolUnits = random.chance(0.3) ? max(2 * journalCount, quotaSum - 2) : quotaSum + journalCount
        let pool = SimulatedStoragePool(
            unitCapacity: unitCapacity, budget: poolUnits * unitCapacity, faults: setupFaults, random: random.split(),
            firstUnit: 1, power: power)
        let bases = SimulatedStoragePool(
            unitCapacity: JournalFormat.baseHeaderSize + volumeSize, budget: 1 << 30, faults: setupFaults,
            random: random.split(), firstUnit: 1 << 32, power: power)
        let earlyDrops = NIOLockedValueBox([JournalID: Int]())
        // The journal whose step is running, and the records appended to it from inside its
        // own storage operations (see `interleaving` below).
        let interleaveTarget = NIOLockedValueBox<(id: JournalID, journal: ElasticJournal, volumes: [VolumeID])?>(nil)
        let interleaved = NIOLockedValueBox<[JournalRecord]>([])
        var logger = Logger(label: "ft.journal.simulation")
        logger.logLevel = .critical

        func open() throws(JournalError) -> JournalStore {
            try JournalStore(
                journalPool: pool, basePool: bases, configurations: configurations, options: .init(),
                clock: { clock.now.withLockedValue { $0 } },
                salt: { clock.salts.withLockedValue { $0.next() } }, logger: logger,
                onEvent: { event in
                    if case .historyDropped(let journal, _, _, _) = event {
                        earlyDrops.withLockedValue { $0[journal, default: 0] += 1 }
                    }
                }, plantedBug: bug, flushDriver: flushes)
        }

        func now() -> Instant { clock.now.withLockedValue { $0 } }
        func violation(_ invariant: String, _ detail: String) -> SimulationReport {
            SimulationReport(
                seed: seed, faults: faults, invariantChecks: checks, operations: operations,
                virtualTime: now().nanoseconds, events: operations,
                violation: InvariantViolation(invariant: invariant, detail: detail, at: now()),
                traceHash: trace.value)
        }
        func modelImage(_ model: ModelJournal, volume: VolumeID, at instant: Instant, through last: UInt64) -> [UInt8] {
            var image = [UInt8](repeating: 0, count: volumeSize)
            for record in model.records
            where record.sequence <= last && record.time <= instant && record.volume == volume {
                image.replaceSubrange(Int(record.offset)..<Int(record.offset) + record.bytes.count, with: record.bytes)
            }
            return image
        }

        var store: JournalStore
        do {
            store = try open()
            for id in models.keys.sorted() {
                guard let model = models[id], let configuration = configurations[id] else { continue }
                _ = try store.createJournal(id, configuration: configuration, volumes: model.volumes)
            }
        } catch {
            return violation("setup", "\(error)")
        }
        pool.setFaults(diskFaults)
        bases.setFaults(diskFaults)
        // Half the seeds also append from inside the journal's own fsyncs — a flush's, a
        // rollover's (the old unit's records and seal, the successor's header) and an
        // age-out's (the base images): the appends other threads of a real process make while
        // those run. Invariant `appends-not-blocked`: such an append stages at once whenever
        // the active unit has room (it never waits for the operation in progress, which would
        // deadlock here), and gets the next sequence number.
        let interleaving = random.chance(0.5)
        if interleaving {
            let draws = NIOLockedValueBox(random.split())
            let hook: @Sendable (UnitID) -> Void = { _ in
                guard let target = interleaveTarget.withLockedValue({ $0 }) else { return }
                let drawn = draws.withLockedValue { random -> (VolumeID, Int, [UInt8])? in
                    guard random.chance(0.3) else { return nil }
                    let count = Int.random(in: 1...200, using: &random)
                    let volume = target.volumes.randomElement(using: &random) ?? 1
                    let offset = Int.random(in: 0...(volumeSize - count), using: &random)
                    return (volume, offset, (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) })
                }
                guard let (volume, offset, bytes) = drawn else { return }
                let id = target.id
                let sequence = NIOLockedValueBox<UInt64>(0)
                let notify = acknowledger(id, sequence: sequence)
                // A failure (the journal poisoned by the operation's own fsync) shows in the step.
                guard
                    let receipt = try? bytes.withUnsafeBytes({ raw in
                        try target.journal.stageIfRoom(
                            volume: volume, offset: UInt64(offset), bytes: raw, notify: groupCommit ? notify : nil)
                    })
                else { return }
                sequence.withLockedValue { $0 = receipt.sequence }
                interleaved.withLockedValue {
                    $0.append(
                        JournalRecord(
                            sequence: receipt.sequence, time: receipt.time, volume: volume, offset: UInt64(offset),
                            bytes: bytes))
                }
            }
            pool.setSynchronizeHook(hook)
            bases.setSynchronizeHook(hook)
        }
        /// Adds the records appended from inside storage operations to `model`, checking
        /// they took the next sequence numbers.
        func takeInterleaved(into model: inout ModelJournal) -> SimulationReport? {
            for record in interleaved.withLockedValue({ records in
                defer { records.removeAll() }; return records
            }) {
                checks += 1
                guard record.sequence == UInt64(model.records.count) + 1 else {
                    return violation(
                        "appends-not-blocked",
                        "an append (or one made during a storage operation) got \(record.sequence), "
                            + "expected \(model.records.count + 1)"
                    )
                }
                model.records.append(record)
                operations += 1
            }
            return nil
        }
        /// Invariant `failure-isolated`: after one journal's flush failed (its fsync or write),
        /// every other journal of the store, whose flushes run on the same driver, still
        /// appends and acknowledges — unless its own storage failed too.
        func checkIsolation(after failed: JournalID) -> SimulationReport? {
            for other in models.keys.sorted() where other != failed {
                guard var model = models[other], let journal = store.journal(other), let volume = model.volumes.first,
                    flushFailures.withLockedValue({ $0[other] }) == nil
                else { continue }
                let bytes = [UInt8(truncatingIfNeeded: model.records.count), 0xA5, 0x5A]
                let sequence = NIOLockedValueBox<UInt64>(0)
                let receipt = try? bytes.withUnsafeBytes { raw in
                    try journal.appendNotifying(
                        volume: volume, offset: 0, bytes: raw, notify: acknowledger(other, sequence: sequence))
                }
                // Refused (a full pool, or its own storage failed during a rollover): no claim.
                guard let receipt else { continue }
                guard receipt.sequence == UInt64(model.records.count) + 1 else {
                    return violation(
                        "records-intact", "\(other) append got \(receipt.sequence), expected \(model.records.count + 1)"
                    )
                }
                sequence.withLockedValue { $0 = receipt.sequence }
                model.records.append(
                    JournalRecord(
                        sequence: receipt.sequence, time: receipt.time, volume: volume, offset: 0, bytes: bytes))
                models[other] = model
                var rounds = 0
                while flushes.runPending() > 0 && rounds < 100 { rounds += 1 }
                checks += 1
                let acknowledged = acknowledgedByFlush.withLockedValue { $0[other] ?? 0 }
                if flushFailures.withLockedValue({ $0[other] }) == nil && !power.isCut
                    && acknowledged < receipt.sequence
                {
                    return violation(
                        "failure-isolated",
                        "\(other) appended \(receipt.sequence) after \(failed) failed; "
                            + "acknowledged only through \(acknowledged)"
                    )
                }
            }
            return nil
        }
        let damageSeed = random.chance(0.125)
        // One seed in eight flips bits on reads (the stored bytes stay intact) while the
        // journal reads: images, records, verify. Each flip must end in a typed `damaged`
        // error or in data that still checks out, never in wrong data.
        let readFlipSeed = random.chance(0.125)
        func silentFlips() -> Int {
            (pool.units + bases.units).reduce(0) { $0 + $1.silentFaults.flippedReads }
        }

        /// Damages storage at rest (see the type's documentation); returns what it did, or
        /// `nil` when no damage of the drawn kind applies now.
        func injectDamage(into journal: ElasticJournal) -> String? {
            let units = journal.status.units
            let disks = Dictionary(uniqueKeysWithValues: pool.units.map { ($0.id, $0) })
            let mask = (0..<Int.random(in: 16...256, using: &random)).map { _ in
                UInt8.random(in: 1...255, using: &random)
            }
            switch Int.random(in: 0..<3, using: &random) {
            case 0:
                // A record of a sealed unit (every unit but the last is sealed).
                guard units.count >= 2, let target = units.dropLast().randomElement(using: &random),
                    let disk = disks[target.unit]
                else { return nil }
                let offset = JournalFormat.headerPageSize + 8 * Int.random(in: 0..<32, using: &random)
                disk.damage(at: offset, mask: mask)
                return "garbage in sealed \(target.unit) at \(offset)"
            case 1:
                // A base image whose checksum table is current (a stale table has nothing to
                // check against until recovery rebuilds it).
                guard let disk = bases.units.randomElement(using: &random),
                    let header = try? disk.read(at: 0, count: 2 * BaseManifest.slotSize),
                    let manifest = [
                        BaseManifest.decode(header[0..<BaseManifest.slotSize]),
                        BaseManifest.decode(header[BaseManifest.slotSize...]),
                    ].compactMap({ $0 }).max(by: { $0.generation < $1.generation }),
                    manifest.journal == journal.id, manifest.checksums != nil
                else { return nil }
                let offset = JournalFormat.baseHeaderSize + Int.random(in: 0..<(volumeSize - 256), using: &random)
                disk.damage(at: offset, mask: mask)
                return "garbage in the base image \(disk.id) at \(offset)"
            default:
                // A unit in the middle of the chain, deleted.
                guard units.count >= 3, let target = units.dropFirst().dropLast().randomElement(using: &random)
                else { return nil }
                do { try pool.release(target.unit) } catch { return nil }
                return "\(target.unit) deleted"
            }
        }

        /// After damage and a reopen: the damage must be reported by the reopen (`opened`
        /// nil), or by a read or verify now. Returns the report ending the seed.
        func checkDamageReported(_ damage: String, opened: JournalStore?, error: JournalError?) -> SimulationReport {
            func reported() -> SimulationReport {
                faults.damageDetected += 1
                return SimulationReport(
                    seed: seed, faults: faults, invariantChecks: checks, operations: operations,
                    virtualTime: now().nanoseconds, events: operations, violation: nil, traceHash: trace.value)
            }
            checks += 1
            if let error {
                return error.code == .damaged
                    ? reported() : violation("damage-reported", "\(damage): reopen failed with \(error)")
            }
            guard let opened else { return violation("damage-reported", "\(damage): no store") }
            for id in models.keys.sorted() {
                guard let model = models[id], let journal = opened.journal(id) else { continue }
                guard journal.lastSequence >= model.acknowledged else {
                    return violation(
                        "damage-reported",
                        "\(damage): \(id) silently cut to \(journal.lastSequence), \(model.acknowledged) was acknowledged"
                    )
                }
                for volume in model.volumes {
                    do {
                        let image = try journal.image(of: volume, at: now())
                        checks += 1
                        if image != modelImage(model, volume: volume, at: now(), through: journal.lastSequence) {
                            return violation(
                                "damage-reported", "\(damage): \(id) \(volume) image returned damaged data")
                        }
                    } catch {
                        if error.code == .damaged { return reported() }
                        return violation("damage-reported", "\(damage): image failed with \(error)")
                    }
                }
                do {
                    _ = try journal.verify()
                } catch {
                    if error.code == .damaged { return reported() }
                    return violation("damage-reported", "\(damage): verify failed with \(error)")
                }
            }
            return violation("damage-reported", "\(damage): reopen, images and verify all passed")
        }

        /// After a crash: reopen, then check every acknowledged record survived.
        /// Folds the acknowledgements the flushes delivered into the models.
        func mergeAcknowledgements() {
            for (id, sequence) in acknowledgedByFlush.withLockedValue({ $0 }) {
                guard var model = models[id] else { continue }
                model.acknowledged = max(model.acknowledged, sequence)
                models[id] = model
            }
        }

        func crashAndReopen() -> SimulationReport? {
            interleaveTarget.withLockedValue { $0 = nil }
            mergeAcknowledgements()
            // Flushes not yet run die with the machine; their appends were never acknowledged.
            flushes.discard()
            acknowledgedByFlush.withLockedValue { $0.removeAll() }
            flushFailures.withLockedValue { $0.removeAll() }
            let outcome = pool.crash()
            let baseOutcome = bases.crash()
            if damageSeed, let id = models.keys.sorted().randomElement(using: &random), let journal = store.journal(id),
                random.chance(0.5), let damage = injectDamage(into: journal)
            {
                faults.damageInjected += 1
                faults.nodeCrashes += 1
                for _ in 0..<10 {
                    do {
                        return checkDamageReported(damage, opened: try open(), error: nil)
                    } catch {
                        // An injected fsync failure during recovery is one more crash.
                        guard error.code == .storage else {
                            return checkDamageReported(damage, opened: nil, error: error)
                        }
                        faults.synchronizeFailures += 1
                        pool.crash()
                        bases.crash()
                    }
                }
                return violation("reopens", "\(damage): ten reopens failed on storage errors")
            }
            trace.mix(UInt64(outcome.lost) << 40 | UInt64(outcome.torn) << 20 | UInt64(outcome.survived))
            faults.writesLost += outcome.lost + baseOutcome.lost
            faults.writesTorn += outcome.torn + baseOutcome.torn
            faults.writesSurvived += outcome.survived + baseOutcome.survived
            faults.nodeCrashes += 1
            var attempts = 0
            while true {
                do {
                    store = try open()
                    break
                } catch {
                    // An injected fsync failure during recovery is one more crash; damage is not.
                    attempts += 1
                    guard error.code == .storage, attempts < 10 else {
                        return violation("reopens", "reopen after a crash failed: \(error)")
                    }
                    faults.synchronizeFailures += 1
                    pool.crash()
                    bases.crash()
                }
            }
            for id in models.keys.sorted() {
                guard var model = models[id] else { continue }
                guard let journal = store.journal(id) else { return violation("reopens", "\(id) is gone") }
                let last = journal.lastSequence
                checks += 1
                guard last >= model.acknowledged else {
                    return violation(
                        "acknowledged-survives",
                        "\(id) recovered through \(last), \(model.acknowledged) was acknowledged")
                }
                guard last <= UInt64(model.records.count) else {
                    return violation(
                        "acknowledged-survives", "\(id) recovered \(last) records, only \(model.records.count) appended"
                    )
                }
                model.records.removeLast(model.records.count - Int(last))
                model.acknowledged = last
                models[id] = model
            }
            return nil
        }

        for _ in 0..<steps {
            clock.now.withLockedValue { $0 = $0 + .milliseconds(Int64.random(in: 0...15, using: &random)) }
            let ids = models.keys.sorted()
            mergeAcknowledgements()
            guard let id = ids.randomElement(using: &random), var model = models[id], let journal = store.journal(id)
            else { return violation("setup", "journal missing") }
            let choice = Int.random(in: 0..<100, using: &random)
            interleaveTarget.withLockedValue { $0 = (id, journal, model.volumes) }
            var failure: JournalError?
            let flipping = readFlipSeed && (80..<95).contains(choice)
            let flipsBefore = flipping ? silentFlips() : 0
            if flipping {
                var flaky = diskFaults
                flaky.flipOnRead = 0.05
                pool.setFaults(flaky)
                bases.setFaults(flaky)
            }
            switch choice {
            case 0..<55:
                let volume = model.volumes.randomElement(using: &random) ?? 1
                let count =
                    random.chance(0.1)
                    ? Int.random(in: 2000...7000, using: &random) : Int.random(in: 1...700, using: &random)
                let offset = Int.random(in: 0...(volumeSize - count), using: &random)
                let bytes = (0..<count).map { _ in UInt8.random(in: 0...255, using: &random) }
                // The sequence this append gets (appends made during its own rollover come first).
                let expected = NIOLockedValueBox(UInt64(model.records.count) + 1)
                do {
                    let receipt = try bytes.withUnsafeBytes { raw in
                        Result { () throws(JournalError) in
                            guard groupCommit else {
                                return try journal.appendBuffered(volume: volume, offset: UInt64(offset), bytes: raw)
                            }
                            return try journal.appendNotifying(
                                volume: volume, offset: UInt64(offset), bytes: raw,
                                notify: acknowledger(id, sequence: expected))
                        }
                    }.get()
                    expected.withLockedValue { $0 = receipt.sequence }
                    // Appends made during this append's rollover come before or after it.
                    interleaved.withLockedValue { records in
                        records.append(
                            JournalRecord(
                                sequence: receipt.sequence, time: receipt.time, volume: volume,
                                offset: UInt64(offset), bytes: bytes))
                        records.sort { $0.sequence < $1.sequence }
                    }
                    if let report = takeInterleaved(into: &model) { return report }
                } catch {
                    if error.code != .full { failure = error }
                    // An append that failed after staging its record (the write of the rollover
                    // it started failed and poisoned the journal) used a sequence number that the
                    // records appended during that rollover follow. None of them was written; the
                    // crash that follows the failure cuts the model back to what survived.
                    let next = UInt64(model.records.count) + 1
                    interleaved.withLockedValue { records in
                        records.sort { $0.sequence < $1.sequence }
                        var kept = 0
                        while kept < records.count && records[kept].sequence == next + UInt64(kept) { kept += 1 }
                        records.removeSubrange(kept...)
                    }
                }
            case 55..<64 where groupCommit:
                // The flusher's turn: run flushes until none is left; then every record staged
                // is durable and its append acknowledged, unless a flush failed. With two
                // journals, one flush in ten fails this journal's fsync on purpose, so that
                // `failure-isolated` is checked often.
                if models.count > 1, random.chance(0.1), let active = journal.status.units.last?.unit,
                    let disk = pool.units.first(where: { $0.id == active })
                {
                    disk.failNextSynchronize()
                }
                var rounds = 0
                while flushes.runPending() > 0 && rounds < 100 { rounds += 1 }
                operations += 1
                let acknowledged = max(model.acknowledged, acknowledgedByFlush.withLockedValue { $0[id] ?? 0 })
                if let error = flushFailures.withLockedValue({ $0[id] }) {
                    failure = error
                    if let report = checkIsolation(after: id) { return report }
                } else if journal.durableSequence != journal.lastSequence || acknowledged < journal.lastSequence {
                    return violation(
                        "waiters-resolved",
                        "\(id) staged through \(journal.lastSequence), durable through \(journal.durableSequence), "
                            + "acknowledged through \(acknowledged) after the flushes")
                }
            case 55..<72:
                do {
                    try journal.synchronize()
                    model.acknowledged = journal.durableSequence
                    operations += 1
                } catch {
                    failure = error
                }
            case 72..<80:
                do {
                    try journal.maintain(now: now())
                    let status = journal.status
                    let horizon = now() + .nanoseconds(-model.window.nanoseconds)
                    let needed = status.units.dropLast().filter { $0.lastTime >= horizon }.count
                    checks += 1
                    if status.units.count > needed + 1 {
                        return violation(
                            "units-bounded", "\(id) holds \(status.units.count) units, its window needs \(needed) + 1")
                    }
                    let drops = earlyDrops.withLockedValue { $0[id] ?? 0 }
                    if status.windowStart > horizon && now() - model.created >= model.window && drops == 0 {
                        return violation(
                            "window-not-silently-short",
                            "\(id) starts at \(status.windowStart) after \(horizon) with no early drop reported")
                    }
                } catch {
                    failure = error
                }
            case 80..<92:
                let start = journal.status.windowStart
                let span = max(0, (now() - start).nanoseconds)
                let instant = start + .nanoseconds(Int64.random(in: 0...span, using: &random))
                let volume = model.volumes.randomElement(using: &random) ?? 1
                do {
                    let image = try journal.image(of: volume, at: instant)
                    checks += 1
                    let expected = modelImage(model, volume: volume, at: instant, through: journal.lastSequence)
                    if image != expected {
                        let first =
                            zip(image, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? -1
                        return violation(
                            "image-at-instant", "\(id) \(volume) at \(instant) differs first at byte \(first)")
                    }
                    let records = try journal.records(from: start, through: instant)
                    checks += 1
                    for record in records where model.records[Int(record.sequence) - 1] != record {
                        return violation(
                            "records-intact", "\(id) record \(record.sequence) differs from what was appended")
                    }
                } catch {
                    failure = error
                }
            case 92..<95:
                do {
                    let report = try journal.verify()
                    checks += 1
                    if report.lastSequence != journal.lastSequence {
                        return violation(
                            "verifies", "verify ended at \(report.lastSequence), journal at \(journal.lastSequence)")
                    }
                } catch {
                    if error.code == .damaged && !flipping { return violation("verifies", "\(error)") }
                    failure = error
                }
            case 95..<98:
                power.cut(afterOperations: Int.random(in: 0...12, using: &random))
            default:
                if let report = takeInterleaved(into: &model) { return report }
                models[id] = model
                if let report = crashAndReopen() { return report }
                continue
            }
            if let report = takeInterleaved(into: &model) { return report }
            models[id] = model
            if flipping {
                pool.setFaults(diskFaults)
                bases.setFaults(diskFaults)
                let flips = silentFlips() - flipsBefore
                faults.damageInjected += flips
                if flips > 0, failure == nil || failure?.code == .damaged {
                    // Reported as damage, or the bytes returned still equal the model's.
                    faults.damageDetected += flips
                    failure = nil
                }
            }
            // The step's kind and what it left behind, for the replay check.
            trace.mix(UInt64(choice))
            trace.mix(UInt64(model.records.count) << 32 | model.acknowledged)
            trace.mix(journal.lastSequence)
            if let failure {
                // A storage failure (injected fsync error or power cut) poisons the journal;
                // the machine "crashes" and the store is reopened.
                guard failure.code == .poisoned || failure.code == .storage else {
                    return violation("typed-errors", "unexpected \(failure)")
                }
                if failure.code == .storage, failure.storage?.code == .synchronizeFailed {
                    faults.synchronizeFailures += 1
                }
                if let report = crashAndReopen() { return report }
            }
        }
        return SimulationReport(
            seed: seed, faults: faults, invariantChecks: checks, operations: operations,
            virtualTime: now().nanoseconds, events: steps, violation: nil, traceHash: trace.value)
    }
}
