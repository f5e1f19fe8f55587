import Benchmark
import BenchmarkSupport
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import GRDB
import NIOCore
import NameKeySync

// Name-key sync against its baselines, on SQLite stores of N keys (1,000,000 full, 100,000
// quick, 20,000 smoke), for differences d of 0, 10, 1,000, 1%, 10% and 50% of the keys (a key
// whose value changed; the backup starts as a copy of the active's base). For each d, in the
// same iteration:
//   ours      KeySyncClient/KeySyncServer over loopback TCP (sketch, or streaming past it);
//   seed      the seed's key-list protocol over the same transport (SyncProtocol.seed);
//   merkle    a Merkle tree of depth 15 and 20 over the keys' hash buckets (Cassandra's repair):
//             16-byte hashes exchanged for every node of a differing subtree, then every record
//             of a differing leaf streamed once (compressed as ours are) — bytes by model, time
//             to build both trees from the stores;
//   rsync     `rsync --stats --no-whole-file` of the active's file onto a copy of the backup's;
//   stream    every record once, in our compressed batches (the floor for large d).
// Bytes count message payloads plus a 16-byte frame header each. Both stores are at schema
// version 1 here so rsync compares like files; a version-1/version-2 pair moves the same bytes
// for ours (fingerprints are version-normalised; see the test of it).
// (w) Keeping the metadata: writing N/10 records in transactions of 1,000 into the store vs a
//     plain GRDB table (key primary key, version, stamp, body) with the same WAL,
//     synchronous = FULL: throughput ratio (target >= 0.85). The store is
//     at its schema's newest version. (w1) the same into a store two versions behind the code
//     it runs under, where every write also migrates the record to fingerprint it.

let mode = BenchmarkMode.current
let keyCount = mode.pick(full: 1_000_000, quick: 100_000, smoke: 20_000)
let differences: [(name: String, count: Int)] =
    mode.isSmoke
    ? [("d=10", 10), ("d=1%", keyCount / 100), ("d=50%", keyCount / 2)]
    : [
        ("d=0", 0), ("d=10", 10), ("d=1000", 1000), ("d=1%", keyCount / 100), ("d=10%", keyCount / 10),
        ("d=50%", keyCount / 2),
    ]

let bytesVersusSeed = BenchmarkMetric.custom(
    "bytes ratio x100 (seed / ours)", polarity: .prefersLarger, useScalingFactor: false)
let bytesVersusMerkle = BenchmarkMetric.custom(
    "bytes ratio x100 (merkle depth 15 / ours)", polarity: .prefersLarger, useScalingFactor: false)
let bytesVersusStream = BenchmarkMetric.custom(
    "bytes ratio x100 (every record once / ours)", polarity: .prefersLarger, useScalingFactor: false)

/// One generated record: the value depends on the key's index and, for changed keys, on `salt`.
func record(_ index: Int, salt: UInt64 = 0) -> NameKeyRecord {
    var z = UInt64(index) &* 0x9E37_79B9_7F4A_7C15 ^ salt
    z = (z ^ (z >> 31)) &* 0xBF58_476D_1CE4_E5B9
    return NameKeyRecord(
        key: String(format: "key%09d", index), version: 1, stamp: 0,
        fields: ["name": "item \(z % 100_000)", "qty": "\(z >> 40 % 1000)", "legacy": "L\(z >> 50 % 10)"])
}

/// The stores every case starts from, made once per process.
final class Fixture: @unchecked Sendable {
    // unchecked: built once before the benchmarks run, then only read.
    let directory: URL
    let active: String
    let base: String

    static let shared: Fixture? = try? Fixture()

    init() throws {
        // Folders a killed run left behind go first; this run's goes at exit.
        let temporary = FileManager.default.temporaryDirectory
        for name in (try? FileManager.default.contentsOfDirectory(atPath: temporary.path)) ?? []
        where name.hasPrefix("keysync-bench-") {
            if let pid = Int32(name.dropFirst("keysync-bench-".count)), kill(pid, 0) != 0 {
                try? FileManager.default.removeItem(at: temporary.appendingPathComponent(name))
            }
        }
        directory = temporary.appendingPathComponent("keysync-bench-\(getpid())")
        atexit {
            let path = FileManager.default.temporaryDirectory.appendingPathComponent("keysync-bench-\(getpid())")
            try? FileManager.default.removeItem(at: path)
        }
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        active = directory.appendingPathComponent("active.sqlite").path
        base = directory.appendingPathComponent("base.sqlite").path
        for path in [active, base] {
            let store = try SQLiteNameKeyStore(path: path, schema: .inventory, create: true, durable: false)
            for start in stride(from: 0, to: keyCount, by: 20_000) {
                try store.apply((start..<min(keyCount, start + 20_000)).map { .put(record($0)) })
            }
            try store.close()
        }
    }

