public import FaultToleranceCore
import Logging
import Metrics
import NIOConcurrencyHelpers
import NIOPosix
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// One write to journal: `bytes` written at `offset` of `volume`
/// (``ElasticJournal/append(contentsOf:)``).
public struct JournalWrite: Sendable, Hashable {
    /// The volume written.
    public var volume: VolumeID
    /// Where in the volume.
    public var offset: UInt64
    /// The bytes written.
    public var bytes: [UInt8]

    /// A write of `bytes` at `offset` of `volume`.
    public init(volume: VolumeID, offset: UInt64, bytes: [UInt8]) {
        self.volume = volume
        self.offset = offset
        self.bytes = bytes
    }
}

/// What an append got: the record's sequence number and time.
public struct JournalReceipt: Sendable, Hashable {
    /// The record's sequence number.
    public var sequence: UInt64
    /// The record's time.
    public var time: Instant

    /// Creates a receipt (for fixtures and mocks).
    public init(sequence: UInt64, time: Instant) {
        self.sequence = sequence
        self.time = time
    }
}

/// A journal of write commands over units from a ``FaultToleranceCore/StoragePool``, keeping
/// a window of history from which any instant can be reconstructed.
///
/// Obtain one from a ``JournalStore``. ``append(volume:offset:bytes:)`` returns once the
/// record is durable (group commit) or buffered, depending on
/// ``JournalConfiguration/durability``. ``image(of:at:)`` rebuilds a volume as it was at
/// an instant; ``records(from:through:)`` lists the writes between two instants.
///
/// Concurrency: any number of tasks and threads may append at once. Appends are staged
/// under a short lock (the record is framed and checksummed while it is copied into the
/// batch); a flush writes and `fdatasync`s each batch, so appends in flight share fsyncs.
/// Flushes run on the store's flusher threads, shared by all its journals (at most four,
/// whatever the number of journals; a journal flushes on one at a time, and journals with
/// more to flush take turns). A failed write or fsync poisons the journal: every waiting and later append
/// fails with ``JournalError/Code/poisoned``; reopen the store to recover.
///
/// Rollovers and age-outs do not pause appends. When the active unit is full, appends
/// switch to the next unit in memory at once (the unit was taken from the pool ahead of
/// need, when the pool had room) and go on staging while the old unit's seal and the new
/// unit's header are written and synced; the new unit's records reach storage after them,
/// in the order recovery relies on. Age-outs (``maintain(now:)``, run by
/// ``JournalStore/run(maintenanceInterval:clock:)`` once a second) apply old units to the
/// base images under a lock of their own, while appends and flushes go on. Appends wait
/// only when a rollover needs a unit the pool cannot give without first dropping history
/// (a quota reached or the pool exhausted): the rollover then applies the dropped unit
/// first.
public final class ElasticJournal: Sendable {
    /// The journal's identity.
    public let id: JournalID
    /// How it keeps history and acknowledges appends.
    public let configuration: JournalConfiguration

    let context: JournalStore.Context
    /// Serialises storage writes and syncs of this journal's units (staging runs beside it).
    private let io = NIOLock()
    /// Serialises rollovers: planning, the age-outs they need, allocation, and the switch.
    private let rolloverLock = NIOLock()
    /// Serialises changes to the base images (age-outs) and the rechecks of what readers read.
    let applier = NIOLock()
    private let state: TryLockedValueBox<WriterState>
    private let flushSignal = ConditionLock(value: 0)
    /// Set with `flushSignal`, for a flusher that spins before it sleeps on it.
    private let flushWanted = Atomic<Bool>(false)
    /// Bumped on every staged record and every registered durability waiter: a flusher that
    /// found nothing to do spins on it for a moment before giving its thread back.
    private let activity = Atomic<UInt64>(0)
    private let metrics: JournalMetrics
    /// Batch bytes at which an append triggers a write (buffered) or wakes the flusher.
    private let drainThreshold: Int
    /// Buffered batches are written in pieces aligned to this many bytes (see ``BatchBuffer``):
    /// the largest power of two up to the batch size, from 4 KiB to 64 KiB.
    private let writeAlignment: Int
    private let counters = NIOLockedValueBox(Statistics())

    /// Counts since the journal was opened.
    public struct Statistics: Sendable, Hashable {
        /// Records made durable, by a flush's `fdatasync` or by a rollover's sync of the unit it
        /// seals: every acknowledged record is counted once.
        public var recordsSynchronized = 0
        /// The records of ``recordsSynchronized`` that flushes made durable (a rollover's are
        /// not), so that ``recordsPerSynchronization`` is group commit's batching alone.
        public var recordsSynchronizedByFlushes = 0
        /// `fdatasync`s issued by flushes (a rollover's own syncs are not counted).
        public var synchronizations = 0
        /// Batch writes issued.
        public var batchWrites = 0

        /// Records per flush fsync: how well group commit is batching.
        public var recordsPerSynchronization: Double {
            synchronizations == 0 ? 0 : Double(recordsSynchronizedByFlushes) / Double(synchronizations)
        }
    }

    /// Counts since the journal was opened.
    public var statistics: Statistics { counters.withLockedValue { $0 } }

    struct WriterState: Sendable {
        var units: [JournalUnit]
        var volumes: [VolumeID: BaseVolume] {
            didSet { volumeSizes = Self.sizes(of: volumes) }
        }
        /// Volume sizes for the append path: a short array beats hashing on every record.
        var volumeSizes: [(volume: VolumeID, size: Int)]

        static func sizes(of volumes: [VolumeID: BaseVolume]) -> [(volume: VolumeID, size: Int)] {
            volumes.map { ($0.key, $0.value.size) }.sorted { $0.volume < $1.volume }
        }
        var batch: BatchBuffer
        var spare: BatchBuffer?
        /// Where the batch will be written in the active unit (the written end, which an
        /// aligned write may leave inside a record).
        var batchStart: Int
        /// The end of the last whole record written to the active unit: how far readers read.
        var recordsWrittenEnd: Int
        var batchRecords = 0
        var nextSequence: UInt64
        var lastTime: Instant
        var writtenSequence: UInt64
        var durableSequence: UInt64
        /// Appends waiting for durability, in sequence order. A waiter is called with the
        /// state lock held, so it must not call back into the journal (a continuation's
        /// resume, or a simulation noting the acknowledgement).
        var waiters: [(sequence: UInt64, notify: DurabilityWait)] = []
        var poisoned: JournalError?
        var closed = false
        var flushScheduled = false
        /// A rollover switched to in memory, not yet on storage (see ``PendingRollover``).
        var pendingRollover: PendingRollover?
        /// The unit a rollover left unsealed: its records are durable, its seal not yet.
        var unsealed: UnsealedUnit?
        /// Readers holding a snapshot (``snapshot()`` to ``endRead()``), and the units aged
        /// out meanwhile, whose storage goes back to the pool when the last reader is done.
        var readers = 0
        var releasesAfterReaders: [UnitID] = []
        /// Group commit: an estimate of the appends in flight (records the last flush made
        /// durable plus those staged meanwhile). The flusher waits (boundedly) for about as
        /// many before the next fsync, so appenders that were just acknowledged and append
        /// again share it instead of splitting into two half-full batches.
        var flushTarget = 1
        var lastSynchronizeNanoseconds: Int64 = 0

        var stagedSequence: UInt64 { nextSequence &- 1 }

        var active: JournalUnit {
            get { units[units.count - 1] }
            set { units[units.count - 1] = newValue }
        }

        mutating func resumeDurable() {
            for waiter in takeDurable() { waiter.notify(.success(())) }
        }

        /// Removes the waiters whose records are durable, for resuming outside the lock.
        mutating func takeDurable() -> ArraySlice<(sequence: UInt64, notify: DurabilityWait)> {
            guard let first = waiters.first, first.sequence <= durableSequence else { return [] }
            let split = waiters.firstIndex { $0.sequence > durableSequence } ?? waiters.count
            let ready = waiters[..<split]
            waiters.removeSubrange(..<split)
            return ready
        }

        mutating func fail(_ error: JournalError) {
            poisoned = poisoned ?? error
            for waiter in waiters { waiter.notify(.failure(error)) }
            waiters.removeAll()
        }
    }

    init(
        id: JournalID,
        configuration: JournalConfiguration,
        context: JournalStore.Context,
        units: [JournalUnit],
        volumes: [VolumeID: BaseVolume]
    ) {
        self.id = id
        self.configuration = configuration
        self.context = context
        let last = units.last?.lastSequence ?? 0
        let lastTime = units.last?.lastTime ?? .zero
        let batchCapacity: Int
        switch configuration.durability {
        case .groupCommit(let bytes, _):
            batchCapacity = min(bytes, 1 << 20)
            drainThreshold = bytes
        case .buffered(let bytes):
            batchCapacity = bytes + 4096
            drainThreshold = bytes
        }
        var alignment = 4096
        while alignment < 64 << 10, alignment * 2 <= drainThreshold { alignment *= 2 }
        writeAlignment = alignment
        self.state = TryLockedValueBox(
            WriterState(
                units: units, volumes: volumes, volumeSizes: WriterState.sizes(of: volumes),
                batch: BatchBuffer(capacity: batchCapacity),
                spare: BatchBuffer(capacity: batchCapacity),
                batchStart: units.last?.recordsEnd ?? JournalFormat.headerPageSize,
                recordsWrittenEnd: units.last?.recordsEnd ?? JournalFormat.headerPageSize, nextSequence: last + 1,
                lastTime: lastTime, writtenSequence: last, durableSequence: last))
        self.metrics = JournalMetrics(journal: id, factory: context.metricsFactory)
    }

