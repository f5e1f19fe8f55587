import Dispatch
public import FaultToleranceCore
public import Logging
import NIOConcurrencyHelpers
public import NIOCore
public import ServiceLifecycle

import struct Foundation.Date
import class Foundation.NSCondition

/// The host's runtime: a ``HostCore`` over a `Transport` and a clock, with async reads, writes
/// and flushes. ``ChainVolume`` puts the `StorageUnit` face on it.
///
/// ```swift
/// let host = ChainHost(node: "host", elements: ["e0", "e1", "e2", "e3"], transport: transport)
/// let service = Task { try await host.run() }
/// try await host.open()
/// try await host.write(ByteBuffer(bytes: [1, 2, 3]), at: 4096)  // returns once every element has it
/// try await host.synchronize()                                 // durable on every element
/// ```
public final class ChainHost: Service, @unchecked Sendable {
    private enum Event: Sendable {
        case message(Envelope)
        case tick
        case write(ByteBuffer, Int, @Sendable (Result<ByteBuffer, ChainError>) -> Void)
        case read(Int, Int, @Sendable (Result<ByteBuffer, ChainError>) -> Void)
        case synchronize(@Sendable (Result<ByteBuffer, ChainError>) -> Void)
        case open(@Sendable (Bool) -> Void)
    }

    /// The host's node.
    public let node: NodeID
    /// The elements it greets at start.
    public let elements: [NodeID]
    private let core: LoopConfined<HostCore>
    private let transport: any Transport
    private let clock: any RuntimeClock
    private let logger: Logger
    private let events = AsyncQueue<Event>()
    private let timing: ChainTiming
    private let waiting = LoopConfined<[UInt64: @Sendable (Result<ByteBuffer, ChainError>) -> Void]>([:])
    private let openers = LoopConfined<[@Sendable (Bool) -> Void]>([])
    private let shared = NIOLockedValueBox<(capacity: Int, register: ChainRegister?)>((0, nil))
    private let queues: SendQueues
    private let queued: Bool

    /// Creates a host. `epoch` must grow from one start of the host to the next (default: the
    /// wall clock in microseconds); the head refuses writes of older epochs. `address` is where
    /// the host listens (`HOST:PORT`), for transports whose elements must learn it.
    public init(
        node: NodeID, elements: [NodeID], transport: any Transport, clock: any RuntimeClock = SystemClock(),
        timing: ChainTiming = ChainTiming(), epoch: UInt64? = nil, address: String = "",
        logger: Logger = Logger(label: "ft.chain.host")
    ) {
        self.node = node
        self.elements = elements
        let wall = UInt64(max(0, Int64(Date().timeIntervalSince1970 * 1_000_000)))
        core = LoopConfined(HostCore(node: node, epoch: epoch ?? wall, timing: timing, address: address))
        self.transport = transport
        self.clock = clock
        self.logger = logger
        self.timing = timing
        queues = SendQueues(transport: transport, logger: logger)
        // A simulation's clock runs on its executor: send in line there, queued elsewhere.
        queued = clock.taskExecutor == nil
    }

    /// The core, for the simulation's checks on its single thread (nothing else may touch it).
    package var unsafeCore: HostCore { core.value }

    /// The volume's capacity as last heard (0 before ``open(timeout:)``).
    public var capacity: Int { shared.withLockedValue { $0.capacity } }

    /// The chain register as last heard.
    public var register: ChainRegister? { shared.withLockedValue { $0.register } }

    /// Greets the elements and waits until the head has answered (throws ``ChainError/Code/timedOut``
    /// after `timeout`).
    public func open(timeout: Duration = .seconds(10)) async throws(ChainError) {
        let deadline = clock.now + timeout
        while clock.now < deadline {
            let opened = await withCheckedContinuation { continuation in
                events.yield(.open { continuation.resume(returning: $0) })
            }
            if opened { return }
            do { try await clock.sleep(for: timing.retransmitAfter) } catch { throw ChainError(.closed) }
        }
        throw ChainError(.timedOut, detail: "no answer from the chain's head in \(timeout)")
    }

    /// Writes `data` at `offset`; returns once every element that should hold it has applied it.
    public func write(_ data: ByteBuffer, at offset: Int) async throws(ChainError) {
        _ = try await call { .write(data, offset, $0) }
    }

