import Benchmark
import BenchmarkSupport
import DisasterRecovery
import ElasticJournal
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

// 5. RPO under a steady write load over loopback: a protected journal on files takes batches
//    of sixteen 4 KiB writes at a steady rate; JournalShipper ships it over TCPTransport to a
//    JournalReceiver appending to a recovery journal on files (fdatasync per batch). The RPO
//    (the age of the oldest durable write the recovery site has not acknowledged, as the
//    shipper's status shows acknowledgements) is sampled at every tick of the load, before
//    its batch. Baseline in the same run: the same batches at the same rate over a raw
//    loopback socket to a thread that pwrites each to a file, fdatasyncs and answers with
//    eight bytes; its round trip is the least an RPO can be. Ratio: the baseline's p99 round
//    trip over our p99 RPO (1 would be shipping at the cost of one bare round trip).

/// A loopback port that was free a moment ago.
func freeLoopbackPort() throws -> Int {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard descriptor >= 0 else { throw StorageError(.ioFailed, detail: "socket") }
    defer { close(descriptor) }
    var address = loopback(port: 0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(descriptor, $0, length) == 0 && getsockname(descriptor, $0, &length) == 0
        }
    }
    guard bound else { throw StorageError(.ioFailed, detail: "bind") }
    return Int(UInt16(bigEndian: address.sin_port))
}

func loopback(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = UInt16(port).bigEndian
    return address
}

/// Sends or receives exactly `count` bytes; false when the peer closed or a call failed.
func transfer(_ descriptor: Int32, _ buffer: UnsafeMutableRawPointer, _ count: Int, sending: Bool) -> Bool {
    var done = 0
    while done < count {
        let moved =
            sending
            ? send(descriptor, buffer + done, count - done, 0) : recv(descriptor, buffer + done, count - done, 0)
        if moved < 0, errno == EINTR { continue }
        guard moved > 0 else { return false }
        done += moved
    }
    return true
}

/// The baseline: batches of `batchBytes` at `interval` over a raw loopback socket to a thread
/// that writes each to `file` with fdatasync and answers; the round trips, sorted.
func rawReplicationRoundTrips(batches: Int, batchBytes: Int, interval: Duration, file: String) throws -> [Double] {
    let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard listener >= 0 else { throw StorageError(.ioFailed, detail: "socket") }
    defer { close(listener) }
    var address = loopback(port: 0)
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let listening = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(listener, $0, length) == 0 && getsockname(listener, $0, &length) == 0 && listen(listener, 1) == 0
        }
    }
    guard listening else { throw StorageError(.ioFailed, detail: "listen") }
    let target = open(file, O_CREAT | O_RDWR | O_TRUNC, 0o644)
    guard target >= 0 else { throw StorageError(.ioFailed, detail: "open \(file)") }
    let server = Thread {
        let connection = accept(listener, nil, nil)
        guard connection >= 0 else { return }
        defer { close(connection) }
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: batchBytes, alignment: 4096)
        defer { buffer.deallocate() }
        var offset = 0
        var answer: UInt64 = 0
        while transfer(connection, buffer, batchBytes, sending: false) {
            guard pwrite(target, buffer, batchBytes, off_t(offset)) == batchBytes, fdatasync(target) == 0 else {
                return
            }
            offset = (offset + batchBytes) % (64 << 20)
            answer &+= 1
            guard transfer(connection, &answer, 8, sending: true) else { return }
        }
    }
    server.start()
    defer { close(target) }
    let client = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard client >= 0 else { throw StorageError(.ioFailed, detail: "socket") }
    defer { close(client) }
    var one: Int32 = 1
    setsockopt(client, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(client, $0, length) == 0 }
    }
    guard connected else { throw StorageError(.ioFailed, detail: "connect") }
    let payload = UnsafeMutableRawPointer.allocate(byteCount: batchBytes, alignment: 4096)
    defer { payload.deallocate() }
    payload.initializeMemory(as: UInt8.self, repeating: 0x5A, count: batchBytes)
    var trips: [Double] = []
    let clock = ContinuousClock()
    let start = clock.now
    for batch in 0..<batches {
        // The same steady pace as the shipped run (a sleep paces the load; nothing is asserted on it).
        let due = start + interval * batch
        if clock.now < due { usleep(UInt32(max(0, seconds(due - clock.now)) * 1e6)) }
        var answer: UInt64 = 0
        let sent = clock.now
        guard transfer(client, payload, batchBytes, sending: true), transfer(client, &answer, 8, sending: false) else {
            throw StorageError(.ioFailed, detail: "the raw replication socket closed at batch \(batch)")
        }
        trips.append(seconds(clock.now - sent))
    }
    shutdown(client, Int32(SHUT_RDWR))
    return trips.sorted()
}

