/// The backup's side of one sync as a pure state machine: no clock, no I/O.
///
/// It is fed events (``start()``, ``received(_:)``, ``timedOut()``, and the answers to the
/// local reads it asked for) and answers with ``Action``s for its runtime to carry out, in
/// order. ``KeySyncClient`` runs it over a `Transport` and a ``NameKeyStore``; tests and the
/// simulation drive it directly.
///
/// A sync is a series of passes. Each pass says hello (and learns the active's store and
/// digest), then, unless the digests already agree, decodes the difference from sketch symbols
/// requested in ranges of doubling size, fetches the active's records for the fingerprints only
/// it holds, and applies them with the conflict rule and the backup-only policy. A pass that
/// changed nothing ends the sync; so does one whose digest matches what the changes kept on
/// purpose explain. A difference the sketch cannot decode (too large, or the active changed
/// under it) falls back to streaming the active's records in key order. Every request is
/// idempotent and answered by a stateless active, so a lost or doubled message costs a retry,
/// and a sync cut off at any point leaves only whole transactions applied: the next sync
/// starts from them.
public struct KeySyncSession: Sendable {
    /// What the runtime must do.
    public enum Action: Sendable {
        /// Send a message to the active.
        case send(KeySyncMessage)
        /// Read local symbols `range` and call ``KeySyncSession/localSymbols(_:)``.
        case readLocalSymbols(Range<Int>)
        /// Read this store's description and call ``KeySyncSession/localDescription(_:)``.
        case describeLocal
        /// Look up local records by fingerprint and call ``KeySyncSession/localRecords(_:)``.
        case readLocalRecords([Fingerprint])
        /// Read the local records of these keys and call ``KeySyncSession/localRecords(forKeys:)``.
        case readLocalRecordsByKey([String])
        /// Read up to `limit` local records in key order after `after`, and call
        /// ``KeySyncSession/localRange(_:)``.
        case readLocalRange(after: String?, limit: Int)
        /// Apply these changes in one transaction and call ``KeySyncSession/applied()``.
        case apply([StoreChange])
        /// The sync is over.
        case finish(SyncResult)
        /// The sync failed.
        case fail(KeySyncError)
    }

    /// Tuning.
    public struct Options: Sendable {
        /// The reconciliation protocol.
        public var syncProtocol: SyncProtocol
        /// Which record a key keeps when both sides differ.
        public var conflictRule: ConflictRule
        /// What becomes of keys only the backup holds.
        public var backupOnly: BackupOnlyPolicy
        /// Symbols in the first request when the welcome brought none.
        public var firstSymbols: Int
        /// Keys per request in the seed's protocol, and local records read at a time.
        public var batch: Int
        /// Records asked of the active per request: by fingerprint for a decoded difference,
        /// or in key order when streaming (each reply is also cut at
        /// ``KeySyncResponder/replyBytes``).
        public var fetchBatch: Int
        /// Passes before giving up on an active that keeps changing.
        public var maximumPasses: Int
        /// Attempts of one request before the sync fails.
        public var maximumAttempts: Int

        /// Creates options.
        public init(
            syncProtocol: SyncProtocol = .reconcile, conflictRule: ConflictRule = .activeWins,
            backupOnly: BackupOnlyPolicy = .keep, firstSymbols: Int = 64, batch: Int = 2048,
            fetchBatch: Int = 16384, maximumPasses: Int = 4, maximumAttempts: Int = 8
        ) {
            self.fetchBatch = fetchBatch
            self.syncProtocol = syncProtocol
            self.conflictRule = conflictRule
            self.backupOnly = backupOnly
            self.firstSymbols = firstSymbols
            self.batch = batch
            self.maximumPasses = maximumPasses
            self.maximumAttempts = maximumAttempts
        }
    }

    /// A planted bug for the simulation to catch.
    public enum Bug: String, Sendable, Hashable, CaseIterable, Codable {
        /// Records arriving from the active are applied without migrating them to the
        /// backup's schema version: they land in the old layout under a new version number.
        case skipMigrationOnArrival = "skip-migration-on-arrival"
        /// Backup-only keys are deleted whatever the policy says.
        case deleteBackupOnly = "delete-backup-only"
    }

    private enum Phase {
        case idle
        case describing
        case verifying
        case greeting
        case symbols
        case lookingUpLocal
        case fetching
        case streaming(after: String?)
        case comparingBatch(records: [NameKeyRecord], next: String?)
        case sweeping(after: String?)
        case seedReadingKeys(after: String?)
        case seedSharing(lastKey: String?, exhausted: Bool)
        case seedFetching(lastKey: String?, exhausted: Bool)
        case applying(then: AfterApply)
        case done
    }

