import FaultToleranceCore
import HotSpare
import Testing

/// `SpareController.run(clock:)`: the runtime loop, with its polls on NIO's thread pool.
@Suite("SpareController.run: polls on a clock, storage I/O off the cooperative pool")
struct SpareControllerRunTests {
    @Test("a migration begun by hand is driven to its end by run, which reports each step and the swap")
    func runDrivesAMigration() async throws {
        let array = try StorageArrayTests.makeArray(.mirror)
        let block = StorageArrayTests.block
        for index in 0..<array.geometry.blockCount {
            try array.write([UInt8](repeating: UInt8(index % 200 + 1), count: block), at: index * block)
        }
        try array.synchronize()
        try array.beginMigration(of: UnitID(3))
        let controller = SpareController(array: array, sources: [:], stepBlocks: 2)
        let (events, continuation) = AsyncStream.makeStream(of: SpareController.Event.self)
        let runner = Task {
            try await controller.run(clock: SystemClock(), interval: .milliseconds(1)) { continuation.yield($0) }
        }
        var steps = 0
        var finished: StorageArray.MigrationReport?
        for await event in events {
            switch event {
            case .copied: steps += 1
            case .finished(let report): finished = report
            default: break
            }
            if finished != nil { break }
        }
        runner.cancel()
        let report = try #require(finished)
        #expect(report.from == UnitID(3) && report.erased)
        #expect(steps >= 2)
        #expect(array.status.roles.contains(report.to) && array.status.spares.contains(UnitID(3)))
        for index in 0..<array.geometry.blockCount {
            #expect(
                try array.read(at: index * block, count: block)
                    == [UInt8](repeating: UInt8(index % 200 + 1), count: block))
        }
    }
}
