/// Which value a key keeps when the active and the backup hold different records for it.
public enum ConflictRule: Sendable {
    /// The active's record wins (the seed's direction).
    case activeWins
    /// The record with the later ``NameKeyRecord/stamp`` (a hybrid logical clock) wins; the
    /// active's on a tie.
    case lastWriterWins
    /// `resolve(backup, active)` returns true to take the active's record, false to keep the
    /// backup's. Both are at the backup's version.
    case custom(@Sendable (_ backup: NameKeyRecord, _ active: NameKeyRecord) -> Bool)

    func takesActive(backup: NameKeyRecord, active: NameKeyRecord) -> Bool {
        switch self {
        case .activeWins: true
        case .lastWriterWins: active.stamp >= backup.stamp
        case .custom(let resolve): resolve(backup, active)
        }
    }
}

/// What becomes of keys the backup holds and the active does not.
public enum BackupOnlyPolicy: String, Sendable, Hashable, CaseIterable, Codable {
    /// They stay.
    case keep
    /// They are deleted: the backup ends as a copy of the active.
    case delete
    /// They stay and are listed in the result.
    case report
}

/// How a sync reconciles.
public enum SyncProtocol: String, Sendable, Hashable, CaseIterable, Codable {
    /// Rateless set reconciliation over fingerprints, falling back to streaming the active's
    /// records in key order when the difference is too large for the sketch.
    case reconcile
    /// The seed's protocol: the backup sends every key it holds, the active answers with the
    /// keys both hold, and the active's records for those keys are applied. Keys only one side
    /// holds are left alone.
    case seed
}

/// What a sync did.
public struct SyncResult: Sendable, Hashable, Codable {
    /// How it ended up reconciling.
    public enum Mode: String, Sendable, Hashable, Codable {
        /// The stores' digests were equal at once.
        case unchanged
        /// The sketch decoded the difference.
        case sketch
        /// The difference was too large (or the fingerprint versions differ): the active's
        /// records were streamed in key order.
        case stream
        /// The seed's key-list protocol.
        case seed
    }

    /// How the last pass reconciled.
    public var mode: Mode = .unchanged
    /// Passes run. A pass that applied changes is verified by comparing the backup's new digest
    /// with the active's (``verifiedLocally``), or else by one more pass.
    public var passes = 0
    /// Whether the last pass's changes were verified against the digest the active sent in
    /// that pass, without another round trip.
    public var verifiedLocally = false
    /// The last synced generation: the active's write generation the sync brought this store
    /// to, when the active reports it (zero otherwise).
    public var activeGeneration: UInt64 = 0
    /// Requests sent, retries included: the round trips.
    public var roundTrips = 0
    /// Retries after a timeout.
    public var retries = 0
    /// Bytes sent (message payloads plus 16 bytes of frame header each).
    public var bytesSent = 0
    /// Bytes received, counted the same way.
    public var bytesReceived = 0
    /// Sketch symbols received.
    public var symbolsReceived = 0
    /// Fingerprints in the decoded difference (a changed key counts twice: old and new).
    public var differences = 0
    /// Records of the active's written to the backup.
    public var written = 0
    /// Keys deleted from the backup (``BackupOnlyPolicy/delete``).
    public var deleted = 0
    /// Keys on both sides whose backup record the conflict rule kept.
    public var keptBackup = 0
    /// Keys only the backup holds.
    public var backupOnly = 0
    /// The first 1,000 of them, with ``BackupOnlyPolicy/report``.
    public var reportedKeys: [String] = []

    /// Creates an empty result.
    public init() {}
}
