public import FaultToleranceCore
import NIOCore

/// The name-key sync protocol's messages (types `0x0400`–`0x04FF`).
///
/// Every exchange is a request from the backup and one reply from the active, matched by a
/// request number; the active keeps no state between requests, so a lost, doubled or late
/// message only costs a retry. Every payload starts with the protocol version (`u8`, 1) and the
/// request number (`u64`), little-endian. The transport's frame carries a CRC32C of the payload;
/// compressed record batches carry another of their uncompressed bytes. Decoders check every
/// length against the bytes present and against the protocol's limits before allocating, and
/// name the message and the field they refuse.
public enum KeySyncMessage: Sendable, Hashable {
    /// Backup → active: opens a sync (what the backup's store is).
    case hello(request: UInt64, StoreDescription)
    /// Active → backup: what the active's store is, or a refusal (``refused(request:detail:)``).
    case welcome(request: UInt64, StoreDescription)
    /// Backup → active: symbols `first ..< first + count` of the active's sketch.
    case symbolsRequest(request: UInt64, first: Int, count: Int)
    /// Active → backup: symbols from `first`.
    case symbols(request: UInt64, first: Int, symbols: [SketchSymbol])
    /// Backup → active: the records with these fingerprints.
    case recordsByFingerprint(request: UInt64, fingerprints: [Fingerprint])
    /// Backup → active: up to `limit` records in key order after `after` (the whole store when
    /// the difference is too large for the sketch).
    case range(request: UInt64, after: String?, limit: Int)
    /// Backup → active (the seed's protocol): these keys of the backup's.
    case keyList(request: UInt64, keys: [String])
    /// Active → backup (the seed's protocol): the keys of a ``keyList(request:keys:)`` the
    /// active holds too.
    case sharedKeys(request: UInt64, keys: [String])
    /// Backup → active (the seed's protocol): the records of these keys.
    case recordsByKey(request: UInt64, keys: [String])
    /// Active → backup: records answering a request. For a range, `next` is the key to continue
    /// after (nil at its end); for a request by fingerprint or key, `answered` is how many of the
    /// requested items the reply covers (fewer when the records would exceed the size limit).
    case records(request: UInt64, records: [NameKeyRecord], next: String?, answered: Int)
    /// Either way: the request cannot be served; `detail` says why.
    case refused(request: UInt64, detail: String)

    /// The protocol version this library speaks (2: store descriptions carry the generation
    /// and, in a welcome, the sketch's leading symbols).
    public static let protocolVersion: UInt8 = 2

    /// The message types.
    public enum MessageType {
        /// ``KeySyncMessage/hello(request:_:)``.
        public static let hello: UInt16 = 0x0400
        /// ``KeySyncMessage/welcome(request:_:)``.
        public static let welcome: UInt16 = 0x0401
        /// ``KeySyncMessage/symbolsRequest(request:first:count:)``.
        public static let symbolsRequest: UInt16 = 0x0402
        /// ``KeySyncMessage/symbols(request:first:symbols:)``.
        public static let symbols: UInt16 = 0x0403
        /// ``KeySyncMessage/recordsByFingerprint(request:fingerprints:)``.
        public static let recordsByFingerprint: UInt16 = 0x0404
        /// ``KeySyncMessage/range(request:after:limit:)``.
        public static let range: UInt16 = 0x0405
        /// ``KeySyncMessage/keyList(request:keys:)``.
        public static let keyList: UInt16 = 0x0406
        /// ``KeySyncMessage/sharedKeys(request:keys:)``.
        public static let sharedKeys: UInt16 = 0x0407
        /// ``KeySyncMessage/recordsByKey(request:keys:)``.
        public static let recordsByKey: UInt16 = 0x0408
        /// ``KeySyncMessage/records(request:records:next:answered:)``.
        public static let records: UInt16 = 0x0409
        /// ``KeySyncMessage/refused(request:detail:)``.
        public static let refused: UInt16 = 0x040A

        /// Every type, for demultiplexing.
        public static let all: ClosedRange<UInt16> = 0x0400...0x040A
    }

