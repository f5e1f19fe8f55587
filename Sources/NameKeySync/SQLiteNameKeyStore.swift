import FaultToleranceCore
import Foundation
import GRDB
import NIOConcurrencyHelpers

/// A ``NameKeyStore`` in one SQLite database file (through GRDB), records and sync metadata
/// side by side.
///
/// Each record's row holds its fingerprint in a column without an index: rows take sequential
/// row ids, so a transaction of new records appends to the table's B-tree as a plain table
/// would, instead of touching a page per record at random (fingerprints are random). A map from
/// fingerprint to row id, in memory, finds a record by fingerprint; it is built from one read
/// of the two columns when the store opens (about 1 s per million records here) and kept with
/// every write, so a sync never scans.
///
/// The sketch lives in the same file: a snapshot of its symbols (with a CRC32C) and a log with
/// one row per write transaction listing the fingerprints it added and removed, written in that
/// transaction; opening the store applies the log to the snapshot. So the metadata is never
/// behind the data after a crash, and a sync reads symbols from memory instead of scanning.
/// The symbols in memory take a committed transaction's changes on a background queue (each
/// fingerprint touches about 21 of 65,536 symbols), so a writer does not wait for them; reading
/// symbols first takes in whatever is still pending. That queue also folds the log into a new
/// snapshot every 4,096 transactions. Journal mode WAL; `synchronous = FULL` when opened
/// `durable`.
///
/// The file carries SQLite's `application_id` 0x46544B53 ("FTKS"); a database without it, or
/// a file that is not a database, is refused with ``KeySyncError/Code/notAStore`` naming it.
public final class SQLiteNameKeyStore: NameKeyStore, @unchecked Sendable {
    // unchecked: `cache`, `rows` and `pending` are guarded by `lock`, `sketch` by `sketchLock`
    // (taken before `lock` when both are); GRDB's queue serializes database access.

    /// The `application_id` of a store's file.
    public static let applicationID: Int32 = 0x4654_4B53
    /// Log rows kept before they are folded into a new snapshot.
    static let foldEvery = 4096

    /// The schema the records follow.
    public let schema: Schema
    /// The database file.
    public let path: String
    private let queue: DatabaseQueue
    private let lock = NIOLock()
    private var cache: (version: Int, count: Int, generation: UInt64, logRows: Int)
    /// The row id of each fingerprint's record.
    private var rows: [UInt64: Int64] = [:]
    /// Toggles of committed transactions not yet in `sketch` (9 bytes each, as the log holds
    /// them); toggles commute, so they may be taken in any order.
    private var pending: [UInt8] = []
    /// Whether a drain or a fold is queued.
    private var drainQueued = false
    private var foldQueued = false
    private let sketchLock = NIOLock()
    private var sketch: SketchPrefix
    /// Symbols of the sketch the store keeps.
    public let sketchCapacity: Int
    private let maintenance = DispatchQueue(label: "ft.keysync.sketch")

    /// Opens the store in the database at `path`, creating it (at `version`, with a sketch of
    /// `sketchCapacity` symbols) when `create` is true and the file is new.
    ///
    /// - Throws: ``KeySyncError/Code/notAStore`` naming the file when it is not a database or
    ///   not a name-key store; ``KeySyncError/Code/damaged`` when its sketch snapshot fails its
    ///   checksum; ``KeySyncError/Code/schema`` when it is at a version `schema` does not know.
    public init(
        path: String, schema: Schema, create: Bool = false, version: Int = 1, sketchCapacity: Int = 1 << 16,
        durable: Bool = true
    ) throws(KeySyncError) {
        self.schema = schema
        self.path = path
        if !create && !FileManager.default.fileExists(atPath: path) {
            throw KeySyncError(.notAStore, detail: "\(path): no such file")
        }
        var configuration = Configuration()
        configuration.journalMode = .wal
        configuration.label = "ft.keysync"
        let synchronous = durable ? "FULL" : "NORMAL"
        configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = \(synchronous)") }
        do {
            queue = try DatabaseQueue(path: path, configuration: configuration)
        } catch {
            throw Self.translate(error, path: path)
        }
        let prepared: (Int, Int, SketchPrefix, UInt64, Int)
        do {
            prepared = try queue.write { db in
                try Self.prepare(
                    db, path: path, schema: schema, create: create, version: version, capacity: sketchCapacity)
            }
            rows = try queue.read { db in try Self.rowsByFingerprint(db, path: path) }
        } catch let error as KeySyncError {
            throw error
        } catch {
            throw Self.translate(error, path: path)
        }
        cache = (prepared.0, prepared.1, prepared.3, prepared.4)
        sketch = prepared.2
        self.sketchCapacity = prepared.2.capacity
    }

