import DeterministicSimulation
import FaultToleranceCore
import Foundation
import LiveCopy
import Logging
import NIOCore
import Testing

@testable import Checkpointing

@Suite("Group checkpoints: messages, coordinator and member machines, the coordinator's record")
struct GroupProtocolTests {
    static let members: [NodeID] = ["a", "b", "c"]

    @Test func messagesRoundTripAndHostileBytesAreRefused() throws {
        let messages: [GroupMessage] = [
            .prepare(epoch: 1, full: false, lastCommitted: 0), .prepare(epoch: .max, full: true, lastCommitted: 7),
            .prepared(epoch: 9, checkpoint: CheckpointID(42)), .failed(epoch: 3, reason: "disk full: ünïcode"),
            .commit(epoch: 4), .abort(epoch: 5), .fate(epoch: 6),
        ]
        for message in messages {
            let wire = message.message(group: 77)
            let decoded = try GroupMessage.decode(wire)
            #expect(decoded.group == 77)
            #expect(decoded.message == message)
            // Every truncation and one extra byte are refused with a typed error.
            var bytes = Array(wire.payload.readableBytesView)
            for length in 0..<bytes.count {
                let short = Message(type: wire.type, payload: ByteBuffer(bytes: bytes[0..<length]))
                #expect(throws: CheckpointError.self) { try GroupMessage.decode(short) }
            }
            bytes.append(0)
            #expect(throws: CheckpointError.self) {
                try GroupMessage.decode(Message(type: wire.type, payload: ByteBuffer(bytes: bytes)))
            }
        }
        // A reason past the limit is cut on a character boundary, and still decodes.
        let long = GroupMessage.failed(epoch: 1, reason: String(repeating: "é", count: 400))
        let decoded = try GroupMessage.decode(long.message(group: 1))
        guard case .failed(_, let reason) = decoded.message else {
            Issue.record("not a failure: \(decoded)")
            return
        }
        #expect(reason.utf8.count == GroupMessage.maximumReasonBytes)
        #expect(reason.allSatisfy { $0 == "é" })
        // Wrong version, bad flags, a zero checkpoint id, a type outside the block.
        for (type, bytes) in [
            (UInt16(0x0301), [2] + [UInt8](repeating: 0, count: 17)),
            (0x0301, [1] + [UInt8](repeating: 0, count: 16) + [2]),
            (0x0302, [1] + [UInt8](repeating: 0, count: 24)),
            (0x0300, [1] + [UInt8](repeating: 0, count: 16)),
        ] {
            #expect(throws: CheckpointError.self) {
                try GroupMessage.decode(Message(type: type, payload: ByteBuffer(bytes: bytes)))
            }
        }
    }

    @Test func coordinatorCommitsOnlyWhenEveryMemberPreparedAndRecordsItFirst() throws {
        var coordinator = try GroupCoordinator(members: Self.members, epochTimeout: .seconds(5))
        let start = coordinator.start(now: .zero)
        #expect(start.first == .persist(.init(lastBegun: 1, lastCommitted: 0)))
        #expect(start.contains(.send(.prepare(epoch: 1, full: false, lastCommitted: 0), to: Self.members)))
        // A second start while one runs does nothing.
        #expect(coordinator.start(now: .zero).isEmpty)
        #expect(coordinator.receive(.prepared(epoch: 1, checkpoint: CheckpointID(10)), from: "a", now: .zero).isEmpty)
        // A late message about another epoch, and one from a stranger, change nothing.
        #expect(coordinator.receive(.prepared(epoch: 0, checkpoint: CheckpointID(1)), from: "b", now: .zero).isEmpty)
        #expect(coordinator.receive(.prepared(epoch: 1, checkpoint: CheckpointID(1)), from: "z", now: .zero).isEmpty)
        #expect(coordinator.receive(.prepared(epoch: 1, checkpoint: CheckpointID(11)), from: "b", now: .zero).isEmpty)
        let done = coordinator.receive(.prepared(epoch: 1, checkpoint: CheckpointID(12)), from: "c", now: .zero)
        #expect(done.first == .persist(.init(lastBegun: 1, lastCommitted: 1)))
        #expect(done.firstIndex(of: .send(.commit(epoch: 1), to: Self.members)) == 1)
        #expect(
            done.contains(
                .ended(epoch: 1, .committed(["a": CheckpointID(10), "b": CheckpointID(11), "c": CheckpointID(12)]))))
        // Fate: the last committed epoch is committed; anything else is aborted.
        #expect(coordinator.receive(.fate(epoch: 1), from: "b", now: .zero) == [.send(.commit(epoch: 1), to: ["b"])])
        #expect(coordinator.receive(.fate(epoch: 7), from: "b", now: .zero) == [.send(.abort(epoch: 7), to: ["b"])])
    }

    @Test func coordinatorAbortsOnFailureTimeoutOrAQuestionAboutTheEpochInProgress() throws {
        var coordinator = try GroupCoordinator(members: Self.members, epochTimeout: .seconds(5))
        _ = coordinator.start(now: .zero)
        let failed = coordinator.receive(.failed(epoch: 1, reason: "disk"), from: "b", now: .zero)
        #expect(failed.first == .send(.abort(epoch: 1), to: Self.members))
        #expect(coordinator.record == .init(lastBegun: 1, lastCommitted: 0))
        _ = coordinator.start(now: Instant.zero + .seconds(10))
        #expect(coordinator.tick(now: Instant.zero + .seconds(14)).isEmpty)
        let late = coordinator.tick(now: Instant.zero + .seconds(15))
        #expect(late.first == .send(.abort(epoch: 2), to: Self.members))
        _ = coordinator.start(now: Instant.zero + .seconds(20))
        _ = coordinator.receive(.prepared(epoch: 3, checkpoint: CheckpointID(5)), from: "a", now: .zero)
        // "a" was counted: its question waits for the decision. "b" was not: its checkpoint is
        // taken as lost, and the epoch aborts.
        #expect(coordinator.receive(.fate(epoch: 3), from: "a", now: .zero).isEmpty)
        let asked = coordinator.receive(.fate(epoch: 3), from: "b", now: .zero)
        #expect(asked.first == .send(.abort(epoch: 3), to: Self.members))
        #expect(coordinator.progress == nil)
        // Restarted from a record whose last epoch was begun and not committed: it is aborted.
        let restarted = try GroupCoordinator(
            members: Self.members, epochTimeout: .seconds(5), record: .init(lastBegun: 4, lastCommitted: 3))
        #expect(restarted.recover().first == .send(.abort(epoch: 4), to: Self.members))
        #expect(throws: CheckpointError.self) {
            try GroupCoordinator(members: ["a", "a"], epochTimeout: .seconds(1))
        }
        #expect(throws: CheckpointError.self) {
            try GroupCoordinator(
                members: ["a"], epochTimeout: .seconds(1), record: .init(lastBegun: 1, lastCommitted: 2))
        }
    }

    @Test func memberCapturesAnnouncesAndObeysTheDecision() throws {
        var member = try GroupMember(fateInterval: .seconds(1))
        let first = GroupMessage.prepare(epoch: 1, full: false, lastCommitted: 0)
        #expect(member.receive(first, now: .zero) == [.capture(epoch: 1, full: false)])
        // A duplicated prepare is stale.
        #expect(member.receive(first, now: .zero).isEmpty)
        let captured = member.captured(epoch: 1, checkpoint: CheckpointID(8), now: .zero)
        #expect(captured.first == .send(.prepared(epoch: 1, checkpoint: CheckpointID(8))))
        #expect(!member.isSettled)
        // The decision is late: the member announces its checkpoint again and asks.
        #expect(member.tick(now: Instant.zero + .milliseconds(999)).isEmpty)
        let asked = member.tick(now: Instant.zero + .seconds(1))
        #expect(asked.prefix(2) == [.send(.prepared(epoch: 1, checkpoint: CheckpointID(8))), .send(.fate(epoch: 1))])
        #expect(member.tick(now: Instant.zero + .milliseconds(1500)).isEmpty)
        #expect(member.receive(.commit(epoch: 1), now: .zero).first == .decide(CheckpointID(8), commit: true))
        #expect(member.isSettled)
        // A decision lost: the next epoch's prepare settles it (committed when it is the last
        // committed epoch, aborted when an older one is), then the capture starts.
        _ = member.receive(.prepare(epoch: 5, full: false, lastCommitted: 1), now: .zero)
        _ = member.captured(epoch: 5, checkpoint: CheckpointID(30), now: .zero)
        #expect(
            member.receive(.prepare(epoch: 6, full: false, lastCommitted: 5), now: .zero)
                == [.decide(CheckpointID(30), commit: true), .wake(at: nil), .capture(epoch: 6, full: false)])
        _ = member.captured(epoch: 6, checkpoint: CheckpointID(31), now: .zero)
        #expect(
            member.receive(.prepare(epoch: 7, full: false, lastCommitted: 5), now: .zero)
                == [.decide(CheckpointID(31), commit: false), .wake(at: nil), .capture(epoch: 7, full: false)])
        // A prepare while the last capture still runs: refused; the running one is discarded.
        let busy = member.receive(.prepare(epoch: 8, full: false, lastCommitted: 5), now: .zero)
        #expect(busy == [.send(.failed(epoch: 8, reason: "still capturing epoch 7"))])
        #expect(
            member.captured(epoch: 7, checkpoint: CheckpointID(32), now: .zero) == [
                .decide(CheckpointID(32), commit: false)
            ])
        // An abort while capturing discards the capture when it ends.
        let full = GroupMessage.prepare(epoch: 13, full: true, lastCommitted: 5)
        #expect(member.receive(full, now: .zero) == [.capture(epoch: 13, full: true)])
        #expect(member.receive(.abort(epoch: 13), now: .zero).isEmpty)
        #expect(
            member.captured(epoch: 13, checkpoint: CheckpointID(9), now: .zero) == [
                .decide(CheckpointID(9), commit: false)
            ])
        // A failed capture is reported.
        _ = member.receive(.prepare(epoch: 14, full: false, lastCommitted: 5), now: .zero)
        #expect(
            member.captureFailed(epoch: 14, reason: "budget", now: .zero) == [
                .send(.failed(epoch: 14, reason: "budget"))
            ])
    }

    @Test func restartedMemberAsksBeforeItSettlesUnlessTheBugIsPlanted() throws {
        var member = try GroupMember(fateInterval: .seconds(1), highestEpoch: 3, inDoubt: (5, CheckpointID(20)))
        #expect(member.highestEpoch == 5)
        #expect(!member.isSettled)
        #expect(
            member.start(now: .zero).prefix(2) == [
                .send(.prepared(epoch: 5, checkpoint: CheckpointID(20))), .send(.fate(epoch: 5)),
            ])
        #expect(member.receive(.abort(epoch: 4), now: .zero).isEmpty)
        #expect(member.receive(.commit(epoch: 5), now: .zero).first == .decide(CheckpointID(20), commit: true))
        var buggy = try GroupMember(fateInterval: .seconds(1), inDoubt: (5, CheckpointID(20)))
        buggy.bug = .forgetInDoubt
        #expect(buggy.start(now: .zero) == [.decide(CheckpointID(20), commit: false)])
    }

    @Test func coordinatorRecordSurvivesReopenAndATornSlot() throws {
        let unit = MemoryStorageUnit(id: UnitID(1), capacity: 8192)
        let log = try GroupCoordinatorLog(unit: unit, group: 3)
        #expect(log.record == .init())
        try log.write(.init(lastBegun: 1, lastCommitted: 0))
        try log.write(.init(lastBegun: 1, lastCommitted: 1))
        try log.write(.init(lastBegun: 2, lastCommitted: 1))
        #expect(try GroupCoordinatorLog(unit: unit, group: 3).record == .init(lastBegun: 2, lastCommitted: 1))
        // The newest slot torn: the one before it stands.
        let newest = 4096 * Int(3 % 2)
        try unit.write([0xFF, 0xFF], at: newest + 20)
        #expect(try GroupCoordinatorLog(unit: unit, group: 3).record == .init(lastBegun: 1, lastCommitted: 1))
        // Both damaged: an error naming the place.
        try unit.write([0xFF], at: 4096 - newest + 9)
        #expect {
            try GroupCoordinatorLog(unit: unit, group: 3)
        } throws: { error in
            (error as? CheckpointError)?.code == .damaged
        }
        // Another group's record is not taken for this one's.
        let other = MemoryStorageUnit(id: UnitID(2), capacity: 8192)
        try GroupCoordinatorLog(unit: other, group: 1).write(.init(lastBegun: 1, lastCommitted: 1))
        #expect(throws: CheckpointError.self) { try GroupCoordinatorLog(unit: other, group: 2) }
    }
}