    private enum AfterApply {
        case nextFetch
        case nextStream(after: String?)
        case nextSeed(lastKey: String?, exhausted: Bool)
        case sweep(after: String?)
        case endOfPass
    }

    private let schema: Schema
    private let options: Options
    private let bug: Bug?
    private var phase = Phase.idle
    private var local: KeySyncMessage.StoreDescription?
    private var remote: KeySyncMessage.StoreDescription?
    private var result = SyncResult()
    private var nextRequest: UInt64
    private var outstanding: KeySyncMessage?
    private var attempts = 0
    private var decoder = SketchDecoder()
    private var pendingRange: Range<Int>?
    private var pendingRemoteSymbols: [SketchSymbol] = []
    /// The difference's size as estimated from the first range of symbols.
    private var estimate: Double?
    /// The backup's records whose fingerprints only it holds, by key.
    private var localOnly: [String: NameKeyRecord] = [:]
    /// Remote fingerprints still to fetch.
    private var toFetch: [Fingerprint] = []
    /// Keys of records the active sent this pass.
    private var remoteKeys = Set<String>()
    /// Whether this pass wrote or deleted anything.
    private var changedThisPass = false
    /// What this pass kept different on purpose: the backup's digest should equal the active's
    /// plus this.
    private var residual = SketchSymbol.zero
    private var previousResidual: SketchSymbol?
    /// Every key (at the backup's version) the active streamed this pass.
    private var streamedKeys = Set<String>()
    /// The shared keys the active named for the last key list.
    private var seedShared: [String] = []
    /// Shared keys a cut-short seed reply did not cover.
    private var seedRemainder: [String] = []

    /// A session over a store with `schema`; `requestBase` numbers its requests (pick it at
    /// random, so replies to an earlier session are not taken for this one's).
    public init(schema: Schema, options: Options = Options(), requestBase: UInt64, bug: Bug? = nil) {
        self.schema = schema
        self.options = options
        self.nextRequest = requestBase
        self.bug = bug
    }

    /// The result so far.
    public var progress: SyncResult { result }

    /// The message awaiting a reply, if any.
    public var awaiting: KeySyncMessage? { outstanding }

    /// Starts the sync.
    public mutating func start() -> [Action] {
        let limit = KeySyncMessage.maximumItemsPerMessage
        guard (1...limit).contains(options.batch), (1...limit).contains(options.firstSymbols),
            (1...limit).contains(options.fetchBatch), options.maximumPasses >= 1, options.maximumAttempts >= 1
        else {
            return fail(
                KeySyncError(
                    .invalidArgument,
                    detail: "batch \(options.batch), fetch batch \(options.fetchBatch) and first symbols "
                        + "\(options.firstSymbols) must be in 1...\(limit), "
                        + "passes \(options.maximumPasses) and attempts \(options.maximumAttempts) at least 1"))
        }
        phase = .describing
        return [.describeLocal]
    }

    /// This store's description (after ``Action/describeLocal``).
    public mutating func localDescription(_ description: KeySyncMessage.StoreDescription) -> [Action] {
        switch phase {
        case .describing: break
        case .verifying:
            // The pass's changes took if the backup now holds the set the active described in
            // this pass's welcome, plus what was kept on purpose: no round trip needed.
            if let remote, let previousResidual, description.digest == remote.digest.adding(previousResidual) {
                local = description
                result.verifiedLocally = true
                return endSync()
            }
            guard result.passes < options.maximumPasses else {
                return fail(
                    KeySyncError(
                        .notVerified, detail: "the active kept changing: \(result.passes) passes, none verified"))
            }
        default: return []
        }
        var hello = description
        if options.syncProtocol == .seed { hello.leadingSymbols = [] }
        local = hello
        result.passes += 1
        changedThisPass = false
        phase = .greeting
        return request(.hello(request: 0, hello))
    }

    /// The active did not answer in time: resend, or fail after ``Options/maximumAttempts``.
    public mutating func timedOut() -> [Action] {
        guard let outstanding else { return [] }
        guard attempts < options.maximumAttempts else {
            phase = .done
            return [
                .fail(
                    KeySyncError(.transport, detail: "no answer to the \(outstanding.name) after \(attempts) attempts"))
            ]
        }
        attempts += 1
        result.retries += 1
        result.roundTrips += 1
        return [.send(outstanding)]
    }