    private static func prepare(
        _ db: Database, path: String, schema: Schema, create: Bool, version: Int, capacity: Int
    ) throws -> (Int, Int, SketchPrefix, UInt64, Int) {
        let application = try Int32.fetchOne(db, sql: "PRAGMA application_id") ?? 0
        let tables = try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master") ?? 0
        if application == 0 && tables == 0 {
            guard create else {
                throw KeySyncError(.notAStore, detail: "\(path): an empty database, not a name-key store")
            }
            guard schema.knows(version) else {
                throw KeySyncError(.schema, detail: "\(path): version \(version) outside 1...\(schema.latest)")
            }
            guard capacity >= 1, capacity <= KeySyncMessage.maximumSketchCapacity else {
                throw KeySyncError(.invalidArgument, detail: "sketch capacity \(capacity)")
            }
            try db.execute(
                sql: """
                    PRAGMA application_id = \(applicationID);
                    CREATE TABLE nks_meta(name TEXT PRIMARY KEY NOT NULL, value INTEGER NOT NULL) WITHOUT ROWID;
                    CREATE TABLE nks_records(
                        id INTEGER PRIMARY KEY, fingerprint INTEGER NOT NULL, key TEXT NOT NULL UNIQUE,
                        version INTEGER NOT NULL, stamp INTEGER NOT NULL, body BLOB NOT NULL);
                    CREATE TABLE nks_sketch(id INTEGER PRIMARY KEY CHECK (id = 0), through INTEGER NOT NULL,
                        symbols BLOB NOT NULL);
                    CREATE TABLE nks_sketch_log(seq INTEGER PRIMARY KEY, deltas BLOB NOT NULL);
                    """)
            try db.execute(
                sql:
                    "INSERT INTO nks_meta(name, value) VALUES ('version', ?), ('fingerprint_version', ?), ('count', 0)",
                arguments: [version, schema.latest])
            let sketch = SketchPrefix(capacity: capacity)
            try db.execute(
                sql: "INSERT INTO nks_sketch(id, through, symbols) VALUES (0, 0, ?)", arguments: [encode(sketch)])
            try upgradeLayout(db)
            return (version, 0, sketch, 0, 0)
        }
        guard application == applicationID else {
            throw KeySyncError(
                .notAStore,
                detail:
                    "\(path): a SQLite database of another application (application_id \(application)), not a name-key store"
            )
        }
        func meta(_ name: String) throws -> Int {
            guard let value = try Int.fetchOne(db, sql: "SELECT value FROM nks_meta WHERE name = ?", arguments: [name])
            else { throw KeySyncError(.damaged, detail: "\(path): metadata \(name) missing") }
            return value
        }
        let storeVersion = try meta("version")
        try upgradeLayout(db)
        guard schema.knows(storeVersion) else {
            throw KeySyncError(
                .schema,
                detail: "\(path): the store is at version \(storeVersion); this schema knows 1...\(schema.latest)")
        }
        guard let row = try Row.fetchOne(db, sql: "SELECT through, symbols FROM nks_sketch WHERE id = 0"),
            let blob = row["symbols"] as Data?
        else { throw KeySyncError(.damaged, detail: "\(path): sketch snapshot missing") }
        var sketch = try decode(blob, path: path)
        let through: Int64 = row["through"]
        var generation = UInt64(max(0, through))
        var logRows = 0
        let log = try Row.fetchCursor(
            db, sql: "SELECT seq, deltas FROM nks_sketch_log WHERE seq > ? ORDER BY seq", arguments: [through])
        while let entry = try log.next() {
            let deltas: Data = entry["deltas"]
            try applyDeltas(deltas, to: &sketch, path: path)
            generation = UInt64(max(0, entry["seq"] as Int64))
            logRows += 1
        }
        let fingerprintVersion = try meta("fingerprint_version")
        var count = try meta("count")
        if fingerprintVersion != schema.latest {
            // The code's schema has a newer version: fingerprints are taken at it from now on.
            (sketch, count) = try refingerprint(db, schema: schema, capacity: sketch.capacity)
            try db.execute(
                sql: "UPDATE nks_meta SET value = ? WHERE name = 'fingerprint_version'", arguments: [schema.latest])
            try db.execute(sql: "UPDATE nks_meta SET value = ? WHERE name = 'count'", arguments: [count])
            try db.execute(
                sql: "UPDATE nks_sketch SET through = ?, symbols = ? WHERE id = 0",
                arguments: [generation, encode(sketch)])
            try db.execute(sql: "DELETE FROM nks_sketch_log")
            logRows = 0
        }
        return (storeVersion, count, sketch, generation, logRows)
    }

