public import FaultToleranceCore
public import Logging
public import Metrics
import NIOConcurrencyHelpers
import NIOPosix
public import ServiceLifecycle
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A deliberate bug, planted in the shipped journal to show that the simulation
/// (`JournalScenario` in `ElasticJournalSimulation`) catches it.
public enum JournalBug: String, Sendable, Hashable, CaseIterable, Codable {
    /// Acknowledge a batch without its `fdatasync`.
    case acknowledgeBeforeSync = "acknowledge-before-sync"
    /// On rollover, write the full unit's seal without first syncing its last records: a
    /// crash can then leave a valid seal over lost records (a bug the simulation found).
    case sealBeforeRecordsDurable = "seal-before-records-durable"
}

/// Opens, recovers and hosts the ``ElasticJournal``s that share one pool of journal units
/// and one pool of base-image units, and the ``JournalManager`` that divides the pool
/// between them.
///
/// Opening recovers every journal found: unit headers, seals and the chain linking each
/// unit to the one before are verified; the active unit of each journal is scanned and a
/// torn tail (records that were never acknowledged) is cut off and zeroed; an age-out
/// interrupted by a crash is finished; units allocated but never given a header are
/// released. Damage found there is a ``JournalError/Code/damaged`` error naming the unit
/// and offset. With ``Options/readOnly`` nothing is changed on storage.
///
/// Opening trusts the seals of full units: it checks each seal and the chain, not the records
/// under them, so it takes milliseconds whatever the journal holds. Damage at rest inside a
/// sealed unit is found when those records are read (``ElasticJournal/records(from:through:)``,
/// an image, an age-out), by ``ElasticJournal/verify(progress:)``, or at open with
/// ``Options/verifyOnOpen``, which reads every record and base image first.
///
/// ```swift
/// let store = try JournalStore(journalPool: units, basePool: bases)
/// let journal = try store.journal(7) ?? store.createJournal(
///     7, configuration: JournalConfiguration(window: .seconds(3600), quota: 64), volumes: [1])
/// try await journal.append(volume: 1, offset: 4096, bytes: block)
/// ```
public final class JournalStore: Sendable {
    /// How to open.
    public struct Options: Sendable, Hashable {
        /// Change nothing on storage: no torn-tail repair, no release of orphaned units, no
        /// completion of interrupted age-outs. For inspection and verification.
        public var readOnly: Bool
        /// Salvage a damaged journal instead of refusing it: read every record of every
        /// unit, and cut the journal just before the first damage (a bad record, seal or
        /// link between units). Records after the cut are lost — acknowledged ones too — so
        /// this is only done when asked; the cut is reported as
        /// ``JournalEvent/salvaged(_:_:offset:lastSequence:)``.
        public var salvage: Bool
        /// After recovery, read every record of every unit and every base image and check
        /// them all (``ElasticJournal/verify(progress:)`` for each journal): opening then
        /// throws ``JournalError/Code/damaged`` for damage at rest anywhere, at the price of
        /// reading the whole journal. Off by default (seals are trusted; see ``JournalStore``).
        public var verifyOnOpen: Bool

        /// Creates options.
        public init(readOnly: Bool = false, salvage: Bool = false, verifyOnOpen: Bool = false) {
            self.readOnly = readOnly
            self.salvage = salvage
            self.verifyOnOpen = verifyOnOpen
        }
    }

    /// What journals of a store share.
    final class Context: Sendable {
        let journalPool: any StoragePool
        let basePool: any StoragePool
        let manager: NIOLockedValueBox<JournalManager>
        let clock: @Sendable () -> Instant
        let salt: @Sendable () -> UInt64
        let logger: Logger
        let events = NIOLockedValueBox<[JournalEvent]>([])
        let onEvent: (@Sendable (JournalEvent) -> Void)?
        let plantedBug: JournalBug?
        let metricsFactory: any MetricsFactory
        /// Runs group-commit flushes instead of the flusher threads, and with it a rollover's syncs,
        /// seal and preparation run in order on the calling thread (simulation only).
        let flushDriver: ManualFlushDriver?
        /// Threads for the disk work async callers must not do on Swift's cooperative pool
        /// (a rollover, an age-out, a buffered batch's write, maintenance, closing), started
        /// on first use: a store used only synchronously (a simulation, a command-line check)
        /// starts none.
        private let ioThreadPool = NIOLockedValueBox<NIOThreadPool?>(nil)

