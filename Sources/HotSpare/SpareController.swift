public import FaultToleranceCore
import NIOConcurrencyHelpers
import NIOPosix

/// Where a member's wear figures come from: cumulative bytes the host asked it to write and
/// bytes it programmed into its media (a ``SimulatedFlash``, `smartctl --json`, an NVMe log).
public protocol WearSource: Sendable {
    /// The counts now, or `nil` when they cannot be read (the member is then not judged).
    func wearCounts() -> (media: UInt64, host: UInt64)?
}

extension SimulatedFlash: WearSource {
    /// The drive's counts.
    public func wearCounts() -> (media: UInt64, host: UInt64)? {
        let wear = wear
        return (wear.mediaBytesWritten, wear.hostBytesWritten)
    }
}

/// The runtime that keeps a ``StorageArray`` healthy: at every poll it samples each serving
/// member's wear into a ``WearMonitor``, starts the migration the monitor proposes (or a
/// rebuild of a failed mirror member, which comes first), and advances a running migration by
/// one ``StorageArray/copyStep(maximumBlocks:erase:)``. ``run(clock:interval:events:)`` polls on an injected clock;
/// a simulation calls ``poll(now:)`` itself in virtual time.
public final class SpareController: Sendable {
    /// What one poll did.
    public enum Event: Sendable, Hashable {
        /// A proactive migration of `member` started (its write amplification over the window).
        case migrationStarted(member: UnitID, writeAmplification: Double)
        /// A rebuild of the failed `member`'s role started.
        case rebuildStarted(member: UnitID)
        /// A migration or rebuild finished.
        case finished(StorageArray.MigrationReport)
        /// A migration step copied; `done` of `total` role slots.
        case copied(done: Int, total: Int)
    }

    /// The array kept.
    public let array: StorageArray
    /// Live blocks copied per poll while a migration runs.
    public let stepBlocks: Int
    private let sources: [UnitID: any WearSource]
    private let monitor: NIOLockedValueBox<WearMonitor>

    /// A controller for `array`, judging members by `sources` (a member without one is never
    /// proposed) under `policy`.
    public init(
        array: StorageArray, sources: [UnitID: any WearSource], policy: WearMonitor.Policy = .init(),
        stepBlocks: Int = 256
    ) {
        self.array = array
        self.sources = sources
        self.stepBlocks = max(1, stepBlocks)
        monitor = NIOLockedValueBox(WearMonitor(policy: policy))
    }

    /// The monitor's decisions so far, with their reasons.
    public var transitions: [WearMonitor.Transition] { monitor.withLockedValue { $0.transitions } }

    /// Samples, decides and advances once at `now`.
    public func poll(now: Instant) throws(StorageError) -> Event? {
        let status = array.status
        monitor.withLockedValue { monitor in
            // Only serving members are judged: one that failed or left its role is forgotten.
            for member in monitor.states.keys where !status.roles.contains(member) || status.failed.contains(member) {
                monitor.remove(member)
            }
            for member in status.roles where !status.failed.contains(member) {
                if let counts = sources[member]?.wearCounts() {
                    monitor.observe(member, media: counts.media, host: counts.host, at: now)
                }
            }
        }
        if !status.erasing.isEmpty { try array.finishErases() }
        if status.migration != nil {
            if let report = try array.copyStep(maximumBlocks: stepBlocks) {
                monitor.withLockedValue { $0.migrated(report.from, at: now) }
                return .finished(report)
            }
            guard let progress = array.status.migration else { return nil }
            return .copied(done: progress.resumeFrom, total: array.geometry.blocksPerRole)
        }
        if !status.spares.isEmpty, array.geometry.layout == .mirror,
            let failed = status.roles.first(where: { status.failed.contains($0) })
        {
            try array.beginRebuild(of: failed)
            return .rebuildStarted(member: failed)
        }
        let verdict = monitor.withLockedValue {
            $0.evaluate(now: now, freeSpares: status.spares.count, migrating: false)
        }
        guard case .migrate(let member, let amplification) = verdict else { return nil }
        try array.beginMigration(of: member)
        return .migrationStarted(member: member, writeAmplification: amplification)
    }

    /// Polls every `interval` on `clock` until cancelled, calling `events` with each event.
    /// Each poll (whose storage I/O blocks: reads of wear sources, a copy step's reads, writes
    /// and synchronizes) runs on NIO's shared thread pool, so the cooperative pool never waits
    /// on a disk; if the pool has shut down, on the calling task.
    public func run(
        clock: any RuntimeClock, interval: Duration = .seconds(1), events: @Sendable (Event) -> Void = { _ in }
    ) async throws {
        while !Task.isCancelled {
            let now = clock.now
            let outcome: Result<Event?, StorageError>
            do {
                outcome = try await NIOThreadPool.singleton.runIfActive { [self] in
                    Result { () throws(StorageError) -> Event? in try poll(now: now) }
                }
            } catch {
                outcome = Result { () throws(StorageError) -> Event? in try poll(now: now) }
            }
            if let event = try outcome.get() { events(event) }
            try await clock.sleep(for: interval)
        }
    }
}
