#if TLS
    import FaultToleranceCore
    import FaultToleranceNIO
    import FaultToleranceTLS
    import Foundation
    import NIOCore
    import NIOPosix
    import Testing

    /// Mutual TLS on loopback: who may connect, who may speak as whom, and what is refused.
    @Suite("Mutual TLS on TCPTransport", .timeLimit(.minutes(10)))
    struct MutualTLSTests {
        static func start(
            _ node: NodeID, _ security: TCPTransport.Security, peers: [NodeID: SocketAddress] = [:],
            timeout: Duration = .seconds(10)
        ) async throws -> TCPTransport {
            try await TCPTransport.start(
                configuration: .init(
                    localNode: node, bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: 0), peers: peers,
                    connectAttempts: 1, partialFrameTimeout: timeout, security: security))
        }

        @Test("two nodes with certificates from one authority talk both ways, each sender as its certificate names it")
        func pairTalks() async throws {
            let authority = try NodeCertificateAuthority(name: "test")
            let a = try await Self.start("a", .secured(by: try authority.mutualTLS(for: ["a"])))
            let b = try await Self.start("b", .secured(by: try authority.mutualTLS(for: ["b"])))
            a.setPeer("b", address: b.localAddress)
            b.setPeer("a", address: a.localAddress)
            for index in 0..<100 { try await a.send(Message(type: 1, bytes: [UInt8(index)]), to: "b") }
            let big = Message(type: 2, bytes: (0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 13) })
            try await a.send(big, to: "b")
            try await b.send(Message(type: 3, bytes: [9]), to: "a")
            let atB = try await b.incoming.first(101)
            #expect(atB.prefix(100).map { $0.message.payload.readableBytesView.first } == (0..<100).map { UInt8($0) })
            #expect(atB.last?.message == big)
            #expect(atB.allSatisfy { $0.from == "a" })
            #expect(try await a.incoming.first(1).map(\.from) == ["b"])
            #expect(a.sendersRefused == 0 && b.sendersRefused == 0)
            await a.close()
            await b.close()
        }

        @Test("a holder of c's certificate cannot speak as a: its frames are refused and counted, none delivered")
        func impersonationRefused() async throws {
            let authority = try NodeCertificateAuthority(name: "test")
            let b = try await Self.start("b", .secured(by: try authority.mutualTLS(for: ["b"])))
            // A real credential for c, used by a transport that calls itself a.
            let impostor = try await Self.start(
                "a", .secured(by: Impostor(inner: try authority.mutualTLS(for: ["c"]))), peers: ["b": b.localAddress])
            try await impostor.send(Message(type: 1, bytes: [1]), to: "b")
            try await eventually("the frame from the impostor refused") { b.sendersRefused == 1 }
            // c speaking as c on the same credential is fine: the refusal was about the name.
            let honest = try await Self.start(
                "c", .secured(by: try authority.mutualTLS(for: ["c"])), peers: ["b": b.localAddress])
            try await honest.send(Message(type: 1, bytes: [2]), to: "b")
            let delivered = try await b.incoming.first(1)
            #expect(delivered.map(\.from) == ["c"])
            #expect(delivered.first?.message.payload.readableBytesView.first == 2)
            #expect(b.sendersRefused == 1)
            await impostor.close()
            await honest.close()
            await b.close()
        }

        @Test("a client with a certificate from another authority is refused in the handshake and counted")
        func untrustedAuthorityRefused() async throws {
            let authority = try NodeCertificateAuthority(name: "test")
            let stranger = try NodeCertificateAuthority(name: "another authority")
            let bTLS = try authority.mutualTLS(for: ["b"])
            let b = try await Self.start("b", .secured(by: bTLS))
            // The stranger trusts b's authority, so only b's side can refuse.
            let credential = try stranger.issue(for: ["m"])
            let mallory = try await Self.start(
                "m",
                .secured(
                    by: try MutualTLS(
                        certificateChainPEM: credential.certificatePEM, privateKeyPEM: credential.privateKeyPEM,
                        trustRootsPEM: authority.certificatePEM)), peers: ["b": b.localAddress])
            // In TLS 1.3 the client finishes its side of the handshake before the server has
            // checked the client's certificate, so this send may return; the frame is still never
            // delivered, since b refuses the handshake.
            try? await mallory.send(Message(type: 1, bytes: [1]), to: "b")
            try await eventually("b counts the failed handshake") { bTLS.failedHandshakes >= 1 }
            let honest = try await Self.start(
                "c", .secured(by: try authority.mutualTLS(for: ["c"])), peers: ["b": b.localAddress])
            try await honest.send(Message(type: 1, bytes: [2]), to: "b")
            #expect(try await b.incoming.first(1).map(\.from) == ["c"])
            #expect(b.sendersRefused == 0)
            await mallory.close()
            await honest.close()
            await b.close()
        }

        @Test("a plain TCP client's frames never reach a TLS listener")
        func plainClientRefused() async throws {
            let authority = try NodeCertificateAuthority(name: "test")
            let bTLS = try authority.mutualTLS(for: ["b"])
            let b = try await Self.start("b", .secured(by: bTLS))
            let plain = try await Self.start("a", .loopbackOnly, peers: ["b": b.localAddress])
            // The plain transport writes its frame without waiting for anything; the listener
            // reads it as a broken TLS handshake.
            try await plain.send(Message(type: 1, bytes: [1]), to: "b")
            try await eventually("the listener counts the failed handshake") { bTLS.failedHandshakes >= 1 }
            let honest = try await Self.start(
                "c", .secured(by: try authority.mutualTLS(for: ["c"])), peers: ["b": b.localAddress])
            try await honest.send(Message(type: 1, bytes: [2]), to: "b")
            #expect(try await b.incoming.first(1).map(\.from) == ["c"])
            await plain.close()
            await honest.close()
            await b.close()
        }

        @Test("a listener whose certificate names another node is never written to: authenticationFailed")
        func wrongServerNameRefused() async throws {
            let authority = try NodeCertificateAuthority(name: "test")
            // Configured as b's address, but the listener there is x.
            let x = try await Self.start("x", .secured(by: try authority.mutualTLS(for: ["x"])))
            let a = try await Self.start(
                "a", .secured(by: try authority.mutualTLS(for: ["a"])), peers: ["b": x.localAddress])
            do {
                try await a.send(Message(type: 1, bytes: [1]), to: "b")
                Issue.record("a sent to a listener that is not b")
            } catch let error as TransportError {
                #expect(error.code == .authenticationFailed)
                #expect(error.peer == "b")
            }
            await a.close()
            await x.close()
        }

        @Test("a connection that never finishes its handshake is closed by the timeout and counted")
        func stalledHandshakeClosed() async throws {
            let authority = try NodeCertificateAuthority(name: "test")
            let b = try await Self.start(
                "b", .secured(by: try authority.mutualTLS(for: ["b"])), timeout: .milliseconds(200))
            let silent = try await ClientBootstrap(group: MultiThreadedEventLoopGroup.singleton).connect(
                to: b.localAddress
            ).get()
            try await eventually("the listener closes the silent connection") {
                b.inboundConnections == 0 && !silent.isActive
            }
            #expect(b.sendersRefused == 1)
            try? await silent.close()
            await b.close()
        }

        @Test("plain TCP is refused on a non-loopback address unless chosen explicitly")
        func plainNeedsLoopbackOrInsecure() async throws {
            let wildcard = try SocketAddress(ipAddress: "0.0.0.0", port: 0)
            do {
                _ = try await TCPTransport.start(configuration: .init(localNode: "a", bindAddress: wildcard))
                Issue.record("plain TCP started on the wildcard address")
            } catch {
                #expect(error.code == .startFailed)
                #expect(error.detail?.contains(".insecure") == true)
            }
            let explicit = try await TCPTransport.start(
                configuration: .init(localNode: "a", bindAddress: wildcard, security: .insecure))
            await explicit.close()
            // A certificate that does not name the local node is a configuration error.
            let authority = try NodeCertificateAuthority(name: "test")
            do {
                _ = try await Self.start("a", .secured(by: try authority.mutualTLS(for: ["b"])))
                Issue.record("a transport started as a with b's certificate")
            } catch let error as TransportError {
                #expect(error.code == .startFailed)
            }
        }

        @Test("bad credentials are typed errors, not crashes")
        func badCredentials() throws {
            let authority = try NodeCertificateAuthority(name: "test")
            let issued = try authority.issue(for: ["a"])
            let other = try authority.issue(for: ["a"])
            let roots = try authority.certificatePEM
            #expect(throws: TLSSetupError.self) {
                try MutualTLS(
                    certificateChainPEM: "not a certificate", privateKeyPEM: issued.privateKeyPEM, trustRootsPEM: roots)
            }
            #expect(throws: TLSSetupError.self) {
                try MutualTLS(certificateChainPEM: issued.certificatePEM, privateKeyPEM: "no key", trustRootsPEM: roots)
            }
            #expect(throws: TLSSetupError.self) {
                try MutualTLS(
                    certificateChainPEM: issued.certificatePEM, privateKeyPEM: other.privateKeyPEM, trustRootsPEM: roots
                )
            }
            #expect(throws: TLSSetupError.self) {
                try MutualTLS(
                    certificateChainPEM: issued.certificatePEM, privateKeyPEM: issued.privateKeyPEM, trustRootsPEM: "")
            }
            let nameless = try authority.issue(for: [])
            #expect(throws: TLSSetupError.self) {
                try MutualTLS(
                    certificateChainPEM: nameless.certificatePEM, privateKeyPEM: nameless.privateKeyPEM,
                    trustRootsPEM: roots)
            }
            #expect(throws: TLSSetupError.self) {
                try MutualTLS(
                    certificateChainFile: "/nonexistent/a.pem", privateKeyFile: "/nonexistent/a.key",
                    trustRootsFile: "/nonexistent/ca.pem")
            }
            // A saved authority issues as the original did.
            let reloaded = try NodeCertificateAuthority(
                certificatePEM: try authority.certificatePEM, privateKeyPEM: authority.privateKeyPEM)
            #expect(try reloaded.mutualTLS(for: ["z"]).nodes == ["z"])
            let tls = try MutualTLS(
                certificateChainPEM: issued.certificatePEM, privateKeyPEM: issued.privateKeyPEM, trustRootsPEM: roots)
            #expect(tls.nodes == ["a"])
        }
    }

    /// A credential used under a node name it does not carry: skips the start-time check, so
    /// the listener's per-frame check is what stands in the way.
    struct Impostor: ConnectionSecurity {
        let inner: MutualTLS
        func validate(localNode: NodeID) throws(TransportError) {}
        func secure(_ channel: any Channel, connectingTo peer: NodeID?, identity: ConnectionIdentity) throws {
            try inner.secure(channel, connectingTo: peer, identity: identity)
        }
    }

    struct Timeout: Error, CustomStringConvertible {
        var what: String
        var description: String { "timed out waiting for \(what)" }
    }

    /// Polls `condition` until it holds; the bound only stops a broken test from hanging.
    func eventually(_ what: String, limit: Duration = .seconds(120), _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + limit
        while !condition() {
            guard ContinuousClock.now < deadline else { throw Timeout(what: what) }
            try await Task.sleep(for: .milliseconds(5))  // polling a condition set on another thread
        }
    }

    extension EnvelopeStream {
        /// The first `count` envelopes, or a timeout error after `limit`.
        func first(_ count: Int, limit: Duration = .seconds(120)) async throws -> [Envelope] {
            try await withThrowingTaskGroup(of: [Envelope]?.self) { group in
                group.addTask {
                    var received: [Envelope] = []
                    for await envelope in self {
                        received.append(envelope)
                        if received.count == count { break }
                    }
                    return received
                }
                group.addTask {
                    try await Task.sleep(for: limit)
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let received = first else {
                    throw Timeout(what: "\(count) envelopes")
                }
                return received
            }
        }
    }
#endif
