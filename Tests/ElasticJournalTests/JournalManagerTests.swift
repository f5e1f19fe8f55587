import ElasticJournal
import FaultToleranceCore
import Testing

@Suite struct JournalManagerTests {
    private func span(_ unit: UInt64, _ first: UInt64, _ last: UInt64, _ from: Int64, _ to: Int64)
        -> JournalManager.UnitSpan
    {
        JournalManager.UnitSpan(
            unit: UnitID(unit), firstSequence: first, lastSequence: last, firstTime: Instant(nanoseconds: from),
            lastTime: Instant(nanoseconds: to))
    }

    @Test func unitsAgeOutOnlyWhenEveryRecordLeftTheWindowAndNeverTheActiveOne() {
        var manager = JournalManager(poolCapacity: 10)
        manager.addJournal(
            1, policy: .init(window: .nanoseconds(100), quota: 10),
            units: [span(1, 1, 10, 0, 50), span(2, 11, 20, 50, 120), span(3, 21, 25, 120, 130)], windowStart: .zero)
        #expect(manager.expired(journal: 1, now: Instant(nanoseconds: 150)).isEmpty)  // unit 1 ends at 50 = horizon
        let due = manager.expired(journal: 1, now: Instant(nanoseconds: 151))
        #expect(due.map(\.unit) == [UnitID(1)])
        #expect(due.first?.applyThrough == 10)
        #expect(due.first?.reason == .aged)
        #expect(manager.expired(journal: 1, now: Instant(nanoseconds: 151)).isEmpty)  // already releasing
        manager.released(journal: 1, unit: UnitID(1))
        #expect(manager.windowStart(of: 1) == Instant(nanoseconds: 50))
        // Even far in the future the active unit stays.
        #expect(manager.expired(journal: 1, now: Instant(nanoseconds: 10_000)).map(\.unit) == [UnitID(2)])
    }

    @Test func quotaDropsTheOldestEarlyAndSaysSo() {
        var manager = JournalManager(poolCapacity: 10)
        manager.addJournal(
            1, policy: .init(window: .seconds(3600), quota: 2),
            units: [span(1, 1, 10, 0, 50), span(2, 11, 20, 50, 120)], windowStart: .zero)
        guard case .allocate(let drops, let expiring) = manager.planRollover(journal: 1, now: Instant(nanoseconds: 200))
        else {
            Issue.record("expected an allocation")
            return
        }
        #expect(drops.map(\.unit) == [UnitID(1)])
        #expect(drops.first?.reason == .quota)
        #expect(expiring.isEmpty)
        manager.released(journal: 1, unit: UnitID(1))
        #expect(manager.earlyDrops(of: 1) == 1)
        #expect(manager.effectiveWindow(journal: 1, now: Instant(nanoseconds: 200)) == .nanoseconds(150))
    }

    /// Units past the window go apart from the room a rollover needs: the appender who rolls
    /// over ages out only what makes room, and a unit that was both goes as aged, not early.
    @Test func aRolloverAgesOutOnlyWhatMakesRoomAndHandsBackTheExpiredRest() {
        var manager = JournalManager(poolCapacity: 10)
        manager.addJournal(
            1, policy: .init(window: .nanoseconds(100), quota: 8),
            units: [span(1, 1, 10, 0, 50), span(2, 11, 20, 50, 60), span(3, 21, 30, 60, 500)], windowStart: .zero)
        // At 200 units 1 and 2 are past the window (their newest records are older than 100);
        // there is room: nothing to drop first, both to age out after.
        guard case .allocate(let drops, let expiring) = manager.planRollover(journal: 1, now: Instant(nanoseconds: 200))
        else {
            Issue.record("expected an allocation")
            return
        }
        #expect(drops.isEmpty)
        #expect(expiring.map(\.unit) == [UnitID(1), UnitID(2)])
        #expect(expiring.allSatisfy { $0.reason == .aged })
        // Marked as releasing: maintenance does not age them out again.
        #expect(manager.expired(journal: 1, now: Instant(nanoseconds: 200)).isEmpty)

        // At its quota, the oldest unit makes room; it is past the window, so it goes as aged.
        var full = JournalManager(poolCapacity: 10)
        full.addJournal(
            1, policy: .init(window: .nanoseconds(100), quota: 3),
            units: [span(1, 1, 10, 0, 50), span(2, 11, 20, 50, 60), span(3, 21, 30, 60, 500)], windowStart: .zero)
        guard case .allocate(let room, let rest) = full.planRollover(journal: 1, now: Instant(nanoseconds: 200)) else {
            Issue.record("expected an allocation")
            return
        }
        #expect(room.map(\.unit) == [UnitID(1)])
        #expect(room.first?.reason == .aged)
        #expect(rest.map(\.unit) == [UnitID(2)])
        full.released(journal: 1, unit: UnitID(1))
        #expect(full.earlyDrops(of: 1) == 0)
    }

    @Test func exhaustedPoolWaitsForAnotherJournalThenRejects() {
        var manager = JournalManager(poolCapacity: 3)
        manager.addJournal(
            1, policy: .init(window: .seconds(1), quota: 8),
            units: [span(1, 1, 10, 0, 50), span(2, 11, 20, 50, 60)], windowStart: .zero)
        manager.addJournal(
            2, policy: .init(window: .seconds(1), quota: 8), units: [span(3, 1, 1, 0, 0)], windowStart: .zero)
        // Journal 2 has nothing of its own to drop; nobody is releasing: reject.
        guard case .reject = manager.planRollover(journal: 2, now: Instant(nanoseconds: 70)) else {
            Issue.record("expected a rejection")
            return
        }
        // Journal 1 is releasing a unit (pool exhaustion drops its own oldest): journal 2 waits.
        guard case .allocate(let drops, _) = manager.planRollover(journal: 1, now: Instant(nanoseconds: 70)) else {
            Issue.record("expected an allocation")
            return
        }
        #expect(drops.map(\.reason) == [.poolExhausted])
        #expect(manager.planRollover(journal: 2, now: Instant(nanoseconds: 70)) == .wait)
    }
}
