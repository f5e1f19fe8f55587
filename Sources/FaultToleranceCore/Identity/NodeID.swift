/// The name of one participant (a process, a controller, a site) in a fault-tolerant group.
///
/// A thin wrapper over a short UTF-8 name, the way swift-system wraps a descriptor in
/// `FileDescriptor`: it costs nothing at run time and stops a path name from being passed
/// where a node name is expected. Names are limited to ``NodeID/maximumLength`` bytes so they
/// fit the one-byte length prefix of the wire envelope.
public struct NodeID: Hashable, Sendable, Comparable, CustomStringConvertible, ExpressibleByStringLiteral {
    /// The longest name in UTF-8 bytes that a wire envelope can carry.
    public static let maximumLength = 255

    /// The node's name.
    public let name: String

    /// Creates a node identity, or returns `nil` when the name is empty or longer than
    /// ``maximumLength`` UTF-8 bytes.
    public init?(_ name: String) {
        guard !name.isEmpty, name.utf8.count <= Self.maximumLength else { return nil }
        self.name = name
    }

    /// Creates a node identity from a literal; literals are checked by the programmer, so an
    /// invalid one is replaced by `"invalid"` rather than trapping.
    public init(stringLiteral value: String) {
        self.name = (value.isEmpty || value.utf8.count > Self.maximumLength) ? "invalid" : value
    }

    /// The node's name.
    public var description: String { name }

    /// Orders nodes by name, so tables and logs list them stably.
    public static func < (lhs: NodeID, rhs: NodeID) -> Bool { lhs.name < rhs.name }
}

/// The name of one independent communication path (a link, a NIC, a route) between nodes.
///
/// Heartbeat quorums count healthy paths, so paths need stable names of their own.
public struct PathID: Hashable, Sendable, Comparable, CustomStringConvertible, ExpressibleByStringLiteral {
    /// The path's name.
    public let name: String

    /// Creates a path identity, or returns `nil` when the name is empty or longer than
    /// ``NodeID/maximumLength`` UTF-8 bytes.
    public init?(_ name: String) {
        guard !name.isEmpty, name.utf8.count <= NodeID.maximumLength else { return nil }
        self.name = name
    }

    /// Creates a path identity from a literal; an invalid literal becomes `"invalid"`.
    public init(stringLiteral value: String) {
        self.name = (value.isEmpty || value.utf8.count > NodeID.maximumLength) ? "invalid" : value
    }

    /// The path's name.
    public var description: String { name }

    /// Orders paths by name.
    public static func < (lhs: PathID, rhs: PathID) -> Bool { lhs.name < rhs.name }
}

/// The identity of one storage unit inside a pool.
///
/// Unit identities are never reused by a pool, so a record that names a unit cannot be
/// confused with a later unit that happens to occupy the same file or region.
public struct UnitID: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The unit's number, unique within its pool.
    public let rawValue: UInt64

    /// Creates a unit identity from its number.
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    /// The unit's number in hexadecimal, as it appears in file names.
    public var description: String { "unit-" + String(rawValue, radix: 16) }

    /// Orders units by number (allocation order).
    public static func < (lhs: UnitID, rhs: UnitID) -> Bool { lhs.rawValue < rhs.rawValue }
}