@Suite("Group checkpoints: prepared checkpoints in the store")
struct PreparedCheckpointTests {
    @Test func preparedCheckpointsStayInDoubtAcrossReopenUntilDecided() throws {
        let app = try Application()
        var generator = SystemRandomNumberGenerator()
        try app.scribble(50, using: &generator)
        let base = try app.checkpointer.checkpointBlocking(epoch: 1)
        try app.scribble(10, using: &generator)
        let expected = try app.snapshot()
        let prepared = try app.checkpointer.prepareBlocking(epoch: 2)
        #expect(app.store.inDoubt.map(\.id) == [prepared.summary.id])
        #expect(app.store.checkpoints.map(\.id) == [base.summary.id])
        #expect(app.checkpointer.undecided == prepared.summary.id)
        // Nothing else is captured, merged or deleted while it is undecided.
        #expect(throws: CheckpointError.self) { try app.checkpointer.checkpointBlocking() }
        #expect(throws: CheckpointError.self) { try app.store.delete(prepared.summary.id) }
        // Reopened (a crash): still in doubt, restorable, and its chunks survive garbage collection.
        let reopened = try CheckpointStore.open(pool: app.pool)
        #expect(reopened.inDoubt.map(\.id) == [prepared.summary.id])
        _ = try reopened.collectGarbage()
        try reopened.decide(prepared.summary.id, commit: true)
        try reopened.decide(prepared.summary.id, commit: true)  // heard twice: nothing more
        let again = try CheckpointStore.open(pool: app.pool)
        #expect(again.inDoubt.isEmpty)
        #expect(again.checkpoints.map(\.id) == [base.summary.id, prepared.summary.id])
        var memory = [UInt8](repeating: 0, count: app.memory.byteCount)
        try memory.withUnsafeMutableBytes { try again.restore(prepared.summary.id, item: "heap", into: $0) }
        #expect(memory == expected.memory)
    }

