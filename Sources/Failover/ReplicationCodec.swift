import FaultToleranceCore
public import NIOCore

// The replication log's encoding (little-endian):
//
//   entry      := version:u8 (1) epoch:u64 index:u64 client:u64 request:u64 operation
//   operation  := 1 key value                      put
//               | 2 key                            delete
//               | 3 key optional optional          compare-and-set (expected, new)
//               | 4 count:u16 operation*           batch (no batch or configure inside)
//               | 5 configuration                  configure (ServiceConfiguration.encode)
//   key        := length:u16 (1...1024) bytes
//   value      := length:u32 (...1 MiB) bytes
//   optional   := 0 | 1 value
//
// On the wire entries travel in a message whose frame carries the CRC32C; on disk each is
// one `Frame` of type 0x0621 (``ReplicationEntry/framed()``).

extension ReplicationEntry {
    static let formatVersion: UInt8 = 1
    static let frameType: UInt16 = 0x0621

    /// Appends the entry's encoding to `buffer`.
    public func encode(into buffer: inout ByteBuffer) {
        buffer.writeMultipleIntegers(
            Self.formatVersion, position.epoch, position.index, client, request, endianness: .little)
        operation.encode(into: &buffer)
    }

    /// The entry's encoded size in bytes.
    public var encodedSize: Int { 33 + operation.encodedSize }

    /// Decodes an entry from the front of `buffer`, throwing ``FailoverError/Code/malformed``
    /// (or ``FailoverError/Code/tooLarge``) for anything but a valid encoding within the limits.
    public static func decode(from buffer: inout ByteBuffer) throws(FailoverError) -> ReplicationEntry {
        guard
            let (version, epoch, index, client, request) = buffer.readMultipleIntegers(
                endianness: .little, as: (UInt8, UInt64, UInt64, UInt64, UInt64).self)
        else { throw FailoverError(.malformed, detail: "replication entry truncated") }
        guard version == formatVersion else {
            throw FailoverError(.malformed, detail: "replication entry version \(version), this build reads 1")
        }
        guard index > 0 else { throw FailoverError(.malformed, detail: "replication entry index 0") }
        let operation = try StoreOperation.decode(from: &buffer, nested: false)
        return ReplicationEntry(
            position: LogPosition(epoch: epoch, index: index), client: client, request: request, operation: operation)
    }

    /// The entry as one checksummed frame, the form a journal keeps.
    public func framed() -> ByteBuffer {
        var payload = ByteBuffer()
        payload.reserveCapacity(encodedSize)
        encode(into: &payload)
        return Frame(type: Self.frameType, payload: payload).encoded()
    }

    /// Decodes every entry of `bytes`, a sequence of ``framed()`` entries, checking each frame's
    /// checksum; a damaged or truncated frame throws ``FailoverError/Code/malformed`` with its offset.
    public static func unframeAll(_ bytes: ByteBuffer) throws(FailoverError) -> [ReplicationEntry] {
        let frames: [Frame]
        do {
            frames = try FrameDecoder.decodeAll(bytes, maximumPayloadLength: maximumEncodedSize)
        } catch {
            throw FailoverError(.malformed, detail: "replication log frame: \(error)")
        }
        var entries: [ReplicationEntry] = []
        entries.reserveCapacity(frames.count)
        for frame in frames {
            guard frame.type == frameType else {
                throw FailoverError(
                    .malformed, detail: "frame type 0x\(String(frame.type, radix: 16)) in a replication log")
            }
            var payload = frame.payload
            entries.append(try decode(from: &payload))
            guard payload.readableBytes == 0 else {
                throw FailoverError(.malformed, detail: "\(payload.readableBytes) bytes after a replication entry")
            }
        }
        return entries
    }

    /// The largest encoded entry: a batch of the most puts of the longest keys and values is
    /// larger, so a batch is also bounded by this total (16 MiB + headers).
    public static let maximumEncodedSize = (16 << 20) + 4096
}

extension StoreOperation {
    var encodedSize: Int {
        switch self {
        case .put(let key, let value): 1 + 2 + key.bytes.count + 4 + value.count
        case .delete(let key): 1 + 2 + key.bytes.count
        case .compareAndSet(let key, let expected, let new):
            1 + 2 + key.bytes.count + 1 + (expected.map { 4 + $0.count } ?? 0) + 1 + (new.map { 4 + $0.count } ?? 0)
        case .batch(let operations): 3 + operations.reduce(0) { $0 + $1.encodedSize }
        case .configure(let configuration):
            1 + 11 + 1 + configuration.host.utf8.count + 2
                + configuration.settings.reduce(0) { $0 + 2 + $1.key.utf8.count + $1.value.utf8.count }
        }
    }

