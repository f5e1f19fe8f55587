import FaultToleranceCore
import Foundation
import Testing

@testable import DisasterRecovery

/// The lazy volume's reads, writes, build, migration and switch, on units in memory.
@Suite struct LazyVolumeTests {
    static let block = 4096

    /// A source of `blocks` blocks whose byte `i` of block `b` is `b &* 7 &+ i % 251`, and empty
    /// overlay, replica and state units.
    struct Fixture: Sendable {
        let sourceUnit: MemoryStorageUnit
        let source: ImageRecoveryPoint
        let overlay: MemoryStorageUnit
        let replica: MemoryStorageUnit
        let state: MemoryStorageUnit
        let blocks: Int

        init(blocks: Int, blockSize: Int = LazyVolumeTests.block) throws {
            self.blocks = blocks
            let capacity = blocks * blockSize
            sourceUnit = MemoryStorageUnit(id: UnitID(1), capacity: capacity)
            try sourceUnit.write(Self.image(blocks: blocks, blockSize: blockSize), at: 0)
            source = try ImageRecoveryPoint(unit: sourceUnit)
            overlay = MemoryStorageUnit(id: UnitID(2), capacity: capacity)
            replica = MemoryStorageUnit(id: UnitID(3), capacity: capacity)
            state = MemoryStorageUnit(
                id: UnitID(4), capacity: LazyVolumeHeader.stateSize(capacity: capacity, blockSize: blockSize))
        }

        static func image(blocks: Int, blockSize: Int) -> [UInt8] {
            (0..<blocks * blockSize).map { UInt8(truncatingIfNeeded: ($0 / blockSize) &* 7 &+ $0 % 251) }
        }

        func create(blockSize: Int = LazyVolumeTests.block) throws -> LazyVolume {
            try LazyVolume.create(
                identity: 42, source: source, overlay: overlay, replica: replica, state: state, blockSize: blockSize)
        }

        func open(identity: UInt64 = 42) throws -> LazyVolume {
            try LazyVolume.open(identity: identity, source: source, overlay: overlay, replica: replica, state: state)
        }
    }

