import ArgumentParser
import DeterministicSimulation
import FaultToleranceCore
import Foundation
import HotSpare
import Logging
import NIOConcurrencyHelpers

// `ftctl spare create/status/migrate/crash-test`: arrays whose members are files in a
// directory (a FileStoragePool: one writer process at a time, `fdatasync`, discards punch holes).

/// The array's own id in errors; its members are the pool's units.
let fileArrayID = UnitID(0)

/// Opens the pool in `directory` that `ftctl spare create` made, or says why not.
func openSparePool(_ directory: String, access: FileStoragePool.Access = .readWrite) throws -> FileStoragePool {
    guard let capacity = try FileStoragePool.storedUnitCapacity(in: directory) else {
        throw CommandFailure("\(directory) holds no array (no pool.state); make one with `ftctl spare create`")
    }
    return try FileStoragePool(
        directories: [directory], unitCapacity: capacity, budget: capacity * 1024, access: access,
        logger: quietPoolLogger)
}

/// The pool's logger for the CLI: warnings and worse.
let quietPoolLogger: Logger = {
    var logger = Logger(label: "ftctl.spare.pool")
    logger.logLevel = .warning
    return logger
}()

/// `ftctl spare create DIR`.
struct SpareCreate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Make an array of file-backed members and hot spares in a new directory.")

    @Argument(help: "Directory for the member files, new or empty.") var directory: String
    @Option(help: "Members in roles (a mirror needs an even number).") var members = 4
    @Option(help: "Hot spares.") var spares = 1
    @Option(help: "Megabytes of each member file.") var megabytes = 64
    @Option(help: "Layout: mirror or concatenated.") var layout = "mirror"
    @Option(help: "Kilobytes per block (the unit of placement and copying), a power of two, 4...1024.")
    var blockKib = 64
    @Option(help: "Percent of the blocks to fill with random data (so a migration has live data to copy).")
    var fill = 0

    func validate() throws {
        try require("--fill", fill, in: 0...100)
        try require("--members", members, in: 1...32)
        try require("--spares", spares, in: 0...32)
        try require("--megabytes", megabytes, in: 1...1_048_576)
        try require("--block-kib", blockKib, in: 4...1024)
        guard blockKib & (blockKib - 1) == 0 else {
            throw ValidationError("--block-kib must be a power of two, got \(blockKib)")
        }
        guard ArrayLayout.allCases.contains(where: { $0.description == layout }) else {
            throw ValidationError("--layout must be mirror or concatenated, got \(layout)")
        }
        if layout == "mirror", members % 2 != 0 {
            throw ValidationError("--members must be even for a mirror, got \(members)")
        }
        if let contents = try? FileManager.default.contentsOfDirectory(atPath: directory), !contents.isEmpty {
            throw ValidationError("\(directory) must be new or empty; it holds \(contents.count) entries")
        }
    }

    func run() async throws {
        let capacity = megabytes << 20
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        let pool = try FileStoragePool(
            directories: [directory], unitCapacity: capacity, budget: capacity * (members + spares),
            logger: quietPoolLogger)
        defer { pool.close() }
        let units = try (0..<(members + spares)).map { _ in try pool.allocate() }
        let chosen = ArrayLayout.allCases.first { $0.description == layout } ?? .mirror
        let array = try StorageArray.create(
            id: fileArrayID, members: Array(units.prefix(members)), spares: Array(units.dropFirst(members)),
            configuration: .init(layout: chosen, blockSize: blockKib << 10))
        var random = SystemRandomNumberGenerator()
        let blockSize = array.geometry.blockSize
        var block = [UInt8](repeating: 0, count: blockSize)
        for index in (0..<array.geometry.blockCount).shuffled(using: &random).prefix(
            array.geometry.blockCount * fill / 100)
        {
            block.withUnsafeMutableBytes { raw in
                for word in 0..<(blockSize / 8) {
                    raw.storeBytes(of: random.next(), toByteOffset: word * 8, as: UInt64.self)
                }
            }
            try array.write(block, at: index * blockSize)
        }
        try array.synchronize()
        print(
            "array \(String(array.arrayID, radix: 16)) in \(directory): \(layout), \(members) members and \(spares) "
                + "spares of \(megabytes) MiB, \(array.capacity >> 20) MiB for the host in blocks of \(blockKib) KiB"
                + (fill > 0 ? ", \(array.status.liveBlocks) filled" : ""))
    }
}

