import DequeModule
import FaultToleranceCore
public import NIOCore

/// The memory database: an ordered key-value state machine whose every operation becomes a
/// ``ReplicationEntry``. The primary calls ``execute(_:client:request:epoch:)``, which applies
/// the operation and returns the entry to replicate; a backup calls ``apply(_:)`` with the
/// entries in order and reaches the same state. A value type: no clock, no I/O.
///
/// Client requests are idempotent: the store remembers, per client, the last request number
/// it answered and the result (replicated with the entries), so a client that retries on a new
/// primary after a switch gets the first answer, not a second application. A client sends its
/// requests one at a time; a lower number than one answered is refused.
///
/// ```swift
/// var primary = ReplicatedStore()
/// var backup = ReplicatedStore()
/// let (entry, result) = try primary.execute(.put(key: "a", value: [1]), client: 7, request: 1, epoch: 1)
/// if let entry { _ = try backup.apply(entry) }
/// assert(primary.digest == backup.digest && result == .applied)
/// ```
public struct ReplicatedStore: Sendable {
    /// The most clients whose last answer is remembered; beyond it the one heard from longest
    /// ago is forgotten (its retry of that old request is then refused as stale, never re-applied).
    public static let maximumSessions = 65_536

    struct Session: Sendable, Hashable {
        var request: UInt64
        var result: OperationResult
        var index: UInt64
    }

    /// The last entry applied.
    public private(set) var position: LogPosition
    /// The service configuration the last ``StoreOperation/configure(_:)`` set.
    public private(set) var configuration: ServiceConfiguration?
    private var values: [StoreKey: [UInt8]] = [:]
    /// The keys in order, for range reads, snapshots and the digest.
    private var keys = SortedKeys()
    private var sessions: [UInt64: Session] = [:]

    /// An empty store.
    public init() { position = .start }

    /// The number of keys.
    public var count: Int { values.count }

    /// The value of `key`, or `nil`.
    public subscript(key: StoreKey) -> [UInt8]? { values[key] }

    /// Up to `limit` keys from `start` (inclusive) to `end` (exclusive, `nil`: the last), in order.
    public func range(from start: StoreKey? = nil, to end: StoreKey? = nil, limit: Int = .max) -> [(
        key: StoreKey, value: [UInt8]
    )] {
        var result: [(key: StoreKey, value: [UInt8])] = []
        for key in keys.keys(from: start) {
            guard result.count < max(0, limit) else { break }
            if let end, !(key < end) { break }
            if let value = values[key] { result.append((key, value)) }
        }
        return result
    }

    /// What the store answered `client` last, when it remembers: the request number, the result
    /// and the index of the entry that applied it.
    public func lastAnswer(for client: UInt64) -> (request: UInt64, result: OperationResult, index: UInt64)? {
        sessions[client].map { ($0.request, $0.result, $0.index) }
    }

    /// The epoch of the entry at `index` when `log` holds it or it is the last applied; nil otherwise.
    public func epoch(ofEntry index: UInt64, in log: ReplicationLog) -> UInt64? {
        if index == position.index { return position.epoch }
        if index == 0 { return 0 }
        return log.entry(at: index)?.position.epoch
    }

    /// Primary: applies `operation` for `client`'s `request` in `epoch` and returns the entry to
    /// replicate and the result. A repeat of the client's last request returns the remembered
    /// result and no entry (nothing is applied again). Throws, with nothing applied, for an
    /// operation beyond the limits, an epoch older than the store's, or a request number lower
    /// than the client's last.
    public mutating func execute(
        _ operation: StoreOperation, client: UInt64, request: UInt64, epoch: UInt64
    ) throws(FailoverError) -> (entry: ReplicationEntry?, result: OperationResult) {
        guard epoch >= position.epoch else {
            throw FailoverError.stale(requestEpoch: epoch, currentEpoch: position.epoch)
        }
        if client != 0, let session = sessions[client] {
            if session.request == request { return (nil, session.result) }
            guard request > session.request else {
                throw FailoverError(
                    .staleRequest, detail: "client \(client) request \(request), last answered \(session.request)")
            }
        }
        try operation.validate()
        guard position.index < .max else { throw FailoverError(.tooLarge, detail: "the log's indexes are used up") }
        let entry = ReplicationEntry(
            position: LogPosition(epoch: epoch, index: position.index + 1), client: client, request: request,
            operation: operation)
        guard entry.encodedSize <= ReplicationEntry.maximumEncodedSize else {
            throw FailoverError(.tooLarge, detail: "entry of \(entry.encodedSize) bytes")
        }
        return (entry, commit(entry))
    }