    /// What one side's store is: its schema version, the version fingerprints are taken at, its
    /// sketch and its size.
    public struct StoreDescription: Sendable, Hashable {
        /// The version the store's records are in.
        public var storeVersion: Int
        /// The version fingerprints are taken at (the newest its schema knows).
        public var fingerprintVersion: Int
        /// Symbols of the sketch the store keeps.
        public var sketchCapacity: Int
        /// Records held.
        public var count: Int
        /// Symbol 0 of the sketch: a digest of the whole set.
        public var digest: SketchSymbol
        /// Write transactions the store has committed: a backup records the active's as the
        /// last synced generation.
        public var generation: UInt64
        /// In a welcome to a backup whose digest differs, the first symbols of the active's
        /// sketch (at most ``KeySyncMessage/maximumSymbolsPerMessage``), so decoding starts
        /// without a round trip of its own; empty otherwise.
        public var leadingSymbols: [SketchSymbol]
        /// In a hello, where the backup's transport listens (`HOST:PORT`), for an active whose
        /// transport cannot reach it otherwise (see ``KeySyncServer``); at most 255 bytes.
        public var replyAddress: String?

        /// Creates a description.
        public init(
            storeVersion: Int, fingerprintVersion: Int, sketchCapacity: Int, count: Int, digest: SketchSymbol,
            generation: UInt64 = 0, replyAddress: String? = nil, leadingSymbols: [SketchSymbol] = []
        ) {
            self.generation = generation
            self.leadingSymbols = leadingSymbols
            self.storeVersion = storeVersion
            self.fingerprintVersion = fingerprintVersion
            self.sketchCapacity = sketchCapacity
            self.count = count
            self.digest = digest
            self.replyAddress = replyAddress
        }
    }

    /// Most symbols one request may ask for.
    public static let maximumSymbolsPerMessage = 1 << 16
    /// Most fingerprints, keys or records in one message.
    public static let maximumItemsPerMessage = 1 << 16
    /// Most uncompressed bytes of records in one message (16 MiB).
    public static let maximumRecordBytes = 16 << 20
    /// Most symbols a sketch may declare (16 Mi).
    public static let maximumSketchCapacity = 1 << 24

    /// The request number.
    public var request: UInt64 {
        switch self {
        case .hello(let request, _), .welcome(let request, _), .symbolsRequest(let request, _, _),
            .symbols(let request, _, _), .recordsByFingerprint(let request, _), .range(let request, _, _),
            .keyList(let request, _), .sharedKeys(let request, _), .recordsByKey(let request, _),
            .records(let request, _, _, _), .refused(let request, _):
            return request
        }
    }

    /// The message's name, for errors and logs.
    public var name: String {
        switch self {
        case .hello: "hello"
        case .welcome: "welcome"
        case .symbolsRequest: "symbols request"
        case .symbols: "symbols"
        case .recordsByFingerprint: "records-by-fingerprint request"
        case .range: "range request"
        case .keyList: "key list"
        case .sharedKeys: "shared keys"
        case .recordsByKey: "records-by-key request"
        case .records: "records"
        case .refused: "refusal"
        }
    }

