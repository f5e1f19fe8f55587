public import FaultToleranceCore
public import Logging
public import Metrics
import NIOConcurrencyHelpers
import NIOCore
import NIOPosix
public import ServiceLifecycle

/// Where a runtime runs blocking store I/O: on NIO's shared thread pool (production), or
/// inline on the calling task (the simulation, whose deterministic executor must see every job).
public enum KeySyncBlockingIO: Sendable {
    /// NIO's shared thread pool: the cooperative pool never waits on a disk.
    case threadPool
    /// The calling task.
    case inline

    func run<T: Sendable>(_ body: @escaping @Sendable () throws(KeySyncError) -> T) async throws(KeySyncError) -> T {
        switch self {
        case .inline:
            return try body()
        case .threadPool:
            do {
                return try await NIOThreadPool.singleton.runIfActive { try body() }
            } catch let error as KeySyncError {
                throw error
            } catch {
                throw KeySyncError(.database, detail: "\(error)")
            }
        }
    }
}

/// The active's answers: one reply per request, from the store alone (no session state).
public enum KeySyncResponder {
    /// Most uncompressed bytes of records in one reply (8 MiB).
    public static let replyBytes = 8 << 20

    /// Every reply to `message`: one, except for the seed's key list, which is answered with the
    /// keys the store holds too and then their records (read once for both).
    public static func replies(to message: KeySyncMessage, store: any NameKeyStore) -> [KeySyncMessage] {
        guard case .keyList(let request, let keys) = message else { return [respond(to: message, store: store)] }
        do {
            let held = try store.records(forKeys: keys)
            let shared = KeySyncMessage.sharedKeys(request: request, keys: held.map(\.key))
            guard !held.isEmpty else { return [shared] }
            return [shared, pack(held, request: request) { $0 }]
        } catch {
            return [.refused(request: request, detail: error.description)]
        }
    }

    /// The records of `items` (those `record` finds), in order, up to ``replyBytes``;
    /// `answered` says how many items the reply covers.
    static func pack<Item>(_ items: [Item], request: UInt64, _ record: (Item) -> NameKeyRecord?) -> KeySyncMessage {
        var records: [NameKeyRecord] = []
        var bytes = 0
        var answered = 0
        for item in items {
            if let found = record(item) {
                let size = RecordCodec.minimumSize + found.key.utf8.count + found.body.count
                if answered > 0 && bytes + size > replyBytes { break }
                bytes += size
                records.append(found)
            }
            answered += 1
        }
        return .records(request: request, records: records, next: nil, answered: answered)
    }

    /// Symbols a welcome carries at least when the backup's digest differs.
    public static let leadingSymbols = 64

    /// How many symbols a welcome to `backup` carries: as many as the difference needs by the
    /// estimate from the backup's leading symbols (``KeySyncSession/estimateDifference(remote:local:)``),
    /// at least ``leadingSymbols`` and half again the difference in counts (the difference is
    /// at least that), at most a tenth of a symbol per record: past that the backup streams,
    /// and the leading symbols are enough for it to tell.
    static func welcomeSymbols(
        for backup: KeySyncMessage.StoreDescription, from store: any NameKeyStore
    ) throws(KeySyncError) -> Int {
        let capacity = min(store.sketchCapacity, backup.sketchCapacity)
        let budget = min(capacity, max(1024, store.count / 10), KeySyncMessage.maximumSymbolsPerMessage)
        let lowerBound = abs(store.count - backup.count)
        var wanted = max(leadingSymbols, lowerBound + lowerBound / 2)
        let theirs = backup.leadingSymbols
        if !theirs.isEmpty, theirs.count <= capacity {
            let estimate = KeySyncSession.estimateDifference(
                remote: try store.symbols(0..<theirs.count), local: theirs)
            let sized = KeySyncSession.symbolsToAsk(forEstimate: estimate)
            if sized <= Double(budget) * 1.25 { wanted = max(wanted, Int(min(sized, Double(budget)))) }
        }
        return min(wanted, budget)
    }