    /// Backup: applies the next entry. Throws, with nothing applied, when it does not follow the
    /// last one (``FailoverError/Code/outOfOrder``), is of an older epoch
    /// (``FailoverError/Code/staleEpoch``) or breaks a limit.
    @discardableResult
    public mutating func apply(_ entry: ReplicationEntry) throws(FailoverError) -> OperationResult {
        guard position.index < .max, entry.position.index == position.index + 1 else {
            throw FailoverError(
                .outOfOrder, detail: "entry \(entry.position) after \(position)")
        }
        guard entry.position.epoch >= position.epoch else {
            throw FailoverError.stale(requestEpoch: entry.position.epoch, currentEpoch: position.epoch)
        }
        try entry.operation.validate()
        return commit(entry)
    }

    private mutating func commit(_ entry: ReplicationEntry) -> OperationResult {
        let result = perform(entry.operation)
        position = entry.position
        if entry.client != 0 {
            sessions[entry.client] = Session(request: entry.request, result: result, index: entry.position.index)
            if sessions.count > Self.maximumSessions, let oldest = sessions.min(by: { $0.value.index < $1.value.index })
            {
                sessions[oldest.key] = nil
            }
        }
        return result
    }

    private mutating func perform(_ operation: StoreOperation) -> OperationResult {
        switch operation {
        case .batch(let operations):
            // All or nothing: check every compare-and-set against the state as the batch's
            // earlier operations leave it, then apply.
            var overlay: [StoreKey: [UInt8]?] = [:]
            for (index, operation) in operations.enumerated() {
                if case .compareAndSet(let key, let expected, _) = operation {
                    let current = overlay[key] ?? values[key]
                    guard current == expected else { return .compareFailed(index: index) }
                }
                switch operation {
                case .put(let key, let value): overlay[key] = .some(value)
                case .delete(let key): overlay[key] = .some(nil)
                case .compareAndSet(let key, _, let new): overlay[key] = .some(new)
                case .batch, .configure: break
                }
            }
            for operation in operations { _ = perform(operation) }
            return .applied
        case .put(let key, let value):
            set(key, value)
        case .delete(let key):
            set(key, nil)
        case .compareAndSet(let key, let expected, let new):
            guard values[key] == expected else { return .compareFailed(index: 0) }
            set(key, new)
        case .configure(let configuration):
            self.configuration = configuration
        }
        return .applied
    }

    private mutating func set(_ key: StoreKey, _ value: [UInt8]?) {
        if let value {
            if values.updateValue(value, forKey: key) == nil { keys.insert(key) }
        } else if values.removeValue(forKey: key) != nil {
            keys.remove(key)
        }
    }

    /// A 64-bit digest of the keys, values, configuration and position (FNV-1a over the
    /// ordered content): equal stores have equal digests.
    public var digest: UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        func mix<S: Sequence<UInt8>>(_ bytes: S) {
            for byte in bytes {
                hash ^= UInt64(byte)
                hash &*= 0x100_0000_01b3
            }
        }
        var buffer = ByteBuffer()
        buffer.writeMultipleIntegers(position.epoch, position.index)
        configuration?.encode(into: &buffer)
        mix(buffer.readableBytesView)
        for key in keys {
            mix(withUnsafeBytes(of: UInt32(key.bytes.count).littleEndian) { Array($0) })
            mix(key.bytes)
            let value = values[key] ?? []
            mix(withUnsafeBytes(of: UInt32(value.count).littleEndian) { Array($0) })
            mix(value)
        }
        return hash
    }
}

// MARK: - Snapshots

extension ReplicatedStore {
    static let snapshotFrameType: UInt16 = 0x0622
    static let snapshotVersion: UInt8 = 1
    /// Keys per snapshot chunk frame.
    static let snapshotChunkKeys = 4096

