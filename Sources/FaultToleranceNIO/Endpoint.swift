public import FaultToleranceCore
public import NIOCore
public import ServiceLifecycle

/// An IP address and a port: how a program names where a transport listens and where its
/// peers are, without SwiftNIO's types (``TCPTransport/Configuration/init(localNode:listeningOn:peers:security:)``,
/// ``UDPTransport/Configuration/init(localNode:paths:peers:)``).
///
/// The host is an IPv4 or IPv6 literal (`"10.0.0.2"`, `"::1"`), or `"localhost"` for
/// `127.0.0.1`; names are not resolved, so a configuration never waits on DNS.
public struct Endpoint: Sendable, Hashable, CustomStringConvertible {
    /// The IP address, as written.
    public var host: String
    /// The port; 0 asks for a free one when listening.
    public var port: Int

    /// An endpoint at `host` and `port`.
    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// `host:port`, with brackets around an IPv6 host.
    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// The socket address, or ``FaultToleranceCore/TransportError/Code/startFailed`` naming
    /// what is wrong with the host or the port.
    public func socketAddress() throws(TransportError) -> SocketAddress {
        guard (0...65535).contains(port) else {
            throw TransportError(.startFailed, detail: "port \(port) of \(self) is not in 0...65535")
        }
        do {
            return try SocketAddress(ipAddress: host == "localhost" ? "127.0.0.1" : host, port: port)
        } catch {
            throw TransportError(
                .startFailed, detail: "\(host) is not an IP address (names are not resolved): \(error)")
        }
    }

    /// The endpoint of a socket address with an IP and a port (`nil` for a Unix socket).
    public init?(_ address: SocketAddress) {
        guard let host = address.ipAddress, let port = address.port else { return nil }
        self.init(host: host, port: port)
    }
}

extension TCPTransport.Configuration {
    /// A configuration from endpoints rather than NIO addresses: listens on `listeningOn`
    /// (port 0 picks one; read it back from ``TCPTransport/localEndpoint``), with each peer's
    /// endpoint. Other settings keep their defaults and can be set on the result. Throws
    /// ``FaultToleranceCore/TransportError/Code/startFailed`` for a host that is not an IP
    /// address or a port out of range.
    public init(
        localNode: NodeID, listeningOn endpoint: Endpoint, peers: [NodeID: Endpoint] = [:],
        security: TCPTransport.Security = .loopbackOnly
    ) throws(TransportError) {
        var addresses: [NodeID: SocketAddress] = [:]
        for (node, peer) in peers { addresses[node] = try peer.socketAddress() }
        self.init(localNode: localNode, bindAddress: try endpoint.socketAddress(), peers: addresses, security: security)
    }
}

extension TCPTransport: Service {
    /// Where the transport listens, with the real port when 0 was asked for.
    public var localEndpoint: Endpoint {
        // A listening TCP socket always has an IP address and a port.
        Endpoint(localAddress) ?? Endpoint(host: "", port: 0)
    }

    /// Adds or changes a peer's endpoint (see ``setPeer(_:address:)``).
    public func setPeer(_ node: NodeID, at endpoint: Endpoint) throws(TransportError) {
        setPeer(node, address: try endpoint.socketAddress())
    }

    /// As a ServiceLifecycle `Service`: waits until the group shuts down gracefully (or the task
    /// is cancelled), then closes the transport. List it before the services that use it:
    /// a `ServiceGroup` shuts services down in reverse order, so it closes last.
    public func run() async throws {
        await parkUntilShutdown()
        await close()
    }
}

extension UDPTransport.Configuration {
    /// A configuration from endpoints rather than NIO addresses: each path's local endpoint
    /// and each peer's endpoint on each path. Throws
    /// ``FaultToleranceCore/TransportError/Code/startFailed`` for a host that is not an IP
    /// address or a port out of range.
    public init(
        localNode: NodeID, paths: [PathID: Endpoint], peers: [NodeID: [PathID: Endpoint]] = [:]
    ) throws(TransportError) {
        var local: [PathID: SocketAddress] = [:]
        for (path, endpoint) in paths { local[path] = try endpoint.socketAddress() }
        var remote: [NodeID: [PathID: SocketAddress]] = [:]
        for (node, byPath) in peers {
            for (path, endpoint) in byPath { remote[node, default: [:]][path] = try endpoint.socketAddress() }
        }
        self.init(localNode: localNode, paths: local, peers: remote)
    }
}

extension UDPTransport: Service {
    /// Each path's local endpoint, with real ports when 0 was asked for.
    public var localEndpoints: [PathID: Endpoint] { localAddresses.compactMapValues(Endpoint.init) }

    /// As a ServiceLifecycle `Service`: waits until the group shuts down gracefully (or the task
    /// is cancelled), then closes the transport; list it before the services that use it.
    public func run() async throws {
        await parkUntilShutdown()
        await close()
    }
}
