public import FaultToleranceCore

/// A journal failure that says what failed and where.
///
/// Like ``FaultToleranceCore/StorageError``, a struct with an extensible ``Code``.
public struct JournalError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// A durability barrier failed earlier; nothing is acknowledged any more. Reopen the
        /// journal to recover what is durable.
        public static let poisoned = Code("poisoned")
        /// No storage unit could be had: the quota or the pool is exhausted and no history
        /// can be dropped. The record was not written.
        public static let full = Code("full")
        /// The record does not fit in one unit.
        public static let recordTooLarge = Code("recordTooLarge")
        /// The write falls outside the volume.
        public static let outOfBounds = Code("outOfBounds")
        /// The volume is not protected by this journal.
        public static let unknownVolume = Code("unknownVolume")
        /// The instant is before the oldest one the journal can reconstruct.
        public static let outsideWindow = Code("outsideWindow")
        /// Stored bytes are corrupt where they cannot be a torn tail; ``JournalError/unit``
        /// and ``JournalError/offset`` say where.
        public static let damaged = Code("damaged")
        /// The storage underneath failed; ``JournalError/storage`` holds its error.
        public static let storage = Code("storage")
        /// The journal was closed.
        public static let closed = Code("closed")
        /// The configuration cannot work (a quota under 2, units too small, ...).
        public static let invalidConfiguration = Code("invalidConfiguration")

        /// The code's name.
        public var description: String { name }
    }

    /// The kind of failure.
    public var code: Code
    /// The journal involved.
    public var journal: JournalID?
    /// The storage unit involved.
    public var unit: UnitID?
    /// The byte offset within the unit.
    public var offset: Int?
    /// The storage failure underneath, when there is one.
    public var storage: StorageError?
    /// More detail for people.
    public var detail: String?

    /// Creates an error.
    public init(
        _ code: Code,
        journal: JournalID? = nil,
        unit: UnitID? = nil,
        offset: Int? = nil,
        storage: StorageError? = nil,
        detail: String? = nil
    ) {
        self.code = code
        self.journal = journal
        self.unit = unit
        self.offset = offset
        self.storage = storage
        self.detail = detail
    }

    /// Wraps a storage failure.
    public init(_ storage: StorageError, journal: JournalID? = nil) {
        self.init(.storage, journal: journal, unit: storage.unit, offset: storage.offset, storage: storage)
    }

    /// One line naming every known part.
    public var description: String {
        var parts = ["journal error \(code)"]
        if let journal { parts.append("\(journal)") }
        if let unit { parts.append("unit \(unit)") }
        if let offset { parts.append("offset \(offset)") }
        if let detail { parts.append(detail) }
        if let storage { parts.append("(\(storage))") }
        return parts.joined(separator: ", ")
    }
}
