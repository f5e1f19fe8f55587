import ArgumentParser
import DaisyChain
import ElasticJournal
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import Logging
import NIOConcurrencyHelpers
import NIOCore

/// A fixed-size piece of a chain volume: one unit of a ``VolumeSlicePool``.
final class VolumeSlice: StorageUnit, @unchecked Sendable {
    // unchecked: immutable; the volume does its own locking.
    let id: UnitID
    let capacity: Int
    let volume: any StorageUnit
    let base: Int

    init(id: UnitID, capacity: Int, volume: any StorageUnit, base: Int) {
        self.id = id
        self.capacity = capacity
        self.volume = volume
        self.base = base
    }

    var location: String? { "\(volume.location ?? "volume") at \(base)" }

    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkBounds(offset: offset, count: buffer.count)
        try volume.read(into: buffer, at: base + offset)
    }

    func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkBounds(offset: offset, count: bytes.count)
        try volume.write(bytes, at: base + offset)
    }

    func synchronize() throws(StorageError) { try volume.synchronize() }

    func discard(_ range: Range<Int>) throws(StorageError) {
        try checkBounds(offset: range.lowerBound, count: range.count)
        try volume.discard((base + range.lowerBound)..<(base + range.upperBound))
    }
}

/// A volume cut into equal slices handed out as units, for the demo's journal on a chain.
/// The allocation lives in memory only (the demo's journal never restarts); the pools a
/// journal keeps across restarts are `FileStoragePool`s.
final class VolumeSlicePool: StoragePool, @unchecked Sendable {
    // unchecked: the state is behind its lock.
    let unitCapacity: Int
    let budget: Int
    private let volume: any StorageUnit
    private let base: Int
    private let state = NIOLockedValueBox((units: [VolumeSlice](), free: [Int](), nextID: UInt64(1)))

    /// Slices of `unitCapacity` bytes in `volume`'s bytes `base..<base + budget`; `firstID`
    /// keeps the identities of two pools on one volume apart.
    init(volume: any StorageUnit, base: Int, budget: Int, unitCapacity: Int, firstID: UInt64) {
        self.volume = volume
        self.base = base
        self.budget = budget
        self.unitCapacity = unitCapacity
        state.withLockedValue {
            $0.free = Array(0..<(budget / unitCapacity))
            $0.nextID = firstID
        }
    }

    var units: [VolumeSlice] { state.withLockedValue { $0.units } }

    func allocate() throws(StorageError) -> VolumeSlice {
        let slice: VolumeSlice? = state.withLockedValue { state in
            guard !state.free.isEmpty else { return nil }
            let index = state.free.removeFirst()
            let unit = VolumeSlice(
                id: UnitID(state.nextID), capacity: unitCapacity, volume: volume, base: base + index * unitCapacity)
            state.nextID += 1
            state.units.append(unit)
            return unit
        }
        guard let slice else {
            throw StorageError(.budgetExceeded, detail: "budget \(budget) bytes, units of \(unitCapacity)")
        }
        // A new unit reads as zeros, as every pool's does.
        let zeros = [UInt8](repeating: 0, count: unitCapacity)
        try slice.write(zeros, at: 0)
        return slice
    }

    func release(_ unit: UnitID) throws(StorageError) {
        let found = state.withLockedValue { state -> Bool in
            guard let index = state.units.firstIndex(where: { $0.id == unit }) else { return false }
            let slice = state.units.remove(at: index)
            state.free.append((slice.base - base) / unitCapacity)
            return true
        }
        if !found { throw StorageError(.unknownUnit, unit: unit) }
    }

    func quarantine(_ unit: UnitID) throws(StorageError) { try release(unit) }
}

/// The chain scene of `ftctl demo`: an elastic journal whose units and base image live on a
/// 4-element mirror chain of processes; the middle element is SIGKILLed during the writes and
/// started again, and catches up while the journal goes on.
struct ChainScene {
    var writes = 600

