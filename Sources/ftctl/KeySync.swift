public import ArgumentParser
import DeterministicSimulation
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import Logging
import NIOCore
public import NameKeySync
import NameKeySyncSimulation
import ServiceLifecycle
import UnixSignals

extension SyncProtocol: ExpressibleByArgument {}
extension BackupOnlyPolicy: ExpressibleByArgument {}

/// `ftctl keysync`: syncing databases of different schema versions by name key.
struct KeySyncCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "keysync",
        abstract: "Sync SQLite name-key stores of different schema versions (NameKeySync).",
        subcommands: [
            KeySyncSimulate.self, KeySyncGenerate.self, KeySyncDiff.self, KeySyncMigrate.self, KeySyncServe.self,
            KeySyncSync.self, KeySyncDemo.self,
        ])
}

/// A `HOST:PORT` on the command line.
struct HostPort: ExpressibleByArgument, CustomStringConvertible {
    let address: SocketAddress
    let description: String

    init?(argument: String) {
        let parts = argument.split(separator: ":")
        guard parts.count == 2, let port = Int(parts[1]), (0...65_535).contains(port),
            let address = try? SocketAddress(ipAddress: String(parts[0]), port: port)
        else { return nil }
        self.address = address
        description = argument
    }
}

/// Opens a store with the inventory schema, turning its errors into one line.
func openKeyStore(_ path: String, create: Bool = false, version: Int = 1, durable: Bool = true) throws
    -> SQLiteNameKeyStore
{
    do {
        return try SQLiteNameKeyStore(
            path: path, schema: .inventory, create: create, version: version, durable: durable)
    } catch {
        throw CommandFailure("\(error)")
    }
}

/// `ftctl keysync demo`.
struct KeySyncDemo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract:
            "Two SQLite stores of different schema versions, 1% changed: the bytes of the seed's protocol and ours.")

    @Option(help: "Records in each store.") var keys = 1_000_000

    func validate() throws { try require("--keys", keys, in: 1000...10_000_000) }

    func run() async throws { try await KeySyncScene(keys: keys).run() }
}

/// `ftctl keysync simulate`.
struct KeySyncSimulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract: "Run the name-key sync scenario over many seeds in virtual time.",
        discussion: """
            Each seed runs the shipped KeySyncClient and KeySyncServer over two in-memory stores \
            on a simulated network: stores of different schema versions (sometimes code of \
            different versions), random writes and deletes on both sides, migrations, then three \
            syncs while messages are lost, doubled and reordered and either side crashes mid-sync. \
            After a completed sync the backup must hold exactly what the conflict rule and the \
            backup-only policy say; after an interrupted one, nothing applied may be lost, and a \
            retry must complete. Exits 1 if any seed breaks an invariant.
            """)

    @Option(help: "Number of seeds.") var seeds: Int = 1000
    @Option(help: "Run exactly this seed.") var seed: UInt64?
    @Option(help: "Plant a bug: \(KeySyncSession.Bug.allCases.map(\.rawValue).joined(separator: ", ")).")
    var bug: String?
    @Option(help: "Worker threads.") var jobs: Int = ProcessInfo.processInfo.activeProcessorCount
    @OptionGroup var window: SeedWindowOptions
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        try require("--seeds", seeds, in: 1...maximumSeeds)
        try require("--jobs", jobs, in: 1...maximumJobs)
        if let bug, KeySyncSession.Bug(rawValue: bug) == nil {
            throw ValidationError(
                "--bug \(bug) is not a planted bug; one of: "
                    + KeySyncSession.Bug.allCases.map(\.rawValue).joined(separator: ", "))
        }
    }

    func run() async throws {
        let plan = window.plan(seeds: seeds, replay: seed)
        let scenario = KeySyncScenario(bug: bug.flatMap(KeySyncSession.Bug.init(rawValue:)))
        let summary = await runSeeds(plan, jobs: jobs, scenario: "keysync" + (bug.map { " (bug: \($0))" } ?? "")) {
            await scenario.run(seed: $0)
        }
        try report(summary, json: json, operations: "records written") { seed in
            "swift run ftctl keysync simulate --seed \(seed)" + (bug.map { " --bug \($0)" } ?? "")
        }
    }
}

