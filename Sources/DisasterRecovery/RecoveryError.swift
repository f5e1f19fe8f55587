/// Why a disaster-recovery operation failed: what, and where.
public struct RecoveryError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of problem.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// Fewer bytes than the format needs.
        public static let truncated = Code("truncated")
        /// Not this format at all (another magic).
        public static let notRecoveryData = Code("notRecoveryData")
        /// A format version this code does not read.
        public static let unsupportedVersion = Code("unsupportedVersion")
        /// A checksum does not match: torn or damaged bytes.
        public static let checksumMismatch = Code("checksumMismatch")
        /// A field outside its range.
        public static let invalidField = Code("invalidField")
        /// An offset or length outside the volume.
        public static let outOfBounds = Code("outOfBounds")
        /// A unit too small for what it must hold, or units that do not belong together.
        public static let mismatchedUnits = Code("mismatchedUnits")
        /// A state unit that was never set up (``LazyVolume/create(identity:source:overlay:replica:state:blockSize:)``).
        public static let notInitialized = Code("notInitialized")
        /// Stored data that fails its checks where it should not (named with unit and offset).
        public static let damaged = Code("damaged")
        /// The storage beneath failed.
        public static let storage = Code("storage")
        /// The recovery point's source could not give the bytes.
        public static let sourceUnavailable = Code("sourceUnavailable")
        /// An operation the volume's phase does not allow (a migration round before the build finished).
        public static let wrongPhase = Code("wrongPhase")
        /// A plan that cannot run: a missing volume, a cycle in the start order, a duplicate name.
        public static let invalidPlan = Code("invalidPlan")

        /// The code's name.
        public var description: String { name }
    }

    /// The kind of problem.
    public var code: Code
    /// What was wrong, for people: the unit, the offset, the field.
    public var detail: String

    /// Creates an error.
    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    /// The code and the detail.
    public var description: String { "\(code): \(detail)" }
}