    /// Encodes the message for the transport.
    public func encode() throws(KeySyncError) -> Message {
        var bytes: [UInt8] = [Self.protocolVersion]
        bytes.appendLittleEndian(request)
        let type: UInt16
        switch self {
        case .hello(_, let store), .welcome(_, let store):
            type = {
                if case .hello = self { return MessageType.hello }
                return MessageType.welcome
            }()
            bytes.appendLittleEndian(UInt32(truncatingIfNeeded: store.storeVersion))
            bytes.appendLittleEndian(UInt32(truncatingIfNeeded: store.fingerprintVersion))
            bytes.appendLittleEndian(UInt32(truncatingIfNeeded: store.sketchCapacity))
            bytes.appendLittleEndian(UInt64(truncatingIfNeeded: store.count))
            bytes.appendLittleEndian(store.generation)
            Self.append([store.digest], to: &bytes)
            Self.appendOptionalKey(store.replyAddress.map { String($0.utf8.prefix(255)) ?? "" }, to: &bytes)
            let leading = store.leadingSymbols.prefix(Self.maximumSymbolsPerMessage)
            bytes.appendLittleEndian(UInt32(leading.count))
            Self.append(Array(leading), to: &bytes)
        case .symbolsRequest(_, let first, let count):
            type = MessageType.symbolsRequest
            bytes.appendLittleEndian(UInt32(truncatingIfNeeded: first))
            bytes.appendLittleEndian(UInt32(truncatingIfNeeded: count))
        case .symbols(_, let first, let symbols):
            type = MessageType.symbols
            bytes.appendLittleEndian(UInt32(truncatingIfNeeded: first))
            bytes.appendLittleEndian(UInt32(truncatingIfNeeded: symbols.count))
            Self.append(symbols, to: &bytes)
        case .recordsByFingerprint(_, let fingerprints):
            type = MessageType.recordsByFingerprint
            bytes.appendLittleEndian(UInt32(truncatingIfNeeded: fingerprints.count))
            for fingerprint in fingerprints { bytes.appendLittleEndian(fingerprint.value) }
        case .range(_, let after, let limit):
            type = MessageType.range
            Self.appendOptionalKey(after, to: &bytes)
            bytes.appendLittleEndian(UInt32(truncatingIfNeeded: limit))
        case .keyList(_, let keys), .sharedKeys(_, let keys), .recordsByKey(_, let keys):
            switch self {
            case .keyList: type = MessageType.keyList
            case .sharedKeys: type = MessageType.sharedKeys
            default: type = MessageType.recordsByKey
            }
            bytes.appendLittleEndian(UInt32(truncatingIfNeeded: keys.count))
            for key in keys { Self.appendKey(key, to: &bytes) }
        case .records(_, let records, let next, let answered):
            type = MessageType.records
            Self.appendOptionalKey(next, to: &bytes)
            bytes.appendLittleEndian(UInt32(truncatingIfNeeded: answered))
            var raw: [UInt8] = []
            for record in records { RecordCodec.append(record, to: &raw) }
            try Self.appendCompressed(raw, count: records.count, to: &bytes)
        case .refused(_, let detail):
            type = MessageType.refused
            let text = Array(detail.utf8.prefix(1024))
            bytes.appendLittleEndian(UInt16(text.count))
            bytes.append(contentsOf: text)
        }
        return Message(type: type, bytes: bytes)
    }

