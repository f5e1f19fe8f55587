import DeterministicSimulation
import FaultToleranceCore
import LiveCopy
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// A transport that accepts `accepted` messages and then never completes a send: a receiver
/// that stopped reading, whose TCP window is full. Lives on the simulation's thread.
final class StallingTransport: Transport, @unchecked Sendable {
    private let inner: SimulatedTransport
    private let clock: VirtualClock
    private var accepted: Int

    init(_ inner: SimulatedTransport, clock: VirtualClock, accepted: Int) {
        self.inner = inner
        self.clock = clock
        self.accepted = accepted
    }

    var localNode: NodeID { inner.localNode }
    var incoming: EnvelopeStream { inner.incoming }

    func send(_ message: Message, to node: NodeID, over path: PathID?) async throws(TransportError) {
        if accepted > 0 {
            accepted -= 1
            try await inner.send(message, to: node, over: path)
            return
        }
        while true {
            do { try await clock.sleep(for: .seconds(3600)) } catch { throw TransportError(.closed, peer: node) }
        }
    }

    func close() async { await inner.close() }
}

/// Every wait on a peer ends, in virtual time: a stalled receiver or a refused frame ends the
/// copy with a typed error within the reply timeout, never a hang.
@Suite("Remote live copy: no wait without an end")
struct RemoteLiveCopyDeadlineTests {
    @Test("a receiver that stops reading mid-round fails the copy with a transport error after the reply timeout")
    func stalledReceiverEndsTheCopy() async throws {
        let world = AsyncSimulation(seed: 1)
        let (error, elapsed) = try await world.run(timeLimit: .seconds(600)) {
            () async throws -> (LiveCopyError?, Duration) in
            let memory = try TrackedMemory(pageCount: 4096)
            for page in 0..<4096 { try memory.storeWord(UInt64(page + 1), at: page * 4096) }
            let offline = try OfflineRegion(pageCount: 4096)
            let receiver = LiveCopyReceiver(transport: world.network.transport(for: "offline"), region: offline)
            let receiving = world.spawn { try await receiver.serveSession() }
            // The header and a few batches get through; then nothing does.
            let transport = StallingTransport(world.network.transport(for: "source"), clock: world.clock, accepted: 4)
            let destination = RemoteDestination(
                transport: transport, peer: "offline",
                options: .init(batchBytes: 64 << 10, maximumQueuedBytes: 256 << 10, replyTimeout: .seconds(5)),
                clock: world.clock)
            let copy = LiveCopy(source: memory, destination: destination, clock: world.clock)
            let start = world.clock.now
            var failure: LiveCopyError?
            do throws(LiveCopyError) { _ = try await copy.run() } catch { failure = error }
            receiving.cancel()
            return (failure, world.clock.now - start)
        }
        #expect(error?.code == .transport)
        #expect(elapsed >= .seconds(5) && elapsed < .seconds(6), "ended after \(elapsed)")
    }

    @Test("a frame the receiver refuses fails the copy at once with the receiver's reason")
    func refusedFrameEndsTheCopy() async throws {
        let world = AsyncSimulation(seed: 2)
        let (error, elapsed) = try await world.run(timeLimit: .seconds(600)) {
            () async throws -> (LiveCopyError?, Duration) in
            let memory = try TrackedMemory(pageCount: 4096)
            for page in 0..<4096 { try memory.storeWord(UInt64(page + 1), at: page * 4096) }
            // The receiver's region is smaller than it says: every batch past its end is refused.
            let offline = try OfflineRegion(pageCount: 4096)
            let receiverTransport = world.network.transport(for: "offline")
            let receiver = LiveCopyReceiver(transport: receiverTransport, region: offline)
            let receiving = world.spawn { try? await receiver.serveSession() }
            let sourceTransport = world.network.transport(for: "source")
            world.network.setConditions(
                LinkConditions(delay: .milliseconds(1) ... .milliseconds(1), bandwidth: Double(8 << 20)),
                from: "source",
                to: "offline")
            let destination = RemoteDestination(
                transport: sourceTransport, peer: "offline",
                options: .init(batchBytes: 64 << 10, maximumQueuedBytes: 256 << 10, replyTimeout: .seconds(30)),
                clock: world.clock)
            let copy = LiveCopy(source: memory, destination: destination, clock: world.clock)
            // A malformed frame from the source's own address, in the middle of the copy.
            world.spawn {
                try? await world.clock.sleep(for: .milliseconds(100))
                world.network.send(
                    Message(type: LiveCopyWire.MessageType.pageBatch, bytes: [1, 2, 3]), from: "source", to: "offline")
            }
            let start = world.clock.now
            var failure: LiveCopyError?
            do throws(LiveCopyError) { _ = try await copy.run() } catch { failure = error }
            _ = await receiving.value
            return (failure, world.clock.now - start)
        }
        #expect(error?.code == .malformedMessage)
        #expect(elapsed < .seconds(1), "ended after \(elapsed)")
    }
}

/// The receiver serves one copier: others are refused and counted, never reach the region and
/// never end the session. In virtual time.
@Suite("Live copy receiver: sessions pinned to their peer")
struct ReceiverSessionTests {
    static func filledMemory(pages: Int, seed: UInt64) throws -> TrackedMemory {
        let memory = try TrackedMemory(pageCount: pages)
        for page in 0..<pages { try memory.storeWord(UInt64(page) &* 31 &+ seed, at: page * 4096 + 8) }
        return memory
    }

