import ArgumentParser
import DisasterRecovery
import DisasterRecoverySite
import ElasticJournal
import FaultToleranceCore
import Foundation
import NIOConcurrencyHelpers
import NIOPosix

/// What `ftctl dr protect` leaves in its directory for `status`, `recover`, `test-failover`
/// and `down`: the two site processes, their ports, the volume's size.
struct Protection: Codable {
    var volumeBytes: Int
    var protectedPid: Int32
    var recoveryPid: Int32
    var protectedPort: Int
    var recoveryPort: Int

    static func path(_ directory: String) -> String { directory + "/protection.json" }
    static func environmentPath(_ directory: String) -> String { directory + "/environment.json" }
    static func protectedStatusPath(_ directory: String) -> String { directory + "/protected-site.status.json" }
    static func recoveryStatusPath(_ directory: String) -> String { directory + "/recovery-site.status.json" }
    static func progressPath(_ directory: String) -> String { directory + "/recovery.status.json" }

    /// Reads the protection of `directory`, or says how to start one.
    static func load(_ directory: String) throws -> Protection {
        guard let data = FileManager.default.contents(atPath: path(directory)) else {
            throw CommandFailure(
                "\(directory) holds no protection: `ftctl dr protect --directory \(directory)` starts one")
        }
        do {
            return try JSONDecoder().decode(Protection.self, from: data)
        } catch {
            throw CommandFailure("\(path(directory)) is damaged: \(error)")
        }
    }

    /// Starts the recovery site, then the protected site writing through its journal, as
    /// processes of their own on loopback TCP; records them and the demo environment in
    /// `directory`.
    static func start(directory: String, volumeBytes: Int, rate: Int) throws -> Protection {
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        if FileManager.default.fileExists(atPath: path(directory)) {
            throw CommandFailure(
                "\(directory) already holds a protection; `ftctl dr down --directory \(directory)` stops its sites")
        }
        var protection = Protection(
            volumeBytes: volumeBytes, protectedPid: 0, recoveryPid: 0, protectedPort: try freeLoopbackPort(),
            recoveryPort: try freeLoopbackPort())
        let environment = demoEnvironment(
            volumeBytes: volumeBytes, storePort: UInt16(try freeLoopbackPort()),
            frontPort: UInt16(try freeLoopbackPort()))
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        try encoder.encode(environment).write(to: URL(fileURLWithPath: environmentPath(directory)), options: .atomic)
        let sizes = ["--volume-bytes", "\(volumeBytes)"]
        protection.recoveryPid = try spawnSelf(
            [
                "dr", "recovery-site", "--directory", directory + "/recovery-journal", "--port",
                "\(protection.recoveryPort)", "--peer-port", "\(protection.protectedPort)", "--status",
                recoveryStatusPath(directory),
            ] + sizes, log: directory + "/recovery-site.log")
        guard waitForLog(directory + "/recovery-site.log", containing: "listening") else {
            kill(protection.recoveryPid, SIGKILL)
            throw CommandFailure("the recovery site did not start: see \(directory)/recovery-site.log")
        }
        protection.protectedPid = try spawnSelf(
            [
                "dr", "protected-site", "--directory", directory + "/protected", "--port",
                "\(protection.protectedPort)", "--peer-port", "\(protection.recoveryPort)", "--status",
                protectedStatusPath(directory), "--rate", "\(rate)",
            ] + sizes, log: directory + "/protected-site.log")
        guard waitForLog(directory + "/protected-site.log", containing: "writing") else {
            kill(protection.protectedPid, SIGKILL)
            kill(protection.recoveryPid, SIGKILL)
            throw CommandFailure("the protected site did not start: see \(directory)/protected-site.log")
        }
        try encoder.encode(protection).write(to: URL(fileURLWithPath: path(directory)), options: .atomic)
        return protection
    }

