public import ArgumentParser
import Checkpointing
import CheckpointingSimulation
import DeterministicSimulation
import FaultToleranceCore
import Foundation
import LiveCopy

/// `ftctl checkpoint`: checkpoints of an application's memory and volume on real files.
///
/// A store directory holds one file pool, `DIR/units`: a log unit (the index) and data units
/// (chunks and manifests).
struct CheckpointCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "checkpoint",
        abstract: "Full and incremental checkpoints (Checkpointing): create, list, show, verify, merge, gc, restore.",
        subcommands: [
            CheckpointCreate.self, CheckpointList.self, CheckpointShow.self, CheckpointVerify.self,
            CheckpointMerge.self, CheckpointCollect.self, CheckpointRestore.self, CheckpointRestoreGroup.self,
            CheckpointCrashTest.self,
            CheckpointDemo.self, CheckpointSimulate.self, CheckpointGroupDemo.self, CheckpointGroupMember.self,
        ])
}

/// `ftctl checkpoint demo`: the checkpoint scene of `ftctl demo` alone.
struct CheckpointDemo: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "demo",
        abstract: "Checkpoints of memory and a volume under two writer threads, restored and merged.")

    @Option(help: "Region size in MiB, 1...65536.") var megabytes = 128

    func validate() throws { try require("--megabytes", megabytes, in: 1...65_536) }

    func run() async throws { try await CheckpointScene(megabytes: megabytes).run() }
}

/// Opens the store in `directory/units`, creating it when `create` is set.
func openCheckpointStore(_ directory: String, create: Bool, budgetMiB: Int = 1024) throws -> (
    CheckpointStore, FileStoragePool
) {
    let units = directory + "/units"
    let stored = try FileStoragePool.storedUnitCapacity(in: units)
    guard stored != nil || create else { throw CommandFailure("\(directory) holds no checkpoint store") }
    if stored == nil { try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true) }
    let pool = try FileStoragePool(
        directories: [units], unitCapacity: stored ?? (4 << 20), budget: budgetMiB << 20, preallocation: .reserved)
    return (try CheckpointStore.open(pool: pool), pool)
}

/// The demo application: a region of `pages` 4 KiB pages and a volume of as many 4 KiB
/// blocks. Round r writes `writes` pages and blocks chosen from the seed and r, each filled
/// with bytes that depend only on (round, page), so any round's state can be rebuilt.
struct DemoWorkload {
    let pages: Int
    let writes: Int
    let seed: UInt64

    static let pageSize = 4096

    func touched(round: Int) -> [Int] {
        var random = SimulationRandom(seed: seed &+ UInt64(round) &* 0x9E37_79B9_7F4A_7C15)
        return (0..<writes).map { _ in Int.random(in: 0..<pages, using: &random) }
    }

    static func content(round: Int, page: Int, volume: Bool) -> [UInt8] {
        var state = UInt64(round) &* 0xD6E8_FEB8_6659_FD93 ^ UInt64(page) &* 0x9E37_79B9_7F4A_7C15 ^ (volume ? 1 : 2)
        var bytes = [UInt8](repeating: 0, count: pageSize)
        bytes.withUnsafeMutableBytes { raw in
            for word in 0..<pageSize / 8 {
                state &+= 0x9E37_79B9_7F4A_7C15
                var mixed = (state ^ (state >> 30)) &* 0xBF58_476D_1CE4_E5B9
                mixed = (mixed ^ (mixed >> 27)) &* 0x94D0_49BB_1331_11EB
                // Half of each page compresses, half does not.
                raw.storeBytes(
                    of: word < 256 ? UInt64(round) : mixed ^ (mixed >> 31), toByteOffset: word * 8, as: UInt64.self)
            }
        }
        return bytes
    }

    func apply(round: Int, memory: TrackedMemory, volume: TrackedVolume) throws {
        for page in touched(round: round) {
            try memory.write(Self.content(round: round, page: page, volume: false), at: page * Self.pageSize)
            try volume.write(Self.content(round: round, page: page, volume: true), at: page * Self.pageSize)
        }
    }

