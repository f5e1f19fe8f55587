import Failover
import FaultToleranceCore
import NIOCore
import Testing

/// `ServerCore.batched`: what a server's runtime carries out when several events were decided
/// while it was busy. Fewer messages, the same outcome.
@Suite struct EffectBatchingTests {
    private func entry(_ epoch: UInt64, _ index: UInt64) -> ReplicationEntry {
        ReplicationEntry(
            position: LogPosition(epoch: epoch, index: index), client: 1, request: index,
            operation: .put(key: "k", value: [UInt8(truncatingIfNeeded: index)]))
    }

    private func replicate(_ indexes: ClosedRange<UInt64>, to server: NodeID, epoch: UInt64 = 2) -> ServerCore.Effect {
        .send(
            .replicate(
                epoch: epoch, previous: LogPosition(epoch: epoch, index: indexes.lowerBound - 1),
                entries: indexes.map { entry(epoch, $0) }), to: server)
    }

    private func acknowledge(_ index: UInt64, to primary: NodeID = "a", epoch: UInt64 = 2) -> ServerCore.Effect {
        .send(.replicated(epoch: epoch, position: LogPosition(epoch: epoch, index: index)), to: primary)
    }

    private func reply(to client: NodeID, request: UInt64) -> ServerCore.Effect {
        .send(.reply(client: 1, request: request, epoch: 2, outcome: .done(.applied)), to: client)
    }

    @Test func entriesForABackupThatContinueEachOtherLeaveInOneMessage() {
        let effects = [
            replicate(1...1, to: "b"), replicate(1...1, to: "c"), replicate(2...2, to: "b"), replicate(2...2, to: "c"),
            replicate(3...4, to: "b"),
        ]
        #expect(ServerCore.batched(effects, limit: 1024) == [replicate(1...4, to: "b"), replicate(1...2, to: "c")])
    }

    @Test func replicationMovesEarlierPastOtherServersMessagesAndJournalWritesButNeverPastItsOwn() {
        // Past a reply to a client and the primary's own journal write: merged.
        let past = [
            replicate(1...1, to: "b"), .journal(.entries([entry(2, 1)])), reply(to: "client", request: 0),
            replicate(2...2, to: "b"),
        ]
        #expect(
            ServerCore.batched(past, limit: 1024) == [
                replicate(1...2, to: "b"), .journal(.entries([entry(2, 1)])), reply(to: "client", request: 0),
            ])
        // A snapshot to the same backup between: kept apart, in order.
        let snapshot: ServerCore.Effect = .send(.snapshot(epoch: 2, chunk: ByteBuffer(), last: true), to: "b")
        let own = [replicate(1...1, to: "b"), snapshot, replicate(2...2, to: "b")]
        #expect(ServerCore.batched(own, limit: 1024) == own)
        // A step-down between: kept apart.
        let stepDown = [replicate(1...1, to: "b"), .releaseService, replicate(2...2, to: "b")]
        #expect(ServerCore.batched(stepDown, limit: 1024) == stepDown)
    }

    @Test func entriesThatDoNotContinueTheOpenMessageOrBreakItsLimitStartANewOne() {
        // A gap (2 is missing), another epoch, and the count limit.
        let gap = [replicate(1...1, to: "b"), replicate(3...3, to: "b")]
        #expect(ServerCore.batched(gap, limit: 1024) == gap)
        let epochs = [replicate(1...1, to: "b", epoch: 2), replicate(2...2, to: "b", epoch: 3)]
        #expect(ServerCore.batched(epochs, limit: 1024) == epochs)
        let many = [replicate(1...2, to: "b"), replicate(3...4, to: "b"), replicate(5...5, to: "b")]
        #expect(ServerCore.batched(many, limit: 4) == [replicate(1...4, to: "b"), replicate(5...5, to: "b")])
        // The byte bound: two entries of nearly 1 MiB each go in two messages.
        let large = StoreOperation.put(key: "big", value: [UInt8](repeating: 7, count: 700_000))
        let first = ReplicationEntry(position: LogPosition(epoch: 2, index: 1), client: 1, request: 1, operation: large)
        let second = ReplicationEntry(
            position: LogPosition(epoch: 2, index: 2), client: 1, request: 2, operation: large)
        let heavy: [ServerCore.Effect] = [
            .send(.replicate(epoch: 2, previous: LogPosition(epoch: 2, index: 0), entries: [first]), to: "b"),
            .send(.replicate(epoch: 2, previous: first.position, entries: [second]), to: "b"),
        ]
        #expect(ServerCore.batched(heavy, limit: 1024) == heavy)
    }

    @Test func anAcknowledgementIsDroppedOnlyWhenALaterOneSaysAsMuch() {
        // A backup's: journal, acknowledge, journal, acknowledge: one write, one acknowledgement.
        let journaled: [ServerCore.Effect] = [
            .journal(.entries([entry(2, 1)])), acknowledge(1), .journal(.entries([entry(2, 2), entry(2, 3)])),
            acknowledge(3),
        ]
        #expect(
            ServerCore.batched(journaled, limit: 1024) == [
                .journal(.entries([entry(2, 1), entry(2, 2), entry(2, 3)])), acknowledge(3),
            ])
        // Another message to the primary between, another epoch, or a lower position: both kept.
        let catchUp: ServerCore.Effect = .send(.catchUp(epoch: 2, after: LogPosition(epoch: 2, index: 1)), to: "a")
        for kept in [
            [acknowledge(1), catchUp, acknowledge(3)], [acknowledge(1, epoch: 2), acknowledge(1, epoch: 3)],
            [acknowledge(3), acknowledge(2)], [acknowledge(1, to: "a"), acknowledge(2, to: "b")],
        ] {
            #expect(ServerCore.batched(kept, limit: 1024) == kept)
        }
    }

    @Test func aJournalWriteNeverMovesPastAMessage() {
        // The acknowledgement between the writes stays (nothing later supersedes it), and so the
        // writes stay two: the first must be durable before that acknowledgement leaves.
        let effects: [ServerCore.Effect] = [
            .journal(.entries([entry(2, 1)])), acknowledge(1), .journal(.entries([entry(2, 2)])),
            reply(to: "client", request: 2),
        ]
        #expect(ServerCore.batched(effects, limit: 1024) == effects)
    }
}