/// `ftctl spare status DIR`.
struct SpareStatus: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "status",
        abstract: "What an array's members say: roles, spares, failures, the migration and its progress.",
        discussion: """
            Reads the labels and the newest record without writing, so it works while another \
            process (`ftctl spare migrate`) runs the array. A foreign or blank unit in the \
            directory is named; exits 1 if a member is missing or has failed.
            """)

    @Argument(help: "The array's directory.") var directory: String
    @Flag(help: "Print the status as JSON.") var json = false

    func run() async throws {
        let pool = try openSparePool(directory, access: .readOnly)
        defer { pool.close() }
        let found = try StorageArray.examine(units: pool.units)
        let status = found.status
        let geometry = found.geometry
        let paths = Dictionary(pool.units.map { ($0.id, $0.path) }, uniquingKeysWith: { first, _ in first })
        func path(_ member: UnitID) -> String { found.units[member].flatMap { paths[$0] } ?? "missing" }
        let live = status.liveBlocks * geometry.blockSize
        if json {
            var object: [String: Any] = [
                "array": String(found.arrayID, radix: 16), "layout": geometry.layout.description,
                "capacity": geometry.capacity, "blockSize": geometry.blockSize, "liveBytes": live,
                "generation": status.generation, "sequence": status.sequence,
                "roles": status.roles.map { ["member": $0.rawValue, "path": path($0)] as [String: Any] },
                "spares": status.spares.map(\.rawValue), "failed": status.failed.map(\.rawValue),
                "erasing": status.erasing.map(\.rawValue), "missing": found.missing.map(\.rawValue),
            ]
            if let migration = status.migration {
                object["migration"] = [
                    "role": migration.role, "from": status.roles[migration.role].rawValue,
                    "to": migration.target.rawValue, "kind": migration.kind == .proactive ? "proactive" : "rebuild",
                    "done": migration.resumeFrom, "total": geometry.blocksPerRole,
                ]
            }
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else {
            print(
                "array \(String(found.arrayID, radix: 16)): \(geometry.layout), \(geometry.capacity >> 20) MiB in "
                    + "\(geometry.blockCount) blocks of \(geometry.blockSize >> 10) KiB, \(status.liveBlocks) live "
                    + "(\(live >> 20) MiB); generation \(status.generation), record \(status.sequence)")
            for (role, member) in status.roles.enumerated() {
                let state =
                    status.failed.contains(member) ? "failed" : found.missing.contains(member) ? "missing" : "ok"
                print("  role \(role): \(member) \(state)  \(path(member))")
            }
            for member in status.spares { print("  spare: \(member)  \(path(member))") }
            for member in status.erasing { print("  erasing (left by a migration): \(member)  \(path(member))") }
            for member in status.failed where !status.roles.contains(member) { print("  failed: \(member)") }
            if let migration = status.migration {
                let percent = migration.resumeFrom * 100 / max(1, geometry.blocksPerRole)
                print(
                    "  migration (\(migration.kind == .proactive ? "proactive" : "rebuild")): role \(migration.role) "
                        + "\(status.roles[migration.role]) -> \(migration.target), \(migration.resumeFrom) of "
                        + "\(geometry.blocksPerRole) role blocks done (\(percent) %, as last recorded)")
            } else {
                print("  no migration")
            }
        }
        if !found.missing.isEmpty || status.roles.contains(where: status.failed.contains) { throw ExitCode(1) }
    }
}

