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
    @Option(help: "Where the site writes its report (JSON) for `ftctl dr status`.") var status: String?
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
        let path = site.status
        let reporter = Task {
            while !Task.isCancelled {
                let status = journal.status
                // The oldest write the journal holds: the start of the instants worth recovering to.
                let oldest = journal.oldestSequence
                let first = try? journal.records(fromSequence: oldest, through: oldest, maximumBytes: 1).first?.time
                writeReport(
                    RecoverySiteReport(
                        durableSequence: status.durableSequence, oldestSequence: oldest,
                        windowStartNanoseconds: (first ?? status.windowStart).nanoseconds,
                        lastTimeNanoseconds: status.lastTime.nanoseconds, units: status.units.count,
                        recordBytes: status.recordBytes, updated: Date().timeIntervalSince1970), to: path)
                try? await Task.sleep(for: .milliseconds(200))
            }
        }
        await receiver.run()
        reporter.cancel()
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
    @Option(help: "Writes per second (0: as fast as the journal takes them).") var rate = 0

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
        let started = ContinuousClock.now
        while !Task.isCancelled {
            if rate > 0 {
                // A steady load: the batch waits for its turn.
                try? await Task.sleep(until: started + .seconds(Double(version) / Double(rate)))
            }
            // Sixteen stamped blocks per batch, each durable before the next batch.
            var writes: [JournalWrite] = []
            for _ in 0..<16 {
                version += 1
                let block = version &* 7919 % blocks
                writes.append(
                    JournalWrite(volume: 1, offset: UInt64(block * 4096), bytes: drillBlock(block, version: version)))
            }
            _ = try await journal.append(contentsOf: writes)
            let status = shipper.status
            maximumRPO = max(maximumRPO, status.recoveryPointObjective)
            if version % 256 == 0 {
                writeReport(
                    ProtectedSiteReport(
                        written: version, acknowledged: status.acknowledged, durable: status.durable,
                        rpoMilliseconds: millisecondCount(status.recoveryPointObjective),
                        mostRpoMilliseconds: millisecondCount(maximumRPO), reconnects: status.reconnects,
                        updated: Date().timeIntervalSince1970), to: site.status)
            }
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
            `ftctl dr protect`, `test-failover` and `recover` in one run. A recovery site and a \
            protected site start as processes on loopback TCP: the protected site writes stamped \
            4 KiB blocks through its journal, which ships to the recovery site. Halfway, a test \
            failover recovers a copy of the recovery site's journal while both keep running. Then \
            the protected site is SIGKILLed, the recovery site's receiver stopped, and the \
            recovery runs both processes at once: the plan's workloads start stage by stage in \
            runc containers (a busybox httpd serving the volume from a lazy volume mounted with \
            FUSE, then a front that depends on it; RTO: the request to the last stage answering) \
            while the replica builds; the workload writes blocks over HTTP throughout; the \
            migration copies the overlay in rounds and switches between a runc pause and resume. \
            Checks: the recovered volume is the protected volume at the recovery point, and after \
            the switch the replica holds every write the workload made. \
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

        // 1. The two sites (`ftctl dr protect`).
        let protection = try Protection.start(directory: root, volumeBytes: megabytes << 20, rate: 0)
        defer {
            for pid in [protection.protectedPid, protection.recoveryPid] where kill(pid, 0) == 0 {
                kill(pid, SIGKILL)
                waitpid(pid, nil, 0)
            }
        }
        print(
            "protecting \(megabytes) MiB: protected site pid \(protection.protectedPid), recovery site pid \(protection.recoveryPid)"
        )
        try await Task.sleep(for: .seconds(seconds / 2))

        // 2. A test failover while both run (`ftctl dr test-failover`).
        print("test failover:")
        try await recoverEnvironment(
            try RecoverOptions.parse([
                "--directory", root, "--workload-writes", "\(min(workloadWrites, 50))", "--step-blocks", "64",
            ]), test: true)
        try await Task.sleep(for: .seconds(seconds / 2))

        // 3. The disaster: the protected site is SIGKILLed mid-write.
        kill(protection.protectedPid, SIGKILL)
        waitpid(protection.protectedPid, nil, 0)
        // Whatever reached the recovery site in flight lands before its receiver stops.
        try await Task.sleep(for: .milliseconds(300))
        print("protected site SIGKILLed after \(seconds) s")
        print(
            ((try? String(contentsOfFile: root + "/protected-site.log", encoding: .utf8)) ?? "")
                .split(separator: "\n").last.map { "  last report: \($0)" } ?? "")

        // 4. The recovery (`ftctl dr recover`).
        print("recovery:")
        try await recoverEnvironment(
            try RecoverOptions.parse([
                "--directory", root, "--workload-writes", "\(workloadWrites)", "--step-blocks", "64",
            ]), test: false)
    }
}

/// Prints the replica build's progress as a bar at each quarter, then the migration's start,
/// until cancelled.
func reportProgress(of volume: LazyVolume, tick: () -> Void = {}) async {
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
        tick()
        if progress.phase == .switched { return }
        try? await Task.sleep(for: .milliseconds(20))
    }
}