        var ioThreads: NIOThreadPool {
            ioThreadPool.withLockedValue { pool in
                if let pool { return pool }
                let started = NIOThreadPool(numberOfThreads: 2)
                started.start()
                pool = started
                return started
            }
        }

        init(
            journalPool: any StoragePool,
            basePool: any StoragePool,
            clock: @escaping @Sendable () -> Instant,
            salt: @escaping @Sendable () -> UInt64,
            logger: Logger,
            onEvent: (@Sendable (JournalEvent) -> Void)?,
            plantedBug: JournalBug?,
            metricsFactory: any MetricsFactory,
            flushDriver: ManualFlushDriver? = nil
        ) {
            self.flushDriver = flushDriver
            self.plantedBug = plantedBug
            self.metricsFactory = metricsFactory
            self.journalPool = journalPool
            self.basePool = basePool
            let capacity = journalPool.unitCapacity > 0 ? journalPool.budget / journalPool.unitCapacity : 0
            self.manager = NIOLockedValueBox(JournalManager(poolCapacity: capacity))
            self.clock = clock
            self.salt = salt
            self.logger = logger
            self.onEvent = onEvent
        }

        /// The flusher threads every group-commit journal of the store shares (at most
        /// ``flusherThreadLimit``), started on first use. A journal has at most one flush turn
        /// queued or running at a time, so one journal keeps one thread busy, and many
        /// journals take turns (round robin: a journal with more to flush queues again behind
        /// the others).
        private let flusherPool = NIOLockedValueBox<NIOThreadPool?>(nil)
        /// The most flusher threads the store starts.
        static let flusherThreadLimit = 4
        /// Flush turns submitted and not yet started.
        private let waitingTurns = Synchronization.Atomic<Int>(0)

        /// Whether some journal's flush turn is waiting for a thread: a turn then does not wait
        /// for its batch to fill (the queue is the wait).
        var flushTurnsWaiting: Bool { waitingTurns.load(ordering: .relaxed) > 0 }

        /// Queues one flush turn on the shared flusher threads.
        func submitFlushTurn(_ turn: @escaping @Sendable () -> Void) {
            let pool = flusherPool.withLockedValue { pool in
                if let pool { return pool }
                let started = NIOThreadPool(numberOfThreads: Self.flusherThreadLimit)
                started.start()
                pool = started
                return started
            }
            waitingTurns.add(1, ordering: .relaxed)
            pool.submit { [self] state in
                waitingTurns.subtract(1, ordering: .relaxed)
                // A store being closed drops the turns still queued: its journals are closed.
                guard state == .active else { return }
                turn()
            }
        }

        /// Threads that only sync (a rollover syncs the old unit on one while it syncs the new
        /// one itself): leaf work that waits for nothing, so callers may block on it.
        private let syncHelperPool = NIOLockedValueBox<NIOThreadPool?>(nil)

        /// Starts `unit.synchronize()` on a sync helper thread; the returned closure waits for
        /// it and returns its outcome (call it exactly once).
        func synchronizeOnHelper(_ unit: any StorageUnit) -> () -> Result<Void, StorageError> {
            let pool = syncHelperPool.withLockedValue { pool in
                if let pool { return pool }
                let started = NIOThreadPool(numberOfThreads: 2)
                started.start()
                pool = started
                return started
            }
            let done = ConditionLock(value: 0)
            let outcome = NIOLockedValueBox<Result<Void, StorageError>?>(nil)
            pool.submit { state in
                let result: Result<Void, StorageError> =
                    state == .active
                    ? Result { () throws(StorageError) in try unit.synchronize() }
                    : .failure(StorageError(.ioFailed, unit: unit.id, detail: "the store is closed"))
                outcome.withLockedValue { $0 = result }
                done.lock()
                done.unlock(withValue: 1)
            }
            return {
                done.lock(whenValue: 1)
                done.unlock()
                return outcome.withLockedValue { $0 }
                    ?? .failure(StorageError(.ioFailed, unit: unit.id, detail: "the sync did not run"))
            }
        }

