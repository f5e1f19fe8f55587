public import FaultToleranceCore
public import Logging
import NIOConcurrencyHelpers

/// Bugs planted in the shipped store for the simulation to catch (never set outside it).
public enum CheckpointBug: String, Sendable, Hashable, CaseIterable, Codable {
    /// Commit a checkpoint's log record without first making its chunks and manifest durable.
    case commitBeforeChunksDurable = "commit-before-chunks-durable"
    /// Garbage collection counts only manifests as references, not the chunks they point at.
    case collectReferencedChunks = "collect-referenced-chunks"
}

/// What the store's index knows of a checkpoint without reading its manifest.
public struct CheckpointSummary: Sendable, Hashable {
    /// The checkpoint's identity.
    public var id: CheckpointID
    /// The application it belongs to.
    public var application: String
    /// The group epoch (0 when taken alone).
    public var epoch: UInt64
    /// The checkpoint it is incremental to, or `nil`.
    public var parent: CheckpointID?
    /// Full, incremental or synthetic.
    public var kind: CheckpointManifest.Kind
    /// When its cut was taken, in nanoseconds since 1970.
    public var captureTime: UInt64
    /// Where its manifest is.
    public var manifest: ChunkReference
    /// Bytes of non-zero pages it captured.
    public var capturedBytes: Int
    /// Bytes its chunk frames and manifest take in the store.
    public var storedBytes: Int
}

/// What ``CheckpointStore/verify(progress:)`` found.
public struct CheckpointVerification: Sendable {
    /// Checkpoints checked.
    public var checkpoints = 0
    /// Distinct chunks read and checked.
    public var chunks = 0
    /// Bytes read.
    public var bytes = 0
    /// Every problem found, each naming its checkpoint and, for a chunk, its unit and offset.
    public var problems: [CheckpointError] = []
}

/// What ``CheckpointStore/collectGarbage()`` freed.
public struct GarbageCollection: Sendable, Hashable {
    /// Units released to the pool.
    public var releasedUnits: [UnitID] = []
    /// Their bytes.
    public var releasedBytes = 0
}

/// What ``CheckpointStore/compact(liveFraction:)`` did.
public struct Compaction: Sendable, Hashable {
    /// Live chunks copied out of sparse units.
    public var movedChunks = 0
    /// Their bytes.
    public var movedBytes = 0
    /// Checkpoints given new manifests.
    public var rewrittenCheckpoints = 0
    /// The garbage collection that followed.
    public var garbage = GarbageCollection()
}

/// Checkpoints of any number of applications in one ``FaultToleranceCore/StoragePool``.
///
/// Chunks (framed, CRC32C, deflated where that saves an eighth) and manifests are appended to
/// data units; a log unit holds one small record per commit, merge and delete, and is the
/// index: opening a store reads the log, not the manifests. A checkpoint is committed when its
/// log record is durable, after its chunks and manifest are; a crash before that leaves only
/// garbage, which ``collectGarbage()`` frees. A full log is compacted into a new one of the next
/// generation (a snapshot of the live records, then a `seal`), and the old one released.
///
/// Every method is synchronous and does disk I/O: call it from a thread you own (the
/// ``Checkpointer`` does), not from Swift's cooperative pool.
public final class CheckpointStore: Sendable {
    /// How chunks are stored.
    public struct Configuration: Sendable, Hashable {
        /// The zlib level for chunks (1 to 9), or `nil` to store every chunk raw.
        public var deflateLevel: Int32?

        /// Deflate at level 1.
        public init(deflateLevel: Int32? = 1) {
            self.deflateLevel = deflateLevel
        }
    }

    /// The pool the store lives in (used by no one else).
    public let pool: any StoragePool
    /// The configuration.
    public let configuration: Configuration
    let logger: Logger
    /// A planted bug (simulation only).
    let bug: CheckpointBug?

    struct State {
        var salt: UInt64
        var log: any StorageUnit
        var logGeneration: UInt64
        var logEnd: Int
        var data: (any StorageUnit)? = nil
        var dataEnd = 0
        var unsynced: [UnitID: any StorageUnit] = [:]
        var index: [CheckpointID: CheckpointSummary] = [:]
        /// Checkpoints of `index` prepared for a group epoch whose fate is not yet recorded.
        var prepared: Set<CheckpointID> = []
        var nextID: UInt64
        var nextSerial: UInt64
        /// Checkpoints an unfinished capture builds on (not deletable meanwhile).
        var pinned: [CheckpointID: Int] = [:]
        /// Units an unfinished capture wrote to (not collectable meanwhile).
        var capturing: [UInt64: Set<UnitID>] = [:]
        var nextCapture: UInt64 = 1
        var failure: CheckpointError? = nil
        var closed = false
    }

    let state: NIOLockedValueBox<State>

    private init(
        pool: any StoragePool, configuration: Configuration, logger: Logger, state: State, bug: CheckpointBug?
    ) {
        self.pool = pool
        self.configuration = configuration
        self.logger = logger
        self.bug = bug
        self.state = NIOLockedValueBox(state)
    }

    /// Opens the store in `pool`, creating it when the pool is empty. Reads the log, finishes
    /// an interrupted log compaction, and releases units a crash left without a header.
    public static func open(
        pool: any StoragePool, configuration: Configuration = Configuration(),
        logger: Logger = Logger(label: "swift-fault-tolerance.checkpoint")
    ) throws(CheckpointError) -> CheckpointStore {
        try open(pool: pool, configuration: configuration, logger: logger, bug: nil)
    }