    /// A message from the active.
    public mutating func received(_ message: KeySyncMessage) -> [Action] {
        // Only the reply to the outstanding request counts; late and doubled ones are dropped.
        guard let outstanding, message.request == outstanding.request else { return [] }
        self.outstanding = nil
        switch (phase, message) {
        case (_, .refused(_, let detail)):
            return fail(KeySyncError(.refused, detail: "the active refused the \(outstanding.name): \(detail)"))
        case (.greeting, .welcome(_, let description)):
            return welcome(description)
        case (.symbols, .symbols(_, let first, let symbols)):
            guard first == decoder.received, !symbols.isEmpty,
                first + symbols.count <= min(remote?.sketchCapacity ?? 0, local?.sketchCapacity ?? 0)
            else { return fail(.malformed("symbols", "range \(first)+\(symbols.count) was not asked for")) }
            result.symbolsReceived += symbols.count
            pendingRemoteSymbols = symbols
            pendingRange = first..<(first + symbols.count)
            return [.readLocalSymbols(first..<(first + symbols.count))]
        case (.fetching, .records(_, let records, _, let answered)):
            guard case .recordsByFingerprint(_, let asked) = outstanding, answered >= 1 || asked.isEmpty,
                answered <= asked.count
            else { return fail(.malformed("records", "answered \(answered) of the fingerprints asked for")) }
            toFetch.insert(contentsOf: asked[answered...], at: 0)
            return applyActiveRecords(records, then: .nextFetch)
        case (.streaming, .records(_, let records, let next, _)):
            // Keys are compared at the backup's version: a migration may rename them, so the
            // active's key order says nothing about the backup's.
            var migrated: [NameKeyRecord] = []
            for record in records {
                do throws(KeySyncError) {
                    migrated.append(try arriving(record))
                } catch {
                    return fail(error)
                }
            }
            phase = .comparingBatch(records: records, next: next)
            return [.readLocalRecordsByKey(migrated.map(\.key))]
        case (.seedSharing(let lastKey, let exhausted), .sharedKeys(_, let keys)):
            guard !keys.isEmpty else { return seedNext(lastKey: lastKey, exhausted: exhausted) }
            // The active sends the shared keys' records right after, under the same request.
            phase = .seedFetching(lastKey: lastKey, exhausted: exhausted)
            seedShared = keys
            self.outstanding = outstanding
            return []
        case (.seedSharing, .records), (.seedFetching, .sharedKeys):
            // The seed's two replies to one key list, reordered or doubled: wait for the other
            // (a lost one is recovered by resending the key list).
            self.outstanding = outstanding
            return []
        case (.seedFetching(let lastKey, let exhausted), .records(_, let records, _, let answered)):
            let asked: [String]
            switch outstanding {
            case .recordsByKey(_, let keys): asked = keys
            default: asked = seedShared
            }
            guard answered >= 1, answered <= asked.count else {
                return fail(.malformed("records", "answered \(answered) of the keys asked for"))
            }
            if answered < asked.count {
                // Cut short by the size limit: the rest in another request after applying these.
                seedRemainder = Array(asked[answered...])
            }
            return applyActiveRecords(records, then: .nextSeed(lastKey: lastKey, exhausted: exhausted))
        default:
            return fail(.malformed(message.name, "not an answer to the \(outstanding.name)"))
        }
    }