        /// Stops the flusher threads once their turns are done (the store's journals are
        /// closed, so no more are queued).
        func stopFlushers() {
            let pool = flusherPool.withLockedValue { pool in
                defer { pool = nil }
                return pool
            }
            try? pool?.syncShutdownGracefully()
        }

        /// Flusher threads running now (0 before the first group-commit flush).
        var flusherThreadCount: Int { flusherPool.withLockedValue { $0 == nil ? 0 : Self.flusherThreadLimit } }

        deinit {
            ioThreadPool.withLockedValue { $0 }?.shutdownGracefully { _ in }
            flusherPool.withLockedValue { $0 }?.shutdownGracefully { _ in }
            syncHelperPool.withLockedValue { $0 }?.shutdownGracefully { _ in }
        }

        /// Runs `body` on one of ``ioThreads``, suspending the caller (not blocking its thread)
        /// until it is done.
        func onIOThread<T: Sendable>(
            journal: JournalID?, _ body: @escaping @Sendable () throws(JournalError) -> T
        ) async throws(JournalError) -> T {
            let result: Result<T, JournalError> = await withUnsafeContinuation { continuation in
                ioThreads.submit { threadState in
                    guard threadState == .active else {
                        continuation.resume(
                            returning: .failure(JournalError(.closed, journal: journal, detail: "the store is closed")))
                        return
                    }
                    continuation.resume(returning: Result { () throws(JournalError) in try body() })
                }
            }
            return try result.get()
        }

        /// Units journals took from the pool ahead of their next rollover, at most one each.
        /// The manager does not count them: any journal short of a unit may reclaim them.
        private let preparedUnits = NIOLockedValueBox<[JournalID: any StorageUnit]>([:])

        var preparedUnitCount: Int { preparedUnits.withLockedValue { $0.count } }

        /// Takes the unit `journal` prepared, if it still has one.
        func takePreparedUnit(of journal: JournalID) -> (any StorageUnit)? {
            preparedUnits.withLockedValue { $0.removeValue(forKey: journal) }
        }

        /// Keeps `unit` for `journal`'s next rollover; `false` (the caller releases it) when the
        /// journal already has one.
        func keepPreparedUnit(_ unit: any StorageUnit, for journal: JournalID) -> Bool {
            preparedUnits.withLockedValue { units in
                guard units[journal] == nil else { return false }
                units[journal] = unit
                return true
            }
        }

        /// Returns every prepared unit to the pool; returns how many were.
        func reclaimPreparedUnits() -> Int {
            let units = preparedUnits.withLockedValue { units in
                defer { units.removeAll() }
                return Array(units.values)
            }
            var released = 0
            for unit in units where (try? journalPool.release(unit.id)) != nil { released += 1 }
            return released
        }

        func emit(_ event: JournalEvent) {
            events.withLockedValue { events in
                events.append(event)
                if events.count > 4096 { events.removeFirst(events.count - 4096) }
            }
            onEvent?(event)
            logger.debug("journal event", metadata: ["event": "\(event)"])
        }
    }

    /// The options the store was opened with.
    public let options: Options
    let context: Context
    private let journalsByID: NIOLockedValueBox<[JournalID: ElasticJournal]>
    /// Pools the store opened itself (``open(directory:options:journalBudget:configurations:logger:metricsFactory:)``),
    /// closed with it.
    private let ownedPools = NIOLockedValueBox<[FileStoragePool]>([])