    /// The region's and the volume's bytes after rounds 1 through `round`.
    func expected(through round: Int) -> (memory: [UInt8], volume: [UInt8]) {
        var last = [Int](repeating: 0, count: pages)
        if round >= 1 { for r in 1...round { for page in touched(round: r) { last[page] = r } } }
        var memory = [UInt8](repeating: 0, count: pages * Self.pageSize)
        var volume = memory
        for page in 0..<pages where last[page] > 0 {
            memory.replaceSubrange(
                page * Self.pageSize..<(page + 1) * Self.pageSize,
                with: Self.content(round: last[page], page: page, volume: false))
            volume.replaceSubrange(
                page * Self.pageSize..<(page + 1) * Self.pageSize,
                with: Self.content(round: last[page], page: page, volume: true))
        }
        return (memory, volume)
    }
}

/// `ftctl checkpoint create`.
struct CheckpointCreate: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "create",
        abstract: "Run the demo application (a region and a volume under writes) and checkpoint it every round.",
        discussion: """
            Each round writes --writes pages of the region and blocks of the volume, then takes a \
            checkpoint (the first full, then incremental) and prints `ack ID ROUND`. After each \
            round it keeps the newest --keep checkpoints (deleting older ones rebases their \
            children), merges the newest into a synthetic full every --merge-every rounds and \
            collects garbage every --gc-every rounds (every other time compacting first: the live \
            chunks of units less than half live are copied out so those units go too). Run it \
            again on the same directory and it restores the newest checkpoint and goes on from \
            its round.
            """)

    @Argument(help: "The store directory (created if needed).") var directory: String
    @Option(help: "Rounds to run, 1...1000000.") var rounds = 10
    @Option(help: "Pages in the region (and blocks in the volume), 1...262144.") var pages = 1024
    @Option(help: "Pages written per round, 1...1000000.") var writes = 32
    @Option(help: "Checkpoints kept, 1...100000.") var keep = 5
    @Option(help: "Merge the newest checkpoint every this many rounds, 1...100000.") var mergeEvery = 4
    @Option(help: "Collect garbage every this many rounds, 1...100000.") var gcEvery = 3
    @Option(help: "Store budget in MiB, 16...1048576.") var budget = 1024
    @Option(help: "Seed of the write pattern (the same for every run on one store).") var seed: UInt64 = 1
    @Flag(help: "Print a summary as JSON at the end.") var json = false

    func validate() throws {
        try require("--rounds", rounds, in: 1...1_000_000)
        try require("--pages", pages, in: 1...262_144)
        try require("--writes", writes, in: 1...1_000_000)
        try require("--keep", keep, in: 1...100_000)
        try require("--merge-every", mergeEvery, in: 1...100_000)
        try require("--gc-every", gcEvery, in: 1...100_000)
        try require("--budget", budget, in: 16...1_048_576)
    }

    func run() throws {
        let (store, pool) = try openCheckpointStore(directory, create: true, budgetMiB: budget)
        defer { pool.close() }
        let workload = DemoWorkload(pages: pages, writes: writes, seed: seed)
        let memory = try TrackedMemory(pageCount: pages)
        let volume = try TrackedVolume(
            MemoryStorageUnit(id: UnitID(1), capacity: pages * DemoWorkload.pageSize), gate: memory.gate)
        var round = 1
        let latest = store.latest(application: "demo")
        if let latest {
            guard latest.manifest.length > 0 else { throw CommandFailure("unreadable newest checkpoint") }
            try store.restore(latest.id, item: "heap", into: memory)
            try store.restore(latest.id, item: "disk", into: volume)
            round = Int(latest.epoch) + 1
        }
        let checkpointer = try Checkpointer(
            application: "demo", store: store, regions: ["heap": memory], volumes: ["disk": volume],
            resumingFrom: latest?.id)
        var pauses: [Duration] = []
        for current in round..<round + rounds {
            try workload.apply(round: current, memory: memory, volume: volume)
            let report = try checkpointer.checkpointBlocking(epoch: UInt64(current))
            pauses.append(report.pause)
            // Unbuffered: a crash test counts this line as a promise the checkpoint survives.
            FileHandle.standardOutput.write(Data("ack \(report.summary.id.rawValue) \(current)\n".utf8))
            if !json {
                print(
                    "  \(report.summary.kind) \(report.summary.id): \(report.storedPages) pages stored, "
                        + "\(report.zeroPages) zero, \(report.summary.storedBytes) bytes, pause \(report.pause)")
            }
            try store.retain(last: keep, application: "demo")
            if current % mergeEvery == 0 { try store.merge(report.summary.id) }
            if current % gcEvery == 0 {
                // Every other time, compact first: sparse units' live chunks move so they go too.
                if (current / gcEvery) % 2 == 0 {
                    try store.compact(liveFraction: 0.5)
                } else {
                    try store.collectGarbage()
                }
            }
        }
        if json {
            let sorted = pauses.sorted()
            let summary: [String: Any] = [
                "checkpoints": store.checkpoints.count, "rounds": rounds, "lastRound": round + rounds - 1,
                "pauseMedianNanoseconds": sorted[sorted.count / 2].nanoseconds,
                "pauseMaxNanoseconds": sorted[sorted.count - 1].nanoseconds, "units": pool.units.count,
            ]
            let data = try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        }
    }
}

