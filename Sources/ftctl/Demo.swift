import ArgumentParser
import FaultToleranceAuthentication
import FaultToleranceCore
import FaultToleranceNIO
import HeartbeatQuorum
import Logging
import NIOCore

/// `ftctl demo`: the library at work, scene by scene, on real sockets.
struct Demo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract:
            "Show the primitives at work: the elastic journal on real files, a live copy under load, the heartbeat quorum over UDP.",
        discussion: """
            Journal scene: a journal with a 2-second window over 256 KiB unit files takes 4 KiB \
            writes every 10 ms of virtual time for 6 seconds; units are allocated as it grows \
            and released (their writes applied to the base image) as the window slides; then \
            the volume is rebuilt as it was 1.5 s before the end and compared byte for byte \
            with the image the demo kept at that moment.

            Live-copy scene: 64 MiB of memory under 200,000 writes a second from two threads is \
            copied over loopback TCP round by round; the writers are paused for the final copy \
            (predicted and measured pause shown), every page is compared by CRC32C, the two run \
            duplicated for a second with the writers going, and are compared byte for byte.

            Checkpoint scene: 128 MiB of memory and a 16 MiB volume, written by two threads, get \
            a full and three incremental checkpoints while the writers run (the pause and the \
            pages preserved before a write shown), a last one after they stop, which is restored \
            into a new region and volume and compared byte for byte; then merged into a \
            synthetic full, the older ones deleted, garbage collected and the store verified.

            Name-key sync scene: two SQLite stores of 250,000 records (1,000,000 with `ftctl keysync demo`), the active at schema \
            version 1 and the backup at version 2 (a field renamed, one added), 1% of the records \
            changed; the backup is synced over loopback TCP by the seed's key-list protocol and \
            by ours (rateless set reconciliation over version-normalised fingerprints), with the \
            bytes and round trips of each, and the stores compared.

            Chain scene: four element processes form a mirror chain on loopback TCP (file-backed \
            drives, 50 ms heartbeats); an elastic journal keeps its units and base image on the \
            chain's one volume and writes 600 records, each durable on every linked element; the \
            second element is SIGKILLed a third of the way in and started again at two thirds, \
            and catches up while the writes go on; then the journal's volume is rebuilt from the \
            chain and compared with what was written.

            Hot-spare scene: a mirror of two 64 MiB simulated flash drives and a spare takes \
            random 4 KiB writes; the drive with 7 % over-provisioning climbs past a write \
            amplification of 3, the controller migrates its live blocks to the spare while the \
            writes go on, erases it (TRIM) and it rejoins; its write amplification before and \
            after, and every page checked on both mirror members.

            Failover scene: a control server and servers a, b and c run as processes on loopback \
            (10 ms reports, a 30 ms lease); three clients write and read continuously in \
            synchronous mode; the primary is SIGKILLed. Printed: how long until the new primary \
            acknowledged each client again, the operations acknowledged and lost (0), whether each \
            shared key's history is linearizable, and who answers on the service address.

            Disaster-recovery scene (`ftctl dr drill --seconds 2 --megabytes 32 \
            --workload-writes 300`): a protected site writing through its journal ships it to a \
            recovery site over loopback TCP; a test failover recovers a copy while both run; then \
            the protected site is SIGKILLed and the plan's two workloads start stage by stage in \
            runc containers on a FUSE-mounted lazy volume at the recovery point (RTO and RPO \
            printed), one writes over HTTP while the replica builds, and the migration switches to \
            the replica between a runc pause and resume; every write is checked on the replica. \
            Needs /dev/fuse, runc and busybox; without them the scene says so and is skipped.

            Heartbeat scene: devices A (priority 2) and B (priority 1) exchange heartbeats every \
            50 ms on three UDP paths (127.0.0.2-4 and 127.0.0.5-7). One of A's paths is cut (B \
            still hears A on two, the threshold, and stays standby), then A is killed; B takes \
            over. Every transition is printed with its evidence.
            """)

    func run() async throws {
        try await JournalScene().run()
        print()
        try await LiveCopyScene(megabytes: 64, tcp: true).run()
        print()
        try await CheckpointScene().run()
        print()
        // 250,000 keys here (CI runs this command); `ftctl keysync demo` runs the 1,000,000-key scene.
        try await KeySyncScene(keys: 250_000).run()
        print()
        try await ChainScene().run()
        print()
        try await SpareScene().run()
        print()
        print(
            "== Failover: a control server and three servers as processes; a planned switchover, then the primary "
                + "SIGKILLed under load")
        let failover = try await FailoverTrial(
            number: 1, heartbeatMs: 10, loadMs: 500, backups: 2, switchover: true
        ).run()
        print(failover.line)
        guard failover.passed else { throw CommandFailure("the failover scene failed") }
        print()
        print(
            "== Disaster recovery: a test failover, then the protected site SIGKILLed; its workloads run at once "
                + "on a lazy volume at the recovery point, in runc containers, while the replica builds")
        if let missing = RecoveryDrill.missingTools() {
            print("  skipped: \(missing)")
        } else {
            let drill = try RecoveryDrill.parse(["--seconds", "2", "--megabytes", "32", "--workload-writes", "300"])
            try await drill.run()
        }
        print()
        print("== Heartbeat quorum: 3 paths, threshold 2, 50 ms heartbeats")
        let interval = Duration.milliseconds(50)
        let detector = DetectorConfiguration.phiAccrual(
            threshold: 8, minimumStandardDeviation: .milliseconds(10), acceptablePause: .milliseconds(150),
            maximumSilence: .milliseconds(300))
        let pathNames: [PathID] = ["p1", "p2", "p3"]
        func configuration(_ priority: UInt8) throws -> HeartbeatConfiguration {
            try HeartbeatConfiguration(
                paths: Dictionary(uniqueKeysWithValues: pathNames.map { ($0, detector) }), heartbeatInterval: interval,
                threshold: 2, detectionBound: .seconds(1), minimumDwell: .milliseconds(200), priority: priority)
        }
        func transport(_ node: NodeID, _ firstHost: Int) async throws -> UDPTransport {
            var addresses: [PathID: SocketAddress] = [:]
            for (index, path) in pathNames.enumerated() {
                addresses[path] = try SocketAddress(ipAddress: "127.0.0.\(firstHost + index)", port: 0)
            }
            return try await UDPTransport.start(configuration: .init(localNode: node, paths: addresses), logger: logger)
        }
        var logger = Logger(label: "ftctl.demo")
        logger.logLevel = .error
        let transportA = try await transport("A", 2)
        let transportB = try await transport("B", 5)
        for path in pathNames {
            if let address = transportB.localAddresses[path] { transportA.setPeer("B", path: path, address: address) }
            if let address = transportA.localAddresses[path] { transportB.setPeer("A", path: path, address: address) }
        }
        // One shared key for the pair, made for this run: every heartbeat sealed and checked.
        let keys = MessageKeys(sealing: .random(id: 1))
        let a = HeartbeatService(
            configuration: try configuration(2), partner: "B",
            transport: AuthenticatedTransport(transportA, keys: keys),
            logger: logger)
        let b = HeartbeatService(
            configuration: try configuration(1), partner: "A",
            transport: AuthenticatedTransport(transportB, keys: keys),
            logger: logger)
        let printers = [("A", a), ("B", b)].map { name, service in
            Task { for await transition in service.transitions { print(describe(NodeID(name) ?? "?", transition)) } }
        }
        let runA = Task { try await a.run() }
        let runB = Task { try await b.run() }
        try await Task.sleep(for: .seconds(1))
        print("-- cutting path p1 (A can no longer send on it)")
        await transportA.closePath("p1")
        try await Task.sleep(for: .seconds(1))
        print(
            "   B hears A on \(b.evidence.healthyCount) of 3 paths: \(b.state) (partner \(b.evidence.partnerState.map { "\($0)" } ?? "-"))"
        )
        print("-- killing A")
        runA.cancel()
        _ = try? await runA.value
        await transportA.close()
        try await Task.sleep(for: .seconds(1))
        print("   B is \(b.state)")
        runB.cancel()
        _ = try? await runB.value
        await transportB.close()
        try await Task.sleep(for: .milliseconds(50))
        for printer in printers { printer.cancel() }
        if b.state != .operating { throw ExitCode(1) }
        print()
        print("== What this showed")
        print("  journal    a time window kept on disk: units allocated and released as it slid, a past image")
        print("             rebuilt byte for byte, and every record and seal verified")
        print("  live copy  memory copied while two threads wrote to it: a short pause, no page lost (every")
        print("             page's checksum compared), then both sides kept identical under the same writes")
        print("  checkpoint full and incremental checkpoints taken while two threads wrote: writers held")
        print("             for microseconds, pages written during the copy preserved first; the last one")
        print("             restored byte for byte; a merge wrote one manifest and no data")
        print("  chain      a journal ran unchanged on one volume made of four processes; one was killed")
        print("             mid-write and came back, the chain re-linked around it, and nothing written was lost")
        print("  recovery   a killed site's workload served from its shipped journal within a second, on a")
        print("             volume that built its replica behind the workload's writes and then switched to it")
        print("  heartbeat  one cut path changed nothing (two of three still over the threshold); a dead")
        print("             partner was replaced within the detection bound, with the evidence printed")
    }
}