/// The records `generate` writes: deterministic in `seed` and the key's index; `change`
/// decides, per key and again deterministically, whether this store's copy differs.
struct GeneratedRecords {
    let seed: UInt64
    let change: Double

    func mix(_ value: UInt64) -> UInt64 {
        var z = value &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }

    func record(_ index: Int) -> NameKeyRecord {
        let base = mix(UInt64(index) ^ 0x1234_5678)
        var fields = [
            "name": "item \(base % 100_000)", "qty": "\(base >> 20 % 1000)", "legacy": "L\(base >> 40 % 10)",
        ]
        let draw = Double(mix(UInt64(index) ^ seed) >> 11) * 0x1p-53
        if draw < change { fields["qty"] = "\(mix(base ^ seed) % 1000 + 1000)" }
        return NameKeyRecord(key: String(format: "key%09d", index), version: 1, stamp: 0, fields: fields)
    }
}

/// `ftctl keysync generate`.
struct KeySyncGenerate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "generate",
        abstract:
            "Write a store of test records: the same keys and values for the same --keys, with --change of them altered.",
        discussion: """
            Two stores generated with the same --keys and different --change (or --seed) differ \
            in about that fraction of their records, wherever their schema versions: \
            `generate a.sqlite --keys 1000000 --schema 1` and `generate b.sqlite --keys 1000000 \
            --change 0.01 --schema 2` differ in 1% of their keys.
            """)

    @Argument(help: "The database file to create (must not exist).") var database: String
    @Option(help: "Records to write.") var keys: Int = 10_000
    @Option(help: "Fraction of records whose value differs from the base, 0...1.") var change: Double = 0
    @Option(help: "Schema version of the store (the inventory schema: 1...3).") var schema: Int = 1
    @Option(help: "Which records change (same seed, same changed records).") var seed: UInt64 = 1

    func validate() throws {
        try require("--keys", keys, in: 0...100_000_000)
        try require("--change", change, in: 0...1)
        try require("--schema", schema, in: 1...Schema.inventory.latest)
    }

    func run() throws {
        guard !FileManager.default.fileExists(atPath: database) else {
            throw CommandFailure("\(database) exists; generate writes a new store")
        }
        let store = try openKeyStore(database, create: true, version: schema, durable: false)
        let generator = GeneratedRecords(seed: seed, change: change)
        var index = 0
        while index < keys {
            let end = min(keys, index + 10_000)
            do {
                try store.apply((index..<end).map { .put(generator.record($0)) })
            } catch {
                throw CommandFailure("\(error)")
            }
            index = end
            drawProgress(index, keys, of: "records")
        }
        try? store.close()
        print("\(database): \(keys) records at schema version \(schema)")
    }
}

