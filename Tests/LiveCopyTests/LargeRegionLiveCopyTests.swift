import FaultToleranceCore
import FaultToleranceNIO
import LiveCopy
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// Forwards to a transport and runs `action` once, after the `after`-th page batch it sent.
final class TriggeringTransport: Transport {
    private let inner: any Transport
    private let after: Int
    private let action: @Sendable () async -> Void
    private let sent = NIOLockedValueBox(0)

    init(_ inner: any Transport, after: Int, action: @escaping @Sendable () async -> Void) {
        self.inner = inner
        self.after = after
        self.action = action
    }

    var localNode: NodeID { inner.localNode }
    var incoming: EnvelopeStream { inner.incoming }

    func send(_ message: Message, to node: NodeID, over path: PathID?) async throws(TransportError) {
        try await inner.send(message, to: node, over: path)
        guard message.type == LiveCopyWire.MessageType.pageBatch else { return }
        let count = sent.withLockedValue { count in
            count += 1
            return count
        }
        if count == after { await action() }
    }

    func close() async { await inner.close() }
}

/// A region past the size that once hung the sender (about 1 GiB), over real loopback TCP.
/// Not among CI's ThreadSanitizer suites: under the sanitizer 1.5 GiB takes minutes.
@Suite("Live copy of a 1.5 GiB region over loopback TCP", .timeLimit(.minutes(10)))
struct LargeRegionLiveCopyTests {
    @Test(
        "a malformed frame in the middle of the first round ends the copy with a typed error, well within the reply timeout"
    )
    func malformedFrameEndsTheCopy() async throws {
        let any = try SocketAddress(ipAddress: "127.0.0.1", port: 0)
        let online = try await TCPTransport.start(configuration: .init(localNode: "online", bindAddress: any))
        let offline = try await TCPTransport.start(configuration: .init(localNode: "offline", bindAddress: any))
        // Plain TCP: a sender's name is a claim, so this process can speak as "online".
        let intruder = try await TCPTransport.start(configuration: .init(localNode: "online", bindAddress: any))
        online.setPeer("offline", address: offline.localAddress)
        intruder.setPeer("offline", address: offline.localAddress)
        offline.setPeer("online", address: online.localAddress)

        let pageCount = 1536 * 256  // 1.5 GiB of 4 KiB pages
        let memory = try TrackedMemory(pageCount: pageCount)
        // One page in 16 holds data (96 MiB travel); the rest are zero entries.
        for page in stride(from: 0, to: pageCount, by: 16) { try memory.storeWord(UInt64(page) | 1, at: page * 4096) }
        let region = try OfflineRegion(pageCount: pageCount)
        let receiver = LiveCopyReceiver(transport: offline, region: region)
        let serving = Task { try await receiver.serveSession() }

        let injected = NIOLockedValueBox<ContinuousClock.Instant?>(nil)
        let replyTimeout = Duration.seconds(30)
        // After the 20th batch of round one, a frame that is not a page batch's, under the
        // copier's name.
        let triggering = TriggeringTransport(online, after: 20) {
            injected.withLockedValue { $0 = .now }
            try? await intruder.send(
                Message(type: LiveCopyWire.MessageType.pageBatch, bytes: [1, 2, 3]), to: "offline")
        }
        let copy = LiveCopy(
            source: memory,
            destination: RemoteDestination(
                transport: triggering, peer: "offline", options: .init(replyTimeout: replyTimeout)))
        var failure: LiveCopyError?
        do throws(LiveCopyError) {
            _ = try await copy.run()
        } catch {
            failure = error
        }
        let ended = ContinuousClock.now
        let start = try #require(injected.withLockedValue { $0 }, "the frame was injected")
        #expect(failure?.code == .malformedMessage, "the copy ended with \(String(describing: failure))")
        #expect(ended - start < replyTimeout, "ended \(ended - start) after the injection")
        serving.cancel()
        _ = await serving.result
        await intruder.close()
        await online.close()
        await offline.close()
    }
}
