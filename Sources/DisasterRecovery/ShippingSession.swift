public import ElasticJournal
public import FaultToleranceCore

/// The protected site's half of journal shipping, as a pure state machine: no clock, no I/O.
///
/// It says which records to read from the journal and what to send; its runtime
/// (``JournalShipper``) does both and reports back. Only durable records leave (a record not
/// yet durable may be lost in a crash and its sequence number reused). Records wait in flight
/// until the recovery site acknowledges them as durable there, within a byte budget; a link
/// that breaks loses nothing: after the next hello the recovery site names where to resume,
/// and records it already holds are never sent again as new.
public struct ShippingSender: Sendable {
    /// What the runtime must do.
    public enum Effect: Sendable, Hashable {
        /// Send this message to the recovery site.
        case send(ShippingMessage)
        /// Read records `from...through` (up to `maximumBytes`) and call ``ShippingSender/recordsRead(_:)``.
        case read(from: UInt64, through: UInt64, maximumBytes: Int)
    }

    /// The journal shipped.
    public let journal: UInt64
    /// Most record bytes sent and not yet acknowledged.
    public let maximumInFlightBytes: Int
    /// Most record bytes in one batch.
    public let maximumBatchBytes: Int
    /// Greet the recovery site again when records in flight see no acknowledgement, or a
    /// greeting no answer, for this long.
    public let acknowledgementTimeout: Duration

    /// Every record through this one is durable at the recovery site.
    public private(set) var acknowledged: UInt64 = 0
    /// The protected journal is durable through this record.
    public private(set) var durable: UInt64 = 0
    /// The next record to send, once the recovery site has said where to resume.
    public private(set) var nextToSend: UInt64?
    /// The recovery site's answer that the records it needs have aged out.
    public private(set) var unavailable: (requested: UInt64, oldest: UInt64)?
    private var inFlight: [(sequence: UInt64, time: Instant, bytes: Int)] = []
    private var inFlightHead = 0
    private var inFlightBytes = 0
    private var reading = false
    /// When the first durable record not yet acknowledged was noticed, while none is in flight.
    private var pendingNoticedAt: Instant?
    /// A planted bug, or `nil` for the shipped logic.
    package var bug: DisasterRecoveryBug?

    /// Greetings sent (the first and every one after a stall or a broken link).
    public private(set) var greetings = 0
    private var greetedAt: Instant?
    private var lastProgress: Instant?

    /// Creates a sender.
    public init(
        journal: UInt64, maximumInFlightBytes: Int = 32 << 20, maximumBatchBytes: Int = 1 << 20,
        acknowledgementTimeout: Duration = .seconds(2)
    ) {
        self.journal = journal
        self.acknowledgementTimeout = acknowledgementTimeout
        self.maximumInFlightBytes = max(1, maximumInFlightBytes)
        self.maximumBatchBytes = max(1, min(maximumBatchBytes, ShippingMessage.maximumBatchBytes))
    }

    /// Records sent and not yet acknowledged.
    public var recordsInFlight: Int { inFlight.count - inFlightHead }

    /// The link is (again) up, or the recovery site has gone quiet: greet it so it names where
    /// to resume. Whatever was in flight will be sent again from where it says.
    public mutating func connect(now: Instant) -> [Effect] {
        greetings += 1
        greetedAt = now
        lastProgress = now
        nextToSend = nil
        reading = false
        inFlight.removeAll()
        inFlightHead = 0
        inFlightBytes = 0
        return [.send(.hello(journal: journal, durableThrough: durable))]
    }

    /// Time has passed: looks at the journal (durable through `durable`, staged through
    /// `staged`) and greets the recovery site again if it went quiet: records in flight with no
    /// acknowledgement, or a greeting with no answer, for ``acknowledgementTimeout``.
    public mutating func tick(durable: UInt64, staged: UInt64, now: Instant) -> [Effect] {
        let quietSince = lastProgress ?? greetedAt ?? now
        let stalled = recordsInFlight > 0 || nextToSend == nil
        if greetedAt == nil || (stalled && now - quietSince > acknowledgementTimeout) {
            return connect(now: now) + journalAdvanced(durable: durable, staged: staged, now: now)
        }
        return journalAdvanced(durable: durable, staged: staged, now: now)
    }

