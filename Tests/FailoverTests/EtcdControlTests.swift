import DeterministicSimulation
import Failover
import FaultToleranceCore
import FaultToleranceEtcd
import Logging
import NIOConcurrencyHelpers
import Testing

/// etcd as the control plane: the shipped servers, each with its ``EtcdControlPlane``, over a
/// ``MemoryEtcd`` whose leases run out in virtual time.
@Suite struct EtcdControlTests {
    /// Forwards to a shared store unless cut (one server's link to etcd).
    struct CuttableEtcd: EtcdClient {
        let base: MemoryEtcd
        let cut = NIOLockedValueBox(false)
        private func check() throws(EtcdError) {
            if cut.withLockedValue({ $0 }) { throw EtcdError(.unavailable, detail: "cut") }
        }
        func grant(ttl: Duration) throws(EtcdError) -> EtcdLease {
            try check()
            return try base.grant(ttl: ttl)
        }
        func keepAlive(_ lease: Int64) throws(EtcdError) -> Duration? {
            try check()
            return try base.keepAlive(lease)
        }
        func revoke(_ lease: Int64) throws(EtcdError) {
            try check()
            try base.revoke(lease)
        }
        func range(prefix: [UInt8]) throws(EtcdError) -> (revision: Int64, keys: [EtcdKeyValue]) {
            try check()
            return try base.range(prefix: prefix)
        }
        func transaction(compare: [EtcdCompare], success: [EtcdWrite], failure: [EtcdWrite]) throws(EtcdError) -> (
            succeeded: Bool, revision: Int64
        ) {
            try check()
            return try base.transaction(compare: compare, success: success, failure: failure)
        }
        func watch(prefix: [UInt8], from start: Int64) -> AsyncThrowingStream<[EtcdEvent], any Error> {
            base.watch(prefix: prefix, from: start)
        }
    }

    final class Pair: @unchecked Sendable {
        let world: AsyncSimulation
        let etcd: MemoryEtcd
        let servers: [NodeID]
        let configuration: EtcdControlConfiguration
        let minimumSyncBackups: Int
        var links: [NodeID: CuttableEtcd] = [:]
        var runtimes: [NodeID: FailoverServer] = [:]
        var tasks: [NodeID: Task<Void, any Error>] = [:]
        let bound = NIOLockedValueBox<[(NodeID, ServiceConfiguration)]>([])
        /// Set when two servers serve at the same virtual instant.
        var twoServed: String?

        /// Two servers where a primary left alone goes on, or three where it waits for a backup.
        init(seed: UInt64, servers: [NodeID] = ["a", "b"], minimumSyncBackups: Int = 0) {
            self.servers = servers
            self.minimumSyncBackups = minimumSyncBackups
            configuration = EtcdControlConfiguration(
                cluster: "test", ttl: .seconds(1), minimumSyncBackups: minimumSyncBackups)
            world = AsyncSimulation(seed: seed)
            etcd = MemoryEtcd(clock: world.clock)
            for server in servers { links[server] = CuttableEtcd(base: etcd) }
        }

        func start(_ server: NodeID, incarnation: UInt64, journal: (any ReplicaJournal)? = nil) {
            world.network.restart(server)
            let quiet = Logger(label: "test", factory: { _ in SwiftLogNoOpLogHandler() })
            let service = ServiceConfiguration(role: .backup, epoch: 0, host: "127.0.0.1", port: 7400)
            let control = EtcdControlPlane(
                node: server, etcd: links[server] ?? CuttableEtcd(base: etcd), configuration: configuration,
                service: service, clock: world.clock, logger: quiet)
            let bound = self.bound
            let runtime = FailoverServer(
                node: server, controller: "etcd", servers: servers, configuration: service,
                transport: world.network.transport(for: server), clock: world.clock,
                settings: ServerCore.Settings(
                    minimumSyncBackups: minimumSyncBackups, reportInterval: .milliseconds(10)),
                incarnation: incarnation, logger: quiet,
                bind: { configuration in bound.withLockedValue { $0.append((server, configuration)) } },
                controlPlane: control, journal: journal)
            runtime.afterEvent = { [unowned self] in
                let now = world.clock.now
                let serving = runtimes.filter { $0.value.unsafeServes(now: now) }.map(\.key.name).sorted()
                if serving.count > 1, twoServed == nil { twoServed = "\(serving) at \(now)" }
            }
            runtimes[server] = runtime
            tasks[server] = world.spawn { try await runtime.run() }
        }