    /// The reply to `message` from `store`; a request it cannot serve gets a refusal.
    public static func respond(to message: KeySyncMessage, store: any NameKeyStore) -> KeySyncMessage {
        do throws(KeySyncError) {
            switch message {
            case .hello(let request, let backup):
                var description = try store.describe()
                if backup.digest != description.digest, backup.fingerprintVersion == description.fingerprintVersion {
                    description.leadingSymbols = try store.symbols(0..<welcomeSymbols(for: backup, from: store))
                }
                return .welcome(request: request, description)
            case .symbolsRequest(let request, let first, let count):
                let capacity = store.sketchCapacity
                guard first < capacity else {
                    return .refused(request: request, detail: "symbol \(first) beyond a sketch of \(capacity)")
                }
                return .symbols(
                    request: request, first: first, symbols: try store.symbols(first..<min(capacity, first + count)))
            case .recordsByFingerprint(let request, let fingerprints):
                let found = try store.records(withFingerprints: fingerprints)
                return pack(fingerprints, request: request) { found[$0] }
            case .range(let request, let after, let limit):
                var records = try store.records(after: after, limit: limit)
                let full = records.count == limit
                var bytes = 0
                if let cut = records.firstIndex(where: {
                    bytes += RecordCodec.minimumSize + $0.key.utf8.count + $0.body.count
                    return bytes > replyBytes
                }), cut > 0 {
                    records.removeSubrange(cut...)
                    return .records(
                        request: request, records: records, next: records.last?.key, answered: records.count)
                }
                return .records(
                    request: request, records: records, next: full ? records.last?.key : nil, answered: records.count)
            case .keyList(let request, let keys):
                let held = try store.records(forKeys: keys).map(\.key)
                return .sharedKeys(request: request, keys: held)
            case .recordsByKey(let request, let keys):
                let found = Dictionary(
                    try store.records(forKeys: keys).map { ($0.key, $0) }, uniquingKeysWith: { first, _ in first })
                return pack(keys, request: request) { found[$0] }
            case .welcome(let request, _), .symbols(let request, _, _), .sharedKeys(let request, _),
                .records(let request, _, _, _), .refused(let request, _):
                return .refused(request: request, detail: "a \(message.name) is not a request")
            }
        } catch {
            return .refused(request: message.request, detail: error.description)
        }
    }
}

/// The active's side as a ServiceLifecycle `Service`: answers every backup's sync requests
/// from its store until shutdown. Stateless between requests; malformed messages are answered
/// with a refusal naming the message and field, counted in
/// `ft_keysync_refused_total{reason}` and logged at most once a second.
///
/// A transport that dials its peers (``FaultToleranceNIO/TCPTransport``) must know where a
/// backup listens before it can answer: give the server `learnAddress`, and it is called with
/// the address a backup names in its hello (``KeySyncMessage/StoreDescription/replyAddress``)
/// before the welcome is sent. Only do so on a network where the backups are trusted to name
/// themselves (with authenticated transports, the sender's name is proved).
public final class KeySyncServer: Service, Sendable {
    private let store: any NameKeyStore
    private let transport: any Transport
    private let logger: Logger
    private let blockingIO: KeySyncBlockingIO
    private let served: Counter
    private let refusedMalformed: Counter
    private let limiter = LogLimiter()
    private let counts = NIOLockedValueBox((requests: 0, refused: 0, bytesSent: 0, bytesReceived: 0))
    private let learnAddress: (@Sendable (NodeID, String) -> Void)?

    /// Creates a server answering from `store` on `transport`.
    public init(
        store: any NameKeyStore, transport: any Transport, logger: Logger = Logger(label: "ft.keysync.server"),
        metricsFactory: (any MetricsFactory)? = nil, blockingIO: KeySyncBlockingIO = .threadPool,
        learnAddress: (@Sendable (NodeID, String) -> Void)? = nil
    ) {
        self.learnAddress = learnAddress
        self.store = store
        self.transport = transport
        self.logger = logger
        self.blockingIO = blockingIO
        let factory = metricsFactory ?? MetricsSystem.factory
        served = Counter(label: "ft_keysync_requests_total", factory: factory)
        refusedMalformed = Counter(
            label: "ft_keysync_refused_total", dimensions: [("reason", "malformed")], factory: factory)
    }

