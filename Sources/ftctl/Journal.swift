public import ArgumentParser
import DeterministicSimulation
import ElasticJournal
import FaultToleranceCore
import Foundation
import Logging
import Synchronization

extension JournalBug: ExpressibleByArgument {}

/// `ftctl journal`: the elastic write journal on real files.
///
/// A journal directory holds two file pools: `DIR/units` (journal units) and `DIR/base`
/// (one unit per protected volume with its base image).
struct JournalCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "journal",
        abstract: "The elastic write journal (ElasticJournal): create, inspect, verify, recover, stress.",
        subcommands: [
            JournalCreate.self, JournalInspect.self, JournalVerify.self, JournalRecover.self, JournalSalvage.self,
            JournalStress.self,
            JournalCrashTest.self, JournalSimulate.self,
        ])
}

/// Renders a duration as seconds with three decimals.
func seconds(_ duration: Duration) -> String {
    String(format: "%.3f s", Double(duration.nanoseconds) / 1e9)
}

/// Renders an instant as UTC wall-clock time with milliseconds.
func wallTime(_ instant: Instant) -> String {
    let date = Date(timeIntervalSince1970: Double(instant.nanoseconds) / 1e9)
    let formatter = DateFormatter()
    formatter.dateFormat = "yyyy-MM-dd HH:mm:ss.SSS"
    formatter.timeZone = TimeZone(identifier: "UTC")
    return formatter.string(from: date) + " UTC"
}

/// `--journal ID`: which journal of a store a command works on.
struct JournalSelection: ParsableArguments {
    @Option(name: .customLong("journal"), help: "The journal's number, 1...2^64-1.")
    var id: UInt64?

    func validate() throws {
        if let id, id == 0 { throw ValidationError("--journal must be 1 or more, got 0") }
    }

    /// The selected journal; without `--journal`, the store's only journal (journal 1 when it
    /// has several). An unknown number is an error naming the journals there are.
    func journal(in store: JournalStore, directory: String) throws -> ElasticJournal {
        if let id {
            if let journal = store.journal(JournalID(id)) { return journal }
            throw CommandFailure("\(directory) has no journal \(id) (it has \(Self.list(store)))")
        }
        if let journal = store.journal(1) ?? (store.journals.count == 1 ? store.journals.first : nil) { return journal }
        if store.journals.isEmpty { throw CommandFailure("\(directory) holds no journal") }
        throw CommandFailure("\(directory) holds several journals (\(Self.list(store))): choose one with --journal")
    }

    /// The journals a listing command shows: the selected one, or every one.
    func journals(in store: JournalStore, directory: String) throws -> [ElasticJournal] {
        id == nil ? store.journals : [try journal(in: store, directory: directory)]
    }

    private static func list(_ store: JournalStore) -> String {
        store.journals.isEmpty ? "none" : store.journals.map { "\($0.id.rawValue)" }.joined(separator: ", ")
    }
}

/// The pools of a journal directory.
struct JournalDirectory {
    let path: String
    var units: String { JournalStore.Directory.units(in: path) }
    var base: String { JournalStore.Directory.base(in: path) }

    /// Opens the store through the library's ``JournalStore/open(directory:options:journalBudget:configurations:logger:metricsFactory:)``
    /// (the unit sizes are read from the pools' state files).
    func openStore(
        readOnly: Bool, salvage: Bool = false, budgetUnits: Int = 1 << 20, configuration: JournalConfiguration? = nil,
        journal: JournalID = 1
    ) throws -> JournalStore {
        var logger = Logger(label: "ftctl.journal")
        logger.logLevel = .warning
        // Read-only commands open the files read-only (a read-only mount works) and take no
        // lock; writers lock both pools against every other writer.
        guard let unitSize = try FileStoragePool.storedUnitCapacity(in: units),
            try FileStoragePool.storedUnitCapacity(in: base) != nil
        else { throw CommandFailure("\(path) is not a journal directory (run `ftctl journal create` first)") }
        var configurations: [JournalID: JournalConfiguration] = [:]
        if let configuration { configurations[journal] = configuration }
        return try JournalStore.open(
            directory: path, options: JournalStore.Options(readOnly: readOnly, salvage: salvage),
            journalBudget: budgetUnits * unitSize, configurations: configurations, logger: logger)
    }