    /// Wall-clock time in nanoseconds since the Unix epoch: journal times outlive restarts.
    @Sendable
    public static func wallClock() -> Instant {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return Instant(nanoseconds: Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec))
    }

    /// Opens the store over `journalPool` (journal units) and `basePool` (one unit per
    /// protected volume, holding its base image), recovering every journal found.
    ///
    /// - Parameters:
    ///   - journalPool: the pool journal units come from (shared by every journal).
    ///   - basePool: the pool of base-image units, one per protected volume.
    ///   - configurations: settings for journals found on storage; a journal without an
    ///     entry keeps the window and quota stored with it, with group commit.
    ///   - clock: the source of record times (wall clock by default).
    ///   - salt: the source of unit salts (random by default; fixed in simulations).
    ///   - options: read-only or not.
    ///   - logger: where recovery and early drops are logged.
    ///   - onEvent: called for every ``JournalEvent``, on the thread that caused it.
    ///   - metricsFactory: where metrics go (`MetricsSystem.factory` by default).
    public convenience init(
        journalPool: any StoragePool,
        basePool: any StoragePool,
        configurations: [JournalID: JournalConfiguration] = [:],
        options: Options = Options(),
        clock: @escaping @Sendable () -> Instant = JournalStore.wallClock,
        salt: @escaping @Sendable () -> UInt64 = { UInt64.random(in: 1...UInt64.max) },
        logger: Logger = Logger(label: "ft.journal"),
        onEvent: (@Sendable (JournalEvent) -> Void)? = nil,
        metricsFactory: (any MetricsFactory)? = nil
    ) throws(JournalError) {
        try self.init(
            journalPool: journalPool, basePool: basePool, configurations: configurations, options: options,
            clock: clock, salt: salt, logger: logger, onEvent: onEvent, plantedBug: nil,
            metricsFactory: metricsFactory ?? MetricsSystem.factory)
    }

    /// Opens the store with a bug planted, to show that the simulation catches it, and with
    /// group-commit flushes run by `flushDriver` instead of threads.
    package init(
        journalPool: any StoragePool,
        basePool: any StoragePool,
        configurations: [JournalID: JournalConfiguration],
        options: Options,
        clock: @escaping @Sendable () -> Instant,
        salt: @escaping @Sendable () -> UInt64,
        logger: Logger,
        onEvent: (@Sendable (JournalEvent) -> Void)?,
        plantedBug: JournalBug?,
        metricsFactory: any MetricsFactory = MetricsSystem.factory,
        flushDriver: ManualFlushDriver? = nil
    ) throws(JournalError) {
        self.options = options
        self.context = Context(
            journalPool: journalPool, basePool: basePool, clock: clock, salt: salt, logger: logger, onEvent: onEvent,
            plantedBug: plantedBug, metricsFactory: metricsFactory, flushDriver: flushDriver)
        self.journalsByID = NIOLockedValueBox([:])
        let recovered = try Recovery(context: context, options: options, configurations: configurations).run()
        journalsByID.withLockedValue { $0 = recovered }
        if options.verifyOnOpen {
            do {
                for journal in recovered.values.sorted(by: { $0.id < $1.id }) { _ = try journal.verify() }
            } catch {
                for journal in recovered.values { try? journal.close() }
                throw error
            }
        }
    }

    /// The journal with this identity, if it exists.
    public func journal(_ id: JournalID) -> ElasticJournal? {
        journalsByID.withLockedValue { $0[id] }
    }

    /// Every journal, by identity.
    public var journals: [ElasticJournal] {
        journalsByID.withLockedValue { $0.values.sorted { $0.id < $1.id } }
    }

    /// Recent events (the last 4,096), oldest first.
    public var recentEvents: [JournalEvent] { context.events.withLockedValue { $0 } }

    /// Flusher threads the store runs now: every group-commit journal shares them, so this is
    /// 0 before the first flush and never more than 4, however many journals the store holds.
    public var flusherThreads: Int { context.flusherThreadCount }

    /// Creates a journal protecting `volumes`, each as large as a base unit allows
    /// (`basePool.unitCapacity - 4096` bytes), with empty (zero) base images.
    public func createJournal(
        _ id: JournalID, configuration: JournalConfiguration, volumes: [VolumeID]
    ) throws(JournalError) -> ElasticJournal {
        guard !options.readOnly else {
            throw JournalError(.invalidConfiguration, journal: id, detail: "the store is open read-only")
        }
        try configuration.validate(unitCapacity: context.journalPool.unitCapacity)
        guard !volumes.isEmpty, Set(volumes).count == volumes.count else {
            throw JournalError(.invalidConfiguration, journal: id, detail: "a journal needs distinct volumes")
        }
        guard context.basePool.unitCapacity > JournalFormat.baseHeaderSize else {
            throw JournalError(.invalidConfiguration, journal: id, detail: "base units are too small for a volume")
        }
        guard journal(id) == nil else {
            throw JournalError(.invalidConfiguration, journal: id, detail: "\(id) already exists")
        }
        let now = context.clock()
        var bases: [VolumeID: BaseVolume] = [:]
        do throws(StorageError) {
            for volume in volumes {
                let storage = try context.basePool.allocate()
                var base = BaseVolume(
                    storage: storage,
                    manifest: BaseManifest(
                        journal: id, volume: volume, appliedThrough: 0, appliedTime: now, generation: 0,
                        window: configuration.window, quota: configuration.quota))
                try base.update { _ in }
                try base.refreshChecksums(touched: [])
                bases[volume] = base
            }
        } catch {
            throw JournalError(error, journal: id)
        }
        let first = try Self.startUnit(
            context: context, journal: id, configuration: configuration, firstSequence: 1, time: now,
            previous: nil)
        context.manager.withLockedValue { manager in
            manager.addJournal(
                id, policy: JournalManager.Policy(window: configuration.window, quota: configuration.quota),
                units: [first.span], windowStart: now)
        }
        let journal = ElasticJournal(
            id: id, configuration: configuration, context: context, units: [first], volumes: bases)
        journalsByID.withLockedValue { $0[id] = journal }
        context.emit(.unitAllocated(id, first.id))
        return journal
    }

    /// Allocates a unit and makes its header durable.
    static func startUnit(
        context: Context,
        journal: JournalID,
        configuration: JournalConfiguration,
        firstSequence: UInt64,
        time: Instant,
        previous: JournalUnit?
    ) throws(JournalError) -> JournalUnit {
        do throws(StorageError) {
            let storage = try context.journalPool.allocate()
            let header = UnitHeader(
                journal: journal, unit: storage.id, salt: context.salt(), firstSequence: firstSequence,
                firstTime: time, previousLastSequence: firstSequence - 1,
                previousSealChecksum: previous?.sealChecksum ?? 0, indexInterval: configuration.indexInterval,
                trailerOffset: JournalFormat.trailerOffset(
                    capacity: storage.capacity, indexInterval: configuration.indexInterval),
                capacity: storage.capacity)
            try storage.write(header.encoded(), at: 0)
            try storage.synchronize()
            return JournalUnit(storage: storage, header: header)
        } catch {
            throw error.code == .budgetExceeded
                ? JournalError(.full, journal: journal, storage: error, detail: "the pool refused a unit")
                : JournalError(error, journal: journal)
        }
    }

    /// Ages out, in every journal, the units that have left their window.
    @discardableResult
    public func maintain(now: Instant? = nil) throws(JournalError) -> [JournalManager.AgeOut] {
        var result: [JournalManager.AgeOut] = []
        for journal in journals { result += try journal.maintain(now: now) }
        return result
    }

    /// Closes every journal (flushing what is staged), then the pools the store opened itself
    /// (a store from ``open(directory:options:journalBudget:configurations:logger:metricsFactory:)``
    /// releases its directory's lock; pools a program passed in stay open).
    public func close() throws(JournalError) {
        var first: JournalError?
        for journal in journals {
            do { try journal.close() } catch { first = first ?? error }
        }
        context.stopFlushers()
        for pool in ownedPools.withLockedValue({ pools in
            defer { pools.removeAll() }
            return pools
        }) {
            pool.close()
        }
        if let first { throw first }
    }
}