    /// Decodes a message of this protocol; throws ``KeySyncError/Code/malformedMessage`` naming
    /// the message and field for anything the encoder would not write, and
    /// ``KeySyncError/Code/refused`` for another protocol version.
    public static func decode(_ message: Message) throws(KeySyncError) -> KeySyncMessage {
        let name = Self.name(ofType: message.type)
        var reader = ByteReader(message.bytes)
        guard let version = reader.u8(), let request = reader.u64() else {
            throw .malformed(name, "shorter than its version and request number")
        }
        guard version == protocolVersion else {
            throw KeySyncError(
                .refused, detail: "\(name) speaks protocol version \(version); this side speaks \(protocolVersion)")
        }
        let decoded: KeySyncMessage
        switch message.type {
        case MessageType.hello, MessageType.welcome:
            guard let storeVersion = reader.u32(), let fingerprintVersion = reader.u32(),
                let capacity = reader.u32(), let count = reader.u64(), let generation = reader.u64()
            else { throw .malformed(name, "store description cut short") }
            guard storeVersion >= 1, fingerprintVersion >= storeVersion, Int(capacity) >= 1,
                Int(capacity) <= maximumSketchCapacity, count <= UInt64(Int.max)
            else {
                throw .malformed(
                    name,
                    "store version \(storeVersion), fingerprint version \(fingerprintVersion), sketch \(capacity), count \(count)"
                )
            }
            let digest = try readSymbols(1, from: &reader, in: name)[0]
            let replyAddress = try readOptionalKey(from: &reader, in: name, field: "reply address")
            guard (replyAddress?.utf8.count ?? 0) <= 255 else { throw .malformed(name, "reply address over 255 bytes") }
            guard let leadingCount = reader.u32() else { throw .malformed(name, "leading symbols cut short") }
            guard Int(leadingCount) <= min(maximumSymbolsPerMessage, Int(capacity)) else {
                throw .malformed(name, "\(leadingCount) leading symbols of a sketch of \(capacity)")
            }
            let leadingSymbols = try readSymbols(Int(leadingCount), from: &reader, in: name)
            let store = StoreDescription(
                storeVersion: Int(storeVersion), fingerprintVersion: Int(fingerprintVersion),
                sketchCapacity: Int(capacity), count: Int(count), digest: digest, generation: generation,
                replyAddress: replyAddress, leadingSymbols: leadingSymbols)
            decoded =
                message.type == MessageType.hello ? .hello(request: request, store) : .welcome(request: request, store)
        case MessageType.symbolsRequest:
            guard let first = reader.u32(), let count = reader.u32() else { throw .malformed(name, "range cut short") }
            guard count >= 1, Int(count) <= maximumSymbolsPerMessage,
                UInt64(first) + UInt64(count) <= UInt64(maximumSketchCapacity)
            else { throw .malformed(name, "range \(first) + \(count) outside the protocol's limits") }
            decoded = .symbolsRequest(request: request, first: Int(first), count: Int(count))
        case MessageType.symbols:
            guard let first = reader.u32(), let count = reader.u32() else { throw .malformed(name, "range cut short") }
            guard Int(count) <= maximumSymbolsPerMessage, UInt64(first) + UInt64(count) <= UInt64(maximumSketchCapacity)
            else { throw .malformed(name, "range \(first) + \(count) outside the protocol's limits") }
            decoded = .symbols(
                request: request, first: Int(first), symbols: try readSymbols(Int(count), from: &reader, in: name))
        case MessageType.recordsByFingerprint:
            let count = try readCount(from: &reader, itemSize: 8, in: name)
            var fingerprints: [Fingerprint] = []
            fingerprints.reserveCapacity(count)
            for _ in 0..<count {
                guard let value = reader.u64() else { throw .malformed(name, "fingerprints cut short") }
                fingerprints.append(Fingerprint(value))
            }
            decoded = .recordsByFingerprint(request: request, fingerprints: fingerprints)
        case MessageType.range:
            let after = try readOptionalKey(from: &reader, in: name, field: "after")
            guard let limit = reader.u32() else { throw .malformed(name, "limit cut short") }
            guard limit >= 1, Int(limit) <= maximumItemsPerMessage else {
                throw .malformed(name, "limit \(limit) outside 1...\(maximumItemsPerMessage)")
            }
            decoded = .range(request: request, after: after, limit: Int(limit))
        case MessageType.keyList, MessageType.sharedKeys, MessageType.recordsByKey:
            let count = try readCount(from: &reader, itemSize: 2, in: name)
            var keys: [String] = []
            keys.reserveCapacity(count)
            for index in 0..<count { keys.append(try readKey(from: &reader, in: name, field: "key \(index)")) }
            switch message.type {
            case MessageType.keyList: decoded = .keyList(request: request, keys: keys)
            case MessageType.sharedKeys: decoded = .sharedKeys(request: request, keys: keys)
            default: decoded = .recordsByKey(request: request, keys: keys)
            }
        case MessageType.records:
            let next = try readOptionalKey(from: &reader, in: name, field: "next")
            guard let answered = reader.u32(), Int(answered) <= maximumItemsPerMessage else {
                throw .malformed(name, "answered count missing or above \(maximumItemsPerMessage)")
            }
            let (raw, count) = try readCompressed(from: &reader, in: name)
            var records: [NameKeyRecord] = []
            records.reserveCapacity(count)
            var recordReader = ByteReader(raw)
            for index in 0..<count {
                records.append(try RecordCodec.read(from: &recordReader, in: "\(name), record \(index)"))
            }
            guard recordReader.remaining == 0 else {
                throw .malformed(name, "\(recordReader.remaining) bytes after its \(count) records")
            }
            decoded = .records(request: request, records: records, next: next, answered: Int(answered))
        case MessageType.refused:
            guard let length = reader.u16(), let text = reader.bytes(Int(length)) else {
                throw .malformed(name, "detail cut short")
            }
            decoded = .refused(request: request, detail: String(decoding: text, as: UTF8.self))
        default:
            throw .malformed(name, "type 0x\(String(message.type, radix: 16)) is not a name-key sync message")
        }
        guard reader.remaining == 0 else { throw .malformed(name, "\(reader.remaining) bytes after its fields") }
        return decoded
    }

