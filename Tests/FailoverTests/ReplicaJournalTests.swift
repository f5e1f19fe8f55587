import DeterministicSimulation
import Failover
import FaultToleranceCore
import Foundation
import NIOCore
import Testing

@Suite struct ReplicaJournalTests {
    /// Entries 1...count of epoch 1, each a put of its own key, applied to `store`.
    static func entries(_ range: ClosedRange<UInt64>, onto store: inout ReplicatedStore) -> [ReplicationEntry] {
        range.compactMap { index in
            try? store.execute(
                .put(key: StoreKey("k\(index)") ?? "k", value: Array(repeating: UInt8(index & 0xff), count: 40)),
                client: 1, request: index, epoch: 1
            ).entry
        }
    }

    /// Runs `body` with a journal in a fresh temporary directory (removed after) and `count`
    /// entries made on `store`.
    static func withJournal(
        entries count: UInt64,
        _ body: (_ journal: FileReplicaJournal, _ entries: [ReplicationEntry]) async throws -> Void
    ) async throws {
        let directory = NSTemporaryDirectory() + "replica-journal-\(UInt64.random(in: 1...UInt64.max))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var store = ReplicatedStore()
        try await body(try FileReplicaJournal(directory: directory), count == 0 ? [] : entries(1...count, onto: &store))
    }

    /// The same journal's file, opened again.
    static func reopened(_ journal: FileReplicaJournal) throws -> FileReplicaJournal {
        try FileReplicaJournal(directory: (journal.path as NSString).deletingLastPathComponent)
    }

    @Test func committedWritesComeBackAfterAReopenAndASnapshotReplacesWhatCameBefore() async throws {
        let directory = NSTemporaryDirectory() + "replica-journal-\(UInt64.random(in: 1...UInt64.max))"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var store = ReplicatedStore()
        let first = Self.entries(1...5, onto: &store)
        let journal = try FileReplicaJournal(directory: directory)
        _ = try await journal.recover()
        try await journal.write(.entries(first))
        let snapshot = store.snapshot()
        try await journal.write(.snapshot(snapshot))
        let later = Self.entries(6...9, onto: &store)
        try await journal.write(.entries(Array(later[0..<2])))
        try await journal.write(.entries(Array(later[2...])))

        let reopened = try await FileReplicaJournal(directory: directory).recover()
        #expect(reopened.snapshot == snapshot)
        #expect(reopened.entries == later)
        #expect(reopened.droppedBytes == 0)
        var restored = ServerCore(
            node: "b", controller: "control", servers: ["a", "b"],
            configuration: ServiceConfiguration(role: .backup, epoch: 0, host: "127.0.0.1", port: 1))
        try restored.restore(reopened)
        #expect(restored.store.snapshot() == store.snapshot())
    }

    @Test func anUnfinishedLastWriteIsCutOffAndTheJournalGoesOn() async throws {
        try await Self.withJournal(entries: 6) { journal, entries in
            try await journal.write(.entries(Array(entries[0..<3])))
            let committed = try FileManager.default.attributesOfItem(atPath: journal.path)[.size] as? Int ?? 0
            try await journal.write(.entries(Array(entries[3...])))
            // The power fails in the middle of the second write: half of it reached the disk.
            let whole = try Data(contentsOf: URL(fileURLWithPath: journal.path))
            let torn = committed + (whole.count - committed) / 2
            try whole.prefix(torn).write(to: URL(fileURLWithPath: journal.path))

            let again = try Self.reopened(journal)
            let recovered = try await again.recover()
            #expect(recovered.entries == Array(entries[0..<3]))
            #expect(recovered.droppedBytes == torn - committed)
            // The cut tail is gone from the file, and writing goes on after the last commit.
            try await again.write(.entries(Array(entries[3...])))
            #expect(try await Self.reopened(journal).recover().entries == entries)
        }
    }

