/// An error from etcd or the way to it.
public struct EtcdError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong.
    public enum Code: String, Sendable, Hashable {
        /// No connection, or it broke.
        case unavailable
        /// No answer within the call's timeout.
        case timedOut
        /// etcd answered with an error (its message in ``EtcdError/detail``).
        case refused
        /// The answer was not what the v3 JSON gateway sends.
        case malformed
        /// A key, value or answer beyond its limit.
        case tooLarge
    }

    /// The kind.
    public var code: Code
    /// What happened, for people.
    public var detail: String

    /// An error of `code`.
    public init(_ code: Code, detail: String) {
        self.code = code
        self.detail = detail
    }

    /// The error as people read it.
    public var description: String { "etcd \(code.rawValue): \(detail)" }
}

/// A key and its value as etcd holds them.
public struct EtcdKeyValue: Sendable, Hashable {
    /// The key.
    public var key: [UInt8]
    /// The value.
    public var value: [UInt8]
    /// The revision that created the key (it changes only when the key is deleted and made again).
    public var createRevision: Int64
    /// The revision of its last change.
    public var modRevision: Int64
    /// The lease it is bound to (0: none).
    public var lease: Int64

    /// A key and value.
    public init(key: [UInt8], value: [UInt8], createRevision: Int64, modRevision: Int64, lease: Int64) {
        self.key = key
        self.value = value
        self.createRevision = createRevision
        self.modRevision = modRevision
        self.lease = lease
    }
}

/// A lease etcd granted: keys bound to it go when it runs out unrenewed.
public struct EtcdLease: Sendable, Hashable {
    /// Its id.
    public var id: Int64
    /// The time to live etcd granted (it may exceed the one asked for: etcd grants at least
    /// 1.5 times its election timeout).
    public var ttl: Duration

    /// A lease.
    public init(id: Int64, ttl: Duration) {
        self.id = id
        self.ttl = ttl
    }
}

/// A condition of a transaction.
public enum EtcdCompare: Sendable, Hashable {
    /// The key's create revision is `revision` (0: the key does not exist).
    case createRevision(key: [UInt8], equals: Int64)
    /// The key's last change is `revision` (0: the key does not exist).
    case modRevision(key: [UInt8], equals: Int64)
}

/// A write in a transaction.
public enum EtcdWrite: Sendable, Hashable {
    /// Sets `key` to `value`, bound to `lease` (0: none).
    case put(key: [UInt8], value: [UInt8], lease: Int64)
    /// Deletes `key`.
    case delete(key: [UInt8])
}

/// A change a watch saw.
public enum EtcdEvent: Sendable, Hashable {
    /// A key was set.
    case put(EtcdKeyValue)
    /// A key was deleted (or its lease ran out) at `revision`.
    case delete(key: [UInt8], revision: Int64)
}

extension EtcdEvent {
    /// The key changed.
    public var key: [UInt8] {
        switch self {
        case .put(let value): value.key
        case .delete(let key, _): key
        }
    }
}

/// What the Failover module and others need of etcd: leases, revision-checked transactions,
/// ranges and watches. ``EtcdGateway`` speaks to a real etcd through its v3 JSON gateway;
/// ``MemoryEtcd`` is the same in memory, for tests.
public protocol EtcdClient: Sendable {
    /// Asks for a lease of `ttl` (etcd may grant more; read the returned TTL).
    func grant(ttl: Duration) async throws(EtcdError) -> EtcdLease
    /// Renews `lease`; returns its time to live, or `nil` when it has already run out.
    func keepAlive(_ lease: Int64) async throws(EtcdError) -> Duration?
    /// Ends `lease` now, deleting its keys (an unknown lease is not an error).
    func revoke(_ lease: Int64) async throws(EtcdError)
    /// Every key starting with `prefix`, in key order, and the store's revision.
    func range(prefix: [UInt8]) async throws(EtcdError) -> (revision: Int64, keys: [EtcdKeyValue])
    /// Applies `success` if every comparison holds, or `failure` if any does not, atomically.
    /// Returns whether the comparisons held and the store's revision after it.
    func transaction(compare: [EtcdCompare], success: [EtcdWrite], failure: [EtcdWrite])
        async throws(EtcdError) -> (succeeded: Bool, revision: Int64)
    /// The changes to keys starting with `prefix` from revision `start` on, in batches, until
    /// the consumer stops or the connection breaks (the stream then throws).
    func watch(prefix: [UInt8], from start: Int64) -> AsyncThrowingStream<[EtcdEvent], any Error>
}

extension EtcdClient {
    /// Sets `key` to `value` without conditions.
    public func put(_ key: [UInt8], _ value: [UInt8], lease: Int64 = 0) async throws(EtcdError) -> Int64 {
        try await transaction(compare: [], success: [.put(key: key, value: value, lease: lease)], failure: []).revision
    }
}

/// The end of the range of keys that start with `prefix`: the prefix with its last byte that is
/// not 0xFF raised by one (etcd's convention; `[0]` means every key after when none is).
func rangeEnd(of prefix: [UInt8]) -> [UInt8] {
    var end = prefix
    while let last = end.last {
        if last < 0xFF {
            end[end.count - 1] = last + 1
            return end
        }
        end.removeLast()
    }
    return [0]
}
