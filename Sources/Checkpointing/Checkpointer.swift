public import FaultToleranceCore
public import LiveCopy
public import Logging
public import Metrics
import NIOConcurrencyHelpers
import NIOPosix

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// What one capture did.
public struct CheckpointReport: Sendable, Hashable {
    /// The committed checkpoint.
    public var summary: CheckpointSummary
    /// How long writers were held at the cut (taking the dirty sets, installing the guards).
    public var pause: Duration
    /// Non-zero pages and blocks stored.
    public var storedPages: Int
    /// Zero pages and blocks recorded without data.
    public var zeroPages: Int
    /// Pages writers preserved before changing them while the copy ran (copy-before-write).
    public var preservedPages: Int
}

/// Takes full and incremental checkpoints of one application's memory regions and volumes
/// into a ``CheckpointStore``.
///
/// A capture holds the application's writers only while it takes the dirty sets and installs a
/// copy-before-write guard on each item, a pause that grows with the dirty bitmap's words, not
/// with the bytes; it then copies while writers run, a page written during the copy being
/// preserved first, so the checkpoint is the state at the cut. The first capture is full; each
/// later one is incremental to the last committed one. A failed capture leaves the store as it
/// was and gives its pages back, so the next incremental still holds them.
///
/// ```swift
/// let memory = try TrackedMemory(pageCount: 16_384)
/// let volume = try TrackedVolume(pool.allocate(), gate: memory.gate)
/// let checkpointer = try Checkpointer(
///     application: "orders", store: store, regions: ["heap": memory], volumes: ["data": volume])
/// let report = try await checkpointer.checkpoint()
/// ```
public final class Checkpointer: Sendable {
    /// One captured item.
    enum Source: Sendable {
        case memory(TrackedMemory)
        case volume(TrackedVolume)
        /// Memory tracked by the kernel: copied aside around the pause (``PageSnapshot``).
        case userfault(UserfaultMemory)
    }

    struct Item: Sendable {
        var name: String
        var source: Source

        var kind: CheckpointManifest.Item.Kind {
            switch source {
            case .memory, .userfault: .memory
            case .volume: .volume
            }
        }

        var unitSize: Int {
            switch source {
            case .memory(let memory): memory.pageSize
            case .volume(let volume): volume.blockSize
            case .userfault(let memory): memory.pageSize
            }
        }

        var unitCount: Int {
            switch source {
            case .memory(let memory): memory.pageCount
            case .volume(let volume): volume.blockCount
            case .userfault(let memory): memory.pageCount
            }
        }

        var gate: PauseGate {
            switch source {
            case .memory(let memory): memory.gate
            case .volume(let volume): volume.gate
            case .userfault(let memory): memory.gate
            }
        }

        var dirtyCount: Int {
            switch source {
            case .memory(let memory): memory.dirtyPageCount
            case .volume(let volume): volume.dirtyBlockCount
            // Collected into the carried pages at the start of each capture.
            case .userfault: 0
            }
        }
    }

    struct State {
        var parent: CheckpointID?
        /// Pages a failed capture took from the trackers, owed to the next one.
        var carried: [PageSet]
        var running = false
        /// A checkpoint prepared for a group epoch, with the pages it took, until its fate.
        var undecided: (id: CheckpointID, taken: [PageSet])?
    }

    /// The application's name in the store.
    public let application: String
    /// The store.
    public let store: CheckpointStore
    let items: [Item]
    let gates: [PauseGate]
    let clock: any RuntimeClock
    let wallClock: @Sendable () -> UInt64
    let logger: Logger
    let state: NIOLockedValueBox<State>
    let metrics: CaptureMetrics