/// `ftctl spare migrate DIR --member N`.
struct SpareMigrate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "migrate",
        abstract: "Move a member's live blocks to a spare, swap it out and erase it (or resume the migration).",
        discussion: """
            Copies only the blocks that hold data while the array stays usable, records the swap \
            on every member, then punches holes over the old member's data and makes it a spare. \
            A failed member is rebuilt from its mirror partner instead. A migration that was \
            interrupted (killed, power cut) resumes where its last record says; without \
            --member, only such a migration is resumed.
            """)

    @Argument(help: "The array's directory.") var directory: String
    @Option(help: "The member (unit number) to move.") var member: UInt64?
    @Option(help: "Live blocks copied per step (each step ends with an fdatasync of the target and a progress record).")
    var stepBlocks = 256

    func validate() throws {
        try require("--step-blocks", stepBlocks, in: 1...65_536)
    }

    func run() async throws {
        let pool = try openSparePool(directory)
        defer { pool.close() }
        let array = try StorageArray.open(id: fileArrayID, units: pool.units, allowMissing: true)
        let status = array.status
        if let migration = status.migration {
            let from = status.roles[migration.role]
            if let member, UnitID(member) != from {
                throw CommandFailure(
                    "a migration of \(from) to \(migration.target) is in progress; resume it first (without --member)")
            }
            print("resuming the migration of \(from) to \(migration.target) at role block \(migration.resumeFrom)")
        } else {
            guard let member else {
                throw CommandFailure("no migration in progress; name the member to move with --member")
            }
            let subject = UnitID(member)
            guard status.roles.contains(subject) else {
                throw CommandFailure(
                    "\(subject) holds no role; the roles are \(status.roles.map(\.description).joined(separator: ", "))"
                )
            }
            if status.failed.contains(subject) {
                try array.beginRebuild(of: subject)
            } else {
                try array.beginMigration(of: subject)
            }
            print(
                "moving \(subject) to \(array.status.migration.map(\.target.description) ?? "?"): \(status.liveBlocks) "
                    + "live blocks of \(array.geometry.blockCount)")
        }
        var shown = -1
        let report = try await array.runMigration(stepBlocks: stepBlocks) { done, total in
            let percent = done * 100 / max(1, total)
            guard percent != shown else { return }
            shown = percent
            let bar = String(repeating: "#", count: percent / 4) + String(repeating: ".", count: 25 - percent / 4)
            FileHandle.standardError.write(Data("\r[\(bar)] \(percent) %".utf8))
        }
        FileHandle.standardError.write(Data("\r[\(String(repeating: "#", count: 25))] 100 %\n".utf8))
        print(
            "role \(report.role): \(report.from) -> \(report.to), \(report.bytesCopied >> 10) KiB copied; "
                + (report.erased ? "\(report.from) erased and made a spare" : "\(report.from) failed, not erased"))
    }
}

// MARK: - Crash test

/// The crash test's pages: a stamp (page, version) and bytes drawn from it, so a page read
/// back names the write it came from and a torn or misplaced one shows.
enum CrashPage {
    static let size = 4096

    static func fill(_ buffer: UnsafeMutableRawBufferPointer, page: Int, version: UInt64) {
        buffer.storeBytes(of: UInt64(page).littleEndian, toByteOffset: 0, as: UInt64.self)
        buffer.storeBytes(of: version.littleEndian, toByteOffset: 8, as: UInt64.self)
        forEachWord(page: page, version: version) { offset, word in
            buffer.storeBytes(of: word, toByteOffset: offset, as: UInt64.self)
            return true
        }
    }

    /// The words after the stamp, in order, drawn from (page, version); `body` returns false to stop.
    /// Returns whether every call returned true.
    @discardableResult
    private static func forEachWord(page: Int, version: UInt64, _ body: (Int, UInt64) -> Bool) -> Bool {
        var state = UInt64(page) &* 0x9E37_79B9_7F4A_7C15 ^ version
        for word in 2..<(size / 8) {
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            guard body(word * 8, state) else { return false }
        }
        return true
    }

    enum Content: Equatable {
        case zeros
        case stamp(version: UInt64)
        case garbage
    }

    /// What `bytes` (one page read back) holds, compared word by word with what its stamp says.
    static func decode(_ bytes: UnsafeRawBufferPointer, page: Int) -> Content {
        guard bytes.count == size else { return .garbage }
        if bytes.allSatisfy({ $0 == 0 }) { return .zeros }
        let stampedPage = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 0, as: UInt64.self))
        let version = UInt64(littleEndian: bytes.loadUnaligned(fromByteOffset: 8, as: UInt64.self))
        guard stampedPage == UInt64(page) else { return .garbage }
        let intact = forEachWord(page: page, version: version) { offset, word in
            bytes.loadUnaligned(fromByteOffset: offset, as: UInt64.self) == word
        }
        return intact ? .stamp(version: version) : .garbage
    }
}

