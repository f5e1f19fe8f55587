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

/// A primary and one backup wired by hand, so a test decides which messages arrive.
struct HandWiredPair {
    var cores: [NodeID: ServerCore] = [:]
    var now = Instant(nanoseconds: 1_000_000)

    init(settings: ServerCore.Settings) {
        for node: NodeID in ["a", "b"] { cores[node] = Self.fresh(node, settings: settings) }
    }

    static func fresh(_ node: NodeID, settings: ServerCore.Settings) -> ServerCore {
        ServerCore(
            node: node, controller: "control", servers: ["a", "b"],
            configuration: ServiceConfiguration(role: .backup, epoch: 0, host: "127.0.0.1", port: 1),
            settings: settings, incarnation: .random(in: 1...UInt64.max))
    }

    /// Delivers `effects` from `sender` and everything they cause between the two servers,
    /// dropping what `drop` picks; returns what the servers sent, in order.
    @discardableResult
    mutating func deliver(
        _ effects: [ServerCore.Effect], from sender: NodeID, drop: (FailoverMessage, NodeID) -> Bool = { _, _ in false }
    ) -> [(FailoverMessage, NodeID)] {
        var queue = effects.map { (sender, $0) }
        var sent: [(FailoverMessage, NodeID)] = []
        while !queue.isEmpty {
            let (from, effect) = queue.removeFirst()
            guard case .send(let message, let target) = effect else { continue }
            sent.append((message, target))
            guard cores[target] != nil, !drop(message, target) else { continue }
            let caused = cores[target]?.receive(message, from: from, now: now) ?? []
            queue += caused.map { (target, $0) }
        }
        return sent
    }
}

@Suite struct BackupBackEmptyTests {
    /// Simulation seed 68: a backup came back empty and its request to catch up was lost. Its
    /// answers to the primary's beats (position 0) asked for entries the primary's log no longer
    /// held, and the primary sent nothing: it must send its whole state instead.
    @Test func aBackupBackEmptyGetsASnapshotWhenTheLogNoLongerReachesBack() {
        let settings = ServerCore.Settings(logEntries: 2)
        var pair = HandWiredPair(settings: settings)
        var effects =
            pair.cores["a"]?.receive(.promote(epoch: 1, syncSet: [], minimum: .start), from: "control", now: pair.now)
            ?? []
        effects +=
            pair.cores["a"]?.receive(
                .renewLease(epoch: 1, duration: .seconds(60), stamp: pair.now.nanoseconds, syncSet: ["b"]),
                from: "control",
                now: pair.now) ?? []
        pair.deliver(effects, from: "a")
        for request: UInt64 in 1...5 {
            let put = FailoverMessage.request(
                client: 7, request: request, epoch: 1, operation: .put(key: StoreKey("k\(request)") ?? "k", value: [1]))
            pair.deliver(pair.cores["a"]?.receive(put, from: "client", now: pair.now) ?? [], from: "a")
        }
        #expect(pair.cores["b"]?.store.position == pair.cores["a"]?.store.position)
        // "b" comes back empty; the first beat makes it ask to catch up, and that is lost.
        pair.cores["b"] = HandWiredPair.fresh("b", settings: settings)
        pair.now = pair.now + .milliseconds(20)
        pair.deliver(pair.cores["a"]?.tick(now: pair.now) ?? [], from: "a") { message, _ in
            if case .catchUp = message { true } else { false }
        }
        #expect(pair.cores["b"]?.store.position == .start)
        // The next beat's answer (position 0) must bring the whole state.
        pair.now = pair.now + .milliseconds(40)
        let sent = pair.deliver(pair.cores["a"]?.tick(now: pair.now) ?? [], from: "a")
        #expect(
            sent.contains { message, target in
                if case .snapshot = message { target == "b" } else { false }
            })
        #expect(pair.cores["b"]?.store.position == pair.cores["a"]?.store.position)
    }
}

/// Asynchronous replication's bound on what a failover loses: with a minimum sync set, the
/// primary acknowledges at once only while the sync set trails by less than the lag bound.
@Suite struct AsynchronousLossBoundTests {
    /// A pair "a" (primary of epoch 1, "b" in its granted sync set) and "b", caught up.
    static func servingPair(_ settings: ServerCore.Settings) -> HandWiredPair {
        var pair = HandWiredPair(settings: settings)
        var effects =
            pair.cores["a"]?.receive(.promote(epoch: 1, syncSet: [], minimum: .start), from: "control", now: pair.now)
            ?? []
        pair.deliver(effects, from: "a")
        effects =
            pair.cores["a"]?.receive(
                .renewLease(epoch: 1, duration: .seconds(60), stamp: pair.now.nanoseconds, syncSet: ["b"]),
                from: "control", now: pair.now) ?? []
        pair.deliver(effects, from: "a")
        return pair
    }

