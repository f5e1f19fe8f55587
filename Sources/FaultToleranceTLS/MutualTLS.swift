#if TLS
    public import FaultToleranceCore
    public import FaultToleranceNIO
    import Foundation
    public import Metrics
    public import NIOCore
    import NIOSSL
    import NIOTLS
    import SwiftASN1
    import X509

    /// Mutual TLS for ``FaultToleranceNIO/TCPTransport``: both ends of every connection present a
    /// certificate that a trusted authority signed, and each certificate names the node it speaks
    /// for.
    ///
    /// A node's names are the DNS names in its certificate's subject alternative names: a
    /// certificate for node `b` carries `DNS:b`. An outbound connection to `b` is written to only
    /// after the far end proved to be `b` (its certificate names `b`); an inbound connection's
    /// frames are delivered only when their sender is a node the connection's certificate names,
    /// so a peer holding `c`'s credential cannot speak as `a`. TLS 1.3 only, over BoringSSL
    /// through swift-nio-ssl.
    ///
    /// The trust roots are this deployment's own authority, not the system's public ones: a
    /// certificate a public authority issued for some web site names no node here.
    ///
    /// ```swift
    /// let tls = try MutualTLS(
    ///     certificateChainFile: "/etc/ft/a.pem", privateKeyFile: "/etc/ft/a.key",
    ///     trustRootsFile: "/etc/ft/ca.pem")
    /// let transport = try await TCPTransport.start(configuration: .init(
    ///     localNode: "a", bindAddress: try SocketAddress(ipAddress: "10.0.0.1", port: 7000),
    ///     peers: ["b": try SocketAddress(ipAddress: "10.0.0.2", port: 7000)],
    ///     security: .secured(by: tls)))
    /// ```
    ///
    /// Failed handshakes are counted in `ft_tls_handshakes_failed` and refused senders in the
    /// transport's `ft_transport_senders_refused`.
    public struct MutualTLS: ConnectionSecurity {
        /// The nodes this credential speaks for (its certificate's DNS names).
        public let nodes: Set<NodeID>

        private let serverContext: NIOSSLContext
        private let clientContext: NIOSSLContext
        private let handshakesFailed: CountingCounter

        /// Handshakes that failed or ended with a peer refused (no certificate, an untrusted
        /// one, one for another node), since this value was made: the `ft_tls_handshakes_failed`
        /// metric.
        public var failedHandshakes: Int { handshakesFailed.value }

        /// Creates mutual TLS from PEM text: this node's certificate chain (its own certificate
        /// first), its private key, and the certificates of the authorities it trusts.
        ///
        /// Metrics go to `metricsFactory`, or to the process's `MetricsSystem` when it is `nil`.
        public init(
            certificateChainPEM: String, privateKeyPEM: String, trustRootsPEM: String,
            metricsFactory: (any MetricsFactory)? = nil
        ) throws(TLSSetupError) {
            let chain: [NIOSSLCertificate]
            let key: NIOSSLPrivateKey
            let roots: [NIOSSLCertificate]
            do {
                chain = try NIOSSLCertificate.fromPEMBytes(Array(certificateChainPEM.utf8))
            } catch {
                throw TLSSetupError(.invalidCertificate, detail: "certificate chain: \(error)")
            }
            do {
                key = try NIOSSLPrivateKey(bytes: Array(privateKeyPEM.utf8), format: .pem)
            } catch {
                throw TLSSetupError(.invalidPrivateKey, detail: "\(error)")
            }
            do {
                roots = try NIOSSLCertificate.fromPEMBytes(Array(trustRootsPEM.utf8))
            } catch {
                throw TLSSetupError(.invalidCertificate, detail: "trust roots: \(error)")
            }
            guard let leaf = chain.first else {
                throw TLSSetupError(.invalidCertificate, detail: "the certificate chain holds no certificate")
            }
            guard !roots.isEmpty else {
                throw TLSSetupError(.invalidCertificate, detail: "no trust roots: every peer would be refused")
            }
            let nodes: Set<NodeID>
            do {
                nodes = try Self.nodeNames(in: leaf)
            } catch {
                throw TLSSetupError(.invalidCertificate, detail: "\(error)")
            }
            guard !nodes.isEmpty else {
                throw TLSSetupError(
                    .invalidCertificate, detail: "the certificate names no node (no DNS subject alternative name)")
            }
            self.nodes = nodes

            var server = TLSConfiguration.makeServerConfigurationWithMTLS(
                certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key),
                trustRoots: .certificates(roots))
            server.minimumTLSVersion = .tlsv13
            var client = TLSConfiguration.makeClientConfiguration()
            client.minimumTLSVersion = .tlsv13
            client.certificateVerification = .noHostnameVerification
            client.trustRoots = .certificates(roots)
            client.certificateChain = chain.map { .certificate($0) }
            client.privateKey = .privateKey(key)
            do {
                serverContext = try NIOSSLContext(configuration: server)
                clientContext = try NIOSSLContext(configuration: client)
            } catch {
                throw TLSSetupError(.invalidPrivateKey, detail: "the key does not fit the certificate, or: \(error)")
            }
            handshakesFailed = CountingCounter(
                Counter(
                    label: "ft_tls_handshakes_failed", dimensions: [("node", nodes.sorted().first?.name ?? "?")],
                    factory: metricsFactory ?? MetricsSystem.factory))
        }

        /// Creates mutual TLS from PEM files (see ``init(certificateChainPEM:privateKeyPEM:trustRootsPEM:metricsFactory:)``).
        public init(
            certificateChainFile: String, privateKeyFile: String, trustRootsFile: String,
            metricsFactory: (any MetricsFactory)? = nil
        ) throws(TLSSetupError) {
            try self.init(
                certificateChainPEM: Self.read(certificateChainFile), privateKeyPEM: Self.read(privateKeyFile),
                trustRootsPEM: Self.read(trustRootsFile), metricsFactory: metricsFactory)
        }

        /// Throws unless the certificate names `localNode`.
        public func validate(localNode: NodeID) throws(TransportError) {
            guard nodes.contains(localNode) else {
                throw TransportError(
                    .startFailed,
                    detail: "the TLS certificate names \(nodes.sorted().map(\.name)), not the local node '\(localNode)'"
                )
            }
        }

        /// Adds the TLS handler and the handler that settles `identity` from the peer's certificate.
        public func secure(_ channel: any Channel, connectingTo peer: NodeID?, identity: ConnectionIdentity) throws {
            let tls: NIOSSLHandler
            if peer != nil {
                // No SNI and no hostname check by the library: the node name is checked against the
                // certificate's names below, before the transport writes a frame.
                tls = try NIOSSLClientHandler(context: clientContext, serverHostname: nil)
            } else {
                tls = NIOSSLServerHandler(context: serverContext)
            }
            try channel.pipeline.syncOperations.addHandler(tls)
            try channel.pipeline.syncOperations.addHandler(
                PeerIdentityHandler(expected: peer, identity: identity, handshakesFailed: handshakesFailed))
        }

        /// The node names a certificate carries: its DNS subject alternative names that are valid
        /// node names.
        static func nodeNames(in certificate: NIOSSLCertificate) throws -> Set<NodeID> {
            let parsed = try Certificate(derEncoded: certificate.toDERBytes())
            var nodes: Set<NodeID> = []
            for name in try parsed.extensions.subjectAlternativeNames ?? SubjectAlternativeNames() {
                if case .dnsName(let dns) = name, let node = NodeID(dns) { nodes.insert(node) }
            }
            return nodes
        }

        private static func read(_ path: String) throws(TLSSetupError) -> String {
            do {
                return try String(contentsOfFile: path, encoding: .utf8)
            } catch {
                throw TLSSetupError(.unreadableFile, detail: "\(path): \(error)")
            }
        }
    }

    /// Settles a connection's identity when its TLS handshake completes: the nodes the peer's
    /// verified certificate names, or the reason it is refused.
    final class PeerIdentityHandler: ChannelInboundHandler, RemovableChannelHandler {
        typealias InboundIn = ByteBuffer
        typealias InboundOut = ByteBuffer

        private let expected: NodeID?
        private let identity: ConnectionIdentity
        private let handshakesFailed: CountingCounter
        init(expected: NodeID?, identity: ConnectionIdentity, handshakesFailed: CountingCounter) {
            self.expected = expected
            self.identity = identity
            self.handshakesFailed = handshakesFailed
        }

        func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
            if case TLSUserEvent.handshakeCompleted = event {
                settle(context: context)
            }
            context.fireUserInboundEventTriggered(event)
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            if identity.nodes == nil {
                refuse("TLS handshake failed: \(error)", context: context)
            }
            context.fireErrorCaught(error)
        }

        func channelInactive(context: ChannelHandlerContext) {
            identity.reject("the connection closed before its TLS handshake completed")
            context.fireChannelInactive()
        }

        private func settle(context: ChannelHandlerContext) {
            // Verified against the trust roots by BoringSSL during the handshake.
            guard let tls = try? context.pipeline.syncOperations.handler(type: NIOSSLHandler.self),
                let certificate = tls.peerCertificate
            else {
                refuse("the peer presented no certificate", context: context)
                return
            }
            let nodes: Set<NodeID>
            do {
                nodes = try MutualTLS.nodeNames(in: certificate)
            } catch {
                refuse("the peer's certificate could not be read: \(error)", context: context)
                return
            }
            guard !nodes.isEmpty else {
                refuse("the peer's certificate names no node", context: context)
                return
            }
            if let expected, !nodes.contains(expected) {
                refuse(
                    "the peer's certificate names \(nodes.sorted().map(\.name)), not '\(expected)'", context: context)
                return
            }
            identity.authenticate(nodes)
        }

        private func refuse(_ reason: String, context: ChannelHandlerContext) {
            guard identity.nodes == nil, identity.rejection == nil else { return }
            handshakesFailed.increment()
            identity.reject(reason)
            context.close(promise: nil)
        }
    }

    @available(*, unavailable)
    extension PeerIdentityHandler: Sendable {}

    /// A TLS credential that could not be loaded.
    public struct TLSSetupError: Error, Sendable, Hashable, CustomStringConvertible {
        /// What was wrong.
        public struct Code: Hashable, Sendable, CustomStringConvertible {
            private let name: String
            private init(_ name: String) { self.name = name }

            /// A file could not be read.
            public static let unreadableFile = Code("unreadableFile")
            /// A certificate is not valid PEM, names no node, or the trust roots are empty.
            public static let invalidCertificate = Code("invalidCertificate")
            /// The private key is not valid PEM or does not belong to the certificate.
            public static let invalidPrivateKey = Code("invalidPrivateKey")

            /// The code's name.
            public var description: String { name }
        }

        /// What was wrong.
        public var code: Code
        /// More detail for people.
        public var detail: String

        /// Creates an error.
        public init(_ code: Code, detail: String) {
            self.code = code
            self.detail = detail
        }

        /// One line naming the code and the detail.
        public var description: String { "TLS setup error \(code): \(detail)" }
    }
#endif
