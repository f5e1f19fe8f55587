public import FaultToleranceCore
import Foundation
import HeartbeatQuorum
public import Logging
import NIOConcurrencyHelpers
import NIOCore
public import ServiceLifecycle

#if canImport(Glibc)
    import Glibc
#endif

/// The loop every Failover runtime runs until graceful shutdown, cancellation or the transport
/// closing: each message of the Failover protocol goes to `message`, a tick every `tick` to
/// `onTick`, and whatever else is put on `events` to `handle`, each source on a task of its own;
/// `perform`, if given, runs on one more (the server's outbox).
/// A runtime that wants one order over all of them (the control server) has `message` and
/// `onTick` put theirs on `events`; one that serialises them itself (the server) takes them where
/// they arrive, a task switch per message fewer.
func runFailoverLoop(
    transport: any Transport, clock: any RuntimeClock, tick: Duration, events: AsyncQueue<FailoverLoopEvent>,
    beside: (@Sendable () async -> Void)? = nil, perform: (@Sendable () async -> Void)? = nil,
    message: @escaping @Sendable (Envelope) async -> Void, onTick: @escaping @Sendable () async -> Void,
    handle: @escaping @Sendable (FailoverLoopEvent) async -> Void
) async {
    await withTaskGroup(of: Void.self) { tasks in
        if let perform {
            tasks.addTask {
                await perform()
                // Ended early (a journal failure stopped the server): wait for the others.
                while !Task.isCancelled { try? await clock.sleep(for: .seconds(3600)) }
            }
        }
        if let beside {
            tasks.addTask {
                await beside()
                // Ended early (it runs until cancelled): wait for the others rather than end the loop.
                while !Task.isCancelled { try? await clock.sleep(for: .seconds(3600)) }
            }
        }
        tasks.addTask {
            for await envelope in transport.incoming
            where FailoverMessage.MessageType.contains(envelope.message.type) {
                if Task.isCancelled { return }
                await message(envelope)
            }
        }
        tasks.addTask {
            while !Task.isCancelled {
                do { try await clock.sleep(for: tick) } catch { return }
                await onTick()
            }
        }
        tasks.addTask { await parkUntilShutdown() }
        tasks.addTask {
            for await event in events {
                if Task.isCancelled { return }
                await handle(event)
            }
        }
        await tasks.next()
        tasks.cancelAll()
    }
    events.finish()
}

enum FailoverLoopEvent: Sendable {
    case message(Envelope)
    case tick
    case inspect(@Sendable () -> Void)
}

/// A server of the pair: a ``ServerCore`` over a `Transport` and a clock, run as a
/// ServiceLifecycle `Service`. On promotion it calls `bind` with the adopted configuration
/// (start serving on that address); on step-down, `release`. Its controller is the control
/// server at `controller` over the transport, or, given a `controlPlane` (etcd), that in-process.
///
/// ```swift
/// let server = FailoverServer(
///     node: "b", controller: "control", servers: ["a", "b"],
///     configuration: ServiceConfiguration(role: .backup, epoch: 0, host: "127.0.0.1", port: 7400),
///     transport: transport,
///     bind: { configuration in try? await listener.bind(configuration.host, configuration.port) },
///     release: { await listener.close() })
/// try await ServiceGroup(services: [server], logger: logger).run()
/// ```
public final class FailoverServer: Service, @unchecked Sendable {
    // unchecked: `core` is touched only under `lock` (and by the simulation's `unsafe`
    // accessors, on its single thread).
    /// This server.
    public let node: NodeID
    private var core: ServerCore
    private let transport: any Transport
    private let clock: any RuntimeClock
    private let logger: Logger
    private let bind: @Sendable (ServiceConfiguration) async -> Void
    private let release: @Sendable () async -> Void
    /// The control plane's commands (an in-process controller), in order.
    private let events = AsyncQueue<FailoverLoopEvent>(limit: 65_536)
    private let tick: Duration
    private let controlPlane: (any FailoverControlPlane)?
    /// The core's controller (the control server's node, or the control plane's name for itself).
    private let controller: NodeID
    /// Serialises the core: every event is decided under it, and what it causes queued in
    /// `outbox`, which one task at a time carries out, in order (`performing`).
    private let lock = NIOLock()
    private var outbox: [ServerCore.Effect] = []
    /// Whether a task is carrying out the outbox (``drainOutbox()``).
    private var performing = false
    /// Wakes ``performOutbox()`` (a journaled server's): yielded each time the outbox stops being idle.
    private let outboxReady = AsyncQueue<Void>(limit: 2)
    /// The most entries a batched replicate message carries (``ServerCore/Settings/catchUpBatch``).
    private let batchLimit: Int
    /// Where the server keeps what it applies, if anywhere (``ServerCore/Settings/journaled``).
    private let journal: (any ReplicaJournal)?
    /// Set when a journal write failed: from then on the server decides and sends nothing
    /// (fail-stop), so nothing it could not keep is acknowledged; the controller sees it silent.
    private var stopped = false