    /// Whether the directory already holds a store (its units pool exists).
    var exists: Bool { FileManager.default.fileExists(atPath: units + "/pool.state") }

    /// Creates the directory with `journal` through the library's crash-safe
    /// ``JournalStore/create(directory:unitSize:journalUnits:volumes:volumeSize:configuration:journal:logger:metricsFactory:)``.
    func create(
        unitSize: Int, units: Int, volumes: Int, volumeSize: Int, configuration: JournalConfiguration,
        journal id: JournalID = 1
    ) throws -> (JournalStore, ElasticJournal) {
        var logger = Logger(label: "ftctl.journal")
        logger.logLevel = .warning
        let store = try JournalStore.create(
            directory: path, unitSize: unitSize, journalUnits: units,
            volumes: (1...volumes).map { VolumeID(UInt32($0)) }, volumeSize: volumeSize, configuration: configuration,
            journal: id, logger: logger)
        guard let journal = store.journal(id) else { throw CommandFailure("\(path): journal \(id) is missing") }
        return (store, journal)
    }
}

/// `ftctl journal create`.
struct JournalCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Create a journal directory with a journal, or add a journal to an existing one.",
        discussion: """
            In a new directory, creates the pools and journal --journal (1 by default). In an \
            existing journal directory, adds journal --journal beside the ones there: it shares \
            their pool of units and its volumes have their size (--unit-size and --volume-size \
            then must be left out or match).
            """)

    @Argument(help: "The journal directory.") var directory: String
    @Option(name: .customLong("journal"), help: "The new journal's number, 1...2^64-1.") var journalID: UInt64 = 1
    @Option(help: "Protected volumes (numbered 1...N), 1...4096.") var volumes = 1
    @Option(help: "Bytes per volume, 1...2^40 (default 1048576).") var volumeSize: Int?
    @Option(help: "Bytes per journal unit, 65536...2^30 (default 4194304).") var unitSize: Int?
    @Option(help: "Units the pool may hold, 2...2^20.") var units = 64
    @Option(help: "History window (e.g. 30s, 5m), more than 0.") var window = "60s"
    @Option(help: "Most units the journal may hold, 1...--units.") var quota = 32

    func validate() throws {
        if journalID == 0 { throw ValidationError("--journal must be 1 or more, got 0") }
        try require("--volumes", volumes, in: 1...4096)
        if let volumeSize { try require("--volume-size", volumeSize, in: 1...(1 << 40)) }
        if let unitSize { try require("--unit-size", unitSize, in: 65_536...(1 << 30)) }
        try require("--units", units, in: 2...(1 << 20))
        try require("--quota", quota, in: 1...units)
        guard try requireDuration("--window", window) > .zero else {
            throw ValidationError("--window must be more than 0, got \(window)")
        }
    }

    func run() throws {
        let window = try requireDuration("--window", window)
        let configuration = JournalConfiguration(window: window, quota: quota)
        let folder = JournalDirectory(path: directory)
        let id = JournalID(journalID)
        guard folder.exists else {
            let (volumeSize, unitSize) = (volumeSize ?? 1 << 20, unitSize ?? 4 << 20)
            let (store, _) = try folder.create(
                unitSize: unitSize, units: units, volumes: volumes, volumeSize: volumeSize,
                configuration: configuration, journal: id)
            try store.close()
            print(
                "created \(directory) with \(id): \(volumes) volume(s) of \(volumeSize) bytes, units of \(unitSize) bytes"
            )
            return
        }
        if let unitSize, let existing = try FileStoragePool.storedUnitCapacity(in: folder.units), unitSize != existing {
            throw CommandFailure("\(directory) has units of \(existing) bytes, not --unit-size \(unitSize)")
        }
        if let volumeSize, let existing = try FileStoragePool.storedUnitCapacity(in: folder.base),
            volumeSize != existing - JournalFormat.baseHeaderSize
        {
            throw CommandFailure(
                "\(directory) has volumes of \(existing - JournalFormat.baseHeaderSize) bytes, not --volume-size \(volumeSize)"
            )
        }
        let store = try folder.openStore(readOnly: false, budgetUnits: units)
        _ = try store.createJournal(
            id, configuration: configuration, volumes: (1...volumes).map { VolumeID(UInt32($0)) })
        let count = store.journals.count
        try store.close()
        print("added \(id) to \(directory): \(volumes) volume(s); it now holds \(count) journals")
    }
}