/// `ftctl keysync diff`.
struct KeySyncDiff: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "diff",
        abstract: "Count the records two stores differ in, and name their keys, from their sketches.",
        discussion: """
            Decodes the difference from the two stores' sketches (no scan) when it fits in them, \
            otherwise compares the stores in key order. A key whose records differ counts once \
            under "differ"; keys one store alone holds are listed under it.
            """)

    @Argument(help: "The first store (the active).") var first: String
    @Argument(help: "The second store (the backup).") var second: String
    @Option(help: "List at most this many keys of each kind.") var limit = 20
    @Flag(help: "Print the difference as JSON.") var json = false

    struct Difference: Codable {
        var method: String
        var onlyInFirst: Int
        var onlyInSecond: Int
        var differ: Int
        var keysOnlyInFirst: [String]
        var keysOnlyInSecond: [String]
        var keysThatDiffer: [String]
    }

    func validate() throws { try require("--limit", limit, in: 0...1_000_000) }

    func run() throws {
        let a = try openKeyStore(first)
        let b = try openKeyStore(second)
        let difference: Difference
        do {
            difference = try Self.difference(a, b, limit: limit)
        } catch {
            throw CommandFailure("\(error)")
        }
        if json {
            try printJSON(difference)
        } else {
            print("\(first) vs \(second) (\(difference.method)):")
            print("  only in \(first): \(difference.onlyInFirst)  \(difference.keysOnlyInFirst.joined(separator: " "))")
            print(
                "  only in \(second): \(difference.onlyInSecond)  \(difference.keysOnlyInSecond.joined(separator: " "))"
            )
            print("  differ: \(difference.differ)  \(difference.keysThatDiffer.joined(separator: " "))")
        }
    }

    static func difference(_ a: SQLiteNameKeyStore, _ b: SQLiteNameKeyStore, limit: Int) throws(KeySyncError)
        -> Difference
    {
        var aKeys: [String: NameKeyRecord] = [:]
        var bKeys: [String: NameKeyRecord] = [:]
        let capacity = min(a.sketchCapacity, b.sketchCapacity)
        var decoder = SketchDecoder()
        var method = "sketch"
        while !decoder.isComplete && !decoder.inconsistent && decoder.received < capacity {
            let range = decoder.received..<min(capacity, max(64, decoder.received * 2))
            decoder.add(remote: try a.symbols(range), local: try b.symbols(range))
        }
        let version = max(a.version, b.version)
        if decoder.isComplete {
            for record in try a.records(withFingerprints: decoder.remoteOnly).values {
                let migrated = try a.schema.migrate(record, to: version)
                aKeys[migrated.key] = migrated
            }
            for record in try b.records(withFingerprints: decoder.localOnly).values {
                let migrated = try b.schema.migrate(record, to: version)
                bKeys[migrated.key] = migrated
            }
        } else {
            method = "scan"
            var all: [String: NameKeyRecord] = [:]
            var cursor: String?
            repeat {
                let batch = try a.records(after: cursor, limit: 10_000)
                for record in batch { all[try a.schema.migrate(record, to: version).key] = record }
                cursor = batch.count == 10_000 ? batch.last?.key : nil
            } while cursor != nil
            repeat {
                let batch = try b.records(after: cursor, limit: 10_000)
                for record in batch {
                    let migrated = try b.schema.migrate(record, to: version)
                    if let other = all.removeValue(forKey: migrated.key) {
                        if try a.schema.fingerprint(of: other) != b.schema.fingerprint(of: record) {
                            aKeys[migrated.key] = other
                            bKeys[migrated.key] = migrated
                        }
                    } else {
                        bKeys[migrated.key] = migrated
                    }
                }
                cursor = batch.count == 10_000 ? batch.last?.key : nil
            } while cursor != nil
            aKeys.merge(all) { first, _ in first }
        }
        let both = Set(aKeys.keys).intersection(bKeys.keys)
        let onlyA = aKeys.keys.filter { !both.contains($0) }.sorted()
        let onlyB = bKeys.keys.filter { !both.contains($0) }.sorted()
        return Difference(
            method: method, onlyInFirst: onlyA.count, onlyInSecond: onlyB.count, differ: both.count,
            keysOnlyInFirst: Array(onlyA.prefix(limit)), keysOnlyInSecond: Array(onlyB.prefix(limit)),
            keysThatDiffer: Array(both.sorted().prefix(limit)))
    }
}

/// `ftctl keysync migrate`.
struct KeySyncMigrate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Migrate a store to a newer schema version in place (crash-safe, resumable).")

    @Argument(help: "The store.") var database: String
    @Option(help: "The version to migrate to.") var to: Int
    @Option(help: "Records per transaction.") var batch = 5000

    func validate() throws {
        try require("--to", to, in: 1...Schema.inventory.latest)
        try require("--batch", batch, in: 1...1_000_000)
    }

    func run() throws {
        let store = try openKeyStore(database)
        let from = store.version
        do {
            try store.migrate(to: to, batchSize: batch) { done, total in drawProgress(done, total, of: "records") }
        } catch {
            throw CommandFailure("\(error)")
        }
        print("\(database): version \(from) -> \(to), \(store.count) records")
    }
}