    /// Opens the store with a planted bug (the simulation's switch).
    package static func open(
        pool: any StoragePool, configuration: Configuration, logger: Logger, bug: CheckpointBug?
    ) throws(CheckpointError) -> CheckpointStore {
        guard pool.unitCapacity >= 64 << 10 else {
            throw CheckpointError(.invalidConfiguration, detail: "units of \(pool.unitCapacity) bytes; at least 64 KiB")
        }
        if let level = configuration.deflateLevel, !(1...9).contains(level) {
            throw CheckpointError(.invalidConfiguration, detail: "deflate level \(level) outside 1...9")
        }
        var blank: [UnitID] = []
        var logs: [(unit: any StorageUnit, header: UnitHeader)] = []
        var salt: UInt64?
        for unit in pool.units {
            let bytes: [UInt8]
            do { bytes = try unit.read(at: 0, count: UnitHeader.size) } catch { throw CheckpointError(error) }
            switch UnitHeader.decode(bytes) {
            case .blank:
                blank.append(unit.id)
            case .invalid(let reason):
                logger.warning(
                    "checkpoint store: unit with a bad header left alone",
                    metadata: ["unit": "\(unit.id)", "reason": "\(reason)"])
            case .header(let header):
                if let salt, salt != header.salt {
                    throw CheckpointError(
                        .invalidConfiguration, unit: unit.id, detail: "unit belongs to another checkpoint store")
                }
                salt = header.salt
                if header.role == .log { logs.append((unit, header)) }
            }
        }
        let state: State
        if let salt {
            state = try recover(logs: logs, salt: salt, pool: pool, logger: logger)
        } else {
            state = try create(pool: pool)
        }
        for id in blank {
            do { try pool.release(id) } catch { throw CheckpointError(error) }
        }
        let store = CheckpointStore(pool: pool, configuration: configuration, logger: logger, state: state, bug: bug)
        logger.debug("checkpoint store open", metadata: ["checkpoints": "\(state.index.count)"])
        return store
    }

    private static func create(pool: any StoragePool) throws(CheckpointError) -> State {
        let salt = UInt64.random(in: 1...UInt64.max)
        let log = try newUnit(pool: pool, header: UnitHeader(role: .log, salt: salt, generation: 1))
        let seal = LogRecord.seal(nextID: 1, nextSerial: 1).encoded(generation: 1)
        do {
            try log.write(seal, at: UnitHeader.size)
            try log.synchronize()
        } catch { throw CheckpointError(error) }
        return State(
            salt: salt, log: log, logGeneration: 1, logEnd: UnitHeader.size + seal.count, nextID: 1, nextSerial: 1)
    }

    private static func newUnit(pool: any StoragePool, header: UnitHeader) throws(CheckpointError) -> any StorageUnit {
        do {
            let unit = try pool.allocate()
            try unit.write(header.encoded(), at: 0)
            return unit
        } catch { throw CheckpointError(error) }
    }

    /// Chooses the newest sealed log, replays it and releases the others.
    private static func recover(
        logs: [(unit: any StorageUnit, header: UnitHeader)], salt: UInt64, pool: any StoragePool, logger: Logger
    ) throws(CheckpointError) -> State {
        var chosen: State?
        var failure: CheckpointError?
        for (unit, header) in logs.sorted(by: { $0.header.generation > $1.header.generation }) {
            do {
                if let state = try replay(log: unit, generation: header.generation, salt: salt) {
                    chosen = state
                    break
                }
            } catch {
                failure = failure ?? error
            }
        }
        guard let chosen else {
            throw failure ?? CheckpointError(.damaged, detail: "no sealed log unit in the store")
        }
        for (unit, _) in logs where unit.id != chosen.log.id {
            logger.info("checkpoint store: releasing a superseded log unit", metadata: ["unit": "\(unit.id)"])
            do { try pool.release(unit.id) } catch { throw CheckpointError(error) }
        }
        return chosen
    }

    /// Replays one log unit; `nil` when it was never sealed (an interrupted compaction).
    private static func replay(log: any StorageUnit, generation: UInt64, salt: UInt64) throws(CheckpointError) -> State?
    {
        // Read a growing prefix: the log's records, not its whole capacity.
        let window = LogRecord.headerSize + LogRecord.maximumBody
        var limit = min(log.capacity, 64 << 10)
        while true {
            let bytes: [UInt8]
            do throws(StorageError) { bytes = try log.read(at: 0, count: limit) } catch { throw CheckpointError(error) }
            let scan = try scanLog(bytes, unit: log.id, generation: generation)
            if scan.end + window + 4096 > limit && limit < log.capacity {
                limit = min(log.capacity, limit * 4)
                continue
            }
            guard scan.sealed else { return nil }
            // An unsynchronized record torn by a crash can leave bytes anywhere in the one
            // record's room after the end (its header lost, a later sector kept): clear them,
            // so the next append does not leave garbage after itself.
            let room = min(log.capacity, scan.end + window)
            if bytes[scan.end..<min(room, bytes.count)].contains(where: { $0 != 0 }) {
                do throws(StorageError) {
                    try log.write([UInt8](repeating: 0, count: room - scan.end), at: scan.end)
                } catch { throw CheckpointError(error) }
            }
            return State(
                salt: salt, log: log, logGeneration: generation, logEnd: scan.end, index: scan.index,
                prepared: scan.prepared, nextID: scan.nextID, nextSerial: scan.nextSerial)
        }
    }

