import DeterministicSimulation
import FaultToleranceCore
import Testing

@testable import HotSpare
@testable import HotSpareSimulation

/// The shipped array and controller in the scenario, and what a failure mid-migration leaves.
@Suite struct SpareScenarioTests {
    @Test func theScenarioKeepsItsInvariantsAndReplays() {
        let scenario = SpareScenario()
        let seeds = SimulationRunner.seeds(defaultCount: 150)
        let failure = SimulationRunner.firstFailure(in: seeds) { scenario.run(seed: $0) }
        #expect(failure == nil, "\(failure.map { "seed \($0.seed): \($0.violation.map(\.description) ?? "")" } ?? "")")
        let once = scenario.run(seed: 7)
        #expect(once.replayDifference(scenario.run(seed: 7)) == nil)
        #expect(once.operations > 100)
    }

    @Test func erasingBeforeTheSwapIsDurableIsCaught() {
        let scenario = SpareScenario(bug: .eraseBeforeSwapIsDurable)
        let failure = SimulationRunner.firstFailure(in: 1...300) { scenario.run(seed: $0) }
        #expect(failure != nil)
    }

    @Test func aConcatenatedMigrationWhoseSourceFailsIsAbandonedAndItsTargetErased() throws {
        let units: [any StorageUnit] = (1...3).map {
            MemoryStorageUnit(id: UnitID($0), capacity: StorageArrayTests.memberCapacity)
        }
        let array = try StorageArray.create(
            id: UnitID(100), members: Array(units[0..<2]), spares: [units[2]],
            configuration: .init(layout: .concatenated, blockSize: StorageArrayTests.block, arrayID: 9))
        for index in 0..<array.geometry.blockCount {
            try array.write([UInt8](repeating: 9, count: StorageArrayTests.block), at: index * StorageArrayTests.block)
        }
        try array.beginMigration(of: UnitID(2))
        _ = try array.copyStep(maximumBlocks: 4)
        try array.fail(member: UnitID(2))
        #expect(array.status.migration == nil)
        #expect(array.status.erasing == [UnitID(3)])
        try array.finishErases()
        #expect(array.status.spares == [UnitID(3)])
        // The abandoned target reads as zeros again: a spare must.
        #expect(try units[2].read(at: array.dataOffset, count: 4 * StorageArrayTests.block).allSatisfy { $0 == 0 })
    }

    @Test func theControllerMigratesTheWornMemberAndForgetsAFailedOne() async throws {
        let page = 4096
        let capacity = (3 + 512) * page
        func flash(_ id: UInt64, _ overProvisioning: Double) throws -> SimulatedFlash {
            try SimulatedFlash(
                id: UnitID(id), capacity: capacity,
                geometry: .init(pagesPerBlock: 2, overProvisioning: overProvisioning))
        }
        // With 8-page erase blocks, 7 % over-provisioning settles near 1.9 under random writes,
        // 60 % at 1.0.
        let members = [try flash(1, 0.6), try flash(2, 0.07), try flash(3, 0.6), try flash(4, 0.6)]
        let spare = try flash(5, 0.6)
        let array = try StorageArray.create(
            id: UnitID(100), members: members, spares: [spare],
            configuration: .init(layout: .mirror, blockSize: page, arrayID: 4))
        var sources: [UnitID: any WearSource] = [:]
        for unit in members + [spare] { sources[unit.id] = unit }
        let controller = SpareController(
            array: array, sources: sources,
            policy: .init(
                threshold: 1.5, clearBelow: 1.2, window: .milliseconds(200), minimumDwell: .milliseconds(20),
                minimumHostBytes: UInt64(64 * page)),
            stepBlocks: 16)
        var random = SimulationRandom(seed: 3)
        var now = Instant.zero
        var events: [SpareController.Event] = []
        let bytes = [UInt8](repeating: 1, count: page)
        while events.count(where: { if case .finished = $0 { true } else { false } }) == 0, now < .zero + .seconds(60) {
            for _ in 0..<32 {
                try array.write(bytes, at: Int.random(in: 0..<array.geometry.blockCount, using: &random) * page)
            }
            now = now + .milliseconds(5)
            if let event = try controller.poll(now: now) { events.append(event) }
        }
        guard case .migrationStarted(let member, let amplification)? = events.first else {
            Issue.record("no migration started: \(events.prefix(3))")
            return
        }
        #expect(member == UnitID(2))
        #expect(amplification >= 1.5)
        #expect(controller.transitions.contains { $0.member == UnitID(2) && $0.reason.contains("at or above") })
        #expect(array.status.roles[1] == UnitID(5))
        #expect(array.status.spares == [UnitID(2)])
        // A member that fails is not proposed again, and its role is rebuilt onto the spare.
        try array.fail(member: UnitID(3))
        let next = try controller.poll(now: now + .milliseconds(5))
        #expect(next == .rebuildStarted(member: UnitID(3)))
    }
}