    /// Whether the site process `pid` (`protected-site` or `recovery-site`) still runs.
    static func running(_ pid: Int32, _ role: String) -> Bool {
        guard pid > 0, kill(pid, 0) == 0,
            let command = FileManager.default.contents(atPath: "/proc/\(pid)/cmdline"),
            String(decoding: command, as: UTF8.self).contains(role)
        else { return false }
        // A child of this process that exited stays a zombie until waited for.
        let state = (try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8))?
            .split(separator: ")").last?.split(separator: " ").first
        return state != "Z"
    }
}

/// The protected site's report (written by `ftctl dr protected-site`).
struct ProtectedSiteReport: Codable {
    var written: Int
    var acknowledged: UInt64
    var durable: UInt64
    var rpoMilliseconds: Double
    var mostRpoMilliseconds: Double
    var reconnects: Int
    var updated: Double
}

/// The recovery site's report (written by `ftctl dr recovery-site`).
struct RecoverySiteReport: Codable {
    var durableSequence: UInt64
    var oldestSequence: UInt64
    var windowStartNanoseconds: Int64
    var lastTimeNanoseconds: Int64
    var units: Int
    var recordBytes: Int
    var updated: Double
}

/// A recovery's progress (written by `ftctl dr recover` and `test-failover`).
struct RecoveryProgressReport: Codable {
    var test: Bool
    var point: String
    var phase: String
    var blocks: Int
    var built: Int
    var dirty: Int
    var uncopied: Int
    var rtoMilliseconds: Double?
    var updated: Double
}

/// A duration in milliseconds.
func millisecondCount(_ duration: Duration) -> Double {
    Double(duration.components.seconds) * 1000 + Double(duration.components.attoseconds) / 1e15
}

/// Writes `value` as JSON to `path`, atomically; a report that cannot be written is skipped.
func writeReport(_ value: some Encodable, to path: String?) {
    guard let path, let data = try? JSONEncoder().encode(value) else { return }
    try? data.write(to: URL(fileURLWithPath: path), options: .atomic)
}

/// Reads a report, if there is one.
func readReport<T: Decodable>(_ type: T.Type, from path: String) -> T? {
    FileManager.default.contents(atPath: path).flatMap { try? JSONDecoder().decode(type, from: $0) }
}

/// The demo environment: `store`, a busybox httpd in a container that reads and writes 4 KiB
/// blocks of the `data` volume over HTTP (CGI), and `front`, which depends on it and serves a
/// page: two stages.
func demoEnvironment(volumeBytes: Int, storePort: UInt16, frontPort: UInt16) -> ProtectedEnvironment {
    ProtectedEnvironment(
        name: "demo", volumes: [VolumeSpec(name: "data", journalVolume: 1, capacity: volumeBytes)],
        workloads: [
            WorkloadSpec(
                name: "store", command: ["/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:\(storePort)", "-h", "/www"],
                mounts: [VolumeMount(volume: "data", path: "/data/volume")], ports: [storePort]),
            WorkloadSpec(
                name: "front", command: ["/bin/busybox", "httpd", "-f", "-p", "127.0.0.1:\(frontPort)", "-h", "/www"],
                ports: [frontPort], environment: ["STORE": "127.0.0.1:\(storePort)"], dependsOn: ["store"]),
        ])
}

/// The demo workloads' root filesystems: busybox, and for `store` the CGI scripts that read
/// and write a block of its volume.
@Sendable func demoRoot(_ workload: WorkloadSpec, _ root: String) throws {
    var files: [String: (contents: String, executable: Bool)] = ["www/index.html": ("\(workload.name)\n", false)]
    if let volume = workload.mounts.first?.path {
        files["www/cgi-bin/read"] = (
            "#!/bin/sh\necho 'Content-Type: application/octet-stream'\necho ''\n"
                + "dd if=\(volume) bs=4096 count=1 skip=\"$QUERY_STRING\" 2>/dev/null\n", true
        )
        files["www/cgi-bin/write"] = (
            "#!/bin/sh\ndd of=\(volume) bs=4096 count=1 seek=\"$QUERY_STRING\" conv=notrunc,fsync "
                + "iflag=fullblock 2>/tmp/dd.err && { echo 'Content-Type: text/plain'; echo ''; echo written; } "
                + "|| { echo 'Status: 500'; echo ''; cat /tmp/dd.err; }\n", true
        )
    }
    try RuncContainer.busyboxRoot(at: root, files: files)
}

