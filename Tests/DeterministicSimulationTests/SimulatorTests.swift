import DeterministicSimulation
import FaultToleranceCore
import NIOCore
import Testing

@Suite("Simulator building blocks")
struct SimulatorTests {
    @Test("the generator is a pure function of its seed")
    func generatorDeterminism() {
        var a = SimulationRandom(seed: 42)
        var b = SimulationRandom(seed: 42)
        var c = SimulationRandom(seed: 43)
        let first = (0..<100).map { _ in a.next() }
        #expect(first == (0..<100).map { _ in b.next() })
        #expect(first != (0..<100).map { _ in c.next() })
        var d = SimulationRandom(seed: 1)
        let hits = (0..<100_000).filter { _ in d.chance(0.25) }.count
        #expect(abs(hits - 25_000) < 1_000)
    }

    @Test("events run in time order, ties in scheduling order, cancelled ones never")
    func eventOrder() {
        let simulation = Simulation(seed: 1)
        var log: [String] = []
        simulation.schedule(after: .milliseconds(5)) { log.append("b") }
        simulation.schedule(after: .milliseconds(1)) { log.append("a") }
        simulation.schedule(after: .milliseconds(5)) { log.append("c") }
        let cancelled = simulation.schedule(after: .milliseconds(2)) { log.append("x") }
        simulation.schedule(after: .milliseconds(3), owner: "n") { log.append("owned") }
        simulation.cancel(cancelled)
        simulation.cancelTimers(of: "n")
        simulation.schedule(after: .milliseconds(4)) {
            simulation.schedule(after: .milliseconds(10)) { log.append("late") }
        }
        simulation.run(until: Instant.zero + .milliseconds(10))
        #expect(log == ["a", "b", "c"])
        #expect(simulation.now == Instant.zero + .milliseconds(10))
        simulation.run(for: .milliseconds(10))
        #expect(log.last == "late")
    }

    @Test("the network loses, duplicates, partitions one way, and drops messages to crashed nodes")
    func networkFaults() {
        let simulation = Simulation(seed: 9)
        let network = SimulatedNetwork(
            simulation: simulation,
            defaultConditions: LinkConditions(lossProbability: 0.1, duplicateProbability: 0.1))
        var received: [NodeID: Int] = [:]
        for node: NodeID in ["a", "b"] { network.attach(node) { _ in received[node, default: 0] += 1 } }
        let message = Message(type: 1, bytes: [1])
        for _ in 0..<1000 { network.send(message, from: "a", to: "b") }
        simulation.run(for: .seconds(1))
        #expect(simulation.faults.messagesLost > 50 && simulation.faults.messagesLost < 150)
        #expect(received["b"] == 1000 - simulation.faults.messagesLost + simulation.faults.messagesDuplicated)

        network.defaultConditions = .reliable
        network.cut(from: "a", to: "b")
        network.send(message, from: "a", to: "b")
        network.send(message, from: "b", to: "a")
        simulation.run(for: .seconds(1))
        #expect(received["a"] == 1)
        network.heal()
        network.crash("a")
        network.send(message, from: "b", to: "a")
        simulation.run(for: .seconds(1))
        #expect(received["a"] == 1)
        network.restart("a")
        network.send(message, from: "b", to: "a")
        simulation.run(for: .seconds(1))
        #expect(received["a"] == 2)
    }

    @Test("a disk crash keeps synchronized writes and loses or tears the rest at sector granularity")
    func diskCrash() throws {
        var random = SimulationRandom(seed: 5)
        var outcomes = SimulatedDisk.CrashOutcome()
        for round in 0..<50 {
            let disk = SimulatedDisk(id: UnitID(1), capacity: 8192, random: random.split())
            let synced = [UInt8](repeating: 0xAA, count: 4096)
            try disk.write(synced, at: 0)
            try disk.synchronize()
            let unsynced = [UInt8](repeating: 0xBB, count: 2048)
            try disk.write(unsynced, at: 4096 + 256)
            let outcome = disk.crash()
            outcomes.lost += outcome.lost
            outcomes.torn += outcome.torn
            outcomes.survived += outcome.survived
            #expect(try disk.read(at: 0, count: 4096) == synced, "round \(round)")
            let after = try disk.read(at: 4096, count: 4096)
            // Every 512-byte sector is either all old (zero) or all new: torn only at sectors.
            for sector in 0..<8 {
                let bytes = Set(after[(sector * 512)..<(sector * 512 + 512)])
                #expect(bytes.count == 1 || (sector == 0 || sector == 4), "sector \(sector) round \(round)")
            }
        }
        #expect(outcomes.lost > 0 && outcomes.torn > 0 && outcomes.survived > 0)
    }

