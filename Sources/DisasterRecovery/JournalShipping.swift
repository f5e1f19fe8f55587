public import ElasticJournal
public import FaultToleranceCore
public import Logging
public import Metrics
import NIOConcurrencyHelpers

/// Where shipping stands, for `status` commands and metrics.
public struct ShippingStatus: Sendable, Hashable {
    /// The protected journal is durable through this record (sender), or the recovery journal
    /// is (receiver).
    public var durable: UInt64
    /// The recovery site holds every record through this one durably.
    public var acknowledged: UInt64
    /// The recovery point objective now (sender; zero on the receiver).
    public var recoveryPointObjective: Duration
    /// Records sent and not yet acknowledged (sender).
    public var inFlight: Int
    /// Times the link was greeted anew (sender), or gaps refused (receiver).
    public var reconnects: Int
    /// Records received again and dropped (receiver).
    public var duplicates: Int
    /// Messages refused: malformed, from another node, about another journal.
    public var refused: Int
    /// The last error, if any.
    public var lastError: String?

    static let initial = ShippingStatus(
        durable: 0, acknowledged: 0, recoveryPointObjective: .zero, inFlight: 0, reconnects: 0, duplicates: 0,
        refused: 0, lastError: nil)
}

/// A clock whose reading is set by hand: the recovery site's journal store reads it, and the
/// ``JournalReceiver`` sets it to each shipped record's time before appending the record, so
/// the recovery site's journal keeps the protected site's times (a point in time means the
/// same at both sites) and ages records out on the protected site's clock.
public final class ShippedClock: Sendable {
    private let value: NIOLockedValueBox<Instant>

    /// A clock reading `start`.
    public init(start: Instant = .zero) { value = NIOLockedValueBox(start) }

    /// The current reading.
    public func now() -> Instant { value.withLockedValue { $0 } }

    /// Moves the reading to `instant` (never backwards).
    public func advance(to instant: Instant) { value.withLockedValue { $0 = max($0, instant) } }
}

/// Ships a protected site's journal to a recovery site over a ``FaultToleranceCore/Transport``,
/// continuously: the runtime of ``ShippingSender``.
///
/// Polls the journal's durable sequence every `pollInterval`, reads new records where its
/// ``FaultToleranceCore/BlockingIO`` says (NIO's thread pool by default), sends them in batches
/// and keeps the recovery point objective. It greets the recovery site at start, after a failed
/// send, and when acknowledgements stall, and resumes wherever the site says: no gap, no
/// duplicate.
///
/// Metrics (dimension `journal`): `ft_dr_rpo_seconds` (gauge: the recovery point objective,
/// the age of the oldest durable write the recovery site lacks), `ft_dr_records_in_flight`
/// and `ft_dr_acknowledged_sequence` (gauges: records sent and not acknowledged, and the
/// sequence number through which the recovery site holds every record), `ft_dr_reconnects_total`
/// (counter).
public final class JournalShipper: Sendable {
    /// Where to ship and how often to look.
    public struct Configuration: Sendable, Hashable {
        /// The recovery site's node.
        public var recoverySite: NodeID
        /// How often to look for newly durable records.
        public var pollInterval: Duration
        /// Greet again when records in flight see no acknowledgement for this long.
        public var acknowledgementTimeout: Duration
        /// Most record bytes in flight.
        public var maximumInFlightBytes: Int
        /// Most record bytes in one batch.
        public var maximumBatchBytes: Int

        /// Creates a configuration.
        public init(
            recoverySite: NodeID, pollInterval: Duration = .milliseconds(2),
            acknowledgementTimeout: Duration = .seconds(2), maximumInFlightBytes: Int = 32 << 20,
            maximumBatchBytes: Int = 1 << 20
        ) {
            self.recoverySite = recoverySite
            self.pollInterval = pollInterval
            self.acknowledgementTimeout = acknowledgementTimeout
            self.maximumInFlightBytes = maximumInFlightBytes
            self.maximumBatchBytes = maximumBatchBytes
        }
    }

    private enum Event: Sendable {
        case tick
        case message(Envelope)
        case read(Result<[JournalRecord], JournalError>, from: UInt64)
    }

    /// The journal shipped.
    public let journal: ElasticJournal
    /// The link.
    public let transport: any Transport
    /// Where and how.
    public let configuration: Configuration
    private let clock: @Sendable () -> Instant
    private let pacing: any RuntimeClock
    private let blockingIO: BlockingIO
    private let bug: DisasterRecoveryBug?
    private let logger: Logger
    private let published = NIOLockedValueBox(ShippingStatus.initial)
    private let metrics: ShipperMetrics