    /// A send failed: the link broke. The next ``tick(durable:staged:now:)`` greets again.
    public mutating func linkFailed() {
        greetedAt = nil
        lastProgress = nil
    }

    /// The protected journal is durable through `durable` and has staged (written, perhaps not
    /// yet durably) through `staged`, as seen at `now`. Only the durable records ship.
    public mutating func journalAdvanced(durable through: UInt64, staged: UInt64, now: Instant) -> [Effect] {
        let through = bug == .shipBeforeDurable ? max(through, staged) : through
        guard through > durable else { return nextRead() }
        if durable <= acknowledged, pendingNoticedAt == nil { pendingNoticedAt = now }
        durable = through
        return nextRead()
    }

    /// A message from the recovery site. Messages about another journal are refused.
    public mutating func received(_ message: ShippingMessage, now: Instant) throws(RecoveryError) -> [Effect] {
        guard message.journal == journal else {
            throw RecoveryError(.invalidField, "a message about journal \(message.journal), shipping \(journal)")
        }
        switch message {
        case .resume(_, let from):
            // Everything before `from` is durable there.
            acknowledge(through: from - 1, now: now)
            nextToSend = max(from, acknowledged + 1)
            inFlight.removeAll()
            inFlightHead = 0
            inFlightBytes = 0
            return nextRead()
        case .acknowledged(_, let through):
            // Beyond what this sender has seen durable: an answer to an earlier process of the
            // protected site, before this one has looked at its journal. The next greeting's
            // answer says where the recovery site stands.
            guard through <= durable else { return [] }
            acknowledge(through: through, now: now)
            return nextRead()
        case .hello, .records, .unavailable:
            throw RecoveryError(.invalidField, "a recovery site does not send \(message)")
        }
    }

    private mutating func acknowledge(through: UInt64, now: Instant) {
        lastProgress = now
        guard through > acknowledged else { return }
        acknowledged = through
        while inFlightHead < inFlight.count, inFlight[inFlightHead].sequence <= through {
            inFlightBytes -= inFlight[inFlightHead].bytes
            inFlightHead += 1
        }
        if inFlightHead > 1024, inFlightHead * 2 > inFlight.count {
            inFlight.removeFirst(inFlightHead)
            inFlightHead = 0
        }
        pendingNoticedAt = durable > acknowledged ? now : nil
    }

    private mutating func nextRead() -> [Effect] {
        guard !reading, let next = nextToSend, next <= durable, inFlightBytes < maximumInFlightBytes else { return [] }
        reading = true
        return [
            .read(
                from: next, through: durable, maximumBytes: min(maximumBatchBytes, maximumInFlightBytes - inFlightBytes)
            )
        ]
    }

    /// The records a ``Effect/read(from:through:maximumBytes:)`` returned (none when it failed:
    /// the read is tried again at the next tick, not at once).
    public mutating func recordsRead(_ records: [JournalRecord]) -> [Effect] {
        reading = false
        guard let next = nextToSend, let first = records.first, first.sequence == next else { return [] }
        var batch: [JournalRecord] = []
        var bytes = 0
        var effects: [Effect] = []
        for record in records {
            if !batch.isEmpty,
                bytes + record.bytes.count > maximumBatchBytes || batch.count == ShippingMessage.maximumRecords
            {
                effects.append(.send(.records(journal: journal, batch)))
                batch.removeAll()
                bytes = 0
            }
            batch.append(record)
            bytes += record.bytes.count
            inFlight.append((record.sequence, record.time, record.bytes.count))
            inFlightBytes += record.bytes.count
        }
        effects.append(.send(.records(journal: journal, batch)))
        nextToSend = (records.last?.sequence ?? next) + 1
        return effects + nextRead()
    }