    @Test("an injected fsync failure poisons the disk until it crashes")
    func diskPoison() throws {
        let disk = SimulatedDisk(id: UnitID(1), capacity: 1024, random: SimulationRandom(seed: 1))
        try disk.write([1], at: 0)
        disk.failNextSynchronize()
        #expect(throws: StorageError.self) { try disk.synchronize() }
        #expect(throws: StorageError.self) { try disk.write([2], at: 0) }
        #expect(throws: StorageError.self) { try disk.read(at: 0, count: 1) }
        disk.crash()
        try disk.write([3], at: 0)
        try disk.synchronize()
        #expect(try disk.read(at: 0, count: 1) == [3])
    }

    @Test(
        "silent faults report success: flipped reads leave the stored bytes intact, misdirected writes land elsewhere, lost writes vanish"
    )
    func silentFaults() throws {
        let flipping = SimulatedDisk(
            id: UnitID(1), capacity: 4096, faults: .init(flipOnRead: 1), random: SimulationRandom(seed: 2))
        let bytes = [UInt8](repeating: 0xAA, count: 64)
        try flipping.write(bytes, at: 512)
        let read = try flipping.read(at: 512, count: 64)
        #expect(zip(read, bytes).map { ($0 ^ $1).nonzeroBitCount }.reduce(0, +) == 1)
        flipping.setFaults(.init())
        #expect(try flipping.read(at: 512, count: 64) == bytes)
        #expect(flipping.silentFaults.flippedReads == 1)

        let misdirecting = SimulatedDisk(
            id: UnitID(2), capacity: 8192, faults: .init(misdirectWrite: 1), random: SimulationRandom(seed: 3))
        try misdirecting.write(bytes, at: 1024)
        try misdirecting.synchronize()
        misdirecting.crash()
        misdirecting.setFaults(.init())
        #expect(try misdirecting.read(at: 1024, count: 64) == [UInt8](repeating: 0, count: 64))
        let image = try misdirecting.read(at: 0, count: 8192)
        let landed = stride(from: 0, to: 8192 - 63, by: 512).filter { Array(image[$0..<$0 + 64]) == bytes }
        #expect(landed.count == 1 && landed != [1024])
        #expect(misdirecting.silentFaults.misdirectedWrites == 1)

        let losing = SimulatedDisk(
            id: UnitID(3), capacity: 4096, faults: .init(loseWrite: 1), random: SimulationRandom(seed: 4))
        try losing.write(bytes, at: 0)
        try losing.synchronize()
        losing.setFaults(.init())
        #expect(try losing.read(at: 0, count: 64) == [UInt8](repeating: 0, count: 64))
        #expect(losing.silentFaults.lostWrites == 1)
    }

    @Test("seeds come from the environment when set")
    func seedSelection() {
        let seeds = SimulationRunner.seeds(defaultCount: 7, base: 100)
        #expect(!seeds.isEmpty)
        #expect(SimulationRunner.replayCommand(seed: 12, filter: "T") == "FT_SIMULATION_SEED=12 swift test --filter T")
    }
}

/// `ftctl … simulate` runs a failing seed a second time at once and says when it ends
/// otherwise: a failure that does not replay is the simulation's own bug.
@Suite struct ReplayDifferenceTests {
    /// A run of `seed` whose trace mixes in `outside` (what a scenario must not depend on) and
    /// fails when the trace's low bit is set.
    static func run(seed: UInt64, outside: UInt64) -> SimulationReport {
        let simulation = Simulation(seed: seed)
        for step in 0..<5 as Range<UInt64> {
            simulation.schedule(after: .milliseconds(Int64(step) + 1)) {
                simulation.trace(simulation.random.next() ^ outside)
            }
        }
        simulation.run(for: .seconds(1))
        let violation =
            simulation.traceHash & 1 == 1
            ? InvariantViolation(invariant: "odd-trace", detail: "the trace hash is odd", at: simulation.now) : nil
        return SimulationReport(
            seed: seed, faults: simulation.faults, invariantChecks: 1, operations: 5,
            virtualTime: simulation.now.nanoseconds, events: simulation.eventsProcessed, violation: violation,
            traceHash: simulation.traceHash)
    }

    @Test func aSecondRunOfADeterministicSeedEndsTheSameWay() throws {
        let seed = try #require(
            (1...64 as ClosedRange<UInt64>).first { Self.run(seed: $0, outside: 0).violation != nil })
        #expect(Self.run(seed: seed, outside: 0).replayDifference(Self.run(seed: seed, outside: 0)) == nil)
    }

    @Test func aRunSteeredByStateOutsideItsSeedIsNamed() throws {
        let seed = try #require(
            (1...64 as ClosedRange<UInt64>).first { Self.run(seed: $0, outside: 0).violation != nil })
        let first = Self.run(seed: seed, outside: 0)
        // The same seed with something else outside it: another trace, perhaps another verdict.
        let difference = try #require(first.replayDifference(Self.run(seed: seed, outside: 0x5EED)))
        #expect(difference.contains("trace hash"))
        let passing = try #require(
            (1...64 as ClosedRange<UInt64>).first { outside in
                Self.run(seed: seed, outside: outside).violation == nil
            })
        #expect(first.replayDifference(Self.run(seed: seed, outside: passing))?.hasPrefix("passed") == true)
    }
}