    // MARK: - Appending

    /// Journals a write of `bytes` at `offset` of `volume` and returns once it is durable
    /// (group commit) or buffered (buffered mode).
    ///
    /// Throws ``JournalError/Code/unknownVolume``, ``JournalError/Code/outOfBounds``,
    /// ``JournalError/Code/recordTooLarge`` for bad input; ``JournalError/Code/full`` when
    /// no unit can be had (nothing was written); ``JournalError/Code/poisoned`` after a
    /// storage failure (the record may or may not survive, but was not acknowledged).
    ///
    /// Never blocks the calling task's thread on disk I/O or on a lock held across it: the
    /// record is staged in memory when the journal's lock is free at once; a rollover, an age-out,
    /// a full pool, a buffered batch to write, or a lock held by one of those, is handled on
    /// the store's I/O threads while this task is suspended.
    @discardableResult
    public func append(volume: VolumeID, offset: UInt64, bytes: [UInt8]) async throws(JournalError) -> JournalReceipt {
        guard case .groupCommit = configuration.durability else {
            return try await appendBufferedSuspending(volume: volume, offset: offset, bytes: bytes)
        }
        // Staged and registered for durability under one lock round, with the task's own
        // continuation as the waiter (nothing allocated per record), when the lock is free.
        let footprint = JournalFormat.footprint(payloadCount: bytes.count)
        let result: Result<JournalReceipt, JournalError> = await withUnsafeContinuation { continuation in
            let fast = bytes.withUnsafeBytes { raw in
                state.withLockedValueIfAvailable { state -> (StageOutcome, schedule: Bool) in
                    let outcome = tryStage(&state, volume: volume, offset: offset, payload: raw, footprint: footprint)
                    guard case .staged(let receipt, _) = outcome else { return (outcome, false) }
                    return (outcome, register(&state, .task(continuation, receipt), for: receipt.sequence))
                }
            }
            switch fast {
            case (.staged(_, let drain), let schedule)?:
                if drain { signalFlusher() }
                if schedule { scheduleFlush() }
            case (.failure(let error), _)?:
                continuation.resume(returning: .failure(error))
            case (.needsRollover, _)?, nil:
                // A rollover is due, or the lock is held (by a rollover's switch, say): staged
                // on an I/O thread, which may do the rollover and wait for the pool.
                context.ioThreads.submit { threadState in
                    guard threadState == .active else {
                        continuation.resume(
                            returning: .failure(JournalError(.closed, journal: self.id, detail: "the store is closed")))
                        return
                    }
                    let staged = bytes.withUnsafeBytes { raw in
                        Result { () throws(JournalError) in try self.stage(volume: volume, offset: offset, payload: raw)
                        }
                    }
                    switch staged {
                    case .success(let receipt): self.notifyWhenDurable(receipt.sequence, .task(continuation, receipt))
                    case .failure(let error): continuation.resume(returning: .failure(error))
                    }
                }
            }
        }
        return try result.get()
    }

    /// ``append(volume:offset:bytes:)`` in buffered mode: staged at once when the lock is free
    /// and no rollover is due, otherwise on an I/O thread; a full batch is written there too.
    private func appendBufferedSuspending(
        volume: VolumeID, offset: UInt64, bytes: [UInt8]
    ) async throws(JournalError) -> JournalReceipt {
        let footprint = JournalFormat.footprint(payloadCount: bytes.count)
        let fast = bytes.withUnsafeBytes { raw in
            state.withLockedValueIfAvailable { state in
                tryStage(&state, volume: volume, offset: offset, payload: raw, footprint: footprint)
            }
        }
        switch fast {
        case .staged(let receipt, let drain)?:
            if drain { try await offload { () throws(JournalError) in try self.drain(sync: false, aligned: true) } }
            return receipt
        case .failure(let error)?:
            throw error
        case .needsRollover?, nil:
            return try await offload { () throws(JournalError) in
                try bytes.withUnsafeBytes { raw in
                    Result { () throws(JournalError) in try self.stage(volume: volume, offset: offset, payload: raw) }
                }.get()
            }
        }
    }

    /// Journals `writes` in order and returns, once the last is durable (group commit) or
    /// buffered, a receipt for each: one call and one wait for the whole batch, and one clock
    /// read for the records that fit in the active unit (they share a time), instead of one of
    /// each per record.
    ///
    /// Every write is checked before any is staged: a bad volume, range or size throws and
    /// journals none of them. A storage failure part-way throws like ``append(volume:offset:bytes:)``;
    /// the records staged before it may or may not survive, and none was acknowledged. Like it,
    /// never blocks the calling task's thread on disk I/O.
    @discardableResult
    public func append(contentsOf writes: [JournalWrite]) async throws(JournalError) -> [JournalReceipt] {
        guard !writes.isEmpty else { return [] }
        let now = context.clock()
        var receipts: [JournalReceipt] = []
        receipts.reserveCapacity(writes.count)
        var drain = false
        // Checked, and as many as fit in the active unit staged, at once if the lock is free now.
        let checked: Result<Void, JournalError>? = state.withLockedValueIfAvailable { state in
            do throws(JournalError) {
                try check(writes, sizes: state.volumeSizes, trailerOffset: state.active.header.trailerOffset)
            } catch {
                return .failure(error)
            }
            for write in writes {
                let outcome = write.bytes.withUnsafeBytes { raw in
                    tryStage(
                        &state, volume: write.volume, offset: write.offset, payload: raw,
                        footprint: JournalFormat.footprint(payloadCount: raw.count), now: now)
                }
                guard case .staged(let receipt, let drainNow) = outcome else { break }
                receipts.append(receipt)
                drain = drain || drainNow
            }
            return .success(())
        }
        if case .failure(let error)? = checked { throw error }
        if checked == nil {
            // The lock is held (by a rollover's I/O, say): checked on an I/O thread instead.
            try await offload { () throws(JournalError) in try self.check(writes) }
        }
        if drain {
            switch configuration.durability {
            case .buffered: try await offload { () throws(JournalError) in try self.drain(sync: false, aligned: true) }
            case .groupCommit: signalFlusher()
            }
        }
        if receipts.count < writes.count {
            // The rest needs a rollover (or the lock was busy, or the journal failed): staged
            // on an I/O thread, which may do the rollover and wait for the pool.
            let rest = Array(writes[receipts.count...])
            receipts += try await offload { () throws(JournalError) in
                var staged: [JournalReceipt] = []
                for write in rest {
                    staged.append(
                        try write.bytes.withUnsafeBytes { raw in
                            Result { () throws(JournalError) in
                                try self.stage(volume: write.volume, offset: write.offset, payload: raw)
                            }
                        }.get())
                }
                return staged
            }
        }
        if case .groupCommit = configuration.durability, let last = receipts.last {
            _ = try await waitUntilDurable(last)
        }
        return receipts
    }

    /// Journals `writes` in order without waiting for durability (as
    /// ``appendBuffered(volume:offset:bytes:)`` does each), checking every write first.
    @discardableResult
    public func appendBuffered(contentsOf writes: [JournalWrite]) throws(JournalError) -> [JournalReceipt] {
        try check(writes)
        var receipts: [JournalReceipt] = []
        receipts.reserveCapacity(writes.count)
        for write in writes {
            receipts.append(
                try write.bytes.withUnsafeBytes { raw in
                    Result { () throws(JournalError) in
                        try stage(volume: write.volume, offset: write.offset, payload: raw)
                    }
                }.get())
        }
        return receipts
    }

    /// Throws what staging would throw for a bad write, before anything is staged (waits for
    /// the journal's lock: not for async callers' threads).
    private func check(_ writes: [JournalWrite]) throws(JournalError) {
        let (sizes, trailerOffset) = state.withLockedValue { ($0.volumeSizes, $0.active.header.trailerOffset) }
        try check(writes, sizes: sizes, trailerOffset: trailerOffset)
    }

    /// Throws what staging would throw for a bad write, given the volumes' sizes and where the
    /// active unit's records end.
    private func check(
        _ writes: [JournalWrite], sizes: [(volume: VolumeID, size: Int)], trailerOffset: Int
    ) throws(JournalError) {
        let capacity = trailerOffset
        for write in writes {
            guard let size = sizes.first(where: { $0.volume == write.volume })?.size else {
                throw JournalError(.unknownVolume, journal: id, detail: "\(write.volume) is not protected")
            }
            guard write.offset <= UInt64(size), UInt64(write.bytes.count) <= UInt64(size) - write.offset else {
                throw JournalError(
                    .outOfBounds, journal: id,
                    detail:
                        "write of \(write.bytes.count) bytes at \(write.offset) outside \(write.volume) of \(size) bytes"
                )
            }
            guard JournalFormat.footprint(payloadCount: write.bytes.count) <= capacity - JournalFormat.headerPageSize
            else {
                throw JournalError(
                    .recordTooLarge, journal: id,
                    detail: "a record of \(write.bytes.count) bytes does not fit in a unit")
            }
        }
    }

    /// Runs `body` on one of the store's I/O threads, suspending the caller until it is done.
    private func offload<T: Sendable>(
        _ body: @escaping @Sendable () throws(JournalError) -> T
    ) async throws(JournalError) -> T {
        try await context.onIOThread(journal: id, body)
    }

    /// Wakes the flusher: the batch reached its byte cap or the last flush's record count.
    private func signalFlusher() {
        flushWanted.store(true, ordering: .releasing)
        flushSignal.lock()
        flushSignal.unlock(withValue: 1)
    }

