public import FaultToleranceCore

/// A name-key sync failure that says what failed, where, and with which figures.
///
/// Like ``FaultToleranceCore/StorageError``, a struct with an extensible ``Code``.
public struct KeySyncError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// Bytes from a peer are not a valid message: ``KeySyncError/detail`` names the message
        /// and the field.
        public static let malformedMessage = Code("malformedMessage")
        /// The peer speaks another protocol version, or refused the session.
        public static let refused = Code("refused")
        /// A database file is not a name-key store, or is damaged: ``KeySyncError/detail``
        /// names the file.
        public static let notAStore = Code("notAStore")
        /// A stored record or sketch does not decode or fails its checksum.
        public static let damaged = Code("damaged")
        /// The schema cannot do what was asked (unknown version, migration that collides).
        public static let schema = Code("schema")
        /// A caller's argument is outside what the API accepts.
        public static let invalidArgument = Code("invalidArgument")
        /// The transport failed or the peer stopped answering within the retry budget.
        public static let transport = Code("transport")
        /// The underlying database failed (I/O, full disk, locked).
        public static let database = Code("database")
        /// Two different records have the same 64-bit fingerprint (about one chance in 2^64
        /// per pair): the store refuses the second rather than reconcile wrongly.
        public static let fingerprintCollision = Code("fingerprintCollision")
        /// The active kept changing during every attempt: no pass could be verified.
        public static let notVerified = Code("notVerified")

        /// The code's name.
        public var description: String { name }
    }

    /// The kind of failure.
    public var code: Code
    /// More detail for people.
    public var detail: String?
    /// The transport failure underneath, when there is one.
    public var transport: TransportError?

    /// Creates an error.
    public init(_ code: Code, detail: String? = nil, transport: TransportError? = nil) {
        self.code = code
        self.detail = detail
        self.transport = transport
    }

    /// A one-line description.
    public var description: String {
        var parts = ["name-key sync failed: \(code)"]
        if let detail { parts.append(detail) }
        if let transport { parts.append("transport: \(transport)") }
        return parts.joined(separator: ", ")
    }

    static func malformed(_ message: String, _ detail: String) -> KeySyncError {
        KeySyncError(.malformedMessage, detail: "\(message): \(detail)")
    }
}