    /// Requests answered, refusals among them, and bytes moved (payload plus 16-byte header).
    public var statistics: (requests: Int, refused: Int, bytesSent: Int, bytesReceived: Int) {
        counts.withLockedValue { $0 }
    }

    /// Serves until graceful shutdown, cancellation or the transport closing.
    public func run() async throws {
        // Not `cancelWhenGracefulShutdown`: its helper task would leave a simulation's executor.
        await withTaskGroup(of: Void.self) { tasks in
            tasks.addTask {
                for await envelope in self.transport.incoming
                where KeySyncMessage.MessageType.all.contains(envelope.message.type) {
                    await self.serve(envelope)
                }
            }
            tasks.addTask { await parkUntilShutdown() }
            await tasks.next()
            tasks.cancelAll()
        }
    }

    private func serve(_ envelope: Envelope) async {
        let size = envelope.message.payload.readableBytes + 16
        let replies: [KeySyncMessage]
        do throws(KeySyncError) {
            let message = try KeySyncMessage.decode(envelope.message)
            if case .hello(_, let description) = message, let address = description.replyAddress {
                learnAddress?(envelope.from, address)
            }
            let store = self.store
            replies = try await blockingIO.run { KeySyncResponder.replies(to: message, store: store) }
        } catch {
            refusedMalformed.increment()
            counts.withLockedValue { $0.refused += 1 }
            if let suppressed = limiter.admit() {
                logger.warning(
                    "refusing name-key sync message",
                    metadata: ["from": "\(envelope.from)", "error": "\(error)", "refusals_not_logged": "\(suppressed)"])
            }
            // The request number, if the bytes hold one, lets the backup match the refusal.
            let bytes = envelope.message.bytes
            var request: UInt64 = 0
            if bytes.count >= 9 { for index in 0..<8 { request |= UInt64(bytes[1 + index]) << (8 * index) } }
            replies = [.refused(request: request, detail: error.description)]
        }
        served.increment()
        counts.withLockedValue {
            $0.requests += 1
            $0.bytesReceived += size
        }
        for reply in replies {
            do {
                let message = try reply.encode()
                counts.withLockedValue { $0.bytesSent += message.payload.readableBytes + 16 }
                try await transport.send(message, to: envelope.from)
            } catch {
                logger.debug("cannot answer a name-key sync request", metadata: ["error": "\(error)"])
            }
        }
    }
}

/// The backup's side: runs ``KeySyncSession``s against an active over a `Transport`, reading
/// and writing its ``NameKeyStore``, with a reply timeout and retries on an injected clock.
///
/// The client reads the transport's incoming messages from its creation until ``close()``; a
/// program that runs other protocols on the same transport puts a `TransportDemultiplexer` in
/// front. One sync at a time.
///
/// ```swift
/// let store = try SQLiteNameKeyStore(path: "backup.sqlite", schema: .inventory)
/// let client = KeySyncClient(store: store, transport: transport)
/// let result = try await client.sync(with: "active")
/// print(result.written, result.bytesReceived)
/// ```
public final class KeySyncClient: Sendable {
    private enum Event: Sendable {
        case message(KeySyncMessage, size: Int)
        case malformed(KeySyncError)
        case timeout(UInt64)
    }

    private let store: any NameKeyStore
    private let transport: any Transport
    private let clock: any RuntimeClock
    private let logger: Logger
    private let blockingIO: KeySyncBlockingIO
    private let replyTimeout: Duration
    private let routing = NIOLockedValueBox<(peer: NodeID?, continuation: AsyncStream<Event>.Continuation?)>((nil, nil))
    private let reader: NIOLockedValueBox<Task<Void, Never>?> = NIOLockedValueBox(nil)
    private let requestBase: @Sendable () -> UInt64
    private let replyAddress: String?
    private let metricsFactory: any MetricsFactory

