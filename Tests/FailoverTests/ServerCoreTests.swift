import Failover
import FaultToleranceCore
import Testing

private func entry(_ epoch: UInt64, _ index: UInt64) -> ReplicationEntry {
    ReplicationEntry(
        position: LogPosition(epoch: epoch, index: index), client: 0, request: 0,
        operation: .put(key: "k", value: [UInt8(truncatingIfNeeded: epoch), UInt8(truncatingIfNeeded: index)]))
}

private func asksToCatchUp(_ effects: [ServerCore.Effect], to primary: NodeID) -> Bool {
    effects.contains { effect in
        if case .send(.catchUp, let target) = effect { return target == primary }
        return false
    }
}

@Suite struct ServerCoreTests {
    /// Simulation seed 3607: a backup whose tail diverged (entries of an old primary at indexes
    /// the new one wrote too) applied the new primary's next entries on top of it, and held a
    /// log that was neither's; its acknowledgements then counted for entries it lacked.
    @Test func aBackupAppliesEntriesOnlyOntoALogThatHoldsWhatTheyFollow() {
        var backup = ServerCore(
            node: "a", controller: "control", servers: ["a", "b", "c"],
            configuration: ServiceConfiguration(role: .backup, epoch: 0, host: "127.0.0.1", port: 1))
        let now = Instant(nanoseconds: 1_000_000)
        // Following "b" in epoch 1: two entries.
        #expect(
            asksToCatchUp(
                backup.receive(.replicate(epoch: 1, previous: .start, entries: []), from: "b", now: now), to: "b"))
        _ = backup.receive(
            .replicate(epoch: 1, previous: .start, entries: [entry(1, 1), entry(1, 2)]), from: "b", now: now)
        #expect(backup.store.position == LogPosition(epoch: 1, index: 2))
        // "c" is the primary of epoch 2; its log holds 1:1 then its own 2:2.
        #expect(
            asksToCatchUp(
                backup.receive(.replicate(epoch: 2, previous: .start, entries: []), from: "c", now: now), to: "c"))
        // Its next entry follows 2:2, which this log does not hold: nothing applied, ask.
        let streamed = backup.receive(
            .replicate(epoch: 2, previous: LogPosition(epoch: 2, index: 2), entries: [entry(2, 3)]), from: "c", now: now
        )
        #expect(asksToCatchUp(streamed, to: "c"))
        #expect(backup.store.position == LogPosition(epoch: 1, index: 2))
        // Overlapping entries that differ from this log's: nothing applied, ask.
        let overlapping = backup.receive(
            .replicate(epoch: 2, previous: LogPosition(epoch: 1, index: 1), entries: [entry(2, 2), entry(2, 3)]),
            from: "c", now: now)
        #expect(asksToCatchUp(overlapping, to: "c"))
        #expect(backup.store.position == LogPosition(epoch: 1, index: 2))
        // Entries that follow what this log holds are applied.
        _ = backup.receive(
            .replicate(epoch: 2, previous: LogPosition(epoch: 1, index: 2), entries: [entry(2, 3)]), from: "c", now: now
        )
        #expect(backup.store.position == LogPosition(epoch: 2, index: 3))
    }
}