    /// Journals a write without waiting for durability, whatever the configured policy;
    /// call ``synchronize()`` for a durability point. In buffered mode a full batch is
    /// written by the appending thread.
    @discardableResult
    public func appendBuffered(
        volume: VolumeID, offset: UInt64, bytes: UnsafeRawBufferPointer
    ) throws(JournalError) -> JournalReceipt {
        try stage(volume: volume, offset: offset, payload: bytes)
    }

    /// Makes every record staged so far durable.
    public func synchronize() throws(JournalError) {
        try drain(sync: true)
    }

    /// The sequence number of the last durable record.
    public var durableSequence: UInt64 { state.withLockedValue { $0.durableSequence } }

    /// The base image of `volume` as the journal holds it now.
    func baseVolume(_ volume: VolumeID) -> BaseVolume? { state.withLockedValue { $0.volumes[volume] } }

    /// The oldest sequence number the journal still holds (the first record of its oldest unit;
    /// earlier ones have aged out into the base images).
    public var oldestSequence: UInt64 { state.withLockedValue { $0.units.first?.header.firstSequence ?? 1 } }

    /// The sequence number of the last staged record.
    public var lastSequence: UInt64 { state.withLockedValue { $0.stagedSequence } }

    private enum StageOutcome {
        case staged(JournalReceipt, drain: Bool)
        case needsRollover
        /// Boxed: the error is large and rare, and the outcome is returned on every append.
        indirect case failure(JournalError)
    }

    private func stage(volume: VolumeID, offset: UInt64, payload: UnsafeRawBufferPointer) throws(JournalError)
        -> JournalReceipt
    {
        let footprint = JournalFormat.footprint(payloadCount: payload.count)
        var waitedSince: Instant?
        var switched = false
        while true {
            let outcome = state.withLockedValue { state in
                tryStage(&state, volume: volume, offset: offset, payload: payload, footprint: footprint)
            }
            switch outcome {
            case .staged(let receipt, let drain):
                // This thread switched units: it writes the rollover out. The record is staged
                // whatever happens there: a storage failure poisons the journal, and the
                // record's durability wait (or the next call) throws it.
                if switched { try? finishRollover() }
                if drain {
                    switch configuration.durability {
                    case .buffered: try self.drain(sync: false, aligned: true)
                    case .groupCommit: signalFlusher()
                    }
                }
                return receipt
            case .failure(let error):
                throw error
            case .needsRollover:
                switch try rollover(footprint: footprint) {
                case .done:
                    continue
                case .switched:
                    switched = true
                    continue
                case .wait:
                    let now = context.clock()
                    let since = waitedSince ?? now
                    waitedSince = since
                    if now - since > configuration.backPressureTimeout {
                        throw JournalError(
                            .full, journal: id,
                            detail: "the pool stayed exhausted for \(configuration.backPressureTimeout)")
                    }
                    metrics.backPressure.increment()
                    // Blocks this thread while the pool is exhausted (bounded by
                    // backPressureTimeout): one of the store's I/O threads for an async `append`
                    // (which never stages here on its own thread), or the caller's own thread for
                    // the synchronous appends; never the cooperative pool.
                    var pause = timespec(tv_sec: 0, tv_nsec: 1_000_000)
                    nanosleep(&pause, nil)
                }
            }
        }
    }

    /// Tells a spinning flusher that something arrived. Called with the state lock held, so
    /// the load and the store need no read-modify-write between them (no `lock` prefix on the
    /// staging path).
    @inline(__always)
    private func noteActivity() {
        activity.store(activity.load(ordering: .relaxed) &+ 1, ordering: .releasing)
    }

    private func tryStage(
        _ state: inout WriterState,
        volume: VolumeID,
        offset: UInt64,
        payload: UnsafeRawBufferPointer,
        footprint: Int,
        now: Instant? = nil
    ) -> StageOutcome {
        // Closed first: close() fails the waiters through the poisoning path, but an append
        // after close is the caller's doing, not the disk's.
        if state.closed { return .failure(JournalError(.closed, journal: id)) }
        if let poisoned = state.poisoned {
            return .failure(JournalError(.poisoned, journal: id, detail: "after \(poisoned)"))
        }
        // The hot path reads fields in place (no copy of the active unit or of a base
        // volume, whose references would be retained and released on every record).
        guard let size = state.volumeSizes.first(where: { $0.volume == volume })?.size else {
            return .failure(JournalError(.unknownVolume, journal: id, detail: "\(volume) is not protected"))
        }
        guard offset <= UInt64(size), UInt64(payload.count) <= UInt64(size) - offset else {
            return .failure(
                JournalError(
                    .outOfBounds, journal: id,
                    detail: "write of \(payload.count) bytes at \(offset) outside \(volume) of \(size) bytes"))
        }
        let last = state.units.count - 1
        let trailerOffset = state.units[last].header.trailerOffset
        guard footprint <= trailerOffset - JournalFormat.headerPageSize else {
            return .failure(
                JournalError(
                    .recordTooLarge, journal: id,
                    detail:
                        "a record of \(payload.count) bytes does not fit in a unit of \(state.units[last].header.capacity)"
                ))
        }
        let recordOffset = state.units[last].recordsEnd
        guard state.units[last].sealChecksum == nil, recordOffset + footprint <= trailerOffset else {
            return .needsRollover
        }
        let sequence = state.nextSequence
        RuntimeInvariants.check(
            sequence == state.units[last].lastSequence &+ 1,
            "\(id) stages \(sequence) after unit \(state.units[last].id) ends at \(state.units[last].lastSequence)")
        let time = max(now ?? context.clock(), state.lastTime)
        let batch = state.batch
        batch.reserve(footprint)
        _ = RecordCodec.encode(
            into: batch.base + batch.count, salt: state.units[last].header.salt, sequence: sequence, time: time,
            volume: volume, offset: offset, payload: payload, durableThrough: state.durableSequence)
        batch.count += footprint
        state.batchRecords += 1
        state.units[last].noteRecord(sequence: sequence, time: time, offset: recordOffset, footprint: footprint)
        state.nextSequence = sequence + 1
        state.lastTime = time
        noteActivity()
        var drain = batch.count >= drainThreshold
        if case .groupCommit = configuration.durability, state.batchRecords == state.flushTarget { drain = true }
        return .staged(JournalReceipt(sequence: sequence, time: time), drain: drain)
    }

    /// Suspends until the record of `receipt` is durable, returning the receipt.
    private func waitUntilDurable(_ receipt: JournalReceipt) async throws(JournalError) -> JournalReceipt {
        let result: Result<JournalReceipt, JournalError> = await withUnsafeContinuation { continuation in
            // Registered here if the lock is free; otherwise (a rollover holds it across its
            // I/O) from an I/O thread, which may wait for it.
            let wait = DurabilityWait.task(continuation, receipt)
            if !notifyWhenDurable(receipt.sequence, wait, onlyIfUnlocked: true) {
                context.ioThreads.submit { _ in
                    _ = self.notifyWhenDurable(receipt.sequence, wait, onlyIfUnlocked: false)
                }
            }
        }
        return try result.get()
    }

    /// Journals a write like ``append(volume:offset:bytes:)`` in group commit, but calls
    /// `notify` (with the journal's lock held: it must not call back into the journal) once
    /// the record is durable or the journal is poisoned, instead of suspending. The
    /// simulation appends this way, with the flushes driven by a ``ManualFlushDriver``.
    package func appendNotifying(
        volume: VolumeID, offset: UInt64, bytes: UnsafeRawBufferPointer,
        notify: @escaping DurabilityWaiter
    ) throws(JournalError) -> JournalReceipt {
        let receipt = try stage(volume: volume, offset: offset, payload: bytes)
        notifyWhenDurable(receipt.sequence, .callback(notify))
        return receipt
    }

    /// Stages a write if the active unit has room for it, and nothing more: no write, sync,
    /// rollover or wait, so it may be called from inside the journal's own storage operations.
    /// The simulation appends this way from a disk's synchronize hook, to interleave appends
    /// with a flush's fsync, a rollover's seal and an age-out's apply. Returns `nil` when the
    /// record needs a rollover. With `notify` (group commit), it is called like
    /// ``appendNotifying(volume:offset:bytes:notify:)``'s.
    package func stageIfRoom(
        volume: VolumeID, offset: UInt64, bytes: UnsafeRawBufferPointer, notify: DurabilityWaiter?
    ) throws(JournalError) -> JournalReceipt? {
        let footprint = JournalFormat.footprint(payloadCount: bytes.count)
        let outcome = state.withLockedValue { state in
            tryStage(&state, volume: volume, offset: offset, payload: bytes, footprint: footprint)
        }
        switch outcome {
        case .staged(let receipt, _):
            if let notify { notifyWhenDurable(receipt.sequence, .callback(notify)) }
            return receipt
        case .needsRollover:
            return nil
        case .failure(let error):
            throw error
        }
    }

    /// Calls `notify` once `sequence` is durable (at once if it is), or with the poisoning
    /// error; schedules a flush if none is scheduled. With `onlyIfUnlocked`, does nothing and
    /// returns `false` when the journal's lock is held.
    @discardableResult
    private func notifyWhenDurable(
        _ sequence: UInt64, _ notify: DurabilityWait, onlyIfUnlocked: Bool = false
    ) -> Bool {
        let schedule: Bool
        if onlyIfUnlocked {
            guard let registered = state.withLockedValueIfAvailable({ register(&$0, notify, for: sequence) }) else {
                return false
            }
            schedule = registered
        } else {
            schedule = state.withLockedValue { register(&$0, notify, for: sequence) }
        }
        if schedule { scheduleFlush() }
        return true
    }