    /// Creates a server; see ``ServerCore/init(node:controller:servers:configuration:settings:incarnation:bug:)``.
    /// `incarnation` defaults to a random number (a restart is a new incarnation).
    public init(
        node: NodeID, controller: NodeID, servers: [NodeID], configuration: ServiceConfiguration,
        transport: any Transport, clock: any RuntimeClock = SystemClock(),
        settings: ServerCore.Settings = ServerCore.Settings(), incarnation: UInt64 = .random(in: 1...UInt64.max),
        bug: ServerCore.Bug? = nil, logger: Logger = Logger(label: "ft.failover.server"),
        bind: @escaping @Sendable (ServiceConfiguration) async -> Void = { _ in },
        release: @escaping @Sendable () async -> Void = {}, controlPlane: (any FailoverControlPlane)? = nil,
        journal: (any ReplicaJournal)? = nil
    ) {
        self.node = node
        self.journal = journal
        var settings = settings
        settings.journaled = journal != nil
        self.controlPlane = controlPlane
        self.controller = controller
        core = ServerCore(
            node: node, controller: controller, servers: servers, configuration: configuration, settings: settings,
            incarnation: incarnation, bug: bug)
        self.transport = transport
        self.clock = clock
        self.logger = logger
        self.bind = bind
        self.release = release
        tick = min(settings.reportInterval, .milliseconds(5))
        batchLimit = max(1, min(settings.catchUpBatch, FailoverMessage.maximumEntriesPerMessage))
        core.reportsAfterRelease = controlPlane != nil
    }

    /// Called after each event the core handled (the simulation's checks).
    package var afterEvent: (() -> Void)?

    /// The core, for the simulation's checks on its single thread (nothing else may touch it).
    package var unsafeCore: ServerCore {
        get { core }
        set { core = newValue }
    }

    /// Whether the core serves at `now`, for the simulation's check after every event (without
    /// copying the core, as ``unsafeCore`` does, and as a call of `core.serves(now:)` here did:
    /// reading the two stored fields it needs loads only those).
    package func unsafeServes(now: Instant) -> Bool {
        guard core.role == .primary, let until = core.leaseUntil else { return false }
        return now < until
    }

    /// Runs `body` on the core between two events and returns its result.
    public func inspect<T: Sendable>(_ body: @escaping @Sendable (ServerCore) -> T) async -> T {
        lock.withLock { body(core) }
    }