    /// Brings a file from an earlier layout of this store to the current one, once: records
    /// keyed by their fingerprint move to sequential row ids; the peers table is added.
    private static func upgradeLayout(_ db: Database) throws {
        if try !db.columns(in: "nks_records").contains(where: { $0.name == "id" }) {
            try db.execute(
                sql: """
                    CREATE TABLE nks_records_next(
                        id INTEGER PRIMARY KEY, fingerprint INTEGER NOT NULL, key TEXT NOT NULL UNIQUE,
                        version INTEGER NOT NULL, stamp INTEGER NOT NULL, body BLOB NOT NULL);
                    INSERT INTO nks_records_next(fingerprint, key, version, stamp, body)
                        SELECT fingerprint, key, version, stamp, body FROM nks_records ORDER BY key;
                    DROP TABLE nks_records;
                    ALTER TABLE nks_records_next RENAME TO nks_records;
                    """)
        }
        try db.execute(
            sql: """
                CREATE TABLE IF NOT EXISTS nks_peers(peer TEXT PRIMARY KEY NOT NULL,
                    peer_generation INTEGER NOT NULL, generation INTEGER NOT NULL) WITHOUT ROWID;
                """)
    }

    /// Recomputes every fingerprint (a schema with a newer version): one scan, once.
    private static func refingerprint(_ db: Database, schema: Schema, capacity: Int) throws -> (SketchPrefix, Int) {
        let rows = try Row.fetchAll(db, sql: "SELECT rowid, key, version, stamp, body FROM nks_records")
        let update = try db.makeStatement(sql: "UPDATE nks_records SET fingerprint = ? WHERE rowid = ?")
        var sketch = SketchPrefix(capacity: capacity)
        for row in rows {
            let record = try Self.record(from: row)
            let fingerprint = try schema.fingerprint(of: record)
            try update.execute(arguments: [Int64(bitPattern: fingerprint.value), row[0] as Int64])
            sketch.insert(fingerprint)
        }
        return (sketch, rows.count)
    }

    /// The row id of every record by fingerprint: one read of two columns, when the store opens.
    private static func rowsByFingerprint(_ db: Database, path: String) throws -> [UInt64: Int64] {
        let count = try Int.fetchOne(db, sql: "SELECT count(*) FROM nks_records") ?? 0
        var rows: [UInt64: Int64] = [:]
        rows.reserveCapacity(count)
        let cursor = try Row.fetchCursor(db, sql: "SELECT rowid, fingerprint FROM nks_records")
        while let row = try cursor.next() {
            let fingerprint = UInt64(bitPattern: row[1] as Int64)
            guard rows.updateValue(row[0], forKey: fingerprint) == nil else {
                throw KeySyncError(
                    .damaged, detail: "\(path): two records with fingerprint \(Fingerprint(fingerprint))")
            }
        }
        return rows
    }

    /// The version the store's records are in.
    public var version: Int { lock.withLock { cache.version } }
    /// Records held.
    public var count: Int { lock.withLock { cache.count } }
    /// Write transactions committed so far.
    public var generation: UInt64 { lock.withLock { cache.generation } }

    /// Symbols `range` of the sketch (from memory: no database read).
    public func symbols(_ range: Range<Int>) throws(KeySyncError) -> [SketchSymbol] {
        try checkSymbolRange(range)
        return sketchLock.withLock {
            catchUp()
            return Array(sketch.symbols[range])
        }
    }