    /// Reads `count` bytes at `offset`: the last acknowledged write of every byte, never older.
    public func read(at offset: Int, count: Int) async throws(ChainError) -> ByteBuffer {
        try await call { .read(offset, count, $0) }
    }

    /// Returns once every element has flushed every write acknowledged before the call.
    public func synchronize() async throws(ChainError) {
        _ = try await call { .synchronize($0) }
    }

    /// Queues a write without waiting; `completion` runs on the host's loop when it commits or fails.
    public func submitWrite(
        _ data: ByteBuffer, at offset: Int, completion: @escaping @Sendable (Result<ByteBuffer, ChainError>) -> Void
    ) {
        deliver(.write(data, offset, completion), orFail: completion)
    }

    /// Queues a read without waiting.
    public func submitRead(
        at offset: Int, count: Int, completion: @escaping @Sendable (Result<ByteBuffer, ChainError>) -> Void
    ) {
        deliver(.read(offset, count, completion), orFail: completion)
    }

    /// Queues a flush without waiting.
    public func submitSynchronize(completion: @escaping @Sendable (Result<ByteBuffer, ChainError>) -> Void) {
        deliver(.synchronize(completion), orFail: completion)
    }

    private func deliver(_ event: Event, orFail completion: @Sendable (Result<ByteBuffer, ChainError>) -> Void) {
        if !events.yield(event) { completion(.failure(ChainError(.closed))) }
    }

    private func call(
        _ make: (@escaping @Sendable (Result<ByteBuffer, ChainError>) -> Void) -> Event
    ) async throws(ChainError) -> ByteBuffer {
        let result = await withCheckedContinuation {
            (continuation: CheckedContinuation<Result<ByteBuffer, ChainError>, Never>) in
            let completion: @Sendable (Result<ByteBuffer, ChainError>) -> Void = { continuation.resume(returning: $0) }
            deliver(make(completion), orFail: completion)
        }
        return try result.get()
    }

    /// Runs until graceful shutdown, cancellation or the transport closing.
    public func run() async throws {
        let clock = self.clock
        let events = self.events
        await runChainLoop(
            transport: transport, clock: clock, tick: timing.tick,
            deliver: { events.yield(.message($0)) }, ticked: { events.yield(.tick) },
            consume: {
                await self.perform(self.core.value.hello(to: self.elements, now: clock.now))
                for await event in events {
                    if Task.isCancelled { return }
                    await self.process(event)
                }
            },
            finish: events.finish)
        queues.close()
        for (_, waiter) in waiting.value { waiter(.failure(ChainError(.closed))) }
        waiting.value = [:]
        for opener in openers.value { opener(false) }
    }

    private func process(_ event: Event) async {
        let core = self.core.value
        let now = clock.now
        switch event {
        case .message(let envelope):
            await perform(core.handle(envelope, now: now))
        case .tick:
            await perform(core.tick(now: now))
        case .write(let data, let offset, let completion):
            let (request, effects) = core.write(data, at: offset, now: now)
            waiting.value[request] = completion
            await perform(effects)
        case .read(let offset, let count, let completion):
            let (request, effects) = core.read(at: offset, count: count, now: now)
            waiting.value[request] = completion
            await perform(effects)
        case .synchronize(let completion):
            let (request, effects) = core.synchronize(now: now)
            waiting.value[request] = completion
            await perform(effects)
        case .open(let completion):
            completion(core.isOpen)
        }
        let capacity = core.capacity
        let register = core.chain
        shared.withLockedValue { $0 = (capacity, register) }
    }

    private func perform(_ effects: [HostCore.Effect]) async {
        for effect in effects {
            switch effect {
            case .send(let message, let target):
                if queued {
                    queues.send(message, to: target)
                    continue
                }
                do {
                    try await transport.send(message.encode(), to: target)
                } catch {
                    logger.trace("chain host send failed", metadata: ["to": "\(target)", "error": "\(error)"])
                }
            case .complete(let request, let result):
                waiting.value.removeValue(forKey: request)?(result)
            }
        }
    }
}

