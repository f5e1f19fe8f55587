/// One record of a name-key store: the fields of one name key at one schema version.
///
/// Fields are text; the record's ``stamp`` is its writer's hybrid-logical-clock time (zero when
/// the application keeps none), used by ``ConflictRule/lastWriterWins``.
public struct NameKeyRecord: Sendable, Hashable {
    /// The name key.
    public var key: String
    /// The schema version the fields are laid out in.
    public var version: Int
    /// The writer's hybrid logical clock when it last wrote the record.
    public var stamp: UInt64
    /// The fields, by name.
    public var fields: [String: String]

    /// Creates a record.
    public init(key: String, version: Int, stamp: UInt64 = 0, fields: [String: String]) {
        self.key = key
        self.version = version
        self.stamp = stamp
        self.fields = fields
    }

    /// The largest encoded field section a record may have (1 MiB).
    public static let maximumBodyLength = 1 << 20
    /// The longest name key, in UTF-8 bytes.
    public static let maximumKeyLength = 4096

    /// The fields in canonical form: count `u16`, then for each field in byte order of its name,
    /// name length `u16`, name, value length `u32`, value (little-endian).
    public var body: [UInt8] {
        var bytes: [UInt8] = []
        Self.encodeBody(fields, into: &bytes)
        return bytes
    }

    static func encodeBody(_ fields: [String: String], into bytes: inout [UInt8]) {
        let sorted = fields.sorted { keyPrecedes($0.key, $1.key) }
        var length = 2
        for (name, value) in sorted { length += 6 + name.utf8.count + value.utf8.count }
        bytes.reserveCapacity(bytes.count + length)
        bytes.appendLittleEndian(UInt16(truncatingIfNeeded: sorted.count))
        for (name, value) in sorted {
            bytes.appendLittleEndian(UInt16(truncatingIfNeeded: name.utf8.count))
            bytes.append(contentsOf: name.utf8)
            bytes.appendLittleEndian(UInt32(truncatingIfNeeded: value.utf8.count))
            bytes.append(contentsOf: value.utf8)
        }
    }

    /// Decodes a field section written by ``body``; refuses anything else.
    public static func decodeBody(_ bytes: some Collection<UInt8>) throws(KeySyncError) -> [String: String] {
        var reader = ByteReader(Array(bytes))
        guard let count = reader.u16() else {
            throw KeySyncError(.damaged, detail: "record body shorter than its count")
        }
        var fields: [String: String] = [:]
        var previous: [UInt8]?
        for index in 0..<Int(count) {
            guard let nameLength = reader.u16(), let name = reader.bytes(Int(nameLength)),
                let valueLength = reader.u32(), let value = reader.bytes(Int(valueLength))
            else { throw KeySyncError(.damaged, detail: "record body field \(index) cut short") }
            if let previous, !previous.lexicographicallyPrecedes(name) {
                throw KeySyncError(.damaged, detail: "record body fields out of order at field \(index)")
            }
            guard let nameText = String(validating: name, as: UTF8.self),
                let valueText = String(validating: value, as: UTF8.self)
            else { throw KeySyncError(.damaged, detail: "record body field \(index) is not UTF-8") }
            fields[nameText] = valueText
            previous = name
        }
        guard reader.remaining == 0 else {
            throw KeySyncError(.damaged, detail: "record body has \(reader.remaining) bytes after its fields")
        }
        return fields
    }
}

/// A 64-bit fingerprint of a record in the form a ``Schema`` version gives it.
public struct Fingerprint: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// The value.
    public var value: UInt64

    /// Creates a fingerprint from its value.
    public init(_ value: UInt64) { self.value = value }

    /// The fingerprint of `record` as it is (key, stamp and fields; not its version number, so a
    /// record and its migration to the same layout compare equal).
    public init(of record: NameKeyRecord) { self.init(of: record, body: record.body) }

    /// The fingerprint of `record`, whose ``NameKeyRecord/body`` the caller has encoded already.
    init(of record: NameKeyRecord, body: [UInt8]) {
        var hasher = Hash64(seed: 0x6E6B_7379_6E63)
        hasher.combine(record.key)
        hasher.combine(record.stamp)
        hasher.combine(body)
        value = hasher.finish()
    }

    /// Orders by value.
    public static func < (lhs: Fingerprint, rhs: Fingerprint) -> Bool { lhs.value < rhs.value }

    /// Hex.
    public var description: String {
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}