/// Whether a demo workload answers: `store` serves block 0 of its volume (so the volume is
/// served), `front` its page.
@Sendable func demoProbe(_ workload: WorkloadSpec) async -> Bool {
    guard let port = workload.ports.first else { return true }
    let path = workload.mounts.isEmpty ? "/" : "/cgi-bin/read?0"
    let answer = try? await NIOThreadPool.singleton.runIfActive {
        try drillHTTP(port: Int(port), method: "GET", path: path)
    }
    guard let answer, answer.status == 200 else { return false }
    return workload.mounts.isEmpty || answer.body.count == 4096
}

/// Options of `recover` and `test-failover`.
struct RecoverOptions: ParsableArguments {
    @Option(help: "The protection's directory (from `ftctl dr protect`).") var directory: String
    @Option(
        help: "The point to recover to: latest, seconds since 1970 (UTC), or an ISO 8601 time (2026-12-07T16:00:00Z)."
    )
    var at = "latest"
    @Option(help: "Blocks the workload writes over HTTP during the replica build and the migration.")
    var workloadWrites = 200
    @Option(help: "Blocks per replica build step and migration round.") var stepBlocks = 256

    func validate() throws {
        _ = try RecoveryPlanCommand.point(at)
        try require("--workload-writes", workloadWrites, in: 0...100_000)
        try require("--step-blocks", stepBlocks, in: 1...1 << 20)
    }
}

/// `ftctl dr protect`.
struct RecoveryProtect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "protect",
        abstract: "Start a protected site writing through its journal, shipped to a recovery site; leave both running.",
        discussion: """
            Two processes on loopback TCP: the protected site writes stamped 4 KiB blocks to its \
            volume through an ElasticJournal, durable before each next batch, and ships the \
            journal to the recovery site, which keeps a journal of its own (a one-hour window). \
            The directory records them and the environment to recover (environment.json: a \
            store workload serving the volume over HTTP in a container, and a front workload \
            that depends on it). `status` shows RPO and the window; `test-failover` recovers a \
            copy while both keep running; `recover` takes over once the protected site is gone \
            (SIGKILL it: its pid is printed); `down` stops both.
            """)

    @Option(help: "The protection's directory.") var directory: String
    @Option(help: "Megabytes of the protected volume.") var megabytes = 16
    @Option(help: "The workload's writes (4 KiB) per second; 0 writes as fast as the journal takes them.")
    var rate = 1000

    func validate() throws {
        try require("--megabytes", megabytes, in: 1...4096)
        try require("--rate", rate, in: 0...1_000_000)
    }

    func run() throws {
        let protection = try Protection.start(directory: directory, volumeBytes: megabytes << 20, rate: rate)
        print("protecting \(megabytes) MiB in \(directory)")
        print("  protected site  pid \(protection.protectedPid)  port \(protection.protectedPort)  writing")
        print("  recovery site   pid \(protection.recoveryPid)  port \(protection.recoveryPort)  receiving")
        print("`ftctl dr status --directory \(directory)` shows RPO and the journal window")
    }
}