    /// Runs until graceful shutdown, cancellation or the transport closing. With a journal, first
    /// restores what it holds (throwing ``FailoverError/Code/malformed`` for a damaged one).
    public func run() async throws {
        if let journal {
            let recovered = try await journal.recover()
            let refused = lock.withLock { () -> FailoverError? in
                do {
                    try core.restore(recovered)
                    return nil
                } catch {
                    return error as? FailoverError ?? FailoverError(.malformed, detail: "\(error)")
                }
            }
            if let refused { throw refused }
            if let controlPlane, let identity = recovered.identity {
                await controlPlane.journalRestored(identity: identity)
            }
            logger.info(
                "restored from the journal",
                metadata: [
                    "position": "\(lock.withLock { core.store.position })", "entries": "\(recovered.entries.count)",
                    "dropped-bytes": "\(recovered.droppedBytes)",
                ])
        }
        let beside: (@Sendable () async -> Void)?
        if let controlPlane {
            let (events, controller) = (events, self.controller)
            beside = {
                await controlPlane.run { command in
                    events.yield(.message(Envelope(from: controller, path: nil, message: command.encode())))
                }
            }
        } else {
            beside = nil
        }
        // A message is decided on the task that took it from the transport and a tick on the
        // ticker's, with no hand-over to a loop task (see ``handle(_:)`` for how the order of
        // effects is kept); the queue carries only the control plane's commands.
        let perform: (@Sendable () async -> Void)?
        if journal != nil {
            perform = { await self.performOutbox() }
        } else {
            perform = nil
        }
        await runFailoverLoop(
            transport: transport, clock: clock, tick: tick, events: events, beside: beside, perform: perform,
            message: { await self.handle(.message($0)) }, onTick: { await self.handle(.tick) }
        ) { event in
            await self.handle(event)
        }
    }

    /// Decides `event` on the core and queues what it causes in the outbox; then, unless the
    /// outbox is already being carried out, carries it out (``drainOutbox()``). Without a
    /// journal the task that took the event does that itself, a task switch fewer per message.
    /// With one it wakes ``performOutbox()`` and goes back to its source at once: messages that
    /// arrive while a journal write syncs are decided meanwhile, and their effects leave
    /// together (``ServerCore/batched(_:limit:)``: their entries in one write, one sync, one
    /// acknowledgement, one replicate message per backup).
    private func handle(_ event: FailoverLoopEvent) async {
        let start = lock.withLock { () -> Bool in
            guard !stopped else { return false }
            outbox.append(contentsOf: decide(event))
            guard !performing, !outbox.isEmpty else { return false }
            performing = true
            return true
        }
        guard start else { return }
        if journal == nil {
            await drainOutbox()
        } else {
            outboxReady.yield(())
        }
    }

    /// Carries out the outbox (of a journaled server) each time ``handle(_:)`` wakes it, until
    /// the loop ends.
    private func performOutbox() async {
        for await _ in outboxReady { await drainOutbox() }
    }

    /// Carries out the outbox until it is empty, batch by batch: strictly in the order decided
    /// (a step-down's release never overtakes an earlier promotion's bind, nor a reply the send
    /// before it), each effect awaited before the next, a journal write before whatever
    /// follows it. One task at a time (`performing`).
    private func drainOutbox() async {
        while let effects = lock.withLock({ () -> [ServerCore.Effect]? in
            guard !outbox.isEmpty else {
                performing = false
                return nil
            }
            defer { outbox.removeAll(keepingCapacity: true) }
            return outbox
        }) {
            for effect in ServerCore.batched(effects, limit: batchLimit) {
                if case .journal(let record) = effect {
                    guard await write(record) else { return }
                } else {
                    await carryOut(effect)
                }
            }
        }
    }

    /// Writes a journal record; on failure stops the server for good and returns false.
    private func write(_ record: JournalRecord) async -> Bool {
        do {
            try await journal?.write(record)
            return true
        } catch {
            logger.critical("journal write failed: the server stops", metadata: ["error": "\(error)"])
            lock.withLock {
                stopped = true
                outbox.removeAll()
            }
            return false
        }
    }

    /// The core's answer to `event` (called under `lock`).
    private func decide(_ event: FailoverLoopEvent) -> [ServerCore.Effect] {
        let now = clock.now
        let effects: [ServerCore.Effect]
        switch event {
        case .message(let envelope):
            do {
                let message = try FailoverMessage.decode(envelope.message)
                effects = core.receive(message, from: envelope.from, now: now)
            } catch {
                logger.debug("failover message refused", metadata: ["from": "\(envelope.from)", "error": "\(error)"])
                return []
            }
        case .tick:
            effects = core.tick(now: now)
        case .inspect(let body):
            body()
            return []
        }
        afterEvent?()
        return effects
    }

