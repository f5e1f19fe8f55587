public import FaultToleranceCore
public import Logging
public import Metrics
import NIOConcurrencyHelpers
import NIOCore
public import ServiceLifecycle

import struct Foundation.Date

/// Where a chain runtime runs its core (whose drive I/O blocks): NIO's shared thread pool
/// (production) or inline on the calling task (the simulation); see
/// ``FaultToleranceCore/BlockingIO``.
public typealias ChainBlockingIO = BlockingIO

/// Holds a value that only one task at a time touches (the runtime's event loop).
final class LoopConfined<Value>: @unchecked Sendable {
    var value: Value
    init(_ value: Value) { self.value = value }
}

/// A chain element: an ``ElementCore`` over a `Transport`, a clock and its drive, run as a
/// ServiceLifecycle `Service`. One task applies every message and tick in order; the drive I/O
/// runs on NIO's thread pool.
///
/// ```swift
/// let unit = try FileStorageUnit.create(path: "/var/lib/chain/e1.drive", capacity: 1 << 30)
/// let element = try ChainElement(
///     node: "e1", drive: try ElementDrive(unit: unit), initial: register, transport: transport)
/// try await ServiceGroup(services: [element], logger: logger).run()
/// ```
public final class ChainElement: Service, @unchecked Sendable {
    private enum Event: Sendable {
        case message(Envelope)
        case tick
        case raise(SignalKind)
        case inspect(@Sendable (ElementCore) -> Void)
    }

    /// This element.
    public let node: NodeID
    private let core: LoopConfined<ElementCore>
    private let transport: any Transport
    private let clock: any RuntimeClock
    private let logger: Logger
    private let blockingIO: ChainBlockingIO
    private let events = AsyncQueue<Event>()
    private let timing: ChainTiming
    private let signalsRaised: Counter
    private let learnAddress: (@Sendable (NodeID, String) -> Void)?
    private let queues: SendQueues
    /// Heartbeat arrivals as the receiving task saw them, and what to heartbeat (kept by the loop).
    private let heard = NIOLockedValueBox<[NodeID: Instant]>([:])
    private let beat = NIOLockedValueBox<(targets: [NodeID], digest: UInt64, epoch: UInt64)>(([], 0, 0))

    /// Creates an element; see ``ElementCore/init(node:drive:initial:timing:incarnation:forming:bug:now:)``.
    /// `incarnation` defaults to the wall clock in microseconds; `learnAddress` is told where a
    /// host that greets the element listens (a TCP transport needs it to answer).
    public init(
        node: NodeID, drive: ElementDrive, initial: ChainRegister, transport: any Transport,
        clock: any RuntimeClock = SystemClock(), timing: ChainTiming = ChainTiming(), incarnation: UInt64? = nil,
        logger: Logger = Logger(label: "ft.chain.element"), metricsFactory: (any MetricsFactory)? = nil,
        blockingIO: ChainBlockingIO = .threadPool, forming: Bool = false, bug: ElementCore.Bug? = nil,
        learnAddress: (@Sendable (NodeID, String) -> Void)? = nil
    ) throws(ChainError) {
        self.node = node
        self.learnAddress = learnAddress
        let wall = UInt64(max(0, Int64(Date.nowMicroseconds)))
        core = LoopConfined(
            try ElementCore(
                node: node, drive: drive, initial: initial, timing: timing, incarnation: incarnation ?? wall,
                forming: forming, bug: bug, now: clock.now))
        self.transport = transport
        self.clock = clock
        self.logger = logger
        self.blockingIO = blockingIO
        self.timing = timing
        queues = SendQueues(transport: transport, logger: logger)
        let factory = metricsFactory ?? MetricsSystem.factory
        signalsRaised = Counter(
            label: "ft_chain_signals_raised_total", dimensions: [("element", node.name)], factory: factory)
        let counter = signalsRaised
        core.value.onRaise = { _, _ in counter.increment() }
    }

    /// Calls `observer` on every signal this element raises (before ``run()``).
    public func observeSignals(_ observer: @escaping (SignalKind, Instant) -> Void) {
        let counter = signalsRaised
        core.value.onRaise = { kind, at in
            counter.increment()
            observer(kind, at)
        }
    }

    /// The core, for the simulation's invariant checks on its single thread (nothing else may touch it).
    package var unsafeCore: ElementCore { core.value }

    /// Raises an operator signal on this element (reset, hot-plug, drive-removed, drive-fault, identify, link-down, link-up).
    public func raise(_ kind: SignalKind) { events.yield(.raise(kind)) }

    /// Runs `body` on the element's core between two events and returns its result.
    public func inspect<T: Sendable>(_ body: @escaping @Sendable (ElementCore) -> T) async -> T {
        await withCheckedContinuation { continuation in
            events.yield(.inspect { core in continuation.resume(returning: body(core)) })
        }
    }

    /// Runs until graceful shutdown, cancellation or the transport closing.
    public func run() async throws {
        let clock = self.clock
        let heard = self.heard
        var helpers: [@Sendable () async -> Void] = []
        if case .threadPool = blockingIO {
            // Heartbeats leave on their own timer, not behind a burst of writes in the loop.
            let beat = self.beat
            let interval = timing.heartbeatInterval
            let queues = self.queues
            helpers.append {
                while !Task.isCancelled {
                    do { try await clock.sleep(for: interval) } catch { return }
                    let (targets, digest, epoch) = beat.withLockedValue { $0 }
                    for target in targets {
                        queues.send(.heartbeat(digest: digest, epoch: epoch), to: target)
                    }
                }
            }
        }
        let events = self.events
        await runChainLoop(
            transport: transport, clock: clock, tick: timing.tick, helpers: helpers,
            deliver: { envelope in
                if envelope.message.type == ChainMessage.MessageType.heartbeat {
                    let now = clock.now
                    heard.withLockedValue { $0[envelope.from] = now }
                }
                events.yield(.message(envelope))
            },
            ticked: { events.yield(.tick) },
            consume: {
                let core = self.core
                let started = await self.blockingIO.run { [clock] in core.value.start(now: clock.now) }
                await self.send(started)
                for await event in events {
                    if Task.isCancelled { return }
                    await self.process(event)
                }
            },
            finish: events.finish)
        queues.close()
    }