        func crash(_ server: NodeID) {
            tasks.removeValue(forKey: server)?.cancel()
            runtimes[server] = nil
            world.network.crash(server)
        }

        func stopAll() {
            for server in servers { crash(server) }
        }
    }

    static func key(_ index: Int) -> StoreKey { StoreKey("k\(index)") ?? "k" }

    @Test(
        "the primary's crash: the backup in the sync record takes the leader key, serves the same address, loses nothing"
    )
    func primaryCrashFailsOverThroughEtcd() async throws {
        let pair = Pair(seed: 1)
        let outcome = try await pair.world.run(timeLimit: .seconds(60)) {
            () async throws -> (NodeID, NodeID, UInt64, UInt64, [Int], NodeID?) in
            for (index, server) in pair.servers.enumerated() { pair.start(server, incarnation: UInt64(index + 1)) }
            let client = FailoverClient(
                id: 1, transport: pair.world.network.transport(for: "client"), servers: pair.servers,
                clock: pair.world.clock, timeout: .milliseconds(50), deadline: .seconds(20))
            for index in 1...40 { _ = try await client.execute(.put(key: Self.key(index), value: [1])) }
            let first = try #require(await client.primary)
            let firstEpoch = await client.epoch
            // The backup must be in the sync record before the crash, or nobody may take over.
            try await pair.world.clock.sleep(for: .milliseconds(600))
            pair.crash(first)
            for index in 41...80 { _ = try await client.execute(.put(key: Self.key(index), value: [1])) }
            let second = try #require(await client.primary)
            let secondEpoch = await client.epoch
            let runtime = try #require(pair.runtimes[second])
            let missing = await runtime.inspect { core in (1...80).filter { core.store[Self.key($0)] == nil } }
            let view = try await EtcdPairView.read(from: pair.etcd, pair.configuration)
            await client.close()
            pair.stopAll()
            return (first, second, firstEpoch, secondEpoch, missing, view.leader?.node)
        }
        let (first, second, firstEpoch, secondEpoch, missing, leader) = outcome
        #expect(first != second)
        #expect(secondEpoch > firstEpoch)
        #expect(missing.isEmpty)
        #expect(leader == second)
        #expect(pair.twoServed == nil)
        let adopted = try #require(pair.bound.withLockedValue { $0 }.last { $0.0 == second }?.1)
        #expect(adopted.port == 7400 && adopted.epoch == secondEpoch)
    }

    /// Which disks come back after a whole pair's power loss.
    enum DisksBack: String, CaseIterable, Sendable {
        case every, primaryOnly, none
    }

    /// Every server of a journaled pair loses power at once and comes back as a new run. On its
    /// disk, a server of the sync record is named there by its journal and takes the key again,
    /// holding everything acknowledged; so does the last primary when its backup's disk was
    /// replaced (it is named by the primary record). With every disk replaced nobody may (the
    /// acknowledged writes are nowhere), and nobody serves.
    @Test(
        "a whole pair's power loss: back on their journals a server takes the key again and nothing is lost",
        arguments: DisksBack.allCases)
    func wholePairPowerLossThroughEtcd(disks: DisksBack) async throws {
        let pair = Pair(seed: 3)
        let journals: [NodeID: MemoryReplicaJournal] = [
            "a": MemoryReplicaJournal(identity: 11), "b": MemoryReplicaJournal(identity: 12),
        ]
        let outcome = try await pair.world.run(timeLimit: .seconds(90)) {
            () async throws -> (first: UInt64, second: UInt64?, missing: [Int], served: Bool) in
            for (index, server) in pair.servers.enumerated() {
                pair.start(server, incarnation: UInt64(index + 1), journal: journals[server])
            }
            let client = FailoverClient(
                id: 1, transport: pair.world.network.transport(for: "client"), servers: pair.servers,
                clock: pair.world.clock, timeout: .milliseconds(50), deadline: .seconds(5))
            for index in 1...40 { _ = try await client.execute(.put(key: Self.key(index), value: [1])) }
            let firstEpoch = await client.epoch
            let primary = try #require(await client.primary)
            // The backup in the sync record, then every server down past every lease.
            try await pair.world.clock.sleep(for: .milliseconds(600))
            pair.stopAll()
            try await pair.world.clock.sleep(for: .seconds(2))
            for (index, server) in pair.servers.enumerated() {
                let kept =
                    switch disks {
                    case .every: true
                    case .primaryOnly: server == primary
                    case .none: false
                    }
                let journal = kept ? journals[server] : MemoryReplicaJournal(identity: UInt64(20 + index))
                pair.start(server, incarnation: UInt64(index + 3), journal: journal)
            }
            var missing: [Int] = []
            var secondEpoch: UInt64?
            do {
                for index in 41...60 { _ = try await client.execute(.put(key: Self.key(index), value: [1])) }
                secondEpoch = await client.epoch
                let serving = try #require(await client.primary)
                let runtime = try #require(pair.runtimes[serving])
                missing = await runtime.inspect { core in (1...60).filter { core.store[Self.key($0)] == nil } }
            } catch {
                // Nobody may serve: the client's deadline passes.
            }
            let now = pair.world.clock.now
            let served = pair.runtimes.values.contains { $0.unsafeServes(now: now) }
            await client.close()
            pair.stopAll()
            return (firstEpoch, secondEpoch, missing, served)
        }
        if disks == .none {
            #expect(outcome.second == nil)
            #expect(!outcome.served)
        } else {
            let second = try #require(outcome.second, "nobody took the leader key after the power loss")
            #expect(second > outcome.first)
            #expect(outcome.missing.isEmpty, "lost \(outcome.missing)")
        }
        #expect(pair.twoServed == nil)
    }

