import ElasticJournal
import FaultToleranceCore
import MetricsTestKit
import NIOConcurrencyHelpers
import Testing

@testable import DisasterRecovery

/// Shipping a journal between two sites: the state machines alone, then the runtimes over an
/// in-memory network with the link cut and the recovery site restarted.
@Suite struct JournalShippingTests {
    static func record(_ sequence: UInt64, time: Int64 = 0, bytes: Int = 10) -> JournalRecord {
        JournalRecord(
            sequence: sequence, time: Instant(nanoseconds: time), volume: 1, offset: sequence * 16,
            bytes: [UInt8](repeating: UInt8(truncatingIfNeeded: sequence), count: bytes))
    }

    @Test func theMessagesRoundTripAndRefuseHostileBytes() throws {
        let messages: [ShippingMessage] = [
            .hello(journal: 1, durableThrough: 9), .resume(journal: 1, from: 4),
            .records(journal: 1, [Self.record(4, time: 10), Self.record(5, time: 10), Self.record(6, time: 12)]),
            .acknowledged(journal: 1, through: 6), .unavailable(journal: 1, requested: 2, oldest: 40),
        ]
        for message in messages {
            let encoded = message.encode()
            #expect(try ShippingMessage.decode(encoded) == message)
            let bytes = encoded.bytes
            for cut in 0..<bytes.count {
                #expect(throws: RecoveryError.self) {
                    try ShippingMessage.decode(Message(type: encoded.type, bytes: bytes.prefix(cut)))
                }
            }
            #expect(throws: RecoveryError.self) {
                try ShippingMessage.decode(Message(type: encoded.type, bytes: bytes + [0]))
            }
        }
        // Records out of order, going back in time, or claiming more bytes than follow.
        for records in [[Self.record(4), Self.record(6)], [Self.record(4, time: 9), Self.record(5, time: 8)]] {
            let encoded = ShippingMessage.records(journal: 1, records).encode()
            #expect(throws: RecoveryError.self) { try ShippingMessage.decode(encoded) }
        }
        var version = ShippingMessage.hello(journal: 1, durableThrough: 1).encode().bytes
        version[0] = 2
        #expect(throws: RecoveryError.self) { try ShippingMessage.decode(Message(type: 0x0801, bytes: version)) }
    }

    @Test func theSenderShipsDurableRecordsWithinItsBudgetAndResumesWhereTold() throws {
        var sender = ShippingSender(journal: 1, maximumInFlightBytes: 25, maximumBatchBytes: 20)
        #expect(sender.connect(now: .zero) == [.send(.hello(journal: 1, durableThrough: 0))])
        // Nothing is read before the recovery site says where to resume.
        #expect(sender.journalAdvanced(durable: 5, staged: 7, now: Instant(nanoseconds: 100)).isEmpty)
        let resumed = try sender.received(.resume(journal: 1, from: 3), now: Instant(nanoseconds: 150))
        #expect(resumed == [.read(from: 3, through: 5, maximumBytes: 20)])
        #expect(sender.acknowledged == 2)
        let sent = sender.recordsRead([Self.record(3, time: 50), Self.record(4, time: 60)])
        // 20 bytes in flight of 25: one more read, for the 5 left.
        #expect(
            sent == [
                .send(.records(journal: 1, [Self.record(3, time: 50), Self.record(4, time: 60)])),
                .read(from: 5, through: 5, maximumBytes: 5),
            ])
        #expect(sender.recoveryPointObjective(now: Instant(nanoseconds: 200)) == .nanoseconds(150))
        _ = sender.recordsRead([Self.record(5, time: 70)])
        #expect(sender.recordsInFlight == 3)
        // Full: nothing more is read until an acknowledgement.
        #expect(sender.journalAdvanced(durable: 6, staged: 6, now: Instant(nanoseconds: 210)).isEmpty)
        let acknowledged = try sender.received(.acknowledged(journal: 1, through: 4), now: Instant(nanoseconds: 220))
        #expect(acknowledged == [.read(from: 6, through: 6, maximumBytes: 15)])
        #expect(sender.recoveryPointObjective(now: Instant(nanoseconds: 300)) == .nanoseconds(230))
        // An acknowledgement beyond what this sender has seen durable (an answer to an earlier
        // process) changes nothing.
        #expect(try sender.received(.acknowledged(journal: 1, through: 99), now: .zero).isEmpty)
        #expect(sender.acknowledged == 4)
        #expect(throws: RecoveryError.self) { try sender.received(.acknowledged(journal: 2, through: 5), now: .zero) }
        // Reconnected: the site says it holds through 4; record 5 goes again.
        _ = sender.connect(now: Instant(nanoseconds: 300))
        let again = try sender.received(.resume(journal: 1, from: 5), now: Instant(nanoseconds: 400))
        #expect(again == [.read(from: 5, through: 6, maximumBytes: 20)])
        _ = try sender.received(.acknowledged(journal: 1, through: 6), now: Instant(nanoseconds: 500))
        #expect(sender.recoveryPointObjective(now: Instant(nanoseconds: 600)) == .zero)
    }

    @Test func theReceiverTakesEachRecordOnceInOrder() throws {
        var receiver = ShippingReceiver(journal: 1, durableThrough: 2)
        #expect(try receiver.received(.hello(journal: 1, durableThrough: 9)) == [.send(.resume(journal: 1, from: 3))])
        // A gap: records 5-6 while 3 is wanted.
        #expect(
            try receiver.received(.records(journal: 1, [Self.record(5), Self.record(6)])) == [
                .send(.resume(journal: 1, from: 3))
            ])
        #expect(
            try receiver.received(.records(journal: 1, [Self.record(3), Self.record(4)])) == [
                .append([Self.record(3), Self.record(4)])
            ])
        // Resent after a reconnect: 3-4 dropped, 5 taken.
        #expect(
            try receiver.received(.records(journal: 1, [Self.record(3), Self.record(4), Self.record(5)])) == [
                .append([Self.record(5)])
            ])
        #expect(receiver.duplicates == 2 && receiver.gaps == 1)
        #expect(
            try receiver.received(.records(journal: 1, [Self.record(4)])) == [
                .send(.acknowledged(journal: 1, through: 5))
            ])
        #expect(receiver.appendFailed(from: 5) == [.send(.resume(journal: 1, from: 5))])
        let failed = try receiver.received(.unavailable(journal: 1, requested: 5, oldest: 9))
        guard case .fail(let error) = failed.first else {
            Issue.record("no failure: \(failed)")
            return
        }
        #expect(error.code == .sourceUnavailable)
        #expect(throws: RecoveryError.self) { try receiver.received(.resume(journal: 1, from: 1)) }
    }

    /// A site's journal store over memory pools.
    final class Site: Sendable {
        let units = MemoryStoragePool(unitCapacity: 256 << 10, budget: 64 * (256 << 10))
        let bases = MemoryStoragePool(unitCapacity: JournalFormat.baseHeaderSize + (64 << 10), budget: 1 << 30)
        let configuration = JournalConfiguration(window: .seconds(3600), quota: 32, indexInterval: 8192)

        func store(clock: @escaping @Sendable () -> Instant) throws -> JournalStore {
            try JournalStore(journalPool: units, basePool: bases, clock: clock)
        }
    }

    static func waitUntil(_ condition: @Sendable () -> Bool) async throws {
        for _ in 0..<12_000 {
            if condition() { return }
            try await Task.sleep(for: .milliseconds(5))
        }
        Issue.record("the condition never held")
    }

    @Test func shipsAcrossACutLinkAndARestartedRecoverySiteWithoutGapOrDuplicate() async throws {
        let network = InMemoryNetwork()
        let protectedClock = NIOLockedValueBox(Instant(nanoseconds: 1_000))
        let protected = Site()
        let protectedStore = try protected.store { protectedClock.withLockedValue { $0 } }
        let source = try protectedStore.createJournal(1, configuration: protected.configuration, volumes: [1, 2])
        let recovery = Site()
        var shippedClock = ShippedClock(start: Instant(nanoseconds: 1_000))
        var recoveryStore = try recovery.store { [shippedClock] in shippedClock.now() }
        var replica = try recoveryStore.createJournal(1, configuration: recovery.configuration, volumes: [1, 2])

        let metrics = TestMetrics()
        let shipper = JournalShipper(
            journal: source, transport: network.join("protected"),
            configuration: .init(recoverySite: "recovery", acknowledgementTimeout: .milliseconds(50)),
            metricsFactory: metrics)
        let shipping = Task { await shipper.run() }
        var receiverTransport = network.join("recovery")
        var receiver = JournalReceiver(
            journal: replica, transport: receiverTransport, protectedSite: "protected", clock: shippedClock,
            metricsFactory: metrics)
        var receiving = Task { [receiver] in await receiver.run() }
        defer { shipping.cancel() }

        func appendBatch(_ index: Int) async throws {
            protectedClock.withLockedValue { $0 = $0 + .milliseconds(1) }
            try await source.append(
                contentsOf: (0..<4).map { part in
                    JournalWrite(
                        volume: VolumeID(UInt32(1 + part % 2)), offset: UInt64((index * 4 + part) * 100 % 60_000),
                        bytes: [UInt8](repeating: UInt8(truncatingIfNeeded: index * 4 + part), count: 100 + part))
                })
        }
        for index in 0..<50 { try await appendBatch(index) }
        try await Self.waitUntil { shipper.status.acknowledged == source.durableSequence }
        // The link goes down while writes go on; shipping resumes once it heals.
        network.cut(from: "protected", to: "recovery")
        for index in 50..<100 { try await appendBatch(index) }
        // The shipper has seen them and, hearing nothing back, greeted the site again before
        // the link heals.
        try await Self.waitUntil {
            shipper.status.durable == source.durableSequence && shipper.status.reconnects >= 1
        }
        network.heal()
        try await Self.waitUntil { shipper.status.acknowledged == source.durableSequence }
        // The recovery site restarts: its journal reopens and it resumes from what is durable there.
        receiving.cancel()
        await receiverTransport.close()
        _ = await receiving.value
        try recoveryStore.close()
        shippedClock = ShippedClock(start: Instant(nanoseconds: 1_000))
        recoveryStore = try recovery.store { [shippedClock] in shippedClock.now() }
        replica = try #require(recoveryStore.journal(1))
        for index in 100..<150 { try await appendBatch(index) }
        receiverTransport = network.join("recovery")
        receiver = JournalReceiver(
            journal: replica, transport: receiverTransport, protectedSite: "protected", clock: shippedClock,
            metricsFactory: metrics)
        receiving = Task { [receiver] in await receiver.run() }
        defer { receiving.cancel() }
        try await Self.waitUntil { shipper.status.acknowledged == source.durableSequence }
        #expect(shipper.status.recoveryPointObjective == .zero)
        #expect(shipper.status.reconnects >= 1)
        // The same figures as metrics: every record appended once across the two receivers.
        let journal = [("journal", "1")]
        #expect(try metrics.expectGauge("ft_dr_rpo_seconds", journal).lastValue == 0)
        #expect(
            try metrics.expectGauge("ft_dr_acknowledged_sequence", journal).lastValue == Double(source.durableSequence))
        #expect(try metrics.expectCounter("ft_dr_reconnects_total", journal).totalValue >= 1)
        #expect(
            try metrics.expectCounter("ft_dr_records_appended_total", journal).totalValue
                == Int64(source.durableSequence))

        // The same records, same sequence numbers and times, and so the same image at every instant.
        let end = protectedClock.withLockedValue { $0 }
        #expect(try replica.records(from: .zero, through: end) == source.records(from: .zero, through: end))
        for step in stride(from: 0, through: 150, by: 25) {
            let instant = Instant(nanoseconds: 1_000) + .milliseconds(step)
            for volume: VolumeID in [1, 2] {
                #expect(try replica.image(of: volume, at: instant) == source.image(of: volume, at: instant))
            }
        }
        try protectedStore.close()
        try recoveryStore.close()
    }
}