    /// Creates a client syncing `store` over `transport`; a request unanswered after
    /// `replyTimeout` is sent again. `replyAddress` (`HOST:PORT` where `transport` listens) goes
    /// in the hello, for an active that must learn where to answer (see ``KeySyncServer``).
    ///
    /// Metrics: `ft_keysync_syncs_total{outcome}` (completed, failed), `ft_keysync_bytes_total`
    /// `{direction}` (sent, received) and `ft_keysync_records_written_total`.
    public init(
        store: any NameKeyStore, transport: any Transport, clock: any RuntimeClock = SystemClock(),
        replyTimeout: Duration = .seconds(2), logger: Logger = Logger(label: "ft.keysync.client"),
        blockingIO: KeySyncBlockingIO = .threadPool, replyAddress: String? = nil,
        metricsFactory: (any MetricsFactory)? = nil,
        requestBase: @escaping @Sendable () -> UInt64 = { UInt64.random(in: 1...(1 << 62)) }
    ) {
        self.metricsFactory = metricsFactory ?? MetricsSystem.factory
        self.replyAddress = replyAddress
        self.store = store
        self.transport = transport
        self.clock = clock
        self.replyTimeout = replyTimeout
        self.logger = logger
        self.blockingIO = blockingIO
        self.requestBase = requestBase
    }

    private func count(_ result: SyncResult, outcome: String) {
        Counter(label: "ft_keysync_syncs_total", dimensions: [("outcome", outcome)], factory: metricsFactory)
            .increment()
        Counter(label: "ft_keysync_bytes_total", dimensions: [("direction", "sent")], factory: metricsFactory)
            .increment(by: result.bytesSent)
        Counter(label: "ft_keysync_bytes_total", dimensions: [("direction", "received")], factory: metricsFactory)
            .increment(by: result.bytesReceived)
        Counter(label: "ft_keysync_records_written_total", factory: metricsFactory).increment(by: result.written)
    }

    /// Stops reading the transport (for good: a transport's incoming stream ends when its reader
    /// is cancelled, so keep one client per transport for as long as it syncs).
    public func close() {
        reader.withLockedValue { $0?.cancel() }
    }

    private func startReading() {
        reader.withLockedValue { task in
            guard task == nil else { return }
            let transport = self.transport
            let routing = self.routing
            task = Task(executorPreference: clock.taskExecutor) {
                for await envelope in transport.incoming
                where KeySyncMessage.MessageType.all.contains(envelope.message.type) {
                    let (peer, continuation) = routing.withLockedValue { ($0.peer, $0.continuation) }
                    guard let continuation, envelope.from == peer else { continue }
                    do throws(KeySyncError) {
                        continuation.yield(
                            .message(
                                try KeySyncMessage.decode(envelope.message),
                                size: envelope.message.payload.readableBytes + 16))
                    } catch {
                        continuation.yield(.malformed(error))
                    }
                }
            }
        }
    }

    /// Syncs the store from `active`, calling `progress` with the result so far after each
    /// reply. Returns what the sync did; throws ``KeySyncError`` when the active refuses, the
    /// schemas cannot meet, a message is malformed, or the active stops answering.
    public func sync(
        with active: NodeID, options: KeySyncSession.Options = .init(), bug: KeySyncSession.Bug? = nil,
        progress: @Sendable (SyncResult) -> Void = { _ in }
    ) async throws(KeySyncError) -> SyncResult {
        do {
            return try await runSession(with: active, options: options, bug: bug, progress: progress)
        } catch {
            count(SyncResult(), outcome: "failed")
            logger.warning("name-key sync failed", metadata: ["active": "\(active)", "error": "\(error)"])
            throw error
        }
    }