    /// Registers `notify` for `sequence` (calling it at once if the record is durable or the
    /// journal poisoned); returns whether the caller must schedule a flush (after unlocking).
    private func register(_ state: inout WriterState, _ notify: DurabilityWait, for sequence: UInt64) -> Bool {
        if state.durableSequence >= sequence {
            notify(.success(()))
            return false
        }
        if let poisoned = state.poisoned {
            notify(
                .failure(
                    state.closed
                        ? JournalError(.closed, journal: id)
                        : JournalError(.poisoned, journal: id, detail: "after \(poisoned)")))
            return false
        }
        // In sequence order (two appenders may register out of the order they staged in),
        // so that every flush releases exactly the waiters it made durable.
        var index = state.waiters.endIndex
        while index > state.waiters.startIndex && state.waiters[index - 1].sequence > sequence { index -= 1 }
        if index == state.waiters.endIndex {
            state.waiters.append((sequence, notify))
        } else {
            state.waiters.insert((sequence, notify), at: index)
        }
        noteActivity()
        if state.flushScheduled { return false }
        state.flushScheduled = true
        return true
    }

    private func scheduleFlush() {
        if let manual = context.flushDriver {
            manual.submit { [self] in
                if flushOnce() { scheduleFlush() }
            }
            return
        }
        context.submitFlushTurn { [self] in
            if flushTurn() { scheduleFlush() }
        }
    }

    /// One turn on the store's shared flusher threads: flushes (each time waiting, boundedly,
    /// for the batch to fill, then writing and syncing it) until nothing is left, or until
    /// another journal's turn is waiting for a thread. Returns whether another turn is needed;
    /// it is then queued behind the other journals' turns.
    ///
    /// Appenders acknowledged by a flush append again within microseconds, and on a small
    /// machine a sleeping thread takes tens of microseconds to wake: so the flusher spins
    /// (yielding the core) for up to one fsync's time, at most ``spinLimit``, before it sleeps
    /// on the batch filling or gives its thread back.
    private func flushTurn() -> Bool {
        while true {
            // Wait for the batch to fill, up to the configured delay; appenders signal when
            // the batch reaches the byte cap or the last flush's record count. Not while
            // another journal's turn waits for a thread: the time in that queue is this
            // batch's wait.
            let (staged, target, lastSync) = state.withLockedValue {
                ($0.batchRecords, $0.flushTarget, $0.lastSynchronizeNanoseconds)
            }
            var wait = 0.0
            if case .groupCommit(_, let delay) = configuration.durability, !context.flushTurnsWaiting {
                // Without a configured delay: wait while fewer records are staged than the
                // last flush carried, for at most one fsync's time (but 500 µs at least, so
                // a thousand appenders resuming on two cores can catch up).
                wait =
                    delay > .zero
                    ? Double(delay.nanoseconds) / 1e9
                    : (staged < target ? max(Double(lastSync) / 1e9, 0.000_5) : 0)
            }
            if wait > 0 {
                let spin = min(wait, spinSeconds(lastSync))
                let signalled = spinUntil(seconds: spin) { flushWanted.load(ordering: .acquiring) }
                if signalled || flushSignal.lock(whenValue: 1, timeoutSeconds: min(wait - spin, 0.05)) {
                    if signalled { flushSignal.lock() }
                    flushSignal.unlock(withValue: 0)
                }
                flushWanted.store(false, ordering: .relaxed)
            }
            let seen = activity.load(ordering: .acquiring)
            guard
                flushOnce(lingering: { () -> Bool in
                    // Nothing left: wait a moment for the appenders just acknowledged.
                    context.flushTurnsWaiting
                        ? false
                        : spinUntil(seconds: spinSeconds(lastSync)) { activity.load(ordering: .acquiring) != seen }
                })
            else { return false }
            // Yield the thread only to a journal waiting for one.
            if context.flushTurnsWaiting { return true }
        }
    }

    /// The longest a flusher spins: long enough for appenders resumed on another core to
    /// append again, short enough that a lone appender costs little CPU.
    static let spinLimit = 0.000_2

    /// How long a flusher spins, given the last fsync's time in nanoseconds.
    private func spinSeconds(_ lastSync: Int64) -> Double {
        min(max(Double(lastSync) / 1e9, 0.000_02), Self.spinLimit)
    }

    /// Spins, yielding the core on each turn, until `condition` holds (returns `true`) or
    /// `seconds` have passed or another journal's turn is waiting (returns `false`).
    private func spinUntil(seconds: Double, _ condition: () -> Bool) -> Bool {
        guard seconds > 0 else { return condition() }
        let deadline = ContinuousClock.now + .nanoseconds(Int64(seconds * 1e9))
        while true {
            if condition() { return true }
            if ContinuousClock.now >= deadline || context.flushTurnsWaiting { return false }
            sched_yield()
        }
    }

    /// One flush: writes and syncs the batch, resolving its waiters. Returns whether another
    /// is needed (appends staged or waiting meanwhile); when not, or when the flush failed
    /// (its waiters are failed with it), the flusher is no longer scheduled. When nothing is
    /// left, `lingering` may wait for more (returning whether something arrived) before the
    /// flusher gives up.
    private func flushOnce(lingering: () -> Bool = { false }) -> Bool {
        do {
            try drain(sync: true)
        } catch {
            state.withLockedValue { $0.flushScheduled = false }
            return false
        }
        let idle = { (state: inout WriterState) -> Bool in state.batch.count == 0 && state.waiters.isEmpty }
        // Busy (the common case under load): one lock round. Idle: linger, then look again.
        guard state.withLockedValue(idle) else { return true }
        if lingering() { return true }
        return state.withLockedValue { state -> Bool in
            guard idle(&state) else { return true }
            state.flushScheduled = false
            return false
        }
    }

    /// Writes the staged batch to the active unit and, with `sync`, makes it durable. With
    /// `aligned` (a full batch of a buffered journal, not a read or a sync), writes only up to
    /// the last boundary of ``writeAlignment`` and carries the rest, if any, into the next
    /// batch.
    func drain(sync: Bool, aligned: Bool = false) throws(JournalError) {
        try io.withLock {
            Result { () throws(JournalError) in try drainHoldingIO(sync: sync, aligned: aligned) }
        }.get()
    }

    private struct Taken {
        var buffer: BatchBuffer
        /// Bytes of `buffer` to write.
        var length: Int
        var start: Int
        var unit: any StorageUnit
        /// The last record the write carries whole, and where it ends.
        var lastSequence: UInt64
        var recordsEnd: Int?
        var records: Int
        var previousDurable: UInt64
    }

    private func drainHoldingIO(sync: Bool, aligned: Bool = false) throws(JournalError) {
        // A rollover's storage writes come before anything written to its successor: take the
        // batch, unless a rollover is pending (rare), which then goes first. One lock on the
        // flush path, not two.
        var taken = takeBatch(sync: sync, aligned: aligned)
        while taken == nil {
            try completePendingRollover()
            taken = takeBatch(sync: sync, aligned: aligned)
        }
        guard let taken = try taken?.get() else { return }
        try write(taken, sync: sync)
    }

    /// Takes the staged batch for writing; `nil` when a rollover switched units since it was
    /// last carried out (it must go first).
    private func takeBatch(sync: Bool, aligned: Bool) -> Result<Taken?, JournalError>? {
        state.withLockedValue { state in
            if state.closed && state.poisoned != nil { return .failure(JournalError(.closed, journal: id)) }
            if let poisoned = state.poisoned {
                return .failure(JournalError(.poisoned, journal: id, detail: "after \(poisoned)"))
            }
            if state.pendingRollover != nil { return nil }
            guard state.batch.count > 0 || (sync && state.writtenSequence > state.durableSequence) else {
                return .success(nil)
            }
            let buffer = state.batch
            let start = state.batchStart
            let end = start + buffer.count
            let cut = aligned && !sync ? end - end % writeAlignment - start : buffer.count
            // Nothing up to a boundary yet: the next full batch writes it.
            guard cut > 0 || cut == buffer.count else { return .success(nil) }
            // Spares are emptied when they are put back.
            let next = state.spare ?? BatchBuffer(capacity: buffer.capacity)
            var taken = Taken(
                buffer: buffer, length: buffer.count, start: start, unit: state.active.storage,
                lastSequence: state.stagedSequence, recordsEnd: end, records: state.batchRecords,
                previousDurable: state.durableSequence)
            if cut < buffer.count {
                let split = buffer.split(at: cut)
                taken.length = cut
                taken.lastSequence = split.lastSequence ?? state.writtenSequence
                taken.recordsEnd = split.lastSequence.map { _ in start + split.recordsEnd }
                taken.records = split.records
                next.reset(carrying: buffer, from: cut, nextRecord: split.nextRecord)
            }
            state.batch = next
            state.spare = nil
            state.batchStart = start + taken.length
            state.batchRecords -= taken.records
            return .success(taken)
        }
    }