    private func process(_ event: Event) async {
        let core = self.core
        let clock = self.clock
        let out: [RegisterMachine.Outbound]
        switch event {
        case .message(let envelope):
            if let learnAddress, envelope.message.type == ChainMessage.MessageType.hello,
                case .hello(_, let address)? = try? ChainMessage.decode(envelope.message), !address.isEmpty
            {
                learnAddress(envelope.from, address)
            }
            out = await blockingIO.run { core.value.handle(envelope, now: clock.now) }
        case .tick:
            let heard = self.heard.withLockedValue { $0 }
            out = await blockingIO.run { core.value.tick(now: clock.now, heard: heard) }
        case .raise(let kind):
            out = await blockingIO.run { core.value.raise(kind, now: clock.now) }
        case .inspect(let body):
            body(core.value)
            out = []
        }
        let snapshot = (core.value.heartbeatTargets, core.value.chain.digest, core.value.chain.generation.epoch)
        beat.withLockedValue { $0 = snapshot }
        await send(out)
    }

    private func send(_ out: [RegisterMachine.Outbound]) async {
        if case .threadPool = blockingIO {
            for item in out { queues.send(item.message, to: item.to) }
            return
        }
        for item in out {
            do {
                try await transport.send(item.message.encode(), to: item.to)
            } catch {
                logger.trace("chain send failed", metadata: ["to": "\(item.to)", "error": "\(error)"])
            }
        }
    }
}

extension Date {
    static var nowMicroseconds: Double { Date().timeIntervalSince1970 * 1_000_000 }
}

/// The loop both chain runtimes run: the chain's messages go to `deliver` and a tick every
/// `tick` to `ticked`, both of which queue an event for `consume`, which processes them in
/// order in one task; the `helpers` run beside it. Returns, after `finish`, on graceful
/// shutdown, cancellation or the transport closing.
///
/// Not generic over the runtime's event type: the closures are made where that type is
/// concrete, so the path every message takes runs specialised code (generic closures here
/// looked up type metadata on every message).
func runChainLoop(
    transport: any Transport, clock: any RuntimeClock, tick: Duration, helpers: [@Sendable () async -> Void] = [],
    deliver: @escaping @Sendable (Envelope) -> Void, ticked: @escaping @Sendable () -> Void,
    consume: @escaping @Sendable () async -> Void, finish: () -> Void
) async {
    // Not `cancelWhenGracefulShutdown`: its helper task would leave a simulation's executor.
    await withTaskGroup(of: Void.self) { tasks in
        tasks.addTask {
            for await envelope in transport.incoming where ChainMessage.MessageType.contains(envelope.message.type) {
                deliver(envelope)
            }
        }
        for helper in helpers { tasks.addTask { await helper() } }
        tasks.addTask {
            while !Task.isCancelled {
                do { try await clock.sleep(for: tick) } catch { return }
                ticked()
            }
        }
        tasks.addTask { await parkUntilShutdown() }
        tasks.addTask { await consume() }
        await tasks.next()
        tasks.cancelAll()
    }
    finish()
}

/// One ordered send queue per destination, each drained by its own task, so a send that waits
/// (a dead peer's connection attempts, a full socket) holds up only messages to that peer. A
/// queue keeps at most 4,096 messages; beyond that the newest are dropped, which the links'
/// retransmission and the heartbeats' repetition absorb.
final class SendQueues: @unchecked Sendable {
    private let transport: any Transport
    private let logger: Logger
    private let queues = NIOLockedValueBox<[NodeID: AsyncQueue<ChainMessage>]>([:])
    private let tasks = NIOLockedValueBox<[Task<Void, Never>]>([])

    init(transport: any Transport, logger: Logger) {
        self.transport = transport
        self.logger = logger
    }

    /// Queues `message`; it is encoded on the queue's task, its data (if any) sent where it lies.
    func send(_ message: ChainMessage, to node: NodeID) {
        let queue = queues.withLockedValue { queues -> AsyncQueue<ChainMessage> in
            if let existing = queues[node] { return existing }
            let stream = AsyncQueue<ChainMessage>(limit: 4096)
            queues[node] = stream
            let transport = self.transport
            let logger = self.logger
            let task = Task {
                for await message in stream {
                    do {
                        let (head, data) = message.encodeParts()
                        if let data {
                            try await transport.send(head, appending: data, to: node)
                        } else {
                            try await transport.send(head, to: node)
                        }
                    } catch {
                        logger.trace("chain send failed", metadata: ["to": "\(node)", "error": "\(error)"])
                    }
                }
            }
            tasks.withLockedValue { $0.append(task) }
            return stream
        }
        queue.yield(message)
    }

    func close() {
        let all = queues.withLockedValue { queues in
            defer { queues = [:] }
            return queues.keys.sorted().compactMap { queues[$0] }
        }
        for queue in all { queue.finish() }
        for task in tasks.withLockedValue({ $0 }) { task.cancel() }
    }
}