    /// Writes `count` puts from a client while nothing reaches "b"; returns the outcomes the
    /// client was sent.
    static func writeWhileBackupAway(_ pair: inout HandWiredPair, count: UInt64, from first: UInt64 = 1)
        -> [FailoverMessage.Outcome]
    {
        var outcomes: [FailoverMessage.Outcome] = []
        for request in first..<(first + count) {
            let put = FailoverMessage.request(
                client: 7, request: request, epoch: 1, operation: .put(key: StoreKey("k\(request)") ?? "k", value: [1]))
            let sent = pair.deliver(pair.cores["a"]?.receive(put, from: "client", now: pair.now) ?? [], from: "a") {
                _, target in target == "b"
            }
            for case (.reply(_, _, _, let outcome), "client") in sent { outcomes.append(outcome) }
        }
        return outcomes
    }

    static func done(_ outcomes: [FailoverMessage.Outcome]) -> Int {
        outcomes.filter { if case .done = $0 { true } else { false } }.count
    }

    @Test func writersWaitOnceTheSyncSetTrailsByTheBoundAndGoOnWhenItCatchesUp() {
        var pair = Self.servingPair(ServerCore.Settings(mode: .asynchronous(maximumLag: 3)))
        #expect(pair.cores["a"]?.syncSet == ["b"])
        // "b" hears nothing: three writes are acknowledged at once, the fourth waits.
        let outcomes = Self.writeWhileBackupAway(&pair, count: 4)
        #expect(Self.done(outcomes) == 3)
        #expect(outcomes.count == 3)
        // "b" hears from the primary again (its next beat) and catches up: the held write is
        // applied and acknowledged.
        pair.now = pair.now + .milliseconds(40)
        let sent = pair.deliver(pair.cores["a"]?.tick(now: pair.now) ?? [], from: "a")
        let late = sent.filter { if case (.reply(_, 4, _, .done), "client") = $0 { true } else { false } }
        #expect(late.count == 1)
        #expect(pair.cores["b"]?.store.position == pair.cores["a"]?.store.position)
    }

    @Test func withTheRefusingPolicyWritersBeyondTheBoundAreRefused() {
        var pair = Self.servingPair(ServerCore.Settings(mode: .asynchronous(maximumLag: 3), waitWhenLagging: false))
        let outcomes = Self.writeWhileBackupAway(&pair, count: 5)
        #expect(Self.done(outcomes) == 3)
        let refused = outcomes.filter { if case .refused(.lagExceeded, _) = $0 { true } else { false } }
        #expect(refused.count == 2)
    }

    @Test(arguments: [0, 1])
    func aPrimaryWhoseBackupNeverCaughtUpAcknowledgesOnlyWithoutAMinimumSyncSet(minimum: Int) {
        let settings = ServerCore.Settings(mode: .asynchronous(maximumLag: 3), minimumSyncBackups: minimum)
        var pair = HandWiredPair(settings: settings)
        let promotion: [FailoverMessage] = [
            .promote(epoch: 1, syncSet: [], minimum: .start),
            .renewLease(epoch: 1, duration: .seconds(60), stamp: pair.now.nanoseconds, syncSet: []),
        ]
        for message in promotion {
            pair.deliver(pair.cores["a"]?.receive(message, from: "control", now: pair.now) ?? [], from: "a") {
                _, target in target == "b"
            }
        }
        // Nothing counts against the bound: without a minimum every write is acknowledged (a
        // failover now loses them all); with one, none is until a backup has caught up.
        let outcomes = Self.writeWhileBackupAway(&pair, count: 10)
        #expect(Self.done(outcomes) == (minimum == 0 ? 10 : 0))
    }

    @Test func aSyncSetThatIsTooSmallHoldsEveryWriter() {
        var pair = Self.servingPair(ServerCore.Settings(mode: .asynchronous(maximumLag: 3)))
        // The controller released "b" (dead): the sync set is below its minimum of one.
        pair.deliver(
            pair.cores["a"]?.receive(.releaseBackup(epoch: 1, backup: "b"), from: "control", now: pair.now) ?? [],
            from: "a")
        #expect(pair.cores["a"]?.syncSet == [])
        let outcomes = Self.writeWhileBackupAway(&pair, count: 2)
        #expect(outcomes.isEmpty)
    }
}

/// Two mistakes simulation seeds of CI's window 1978600001 found.
@Suite struct AnswersAndDivergedBackupsTests {
    static func put(_ request: UInt64, _ value: UInt8, epoch: UInt64 = 1) -> FailoverMessage {
        .request(client: 7, request: request, epoch: epoch, operation: .put(key: "k", value: [value]))
    }