    /// The record of `key`, or nil.
    public func record(forKey key: String) throws(KeySyncError) -> NameKeyRecord? {
        try read { db in
            try Row.fetchOne(
                db.cachedStatement(sql: "SELECT fingerprint, key, version, stamp, body FROM nks_records WHERE key = ?"),
                arguments: [key]
            ).map(Self.record(from:))
        }
    }

    /// The records of those `keys` the store holds, in the order of `keys`.
    public func records(forKeys keys: [String]) throws(KeySyncError) -> [NameKeyRecord] {
        try read { db in
            let statement = try db.cachedStatement(
                sql: "SELECT fingerprint, key, version, stamp, body FROM nks_records WHERE key = ?")
            return try keys.compactMap { key in try Row.fetchOne(statement, arguments: [key]).map(Self.record(from:)) }
        }
    }

    /// The records whose fingerprints are among `fingerprints`, by fingerprint.
    public func records(withFingerprints fingerprints: [Fingerprint]) throws(KeySyncError) -> [Fingerprint:
        NameKeyRecord]
    {
        // The map and the read under one lock: a write between them could move a row.
        try lock.withLocked { () throws(KeySyncError) in
            try read { db in
                let statement = try db.cachedStatement(
                    sql: "SELECT fingerprint, key, version, stamp, body FROM nks_records WHERE rowid = ?")
                var found: [Fingerprint: NameKeyRecord] = [:]
                for fingerprint in fingerprints {
                    guard let id = rows[fingerprint.value] else { continue }
                    if let row = try Row.fetchOne(statement, arguments: [id]) {
                        found[fingerprint] = try Self.record(from: row)
                    }
                }
                return found
            }
        }
    }

    /// Up to `limit` records in byte order of their keys, after `key`.
    public func records(after key: String?, limit: Int) throws(KeySyncError) -> [NameKeyRecord] {
        try read { db in
            let rows: [Row]
            if let key {
                rows = try Row.fetchAll(
                    db.cachedStatement(
                        sql:
                            "SELECT fingerprint, key, version, stamp, body FROM nks_records WHERE key > ? ORDER BY key LIMIT ?"
                    ),
                    arguments: [key, max(0, limit)])
            } else {
                rows = try Row.fetchAll(
                    db.cachedStatement(
                        sql: "SELECT fingerprint, key, version, stamp, body FROM nks_records ORDER BY key LIMIT ?"),
                    arguments: [max(0, limit)])
            }
            return try rows.map(Self.record(from:))
        }
    }