    /// Replays the records in `bytes` (a prefix of a log unit) up to the end or a torn tail.
    private static func scanLog(
        _ bytes: [UInt8], unit: UnitID, generation: UInt64
    ) throws(CheckpointError) -> (
        index: [CheckpointID: CheckpointSummary], prepared: Set<CheckpointID>, sealed: Bool, nextID: UInt64,
        nextSerial: UInt64, end: Int
    ) {
        var index: [CheckpointID: CheckpointSummary] = [:]
        var prepared: Set<CheckpointID> = []
        var sealed = false
        var nextID: UInt64 = 1
        var nextSerial: UInt64 = 1
        var offset = UnitHeader.size
        try bytes.withBytes { (raw) throws(CheckpointError) in
            while offset < raw.count {
                switch LogRecord.decode(raw, at: offset, generation: generation) {
                case .end:
                    return
                case .invalid(let reason):
                    // Only the last record can be torn: each is synchronized before the next is
                    // written. So a valid record of this log after a bad one means the bad one
                    // was damaged after it was durable. Anything else after it (zeros, sectors
                    // of a longer record torn at the same place in a later run) is a torn tail.
                    let searchEnd = min(raw.count, offset + LogRecord.headerSize + LogRecord.maximumBody + 4096)
                    for start in offset + 1..<max(offset + 1, searchEnd) {
                        if case .record = LogRecord.decode(raw, at: start, generation: generation) {
                            throw CheckpointError(
                                .damaged, unit: unit, offset: offset,
                                detail: "log: \(reason), with a valid record after it at \(start)")
                        }
                    }
                    return
                case .record(let record, let length):
                    switch record {
                    case .commit(let summary), .replace(let summary):
                        index[summary.id] = summary
                        nextID = max(nextID, summary.id.rawValue + 1)
                    case .prepare(let summary):
                        index[summary.id] = summary
                        prepared.insert(summary.id)
                        nextID = max(nextID, summary.id.rawValue + 1)
                    case .decide(let id):
                        prepared.remove(id)
                    case .delete(let id):
                        index[id] = nil
                        prepared.remove(id)
                    case .seal(let id, let serial):
                        sealed = true
                        nextID = max(nextID, id)
                        nextSerial = max(nextSerial, serial)
                    }
                    offset += length
                }
            }
        }
        return (index, prepared, sealed, nextID, nextSerial, min(offset, bytes.count))
    }

    // MARK: Reading the index

    /// Every committed checkpoint, oldest first (prepared ones are in ``inDoubt``).
    public var checkpoints: [CheckpointSummary] {
        state.withLockedValue { state in
            state.index.values.filter { !state.prepared.contains($0.id) }.sorted { $0.id < $1.id }
        }
    }

    /// Checkpoints prepared for a group epoch whose fate this store has not recorded (see
    /// ``decide(_:commit:)``), oldest first. They restore like any other, their chunks are
    /// never collected, and they are not committed: a group member asks its coordinator
    /// what became of their epochs before it serves.
    public var inDoubt: [CheckpointSummary] {
        state.withLockedValue { state in state.prepared.compactMap { state.index[$0] }.sorted { $0.id < $1.id } }
    }

    /// The summary of checkpoint `id` (committed or prepared).
    public func summary(_ id: CheckpointID) throws(CheckpointError) -> CheckpointSummary {
        guard let summary = state.withLockedValue({ $0.index[id] }) else {
            throw CheckpointError(.unknownCheckpoint, checkpoint: id)
        }
        return summary
    }

    /// The newest committed checkpoint of `application`, if any.
    public func latest(application: String) -> CheckpointSummary? {
        state.withLockedValue { state in
            state.index.values.filter { $0.application == application && !state.prepared.contains($0.id) }
                .max { $0.id < $1.id }
        }
    }

    /// Reads and checks checkpoint `id`'s manifest.
    public func manifest(_ id: CheckpointID) throws(CheckpointError) -> CheckpointManifest {
        let summary = try summary(id)
        let bytes = try readFrame(summary.manifest, contents: .manifest, checkpoint: id)
        let manifest = bytes.withUnsafeBytes { ManifestCodec.decode($0) }
        switch manifest {
        case .success(let manifest):
            guard manifest.id == id, manifest.kind == summary.kind, manifest.parent == summary.parent else {
                throw CheckpointError(
                    .damaged, checkpoint: id, unit: summary.manifest.unit, offset: summary.manifest.offset,
                    detail: "manifest does not match its log record")
            }
            return manifest
        case .failure(let reason):
            throw CheckpointError(
                .damaged, checkpoint: id, unit: summary.manifest.unit, offset: summary.manifest.offset,
                detail: "manifest: \(reason)")
        }
    }

    /// The chain from the full checkpoint at the root to `id`, oldest first.
    public func chain(_ id: CheckpointID) throws(CheckpointError) -> [CheckpointManifest] {
        var chain: [CheckpointManifest] = []
        var next: CheckpointID? = id
        while let current = next {
            guard chain.count < 1_000_000 else {
                throw CheckpointError(.damaged, checkpoint: id, detail: "parent cycle")
            }
            let manifest = try manifest(current)
            chain.append(manifest)
            next = manifest.parent
        }
        return chain.reversed()
    }