extension JournalStore {
    /// The layout of a journal directory: `units/` (the pool journal units come from) and
    /// `base/` (one unit per protected volume), each a ``FaultToleranceCore/FileStoragePool``
    /// whose unit size is kept in its `pool.state`. `ftctl journal create` makes one.
    public enum Directory {
        /// The journal units' pool, inside `directory`.
        public static func units(in directory: String) -> String { directory + "/units" }
        /// The base images' pool, inside `directory`.
        public static func base(in directory: String) -> String { directory + "/base" }
    }

    /// How a journal directory's units are preallocated: zero-filled, so that the `fdatasync`
    /// after an append flushes data alone (see ``FaultToleranceCore/FileStoragePool/Preallocation``).
    /// A program that builds its own pools chooses for itself.
    public static let unitPreallocation = FileStoragePool.Preallocation.zeroFilled

    /// Opens the journal directory at `directory` (see ``Directory``) in one call: both pools,
    /// with their stored unit sizes, then the store over them, recovering every journal found.
    ///
    /// Read-only ``Options`` open the files read-only and take no lock; otherwise both pools
    /// are locked against every other writer. `journalBudget` caps the bytes journal units may
    /// take (the pool's own units, however many, by default). A directory that is not a
    /// journal directory throws ``JournalError/Code/invalidConfiguration``.
    ///
    /// ```swift
    /// let store = try JournalStore.open(directory: "/var/lib/app/journal")
    /// let journal = store.journal(1)
    /// ```
    public static func open(
        directory: String,
        options: Options = Options(),
        journalBudget: Int? = nil,
        configurations: [JournalID: JournalConfiguration] = [:],
        logger: Logger = Logger(label: "ft.journal"),
        metricsFactory: (any MetricsFactory)? = nil
    ) throws(JournalError) -> JournalStore {
        let access: FileStoragePool.Access = options.readOnly ? .readOnly : .readWrite
        let pools: (FileStoragePool, FileStoragePool)?
        do throws(StorageError) {
            if let unitSize = try FileStoragePool.storedUnitCapacity(in: Directory.units(in: directory)),
                let baseSize = try FileStoragePool.storedUnitCapacity(in: Directory.base(in: directory))
            {
                pools = (
                    try FileStoragePool(
                        directories: [Directory.units(in: directory)], unitCapacity: unitSize,
                        budget: journalBudget ?? (1 << 20) * unitSize, access: access,
                        preallocation: Self.unitPreallocation, logger: logger, metricsFactory: metricsFactory),
                    try FileStoragePool(
                        directories: [Directory.base(in: directory)], unitCapacity: baseSize, budget: 1 << 50,
                        access: access, logger: logger, metricsFactory: metricsFactory)
                )
            } else {
                pools = nil
            }
        } catch {
            throw JournalError(error)
        }
        guard let (pool, bases) = pools else {
            throw JournalError(
                .invalidConfiguration,
                detail: "\(directory) is not a journal directory (no units/pool.state and base/pool.state)")
        }
        do {
            let store = try JournalStore(
                journalPool: pool, basePool: bases, configurations: configurations, options: options, logger: logger,
                metricsFactory: metricsFactory)
            store.ownedPools.withLockedValue { $0 = [pool, bases] }
            return store
        } catch {
            pool.close()
            bases.close()
            throw error
        }
    }
}