    @Test func readsTheRecoveryPointUntilWrittenAndMergesPartialWrites() throws {
        let fixture = try Fixture(blocks: 8)
        let volume = try fixture.create()
        var expected = Fixture.image(blocks: 8, blockSize: Self.block)
        #expect(try volume.read(at: 0, count: volume.capacity) == expected)
        // 100 bytes straddling blocks 2 and 3: the rest of both blocks comes from the source.
        let patch = [UInt8](repeating: 0xAB, count: 100)
        try volume.write(patch, at: 3 * Self.block - 50)
        expected.replaceSubrange(3 * Self.block - 50..<3 * Self.block + 50, with: patch)
        #expect(try volume.read(at: 0, count: volume.capacity) == expected)
        #expect(volume.progress.dirty == 2)
        // The source is never written.
        #expect(
            try fixture.sourceUnit.read(at: 0, count: volume.capacity)
                == Fixture.image(blocks: 8, blockSize: Self.block))
    }

    @Test func buildsMigratesAndSwitchesWithEveryWriteOnTheReplica() throws {
        let fixture = try Fixture(blocks: 64)
        let volume = try fixture.create()
        var expected = Fixture.image(blocks: 64, blockSize: Self.block)
        func write(_ value: UInt8, block: Int) throws {
            let bytes = [UInt8](repeating: value, count: Self.block)
            try volume.write(bytes, at: block * Self.block)
            expected.replaceSubrange(block * Self.block..<(block + 1) * Self.block, with: bytes)
        }
        try write(1, block: 5)
        #expect(throws: RecoveryError.self) { try volume.copyRound() }
        var finished = false
        var steps = 0
        while !finished {
            finished = try volume.buildStep(maximumBlocks: 10)
            steps += 1
            try write(UInt8(steps), block: steps * 7 % 64)
        }
        #expect(steps == 7)
        #expect(volume.phase == .migrating)
        // Built blocks are read from the replica, not the source.
        let readsBefore = volume.progress.sourceReads
        #expect(try volume.read(at: 0, count: volume.capacity) == expected)
        #expect(volume.progress.sourceReads == readsBefore)
        let first = try volume.copyRound()
        #expect(first == 0)
        try write(0xEE, block: 63)
        try write(0xEF, block: 5)
        #expect(volume.uncopiedBlocks == 2)
        #expect(try volume.switchToReplica() == 2)
        #expect(volume.phase == .switched)
        try write(0xF0, block: 0)
        try volume.synchronize()
        #expect(try fixture.replica.read(at: 0, count: volume.capacity) == expected)
        #expect(try volume.read(at: 0, count: volume.capacity) == expected)
        // A volume that switched opens switched: the replica alone is the volume.
        let reopened = try fixture.open()
        #expect(reopened.phase == .switched)
        #expect(try reopened.read(at: 0, count: volume.capacity) == expected)
    }

    @Test func reopensWithTheBuildAndEverySynchronizedWrite() throws {
        let fixture = try Fixture(blocks: 5000, blockSize: 512)
        let volume = try fixture.create(blockSize: 512)
        // Blocks in both bitmap sectors (4,032 blocks each).
        for block in [3, 4031, 4032, 4999] {
            try volume.write([UInt8](repeating: 0x5A, count: 512), at: block * 512)
        }
        try volume.synchronize()
        try volume.buildStep(maximumBlocks: 1000)
        let reopened = try fixture.open()
        #expect(reopened.progress.built == 1000)
        #expect(reopened.progress.dirty == 4)
        #expect(reopened.phase == .building)
        for block in [3, 4031, 4032, 4999] {
            #expect(try reopened.read(at: block * 512, count: 512) == [UInt8](repeating: 0x5A, count: 512))
        }
        #expect(
            try reopened.read(at: 10 * 512, count: 512) == Array(Fixture.image(blocks: 11, blockSize: 512)[5120...]))
    }

    @Test func refusesStateOfAnotherVolumeBlankOrDamaged() throws {
        let fixture = try Fixture(blocks: 16)
        #expect { try fixture.open() } throws: { ($0 as? RecoveryError)?.code == .notInitialized }
        let volume = try fixture.create()
        try volume.write([UInt8](repeating: 1, count: 10), at: 0)
        try volume.synchronize()
        #expect { try fixture.open(identity: 7) } throws: { ($0 as? RecoveryError)?.code == .mismatchedUnits }
        let bigger = MemoryStorageUnit(id: UnitID(9), capacity: 32 * Self.block)
        #expect {
            try LazyVolume.open(
                identity: 42, source: ImageRecoveryPoint(unit: bigger), overlay: fixture.overlay,
                replica: fixture.replica, state: fixture.state)
        } throws: { ($0 as? RecoveryError)?.code == .mismatchedUnits }
        // A flipped bit in the bitmap sector: named with its offset, never read as "not written".
        var sector = try fixture.state.read(at: LazyVolumeHeader.bitmapOffset, count: 512)
        sector[100] ^= 0x10
        try fixture.state.write(sector, at: LazyVolumeHeader.bitmapOffset)
        #expect { try fixture.open() } throws: { error in
            let error = error as? RecoveryError
            return error?.code == .damaged && error?.detail.contains("offset 4096") == true
        }
        // Both header slots damaged.
        try fixture.state.write([UInt8](repeating: 0x77, count: 1024), at: 0)
        #expect { try fixture.open() } throws: { ($0 as? RecoveryError)?.code == .damaged }
        // Units too small.
        #expect {
            try LazyVolume.create(
                identity: 1, source: fixture.source, overlay: MemoryStorageUnit(id: UnitID(8), capacity: 100),
                replica: fixture.replica, state: fixture.state)
        } throws: { ($0 as? RecoveryError)?.code == .mismatchedUnits }
        #expect {
            try LazyVolume.create(
                identity: 1, source: fixture.source, overlay: fixture.overlay, replica: fixture.replica,
                state: fixture.state, blockSize: 3000)
        } throws: { ($0 as? RecoveryError)?.code == .invalidField }
    }

    @Test func checksItsRanges() throws {
        let fixture = try Fixture(blocks: 4)
        let volume = try fixture.create()
        #expect(throws: StorageError.self) { try volume.read(at: 4 * Self.block - 1, count: 2) }
        #expect(throws: StorageError.self) { try volume.write([1, 2], at: -1) }
        #expect(throws: StorageError.self) { try volume.discard(0..<(5 * Self.block)) }
        try volume.discard(Self.block + 10..<2 * Self.block + 10)
        let read = try volume.read(at: Self.block, count: 2 * Self.block)
        #expect(read[0..<10] == Fixture.image(blocks: 2, blockSize: Self.block)[Self.block..<Self.block + 10])
        #expect(read[10..<Self.block + 10].allSatisfy { $0 == 0 })
    }

    @Test func headerAndBitmapSectorsRoundTripAndRefuseHostileBytes() throws {
        let header = LazyVolumeHeader(
            phase: .migrating, blockSize: 4096, identity: 0xFEED, capacity: 1 << 30, generation: 9, built: 262_144)
        let slot = header.encoded()
        #expect(slot.count == LazyVolumeHeader.slotSize)
        #expect(try LazyVolumeHeader.decode(slot) == header)
        for index in 0..<56 {
            var damaged = slot
            damaged[index] ^= 0x01
            #expect(throws: RecoveryError.self) { try LazyVolumeHeader.decode(damaged) }
        }
        #expect(throws: RecoveryError.self) { try LazyVolumeHeader.decode(slot.prefix(30)) }
        var older = header
        older.generation = 8
        #expect(try LazyVolumeHeader.newest(first: older.encoded(), second: slot).generation == 9)
        #expect(try LazyVolumeHeader.newest(first: slot, second: [UInt8](repeating: 3, count: 512)) == header)

        var words = [UInt64](repeating: 0, count: (9000 + 63) / 64)
        for block in [0, 63, 64, 4031, 4032, 8999] { words[block / 64] |= 1 << UInt64(block % 64) }
        var decoded = [UInt64](repeating: 0, count: words.count)
        for sector in 0..<3 {
            let bytes = LazyVolumeHeader.encodeBitmapSector(index: sector, words: words)
            try LazyVolumeHeader.decodeBitmapSector(bytes, index: sector, blocks: 9000, into: &decoded)
            // The sector in another sector's place is refused.
            var other = decoded
            #expect(throws: RecoveryError.self) {
                try LazyVolumeHeader.decodeBitmapSector(bytes, index: sector + 1, blocks: 9000, into: &other)
            }
        }
        #expect(decoded == words)
        // A sector marking a block past the volume's end.
        var beyond = [UInt64](repeating: 0, count: words.count)
        let last = LazyVolumeHeader.encodeBitmapSector(index: 2, words: words)
        #expect(throws: RecoveryError.self) {
            try LazyVolumeHeader.decodeBitmapSector(last, index: 2, blocks: 8999, into: &beyond)
        }
    }

    @Test func writersDuringRoundsAndTheSwitchLoseNothing() async throws {
        let fixture = try Fixture(blocks: 256)
        let volume = try fixture.create()
        while try !volume.buildStep(maximumBlocks: 64) {}
        // Four writers, each owning the blocks ≡ its index mod 4, write versions while the
        // migration copies rounds and switches; each then writes once more after the switch.
        let finals = try await withThrowingTaskGroup(of: [Int: UInt8].self) { group in
            for writer in 0..<4 {
                group.addTask {
                    var last: [Int: UInt8] = [:]
                    for step in 0..<400 {
                        let block = (step * 13 % 64) * 4 + writer
                        let value = UInt8(truncatingIfNeeded: step % 250 + 1)
                        try volume.write([UInt8](repeating: value, count: Self.block), at: block * Self.block)
                        last[block] = value
                        if step % 50 == 0 { await Task.yield() }
                    }
                    return last
                }
            }
            group.addTask {
                var rounds = 0
                var previous: Int?
                let policy = MigrationPolicy(switchAtBlocks: 4, maximumRounds: 6)
                while volume.phase != .switched {
                    let remaining = try volume.copyRound()
                    rounds += 1
                    if policy.decide(rounds: rounds, remaining: remaining, previous: previous) == .switchNow {
                        try volume.switchToReplica()
                    }
                    previous = remaining
                    await Task.yield()
                }
                return [:]
            }
            var merged: [Int: UInt8] = [:]
            for try await last in group { merged.merge(last) { a, _ in a } }
            return merged
        }
        try volume.synchronize()
        #expect(volume.phase == .switched)
        let replica = try fixture.replica.read(at: 0, count: volume.capacity)
        let image = Fixture.image(blocks: 256, blockSize: Self.block)
        for block in 0..<256 {
            let range = block * Self.block..<(block + 1) * Self.block
            let expected = finals[block].map { [UInt8](repeating: $0, count: Self.block)[...] } ?? image[range]
            #expect(replica[range] == expected, "block \(block)")
        }
    }

    @Test func thePolicySwitchesWhenLittleIsLeftOrNoProgressOrTooManyRounds() {
        let policy = MigrationPolicy(switchAtBlocks: 10, maximumRounds: 5)
        #expect(policy.decide(rounds: 1, remaining: 500, previous: nil) == .copyRound)
        #expect(policy.decide(rounds: 2, remaining: 100, previous: 500) == .copyRound)
        #expect(policy.decide(rounds: 3, remaining: 10, previous: 100) == .switchNow)
        #expect(policy.decide(rounds: 3, remaining: 120, previous: 100) == .switchNow)
        #expect(policy.decide(rounds: 5, remaining: 90, previous: 100) == .switchNow)
    }
}