    /// Writes a taken batch and, with `sync`, makes it durable and releases its waiters.
    private func write(_ taken: Taken, sync: Bool) throws(JournalError) {
        do throws(StorageError) {
            if taken.length > 0 {
                try taken.unit.write(
                    UnsafeRawBufferPointer(rebasing: taken.buffer.bytes[0..<taken.length]), at: taken.start)
            }
            if sync && context.plantedBug != .acknowledgeBeforeSync {
                let started = ContinuousClock.now
                try taken.unit.synchronize()
                let took = (ContinuousClock.now - started).nanoseconds
                metrics.fsync.recordNanoseconds(took)
                state.withLockedValue { $0.lastSynchronizeNanoseconds = took }
            }
        } catch {
            let failure = JournalError(error, journal: id)
            state.withLockedValue { $0.fail(failure) }
            // Thrown to the caller, who decides what it means: logged here at debug only.
            context.logger.debug("journal poisoned", metadata: ["journal": "\(id)", "error": "\(error)"])
            throw failure
        }
        metrics.bytes.increment(by: taken.length)
        metrics.records.increment(by: taken.records)
        if sync { metrics.recordsPerFsync.record(taken.records) }
        counters.withLockedValue { counters in
            if taken.length > 0 { counters.batchWrites += 1 }
            if sync {
                let synced = Int(taken.lastSequence - min(taken.lastSequence, taken.previousDurable))
                counters.synchronizations += 1
                counters.recordsSynchronized += synced
                counters.recordsSynchronizedByFlushes += synced
            }
        }
        let ready = state.withLockedValue { state in
            RuntimeInvariants.check(
                taken.lastSequence <= state.stagedSequence,
                "\(id) drained through \(taken.lastSequence), only \(state.stagedSequence) staged")
            state.writtenSequence = max(state.writtenSequence, taken.lastSequence)
            // Unless a rollover switched units meanwhile (it set the successor's end).
            if let end = taken.recordsEnd, state.pendingRollover == nil, state.active.id == taken.unit.id {
                state.recordsWrittenEnd = max(state.recordsWrittenEnd, end)
            }
            if sync {
                state.durableSequence = max(state.durableSequence, taken.lastSequence)
                // Appenders in flight ≈ records just made durable (their appenders will
                // append again) + records staged while this flush ran.
                let synced = Int(taken.lastSequence - min(taken.lastSequence, taken.previousDurable))
                state.flushTarget = max(1, synced + state.batchRecords)
            }
            taken.buffer.reset()
            state.spare = taken.buffer
            RuntimeInvariants.check(
                state.durableSequence <= state.writtenSequence && state.writtenSequence <= state.stagedSequence,
                "\(id) durable \(state.durableSequence), written \(state.writtenSequence), staged \(state.stagedSequence)"
            )
            let ready = state.takeDurable()
            RuntimeInvariants.check(
                ready.allSatisfy { $0.sequence <= state.durableSequence }
                    && (state.waiters.first.map { $0.sequence > state.durableSequence } ?? true),
                "\(id) waiters released out of order around durable \(state.durableSequence)")
            return ready
        }
        for waiter in ready { waiter.notify(.success(())) }
    }

    // MARK: - Rollover and ageing

    private enum RolloverResult {
        /// Another thread rolled over: stage again.
        case done
        /// This thread switched units: stage again, then ``finishRollover()``.
        case switched
        /// The pool is exhausted and another journal is releasing units.
        case wait
    }

    /// A rollover decided in memory but not yet on storage: the old unit's last batch, its
    /// seal, and its successor's header. Whoever next holds the I/O lock carries it out (the
    /// rolling-over thread, or a flush that got there first) before anything is written to the
    /// successor, so the order on storage is the one recovery relies on while appenders stage
    /// into the successor in memory.
    struct PendingRollover: Sendable {
        var old: any StorageUnit
        var oldUnit: UnitID
        var trailerOffset: Int
        var batch: BatchBuffer
        var batchStart: Int
        var records: Int
        /// The old unit's last record: durable once the rollover is on storage.
        var lastSequence: UInt64
        var seal: [UInt8]
        var sealChecksum: UInt32
        var successor: any StorageUnit
        var header: [UInt8]
    }

    /// A full unit whose records are durable, waiting for its seal.
    struct UnsealedUnit: Sendable {
        var storage: any StorageUnit
        var unit: UnitID
        var trailerOffset: Int
        var seal: [UInt8]
        var sealChecksum: UInt32
    }

    /// Makes room for a record of `footprint` bytes: gets the next unit (the one prepared
    /// ahead, or one from the pool after any age-outs the pool or the quota demands) and
    /// switches staging to it, so that appenders stage into it at once. The caller then
    /// stages its record and calls ``finishRollover()``. Rollovers are serialised by their
    /// own lock, not the journal's state lock, which is held only for the switch.
    private func rollover(footprint: Int) throws(JournalError) -> RolloverResult {
        try rolloverLock.withLock {
            Result { () throws(JournalError) -> RolloverResult in
                // A previous rollover still on its way to storage (the successor filled first),
                // or not yet sealed.
                if state.withLockedValue({ $0.pendingRollover != nil }) { try drain(sync: false) }
                try writeSeal()
                let full = state.withLockedValue { state in
                    state.active.isSealed || state.active.recordsEnd + footprint > state.active.header.trailerOffset
                }
                guard full else { return .done }  // another appender rolled over meanwhile
                let storage: any StorageUnit
                switch try unitForRollover() {
                case .wait: return .wait
                case .unit(let unit): storage = unit
                }
                try switchUnits(to: storage)
                return .switched
            }
        }.get()
    }

    /// After a switch: writes the old unit's last records and the successor's header and
    /// syncs both (unless a flush got there first), acknowledging the old unit's records;
    /// then, on one of the store's I/O threads, seals the old unit and prepares the next one
    /// (the seal is not needed for acknowledgement, and the next rollover or closing writes
    /// it first if that has not happened yet). A simulation does both here, in order.
    private func finishRollover() throws(JournalError) {
        try io.withLock { Result { () throws(JournalError) in try completePendingRollover() } }.get()
        let finish: @Sendable () -> Void = { [self] in
            rolloverLock.withLock {
                do {
                    try writeSeal()
                } catch {
                    context.logger.debug("journal seal failed", metadata: ["journal": "\(id)", "error": "\(error)"])
                    return
                }
                prepareNextUnit()
            }
        }
        if context.flushDriver != nil {
            finish()
        } else {
            context.ioThreads.submit { _ in finish() }
        }
    }

    private enum Allocation {
        case unit(any StorageUnit)
        case wait
    }

    /// Plans the rollover with the manager, carries out the age-outs it demands (on this
    /// thread, under the applier lock, not the state lock), and takes the unit prepared ahead
    /// or a new one from the pool.
    private func unitForRollover() throws(JournalError) -> Allocation {
        let plan = state.withLockedValue { state in
            let now = max(context.clock(), state.lastTime)
            return context.manager.withLockedValue { manager in
                manager.recordsAppended(journal: id, through: state.active.lastSequence, at: state.active.lastTime)
                return manager.planRollover(journal: id, now: now)
            }
        }
        switch plan {
        case .wait:
            return .wait
        case .reject(let reason):
            throw JournalError(.full, journal: id, detail: reason)
        case .allocate(let drops, let expiring):
            if !drops.isEmpty {
                try applier.withLock {
                    Result { () throws(JournalError) in for drop in drops { try ageOut(drop) } }
                }.get()
            }
            if !expiring.isEmpty {
                // Past the window but not needed for room: on an I/O thread, not on the
                // appender's (a simulation, in order, here).
                if context.flushDriver != nil {
                    ageOutExpired(expiring)
                } else {
                    context.ioThreads.submit { [self] _ in ageOutExpired(expiring) }
                }
            }
        }
        if let prepared = context.takePreparedUnit(of: id) { return .unit(prepared) }
        return .unit(try allocateUnit())
    }

    /// A unit from the pool; when the pool is at its budget, units other journals prepared
    /// ahead go back to it first (the manager does not count them, so it may have planned on
    /// their room).
    private func allocateUnit() throws(JournalError) -> any StorageUnit {
        var reclaimed = false
        while true {
            do {
                return try context.journalPool.allocate()
            } catch {
                if error.code == .budgetExceeded && !reclaimed && context.reclaimPreparedUnits() > 0 {
                    reclaimed = true
                    continue
                }
                throw error.code == .budgetExceeded
                    ? JournalError(.full, journal: id, storage: error, detail: "the pool refused a unit")
                    : JournalError(error, journal: id)
            }
        }
    }

    /// Takes the journal's next unit from the pool now, while the pool has room to spare, so
    /// that its next rollover need not wait for the pool (creating a unit file syncs the file
    /// and its directory). Best effort: without room, or on a pool error, the next rollover
    /// allocates for itself. The unit is blank until used, so a crash leaves nothing for
    /// recovery but a blank unit to release.
    private func prepareNextUnit() {
        let room = context.manager.withLockedValue { manager in
            manager.unitsHeld + context.preparedUnitCount + 1 < manager.poolCapacity
        }
        guard room, !state.withLockedValue({ $0.closed || $0.poisoned != nil }) else { return }
        do {
            let unit = try context.journalPool.allocate()
            if !context.keepPreparedUnit(unit, for: id) { try context.journalPool.release(unit.id) }
        } catch {
            context.logger.debug(
                "journal did not prepare its next unit", metadata: ["journal": "\(id)", "error": "\(error)"])
        }
    }