    private func carryOut(_ effect: ServerCore.Effect) async {
        switch effect {
        case .send(let message, let target) where controlPlane != nil && target == controller:
            await controlPlane?.deliver(message)
        case .send(let message, let target):
            do {
                try await transport.send(message.encode(), to: target)
            } catch {
                logger.trace("failover send failed", metadata: ["to": "\(target)", "error": "\(error)"])
            }
        case .bindService(let configuration):
            logger.info(
                "promoted: serving",
                metadata: [
                    "epoch": "\(configuration.epoch)", "address": "\(configuration.host):\(configuration.port)",
                ])
            await bind(configuration)
            await controlPlane?.serving(configuration)
        case .releaseService:
            logger.info("stepped down", metadata: ["epoch": "\(lock.withLock { core.epoch })"])
            await release()
        case .journal(let record):
            _ = await write(record)
        }
    }
}

/// Where the control server keeps its epoch between runs (it must never hand one out twice).
public protocol EpochStore: Sendable {
    /// The last recorded epoch (0 when none).
    func load() throws -> UInt64
    /// Records `epoch` durably before returning.
    func record(_ epoch: UInt64) throws
}

/// An epoch store in memory (tests, simulation).
public final class MemoryEpochStore: EpochStore {
    private let value = NIOLockedValueBox<UInt64>(0)
    /// An empty store.
    public init() {}
    /// The last recorded epoch.
    public func load() -> UInt64 { value.withLockedValue { $0 } }
    /// Records `epoch`.
    public func record(_ epoch: UInt64) { value.withLockedValue { $0 = max($0, epoch) } }
}

/// The control server: a ``FailoverController`` over a `Transport` and a clock. Each server's
/// reports (every ``FailoverController/Configuration/renewInterval``) are its heartbeats; a
/// HeartbeatQuorum failure detector per server turns their silence into the verdicts.
public final class FailoverControlServer: Service, @unchecked Sendable {
    // unchecked: `controller` and `detectors` are touched only by the loop's task.
    /// This control server's node.
    public let node: NodeID
    private var controller: FailoverController
    private var detectors: [NodeID: (detector: FailureDetector, since: Instant, alive: Bool)] = [:]
    private let transport: any Transport
    private let clock: any RuntimeClock
    private let epochs: any EpochStore
    private let logger: Logger
    private let detectionTimeout: Duration
    private let fence: @Sendable (NodeID, UInt64) async -> Void
    private let events = AsyncQueue<FailoverLoopEvent>(limit: 65_536)
    private let startedAt: Instant

    /// Creates a control server. `detectionTimeout`: the silence after which a server is held
    /// dead (3 report intervals by default); `fence` is called for each server fenced.
    public init(
        node: NodeID, configuration: FailoverController.Configuration, transport: any Transport,
        clock: any RuntimeClock = SystemClock(), epochs: any EpochStore = MemoryEpochStore(),
        detectionTimeout: Duration? = nil, bug: FailoverController.Bug? = nil,
        logger: Logger = Logger(label: "ft.failover.control"),
        fence: @escaping @Sendable (NodeID, UInt64) async -> Void = { _, _ in }
    ) throws(FailoverError) {
        try configuration.validate()
        self.node = node
        let now = clock.now
        let epoch: UInt64
        do { epoch = try epochs.load() } catch {
            throw FailoverError(.invalidConfiguration, detail: "the epoch store cannot be read: \(error)")
        }
        controller = FailoverController(configuration: configuration, epoch: epoch, now: now, bug: bug)
        self.transport = transport
        self.clock = clock
        self.epochs = epochs
        self.logger = logger
        self.detectionTimeout = detectionTimeout ?? configuration.renewInterval * 3
        self.fence = fence
        startedAt = now
    }

    /// The controller, for the simulation's checks on its single thread (nothing else may touch it).
    package var unsafeController: FailoverController { controller }
    /// Called with every command before it is carried out (the simulation's promotion check).
    package var onCommand: ((FailoverController.Command) -> Void)?
    /// Called with a line on each verdict change (the simulation's `FT_FAILOVER_TRACE`).
    package var trace: ((String) -> Void)?

