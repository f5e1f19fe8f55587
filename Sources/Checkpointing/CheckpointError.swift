public import FaultToleranceCore

/// A checkpointing failure that says what failed and where: the checkpoint, the chunk's unit
/// and offset, the storage error underneath.
///
/// Like ``FaultToleranceCore/StorageError``, a struct with an extensible ``Code``.
public struct CheckpointError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// The configuration cannot work (no regions, a block size that is not a power of two,
        /// names too long, a volume whose capacity is not a whole number of blocks, ...).
        public static let invalidConfiguration = Code("invalidConfiguration")
        /// A read, write or restore falls outside a region or volume.
        public static let outOfBounds = Code("outOfBounds")
        /// Bytes in the store are not what was written: a chunk, manifest or log record whose
        /// checksum, framing or references do not hold. ``CheckpointError/checkpoint``,
        /// ``CheckpointError/unit`` and ``CheckpointError/offset`` say where.
        public static let damaged = Code("damaged")
        /// The store holds no checkpoint with that identity (never committed, or deleted).
        public static let unknownCheckpoint = Code("unknownCheckpoint")
        /// The store's space budget cannot hold the capture; nothing was paused and the earlier
        /// checkpoints are intact.
        public static let budgetExceeded = Code("budgetExceeded")
        /// A storage call failed; ``CheckpointError/storage`` holds its error.
        public static let storage = Code("storage")
        /// The restore target's geometry (unit size, unit count, names) differs from the
        /// checkpoint's.
        public static let geometryMismatch = Code("geometryMismatch")
        /// The store was closed, or the operation conflicts with one already running.
        public static let unavailable = Code("unavailable")
        /// The store's format version is newer than this library reads.
        public static let unsupportedVersion = Code("unsupportedVersion")
        /// A group checkpoint message that does not decode (short, wrong version, bytes left
        /// over, a field out of range).
        public static let malformedMessage = Code("malformedMessage")
        /// A group epoch was aborted (a member failed, timed out or restarted before the
        /// commit); ``CheckpointError/detail`` says which and why.
        public static let aborted = Code("aborted")

        /// The code's name.
        public var description: String { name }
    }

    /// The kind of failure.
    public var code: Code
    /// The checkpoint involved, when there is one.
    public var checkpoint: CheckpointID?
    /// The storage unit involved, when there is one.
    public var unit: UnitID?
    /// The byte offset in that unit, when there is one.
    public var offset: Int?
    /// The storage failure underneath, when there is one.
    public var storage: StorageError?
    /// More detail for people.
    public var detail: String?

    /// Creates an error.
    public init(
        _ code: Code, checkpoint: CheckpointID? = nil, unit: UnitID? = nil, offset: Int? = nil,
        storage: StorageError? = nil, detail: String? = nil
    ) {
        self.code = code
        self.checkpoint = checkpoint
        self.unit = unit
        self.offset = offset
        self.storage = storage
        self.detail = detail
    }

    /// Wraps a storage failure.
    init(_ error: StorageError, checkpoint: CheckpointID? = nil) {
        self.init(
            error.code == .budgetExceeded ? .budgetExceeded : .storage, checkpoint: checkpoint, unit: error.unit,
            offset: error.offset, storage: error)
    }

    /// A one-line description.
    public var description: String {
        var parts = ["checkpoint failed: \(code)"]
        if let checkpoint { parts.append("checkpoint \(checkpoint)") }
        if let unit { parts.append("\(unit)") }
        if let offset { parts.append("offset \(offset)") }
        if let storage { parts.append("storage: \(storage)") }
        if let detail { parts.append(detail) }
        return parts.joined(separator: ", ")
    }
}