/// `ftctl checkpoint list`.
struct CheckpointList: ParsableCommand {
    static let configuration = CommandConfiguration(commandName: "list", abstract: "List the committed checkpoints.")

    @Argument(help: "The store directory.") var directory: String
    @Flag(help: "Print JSON.") var json = false

    func run() throws {
        let (store, pool) = try openCheckpointStore(directory, create: false)
        defer { pool.close() }
        let rows = store.checkpoints
        if json {
            let objects: [[String: Any]] = rows.map { summary in
                [
                    "id": summary.id.rawValue, "application": summary.application, "kind": "\(summary.kind)",
                    "parent": summary.parent.map { $0.rawValue as Any } ?? NSNull(), "epoch": summary.epoch,
                    "captureTime": summary.captureTime, "capturedBytes": summary.capturedBytes,
                    "storedBytes": summary.storedBytes,
                ]
            }
            let data = try JSONSerialization.data(withJSONObject: objects, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        func pad(_ text: String, _ width: Int) -> String {
            text.count >= width ? text + " " : text + String(repeating: " ", count: width - text.count)
        }
        print(
            pad("ID", 8) + pad("KIND", 12) + pad("PARENT", 8) + pad("EPOCH", 8) + pad("APPLICATION", 14)
                + pad("CAPTURED", 11) + pad("STORED", 11) + "TAKEN")
        for summary in rows {
            let taken = wallTime(Instant(nanoseconds: Int64(clamping: summary.captureTime)))
            print(
                pad("\(summary.id)", 8) + pad("\(summary.kind)", 12) + pad(summary.parent.map { "\($0)" } ?? "-", 8)
                    + pad("\(summary.epoch)", 8) + pad(summary.application, 14) + pad("\(summary.capturedBytes)", 11)
                    + pad("\(summary.storedBytes)", 11) + taken)
        }
        print("\(rows.count) checkpoints in \(pool.units.count) units")
    }
}

/// Parses a checkpoint number argument.
func checkpointID(_ text: String) throws -> CheckpointID {
    let digits = text.hasPrefix("#") ? String(text.dropFirst()) : text
    guard let value = UInt64(digits), value > 0 else {
        throw ValidationError("the checkpoint must be a number 1...2^64-1 (as `list` shows it), got \(text)")
    }
    return CheckpointID(value)
}

/// `ftctl checkpoint show`.
struct CheckpointShow: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "show", abstract: "Show one checkpoint's manifest: its items and extents.")

    @Argument(help: "The store directory.") var directory: String
    @Argument(help: "The checkpoint number.") var checkpoint: String
    @Flag(help: "Print JSON.") var json = false

    func validate() throws { _ = try checkpointID(checkpoint) }