/// `ftctl journal inspect`.
struct JournalInspect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "inspect",
        abstract: "Show units, window, records, sizes and the effective window (read-only).")

    @Argument(help: "The journal directory.") var directory: String
    @OptionGroup var selection: JournalSelection

    func run() throws {
        let store = try JournalDirectory(path: directory).openStore(readOnly: true)
        let now = JournalStore.wallClock()
        let journals = try selection.journals(in: store, directory: directory)
        if selection.id == nil {
            let ids = journals.map { "\($0.id.rawValue)" }.joined(separator: ", ")
            print("\(directory): \(journals.count) journal(s): \(ids)")
        }
        for journal in journals {
            let status = journal.status
            print(
                "\(journal.id): window \(seconds(journal.configuration.window)), quota \(journal.configuration.quota) units"
            )
            print("  records       \(status.units.first.map { $0.firstSequence } ?? 0)...\(status.lastSequence)")
            print("  record bytes  \(status.recordBytes)")
            print("  window start  \(wallTime(status.windowStart))")
            print("  last record   \(wallTime(status.lastTime))")
            print(
                "  effective     \(seconds(journal.effectiveWindow(now: now))) of \(seconds(journal.configuration.window))"
            )
            for (volume, size) in status.volumes.sorted(by: { $0.key < $1.key }) { print("  \(volume): \(size) bytes") }
            print("  units (\(status.units.count)):")
            for unit in status.units {
                let count = unit.isEmpty ? 0 : unit.lastSequence - unit.firstSequence + 1
                print(
                    "    \(unit.unit)  \(unit.sealed ? "sealed" : "active")  records \(unit.firstSequence)...\(unit.lastSequence) "
                        + "(\(count))  \(wallTime(unit.firstTime)) → \(wallTime(unit.lastTime))"
                        + (unit.location.map { "  \($0)" } ?? ""))
            }
        }
        for event in store.recentEvents { print("note: \(event)") }
    }
}

/// `ftctl journal verify`.
struct JournalVerify: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify", abstract: "Check every checksum, sequence and seal (read-only), with progress.")

    @Argument(help: "The journal directory.") var directory: String
    @OptionGroup var selection: JournalSelection

    func run() throws {
        let store = try JournalDirectory(path: directory).openStore(readOnly: true)
        for journal in try selection.journals(in: store, directory: directory) {
            let started = ContinuousClock.now
            let report = try journal.verify { done, total in
                let fraction = total > 0 ? Double(done) / Double(total) : 1
                let bar = String(repeating: "#", count: Int(fraction * 30)).padding(
                    toLength: 30, withPad: ".", startingAt: 0)
                FileHandle.standardError.write(Data("\r[\(bar)] \(Int(fraction * 100))% \(done >> 20) MiB".utf8))
            }
            FileHandle.standardError.write(Data("\n".utf8))
            let elapsed = ContinuousClock.now - started
            let rate =
                Double(report.bytes)
                / max(1e-9, Double(elapsed.components.attoseconds) / 1e18 + Double(elapsed.components.seconds))
            print(
                "\(journal.id): OK — \(report.units) units, \(report.records) records "
                    + "(\(report.firstSequence)...\(report.lastSequence)), \(report.bytes) bytes, "
                    + String(format: "%.0f MB/s", rate / 1e6))
        }
    }
}