    private func runSession(
        with active: NodeID, options: KeySyncSession.Options, bug: KeySyncSession.Bug?,
        progress: @Sendable (SyncResult) -> Void
    ) async throws(KeySyncError) -> SyncResult {
        startReading()
        let (events, continuation) = AsyncStream<Event>.makeStream()
        routing.withLockedValue { $0 = (active, continuation) }
        defer {
            routing.withLockedValue { $0 = (nil, nil) }
            continuation.finish()
        }
        var session = KeySyncSession(schema: store.schema, options: options, requestBase: requestBase(), bug: bug)
        var pending = session.start()
        var counters = SyncResult()
        var timer: Task<Void, Never>?
        defer { timer?.cancel() }
        var iterator = events.makeAsyncIterator()
        let store = self.store
        while true {
            // Carry out the actions in order; local reads feed the session at once.
            while !pending.isEmpty {
                let action = pending.removeFirst()
                switch action {
                case .send(let message):
                    let encoded = try message.encode()
                    counters.bytesSent += encoded.payload.readableBytes + 16
                    do {
                        try await transport.send(encoded, to: active)
                    } catch {
                        logger.debug("sync request not sent", metadata: ["error": "\(error)"])
                    }
                    timer?.cancel()
                    let request = message.request
                    let clock = self.clock
                    let timeout = replyTimeout
                    timer = Task(executorPreference: clock.taskExecutor) {
                        do { try await clock.sleep(for: timeout) } catch { return }
                        continuation.yield(.timeout(request))
                    }
                case .describeLocal:
                    var description = try await blockingIO.run { () throws(KeySyncError) in
                        var description = try store.describe()
                        // The hello carries the first symbols: the active estimates the
                        // difference from them and sends as many as it needs at once.
                        let leading = min(KeySyncResponder.leadingSymbols, store.sketchCapacity)
                        description.leadingSymbols = try store.symbols(0..<leading)
                        return description
                    }
                    description.replyAddress = replyAddress
                    pending += session.localDescription(description)
                case .readLocalSymbols(let range):
                    let symbols = try await blockingIO.run { () throws(KeySyncError) in try store.symbols(range) }
                    pending += session.localSymbols(symbols)
                case .readLocalRecords(let fingerprints):
                    let records = try await blockingIO.run { () throws(KeySyncError) in
                        try store.records(withFingerprints: fingerprints)
                    }
                    pending += session.localRecords(records)
                case .readLocalRecordsByKey(let keys):
                    let records = try await blockingIO.run { () throws(KeySyncError) in try store.records(forKeys: keys)
                    }
                    pending += session.localRecords(forKeys: records)
                case .readLocalRange(let after, let limit):
                    let records = try await blockingIO.run { () throws(KeySyncError) in
                        try store.records(after: after, limit: limit)
                    }
                    pending += session.localRange(records)
                case .apply(let changes):
                    try await blockingIO.run { () throws(KeySyncError) in try store.apply(changes) }
                    pending += session.applied()
                case .finish(var result):
                    let mark = SyncMark(
                        peer: "\(active)", peerGeneration: result.activeGeneration, generation: store.generation)
                    try await blockingIO.run { () throws(KeySyncError) in try store.recordSync(mark) }
                    result.bytesSent = counters.bytesSent
                    result.bytesReceived = counters.bytesReceived
                    count(result, outcome: "completed")
                    logger.info(
                        "name-key sync done",
                        metadata: [
                            "mode": "\(result.mode)", "written": "\(result.written)",
                            "bytes": "\(result.bytesReceived)",
                            "round_trips": "\(result.roundTrips)",
                        ])
                    return result
                case .fail(let error):
                    throw error
                }
            }
            var snapshot = session.progress
            snapshot.bytesSent = counters.bytesSent
            snapshot.bytesReceived = counters.bytesReceived
            progress(snapshot)
            guard let event = await iterator.next() else {
                throw KeySyncError(.transport, detail: "the sync was cancelled")
            }
            switch event {
            case .message(let message, let size):
                counters.bytesReceived += size
                pending = session.received(message)
            case .malformed(let error):
                // A peer that sends garbage ends the sync: nothing of it was applied.
                throw error
            case .timeout(let request):
                guard session.awaiting?.request == request else { continue }
                pending = session.timedOut()
            }
        }
    }
}