    func run() throws {
        let (store, pool) = try openCheckpointStore(directory, create: false)
        defer { pool.close() }
        let manifest = try store.manifest(try checkpointID(checkpoint))
        let items: [[String: Any]] = manifest.items.map { item in
            let chunks = Set(
                item.extents.compactMap { extent -> ChunkReference? in
                    if case .chunk(let reference, _) = extent.source { return reference }
                    return nil
                })
            let zero = item.extents.reduce(0) { $0 + (extentIsZero($1) ? $1.count : 0) }
            return [
                "name": item.name, "kind": item.kind == .memory ? "memory" : "volume", "unitSize": item.unitSize,
                "unitCount": item.unitCount, "extents": item.extents.count, "chunks": chunks.count,
                "covered": item.extents.reduce(0) { $0 + $1.count }, "zero": zero,
            ]
        }
        if json {
            let object: [String: Any] = [
                "id": manifest.id.rawValue, "application": manifest.application, "kind": "\(manifest.kind)",
                "parent": manifest.parent.map { $0.rawValue as Any } ?? NSNull(), "epoch": manifest.epoch,
                "captureTime": manifest.captureTime, "items": items,
            ]
            let data = try JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
            return
        }
        print(
            "\(manifest.id) \(manifest.kind) of \(manifest.application), epoch \(manifest.epoch), parent "
                + (manifest.parent.map { "\($0)" } ?? "none"))
        for item in items {
            print(
                "  \(item["name"] ?? "") (\(item["kind"] ?? "")): \(item["unitCount"] ?? 0) units of "
                    + "\(item["unitSize"] ?? 0) bytes; \(item["covered"] ?? 0) covered in \(item["extents"] ?? 0) "
                    + "extents, \(item["chunks"] ?? 0) chunks, \(item["zero"] ?? 0) zero")
        }
    }

    private func extentIsZero(_ extent: CheckpointManifest.Extent) -> Bool {
        if case .zero = extent.source { return true }
        return false
    }
}

/// `ftctl checkpoint verify`.
struct CheckpointVerify: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "verify", abstract: "Read every manifest and chunk, checking every checksum and reference.")

    @Argument(help: "The store directory.") var directory: String
    @Flag(help: "Print the report as JSON (no progress bar).") var json = false

    /// The report, for `--json`.
    struct Report: Codable {
        var ok: Bool
        var checkpoints: Int
        var chunks: Int
        var bytes: Int
        var problems: [Problem]
        struct Problem: Codable {
            var checkpoint: UInt64?
            var unit: UInt64?
            var offset: Int?
            var description: String
        }
    }

    func run() throws {
        let (store, pool) = try openCheckpointStore(directory, create: false)
        defer { pool.close() }
        let report = store.verify { done, total in if !json { drawProgress(done, total, of: "checkpoints") } }
        if json {
            let problems = report.problems.map {
                Report.Problem(
                    checkpoint: $0.checkpoint?.rawValue, unit: $0.unit?.rawValue, offset: $0.offset,
                    description: "\($0)")
            }
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            let body = Report(
                ok: problems.isEmpty, checkpoints: report.checkpoints, chunks: report.chunks, bytes: report.bytes,
                problems: problems)
            print(String(decoding: try encoder.encode(body), as: UTF8.self))
        } else {
            FileHandle.standardError.write(Data("\n".utf8))
            for problem in report.problems { print("DAMAGED \(problem)") }
            print(
                "\(report.problems.isEmpty ? "OK" : "FAILED") — \(report.checkpoints) checkpoints, "
                    + "\(report.chunks) chunks, \(report.bytes) bytes read, \(report.problems.count) problems")
        }
        if !report.problems.isEmpty { throw ExitCode(1) }
    }
}

/// A progress bar on standard error, redrawn in place: `[######........] 3/7 items`.
func drawProgress(_ done: Int, _ total: Int, of what: String) {
    let fraction = total > 0 ? Double(done) / Double(total) : 1
    let bar = String(repeating: "#", count: Int(fraction * 30)).padding(toLength: 30, withPad: ".", startingAt: 0)
    FileHandle.standardError.write(Data("\r[\(bar)] \(done)/\(total) \(what)".utf8))
}

