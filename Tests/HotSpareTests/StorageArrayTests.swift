import DeterministicSimulation
import FaultToleranceCore
import Testing

@testable import HotSpare

/// The array against a byte model: host writes, discards and reads; migrations and rebuilds
/// under writes; failures; assembly; power cuts at every storage operation.
@Suite struct StorageArrayTests {
    static let block = 4096
    /// Room for the label, two record slots and 16 blocks.
    static let memberCapacity = 3 * 4096 + 16 * 4096

    static func memory(_ ids: ClosedRange<UInt64>) -> [any StorageUnit] {
        ids.map { MemoryStorageUnit(id: UnitID($0), capacity: memberCapacity) }
    }

    static func makeArray(_ layout: ArrayLayout, members: Int = 4, spares: Int = 1) throws -> StorageArray {
        try StorageArray.create(
            id: UnitID(100), members: memory(1...UInt64(members)),
            spares: spares == 0 ? [] : memory(UInt64(members + 1)...UInt64(members + spares)),
            configuration: .init(layout: layout, blockSize: block, arrayID: 0x5EED))
    }

    /// A random host operation applied to the array and to the model.
    static func randomOperation(
        on array: StorageArray, model: inout [UInt8], random: inout SimulationRandom
    ) throws {
        let offset = Int.random(in: 0..<array.capacity, using: &random)
        let count = Int.random(in: 1...min(3 * block, array.capacity - offset), using: &random)
        switch Int.random(in: 0..<10, using: &random) {
        case 0..<6:
            let byte = UInt8.random(in: 1...255, using: &random)
            let bytes = [UInt8](repeating: byte, count: count)
            try array.write(bytes, at: offset)
            model.replaceSubrange(offset..<offset + count, with: bytes)
        case 6..<8:
            // Whole blocks, so liveness changes too.
            let start = offset / block * block
            let end = min(array.capacity, start + (count + block - 1) / block * block)
            try array.discard(start..<end)
            model.replaceSubrange(start..<end, with: repeatElement(0, count: end - start))
        default:
            #expect(try array.read(at: offset, count: count) == Array(model[offset..<offset + count]))
        }
    }

    static func expectContent(
        _ array: StorageArray, _ model: [UInt8], sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        #expect(try array.read(at: 0, count: array.capacity) == model, sourceLocation: sourceLocation)
    }

    @Test(arguments: ArrayLayout.allCases)
    func readsWhatWasWrittenAndZerosWhereItWasDiscarded(layout: ArrayLayout) throws {
        let array = try Self.makeArray(layout)
        #expect(array.capacity == (layout == .mirror ? 2 : 4) * 16 * Self.block)
        var model = [UInt8](repeating: 0, count: array.capacity)
        var random = SimulationRandom(seed: 11)
        for _ in 0..<400 { try Self.randomOperation(on: array, model: &model, random: &random) }
        try Self.expectContent(array, model)
        // Live blocks are exactly the blocks the model says hold data, or were written and
        // only partly discarded since.
        for index in 0..<array.geometry.blockCount
        where model[index * Self.block..<(index + 1) * Self.block].contains(where: { $0 != 0 }) {
            #expect(array.isLive(block: index))
        }
        #expect(throws: StorageError.self) { try array.read(at: array.capacity - 1, count: 2) }
        #expect(throws: StorageError.self) { try array.write([1], at: -1) }
    }

    @Test(arguments: ArrayLayout.allCases)
    func aMigrationUnderWritesCopiesOnlyLiveBlocksAndErasesTheMemberItLeft(layout: ArrayLayout) throws {
        let array = try Self.makeArray(layout)
        var model = [UInt8](repeating: 0, count: array.capacity)
        var random = SimulationRandom(seed: 12)
        // Half the blocks hold data.
        for index in stride(from: 0, to: array.geometry.blockCount, by: 2) {
            let bytes = [UInt8](repeating: UInt8(index % 250 + 1), count: Self.block)
            try array.write(bytes, at: index * Self.block)
            model.replaceSubrange(index * Self.block..<(index + 1) * Self.block, with: bytes)
        }
        try array.synchronize()
        let worn = UnitID(2)
        try array.beginMigration(of: worn)
        var report: StorageArray.MigrationReport?
        var steps = 0
        while report == nil {
            for _ in 0..<5 { try Self.randomOperation(on: array, model: &model, random: &random) }
            if layout == .mirror { try Self.expectTwoCopiesOfEveryLiveBlock(array, model) }
            report = try array.copyStep(maximumBlocks: 2)
            steps += 1
        }
        let done = try #require(report)
        #expect(done.from == worn && done.to == UnitID(5) && done.erased)
        // A step copies at most 2 live blocks (dead slots do not count).
        #expect(steps >= done.bytesCopied / Self.block / 2 && steps >= 3)
        // Only live blocks travel: at most the role's 16 slots, fewer since half were never written.
        #expect(done.bytesCopied <= 16 * Self.block)
        #expect(done.bytesCopied >= Self.block)
        let status = array.status
        #expect(status.roles[1] == UnitID(5))
        #expect(status.spares == [worn])
        #expect(status.migration == nil)
        try Self.expectContent(array, model)
        // The old member's data region reads as zeros: erased.
        let old = try #require(array.unit(for: worn))
        #expect(try old.read(at: array.dataOffset, count: 16 * Self.block).allSatisfy { $0 == 0 })
        if layout == .mirror { try Self.expectTwoCopiesOfEveryLiveBlock(array, model) }
    }

