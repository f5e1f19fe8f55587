public import FaultToleranceCore
import NIOPosix

/// Runs a ``LazyVolume``'s background work to the end: the replica build, the migration rounds
/// its ``MigrationPolicy`` asks for, and the switch between a freeze and a thaw of the workload
/// (a container's cgroup freezer, say), on NIO's blocking-I/O thread pool so the copies never
/// hold a thread of Swift's cooperative pool.
///
/// Resumes whatever the volume's state says: a volume opened after a crash continues its build
/// from the last recorded block, or its migration from a first round.
public struct VolumeRecovery: Sendable {
    /// How much each step copies, and when to switch.
    public struct Configuration: Sendable, Hashable {
        /// Blocks per build step and per migration step (between steps the workload's I/O runs).
        public var stepBlocks: Int
        /// When the rounds stop.
        public var policy: MigrationPolicy

        /// Creates a configuration.
        public init(stepBlocks: Int = 2048, policy: MigrationPolicy = MigrationPolicy()) {
            self.stepBlocks = max(1, stepBlocks)
            self.policy = policy
        }
    }

    /// What a run did.
    public struct Summary: Sendable, Hashable {
        /// Time spent building the replica (zero when it was built before).
        public var build: Duration
        /// Time spent in migration rounds.
        public var rounds: Duration
        /// Migration rounds run.
        public var roundCount: Int
        /// From the freeze to the thaw: the workload's pause.
        public var freeze: Duration
        /// Blocks copied during the freeze.
        public var blocksCopiedInFreeze: Int
        /// The volume's progress at the end.
        public var progress: LazyVolume.Progress
    }

    /// The volume.
    public let volume: LazyVolume
    /// Step sizes and policy.
    public let configuration: Configuration

    /// Creates a runner for `volume`.
    public init(volume: LazyVolume, configuration: Configuration = Configuration()) {
        self.volume = volume
        self.configuration = configuration
    }

    private func offload<T: Sendable>(_ body: @escaping @Sendable () throws(RecoveryError) -> T)
        async throws(RecoveryError)
        -> T
    {
        let result: Result<T, RecoveryError>
        do {
            result = try await NIOThreadPool.singleton.runIfActive {
                Result { () throws(RecoveryError) in try body() }
            }
        } catch {
            throw RecoveryError(.storage, "the I/O thread pool is not running: \(error)")
        }
        return try result.get()
    }

    /// Builds, migrates and switches. `freeze` runs before the switch and `thaw` after it (also
    /// when the switch fails); `progress` after every step. Cancellation stops between steps
    /// with ``RecoveryError/Code/wrongPhase``, never in the middle of a switch.
    public func run(
        clock: ContinuousClock = ContinuousClock(),
        freeze: @Sendable () async throws -> Void = {},
        thaw: @Sendable () async throws -> Void = {},
        progress: @Sendable (LazyVolume.Progress) -> Void = { _ in }
    ) async throws(RecoveryError) -> Summary {
        let volume = self.volume
        let stepBlocks = configuration.stepBlocks
        let buildStart = clock.now
        while volume.phase == .building {
            try checkCancellation()
            try await offload { () throws(RecoveryError) in _ = try volume.buildStep(maximumBlocks: stepBlocks) }
            progress(volume.progress)
        }
        let roundsStart = clock.now
        var rounds = 0
        var previous: Int?
        while volume.phase == .migrating {
            try checkCancellation()
            let remaining = try await offload { () throws(RecoveryError) in
                try volume.copyRound(maximumBlocks: stepBlocks)
            }
            rounds += 1
            progress(volume.progress)
            if configuration.policy.decide(rounds: rounds, remaining: remaining, previous: previous) == .switchNow {
                break
            }
            previous = remaining
        }
        let freezeStart = clock.now
        var copied = 0
        if volume.phase == .migrating {
            do {
                try await freeze()
            } catch {
                throw RecoveryError(.storage, "freezing the workload: \(error)")
            }
            let switched: Result<Int, RecoveryError>
            do {
                switched = .success(try await offload { () throws(RecoveryError) in try volume.switchToReplica() })
            } catch {
                switched = .failure(error)
            }
            do {
                try await thaw()
            } catch {
                throw RecoveryError(.storage, "thawing the workload: \(error)")
            }
            copied = try switched.get()
            progress(volume.progress)
        }
        let end = clock.now
        return Summary(
            build: roundsStart - buildStart, rounds: freezeStart - roundsStart, roundCount: rounds,
            freeze: end - freezeStart, blocksCopiedInFreeze: copied, progress: volume.progress)
    }

    private func checkCancellation() throws(RecoveryError) {
        if Task.isCancelled { throw RecoveryError(.wrongPhase, "cancelled in the \(volume.phase) phase") }
    }
}