/// `ftctl journal recover`.
struct JournalRecover: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "recover",
        abstract: "Write a volume's image as it was at an instant (read-only on the journal).",
        discussion: """
            The instant is --at (nanoseconds since the Unix epoch, or `latest`), moved back by \
            --before (e.g. 2s, 250ms) if given.
            """)

    @Argument(help: "The journal directory.") var directory: String
    @Option(help: "The volume.") var volume: UInt32 = 1
    @Option(help: "The instant: nanoseconds since the Unix epoch, or `latest` (the last record).") var at = "latest"
    @Option(help: "How long before --at (e.g. 2s, 250ms).") var before: String?
    @Option(help: "Where to write the image: a file outside the journal directory.") var out: String
    @OptionGroup var selection: JournalSelection

    func validate() throws {
        // Never over one of the journal's own files: compare the paths with `..` and symbolic
        // links resolved (the file itself need not exist yet).
        let journal = URL(fileURLWithPath: directory).standardizedFileURL.resolvingSymlinksInPath().path
        let target = URL(fileURLWithPath: out).standardizedFileURL
        let resolved =
            target.deletingLastPathComponent().resolvingSymlinksInPath()
            .appendingPathComponent(target.lastPathComponent).path
        if resolved == journal || resolved.hasPrefix(journal.hasSuffix("/") ? journal : journal + "/") {
            throw ValidationError("--out must be outside the journal directory \(directory), got \(out)")
        }
        if at != "latest" {
            guard let nanoseconds = Int64(at), nanoseconds >= 0 else {
                throw ValidationError(
                    "--at must be `latest` or nanoseconds since the Unix epoch (0 or more), got \(at)")
            }
        }
        if let before { _ = try requireDuration("--before", before) }
    }

    func run() throws {
        let store = try JournalDirectory(path: directory).openStore(readOnly: true)
        let journal = try selection.journal(in: store, directory: directory)
        let last = journal.status.lastTime
        var instant: Instant
        if at == "latest" {
            instant = last
        } else if let nanoseconds = Int64(at) {
            instant = Instant(nanoseconds: nanoseconds)
        } else {
            throw ValidationError("bad --at \(at)")
        }
        if let before {
            let duration = try requireDuration("--before", before)
            guard instant.nanoseconds >= duration.nanoseconds else {
                throw CommandFailure("--before \(before) reaches before the Unix epoch from \(instant.nanoseconds)")
            }
            instant = instant + .nanoseconds(-duration.nanoseconds)
        }
        let image = try journal.image(of: VolumeID(volume), at: instant)
        try Data(image).write(to: URL(fileURLWithPath: out))
        print(
            "wrote \(image.count) bytes of \(journal.id) volume-\(volume) at \(wallTime(instant)) (\(instant.nanoseconds)) "
                + "to \(out)")
    }
}

/// `ftctl journal salvage`.
struct JournalSalvage: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "salvage",
        abstract: "Cut a damaged journal just before its first damage (records after it are lost).",
        discussion: """
            Opening a journal refuses damage: bad records, seals, links, durable records missing \
            from the active unit, missing units, unreadable headers. This reads every record of \
            every unit and cuts the journal before the first damage. Nothing is deleted: units \
            after the cut, units with unreadable headers, and a copy of the cut unit are moved \
            to `quarantine/` beside the units. `--dry-run` only reports the first damage (exit \
            1 if there is some).
            """)

    @Argument(help: "The journal directory.") var directory: String
    @Flag(help: "Report what would be cut, change nothing.") var dryRun = false

    func run() throws {
        let journalDirectory = JournalDirectory(path: directory)
        if dryRun {
            do {
                let store = try journalDirectory.openStore(readOnly: true)
                for journal in store.journals { _ = try journal.verify() }
                print("dry run: no damage found; salvage would cut nothing")
            } catch let error as JournalError where error.code == .damaged {
                print("dry run: salvage would cut at the first damage: \(error)")
                print("  every record after it would be given up (its units quarantined, not deleted)")
                throw ExitCode(1)
            }
            return
        }
        let store = try journalDirectory.openStore(readOnly: false, salvage: true)
        var changed = false
        for event in store.recentEvents {
            switch event {
            case .salvaged(let journal, let unit, let offset, let last):
                print("\(journal): cut in \(unit) at offset \(offset); the journal now ends at record \(last)")
                changed = true
            case .quarantined(let unit, let detail):
                print("quarantined \(unit): \(detail)")
                changed = true
            default:
                continue
            }
        }
        if !changed { print("no damage found; nothing cut") }
        for journal in store.journals {
            let report = try journal.verify()
            print(
                "\(journal.id): verify OK — \(report.records) records (\(report.firstSequence)...\(report.lastSequence))"
            )
        }
        try store.close()
    }
}