    /// Applies `changes` in one transaction, with the fingerprints and the sketch log.
    public func apply(_ changes: [StoreChange]) throws(KeySyncError) {
        try lock.withLocked { () throws(KeySyncError) in
            var count = cache.count
            var deltas: [UInt8] = []
            // The map changes as the transaction goes; what it held before, to put back if the
            // transaction fails.
            var replaced: [(fingerprint: UInt64, row: Int64?)] = []
            let storeVersion = cache.version
            let generation = cache.generation + 1
            do {
                try queue.write { db in
                    let lookup = try db.cachedStatement(
                        sql: "SELECT rowid, fingerprint, version FROM nks_records WHERE key = ?")
                    let delete = try db.cachedStatement(sql: "DELETE FROM nks_records WHERE rowid = ?")
                    // A new key takes one statement; only an existing one is looked up first.
                    let insertNew = try db.cachedStatement(
                        sql: "INSERT INTO nks_records(fingerprint, key, version, stamp, body) VALUES (?, ?, ?, ?, ?) "
                            + "ON CONFLICT(key) DO NOTHING")
                    let update = try db.cachedStatement(
                        sql: "UPDATE nks_records SET fingerprint = ?, version = ?, stamp = ?, body = ? WHERE rowid = ?")
                    deltas.reserveCapacity(changes.count * 9)
                    for change in changes {
                        switch change {
                        case .put(let given):
                            let record = try normalize(given, storeVersion: storeVersion, schema: schema)
                            let body = record.body
                            // At the newest version the stored body is the fingerprinted one.
                            let fingerprint =
                                record.version == schema.latest
                                ? Fingerprint(of: record, body: body) : try schema.fingerprint(of: record)
                            let value = Int64(bitPattern: fingerprint.value)
                            let stamp = Int64(bitPattern: record.stamp)
                            try insertNew.execute(arguments: [value, record.key, record.version, stamp, Data(body)])
                            var id = db.lastInsertedRowID
                            if db.changesCount == 0 {
                                guard let existing = try Row.fetchOne(lookup, arguments: [record.key]) else {
                                    throw KeySyncError(
                                        .database, detail: "\(path): \(record.key) neither inserted nor found")
                                }
                                id = existing[0]
                                let old = Fingerprint(UInt64(bitPattern: existing[1] as Int64))
                                if old == fingerprint && (existing[2] as Int) == record.version { continue }
                                try update.execute(arguments: [value, record.version, stamp, Data(body), id])
                                replaced.append((old.value, rows.removeValue(forKey: old.value)))
                                Self.appendDelta(old, sign: -1, to: &deltas)
                            } else {
                                count += 1
                            }
                            let previous = rows.updateValue(id, forKey: fingerprint.value)
                            replaced.append((fingerprint.value, previous))
                            if let previous, previous != id {
                                throw KeySyncError(
                                    .fingerprintCollision,
                                    detail: "\(path): \(record.key) fingerprints as another record")
                            }
                            Self.appendDelta(fingerprint, sign: 1, to: &deltas)
                        case .delete(let key):
                            if let existing = try Row.fetchOne(lookup, arguments: [key]) {
                                let old = Fingerprint(UInt64(bitPattern: existing[1] as Int64))
                                try delete.execute(arguments: [existing[0] as Int64])
                                replaced.append((old.value, rows.removeValue(forKey: old.value)))
                                Self.appendDelta(old, sign: -1, to: &deltas)
                                count -= 1
                            }
                        }
                    }
                    try db.execute(
                        sql: "UPDATE nks_meta SET value = ? WHERE name = 'count'", arguments: [count])
                    try db.execute(
                        sql: "INSERT INTO nks_sketch_log(seq, deltas) VALUES (?, ?)",
                        arguments: [Int64(generation), Data(deltas)])
                }
            } catch {
                for (fingerprint, row) in replaced.reversed() { rows[fingerprint] = row }
                throw Self.translate(error, path: path)
            }
            cache.count = count
            cache.generation = generation
            cache.logRows += 1
            pending += deltas
            if !drainQueued {
                drainQueued = true
                maintenance.async { [self] in sketchLock.withLock { _ = catchUp() } }
            }
            if cache.logRows >= Self.foldEvery && !foldQueued {
                foldQueued = true
                maintenance.async { [self] in fold() }
            }
        }
    }

    /// Takes every pending toggle into `sketch` and returns the generation the sketch is then
    /// at. Call with `sketchLock` held.
    @discardableResult
    private func catchUp() -> UInt64 {
        // One locked read: the toggles of exactly the transactions through `generation`
        // (a writer holds `lock` from its transaction until its toggles are pending).
        let (taken, generation) = lock.withLock {
            drainQueued = false
            defer { pending = [] }
            return (pending, cache.generation)
        }
        var reader = ByteReader(taken)
        while let value = reader.u64(), let sign = reader.u8() {
            sketch.toggle(value, sign: Int64(Int8(bitPattern: sign)))
        }
        return generation
    }

    /// Writes the sketch as a new snapshot and drops the log rows it covers, in one
    /// transaction. A failure leaves the old snapshot and the log, which still add up.
    private func fold() {
        let (through, snapshot) = sketchLock.withLock {
            let through = catchUp()
            return (through, Self.encode(sketch))
        }
        let folded = try? queue.write { db in
            try db.execute(
                sql: "UPDATE nks_sketch SET through = ?, symbols = ? WHERE id = 0",
                arguments: [Int64(through), snapshot])
            try db.execute(sql: "DELETE FROM nks_sketch_log WHERE seq <= ?", arguments: [Int64(through)])
        }
        lock.withLock {
            foldQueued = false
            if folded != nil { cache.logRows = Int(cache.generation - through) }
        }
    }