    @Test func aWriteWithoutARecoveryFirstStillCutsAnUnfinishedWrite() async throws {
        try await Self.withJournal(entries: 4) { journal, entries in
            try await journal.write(.entries(Array(entries[0..<2])))
            // Half a frame after the last commit, and a new journal that writes without recovering.
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: journal.path))
            handle.seekToEndOfFile()
            handle.write(Data(Array(entries[2].framed().readableBytesView).prefix(20)))
            try handle.close()
            try await Self.reopened(journal).write(.entries(Array(entries[2...])))
            #expect(try await Self.reopened(journal).recover().entries == entries)
        }
    }

    @Test func damageBeforeACommittedWriteIsRefusedNotDropped() async throws {
        try await Self.withJournal(entries: 6) { journal, entries in
            // The identity's write, then the entries'.
            _ = try await journal.recover()
            let start = try FileManager.default.attributesOfItem(atPath: journal.path)[.size] as? Int ?? 0
            try await journal.write(.entries(Array(entries[0..<3])))
            try await journal.write(.entries(Array(entries[3...])))
            var bytes = try Data(contentsOf: URL(fileURLWithPath: journal.path))
            bytes[start + Frame.headerSize + 20] ^= 0x40  // inside the first entry
            try bytes.write(to: URL(fileURLWithPath: journal.path))
            await #expect(throws: FailoverError.self) { _ = try await Self.reopened(journal).recover() }
        }
    }

    /// The fuzz corpus's journal files (written by hand to the documented layout) decode: the
    /// format and its documentation agree, and the fuzzer starts from valid journals.
    @Test func theFuzzCorpusJournalsDecodeAsDocumented() throws {
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("FuzzTesting/Corpus/FailoverMessages")
        let whole = try Data(contentsOf: corpus.appendingPathComponent("journal")).dropFirst()
        let recovered = try FileReplicaJournal.decode(ByteBuffer(bytes: whole))
        #expect(recovered.entries.map(\.position.index) == [1, 2, 3])
        #expect(recovered.droppedBytes == 0)
        let torn = try Data(contentsOf: corpus.appendingPathComponent("journal-torn")).dropFirst()
        let cut = try FileReplicaJournal.decode(ByteBuffer(bytes: torn))
        #expect(cut.entries == recovered.entries)
        #expect(cut.droppedBytes == torn.count - whole.count)
        #expect(recovered.identity == nil)
        // The same entries after a write naming the journal.
        let named = try Data(contentsOf: corpus.appendingPathComponent("journal-identity")).dropFirst()
        let identified = try FileReplicaJournal.decode(ByteBuffer(bytes: named))
        #expect(identified.identity == 0x0123_4567_89ab_cdef)
        #expect(identified.entries == recovered.entries)
    }

    @Test func anEmptyOrMissingJournalRecoversNothing() async throws {
        try await Self.withJournal(entries: 0) { journal, _ in
            let recovered = try await journal.recover()
            #expect(recovered.snapshot == nil)
            #expect(recovered.entries.isEmpty)
        }
    }

    @Test func aJournalKeepsItsIdentityWithItsDataAndANewOneGetsAnother() async throws {
        try await Self.withJournal(entries: 4) { journal, entries in
            let identity = try #require(try await journal.recover().identity)
            try await journal.write(.entries(Array(entries[0..<2])))
            #expect(try await Self.reopened(journal).recover().identity == identity)
            // A snapshot replaces the file: the identity goes with it.
            var store = ReplicatedStore()
            _ = Self.entries(1...2, onto: &store)
            try await journal.write(.snapshot(store.snapshot()))
            try await journal.write(.entries(Array(entries[2...])))
            let reopened = try await Self.reopened(journal).recover()
            #expect(reopened.identity == identity)
            #expect(reopened.entries == Array(entries[2...]))
            // The disk replaced: a new journal in the same place is another.
            try FileManager.default.removeItem(atPath: journal.path)
            let replaced = try await Self.reopened(journal).recover()
            #expect(replaced.identity != nil && replaced.identity != identity)
            #expect(replaced.entries.isEmpty)
        }
    }

    @Test func aJournalWrittenBeforeIdentitiesGetsOneAndKeepsItsEntries() async throws {
        try await Self.withJournal(entries: 3) { journal, entries in
            // The old layout: entries and a commit, no identity.
            var bytes = ByteBuffer()
            for entry in entries {
                var frame = entry.framed()
                bytes.writeBuffer(&frame)
            }
            var commit = ByteBuffer()
            commit.writeInteger(UInt8(1))
            commit.writeInteger(UInt32(entries.count), endianness: .little)
            Frame(type: 0x0631, payload: commit).encode(into: &bytes)
            try Data(bytes.readableBytesView).write(to: URL(fileURLWithPath: journal.path))
            #expect(try FileReplicaJournal.decode(bytes).identity == nil)

            let first = try await journal.recover()
            #expect(first.entries == entries)
            let identity = try #require(first.identity)
            let again = try await Self.reopened(journal).recover()
            #expect(again.identity == identity)
            #expect(again.entries == entries)
        }
    }

    @Test func aMemoryJournalKeepsItsIdentityAcrossASnapshot() async throws {
        let journal = MemoryReplicaJournal(identity: 42)
        try await journal.write(.snapshot(ReplicatedStore().snapshot()))
        #expect(try await journal.recover().identity == 42)
    }
}

