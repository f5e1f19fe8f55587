import FaultToleranceCore
import NIOConcurrencyHelpers

/// One change in a store transaction.
public enum StoreChange: Sendable, Hashable {
    /// Writes a record (migrated to the store's version first if it is older).
    case put(NameKeyRecord)
    /// Deletes the record of a key, if there is one.
    case delete(String)

    /// The key changed.
    public var key: String {
        switch self {
        case .put(let record): record.key
        case .delete(let key): key
        }
    }
}

/// What a store remembers of its last completed sync with one peer.
public struct SyncMark: Sendable, Hashable {
    /// The peer (as the application names it: a node name or an address).
    public var peer: String
    /// The peer's write generation the sync brought this store to.
    public var peerGeneration: UInt64
    /// This store's own write generation once the sync's changes were applied: writes since
    /// are ``NameKeyStore/generation`` minus this.
    public var generation: UInt64

    /// Creates a mark.
    public init(peer: String, peerGeneration: UInt64, generation: UInt64) {
        self.peer = peer
        self.peerGeneration = peerGeneration
        self.generation = generation
    }
}

/// A database of records by name key that keeps what a sync needs current on every write:
/// each record's fingerprint (``Schema/fingerprint(of:)``) and the first symbols of the
/// rateless sketch of all of them (``SketchPrefix``), so a sync reads symbols instead of
/// scanning.
///
/// ``MemoryNameKeyStore`` is for tests and simulations; ``SQLiteNameKeyStore`` keeps records
/// and metadata in one SQLite database, updated in one transaction.
public protocol NameKeyStore: AnyObject, Sendable {
    /// The schema the records follow.
    var schema: Schema { get }
    /// The version the store's records are in.
    var version: Int { get }
    /// Records held.
    var count: Int { get }
    /// Symbols of the sketch the store keeps.
    var sketchCapacity: Int { get }
    /// Write transactions committed so far.
    var generation: UInt64 { get }

    /// The record of `key`, or nil.
    func record(forKey key: String) throws(KeySyncError) -> NameKeyRecord?
    /// The records of those `keys` the store holds, in the order of `keys`.
    func records(forKeys keys: [String]) throws(KeySyncError) -> [NameKeyRecord]
    /// The records whose fingerprints are among `fingerprints`, by fingerprint.
    func records(withFingerprints fingerprints: [Fingerprint]) throws(KeySyncError) -> [Fingerprint: NameKeyRecord]
    /// Up to `limit` records in byte order of their keys, after `key` (from the first with nil).
    func records(after key: String?, limit: Int) throws(KeySyncError) -> [NameKeyRecord]
    /// Applies `changes` in one transaction: all or none.
    func apply(_ changes: [StoreChange]) throws(KeySyncError)
    /// Symbols `range` of the store's sketch (within `0..<sketchCapacity`).
    func symbols(_ range: Range<Int>) throws(KeySyncError) -> [SketchSymbol]
    /// Records that a sync with `peer` completed, bringing this store to the peer's write
    /// generation `peerGeneration` (``lastSync(with:)`` reads it back).
    func recordSync(_ mark: SyncMark) throws(KeySyncError)
    /// The last completed sync with `peer`, if any.
    func lastSync(with peer: String) throws(KeySyncError) -> SyncMark?
    /// Migrates every record to `version` (newer than the store's), a batch per transaction:
    /// a crash leaves each record at its old or its new version, and calling it again finishes.
    func migrate(to version: Int, batchSize: Int, progress: (_ done: Int, _ total: Int) -> Void) throws(KeySyncError)
}

extension NameKeyStore {
    /// What a sync peer needs to know about this store.
    public func describe() throws(KeySyncError) -> KeySyncMessage.StoreDescription {
        KeySyncMessage.StoreDescription(
            storeVersion: version, fingerprintVersion: schema.latest, sketchCapacity: sketchCapacity, count: count,
            digest: try symbols(0..<1)[0], generation: generation)
    }

    /// Migrates every record to `version`, 1,000 per transaction.
    public func migrate(to version: Int) throws(KeySyncError) {
        try migrate(to: version, batchSize: 1000) { _, _ in }
    }

    func checkSymbolRange(_ range: Range<Int>) throws(KeySyncError) {
        guard range.lowerBound >= 0, range.upperBound <= sketchCapacity else {
            throw KeySyncError(.invalidArgument, detail: "symbols \(range) outside a sketch of \(sketchCapacity)")
        }
    }