    static func name(ofType type: UInt16) -> String {
        switch type {
        case MessageType.hello: "hello"
        case MessageType.welcome: "welcome"
        case MessageType.symbolsRequest: "symbols request"
        case MessageType.symbols: "symbols"
        case MessageType.recordsByFingerprint: "records-by-fingerprint request"
        case MessageType.range: "range request"
        case MessageType.keyList: "key list"
        case MessageType.sharedKeys: "shared keys"
        case MessageType.recordsByKey: "records-by-key request"
        case MessageType.records: "records"
        case MessageType.refused: "refusal"
        default: "message 0x\(String(type, radix: 16))"
        }
    }

    /// A symbol on the wire: sum `u64`, check `u32`, count as a zigzag varint.
    static func append(_ symbols: [SketchSymbol], to bytes: inout [UInt8]) {
        bytes.reserveCapacity(bytes.count + symbols.count * 14)
        for symbol in symbols {
            bytes.appendLittleEndian(symbol.sum)
            bytes.appendLittleEndian(symbol.check)
            bytes.appendVarint(UInt64(bitPattern: (symbol.count << 1) ^ (symbol.count >> 63)))
        }
    }

    static func readSymbols(_ count: Int, from reader: inout ByteReader, in name: String) throws(KeySyncError)
        -> [SketchSymbol]
    {
        // Each symbol takes at least 13 bytes: no allocation beyond what the bytes can hold.
        guard count <= reader.remaining / 13 else {
            throw .malformed(name, "\(count) symbols in \(reader.remaining) bytes")
        }
        var symbols: [SketchSymbol] = []
        symbols.reserveCapacity(count)
        for index in 0..<count {
            guard let sum = reader.u64(), let check = reader.u32(), let zigzag = reader.varint() else {
                throw .malformed(name, "symbol \(index) cut short")
            }
            let value = Int64(bitPattern: (zigzag >> 1) ^ (0 &- (zigzag & 1)))
            symbols.append(SketchSymbol(sum: sum, check: check, count: value))
        }
        return symbols
    }

    static func readCount(from reader: inout ByteReader, itemSize: Int, in name: String) throws(KeySyncError) -> Int {
        guard let count = reader.u32() else { throw .malformed(name, "count cut short") }
        guard Int(count) <= maximumItemsPerMessage, Int(count) <= reader.remaining / itemSize else {
            throw .malformed(
                name, "count \(count) exceeds \(maximumItemsPerMessage) or the \(reader.remaining) bytes left")
        }
        return Int(count)
    }

    static func appendKey(_ key: String, to bytes: inout [UInt8]) {
        let utf8 = Array(key.utf8.prefix(NameKeyRecord.maximumKeyLength))
        bytes.appendLittleEndian(UInt16(utf8.count))
        bytes.append(contentsOf: utf8)
    }

    static func appendOptionalKey(_ key: String?, to bytes: inout [UInt8]) {
        if let key {
            bytes.append(1)
            appendKey(key, to: &bytes)
        } else {
            bytes.append(0)
        }
    }

    static func readKey(from reader: inout ByteReader, in name: String, field: String) throws(KeySyncError) -> String {
        guard let key = reader.string(maximum: NameKeyRecord.maximumKeyLength) else {
            throw .malformed(name, "\(field) cut short, too long or not UTF-8")
        }
        return key
    }

    static func readOptionalKey(from reader: inout ByteReader, in name: String, field: String) throws(KeySyncError)
        -> String?
    {
        guard let present = reader.u8(), present <= 1 else {
            throw .malformed(name, "\(field) flag missing or not 0/1")
        }
        return present == 1 ? try readKey(from: &reader, in: name, field: field) : nil
    }