    /// Creates a shipper; ``run()`` ships. `clock` reads the time on the journal's timeline (the
    /// records' times, for the RPO); the poll waits on `pacing`, whose task executor the
    /// shipper's tasks prefer (a simulation passes its virtual clock, and `.inline` for
    /// `blockingIO`).
    public convenience init(
        journal: ElasticJournal, transport: any Transport, configuration: Configuration,
        clock: @escaping @Sendable () -> Instant = JournalStore.wallClock, pacing: any RuntimeClock = SystemClock(),
        blockingIO: BlockingIO = .threadPool, logger: Logger = Logger(label: "ft.dr.shipper"),
        metricsFactory: (any MetricsFactory)? = nil
    ) {
        self.init(
            journal: journal, transport: transport, configuration: configuration, clock: clock, pacing: pacing,
            blockingIO: blockingIO, logger: logger, metricsFactory: metricsFactory, bug: nil)
    }

    /// A shipper with a planted bug, for the simulation.
    package init(
        journal: ElasticJournal, transport: any Transport, configuration: Configuration,
        clock: @escaping @Sendable () -> Instant, pacing: any RuntimeClock, blockingIO: BlockingIO, logger: Logger,
        metricsFactory: (any MetricsFactory)? = nil, bug: DisasterRecoveryBug?
    ) {
        metrics = ShipperMetrics(journal: journal.id, factory: metricsFactory ?? MetricsSystem.factory)
        self.journal = journal
        self.transport = transport
        self.configuration = configuration
        self.clock = clock
        self.pacing = pacing
        self.blockingIO = blockingIO
        self.bug = bug
        self.logger = logger
    }

    /// Where shipping stands.
    public var status: ShippingStatus { published.withLockedValue { $0 } }

    /// Ships until cancelled. Reads every message of the transport's `incoming` stream (give it
    /// a transport of its own, or a demultiplexed one).
    public func run() async {
        let (events, sink) = AsyncStream.makeStream(of: Event.self)
        let transport = self.transport
        let interval = configuration.pollInterval
        let pacing = self.pacing
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                for await envelope in transport.incoming
                where ShippingMessage.MessageType.contains(envelope.message.type) {
                    sink.yield(.message(envelope))
                }
            }
            group.addTask {
                while !Task.isCancelled {
                    sink.yield(.tick)
                    try? await pacing.sleep(for: interval)
                }
                sink.finish()
            }
            await consume(events, sink: sink)
            group.cancelAll()
        }
    }

    private func consume(_ events: AsyncStream<Event>, sink: AsyncStream<Event>.Continuation) async {
        var sender = ShippingSender(
            journal: journal.id.rawValue, maximumInFlightBytes: configuration.maximumInFlightBytes,
            maximumBatchBytes: configuration.maximumBatchBytes,
            acknowledgementTimeout: configuration.acknowledgementTimeout)
        sender.bug = bug
        var lastAcknowledged: UInt64 = 0
        var effects: [ShippingSender.Effect] = []
        for await event in events {
            if Task.isCancelled { break }
            let now = clock()
            switch event {
            case .tick:
                effects += sender.tick(durable: journal.durableSequence, staged: journal.lastSequence, now: now)
            case .message(let envelope):
                guard envelope.from == configuration.recoverySite else {
                    published.withLockedValue { $0.refused += 1 }
                    continue
                }
                do {
                    effects += try sender.received(ShippingMessage.decode(envelope.message), now: now)
                } catch {
                    published.withLockedValue {
                        $0.refused += 1
                        $0.lastError = "\(error)"
                    }
                }
            case .read(let result, let from):
                switch result {
                case .success(let records):
                    effects += sender.recordsRead(records)
                case .failure(let error) where error.code == .outsideWindow:
                    effects += sender.recordsUnavailable(requested: from, oldest: journal.oldestSequence)
                    logger.error("the recovery site needs records that aged out", metadata: ["error": "\(error)"])
                case .failure(let error):
                    effects += sender.recordsRead([])
                    published.withLockedValue { $0.lastError = "\(error)" }
                }
            }
            lastAcknowledged = sender.acknowledged
            while !effects.isEmpty {
                let effect = effects.removeFirst()
                switch effect {
                case .send(let message):
                    do {
                        try await transport.send(message.encode(), to: configuration.recoverySite)
                    } catch {
                        // The link broke: greet again at the next tick, and resume where the site says.
                        effects.removeAll {
                            if case .send = $0 { return true }
                            return false
                        }
                        sender.linkFailed()
                        published.withLockedValue { $0.lastError = "\(error)" }
                    }
                case .read(let from, let through, let maximumBytes):
                    let journal = self.journal
                    let blockingIO = self.blockingIO
                    Task(executorPreference: pacing.taskExecutor) {
                        let result = await blockingIO.run {
                            Result { () throws(JournalError) in
                                try journal.records(fromSequence: from, through: through, maximumBytes: maximumBytes)
                            }
                        }
                        sink.yield(.read(result, from: from))
                    }
                }
            }
            let rpo = sender.recoveryPointObjective(now: now)
            let inFlight = sender.recordsInFlight
            let durable = sender.durable
            let greetings = sender.greetings
            let before = published.withLockedValue { status -> ShippingStatus in
                defer {
                    status.reconnects = max(0, greetings - 1)
                    status.durable = durable
                    status.acknowledged = lastAcknowledged
                    status.recoveryPointObjective = rpo
                    status.inFlight = inFlight
                }
                return status
            }
            metrics.record(
                before: before, rpo: rpo, inFlight: inFlight, acknowledged: lastAcknowledged,
                reconnects: max(0, greetings - 1))
        }
    }
}