    @Test func anAbortedEpochOwesItsPagesToTheNextCapture() throws {
        let app = try Application()
        var generator = SystemRandomNumberGenerator()
        try app.scribble(50, using: &generator)
        _ = try app.checkpointer.checkpointBlocking(epoch: 1)
        try app.scribble(10, using: &generator)
        let prepared = try app.checkpointer.prepareBlocking(epoch: 2)
        try app.checkpointer.decide(commit: false)
        #expect(app.store.inDoubt.isEmpty)
        #expect(throws: CheckpointError.self) { try app.store.summary(prepared.summary.id) }
        // The next incremental still holds the pages the aborted one took.
        let expected = try app.snapshot()
        let next = try app.checkpointer.checkpointBlocking(epoch: 3)
        #expect(try app.restored(next.summary.id) == expected)
        #expect(try CheckpointStore.open(pool: app.pool).inDoubt.isEmpty)
    }
}

/// The shipped runtimes on a simulated network, in virtual time.
@Suite("Group checkpoints: the coordinator and member services")
struct GroupServiceTests {
    struct Member {
        let node: NodeID
        let app: Application
        let service: GroupMemberService
    }

    static let silent = Logger(label: "test") { _ in SwiftLogNoOpLogHandler() }

    static func members(_ world: AsyncSimulation, attach: Set<NodeID>) throws -> [Member] {
        try ["a", "b", "c"].map { (node: NodeID) in
            let app = try Application(pages: 32)
            let service = GroupMemberService(
                group: 5, coordinator: "coordinator", peers: ["a", "b", "c"], store: app.store, application: "app",
                transport: world.network.transport(for: node), clock: world.clock, fateInterval: .seconds(1),
                markerTimeout: .milliseconds(500), holdLimit: .seconds(5),
                tickInterval: .milliseconds(20), logger: silent, blockingIO: .inline, bug: nil)
            if attach.contains(node) { service.attach(app.checkpointer) }
            return Member(node: node, app: app, service: service)
        }
    }

