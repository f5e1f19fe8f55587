public import FaultToleranceCore

/// A live-copy failure that says what failed and with which figures.
///
/// Like ``FaultToleranceCore/StorageError``, a struct with an extensible ``Code``.
public struct LiveCopyError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// The dirty rate does not fall below the copy bandwidth and throttling cannot (or may
        /// not) bring it down: copying on would never fit the downtime budget. The source is
        /// untouched and writers run at full speed again.
        public static let notConverging = Code("notConverging")
        /// The policy's round limit was reached before the remaining pages fitted the budget.
        public static let roundLimit = Code("roundLimit")
        /// The configuration cannot work (page size not a power of two, empty region, ...).
        public static let invalidConfiguration = Code("invalidConfiguration")
        /// A write or read falls outside the region.
        public static let outOfBounds = Code("outOfBounds")
        /// The destination's geometry (page size, page count) differs from the source's.
        public static let geometryMismatch = Code("geometryMismatch")
        /// Bytes from the peer are not a valid live-copy message (bad version, checksum, length,
        /// page index, compression, ...). ``LiveCopyError/detail`` says what.
        public static let malformedMessage = Code("malformedMessage")
        /// The receiver already serves a session for another copier (or this one's
        /// `begin` came from a node it does not serve).
        public static let sessionActive = Code("sessionActive")
        /// The transport to the destination failed; ``LiveCopyError/transport`` holds its error.
        public static let transport = Code("transport")
        /// After recopying, pages still differed: the destination is not a faithful copy.
        public static let verificationFailed = Code("verificationFailed")
        /// The kernel lacks a feature the chosen dirty tracker needs; ``LiveCopyError/detail``
        /// names it and the errno.
        public static let unsupported = Code("unsupported")
        /// The copy was cancelled or the destination detached.
        public static let cancelled = Code("cancelled")

        /// The code's name.
        public var description: String { name }
    }

    /// The kind of failure.
    public var code: Code
    /// The round in which it happened, when it happened during the rounds.
    public var round: Int?
    /// The transport failure underneath, when there is one.
    public var transport: TransportError?
    /// More detail for people.
    public var detail: String?

    /// Creates an error.
    public init(_ code: Code, round: Int? = nil, transport: TransportError? = nil, detail: String? = nil) {
        self.code = code
        self.round = round
        self.transport = transport
        self.detail = detail
    }

    /// A one-line description.
    public var description: String {
        var parts = ["live copy failed: \(code)"]
        if let round { parts.append("round \(round)") }
        if let transport { parts.append("transport: \(transport)") }
        if let detail { parts.append(detail) }
        return parts.joined(separator: ", ")
    }
}