    func encode(into buffer: inout ByteBuffer) {
        switch self {
        case .put(let key, let value):
            buffer.writeInteger(UInt8(1))
            Self.write(key, into: &buffer)
            Self.write(value, into: &buffer)
        case .delete(let key):
            buffer.writeInteger(UInt8(2))
            Self.write(key, into: &buffer)
        case .compareAndSet(let key, let expected, let new):
            buffer.writeInteger(UInt8(3))
            Self.write(key, into: &buffer)
            for value in [expected, new] {
                if let value {
                    buffer.writeInteger(UInt8(1))
                    Self.write(value, into: &buffer)
                } else {
                    buffer.writeInteger(UInt8(0))
                }
            }
        case .batch(let operations):
            buffer.writeInteger(UInt8(4))
            buffer.writeInteger(UInt16(truncatingIfNeeded: operations.count), endianness: .little)
            for operation in operations { operation.encode(into: &buffer) }
        case .configure(let configuration):
            buffer.writeInteger(UInt8(5))
            configuration.encode(into: &buffer)
        }
    }

    static func decode(from buffer: inout ByteBuffer, nested: Bool) throws(FailoverError) -> StoreOperation {
        guard let tag = buffer.readInteger(as: UInt8.self) else {
            throw FailoverError(.malformed, detail: "operation truncated")
        }
        switch tag {
        case 1:
            let key = try readKey(from: &buffer)
            return .put(key: key, value: try readValue(from: &buffer))
        case 2:
            return .delete(key: try readKey(from: &buffer))
        case 3:
            let key = try readKey(from: &buffer)
            let expected = try readOptional(from: &buffer)
            return .compareAndSet(key: key, expected: expected, new: try readOptional(from: &buffer))
        case 4:
            guard !nested else { throw FailoverError(.malformed, detail: "a batch inside a batch") }
            guard let count = buffer.readInteger(endianness: .little, as: UInt16.self),
                Int(count) <= maximumBatchCount
            else { throw FailoverError(.malformed, detail: "batch count invalid") }
            var operations: [StoreOperation] = []
            operations.reserveCapacity(Int(count))
            for _ in 0..<count { operations.append(try decode(from: &buffer, nested: true)) }
            return .batch(operations)
        case 5:
            guard !nested else { throw FailoverError(.malformed, detail: "a configuration inside a batch") }
            return .configure(try ServiceConfiguration.decode(from: &buffer))
        default:
            throw FailoverError(.malformed, detail: "operation tag \(tag)")
        }
    }

    private static func write(_ key: StoreKey, into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt16(key.bytes.count), endianness: .little)
        buffer.writeBytes(key.bytes)
    }

    private static func write(_ value: [UInt8], into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt32(truncatingIfNeeded: value.count), endianness: .little)
        buffer.writeBytes(value)
    }

    static func readKey(from buffer: inout ByteBuffer) throws(FailoverError) -> StoreKey {
        guard let length = buffer.readInteger(endianness: .little, as: UInt16.self),
            Int(length) <= StoreKey.maximumLength, let bytes = buffer.readBytes(length: Int(length)),
            let key = StoreKey(bytes: bytes)
        else { throw FailoverError(.malformed, detail: "key invalid") }
        return key
    }

    static func readValue(from buffer: inout ByteBuffer) throws(FailoverError) -> [UInt8] {
        guard let length = buffer.readInteger(endianness: .little, as: UInt32.self) else {
            throw FailoverError(.malformed, detail: "value length truncated")
        }
        guard Int(length) <= maximumValueLength else {
            throw FailoverError(.tooLarge, detail: "value of \(length) bytes, at most \(maximumValueLength)")
        }
        guard let bytes = buffer.readBytes(length: Int(length)) else {
            throw FailoverError(.malformed, detail: "value truncated")
        }
        return bytes
    }

    private static func readOptional(from buffer: inout ByteBuffer) throws(FailoverError) -> [UInt8]? {
        switch buffer.readInteger(as: UInt8.self) {
        case 0: return nil
        case 1: return try readValue(from: &buffer)
        default: throw FailoverError(.malformed, detail: "optional value flag invalid")
        }
    }
}
