import FaultToleranceCore
import Foundation
import GRDB
import NIOConcurrencyHelpers

/// A ``NameKeyStore`` in one SQLite database file (through GRDB), records and sync metadata
/// side by side.
///
/// Each record's row holds its fingerprint as its row id, so a fingerprint finds its record
/// without another index. The sketch lives in the same file: a snapshot of its symbols (with a
/// CRC32C) and a log with one row per write transaction listing the fingerprints it added and
/// removed, written in that transaction; opening the store applies the log to the snapshot, and
/// every 4,096 transactions the log is folded into a new snapshot, in the writing transaction.
/// So the metadata is never behind the data after a crash, and a sync reads symbols from
/// memory instead of scanning. Journal mode WAL; `synchronous = FULL` when opened `durable`.
///
/// The file carries SQLite's `application_id` 0x46544B53 ("FTKS"); a database without it, or
/// a file that is not a database, is refused with ``KeySyncError/Code/notAStore`` naming it.
public final class SQLiteNameKeyStore: NameKeyStore, @unchecked Sendable {
    // unchecked: `cache` is guarded by `lock`; GRDB's queue serializes database access.

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
    private var cache: (version: Int, count: Int, sketch: SketchPrefix, generation: UInt64, logRows: Int)

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
        cache = (version, 0, SketchPrefix(capacity: 1), 0, 0)
        do {
            cache = try queue.write { db in
                try Self.prepare(
                    db, path: path, schema: schema, create: create, version: version, capacity: sketchCapacity)
            }
        } catch let error as KeySyncError {
            throw error
        } catch {
            throw Self.translate(error, path: path)
        }
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
                        fingerprint INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
                        stamp INTEGER NOT NULL, body BLOB NOT NULL);
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

    /// Recomputes every fingerprint (a schema with a newer version): one scan, once.
    private static func refingerprint(_ db: Database, schema: Schema, capacity: Int) throws -> (SketchPrefix, Int) {
        let rows = try Row.fetchAll(db, sql: "SELECT fingerprint, key, version, stamp, body FROM nks_records")
        try db.execute(sql: "DELETE FROM nks_records")
        var sketch = SketchPrefix(capacity: capacity)
        for row in rows {
            let record = try Self.record(from: row)
            let fingerprint = try schema.fingerprint(of: record)
            try insert(db, record, fingerprint: fingerprint)
            sketch.insert(fingerprint)
        }
        return (sketch, rows.count)
    }

    /// The version the store's records are in.
    public var version: Int { lock.withLock { cache.version } }
    /// Records held.
    public var count: Int { lock.withLock { cache.count } }
    /// Symbols of the sketch the store keeps.
    public var sketchCapacity: Int { lock.withLock { cache.sketch.capacity } }
    /// Write transactions committed so far.
    public var generation: UInt64 { lock.withLock { cache.generation } }

    /// Symbols `range` of the sketch (from memory: no database read).
    public func symbols(_ range: Range<Int>) throws(KeySyncError) -> [SketchSymbol] {
        try checkSymbolRange(range)
        return lock.withLock { Array(cache.sketch.symbols[range]) }
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
        try read { db in
            let statement = try db.cachedStatement(
                sql: "SELECT fingerprint, key, version, stamp, body FROM nks_records WHERE fingerprint = ?")
            var found: [Fingerprint: NameKeyRecord] = [:]
            for fingerprint in fingerprints {
                if let row = try Row.fetchOne(statement, arguments: [Int64(bitPattern: fingerprint.value)]) {
                    found[fingerprint] = try Self.record(from: row)
                }
            }
            return found
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
            var sketch = cache.sketch
            var count = cache.count
            var deltas: [UInt8] = []
            let storeVersion = cache.version
            let fold = cache.logRows + 1 >= Self.foldEvery
            let generation = cache.generation + 1
            do {
                try queue.write { db in
                    let lookup = try db.cachedStatement(
                        sql: "SELECT fingerprint, version FROM nks_records WHERE key = ?")
                    let delete = try db.cachedStatement(sql: "DELETE FROM nks_records WHERE key = ?")
                    // A new key takes one statement; only an existing one is looked up first.
                    let insertNew = try db.cachedStatement(
                        sql: "INSERT INTO nks_records(fingerprint, key, version, stamp, body) VALUES (?, ?, ?, ?, ?) "
                            + "ON CONFLICT(key) DO NOTHING")
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
                            let arguments: StatementArguments = [
                                Int64(bitPattern: fingerprint.value), record.key, record.version,
                                Int64(bitPattern: record.stamp), Data(body),
                            ]
                            try insertNew.execute(arguments: arguments)
                            if db.changesCount == 0 {
                                guard let row = try Row.fetchOne(lookup, arguments: [record.key]) else {
                                    throw KeySyncError(
                                        .database, detail: "\(path): \(record.key) neither inserted nor found")
                                }
                                let old = Fingerprint(UInt64(bitPattern: row["fingerprint"] as Int64))
                                if old == fingerprint && (row["version"] as Int) == record.version { continue }
                                try delete.execute(arguments: [record.key])
                                sketch.remove(old)
                                Self.appendDelta(old, sign: -1, to: &deltas)
                                try insertNew.execute(arguments: arguments)
                            } else {
                                count += 1
                            }
                            sketch.insert(fingerprint)
                            Self.appendDelta(fingerprint, sign: 1, to: &deltas)
                        case .delete(let key):
                            if let row = try Row.fetchOne(lookup, arguments: [key]) {
                                let old = Fingerprint(UInt64(bitPattern: row["fingerprint"] as Int64))
                                try delete.execute(arguments: [key])
                                sketch.remove(old)
                                Self.appendDelta(old, sign: -1, to: &deltas)
                                count -= 1
                            }
                        }
                    }
                    try db.execute(
                        sql: "UPDATE nks_meta SET value = ? WHERE name = 'count'", arguments: [count])
                    if fold {
                        try db.execute(
                            sql: "UPDATE nks_sketch SET through = ?, symbols = ? WHERE id = 0",
                            arguments: [Int64(generation), Self.encode(sketch)])
                        try db.execute(sql: "DELETE FROM nks_sketch_log")
                    } else {
                        try db.execute(
                            sql: "INSERT INTO nks_sketch_log(seq, deltas) VALUES (?, ?)",
                            arguments: [Int64(generation), Data(deltas)])
                    }
                }
            } catch let error as KeySyncError {
                throw error
            } catch let error as DatabaseError where error.resultCode == .SQLITE_CONSTRAINT {
                throw KeySyncError(.fingerprintCollision, detail: "\(path): \(error.message ?? "constraint")")
            } catch {
                throw Self.translate(error, path: path)
            }
            cache.sketch = sketch
            cache.count = count
            cache.generation = generation
            cache.logRows = fold ? 0 : cache.logRows + 1
        }
    }

    /// Migrates every record to `target`, `batchSize` records per transaction; resumable.
    public func migrate(to target: Int, batchSize: Int, progress: (Int, Int) -> Void) throws(KeySyncError) {
        try checkMigrationTarget(target, batchSize: batchSize)
        let total = count
        var done = 0
        do {
            while true {
                let moved = try lock.withLock {
                    try queue.write { db -> Int in
                        let rows = try Row.fetchAll(
                            db,
                            sql:
                                "SELECT fingerprint, key, version, stamp, body FROM nks_records WHERE version < ? LIMIT ?",
                            arguments: [target, batchSize])
                        for row in rows {
                            let record = try Self.record(from: row)
                            let migrated = try schema.migrate(record, to: target)
                            let fingerprint = Fingerprint(UInt64(bitPattern: row["fingerprint"] as Int64))
                            try db.execute(
                                sql: "DELETE FROM nks_records WHERE fingerprint = ?",
                                arguments: [Int64(bitPattern: fingerprint.value)])
                            if try Int.fetchOne(
                                db, sql: "SELECT 1 FROM nks_records WHERE key = ?", arguments: [migrated.key]) != nil
                            {
                                throw KeySyncError(
                                    .schema, detail: "\(path): \(record.key) migrates to \(migrated.key), which exists")
                            }
                            try Self.insert(db, migrated, fingerprint: fingerprint)
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

    /// Closes the database.
    public func close() throws(KeySyncError) {
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

    private static func insert(_ db: Database, _ record: NameKeyRecord, fingerprint: Fingerprint) throws {
        try db.cachedStatement(
            sql: "INSERT INTO nks_records(fingerprint, key, version, stamp, body) VALUES (?, ?, ?, ?, ?)"
        ).execute(arguments: [
            Int64(bitPattern: fingerprint.value), record.key, record.version, Int64(bitPattern: record.stamp),
            Data(record.body),
        ])
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
