#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A key of the replicated store: up to ``maximumLength`` bytes, ordered byte by byte
/// (shorter first on a common prefix), as a B-tree or SQLite orders blobs.
public struct StoreKey: Hashable, Sendable, Comparable, CustomStringConvertible, ExpressibleByStringLiteral {
    /// The longest key, in bytes.
    public static let maximumLength = 1024

    /// The key's bytes.
    public let bytes: [UInt8]

    /// Creates a key from bytes; `nil` when empty or longer than ``maximumLength``.
    public init?(bytes: [UInt8]) {
        guard !bytes.isEmpty, bytes.count <= Self.maximumLength else { return nil }
        self.bytes = bytes
    }

    /// Creates a key from a string's UTF-8; `nil` when empty or too long.
    public init?(_ string: String) { self.init(bytes: Array(string.utf8)) }

    /// Creates a key from a literal (trapping on an empty or oversized literal: a programming error).
    public init(stringLiteral value: String) {
        precondition(!value.isEmpty && value.utf8.count <= Self.maximumLength, "store key literal out of range")
        self.bytes = Array(value.utf8)
    }

    /// Byte-wise order.
    public static func < (lhs: StoreKey, rhs: StoreKey) -> Bool {
        // memcmp over the common prefix: the generic lexicographicallyPrecedes compared one
        // element at a time and was a tenth of a primary's CPU in the write benchmark.
        let common = min(lhs.bytes.count, rhs.bytes.count)
        let order = lhs.bytes.withUnsafeBytes { left in
            rhs.bytes.withUnsafeBytes { right in
                // safe: keys are never empty, so both buffers have a base address.
                guard let left = left.baseAddress, let right = right.baseAddress else { return Int32(0) }
                return memcmp(left, right, common)
            }
        }
        return order != 0 ? order < 0 : lhs.bytes.count < rhs.bytes.count
    }

    /// Hashes the bytes as one block (the synthesized hash fed them to the hasher one at a time).
    public func hash(into hasher: inout Hasher) {
        hasher.combine(bytes.count)
        bytes.withUnsafeBytes { hasher.combine(bytes: $0) }
    }

    /// The key as UTF-8 when it is valid UTF-8, else in hex.
    public var description: String {
        if let text = String(validating: bytes, as: UTF8.self) { return text }
        return "0x" + bytes.map { String($0, radix: 16).leftPadded(to: 2) }.joined()
    }
}

extension String {
    fileprivate func leftPadded(to width: Int) -> String {
        count >= width ? self : String(repeating: "0", count: width - count) + self
    }
}

/// One operation on the replicated store. Each is applied in order on the primary and on
/// every backup; the result depends only on the store's state, so all reach the same one.
public enum StoreOperation: Sendable, Hashable {
    /// The longest value, in bytes.
    public static let maximumValueLength = 1 << 20
    /// The most operations in one batch.
    public static let maximumBatchCount = 1024

    /// Sets `key` to `value`.
    case put(key: StoreKey, value: [UInt8])
    /// Removes `key` (nothing when absent).
    case delete(key: StoreKey)
    /// Sets `key` to `new` (or removes it when `new` is `nil`) only if its current value is
    /// `expected` (`nil`: absent).
    case compareAndSet(key: StoreKey, expected: [UInt8]?, new: [UInt8]?)
    /// Applies every operation or none: none when any compare-and-set in it fails. No batch
    /// or configuration inside a batch.
    case batch([StoreOperation])
    /// Replaces the service configuration the store carries (replicated with the data, so a
    /// backup that is promoted adopts what the primary served with).
    case configure(ServiceConfiguration)

    /// Throws ``FailoverError/Code/tooLarge`` or ``FailoverError/Code/malformed`` when the
    /// operation breaks a limit: a value longer than ``maximumValueLength``, a batch of more than
    /// ``maximumBatchCount`` or one that nests a batch or a configuration.
    public func validate(nested: Bool = false) throws(FailoverError) {
        switch self {
        case .put(_, let value):
            try Self.check(value)
        case .delete:
            break
        case .compareAndSet(_, let expected, let new):
            if let expected { try Self.check(expected) }
            if let new { try Self.check(new) }
        case .batch(let operations):
            guard !nested else { throw FailoverError(.malformed, detail: "a batch inside a batch") }
            guard operations.count <= Self.maximumBatchCount else {
                throw FailoverError(
                    .tooLarge, detail: "batch of \(operations.count) operations, at most \(Self.maximumBatchCount)")
            }
            for operation in operations { try operation.validate(nested: true) }
        case .configure(let configuration):
            guard !nested else { throw FailoverError(.malformed, detail: "a configuration inside a batch") }
            try configuration.validate()
        }
    }

    private static func check(_ value: [UInt8]) throws(FailoverError) {
        guard value.count <= maximumValueLength else {
            throw FailoverError(.tooLarge, detail: "value of \(value.count) bytes, at most \(maximumValueLength)")
        }
    }
}

/// What an operation did. A client that asks again with the same request number gets the
/// same result without the operation being applied twice.
public enum OperationResult: Sendable, Hashable {
    /// Applied.
    case applied
    /// A compare-and-set (alone, or operation `index` of a batch) found another value:
    /// nothing was changed.
    case compareFailed(index: Int)
}

/// Where a replica stands: the epoch of the last entry it applied and that entry's index.
/// Indexes grow by one per entry across epochs; positions order by epoch, then index.
public struct LogPosition: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The epoch of the primary that wrote the entry.
    public var epoch: UInt64
    /// The entry's index (0: nothing applied).
    public var index: UInt64

    /// Creates a position.
    public init(epoch: UInt64, index: UInt64) {
        self.epoch = epoch
        self.index = index
    }

    /// Nothing applied.
    public static let start = LogPosition(epoch: 0, index: 0)

    /// By epoch, then index: Raft's "more up-to-date" order. A log whose last entry is of a
    /// newer epoch holds what that epoch's primary wrote; a longer log of an older epoch may end
    /// in entries no one acknowledged.
    public static func < (lhs: LogPosition, rhs: LogPosition) -> Bool {
        (lhs.epoch, lhs.index) < (rhs.epoch, rhs.index)
    }

    /// `epoch:index`.
    public var description: String { "\(epoch):\(index)" }
}

/// One entry of the replication log: an operation, where it stands, and the client request
/// it answers (client 0: none).
public struct ReplicationEntry: Sendable, Hashable {
    /// The entry's place in the log.
    public var position: LogPosition
    /// The client that asked (0: the server itself).
    public var client: UInt64
    /// The client's request number, its idempotency key.
    public var request: UInt64
    /// What to apply.
    public var operation: StoreOperation

    /// Creates an entry.
    public init(position: LogPosition, client: UInt64, request: UInt64, operation: StoreOperation) {
        self.position = position
        self.client = client
        self.request = request
        self.operation = operation
    }
}