    /// A copy of the base with `count` keys changed, spread over the key space.
    func backup(changed count: Int, name: String) throws -> String {
        let path = directory.appendingPathComponent("\(name).sqlite").path
        try? FileManager.default.removeItem(atPath: path)
        try FileManager.default.copyItem(atPath: base, toPath: path)
        let store = try SQLiteNameKeyStore(path: path, schema: .inventory, durable: false)
        let stride = max(1, keyCount / max(count, 1))
        let indices = (0..<count).map { ($0 * stride) % keyCount }
        for start in Swift.stride(from: 0, to: indices.count, by: 20_000) {
            try store.apply(indices[start..<min(indices.count, start + 20_000)].map { .put(record($0, salt: 0xBAD)) })
        }
        try store.close()
        return path
    }
}

/// One sync of `backup` from `active` over loopback TCP: bytes (both ways) and seconds.
func syncOverTCP(active: String, backup: String, syncProtocol: SyncProtocol) async throws -> (
    bytes: Int, seconds: Double, roundTrips: Int, openSeconds: Double
) {
    let opening = ContinuousClock.now
    let activeStore = try SQLiteNameKeyStore(path: active, schema: .inventory, durable: false)
    let openSeconds = seconds(ContinuousClock.now - opening)
    let backupStore = try SQLiteNameKeyStore(path: backup, schema: .inventory, durable: false)
    let any = try SocketAddress(ipAddress: "127.0.0.1", port: 0)
    let activeTransport = try await TCPTransport.start(configuration: .init(localNode: "active", bindAddress: any))
    let backupTransport = try await TCPTransport.start(
        configuration: .init(localNode: "backup", bindAddress: any, peers: ["active": activeTransport.localAddress]))
    activeTransport.setPeer("backup", address: backupTransport.localAddress)
    let server = KeySyncServer(store: activeStore, transport: activeTransport)
    let serving = Task { try await server.run() }
    let client = KeySyncClient(store: backupStore, transport: backupTransport, replyTimeout: .seconds(120))
    let start = ContinuousClock.now
    let result = try await client.sync(with: "active", options: .init(syncProtocol: syncProtocol))
    let elapsed = seconds(ContinuousClock.now - start)
    client.close()
    serving.cancel()
    await activeTransport.close()
    await backupTransport.close()
    // A sync that did not make the stores agree is a failure, not a fast result.
    if syncProtocol == .reconcile {
        guard try backupStore.describe().digest == activeStore.describe().digest else {
            throw KeySyncError(.notVerified, detail: "the stores differ after the sync")
        }
    }
    try activeStore.close()
    try backupStore.close()
    return (result.bytesSent + result.bytesReceived, elapsed, result.roundTrips, openSeconds)
}

/// Every (key, fingerprint) of a store, in key order.
func fingerprints(_ path: String) throws -> [(key: String, fingerprint: UInt64, size: Int)] {
    let store = try SQLiteNameKeyStore(path: path, schema: .inventory, durable: false)
    defer { try? store.close() }
    var all: [(String, UInt64, Int)] = []
    all.reserveCapacity(store.count)
    var cursor: String?
    repeat {
        let batch = try store.records(after: cursor, limit: 20_000)
        for record in batch {
            all.append(
                (
                    record.key, try store.schema.fingerprint(of: record).value,
                    record.key.utf8.count + record.body.count + 14
                ))
        }
        cursor = batch.count == 20_000 ? batch.last?.key : nil
    } while cursor != nil
    return all
}