    @Test func everyMemberCommitsTheEpochOrNoneDoes() async throws {
        let world = AsyncSimulation(seed: 11, linkConditions: .init(delay: .milliseconds(1) ... .milliseconds(5)))
        let results = try await world.run(timeLimit: .seconds(120)) { () async throws -> [String] in
            // "c" is not attached: it refuses, so the second epoch aborts everywhere.
            let members = try Self.members(world, attach: ["a", "b", "c"])
            let log = try GroupCoordinatorLog(unit: MemoryStorageUnit(id: UnitID(1), capacity: 8192), group: 5)
            let coordinator = try GroupCoordinatorService(
                group: 5, members: ["a", "b", "c"], epochTimeout: .seconds(2), log: log,
                transport: world.network.transport(for: "coordinator"), clock: world.clock,
                tickInterval: .milliseconds(20), logger: Self.silent, blockingIO: .inline, bug: nil)
            let running =
                [world.spawn { try await coordinator.run() }]
                + members.map { member in
                    world.spawn { try await member.service.run() }
                }
            var outcomes: [String] = []
            let first = try await coordinator.checkpoint(full: true)
            outcomes.append("committed \(first.epoch) \(first.checkpoints.count)")
            // A member that dies before preparing: the epoch aborts after its timeout.
            world.network.crash("b")
            do {
                _ = try await coordinator.checkpoint()
                outcomes.append("committed")
            } catch let error as CheckpointError {
                outcomes.append("\(error.code)")
            }
            world.network.restart("b")
            let third = try await coordinator.checkpoint()
            outcomes.append("committed \(third.epoch) \(third.checkpoints.count)")
            // Give members a moment to hear the last commit (they ask if they did not).
            try? await world.clock.sleep(for: .seconds(3))
            for task in running { task.cancel() }
            for member in members {
                let epochs = member.app.store.checkpoints.map(\.epoch)
                outcomes.append("\(member.node): \(epochs) doubt \(member.app.store.inDoubt.count)")
            }
            return outcomes
        }
        #expect(results[0] == "committed 1 3")
        #expect(results[1] == "aborted")
        #expect(results[2] == "committed 3 3")
        #expect(results[3...] == ["a: [1, 3] doubt 0", "b: [1, 3] doubt 0", "c: [1, 3] doubt 0"])
    }
}

