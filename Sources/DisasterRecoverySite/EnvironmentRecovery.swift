public import DisasterRecovery
public import FaultToleranceCore
import Foundation
import NIOConcurrencyHelpers
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// Runs a ``DisasterRecovery/RecoveryPlan`` at the recovery site: both of the recovery's
/// processes, one after the other as the plan allows.
///
/// ``start(prepareRoot:probe:clock:)`` brings every volume up as a ``DisasterRecovery/LazyVolume``
/// over its recovery point (a file on a FUSE mount, served from the first request), then starts
/// the workloads stage by stage, each in a ``RuncContainer`` that sees its volumes as files:
/// a stage starts only once every workload of the stages before it answers. Nothing of the
/// bulk copy has to be done first, so the time to the last stage's answer does not grow with
/// the volumes' sizes.
///
/// ``migrate(progress:)`` then builds every volume's replica in the background, copies the
/// overlay onto it in rounds while the workloads run, freezes the containers that mount the
/// volume (the cgroup freezer, `runc pause`) for the last blocks and the switch, and thaws them.
///
/// Everything it makes lives in ``Configuration/directory``: per volume an overlay, a replica
/// and the lazy volume's state (`volumes/NAME/`), its mount point (`mounts/NAME/volume`), and a
/// bundle per workload (`bundles/NAME/`). ``stop()`` removes the containers and unmounts the
/// volumes; the files stay, the replicas among them.
///
/// ```swift
/// let plan = try RecoveryPlan.make(for: environment, point: .latest)
/// var sources: [String: any RecoveryPointSource] = [:]
/// for volume in environment.volumes {
///     sources[volume.name] = try JournalRecoveryPoint(
///         journal: journal, volume: VolumeID(volume.journalVolume), at: plan.point)
/// }
/// let recovery = try EnvironmentRecovery(
///     plan: plan, sources: sources, configuration: .init(directory: "/srv/recovery"))
/// defer { recovery.stop() }
/// let stages = try await recovery.start()          // the workloads answer
/// let summaries = try await recovery.migrate()     // and now run on their replicas
/// ```
public final class EnvironmentRecovery: Sendable {
    /// Where the recovery keeps its files, and its pace.
    public struct Configuration: Sendable, Hashable {
        /// The directory for overlays, replicas, states, mount points and bundles (made on start).
        public var directory: String
        /// The containers' ids are this, a dash and the workload's name (1 to 64 of `A–Z a–z 0–9 . _ -` in all).
        public var containerPrefix: String
        /// Blocks per build step and per migration round.
        public var stepBlocks: Int
        /// How long a stage's workloads may take to answer before the recovery gives up.
        public var answerTimeout: Duration
        /// How often an unanswered workload is asked again.
        public var probeInterval: Duration
        /// The `runc` executable.
        public var runc: String

        /// Creates a configuration.
        public init(
            directory: String, containerPrefix: String = "ft-dr", stepBlocks: Int = 2048,
            answerTimeout: Duration = .seconds(60), probeInterval: Duration = .milliseconds(10),
            runc: String = "/usr/sbin/runc"
        ) {
            self.directory = directory
            self.containerPrefix = containerPrefix
            self.stepBlocks = stepBlocks
            self.answerTimeout = answerTimeout
            self.probeInterval = probeInterval
            self.runc = runc
        }
    }

    /// One stage of the start order, once it answered.
    public struct Stage: Sendable, Hashable {
        /// The stage's workloads.
        public var workloads: [String]
        /// From the start of ``start(prepareRoot:probe:clock:)`` to the last of them answering.
        public var answeredAfter: Duration
    }

    /// The plan run.
    public let plan: RecoveryPlan
    /// Where and how.
    public let configuration: Configuration
    private let sources: [String: any RecoveryPointSource]
    private let running = NIOLockedValueBox(Running())

    private struct Running {
        var pools: [FileStoragePool] = []
        var volumes: [String: LazyVolume] = [:]
        var replicas: [String: any StorageUnit] = [:]
        var servers: [String: FuseVolumeServer] = [:]
        var containers: [String: RuncContainer] = [:]
    }

    /// Checks that `sources` holds a recovery point for every volume of the plan, of the
    /// volume's capacity. Throws ``DisasterRecovery/RecoveryError/Code/invalidPlan`` naming the
    /// volume otherwise, and for a step of no blocks or a container prefix that is not a name.
    public init(
        plan: RecoveryPlan, sources: [String: any RecoveryPointSource], configuration: Configuration
    ) throws(RecoveryError) {
        for volume in plan.environment.volumes {
            guard let source = sources[volume.name] else {
                throw RecoveryError(.invalidPlan, "no recovery point for volume \(volume.name)")
            }
            guard source.capacity == volume.capacity else {
                throw RecoveryError(
                    .invalidPlan,
                    "volume \(volume.name) is planned at \(volume.capacity) bytes; its recovery point holds \(source.capacity)"
                )
            }
        }
        guard configuration.stepBlocks > 0 else {
            throw RecoveryError(.invalidField, "a step of \(configuration.stepBlocks) blocks")
        }
        for workload in plan.environment.workloads {
            try RecoveryPlan.checkName(configuration.containerPrefix + "-" + workload.name, "container")
        }
        self.plan = plan
        self.sources = sources
        self.configuration = configuration
    }