    /// Switches staging to `storage`: the active unit's staged records, seal and the
    /// successor's header become a ``PendingRollover``, and the successor the active unit.
    private func switchUnits(to storage: any StorageUnit) throws(JournalError) {
        let refused: JournalError? = state.withLockedValue { state in
            if state.closed { return JournalError(.closed, journal: id) }
            if let poisoned = state.poisoned {
                return JournalError(.poisoned, journal: id, detail: "after \(poisoned)")
            }
            RuntimeInvariants.check(
                state.pendingRollover == nil && state.unsealed == nil,
                "\(id) rolls over again before storage caught up with the last rollover")
            let now = max(context.clock(), state.lastTime)
            let old = state.active
            let seal = old.seal.encoded(salt: old.header.salt)
            let sealChecksum = seal.withUnsafeBytes { $0.loadLE(UInt32.self, at: 60) ?? 0 }
            let header = UnitHeader(
                journal: id, unit: storage.id, salt: context.salt(), firstSequence: state.nextSequence,
                firstTime: now, previousLastSequence: old.lastSequence, previousSealChecksum: sealChecksum,
                indexInterval: configuration.indexInterval,
                trailerOffset: JournalFormat.trailerOffset(
                    capacity: storage.capacity, indexInterval: configuration.indexInterval),
                capacity: storage.capacity)
            let batch = state.batch
            state.batch = state.spare ?? BatchBuffer(capacity: batch.capacity)
            state.spare = nil
            state.pendingRollover = PendingRollover(
                old: old.storage, oldUnit: old.id, trailerOffset: old.header.trailerOffset, batch: batch,
                batchStart: state.batchStart, records: state.batchRecords, lastSequence: old.lastSequence,
                seal: seal, sealChecksum: sealChecksum, successor: storage, header: header.encoded())
            let fresh = JournalUnit(storage: storage, header: header)
            state.units.append(fresh)
            state.batchStart = JournalFormat.headerPageSize
            state.recordsWrittenEnd = JournalFormat.headerPageSize
            state.batchRecords = 0
            context.manager.withLockedValue { manager in
                manager.recordsAppended(journal: id, through: old.lastSequence, at: old.lastTime)
                manager.unitStarted(journal: id, span: fresh.span)
            }
            metrics.unitsHeld.record(state.units.count)
            return nil
        }
        if let refused {
            try? context.journalPool.release(storage.id)
            throw refused
        }
        context.emit(.unitAllocated(id, storage.id))
    }

    /// Carries out the pending rollover, if any; the caller holds the I/O lock. On a storage
    /// failure the journal is poisoned.
    ///
    /// The old unit's last records and the successor's header are written and the two units
    /// synced side by side; then the old unit's records are acknowledged and the successor's
    /// records (staged meanwhile) go out with the next flush, after its header. The old
    /// unit's seal is written after (``writeSeal()``), off the acknowledgement path: recovery
    /// seals an unsealed unit whose successor's header names exactly its records (the
    /// successor's link is the seal's checksum).
    private func completePendingRollover() throws(JournalError) {
        guard let pending = state.withLockedValue({ $0.poisoned == nil ? $0.pendingRollover : nil }) else { return }
        do throws(StorageError) {
            if pending.batch.count > 0 { try pending.old.write(pending.batch.bytes, at: pending.batchStart) }
            try pending.successor.write(pending.header, at: 0)
            try synchronize(pending.old, beside: pending.successor)
        } catch {
            let failure = JournalError(error, journal: id)
            state.withLockedValue { $0.fail(failure) }
            throw failure
        }
        let bytes = pending.batch.count
        let (ready, synced) = state.withLockedValue { state in
            state.pendingRollover = nil
            state.unsealed = UnsealedUnit(
                storage: pending.old, unit: pending.oldUnit, trailerOffset: pending.trailerOffset, seal: pending.seal,
                sealChecksum: pending.sealChecksum)
            let synced = Int(pending.lastSequence - min(pending.lastSequence, state.durableSequence))
            state.writtenSequence = max(state.writtenSequence, pending.lastSequence)
            state.durableSequence = max(state.durableSequence, pending.lastSequence)
            if state.spare == nil {
                pending.batch.reset()
                state.spare = pending.batch
            }
            return (state.takeDurable(), synced)
        }
        counters.withLockedValue { $0.recordsSynchronized += synced }
        metrics.records.increment(by: pending.records)
        metrics.bytes.increment(by: bytes)
        for waiter in ready { waiter.notify(.success(())) }
    }

    /// Syncs the old unit and its successor, side by side (the old one on a sync helper
    /// thread: leaf work that waits for nothing), except in a simulation, which syncs the
    /// successor first so a crash can fall between the two.
    private func synchronize(_ old: any StorageUnit, beside successor: any StorageUnit) throws(StorageError) {
        // The planted bug skips the old unit's sync: its records are acknowledged (and
        // sealed) without being durable.
        let syncOld = context.plantedBug != .sealBeforeRecordsDurable
        guard context.flushDriver == nil, syncOld else {
            try successor.synchronize()
            if syncOld { try old.synchronize() }
            return
        }
        let other = context.synchronizeOnHelper(old)
        let mine = Result { () throws(StorageError) in try successor.synchronize() }
        let theirs = other()
        try mine.get()
        try theirs.get()
    }

    /// Writes and syncs the seal of the unit the last rollover left unsealed, if any; the
    /// caller holds the rollover lock. On a storage failure the journal is poisoned.
    private func writeSeal() throws(JournalError) {
        guard let unsealed = state.withLockedValue({ $0.poisoned == nil ? $0.unsealed : nil }) else { return }
        do throws(StorageError) {
            try unsealed.storage.write(unsealed.seal, at: unsealed.trailerOffset)
            try unsealed.storage.synchronize()
        } catch {
            let failure = JournalError(error, journal: id)
            state.withLockedValue { $0.fail(failure) }
            throw failure
        }
        state.withLockedValue { state in
            state.unsealed = nil
            if let index = state.units.firstIndex(where: { $0.id == unsealed.unit }) {
                state.units[index].sealChecksum = unsealed.sealChecksum
            }
        }
    }

    /// Ages out units a rollover found past the window, oldest first. A failure is the
    /// journal's (a storage error poisons it) or leaves the rest to the next maintenance.
    private func ageOutExpired(_ expiring: [JournalManager.AgeOut]) {
        let abandon = { (rest: ArraySlice<JournalManager.AgeOut>) in
            self.context.manager.withLockedValue { manager in
                for drop in rest { manager.abandoned(journal: self.id, unit: drop.unit) }
            }
        }
        applier.withLock {
            for (index, drop) in expiring.enumerated() {
                // Closed meanwhile: recovery or the next maintenance ages them out.
                if state.withLockedValue({ $0.closed }) {
                    abandon(expiring[index...])
                    return
                }
                do {
                    try ageOut(drop)
                } catch {
                    context.logger.warning(
                        "journal age-out after a rollover failed",
                        metadata: ["journal": "\(id)", "unit": "\(drop.unit)", "error": "\(error)"])
                    abandon(expiring[index...])
                    return
                }
            }
        }
    }

    /// Applies the aged-out unit's writes to every base image, then releases the unit. The
    /// caller holds the applier lock; the state lock is held only to look and to update, so
    /// appends and flushes go on meanwhile.
    ///
    /// Order, for crash safety: each base's manifest first records "applied through X"
    /// (durably), then the writes are applied and synced, then the unit is released. A
    /// crash in between leaves the unit in place and recovery applies it again, which is
    /// idempotent because writes are replayed in sequence order.
    private func ageOut(_ ageOut: JournalManager.AgeOut) throws(JournalError) {
        do throws(JournalError) {
            try ageOutUnit(ageOut)
        } catch {
            if error.code == .storage { state.withLockedValue { $0.fail(error) } }
            throw error
        }
    }

    private func ageOutUnit(_ ageOut: JournalManager.AgeOut) throws(JournalError) {
        // Only the oldest unit, once its seal is on storage (a rollover may still be writing it).
        let found = state.withLockedValue { state -> (JournalUnit, [VolumeID: BaseVolume])? in
            guard let first = state.units.first, first.id == ageOut.unit, first.isSealed, state.units.count > 1
            else { return nil }
            return (first, state.volumes)
        }
        guard let (unit, current) = found else {
            context.manager.withLockedValue { $0.abandoned(journal: id, unit: ageOut.unit) }
            return
        }
        if ageOut.reason != .aged {
            metrics.earlyDrops.increment()
            context.logger.warning(
                "journal history dropped early",
                metadata: ["journal": "\(id)", "unit": "\(unit.id)", "reason": "\(ageOut.reason)"])
            context.emit(.historyDropped(id, unit.id, reason: ageOut.reason, windowStart: ageOut.throughTime))
        }
        var volumes = current
        do throws(StorageError) {
            for volume in volumes.keys.sorted() {
                try volumes[volume]?.markChecksumsStale { manifest in
                    manifest.appliedThrough = ageOut.applyThrough
                    manifest.appliedTime = ageOut.throughTime
                }
            }
        } catch {
            state.withLockedValue { $0.volumes = volumes }
            throw JournalError(error, journal: id)
        }
        let touched: [VolumeID: Set<Int>]
        do throws(JournalError) {
            touched = try Self.apply(unit: unit, through: ageOut.applyThrough, to: volumes, journal: id)
            do throws(StorageError) {
                for volume in volumes.keys.sorted() {
                    try volumes[volume]?.refreshChecksums(touched: touched[volume] ?? [])
                }
            } catch {
                throw JournalError(error, journal: id)
            }
        } catch {
            state.withLockedValue { $0.volumes = volumes }
            throw error
        }
        // A reader holding a snapshot may still be reading the unit: its storage then goes
        // back to the pool when the last reader is done.
        let (held, releaseNow) = state.withLockedValue { state in
            state.volumes = volumes
            state.units.removeFirst()
            if state.readers > 0 { state.releasesAfterReaders.append(unit.id) }
            return (state.units.count, state.readers == 0)
        }
        if releaseNow {
            do {
                try context.journalPool.release(unit.id)
            } catch {
                throw JournalError(error, journal: id)
            }
        }
        let windowStart = context.manager.withLockedValue { manager in
            manager.released(journal: id, unit: unit.id)
            return manager.windowStart(of: id) ?? ageOut.throughTime
        }
        metrics.unitsHeld.record(held)
        context.emit(.unitReleased(id, unit.id, reason: ageOut.reason, windowStart: windowStart))
    }