    /// Runs `body` on the controller between two events and returns its result.
    public func inspect<T: Sendable>(_ body: @escaping @Sendable (FailoverController) -> T) async -> T {
        await withCheckedContinuation { continuation in
            events.yield(.inspect { [unowned self] in continuation.resume(returning: body(self.controller)) })
        }
    }

    /// Runs until graceful shutdown, cancellation or the transport closing.
    public func run() async throws {
        let tick = min(controller.configuration.renewInterval, .milliseconds(5))
        // One order over messages, ticks and inspections: all go through the queue.
        let events = self.events
        await runFailoverLoop(
            transport: transport, clock: clock, tick: tick, events: events,
            message: { events.yield(.message($0)) }, onTick: { events.yield(.tick) }
        ) { event in
            await self.handle(event)
        }
    }

    private func handle(_ event: FailoverLoopEvent) async {
        let now = clock.now
        var commands: [FailoverController.Command] = []
        // An operator's answer, sent once the commands are carried out (a switchover's epoch
        // recorded first).
        var answer: (FailoverMessage, NodeID)?
        switch event {
        case .message(let envelope):
            let message: FailoverMessage
            do {
                message = try FailoverMessage.decode(envelope.message)
            } catch {
                logger.debug("failover message refused", metadata: ["from": "\(envelope.from)", "error": "\(error)"])
                return
            }
            switch message {
            case .statusQuery:
                answer = (.status(controller.status), envelope.from)
            case .switchover(let target):
                do {
                    commands += try controller.switchover(to: target, now: now)
                    logger.notice(
                        "planned switchover",
                        metadata: [
                            "from": "\(controller.status.failingOverFrom?.description ?? "-")",
                            "target": "\(target?.description ?? "newest backup")", "epoch": "\(controller.epoch)",
                            "asked-by": "\(envelope.from)",
                        ])
                    trace?("switchover to \(target?.description ?? "the newest backup") asked by \(envelope.from)")
                    answer = (.switchoverAnswer(epoch: controller.epoch, refusal: nil), envelope.from)
                } catch {
                    answer = (
                        .switchoverAnswer(epoch: controller.epoch, refusal: error.detail ?? "\(error.code)"),
                        envelope.from
                    )
                }
            case .report(let report):
                guard controller.configuration.servers.contains(envelope.from) else { return }
                heard(envelope.from, at: now, commands: &commands)
                commands += controller.report(envelope.from, report, now: now)
            case .whoIsPrimary:
                let answer = FailoverMessage.primaryIs(
                    node: controller.primary, epoch: controller.epoch, host: "", port: 0)
                try? await transport.send(answer.encode(), to: envelope.from)
            default:
                return
            }
        case .tick:
            for (server, watch) in detectors.sorted(by: { $0.key < $1.key })
            where watch.alive && watch.detector.hasFailed(at: now, since: watch.since) {
                detectors[server]?.alive = false
                logger.info("server silent: held dead", metadata: ["server": "\(server)"])
                trace?("\(server) held dead")
                commands += controller.heartbeat(server, alive: false, now: now)
            }
            commands += controller.tick(now: now)
        case .inspect(let body):
            body()
            return
        }
        await perform(commands)
        if let (message, to) = answer { try? await transport.send(message.encode(), to: to) }
    }

    private func heard(_ server: NodeID, at now: Instant, commands: inout [FailoverController.Command]) {
        if detectors[server] == nil {
            detectors[server] = (
                FailureDetector(
                    configuration: .fixedTimeout(detectionTimeout),
                    expectedInterval: controller.configuration.renewInterval),
                now, true
            )
        }
        detectors[server]?.detector.heartbeat(at: now)
        if detectors[server]?.alive == false {
            trace?("\(server) heard again")
            detectors[server]?.alive = true
            detectors[server]?.since = now
            commands += controller.heartbeat(server, alive: true, now: now)
        }
    }