    /// The lazy volumes by name, once ``start(prepareRoot:probe:clock:)`` made them.
    public var volumes: [String: LazyVolume] { running.withLockedValue { $0.volumes } }

    /// The container of a started workload.
    public func container(of workload: String) -> RuncContainer? {
        running.withLockedValue { $0.containers[workload] }
    }

    /// The unit a volume's replica is built on: after the switch it holds the volume itself.
    public func replica(of volume: String) -> (any StorageUnit)? {
        running.withLockedValue { $0.replicas[volume] }
    }

    /// The FUSE server of a volume, once started (its ``FuseVolumeServer/counts`` show the traffic).
    public func server(of volume: String) -> FuseVolumeServer? {
        running.withLockedValue { $0.servers[volume] }
    }

    /// Whether every port of `workload` accepts a TCP connection on the loopback address.
    @Sendable public static func portsAccept(_ workload: WorkloadSpec) async -> Bool {
        (try? await NIOThreadPool.singleton.runIfActive {
            workload.ports.allSatisfy { port in
                let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
                guard descriptor >= 0 else { return false }
                defer { close(descriptor) }
                var address = sockaddr_in()
                address.sin_family = sa_family_t(AF_INET)
                address.sin_addr.s_addr = inet_addr("127.0.0.1")
                address.sin_port = port.bigEndian
                return withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                        connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) == 0
                    }
                }
            }
        }) ?? false
    }

    /// Serves every volume from its recovery point, then starts the workloads stage by stage.
    ///
    /// - Parameters:
    ///   - prepareRoot: fills a workload's root filesystem (called with the workload and the
    ///     directory); by default Debian's static busybox (``RuncContainer/busyboxRoot(at:files:busybox:)``).
    ///   - probe: whether a started workload answers; by default ``portsAccept(_:)``. A
    ///     workload without ports answers once its container runs.
    ///   - clock: the clock the stages' answer times and the timeout are read on.
    /// - Returns: each stage, with the time its last workload answered.
    /// - Throws: ``DisasterRecovery/RecoveryError/Code/storage`` when a volume cannot be made
    ///   or mounted or a container cannot start, ``DisasterRecovery/RecoveryError/Code/sourceUnavailable``
    ///   naming the workloads that did not answer within ``Configuration/answerTimeout``.
    public func start(
        prepareRoot: @Sendable (WorkloadSpec, String) throws -> Void = { _, root in
            try RuncContainer.busyboxRoot(at: root)
        },
        probe: @Sendable (WorkloadSpec) async -> Bool = EnvironmentRecovery.portsAccept,
        clock: ContinuousClock = ContinuousClock()
    ) async throws(RecoveryError) -> [Stage] {
        let started = clock.now
        let directory = configuration.directory
        for volume in plan.environment.volumes {
            try serve(volume, in: directory)
        }
        var stages: [Stage] = []
        for stage in plan.stages {
            var waiting: [WorkloadSpec] = []
            for name in stage {
                guard let workload = plan.environment.workloads.first(where: { $0.name == name }) else { continue }
                try await startContainer(workload, in: directory, prepareRoot: prepareRoot)
                waiting.append(workload)
            }
            let deadline = clock.now + configuration.answerTimeout
            while !waiting.isEmpty {
                var unanswered: [WorkloadSpec] = []
                for workload in waiting {
                    let answered = workload.ports.isEmpty ? true : await probe(workload)
                    if !answered { unanswered.append(workload) }
                }
                waiting = unanswered
                guard !waiting.isEmpty else { break }
                guard clock.now < deadline, !Task.isCancelled else {
                    let states = waiting.map { "\($0.name) (container \(container(of: $0.name)?.status ?? "gone"))" }
                    throw RecoveryError(
                        .sourceUnavailable,
                        "no answer within \(configuration.answerTimeout) from " + states.joined(separator: ", "))
                }
                try? await Task.sleep(for: configuration.probeInterval)
            }
            stages.append(Stage(workloads: stage, answeredAfter: clock.now - started))
        }
        return stages
    }

    /// Makes `volume`'s lazy volume (overlay, replica and state files of its own) and mounts it.
    private func serve(_ volume: VolumeSpec, in directory: String) throws(RecoveryError) {
        guard let source = sources[volume.name] else {
            throw RecoveryError(.invalidPlan, "no recovery point for volume \(volume.name)")
        }
        let files = directory + "/volumes/" + volume.name
        let mountpoint = directory + "/mounts/" + volume.name
        do {
            for folder in [files + "/data", files + "/state", mountpoint] {
                try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
            }
        } catch {
            throw RecoveryError(.storage, "making \(files): \(error)")
        }
        let stateSize = LazyVolumeHeader.stateSize(capacity: volume.capacity, blockSize: volume.blockSize)
        let lazy: LazyVolume
        let replica: FileStorageUnit
        do {
            let data = try FileStoragePool(
                directories: [files + "/data"], unitCapacity: volume.capacity, budget: 2 * volume.capacity)
            running.withLockedValue { $0.pools.append(data) }
            let state = try FileStoragePool(
                directories: [files + "/state"], unitCapacity: stateSize, budget: stateSize)
            running.withLockedValue { $0.pools.append(state) }
            let overlay = try data.allocate()
            replica = try data.allocate()
            lazy = try LazyVolume.create(
                identity: UInt64(volume.journalVolume), source: source, overlay: overlay, replica: replica,
                state: try state.allocate(), blockSize: volume.blockSize)
        } catch let error as RecoveryError {
            throw error
        } catch {
            throw RecoveryError(.storage, "volume \(volume.name) in \(files): \(error)")
        }
        let server = try FuseVolumeServer(unit: lazy, mountpoint: mountpoint)
        running.withLockedValue {
            $0.volumes[volume.name] = lazy
            $0.replicas[volume.name] = replica
            $0.servers[volume.name] = server
        }
    }

    /// Writes `workload`'s bundle (its root filesystem, an empty file where each volume binds)
    /// and starts its container.
    private func startContainer(
        _ workload: WorkloadSpec, in directory: String, prepareRoot: @Sendable (WorkloadSpec, String) throws -> Void
    ) async throws(RecoveryError) {
        let bundle = directory + "/bundles/" + workload.name
        let root = bundle + "/rootfs"
        var binds: [RuncContainer.Bind] = []
        do {
            try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
            try prepareRoot(workload, root)
            for mount in workload.mounts {
                guard let server = server(of: mount.volume) else {
                    throw RecoveryError(.invalidPlan, "workload \(workload.name) mounts \(mount.volume), not served")
                }
                let target = root + mount.path
                try FileManager.default.createDirectory(
                    atPath: (target as NSString).deletingLastPathComponent, withIntermediateDirectories: true)
                if !FileManager.default.fileExists(atPath: target) {
                    guard FileManager.default.createFile(atPath: target, contents: nil) else {
                        throw RecoveryError(.storage, "cannot make \(target), where \(mount.volume) binds")
                    }
                }
                binds.append(.init(source: server.filePath, destination: mount.path))
            }
        } catch let error as RecoveryError {
            throw error
        } catch {
            throw RecoveryError(.storage, "preparing \(workload.name)'s root filesystem at \(root): \(error)")
        }
        let container = try RuncContainer(
            id: configuration.containerPrefix + "-" + workload.name, bundle: bundle, command: workload.command,
            environment: workload.environment, binds: binds, runc: configuration.runc)
        container.remove()  // One left by a recovery that was killed.
        running.withLockedValue { $0.containers[workload.name] = container }
        try await offload { () throws(RecoveryError) in try container.start() }
    }

    /// Builds every volume's replica, migrates onto it and switches, volume by volume; the
    /// containers that mount a volume are frozen around its switch. `progress` gets the
    /// volume's name and progress after every step.
    ///
    /// - Returns: each volume's summary, by name.
    public func migrate(
        progress: @Sendable (String, LazyVolume.Progress) -> Void = { _, _ in }
    ) async throws(RecoveryError) -> [String: VolumeRecovery.Summary] {
        var summaries: [String: VolumeRecovery.Summary] = [:]
        for spec in plan.environment.volumes {
            guard let volume = volumes[spec.name] else {
                throw RecoveryError(.wrongPhase, "volume \(spec.name) is not served: start the recovery first")
            }
            let users = plan.environment.workloads.filter { $0.mounts.contains { $0.volume == spec.name } }
                .compactMap { container(of: $0.name) }
            let name = spec.name
            summaries[name] = try await VolumeRecovery(
                volume: volume, configuration: .init(stepBlocks: configuration.stepBlocks)
            ).run(
                freeze: {
                    for container in users {
                        try await NIOThreadPool.singleton.runIfActive { try container.pause() }
                    }
                },
                thaw: {
                    for container in users {
                        try await NIOThreadPool.singleton.runIfActive { try container.resume() }
                    }
                },
                progress: { progress(name, $0) })
        }
        return summaries
    }

    /// Removes the containers and unmounts the volumes (their files stay), then closes the files.
    public func stop() {
        let stopped = running.withLockedValue { running in
            defer { running = Running() }
            return running
        }
        for container in stopped.containers.values { container.remove() }
        for server in stopped.servers.values { server.stop() }
        for pool in stopped.pools { pool.close() }
    }

    private func offload(_ body: @escaping @Sendable () throws(RecoveryError) -> Void) async throws(RecoveryError) {
        let result: Result<Void, RecoveryError>
        do {
            result = try await NIOThreadPool.singleton.runIfActive { Result { () throws(RecoveryError) in try body() } }
        } catch {
            throw RecoveryError(.storage, "the I/O thread pool is not running: \(error)")
        }
        try result.get()
    }
}
