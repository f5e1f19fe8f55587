import FaultToleranceCore
public import FaultToleranceNIO
public import LiveCopy
import NIOCore

#if canImport(Glibc)
    import Glibc
#endif

/// The two ends' securities for a loopback run: plain TCP unless a benchmark secures them.
public struct LoopbackSecurity: Sendable {
    /// The sending (or copying) side's.
    public var sender: TCPTransport.Security
    /// The receiving side's.
    public var receiver: TCPTransport.Security

    /// Both sides as given.
    public init(sender: TCPTransport.Security, receiver: TCPTransport.Security) {
        self.sender = sender
        self.receiver = receiver
    }

    /// Plain TCP on both sides.
    public static let plain = LoopbackSecurity(sender: .loopbackOnly, receiver: .loopbackOnly)
}

/// Moves `count` messages of `size` bytes from node a to node b through two TCPTransports on
/// loopback, until b has received them all.
public func transferOverTCP(count: Int, size: Int, security: LoopbackSecurity = .plain) async throws {
    let any = try SocketAddress(ipAddress: "127.0.0.1", port: 0)
    let a = try await TCPTransport.start(
        configuration: .init(localNode: "a", bindAddress: any, security: security.sender))
    let b = try await TCPTransport.start(
        configuration: .init(localNode: "b", bindAddress: any, security: security.receiver))
    a.setPeer("b", address: b.localAddress)
    let message = Message(type: 1, bytes: [UInt8](repeating: 7, count: size))
    let receiver = Task {
        var received = 0
        for await _ in b.incoming {
            received += 1
            if received == count { break }
        }
    }
    for _ in 0..<count { try await a.send(message, to: "b") }
    await receiver.value
    await a.close()
    await b.close()
}

/// A tracked region of `pages` 4 KiB pages, every one holding nonzero data.
public func filledMemory(pages: Int) throws -> TrackedMemory {
    let memory = try TrackedMemory(pageCount: pages)
    var word: UInt64 = 0x1234_5678
    for page in 0..<pages {
        word = word &* 6_364_136_223_846_793_005 &+ 1
        for slot in stride(from: 0, to: 4096, by: 512) {
            try memory.storeWord(word ^ UInt64(slot), at: page * 4096 + slot)
        }
    }
    return memory
}

/// The seconds round one of a live copy of `memory` takes over loopback TCP
/// (RemoteDestination -> LiveCopyReceiver into a populated region).
public func remoteRoundOne(_ memory: TrackedMemory, security: LoopbackSecurity = .plain) async throws -> Double {
    try await remoteRoundOneMeasured(memory, security: security).seconds
}

/// Seconds of CPU (user and system, every thread) this process has used so far.
public func processCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    return Double(usage.ru_utime.tv_sec) + Double(usage.ru_utime.tv_usec) / 1e6 + Double(usage.ru_stime.tv_sec)
        + Double(usage.ru_stime.tv_usec) / 1e6
}

/// ``remoteRoundOne(_:security:)`` with the CPU the process used from the start of the copy to
/// the end of round one (both ends of the connection are in this process).
public func remoteRoundOneMeasured(
    _ memory: TrackedMemory, security: LoopbackSecurity = .plain
) async throws -> (seconds: Double, cpuSeconds: Double) {
    let any = try SocketAddress(ipAddress: "127.0.0.1", port: 0)
    let online = try await TCPTransport.start(
        configuration: .init(localNode: "online", bindAddress: any, security: security.sender))
    let offline = try await TCPTransport.start(
        configuration: .init(localNode: "offline", bindAddress: any, security: security.receiver))
    online.setPeer("offline", address: offline.localAddress)
    offline.setPeer("online", address: online.localAddress)
    // The offline side's memory is resident before the copy (the baselines write nowhere).
    let region = try OfflineRegion(pageCount: memory.pageCount, populate: true)
    let receiver = Task { try await LiveCopyReceiver(transport: offline, region: region).serveSession() }
    let copy = LiveCopy(source: memory, destination: RemoteDestination(transport: online, peer: "offline"))
    let roundOneEnded = Task { () -> Double in
        for await event in copy.progress {
            if case .roundFinished = event { return processCPUSeconds() }
        }
        return .nan
    }
    let started = processCPUSeconds()
    let report = try await copy.run()
    let cpu = await roundOneEnded.value - started
    await copy.detach()
    _ = try await receiver.value
    await online.close()
    await offline.close()
    return (seconds(report.rounds[0].duration), cpu)
}
