import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import Logging
import NIOCore
import NameKeySync

/// The name-key sync scene: two SQLite stores of different schema versions, `keys` records,
/// 1% changed; the backup synced from the active over loopback TCP by the seed's key-list
/// protocol and by ours, the bytes and round trips of each shown, and the stores compared.
struct KeySyncScene {
    var keys = 1_000_000

    func run() async throws {
        print("== Name-key sync: \(keys) keys, schema version 1 (active) vs 2 (backup), 1% changed")
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("ftctl-keysync-\(getpid())")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let activePath = directory.appendingPathComponent("active.sqlite").path
        let backupPaths = ["seed", "ours"].map { directory.appendingPathComponent("backup-\($0).sqlite").path }
        let start = ContinuousClock.now
        let active = try SQLiteNameKeyStore(path: activePath, schema: .inventory, create: true, durable: false)
        try fill(active, generator: GeneratedRecords(seed: 1, change: 0))
        for path in backupPaths {
            let backup = try SQLiteNameKeyStore(
                path: path, schema: .inventory, create: true, version: 2, durable: false)
            try fill(backup, generator: GeneratedRecords(seed: 2, change: 0.01))
            try backup.close()
        }
        print(
            String(
                format: "  stores written in %.1f s (%d records each)", secondsValue(ContinuousClock.now - start), keys)
        )
        let quiet = Logger(label: "ftctl.keysync.demo", factory: { _ in SwiftLogNoOpLogHandler() })
        let any = try SocketAddress(ipAddress: "127.0.0.1", port: 0)
        let activeTransport = try await TCPTransport.start(
            configuration: .init(localNode: "active", bindAddress: any), logger: quiet)
        let server = KeySyncServer(store: active, transport: activeTransport, logger: quiet)
        let serving = Task { try await server.run() }
        var results: [SyncResult] = []
        for (path, syncProtocol) in zip(backupPaths, [SyncProtocol.seed, .reconcile]) {
            let backup = try SQLiteNameKeyStore(path: path, schema: .inventory, durable: false)
            let transport = try await TCPTransport.start(
                configuration: .init(
                    localNode: "backup", bindAddress: any, peers: ["active": activeTransport.localAddress]),
                logger: quiet)
            activeTransport.setPeer("backup", address: transport.localAddress)
            let client = KeySyncClient(store: backup, transport: transport, replyTimeout: .seconds(60), logger: quiet)
            let began = ContinuousClock.now
            let result = try await client.sync(with: "active", options: .init(syncProtocol: syncProtocol))
            let elapsed = secondsValue(ContinuousClock.now - began)
            client.close()
            await transport.close()
            results.append(result)
            print(
                String(
                    format: "  %@: %d bytes, %d round trips, %d records written, %.2f s (%@)",
                    syncProtocol == .seed ? "seed's key list" : "ours           ",
                    result.bytesSent + result.bytesReceived, result.roundTrips, result.written, elapsed,
                    "\(result.mode)"))
            if syncProtocol == .reconcile {
                let agree = try backup.describe().digest == active.describe().digest
                print("  backup \(agree ? "equals" : "DIFFERS FROM") the active (digests of every record at version 3)")
                guard agree else { throw CommandFailure("the stores differ after the sync") }
            }
            try backup.close()
        }
        serving.cancel()
        await activeTransport.close()
        try active.close()
        let seedBytes = results[0].bytesSent + results[0].bytesReceived
        let ourBytes = results[1].bytesSent + results[1].bytesReceived
        print(String(format: "  ours moved 1/%.0f of the seed's bytes", Double(seedBytes) / Double(max(1, ourBytes))))
    }

    private func fill(_ store: SQLiteNameKeyStore, generator: GeneratedRecords) throws {
        for start in stride(from: 0, to: keys, by: 20_000) {
            try store.apply((start..<min(keys, start + 20_000)).map { .put(generator.record($0)) })
        }
    }
}