    /// Replays a unit's writes with sequence ≤ `through` onto the base images and syncs them;
    /// returns the chunks written in each image.
    @discardableResult
    static func apply(
        unit: JournalUnit, through: UInt64, to volumes: [VolumeID: BaseVolume], journal: JournalID
    ) throws(JournalError) -> [VolumeID: Set<Int>] {
        var touched: [VolumeID: Set<Int>] = [:]
        // Before a chunk is first written, it must still match its checksum: otherwise the
        // refresh after the apply would vouch for damage the apply did not overwrite.
        var tables: [VolumeID: [UInt32]] = [:]
        do throws(StorageError) {
            for (volume, base) in volumes { if let table = try base.tableBeforeApply() { tables[volume] = table } }
        } catch {
            throw JournalError(error, journal: journal)
        }
        let end = try RecordScanner.scan(
            unit.storage, salt: unit.header.salt, from: JournalFormat.headerPageSize, to: unit.recordsEnd,
            limit: unit.header.trailerOffset
        ) { (header, recordOffset, payload) throws(JournalError) -> Bool in
            guard header.sequence <= through else { return false }
            guard let base = volumes[header.volume] else { return true }
            guard header.offset <= UInt64(base.size), UInt64(payload.count) <= UInt64(base.size) - header.offset else {
                throw JournalError(
                    .damaged, journal: journal, unit: unit.id, offset: recordOffset,
                    detail: "record \(header.sequence) writes outside \(header.volume)")
            }
            let chunks = base.chunks(offset: Int(header.offset), count: payload.count)
            var damage: JournalError?
            do throws(StorageError) {
                if let chunks, let table = tables[header.volume] {
                    for chunk in chunks where chunk < table.count && touched[header.volume]?.contains(chunk) != true {
                        let computed = try base.computeChecksum(of: chunk)
                        if computed != table[chunk] {
                            damage = base.damage(
                                chunk: chunk, stored: table[chunk], computed: computed, journal: journal)
                            break
                        }
                    }
                }
                if damage == nil {
                    try base.storage.write(payload, at: JournalFormat.baseHeaderSize + Int(header.offset))
                }
            } catch {
                throw JournalError(error, journal: journal)
            }
            if let damage { throw damage }
            if let chunks { touched[header.volume, default: []].formUnion(chunks) }
            return true
        }
        if case .invalid(let offset, let error) = end {
            throw JournalError(.damaged, journal: journal, unit: unit.id, offset: offset, detail: error.reason)
        }
        do throws(StorageError) {
            for base in volumes.values { try base.storage.synchronize() }
        } catch {
            throw JournalError(error, journal: journal)
        }
        return touched
    }

    /// Checks an image read from `volume`'s base against its chunk checksums. A mismatch is
    /// checked again under the applier lock against the base as it is now (an age-out may have
    /// changed it since the read), and only then reported as damage. Returns `true` when
    /// `image` is what is stored (or there is no current table to check it against), `false`
    /// when `image` differed but the stored base checks out now: the read returned bytes that
    /// are not on the disk (a transient read error, or an age-out in between), and the caller
    /// must not use them — it reads again.
    func checkBase(_ volume: VolumeID, image: [UInt8], read base: BaseVolume) throws(JournalError) -> Bool {
        let table = try base.checkedTable(journal: id)
        guard let table, image.withUnsafeBytes({ base.firstMismatch(in: $0, table: table) }) != nil else {
            return true
        }
        let recheck: Result<JournalError?, JournalError> = applier.withLock {
            guard let current = state.withLockedValue({ $0.volumes[volume] }) else { return .success(nil) }
            do throws(JournalError) {
                guard let table = try current.checkedTable(journal: id) else { return .success(nil) }
                let bytes: [UInt8]
                do throws(StorageError) {
                    bytes = try current.storage.read(at: JournalFormat.baseHeaderSize, count: current.size)
                } catch {
                    throw JournalError(error, journal: id)
                }
                let mismatch = bytes.withUnsafeBytes { current.firstMismatch(in: $0, table: table) }
                return .success(
                    mismatch.map {
                        current.damage(chunk: $0.chunk, stored: $0.stored, computed: $0.computed, journal: id)
                    })
            } catch {
                return .failure(error)
            }
        }
        switch recheck {
        case .success(let damage?): throw damage
        case .success(nil): return false
        case .failure(let error): throw error
        }
    }

    /// Ages out every unit whose records have all left the window at `now` (the store's
    /// clock by default), applying them to the base images. Returns what was released.
    ///
    /// Appends and flushes go on meanwhile: the base images are written under a lock of
    /// their own, and the journal's state lock is taken only to look at the oldest unit and
    /// to let it go. A unit whose seal a rollover is still writing waits for the next call.
    @discardableResult
    public func maintain(now: Instant? = nil) throws(JournalError) -> [JournalManager.AgeOut] {
        try applier.withLock {
            Result { () throws(JournalError) -> [JournalManager.AgeOut] in
                let due = try state.withLockedValue { state in
                    Result { () throws(JournalError) -> [JournalManager.AgeOut] in
                        if let poisoned = state.poisoned {
                            throw JournalError(.poisoned, journal: id, detail: "after \(poisoned)")
                        }
                        let now = now ?? context.clock()
                        return context.manager.withLockedValue { manager in
                            manager.recordsAppended(
                                journal: id, through: state.active.lastSequence, at: state.active.lastTime)
                            return manager.expired(journal: id, now: now)
                        }
                    }
                }.get()
                for ageOut in due { try self.ageOut(ageOut) }
                metrics.effectiveWindow.record(Double(effectiveWindow(now: now ?? context.clock()).nanoseconds) / 1e9)
                return due
            }
        }.get()
    }

    // MARK: - Reading

    /// A consistent view of the units for readers.
    struct Snapshot {
        var units: [JournalUnit]
        var volumes: [VolumeID: BaseVolume]
        /// For the active unit: the end of what has been written to storage.
        var activeWrittenEnd: Int

        func end(of index: Int) -> Int { index == units.count - 1 ? activeWrittenEnd : units[index].recordsEnd }
    }

    /// Writes staged records out (without syncing) so reads see them, and snapshots. Every
    /// call must be paired with ``endRead()``: until then, the storage of a unit aged out
    /// stays allocated, so the reader can go on reading it.
    func snapshot() throws(JournalError) -> Snapshot {
        while true {
            try drain(sync: false)
            // Not while a rollover is between memory and storage: the old unit's tail is unwritten.
            let snapshot = state.withLockedValue { state -> Snapshot? in
                guard state.pendingRollover == nil else { return nil }
                state.readers += 1
                return Snapshot(units: state.units, volumes: state.volumes, activeWrittenEnd: state.recordsWrittenEnd)
            }
            if let snapshot { return snapshot }
        }
    }

    /// Ends a read begun by ``snapshot()``; the last reader returns the units aged out during
    /// the reads to the pool (a failure leaves a unit for recovery, which releases units
    /// whose records are in the base images).
    func endRead() {
        let releases = state.withLockedValue { state -> [UnitID] in
            state.readers -= 1
            guard state.readers == 0 else { return [] }
            defer { state.releasesAfterReaders.removeAll() }
            return state.releasesAfterReaders
        }
        for unit in releases {
            do {
                try context.journalPool.release(unit)
            } catch {
                context.logger.warning(
                    "journal could not release an aged-out unit after its readers",
                    metadata: ["journal": "\(id)", "unit": "\(unit)", "error": "\(error)"])
            }
        }
    }

    /// Every record with `start <= time <= end`, in sequence order. Seeks with the units'
    /// time indexes, so the cost does not grow with the journal's length.
    public func records(from start: Instant, through end: Instant) throws(JournalError) -> [JournalRecord] {
        var result: [JournalRecord] = []
        try forEachRecord(from: start, through: end) { result.append($0) }
        return result
    }

    /// Calls `body` with every record with `start <= time <= end`, in sequence order.
    public func forEachRecord(
        from start: Instant, through end: Instant, _ body: (JournalRecord) throws(JournalError) -> Void
    ) throws(JournalError) {
        let snapshot = try snapshot()
        defer { endRead() }
        let units = snapshot.units
        var low = 0
        var high = units.count
        while low < high {
            let middle = (low + high) / 2
            if units[middle].lastTime < start || units[middle].count == 0 && middle < units.count - 1 {
                low = middle + 1
            } else {
                high = middle
            }
        }
        guard low < units.count else { return }
        try scanRecords(of: snapshot, fromUnit: low, offset: units[low].seekOffset(for: start)) {
            (header, payload) throws(JournalError) -> Bool in
            if header.time > end { return false }
            if header.time >= start {
                try body(
                    JournalRecord(
                        sequence: header.sequence, time: header.time, volume: header.volume, offset: header.offset,
                        bytes: Array(payload)))
            }
            return true
        }
    }

