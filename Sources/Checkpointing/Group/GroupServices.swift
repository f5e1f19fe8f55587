public import FaultToleranceCore
public import Logging
import NIOConcurrencyHelpers
import NIOPosix
public import ServiceLifecycle

/// Where a runtime runs blocking disk I/O: on NIO's shared thread pool (production), or inline
/// on the calling task (the simulation, whose deterministic executor must see every job).
package enum BlockingIO: Sendable {
    case threadPool
    case inline

    func run<T: Sendable>(_ body: @escaping @Sendable () throws(CheckpointError) -> T) async throws(CheckpointError)
        -> T
    {
        switch self {
        case .inline:
            return try body()
        case .threadPool:
            do {
                return try await NIOThreadPool.singleton.runIfActive { try body() }
            } catch let error as CheckpointError {
                throw error
            } catch {
                throw CheckpointError(.unavailable, detail: "\(error)")
            }
        }
    }
}

/// Calls `tick` every `interval` of `clock` until the task is cancelled (the services check
/// their deadlines on each tick).
private func ticks(every interval: Duration, on clock: any RuntimeClock, _ tick: () -> Void) async {
    while !Task.isCancelled {
        do { try await clock.sleep(for: interval) } catch { return }
        tick()
    }
}

/// Adds a task that parks until graceful shutdown or cancellation, waits until that or any
/// other task ends (rethrowing its error, not the shutdown's), then cancels the rest.
private func untilShutdownOrFirstEnd(_ tasks: inout ThrowingTaskGroup<Void, any Error>) async throws {
    tasks.addTask {
        await parkUntilShutdown()
        throw CancellationError()
    }
    do {
        try await tasks.next()
    } catch is CancellationError {
    }
    tasks.cancelAll()
}

/// A committed group epoch: its number and every member's checkpoint.
public struct GroupEpoch: Sendable, Hashable {
    /// The epoch.
    public var epoch: UInt64
    /// Each member's checkpoint of the epoch.
    public var checkpoints: [NodeID: CheckpointID]
}

/// The group checkpoint coordinator's runtime: drives a ``GroupCoordinator`` over a
/// ``FaultToleranceCore/Transport``, keeps its record in a ``GroupCoordinatorLog`` and reads
/// time from the injected ``FaultToleranceCore/RuntimeClock``.
///
/// A ServiceLifecycle `Service`: run it in a `ServiceGroup` (or call ``run()``), then ask for
/// group checkpoints with ``checkpoint(full:)``. Every event (a message, a tick, a request) is
/// handled in order by one loop, so the record is always written before the messages that
/// depend on it are sent. Deadlines are checked every `tickInterval`.
///
/// ```swift
/// let log = try GroupCoordinatorLog(unit: recordUnit, group: 7)
/// let coordinator = try GroupCoordinatorService(
///     group: 7, members: ["a", "b", "c"], log: log, transport: transport)
/// // in a ServiceGroup, or: Task { try await coordinator.run() }
/// let epoch = try await coordinator.checkpoint()  // throws CheckpointError(.aborted) if a member fails
/// ```
public final class GroupCoordinatorService: Service, Sendable {
    enum Event: Sendable {
        case message(Envelope)
        case tick
        /// A request for an epoch; its waiter is in `waiters` under `.request(token)`.
        case start(full: Bool, token: UInt64)
    }

    /// Whom a waiter waits for: a request not yet started, or an epoch.
    enum WaiterKey: Hashable {
        case request(UInt64)
        case epoch(UInt64)
    }

    /// The group's identity on the wire.
    public let group: UInt64
    private let log: GroupCoordinatorLog
    private let transport: any Transport
    private let clock: any RuntimeClock
    private let tickInterval: Duration
    private let logger: Logger
    private let blockingIO: BlockingIO
    private let machine: NIOLockedValueBox<GroupCoordinator>
    private let waiters = NIOLockedValueBox<
        (next: UInt64, stopped: Bool, byKey: [WaiterKey: CheckedContinuation<GroupEpoch, any Error>])
    >((1, false, [:]))
    private let events: AsyncStream<Event>
    private let eventInput: AsyncStream<Event>.Continuation
    private let outcomeInput: AsyncStream<(epoch: UInt64, outcome: GroupCoordinator.Outcome)>.Continuation

    /// Every epoch's end, in order (the newest 64 kept for a slow consumer).
    public let outcomes: AsyncStream<(epoch: UInt64, outcome: GroupCoordinator.Outcome)>

