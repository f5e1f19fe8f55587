import FaultToleranceCore
import Foundation
import HotSpare

/// The hot-spare scene of `ftctl demo` (and `ftctl spare demo`): a mirror of simulated flash
/// drives under random 4 KiB writes, one with 7 % over-provisioning; the controller sees its
/// write amplification climb, migrates it to the spare while the writes go on, erases it, and
/// it rejoins; every page is then read back and checked against the last write to it.
struct SpareScene {
    var megabytes = 64

    func run() async throws {
        let page = 4096
        let capacity = megabytes << 20
        func flash(_ id: UInt64, _ overProvisioning: Double) throws -> SimulatedFlash {
            try SimulatedFlash(id: UnitID(id), capacity: capacity, geometry: .init(overProvisioning: overProvisioning))
        }
        print("== Hot spare: a mirror of two \(megabytes) MiB simulated flash drives and a spare, random 4 KiB writes")
        let healthy = try flash(1, 0.28)
        let worn = try flash(2, 0.07)
        let spare = try flash(3, 0.28)
        let array = try StorageArray.create(
            id: UnitID(100), members: [healthy, worn], spares: [spare],
            configuration: .init(layout: .mirror, blockSize: 64 << 10, arrayID: 0xDE30))
        let pages = array.capacity / page
        print("  unit-1 at 28 % over-provisioning, unit-2 at 7 %, unit-3 the spare")
        let controller = SpareController(
            array: array, sources: [UnitID(1): healthy, UnitID(2): worn, UnitID(3): spare],
            policy: .init(
                threshold: 3, clearBelow: 2.5, window: .seconds(10), minimumDwell: .seconds(2),
                minimumHostBytes: UInt64(capacity / 4)),
            stepBlocks: 16)
        // Each page holds its number and the count of writes to it, so the end can check them all.
        var versions = [UInt32](repeating: 0, count: pages)
        var buffer = [UInt8](repeating: 0, count: page)
        var random = SystemRandomNumberGenerator()
        func write(_ index: Int) throws {
            versions[index] &+= 1
            buffer.withUnsafeMutableBytes { raw in
                raw.storeBytes(of: UInt32(index), toByteOffset: 0, as: UInt32.self)
                raw.storeBytes(of: versions[index], toByteOffset: 4, as: UInt32.self)
                raw.storeBytes(
                    of: UInt64(index) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(versions[index]), toByteOffset: page - 8,
                    as: UInt64.self)
            }
            try array.write(buffer, at: index * page)
        }
        // Fill, then random writes; virtual time: one millisecond per 64 writes.
        for index in 0..<pages { try write(index) }
        var now = Instant.zero
        var written = 0
        var wornBefore: Double?
        var started = false
        var lastShown = -1
        let beforeWear = worn.wear
        var writesDuringMigration = 0
        while true {
            for _ in 0..<64 {
                try write(Int.random(in: 0..<pages, using: &random))
                written += 1
                if started { writesDuringMigration += 1 }
            }
            now = now + .milliseconds(1)
            guard written % 4096 == 0 else { continue }
            switch try controller.poll(now: now) {
            case .migrationStarted(let member, let amplification)?:
                started = true
                wornBefore = amplification
                print(
                    "  after \(written) random writes: \(member) write amplification "
                        + String(format: "%.2f", amplification) + " over the window (since new: "
                        + String(format: "%.2f", ratio(worn.wear, beforeWear)) + "); migrating it to the spare")
                for transition in controller.transitions { print("    monitor: \(transition)") }
            case .copied(let done, let total)?:
                let percent = done * 100 / max(1, total)
                if percent / 10 != lastShown / 10 {
                    lastShown = percent
                    print("  copying live blocks: \(percent) % (host writes go on)")
                }
            case .finished(let report)?:
                print(
                    "  swapped: role \(report.role) is now \(report.to); \(report.from) erased and made the spare; "
                        + "\(report.bytesCopied >> 20) MiB copied (live data; md would copy the whole member) while "
                        + "\(writesDuringMigration) host writes went on")
                print(
                    "  \(report.from) after the erase: \(worn.livePages) flash pages still mapped (label and records)")
                let rejoin = worn.wear
                try array.beginMigration(of: UnitID(1))
                let second = try await array.runMigration(stepBlocks: 64)
                let end = worn.wear
                print(
                    "  \(report.from) rejoins as the target of the next migration (of \(second.from)): "
                        + "write amplification " + String(format: "%.2f", ratio(end, rejoin)) + " while it takes "
                        + "\(second.bytesCopied >> 20) MiB, against " + String(format: "%.2f", wornBefore ?? 0)
                        + " before it was moved")
                try check(array, versions: versions, page: page)
                print("  every one of the \(pages) pages holds its last write, on both members of the mirror")
                return
            default:
                if !started, written > 200 * pages {
                    throw CommandFailure("no member crossed the threshold after \(written) writes")
                }
            }
        }
    }

    /// Reads every page through the array and from both mirror members, and compares each
    /// with the last write to it.
    private func check(_ array: StorageArray, versions: [UInt32], page: Int) throws {
        var buffer = [UInt8](repeating: 0, count: page)
        for (index, version) in versions.enumerated() {
            let offset = index * page
            let within = offset % array.geometry.blockSize
            let sources: [(String, any StorageUnit, Int)] =
                [("the array", array, offset)]
                + array.copies(ofBlock: offset / array.geometry.blockSize).map {
                    ("\($0.member)", $0.unit, $0.offset + within)
                }
            for (name, unit, at) in sources {
                try buffer.withUnsafeMutableBytes { try unit.read(into: $0, at: at) }
                let (stampedPage, stampedVersion) = buffer.withUnsafeBytes {
                    ($0.load(fromByteOffset: 0, as: UInt32.self), $0.load(fromByteOffset: 4, as: UInt32.self))
                }
                guard stampedPage == UInt32(index), stampedVersion == version else {
                    throw CommandFailure(
                        "page \(index) on \(name) holds page \(stampedPage) write \(stampedVersion), not write \(version)"
                    )
                }
            }
        }
    }

    private func ratio(_ end: SimulatedFlash.Wear, _ start: SimulatedFlash.Wear) -> Double {
        let host = end.hostBytesWritten - start.hostBytesWritten
        return host == 0 ? 0 : Double(end.mediaBytesWritten - start.mediaBytesWritten) / Double(host)
    }
}