    /// The whole store as a sequence of checksummed frames (type 0x0622): a header frame
    /// (format version, position, configuration, client sessions, key count), then the keys and
    /// values in order, at most 4,096 per frame. A backup whose log no longer reaches back to
    /// the primary's starts from it (``init(snapshot:)``).
    public func snapshot() -> ByteBuffer {
        var out = ByteBuffer()
        var header = ByteBuffer()
        header.writeMultipleIntegers(
            Self.snapshotVersion, UInt8(0), position.epoch, position.index, UInt64(keys.count), endianness: .little)
        if let configuration {
            header.writeInteger(UInt8(1))
            configuration.encode(into: &header)
        } else {
            header.writeInteger(UInt8(0))
        }
        let ordered = sessions.sorted { $0.key < $1.key }
        header.writeInteger(UInt32(ordered.count), endianness: .little)
        for (client, session) in ordered {
            header.writeMultipleIntegers(client, session.request, session.index, endianness: .little)
            switch session.result {
            case .applied: header.writeInteger(UInt32.max, endianness: .little)
            case .compareFailed(let index): header.writeInteger(UInt32(truncatingIfNeeded: index), endianness: .little)
            }
        }
        Frame(type: Self.snapshotFrameType, payload: header).encode(into: &out)
        var batch: [StoreKey] = []
        batch.reserveCapacity(Self.snapshotChunkKeys)
        func writeBatch() {
            var chunk = ByteBuffer()
            chunk.writeMultipleIntegers(Self.snapshotVersion, UInt8(1), UInt32(batch.count), endianness: .little)
            for key in batch { StoreOperation.put(key: key, value: values[key] ?? []).encode(into: &chunk) }
            Frame(type: Self.snapshotFrameType, payload: chunk).encode(into: &out)
            batch.removeAll(keepingCapacity: true)
        }
        for key in keys {
            batch.append(key)
            if batch.count == Self.snapshotChunkKeys { writeBatch() }
        }
        if !batch.isEmpty { writeBatch() }
        return out
    }

    /// Rebuilds a store from ``snapshot()``'s bytes, checking every frame's checksum, the
    /// version, the key order and the counts; anything else throws ``FailoverError/Code/malformed``.
    public init(snapshot bytes: ByteBuffer) throws(FailoverError) {
        let frames: [Frame]
        do {
            frames = try FrameDecoder.decodeAll(bytes, maximumPayloadLength: 64 << 20)
        } catch {
            throw FailoverError(.malformed, detail: "snapshot frame: \(error)")
        }
        guard let first = frames.first, frames.allSatisfy({ $0.type == Self.snapshotFrameType }) else {
            throw FailoverError(.malformed, detail: "not a snapshot")
        }
        var header = first.payload
        guard
            let (version, kind, epoch, index, keyCount) = header.readMultipleIntegers(
                endianness: .little, as: (UInt8, UInt8, UInt64, UInt64, UInt64).self),
            version == Self.snapshotVersion, kind == 0
        else { throw FailoverError(.malformed, detail: "snapshot header invalid") }
        self.init()
        position = LogPosition(epoch: epoch, index: index)
        switch header.readInteger(as: UInt8.self) {
        case 0: configuration = nil
        case 1: configuration = try ServiceConfiguration.decode(from: &header)
        default: throw FailoverError(.malformed, detail: "snapshot configuration flag invalid")
        }
        guard let sessionCount = header.readInteger(endianness: .little, as: UInt32.self),
            Int(sessionCount) <= Self.maximumSessions, Int(sessionCount) * 28 <= header.readableBytes
        else { throw FailoverError(.malformed, detail: "snapshot session count invalid") }
        for _ in 0..<sessionCount {
            guard
                let (client, request, at, result) = header.readMultipleIntegers(
                    endianness: .little, as: (UInt64, UInt64, UInt64, UInt32).self)
            else { throw FailoverError(.malformed, detail: "snapshot session truncated") }
            let outcome: OperationResult = result == .max ? .applied : .compareFailed(index: Int(result))
            sessions[client] = Session(request: request, result: outcome, index: at)
        }
        guard header.readableBytes == 0 else { throw FailoverError(.malformed, detail: "snapshot header too long") }
        for frame in frames.dropFirst() {
            var chunk = frame.payload
            guard
                let (chunkVersion, chunkKind, count) = chunk.readMultipleIntegers(
                    endianness: .little, as: (UInt8, UInt8, UInt32).self),
                chunkVersion == Self.snapshotVersion, chunkKind == 1
            else { throw FailoverError(.malformed, detail: "snapshot chunk header invalid") }
            for _ in 0..<count {
                guard case .put(let key, let value) = try StoreOperation.decode(from: &chunk, nested: true) else {
                    throw FailoverError(.malformed, detail: "snapshot chunk holds a non-put")
                }
                guard keys.last.map({ $0 < key }) ?? true else {
                    throw FailoverError(.malformed, detail: "snapshot keys out of order at \(key)")
                }
                keys.append(key)
                values[key] = value
            }
            guard chunk.readableBytes == 0 else { throw FailoverError(.malformed, detail: "snapshot chunk too long") }
        }
        guard UInt64(keys.count) == keyCount else {
            throw FailoverError(.malformed, detail: "snapshot holds \(keys.count) keys, header says \(keyCount)")
        }
    }
}