/// Receives a shipped journal at the recovery site: the runtime of ``ShippingReceiver``.
///
/// Appends each batch to the recovery site's own ``ElasticJournal/ElasticJournal``, keeping the
/// protected site's sequence numbers and times (the journal's store must read the receiver's
/// ``ShippedClock``), makes it durable, then acknowledges. The recovery journal must have been
/// created with the protected journal's volumes and sizes and receive every record from the
/// first: its sequence numbers are the protected ones, which is what makes resuming exact.
///
/// Metrics (dimension `journal`): `ft_dr_records_appended_total`, `ft_dr_duplicates_dropped_total`
/// and `ft_dr_gaps_refused_total` (counters).
public final class JournalReceiver: Sendable {
    /// The recovery site's journal.
    public let journal: ElasticJournal
    /// The link.
    public let transport: any Transport
    /// The protected site's node: messages from any other are refused.
    public let protectedSite: NodeID
    /// The clock the recovery journal's store reads.
    public let clock: ShippedClock
    private let blockingIO: BlockingIO
    private let logger: Logger
    private let published = NIOLockedValueBox(ShippingStatus.initial)
    private let appendedCounter: Counter
    private let duplicatesCounter: Counter
    private let gapsCounter: Counter

    /// Creates a receiver; ``run()`` receives. Appends run where `blockingIO` says (NIO's thread
    /// pool by default; a simulation passes `.inline`).
    public init(
        journal: ElasticJournal, transport: any Transport, protectedSite: NodeID, clock: ShippedClock,
        blockingIO: BlockingIO = .threadPool, logger: Logger = Logger(label: "ft.dr.receiver"),
        metricsFactory: (any MetricsFactory)? = nil
    ) {
        let factory = metricsFactory ?? MetricsSystem.factory
        let dimensions = [("journal", "\(journal.id.rawValue)")]
        appendedCounter = Counter(label: "ft_dr_records_appended_total", dimensions: dimensions, factory: factory)
        duplicatesCounter = Counter(label: "ft_dr_duplicates_dropped_total", dimensions: dimensions, factory: factory)
        gapsCounter = Counter(label: "ft_dr_gaps_refused_total", dimensions: dimensions, factory: factory)
        self.journal = journal
        self.transport = transport
        self.protectedSite = protectedSite
        self.clock = clock
        self.blockingIO = blockingIO
        self.logger = logger
    }

    /// Where receiving stands.
    public var status: ShippingStatus { published.withLockedValue { $0 } }