    /// The image of `volume` as it was at `instant`: its base image with every journaled
    /// write with time ≤ `instant` replayed in order.
    ///
    /// Throws ``JournalError/Code/outsideWindow`` for an instant before the window's start.
    public func image(of volume: VolumeID, at instant: Instant) throws(JournalError) -> [UInt8] {
        // A base read that does not match what is stored (a transient read error, or an
        // age-out between the read and its check) is never used: the image is read again.
        for _ in 0..<4 {
            if let image = try readImage(of: volume, at: instant) { return image }
        }
        throw JournalError(
            .damaged, journal: id,
            detail: "reads of \(volume)'s base image kept returning bytes that fail its checksums")
    }

    /// One attempt of ``image(of:at:)``; `nil` when the base image read was not what is stored.
    private func readImage(of volume: VolumeID, at instant: Instant) throws(JournalError) -> [UInt8]? {
        let snapshot = try snapshot()
        defer { endRead() }
        guard let base = snapshot.volumes[volume] else {
            throw JournalError(.unknownVolume, journal: id, detail: "\(volume) is not protected")
        }
        guard instant >= base.manifest.appliedTime else {
            throw JournalError(
                .outsideWindow, journal: id,
                detail: "\(instant) is before the window's start \(base.manifest.appliedTime)")
        }
        var image = [UInt8](repeating: 0, count: base.size)
        do {
            try image.withUnsafeMutableBytes { raw in
                Result { () throws(StorageError) in try base.storage.read(into: raw, at: JournalFormat.baseHeaderSize) }
            }.get()
        } catch {
            throw JournalError(error, journal: id)
        }
        guard try checkBase(volume, image: image, read: base) else { return nil }
        // Replays every record present, including any already in the base (a crash during
        // an age-out): replaying in sequence order is idempotent.
        for index in snapshot.units.indices {
            let unit = snapshot.units[index]
            var finished = false
            let outcome = try RecordScanner.scan(
                unit.storage, salt: unit.header.salt, from: JournalFormat.headerPageSize,
                to: snapshot.end(of: index), limit: unit.header.trailerOffset
            ) { (header, recordOffset, payload) throws(JournalError) -> Bool in
                if header.time > instant {
                    finished = true
                    return false
                }
                if header.volume == volume {
                    guard header.offset <= UInt64(base.size), UInt64(payload.count) <= UInt64(base.size) - header.offset
                    else {
                        throw JournalError(
                            .damaged, journal: id, unit: unit.id, offset: recordOffset,
                            detail: "record \(header.sequence) writes outside \(volume)")
                    }
                    let start = Int(header.offset)
                    image.withUnsafeMutableBytes { target in
                        UnsafeMutableRawBufferPointer(rebasing: target[start..<(start + payload.count)])
                            .copyMemory(from: payload)
                    }
                }
                return true
            }
            if case .invalid(let at, let error) = outcome {
                throw JournalError(.damaged, journal: id, unit: unit.id, offset: at, detail: error.reason)
            }
            if finished { break }
        }
        return image
    }

    // MARK: - Status

    /// One unit a journal holds: its span of records, whether it is sealed, and where it lives.
    /// The span's fields read directly (`unit.firstSequence`, `unit.lastTime`).
    @dynamicMemberLookup
    public struct UnitStatus: Sendable, Hashable {
        /// The records and times the unit holds.
        public var span: JournalManager.UnitSpan
        /// Whether the unit's seal is on storage: every unit but the active one, except the
        /// one a rollover has just left, for the moment its seal is written in the background
        /// (its records are durable already).
        public var sealed: Bool
        /// Where the unit's bytes are (its file, for a file pool), or `nil`.
        public var location: String?

        /// Creates a unit's status.
        public init(span: JournalManager.UnitSpan, sealed: Bool, location: String?) {
            self.span = span
            self.sealed = sealed
            self.location = location
        }

        /// A field of ``span``.
        public subscript<Value>(dynamicMember keyPath: KeyPath<JournalManager.UnitSpan, Value>) -> Value {
            span[keyPath: keyPath]
        }
    }

    /// A summary of the journal's state.
    public struct Status: Sendable, Hashable {
        /// Units held, oldest first.
        public var units: [UnitStatus]
        /// Volumes protected, with their sizes.
        public var volumes: [VolumeID: Int]
        /// The oldest instant that can be reconstructed.
        public var windowStart: Instant
        /// The newest record's time.
        public var lastTime: Instant
        /// The last staged and last durable sequence numbers.
        public var lastSequence: UInt64
        /// The last durable sequence number.
        public var durableSequence: UInt64
        /// Bytes of records held.
        public var recordBytes: Int
        /// Times history was dropped early since the store opened.
        public var earlyDrops: Int
    }

    /// The journal's current state.
    public var status: Status {
        let windowStart = context.manager.withLockedValue { $0.windowStart(of: id) } ?? .zero
        let drops = context.manager.withLockedValue { $0.earlyDrops(of: id) }
        return state.withLockedValue { state in
            Status(
                units: state.units.map {
                    UnitStatus(span: $0.span, sealed: $0.isSealed, location: $0.storage.location)
                },
                volumes: state.volumes.mapValues(\.size),
                windowStart: windowStart,
                lastTime: state.lastTime,
                lastSequence: state.stagedSequence,
                durableSequence: state.durableSequence,
                recordBytes: state.units.reduce(0) { $0 + $1.recordsEnd - JournalFormat.headerPageSize },
                earlyDrops: drops)
        }
    }

    /// The history actually available at `now`: the configured window, or less when the
    /// journal is younger or history was dropped early.
    public func effectiveWindow(now: Instant) -> Duration {
        context.manager.withLockedValue { $0.effectiveWindow(journal: id, now: now) }
    }

    /// Writes and syncs what is staged, stops the flusher and refuses further appends.
    public func close() throws(JournalError) {
        let wasClosed = state.withLockedValue { state in
            defer { state.closed = true }
            return state.closed
        }
        guard !wasClosed else { return }
        // An age-out a rollover left to an I/O thread finishes before the store's pools can
        // close under it; one not yet started sees `closed` and leaves its units.
        applier.withLock {}
        defer {
            state.withLockedValue { $0.fail(JournalError(.closed, journal: id)) }
            if let prepared = context.takePreparedUnit(of: id) { try? context.journalPool.release(prepared.id) }
        }
        let poisoned = state.withLockedValue { $0.poisoned }
        if poisoned == nil {
            try drain(sync: true)
            try rolloverLock.withLock { Result { () throws(JournalError) in try writeSeal() } }.get()
        }
    }
}

/// The journal's metrics, in swift-metrics' style, labelled by journal.
struct JournalMetrics: Sendable {
    let bytes: Counter
    let records: Counter
    let unitsHeld: Recorder
    let effectiveWindow: Gauge
    let fsync: Metrics.Timer
    let recordsPerFsync: Recorder
    let earlyDrops: Counter
    let backPressure: Counter

    init(journal: JournalID, factory: any MetricsFactory) {
        let dimensions = [("journal", "\(journal.rawValue)")]
        bytes = Counter(label: "ft_journal_bytes_total", dimensions: dimensions, factory: factory)
        records = Counter(label: "ft_journal_records_total", dimensions: dimensions, factory: factory)
        unitsHeld = Recorder(label: "ft_journal_units_held", dimensions: dimensions, aggregate: false, factory: factory)
        effectiveWindow = Gauge(label: "ft_journal_effective_window_seconds", dimensions: dimensions, factory: factory)
        fsync = Metrics.Timer(label: "ft_journal_fsync_seconds", dimensions: dimensions, factory: factory)
        recordsPerFsync = Recorder(label: "ft_journal_records_per_fsync", dimensions: dimensions, factory: factory)
        earlyDrops = Counter(label: "ft_journal_early_drops_total", dimensions: dimensions, factory: factory)
        backPressure = Counter(label: "ft_journal_back_pressure_waits_total", dimensions: dimensions, factory: factory)
    }
}

/// Called once an append is durable, or with the error that poisoned the journal.
package typealias DurabilityWaiter = @Sendable (Result<Void, JournalError>) -> Void

/// Who waits for a record to be durable: an appending task's continuation (resumed with its
/// receipt, nothing allocated), or a callback.
enum DurabilityWait: Sendable {
    case task(UnsafeContinuation<Result<JournalReceipt, JournalError>, Never>, JournalReceipt)
    case callback(DurabilityWaiter)

    /// Resumes the task or calls the callback with `result`.
    func callAsFunction(_ result: Result<Void, JournalError>) {
        switch self {
        case .task(let continuation, let receipt): continuation.resume(returning: result.map { receipt })
        case .callback(let notify): notify(result)
        }
    }
}

/// Group-commit flushes run by their caller instead of a flusher thread: the simulation's
/// seam, so that the flusher's work (writing and syncing batches, resolving and poisoning
/// waiters) runs deterministically as steps of a seeded run. Production journals never
/// have one.
package final class ManualFlushDriver: Sendable {
    private let pending = NIOLockedValueBox<[@Sendable () -> Void]>([])

    /// Creates a driver with nothing scheduled.
    package init() {}

    /// Schedules one flush.
    func submit(_ flush: @escaping @Sendable () -> Void) {
        pending.withLockedValue { $0.append(flush) }
    }

    /// Flushes scheduled so far and not yet run.
    package var pendingCount: Int { pending.withLockedValue { $0.count } }

    /// Runs the flushes scheduled so far (those they schedule run on the next call); returns
    /// how many ran.
    @discardableResult
    package func runPending() -> Int {
        let flushes = pending.withLockedValue { pending in
            defer { pending.removeAll() }
            return pending
        }
        for flush in flushes { flush() }
        return flushes.count
    }

    /// Drops what is scheduled (the machine crashed).
    package func discard() {
        pending.withLockedValue { $0.removeAll() }
    }
}