    /// A coordinator for `members`; an epoch aborts unless every member's checkpoint is
    /// durable within `epochTimeout`.
    public convenience init(
        group: UInt64, members: [NodeID], epochTimeout: Duration = .seconds(60), log: GroupCoordinatorLog,
        transport: any Transport, clock: any RuntimeClock = SystemClock(), tickInterval: Duration = .milliseconds(50),
        logger: Logger = Logger(label: "swift-fault-tolerance.checkpoint.group")
    ) throws(CheckpointError) {
        try self.init(
            group: group, members: members, epochTimeout: epochTimeout, log: log, transport: transport, clock: clock,
            tickInterval: tickInterval, logger: logger, blockingIO: .threadPool, bug: nil)
    }

    /// The simulation's initializer: blocking I/O inline, and a planted bug.
    package init(
        group: UInt64, members: [NodeID], epochTimeout: Duration, log: GroupCoordinatorLog, transport: any Transport,
        clock: any RuntimeClock, tickInterval: Duration, logger: Logger, blockingIO: BlockingIO,
        bug: GroupCheckpointBug?
    ) throws(CheckpointError) {
        guard log.group == group else {
            throw CheckpointError(.invalidConfiguration, detail: "the log is group \(log.group)'s, not \(group)'s")
        }
        guard tickInterval > .zero else {
            throw CheckpointError(.invalidConfiguration, detail: "tick interval \(tickInterval) must be positive")
        }
        var machine = try GroupCoordinator(members: members, epochTimeout: epochTimeout, record: log.record)
        machine.bug = bug
        self.group = group
        self.log = log
        self.transport = transport
        self.clock = clock
        self.tickInterval = tickInterval
        self.logger = logger
        self.blockingIO = blockingIO
        self.machine = NIOLockedValueBox(machine)
        (events, eventInput) = AsyncStream.makeStream(of: Event.self)
        (outcomes, outcomeInput) = AsyncStream.makeStream(
            of: (epoch: UInt64, outcome: GroupCoordinator.Outcome).self, bufferingPolicy: .bufferingNewest(64))
    }

    /// The durable record.
    public var record: GroupCoordinator.Record { machine.withLockedValue { $0.record } }

    /// Takes a group checkpoint: every member's checkpoint of one new epoch, committed all
    /// together, or none (``CheckpointError/Code/aborted``, with why). Fails with
    /// ``CheckpointError/Code/unavailable`` while another epoch is in progress. Needs ``run()``
    /// running.
    public func checkpoint(full: Bool = false) async throws -> GroupEpoch {
        try await withCheckedThrowingContinuation { continuation in
            let token = waiters.withLockedValue { waiters -> UInt64? in
                guard !waiters.stopped else { return nil }
                defer { waiters.next += 1 }
                waiters.byKey[.request(waiters.next)] = continuation
                return waiters.next
            }
            guard let token else {
                continuation.resume(throwing: CheckpointError(.unavailable, detail: "the coordinator has stopped"))
                return
            }
            eventInput.yield(.start(full: full, token: token))
        }
    }