    func checkMigrationTarget(_ target: Int, batchSize: Int) throws(KeySyncError) {
        guard schema.knows(target), target >= version else {
            throw KeySyncError(
                .schema,
                detail:
                    "cannot migrate a store at version \(version) to \(target); the schema knows 1...\(schema.latest)")
        }
        guard batchSize >= 1 else { throw KeySyncError(.invalidArgument, detail: "batch size \(batchSize) below 1") }
    }
}

/// Byte order of UTF-8, as SQLite's BINARY collation orders keys.
func keyPrecedes(_ lhs: String, _ rhs: String) -> Bool {
    let ordered = lhs.utf8.withContiguousStorageIfAvailable { left in
        rhs.utf8.withContiguousStorageIfAvailable { right -> Bool in
            let shared = min(left.count, right.count)
            for index in 0..<shared where left[index] != right[index] { return left[index] < right[index] }
            return left.count < right.count
        }
    }
    if let contiguous = ordered, let result = contiguous { return result }
    return lhs.utf8.lexicographicallyPrecedes(rhs.utf8)
}

/// A ``NameKeyStore`` in memory: for tests and simulations (a "crash" of its owner leaves every
/// committed transaction, as a database would).
public final class MemoryNameKeyStore: NameKeyStore, Sendable {
    private struct State {
        var version: Int
        var records: [String: (record: NameKeyRecord, fingerprint: Fingerprint)] = [:]
        var keysByFingerprint: [Fingerprint: String] = [:]
        var sortedKeys: [String]? = []
        var sketch: SketchPrefix
        var generation: UInt64 = 0
        var syncs: [String: SyncMark] = [:]
    }

    /// The schema the records follow.
    public let schema: Schema
    private let state: NIOLockedValueBox<State>

    /// An empty store at `version` keeping `sketchCapacity` symbols.
    public init(schema: Schema, version: Int = 1, sketchCapacity: Int = 4096) throws(KeySyncError) {
        guard schema.knows(version) else {
            throw KeySyncError(.schema, detail: "version \(version) outside 1...\(schema.latest)")
        }
        guard sketchCapacity >= 1, sketchCapacity <= KeySyncMessage.maximumSketchCapacity else {
            throw KeySyncError(.invalidArgument, detail: "sketch capacity \(sketchCapacity)")
        }
        self.schema = schema
        state = NIOLockedValueBox(State(version: version, sketch: SketchPrefix(capacity: sketchCapacity)))
    }

    /// The version the store's records are in.
    public var version: Int { state.withLockedValue { $0.version } }
    /// Records held.
    public var count: Int { state.withLockedValue { $0.records.count } }
    /// Symbols of the sketch the store keeps.
    public var sketchCapacity: Int { state.withLockedValue { $0.sketch.capacity } }
    /// Write transactions committed so far.
    public var generation: UInt64 { state.withLockedValue { $0.generation } }

    /// The record of `key`, or nil.
    public func record(forKey key: String) -> NameKeyRecord? { state.withLockedValue { $0.records[key]?.record } }

    /// Records that a sync with `mark.peer` completed.
    public func recordSync(_ mark: SyncMark) { state.withLockedValue { $0.syncs[mark.peer] = mark } }

    /// The last completed sync with `peer`, if any.
    public func lastSync(with peer: String) -> SyncMark? { state.withLockedValue { $0.syncs[peer] } }

    /// Every record, in key order.
    public var allRecords: [NameKeyRecord] {
        state.withLockedValue { state in
            state.records.values.map(\.record).sorted { keyPrecedes($0.key, $1.key) }
        }
    }

    /// The records of those `keys` the store holds, in the order of `keys`.
    public func records(forKeys keys: [String]) -> [NameKeyRecord] {
        state.withLockedValue { state in keys.compactMap { state.records[$0]?.record } }
    }

    /// The records whose fingerprints are among `fingerprints`, by fingerprint.
    public func records(withFingerprints fingerprints: [Fingerprint]) -> [Fingerprint: NameKeyRecord] {
        state.withLockedValue { state in
            var found: [Fingerprint: NameKeyRecord] = [:]
            for fingerprint in fingerprints {
                if let key = state.keysByFingerprint[fingerprint], let entry = state.records[key] {
                    found[fingerprint] = entry.record
                }
            }
            return found
        }
    }