/// The payload of the stress writer's record `sequence`: checkable after a crash.
func stressPayload(sequence: UInt64, size: Int) -> [UInt8] {
    var state = sequence &* 0x9E37_79B9_7F4A_7C15
    return (0..<size).map { _ in
        state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
        return UInt8(truncatingIfNeeded: state >> 56)
    }
}

/// `ftctl journal stress`.
struct JournalStress: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "stress",
        abstract: "Append durably (group commit) and print each acknowledged sequence number.",
        discussion: """
            Creates the directory if needed. Prints `ack N` for every acknowledged record, \
            flushed at once, so a parent can kill it at any moment and check that every \
            acknowledged record survived. Record N's payload is derived from N.
            """)

    @Argument(help: "The journal directory.") var directory: String
    @Option(help: "Records to append (0: until killed).") var count = 0
    @Option(help: "Payload bytes per record, 8...1048576 (the first 8 carry the record's token).") var size = 512
    @Option(help: "Concurrent appenders, 1...1024.") var concurrency = 8
    @Option(name: .customLong("journal"), help: "The journal, 1...2^64-1 (added if missing).") var journalID: UInt64 = 1

    func validate() throws {
        try require("--count", count, in: 0...Int(UInt32.max))
        try require("--size", size, in: 8...(1 << 20))
        try require("--concurrency", concurrency, in: 1...1024)
        if journalID == 0 { throw ValidationError("--journal must be 1 or more, got 0") }
    }

    func run() async throws {
        let folder = JournalDirectory(path: directory)
        let configuration = JournalConfiguration(window: .seconds(3600), quota: 64)
        let store: JournalStore
        let journal: ElasticJournal
        let id = JournalID(journalID)
        if folder.exists {
            store = try folder.openStore(readOnly: false, budgetUnits: 64, configuration: configuration, journal: id)
            journal = try store.journal(id) ?? store.createJournal(id, configuration: configuration, volumes: [1])
        } else {
            (store, journal) = try folder.create(
                unitSize: 1 << 20, units: 64, volumes: 1, volumeSize: 1 << 20, configuration: configuration,
                journal: id)
        }
        guard let volumeBytes = journal.status.volumes[1], volumeBytes > size else {
            throw ValidationError("volume-1 must be larger than --size \(size)")
        }
        let volumeSize = UInt64(volumeBytes - size)
        // Each appender claims a record before appending it, so exactly --count are appended.
        let claimed = Claims()
        let limit = count
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<concurrency {
                group.addTask {
                    while limit == 0 || claimed.claim(upTo: limit) {
                        // The sequence is assigned inside append; the payload must be known
                        // before, so each record carries the sequence it expects and the
                        // checker matches payloads by the sequence stored in the first 8 bytes.
                        let token = UInt64.random(in: 0...UInt64.max)
                        var payload = stressPayload(sequence: token, size: size)
                        withUnsafeBytes(of: token.littleEndian) { payload.replaceSubrange(0..<8, with: $0) }
                        let receipt = try await journal.append(
                            volume: 1, offset: token % volumeSize, bytes: payload)
                        // One unbuffered write per acknowledgement: a kill loses no printed line.
                        FileHandle.standardOutput.write(Data("ack \(receipt.sequence)\n".utf8))
                    }
                }
            }
            try await group.waitForAll()
        }
        try store.close()
    }
}

/// Records claimed by `journal stress`'s appenders.
final class Claims: Sendable {
    private let claimed = Mutex(0)

    /// Claims one more record, if fewer than `limit` have been claimed.
    func claim(upTo limit: Int) -> Bool {
        claimed.withLock { claimed in
            guard claimed < limit else { return false }
            claimed += 1
            return true
        }
    }
}

/// Checks that a stress record's payload is the one derived from its token.
func stressPayloadIsIntact(_ bytes: [UInt8]) -> Bool {
    guard bytes.count >= 8 else { return false }
    let token = bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) }
    var expected = stressPayload(sequence: token, size: bytes.count)
    withUnsafeBytes(of: token.littleEndian) { expected.replaceSubrange(0..<8, with: $0) }
    return expected == bytes
}