@Suite("Group restore at one epoch")
struct GroupRestoreTests {
    static func units(_ app: Application, fill: UInt8) throws -> [String: any StorageUnit] {
        let heap = MemoryStorageUnit(id: UnitID(1), capacity: app.memory.byteCount)
        let disk = MemoryStorageUnit(id: UnitID(2), capacity: app.volume.capacity)
        try heap.write([UInt8](repeating: fill, count: heap.capacity), at: 0)
        try disk.write([UInt8](repeating: fill, count: disk.capacity), at: 0)
        return ["heap": heap, "disk": disk]
    }

    static func bytes(_ units: [String: any StorageUnit]) throws -> (memory: [UInt8], volume: [UInt8]) {
        let heap = try #require(units["heap"])
        let disk = try #require(units["disk"])
        return (try heap.read(at: 0, count: heap.capacity), try disk.read(at: 0, count: disk.capacity))
    }

    @Test func everyMemberRestoresAtTheEpochOrNothingIsWritten() throws {
        var generator = SystemRandomNumberGenerator()
        let names = ["a", "b", "c"]
        let apps = try Dictionary(uniqueKeysWithValues: names.map { ($0, try Application(application: $0, pages: 32)) })
        var cuts: [String: [UInt64: (memory: [UInt8], volume: [UInt8])]] = [:]
        for epoch in UInt64(1)...3 {
            for name in names {
                let app = try #require(apps[name])
                try app.scribble(20, using: &generator)
                // c's checkpoint of epoch 2 is gone (as if its own retention had pruned it).
                if name == "c" && epoch == 2 { continue }
                cuts[name, default: [:]][epoch] = try app.snapshot()
                _ = try app.checkpointer.checkpointBlocking(epoch: epoch, full: epoch == 1)
            }
        }
        // Epoch 4 is prepared at c only, and not decided there.
        _ = try #require(apps["c"]).checkpointer.prepareBlocking(epoch: 4, full: false)
        let stores = apps.mapValues(\.store)
        #expect(GroupRestore.commonEpochs(stores) == [1, 3])

        var destinations = try apps.mapValues { try Self.units($0, fill: 0xEE) }
        var calls: [(Int, Int)] = []
        let restored = try GroupRestore.restore(epoch: 3, stores: stores, into: destinations) { calls.append(($0, $1)) }
        #expect(Set(restored.keys) == Set(names))
        #expect(calls.map(\.0) == Array(0...6) && calls.allSatisfy { $0.1 == 6 })
        for name in names {
            let expected = try #require(cuts[name]?[3])
            let got = try Self.bytes(try #require(destinations[name]))
            #expect(got.memory == expected.memory && got.volume == expected.volume, "\(name) at epoch 3")
        }

        // Epoch 2 is missing at c, epoch 4 is in doubt there, epoch 9 is nowhere: nothing written.
        destinations = try apps.mapValues { try Self.units($0, fill: 0xEE) }
        for (epoch, mention) in [(UInt64(2), "c"), (4, "in doubt"), (9, "a, b, c")] {
            #expect {
                try GroupRestore.restore(epoch: epoch, stores: stores, into: destinations)
            } throws: { error in
                let failure = error as? CheckpointError
                return failure?.code == .unknownCheckpoint && failure?.detail?.contains(mention) == true
            }
        }
        // An item one member's checkpoint lacks, or a unit too small: nothing written either.
        var wrong = destinations
        wrong["b"]?["swap"] = MemoryStorageUnit(id: UnitID(3), capacity: 4096)
        #expect(throws: CheckpointError.self) { try GroupRestore.restore(epoch: 1, stores: stores, into: wrong) }
        wrong = destinations
        wrong["c"]?["disk"] = MemoryStorageUnit(id: UnitID(4), capacity: 512)
        #expect(throws: CheckpointError.self) { try GroupRestore.restore(epoch: 1, stores: stores, into: wrong) }
        wrong = destinations
        wrong["d"] = [:]
        #expect(throws: CheckpointError.self) { try GroupRestore.restore(epoch: 1, stores: stores, into: wrong) }
        for name in names {
            let untouched = try Self.bytes(try #require(destinations[name]))
            #expect(untouched.memory.allSatisfy { $0 == 0xEE } && untouched.volume.allSatisfy { $0 == 0xEE })
        }
        #expect(throws: CheckpointError.self) { try GroupRestore.checkpoints(atEpoch: 1, in: [:]) }
    }
}