    /// Records: count `u32`, uncompressed length `u32`, CRC32C of the uncompressed bytes `u32`,
    /// compressed length `u32`, then raw DEFLATE (RFC 1951) of the records.
    static func appendCompressed(_ raw: [UInt8], count: Int, to bytes: inout [UInt8]) throws(KeySyncError) {
        var packed = [UInt8](repeating: 0, count: raw.count + raw.count / 8 + 256)
        let length: Int
        do {
            length =
                try raw.withUnsafeBytes { input in
                    try packed.withUnsafeMutableBytes { output in
                        Result { () throws(CompressionError) in try RawDeflate.compress(input, into: output, level: 1) }
                    }.get()
                } ?? 0
        } catch {
            throw KeySyncError(.invalidArgument, detail: "records do not compress: \(error)")
        }
        guard raw.isEmpty || length > 0 else { throw KeySyncError(.invalidArgument, detail: "records do not compress") }
        bytes.appendLittleEndian(UInt32(count))
        bytes.appendLittleEndian(UInt32(raw.count))
        bytes.appendLittleEndian(CRC32C.checksum(raw))
        bytes.appendLittleEndian(UInt32(raw.isEmpty ? 0 : length))
        if !raw.isEmpty { bytes.append(contentsOf: packed[0..<length]) }
    }

    static func readCompressed(from reader: inout ByteReader, in name: String) throws(KeySyncError) -> ([UInt8], Int) {
        guard let count = reader.u32(), let rawLength = reader.u32(), let crc = reader.u32(),
            let packedLength = reader.u32()
        else { throw .malformed(name, "records header cut short") }
        guard Int(count) <= maximumItemsPerMessage, Int(rawLength) <= maximumRecordBytes,
            Int(count) <= Int(rawLength) / RecordCodec.minimumSize + (rawLength == 0 ? 0 : 1)
        else { throw .malformed(name, "\(count) records in \(rawLength) bytes exceed the protocol's limits") }
        guard let packed = reader.bytes(Int(packedLength)) else {
            throw .malformed(name, "compressed records cut short: \(reader.remaining) of \(packedLength) bytes")
        }
        var raw = [UInt8](repeating: 0, count: Int(rawLength))
        if rawLength > 0 {
            do {
                try packed.withUnsafeBytes { input in
                    try raw.withUnsafeMutableBytes { output in
                        Result { () throws(CompressionError) in try RawDeflate.decompress(input, into: output) }
                    }.get()
                }
            } catch {
                throw .malformed(name, "records do not inflate: \(error)")
            }
        } else if packedLength != 0 {
            throw .malformed(name, "\(packedLength) compressed bytes for no records")
        }
        guard CRC32C.checksum(raw) == crc else { throw .malformed(name, "records fail their CRC32C after inflating") }
        return (raw, Int(count))
    }
}

/// A record on the wire and in batches: key (`u16` length and UTF-8), version `u16`, stamp
/// `u64`, body length `u32` and the canonical body (``NameKeyRecord/body``).
enum RecordCodec {
    static let minimumSize = 2 + 2 + 8 + 4 + 2

    static func append(_ record: NameKeyRecord, to bytes: inout [UInt8]) {
        KeySyncMessage.appendKey(record.key, to: &bytes)
        bytes.appendLittleEndian(UInt16(truncatingIfNeeded: record.version))
        bytes.appendLittleEndian(record.stamp)
        let body = record.body
        bytes.appendLittleEndian(UInt32(body.count))
        bytes.append(contentsOf: body)
    }

    static func read(from reader: inout ByteReader, in name: String) throws(KeySyncError) -> NameKeyRecord {
        let key = try KeySyncMessage.readKey(from: &reader, in: name, field: "key")
        guard let version = reader.u16(), version >= 1, let stamp = reader.u64(), let length = reader.u32(),
            Int(length) <= NameKeyRecord.maximumBodyLength, let body = reader.bytes(Int(length))
        else { throw .malformed(name, "version, stamp or body cut short or out of range") }
        let fields: [String: String]
        do {
            fields = try NameKeyRecord.decodeBody(body)
        } catch {
            throw .malformed(name, error.detail ?? "body")
        }
        return NameKeyRecord(key: key, version: Int(version), stamp: stamp, fields: fields)
    }
}