    /// The state at checkpoint `id` as one manifest: the chain's extents folded, the newest on
    /// top; every item covered from its first page to its last.
    public func resolve(_ id: CheckpointID) throws(CheckpointError) -> CheckpointManifest {
        let chain = try chain(id)
        guard var folded = chain.first else { throw CheckpointError(.unknownCheckpoint, checkpoint: id) }
        for manifest in chain.dropFirst() {
            guard manifest.application == folded.application, manifest.items.count == folded.items.count else {
                throw CheckpointError(.damaged, checkpoint: manifest.id, detail: "items differ from its parent's")
            }
            for (index, item) in manifest.items.enumerated() {
                let base = folded.items[index]
                guard item.name == base.name, item.kind == base.kind, item.unitSize == base.unitSize,
                    item.unitCount == base.unitCount
                else {
                    throw CheckpointError(
                        .damaged, checkpoint: manifest.id, detail: "item \(item.name) differs from its parent's")
                }
                folded.items[index].extents = Extents.overlay(base.extents, item.extents)
            }
        }
        let last = chain[chain.count - 1]
        folded.id = last.id
        folded.epoch = last.epoch
        folded.captureTime = last.captureTime
        folded.parent = nil
        folded.kind = chain.count == 1 ? last.kind : .synthetic
        return folded
    }

    // MARK: Reading chunks

    /// Reads the frame at `reference` and returns its checked logical bytes.
    func readFrame(
        _ reference: ChunkReference, contents: ChunkFrame.Contents, checkpoint: CheckpointID?
    ) throws(CheckpointError) -> [UInt8] {
        let payload = try readPayload(reference, contents: contents, checkpoint: checkpoint, checkRawLogical: true)
        return payload.range == 0..<payload.bytes.count ? payload.bytes : Array(payload.bytes[payload.range])
    }

    /// Reads the frame at `reference` and returns its checked logical bytes as a range of an
    /// array (a raw frame is not copied again).
    func readPayload(
        _ reference: ChunkReference, contents: ChunkFrame.Contents, checkpoint: CheckpointID?,
        checkRawLogical: Bool = false
    ) throws(CheckpointError) -> (bytes: [UInt8], range: Range<Int>) {
        guard let unit = pool.unit(reference.unit) else {
            throw CheckpointError(
                .damaged, checkpoint: checkpoint, unit: reference.unit, offset: reference.offset,
                detail: "the chunk's unit is gone")
        }
        guard reference.offset >= UnitHeader.size, reference.length >= ChunkFrame.headerSize,
            reference.length <= unit.capacity - reference.offset
        else {
            throw CheckpointError(
                .damaged, checkpoint: checkpoint, unit: reference.unit, offset: reference.offset,
                detail: "chunk reference \(reference) outside the unit")
        }
        let frame: [UInt8]
        do throws(StorageError) { frame = try unit.read(at: reference.offset, count: reference.length) } catch {
            throw CheckpointError(error, checkpoint: checkpoint)
        }
        switch ChunkFrame.decodePayload(frame, expecting: contents, checkRawLogical: checkRawLogical) {
        case .success(let payload): return payload
        case .failure(let reason):
            throw CheckpointError(
                .damaged, checkpoint: checkpoint, unit: reference.unit, offset: reference.offset,
                detail: reason.description)
        }
    }

    // MARK: Writing

    /// Starts a capture: reserves an identity and pins its parent.
    func beginCapture(parent: CheckpointID?, reserveID: Bool = true) throws(CheckpointError) -> (
        id: CheckpointID, token: UInt64
    ) {
        try state.withLocked { (state) throws(CheckpointError) in
            try Self.checkUsable(state)
            if let parent {
                guard state.index[parent] != nil else { throw CheckpointError(.unknownCheckpoint, checkpoint: parent) }
                guard !state.prepared.contains(parent) else {
                    throw CheckpointError(
                        .unavailable, checkpoint: parent, detail: "its group epoch is not yet decided")
                }
                state.pinned[parent, default: 0] += 1
            }
            let id = CheckpointID(state.nextID)
            if reserveID { state.nextID += 1 }
            let token = state.nextCapture
            state.nextCapture += 1
            state.capturing[token] = []
            return (id, token)
        }
    }

    /// Ends a capture that will not commit: unpins its parent. Its chunks become garbage.
    func abandonCapture(token: UInt64, parent: CheckpointID?) {
        state.withLockedValue { state in
            state.capturing[token] = nil
            if let parent { Self.unpin(parent, in: &state) }
        }
    }

    private static func unpin(_ id: CheckpointID, in state: inout State) {
        if let count = state.pinned[id], count > 1 { state.pinned[id] = count - 1 } else { state.pinned[id] = nil }
    }

    private static func checkUsable(_ state: State) throws(CheckpointError) {
        if state.closed { throw CheckpointError(.unavailable, detail: "the store is closed") }
        if let failure = state.failure { throw failure }
    }

    /// Bytes the store can still take: room in the active data unit and the units the budget
    /// allows, less one unit kept for log compaction.
    public var availableBytes: Int {
        state.withLockedValue { state in
            let room = state.data.map { $0.capacity - state.dataEnd } ?? 0
            return room + max(0, pool.availableUnits - 1) * (pool.unitCapacity - UnitHeader.size)
        }
    }