/// `ftctl checkpoint merge`.
struct CheckpointMerge: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "merge", abstract: "Make a checkpoint a synthetic full (writes one manifest, no data).")

    @Argument(help: "The store directory.") var directory: String
    @Argument(help: "The checkpoint number.") var checkpoint: String

    func validate() throws { _ = try checkpointID(checkpoint) }

    func run() throws {
        let (store, pool) = try openCheckpointStore(directory, create: false)
        defer { pool.close() }
        let summary = try store.merge(try checkpointID(checkpoint))
        print("\(summary.id) is \(summary.kind) (manifest \(summary.manifest.length) bytes)")
    }
}

/// `ftctl checkpoint gc`.
struct CheckpointCollect: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "gc",
        abstract: "Release the data units no checkpoint references (with --compact, also the sparse ones).")

    @Argument(help: "The store directory.") var directory: String
    @Option(
        help:
            "Also compact: copy the live chunks out of data units less than this fraction live (0 < F <= 1), so they can be released too."
    )
    var compact: Double?

    func validate() throws {
        if let compact, !(compact > 0 && compact <= 1) {
            throw ValidationError("--compact must be a fraction in (0, 1], got \(compact)")
        }
    }

    func run() throws {
        let (store, pool) = try openCheckpointStore(directory, create: false)
        defer { pool.close() }
        if let compact {
            let result = try store.compact(liveFraction: compact)
            print(
                "moved \(result.movedChunks) live chunks (\(result.movedBytes) bytes), rewrote "
                    + "\(result.rewrittenCheckpoints) manifests; released \(result.garbage.releasedUnits.count) units, "
                    + "\(result.garbage.releasedBytes) bytes")
        } else {
            let result = try store.collectGarbage()
            print("released \(result.releasedUnits.count) units, \(result.releasedBytes) bytes")
        }
    }
}

/// `ftctl checkpoint restore`.
struct CheckpointRestore: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore", abstract: "Write one item of a checkpoint (a region or a volume) to a file.")

    @Argument(help: "The store directory.") var directory: String
    @Argument(help: "The checkpoint number.") var checkpoint: String
    @Option(help: "The region or volume (as `show` names it).") var item: String
    @Option(help: "The file to write, outside the store directory.") var out: String

    func validate() throws {
        _ = try checkpointID(checkpoint)
        let store = URL(fileURLWithPath: directory).standardizedFileURL.resolvingSymlinksInPath().path
        let target = URL(fileURLWithPath: out).standardizedFileURL
        let resolved =
            target.deletingLastPathComponent().resolvingSymlinksInPath().appendingPathComponent(
                target.lastPathComponent
            )
            .path
        if resolved == store || resolved.hasPrefix(store.hasSuffix("/") ? store : store + "/") {
            throw ValidationError("--out must be outside the store directory \(directory), got \(out)")
        }
    }

    func run() throws {
        let (store, pool) = try openCheckpointStore(directory, create: false)
        defer { pool.close() }
        let id = try checkpointID(checkpoint)
        let state = try store.resolve(id)
        guard let found = state.items.first(where: { $0.name == item }) else {
            throw CommandFailure(
                "\(id) has no item \(item) (it has \(state.items.map(\.name).joined(separator: ", ")))")
        }
        guard found.unitCount <= (16 << 30) / found.unitSize else {
            throw CommandFailure(
                "\(item) is \(found.unitCount) units of \(found.unitSize) bytes; this command restores up to 16 GiB")
        }
        var bytes = [UInt8](repeating: 0, count: found.unitSize * found.unitCount)
        try bytes.withUnsafeMutableBytes { try store.restore(id, item: item, into: $0) }
        guard FileManager.default.createFile(atPath: out, contents: Data(bytes)) else {
            throw CommandFailure("cannot write \(out)")
        }
        print("wrote \(bytes.count) bytes of \(item) at \(id) to \(out)")
    }
}