    /// Seed 1978600087 (`--journal`): a read waited for what was applied when it arrived, then
    /// answered with the key's value when it went out, from a compare-and-set applied since and
    /// not yet acknowledged; a failover took that write back, and the client had seen it.
    @Test func aReadAnswersTheValueItFoundNotALaterUnacknowledgedWrite() {
        var pair = AsynchronousLossBoundTests.servingPair(ServerCore.Settings())
        pair.deliver(pair.cores["a"]?.receive(Self.put(1, 1), from: "client", now: pair.now) ?? [], from: "a")
        #expect(pair.cores["b"]?.store["k"] == [1])
        // "b" hears nothing now: a write, a read of its key, a second write.
        let away: (FailoverMessage, NodeID) -> Bool = { _, target in target == "b" }
        pair.deliver(
            pair.cores["a"]?.receive(Self.put(2, 2), from: "client", now: pair.now) ?? [], from: "a", drop: away)
        guard let readAt = pair.cores["a"]?.store.position else {
            Issue.record("no primary")
            return
        }
        let read = FailoverMessage.read(client: 8, request: 1, epoch: 1, key: "k")
        var sent = pair.deliver(
            pair.cores["a"]?.receive(read, from: "reader", now: pair.now) ?? [], from: "a", drop: away)
        #expect(!sent.contains { $0.1 == "reader" })
        pair.deliver(
            pair.cores["a"]?.receive(Self.put(3, 3), from: "client", now: pair.now) ?? [], from: "a", drop: away)
        // "b" acknowledges what was there when the read arrived, not the write after it.
        sent = pair.deliver(
            pair.cores["a"]?.receive(.replicated(epoch: 1, position: readAt), from: "b", now: pair.now) ?? [],
            from: "a", drop: away)
        let answers = sent.compactMap { message, target -> [UInt8]?? in
            if case .readReply(_, _, _, let value, nil) = message, target == "reader" { value } else { nil }
        }
        #expect(answers == [[2]])
    }

    /// Seed 1978600044 (`--maximum-lag 8`): a backup held entries of an old primary beyond the
    /// new primary's last index. Its request to catch up brought a snapshot, which was lost; its
    /// positions, past the end of the primary's log, were then ignored for ever, and the pair
    /// ended with the backup's state apart from the primary's.
    @Test func aBackupWhoseTailRunsPastThePrimarysEndGetsTheSnapshotAgainWhenItIsLost() {
        let settings = ServerCore.Settings(mode: .asynchronous(maximumLag: 8))
        var pair = AsynchronousLossBoundTests.servingPair(settings)
        for request: UInt64 in 1...2 {
            pair.deliver(pair.cores["a"]?.receive(Self.put(request, 1), from: "client", now: pair.now) ?? [], from: "a")
        }
        // "a" dies; "b" serves epoch 2 and writes what "a" never hears.
        pair.cores["a"] = HandWiredPair.fresh("a", settings: settings)
        let away: (FailoverMessage, NodeID) -> Bool = { _, target in target == "a" }
        for message: FailoverMessage in [
            .promote(epoch: 2, syncSet: [], minimum: .start),
            .renewLease(epoch: 2, duration: .seconds(60), stamp: pair.now.nanoseconds, syncSet: []),
        ] {
            pair.deliver(pair.cores["b"]?.receive(message, from: "control", now: pair.now) ?? [], from: "b", drop: away)
        }
        for request: UInt64 in 3...12 {
            pair.deliver(
                pair.cores["b"]?.receive(Self.put(request, 2, epoch: 2), from: "client", now: pair.now) ?? [],
                from: "b", drop: away)
        }
        // "a", back empty, is promoted in epoch 3: "b" is far past its end, and the snapshot
        // its request to catch up brings is lost.
        let promoted =
            pair.cores["a"]?.receive(.promote(epoch: 3, syncSet: [], minimum: .start), from: "control", now: pair.now)
            ?? []
        pair.deliver(promoted, from: "a") { message, _ in
            if case .snapshot = message { true } else { false }
        }
        guard let primary = pair.cores["a"]?.store.position, let backup = pair.cores["b"]?.store.position else {
            Issue.record("a server is missing")
            return
        }
        #expect(backup.index > primary.index)
        #expect(pair.cores["b"]?.role == .backup)
        // The primary's beats a while later: the backup's answer must bring the state again.
        pair.now = pair.now + .milliseconds(40)
        pair.deliver(pair.cores["a"]?.tick(now: pair.now) ?? [], from: "a")
        #expect(pair.cores["b"]?.store.position == pair.cores["a"]?.store.position)
        #expect(pair.cores["b"]?.store.snapshot() == pair.cores["a"]?.store.snapshot())
    }
}