    /// Receives until cancelled or the transport closes.
    public func run() async {
        var receiver = ShippingReceiver(journal: journal.id.rawValue, durableThrough: journal.durableSequence)
        published.withLockedValue {
            $0.durable = journal.durableSequence
            $0.acknowledged = journal.durableSequence
        }
        for await envelope in transport.incoming where ShippingMessage.MessageType.contains(envelope.message.type) {
            if Task.isCancelled { break }
            guard envelope.from == protectedSite else {
                published.withLockedValue { $0.refused += 1 }
                continue
            }
            var effects: [ShippingReceiver.Effect]
            do {
                effects = try receiver.received(ShippingMessage.decode(envelope.message))
            } catch {
                published.withLockedValue {
                    $0.refused += 1
                    $0.lastError = "\(error)"
                }
                continue
            }
            while !effects.isEmpty {
                switch effects.removeFirst() {
                case .send(let message):
                    try? await transport.send(message.encode(), to: protectedSite)
                case .append(let records):
                    switch await append(records) {
                    case .success(let through):
                        appendedCounter.increment(by: records.count)
                        effects += receiver.appended(through: through)
                        published.withLockedValue {
                            $0.durable = through
                            $0.acknowledged = through
                        }
                    case .failure(let error):
                        logger.error("appending shipped records failed", metadata: ["error": "\(error)"])
                        published.withLockedValue { $0.lastError = "\(error)" }
                        effects += receiver.appendFailed(from: journal.durableSequence + 1)
                    }
                case .fail(let error):
                    logger.error("shipping cannot go on", metadata: ["error": "\(error)"])
                    published.withLockedValue { $0.lastError = "\(error)" }
                }
            }
            let gaps = receiver.gaps
            let duplicates = receiver.duplicates
            let before = published.withLockedValue { status -> ShippingStatus in
                defer {
                    status.reconnects = gaps
                    status.duplicates = duplicates
                }
                return status
            }
            if gaps > before.reconnects { gapsCounter.increment(by: gaps - before.reconnects) }
            if duplicates > before.duplicates { duplicatesCounter.increment(by: duplicates - before.duplicates) }
        }
    }

    /// Appends `records` with ``appendShipped(_:to:clock:)``, where ``blockingIO`` says.
    private func append(_ records: [JournalRecord]) async -> Result<UInt64, JournalError> {
        let journal = self.journal
        let clock = self.clock
        return await blockingIO.run {
            Result { () throws(JournalError) in try Self.appendShipped(records, to: journal, clock: clock) }
        }
    }

    /// Appends shipped `records` to the recovery site's `journal` in runs of equal time (the
    /// clock its store reads set to each run's time), makes them durable, and checks the journal
    /// numbered them as the protected site did; returns the last sequence number. Blocks on the
    /// journal's storage: call it from a thread of your own.
    public static func appendShipped(
        _ records: [JournalRecord], to journal: ElasticJournal, clock: ShippedClock
    ) throws(JournalError) -> UInt64 {
        var start = 0
        while start < records.count {
            var end = start + 1
            while end < records.count, records[end].time == records[start].time { end += 1 }
            clock.advance(to: records[start].time)
            let writes = records[start..<end].map {
                JournalWrite(volume: $0.volume, offset: $0.offset, bytes: $0.bytes)
            }
            let receipts = try journal.appendBuffered(contentsOf: writes)
            guard receipts.last?.sequence == records[end - 1].sequence else {
                throw JournalError(
                    .invalidConfiguration, journal: journal.id,
                    detail: "the recovery journal numbered record \(records[end - 1].sequence) as "
                        + "\(receipts.last?.sequence ?? 0): it did not receive every record from the first")
            }
            start = end
        }
        try journal.synchronize()
        return records.last?.sequence ?? journal.durableSequence
    }
}

/// The shipper's metrics, fed from its status after each event.
private struct ShipperMetrics: Sendable {
    let rpo: Gauge
    let inFlight: Gauge
    let acknowledged: Gauge
    let reconnects: Counter

    init(journal: JournalID, factory: any MetricsFactory) {
        let dimensions = [("journal", "\(journal.rawValue)")]
        rpo = Gauge(label: "ft_dr_rpo_seconds", dimensions: dimensions, factory: factory)
        inFlight = Gauge(label: "ft_dr_records_in_flight", dimensions: dimensions, factory: factory)
        acknowledged = Gauge(label: "ft_dr_acknowledged_sequence", dimensions: dimensions, factory: factory)
        reconnects = Counter(label: "ft_dr_reconnects_total", dimensions: dimensions, factory: factory)
    }

    /// Records the new figures; the counter grows by what changed since `before`.
    func record(before: ShippingStatus, rpo: Duration, inFlight: Int, acknowledged: UInt64, reconnects: Int) {
        let components = rpo.components
        self.rpo.record(Double(components.seconds) + Double(components.attoseconds) / 1e18)
        self.inFlight.record(inFlight)
        self.acknowledged.record(Int64(clamping: acknowledged))
        if reconnects > before.reconnects { self.reconnects.increment(by: reconnects - before.reconnects) }
    }
}
