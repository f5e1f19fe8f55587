import FaultToleranceCore
import FaultToleranceNIO
import LiveCopy
import NIOCore
import Testing

@Suite(.serialized) struct RemoteLiveCopyTests {
    static func pair() async throws -> (TCPTransport, TCPTransport) {
        let any = try SocketAddress(ipAddress: "127.0.0.1", port: 0)
        let source = try await TCPTransport.start(configuration: .init(localNode: "online", bindAddress: any))
        let target = try await TCPTransport.start(configuration: .init(localNode: "offline", bindAddress: any))
        source.setPeer("offline", address: target.localAddress)
        target.setPeer("online", address: source.localAddress)
        return (source, target)
    }

    /// Two writer threads run throughout a copy over loopback TCP: both sides verify identical
    /// after the switchover, and duplicated mode keeps them identical.
    @Test(arguments: [false, true])
    func loopbackTCPWithWritersThroughout(compression: Bool) async throws {
        let (source, target) = try await Self.pair()
        let pageCount = 512
        let memory = try TrackedMemory(pageCount: pageCount)
        // Half the pages hold data, the rest stay zero (sent as zero entries or skipped).
        for page in stride(from: 0, to: pageCount, by: 2) { try memory.storeWord(UInt64(page) | 1, at: page * 4096) }
        let region = try OfflineRegion(pageCount: pageCount)
        let receiver = LiveCopyReceiver(transport: target, region: region)
        let served = Task { try await receiver.serveSession() }
        let writers = Writers(memory: memory, threads: 2, seed: 11)
        let destination = RemoteDestination(
            transport: source, peer: "offline", options: .init(compression: compression))
        // A generous budget: under ThreadSanitizer the copy runs at a few MB/s.
        let copy = LiveCopy(source: memory, destination: destination, policy: .adaptive(downtimeBudget: .seconds(5)))
        let report = try await copy.run()
        #expect(report.rounds[0].pages == pageCount)
        // The checksum pass after the switchover found nothing to recopy (it once found pages
        // whose mirrored writes had overtaken older ones in the send queue).
        #expect(report.pagesRecopied == 0)
        for _ in 0..<20 { try await Task.sleep(for: .milliseconds(5)) }
        try await writers.stop()
        // Everything mirrored is applied once a verification pass has gone through.
        #expect(try await copy.verify() == 0)
        #expect(identical(memory, region))
        await copy.detach()
        let summary = try await served.value

        #expect(summary.mirroredWrites > 0)
        #expect(summary.verifications > 0)
        await source.close()
        await target.close()
    }

    /// Zero pages do not travel (the receiver's region starts zeroed), and a page whose
    /// fingerprint is unchanged since it was sent is skipped.
    @Test func zeroAndUnchangedPagesDoNotTravel() async throws {
        let (source, target) = try await Self.pair()
        let memory = try TrackedMemory(pageCount: 256)
        for page in stride(from: 0, to: 256, by: 2) { try memory.storeWord(UInt64(page) + 1, at: page * 4096) }
        let region = try OfflineRegion(pageCount: 256)
        let served = Task { try await LiveCopyReceiver(transport: target, region: region).serveSession() }
        let destination = RemoteDestination(transport: source, peer: "offline")
        let copy = LiveCopy(source: memory, destination: destination)
        let report = try await copy.run()
        #expect(report.rounds[0].pagesSent == 128)
        #expect(identical(memory, region))
        // A page holding the bytes last sent is skipped by a round, but a forced recopy travels.
        var page = PageSet(pageCount: 256)
        page.insert(4)
        #expect(try await destination.copy(page, round: 99, from: memory) == 0)
        await memory.gate.pause()
        try destination.copyNow(page, from: memory)
        memory.gate.resume()
        #expect(try await copy.verify() == 0)
        await copy.detach()
        let summary = try await served.value
        #expect(summary.pages >= 129)
        await source.close()
        await target.close()
    }

    /// A receiver whose region has another geometry refuses the session with a typed error on
    /// both sides.
    @Test func receiverRefusesAnotherGeometry() async throws {
        let (source, target) = try await Self.pair()
        let receiver = LiveCopyReceiver(transport: target, region: try OfflineRegion(pageCount: 8))
        let served = Task { try await receiver.serveSession() }
        let copy = LiveCopy(
            source: try TrackedMemory(pageCount: 16), destination: RemoteDestination(transport: source, peer: "offline")
        )
        do {
            _ = try await copy.run()
            Issue.record("the copy should have been refused")
        } catch {
            #expect(error.code == .geometryMismatch)
        }
        await #expect(throws: LiveCopyError.self) { try await served.value }
        await source.close()
        await target.close()
    }

    /// As a Service the receiver serves session after session: a refused one (another
    /// geometry) does not stop it, and each finished one is published. The source side runs
    /// each session's destination on one demultiplexer channel, which (unlike a transport's
    /// own stream) can be iterated again after a destination's reader is cancelled.
    @Test func receiverServesSessionAfterSession() async throws {
        let (tcp, target) = try await Self.pair()
        let source = TransportDemultiplexer(tcp).channel(forBlock: 0x02)
        let region = try OfflineRegion(pageCount: 64)
        let receiver = LiveCopyReceiver(transport: target, region: region)
        let running = Task { try await receiver.run() }
        var sessions = receiver.sessions.makeAsyncIterator()
        // A source of another size is refused ...
        await #expect(throws: LiveCopyError.self) {
            _ = try await LiveCopy(
                source: try TrackedMemory(pageCount: 16),
                destination: RemoteDestination(transport: source, peer: "offline")
            ).run()
        }
        // ... and the next two sessions are served.
        for seed in 1...2 as ClosedRange<UInt64> {
            let memory = try TrackedMemory(pageCount: 64)
            for page in 0..<64 { try memory.storeWord(UInt64(page) &* seed | 1, at: page * 4096) }
            let copy = LiveCopy(source: memory, destination: RemoteDestination(transport: source, peer: "offline"))
            _ = try await copy.run()
            await copy.detach()
            let summary = try #require(await sessions.next())
            #expect(summary.pages == 64)
            #expect(identical(memory, region))
        }
        running.cancel()
        try await running.value
        #expect(await sessions.next() == nil)
        await tcp.close()
        await target.close()
    }
}