/// `ftctl dr status`.
struct RecoveryStatus: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "Show a protection: both sites, RPO, the recovery site's journal window, a recovery's progress.")

    @Option(help: "The protection's directory.") var directory: String
    @Flag(help: "Print the status as JSON.") var json = false

    func run() throws {
        let protection = try Protection.load(directory)
        let protected = readReport(ProtectedSiteReport.self, from: Protection.protectedStatusPath(directory))
        let site = readReport(RecoverySiteReport.self, from: Protection.recoveryStatusPath(directory))
        let recovery = readReport(RecoveryProgressReport.self, from: Protection.progressPath(directory))
        let protectedRunning = Protection.running(protection.protectedPid, "protected-site")
        let siteRunning = Protection.running(protection.recoveryPid, "recovery-site")
        let now = Date().timeIntervalSince1970
        if json {
            var object: [String: Any] = [
                "protectedSite": ["pid": protection.protectedPid, "running": protectedRunning],
                "recoverySite": ["pid": protection.recoveryPid, "running": siteRunning],
            ]
            let encoder = JSONEncoder()
            func merge(_ key: String, _ value: (some Encodable)?) throws {
                guard let value else { return }
                let decoded = try JSONSerialization.jsonObject(with: try encoder.encode(value))
                if var existing = object[key] as? [String: Any], let fields = decoded as? [String: Any] {
                    existing.merge(fields) { $1 }
                    object[key] = existing
                } else {
                    object[key] = decoded
                }
            }
            try merge("protectedSite", protected)
            try merge("recoverySite", site)
            try merge("recovery", recovery)
            let data = try JSONSerialization.data(withJSONObject: object, options: [.prettyPrinted, .sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        func age(_ updated: Double) -> String { String(format: "%.1f s ago", max(0, now - updated)) }
        print("protection in \(directory): \(protection.volumeBytes >> 20) MiB volume")
        var line = "  protected site  pid \(protection.protectedPid) \(protectedRunning ? "running" : "stopped")"
        if let protected {
            line += String(
                format: ", %d writes, durable through %llu, acknowledged through %llu, RPO %.1f ms (most %.1f ms), %@",
                protected.written, protected.durable, protected.acknowledged, protected.rpoMilliseconds,
                protected.mostRpoMilliseconds, age(protected.updated))
        }
        print(line)
        line = "  recovery site   pid \(protection.recoveryPid) \(siteRunning ? "running" : "stopped")"
        if let site {
            let window = Double(site.lastTimeNanoseconds - site.windowStartNanoseconds) / 1e9
            line +=
                ", journal holds sequences \(site.oldestSequence)...\(site.durableSequence) "
                + "(\(site.units) units, \(site.recordBytes >> 10) KiB of records), writes from "
                + "\(isoTime(site.windowStartNanoseconds)) to \(isoTime(site.lastTimeNanoseconds)) "
                + String(format: "(%.1f s), %@", window, age(site.updated))
        }
        print(line)
        if let recovery {
            let built = recovery.blocks == 0 ? 100 : recovery.built * 100 / recovery.blocks
            print(
                "  \(recovery.test ? "test failover" : "recovery") to \(recovery.point): \(recovery.phase), replica \(built)% built, "
                    + "\(recovery.dirty) blocks written by the workload, \(recovery.uncopied) to copy"
                    + (recovery.rtoMilliseconds.map { String(format: ", RTO %.0f ms", $0) } ?? "") + ", "
                    + age(recovery.updated))
        } else {
            print("  no recovery run yet")
        }
    }
}

/// An instant as an ISO 8601 time to the millisecond.
func isoTime(_ nanoseconds: Int64) -> String {
    let formatter = ISO8601DateFormatter()
    formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
    return formatter.string(from: Date(timeIntervalSince1970: Double(nanoseconds) / 1e9))
}

/// `ftctl dr recover`.
struct RecoveryRecover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recover",
        abstract: "Recover the protected environment at the recovery site: run it at once, build the replica, migrate.",
        discussion: """
            Refused while the protected site runs (use test-failover). Stops the recovery site's \
            receiver, makes the plan from environment.json at --at, and runs both processes at \
            once: every volume is served by a lazy volume on a FUSE mount, and the workloads start \
            in runc containers stage by stage (RTO: the request to the last stage answering) while \
            the replica builds; a workload writes over HTTP throughout; the migration copies the \
            overlay in rounds and switches while the containers are frozen. Checks the recovered \
            volume against the protected site's journal at the recovery point, and the replica \
            against everything the workload wrote. Needs root, /dev/fuse, runc and busybox-static.
            """)

    @OptionGroup var options: RecoverOptions

    func run() async throws {
        try await recoverEnvironment(options, test: false)
    }
}