    /// Registers an application's regions and volumes (names unique across all three). Dirty
    /// tracking starts now. `userfaultRegions` are ``LiveCopy/UserfaultMemory`` regions, whose
    /// writes the kernel tracks: their dirty pages are copied while writers run and those
    /// written meanwhile again in the pause (see the DocC article), since no guard can see
    /// their writes before they land. With `resumingFrom`, the caller vouches that the items hold exactly
    /// that checkpoint's state (it just restored them), and the first capture is incremental to
    /// it; otherwise the first capture is full.
    public init(
        application: String, store: CheckpointStore, regions: [String: TrackedMemory] = [:],
        volumes: [String: TrackedVolume] = [:], userfaultRegions: [String: UserfaultMemory] = [:],
        resumingFrom parent: CheckpointID? = nil, clock: any RuntimeClock = SystemClock(),
        wallClock: @escaping @Sendable () -> UInt64 = Checkpointer.wallClock,
        logger: Logger = Logger(label: "swift-fault-tolerance.checkpoint"),
        metricsFactory: (any MetricsFactory)? = nil
    ) throws(CheckpointError) {
        let items =
            regions.sorted { $0.key < $1.key }.map { Item(name: $0.key, source: .memory($0.value)) }
            + volumes.sorted { $0.key < $1.key }.map { Item(name: $0.key, source: .volume($0.value)) }
            + userfaultRegions.sorted { $0.key < $1.key }.map { Item(name: $0.key, source: .userfault($0.value)) }
        guard !items.isEmpty, items.count <= CheckpointLimits.maximumItems else {
            throw CheckpointError(
                .invalidConfiguration, detail: "\(items.count) items; 1 to \(CheckpointLimits.maximumItems)")
        }
        guard Set(items.map(\.name)).count == items.count else {
            throw CheckpointError(.invalidConfiguration, detail: "region and volume names must differ")
        }
        for name in [application] + items.map(\.name)
        where name.isEmpty || name.utf8.count > CheckpointLimits.maximumNameBytes {
            throw CheckpointError(.invalidConfiguration, detail: "name \"\(name)\" must be 1 to 255 UTF-8 bytes")
        }
        let room = store.pool.unitCapacity - UnitHeader.size - ChunkFrame.headerSize
        for item in items
        where item.unitSize < CheckpointLimits.minimumUnitSize || item.unitSize > CheckpointLimits.maximumUnitSize
            || item.unitSize > room
        {
            throw CheckpointError(.invalidConfiguration, detail: "item \(item.name): unit size \(item.unitSize)")
        }
        if let parent {
            let manifest = try store.manifest(parent)
            let matches =
                manifest.application == application && manifest.items.count == items.count
                && zip(manifest.items, items).allSatisfy {
                    $0.name == $1.name && $0.kind == $1.kind && $0.unitSize == $1.unitSize
                        && $0.unitCount == $1.unitCount
                }
            guard matches else {
                throw CheckpointError(
                    .geometryMismatch, checkpoint: parent, detail: "the items differ from that checkpoint's")
            }
        }
        var gates: [PauseGate] = []
        for item in items where !gates.contains(where: { $0 === item.gate }) { gates.append(item.gate) }
        self.application = application
        self.store = store
        self.items = items
        self.gates = gates
        self.clock = clock
        self.wallClock = wallClock
        self.logger = logger
        self.metrics = CaptureMetrics(application: application, factory: metricsFactory ?? MetricsSystem.factory)
        self.state = NIOLockedValueBox(
            State(parent: parent, carried: items.map { PageSet(pageCount: $0.unitCount) }))
        for item in items {
            switch item.source {
            case .memory(let memory): try? memory.beginTracking()
            case .volume(let volume): volume.clearDirtyBlocks()
            case .userfault(let memory):
                do { try memory.beginTracking() } catch {
                    throw CheckpointError(.unavailable, detail: "region \(item.name): \(error)")
                }
            }
        }
    }

    /// Nanoseconds since 1970 from the system's real-time clock.
    public static let wallClock: @Sendable () -> UInt64 = {
        var time = timespec()
        clock_gettime(CLOCK_REALTIME, &time)
        return UInt64(time.tv_sec) &* 1_000_000_000 &+ UInt64(time.tv_nsec)
    }

    /// The checkpoint the next incremental capture builds on, or `nil` (the next is full).
    public var parent: CheckpointID? { state.withLockedValue { $0.parent } }

    /// Takes a checkpoint on a thread of NIO's shared thread pool, so disk I/O and the pause
    /// never run on Swift's cooperative pool.
    public func checkpoint(epoch: UInt64 = 0, full: Bool = false) async throws(CheckpointError) -> CheckpointReport {
        do {
            return try await NIOThreadPool.singleton.runIfActive {
                try self.checkpointBlocking(epoch: epoch, full: full)
            }
        } catch let error as CheckpointError {
            throw error
        } catch {
            throw CheckpointError(.unavailable, detail: "\(error)")
        }
    }

