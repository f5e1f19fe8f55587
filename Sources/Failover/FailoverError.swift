public import FaultToleranceCore

/// Why a replicated-store operation, a decode or a failover step failed.
///
/// Errors that concern an epoch name it, and a stale request names both epochs, so
/// `stale epoch: request of epoch 3, server at epoch 4` says which side is behind.
public struct FailoverError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of failure; extensible without breaking callers' `switch`es.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// Bytes that are not a valid encoding (wrong length, checksum, version or field).
        public static let malformed = Code("malformed")
        /// A request, entry or command of an older epoch than the one held: refused, never applied.
        public static let staleEpoch = Code("staleEpoch")
        /// A replication entry that does not follow the last one applied (a gap or a repeat).
        public static let outOfOrder = Code("outOfOrder")
        /// A key, value, batch or configuration beyond the documented limits.
        public static let tooLarge = Code("tooLarge")
        /// A client request number lower than one already answered for that client.
        public static let staleRequest = Code("staleRequest")
        /// The server is not the primary (a backup, stepped down, or its lease has lapsed).
        public static let notPrimary = Code("notPrimary")
        /// Asynchronous replication is further behind than its bound allows and the policy refuses.
        public static let lagExceeded = Code("lagExceeded")
        /// The log no longer reaches back to the position asked for: a snapshot is needed.
        public static let snapshotNeeded = Code("snapshotNeeded")
        /// A configuration the controller or server cannot run with.
        public static let invalidConfiguration = Code("invalidConfiguration")
        /// The runtime was closed.
        public static let closed = Code("closed")
        /// No answer in time.
        public static let timedOut = Code("timedOut")
        /// The control server refused a planned switchover (no primary serves, or the target
        /// is not a live backup that holds every acknowledged operation); the detail says why.
        public static let switchoverRefused = Code("switchoverRefused")

        /// The value as people read it.
        public var description: String { name }
    }

    /// What went wrong.
    public var code: Code
    /// The server concerned, when one is.
    public var node: NodeID?
    /// Free text: the epochs, the field, the limit.
    public var detail: String?

    /// Creates an error.
    public init(_ code: Code, node: NodeID? = nil, detail: String? = nil) {
        self.code = code
        self.node = node
        self.detail = detail
    }

    /// A request of `requestEpoch` refused by a server at `currentEpoch`.
    public static func stale(requestEpoch: UInt64, currentEpoch: UInt64, node: NodeID? = nil) -> FailoverError {
        FailoverError(
            .staleEpoch, node: node, detail: "request of epoch \(requestEpoch), server at epoch \(currentEpoch)")
    }

    /// The value as people read it.
    public var description: String {
        var parts = ["failover error \(code)"]
        if let node { parts.append("server \(node)") }
        if let detail { parts.append(detail) }
        return parts.joined(separator: ", ")
    }
}