/// A fast 64-bit hash over bytes and integers (multiply-rotate rounds, murmur's finaliser); not
/// cryptographic: fingerprints only need to spread records evenly and rarely collide.
struct Hash64 {
    private var state: UInt64
    private var length: UInt64 = 0

    init(seed: UInt64) { state = seed ^ 0x9E37_79B9_7F4A_7C15 }

    private mutating func mix(_ word: UInt64) {
        state ^= (word &* 0x87C3_7B91_1142_53D5).rotatedLeft(31) &* 0x4CF5_AD43_2745_937F
        state = state.rotatedLeft(27) &* 5 &+ 0x52DC_E729
    }

    mutating func combine(_ value: UInt64) {
        mix(value)
        length &+= 8
    }

    /// The same as combining the string's UTF-8 bytes as an array, without making one.
    mutating func combine(_ string: String) {
        var string = string
        string.withUTF8 { combine(UnsafeRawBufferPointer($0)) }
    }

    mutating func combine(_ bytes: [UInt8]) {
        bytes.withUnsafeBytes { combine($0) }
    }

    private mutating func combine(_ raw: UnsafeRawBufferPointer) {
        var offset = 0
        while offset + 8 <= raw.count {
            mix(raw.loadUnaligned(fromByteOffset: offset, as: UInt64.self).littleEndian)
            offset += 8
        }
        var tail: UInt64 = 0
        for (shift, byte) in raw[offset...].enumerated() { tail |= UInt64(byte) << (8 * shift) }
        mix(tail ^ (UInt64(raw.count - offset) << 56))
        length &+= UInt64(raw.count)
        mix(length)
    }

    func finish() -> UInt64 { Self.finalize(state ^ length) }

    static func finalize(_ value: UInt64) -> UInt64 {
        var x = value
        x ^= x >> 33
        x &*= 0xFF51_AFD7_ED55_8CCD
        x ^= x >> 33
        x &*= 0xC4CE_B9FE_1A85_EC53
        x ^= x >> 33
        return x
    }
}

extension UInt64 {
    func rotatedLeft(_ count: UInt64) -> UInt64 { (self << count) | (self >> (64 - count)) }
}

extension [UInt8] {
    mutating func appendLittleEndian<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    mutating func appendVarint(_ value: UInt64) {
        var rest = value
        while rest >= 0x80 {
            append(UInt8(truncatingIfNeeded: rest) | 0x80)
            rest >>= 7
        }
        append(UInt8(rest))
    }
}

/// Reads little-endian fields from bytes; every read returns nil instead of running past the end.
struct ByteReader {
    let bytes: [UInt8]
    var offset = 0

    init(_ bytes: [UInt8]) { self.bytes = bytes }

    var remaining: Int { bytes.count - offset }

    mutating func integer<T: FixedWidthInteger>(_ type: T.Type) -> T? {
        let size = MemoryLayout<T>.size
        guard remaining >= size else { return nil }
        var value: T = 0
        for index in 0..<size { value |= T(truncatingIfNeeded: bytes[offset + index]) << (8 * index) }
        offset += size
        return value
    }

    mutating func u8() -> UInt8? { integer(UInt8.self) }
    mutating func u16() -> UInt16? { integer(UInt16.self) }
    mutating func u32() -> UInt32? { integer(UInt32.self) }
    mutating func u64() -> UInt64? { integer(UInt64.self) }

    mutating func bytes(_ count: Int) -> [UInt8]? {
        guard count >= 0, remaining >= count else { return nil }
        defer { offset += count }
        return Array(bytes[offset..<(offset + count)])
    }

    mutating func varint() -> UInt64? {
        var value: UInt64 = 0
        for shift in stride(from: 0, to: 64, by: 7) {
            guard let byte = u8() else { return nil }
            value |= UInt64(byte & 0x7F) << UInt64(shift)
            if byte & 0x80 == 0 { return value }
        }
        return nil
    }

    mutating func string(maximum: Int) -> String? {
        guard let length = u16(), Int(length) <= maximum, let raw = bytes(Int(length)) else { return nil }
        return String(validating: raw, as: UTF8.self)
    }
}