    /// Local symbols (after ``Action/readLocalSymbols(_:)``).
    public mutating func localSymbols(_ symbols: [SketchSymbol]) -> [Action] {
        guard case .symbols = phase, let range = pendingRange, symbols.count == range.count else { return [] }
        if range.lowerBound == 0 {
            estimate = Self.estimateDifference(remote: pendingRemoteSymbols, local: symbols)
        }
        decoder.add(remote: pendingRemoteSymbols, local: symbols)
        pendingRange = nil
        pendingRemoteSymbols = []
        let capacity = min(remote?.sketchCapacity ?? 0, local?.sketchCapacity ?? 0)
        if decoder.isComplete {
            result.mode = .sketch
            result.differences += decoder.remoteOnly.count + decoder.localOnly.count
            phase = .lookingUpLocal
            return [.readLocalRecords(decoder.localOnly)]
        }
        // Past a tenth of a symbol per record the symbols would cost about a tenth of sending
        // every record (a symbol is 13 bytes, a compressed record rarely under 13): stream.
        let budget = min(capacity, max(1024, (remote?.count ?? 0) / 10))
        if decoder.inconsistent || decoder.received >= budget {
            return startStreaming()
        }
        let target: Int
        if range.lowerBound == 0, let estimate {
            // A difference of d decodes from about 1.35 d symbols: ask for that much of the
            // estimate at once (it is within about a fifth, either way, one time in three).
            let wanted = Self.symbolsToAsk(forEstimate: estimate)
            // One the sketch could not hold goes straight to streaming.
            if wanted > Double(budget) * 1.25 { return startStreaming() }
            target = max(Int(wanted), decoder.received + decoder.received / 4)
        } else {
            // An estimate that fell short: a quarter more each time.
            target = decoder.received + max(decoder.received / 4, options.firstSymbols)
        }
        let count = min(target - decoder.received, budget - decoder.received, KeySyncMessage.maximumSymbolsPerMessage)
        return request(.symbolsRequest(request: 0, first: decoder.received, count: count))
    }

    /// Symbols to have in all for a difference estimated at `estimate`: a difference of d
    /// decodes from about 1.35 d symbols (more, relatively, when d is small).
    public static func symbolsToAsk(forEstimate estimate: Double) -> Double { 1.4 * estimate + 32 }

    /// Estimates how many fingerprints two sets differ by from the first symbols of each
    /// (`remote[i]` and `local[i]` are symbol `i`, from 0).
    ///
    /// Symbol 0's count difference `c₀` is exactly (remote-only − local-only). An element of
    /// the difference lands in symbol `i` with probability `pᵢ = 2/(i+2)`, so symbol `i`'s count
    /// difference `cᵢ` has mean `c₀·pᵢ` and variance `d·pᵢ(1−pᵢ)`: the estimate is
    /// `Σ(cᵢ − c₀pᵢ)² / Σpᵢ(1−pᵢ)`, and at least `|c₀|`. Over 64 symbols its standard error is
    /// about a fifth of `d`, whatever the split between the sides.
    public static func estimateDifference(remote: [SketchSymbol], local: [SketchSymbol]) -> Double {
        guard let first = remote.first, let local0 = local.first else { return 0 }
        let c0 = Double(first.count &- local0.count)
        var squares = 0.0
        var variance = 0.0
        for index in 1..<max(1, min(remote.count, local.count)) {
            let p = 2 / Double(index + 2)
            let deviation = Double(remote[index].count &- local[index].count) - c0 * p
            squares += deviation * deviation
            variance += p * (1 - p)
        }
        guard variance > 0 else { return abs(c0) }
        return max(abs(c0), squares / variance)
    }

    /// Local records by fingerprint (after ``Action/readLocalRecords(_:)``).
    public mutating func localRecords(_ records: [Fingerprint: NameKeyRecord]) -> [Action] {
        guard case .lookingUpLocal = phase else { return [] }
        localOnly = [:]
        for fingerprint in decoder.localOnly {
            // Gone since the symbols were read: the next pass sees it.
            if let record = records[fingerprint] { localOnly[record.key] = record }
        }
        toFetch = decoder.remoteOnly
        remoteKeys = []
        phase = .fetching
        return nextFetch()
    }

    /// Local records by key (after ``Action/readLocalRecordsByKey(_:)``).
    public mutating func localRecords(forKeys records: [NameKeyRecord]) -> [Action] {
        guard case .comparingBatch(let remoteRecords, let next) = phase else { return [] }
        localOnly = Dictionary(records.map { ($0.key, $0) }, uniquingKeysWith: { first, _ in first })
        var changes: [StoreChange] = []
        for record in remoteRecords {
            do throws(KeySyncError) {
                if let change = try resolve(record) { changes.append(change) }
            } catch {
                return fail(error)
            }
        }
        streamedKeys.formUnion(remoteKeys)
        remoteKeys = []
        localOnly = [:]
        let then: AfterApply = next.map { .nextStream(after: $0) } ?? .sweep(after: nil)
        return applyOrContinue(changes, then: then)
    }