/// The chain as one `StorageUnit`: every module that runs on a disk runs on a chain unchanged.
///
/// Writes are written back: `write` returns once the bytes are queued (up to `window` bytes in
/// flight; beyond that it waits), reads of bytes still in flight wait for them, and
/// `synchronize()` returns once every element holding the bytes has flushed them. A write that
/// fails later (its element is gone) makes the next `write` or `synchronize` throw, as a failed
/// write-back does in a kernel. Errors are `StorageError`s whose detail names the element.
///
/// The methods block the calling thread; call them from a thread of your own (as ElasticJournal
/// and Checkpointing do), never from Swift's cooperative pool.
public final class ChainVolume: StorageUnit, @unchecked Sendable {
    /// The unit's identity.
    public let id: UnitID
    /// The host underneath.
    public let host: ChainHost
    private let window: Int
    private let state = NIOLockedValueBox<(inFlight: Int, error: ChainError?)>((0, nil))
    private let condition = NIOConditionLockBox()

    /// Wraps an opened `host`.
    public init(host: ChainHost, id: UnitID = UnitID(0xC4A1), window: Int = 64 << 20) {
        self.host = host
        self.id = id
        self.window = max(window, 1)
    }

    /// The volume's capacity.
    public var capacity: Int { host.capacity }

    /// Where it lives.
    public var location: String? { "chain of \(host.elements.map(\.name).joined(separator: ","))" }

    /// Reads through the chain (waiting for writes still in flight to the range).
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkBounds(offset: offset, count: buffer.count)
        let result = wait { done in host.submitRead(at: offset, count: buffer.count, completion: done) }
        switch result {
        case .success(let data):
            guard data.readableBytes == buffer.count else {
                throw StorageError(.ioFailed, unit: id, offset: offset, detail: "short read from the chain")
            }
            data.withUnsafeReadableBytes { buffer.copyMemory(from: $0) }
        case .failure(let error):
            throw error.storageError(unit: id, offset: offset)
        }
    }

    /// Queues a write (write-back; see the type).
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkBounds(offset: offset, count: bytes.count)
        if let error = takeError() { throw error.storageError(unit: id, offset: offset) }
        let count = bytes.count
        condition.waitUntil { self.state.withLockedValue { $0.inFlight == 0 || $0.inFlight + count <= self.window } }
        state.withLockedValue { $0.inFlight += count }
        let data = ByteBuffer(bytes: bytes)
        host.submitWrite(data, at: offset) { [state, condition] result in
            state.withLockedValue {
                $0.inFlight -= count
                if case .failure(let error) = result, $0.error == nil { $0.error = error }
            }
            condition.signal()
        }
    }

    /// Returns once every write before it is flushed on every element that holds it.
    public func synchronize() throws(StorageError) {
        let result = wait { done in host.submitSynchronize(completion: done) }
        condition.waitUntil { self.state.withLockedValue { $0.inFlight == 0 } }
        if let error = takeError() { throw error.storageError(unit: id) }
        if case .failure(let error) = result { throw error.storageError(unit: id) }
    }

    /// Writes zeros over the range (the chain has no hole punching).
    public func discard(_ range: Range<Int>) throws(StorageError) {
        try checkBounds(offset: range.lowerBound, count: range.count)
        var start = range.lowerBound
        let zeros = [UInt8](repeating: 0, count: min(1 << 20, max(range.count, 1)))
        while start < range.upperBound {
            let length = min(zeros.count, range.upperBound - start)
            try write(Array(zeros[0..<length]), at: start)
            start += length
        }
    }

    private func takeError() -> ChainError? {
        state.withLockedValue { value in
            defer { value.error = nil }
            return value.error
        }
    }

    private func wait(
        _ submit: (@escaping @Sendable (Result<ByteBuffer, ChainError>) -> Void) -> Void
    ) -> Result<ByteBuffer, ChainError> {
        let semaphore = DispatchSemaphore(value: 0)
        let box = NIOLockedValueBox<Result<ByteBuffer, ChainError>?>(nil)
        submit { result in
            box.withLockedValue { $0 = result }
            semaphore.signal()
        }
        semaphore.wait()
        return box.withLockedValue { $0 } ?? .failure(ChainError(.closed))
    }
}

/// A condition variable for the write-back window.
final class NIOConditionLockBox: @unchecked Sendable {
    private let condition = NSCondition()

    func waitUntil(_ predicate: () -> Bool) {
        condition.lock()
        while !predicate() { condition.wait() }
        condition.unlock()
    }

    func signal() {
        condition.lock()
        condition.broadcast()
        condition.unlock()
    }
}