/// Bytes of a Merkle repair at `depth`: hashes of every node of every differing subtree (16
/// bytes each, both sides), then each differing leaf's records streamed once at the measured
/// compressed size per record.
func merkleBytes(
    _ a: [(key: String, fingerprint: UInt64, size: Int)], _ b: [(key: String, fingerprint: UInt64, size: Int)],
    depth: Int, compressedPerRecord: Double
) -> Int {
    let leaves = 1 << depth
    func tree(_ items: [(key: String, fingerprint: UInt64, size: Int)]) -> (hashes: [UInt64], counts: [Int]) {
        var hashes = [UInt64](repeating: 0, count: 2 * leaves)
        var counts = [Int](repeating: 0, count: leaves)
        for item in items {
            var hasher = Hasher()
            hasher.combine(item.key)
            let leaf = Int(UInt64(bitPattern: Int64(hasher.finalize())) % UInt64(leaves))
            hashes[leaves + leaf] &+= item.fingerprint &* 0x9E37_79B9_7F4A_7C15
            counts[leaf] += 1
        }
        for node in stride(from: leaves - 1, through: 1, by: -1) {
            hashes[node] = (hashes[2 * node] &* 31) &+ hashes[2 * node + 1]
        }
        return (hashes, counts)
    }
    let (ha, ca) = tree(a)
    let (hb, _) = tree(b)
    var bytes = 0
    var rows = 0
    var stack = [1]
    while let node = stack.popLast() {
        bytes += 32  // each side's 16-byte hash of this node
        guard ha[node] != hb[node] else { continue }
        if node >= leaves {
            rows += ca[node - leaves]
        } else {
            stack.append(2 * node)
            stack.append(2 * node + 1)
        }
    }
    return bytes + Int(Double(rows) * compressedPerRecord)
}

/// Bytes of every record of the active once, in our compressed record batches.
func streamOnceBytes(_ path: String) throws -> Int {
    let store = try SQLiteNameKeyStore(path: path, schema: .inventory, durable: false)
    defer { try? store.close() }
    var total = 0
    var cursor: String?
    repeat {
        let batch = try store.records(after: cursor, limit: 2048)
        total +=
            try KeySyncMessage.records(request: 0, records: batch, next: nil, answered: batch.count).encode().payload
            .readableBytes + 16
        cursor = batch.count == 2048 ? batch.last?.key : nil
    } while cursor != nil
    return total
}

/// `rsync --stats --no-whole-file` of `source` onto a copy of `destination`: bytes sent plus
/// received, and seconds; nil when rsync is not installed.
func rsyncBytes(source: String, destination: String) throws -> (bytes: Int, seconds: Double)? {
    guard FileManager.default.isExecutableFile(atPath: "/usr/bin/rsync") else { return nil }
    let copy = destination + ".rsync"
    try? FileManager.default.removeItem(atPath: copy)
    try FileManager.default.copyItem(atPath: destination, toPath: copy)
    defer { try? FileManager.default.removeItem(atPath: copy) }
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/rsync")
    process.arguments = ["--stats", "--no-whole-file", "-I", source, copy]
    let pipe = Pipe()
    process.standardOutput = pipe
    let start = ContinuousClock.now
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    let elapsed = seconds(ContinuousClock.now - start)
    guard process.terminationStatus == 0 else { return nil }
    var total = 0
    for line in output.split(separator: "\n")
    where line.hasPrefix("Total bytes sent:") || line.hasPrefix("Total bytes received:") {
        total += Int(line.split(separator: ":")[1].filter(\.isNumber)) ?? 0
    }
    return (total, elapsed)
}