/// `ftctl checkpoint restore-group`.
struct CheckpointRestoreGroup: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "restore-group",
        abstract: "Restore every member of a group at one epoch: each item of each member's checkpoint to a file.",
        discussion: """
            Each MEMBER=DIRECTORY names a member (the application it checkpoints as) and its \
            store, e.g. a=/tmp/demo/a (the layout `group-demo --directory` keeps). Every member's \
            checkpoint of the epoch is found and every item sized before anything is written: an \
            epoch missing at any member, or still in doubt there, restores nothing. Writes \
            OUT/MEMBER.ITEM for every item.
            """)

    @Argument(help: "MEMBER=DIRECTORY, one per member.") var members: [String]
    @Option(help: "The group epoch (default: the newest committed at every member).") var epoch: UInt64?
    @Option(help: "The directory to write, new or empty.") var out: String
    @Flag(help: "Print what was restored as JSON.") var json = false

    func parsedMembers() throws -> [(name: String, directory: String)] {
        var seen = Set<String>()
        return try members.map { argument in
            let parts = argument.split(separator: "=", maxSplits: 1).map(String.init)
            guard parts.count == 2, !parts[0].isEmpty, !parts[1].isEmpty else {
                throw ValidationError("each member is MEMBER=DIRECTORY, got \(argument)")
            }
            guard seen.insert(parts[0]).inserted else { throw ValidationError("member \(parts[0]) is named twice") }
            return (parts[0], parts[1])
        }
    }

    func validate() throws {
        guard !members.isEmpty else { throw ValidationError("name at least one MEMBER=DIRECTORY") }
        _ = try parsedMembers()
        if let contents = try? FileManager.default.contentsOfDirectory(atPath: out), !contents.isEmpty {
            throw ValidationError("--out must be new or empty; \(out) already holds \(contents.count) entries")
        }
    }

    struct Restored: Codable {
        var epoch: UInt64
        var members: [String: Member]
        struct Member: Codable {
            var checkpoint: UInt64
            var files: [String: Int]
        }
    }

    func run() throws {
        var stores: [String: CheckpointStore] = [:]
        var pools: [FileStoragePool] = []
        defer { for pool in pools { pool.close() } }
        for member in try parsedMembers() {
            let (store, pool) = try openCheckpointStore(member.directory, create: false)
            stores[member.name] = store
            pools.append(pool)
        }
        guard let epoch = epoch ?? GroupRestore.commonEpochs(stores).last else {
            throw CommandFailure(
                "no epoch is committed at every member (\(stores.keys.sorted().joined(separator: ", ")))")
        }
        let found = try GroupRestore.checkpoints(atEpoch: epoch, in: stores)
        var destinations: [String: [String: any StorageUnit]] = [:]
        var total = 0
        for (name, summary) in found {
            guard let store = stores[name] else { continue }
            for item in try store.resolve(summary.id).items {
                let bytes = item.unitSize * item.unitCount
                total += bytes
                guard total <= 16 << 30 else {
                    throw CommandFailure("the group's items pass 16 GiB; this command restores up to that")
                }
                destinations[name, default: [:]][item.name] = MemoryStorageUnit(
                    id: UnitID(UInt64(total)), capacity: bytes)
            }
        }
        try GroupRestore.restore(epoch: epoch, stores: stores, into: destinations) { done, all in
            if !json { drawProgress(done, all, of: "items") }
        }
        if !json { FileHandle.standardError.write(Data("\n".utf8)) }
        try FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)
        var restored = Restored(epoch: epoch, members: [:])
        for (name, items) in destinations.sorted(by: { $0.key < $1.key }) {
            var files: [String: Int] = [:]
            for (item, unit) in items.sorted(by: { $0.key < $1.key }) {
                let path = out + "/" + name + "." + item
                let bytes = try unit.read(at: 0, count: unit.capacity)
                guard FileManager.default.createFile(atPath: path, contents: Data(bytes)) else {
                    throw CommandFailure("cannot write \(path)")
                }
                files[path] = bytes.count
            }
            restored.members[name] = .init(checkpoint: found[name]?.id.rawValue ?? 0, files: files)
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
            print(String(decoding: try encoder.encode(restored), as: UTF8.self))
        } else {
            for (name, member) in restored.members.sorted(by: { $0.key < $1.key }) {
                print(
                    "  \(name): checkpoint \(member.checkpoint) → \(member.files.keys.sorted().joined(separator: ", "))"
                )
            }
            print("restored \(restored.members.count) members at epoch \(epoch) into \(out)")
        }
    }
}