    /// Serves until graceful shutdown or cancellation. After a restart it first tells the
    /// members that an epoch begun and not committed is aborted. Throws when the record
    /// cannot be written (nothing is sent after a failed write).
    public func run() async throws {
        defer {
            eventInput.finish()
            outcomeInput.finish()
            // Requests not yet handled and epochs not yet ended: nobody will answer them now.
            let pending = waiters.withLockedValue { waiters in
                waiters.stopped = true
                defer { waiters.byKey.removeAll() }
                return Array(waiters.byKey.values)
            }
            for waiter in pending {
                waiter.resume(throwing: CheckpointError(.unavailable, detail: "coordinator stopped"))
            }
        }
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                for await envelope in self.transport.incoming {
                    guard GroupMessage.handles(envelope.message.type) else { continue }
                    self.eventInput.yield(.message(envelope))
                }
            }
            tasks.addTask { await ticks(every: self.tickInterval, on: self.clock) { self.eventInput.yield(.tick) } }
            tasks.addTask {
                try await self.perform(self.machine.withLockedValue { $0.recover() })
                for await event in self.events {
                    try await self.handle(event)
                }
            }
            try await untilShutdownOrFirstEnd(&tasks)
        }
    }

    private func handle(_ event: Event) async throws {
        let now = clock.now
        switch event {
        case .message(let envelope):
            let decoded: (group: UInt64, message: GroupMessage)
            do { decoded = try GroupMessage.decode(envelope.message) } catch {
                logger.debug(
                    "ignored a malformed group message", metadata: ["from": "\(envelope.from)", "error": "\(error)"])
                return
            }
            guard decoded.group == group else { return }
            try await perform(machine.withLockedValue { $0.receive(decoded.message, from: envelope.from, now: now) })
        case .tick:
            try await perform(machine.withLockedValue { $0.tick(now: now) })
        case .start(let full, let token):
            let effects = machine.withLockedValue { $0.start(now: now, full: full) }
            let epoch = effects.lazy.compactMap { effect -> UInt64? in
                if case .send(let message, _) = effect { return message.epoch }
                return nil
            }.first
            let continuation = waiters.withLockedValue { waiters in
                let continuation = waiters.byKey.removeValue(forKey: .request(token))
                if let epoch, let continuation { waiters.byKey[.epoch(epoch)] = continuation }
                return continuation
            }
            guard epoch != nil else {
                continuation?.resume(throwing: CheckpointError(.unavailable, detail: "a group epoch is in progress"))
                return
            }
            try await perform(effects)
        }
    }

    private func perform(_ effects: [GroupCoordinator.Effect]) async throws {
        for effect in effects {
            switch effect {
            case .persist(let record):
                let log = self.log
                do {
                    try await blockingIO.run { () throws(CheckpointError) in try log.write(record) }
                } catch {
                    logger.error("cannot write the coordinator record", metadata: ["error": "\(error)"])
                    throw error
                }
            case .send(let message, let nodes):
                let wire = message.message(group: group)
                for node in nodes {
                    do { try await transport.send(wire, to: node, over: nil) } catch {
                        logger.debug("group message not sent", metadata: ["to": "\(node)", "error": "\(error)"])
                    }
                }
            case .wake:
                // Deadlines are checked on every tick.
                break
            case .ended(let epoch, let outcome):
                outcomeInput.yield((epoch, outcome))
                let waiter = waiters.withLockedValue { $0.byKey.removeValue(forKey: .epoch(epoch)) }
                switch outcome {
                case .committed(let checkpoints):
                    logger.info("group epoch committed", metadata: ["epoch": "\(epoch)"])
                    waiter?.resume(returning: GroupEpoch(epoch: epoch, checkpoints: checkpoints))
                case .aborted(let reason):
                    logger.warning("group epoch aborted", metadata: ["epoch": "\(epoch)", "reason": "\(reason)"])
                    waiter?.resume(throwing: CheckpointError(.aborted, detail: "epoch \(epoch): \(reason)"))
                }
            }
        }
    }
}

/// A group member's runtime: drives a ``GroupMember`` over a ``FaultToleranceCore/Transport``
/// for one application's ``CheckpointStore``.
///
/// Started, it first settles: a checkpoint the store holds in doubt (prepared before a crash,
/// its epoch's fate unknown) is resolved by asking the coordinator, and ``settled()`` returns
/// the application's newest committed checkpoint, the state to restore before serving. Then
/// ``attach(_:)`` hands it the application's ``Checkpointer``; until then `prepare`s are
/// answered `failed`, which aborts those epochs.
///
/// Messages between members belong to the group's state too. Send them with ``send(_:to:)``
/// and take them in the handler of ``setMessageHandler(_:)``: then every group cut is
/// consistent, no message handled before its receiver's cut having been sent after its
/// sender's (the channels are drained at each cut with markers; see the Checkpointing
/// article). The channels must deliver in order, as TCP does.
///
/// ```swift
/// let member = GroupMemberService(group: 7, coordinator: "coordinator", store: store,
///                                 application: "orders", transport: transport)
/// // run it in a ServiceGroup, then:
/// let resumeFrom = try await member.settled()       // after any in-doubt epoch is decided
/// if let resumeFrom { try store.restore(resumeFrom.id, into: memory) }
/// member.attach(try Checkpointer(application: "orders", store: store, regions: ["heap": memory],
///                                resumingFrom: resumeFrom?.id))
/// ```
public final class GroupMemberService: Service, Sendable {
    enum Event: Sendable {
        case message(Envelope)
        case tick
        case captured(epoch: UInt64, checkpoint: CheckpointID)
        case captureFailed(epoch: UInt64, reason: String)
        case cutTaken(epoch: UInt64)
    }