    /// Records that a sync with `mark.peer` completed, in a transaction of its own. It is
    /// written after the sync's changes committed, so a crash between them loses only the mark
    /// (the next sync reconciles as if there had been none), never claims changes not applied.
    public func recordSync(_ mark: SyncMark) throws(KeySyncError) {
        do {
            try queue.write { db in
                try db.execute(
                    sql: "INSERT OR REPLACE INTO nks_peers(peer, peer_generation, generation) VALUES (?, ?, ?)",
                    arguments: [
                        mark.peer, Int64(bitPattern: mark.peerGeneration), Int64(bitPattern: mark.generation),
                    ])
            }
        } catch {
            throw Self.translate(error, path: path)
        }
    }

    /// The last completed sync with `peer`, if any.
    public func lastSync(with peer: String) throws(KeySyncError) -> SyncMark? {
        try read { db in
            try Row.fetchOne(
                db, sql: "SELECT peer_generation, generation FROM nks_peers WHERE peer = ?", arguments: [peer]
            ).map { row in
                SyncMark(
                    peer: peer, peerGeneration: UInt64(bitPattern: row[0] as Int64),
                    generation: UInt64(bitPattern: row[1] as Int64))
            }
        }
    }

    /// Migrates every record to `target`, `batchSize` records per transaction; resumable.
    ///
    /// Each batch is one transaction over the next rows in row-id order that are below
    /// `target`; a migrated record keeps its row and its fingerprint (fingerprints are taken at
    /// the newest version), so a crash between batches leaves a store of mixed versions that
    /// reads and writes correctly (its version stays the old one until the last batch), and the
    /// next `migrate` carries on.
    public func migrate(to target: Int, batchSize: Int, progress: (Int, Int) -> Void) throws(KeySyncError) {
        try checkMigrationTarget(target, batchSize: batchSize)
        let total = count
        var done = 0
        var after: Int64 = .min
        do {
            while true {
                let moved = try lock.withLock {
                    try queue.write { db -> Int in
                        let rows = try Row.fetchAll(
                            db.cachedStatement(
                                sql:
                                    "SELECT rowid, key, version, stamp, body FROM nks_records "
                                    + "WHERE rowid > ? AND version < ? ORDER BY rowid LIMIT ?"),
                            arguments: [after, target, batchSize])
                        let taken = try db.cachedStatement(
                            sql: "SELECT 1 FROM nks_records WHERE key = ? AND rowid != ?")
                        let update = try db.cachedStatement(
                            sql: "UPDATE nks_records SET key = ?, version = ?, stamp = ?, body = ? WHERE rowid = ?")
                        for row in rows {
                            let id: Int64 = row[0]
                            let record = try Self.record(from: row)
                            let migrated = try schema.migrate(record, to: target)
                            if try Int.fetchOne(taken, arguments: [migrated.key, id]) != nil {
                                throw KeySyncError(
                                    .schema, detail: "\(path): \(record.key) migrates to \(migrated.key), which exists")
                            }
                            try update.execute(arguments: [
                                migrated.key, migrated.version, Int64(bitPattern: migrated.stamp),
                                Data(migrated.body), id,
                            ])
                            after = id
                        }
                        if rows.isEmpty {
                            try db.execute(
                                sql: "UPDATE nks_meta SET value = ? WHERE name = 'version'", arguments: [target])
                        }
                        return rows.count
                    }
                }
                if moved == 0 { break }
                done += moved
                progress(min(done, total), total)
            }
        } catch let error as KeySyncError {
            throw error
        } catch {
            throw Self.translate(error, path: path)
        }
        lock.withLock { cache.version = target }
        progress(total, total)
    }

    /// Closes the database, once queued sketch work is done.
    public func close() throws(KeySyncError) {
        maintenance.sync {}
        do { try queue.close() } catch { throw Self.translate(error, path: path) }
    }

    // MARK: - Rows and blobs

    private func read<T>(_ body: (Database) throws -> T) throws(KeySyncError) -> T {
        do {
            return try queue.read(body)
        } catch let error as KeySyncError {
            throw error
        } catch {
            throw Self.translate(error, path: path)
        }
    }

    private static func record(from row: Row) throws -> NameKeyRecord {
        let body: Data = row["body"]
        let fields = try NameKeyRecord.decodeBody(body)
        return NameKeyRecord(
            key: row["key"], version: row["version"], stamp: UInt64(bitPattern: row["stamp"] as Int64), fields: fields)
    }

    private static func appendDelta(_ fingerprint: Fingerprint, sign: Int8, to deltas: inout [UInt8]) {
        deltas.appendLittleEndian(fingerprint.value)
        deltas.append(UInt8(bitPattern: sign))
    }