    @Test("a primary cut off from etcd stops serving by itself before the backup takes the key")
    func primaryCutFromEtcdStopsFirst() async throws {
        let pair = Pair(seed: 2)
        let outcome = try await pair.world.run(timeLimit: .seconds(60)) {
            () async throws -> (NodeID, NodeID, Bool) in
            for (index, server) in pair.servers.enumerated() { pair.start(server, incarnation: UInt64(index + 1)) }
            let client = FailoverClient(
                id: 1, transport: pair.world.network.transport(for: "client"), servers: pair.servers,
                clock: pair.world.clock, timeout: .milliseconds(50), deadline: .seconds(20))
            for index in 1...20 { _ = try await client.execute(.put(key: Self.key(index), value: [1])) }
            let first = try #require(await client.primary)
            try await pair.world.clock.sleep(for: .milliseconds(600))
            pair.links[first]?.cut.withLockedValue { $0 = true }
            // Past the lease etcd granted (1 s): the primary stopped by itself, the backup took the key.
            try await pair.world.clock.sleep(for: .seconds(3))
            for index in 21...40 { _ = try await client.execute(.put(key: Self.key(index), value: [1])) }
            let second = try #require(await client.primary)
            let firstServes = try #require(pair.runtimes[first]).unsafeServes(now: pair.world.clock.now)
            await client.close()
            pair.stopAll()
            return (first, second, firstServes)
        }
        #expect(outcome.0 != outcome.1)
        #expect(!outcome.2)
        #expect(pair.twoServed == nil)
    }

    @Test("a planned switchover through etcd: the primary stops, gives up the key, the target takes it; nothing lost")
    func plannedSwitchoverThroughEtcd() async throws {
        let pair = Pair(seed: 4, servers: ["a", "b", "c"], minimumSyncBackups: 1)
        let outcome = try await pair.world.run(timeLimit: .seconds(60)) {
            () async throws -> (NodeID, NodeID, NodeID, Duration, [Int], String?) in
            for (index, server) in pair.servers.enumerated() { pair.start(server, incarnation: UInt64(index + 1)) }
            let client = FailoverClient(
                id: 1, transport: pair.world.network.transport(for: "client"), servers: pair.servers,
                clock: pair.world.clock, timeout: .milliseconds(50), deadline: .seconds(20))
            for index in 1...20 { _ = try await client.execute(.put(key: Self.key(index), value: [1])) }
            let first = try #require(await client.primary)
            try await pair.world.clock.sleep(for: .milliseconds(600))
            // Refused: a target that is not a backup of the sync record.
            var refusal: String?
            do {
                _ = try await EtcdControlPlane.requestSwitchover(
                    etcd: pair.etcd, configuration: pair.configuration, to: first)
            } catch {
                refusal = "\(error)"
            }
            let asked = pair.world.clock.now
            let (from, _, target) = try await EtcdControlPlane.requestSwitchover(
                etcd: pair.etcd, configuration: pair.configuration, to: nil)
            var index = 21
            while await client.primary != target || index <= 40 {
                _ = try await client.execute(.put(key: Self.key(index), value: [1]))
                index += 1
            }
            let took = pair.world.clock.now - asked
            let runtime = try #require(pair.runtimes[target])
            let written = index
            let missing = await runtime.inspect { core in (1..<written).filter { core.store[Self.key($0)] == nil } }
            await client.close()
            pair.stopAll()
            return (first, from, target, took, missing, refusal)
        }
        let (first, from, target, took, missing, refusal) = outcome
        #expect(from == first && target != first)
        #expect(missing.isEmpty)
        #expect(pair.twoServed == nil)
        #expect(refusal?.contains("switchoverRefused") == true, "\(refusal ?? "accepted")")
        // Well inside one lease: the key is handed over, not left to run out.
        #expect(took < .milliseconds(900), "\(took)")
    }

