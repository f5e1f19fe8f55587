import DeterministicSimulation
import Failover
import FaultToleranceCore
import NIOCore
import Testing

/// A random operation over a small key space, so puts, deletes and compare-and-sets collide.
func randomOperation(_ random: inout SimulationRandom, batch: Bool = true) -> StoreOperation {
    let key = StoreKey("k\(random.next() % 40)") ?? "k"
    let value = (0..<Int(random.next() % 6)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
    switch random.next() % (batch ? 5 : 4) {
    case 0, 1: return .put(key: key, value: value)
    case 2: return .delete(key: key)
    case 3:
        let expected: [UInt8]? = random.next() % 2 == 0 ? nil : value
        return .compareAndSet(key: key, expected: expected, new: random.next() % 3 == 0 ? nil : value)
    default:
        return .batch((0..<Int(random.next() % 4)).map { _ in randomOperation(&random, batch: false) })
    }
}

@Suite struct ReplicatedStoreTests {
    @Test(arguments: [1, 2, 3, 4, 5] as [UInt64])
    func aBackupApplyingTheEntriesReachesThePrimarysStateAndAModelAgrees(seed: UInt64) throws {
        var random = SimulationRandom(seed: seed)
        var primary = ReplicatedStore()
        var backup = ReplicatedStore()
        var model: [StoreKey: [UInt8]] = [:]
        for request in 1...2000 as ClosedRange<UInt64> {
            let operation = randomOperation(&random)
            let (entry, result) = try primary.execute(operation, client: 1 + request % 7, request: request, epoch: 1)
            let entryApplied = try #require(entry)
            #expect(try backup.apply(entryApplied) == result)
            // The model: a batch applies whole unless one of its compare-and-sets fails.
            var scratch = model
            var failed = false
            for (index, step) in (operation.batchSteps).enumerated() {
                switch step {
                case .put(let key, let value): scratch[key] = value
                case .delete(let key): scratch[key] = nil
                case .compareAndSet(let key, let expected, let new):
                    if scratch[key] != expected {
                        #expect(result == .compareFailed(index: index))
                        failed = true
                    } else {
                        scratch[key] = new
                    }
                default: break
                }
                if failed { break }
            }
            if !failed {
                #expect(result == .applied)
                model = scratch
            }
        }
        #expect(primary.digest == backup.digest)
        #expect(primary.position == LogPosition(epoch: 1, index: 2000))
        let listed = primary.range()
        #expect(listed.map(\.key) == model.keys.sorted())
        for (key, value) in listed { #expect(model[key] == value) }
        #expect(primary.range(from: "k2", to: "k3").allSatisfy { "k2" <= $0.key && $0.key < "k3" })
    }

    @Test func aRetriedRequestGetsTheFirstAnswerOnTheNewPrimaryWithoutApplyingTwice() throws {
        var primary = ReplicatedStore()
        var backup = ReplicatedStore()
        let first = try primary.execute(
            .compareAndSet(key: "lock", expected: nil, new: [1]), client: 9, request: 1, epoch: 1)
        #expect(first.result == .applied)
        try backup.apply(try #require(first.entry))
        // The primary dies before the client hears; the client asks the promoted backup again.
        let again = try backup.execute(
            .compareAndSet(key: "lock", expected: nil, new: [1]), client: 9, request: 1, epoch: 2)
        #expect(again.entry == nil)
        #expect(again.result == .applied)
        #expect(backup.position.index == 1)
        // A request older than the last answered is refused, not applied.
        #expect(throws: FailoverError.self) {
            _ = try backup.execute(.put(key: "x", value: []), client: 9, request: 0, epoch: 2)
        }
        // The next one is applied.
        let next = try backup.execute(.put(key: "x", value: [2]), client: 9, request: 2, epoch: 2)
        #expect(next.entry?.position == LogPosition(epoch: 2, index: 2))
    }

    /// Thousands of keys put and deleted at random, across many chunks of the key index:
    /// range reads, bounded ones included, and a snapshot's rebuild see exactly the keys held,
    /// in order.
    @Test func rangesStayOrderedAndCompleteAcrossThousandsOfKeys() throws {
        var store = ReplicatedStore()
        var random = SimulationRandom(seed: 11)
        var reference: [StoreKey: [UInt8]] = [:]
        for request in 1...12_000 as ClosedRange<UInt64> {
            let key = StoreKey("key-\(random.next() % 6_000)") ?? "k"
            let operation: StoreOperation =
                random.next() % 4 == 0 ? .delete(key: key) : .put(key: key, value: [UInt8(truncatingIfNeeded: request)])
            _ = try store.execute(operation, client: 1, request: request, epoch: 1)
            if case .put(_, let value) = operation { reference[key] = value } else { reference[key] = nil }
        }
        let sorted = reference.keys.sorted()
        #expect(store.count == sorted.count)
        #expect(store.range().map(\.key) == sorted)
        #expect(store.range().allSatisfy { reference[$0.key] == $0.value })
        for _ in 0..<50 {
            let from = sorted[Int(random.next() % UInt64(sorted.count))]
            let to = sorted[Int(random.next() % UInt64(sorted.count))]
            let limit = Int(random.next() % 3_000)
            let expected = Array(sorted.filter { !($0 < from) && $0 < to }.prefix(limit))
            #expect(store.range(from: from, to: to, limit: limit).map(\.key) == expected)
        }
        let rebuilt = try ReplicatedStore(snapshot: store.snapshot())
        #expect(rebuilt.digest == store.digest)
        #expect(rebuilt.range().map(\.key) == sorted)
    }

    @Test func aBatchWithAFailingCompareChangesNothing() throws {
        var store = ReplicatedStore()
        _ = try store.execute(.put(key: "a", value: [1]), client: 0, request: 0, epoch: 1)
        let before = store.digest
        let (entry, result) = try store.execute(
            .batch([.put(key: "b", value: [2]), .delete(key: "a"), .compareAndSet(key: "a", expected: [1], new: [3])]),
            client: 0, request: 0, epoch: 1)
        // The delete before it means "a" is absent when the compare runs.
        #expect(result == .compareFailed(index: 2))
        #expect(store["b"] == nil && store["a"] == [1])
        #expect(entry != nil)
        #expect(store.digest != before)  // the position moved; the data did not
        #expect(store.range().map(\.key) == ["a"])
    }

    @Test func entriesOutOfOrderOrOfAnOlderEpochAreRefusedAndNothingIsApplied() throws {
        var primary = ReplicatedStore()
        var entries: [ReplicationEntry] = []
        for epoch in [1, 1, 2] as [UInt64] {
            entries.append(
                try #require(
                    try primary.execute(.put(key: "k", value: [UInt8(epoch)]), client: 0, request: 0, epoch: epoch)
                        .entry))
        }
        var backup = ReplicatedStore()
        #expect { try backup.apply(entries[1]) } throws: { ($0 as? FailoverError)?.code == .outOfOrder }
        try backup.apply(entries[0])
        try backup.apply(entries[1])
        try backup.apply(entries[2])
        var stale = entries[2]
        stale.position = LogPosition(epoch: 1, index: 4)
        let digest = backup.digest
        #expect { try backup.apply(stale) } throws: { ($0 as? FailoverError)?.code == .staleEpoch }
        #expect(backup.digest == digest)
        #expect { _ = try primary.execute(.delete(key: "k"), client: 0, request: 0, epoch: 1) } throws: {
            ($0 as? FailoverError)?.code == .staleEpoch && "\($0)".contains("epoch 1, server at epoch 2")
        }
    }

    @Test func operationsBeyondTheLimitsAreRefused() throws {
        var store = ReplicatedStore()
        let big = [UInt8](repeating: 1, count: StoreOperation.maximumValueLength + 1)
        #expect { _ = try store.execute(.put(key: "a", value: big), client: 0, request: 0, epoch: 1) } throws: {
            ($0 as? FailoverError)?.code == .tooLarge
        }
        let nested = StoreOperation.batch([.batch([])])
        #expect { _ = try store.execute(nested, client: 0, request: 0, epoch: 1) } throws: {
            ($0 as? FailoverError)?.code == .malformed
        }
        let huge = StoreOperation.batch(
            (0..<20).map { .put(key: StoreKey("k\($0)") ?? "k", value: [UInt8](repeating: 0, count: 1 << 20)) })
        #expect { _ = try store.execute(huge, client: 0, request: 0, epoch: 1) } throws: {
            ($0 as? FailoverError)?.code == .tooLarge
        }
        #expect(store.position == .start)
        #expect(StoreKey(bytes: []) == nil)
        #expect(StoreKey(bytes: [UInt8](repeating: 0, count: StoreKey.maximumLength + 1)) == nil)
    }

    @Test func aSnapshotRebuildsTheStoreSessionsAndConfigurationIncluded() throws {
        var store = ReplicatedStore()
        var request: UInt64 = 0
        for index in 0..<10_000 {
            request += 1
            _ = try store.execute(
                .put(key: StoreKey("key-\(index)") ?? "k", value: Array("v\(index)".utf8)),
                client: UInt64(index % 3 + 1),
                request: request, epoch: 3)
        }
        let configuration = ServiceConfiguration(
            role: .primary, epoch: 3, host: "127.0.0.1", port: 7400, settings: ["a": "1", "b": "2"])
        _ = try store.execute(.configure(configuration), client: 0, request: 0, epoch: 3)
        let bytes = store.snapshot()
        var copy = try ReplicatedStore(snapshot: bytes)
        #expect(copy.digest == store.digest)
        #expect(copy.configuration == configuration)
        #expect(copy.count == 10_000)
        #expect(copy.lastAnswer(for: 2)?.request == store.lastAnswer(for: 2)?.request)
        // The copy carries on as the store would.
        let next = try copy.execute(.delete(key: "key-5"), client: 1, request: request + 1, epoch: 4)
        _ = try store.apply(try #require(next.entry))
        #expect(copy.digest == store.digest)
        // Every damaged byte of the header frame and of a chunk frame is caught.
        var damaged = bytes
        for offset in [3, 20, 40, bytes.readableBytes / 2, bytes.readableBytes - 1] {
            damaged = bytes
            let byte = damaged.getInteger(at: offset, as: UInt8.self) ?? 0
            damaged.setInteger(byte ^ 0x40, at: offset)
            #expect(throws: FailoverError.self) { _ = try ReplicatedStore(snapshot: damaged) }
        }
        #expect(throws: FailoverError.self) {
            _ = try ReplicatedStore(snapshot: bytes.getSlice(at: 0, length: bytes.readableBytes - 5) ?? ByteBuffer())
        }
    }

    @Test func theLogServesWhatItHoldsAndSaysWhenASnapshotIsNeeded() throws {
        var store = ReplicatedStore()
        var log = ReplicationLog(maximumEntries: 100, maximumBytes: 1 << 20)
        for request in 1...250 as ClosedRange<UInt64> {
            log.append(
                try #require(try store.execute(.put(key: "k", value: [1]), client: 1, request: request, epoch: 1).entry)
            )
        }
        #expect(log.count == 100)
        #expect(log.firstIndex == 151 && log.lastIndex == 250)
        #expect(try log.entries(after: 200, limit: 10).map(\.position.index) == Array(201...210))
        #expect(try log.entries(after: 250).isEmpty)
        #expect(try log.entries(after: 150).first?.position.index == 151)
        #expect { _ = try log.entries(after: 149) } throws: { ($0 as? FailoverError)?.code == .snapshotNeeded }
        log.truncate(after: 240)
        #expect(log.lastIndex == 240 && log.lastAppended == 240)
        // A log started after a snapshot's position has nothing before it.
        let fresh = ReplicationLog(startingAfter: 500)
        #expect(try fresh.entries(after: 500).isEmpty)
        #expect { _ = try fresh.entries(after: 499) } throws: { ($0 as? FailoverError)?.code == .snapshotNeeded }
        // Bytes bound.
        var small = ReplicationLog(maximumEntries: 1000, maximumBytes: 1000)
        var other = ReplicatedStore()
        for _ in 0..<50 {
            small.append(
                try #require(
                    try other.execute(
                        .put(key: "k", value: [UInt8](repeating: 0, count: 100)), client: 0, request: 0, epoch: 1
                    ).entry))
        }
        #expect(small.bytes <= 1000 && small.count >= 1)
    }

    @Test func framedEntriesRoundTripAndEveryFlippedByteIsRefused() throws {
        var store = ReplicatedStore()
        var random = SimulationRandom(seed: 11)
        var log = ByteBuffer()
        var entries: [ReplicationEntry] = []
        for request in 1...50 as ClosedRange<UInt64> {
            let entry = try #require(
                try store.execute(randomOperation(&random), client: 3, request: request, epoch: 2).entry)
            entries.append(entry)
            var framed = entry.framed()
            #expect(framed.readableBytes == entry.encodedSize + Frame.headerSize)
            log.writeBuffer(&framed)
        }
        #expect(try ReplicationEntry.unframeAll(log) == entries)
        let one = entries[7].framed()
        for offset in 0..<one.readableBytes {
            var damaged = one
            damaged.setInteger((damaged.getInteger(at: offset, as: UInt8.self) ?? 0) ^ 1, at: offset)
            #expect(throws: FailoverError.self) { _ = try ReplicationEntry.unframeAll(damaged) }
        }
    }

    @Test func aServiceConfigurationRoundTripsAndIsAdoptedWithTheNewEpoch() throws {
        let configuration = ServiceConfiguration(
            role: .primary, epoch: 7, host: "10.0.0.5", port: 6379, settings: ["maxclients": "100", "mode": "sync"])
        #expect(try ServiceConfiguration.unframe(configuration.framed()) == configuration)
        let adopted = ServiceConfiguration(role: .backup, epoch: 7, host: "10.0.0.5", port: 6379).adopted(epoch: 8)
        #expect(adopted.role == .primary && adopted.epoch == 8)
        #expect { try ServiceConfiguration(role: .primary, epoch: 1, host: "", port: 1).validate() } throws: {
            ($0 as? FailoverError)?.code == .invalidConfiguration
        }
        let framed = configuration.framed()
        for offset in 0..<framed.readableBytes {
            var damaged = framed
            damaged.setInteger((damaged.getInteger(at: offset, as: UInt8.self) ?? 0) ^ 0x80, at: offset)
            #expect(throws: FailoverError.self) { _ = try ServiceConfiguration.unframe(damaged) }
        }
    }
}

extension StoreOperation {
    /// The operation's steps: a batch's operations, or the operation alone.
    var batchSteps: [StoreOperation] {
        if case .batch(let operations) = self { return operations }
        return [self]
    }
}

@Suite struct StoreKeyTests {
    /// The order is byte by byte with unsigned bytes, shorter first on a common prefix (what
    /// `lexicographicallyPrecedes` gives), and equal keys hash alike, over keys that share
    /// prefixes and use every byte value.
    @Test func theOrderIsByteWiseAndEqualKeysHashAlike() {
        var random = SimulationRandom(seed: 18)
        let keys: [StoreKey] = (0..<300).compactMap { _ in
            let length = 1 + Int(random.next() % 4)
            return StoreKey(bytes: (0..<length).map { _ in [0x00, 0x01, 0x7F, 0x80, 0xFF][Int(random.next() % 5)] })
        }
        for left in keys {
            for right in keys {
                #expect((left < right) == left.bytes.lexicographicallyPrecedes(right.bytes))
                if left == right { #expect(left.hashValue == right.hashValue) }
            }
        }
        #expect(Set(keys).count == Set(keys.map(\.bytes)).count)
    }
}