/// What the host may find in one page after a kill.
struct CrashPageModel {
    /// The last acknowledged operation: a write's version, or a discard's.
    var acknowledged: (version: UInt64, discard: Bool)?
    /// The newest discard issued (acknowledged or not).
    var lastDiscardIssued: UInt64 = 0

    func allows(_ content: CrashPage.Content) -> Bool {
        switch content {
        case .garbage: return false
        case .zeros:
            guard let acknowledged else { return true }
            return acknowledged.discard || lastDiscardIssued > acknowledged.version
        case .stamp(let version):
            guard let acknowledged else { return true }
            return acknowledged.discard ? version > acknowledged.version : version >= acknowledged.version
        }
    }
}

/// `ftctl spare crash-test`: SIGKILL a child that writes to a file-backed mirror while it migrates.
struct SpareCrashTest: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crash-test",
        abstract: "SIGKILL a child writing to a file-backed mirror during migrations; check every acknowledged page.",
        discussion: """
            Makes a mirror of four file-backed members and a spare. Each round starts a child \
            (`ftctl spare crash-child`) that assembles the array (resuming the migration its \
            record names), writes and discards stamped 4 KiB pages from one thread, printing each \
            one once synchronized, and migrates members to the spare one after another from \
            another; it is SIGKILLed after a random delay. The parent then assembles the array \
            and checks every page through the array and on every serving copy (both mirror \
            members, and the migration's target below its resume point): each holds its last \
            acknowledged write, or a later one, or zeros after a discard. At the end the \
            migration in progress is run to its end and everything is checked again. Exits 1 on \
            the first failure.
            """)

    @Option(help: "Rounds, 1...100000.") var rounds = 20
    @Option(help: "Directory for the array, new or empty, kept afterwards (default: a temporary one, removed).")
    var directory: String?
    @Option(help: "Longest time before the kill, in milliseconds, 20...600000.") var maximumDelay = 600
    @Option(help: "Megabytes of each member file.") var megabytes = 8
    @Option(help: "Seed for the kill delays and the children's writes.") var seed: UInt64 = 1

    func validate() throws {
        try require("--rounds", rounds, in: 1...100_000)
        try require("--maximum-delay", maximumDelay, in: 20...600_000)
        try require("--megabytes", megabytes, in: 2...4096)
        if let directory, let contents = try? FileManager.default.contentsOfDirectory(atPath: directory),
            !contents.isEmpty
        {
            throw ValidationError(
                "--directory must be new or empty; \(directory) already holds \(contents.count) entries")
        }
    }

    func run() async throws {
        let path = directory ?? (NSTemporaryDirectory() + "ftctl-spare-crash-\(getpid())")
        if directory == nil { try? FileManager.default.removeItem(atPath: path) }
        defer { if directory == nil { try? FileManager.default.removeItem(atPath: path) } }
        let executable = try FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")
        let capacity = megabytes << 20
        do {
            let pool = try FileStoragePool(
                directories: [path], unitCapacity: capacity, budget: capacity * 5, logger: quietPoolLogger)
            defer { pool.close() }
            let units = try (0..<5).map { _ in try pool.allocate() }
            _ = try StorageArray.create(
                id: fileArrayID, members: Array(units.prefix(4)), spares: [units[4]],
                configuration: .init(layout: .mirror, blockSize: 64 << 10))
        }
        var random = SimulationRandom(seed: seed)
        var models: [Int: CrashPageModel] = [:]
        var acknowledgements = 0
        var migrations = 0
        var resumed = 0
        for round in 1...rounds {
            let delay = Int.random(in: 20...maximumDelay, using: &random)
            let lines = try await linesOfKilledChild(
                executable, ["spare", "crash-child", path, "--round", "\(round)", "--seed", "\(seed)"],
                after: .milliseconds(delay))
            var acknowledged = 0
            for line in lines {
                let words = line.split(separator: " ")
                switch words.first {
                case "ack" where words.count == 4:
                    guard let page = Int(words[1]), let version = UInt64(words[2]) else { continue }
                    models[page, default: .init()].acknowledged = (version, words[3] == "discard")
                    acknowledged += 1
                case "discarding" where words.count == 3:
                    guard let page = Int(words[1]), let version = UInt64(words[2]) else { continue }
                    models[page, default: .init()].lastDiscardIssued = version
                case "migrated": migrations += 1
                case "resuming": resumed += 1
                case "error": throw failure("round \(round): the child failed: \(line)")
                default: break
                }
            }
            acknowledgements += acknowledged
            let summary = try check(path, models, when: "round \(round)")
            print(
                "round \(round): killed after \(delay) ms, \(acknowledged) acknowledged; \(summary)")
        }
        // The migration left in progress resumes and finishes; everything still holds.
        let pool = try openSparePool(path)
        let array = try StorageArray.open(id: fileArrayID, units: pool.units)
        var finished = "no migration was left in progress"
        if let migration = array.status.migration {
            let report = try await array.runMigration(stepBlocks: 32)
            finished =
                "the migration left at role block \(migration.resumeFrom) resumed and finished "
                + "(\(report.from) -> \(report.to), \(report.erased ? "erased" : "not erased"))"
        }
        pool.close()
        let summary = try check(path, models, when: "after the last migration")
        print("\(finished); \(summary)")
        print(
            "crash test passed: \(rounds) SIGKILLs, \(acknowledgements) acknowledged page operations, "
                + "\(migrations) migrations finished and \(resumed) resumed by the children, nothing acknowledged lost")
    }

    /// Assembles the array and checks every page the model knows, through the array and on
    /// every serving copy.
    private func check(_ path: String, _ models: [Int: CrashPageModel], when: String) throws -> String {
        let pool = try openSparePool(path)
        defer { pool.close() }
        let array = try StorageArray.open(id: fileArrayID, units: pool.units)
        let status = array.status
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: CrashPage.size, alignment: 8)
        defer { buffer.deallocate() }
        var copies = 0
        for (page, model) in models {
            let offset = page * CrashPage.size
            try array.read(into: buffer, at: offset)
            let content = CrashPage.decode(UnsafeRawBufferPointer(buffer), page: page)
            guard model.allows(content) else {
                throw failure("\(when): page \(page) reads \(content) through the array; acknowledged \(model)")
            }
            for copy in array.copies(ofBlock: offset / array.geometry.blockSize) {
                try copy.unit.read(into: buffer, at: copy.offset + offset % array.geometry.blockSize)
                copies += 1
                let content = CrashPage.decode(UnsafeRawBufferPointer(buffer), page: page)
                guard model.allows(content) else {
                    throw failure("\(when): page \(page)'s copy on \(copy.member) is \(content); acknowledged \(model)")
                }
            }
        }
        let migration = status.migration.map {
            "migrating role \($0.role) to \($0.target) at \($0.resumeFrom)/\(array.geometry.blocksPerRole)"
        }
        return "generation \(status.generation), \(migration ?? "no migration"); \(models.count) pages and "
            + "\(copies) copies hold what was acknowledged"
    }

    private func failure(_ message: String) -> ExitCode {
        print("FAILED " + message)
        return ExitCode(1)
    }
}