    func run() async throws {
        print("== Daisy chain: a journal on a 4-element mirror chain of processes, the middle one SIGKILLed")
        let dir = NSTemporaryDirectory() + "ftctl-chain-demo-\(getpid())"
        try? FileManager.default.removeItem(atPath: dir)
        defer {
            if ProcessInfo.processInfo.environment["FT_CHAIN_TRACE"] != "1" {
                try? FileManager.default.removeItem(atPath: dir)
            }
        }
        try ChainUp.parse([
            "--elements", "4", "--mode", "mirror", "--dir", dir, "--capacity-mib", "8", "--heartbeat-ms", "100",
        ])
        .run()
        defer { try? ChainDown.parse(["--dir", dir]).run() }
        let state = try ChainState.load(dir)
        let (transport, address) = try await chainControl(state, node: "host")
        var logger = Logger(label: "ftctl.demo.chain")
        logger.logLevel = .error
        let heartbeat = Duration.milliseconds(state.heartbeatMilliseconds)
        let host = ChainHost(
            node: "host", elements: state.elements.map(\.name), transport: transport,
            timing: ChainTiming(heartbeatInterval: heartbeat), address: address, logger: logger)
        let service = Task { try await host.run() }
        defer { service.cancel() }
        try await host.open()
        let volume = ChainVolume(host: host)
        print("  the host sees one volume of \(volume.capacity >> 20) MiB: chain \(chainLine(host))")

        // The journal: 64 KiB units in the volume's first 4 MiB, its base image after them.
        let volumeSize = 64 << 10
        let units = VolumeSlicePool(volume: volume, base: 0, budget: 4 << 20, unitCapacity: 64 << 10, firstID: 1)
        let bases = VolumeSlicePool(
            volume: volume, base: 4 << 20, budget: 1 << 20, unitCapacity: JournalFormat.baseHeaderSize + volumeSize,
            firstID: 1000)
        let clock = NIOLockedValueBox(Instant(nanoseconds: 0))
        let store = try JournalStore(
            journalPool: units, basePool: bases, clock: { clock.withLockedValue { $0 } }, logger: logger)
        let journal = try store.createJournal(
            1, configuration: JournalConfiguration(window: .seconds(2), quota: 48, durability: .groupCommit),
            volumes: [1])
        var image = [UInt8](repeating: 0, count: volumeSize)
        let wall = ContinuousClock()
        // The slowest write of each phase: before the kill, while e1 is gone, after its restart.
        var slowest = [(Duration, Int)](repeating: (.zero, 0), count: 3)
        for step in 1...writes {
            clock.withLockedValue { $0 = $0 + .milliseconds(10) }
            if step == writes / 3 {
                try ChainKill.parse(["e1", "--dir", dir]).run()
                print("  write \(step): SIGKILL e1 (the second element); writes go on")
            }
            if step == 2 * writes / 3 {
                try ChainRestart.parse(["e1", "--dir", dir]).run()
                print("  write \(step): e1 started again over its drive; it catches up while writes go on")
            }
            let offset = (step * 7919 % (volumeSize / 4096)) * 4096
            let bytes = (0..<4096).map { UInt8(truncatingIfNeeded: $0 &* step &+ step) }
            let started = wall.now
            _ = try await journal.append(volume: 1, offset: UInt64(offset), bytes: bytes)
            let took = wall.now - started
            let phase = step < writes / 3 ? 0 : step < 2 * writes / 3 ? 1 : 2
            if took > slowest[phase].0 { slowest[phase] = (took, step) }
            image.replaceSubrange(offset..<offset + 4096, with: bytes)
            if step % 25 == 0 { try journal.maintain() }
            if step == writes / 3 + 20 { print("  after the kill: chain \(chainLine(host))") }
        }
        print(
            "  \(writes) journal writes, each durable on every linked element; the slowest: "
                + "\(milliseconds(slowest[0].0)) before the kill, \(milliseconds(slowest[1].0)) while e1 was gone "
                + "(write \(slowest[1].1): the chain re-linked around it after 2.5 silent heartbeats), "
                + "\(milliseconds(slowest[2].0)) while it rejoined")
        // Until e1 is linked again with its catch-up done: the host's register is polled every
        // 50 ms (a demo's wait for another process, at most 30 s; no result depends on when
        // the poll happens to look).
        let deadline = wall.now + .seconds(30)
        while wall.now < deadline {
            if let member = host.register?.member("e1"), member.linked, member.drive.state == .ready { break }
            try await Task.sleep(for: .milliseconds(50))
        }
        print("  chain \(chainLine(host))")
        let rebuilt = try journal.image(of: 1, at: clock.withLockedValue { $0 })
        let same = rebuilt == image
        print(
            "  the journal's volume rebuilt from the chain: \(rebuilt.count) bytes, "
                + "\(same ? "identical to" : "DIFFERENT from") what was written")
        let verification = try journal.verify()
        print("  verify: \(verification.records) records in \(verification.units) units, every checksum OK")
        try store.close()
        guard same, host.register?.member("e1")?.linked == true else { throw ExitCode(1) }
        await transport.close()
    }

    private func chainLine(_ host: ChainHost) -> String {
        guard let register = host.register else { return "-" }
        return register.members.map { "\($0.node)\($0.linked ? "" : "(cut)"):\($0.drive.state)" }
            .joined(separator: " ") + " (generation \(register.generation))"
    }

    private func milliseconds(_ duration: Duration) -> String {
        let (seconds, attoseconds) = duration.components
        return String(format: "%.0f ms", Double(seconds) * 1000 + Double(attoseconds) / 1e15)
    }
}