    /// In a mirror, every block the model says holds data is on at least two members that
    /// serve it (the roles' members, or the migration's target once it holds it).
    static func expectTwoCopiesOfEveryLiveBlock(_ array: StorageArray, _ model: [UInt8]) throws {
        let status = array.status
        for index in 0..<array.geometry.blockCount {
            let expected = Array(model[index * block..<(index + 1) * block])
            guard expected.contains(where: { $0 != 0 }) else { continue }
            let (roles, slot) = array.geometry.placement(ofBlock: index)
            var holders = Set<UnitID>()
            var candidates = roles.map { status.roles[$0] }
            if let migration = status.migration, roles.contains(migration.role), slot < migration.resumeFrom {
                candidates.append(migration.target)
            }
            for member in candidates where !status.failed.contains(member) {
                let unit = try #require(array.unit(for: member))
                if try unit.read(at: array.dataOffset + slot * block, count: block) == expected {
                    holders.insert(member)
                }
            }
            #expect(holders.count >= 2, "block \(index) on \(holders)")
        }
    }

    @Test func aFailedMirrorMemberIsRebuiltOntoTheSpareFromItsPartner() throws {
        let array = try Self.makeArray(.mirror)
        var model = [UInt8](repeating: 0, count: array.capacity)
        var random = SimulationRandom(seed: 13)
        for _ in 0..<200 { try Self.randomOperation(on: array, model: &model, random: &random) }
        try array.fail(member: UnitID(3))
        // Degraded: everything still reads, writes still land.
        for _ in 0..<100 { try Self.randomOperation(on: array, model: &model, random: &random) }
        try Self.expectContent(array, model)
        #expect(throws: StorageError.self) { try array.beginMigration(of: UnitID(3)) }
        try array.beginRebuild(of: UnitID(3))
        var report: StorageArray.MigrationReport?
        while report == nil {
            for _ in 0..<3 { try Self.randomOperation(on: array, model: &model, random: &random) }
            report = try array.copyStep(maximumBlocks: 2)
        }
        #expect(report?.erased == false)
        #expect(array.status.roles == [UnitID(1), UnitID(2), UnitID(5), UnitID(4)])
        #expect(array.status.failed == [UnitID(3)])
        // The rebuilt pair holds two copies again: the partner may now fail too.
        try array.fail(member: UnitID(4))
        try Self.expectContent(array, model)
    }

    @Test func aConcatenatedArrayNamesTheFailedMemberInsteadOfReturningZeros() throws {
        let array = try Self.makeArray(.concatenated, spares: 0)
        try array.write([UInt8](repeating: 7, count: 100), at: 16 * Self.block + 10)
        try array.fail(member: UnitID(2))
        // Role 0's range still reads; role 1's (member 2) does not.
        #expect(try array.read(at: 0, count: 10) == [UInt8](repeating: 0, count: 10))
        let error = try #require(throws: StorageError.self) { try array.read(at: 16 * Self.block + 10, count: 100) }
        #expect(error.code == .unavailable)
        #expect(error.unit == UnitID(2))
        #expect(throws: StorageError.self) { try array.synchronize() }
    }

    @Test func assemblyRefusesForeignUnitsAndMissingMembers() throws {
        let units = Self.memory(1...5)
        let array = try StorageArray.create(
            id: UnitID(100), members: Array(units[0..<4]), spares: [units[4]],
            configuration: .init(layout: .mirror, blockSize: Self.block, arrayID: 1))
        try array.write([1, 2, 3], at: 5)
        try array.synchronize()
        // In any order, the same array.
        let again = try StorageArray.open(id: UnitID(100), units: units.reversed())
        #expect(try again.read(at: 5, count: 3) == [1, 2, 3])
        #expect(again.status.roles == [UnitID(1), UnitID(2), UnitID(3), UnitID(4)])

        let other = Self.memory(11...12)
        _ = try StorageArray.create(
            id: UnitID(101), members: other, spares: [],
            configuration: .init(layout: .mirror, blockSize: Self.block, arrayID: 2))
        let foreign = try #require(throws: StorageError.self) {
            try StorageArray.open(id: UnitID(100), units: units + [other[0]])
        }
        #expect(foreign.code == .foreignUnit)
        #expect(foreign.unit == UnitID(11))

