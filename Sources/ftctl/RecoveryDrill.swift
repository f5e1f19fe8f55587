import ArgumentParser
import DisasterRecovery
import DisasterRecoverySite
import ElasticJournal
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix

/// The recovery site's journal: file pools in `directory` (made on first use), read through a
/// ``ShippedClock`` so the journal keeps the protected site's times.
func openRecoveryJournal(
    _ directory: String, volumes: [VolumeID], volumeBytes: Int, clock: ShippedClock
) throws -> (store: JournalStore, journal: ElasticJournal) {
    let unitSize = 4 << 20
    let manager = FileManager.default
    let fresh = !manager.fileExists(atPath: JournalStore.Directory.units(in: directory))
    for folder in [JournalStore.Directory.units(in: directory), JournalStore.Directory.base(in: directory)] {
        try manager.createDirectory(atPath: folder, withIntermediateDirectories: true)
    }
    let units = try FileStoragePool(
        directories: [JournalStore.Directory.units(in: directory)], unitCapacity: unitSize, budget: 256 * unitSize)
    let bases = try FileStoragePool(
        directories: [JournalStore.Directory.base(in: directory)],
        unitCapacity: JournalFormat.baseHeaderSize + volumeBytes, budget: 1 << 40)
    let store = try JournalStore(journalPool: units, basePool: bases, clock: { clock.now() })
    if fresh {
        let journal = try store.createJournal(
            1, configuration: JournalConfiguration(window: .seconds(3600), quota: 200), volumes: volumes)
        return (store, journal)
    }
    guard let journal = store.journal(1) else { throw CommandFailure("\(directory) holds no journal 1") }
    return (store, journal)
}

/// A TCP transport on loopback for one of the drill's two sites.
func drillTransport(_ node: NodeID, port: Int, peer: NodeID, peerPort: Int) async throws -> TCPTransport {
    var logger = Logger(label: "ftctl.dr")
    logger.logLevel = .warning
    return try await TCPTransport.start(
        configuration: .init(
            localNode: node, bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: port),
            peers: [peer: try SocketAddress(ipAddress: "127.0.0.1", port: peerPort)]),
        logger: logger)
}

/// What the drill tells each of its two site processes.
struct DrillSiteOptions: ParsableArguments {
    @Option(help: "The site's directory.") var directory: String
    @Option(help: "The site's loopback port.") var port: Int
    @Option(help: "The other site's loopback port.") var peerPort: Int
    @Option(help: "Bytes of the protected volume.") var volumeBytes: Int
}

/// `ftctl dr recovery-site` (hidden): receives the shipped journal until killed.
struct RecoverySiteChild: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recovery-site", abstract: "The drill's recovery site (started by `ftctl dr drill`).",
        shouldDisplay: false)

    @OptionGroup var site: DrillSiteOptions

    func run() async throws {
        let clock = ShippedClock()
        let (store, journal) = try openRecoveryJournal(
            site.directory, volumes: [1], volumeBytes: site.volumeBytes, clock: clock)
        let transport = try await drillTransport(
            "recovery", port: site.port, peer: "protected", peerPort: site.peerPort)
        let receiver = JournalReceiver(journal: journal, transport: transport, protectedSite: "protected", clock: clock)
        print("recovery site listening, durable through \(journal.durableSequence)")
        fflush(nil)
        await receiver.run()
        try store.close()
    }
}

/// `ftctl dr protected-site` (hidden): a workload writing stamped blocks through the journal,
/// shipped to the recovery site, until killed.
struct ProtectedSiteChild: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "protected-site", abstract: "The drill's protected site (started by `ftctl dr drill`).",
        shouldDisplay: false)

    @OptionGroup var site: DrillSiteOptions

    func run() async throws {
        let store = try JournalStore.create(
            directory: site.directory, unitSize: 4 << 20, journalUnits: 256, volumes: [1],
            volumeSize: site.volumeBytes,
            configuration: JournalConfiguration(window: .seconds(3600), quota: 200))
        guard let journal = store.journal(1) else { throw CommandFailure("no journal") }
        let transport = try await drillTransport(
            "protected", port: site.port, peer: "recovery", peerPort: site.peerPort)
        let shipper = JournalShipper(
            journal: journal, transport: transport, configuration: .init(recoverySite: "recovery"))
        let shipping = Task { await shipper.run() }
        let blocks = site.volumeBytes / 4096
        var version = 0
        var maximumRPO = Duration.zero
        print("protected site writing")
        fflush(nil)
        while !Task.isCancelled {
            // Sixteen stamped blocks per batch, each durable before the next batch.
            var writes: [JournalWrite] = []
            for _ in 0..<16 {
                version += 1
                let block = version &* 7919 % blocks
                writes.append(
                    JournalWrite(volume: 1, offset: UInt64(block * 4096), bytes: drillBlock(block, version: version)))
            }
            _ = try await journal.append(contentsOf: writes)
            maximumRPO = max(maximumRPO, shipper.status.recoveryPointObjective)
            if version % 1024 == 0 {
                print(
                    "written \(version), acknowledged by the recovery site \(shipper.status.acknowledged), RPO \(shipper.status.recoveryPointObjective), most \(maximumRPO)"
                )
                fflush(nil)
            }
        }
        shipping.cancel()
    }
}