/// The primary's recent entries, kept so a backup that was away catches up from them; bounded
/// by entries and bytes. Beyond it, ``entries(after:limit:)`` says a snapshot is needed.
public struct ReplicationLog: Sendable {
    /// The most entries kept.
    public let maximumEntries: Int
    /// The most encoded bytes kept.
    public let maximumBytes: Int
    private var entries: Deque<(entry: ReplicationEntry, size: Int)> = []
    /// Encoded bytes held.
    public private(set) var bytes = 0
    /// The index of the last entry appended (or the position the log started after).
    public private(set) var lastAppended: UInt64

    /// A log bounded by `maximumEntries` and `maximumBytes`, whose first entry will follow
    /// `index` (a store restored from a snapshot starts its log after the snapshot's position).
    public init(maximumEntries: Int = 100_000, maximumBytes: Int = 64 << 20, startingAfter index: UInt64 = 0) {
        self.maximumEntries = max(1, maximumEntries)
        self.maximumBytes = max(1, maximumBytes)
        lastAppended = index
    }

    /// The index of the oldest entry held (nil when empty).
    public var firstIndex: UInt64? { entries.first?.entry.position.index }
    /// The index of the newest entry held (nil when empty).
    public var lastIndex: UInt64? { entries.last?.entry.position.index }
    /// Entries held.
    public var count: Int { entries.count }

    /// Appends `entry` (which must follow the last one), dropping the oldest beyond the bounds.
    public mutating func append(_ entry: ReplicationEntry) {
        if entry.position.index != lastAppended &+ 1 {
            // Not the next entry (a store restored from a snapshot): what is held no longer joins up.
            entries.removeAll()
            bytes = 0
        }
        lastAppended = entry.position.index
        let size = entry.encodedSize
        entries.append((entry, size))
        bytes += size
        while entries.count > maximumEntries || (bytes > maximumBytes && entries.count > 1) {
            if let dropped = entries.popFirst() { bytes -= dropped.size }
        }
    }

    /// The entry at `index`, when held.
    public func entry(at index: UInt64) -> ReplicationEntry? {
        guard let first = firstIndex, index >= first, index <= lastAppended else { return nil }
        let offset = Int(index - first)
        return offset < entries.count ? entries[offset].entry : nil
    }

    /// Forgets every entry after `index` (a stepped-down primary's tail that no backup confirmed).
    public mutating func truncate(after index: UInt64) {
        while let last = entries.last, last.entry.position.index > index {
            bytes -= last.size
            entries.removeLast()
        }
        lastAppended = min(lastAppended, index)
    }

    /// Up to `limit` entries after `index`, in order; throws ``FailoverError/Code/snapshotNeeded``
    /// when the log no longer holds the entry after `index`.
    public func entries(after index: UInt64, limit: Int = 1024) throws(FailoverError) -> [ReplicationEntry] {
        if index >= lastAppended { return [] }
        guard let first = firstIndex else {
            throw FailoverError(
                .snapshotNeeded, detail: "the log holds nothing after \(lastAppended); \(index) needs a snapshot")
        }
        guard index + 1 >= first else {
            throw FailoverError(.snapshotNeeded, detail: "the log starts at \(first), after \(index)")
        }
        let start = Int(index + 1 - first)
        let end = min(entries.count, start + max(1, limit))
        return entries[start..<end].map(\.entry)
    }
}