    /// Takes a checkpoint on the calling thread (which blocks for the pause and the I/O):
    /// incremental to the last one unless `full` or there is none.
    public func checkpointBlocking(epoch: UInt64 = 0, full: Bool = false) throws(CheckpointError) -> CheckpointReport {
        try capture(epoch: epoch, full: full, prepareOnly: false)
    }

    /// Takes a group member's checkpoint for `epoch` on a thread of NIO's shared thread pool:
    /// as ``checkpoint(epoch:full:)``, but it is left prepared (durable, in the store's
    /// ``CheckpointStore/inDoubt``) until ``decide(commit:)`` records the epoch's fate. No other
    /// checkpoint is taken meanwhile.
    public func prepare(epoch: UInt64, full: Bool = false) async throws(CheckpointError) -> CheckpointReport {
        do {
            return try await NIOThreadPool.singleton.runIfActive {
                try self.capture(epoch: epoch, full: full, prepareOnly: true)
            }
        } catch let error as CheckpointError {
            throw error
        } catch {
            throw CheckpointError(.unavailable, detail: "\(error)")
        }
    }

    /// ``prepare(epoch:full:)`` on the calling thread.
    public func prepareBlocking(epoch: UInt64, full: Bool = false) throws(CheckpointError) -> CheckpointReport {
        try capture(epoch: epoch, full: full, prepareOnly: true)
    }

    /// ``prepareBlocking(epoch:full:)`` that calls `afterCut` as soon as the cut is taken and
    /// the writers run again (before the copy), or not at all when the capture fails first.
    package func prepareBlocking(
        epoch: UInt64, full: Bool, afterCut: () -> Void
    ) throws(CheckpointError) -> CheckpointReport {
        try capture(epoch: epoch, full: full, prepareOnly: true, afterCut: afterCut)
    }

    /// The prepared checkpoint whose epoch's fate is not yet decided, if any.
    public var undecided: CheckpointID? { state.withLockedValue { $0.undecided?.id } }

    /// Records the fate of the prepared checkpoint's epoch (durably, in the store): committed,
    /// the next capture builds on it; aborted, it is deleted and the pages it held are owed to
    /// the next capture. Does nothing when no checkpoint is prepared.
    public func decide(commit: Bool) throws(CheckpointError) {
        guard let undecided = state.withLockedValue({ $0.undecided }) else { return }
        try store.decide(undecided.id, commit: commit)
        state.withLockedValue { state in
            state.undecided = nil
            if commit {
                state.parent = undecided.id
                state.carried = items.map { PageSet(pageCount: $0.unitCount) }
            } else {
                for index in items.indices { state.carried[index].formUnion(undecided.taken[index]) }
            }
        }
    }

