public import FaultToleranceCore

/// A client of the pair: finds the primary, sends each operation with an idempotency key
/// (its client id and a request number), and after a switch retries the same request on the
/// new primary, whose replicated sessions answer it without applying it twice.
///
/// One operation at a time per client (use several clients for concurrency).
///
/// ```swift
/// let client = FailoverClient(id: 7, transport: transport, servers: ["a", "b"])
/// _ = try await client.execute(.put(key: "greeting", value: Array("hello".utf8)))
/// let value = try await client.read("greeting")
/// ```
public actor FailoverClient {
    /// This client's id (its requests' idempotency keys are this and a request number).
    public nonisolated let id: UInt64
    private let transport: any Transport
    private let servers: [NodeID]
    private let controller: NodeID?
    private let clock: any RuntimeClock
    private let timeout: Duration
    private let deadline: Duration
    /// The primary this client last heard of.
    public private(set) var primary: NodeID?
    /// The newest epoch this client has seen.
    public private(set) var epoch: UInt64 = 0
    /// How many times the primary changed under this client.
    public private(set) var switches = 0
    private var nextRequest: UInt64 = 1
    /// The request number the next ``execute(_:)`` or ``read(_:)`` will use.
    public var nextRequestNumber: UInt64 { nextRequest }
    private var waiting: (key: UInt64, continuation: CheckedContinuation<FailoverMessage?, Never>)?
    /// The key of the question just sent, set before it leaves: an answer that arrives while the
    /// send is still suspended (on TCP, `send` can return after the answer is in) is kept in
    /// ``early`` for the wait that follows, instead of dropped for want of a waiter. Before, the
    /// operator's one-shot switchover answer was lost that way under load.
    private var expecting: UInt64?
    /// Answers to ``expecting`` that arrived before their wait began (a few at most).
    private var early: [FailoverMessage] = []
    private var receiver: Task<Void, Never>?
    private var lastPrimary: NodeID?

    /// A client `id` of the pair `servers` (and, if given, its control server), answering
    /// within `timeout` per attempt and giving up after `deadline`.
    public init(
        id: UInt64, transport: any Transport, servers: [NodeID], controller: NodeID? = nil,
        clock: any RuntimeClock = SystemClock(), timeout: Duration = .milliseconds(50),
        deadline: Duration = .seconds(10)
    ) {
        self.id = id
        self.transport = transport
        self.servers = servers
        self.controller = controller
        self.clock = clock
        self.timeout = timeout
        self.deadline = deadline
    }

    /// Stops receiving.
    public func close() {
        receiver?.cancel()
        receiver = nil
        resume(with: nil)
    }

    /// Applies `operation` once, on whichever server is primary, and returns its result.
    /// Throws ``FailoverError/Code/timedOut`` after the deadline, or the refusal that retrying
    /// cannot cure (an operation beyond the limits, a stale request).
    public func execute(_ operation: StoreOperation) async throws(FailoverError) -> OperationResult {
        try operation.validate()
        let request = nextRequest
        nextRequest += 1
        let answer = try await exchange(request) { epoch in
            .request(client: self.id, request: request, epoch: epoch, operation: operation)
        }
        guard case .reply(_, _, _, .done(let result)) = answer else {
            throw FailoverError(.malformed, detail: "unexpected answer \(answer)")
        }
        return result
    }

    /// The value of `key` as of the last acknowledged write (read from the primary).
    public func read(_ key: StoreKey) async throws(FailoverError) -> [UInt8]? {
        let request = nextRequest
        nextRequest += 1
        let answer = try await exchange(request) { epoch in
            .read(client: self.id, request: request, epoch: epoch, key: key)
        }
        guard case .readReply(_, _, _, let value, nil) = answer else {
            throw FailoverError(.malformed, detail: "unexpected answer \(answer)")
        }
        return value
    }

    /// What the control server knows of the pair (``FailoverStatus``), asked again every
    /// `timeout` until the deadline. Needs the control server (`controller` at creation).
    public func status() async throws(FailoverError) -> FailoverStatus {
        guard let controller else {
            throw FailoverError(.invalidConfiguration, detail: "this client was given no control server")
        }
        startReceiving()
        let giveUp = clock.now + deadline
        while clock.now < giveUp {
            if case .status(let status)? = await ask(controller, key: Self.statusKey, .statusQuery) {
                return status
            }
        }
        throw FailoverError(.timedOut, node: controller, detail: "no status within \(deadline)")
    }

    /// Asks the control server for a planned switchover to `target` (or, when `nil`, to the
    /// live backup of the sync set with the newest position) and returns the epoch the new
    /// primary will serve in; ``status()`` shows when it does. Sent once (a second request
    /// would find the switchover under way and be refused), answered within the deadline.
    /// Throws ``FailoverError/Code/switchoverRefused`` with the controller's reason.
    public func switchover(to target: NodeID? = nil) async throws(FailoverError) -> UInt64 {
        guard let controller else {
            throw FailoverError(.invalidConfiguration, detail: "this client was given no control server")
        }
        startReceiving()
        expect(Self.switchoverKey)
        do {
            try await transport.send(FailoverMessage.switchover(target: target).encode(), to: controller)
        } catch {
            throw FailoverError(.closed, node: controller, detail: "the switchover request was not sent: \(error)")
        }
        switch await wait(key: Self.switchoverKey, within: deadline) {
        case .switchoverAnswer(let newEpoch, nil)?:
            epoch = max(epoch, newEpoch)
            return newEpoch
        case .switchoverAnswer(_, let refusal?)?:
            throw FailoverError(.switchoverRefused, node: target, detail: refusal)
        default:
            throw FailoverError(.timedOut, node: controller, detail: "no answer to the switchover within \(deadline)")
        }
    }

    /// The keys an operator's questions wait under (request numbers never reach them).
    private static let statusKey = UInt64.max
    private static let switchoverKey = UInt64.max - 1

    private func exchange(_ request: UInt64, _ make: @Sendable (UInt64) -> FailoverMessage) async throws(FailoverError)
        -> FailoverMessage
    {
        startReceiving()
        let giveUp = clock.now + deadline
        while clock.now < giveUp {
            guard let target = primary else {
                await discover()
                continue
            }
            let answer = await ask(target, key: request, make(epoch))
            switch answer {
            case .reply(_, _, _, .done)?, .readReply(_, _, _, _, nil)?:
                return answer ?? .whoIsPrimary
            case .reply(_, _, _, .refused(let code, let serverEpoch))?:
                try handleRefusal(code, serverEpoch: serverEpoch)
            case .readReply(_, _, let serverEpoch, _, let code?)?:
                try handleRefusal(code, serverEpoch: serverEpoch)
            default:
                // No answer in time: the primary may be gone.
                primary = nil
            }
        }
        throw FailoverError(.timedOut, detail: "no primary answered request \(request) within \(deadline)")
    }

    private func handleRefusal(_ code: FailoverMessage.RefusalCode, serverEpoch: UInt64) throws(FailoverError) {
        switch code {
        case .notPrimary, .staleEpoch:
            epoch = max(epoch, serverEpoch)
            primary = nil
        case .lagExceeded:
            break
        case .tooLarge:
            throw FailoverError(.tooLarge, detail: "refused by the primary")
        case .staleRequest:
            throw FailoverError(.staleRequest, detail: "client \(id)")
        case .malformed:
            throw FailoverError(.malformed, detail: "refused by the primary")
        }
    }

    /// Asks every server (and the control server) who serves; takes the first answer naming one
    /// in an epoch no older than the client's. When every one answers that none serves (a
    /// failover under way), pauses a millisecond before the caller asks again: before, the
    /// client asked again at once, as fast as the answers came back (on loopback, a core's
    /// worth of messages for the whole failover).
    private func discover() async {
        let targets = servers + (controller.map { [$0] } ?? [])
        expect(0)
        for target in targets {
            try? await transport.send(FailoverMessage.whoIsPrimary.encode(), to: target)
        }
        let giveUp = clock.now + timeout
        var answers = 0
        while answers < targets.count, clock.now < giveUp {
            guard let answer = await wait(key: 0, within: giveUp - clock.now) else { return }
            answers += 1
            if case .primaryIs(let node?, let answerEpoch, _, _) = answer, answerEpoch >= epoch {
                if let previous = lastPrimary, previous != node { switches += 1 }
                lastPrimary = node
                primary = node
                epoch = answerEpoch
                return
            }
        }
        try? await clock.sleep(for: min(timeout, Self.discoveryPause))
    }

    /// How long a client waits before asking again when nobody serves.
    private static let discoveryPause = Duration.milliseconds(1)

    private func ask(_ target: NodeID, key: UInt64, _ message: FailoverMessage) async -> FailoverMessage? {
        expect(key)
        do {
            try await transport.send(message.encode(), to: target)
        } catch {
            // The target is gone (on TCP a refused connection fails at once) and the others may
            // still name it until the failover ends: pause before asking them again, rather than
            // spin through discover-and-fail.
            try? await clock.sleep(for: min(timeout, Self.discoveryPause))
            return nil
        }
        return await wait(key: key)
    }

    /// Waits up to `within` (the per-attempt timeout by default) for the answer to `key` (0: a
    /// discovery).
    private func wait(key: UInt64, within: Duration? = nil) async -> FailoverMessage? {
        if expecting == key, !early.isEmpty { return early.removeFirst() }
        let clock = self.clock
        let timeout = within ?? self.timeout
        let timer = Task(executorPreference: clock.taskExecutor) { [weak self] in
            try? await clock.sleep(for: timeout)
            await self?.expire(key)
        }
        defer { timer.cancel() }
        return await withCheckedContinuation { continuation in
            resume(with: nil)
            waiting = (key, continuation)
        }
    }

    /// Called before a question under `key` is sent: answers from now on are kept for its wait.
    private func expect(_ key: UInt64) {
        expecting = key
        early.removeAll()
    }

    private func expire(_ key: UInt64) {
        if waiting?.key == key { resume(with: nil) }
    }

    private func resume(with message: FailoverMessage?) {
        guard let current = waiting else { return }
        waiting = nil
        current.continuation.resume(returning: message)
    }

    private func startReceiving() {
        guard receiver == nil else { return }
        let incoming = transport.incoming
        receiver = Task(executorPreference: clock.taskExecutor) { [weak self] in
            for await envelope in incoming where FailoverMessage.MessageType.contains(envelope.message.type) {
                guard let message = try? FailoverMessage.decode(envelope.message) else { continue }
                await self?.received(message)
            }
        }
    }

    private func received(_ message: FailoverMessage) {
        guard let key = waiting?.key ?? expecting, answers(message, key) else { return }
        if waiting != nil {
            resume(with: message)
        } else if early.count < Self.earlyLimit {
            early.append(message)
        }
    }

    /// At most this many answers are kept for a wait that has not begun (a discovery's answers
    /// are one per server and the control server).
    private static let earlyLimit = 8

    /// Whether `message` answers the question under `key`.
    private func answers(_ message: FailoverMessage, _ key: UInt64) -> Bool {
        switch message {
        case .reply(let client, let request, _, _), .readReply(let client, let request, _, _, _):
            return client == id && request == key
        case .primaryIs(let node?, let answerEpoch, _, _) where key == 0 && servers.contains(node):
            // Only news ends a discovery: were a stale answer (or a late one from an earlier
            // round) to end it, the next round would start at once, and every round's answers
            // would start more rounds (four messages out per answer: a storm).
            return answerEpoch >= epoch
        case .status where key == Self.statusKey, .switchoverAnswer where key == Self.switchoverKey:
            return true
        default:
            return false
        }
    }
}