    /// Frames `payload` and appends it to a data unit.
    func writeFrame(
        _ payload: UnsafeRawBufferPointer, contents: ChunkFrame.Contents, token: UInt64
    ) throws(CheckpointError) -> ChunkReference {
        let frame = try ChunkFrame.encode(
            payload, contents: contents, serial: reserveSerial(),
            deflateLevel: contents == .data ? configuration.deflateLevel : nil)
        return try frame.withBytes { (raw) throws(CheckpointError) in try appendFrame(raw, token: token) }
    }

    /// The next chunk serial.
    func reserveSerial() -> UInt64 {
        state.withLockedValue { state in
            defer { state.nextSerial += 1 }
            return state.nextSerial
        }
    }

    /// Appends an encoded frame to the active data unit (a new one when it does not fit).
    func appendFrame(_ frame: UnsafeRawBufferPointer, token: UInt64) throws(CheckpointError) -> ChunkReference {
        guard frame.count <= pool.unitCapacity - UnitHeader.size else {
            throw CheckpointError(
                .invalidConfiguration,
                detail: "a frame of \(frame.count) bytes does not fit a unit of \(pool.unitCapacity)")
        }
        return try state.withLocked { (state) throws(CheckpointError) in
            try Self.checkUsable(state)
            if state.data == nil || state.dataEnd + frame.count > pool.unitCapacity {
                // Keep one unit of the budget for log compaction.
                guard pool.availableUnits > 1 else {
                    throw CheckpointError(.budgetExceeded, detail: "the store's budget of \(pool.budget) bytes is full")
                }
                let unit = try Self.newUnit(
                    pool: pool, header: UnitHeader(role: .data, salt: state.salt, generation: 0))
                state.data = unit
                state.dataEnd = UnitHeader.size
                state.unsynced[unit.id] = unit
            }
            guard let unit = state.data else { throw CheckpointError(.unavailable) }
            let reference = ChunkReference(unit: unit.id, offset: state.dataEnd, length: frame.count)
            do throws(StorageError) { try unit.write(frame, at: state.dataEnd) } catch {
                // A unit that failed a write is not written again.
                state.data = nil
                throw CheckpointError(error)
            }
            state.dataEnd += (frame.count + 7) & ~7
            state.unsynced[unit.id] = unit
            state.capturing[token, default: []].insert(unit.id)
            return reference
        }
    }

    /// Writes `manifest`, makes it and every chunk durable, then commits it (or, with
    /// `prepareOnly`, prepares it for a group epoch) with a durable log record.
    func commit(
        _ manifest: CheckpointManifest, token: UInt64, capturedBytes: Int, storedBytes: Int, prepareOnly: Bool = false
    ) throws(CheckpointError) -> CheckpointSummary {
        let encoded = ManifestCodec.encode(manifest)
        let reference = try encoded.withBytes { (raw) throws(CheckpointError) in
            try writeFrame(raw, contents: .manifest, token: token)
        }
        let summary = CheckpointSummary(
            id: manifest.id, application: manifest.application, epoch: manifest.epoch, parent: manifest.parent,
            kind: manifest.kind, captureTime: manifest.captureTime, manifest: reference,
            capturedBytes: capturedBytes, storedBytes: storedBytes + reference.length)
        try state.withLocked { (state) throws(CheckpointError) in
            defer {
                state.capturing[token] = nil
                if let parent = manifest.parent { Self.unpin(parent, in: &state) }
            }
            try Self.checkUsable(state)
            if let parent = manifest.parent, state.index[parent] == nil {
                throw CheckpointError(.unknownCheckpoint, checkpoint: parent, detail: "the parent is gone")
            }
            if bug != .commitBeforeChunksDurable { try synchronizeData(&state) }
            try append(prepareOnly ? .prepare(summary) : .commit(summary), to: &state)
            state.index[summary.id] = summary
            if prepareOnly { state.prepared.insert(summary.id) }
        }
        return summary
    }

    /// Records the fate of prepared checkpoint `id`'s group epoch, durably: committed, it
    /// becomes an ordinary checkpoint; aborted, it is deleted and its chunks become garbage.
    /// Recording a fate already recorded (a decision heard twice) does nothing.
    public func decide(_ id: CheckpointID, commit: Bool) throws(CheckpointError) {
        try state.withLocked { (state) throws(CheckpointError) in
            try Self.checkUsable(state)
            guard state.prepared.contains(id) else {
                // Decided already: committed (still indexed) or aborted (gone). Anything else is
                // a caller's mistake.
                if commit ? state.index[id] != nil : state.index[id] == nil { return }
                throw CheckpointError(
                    .unknownCheckpoint, checkpoint: id,
                    detail: commit ? "not a prepared checkpoint" : "committed already; delete it instead")
            }
            guard !state.index.values.contains(where: { $0.parent == id }) else {
                throw CheckpointError(.unavailable, checkpoint: id, detail: "a checkpoint builds on it")
            }
            try append(commit ? .decide(id) : .delete(id), to: &state)
            state.prepared.remove(id)
            if !commit { state.index[id] = nil }
        }
    }

    private func synchronizeData(_ state: inout State) throws(CheckpointError) {
        for (id, unit) in state.unsynced.sorted(by: { $0.key < $1.key }) {
            do { try unit.synchronize() } catch {
                if state.data?.id == id { state.data = nil }
                state.unsynced[id] = nil
                throw CheckpointError(error)
            }
            state.unsynced[id] = nil
        }
    }