extension JournalStore {
    /// Creates a journal directory (see ``Directory``) holding journal `journal` over
    /// `volumes`, each `volumeSize` bytes, with journal units of `unitSize` bytes and at most
    /// `journalUnits` of them, and opens it. Crash-safe: everything is built in a staging
    /// folder beside `directory` (`.NAME.creating-PID`) and renamed into place once durable, so
    /// a crash leaves no journal or a whole one; staging folders of creates whose process is
    /// gone are removed first. `directory` must not exist, or be an empty directory
    /// (``JournalError/Code/invalidConfiguration`` otherwise).
    ///
    /// ```swift
    /// let store = try JournalStore.create(
    ///     directory: "/var/lib/app/journal", unitSize: 1 << 20, journalUnits: 64, volumes: [1],
    ///     volumeSize: 1 << 20, configuration: JournalConfiguration(window: .seconds(3600), quota: 64))
    /// ```
    public static func create(
        directory: String,
        unitSize: Int,
        journalUnits: Int,
        volumes: [VolumeID],
        volumeSize: Int,
        configuration: JournalConfiguration,
        journal: JournalID = 1,
        logger: Logger = Logger(label: "ft.journal"),
        metricsFactory: (any MetricsFactory)? = nil
    ) throws(JournalError) -> JournalStore {
        guard unitSize > 0, journalUnits > 0, volumeSize > 0, !volumes.isEmpty else {
            throw JournalError(
                .invalidConfiguration,
                detail: "unit size, journal units and volume size must be positive, and one volume is needed")
        }
        if Directories.exists(directory) {
            let empty = Directories.isDirectory(directory) && ((try? Directories.list(directory).isEmpty) ?? false)
            guard empty else {
                throw JournalError(.invalidConfiguration, detail: "\(directory) exists and is not an empty directory")
            }
        }
        let trimmed = directory.hasSuffix("/") ? String(directory.dropLast()) : directory
        let slash = trimmed.lastIndex(of: "/")
        let parent = slash.map { String(trimmed[..<$0]) } ?? "."
        let name = slash.map { String(trimmed[trimmed.index(after: $0)...]) } ?? trimmed
        let prefix = "." + name + ".creating-"
        for entry in (try? Directories.list(parent.isEmpty ? "/" : parent)) ?? [] where entry.hasPrefix(prefix) {
            if let pid = Int32(entry.dropFirst(prefix.count)), pid != getpid(), kill(pid, 0) != 0 {
                Directories.removeTree(parent + "/" + entry)
            }
        }
        let staging = parent + "/" + prefix + "\(getpid())"
        Directories.removeTree(staging)
        // Storage failures become journal errors naming the same path.
        func storage<T>(_ body: () throws(StorageError) -> T) throws(JournalError) -> T {
            do { return try body() } catch { throw JournalError(error) }
        }
        do throws(JournalError) {
            for folder in [staging, Directory.units(in: staging), Directory.base(in: staging)] {
                try storage { () throws(StorageError) in try Directories.make(folder) }
            }
            let units = try storage { () throws(StorageError) in
                try FileStoragePool(
                    directories: [Directory.units(in: staging)], unitCapacity: unitSize,
                    budget: journalUnits * unitSize, preallocation: Self.unitPreallocation, logger: logger,
                    metricsFactory: metricsFactory)
            }
            defer { units.close() }
            let bases = try storage { () throws(StorageError) in
                try FileStoragePool(
                    directories: [Directory.base(in: staging)], unitCapacity: JournalFormat.baseHeaderSize + volumeSize,
                    budget: 1 << 50, logger: logger, metricsFactory: metricsFactory)
            }
            defer { bases.close() }
            let store = try JournalStore(
                journalPool: units, basePool: bases, configurations: [journal: configuration], logger: logger,
                metricsFactory: metricsFactory)
            _ = try store.createJournal(journal, configuration: configuration, volumes: volumes)
            try store.close()
            units.close()
            bases.close()
            // rename(2) replaces an empty directory; the parent's fsync makes it durable.
            guard rename(staging, trimmed) == 0 else {
                throw JournalError(
                    StorageError(.fileOperationFailed, path: trimmed, errno: errno, detail: "rename from \(staging)"))
            }
            try storage { () throws(StorageError) in try Directories.synchronize(parent.isEmpty ? "/" : parent) }
        } catch {
            Directories.removeTree(staging)
            throw error
        }
        return try open(
            directory: trimmed, journalBudget: journalUnits * unitSize, configurations: [journal: configuration],
            logger: logger, metricsFactory: metricsFactory)
    }
}