/// `ftctl spare crash-child DIR`: the crash test's child (not for people).
struct SpareCrashChild: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "crash-child", abstract: "The crash test's child.", shouldDisplay: false)

    @Argument var directory: String
    @Option var round: Int
    @Option var seed: UInt64

    func validate() throws {
        try require("--round", round, in: 1...1_000_000)
    }

    func run() async throws {
        let out = LineOutput()
        do {
            let pool = try openSparePool(directory)
            let array = try StorageArray.open(id: fileArrayID, units: pool.units)
            if let migration = array.status.migration {
                out.emit("resuming role \(migration.role) at \(migration.resumeFrom)")
            }
            // The host: stamped pages over the first three fifths, a batch synchronized, then
            // acknowledged; one operation in sixteen a discard, announced before it starts.
            let pages = array.capacity * 3 / 5 / CrashPage.size
            let writer = Thread { [seed, round] in
                var random = SimulationRandom(seed: seed &* 1_000_003 &+ UInt64(round))
                var version = UInt64(round) << 32
                let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: CrashPage.size, alignment: 8)
                defer { buffer.deallocate() }
                do {
                    while true {
                        var batch: [(page: Int, version: UInt64, discard: Bool)] = []
                        for _ in 0..<8 {
                            version += 1
                            let page = Int(random.next() % UInt64(pages))
                            let offset = page * CrashPage.size
                            if random.next() % 16 == 0 {
                                out.emit("discarding \(page) \(version)")
                                try array.discard(offset..<offset + CrashPage.size)
                                batch.append((page, version, true))
                            } else {
                                CrashPage.fill(buffer, page: page, version: version)
                                try array.write(UnsafeRawBufferPointer(buffer), at: offset)
                                batch.append((page, version, false))
                            }
                        }
                        try array.synchronize()
                        for operation in batch {
                            out.emit(
                                "ack \(operation.page) \(operation.version) \(operation.discard ? "discard" : "write")")
                        }
                    }
                } catch {
                    out.emit("error host I/O: \(error)")
                    Foundation.exit(1)
                }
            }
            writer.start()
            // The migrations: one member after another, each to the spare the last one left.
            var next = round
            while true {
                let status = array.status
                if status.migration == nil {
                    let member = status.roles[next % status.roles.count]
                    next += 1
                    try array.beginMigration(of: member)
                    out.emit("begin \(member)")
                }
                let report = try await array.runMigration(stepBlocks: 8)
                out.emit("migrated \(report.from) \(report.to) \(report.bytesCopied)")
            }
        } catch {
            out.emit("error \(error)")
            throw ExitCode(1)
        }
    }
}