    @Test("records round-trip; damaged, truncated or foreign bytes are a malformed error")
    func recordsRoundTripAndRefuseDamage() throws {
        let records: [FailoverEtcdRecord] = [
            .leader(node: "a", incarnation: 7, host: "127.0.0.1", port: 7400),
            .sync([.init(node: "b", incarnation: 9), .init(node: "c", incarnation: 1)]),
            .primary(.init(node: "a", incarnation: 7)),
            .member(
                node: "b",
                report: .init(
                    role: .backup, epoch: 12, position: LogPosition(epoch: 12, index: 40), syncSet: [], stamp: 5,
                    incarnation: 9)),
        ]
        for record in records {
            let bytes = record.encoded()
            #expect(try FailoverEtcdRecord.decode(bytes) == record)
            var flipped = bytes
            flipped[flipped.count - 1] ^= 0x40
            #expect(throws: FailoverError.self) { try FailoverEtcdRecord.decode(flipped) }
            #expect(throws: FailoverError.self) { try FailoverEtcdRecord.decode(Array(bytes.dropLast())) }
            #expect(throws: FailoverError.self) { try FailoverEtcdRecord.decode(bytes + [0]) }
        }
        #expect(throws: FailoverError.self) { try FailoverEtcdRecord.decode(Array("a".utf8)) }
        #expect(throws: FailoverError.self) { try FailoverEtcdRecord.decode([]) }
    }

    @Test("memory etcd: create-if-absent transactions, leases that run out delete their keys and tell watchers")
    func memoryEtcdSemantics() async throws {
        let world = AsyncSimulation(seed: 3)
        let etcd = MemoryEtcd(clock: world.clock)
        let result = try await world.run(timeLimit: .seconds(10)) { () async throws -> [String] in
            var log: [String] = []
            let lease = try etcd.grant(ttl: .milliseconds(100))
            log.append("ttl \(lease.ttl)")
            let key = Array("k".utf8)
            let watch = etcd.watch(prefix: key, from: 0)
            let first = try etcd.transaction(
                compare: [.createRevision(key: key, equals: 0)], success: [.put(key: key, value: [1], lease: lease.id)],
                failure: [])
            let second = try etcd.transaction(
                compare: [.createRevision(key: key, equals: 0)], success: [.put(key: key, value: [2], lease: 0)],
                failure: [])
            log.append("first \(first.succeeded) second \(second.succeeded)")
            try await world.clock.sleep(for: .milliseconds(500))
            log.append("kept alive \(try etcd.keepAlive(lease.id).map { "\($0)" } ?? "nil")")
            try await world.clock.sleep(for: .milliseconds(800))
            log.append("after ttl \(try etcd.keepAlive(lease.id).map { "\($0)" } ?? "nil")")
            log.append("keys \(try etcd.range(prefix: key).keys.count)")
            var events = watch.makeAsyncIterator()
            let put = try await events.next()
            let deleted = try await events.next()
            log.append("events \(put?.count ?? 0) \(deleted.map { "\($0)" } ?? "nil")")
            return log
        }
        #expect(result[0] == "ttl 0.75 seconds")
        #expect(result[1] == "first true second false")
        #expect(result[2] == "kept alive 0.75 seconds")
        #expect(result[3] == "after ttl nil")
        #expect(result[4] == "keys 0")
        #expect(result[5].hasPrefix("events 1 [FaultToleranceEtcd.EtcdEvent.delete"))
    }
}