/// `ftctl keysync serve`.
struct KeySyncServe: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Answer backups' sync requests from a store over TCP until SIGINT or SIGTERM.")

    @Argument(help: "The store (the active).") var database: String
    @Option(help: "Where to listen, HOST:PORT (port 0: any; the port is printed).") var listen: HostPort

    func run() async throws {
        var logger = Logger(label: "ftctl.keysync.serve")
        logger.logLevel = .warning
        let store = try openKeyStore(database)
        let transport = try await TCPTransport.start(
            configuration: .init(localNode: "active", bindAddress: listen.address), logger: logger)
        // Backups name where they listen in their hello; this demo tool trusts them to.
        let server = KeySyncServer(store: store, transport: transport, logger: logger) { node, address in
            if let parsed = HostPort(argument: address) { transport.setPeer(node, address: parsed.address) }
        }
        print(
            "listening on port \(transport.localAddress.port ?? 0): \(store.count) records at version \(store.version)")
        fflush(nil)
        let group = ServiceGroup(
            configuration: .init(
                services: [.init(service: server)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        try await group.run()
        let statistics = server.statistics
        print(
            "served \(statistics.requests) requests (\(statistics.refused) refused), sent \(statistics.bytesSent) bytes, received \(statistics.bytesReceived)"
        )
        await transport.close()
    }
}

/// `ftctl keysync sync`.
struct KeySyncSync: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sync",
        abstract: "Sync a store (the backup) from an active serving over TCP, printing bytes and round trips.")

    @Argument(help: "The store to bring in line (the backup).") var database: String
    @Option(help: "The active's HOST:PORT.") var from: HostPort
    @Option(
        help:
            "Where this side listens for the active's answers, HOST:PORT (named to the active in the hello; default 127.0.0.1:0)."
    )
    var listen: HostPort?
    @Option(help: "reconcile (sketch, then streaming) or seed (the key-list protocol).") var `protocol` = SyncProtocol
        .reconcile
    @Flag(help: "Last writer wins (by record stamp) instead of the active.") var lastWriterWins = false
    @Option(help: "Keys only the backup holds: keep, delete or report.") var backupOnly = BackupOnlyPolicy.keep
    @Option(help: "Seconds before a request is sent again.") var timeout: Double = 10
    @Flag(help: "Print the result as JSON.") var json = false

    func validate() throws { try require("--timeout", timeout, in: 0.01...3600) }

    func run() async throws {
        var logger = Logger(label: "ftctl.keysync.sync")
        logger.logLevel = .warning
        let store = try openKeyStore(database)
        let transport = try await TCPTransport.start(
            configuration: .init(
                localNode: "backup", bindAddress: try listen?.address ?? SocketAddress(ipAddress: "127.0.0.1", port: 0),
                peers: ["active": from.address]),
            logger: logger)
        let client = KeySyncClient(
            store: store, transport: transport, replyTimeout: .milliseconds(Int64(timeout * 1000)), logger: logger,
            replyAddress:
                "\(listen?.description.split(separator: ":")[0] ?? "127.0.0.1"):\(transport.localAddress.port ?? 0)")
        let started = ContinuousClock.now
        let showProgress = !json
        let result: SyncResult
        do {
            result = try await client.sync(
                with: "active",
                options: .init(
                    syncProtocol: self.protocol, conflictRule: lastWriterWins ? .lastWriterWins : .activeWins,
                    backupOnly: backupOnly)
            ) { progress in
                if showProgress {
                    FileHandle.standardError.write(
                        "\r  \(progress.roundTrips) round trips, \(progress.bytesReceived) bytes in, \(progress.written) written   "
                            .data(using: .utf8) ?? Data())
                }
            }
        } catch {
            client.close()
            await transport.close()
            throw CommandFailure("\(error)")
        }
        if showProgress { FileHandle.standardError.write("\n".data(using: .utf8) ?? Data()) }
        client.close()
        await transport.close()
        let elapsed = secondsValue(ContinuousClock.now - started)
        if json {
            try printJSON(result)
        } else {
            print(
                """
                synced \(database) from \(from) (\(result.mode), \(result.passes) passes) in \(String(format: "%.2f", elapsed)) s
                  bytes sent \(result.bytesSent), received \(result.bytesReceived), round trips \(result.roundTrips) (\(result.retries) retries)
                  symbols \(result.symbolsReceived), differences \(result.differences), written \(result.written), \
                deleted \(result.deleted), kept on the backup \(result.keptBackup), only on the backup \(result.backupOnly)
                """)
            if !result.reportedKeys.isEmpty {
                print("  only on the backup: \(result.reportedKeys.joined(separator: " "))")
            }
        }
    }
}