/// `ftctl dr test-failover`.
struct RecoveryTestFailover: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "test-failover",
        abstract: "Recover a copy of the recovery site's journal while both sites keep running, then clean up.",
        discussion: """
            The recovery site's process is paused (SIGSTOP) while its journal directory is copied, \
            a few milliseconds to seconds; the protected site keeps writing meanwhile, and \
            shipping catches up after. The recovery then runs as `recover` does, on the copy, \
            in a directory of its own (test-failover-TIME), and removes its containers, mounts \
            and that directory at the end (a failed test leaves the directory to look at): \
            nothing the protected site uses is touched.
            """)

    @OptionGroup var options: RecoverOptions

    func run() async throws {
        try await recoverEnvironment(options, test: true)
    }
}

/// `ftctl dr down`.
struct RecoveryDown: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "down", abstract: "Stop a protection's site processes (SIGTERM); their files stay.")

    @Option(help: "The protection's directory.") var directory: String

    func run() throws {
        let protection = try Protection.load(directory)
        for (pid, role) in [(protection.protectedPid, "protected-site"), (protection.recoveryPid, "recovery-site")]
        where Protection.running(pid, role) {
            kill(pid, SIGTERM)
            print("\(role) pid \(pid) stopped")
        }
    }
}

/// Stops the recovery site's process and waits (up to 10 s) for it to go.
func stopRecoverySite(_ protection: Protection) throws {
    guard Protection.running(protection.recoveryPid, "recovery-site") else { return }
    kill(protection.recoveryPid, SIGTERM)
    for _ in 0..<1000 where Protection.running(protection.recoveryPid, "recovery-site") {
        waitpid(protection.recoveryPid, nil, WNOHANG)
        usleep(10_000)
    }
    guard !Protection.running(protection.recoveryPid, "recovery-site") else {
        throw CommandFailure("the recovery site (pid \(protection.recoveryPid)) did not stop")
    }
}

/// Copies the recovery site's journal directory with its process paused (SIGSTOP): a copy of
/// one moment, as a power cut would leave it.
func copyRecoveryJournal(_ protection: Protection, from source: String, to target: String) throws {
    let running = Protection.running(protection.recoveryPid, "recovery-site")
    if running { kill(protection.recoveryPid, SIGSTOP) }
    defer { if running { kill(protection.recoveryPid, SIGCONT) } }
    do {
        try FileManager.default.copyItem(atPath: source, toPath: target)
    } catch {
        throw CommandFailure("copying the recovery site's journal \(source): \(error.localizedDescription)")
    }
}