    /// Local records in key order (after ``Action/readLocalRange(after:limit:)``).
    public mutating func localRange(_ records: [NameKeyRecord]) -> [Action] {
        switch phase {
        case .seedReadingKeys:
            let exhausted = records.count < options.batch
            if records.isEmpty { return endPass() }
            phase = .seedSharing(lastKey: records.last?.key, exhausted: exhausted)
            return request(.keyList(request: 0, keys: records.map(\.key)))
        case .sweeping:
            // The end of a stream: the backup's keys the active did not send are backup-only.
            localOnly = [:]
            for record in records where !streamedKeys.contains(record.key) { localOnly[record.key] = record }
            remoteKeys = []
            let changes = backupOnlyChanges()
            localOnly = [:]
            let then: AfterApply =
                records.count < options.batch ? .endOfPass : .sweep(after: records.last?.key)
            return applyOrContinue(changes, then: then)
        default:
            return []
        }
    }

    /// The last ``Action/apply(_:)`` committed.
    public mutating func applied() -> [Action] {
        guard case .applying(let then) = phase else { return [] }
        return continueAfter(then)
    }

    // MARK: - Steps

    private mutating func welcome(_ description: KeySyncMessage.StoreDescription) -> [Action] {
        guard let local else { return [] }
        remote = description
        guard description.storeVersion <= local.storeVersion else {
            return fail(
                KeySyncError(
                    .schema,
                    detail:
                        "the active's store is at version \(description.storeVersion), the backup's at \(local.storeVersion): migrate the backup first"
                ))
        }
        guard schema.knows(description.storeVersion) else {
            return fail(
                KeySyncError(
                    .schema,
                    detail:
                        "the active's store is at version \(description.storeVersion); this schema knows 1...\(schema.latest)"
                ))
        }
        if options.syncProtocol == .seed {
            // The seed's protocol after the hello (which both protocols open with: versions are
            // checked, and an active learns where to answer).
            result.mode = .seed
            phase = .seedReadingKeys(after: nil)
            return [.readLocalRange(after: nil, limit: options.batch)]
        }
        // Equal digests: equal sets (or what the last pass kept on purpose).
        if local.digest == description.digest
            || previousResidual.map({ local.digest == description.digest.adding($0) }) == true
        {
            return endSync()
        }
        guard description.fingerprintVersion == local.fingerprintVersion else {
            return startStreaming()
        }
        decoder = SketchDecoder()
        estimate = nil
        phase = .symbols
        let capacity = min(description.sketchCapacity, local.sketchCapacity)
        let leading = description.leadingSymbols
        if !leading.isEmpty, leading.count <= capacity {
            // The welcome brought the first symbols: decoding starts without asking.
            result.symbolsReceived += leading.count
            pendingRemoteSymbols = leading
            pendingRange = 0..<leading.count
            return [.readLocalSymbols(0..<leading.count)]
        }
        // The difference is at least the difference in counts.
        let lowerBound = abs(description.count - local.count)
        let first = min(max(options.firstSymbols, lowerBound + lowerBound / 2), capacity)
        return request(
            .symbolsRequest(request: 0, first: 0, count: min(first, KeySyncMessage.maximumSymbolsPerMessage)))
    }

    private mutating func startStreaming() -> [Action] {
        result.mode = .stream
        localOnly = [:]
        streamedKeys = []
        phase = .streaming(after: nil)
        return request(.range(request: 0, after: nil, limit: options.fetchBatch))
    }

    private mutating func nextFetch() -> [Action] {
        guard !toFetch.isEmpty else {
            // Every remote record is in: the backup-only keys are what is left.
            let changes = backupOnlyChanges()
            return applyOrContinue(changes, then: .endOfPass)
        }
        let batch = Array(toFetch.prefix(options.fetchBatch))
        toFetch.removeFirst(batch.count)
        return request(.recordsByFingerprint(request: 0, fingerprints: batch))
    }

    private mutating func applyActiveRecords(_ records: [NameKeyRecord], then: AfterApply) -> [Action] {
        var changes: [StoreChange] = []
        for record in records {
            do throws(KeySyncError) {
                if let change = try resolve(record) { changes.append(change) }
            } catch {
                return fail(error)
            }
        }
        return applyOrContinue(changes, then: then)
    }

    /// The change (if any) an active record makes on the backup.
    private func arriving(_ given: NameKeyRecord) throws(KeySyncError) -> NameKeyRecord {
        guard let local else { return given }
        if bug == .skipMigrationOnArrival {
            var record = given
            record.version = local.storeVersion
            return record
        }
        return try normalize(given, storeVersion: local.storeVersion, schema: schema)
    }

