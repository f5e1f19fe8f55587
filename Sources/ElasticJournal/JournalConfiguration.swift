public import FaultToleranceCore

/// How an ``ElasticJournal`` keeps history and acknowledges appends.
public struct JournalConfiguration: Sendable, Hashable {
    /// When ``ElasticJournal/append(volume:offset:bytes:)`` returns.
    public enum Durability: Sendable, Hashable {
        /// Once the record is on stable storage. Appends arriving while a flush is under way
        /// share the next `fdatasync`; a batch is flushed when the previous flush ends, when
        /// it reaches `maxBatchBytes`, or after `maxDelay`, whichever comes first.
        case groupCommit(maxBatchBytes: Int, maxDelay: Duration)
        /// Once the record is in the journal's buffer. Buffers of `batchBytes` are written as
        /// they fill, up to the last boundary of the largest power of two up to `batchBytes`
        /// (4 KiB to 64 KiB), the rest carried into the next buffer: aligned writes cost the
        /// page cache less. Reads see every record; call ``ElasticJournal/synchronize()`` for a
        /// durability point.
        case buffered(batchBytes: Int)

        /// Group commit with 1 MiB batches and no added delay.
        public static let groupCommit = Durability.groupCommit(maxBatchBytes: 1 << 20, maxDelay: .zero)
        /// Buffered with 64 KiB batches.
        public static let buffered = Durability.buffered(batchBytes: 64 << 10)
    }

    /// How much history to keep: any instant in `now - window ... now` can be reconstructed.
    public var window: Duration
    /// The most storage units the journal may hold; at least 2.
    public var quota: Int
    /// When appends are acknowledged.
    public var durability: Durability
    /// Bytes of records between two entries of a unit's time index (64 KiB by default).
    public var indexInterval: Int
    /// How long an append waits for another journal to release units before failing with
    /// ``JournalError/Code/full`` (real time; the simulation never waits).
    public var backPressureTimeout: Duration

    /// Creates a configuration.
    public init(
        window: Duration,
        quota: Int,
        durability: Durability = .groupCommit,
        indexInterval: Int = 64 << 10,
        backPressureTimeout: Duration = .seconds(5)
    ) {
        self.window = window
        self.quota = quota
        self.durability = durability
        self.indexInterval = indexInterval
        self.backPressureTimeout = backPressureTimeout
    }

    /// Throws ``JournalError/Code/invalidConfiguration`` unless the configuration can work
    /// with units of `unitCapacity` bytes.
    public func validate(unitCapacity: Int) throws(JournalError) {
        func invalid(_ detail: String) -> JournalError { JournalError(.invalidConfiguration, detail: detail) }
        guard window > .zero else { throw invalid("window must be positive, is \(window)") }
        guard quota >= 2 else { throw invalid("quota must be at least 2 units (one sealed, one active), is \(quota)") }
        guard indexInterval >= 4096 else { throw invalid("index interval must be at least 4096 bytes") }
        guard unitCapacity >= 64 << 10 else { throw invalid("units must hold at least 64 KiB, hold \(unitCapacity)") }
        switch durability {
        case .groupCommit(let bytes, let delay):
            guard bytes >= 4096, delay >= .zero else { throw invalid("group commit needs ≥ 4096 bytes, delay ≥ 0") }
        case .buffered(let bytes):
            guard bytes >= 4096 else { throw invalid("buffered batches need at least 4096 bytes") }
        }
    }
}

/// What happened in a journal that its owner should hear about.
public enum JournalEvent: Sendable, Hashable {
    /// A unit was taken from the pool.
    case unitAllocated(JournalID, UnitID)
    /// History is about to be dropped early (before it left the window) because of the
    /// quota or an exhausted pool: from now on the window starts at `windowStart`. Emitted
    /// when decided, before the unit is applied and released, so a crash cannot hide it.
    case historyDropped(JournalID, UnitID, reason: JournalManager.Reason, windowStart: Instant)
    /// A unit left the journal: its writes were applied to the base images and it was
    /// released. A `reason` other than ``JournalManager/Reason/aged`` means history was
    /// dropped early and the effective window shrank to `windowStart ... now`.
    case unitReleased(JournalID, UnitID, reason: JournalManager.Reason, windowStart: Instant)
    /// Salvage (``JournalStore/Options/salvage``) cut a damaged journal: `unit` now ends at
    /// `offset` with record `lastSequence`; everything after it was dropped.
    case salvaged(JournalID, UnitID, offset: Int, lastSequence: UInt64)
    /// Recovery cut a torn tail: bytes from `offset` on in `unit` held no acknowledged record.
    case tornTailTruncated(JournalID, UnitID, offset: Int)
    /// Salvage took `unit` out of the pool without destroying it (see
    /// `StoragePool.quarantine(_:)`): a damaged unit, a unit after a cut, or a copy of a unit
    /// made before its damaged tail was zeroed.
    case quarantined(UnitID, detail: String)
}
