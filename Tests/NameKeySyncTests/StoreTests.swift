import FaultToleranceCore
import Foundation
import Testing

@testable import NameKeySync

/// A fresh directory under the system's temporary one.
func temporaryDirectory() throws -> URL {
    let url = FileManager.default.temporaryDirectory.appendingPathComponent("keysync-\(UUID().uuidString)")
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    return url
}

func sampleRecord(_ index: Int, value: String = "v") -> NameKeyRecord {
    NameKeyRecord(
        key: String(format: "key%05d", index), version: 1, stamp: UInt64(index),
        fields: ["qty": "\(index)", "name": value, "legacy": "L"])
}

@Suite("Name-key stores: SQLite through GRDB, and in memory")
struct NameKeyStoreTests {
    /// The same writes on an in-memory store and a SQLite one.
    func writeSame(_ stores: [any NameKeyStore]) throws {
        for store in stores {
            try store.apply((0..<300).map { .put(sampleRecord($0)) })
            try store.apply([.delete("key00007"), .put(sampleRecord(8, value: "changed")), .delete("absent")])
            try store.apply((290..<320).map { .put(sampleRecord($0, value: "later")) })
        }
    }

    @Test func theSQLiteStoreKeepsTheSameSketchAsOneBuiltFromItsRecordsAcrossReopens() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("s.sqlite").path
        let memory = try MemoryNameKeyStore(schema: .inventory, version: 2, sketchCapacity: 512)
        let sqlite = try SQLiteNameKeyStore(
            path: path, schema: .inventory, create: true, version: 2, sketchCapacity: 512)
        try writeSame([memory, sqlite])
        #expect(sqlite.count == memory.count)
        #expect(try sqlite.symbols(0..<512) == memory.symbols(0..<512))
        #expect(try sqlite.records(after: nil, limit: 1000) == memory.records(after: nil, limit: 1000))
        #expect(try sqlite.record(forKey: "key00008")?.fields["name"] == "changed")
        #expect(try sqlite.record(forKey: "key00007") == nil)
        try sqlite.close()
        // Reopened: the snapshot plus the log rows give the same symbols, without a scan.
        let reopened = try SQLiteNameKeyStore(path: path, schema: .inventory)
        #expect(reopened.version == 2)
        #expect(reopened.count == memory.count)
        #expect(try reopened.symbols(0..<512) == memory.symbols(0..<512))
    }

    @Test func foldingTheLogIntoTheSnapshotKeepsTheSketch() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("f.sqlite").path
        let sqlite = try SQLiteNameKeyStore(
            path: path, schema: .inventory, create: true, sketchCapacity: 64, durable: false)
        let memory = try MemoryNameKeyStore(schema: .inventory, sketchCapacity: 64)
        // More transactions than a log holds before it is folded.
        for index in 0..<(SQLiteNameKeyStore.foldEvery + 50) {
            let change: StoreChange = index % 5 == 4 ? .delete(sampleRecord(index - 1).key) : .put(sampleRecord(index))
            try sqlite.apply([change])
            try memory.apply([change])
        }
        try sqlite.close()
        let reopened = try SQLiteNameKeyStore(path: path, schema: .inventory)
        #expect(try reopened.symbols(0..<64) == memory.symbols(0..<64))
        #expect(reopened.count == memory.count)
    }

    @Test func aFileThatIsNotAStoreIsRefusedByName() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let garbage = directory.appendingPathComponent("garbage.sqlite").path
        try Data(repeating: 0x41, count: 8192).write(to: URL(fileURLWithPath: garbage))
        #expect {
            _ = try SQLiteNameKeyStore(path: garbage, schema: .inventory)
        } throws: { error in
            guard let error = error as? KeySyncError else { return false }
            return error.code == .notAStore && error.description.contains("garbage.sqlite")
        }
        let missing = directory.appendingPathComponent("missing.sqlite").path
        #expect(throws: KeySyncError.self) { _ = try SQLiteNameKeyStore(path: missing, schema: .inventory) }
        #expect(!FileManager.default.fileExists(atPath: missing))
    }

    @Test func aDamagedSketchSnapshotIsDetected() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("d.sqlite").path
        let store = try SQLiteNameKeyStore(path: path, schema: .inventory, create: true, sketchCapacity: 64)
        try store.apply([.put(sampleRecord(1))])
        try store.close()
        // Flip one byte of the snapshot blob with the sqlite3 shell's own SQL.
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        process.arguments = [
            path, "UPDATE nks_sketch SET symbols = substr(symbols, 1, 10) || x'FF' || substr(symbols, 12)",
        ]
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0)
        #expect {
            _ = try SQLiteNameKeyStore(path: path, schema: .inventory)
        } throws: { error in
            (error as? KeySyncError)?.code == .damaged && "\(error)".contains("d.sqlite")
        }
    }

    @Test func migrationIsResumableAndKeepsFingerprints() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("m.sqlite").path
        let store = try SQLiteNameKeyStore(path: path, schema: .inventory, create: true, sketchCapacity: 128)
        try store.apply((0..<100).map { .put(sampleRecord($0)) })
        let symbols = try store.symbols(0..<128)
        var reported: [Int] = []
        try store.migrate(to: 3, batchSize: 30) { done, _ in reported.append(done) }
        #expect(reported.last == 100)
        #expect(store.version == 3)
        #expect(try store.symbols(0..<128) == symbols)
        #expect(try store.record(forKey: "sku:key00005")?.fields == ["quantity": "5", "unit": "PCS", "name": "v"])
        #expect(try store.record(forKey: "key00005") == nil)
        try store.close()
        let reopened = try SQLiteNameKeyStore(path: path, schema: .inventory)
        #expect(reopened.version == 3)
        #expect(throws: KeySyncError.self) { try reopened.migrate(to: 2) }
    }

    @Test func writesOfANewerVersionThanTheStoreAreRefusedAndNothingIsApplied() throws {
        let store = try MemoryNameKeyStore(schema: .inventory, version: 1)
        let newer = NameKeyRecord(key: "x", version: 2, fields: [:])
        #expect(throws: KeySyncError.self) { try store.apply([.put(sampleRecord(1)), .put(newer)]) }
        #expect(store.count == 0)
    }

    /// Runs SQL on a store's file through the sqlite3 shell, as another program would.
    func sqlite3(_ path: String, _ sql: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        process.arguments = [path, sql]
        try process.run()
        process.waitUntilExit()
        try #require(process.terminationStatus == 0)
    }

    @Test func aFailedTransactionLeavesTheSketchAndTheFingerprintsAsTheyWere() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("t.sqlite").path
        let store = try SQLiteNameKeyStore(path: path, schema: .inventory, create: true, sketchCapacity: 256)
        let memory = try MemoryNameKeyStore(schema: .inventory, sketchCapacity: 256)
        for target in [store as any NameKeyStore, memory] { try target.apply((0..<50).map { .put(sampleRecord($0)) }) }
        let before = try store.symbols(0..<256)
        let generation = store.generation
        // Two good changes, then one the store refuses: none of them may show.
        let changed = sampleRecord(3, value: "changed")
        let newer = NameKeyRecord(key: "x", version: 3, fields: [:])
        #expect(throws: KeySyncError.self) {
            try store.apply([.put(changed), .delete("key00004"), .put(sampleRecord(60)), .put(newer)])
        }
        #expect(try store.symbols(0..<256) == before)
        #expect(store.count == 50)
        #expect(store.generation == generation)
        #expect(try store.record(forKey: "key00004") != nil)
        let fingerprints = try [changed, sampleRecord(60)].map { try Schema.inventory.fingerprint(of: $0) }
        #expect(try store.records(withFingerprints: fingerprints).isEmpty)
        let original = try Schema.inventory.fingerprint(of: sampleRecord(3))
        #expect(try store.records(withFingerprints: [original])[original]?.key == "key00003")
        // And the store goes on as one that never saw it.
        for target in [store as any NameKeyStore, memory] { try target.apply([.put(changed), .delete("key00004")]) }
        #expect(try store.symbols(0..<256) == memory.symbols(0..<256))
        #expect(try store.records(withFingerprints: [fingerprints[0]])[fingerprints[0]] == changed)
    }

    @Test func aStoreOfTheEarlierLayoutIsUpgradedInPlaceWhenOpened() throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let path = directory.appendingPathComponent("old.sqlite").path
        let memory = try MemoryNameKeyStore(schema: .inventory, sketchCapacity: 128)
        let store = try SQLiteNameKeyStore(path: path, schema: .inventory, create: true, sketchCapacity: 128)
        try writeSame([memory, store])
        try store.close()
        // The first layout: the fingerprint was the row id, and there was no peers table.
        try sqlite3(
            path,
            """
            CREATE TABLE old(fingerprint INTEGER PRIMARY KEY, key TEXT NOT NULL UNIQUE, version INTEGER NOT NULL,
                stamp INTEGER NOT NULL, body BLOB NOT NULL);
            INSERT INTO old SELECT fingerprint, key, version, stamp, body FROM nks_records;
            DROP TABLE nks_records; DROP TABLE nks_peers; ALTER TABLE old RENAME TO nks_records;
            """)
        let upgraded = try SQLiteNameKeyStore(path: path, schema: .inventory)
        #expect(try upgraded.symbols(0..<128) == memory.symbols(0..<128))
        #expect(try upgraded.records(after: nil, limit: 1000) == memory.records(after: nil, limit: 1000))
        let fingerprint = try Schema.inventory.fingerprint(of: sampleRecord(8, value: "changed"))
        #expect(try upgraded.records(withFingerprints: [fingerprint])[fingerprint]?.key == "key00008")
        for target in [upgraded as any NameKeyStore, memory] {
            try target.apply([.put(sampleRecord(9, value: "after")), .delete("key00010")])
        }
        #expect(try upgraded.symbols(0..<128) == memory.symbols(0..<128))
        try upgraded.recordSync(SyncMark(peer: "active", peerGeneration: 7, generation: upgraded.generation))
        try upgraded.close()
        let reopened = try SQLiteNameKeyStore(path: path, schema: .inventory)
        #expect(try reopened.symbols(0..<128) == memory.symbols(0..<128))
        #expect(try reopened.lastSync(with: "active") == SyncMark(peer: "active", peerGeneration: 7, generation: 4))
        #expect(try reopened.lastSync(with: "other") == nil)
    }
}
