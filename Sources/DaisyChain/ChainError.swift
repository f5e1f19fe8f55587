public import FaultToleranceCore

/// Why a chain operation, a register decode or a signal failed.
///
/// Every error that concerns one element names it, so an operator reading
/// `unavailable: element e2 holds 0..<4096` knows which process to look at.
public struct ChainError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure; extensible without breaking callers' `switch`es.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// Bytes that are not a valid encoding (wrong length, checksum, version or field).
        public static let malformed = Code("malformed")
        /// A signal or register of an older generation than the one held: counted, not applied.
        public static let stale = Code("stale")
        /// A host offset or length outside the volume.
        public static let outOfBounds = Code("outOfBounds")
        /// The only element holding the range is gone (span), or no element of the chain is left (mirror).
        public static let unavailable = Code("unavailable")
        /// An element's drive failed a read, a write or a flush.
        public static let driveFault = Code("driveFault")
        /// The host or element was closed.
        public static let closed = Code("closed")
        /// A configuration the chain cannot run with.
        public static let invalidConfiguration = Code("invalidConfiguration")
        /// The chain did not answer in time.
        public static let timedOut = Code("timedOut")

        /// The value as people read it.
        public var description: String { name }
    }

    /// What went wrong.
    public var code: Code
    /// The element concerned, when one is.
    public var element: NodeID?
    /// Free text: the range, the field, the generation.
    public var detail: String?

    /// Creates an error.
    public init(_ code: Code, element: NodeID? = nil, detail: String? = nil) {
        self.code = code
        self.element = element
        self.detail = detail
    }

    /// The value as people read it.
    public var description: String {
        var parts = ["chain error \(code)"]
        if let element { parts.append("element \(element)") }
        if let detail { parts.append(detail) }
        return parts.joined(separator: ", ")
    }

    /// The same failure as a `StorageError`, for ``ChainVolume``'s `StorageUnit` methods.
    func storageError(unit: UnitID, offset: Int? = nil) -> StorageError {
        let storageCode: StorageError.Code
        switch code {
        case .outOfBounds: storageCode = .outOfBounds
        case .unavailable: storageCode = .unavailable
        case .closed: storageCode = .closed
        case .invalidConfiguration: storageCode = .invalidConfiguration
        default: storageCode = .ioFailed
        }
        return StorageError(storageCode, unit: unit, offset: offset, detail: description)
    }
}
