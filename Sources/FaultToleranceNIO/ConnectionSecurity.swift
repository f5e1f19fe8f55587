public import FaultToleranceCore
import NIOConcurrencyHelpers
public import NIOCore

/// How a ``TCPTransport`` secures its connections.
///
/// A security installs its handlers (TLS, a handshake) at the front of every new connection's
/// pipeline, before the transport's framing, and reports which node the far end proved to be.
/// On an inbound connection the transport then refuses every frame whose sender is not that
/// node, so a peer that holds a credential for `b` cannot speak as `a`.
///
/// `FaultToleranceTLS.MutualTLS` is the implementation this library ships: mutual TLS, with
/// each node's name in its certificate. A program with its own scheme conforms a type of its
/// own.
public protocol ConnectionSecurity: Sendable {
    /// Checks, when the transport starts, that this security can speak for `localNode` (its
    /// certificate names it); throws ``FaultToleranceCore/TransportError/Code/startFailed``
    /// with the reason when not.
    func validate(localNode: NodeID) throws(TransportError)

    /// Adds this security's handlers at the front of a new connection's pipeline, on the
    /// connection's event loop.
    ///
    /// - Parameters:
    ///   - channel: The new connection.
    ///   - peer: For an outbound connection, the node it must reach (the far end must prove to
    ///     be that node before any frame is written); `nil` for an inbound connection.
    ///   - identity: Where the security records, with ``ConnectionIdentity/authenticate(_:)``,
    ///     which nodes the far end proved to be once its handshake completes, or with
    ///     ``ConnectionIdentity/reject(_:)`` why it could not. No frame is delivered from an
    ///     inbound connection, and none is written to an outbound one, before it authenticates.
    func secure(_ channel: any Channel, connectingTo peer: NodeID?, identity: ConnectionIdentity) throws
}

/// The node a connection's far end proved to be, recorded by its ``ConnectionSecurity``.
///
/// Thread-safe; settled once, when the connection's handshake completes or fails.
public final class ConnectionIdentity: Sendable {
    private struct State {
        var nodes: Set<NodeID>?
        var rejection: String?
        var promise: EventLoopPromise<Set<NodeID>>?
    }

    private let state: NIOLockedValueBox<State>

    /// Creates an identity nobody has proved yet.
    public init() {
        state = NIOLockedValueBox(State())
    }

    /// An identity whose settling completes `promise`.
    init(promise: EventLoopPromise<Set<NodeID>>) {
        state = NIOLockedValueBox(State(promise: promise))
    }

    /// Records that the connection's far end proved to be `nodes` (the names its credential
    /// carries; a frame's sender must be one of them). Only the first settling counts.
    public func authenticate(_ nodes: Set<NodeID>) {
        let promise = state.withLockedValue { state -> EventLoopPromise<Set<NodeID>>? in
            guard state.nodes == nil, state.rejection == nil else { return nil }
            state.nodes = nodes
            defer { state.promise = nil }
            return state.promise
        }
        promise?.succeed(nodes)
    }

    /// Records that the far end could not prove who it is, and why; the connection is then
    /// closed by whoever called this. Only the first settling counts.
    public func reject(_ reason: String) {
        let promise = state.withLockedValue { state -> EventLoopPromise<Set<NodeID>>? in
            guard state.nodes == nil, state.rejection == nil else { return nil }
            state.rejection = reason
            defer { state.promise = nil }
            return state.promise
        }
        promise?.fail(TransportError(.authenticationFailed, detail: reason))
    }

    /// The authenticated nodes, or `nil` while none have been proved.
    public var nodes: Set<NodeID>? { state.withLockedValue { $0.nodes } }

    /// Why the far end was refused, once it was.
    public var rejection: String? { state.withLockedValue { $0.rejection } }
}

extension TCPTransport {
    /// Whether and how a transport's connections are secured.
    public struct Security: Sendable {
        enum Mode: Sendable {
            case loopbackOnly
            case insecure
            case secured(any ConnectionSecurity)
        }

        let mode: Mode

        /// Plain TCP, allowed only while the transport listens on a loopback address (the
        /// default): a listener on any other address must choose a security or say
        /// ``insecure`` explicitly.
        public static let loopbackOnly = Security(mode: .loopbackOnly)

        /// Plain TCP on any address: every host that can reach the port can send frames under
        /// any node's name. For networks the program trusts entirely.
        public static let insecure = Security(mode: .insecure)

        /// Every connection secured by `security` (for example mutual TLS), each inbound frame's
        /// sender checked against the node the connection proved to be.
        public static func secured(by security: any ConnectionSecurity) -> Security {
            Security(mode: .secured(security))
        }

        /// The security's own description, for logs.
        var name: String {
            switch mode {
            case .loopbackOnly: "loopback only"
            case .insecure: "insecure"
            case .secured(let security): "\(type(of: security))"
            }
        }
    }
}

extension SocketAddress {
    /// Whether the address is on the loopback interface (127.0.0.0/8 or ::1); a wildcard
    /// address is not.
    var isLoopback: Bool {
        switch self {
        case .v4: return ipAddress?.hasPrefix("127.") ?? false
        case .v6: return ipAddress == "::1" || (ipAddress?.hasPrefix("::ffff:127.") ?? false)
        case .unixDomainSocket: return true
        }
    }
}