    /// Appends a record to the log and synchronizes it, compacting a full log first.
    private func append(_ record: LogRecord, to state: inout State) throws(CheckpointError) {
        var bytes = record.encoded(generation: state.logGeneration)
        if state.logEnd + bytes.count + LogRecord.headerSize > state.log.capacity {
            try compact(&state)
            // The record is bound to the new log's generation.
            bytes = record.encoded(generation: state.logGeneration)
        }
        do {
            try state.log.write(bytes, at: state.logEnd)
            try state.log.synchronize()
        } catch {
            // The log cannot be trusted any more; reopening reads what is on disk.
            let failure = CheckpointError(error)
            state.failure = failure
            throw failure
        }
        state.logEnd += bytes.count
    }

    /// Writes the live index into a new log unit of the next generation, seals it, and
    /// releases the old one. A crash before the seal is durable leaves the old log in charge.
    private func compact(_ state: inout State) throws(CheckpointError) {
        let generation = state.logGeneration + 1
        let log = try Self.newUnit(pool: pool, header: UnitHeader(role: .log, salt: state.salt, generation: generation))
        var end = UnitHeader.size
        do {
            for summary in state.index.values.sorted(by: { $0.id < $1.id }) {
                let record = state.prepared.contains(summary.id) ? LogRecord.prepare(summary) : .commit(summary)
                let bytes = record.encoded(generation: generation)
                guard end + bytes.count <= log.capacity - 64 else {
                    throw CheckpointError(.budgetExceeded, detail: "the index does not fit one log unit")
                }
                try log.write(bytes, at: end)
                end += bytes.count
            }
            let seal = LogRecord.seal(nextID: state.nextID, nextSerial: state.nextSerial).encoded(
                generation: generation)
            try log.write(seal, at: end)
            end += seal.count
            try log.synchronize()
        } catch let error as CheckpointError {
            try? pool.release(log.id)
            throw error
        } catch let error as StorageError {
            try? pool.release(log.id)
            throw CheckpointError(error)
        } catch {
            try? pool.release(log.id)
            throw CheckpointError(.storage, detail: "\(error)")
        }
        let old = state.log.id
        state.log = log
        state.logGeneration = generation
        state.logEnd = end
        do { try pool.release(old) } catch {
            logger.warning(
                "checkpoint store: old log unit not released", metadata: ["unit": "\(old)", "error": "\(error)"])
        }
    }

    // MARK: Merge, delete, garbage

    /// Makes checkpoint `id` a synthetic full: writes the folded manifest of its chain and
    /// commits it in place of the old one. No chunk is read or written; later incrementals
    /// stay valid, and the older checkpoints of the chain may then be deleted without
    /// rewriting anything.
    @discardableResult
    public func merge(_ id: CheckpointID) throws(CheckpointError) -> CheckpointSummary {
        let before = try summary(id)
        if state.withLockedValue({ $0.prepared.contains(id) }) {
            throw CheckpointError(.unavailable, checkpoint: id, detail: "prepared for a group epoch, not yet decided")
        }
        guard before.kind == .incremental else { return before }
        let folded = try resolve(id)
        return try replace(folded, previous: before)
    }

    private func replace(
        _ manifest: CheckpointManifest, previous: CheckpointSummary
    ) throws(CheckpointError) -> CheckpointSummary {
        let (_, token) = try beginCapture(parent: nil, reserveID: false)
        defer { abandonCapture(token: token, parent: nil) }
        return try replace(manifest, previous: previous, token: token)
    }

    /// Writes `manifest` under `token` and records it as `previous`'s new manifest, once
    /// everything written so far is durable.
    private func replace(
        _ manifest: CheckpointManifest, previous: CheckpointSummary, token: UInt64
    ) throws(CheckpointError) -> CheckpointSummary {
        let encoded = ManifestCodec.encode(manifest)
        let reference = try encoded.withBytes { (raw) throws(CheckpointError) in
            try writeFrame(raw, contents: .manifest, token: token)
        }
        var summary = previous
        summary.kind = manifest.kind
        summary.parent = manifest.parent
        summary.manifest = reference
        summary.storedBytes += reference.length
        let replaced = summary
        try state.withLocked { (state) throws(CheckpointError) in
            try Self.checkUsable(state)
            guard state.index[replaced.id] == previous else {
                throw CheckpointError(.unavailable, checkpoint: replaced.id, detail: "changed during the merge")
            }
            try synchronizeData(&state)
            try append(.replace(replaced), to: &state)
            state.index[replaced.id] = replaced
        }
        return replaced
    }