extension JournalStore: Service {
    /// As a ServiceLifecycle `Service`: ages out what has left every journal's window once a
    /// second (see ``run(maintenanceInterval:clock:)``) and, when the group shuts down
    /// gracefully, closes every journal (flushing what is staged).
    public func run() async throws {
        try await run(maintenanceInterval: .seconds(1))
    }

    /// Ages out expired units every `maintenanceInterval` on `clock` (so units are released
    /// while no appends arrive), until graceful shutdown or cancellation; then closes every
    /// journal and throws what closing threw. A failed age-out poisons its journal, whose
    /// next append throws it; here it is logged at warning and the others go on.
    ///
    /// List the store before the services that append to it: a `ServiceGroup` shuts
    /// services down in reverse order, so their last appends land before it closes.
    public func run(maintenanceInterval: Duration, clock: any RuntimeClock = SystemClock()) async throws {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                var next = clock.now + maintenanceInterval
                while !Task.isCancelled {
                    do { try await clock.sleep(until: next) } catch { return }
                    next = next + maintenanceInterval
                    for journal in self.journals {
                        do {
                            // Age-outs replay units into base images and sync them: disk work,
                            // done on the store's I/O threads.
                            _ = try await self.context.onIOThread(journal: journal.id) { () throws(JournalError) in
                                try journal.maintain()
                            }
                        } catch {
                            self.context.logger.warning(
                                "journal maintenance failed",
                                metadata: ["journal": "\(journal.id)", "error": "\(error)"])
                        }
                    }
                }
            }
            await parkUntilShutdown()
            group.cancelAll()
        }
        try await context.onIOThread(journal: nil) { () throws(JournalError) in try self.close() }
    }
}