    /// The group's identity on the wire.
    public let group: UInt64
    /// The coordinator's node.
    public let coordinator: NodeID
    /// The other members, whose messages and markers this member takes.
    public let peers: [NodeID]
    private let channel: GroupChannel
    private let markerTimeout: Duration
    /// The application's store.
    public let store: CheckpointStore
    /// The application's name in the store.
    public let application: String
    private let transport: any Transport
    private let clock: any RuntimeClock
    private let fateInterval: Duration
    private let tickInterval: Duration
    private let logger: Logger
    private let blockingIO: BlockingIO
    private let bug: GroupCheckpointBug?
    private let checkpointer = NIOLockedValueBox<Checkpointer?>(nil)
    /// The capture running beside the loop, cancelled when the service stops.
    private let captureTask = NIOLockedValueBox<Task<Void, Never>?>(nil)
    private let settledState = NIOLockedValueBox<(done: Bool, waiters: [CheckedContinuation<Void, Never>])>((false, []))
    private let events: AsyncStream<Event>
    private let eventInput: AsyncStream<Event>.Continuation

    /// A member of `group` for `application`'s checkpoints in `store`; an undecided checkpoint's
    /// fate is asked of `coordinator` every `fateInterval`. `peers` are the other members (this
    /// node is left out if listed), whose markers a cut waits for, at most `markerTimeout`;
    /// their messages held back for an epoch this member never cuts are handed over after
    /// `holdLimit`.
    public convenience init(
        group: UInt64, coordinator: NodeID, peers: [NodeID] = [], store: CheckpointStore, application: String,
        transport: any Transport, clock: any RuntimeClock = SystemClock(), fateInterval: Duration = .seconds(2),
        markerTimeout: Duration = .seconds(5), holdLimit: Duration = .seconds(30),
        tickInterval: Duration = .milliseconds(50),
        logger: Logger = Logger(label: "swift-fault-tolerance.checkpoint.group")
    ) {
        self.init(
            group: group, coordinator: coordinator, peers: peers, store: store, application: application,
            transport: transport, clock: clock, fateInterval: fateInterval, markerTimeout: markerTimeout,
            holdLimit: holdLimit, tickInterval: tickInterval, logger: logger, blockingIO: .threadPool, bug: nil)
    }

    /// The simulation's initializer: blocking I/O inline, and a planted bug.
    package init(
        group: UInt64, coordinator: NodeID, peers: [NodeID], store: CheckpointStore, application: String,
        transport: any Transport, clock: any RuntimeClock, fateInterval: Duration, markerTimeout: Duration,
        holdLimit: Duration, tickInterval: Duration, logger: Logger, blockingIO: BlockingIO, bug: GroupCheckpointBug?
    ) {
        self.group = group
        self.coordinator = coordinator
        let others = peers.filter { $0 != transport.localNode && $0 != coordinator }
        self.peers = others
        self.markerTimeout = markerTimeout > .zero ? markerTimeout : .seconds(5)
        self.channel = GroupChannel(
            peers: others, holdLimit: holdLimit > .zero ? holdLimit : .seconds(30),
            disabled: bug == .deliverAcrossTheCut)
        self.store = store
        self.application = application
        self.transport = transport
        self.clock = clock
        self.fateInterval = fateInterval > .zero ? fateInterval : .seconds(2)
        self.tickInterval = tickInterval > .zero ? tickInterval : .milliseconds(50)
        self.logger = logger
        self.blockingIO = blockingIO
        self.bug = bug
        (events, eventInput) = AsyncStream.makeStream(of: Event.self)
    }