        let blank = MemoryStorageUnit(id: UnitID(20), capacity: Self.memberCapacity)
        let malformed = try #require(throws: StorageError.self) {
            try StorageArray.open(id: UnitID(100), units: units + [blank])
        }
        #expect(malformed.code == .malformedUnit)
        #expect(malformed.unit == UnitID(20))

        let missing = try #require(throws: StorageError.self) {
            try StorageArray.open(id: UnitID(100), units: Array(units[1...]))
        }
        #expect(missing.code == .unavailable)
        // Allowed, the missing member is recorded as failed and the mirror runs degraded.
        let degraded = try StorageArray.open(id: UnitID(100), units: Array(units[1...]), allowMissing: true)
        #expect(degraded.status.failed == [UnitID(1)])
        #expect(try degraded.read(at: 5, count: 3) == [1, 2, 3])
        // The failed member, given again later, is not trusted.
        let later = try StorageArray.open(id: UnitID(100), units: units)
        #expect(later.status.failed == [UnitID(1)])
    }

    @Test func badConfigurationsAreRefused() throws {
        #expect(throws: StorageError.self) {
            try StorageArray.create(
                id: UnitID(1), members: Self.memory(1...3), spares: [],
                configuration: .init(layout: .mirror, blockSize: Self.block))
        }
        #expect(throws: StorageError.self) {
            try StorageArray.create(
                id: UnitID(1), members: Self.memory(1...2), spares: [],
                configuration: .init(layout: .mirror, blockSize: 3000))
        }
        #expect(throws: StorageError.self) {
            try StorageArray.create(
                id: UnitID(1), members: Self.memory(1...2), spares: [MemoryStorageUnit(id: UnitID(3), capacity: 8192)],
                configuration: .init(layout: .mirror, blockSize: Self.block))
        }
        let array = try Self.makeArray(.mirror, spares: 0)
        #expect(throws: StorageError.self) { try array.beginMigration(of: UnitID(1)) }
        #expect(throws: StorageError.self) { try array.copyStep(maximumBlocks: 1) }
        try array.addSpare(MemoryStorageUnit(id: UnitID(9), capacity: Self.memberCapacity))
        #expect(throws: StorageError.self) { try array.beginMigration(of: UnitID(42)) }
        try array.beginMigration(of: UnitID(1))
        #expect(throws: StorageError.self) { try array.beginMigration(of: UnitID(2)) }
    }
}

/// The array over flash: the worn member's data moves off, its space is trimmed, and it takes
/// writes again without the garbage collection that wore it.
@Suite struct ArrayOnFlashTests {
    @Test func theWornMemberIsTrimmedAndRejoinsWithoutCollecting() async throws {
        let page = 4096
        let blocks = 256
        // Label, two record slots, the data region.
        let capacity = (3 + blocks) * page
        func flash(_ id: UInt64, _ overProvisioning: Double) throws -> SimulatedFlash {
            // Small erase blocks, so the drive's few spare blocks are a true 7 % (or 50 %).
            try SimulatedFlash(
                id: UnitID(id), capacity: capacity,
                geometry: .init(pagesPerBlock: 8, overProvisioning: overProvisioning))
        }
        let worn = try flash(2, 0.07)
        let array = try StorageArray.create(
            id: UnitID(100), members: [try flash(1, 0.5), worn], spares: [try flash(3, 0.5)],
            configuration: .init(layout: .mirror, blockSize: page, arrayID: 3))
        #expect(array.geometry.blocksPerRole == blocks)
        let bytes = [UInt8](repeating: 0x5A, count: page)
        for index in 0..<blocks { try array.write(bytes, at: index * page) }
        var random = SimulationRandom(seed: 5)
        let before = worn.wear
        for _ in 0..<4 * blocks { try array.write(bytes, at: Int.random(in: 0..<blocks, using: &random) * page) }
        let after = worn.wear
        let wornAmplification =
            Double(after.mediaBytesWritten - before.mediaBytesWritten)
            / Double(after.hostBytesWritten - before.hostBytesWritten)
        #expect(wornAmplification > 2)

        try array.beginMigration(of: UnitID(2))
        let seen = ProgressLog()
        let report = try await array.runMigration(stepBlocks: 32) { done, total in seen.append(done, total) }
        #expect(report.from == UnitID(2) && report.to == UnitID(3) && report.erased)
        #expect(report.bytesCopied == blocks * page)
        #expect(seen.values.count >= blocks / 32 - 1)
        #expect(seen.values.allSatisfy { $0.total == blocks && $0.done <= blocks })
        // Trimmed: only the label and the record slots still map flash pages.
        #expect(worn.livePages <= 3)

        // It rejoins as the target of the next migration: the copy fills trimmed space, so it
        // writes what the host asks and almost nothing more.
        let rejoin = worn.wear
        try array.beginMigration(of: UnitID(1))
        let second = try await array.runMigration(stepBlocks: 64)
        #expect(second.to == UnitID(2))
        let end = worn.wear
        let rejoinedAmplification =
            Double(end.mediaBytesWritten - rejoin.mediaBytesWritten)
            / Double(end.hostBytesWritten - rejoin.hostBytesWritten)
        #expect(rejoinedAmplification < 1.2)
        #expect(rejoinedAmplification < wornAmplification / 2)
        #expect(try array.read(at: 17 * page, count: page) == bytes)
    }
}

/// Progress calls, kept for the assertions.
private final class ProgressLog: @unchecked Sendable {
    // unchecked: appended from the migration's own task only, read after it returns.
    var values: [(done: Int, total: Int)] = []
    func append(_ done: Int, _ total: Int) { values.append((done, total)) }
}