    private func perform(_ commands: [FailoverController.Command]) async {
        for command in commands {
            onCommand?(command)
            let message: FailoverMessage
            let target: NodeID
            switch command {
            case .recordEpoch(let epoch):
                do {
                    try epochs.record(epoch)
                } catch {
                    // Nothing after it may be sent: an epoch not recorded could be handed out twice.
                    logger.error(
                        "epoch not recorded: holding back", metadata: ["epoch": "\(epoch)", "error": "\(error)"])
                    return
                }
                continue
            case .renewLease(let to, let epoch, let duration, let stamp, let syncSet):
                (message, target) = (.renewLease(epoch: epoch, duration: duration, stamp: stamp, syncSet: syncSet), to)
            case .stepDown(let to, let epoch):
                (message, target) = (.stepDown(epoch: epoch), to)
            case .fence(let server, let epoch):
                logger.warning("fencing", metadata: ["server": "\(server)", "epoch": "\(epoch)"])
                await fence(server, epoch)
                continue
            case .promote(let to, let epoch, let syncSet, let minimum):
                logger.info("promoting", metadata: ["server": "\(to)", "epoch": "\(epoch)", "sync-set": "\(syncSet)"])
                (message, target) = (.promote(epoch: epoch, syncSet: syncSet, minimum: minimum), to)
            case .releaseBackup(let to, let epoch, let backup):
                (message, target) = (.releaseBackup(epoch: epoch, backup: backup), to)
            case .waiting(let reason):
                logger.notice("promotion held back", metadata: ["reason": "\(reason)"])
                continue
            }
            do {
                try await transport.send(message.encode(), to: target)
            } catch {
                logger.trace("failover send failed", metadata: ["to": "\(target)", "error": "\(error)"])
            }
        }
    }
}

/// An epoch store in a file: one checksummed frame (type 0x0623: format version, epoch),
/// replaced atomically (write a temporary file, `fsync`, rename, `fsync` the directory) on
/// every record. A damaged file is an error, never epoch 0.
public final class FileEpochStore: EpochStore {
    /// The file.
    public let path: String
    private let lock = NIOLock()

    /// A store at `path` (created on the first record).
    public init(path: String) { self.path = path }

    /// The last recorded epoch: 0 when the file does not exist; throws
    /// ``FailoverError/Code/malformed`` when it exists but does not hold a valid record.
    public func load() throws -> UInt64 {
        try lock.withLock {
            guard let data = FileManager.default.contents(atPath: path) else { return 0 }
            let frames: [Frame]
            do {
                frames = try FrameDecoder.decodeAll(Message(type: 0, bytes: data).payload, maximumPayloadLength: 64)
            } catch {
                throw FailoverError(.malformed, detail: "epoch file \(path): \(error)")
            }
            guard frames.count == 1, let frame = frames.first, frame.type == 0x0623, frame.payload.readableBytes == 9,
                frame.payload.getInteger(at: frame.payload.readerIndex, as: UInt8.self) == 1,
                let epoch = frame.payload.getInteger(
                    at: frame.payload.readerIndex + 1, endianness: .little, as: UInt64.self)
            else { throw FailoverError(.malformed, detail: "epoch file \(path) holds no valid record") }
            return epoch
        }
    }

    /// Records `epoch` durably.
    public func record(_ epoch: UInt64) throws {
        try lock.withLock {
            var payload = ByteBuffer()
            payload.writeInteger(UInt8(1))
            payload.writeInteger(epoch, endianness: .little)
            let bytes = Array(Frame(type: 0x0623, payload: payload).encoded().readableBytesView)
            let temporary = path + ".tmp"
            let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
            guard descriptor >= 0 else {
                throw FailoverError(.closed, detail: "cannot create \(temporary): errno \(errno)")
            }
            let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
            let synced = fsync(descriptor)
            close(descriptor)
            guard written == bytes.count, synced == 0, rename(temporary, path) == 0 else {
                throw FailoverError(.closed, detail: "cannot record epoch \(epoch) in \(path): errno \(errno)")
            }
            let directory = (path as NSString).deletingLastPathComponent
            let handle = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            if handle >= 0 {
                defer { close(handle) }
                guard fsync(handle) == 0 else {
                    throw FailoverError(.closed, detail: "cannot sync the directory of \(path): errno \(errno)")
                }
            }
        }
    }
}
