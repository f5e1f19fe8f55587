import FaultToleranceCore
import FaultToleranceNIO
import NIOCore
import NIOPosix
import Testing

@Suite("UDPTransport over loopback paths", .timeLimit(.minutes(10)))
struct UDPTransportTests {
    static let pathNames: [PathID] = ["p1", "p2", "p3"]

    /// Node a on 127.0.0.2-4 and node b on 127.0.0.5-7: one local address per path.
    static func start(_ node: NodeID, firstHost: Int, ports: [PathID: Int] = [:]) async throws -> UDPTransport {
        var paths: [PathID: SocketAddress] = [:]
        for (index, path) in pathNames.enumerated() {
            paths[path] = try SocketAddress(ipAddress: "127.0.0.\(firstHost + index)", port: ports[path] ?? 0)
        }
        return try await UDPTransport.start(configuration: .init(localNode: node, paths: paths))
    }

    static func connect(_ a: UDPTransport, _ b: UDPTransport) {
        for path in pathNames {
            if let address = b.localAddresses[path] { a.setPeer(b.localNode, path: path, address: address) }
            if let address = a.localAddresses[path] { b.setPeer(a.localNode, path: path, address: address) }
        }
    }

    @Test("a port already in use fails the start instead of sharing the datagrams")
    func portInUse() async throws {
        let first = try await Self.start("a", firstHost: 2)
        let ports = Dictionary(
            uniqueKeysWithValues: Self.pathNames.compactMap { path in
                first.localAddresses[path]?.port.map { (path, $0) }
            })
        #expect(ports.count == 3)
        do {
            let second = try await Self.start("b", firstHost: 2, ports: ports)
            await second.close()
            Issue.record("a second transport bound the ports of the first")
        } catch let error as TransportError {
            #expect(error.code == .startFailed)
        }
        await first.close()
    }

    @Test("each path delivers on its own address and tags arrivals with the path")
    func pathsAreSeparate() async throws {
        let a = try await Self.start("a", firstHost: 2)
        let b = try await Self.start("b", firstHost: 5)
        Self.connect(a, b)
        let inbox = Inbox(b.incoming)
        for path in Self.pathNames { try await a.send(.text("via \(path)"), to: "b", over: path) }
        let received = try await inbox.wait(count: 3)
        #expect(
            Set(received.map { "\($0.path?.name ?? "-"):\($0.message.text)" }) == [
                "p1:via p1", "p2:via p2", "p3:via p3",
            ])
        #expect(received.allSatisfy { $0.from == "a" })
        await a.close()
        await b.close()
    }

    @Test("closing a path stops traffic on it and nowhere else")
    func closingAPath() async throws {
        let a = try await Self.start("a", firstHost: 2)
        let b = try await Self.start("b", firstHost: 5)
        Self.connect(a, b)
        let inbox = Inbox(b.incoming)
        await b.closePath("p2")
        #expect(b.openPaths == ["p1", "p3"])
        try? await a.send(.text("lost"), to: "b", over: "p2")
        try await a.send(.text("one"), to: "b", over: "p1")
        try await a.send(.text("three"), to: "b", over: "p3")
        let received = try await inbox.wait(count: 2)
        #expect(Set(received.map(\.message.text)) == ["one", "three"])
        #expect(!received.contains { $0.path == "p2" })
        await #expect(throws: TransportError.self) { try await b.send(.text("x"), to: "a", over: "p2") }
        await a.close()
        await b.close()
    }

    @Test("garbage datagrams are dropped; the next good one is delivered")
    func garbage() async throws {
        let a = try await Self.start("a", firstHost: 2)
        let b = try await Self.start("b", firstHost: 5)
        Self.connect(a, b)
        let inbox = Inbox(b.incoming)
        let raw = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(to: try SocketAddress(ipAddress: "127.0.0.9", port: 0)).get()
        guard let target = b.localAddresses["p1"] else { throw Timeout(what: "an address for p1") }
        var junk = ByteBuffer()
        junk.writeBytes([UInt8](repeating: 0x46, count: 100))
        try await raw.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: junk)).get()
        var twoFrames = ByteBuffer()
        EnvelopeCodec.encode(.text("x"), from: "m", into: &twoFrames)
        EnvelopeCodec.encode(.text("y"), from: "m", into: &twoFrames)
        try await raw.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: twoFrames)).get()
        try await raw.close()
        try await a.send(.text("good"), to: "b", over: "p1")
        let received = try await inbox.wait(count: 1)
        #expect(received.map(\.message.text) == ["good"])
        await a.close()
        await b.close()
    }

    @Test("a datagram naming a configured peer from another address is dropped; the peer's own is delivered")
    func spoofedSenderIsDropped() async throws {
        let a = try await Self.start("a", firstHost: 2)
        let b = try await Self.start("b", firstHost: 5)
        Self.connect(a, b)
        let inbox = Inbox(b.incoming)
        let raw = try await DatagramBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .bind(to: try SocketAddress(ipAddress: "127.0.0.9", port: 0)).get()
        guard let target = b.localAddresses["p1"] else { throw Timeout(what: "an address for p1") }
        // Well-formed, checksummed, and claiming to come from a: but not from a's address.
        var forged = ByteBuffer()
        EnvelopeCodec.encode(.text("forged"), from: "a", into: &forged)
        try await raw.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: forged)).get()
        // A node without a configured address is not checked.
        var stranger = ByteBuffer()
        EnvelopeCodec.encode(.text("stranger"), from: "s", into: &stranger)
        try await raw.writeAndFlush(AddressedEnvelope(remoteAddress: target, data: stranger)).get()
        try await raw.close()
        try await a.send(.text("genuine"), to: "b", over: "p1")
        let received = try await inbox.wait(count: 2)
        #expect(Set(received.map(\.message.text)) == ["stranger", "genuine"])
        #expect(received.first { $0.message.text == "genuine" }?.from == "a")
        await a.close()
        await b.close()
    }

    @Test("a peer restarted on the same addresses receives again")
    func peerRestart() async throws {
        let a = try await Self.start("a", firstHost: 2)
        let b = try await Self.start("b", firstHost: 5)
        Self.connect(a, b)
        var ports: [PathID: Int] = [:]
        for path in Self.pathNames { ports[path] = b.localAddresses[path]?.port }
        await b.close()
        try? await a.send(.text("into the void"), to: "b", over: "p1")
        let restarted = try await Self.start("b", firstHost: 5, ports: ports)
        let inbox = Inbox(restarted.incoming)
        try await a.send(.text("again"), to: "b", over: "p3")
        let received = try await inbox.wait(count: 1)
        #expect(received.map(\.message.text) == ["again"])
        #expect(received.first?.path == "p3")
        await a.close()
        await restarted.close()
    }
}