/// `ftctl checkpoint simulate`.
struct CheckpointSimulate: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "simulate",
        abstract:
            "Run the checkpoint scenario (power cuts inside captures, merges, deletes and GC), or with --group the group checkpoint scenario, over many seeds.",
        discussion: """
            Each seed runs the shipped store and checkpointer on simulated disks: an application \
            written and checkpointed, its checkpoints merged, deleted and garbage collected, the \
            power failing at once or inside an operation (unsynchronized writes lost or torn), \
            fsyncs failing on one seed in five. After every reopen, every committed checkpoint \
            must be there, and those made or changed since the last reopen (with the newest and \
            three at random) must restore exactly their cut; at the end, every one must.

            With --group, each seed runs the shipped group coordinator and three members on a \
            simulated network in virtual time: applications written throughout, group checkpoints \
            one after another, members and the coordinator crashing (disks losing or tearing \
            unsynchronized writes), power failing inside captures and decisions, members cut off, \
            messages lost, duplicated and delayed. At the end no epoch may be committed at some \
            members and not others, and every committed checkpoint must restore its cut.

            Exits 1 if any seed breaks an invariant.
            """)

    @Option(help: "Number of seeds.") var seeds: Int = 500
    @Option(help: "Run exactly this seed.") var seed: UInt64?
    @Option(help: "Steps per seed, 1...1000000 (the store scenario).") var steps = 120
    @Flag(help: "Run the group checkpoint scenario (coordinator and three members).") var group = false
    @Option(help: "Virtual seconds of faults per seed, 1...3600 (the group scenario).") var seconds = 5
    @Option(
        help: """
            Plant a bug: \(CheckpointBug.allCases.map(\.rawValue).joined(separator: ", ")); with --group: \
            \(GroupCheckpointBug.allCases.map(\.rawValue).joined(separator: ", ")).
            """)
    var bug: String?
    @Option(help: "Worker threads.") var jobs: Int = ProcessInfo.processInfo.activeProcessorCount
    @OptionGroup var window: SeedWindowOptions
    @Flag(help: "Print the summary as JSON.") var json = false

    func validate() throws {
        try require("--seeds", seeds, in: 1...maximumSeeds)
        try require("--steps", steps, in: 1...1_000_000)
        try require("--seconds", seconds, in: 1...3600)
        try require("--jobs", jobs, in: 1...maximumJobs)
        if let bug {
            let names = group ? GroupCheckpointBug.allCases.map(\.rawValue) : CheckpointBug.allCases.map(\.rawValue)
            guard names.contains(bug) else {
                throw ValidationError(
                    "--bug \(bug) is not a planted bug of the \(group ? "group " : "")scenario; one of: "
                        + names.joined(separator: ", "))
            }
        }
    }

    func run() async throws {
        let plan = window.plan(seeds: seeds, replay: seed)
        let suffix = bug.map { " (bug: \($0))" } ?? ""
        let summary: SeedRun
        if group {
            let scenario = GroupCheckpointScenario(
                duration: .seconds(seconds), bug: bug.flatMap(GroupCheckpointBug.init(rawValue:)))
            summary = await runSeeds(plan, jobs: jobs, scenario: "group checkpoint" + suffix) {
                await scenario.run(seed: $0)
            }
        } else {
            let scenario = CheckpointScenario(steps: steps, bug: bug.flatMap(CheckpointBug.init(rawValue:)))
            summary = await runSeeds(plan, jobs: jobs, scenario: "checkpoint" + suffix) { scenario.run(seed: $0) }
        }
        try report(summary, json: json, operations: group ? "epochs committed" : "store operations") { seed in
            "swift run ftctl checkpoint simulate --seed \(seed)" + (group ? " --group" : "")
                + (bug.map { " --bug \($0)" } ?? "") + (!group && steps != 120 ? " --steps \(steps)" : "")
                + (group && seconds != 5 ? " --seconds \(seconds)" : "")
        }
    }
}