    private static func applyDeltas(_ deltas: Data, to sketch: inout SketchPrefix, path: String) throws {
        guard deltas.count % 9 == 0 else {
            throw KeySyncError(.damaged, detail: "\(path): a sketch log row of \(deltas.count) bytes")
        }
        var reader = ByteReader(Array(deltas))
        while let value = reader.u64(), let sign = reader.u8() {
            switch Int8(bitPattern: sign) {
            case 1: sketch.toggle(value, sign: 1)
            case -1: sketch.toggle(value, sign: -1)
            default: throw KeySyncError(.damaged, detail: "\(path): a sketch log entry with sign \(sign)")
            }
        }
    }

    /// A snapshot: count `u32`, then each symbol's sum `u64`, check `u32` and count `i64`, then
    /// the CRC32C of all that.
    static func encode(_ sketch: SketchPrefix) -> Data {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(8 + sketch.capacity * 20)
        bytes.appendLittleEndian(UInt32(sketch.capacity))
        for symbol in sketch.symbols {
            bytes.appendLittleEndian(symbol.sum)
            bytes.appendLittleEndian(symbol.check)
            bytes.appendLittleEndian(symbol.count)
        }
        bytes.appendLittleEndian(CRC32C.checksum(bytes))
        return Data(bytes)
    }

    /// Decodes a sketch snapshot as stored in a store's file (for tools and fuzzing); refuses
    /// anything that fails its length or CRC32C checks with ``KeySyncError/Code/damaged``.
    public static func decodeSnapshot(_ bytes: [UInt8]) throws(KeySyncError) -> SketchPrefix {
        do {
            return try decode(Data(bytes), path: "snapshot")
        } catch let error as KeySyncError {
            throw error
        } catch {
            throw KeySyncError(.damaged, detail: "\(error)")
        }
    }

    /// A snapshot's bytes (the inverse of ``decodeSnapshot(_:)``).
    public static func encodeSnapshot(_ sketch: SketchPrefix) -> [UInt8] { Array(encode(sketch)) }

    static func decode(_ blob: Data, path: String) throws -> SketchPrefix {
        let bytes = Array(blob)
        guard bytes.count >= 8, (bytes.count - 8) % 20 == 0 else {
            throw KeySyncError(.damaged, detail: "\(path): sketch snapshot of \(bytes.count) bytes")
        }
        var reader = ByteReader(bytes)
        let stored =
            UInt32(bytes[bytes.count - 4]) | UInt32(bytes[bytes.count - 3]) << 8
            | UInt32(bytes[bytes.count - 2]) << 16 | UInt32(bytes[bytes.count - 1]) << 24
        guard CRC32C.checksum(bytes[0..<(bytes.count - 4)]) == stored, let capacity = reader.u32(),
            Int(capacity) == (bytes.count - 8) / 20, capacity >= 1
        else { throw KeySyncError(.damaged, detail: "\(path): sketch snapshot fails its CRC32C") }
        var symbols: [SketchSymbol] = []
        symbols.reserveCapacity(Int(capacity))
        for _ in 0..<capacity {
            guard let sum = reader.u64(), let check = reader.u32(), let count = reader.integer(Int64.self) else {
                break
            }
            symbols.append(SketchSymbol(sum: sum, check: check, count: count))
        }
        return SketchPrefix(symbols: symbols)
    }

    static func translate(_ error: any Error, path: String) -> KeySyncError {
        if let error = error as? KeySyncError { return error }
        if let error = error as? DatabaseError {
            switch error.resultCode.primaryResultCode {
            case .SQLITE_NOTADB: return KeySyncError(.notAStore, detail: "\(path): not a SQLite database")
            case .SQLITE_CORRUPT:
                return KeySyncError(.notAStore, detail: "\(path): the database is damaged (\(error.message ?? ""))")
            case .SQLITE_CANTOPEN:
                return KeySyncError(.notAStore, detail: "\(path): cannot open (\(error.message ?? ""))")
            default: return KeySyncError(.database, detail: "\(path): \(error.message ?? "\(error.resultCode)")")
            }
        }
        return KeySyncError(.database, detail: "\(path): \(error)")
    }
}
