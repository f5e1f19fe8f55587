import FaultToleranceCore
import FaultToleranceNIO
import NIOCore
import NIOPosix
import Testing

/// The transport's side of a ``ConnectionSecurity``, without TLS: what it does with the
/// identity a security settles (FaultToleranceTLS's tests cover TLS itself).
@Suite("TCPTransport with a connection security", .timeLimit(.minutes(10)))
struct ConnectionSecurityTests {
    /// A stand-in security: inbound connections authenticate as `inbound` as soon as they
    /// open (nil: never), outbound ones as `outbound` (nil: the peer they are for; empty:
    /// never).
    struct Scripted: ConnectionSecurity {
        var inbound: Set<NodeID>?
        var outbound: Set<NodeID>?

        func validate(localNode: NodeID) throws(TransportError) {}

        func secure(_ channel: any Channel, connectingTo peer: NodeID?, identity: ConnectionIdentity) throws {
            let nodes: Set<NodeID>? = peer.map { outbound ?? [$0] } ?? inbound
            guard let nodes, !nodes.isEmpty else { return }
            identity.authenticate(nodes)
        }
    }

    static func start(_ node: NodeID, _ security: Scripted, peers: [NodeID: SocketAddress] = [:])
        async throws -> TCPTransport
    {
        try await TCPTransport.start(
            configuration: .init(
                localNode: node, bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: 0), peers: peers,
                connectAttempts: 1, partialFrameTimeout: .milliseconds(300),
                security: .secured(by: security)))
    }

    @Test("frames from the authenticated node are delivered; a frame under another name closes the connection")
    func senderBoundToIdentity() async throws {
        let b = try await Self.start("b", Scripted(inbound: ["c"]))
        let c = try await Self.start("c", Scripted(), peers: ["b": b.localAddress])
        let inbox = Inbox(b.incoming)
        try await c.send(.text("from c"), to: "b")
        #expect(try await inbox.wait(count: 1).map(\.from) == ["c"])
        // The same identity, a frame claiming to be a.
        let a = try await Self.start("a", Scripted(), peers: ["b": b.localAddress])
        try await a.send(.text("from a"), to: "b")
        try await inbox.wait(for: "the refusal", until: { _ in b.sendersRefused == 1 })
        try await c.send(.text("again from c"), to: "b")
        let received = try await inbox.wait(count: 2)
        #expect(received.map(\.message.text) == ["from c", "again from c"])
        await a.close()
        await c.close()
        await b.close()
    }

    @Test("an inbound connection that never authenticates is closed at the timeout and counted; nothing is delivered")
    func inboundNeverAuthenticates() async throws {
        let b = try await Self.start("b", Scripted(inbound: nil))
        let a = try await Self.start("a", Scripted(), peers: ["b": b.localAddress])
        let inbox = Inbox(b.incoming)
        try await a.send(.text("unauthenticated"), to: "b")
        try await inbox.wait(for: "the connection closed", until: { _ in b.sendersRefused == 1 })
        #expect(inbox.envelopes.isEmpty)
        await a.close()
        await b.close()
    }

    @Test("an outbound connection that never authenticates, or proves to be another node, fails the send")
    func outboundMustAuthenticate() async throws {
        let b = try await Self.start("b", Scripted(inbound: ["a"]))
        let silent = try await Self.start("a", Scripted(outbound: []), peers: ["b": b.localAddress])
        do {
            try await silent.send(.text("x"), to: "b")
            Issue.record("sent over a connection that never authenticated")
        } catch {
            #expect(error.code == .authenticationFailed)
        }
        let misdirected = try await Self.start("a", Scripted(outbound: ["x"]), peers: ["b": b.localAddress])
        do {
            try await misdirected.send(.text("x"), to: "b")
            Issue.record("sent to a peer that proved to be x")
        } catch {
            #expect(error.code == .authenticationFailed)
            #expect(error.detail?.contains("not 'b'") == true)
        }
        await silent.close()
        await misdirected.close()
        await b.close()
    }
}