    private func capture(
        epoch: UInt64, full: Bool, prepareOnly: Bool, afterCut: () -> Void = {}
    ) throws(CheckpointError) -> CheckpointReport {
        // Every capture that does not return a report, refused or failed, counts as failed.
        var finished = false
        defer { if !finished { metrics.failed.increment() } }
        var (parent, carried) = try state.withLocked { (state) throws(CheckpointError) in
            guard !state.running else {
                throw CheckpointError(.unavailable, detail: "a checkpoint of \(application) is already running")
            }
            if let undecided = state.undecided {
                throw CheckpointError(
                    .unavailable, checkpoint: undecided.id, detail: "a prepared checkpoint awaits its epoch's fate")
            }
            state.running = true
            return (full ? nil : state.parent, state.carried)
        }
        defer { state.withLockedValue { $0.running = false } }

        // Kernel-tracked regions: what was written since the parent, owed to this capture from
        // now on (given back to the next one if this one fails before its cut).
        for (index, item) in items.enumerated() {
            guard case .userfault(let memory) = item.source else { continue }
            var written = PageSet(pageCount: item.unitCount)
            memory.collectDirtyPages(into: &written)
            carried[index].formUnion(written)
            state.withLockedValue { $0.carried[index].formUnion(written) }
        }

        // Volumes written behind the library's back: find what changed, before the pause.
        for item in items {
            if case .volume(let volume) = item.source, volume.findsChangesByHashing {
                try volume.markChangedBlocks()
            }
        }

        // Refuse before pausing anyone when the store cannot hold what is dirty now.
        var estimate = 4096
        for (index, item) in items.enumerated() {
            let pages = parent == nil ? item.unitCount : item.dirtyCount + carried[index].count
            estimate += pages * item.unitSize + (pages / 16 + 1) * (ChunkFrame.headerSize + ManifestCodec.extentSize)
        }
        let available = store.availableBytes
        guard estimate <= available else {
            throw CheckpointError(
                .budgetExceeded, detail: "the capture needs up to \(estimate) bytes, the store has \(available)")
        }

        let (id, token) = try store.beginCapture(parent: parent)
        // Everything the pause needs is made before it: the guards, armed with the pages a
        // failed capture left owed (or every page, for a full one). During the pause the
        // trackers move their dirty bits straight into the guards' cut bitmaps (for a full
        // capture into a scratch set, to restart tracking at the cut).
        // Kernel-tracked regions are copied now, while writers run, and again in the pause.
        let snapshots = items.enumerated().map { (index, item) -> PageSnapshot? in
            guard case .userfault(let memory) = item.source else { return nil }
            let snapshot = PageSnapshot(memory: memory)
            snapshot.add(parent == nil ? PageSet.all(pageCount: item.unitCount) : carried[index])
            return snapshot
        }
        let guards = zip(items, snapshots).map { Self.makeGuard(for: $0, snapshot: $1) }
        var scratch: [PageSet] = []
        for (index, item) in items.enumerated() {
            if parent == nil {
                guards[index].arm(PageSet.all(pageCount: item.unitCount))
                scratch.append(PageSet(pageCount: item.unitCount))
            } else {
                guards[index].arm(carried[index])
            }
        }
        let started = clock.now
        for gate in gates { gate.pause() }
        for (index, item) in items.enumerated() {
            if parent == nil {
                switch item.source {
                case .memory(let memory): memory.collectDirtyPages(into: &scratch[index])
                case .volume(let volume): volume.collectDirtyBlocks(into: &scratch[index])
                case .userfault(let memory):
                    memory.collectDirtyPages(into: &scratch[index])
                    snapshots[index]?.refresh(scratch[index])
                }
            } else {
                switch item.source {
                case .memory(let memory): memory.collectDirtyPages(into: guards[index].cutWords)
                case .volume(let volume): volume.collectDirtyBlocks(into: guards[index].cutWords)
                case .userfault(let memory):
                    var written = PageSet(pageCount: item.unitCount)
                    memory.collectDirtyPages(into: &written)
                    snapshots[index]?.refresh(written)
                    guards[index].arm(written)
                }
            }
            install(guards[index], on: item)
        }
        let captureTime = wallClock()
        for gate in gates.reversed() { gate.resume() }
        let pause = clock.now - started
        afterCut()
        // What the trackers gave up, owed to the next capture if this one fails.
        let taken =
            parent == nil
            ? zip(scratch, carried).map { pair in
                var union = pair.0
                union.formUnion(pair.1)
                return union
            } : guards.map(\.cutSet)

        do throws(CheckpointError) {
            var manifestItems: [CheckpointManifest.Item] = []
            var storedPages = 0
            var zeroPages = 0
            var storedBytes = 0
            for (index, item) in items.enumerated() {
                let copied = try copy(item, pending: guards[index].cutSet, guard: guards[index], token: token)
                storedPages += copied.storedPages
                zeroPages += copied.zeroPages
                storedBytes += copied.storedBytes
                manifestItems.append(
                    .init(
                        name: item.name, kind: item.kind, unitSize: item.unitSize, unitCount: item.unitCount,
                        extents: copied.extents))
            }
            let preserved = guards.reduce(0) { $0 + $1.preserved.count }
            if let failure = guards.lazy.compactMap({ $0.preserved.failure }).first { throw CheckpointError(failure) }
            removeGuards()
            let manifest = CheckpointManifest(
                id: id, application: application, epoch: epoch, parent: parent,
                kind: parent == nil ? .full : .incremental,
                captureTime: captureTime, items: manifestItems)
            let summary = try store.commit(
                manifest, token: token, capturedBytes: capturedBytes(manifestItems), storedBytes: storedBytes,
                prepareOnly: prepareOnly)
            state.withLockedValue { state in
                if prepareOnly {
                    // Until the fate is known, the next capture's parent and debts stay as they were.
                    state.undecided = (id, taken)
                } else {
                    state.parent = id
                    state.carried = items.map { PageSet(pageCount: $0.unitCount) }
                }
            }
            metrics.pause.recordNanoseconds(Int64(clamping: pause.nanoseconds))
            (prepareOnly ? metrics.prepared : metrics.committed).increment()
            metrics.storedBytes.increment(by: Int64(storedBytes))
            logger.debug(
                prepareOnly ? "checkpoint prepared" : "checkpoint committed",
                metadata: [
                    "application": "\(application)", "checkpoint": "\(id)", "kind": "\(manifest.kind)",
                    "pause_ns": "\(pause.nanoseconds)", "stored_pages": "\(storedPages)",
                ])
            finished = true
            return CheckpointReport(
                summary: summary, pause: .nanoseconds(Int64(pause.nanoseconds)), storedPages: storedPages,
                zeroPages: zeroPages, preservedPages: preserved)
        } catch {
            removeGuards()
            // What the trackers gave up is owed to the next capture, whose parent stays the same.
            state.withLockedValue { state in
                for index in items.indices { state.carried[index].formUnion(taken[index]) }
            }
            store.abandonCapture(token: token, parent: parent)
            logger.warning("checkpoint failed", metadata: ["application": "\(application)", "error": "\(error)"])
            throw error
        }
    }