    /// Deletes checkpoint `id`. Its children are first rebased onto its parent (their
    /// manifests gain its extents), so every other checkpoint still restores; its chunks
    /// become garbage once nothing references them.
    public func delete(_ id: CheckpointID) throws(CheckpointError) {
        let target = try summary(id)
        if state.withLockedValue({ $0.prepared.contains(id) }) {
            throw CheckpointError(
                .unavailable, checkpoint: id, detail: "prepared for a group epoch: its fate decides (decide(_:commit:))"
            )
        }
        if state.withLockedValue({ $0.pinned[id] != nil }) {
            throw CheckpointError(.unavailable, checkpoint: id, detail: "a capture is building on it")
        }
        let children = state.withLockedValue { state in
            state.index.values.filter { $0.parent == id }.sorted { $0.id < $1.id }
        }
        if !children.isEmpty {
            let own = try manifest(id)
            for child in children {
                var rebased = try manifest(child.id)
                guard rebased.items.count == own.items.count else {
                    throw CheckpointError(.damaged, checkpoint: child.id, detail: "items differ from its parent's")
                }
                for index in rebased.items.indices {
                    rebased.items[index].extents = Extents.overlay(
                        own.items[index].extents, rebased.items[index].extents)
                }
                rebased.parent = own.parent
                rebased.kind = own.parent == nil ? .synthetic : .incremental
                _ = try replace(rebased, previous: child)
            }
        }
        try state.withLocked { (state) throws(CheckpointError) in
            try Self.checkUsable(state)
            guard state.index[id] == target, state.pinned[id] == nil,
                !state.index.values.contains(where: { $0.parent == id })
            else { throw CheckpointError(.unavailable, checkpoint: id, detail: "changed during the delete") }
            try append(.delete(id), to: &state)
            state.index[id] = nil
        }
    }

    /// Deletes checkpoints of `application` beyond the newest `keep`, oldest first (each
    /// delete rebases its children, so what remains restores as before). Returns the deleted.
    @discardableResult
    public func retain(last keep: Int, application: String) throws(CheckpointError) -> [CheckpointID] {
        let ids = checkpoints.filter { $0.application == application }.map(\.id)
        guard keep >= 0, ids.count > keep else { return [] }
        var deleted: [CheckpointID] = []
        for id in ids.prefix(ids.count - keep) {
            try delete(id)
            deleted.append(id)
        }
        return deleted
    }

    /// Deletes the checkpoints of `application` that `policy` does not keep, oldest first (each
    /// delete rebases its children onto its parent, so what falls out is merged into what
    /// stays, and everything kept restores as before). Returns the deleted, oldest first.
    @discardableResult
    public func retain(_ policy: RetentionPolicy, application: String) throws(CheckpointError) -> [CheckpointID] {
        let all = checkpoints.filter { $0.application == application }
        let kept = policy.kept(all)
        var deleted: [CheckpointID] = []
        for summary in all where !kept.contains(summary.id) {
            try delete(summary.id)
            deleted.append(summary.id)
        }
        return deleted
    }

    /// Releases every data unit no committed checkpoint references and no running capture
    /// writes to. Reads every manifest.
    @discardableResult
    public func collectGarbage() throws(CheckpointError) -> GarbageCollection {
        var live = Set<UnitID>()
        for summary in checkpoints {
            live.insert(summary.manifest.unit)
            if bug == .collectReferencedChunks { continue }
            for item in try manifest(summary.id).items {
                for extent in item.extents {
                    if case .chunk(let reference, _) = extent.source { live.insert(reference.unit) }
                }
            }
        }
        return try state.withLocked { (state) throws(CheckpointError) in
            try Self.checkUsable(state)
            // Commits since the manifests were read reference only units captures wrote to,
            // which are protected below, or the active unit.
            for units in state.capturing.values { live.formUnion(units) }
            for summary in state.index.values { live.insert(summary.manifest.unit) }
            live.insert(state.log.id)
            if let data = state.data { live.insert(data.id) }
            var result = GarbageCollection()
            for unit in pool.units where !live.contains(unit.id) {
                let header: [UInt8]
                do throws(StorageError) { header = try unit.read(at: 0, count: UnitHeader.size) } catch {
                    throw CheckpointError(error)
                }
                guard case .header(let decoded) = UnitHeader.decode(header), decoded.role == .data,
                    decoded.salt == state.salt
                else { continue }
                do throws(StorageError) { try pool.release(unit.id) } catch { throw CheckpointError(error) }
                state.unsynced[unit.id] = nil
                result.releasedUnits.append(unit.id)
                result.releasedBytes += unit.capacity
            }
            return result
        }
    }

    // MARK: Compaction