/// Our side: the RPO sampled after every batch, sorted; throws when the recovery site does
/// not end up holding every record.
func shippedRecoveryPointObjectives(
    batches: Int, interval: Duration, volumeBytes: Int, in directory: String
) async throws -> [Double] {
    let protectedStore = try JournalStore.create(
        directory: directory + "/protected", unitSize: 4 << 20, journalUnits: 64, volumes: [1],
        volumeSize: volumeBytes, configuration: JournalConfiguration(window: .seconds(3600), quota: 60), logger: quiet)
    defer { try? protectedStore.close() }
    guard let journal = protectedStore.journal(1) else { throw StorageError(.unknownUnit, detail: "no journal") }
    let shipped = ShippedClock()
    for folder in ["units", "base"] {
        try FileManager.default.createDirectory(
            atPath: directory + "/recovery/" + folder, withIntermediateDirectories: true)
    }
    let units = try FileStoragePool(
        directories: [directory + "/recovery/units"], unitCapacity: 4 << 20, budget: 64 << 22, logger: quiet)
    let bases = try FileStoragePool(
        directories: [directory + "/recovery/base"], unitCapacity: JournalFormat.baseHeaderSize + volumeBytes,
        budget: JournalFormat.baseHeaderSize + volumeBytes, logger: quiet)
    let recoveryStore = try JournalStore(
        journalPool: units, basePool: bases, clock: { shipped.now() }, logger: quiet)
    defer { try? recoveryStore.close() }
    let recoveryJournal = try recoveryStore.createJournal(
        1, configuration: JournalConfiguration(window: .seconds(3600), quota: 60), volumes: [1])
    let (protectedPort, recoveryPort) = (try freeLoopbackPort(), try freeLoopbackPort())
    let protectedTransport = try await TCPTransport.start(
        configuration: .init(
            localNode: "protected", bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: protectedPort),
            peers: ["recovery": try SocketAddress(ipAddress: "127.0.0.1", port: recoveryPort)]), logger: quiet)
    let recoveryTransport = try await TCPTransport.start(
        configuration: .init(
            localNode: "recovery", bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: recoveryPort),
            peers: ["protected": try SocketAddress(ipAddress: "127.0.0.1", port: protectedPort)]), logger: quiet)
    let shipper = JournalShipper(
        journal: journal, transport: protectedTransport, configuration: .init(recoverySite: "recovery"), logger: quiet)
    let receiver = JournalReceiver(
        journal: recoveryJournal, transport: recoveryTransport, protectedSite: "protected", clock: shipped,
        logger: quiet)
    let shipping = Task { await shipper.run() }
    let receiving = Task { await receiver.run() }
    defer {
        shipping.cancel()
        receiving.cancel()
    }
    let blocks = volumeBytes / 4096
    var samples: [Double] = []
    // Durable batches the recovery site has not acknowledged yet: their last sequence and when
    // they became durable. The RPO at an instant is the age of the oldest of them.
    var unacknowledged: [(sequence: UInt64, durable: ContinuousClock.Instant)] = []
    var oldest = 0
    let clock = ContinuousClock()
    let start = clock.now
    for batch in 0..<batches {
        try await clock.sleep(until: start + interval * batch)
        // Sampled at each tick, before the batch: what a disaster now would lose.
        let acknowledged = shipper.status.acknowledged
        while oldest < unacknowledged.count, unacknowledged[oldest].sequence <= acknowledged { oldest += 1 }
        let now = clock.now
        samples.append(oldest < unacknowledged.count ? seconds(now - unacknowledged[oldest].durable) : 0)
        let receipts = try await journal.append(
            contentsOf: (0..<16).map { index in
                let write = batch * 16 + index
                return JournalWrite(
                    volume: 1, offset: UInt64(write &* 7919 % blocks * 4096),
                    bytes: [UInt8](repeating: UInt8(truncatingIfNeeded: write | 1), count: 4096))
            })
        if let last = receipts.last { unacknowledged.append((last.sequence, clock.now)) }
    }
    // Every record reaches the recovery site (polled for up to 30 s).
    for _ in 0..<3000 where shipper.status.acknowledged < journal.durableSequence {
        try await clock.sleep(for: .milliseconds(10))
    }
    guard shipper.status.acknowledged == journal.durableSequence,
        recoveryJournal.durableSequence == journal.durableSequence
    else {
        throw StorageError(
            .ioFailed,
            detail: "the recovery site holds \(recoveryJournal.durableSequence) of \(journal.durableSequence) records")
    }
    shipping.cancel()
    receiving.cancel()
    await protectedTransport.close()
    await recoveryTransport.close()
    return samples.sorted()
}

func registerShippingBenchmark(runs: Benchmark.Configuration) {
    let rate = 2000
    let duration = mode.pick(full: 20.0, quick: 6.0, smoke: 2.0)
    let batches = Int(Double(rate) * duration) / 16
    let interval = Duration.seconds(16.0 / Double(rate))
    Benchmark(
        "RPO under a steady \(rate) writes/s (4 KiB) over loopback TCP vs a raw socket round trip with fdatasync",
        configuration: runs
    ) { benchmark in
        guard let scratch = Scratch(for: benchmark) else { return }
        defer { scratch.remove() }
        do {
            let rpo = try await shippedRecoveryPointObjectives(
                batches: batches, interval: interval, volumeBytes: 64 << 20, in: scratch.path)
            let raw = try rawReplicationRoundTrips(
                batches: batches, batchBytes: 16 * 4096, interval: interval, file: scratch.path + "/raw")
            let at = { (sorted: [Double], fraction: Double) in
                sorted[min(sorted.count - 1, Int(Double(sorted.count) * fraction))]
            }
            print(
                String(
                    format:
                        "  RPO p50 %.2f ms, p99 %.2f ms, max %.2f ms over %d batches; raw round trip p50 %.2f ms, p99 %.2f ms",
                    at(rpo, 0.5) * 1000, at(rpo, 0.99) * 1000, (rpo.last ?? 0) * 1000, batches, at(raw, 0.5) * 1000,
                    at(raw, 0.99) * 1000))
            record(
                ratio: at(raw, 0.99) / max(at(rpo, 0.99), 1e-9),
                as: .custom("raw round trip p99 / RPO p99", polarity: .prefersLarger), floor: 0.01, in: benchmark)
        } catch {
            fail(benchmark, "RPO benchmark failed: \(error)")
        }
    }
}