    private func capturedBytes(_ items: [CheckpointManifest.Item]) -> Int {
        items.reduce(0) { total, item in
            total
                + item.extents.reduce(0) { sum, extent in
                    if case .chunk = extent.source { return sum + extent.count * item.unitSize }
                    return sum
                }
        }
    }

    private static func makeGuard(for item: Item, snapshot: PageSnapshot?) -> CutGuard {
        let unitSize = item.unitSize
        if let snapshot {
            return CutGuard(unitCount: item.unitCount, unitSize: unitSize) { (page, destination) throws(StorageError) in
                try snapshot.read(page, into: destination)
            }
        }
        switch item.source {
        case .memory(let memory):
            return CutGuard(unitCount: item.unitCount, unitSize: unitSize) { page, destination in
                guard let target = destination.baseAddress else { return }
                target.copyMemory(from: memory.address(ofPage: page), byteCount: unitSize)
            }
        case .volume(let volume):
            return CutGuard(unitCount: item.unitCount, unitSize: unitSize) { (page, destination) throws(StorageError) in
                try volume.base.read(into: destination, at: page * unitSize)
            }
        case .userfault:
            // Not reached: these are read from their snapshot.
            return CutGuard(unitCount: item.unitCount, unitSize: unitSize) { (page, _) throws(StorageError) in
                throw StorageError(.outOfBounds, detail: "page \(page) was not copied at the cut")
            }
        }
    }

    /// Installs (or, with `nil`, removes) a guard; the item's gate is paused.
    private func install(_ cutGuard: CutGuard?, on item: Item) {
        switch item.source {
        case .memory(let memory): try? memory.setWriteGuard(cutGuard)
        case .volume(let volume): try? volume.setGuard(cutGuard)
        // Writes to these are not seen before they land; the snapshot holds the cut.
        case .userfault: break
        }
    }

    private func removeGuards() {
        for gate in gates { gate.pause() }
        for item in items { install(nil, on: item) }
        for gate in gates.reversed() { gate.resume() }
    }