    /// Moves the live chunks out of data units that are mostly garbage, so that
    /// ``collectGarbage()`` can release them, then collects.
    ///
    /// Garbage collection releases whole units; a unit that still holds one chunk some
    /// checkpoint references stays, however little of it is live. This finds every data unit
    /// (other than the one being appended to, those a running capture writes to, and those a
    /// checkpoint in doubt uses) whose referenced chunks and manifests fill less than
    /// `liveFraction` of it, copies each of those chunks verbatim (checked first: a damaged
    /// chunk is reported, never copied) to the end of the store, and gives every checkpoint
    /// that referenced them a new manifest, as a merge does. A crash at any point leaves every
    /// committed checkpoint restorable: a manifest is replaced only once the copies it points
    /// to are durable, and a unit is released only when no manifest points into it.
    @discardableResult
    public func compact(liveFraction: Double = 0.5) throws(CheckpointError) -> Compaction {
        guard liveFraction > 0, liveFraction <= 1 else {
            throw CheckpointError(.invalidConfiguration, detail: "live fraction \(liveFraction) must be in (0, 1]")
        }
        let (_, token) = try beginCapture(parent: nil, reserveID: false)
        defer { abandonCapture(token: token, parent: nil) }
        // What each unit holds live, and what must stay where it is.
        let (committed, doubtful, busy) = state.withLockedValue { state in
            (
                state.index.values.filter { !state.prepared.contains($0.id) }.sorted { $0.id < $1.id },
                state.index.values.filter { state.prepared.contains($0.id) },
                Set(state.capturing.values.joined()).union([state.data?.id, state.log.id].compactMap { $0 })
            )
        }
        var fixed = busy
        var manifests: [CheckpointID: CheckpointManifest] = [:]
        var live: [UnitID: Set<ChunkReference>] = [:]
        for summary in committed {
            let manifest = try self.manifest(summary.id)
            manifests[summary.id] = manifest
            live[summary.manifest.unit, default: []].insert(summary.manifest)
            for item in manifest.items {
                for extent in item.extents {
                    if case .chunk(let reference, _) = extent.source {
                        live[reference.unit, default: []].insert(reference)
                    }
                }
            }
        }
        for summary in doubtful {
            fixed.insert(summary.manifest.unit)
            for item in try self.manifest(summary.id).items {
                for extent in item.extents {
                    if case .chunk(let reference, _) = extent.source { fixed.insert(reference.unit) }
                }
            }
        }
        let room = Double(pool.unitCapacity - UnitHeader.size)
        let sparse = Set(
            live.filter { unit, references in
                !fixed.contains(unit) && Double(references.reduce(0) { $0 + $1.length }) < liveFraction * room
            }.keys)
        var result = Compaction()
        guard !sparse.isEmpty else {
            result.garbage = try collectGarbage()
            return result
        }
        // Copy every live chunk of those units, checked, and remember where it went.
        var moved: [ChunkReference: ChunkReference] = [:]
        for unitID in sparse.sorted() {
            for reference in (live[unitID] ?? []).sorted(by: { $0.offset < $1.offset }) {
                guard !committed.contains(where: { $0.manifest == reference }) else { continue }
                guard let unit = pool.unit(reference.unit) else {
                    throw CheckpointError(.damaged, unit: reference.unit, offset: reference.offset, detail: "unit gone")
                }
                let frame: [UInt8]
                do throws(StorageError) { frame = try unit.read(at: reference.offset, count: reference.length) } catch {
                    throw CheckpointError(error)
                }
                if case .failure(let reason) = frame.withUnsafeBytes({ ChunkFrame.decode($0, expecting: .data) }) {
                    throw CheckpointError(
                        .damaged, unit: reference.unit, offset: reference.offset,
                        detail: "compaction found a damaged chunk: \(reason)")
                }
                moved[reference] = try frame.withBytes { (raw) throws(CheckpointError) in
                    try appendFrame(raw, token: token)
                }
                result.movedChunks += 1
                result.movedBytes += reference.length
            }
        }
        // New manifests for every checkpoint that pointed into those units.
        for summary in committed {
            guard var manifest = manifests[summary.id] else { continue }
            var changed = sparse.contains(summary.manifest.unit)
            for index in manifest.items.indices {
                for (position, extent) in manifest.items[index].extents.enumerated() {
                    if case .chunk(let reference, let skip) = extent.source, let target = moved[reference] {
                        manifest.items[index].extents[position].source = .chunk(target, skip: skip)
                        changed = true
                    }
                }
            }
            guard changed else { continue }
            _ = try replace(manifest, previous: summary, token: token)
            result.rewrittenCheckpoints += 1
        }
        abandonCapture(token: token, parent: nil)
        result.garbage = try collectGarbage()
        return result
    }

    // MARK: Verify

    /// Reads every manifest and every chunk of every checkpoint, checking each checksum and
    /// reference and that every chain reaches a full checkpoint. Calls `progress` with
    /// (checkpoints done, checkpoints in all) after each.
    public func verify(progress: (Int, Int) -> Void = { _, _ in }) -> CheckpointVerification {
        var result = CheckpointVerification()
        var checked: [ChunkReference: Int] = [:]
        let all = checkpoints
        let known = Set(all.map(\.id))
        for (done, summary) in all.enumerated() {
            defer { progress(done + 1, all.count) }
            result.checkpoints += 1
            if let parent = summary.parent, !known.contains(parent) {
                result.problems.append(
                    CheckpointError(.damaged, checkpoint: summary.id, detail: "parent \(parent) is missing"))
            }
            let manifest: CheckpointManifest
            do { manifest = try self.manifest(summary.id) } catch {
                result.problems.append(error)
                continue
            }
            result.bytes += summary.manifest.length
            for item in manifest.items {
                for extent in item.extents {
                    guard case .chunk(let reference, let skip) = extent.source else { continue }
                    do {
                        let length: Int
                        if let known = checked[reference] {
                            length = known
                        } else {
                            length = try readFrame(reference, contents: .data, checkpoint: summary.id).count
                            checked[reference] = length
                            result.chunks += 1
                            result.bytes += reference.length
                        }
                        if (skip + extent.count) * item.unitSize > length {
                            result.problems.append(
                                CheckpointError(
                                    .damaged, checkpoint: summary.id, unit: reference.unit, offset: reference.offset,
                                    detail: "item \(item.name) takes pages past the chunk's end"))
                        }
                    } catch {
                        result.problems.append(error)
                    }
                }
            }
        }
        return result
    }

    /// Closes the store: later calls throw ``CheckpointError/Code/unavailable``.
    public func close() {
        state.withLockedValue { $0.closed = true }
    }
}
