import DeterministicSimulation
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import Logging
import MetricsTestKit
import NIOCore
import NIOPosix
import Testing

@testable import NameKeySync
@testable import NameKeySyncSimulation

@Suite("Name-key sync in simulation: the shipped client and server under faults")
struct KeySyncSimulationTests {
    // CI runs 10,000 seeds in release; here a few, beside the real-time suites.
    @Test func sixtySeedsKeepEveryInvariant() async {
        let scenario = KeySyncScenario()
        for seed in UInt64(1)...60 {
            let report = await scenario.run(seed: seed)
            #expect(report.violation == nil, "seed \(seed): \(report.violation.map { "\($0)" } ?? "")")
        }
    }

    @Test func aSeedReplaysExactly() async {
        let scenario = KeySyncScenario()
        let first = await scenario.run(seed: 77)
        let second = await scenario.run(seed: 77)
        #expect(first.traceHash == second.traceHash)
        #expect(first.operations == second.operations)
    }

    @Test(arguments: KeySyncSession.Bug.allCases)
    func everyPlantedBugIsCaught(_ bug: KeySyncSession.Bug) async {
        let scenario = KeySyncScenario(bug: bug)
        var caught = false
        for seed in UInt64(1)...40 where !caught { caught = await scenario.run(seed: seed).violation != nil }
        #expect(caught, "\(bug.rawValue) was never caught in 40 seeds")
    }
}

/// Two SQLite stores on TCP loopback: an active serving, a backup syncing.
struct LoopbackPair {
    let directory: URL
    let active: SQLiteNameKeyStore
    let backup: SQLiteNameKeyStore
    let activeTransport: TCPTransport
    let backupTransport: TCPTransport
    let server: KeySyncServer
    let serverTask: Task<Void, any Error>

    static let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })

    init(records: Int, changed: Int, backupVersion: Int = 2) async throws {
        directory = try temporaryDirectory()
        active = try SQLiteNameKeyStore(
            path: directory.appendingPathComponent("active.sqlite").path, schema: .inventory, create: true,
            sketchCapacity: 4096, durable: false)
        backup = try SQLiteNameKeyStore(
            path: directory.appendingPathComponent("backup.sqlite").path, schema: .inventory, create: true,
            version: backupVersion, sketchCapacity: 4096, durable: false)
        try active.apply((0..<records).map { .put(sampleRecord($0)) })
        try backup.apply((0..<records).map { .put(sampleRecord($0, value: $0 < changed ? "old" : "v")) })
        let any = try SocketAddress(ipAddress: "127.0.0.1", port: 0)
        activeTransport = try await TCPTransport.start(configuration: .init(localNode: "active", bindAddress: any))
        backupTransport = try await TCPTransport.start(
            configuration: .init(localNode: "backup", bindAddress: any, peers: ["active": activeTransport.localAddress])
        )
        let transport = activeTransport
        server = KeySyncServer(store: active, transport: activeTransport, logger: Self.quiet) { node, address in
            let parts = address.split(separator: ":")
            if parts.count == 2, let port = Int(parts[1]),
                let socket = try? SocketAddress(ipAddress: String(parts[0]), port: port)
            {
                transport.setPeer(node, address: socket)
            }
        }
        let server = self.server
        serverTask = Task { try await server.run() }
    }

    /// The reply timeout is long: on a starved 2-core run a 5 s timeout resent requests, and the
    /// round-trip counts below subtract resends in any case (they count the protocol's requests).
    func client(metrics: TestMetrics? = nil) -> KeySyncClient {
        KeySyncClient(
            store: backup, transport: backupTransport, replyTimeout: .seconds(30), logger: Self.quiet,
            replyAddress: "127.0.0.1:\(backupTransport.localAddress.port ?? 0)", metricsFactory: metrics)
    }

    func close() async {
        serverTask.cancel()
        await activeTransport.close()
        await backupTransport.close()
        try? FileManager.default.removeItem(at: directory)
    }
}