/// Whole lines to standard output from several threads, each flushed at once.
final class LineOutput: Sendable {
    private let lock = NIOLock()

    func emit(_ line: String) {
        lock.withLock {
            print(line)
            fflush(nil)
        }
    }
}

/// `ftctl spare wear`: a drive's wear counters from smartctl.
struct SpareWear: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wear",
        abstract: "Read a drive's host and media writes (write amplification) from `smartctl --json`.",
        discussion: """
            Runs `smartctl --json -A -i DEVICE` (and for an NVMe drive `nvme ocp smart-add-log`), \
            or reads saved output with --file (and --ocp-file). SATA SSDs report media writes in \
            vendor attributes (NAND, TLC or FTL writes); NVMe drives in the OCP cloud SMART log \
            only: without it, such a drive has no write amplification to judge.
            """)

    @Option(help: "The device to ask smartctl about, e.g. /dev/sda.") var device: String?
    @Option(help: "A file holding `smartctl --json` output.") var file: String?
    @Option(help: "With --file: a file holding `nvme ocp smart-add-log -o json` output (an NVMe drive's media writes).")
    var ocpFile: String?
    @Option(help: "The smartctl executable.") var smartctl = "/usr/sbin/smartctl"

    func validate() throws {
        guard (device == nil) != (file == nil) else { throw ValidationError("give exactly one of --device and --file") }
        guard ocpFile == nil || file != nil else { throw ValidationError("--ocp-file goes with --file") }
    }

    func run() async throws {
        var reading: SmartReading
        if let file {
            guard let data = FileManager.default.contents(atPath: file) else {
                throw CommandFailure("cannot read \(file)")
            }
            reading = try SmartReading.parse(smartctlJSON: [UInt8](data))
            if let ocpFile {
                guard let log = FileManager.default.contents(atPath: ocpFile) else {
                    throw CommandFailure("cannot read \(ocpFile)")
                }
                reading = try reading.addingMediaBytes(ocpLogJSON: [UInt8](log))
            }
        } else if let device {
            guard FileManager.default.isExecutableFile(atPath: smartctl) else {
                throw CommandFailure("\(smartctl) is not an executable; install smartmontools or pass --smartctl")
            }
            reading = try SmartctlWearSource(device: device, executable: smartctl).read()
        } else {
            return
        }
        print(
            "\(reading.deviceProtocol) \(reading.model ?? "(no model)"): host wrote \(reading.hostBytesWritten >> 30) GiB"
                + (reading.mediaBytesWritten.map { ", media \($0 >> 30) GiB" } ?? ", no media counter")
                + (reading.writeAmplification.map { String(format: ", write amplification %.2f", $0) } ?? "")
                + (reading.percentageUsed.map { ", \($0) % of rated life used" } ?? ""))
    }
}