    /// Copies the cut's pages of one item into chunks while writers run.
    private func copy(
        _ item: Item, pending: PageSet, guard cutGuard: CutGuard, token: UInt64
    ) throws(CheckpointError) -> (
        extents: [CheckpointManifest.Extent], storedPages: Int, zeroPages: Int, storedBytes: Int
    ) {
        let unitSize = item.unitSize
        let pagesPerChunk = Self.pagesPerChunk(unitSize: unitSize, unitCapacity: store.pool.unitCapacity)
        // Room for a frame header before the pages: a raw chunk is framed where it lies.
        let frameBuffer = UnsafeMutableRawBufferPointer.allocate(
            byteCount: ChunkFrame.headerSize + pagesPerChunk * unitSize, alignment: 64)
        defer { frameBuffer.deallocate() }
        let buffer = UnsafeMutableRawBufferPointer(rebasing: frameBuffer[ChunkFrame.headerSize...])
        let raw = store.configuration.deflateLevel == nil
        var extents: [CheckpointManifest.Extent] = []
        var storedPages = 0
        var zeroPages = 0
        var storedBytes = 0
        var failure: CheckpointError?
        pending.forEachRun(maximumLength: pagesPerChunk) { run in
            guard failure == nil else { return }
            do throws(CheckpointError) {
                for (slot, page) in run.enumerated() {
                    try cutGuard.take(
                        page,
                        into: UnsafeMutableRawBufferPointer(rebasing: buffer[slot * unitSize..<(slot + 1) * unitSize]))
                }
                var slot = 0
                while slot < run.count {
                    let zero = Self.isZero(buffer, slot: slot, unitSize: unitSize)
                    var end = slot + 1
                    while end < run.count && Self.isZero(buffer, slot: end, unitSize: unitSize) == zero { end += 1 }
                    let pages = run.lowerBound + slot..<run.lowerBound + end
                    if zero {
                        Extents.append(.init(first: pages.lowerBound, count: pages.count, source: .zero), to: &extents)
                        zeroPages += pages.count
                    } else {
                        let reference: ChunkReference
                        if raw {
                            // Frame the pages where they are: the header goes just before them,
                            // over the tail of a page already dealt with (or the spare room).
                            let frame = UnsafeMutableRawBufferPointer(
                                rebasing: frameBuffer[slot * unitSize..<ChunkFrame.headerSize + end * unitSize])
                            ChunkFrame.encodeRawInPlace(
                                frame, payloadCount: (end - slot) * unitSize, serial: store.reserveSerial())
                            reference = try store.appendFrame(UnsafeRawBufferPointer(frame), token: token)
                        } else {
                            reference = try store.writeFrame(
                                UnsafeRawBufferPointer(rebasing: buffer[slot * unitSize..<end * unitSize]),
                                contents: .data, token: token)
                        }
                        extents.append(
                            .init(first: pages.lowerBound, count: pages.count, source: .chunk(reference, skip: 0)))
                        storedPages += pages.count
                        storedBytes += reference.length
                    }
                    slot = end
                }
            } catch {
                failure = error
            }
        }
        if let failure { throw failure }
        return (extents, storedPages, zeroPages, storedBytes)
    }

    /// Pages per chunk: up to 64, as many as fit a unit with its headers.
    static func pagesPerChunk(unitSize: Int, unitCapacity: Int) -> Int {
        let fit = (unitCapacity - UnitHeader.size - ChunkFrame.headerSize) / unitSize
        return max(1, min(64, CheckpointLimits.maximumChunkBytes / unitSize, fit))
    }

    private static func isZero(_ buffer: UnsafeMutableRawBufferPointer, slot: Int, unitSize: Int) -> Bool {
        guard let base = buffer.baseAddress else { return true }
        let words = (base + slot * unitSize).assumingMemoryBound(to: UInt64.self)
        var accumulated: UInt64 = 0
        for index in 0..<unitSize / 8 { accumulated |= words[index] }
        return accumulated == 0
    }
}

/// A checkpointer's metrics, dimensioned by application: `ft_checkpoint_pause_seconds` (the
/// writers' pause at each cut), `ft_checkpoint_captures_total` (by outcome: committed,
/// prepared, failed) and `ft_checkpoint_stored_bytes_total`.
struct CaptureMetrics: Sendable {
    let pause: Metrics.Timer
    let committed: Counter
    let prepared: Counter
    let failed: Counter
    let storedBytes: Counter

    init(application: String, factory: any MetricsFactory) {
        let dimensions = [("application", application)]
        pause = Metrics.Timer(label: "ft_checkpoint_pause_seconds", dimensions: dimensions, factory: factory)
        committed = Counter(
            label: "ft_checkpoint_captures_total", dimensions: dimensions + [("outcome", "committed")], factory: factory
        )
        prepared = Counter(
            label: "ft_checkpoint_captures_total", dimensions: dimensions + [("outcome", "prepared")], factory: factory)
        failed = Counter(
            label: "ft_checkpoint_captures_total", dimensions: dimensions + [("outcome", "failed")], factory: factory)
        storedBytes = Counter(label: "ft_checkpoint_stored_bytes_total", dimensions: dimensions, factory: factory)
    }
}