/// `recover` and `test-failover`: the plan, both processes at once, the checks.
func recoverEnvironment(_ options: RecoverOptions, test: Bool) async throws {
    if let missing = RecoveryDrill.missingTools() { throw CommandFailure(missing) }
    let directory = options.directory
    let requested = ContinuousClock.now
    let protection = try Protection.load(directory)
    let environmentBytes = try RecoveryPlanCommand.contents(of: Protection.environmentPath(directory))
    let environment: ProtectedEnvironment
    do {
        environment = try JSONDecoder().decode(ProtectedEnvironment.self, from: Data(environmentBytes))
    } catch {
        throw CommandFailure("\(Protection.environmentPath(directory)) is not an environment: \(error)")
    }
    let plan: RecoveryPlan
    do {
        plan = try RecoveryPlan.make(for: environment, point: try RecoveryPlanCommand.point(options.at), test: test)
    } catch {
        throw CommandFailure("\(Protection.environmentPath(directory)): \(error)")
    }

    // The journal to recover from: the recovery site's own, or for a test a copy of it.
    let journalDirectory: String
    let work: String
    if test {
        let stamp = Int(Date().timeIntervalSince1970 * 1000)
        work = directory + "/test-failover-\(stamp)"
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        journalDirectory = work + "/journal"
        let copied = ContinuousClock.now
        try copyRecoveryJournal(protection, from: directory + "/recovery-journal", to: journalDirectory)
        print("copied the recovery site's journal in \(ContinuousClock.now - copied) with its receiver paused")
    } else {
        if Protection.running(protection.protectedPid, "protected-site") {
            throw CommandFailure(
                "the protected site (pid \(protection.protectedPid)) is still running: a recovery takes over its "
                    + "workload; stop it first, or run `ftctl dr test-failover --directory \(directory)`")
        }
        work = directory + "/recovery"
        if FileManager.default.fileExists(atPath: work) {
            throw CommandFailure("\(work) holds an earlier recovery; remove it to recover again")
        }
        try stopRecoverySite(protection)
        journalDirectory = directory + "/recovery-journal"
    }
    print(RecoveryPlanCommand.describe(plan))
    let clock = ShippedClock()
    let (journalStore, journal) = try openRecoveryJournal(
        journalDirectory, volumes: [1], volumeBytes: protection.volumeBytes, clock: clock)
    defer { try? journalStore.close() }
    var sources: [String: any RecoveryPointSource] = [:]
    var points: [String: JournalRecoveryPoint] = [:]
    for volume in environment.volumes {
        do {
            let point = try JournalRecoveryPoint(
                journal: journal, volume: VolumeID(volume.journalVolume), at: plan.point)
            sources[volume.name] = point
            points[volume.name] = point
        } catch {
            throw CommandFailure("the recovery point is refused: \(error)")
        }
    }
    guard let data = points["data"] else { throw CommandFailure("the environment has no volume named data") }
    let recovery = try EnvironmentRecovery(
        plan: plan, sources: sources,
        configuration: .init(directory: work, containerPrefix: "ftdr-\(getpid())", stepBlocks: options.stepBlocks))
    defer { recovery.stop() }
    let starting = ContinuousClock.now
    let stages = try await recovery.start(prepareRoot: demoRoot, probe: demoProbe)
    let rto = ContinuousClock.now - requested
    for (index, stage) in stages.enumerated() {
        print("  stage \(index + 1) answering after \(stage.answeredAfter): \(stage.workloads.joined(separator: ", "))")
    }
    print(
        "recovered at \(isoTime(data.instant.nanoseconds)) (\(data.recordCount) journaled writes): RTO \(rto), "
            + "the workloads answering from containers on the lazy volume")
    print(
        "  RTO = \(starting - requested) to \(test ? "copy" : "stop the receiver and") open the journal at the point "
            + "+ \(rto - (starting - requested)) to the last stage answering")
    guard let volume = recovery.volumes["data"],
        let storeWorkload = environment.workloads.first(where: { $0.name == "store" }),
        let port = storeWorkload.ports.first
    else { throw CommandFailure("the demo environment lacks its store workload") }
    let progressPath = Protection.progressPath(directory)
    func report() {
        let progress = volume.progress
        writeReport(
            RecoveryProgressReport(
                test: test, point: isoTime(data.instant.nanoseconds), phase: "\(progress.phase)",
                blocks: progress.blocks, built: progress.built, dirty: progress.dirty, uncopied: progress.uncopied,
                rtoMilliseconds: millisecondCount(rto),
                updated: Date().timeIntervalSince1970), to: progressPath)
    }
    report()

    // The recovered volume is the protected volume as it was at the point: checked against
    // the protected site's own journal after a disaster, against the copy in a test.
    var expected: [UInt8]
    if !test, FileManager.default.fileExists(atPath: directory + "/protected") {
        let protectedStore = try JournalStore.open(directory: directory + "/protected", options: .init(readOnly: true))
        defer { try? protectedStore.close() }
        guard let protectedJournal = protectedStore.journal(1) else { throw CommandFailure("no protected journal") }
        expected = try protectedJournal.image(of: 1, at: data.instant)
        let lost = try protectedJournal.records(
            from: data.instant + .nanoseconds(1), through: .init(nanoseconds: .max)
        ).count
        print(
            "recovered volume = protected volume at the recovery point; \(lost) acknowledged writes after it were "
                + "not yet shipped (the RPO)")
    } else {
        expected = try journal.image(of: 1, at: data.instant)
    }
    guard try volume.read(at: 0, count: protection.volumeBytes) == expected else {
        throw CommandFailure("the recovered volume differs from the protected volume at the recovery point")
    }

    // The workload writes over HTTP while the replica builds and the migration switches.
    let blocks = protection.volumeBytes / 4096
    let writes = NIOLockedValueBox<[Int: [UInt8]]>([:])
    let failures = NIOLockedValueBox<[String]>([])
    let done = ConditionLock(value: 0)
    let count = options.workloadWrites
    let writer = Thread {
        for step in 0..<count {
            let block = step &* 104_729 % blocks
            let bytes = drillBlock(block, version: 1_000_000 + step)
            do {
                let answer = try drillHTTP(
                    port: Int(port), method: "POST", path: "/cgi-bin/write?\(block)", body: bytes)
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
    let reporter = Task {
        await reportProgress(of: volume) { report() }
    }
    let summaries = try await recovery.migrate()
    reporter.cancel()
    await reporter.value
    report()
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
    if let summary = summaries["data"] {
        print(
            "replica built in \(summary.build), \(summary.roundCount) migration rounds, frozen \(summary.freeze) "
                + "for the last \(summary.blocksCopiedInFreeze) blocks; the workload wrote \(count) blocks over HTTP meanwhile"
        )
    }

    // After the switch: the replica itself holds everything the workload saw and wrote.
    for (block, bytes) in writes.withLockedValue({ $0 }) {
        expected.replaceSubrange(block * 4096..<(block + 1) * 4096, with: bytes)
    }
    guard volume.phase == .switched else { throw CommandFailure("the volume did not switch: \(volume.progress)") }
    guard let replica = recovery.replica(of: "data"),
        try replica.read(at: 0, count: protection.volumeBytes) == expected
    else { throw CommandFailure("the replica differs from what the workload saw and wrote") }
    for step in 0..<16 {
        let block = step * 7 % blocks
        let answer = try drillHTTP(port: Int(port), method: "GET", path: "/cgi-bin/read?\(block)")
        guard answer.status == 200, answer.body[...] == expected[block * 4096..<(block + 1) * 4096] else {
            throw CommandFailure("the container reads block \(block) wrong after the switch")
        }
    }
    print(
        "after the switch the replica holds the recovery point and all \(writes.withLockedValue { $0.count }) blocks "
            + "the workload wrote: 0 writes lost across the migration")
    if test {
        // A test leaves nothing behind: its containers, mounts, copy of the journal and volumes go.
        recovery.stop()
        try? journalStore.close()
        try? FileManager.default.removeItem(atPath: work)
        let after = readReport(ProtectedSiteReport.self, from: Protection.protectedStatusPath(directory))
        print(
            "test failover done and cleaned up (\(work) removed); the protected site "
                + (Protection.running(protection.protectedPid, "protected-site") ? "kept running" : "is not running")
                + (after.map { String(format: ": %d writes, RPO %.1f ms", $0.written, $0.rpoMilliseconds) } ?? ""))
    }
}