@Suite("Name-key sync over TCP between SQLite stores")
struct KeySyncOverTCPTests {
    @Test func aSyncMovesOnlyTheDifferenceAndLeavesTheBackupEqualToTheActive() async throws {
        let pair = try await LoopbackPair(records: 3000, changed: 30)
        let client = pair.client()
        let result = try await client.sync(with: "active")
        #expect(result.mode == .sketch)
        #expect(result.written == 30)
        #expect(result.differences == 60)
        // The records are at the backup's version, with the active's values.
        for index in [0, 29, 30, 2999] {
            let record = try #require(try pair.backup.record(forKey: String(format: "key%05d", index)))
            #expect(record.version == 2)
            #expect(record.fields["name"] == "v")
            #expect(record.fields["quantity"] == "\(index)")
        }
        #expect(try pair.backup.describe().digest == pair.active.describe().digest)
        // The changes were verified against the welcome's digest, without another pass, and
        // the backup remembers the active's generation it reached.
        #expect(result.verifiedLocally)
        #expect(result.passes == 1)
        // The hello's symbols let the active size its welcome to the difference: the hello
        // and the records are the only round trips.
        #expect(
            result.roundTrips - result.retries == 2,
            "\(result.roundTrips) round trips (\(result.retries) resent), \(result.symbolsReceived) symbols")
        #expect(result.symbolsReceived < 60 * 3)
        let mark = try #require(try pair.backup.lastSync(with: "active"))
        #expect(mark.peerGeneration == pair.active.generation)
        #expect(mark.generation == pair.backup.generation)
        // A second sync (the same client: it reads the transport until closed) finds nothing
        // to do in one round trip.
        let second = try await client.sync(with: "active")
        client.close()
        #expect(second.mode == .unchanged)
        #expect(second.roundTrips - second.retries == 1)
        await pair.close()
    }

    @Test func theSeedsProtocolWritesEverySharedRecordAndSendsEveryKey() async throws {
        let pair = try await LoopbackPair(records: 2000, changed: 20)
        let reconcile = try await LoopbackPair(records: 2000, changed: 20)
        let seedClient = pair.client()
        let seed = try await seedClient.sync(with: "active", options: .init(syncProtocol: .seed))
        seedClient.close()
        let ourClient = reconcile.client()
        let ours = try await ourClient.sync(with: "active")
        ourClient.close()
        #expect(seed.written == 2000)
        #expect(ours.written == 20)
        #expect(try pair.backup.records(after: nil, limit: 5000) == reconcile.backup.records(after: nil, limit: 5000))
        #expect(ours.bytesReceived + ours.bytesSent < (seed.bytesReceived + seed.bytesSent) / 10)
        await pair.close()
        await reconcile.close()
    }

    @Test func aSyncIsCountedInMetricsInTheEcosystemsStyle() async throws {
        let pair = try await LoopbackPair(records: 200, changed: 7)
        let metrics = TestMetrics()
        let client = pair.client(metrics: metrics)
        let result = try await client.sync(with: "active")
        client.close()
        #expect(try metrics.expectCounter("ft_keysync_syncs_total", [("outcome", "completed")]).totalValue == 1)
        #expect(try metrics.expectCounter("ft_keysync_records_written_total").totalValue == 7)
        // 14 differences: the welcome's symbols decode them, so the hello and the records are
        // the only round trips, and the changes are verified without a third.
        #expect(result.differences == 14)
        #expect(result.roundTrips - result.retries == 2, "\(result.retries) resent")
        #expect(result.verifiedLocally)
        #expect(
            try metrics.expectCounter("ft_keysync_bytes_total", [("direction", "received")]).totalValue
                == Int64(result.bytesReceived))
        await pair.close()
    }

    @Test func backupOnlyKeysFollowThePolicy() async throws {
        for policy in BackupOnlyPolicy.allCases {
            let pair = try await LoopbackPair(records: 500, changed: 0)
            try pair.backup.apply([.put(NameKeyRecord(key: "mine", version: 2, fields: ["name": "b"]))])
            let client = pair.client()
            let result = try await client.sync(with: "active", options: .init(backupOnly: policy))
            client.close()
            #expect(result.backupOnly == 1)
            #expect((try pair.backup.record(forKey: "mine") == nil) == (policy == .delete))
            #expect(result.reportedKeys == (policy == .report ? ["mine"] : []))
            await pair.close()
        }
    }

    @Test func anActiveAtANewerVersionIsRefusedWithTheRemedy() async throws {
        let pair = try await LoopbackPair(records: 10, changed: 0, backupVersion: 1)
        try pair.active.migrate(to: 3)
        let client = pair.client()
        await #expect {
            _ = try await client.sync(with: "active")
        } throws: { error in
            (error as? KeySyncError)?.code == .schema && "\(error)".contains("migrate the backup first")
        }
        client.close()
        #expect(try pair.backup.record(forKey: "key00001")?.version == 1)
        await pair.close()
    }
}

@Suite("The sync session as a pure state machine")
struct KeySyncSessionTests {
    @Test func aMalformedReplyEndsTheSessionBeforeAnythingIsApplied() {
        var session = KeySyncSession(schema: .inventory, requestBase: 100)
        _ = session.start()
        let description = KeySyncMessage.StoreDescription(
            storeVersion: 1, fingerprintVersion: 3, sketchCapacity: 64, count: 0, digest: .zero)
        let hello = session.localDescription(description)
        guard case .send(let message)? = hello.first else {
            Issue.record("no hello: \(hello)")
            return
        }
        // A reply of the wrong kind for the hello.
        let actions = session.received(.symbols(request: message.request, first: 0, symbols: [.zero]))
        guard case .fail(let error)? = actions.first else {
            Issue.record("not failed: \(actions)")
            return
        }
        #expect(error.code == .malformedMessage)
        #expect(actions.allSatisfy { if case .apply = $0 { false } else { true } })
    }

    @Test func optionsOutsideTheProtocolsLimitsAreRefusedBeforeAnythingIsSent() {
        for options in [
            KeySyncSession.Options(batch: 0), KeySyncSession.Options(batch: 1 << 20),
            KeySyncSession.Options(firstSymbols: 0), KeySyncSession.Options(maximumAttempts: 0),
        ] {
            var session = KeySyncSession(schema: .inventory, options: options, requestBase: 1)
            guard case .fail(let error)? = session.start().first else {
                Issue.record("accepted")
                continue
            }
            #expect(error.code == .invalidArgument)
        }
    }

    @Test func repliesToOtherRequestsAreIgnoredAndTimeoutsResendUntilTheLimit() {
        var session = KeySyncSession(schema: .inventory, options: .init(maximumAttempts: 3), requestBase: 7)
        _ = session.start()
        let description = KeySyncMessage.StoreDescription(
            storeVersion: 1, fingerprintVersion: 3, sketchCapacity: 64, count: 0, digest: .zero)
        _ = session.localDescription(description)
        #expect(session.received(.welcome(request: 999, description)).isEmpty)
        #expect(session.timedOut().count == 1)
        #expect(session.timedOut().count == 1)
        guard case .fail(let error)? = session.timedOut().first else {
            Issue.record("no failure after three attempts")
            return
        }
        #expect(error.code == .transport)
    }
}