    @Test("a second copier's begin and an attacker's frames are refused; the first copy completes intact")
    func intrudersAreRefused() async throws {
        let world = AsyncSimulation(seed: 3)
        let (identical, intruderError, refused) = try await world.run(timeLimit: .seconds(600)) {
            () async throws -> (Bool, LiveCopyError?, [String: Int]) in
            let memory = try Self.filledMemory(pages: 1024, seed: 1)
            let offline = try OfflineRegion(pageCount: 1024)
            let receiver = LiveCopyReceiver(transport: world.network.transport(for: "offline"), region: offline)
            let receiving = world.spawn { try await receiver.serveSession() }
            world.network.setConditions(
                LinkConditions(delay: .milliseconds(1) ... .milliseconds(1), bandwidth: Double(1 << 20)),
                from: "source", to: "offline")
            let copy = LiveCopy(
                source: memory,
                destination: RemoteDestination(
                    transport: world.network.transport(for: "source"), peer: "offline",
                    options: .init(batchBytes: 64 << 10, maximumQueuedBytes: 256 << 10), clock: world.clock),
                clock: world.clock)
            // While the copy runs: another copier begins, and an attacker sends a frame that
            // decodes (a page batch for the session it cannot know) and one that does not.
            let intruder = world.spawn { () async -> LiveCopyError? in
                try? await world.clock.sleep(for: .milliseconds(200))
                let other = try? Self.filledMemory(pages: 1024, seed: 2)
                guard let other else { return nil }
                let second = LiveCopy(
                    source: other,
                    destination: RemoteDestination(
                        transport: world.network.transport(for: "intruder"), peer: "offline",
                        options: .init(replyTimeout: .seconds(5)), clock: world.clock),
                    clock: world.clock)
                do throws(LiveCopyError) {
                    _ = try await second.run()
                    return nil
                } catch {
                    return error
                }
            }
            world.spawn {
                try? await world.clock.sleep(for: .milliseconds(300))
                world.network.send(
                    Message(type: LiveCopyWire.MessageType.pageBatch, bytes: [1, 2, 3]), from: "attacker",
                    to: "offline")
                world.network.send(
                    Message(type: LiveCopyWire.MessageType.barrier, bytes: [UInt8](repeating: 7, count: 16)),
                    from: "attacker", to: "offline")
            }
            _ = try await copy.run()
            await copy.detach()
            _ = try await receiving.value
            let identical = memory.withUnsafeBytes { a in offline.withUnsafeBytes { b in a.elementsEqual(b) } }
            return (identical, await intruder.value, receiver.refused)
        }
        #expect(identical)
        #expect(intruderError?.code == .sessionActive)
        #expect(refused["foreign-peer"] == 3)
    }

    @Test("garbage before any session does not stop the receiver; the copy that follows works")
    func garbageBeforeTheSession() async throws {
        let world = AsyncSimulation(seed: 4)
        let (identical, refused) = try await world.run(timeLimit: .seconds(600)) {
            () async throws -> (Bool, [String: Int]) in
            let memory = try Self.filledMemory(pages: 256, seed: 5)
            let offline = try OfflineRegion(pageCount: 256)
            let receiver = LiveCopyReceiver(transport: world.network.transport(for: "offline"), region: offline)
            let receiving = world.spawn { try await receiver.serveSession() }
            world.network.send(
                Message(type: LiveCopyWire.MessageType.verify, bytes: [9, 9, 9]), from: "attacker", to: "offline")
            try await world.clock.sleep(for: .milliseconds(10))
            let copy = LiveCopy(
                source: memory,
                destination: RemoteDestination(
                    transport: world.network.transport(for: "source"), peer: "offline", clock: world.clock),
                clock: world.clock)
            _ = try await copy.run()
            await copy.detach()
            _ = try await receiving.value
            let identical = memory.withUnsafeBytes { a in offline.withUnsafeBytes { b in a.elementsEqual(b) } }
            return (identical, receiver.refused)
        }
        #expect(identical)
        #expect(refused["malformed"] == 1)
    }
}

@Suite("Page batches: bounded before inflating")
struct PageBatchBoundsTests {
    static func deflatedHeader(count: Int, bodyLength: Int) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeMultipleIntegers(
            LiveCopyWire.version, PageBatch.deflatedFlag, UInt16(0), UInt64(1), UInt32(1), UInt32(count),
            UInt32(bodyLength), UInt32(0))
        buffer.writeBytes([0x78, 0x01, 0xED, 0xC1])  // the start of a deflate stream
        return buffer
    }

    @Test("a batch declaring more entries than the region has pages, or more than 64 MiB, is refused before inflating")
    func declaredSizesAreBounded() {
        for (count, pageCount) in [(100, 10), (20_000, 20_000)] {
            let payload = Self.deflatedHeader(count: count, bodyLength: count * (PageBatch.entryHeaderSize + 4096))
            #expect {
                _ = try PageBatch.decode(payload, pageSize: 4096, pageCount: pageCount)
            } throws: { error in
                (error as? LiveCopyError)?.code == .malformedMessage && "\(error)".contains("exceeds")
            }
        }
    }
}