/// (w): `count` records at `version` in transactions of 1,000 into a store at that version,
/// or into a plain table.
func writeThroughput(store: Bool, count: Int, version: Int, directory: URL) throws -> Double {
    let path = directory.appendingPathComponent("w-\(store)-\(UUID().uuidString).sqlite").path
    defer {
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: path + suffix) }
    }
    let records = try (0..<count).map { try Schema.inventory.migrate(record($0), to: version) }
    if store {
        let target = try SQLiteNameKeyStore(
            path: path, schema: .inventory, create: true, version: version, durable: true)
        let elapsed = try seconds {
            for start in stride(from: 0, to: count, by: 1000) {
                try target.apply(records[start..<min(count, start + 1000)].map { .put($0) })
            }
        }
        try target.close()
        return Double(count) / elapsed
    }
    var configuration = Configuration()
    configuration.journalMode = .wal
    configuration.prepareDatabase { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
    let queue = try DatabaseQueue(path: path, configuration: configuration)
    try queue.write { db in
        try db.execute(
            sql: "CREATE TABLE records(key TEXT PRIMARY KEY NOT NULL, version INTEGER, stamp INTEGER, body BLOB)")
    }
    let elapsed = try seconds {
        for start in stride(from: 0, to: count, by: 1000) {
            try queue.write { db in
                let statement = try db.cachedStatement(
                    sql: "INSERT OR REPLACE INTO records(key, version, stamp, body) VALUES (?, ?, ?, ?)")
                for record in records[start..<min(count, start + 1000)] {
                    try statement.execute(
                        arguments: [record.key, record.version, Int64(bitPattern: record.stamp), Data(record.body)])
                }
            }
        }
    }
    try queue.close()
    return Double(count) / elapsed
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration.warmupIterations = 0
    for (name, count) in differences {
        Benchmark(
            "(\(name)) sync of \(keyCount) keys in SQLite: ours vs the seed's key list, Merkle, rsync",
            configuration: .init(
                metrics: [throughputRatio, bytesVersusSeed, bytesVersusMerkle, bytesVersusStream],
                maxDuration: .seconds(600), maxIterations: 1)
        ) { benchmark in
            do {
                guard let fixture = Fixture.shared else {
                    fail(benchmark, "the stores could not be generated")
                    return
                }
                let oursPath = try fixture.backup(changed: count, name: "ours")
                let seedPath = try fixture.backup(changed: count, name: "seed")
                let rsyncPath = try fixture.backup(changed: count, name: "rsync")
                let a = try fingerprints(fixture.active)
                let b = try fingerprints(rsyncPath)
                let once = try streamOnceBytes(fixture.active)
                let perRecord = Double(once) / Double(max(1, a.count))
                let merkleStart = ContinuousClock.now
                let merkle15 = merkleBytes(a, b, depth: 15, compressedPerRecord: perRecord)
                let merkleSeconds = seconds(ContinuousClock.now - merkleStart)
                let merkle20 = merkleBytes(a, b, depth: 20, compressedPerRecord: perRecord)
                let ours = try await syncOverTCP(active: fixture.active, backup: oursPath, syncProtocol: .reconcile)
                let seed = try await syncOverTCP(active: fixture.active, backup: seedPath, syncProtocol: .seed)
                let rsync = try rsyncBytes(source: fixture.active, destination: rsyncPath)
                print(
                    "keysync \(name) of \(keyCount): bytes ours \(ours.bytes), seed \(seed.bytes), merkle15 \(merkle15), "
                        + "merkle20 \(merkle20), rsync \(rsync.map { "\($0.bytes)" } ?? "n/a"), every record once \(once); "
                        + "round trips ours \(ours.roundTrips), seed \(seed.roundTrips); "
                        + String(format: "opening the active's store %.2f s; ", ours.openSeconds)
                        + String(
                            format: "seconds ours %.2f, seed %.2f, merkle trees %.2f, rsync %@", ours.seconds,
                            seed.seconds,
                            merkleSeconds, rsync.map { String(format: "%.2f", $0.seconds) } ?? "n/a"))
                record(ratio: seed.seconds / ours.seconds, floor: 0.5, in: benchmark)
                let floor = count >= keyCount / 10 ? 0.5 : 5
                record(ratio: Double(seed.bytes) / Double(ours.bytes), as: bytesVersusSeed, floor: floor, in: benchmark)
                record(
                    ratio: Double(merkle15) / Double(ours.bytes), as: bytesVersusMerkle,
                    floor: count >= keyCount / 10 ? 0.5 : 2, in: benchmark)
                record(ratio: Double(once) / Double(ours.bytes), as: bytesVersusStream, floor: 0.01, in: benchmark)
            } catch {
                fail(benchmark, "keysync benchmark failed: \(error)")
            }
        }
    }

    // (w) a store at its schema's newest version (the steady state); (w1) a store two versions
    // behind the code it runs under, so every write also fingerprints the record's migration.
    for (name, version, floor) in [("w", Schema.inventory.latest, 0.35), ("w1", 1, 0.2)] {
        Benchmark(
            "(\(name)) writing \(keyCount / 10) records at version \(version) in transactions of 1,000: "
                + "the store (fingerprints, sketch log) vs a plain GRDB table",
            configuration: .init(
                metrics: [throughputRatio], maxDuration: .seconds(300),
                maxIterations: mode.pick(full: 3, quick: 2, smoke: 1))
        ) { benchmark in
            do {
                let directory = FileManager.default.temporaryDirectory
                let count = keyCount / 10
                var ours = 0.0
                var plain = 0.0
                if benchmark.currentIteration % 2 == 0 {
                    ours = try writeThroughput(store: true, count: count, version: version, directory: directory)
                    plain = try writeThroughput(store: false, count: count, version: version, directory: directory)
                } else {
                    plain = try writeThroughput(store: false, count: count, version: version, directory: directory)
                    ours = try writeThroughput(store: true, count: count, version: version, directory: directory)
                }
                record(ratio: ours / plain, floor: floor, in: benchmark)
            } catch {
                fail(benchmark, "keysync write benchmark failed: \(error)")
            }
        }
    }
}