    /// Up to `limit` records in byte order of their keys, after `key`.
    public func records(after key: String?, limit: Int) -> [NameKeyRecord] {
        state.withLockedValue { state in
            if state.sortedKeys == nil { state.sortedKeys = state.records.keys.sorted(by: keyPrecedes) }
            let keys = state.sortedKeys ?? []
            var low = 0
            if let key {
                var high = keys.count
                while low < high {
                    let middle = (low + high) / 2
                    if keyPrecedes(key, keys[middle]) { high = middle } else { low = middle + 1 }
                }
            }
            return keys[low..<min(keys.count, low + max(0, limit))].compactMap { state.records[$0]?.record }
        }
    }

    /// Applies `changes` in one transaction.
    public func apply(_ changes: [StoreChange]) throws(KeySyncError) {
        try state.withLocked { state throws(KeySyncError) in
            var next = state
            for change in changes {
                switch change {
                case .put(let given):
                    let record = try normalized(given, storeVersion: next.version)
                    let fingerprint = try schema.fingerprint(of: record)
                    if let existing = next.records[record.key] {
                        if existing.fingerprint == fingerprint && existing.record == record { continue }
                        next.sketch.remove(existing.fingerprint)
                        next.keysByFingerprint[existing.fingerprint] = nil
                    } else {
                        next.sortedKeys = nil
                    }
                    if let other = next.keysByFingerprint[fingerprint], other != record.key {
                        throw KeySyncError(
                            .fingerprintCollision, detail: "\(record.key) and \(other) both fingerprint \(fingerprint)")
                    }
                    next.records[record.key] = (record, fingerprint)
                    next.keysByFingerprint[fingerprint] = record.key
                    next.sketch.insert(fingerprint)
                case .delete(let key):
                    if let existing = next.records.removeValue(forKey: key) {
                        next.keysByFingerprint[existing.fingerprint] = nil
                        next.sketch.remove(existing.fingerprint)
                        next.sortedKeys = nil
                    }
                }
            }
            next.generation += 1
            state = next
        }
    }

    /// Symbols `range` of the sketch.
    public func symbols(_ range: Range<Int>) throws(KeySyncError) -> [SketchSymbol] {
        try checkSymbolRange(range)
        return state.withLockedValue { Array($0.sketch.symbols[range]) }
    }

    /// Migrates every record to `version`.
    public func migrate(to target: Int, batchSize: Int, progress: (Int, Int) -> Void) throws(KeySyncError) {
        try checkMigrationTarget(target, batchSize: batchSize)
        try state.withLocked { state throws(KeySyncError) in
            var next = state
            next.records = [:]
            next.keysByFingerprint = [:]
            for (_, entry) in state.records {
                let migrated = try schema.migrate(entry.record, to: target)
                guard next.records[migrated.key] == nil else {
                    throw KeySyncError(.schema, detail: "two keys migrate to \(migrated.key)")
                }
                next.records[migrated.key] = (migrated, entry.fingerprint)
                next.keysByFingerprint[entry.fingerprint] = migrated.key
            }
            next.version = target
            next.sortedKeys = nil
            next.generation += 1
            state = next
        }
        progress(count, count)
    }

    func normalized(_ record: NameKeyRecord, storeVersion: Int) throws(KeySyncError) -> NameKeyRecord {
        try normalize(record, storeVersion: storeVersion, schema: schema)
    }
}

/// `record` at `storeVersion`, or an error if it is newer or not a valid record.
func normalize(_ record: NameKeyRecord, storeVersion: Int, schema: Schema) throws(KeySyncError) -> NameKeyRecord {
    guard record.version <= storeVersion else {
        throw KeySyncError(
            .schema,
            detail:
                "record \(record.key) is at version \(record.version), the store at \(storeVersion): migrate the store first"
        )
    }
    guard record.key.utf8.count <= NameKeyRecord.maximumKeyLength else {
        throw KeySyncError(
            .invalidArgument, detail: "key of \(record.key.utf8.count) bytes exceeds \(NameKeyRecord.maximumKeyLength)")
    }
    return record.version == storeVersion ? record : try schema.migrate(record, to: storeVersion)
}
