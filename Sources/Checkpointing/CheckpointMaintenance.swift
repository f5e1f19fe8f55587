public import FaultToleranceCore
public import Logging
public import Metrics
import NIOConcurrencyHelpers
public import ServiceLifecycle

/// Garbage collection in the background: a ServiceLifecycle `Service` that, every `interval`
/// of its clock, compacts a store's sparse data units and releases the units nothing
/// references (``CheckpointStore/compact(liveFraction:)``), on NIO's thread pool.
///
/// Captures, merges and restores go on meanwhile; the store orders what must be ordered. A pass
/// that fails (a damaged chunk, a full budget, a checkpoint changed under it) is logged and
/// counted, and the next pass tries again: nothing it leaves behind is unsafe. Metrics:
/// `ft_checkpoint_maintenance_passes_total` (by outcome: ok, failed),
/// `ft_checkpoint_units_released_total` and `ft_checkpoint_chunks_moved_total`.
///
/// ```swift
/// let maintenance = CheckpointMaintenance(store: store, interval: .seconds(60))
/// // in a ServiceGroup, or: Task { try await maintenance.run() }
/// ```
public final class CheckpointMaintenance: Service, Sendable {
    /// What the passes did so far.
    public struct Totals: Sendable, Hashable {
        /// Passes finished.
        public var passes = 0
        /// Passes that failed.
        public var failures = 0
        /// Units released.
        public var releasedUnits = 0
        /// Their bytes.
        public var releasedBytes = 0
        /// Live chunks moved out of sparse units.
        public var movedChunks = 0
        /// The last failure, if the last pass failed.
        public var lastFailure: CheckpointError?
    }

    private let store: CheckpointStore
    private let interval: Duration
    private let liveFraction: Double
    private let clock: any RuntimeClock
    private let logger: Logger
    private let blockingIO: BlockingIO
    private let state = NIOLockedValueBox(Totals())
    private let passesOK: Counter
    private let passesFailed: Counter
    private let unitsReleased: Counter
    private let chunksMoved: Counter

    /// A maintenance service for `store`: a pass every `interval` (at least 1 ms), compacting
    /// units less than `liveFraction` live (0 < fraction <= 1).
    public convenience init(
        store: CheckpointStore, interval: Duration = .seconds(60), liveFraction: Double = 0.5,
        clock: any RuntimeClock = SystemClock(), logger: Logger = Logger(label: "swift-fault-tolerance.checkpoint"),
        metricsFactory: (any MetricsFactory)? = nil
    ) throws(CheckpointError) {
        try self.init(
            store: store, interval: interval, liveFraction: liveFraction, clock: clock, logger: logger,
            metricsFactory: metricsFactory, blockingIO: .threadPool)
    }

    package init(
        store: CheckpointStore, interval: Duration, liveFraction: Double, clock: any RuntimeClock, logger: Logger,
        metricsFactory: (any MetricsFactory)? = nil, blockingIO: BlockingIO
    ) throws(CheckpointError) {
        guard interval >= .milliseconds(1) else {
            throw CheckpointError(.invalidConfiguration, detail: "interval \(interval) must be at least 1 ms")
        }
        guard liveFraction > 0, liveFraction <= 1 else {
            throw CheckpointError(.invalidConfiguration, detail: "live fraction \(liveFraction) must be in (0, 1]")
        }
        self.store = store
        self.interval = interval
        self.liveFraction = liveFraction
        self.clock = clock
        self.logger = logger
        self.blockingIO = blockingIO
        let factory = metricsFactory ?? MetricsSystem.factory
        passesOK = Counter(
            label: "ft_checkpoint_maintenance_passes_total", dimensions: [("outcome", "ok")], factory: factory)
        passesFailed = Counter(
            label: "ft_checkpoint_maintenance_passes_total", dimensions: [("outcome", "failed")], factory: factory)
        unitsReleased = Counter(label: "ft_checkpoint_units_released_total", factory: factory)
        chunksMoved = Counter(label: "ft_checkpoint_chunks_moved_total", factory: factory)
    }

    /// What the passes did so far.
    public var totals: Totals { state.withLockedValue { $0 } }

    /// Runs a pass now, then one every interval until the task is cancelled or graceful
    /// shutdown begins.
    public func run() async throws {
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                while !Task.isCancelled {
                    await self.pass()
                    do { try await self.clock.sleep(for: self.interval) } catch { return }
                }
            }
            tasks.addTask { await parkUntilShutdown() }
            // Whichever ends first (cancellation ends both) ends the other.
            _ = try await tasks.next()
            tasks.cancelAll()
        }
    }

    /// One pass: compact and collect.
    public func pass() async {
        let store = self.store
        let liveFraction = self.liveFraction
        do {
            let result = try await blockingIO.run { () throws(CheckpointError) in
                try store.compact(liveFraction: liveFraction)
            }
            state.withLockedValue { totals in
                totals.passes += 1
                totals.releasedUnits += result.garbage.releasedUnits.count
                totals.releasedBytes += result.garbage.releasedBytes
                totals.movedChunks += result.movedChunks
                totals.lastFailure = nil
            }
            passesOK.increment()
            unitsReleased.increment(by: Int64(result.garbage.releasedUnits.count))
            chunksMoved.increment(by: Int64(result.movedChunks))
            if !result.garbage.releasedUnits.isEmpty {
                logger.info(
                    "checkpoint store maintenance released units",
                    metadata: [
                        "units": "\(result.garbage.releasedUnits.count)", "bytes": "\(result.garbage.releasedBytes)",
                        "moved_chunks": "\(result.movedChunks)",
                    ])
            }
        } catch {
            state.withLockedValue { totals in
                totals.passes += 1
                totals.failures += 1
                totals.lastFailure = error
            }
            passesFailed.increment()
            logger.warning("checkpoint store maintenance failed", metadata: ["error": "\(error)"])
        }
    }
}