    /// The protected journal no longer holds `requested` (its oldest is `oldest`): tell the
    /// recovery site.
    public mutating func recordsUnavailable(requested: UInt64, oldest: UInt64) -> [Effect] {
        reading = false
        unavailable = (requested, oldest)
        return [.send(.unavailable(journal: journal, requested: requested, oldest: oldest))]
    }

    /// The recovery point objective now: how far back in time the protected site's durable
    /// writes reach that the recovery site does not yet hold durably (the age of the oldest
    /// such write; zero when it holds them all). Exact for records in flight; for records not
    /// yet read, measured from when they were first seen durable.
    public func recoveryPointObjective(now: Instant) -> Duration {
        guard durable > acknowledged else { return .zero }
        let since = inFlightHead < inFlight.count ? inFlight[inFlightHead].time : (pendingNoticedAt ?? now)
        return since < now ? now - since : .zero
    }
}

/// The recovery site's half of journal shipping, as a pure state machine.
///
/// It accepts only the next record it needs: a batch that starts after it (a gap: records lost
/// with a broken link) is answered with where to resume, and records it already holds
/// (resent after a reconnect) are dropped, so its journal receives every record once, in
/// order. It acknowledges what its runtime (``JournalReceiver``) reports durable.
public struct ShippingReceiver: Sendable {
    /// What the runtime must do.
    public enum Effect: Sendable, Hashable {
        /// Send this message to the protected site.
        case send(ShippingMessage)
        /// Append these records, in order, durably; then call ``ShippingReceiver/appended(through:)``.
        case append([JournalRecord])
        /// The protected site cannot supply what this site needs.
        case fail(RecoveryError)
    }

    /// The journal received.
    public let journal: UInt64
    /// The next record this site needs.
    public private(set) var expected: UInt64
    /// Batches refused for a gap, and records dropped as already held.
    public private(set) var gaps = 0
    /// Records dropped as already held.
    public private(set) var duplicates = 0

    /// Creates a receiver whose journal is durable through `durableThrough`.
    public init(journal: UInt64, durableThrough: UInt64) {
        self.journal = journal
        self.expected = durableThrough + 1
    }

    /// A message from the protected site. Messages about another journal are refused.
    public mutating func received(_ message: ShippingMessage) throws(RecoveryError) -> [Effect] {
        guard message.journal == journal else {
            throw RecoveryError(.invalidField, "a message about journal \(message.journal), receiving \(journal)")
        }
        switch message {
        case .hello:
            return [.send(.resume(journal: journal, from: expected))]
        case .records(_, let records):
            guard let first = records.first else { return [] }
            if first.sequence > expected {
                gaps += 1
                return [.send(.resume(journal: journal, from: expected))]
            }
            let fresh = records.drop { $0.sequence < expected }
            duplicates += records.count - fresh.count
            guard !fresh.isEmpty else { return [.send(.acknowledged(journal: journal, through: expected - 1))] }
            expected = (fresh.last?.sequence ?? expected) + 1
            return [.append(Array(fresh))]
        case .unavailable(_, let requested, let oldest):
            return [
                .fail(
                    RecoveryError(
                        .sourceUnavailable,
                        "the protected journal no longer holds record \(requested) (its oldest is \(oldest)): "
                            + "this recovery site needs a new initial copy"))
            ]
        case .resume, .acknowledged:
            throw RecoveryError(.invalidField, "a protected site does not send \(message)")
        }
    }

    /// The runtime's append failed: the records from `first` on are not here; ask for them again.
    public mutating func appendFailed(from first: UInt64) -> [Effect] {
        expected = min(expected, first)
        return [.send(.resume(journal: journal, from: expected))]
    }

    /// Records through `through` are durable here.
    public func appended(through: UInt64) -> [Effect] {
        [.send(.acknowledged(journal: journal, through: through))]
    }
}