    private mutating func resolve(_ given: NameKeyRecord) throws(KeySyncError) -> StoreChange? {
        let record = try arriving(given)
        remoteKeys.insert(record.key)
        let activeFingerprint = try schema.fingerprint(of: given)
        if let mine = localOnly[record.key] {
            let mineFingerprint = try schema.fingerprint(of: mine)
            if mineFingerprint == activeFingerprint { return nil }
            if !options.conflictRule.takesActive(backup: mine, active: record) {
                result.keptBackup += 1
                residual.toggle(mineFingerprint.value, check: SketchSymbol.check(of: mineFingerprint.value), sign: 1)
                residual.toggle(
                    activeFingerprint.value, check: SketchSymbol.check(of: activeFingerprint.value), sign: -1)
                return nil
            }
        }
        result.written += 1
        return .put(record)
    }

    private mutating func backupOnlyChanges() -> [StoreChange] {
        var changes: [StoreChange] = []
        for (key, record) in localOnly.sorted(by: { keyPrecedes($0.key, $1.key) }) where !remoteKeys.contains(key) {
            result.backupOnly += 1
            let policy = bug == .deleteBackupOnly ? .delete : options.backupOnly
            switch policy {
            case .delete:
                result.deleted += 1
                changes.append(.delete(key))
            case .keep, .report:
                if policy == .report && result.reportedKeys.count < 1000 { result.reportedKeys.append(key) }
                if let fingerprint = try? schema.fingerprint(of: record) {
                    residual.toggle(fingerprint.value, check: SketchSymbol.check(of: fingerprint.value), sign: 1)
                }
            }
        }
        return changes
    }

    private mutating func applyOrContinue(_ changes: [StoreChange], then: AfterApply) -> [Action] {
        guard !changes.isEmpty else { return continueAfter(then) }
        changedThisPass = true
        phase = .applying(then: then)
        return [.apply(changes)]
    }

    private mutating func continueAfter(_ then: AfterApply) -> [Action] {
        switch then {
        case .nextFetch:
            phase = .fetching
            return nextFetch()
        case .nextStream(let after):
            phase = .streaming(after: after)
            return request(.range(request: 0, after: after, limit: options.fetchBatch))
        case .sweep(let after):
            phase = .sweeping(after: after)
            return [.readLocalRange(after: after, limit: options.batch)]
        case .nextSeed(let lastKey, let exhausted):
            return seedNext(lastKey: lastKey, exhausted: exhausted)
        case .endOfPass:
            return endPass()
        }
    }

    private mutating func seedNext(lastKey: String?, exhausted: Bool) -> [Action] {
        if !seedRemainder.isEmpty {
            let keys = seedRemainder
            seedRemainder = []
            phase = .seedFetching(lastKey: lastKey, exhausted: exhausted)
            return request(.recordsByKey(request: 0, keys: keys))
        }
        if exhausted { return endSync() }
        phase = .seedReadingKeys(after: lastKey)
        return [.readLocalRange(after: lastKey, limit: options.batch)]
    }

    private mutating func endPass() -> [Action] {
        if options.syncProtocol == .seed || !changedThisPass { return endSync() }
        // The backup's new digest is checked against the active's; if the active changed in the
        // meantime, another pass says hello and compares again.
        previousResidual = residual
        residual = .zero
        localOnly = [:]
        phase = .verifying
        return [.describeLocal]
    }

    private mutating func endSync() -> [Action] {
        phase = .done
        result.activeGeneration = remote?.generation ?? 0
        return [.finish(result)]
    }

    private mutating func fail(_ error: KeySyncError) -> [Action] {
        phase = .done
        outstanding = nil
        return [.fail(error)]
    }

    private mutating func request(_ message: KeySyncMessage) -> [Action] {
        nextRequest &+= 1
        let numbered: KeySyncMessage
        switch message {
        case .hello(_, let description): numbered = .hello(request: nextRequest, description)
        case .symbolsRequest(_, let first, let count):
            numbered = .symbolsRequest(request: nextRequest, first: first, count: count)
        case .recordsByFingerprint(_, let fingerprints):
            numbered = .recordsByFingerprint(request: nextRequest, fingerprints: fingerprints)
        case .range(_, let after, let limit): numbered = .range(request: nextRequest, after: after, limit: limit)
        case .keyList(_, let keys): numbered = .keyList(request: nextRequest, keys: keys)
        case .recordsByKey(_, let keys): numbered = .recordsByKey(request: nextRequest, keys: keys)
        default: numbered = message
        }
        outstanding = numbered
        attempts = 1
        result.roundTrips += 1
        return [.send(numbered)]
    }
}