@Suite struct JournaledServerTests {
    @Test func aJournaledBackupWritesItsJournalBeforeItAcknowledgesAndThePrimaryBeforeItReplies() {
        var pair = AsynchronousLossBoundTests.servingPair(ServerCore.Settings(journaled: true))
        #expect(pair.cores["a"]?.syncSet == ["b"])
        let put = FailoverMessage.request(client: 7, request: 1, epoch: 1, operation: .put(key: "k", value: [1]))
        let sent = pair.cores["a"]?.receive(put, from: "client", now: pair.now) ?? []
        // The primary: replication first (it may leave before the disk write), then its journal.
        guard let journal = sent.firstIndex(where: { if case .journal = $0 { true } else { false } }),
            let replicate = sent.firstIndex(where: { if case .send(.replicate, "b") = $0 { true } else { false } })
        else {
            Issue.record("expected a journal record and a replicate message, got \(sent)")
            return
        }
        #expect(replicate < journal)
        // The backup: its journal record before its acknowledgement.
        let answer = pair.cores["b"]?.receive(sent[replicate].message, from: "a", now: pair.now) ?? []
        let record = answer.firstIndex {
            if case .journal(.entries(let entries)) = $0 { entries.count == 1 } else { false }
        }
        let ack = answer.firstIndex { if case .send(.replicated, "a") = $0 { true } else { false } }
        if let record, let ack {
            #expect(record < ack)
        } else {
            Issue.record("expected a journal record and an acknowledgement, got \(answer)")
        }
        // The acknowledgement lets the primary reply, after nothing else to journal.
        let reply = pair.cores["a"]?.receive(answer[ack ?? 0].message, from: "b", now: pair.now) ?? []
        #expect(reply.contains { if case .send(.reply(7, 1, _, .done), "client") = $0 { true } else { false } })
        #expect(!reply.contains { if case .journal = $0 { true } else { false } })
    }

    @Test func withoutAJournalNoRecordIsAsked() {
        var pair = HandWiredPair(settings: ServerCore.Settings())
        let effects =
            pair.cores["a"]?.receive(.promote(epoch: 1, syncSet: [], minimum: .start), from: "control", now: pair.now)
            ?? []
        #expect(!effects.contains { if case .journal = $0 { true } else { false } })
    }
}

extension ServerCore.Effect {
    /// The message of a send, or a placeholder.
    fileprivate var message: FailoverMessage {
        if case .send(let message, _) = self { return message }
        return .whoIsPrimary
    }
}

/// A journal whose writes fail (a dead disk).
private final class DeadDiskJournal: ReplicaJournal {
    func recover() async throws(FailoverError) -> RecoveredReplica { RecoveredReplica(snapshot: nil, entries: []) }
    func write(_ record: JournalRecord) async throws(FailoverError) {
        throw FailoverError(.closed, detail: "the disk is gone")
    }
}

@Suite struct JournalFailureTests {
    /// A backup whose journal write fails never acknowledges what it could not keep, and stops
    /// answering at all (fail-stop): the controller then sees it silent.
    @Test func aBackupWhoseJournalWriteFailsAcknowledgesNothingAndFallsSilent() async throws {
        let world = AsyncSimulation(seed: 1)
        let network = InMemoryNetwork()
        let primary = network.join("a")
        let heard = try await world.run(timeLimit: .seconds(10)) { () async throws -> [FailoverMessage] in
            let server = FailoverServer(
                node: "b", controller: "control", servers: ["a", "b"],
                configuration: ServiceConfiguration(role: .backup, epoch: 0, host: "127.0.0.1", port: 1),
                transport: network.join("b"), clock: world.clock, journal: DeadDiskJournal())
            let running = world.spawn { try await server.run() }
            var store = ReplicatedStore()
            let entry = try #require(
                try store.execute(.put(key: "k", value: [1]), client: 1, request: 1, epoch: 1).entry)
            let messages: [FailoverMessage] = [
                .replicate(epoch: 1, previous: .start, entries: []),  // b asks to catch up
                .replicate(epoch: 1, previous: .start, entries: [entry]),  // b applies, its write fails
                .replicate(epoch: 1, previous: entry.position, entries: []),  // a beat: no answer now
            ]
            var heard: [FailoverMessage] = []
            var incoming = primary.incoming.makeAsyncIterator()
            for message in messages {
                try await primary.send(message.encode(), to: "b")
                try await world.clock.sleep(for: .milliseconds(50))
            }
            running.cancel()
            await primary.close()
            while let envelope = await incoming.next() {
                if let message = try? FailoverMessage.decode(envelope.message) { heard.append(message) }
            }
            return heard
        }
        #expect(heard.contains { if case .catchUp = $0 { true } else { false } })
        #expect(!heard.contains { if case .replicated = $0 { true } else { false } })
    }
}