/// A 4 KiB block stamped with its number and version.
func drillBlock(_ block: Int, version: Int) -> [UInt8] {
    var bytes: [UInt8] = []
    bytes.reserveCapacity(4096)
    bytes.appendLE(UInt64(block))
    bytes.appendLE(UInt64(version))
    let fill = UInt8(truncatingIfNeeded: block &* 31 &+ version &* 17) | 1
    bytes += [UInt8](repeating: fill, count: 4096 - 16)
    return bytes
}

/// `ftctl dr drill`: the whole recovery with real processes, containers and a FUSE volume.
struct RecoveryDrill: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "drill",
        abstract:
            "Protect a site, SIGKILL it, recover its workload in a runc container on a FUSE lazy volume, migrate.",
        discussion: """
            Starts a recovery site and a protected site as processes on loopback TCP: the \
            protected site writes stamped 4 KiB blocks through its journal, which ships to the \
            recovery site. The protected site is SIGKILLed, then the recovery site. The recovery \
            then runs both processes at once: a busybox httpd in a runc container serves the \
            volume at the recovery point from a lazy volume mounted with FUSE (RTO: the request \
            to the first block served), while the replica builds; the workload writes blocks over \
            HTTP throughout; the migration copies the overlay in rounds and switches between a \
            runc pause and resume. Checks: the recovered volume is the protected volume at the \
            recovery point, and after the switch the replica holds every write the workload made. \
            Needs root, /dev/fuse, runc and busybox-static. Exits 1 if a check fails.
            """)

    @Option(help: "Directory for the sites (a fresh temporary one by default).") var directory: String?
    @Option(help: "Megabytes of the protected volume.") var megabytes = 16
    @Option(help: "Seconds the protected site writes before it is killed.") var seconds = 3.0
    @Option(help: "Blocks the workload writes over HTTP during the recovery.") var workloadWrites = 200

    func validate() throws {
        try require("--megabytes", megabytes, in: 1...4096)
        try require("--seconds", seconds, in: 0.2...600)
        try require("--workload-writes", workloadWrites, in: 0...100_000)
    }

    /// What the drill lacks on this machine, said as an error would say it; `nil` when it can run.
    static func missingTools() -> String? {
        for tool in ["/dev/fuse", "/bin/busybox"] where !FileManager.default.fileExists(atPath: tool) {
            return "the drill needs \(tool) (Debian's fuse3 and busybox-static)"
        }
        guard ["/usr/sbin/runc", "/usr/bin/runc"].contains(where: FileManager.default.isExecutableFile(atPath:)) else {
            return "the drill needs runc (Debian's runc)"
        }
        guard geteuid() == 0 else { return "the drill needs root (runc and the FUSE mount)" }
        return nil
    }

    func run() async throws {
        if let missing = Self.missingTools() { throw CommandFailure(missing) }
        let root = directory ?? (FileManager.default.temporaryDirectory.path + "/ftctl-dr-\(getpid())")
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: root) } }
        let volumeBytes = megabytes << 20
        let (protectedPort, recoveryPort, httpPort) = (
            try freeLoopbackPort(), try freeLoopbackPort(), try freeLoopbackPort()
        )
        let sizes = ["--volume-bytes", "\(volumeBytes)"]

        // 1. The two sites, the protected one killed mid-write.
        let site = try spawnSelf(
            [
                "dr", "recovery-site", "--directory", root + "/recovery-journal", "--port", "\(recoveryPort)",
                "--peer-port", "\(protectedPort)",
            ] + sizes, log: root + "/recovery-site.log")
        guard waitForLog(root + "/recovery-site.log", containing: "listening") else {
            kill(site, SIGKILL)
            throw CommandFailure("the recovery site did not start: see \(root)/recovery-site.log")
        }
        let protected = try spawnSelf(
            [
                "dr", "protected-site", "--directory", root + "/protected", "--port", "\(protectedPort)",
                "--peer-port", "\(recoveryPort)",
            ] + sizes, log: root + "/protected-site.log")
        guard waitForLog(root + "/protected-site.log", containing: "writing") else {
            kill(protected, SIGKILL)
            kill(site, SIGKILL)
            throw CommandFailure("the protected site did not start: see \(root)/protected-site.log")
        }
        try await Task.sleep(for: .seconds(seconds))
        kill(protected, SIGKILL)
        waitpid(protected, nil, 0)
        // Whatever reached the recovery site in flight lands; then it goes down too.
        try await Task.sleep(for: .milliseconds(300))
        kill(site, SIGKILL)
        waitpid(site, nil, 0)
        print("protected site SIGKILLed after \(seconds) s; recovery site stopped")
        print(
            ((try? String(contentsOfFile: root + "/protected-site.log", encoding: .utf8)) ?? "")
                .split(separator: "\n").last.map { "  last report: \($0)" } ?? "")

        // 2. Recovery: the workload at once on the lazy volume, the replica behind it.
        let requested = ContinuousClock.now
        let clock = ShippedClock()
        let (recoveryStore, recoveryJournal) = try openRecoveryJournal(
            root + "/recovery-journal", volumes: [1], volumeBytes: volumeBytes, clock: clock)
        defer { try? recoveryStore.close() }
        let point = try JournalRecoveryPoint(journal: recoveryJournal, volume: 1, at: .latest)
        let data = root + "/recovery-data"
        let states = root + "/recovery-state"
        let pools = (
            data: try FileStoragePool(directories: [data], unitCapacity: volumeBytes, budget: 2 * volumeBytes),
            state: try FileStoragePool(
                directories: [states], unitCapacity: LazyVolumeHeader.stateSize(capacity: volumeBytes, blockSize: 4096),
                budget: LazyVolumeHeader.stateSize(capacity: volumeBytes, blockSize: 4096))
        )
        defer {
            pools.data.close()
            pools.state.close()
        }
        let overlay = try pools.data.allocate()
        let replica = try pools.data.allocate()
        let volume = try LazyVolume.create(
            identity: 1, source: point, overlay: overlay, replica: replica, state: try pools.state.allocate())
        let mountpoint = root + "/mnt"
        try FileManager.default.createDirectory(atPath: mountpoint, withIntermediateDirectories: true)
        let server = try FuseVolumeServer(unit: volume, mountpoint: mountpoint)
        defer { server.stop() }
        let bundle = root + "/bundle"
        try RuncContainer.busyboxRoot(
            at: bundle + "/rootfs",
            files: [
                "www/cgi-bin/read": (
                    "#!/bin/sh\necho 'Content-Type: application/octet-stream'\necho ''\n"
                        + "dd if=/data/volume bs=4096 count=1 skip=\"$QUERY_STRING\" 2>/dev/null\n", true
                ),
                "www/cgi-bin/write": (
                    "#!/bin/sh\ndd of=/data/volume bs=4096 count=1 seek=\"$QUERY_STRING\" conv=notrunc,fsync "
                        + "iflag=fullblock 2>/tmp/dd.err && { echo 'Content-Type: text/plain'; echo ''; echo written; } "
                        + "|| { echo 'Status: 500'; echo ''; cat /tmp/dd.err; }\n", true
                ),
                "data/volume": ("", false),
            ])
        let container = try RuncContainer(
            id: "ftctl-dr-\(getpid())", bundle: bundle,
            command: ["/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:\(httpPort)", "-h", "/www"],
            binds: [.init(source: server.filePath, destination: "/data/volume")])
        defer { container.remove() }
        try container.start()
        var firstAnswer: Duration?
        var lastAnswer = "none"
        for _ in 0..<400 {
            do {
                let answer = try drillHTTP(port: httpPort, method: "GET", path: "/cgi-bin/read?0")
                if answer.status == 200, answer.body.count == 4096 {
                    firstAnswer = ContinuousClock.now - requested
                    break
                }
                lastAnswer = "status \(answer.status), \(answer.body.count) bytes"
            } catch {
                lastAnswer = "\(error)"
            }
            try await Task.sleep(for: .milliseconds(10))
        }
        guard let rto = firstAnswer else {
            throw CommandFailure(
                "the recovered workload never answered (last: \(lastAnswer); FUSE served \(server.counts))")
        }
        print(
            "recovered at \(point.instant) (\(point.recordCount) journaled writes): RTO \(rto), the workload answering "
                + "from a container on the lazy volume")

        // The recovery point: the recovered volume is the protected volume as it was then.
        let protectedStore = try JournalStore.open(directory: root + "/protected", options: .init(readOnly: true))
        defer { try? protectedStore.close() }
        guard let protectedJournal = protectedStore.journal(1) else { throw CommandFailure("no protected journal") }
        var expected = try protectedJournal.image(of: 1, at: point.instant)
        let served = try volume.read(at: 0, count: volumeBytes)
        guard served == expected else {
            let block = (zip(served, expected).enumerated().first { $0.element.0 != $0.element.1 }?.offset ?? 0) / 4096
            throw CommandFailure(
                "the recovered volume differs from the protected volume at the recovery point, block \(block)")
        }
        let lost = try protectedJournal.records(
            from: point.instant + .nanoseconds(1), through: .init(nanoseconds: .max)
        ).count
        print(
            "recovered volume = protected volume at the recovery point; \(lost) acknowledged writes after it were not yet shipped (the RPO)"
        )

        // 3. The workload writes over HTTP while the replica builds and the migration switches.
        let blocks = volumeBytes / 4096
        let writes = NIOLockedValueBox<[Int: [UInt8]]>([:])
        let failures = NIOLockedValueBox<[String]>([])
        let done = ConditionLock(value: 0)
        let count = workloadWrites
        let writer = Thread {
            for step in 0..<count {
                let block = step &* 104_729 % blocks
                let bytes = drillBlock(block, version: 1_000_000 + step)
                do {
                    let answer = try drillHTTP(
                        port: httpPort, method: "POST", path: "/cgi-bin/write?\(block)", body: bytes)
                    guard answer.status == 200 else { throw CommandFailure("status \(answer.status)") }
                    writes.withLockedValue { $0[block] = bytes }
                } catch {
                    failures.withLockedValue { $0.append("write of block \(block): \(error)") }
                }
            }
            done.lock()
            done.unlock(withValue: 1)
        }
        writer.start()
        // Some of the workload's writes land in the overlay before the build starts, the rest
        // during the build, the rounds, the freeze and after the switch.
        for _ in 0..<1000 where writes.withLockedValue({ $0.count }) < min(count, 20) {
            try await Task.sleep(for: .milliseconds(5))
        }
        let reporter = Task { await reportProgress(of: volume) }
        let summary = try await VolumeRecovery(volume: volume, configuration: .init(stepBlocks: 64)).run(
            freeze: { try await NIOThreadPool.singleton.runIfActive { try container.pause() } },
            thaw: { try await NIOThreadPool.singleton.runIfActive { try container.resume() } })
        reporter.cancel()
        await reporter.value
        await withCheckedContinuation { continuation in
            Thread {
                done.lock(whenValue: 1)
                done.unlock()
                continuation.resume()
            }.start()
        }
        if let failure = failures.withLockedValue({ $0.first }) {
            throw CommandFailure("the workload failed: \(failure)")
        }
        print(
            "replica built in \(summary.build), \(summary.roundCount) migration rounds, frozen \(summary.freeze) "
                + "for the last \(summary.blocksCopiedInFreeze) blocks; the workload wrote \(count) blocks over HTTP meanwhile"
        )

        // 4. After the switch: the replica itself holds everything the workload saw and wrote.
        for (block, bytes) in writes.withLockedValue({ $0 }) {
            expected.replaceSubrange(block * 4096..<(block + 1) * 4096, with: bytes)
        }
        guard volume.phase == .switched else { throw CommandFailure("the volume did not switch: \(volume.progress)") }
        guard try replica.read(at: 0, count: volumeBytes) == expected else {
            throw CommandFailure("the replica differs from what the workload saw and wrote")
        }
        for step in 0..<16 {
            let block = step * 7 % blocks
            let answer = try drillHTTP(port: httpPort, method: "GET", path: "/cgi-bin/read?\(block)")
            guard answer.status == 200, answer.body[...] == expected[block * 4096..<(block + 1) * 4096] else {
                throw CommandFailure("the container reads block \(block) wrong after the switch")
            }
        }
        print(
            "after the switch the replica holds the recovery point and all \(writes.withLockedValue { $0.count }) blocks "
                + "the workload wrote: 0 writes lost across the migration")
    }
}

/// Prints the replica build's progress as a bar at each quarter, then the migration's start,
/// until cancelled.
func reportProgress(of volume: LazyVolume) async {
    var quarter = 0
    var migrating = false
    while !Task.isCancelled {
        let progress = volume.progress
        let built = progress.blocks == 0 ? 1 : Double(progress.built) / Double(progress.blocks)
        while quarter < 4, built >= Double(quarter + 1) / 4 {
            quarter += 1
            let filled = quarter * 5
            print(
                "  replica [\(String(repeating: "#", count: filled))\(String(repeating: ".", count: 20 - filled))] "
                    + "\(quarter * 25)% built, \(progress.dirty) blocks written by the workload so far")
        }
        if !migrating, progress.phase == .migrating {
            migrating = true
            print("  migrating: \(progress.uncopied) overlay blocks to copy onto the replica in rounds")
        }
        if progress.phase == .switched { return }
        try? await Task.sleep(for: .milliseconds(20))
    }
}