    /// Waits until no checkpoint of the application is in doubt, then returns its newest
    /// committed checkpoint (the state to restore before serving), if any. Needs ``run()``
    /// running.
    public func settled() async -> CheckpointSummary? {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let ready = settledState.withLockedValue { state in
                if state.done { return true }
                state.waiters.append(continuation)
                return false
            }
            if ready { continuation.resume() }
        }
        return store.latest(application: application)
    }

    /// Hands over the application's checkpointer (for this member's application and store):
    /// from now on this member takes part in epochs.
    public func attach(_ checkpointer: Checkpointer) {
        self.checkpointer.withLockedValue { $0 = checkpointer }
    }

    /// Sets the handler of messages from the other members (`nil` drops them). It runs on the
    /// service's loop, one message at a time and in order per sender; a message's effect is in
    /// this member's checkpoint of an epoch exactly when the handler returned before the cut.
    public func setMessageHandler(_ handler: (@Sendable (NodeID, Message) -> Void)?) {
        channel.setHandler(handler)
    }

    /// Sends an application message to another member, in order with this member's markers.
    /// While a cut drains the channels (one exchange of markers) the send waits.
    public func send(_ message: Message, to peer: NodeID) async throws(TransportError) {
        await channel.beginSend()
        defer { channel.sendEnded() }
        try await transport.send(GroupChannelData.encode(message, group: group), to: peer, over: nil)
    }

    /// Serves until graceful shutdown or cancellation.
    public func run() async throws {
        defer {
            eventInput.finish()
            captureTask.withLockedValue { $0?.cancel() }
        }
        let inDoubt = store.inDoubt.filter { $0.application == application }
        let highest =
            (store.checkpoints + inDoubt).filter { $0.application == application }.map(\.epoch).max() ?? 0
        // At most one is in doubt (a member takes no checkpoint while one is); older ones, if a
        // store somehow holds several, are asked about one after another.
        let olderDoubts = Array(inDoubt.dropLast())
        var machine = try GroupMember(
            fateInterval: fateInterval, highestEpoch: highest,
            inDoubt: inDoubt.last.map { ($0.epoch, $0.id) })
        machine.bug = bug
        let state = NIOLockedValueBox(machine)
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                for await envelope in self.transport.incoming {
                    let type = envelope.message.type
                    let fromCoordinator = envelope.from == self.coordinator && GroupMessage.handles(type)
                    let fromPeer =
                        self.peers.contains(envelope.from)
                        && (type == GroupChannelData.type || type == GroupMessage.marker(epoch: 0).type)
                    guard fromCoordinator || fromPeer else { continue }
                    self.eventInput.yield(.message(envelope))
                }
            }
            tasks.addTask { await ticks(every: self.tickInterval, on: self.clock) { self.eventInput.yield(.tick) } }
            tasks.addTask {
                // Older doubts first (a store should never hold more than one).
                for summary in olderDoubts {
                    try await self.settleAlone(summary)
                }
                try await self.perform(state.withLockedValue { $0.start(now: self.clock.now) }, state: state)
                self.markSettledIfDone(state)
                for await event in self.events {
                    try await self.handle(event, state: state)
                    self.markSettledIfDone(state)
                }
            }
            try await untilShutdownOrFirstEnd(&tasks)
        }
    }

    /// Holds sends, sends this member's markers and waits for the peers'; `false` (the failure
    /// reported to the loop) when the epoch is refused or a marker does not come in time.
    private func drainChannels(for epoch: UInt64) async -> Bool {
        let channel = self.channel
        let clock = self.clock
        let limit = markerTimeout
        // One time-out for the whole drain: sends in flight, then the peers' markers.
        let timer = Task(executorPreference: clock.taskExecutor) {
            do { try await clock.sleep(for: limit) } catch { return }
            channel.timeOut(epoch)
        }
        defer { timer.cancel() }
        guard await channel.holdSends(for: epoch) else {
            let reason =
                channel.refuses(epoch)
                ? "messages from after a member's cut were handled here before this one's"
                : "this member's sends in flight did not finish in time"
            eventInput.yield(.captureFailed(epoch: epoch, reason: reason))
            return false
        }
        guard !peers.isEmpty else { return true }
        // To every peer at once: one that is down (its connection retrying) delays no other.
        let marker = GroupMessage.marker(epoch: epoch).message(group: group)
        await withTaskGroup(of: Void.self) { sends in
            for peer in peers {
                sends.addTask {
                    do { try await self.transport.send(marker, to: peer, over: nil) } catch {
                        self.logger.debug("marker not sent", metadata: ["to": "\(peer)", "error": "\(error)"])
                    }
                }
            }
        }
        guard await channel.waitForMarkers(epoch) else {
            eventInput.yield(.captureFailed(epoch: epoch, reason: "a member's marker did not come in time"))
            return false
        }
        return true
    }

    /// Resolves one extra in-doubt checkpoint with a machine of its own (before the main one).
    private func settleAlone(_ summary: CheckpointSummary) async throws {
        let single = NIOLockedValueBox(
            try GroupMember(fateInterval: fateInterval, inDoubt: (summary.epoch, summary.id)))
        try await perform(single.withLockedValue { $0.start(now: clock.now) }, state: single)
        for await event in events {
            try await handle(event, state: single)
            if single.withLockedValue({ $0.isSettled }) { return }
        }
    }

    private func markSettledIfDone(_ state: NIOLockedValueBox<GroupMember>) {
        guard state.withLockedValue({ $0.isSettled }) else { return }
        let waiters = settledState.withLockedValue { settled -> [CheckedContinuation<Void, Never>] in
            guard !settled.done else { return [] }
            settled.done = true
            defer { settled.waiters = [] }
            return settled.waiters
        }
        for waiter in waiters { waiter.resume() }
    }

    private func handle(_ event: Event, state: NIOLockedValueBox<GroupMember>) async throws {
        let now = clock.now
        let effects: [GroupMember.Effect]
        switch event {
        case .message(let envelope):
            if envelope.message.type == GroupChannelData.type {
                guard let data = try? GroupChannelData.decode(envelope.message), data.group == group else { return }
                channel.data(data.message, from: envelope.from)
                return
            }
            let decoded: (group: UInt64, message: GroupMessage)
            do { decoded = try GroupMessage.decode(envelope.message) } catch {
                logger.debug("ignored a malformed group message", metadata: ["error": "\(error)"])
                return
            }
            guard decoded.group == group else { return }
            switch decoded.message {
            case .marker(let epoch):
                if envelope.from != coordinator { channel.marker(epoch, from: envelope.from, now: now) }
                return
            case .prepare(let epoch, _, _) where epoch > 0:
                // Every earlier epoch is over.
                channel.abandon(through: epoch - 1)
            case .abort(let epoch):
                channel.abandon(through: epoch)
            default:
                break
            }
            effects = state.withLockedValue { $0.receive(decoded.message, now: now) }
        case .tick:
            channel.tick(now: now)
            effects = state.withLockedValue { $0.tick(now: now) }
        case .cutTaken(let epoch):
            channel.cutTaken(epoch)
            return
        case .captured(let epoch, let checkpoint):
            effects = state.withLockedValue { $0.captured(epoch: epoch, checkpoint: checkpoint, now: now) }
        case .captureFailed(let epoch, let reason):
            channel.abandon(through: epoch)
            effects = state.withLockedValue { $0.captureFailed(epoch: epoch, reason: reason, now: now) }
        }
        try await perform(effects, state: state)
    }

    private func perform(_ effects: [GroupMember.Effect], state: NIOLockedValueBox<GroupMember>) async throws {
        for effect in effects {
            switch effect {
            case .capture(let epoch, let full):
                guard let checkpointer = checkpointer.withLockedValue({ $0 }) else {
                    eventInput.yield(.captureFailed(epoch: epoch, reason: "not attached yet (still settling)"))
                    continue
                }
                let blockingIO = self.blockingIO
                let input = eventInput
                let channel = self.channel
                // The capture runs beside the loop, which keeps answering (an abort, the peers'
                // markers meanwhile). A service stopped before it starts takes no capture.
                let task = Task(executorPreference: clock.taskExecutor) {
                    guard !Task.isCancelled else { return }
                    guard await self.drainChannels(for: epoch) else { return }
                    do {
                        let report = try await blockingIO.run { () throws(CheckpointError) in
                            try checkpointer.prepareBlocking(epoch: epoch, full: full) {
                                // The cut is taken: sends go again, held-back messages follow.
                                channel.releaseSends(afterCut: epoch)
                                input.yield(.cutTaken(epoch: epoch))
                            }
                        }
                        input.yield(.captured(epoch: epoch, checkpoint: report.summary.id))
                    } catch {
                        input.yield(.captureFailed(epoch: epoch, reason: "\(error)"))
                    }
                }
                captureTask.withLockedValue { $0 = task }
            case .decide(let id, let commit):
                let checkpointer = self.checkpointer.withLockedValue { $0 }
                let store = self.store
                do {
                    try await blockingIO.run { () throws(CheckpointError) in
                        if let checkpointer, checkpointer.undecided == id {
                            try checkpointer.decide(commit: commit)
                        } else {
                            try store.decide(id, commit: commit)
                        }
                    }
                    logger.debug(
                        "group checkpoint decided", metadata: ["checkpoint": "\(id)", "committed": "\(commit)"])
                } catch {
                    // The store refuses further writes after a failed log write; this member
                    // cannot take part any more.
                    logger.error("cannot record a group decision", metadata: ["error": "\(error)"])
                    throw error
                }
            case .send(let message):
                do { try await transport.send(message.message(group: group), to: coordinator, over: nil) } catch {
                    logger.debug("group message not sent", metadata: ["error": "\(error)"])
                }
            case .wake:
                break
            }
        }
    }
}
