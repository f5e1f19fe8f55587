import ArgumentParser
import ElasticJournal
import FaultToleranceCore
import Foundation
import Logging
import NIOConcurrencyHelpers

/// The journal scene of `ftctl demo`, in virtual time over real files.
struct JournalScene {
    func run() async throws {
        print("== Elastic journal: 2 s window, 256 KiB units, 4 KiB writes every 10 ms (virtual time)")
        let path = NSTemporaryDirectory() + "ftctl-demo-\(getpid())"
        try? FileManager.default.removeItem(atPath: path)
        defer { try? FileManager.default.removeItem(atPath: path) }
        let clock = NIOLockedValueBox(Instant(nanoseconds: 0))
        let start = clock.withLockedValue { $0 }
        func elapsed(_ instant: Instant) -> String {
            String(format: "%5.2f s", Double((instant - start).nanoseconds) / 1e9)
        }
        for directory in [path + "/units", path + "/base"] {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        }
        var logger = Logger(label: "ftctl.demo.journal")
        logger.logLevel = .error
        let volumeSize = 64 << 10
        let pool = try FileStoragePool(
            directories: [path + "/units"], unitCapacity: 256 << 10, budget: 16 * (256 << 10), logger: logger)
        let bases = try FileStoragePool(
            directories: [path + "/base"], unitCapacity: JournalFormat.baseHeaderSize + volumeSize, budget: 1 << 30,
            logger: logger)
        let events = NIOLockedValueBox<[JournalEvent]>([])
        let store = try JournalStore(
            journalPool: pool, basePool: bases, clock: { clock.withLockedValue { $0 } }, logger: logger,
            onEvent: { event in events.withLockedValue { $0.append(event) } })
        let journal = try store.createJournal(
            1, configuration: JournalConfiguration(window: .seconds(2), quota: 12, durability: .groupCommit),
            volumes: [1])
        var image = [UInt8](repeating: 0, count: volumeSize)
        var kept: (Instant, [UInt8])?
        let stopAt = Instant(nanoseconds: 6_000_000_000)
        let keepAt = stopAt + .milliseconds(-1500)
        var step = 0
        while clock.withLockedValue({ $0 }) < stopAt {
            clock.withLockedValue { $0 = $0 + .milliseconds(10) }
            step += 1
            let offset = (step * 7919 % (volumeSize / 4096)) * 4096
            let bytes = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* step &+ step) }
            let receipt = try await journal.append(volume: 1, offset: UInt64(offset), bytes: bytes)
            image.replaceSubrange(offset..<offset + 4096, with: bytes)
            if receipt.time <= keepAt { kept = (receipt.time, image) }
            if step % 25 == 0 { try journal.maintain() }
            let pending = events.withLockedValue { events in
                defer { events.removeAll() }
                return events
            }
            for event in pending {
                switch event {
                case .unitAllocated(_, let unit):
                    print("  \(elapsed(receipt.time))  + \(unit) allocated (record \(receipt.sequence))")
                case .unitReleased(_, let unit, let reason, let windowStart):
                    print(
                        "  \(elapsed(receipt.time))  - \(unit) released (\(reason)); window now starts at \(elapsed(windowStart))"
                    )
                case .historyDropped(_, let unit, let reason, _):
                    print("  \(elapsed(receipt.time))  ! \(unit) dropped early (\(reason))")
                case .tornTailTruncated, .salvaged, .quarantined: break
                }
            }
            if step % 100 == 0 {
                let status = journal.status
                print(
                    "  \(elapsed(receipt.time))    \(status.lastSequence) records, \(status.units.count) units held, "
                        + "effective window \(seconds(journal.effectiveWindow(now: receipt.time)))")
            }
        }
        guard let (instant, expected) = kept else { throw ExitCode(1) }
        let rebuilt = try journal.image(of: 1, at: instant)
        let same = rebuilt == expected
        print(
            "  point-in-time recovery of volume-1 at \(elapsed(instant)): \(rebuilt.count) bytes, CRC32C "
                + "\(String(CRC32C.checksum(rebuilt), radix: 16)) — \(same ? "identical to" : "DIFFERENT from") the image kept then"
        )
        let verification = try journal.verify()
        print(
            "  verify: \(verification.records) records in \(verification.units) units, every checksum OK "
                + "(only the records inside the window are held: older ones were applied to the base image "
                + "and their units released)")
        try store.close()
        if !same { throw ExitCode(1) }
    }
}
