public import FaultToleranceCore

/// A checkpoint's identity in its store: a number, increasing in commit order, never reused.
public struct CheckpointID: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// The number (from 1).
    public let rawValue: UInt64

    /// Creates an identity from its number.
    public init(_ rawValue: UInt64) { self.rawValue = rawValue }

    /// `#` and the number.
    public var description: String { "#\(rawValue)" }

    /// Orders checkpoints by number (commit order).
    public static func < (lhs: CheckpointID, rhs: CheckpointID) -> Bool { lhs.rawValue < rhs.rawValue }
}

/// Where a framed chunk lies in the store: its unit, the frame's first byte, and the frame's
/// whole length (header and stored payload).
public struct ChunkReference: Hashable, Sendable, CustomStringConvertible {
    /// The unit that holds the frame.
    public var unit: UnitID
    /// The byte offset of the frame's header in the unit.
    public var offset: Int
    /// The frame's length in bytes, header included.
    public var length: Int

    /// Creates a reference.
    public init(unit: UnitID, offset: Int, length: Int) {
        self.unit = unit
        self.offset = offset
        self.length = length
    }

    /// `unit-N@offset+length`.
    public var description: String { "\(unit)@\(offset)+\(length)" }
}

/// What one checkpoint holds: for each memory region and volume, which pages (or blocks) it
/// captured and where their bytes are.
///
/// A full (or synthetic full) manifest covers every page of every item; an incremental one
/// covers the pages dirtied since its parent, and restoring it applies the chain from the full
/// at its root, the newest extent winning.
public struct CheckpointManifest: Sendable, Hashable {
    /// How a checkpoint relates to others.
    public enum Kind: UInt8, Sendable, Hashable, CustomStringConvertible {
        /// Every page captured at its cut.
        case full = 1
        /// The pages dirtied since the parent's cut.
        case incremental = 2
        /// A full manifest built by merging a chain (no data rewritten).
        case synthetic = 3

        /// `full`, `incremental` or `synthetic`.
        public var description: String {
            switch self {
            case .full: "full"
            case .incremental: "incremental"
            case .synthetic: "synthetic"
            }
        }
    }

    /// One memory region or volume in a checkpoint.
    public struct Item: Sendable, Hashable {
        /// What the item is.
        public enum Kind: UInt8, Sendable, Hashable {
            /// A memory region (pages).
            case memory = 1
            /// A storage volume (blocks).
            case volume = 2
        }

        /// The item's name, unique within its application.
        public var name: String
        /// Memory or volume.
        public var kind: Kind
        /// Bytes per page or block.
        public var unitSize: Int
        /// Pages or blocks in the item.
        public var unitCount: Int
        /// The captured extents, sorted and disjoint.
        public var extents: [Extent]

        /// Creates an item.
        public init(name: String, kind: Kind, unitSize: Int, unitCount: Int, extents: [Extent]) {
            self.name = name
            self.kind = kind
            self.unitSize = unitSize
            self.unitCount = unitCount
            self.extents = extents
        }
    }

    /// A run of pages and where their bytes are.
    public struct Extent: Sendable, Hashable {
        /// Where an extent's bytes are.
        public enum Source: Sendable, Hashable {
            /// The pages are all zero: nothing stored.
            case zero
            /// The pages are in a chunk, starting `skip` pages into its bytes.
            case chunk(ChunkReference, skip: Int)
        }

        /// The first page.
        public var first: Int
        /// How many pages.
        public var count: Int
        /// Where their bytes are.
        public var source: Source

        /// Creates an extent.
        public init(first: Int, count: Int, source: Source) {
            self.first = first
            self.count = count
            self.source = source
        }

        /// The pages the extent covers.
        public var pages: Range<Int> { first..<first + count }
    }

    /// The checkpoint's identity.
    public var id: CheckpointID
    /// The application it belongs to.
    public var application: String
    /// The group epoch it was taken in (0 for a checkpoint taken alone).
    public var epoch: UInt64
    /// The checkpoint this one is incremental to, or `nil` for a full or synthetic one.
    public var parent: CheckpointID?
    /// Full, incremental or synthetic.
    public var kind: Kind
    /// When the cut was taken, in nanoseconds since 1970 (wall clock, for people).
    public var captureTime: UInt64
    /// The regions and volumes.
    public var items: [Item]

    /// Creates a manifest.
    public init(
        id: CheckpointID, application: String, epoch: UInt64, parent: CheckpointID?, kind: Kind,
        captureTime: UInt64, items: [Item]
    ) {
        self.id = id
        self.application = application
        self.epoch = epoch
        self.parent = parent
        self.kind = kind
        self.captureTime = captureTime
        self.items = items
    }
}

/// Limits every decoder enforces on bytes from a disk.
public enum CheckpointLimits {
    /// The longest application, region or volume name, in UTF-8 bytes.
    public static let maximumNameBytes = 255
    /// The most regions and volumes in one checkpoint.
    public static let maximumItems = 4096
    /// The largest page or block.
    public static let maximumUnitSize = 1 << 20
    /// The smallest page or block.
    public static let minimumUnitSize = 512
    /// The most pages or blocks in one item (2^36 pages of 4 KiB is 256 TiB).
    public static let maximumUnitCount = 1 << 36
    /// The largest chunk payload before compression.
    public static let maximumChunkBytes = 4 << 20
    /// The largest manifest.
    public static let maximumManifestBytes = 256 << 20
}

// MARK: - Chunk frames

/// A framed chunk: a 32-byte header, then the stored payload (raw or deflated).
///
/// ```
/// 0  magic "FTCK" (u32 LE 0x4B435446)    16 serial (u64): the store's chunk counter
/// 4  version (u8) = 1                   24 CRC32C of the logical (uncompressed) bytes
/// 5  contents (u8): 1 data, 2 manifest   28 CRC32C of bytes 0..<28 and the stored payload
/// 6  encoding (u8): 0 raw, 1 zlib,
///    2 raw DEFLATE (RFC 1951)
/// 7  reserved (u8) = 0
/// 8  logical length (u32)
/// 12 stored length (u32)
/// ```
enum ChunkFrame {
    static let headerSize = 32
    static let magic: UInt32 = 0x4B43_5446
    static let version: UInt8 = 1

    enum Contents: UInt8 {
        case data = 1
        case manifest = 2
    }

    enum Encoding: UInt8 {
        case raw = 0
        /// zlib format (RFC 1950): written by the first releases, still read.
        case deflate = 1
        /// Raw DEFLATE (RFC 1951): no zlib header or Adler-32, the logical CRC32C checks it.
        case deflateRaw = 2
    }

    struct Header: Equatable {
        var contents: Contents
        var encoding: Encoding
        var logicalLength: Int
        var storedLength: Int
        var serial: UInt64
        var logicalChecksum: UInt32
        var frameChecksum: UInt32
    }

    /// Frames `payload`, deflated at `level` (raw DEFLATE, encoding 2) when that saves at
    /// least an eighth, raw otherwise. The deflate writes straight into the frame and stops as
    /// soon as its output passes seven eighths of the payload.
    static func encode(
        _ payload: UnsafeRawBufferPointer, contents: Contents, serial: UInt64, deflateLevel: Int32?
    ) throws(CheckpointError) -> [UInt8] {
        let logicalChecksum = CRC32C.checksum(payload)
        var frame = [UInt8](repeating: 0, count: headerSize + payload.count)
        var compressed: Int? = nil
        if let deflateLevel, payload.count >= 64 {
            let room = headerSize..<(headerSize + payload.count - payload.count / 8)
            do {
                compressed = try frame.withUnsafeMutableBytes { raw in
                    try RawDeflate.compress(
                        payload, into: UnsafeMutableRawBufferPointer(rebasing: raw[room]), level: deflateLevel)
                }
            } catch {
                throw CheckpointError(.invalidConfiguration, detail: "deflate failed: \(error)")
            }
        }
        if compressed == nil {
            frame.withUnsafeMutableBytes { raw in
                UnsafeMutableRawBufferPointer(rebasing: raw[headerSize...]).copyMemory(from: payload)
            }
        }
        let storedCount = compressed ?? payload.count
        if storedCount < payload.count { frame.removeLast(payload.count - storedCount) }
        frame.withUnsafeMutableBytes { raw in
            guard let base = raw.baseAddress else { return }
            base.storeLE(magic, at: 0)
            base.storeLE(version, at: 4)
            base.storeLE(contents.rawValue, at: 5)
            base.storeLE((compressed == nil ? Encoding.raw : Encoding.deflateRaw).rawValue, at: 6)
            base.storeLE(UInt32(payload.count), at: 8)
            base.storeLE(UInt32(storedCount), at: 12)
            base.storeLE(serial, at: 16)
            base.storeLE(logicalChecksum, at: 24)
            var crc = CRC32C()
            crc.update(UnsafeRawBufferPointer(start: base, count: 28))
            crc.update(UnsafeRawBufferPointer(start: base + headerSize, count: storedCount))
            base.storeLE(crc.value, at: 28)
        }
        return frame
    }

    /// Frames a raw data payload in place: `buffer` holds ``headerSize`` bytes of room, then
    /// `payloadCount` bytes of payload. One checksum pass: the frame checksum is the header's
    /// combined with the payload's.
    static func encodeRawInPlace(_ buffer: UnsafeMutableRawBufferPointer, payloadCount: Int, serial: UInt64) {
        guard let base = buffer.baseAddress, buffer.count >= headerSize + payloadCount else { return }
        let payloadChecksum = CRC32C.checksum(UnsafeRawBufferPointer(start: base + headerSize, count: payloadCount))
        base.storeLE(magic, at: 0)
        base.storeLE(version, at: 4)
        base.storeLE(Contents.data.rawValue, at: 5)
        base.storeLE(Encoding.raw.rawValue, at: 6)
        base.storeLE(UInt8(0), at: 7)
        base.storeLE(UInt32(payloadCount), at: 8)
        base.storeLE(UInt32(payloadCount), at: 12)
        base.storeLE(serial, at: 16)
        base.storeLE(payloadChecksum, at: 24)
        let headerChecksum = CRC32C.checksum(UnsafeRawBufferPointer(start: base, count: 28))
        base.storeLE(CRC32C.combine(headerChecksum, payloadChecksum, secondLength: payloadCount), at: 28)
    }

    /// Decodes and checks a header (not the payload's checksum).
    static func decodeHeader(_ bytes: UnsafeRawBufferPointer) -> Result<Header, FormatFailure> {
        guard bytes.count >= headerSize, let base = bytes.baseAddress else { return .failure("short header") }
        guard base.loadLE(UInt32.self, at: 0) == magic else { return .failure("bad chunk magic") }
        let version = base.loadLE(UInt8.self, at: 4)
        guard version == Self.version else { return .failure("chunk version \(version)") }
        guard let contents = Contents(rawValue: base.loadLE(UInt8.self, at: 5)) else {
            return .failure("unknown chunk contents")
        }
        guard let encoding = Encoding(rawValue: base.loadLE(UInt8.self, at: 6)), base.loadLE(UInt8.self, at: 7) == 0
        else { return .failure("unknown chunk encoding") }
        let logical = Int(base.loadLE(UInt32.self, at: 8))
        let stored = Int(base.loadLE(UInt32.self, at: 12))
        let limit = contents == .manifest ? CheckpointLimits.maximumManifestBytes : CheckpointLimits.maximumChunkBytes
        guard logical <= limit, stored <= limit + limit / 8 + 1024 else {
            return .failure("chunk length \(logical)/\(stored) over the limit \(limit)")
        }
        guard encoding != .raw || stored == logical else { return .failure("raw chunk lengths differ") }
        return .success(
            Header(
                contents: contents, encoding: encoding, logicalLength: logical, storedLength: stored,
                serial: base.loadLE(UInt64.self, at: 16), logicalChecksum: base.loadLE(UInt32.self, at: 24),
                frameChecksum: base.loadLE(UInt32.self, at: 28)))
    }

    /// Checks a whole frame and returns its logical bytes.
    static func decode(_ frame: UnsafeRawBufferPointer, expecting contents: Contents) -> Result<[UInt8], FormatFailure>
    {
        switch decodePayload(Array(frame), expecting: contents, checkRawLogical: true) {
        case .success(let payload):
            return .success(
                payload.range == 0..<payload.bytes.count ? payload.bytes : Array(payload.bytes[payload.range]))
        case .failure(let reason):
            return .failure(reason)
        }
    }

    /// Checks a whole frame and returns its logical bytes as a range of `bytes`: a raw frame's
    /// own array (no copy; its frame checksum already covers the payload unless
    /// `checkRawLogical`), a deflated frame's inflated bytes.
    static func decodePayload(
        _ frame: [UInt8], expecting contents: Contents, checkRawLogical: Bool = false
    ) -> Result<(bytes: [UInt8], range: Range<Int>), FormatFailure> {
        frame.withUnsafeBytes { raw -> Result<(bytes: [UInt8], range: Range<Int>), FormatFailure> in
            let header: Header
            switch decodeHeader(raw) {
            case .success(let decoded): header = decoded
            case .failure(let reason): return .failure(reason)
            }
            guard header.contents == contents else {
                return .failure("chunk holds \(header.contents), not \(contents)")
            }
            guard raw.count == headerSize + header.storedLength, let base = raw.baseAddress else {
                return .failure("frame of \(raw.count) bytes, header says \(headerSize + header.storedLength)")
            }
            let stored = UnsafeRawBufferPointer(start: base + headerSize, count: header.storedLength)
            var crc = CRC32C()
            crc.update(UnsafeRawBufferPointer(start: base, count: 28))
            crc.update(stored)
            guard crc.value == header.frameChecksum else { return .failure("chunk frame checksum mismatch") }
            switch header.encoding {
            case .raw:
                if checkRawLogical && CRC32C.checksum(stored) != header.logicalChecksum {
                    return .failure("chunk's logical bytes do not match their checksum")
                }
                return .success((frame, headerSize..<raw.count))
            case .deflate:
                let logical: [UInt8]
                do {
                    logical = try Inflate.decompress(stored, maximumOutputSize: header.logicalLength)
                } catch {
                    return .failure("chunk does not inflate: \(error)")
                }
                guard logical.count == header.logicalLength, CRC32C.checksum(logical) == header.logicalChecksum else {
                    return .failure("chunk's logical bytes do not match their checksum")
                }
                return .success((logical, 0..<logical.count))

            case .deflateRaw:
                var logical = [UInt8](repeating: 0, count: header.logicalLength)
                do {
                    try logical.withUnsafeMutableBytes { try RawDeflate.decompress(stored, into: $0) }
                } catch {
                    return .failure("chunk does not inflate: \(error)")
                }
                guard CRC32C.checksum(logical) == header.logicalChecksum else {
                    return .failure("chunk's logical bytes do not match their checksum")
                }
                return .success((logical, 0..<logical.count))
            }
        }
    }
}

// MARK: - Manifests

/// The manifest's bytes (the payload of a manifest chunk frame):
///
/// ```
/// 0  magic "FTCM" (u32 LE 0x4D435446)   32 capture time (u64, ns since 1970)
/// 4  version (u16) = 1                  40 item count (u32)
/// 6  kind (u8): 1 full, 2 incr., 3 syn.  44 application name length (u16)
/// 7  reserved (u8) = 0                  46 reserved (u16) = 0
/// 8  id (u64)                           48 application name (UTF-8)
/// 16 epoch (u64)                        then each item, then CRC32C (u32) of all before it
/// 24 parent id (u64; 0 = none)
///
/// item: kind (u8: 1 memory, 2 volume), reserved (u8), name length (u16), unit size (u32),
///       unit count (u64), extent count (u32), reserved (u32), name (UTF-8), extents
/// extent (40 bytes): first (u64), count (u32), source (u8: 0 zero, 1 chunk), reserved (3),
///       chunk unit (u64), chunk offset (u64), frame length (u32), skip (u32)
/// ```
enum ManifestCodec {
    static let magic: UInt32 = 0x4D43_5446
    static let version: UInt16 = 1
    static let extentSize = 40

    static func encode(_ manifest: CheckpointManifest) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(64 + manifest.items.reduce(0) { $0 + 32 + $1.name.utf8.count + $1.extents.count * 40 })
        bytes.appendLE(magic)
        bytes.appendLE(version)
        bytes.appendLE(manifest.kind.rawValue)
        bytes.appendLE(UInt8(0))
        bytes.appendLE(manifest.id.rawValue)
        bytes.appendLE(manifest.epoch)
        bytes.appendLE(manifest.parent?.rawValue ?? 0)
        bytes.appendLE(manifest.captureTime)
        bytes.appendLE(UInt32(manifest.items.count))
        bytes.appendLE(UInt16(manifest.application.utf8.count))
        bytes.appendLE(UInt16(0))
        bytes.append(contentsOf: manifest.application.utf8)
        for item in manifest.items {
            bytes.appendLE(item.kind.rawValue)
            bytes.appendLE(UInt8(0))
            bytes.appendLE(UInt16(item.name.utf8.count))
            bytes.appendLE(UInt32(item.unitSize))
            bytes.appendLE(UInt64(item.unitCount))
            bytes.appendLE(UInt32(item.extents.count))
            bytes.appendLE(UInt32(0))
            bytes.append(contentsOf: item.name.utf8)
            for extent in item.extents {
                bytes.appendLE(UInt64(extent.first))
                bytes.appendLE(UInt32(extent.count))
                switch extent.source {
                case .zero:
                    bytes.append(contentsOf: repeatElement(0, count: 4 + 24))
                case .chunk(let reference, let skip):
                    bytes.appendLE(UInt8(1))
                    bytes.append(contentsOf: [0, 0, 0])
                    bytes.appendLE(reference.unit.rawValue)
                    bytes.appendLE(UInt64(reference.offset))
                    bytes.appendLE(UInt32(reference.length))
                    bytes.appendLE(UInt32(skip))
                }
            }
        }
        bytes.appendLE(CRC32C.checksum(bytes))
        return bytes
    }

    /// Decodes a manifest, checking every length, count, range and the checksum.
    static func decode(_ bytes: UnsafeRawBufferPointer) -> Result<CheckpointManifest, FormatFailure> {
        guard bytes.count >= 52, bytes.count <= CheckpointLimits.maximumManifestBytes else {
            return .failure("manifest of \(bytes.count) bytes")
        }
        let body = UnsafeRawBufferPointer(rebasing: bytes[0..<bytes.count - 4])
        guard bytes.loadLE(UInt32.self, at: bytes.count - 4) == CRC32C.checksum(body) else {
            return .failure("manifest checksum mismatch")
        }
        var reader = Reader(bytes: body)
        guard reader.u32() == magic else { return .failure("bad manifest magic") }
        guard let version = reader.u16(), version == Self.version else { return .failure("manifest version") }
        guard let kindByte = reader.u8(), let kind = CheckpointManifest.Kind(rawValue: kindByte), reader.u8() == 0
        else { return .failure("unknown manifest kind") }
        guard let id = reader.u64(), id > 0, let epoch = reader.u64(), let parent = reader.u64(),
            let captureTime = reader.u64(), let itemCount = reader.u32(), let nameLength = reader.u16(),
            reader.u16() == 0
        else { return .failure("short manifest header") }
        guard (kind == .incremental) == (parent != 0), parent < id else {
            return .failure("\(kind) manifest with parent \(parent)")
        }
        guard Int(itemCount) <= CheckpointLimits.maximumItems else { return .failure("\(itemCount) items") }
        guard let application = reader.name(Int(nameLength)) else { return .failure("bad application name") }
        var items: [CheckpointManifest.Item] = []
        var names = Set<String>()
        for index in 0..<Int(itemCount) {
            guard let kindByte = reader.u8(), let itemKind = CheckpointManifest.Item.Kind(rawValue: kindByte),
                reader.u8() == 0, let nameLength = reader.u16(), let unitSize = reader.u32(),
                let unitCount = reader.u64(), let extentCount = reader.u32(), reader.u32() == 0
            else { return .failure("item \(index): bad header") }
            let size = Int(unitSize)
            guard size >= CheckpointLimits.minimumUnitSize, size <= CheckpointLimits.maximumUnitSize,
                size & (size - 1) == 0, unitCount > 0, unitCount <= UInt64(CheckpointLimits.maximumUnitCount)
            else { return .failure("item \(index): unit size \(unitSize), count \(unitCount)") }
            guard let name = reader.name(Int(nameLength)), names.insert(name).inserted else {
                return .failure("item \(index): bad or repeated name")
            }
            guard Int(extentCount) <= reader.remaining / extentSize else {
                return .failure("item \(index): \(extentCount) extents in \(reader.remaining) bytes")
            }
            var extents: [CheckpointManifest.Extent] = []
            extents.reserveCapacity(Int(extentCount))
            var next = 0
            for extentIndex in 0..<Int(extentCount) {
                guard let first = reader.u64(), let count = reader.u32(), let source = reader.u8(),
                    reader.u8() == 0, reader.u16() == 0, let unit = reader.u64(), let offset = reader.u64(),
                    let length = reader.u32(), let skip = reader.u32()
                else { return .failure("item \(name): short extent \(extentIndex)") }
                let contiguous = kind == .incremental || first == UInt64(next)
                guard first >= UInt64(next), contiguous, count > 0, UInt64(count) <= unitCount,
                    first <= unitCount - UInt64(count)
                else {
                    return .failure("item \(name): extent \(extentIndex) at \(first)+\(count) out of order or bounds")
                }
                next = Int(first) + Int(count)
                switch source {
                case 0:
                    guard unit == 0, offset == 0, length == 0, skip == 0 else {
                        return .failure("item \(name): zero extent \(extentIndex) with a chunk")
                    }
                    extents.append(.init(first: Int(first), count: Int(count), source: .zero))
                case 1:
                    let pagesPerChunk = CheckpointLimits.maximumChunkBytes / size
                    guard offset <= UInt64(Int.max / 2), Int(length) > ChunkFrame.headerSize,
                        Int(skip) + Int(count) <= pagesPerChunk
                    else { return .failure("item \(name): extent \(extentIndex) chunk reference out of range") }
                    let reference = ChunkReference(unit: UnitID(unit), offset: Int(offset), length: Int(length))
                    extents.append(
                        .init(first: Int(first), count: Int(count), source: .chunk(reference, skip: Int(skip))))
                default:
                    return .failure("item \(name): extent \(extentIndex) source \(source)")
                }
            }
            guard kind == .incremental || next == Int(unitCount) else {
                return .failure("\(kind) item \(name) covers \(next) of \(unitCount) units")
            }
            items.append(
                .init(name: name, kind: itemKind, unitSize: size, unitCount: Int(unitCount), extents: extents))
        }
        guard reader.remaining == 0 else { return .failure("\(reader.remaining) bytes after the last item") }
        return .success(
            CheckpointManifest(
                id: CheckpointID(id), application: application, epoch: epoch,
                parent: parent == 0 ? nil : CheckpointID(parent), kind: kind, captureTime: captureTime, items: items))
    }
}

/// Why bytes do not decode, for the error that reports them.
struct FormatFailure: Error, CustomStringConvertible, ExpressibleByStringInterpolation {
    let description: String

    init(stringLiteral value: String) { description = value }
    init(stringInterpolation: DefaultStringInterpolation) {
        description = String(stringInterpolation: stringInterpolation)
    }
}

/// Reads little-endian fields off a buffer, returning `nil` past its end.
struct Reader {
    let bytes: UnsafeRawBufferPointer
    var position = 0

    init(bytes: UnsafeRawBufferPointer, position: Int = 0) {
        self.bytes = bytes
        self.position = position
    }

    var remaining: Int { bytes.count - position }

    mutating func load<T: FixedWidthInteger>(_: T.Type) -> T? {
        guard let value = bytes.loadLE(T.self, at: position) else { return nil }
        position += MemoryLayout<T>.size
        return value
    }

    mutating func u8() -> UInt8? { load(UInt8.self) }
    mutating func u16() -> UInt16? { load(UInt16.self) }
    mutating func u32() -> UInt32? { load(UInt32.self) }
    mutating func u64() -> UInt64? { load(UInt64.self) }

    /// A UTF-8 name of `length` bytes (at most ``CheckpointLimits/maximumNameBytes``).
    mutating func name(_ length: Int) -> String? {
        guard length <= CheckpointLimits.maximumNameBytes, length <= remaining else { return nil }
        let slice = UnsafeRawBufferPointer(rebasing: bytes[position..<position + length])
        position += length
        return String(validating: slice, as: UTF8.self)
    }
}

// MARK: - Public codecs (tools, fuzzing)

extension CheckpointManifest {
    /// The manifest's bytes, as the store keeps them (the payload of its chunk frame).
    public func encoded() -> [UInt8] { ManifestCodec.encode(self) }

    /// Decodes manifest bytes, checking every length, count, range and the checksum; throws
    /// ``CheckpointError/Code/damaged`` saying what does not hold.
    public init(decoding bytes: [UInt8]) throws(CheckpointError) {
        switch bytes.withUnsafeBytes({ ManifestCodec.decode($0) }) {
        case .success(let manifest): self = manifest
        case .failure(let reason): throw CheckpointError(.damaged, detail: "manifest: \(reason)")
        }
    }
}

/// The store's chunk frames, for tools that read a unit directly.
public enum CheckpointChunk {
    /// Frames `payload` as a data chunk (deflated at `deflateLevel` when that saves an eighth).
    public static func frame(_ payload: [UInt8], serial: UInt64, deflateLevel: Int32? = 1) throws(CheckpointError)
        -> [UInt8]
    {
        try payload.withBytes { (raw) throws(CheckpointError) in
            try ChunkFrame.encode(raw, contents: .data, serial: serial, deflateLevel: deflateLevel)
        }
    }

    /// Checks a whole data-chunk frame and returns its logical bytes; throws
    /// ``CheckpointError/Code/damaged`` saying what does not hold.
    public static func payload(ofFrame frame: [UInt8]) throws(CheckpointError) -> [UInt8] {
        switch ChunkFrame.decodePayload(frame, expecting: .data, checkRawLogical: true) {
        case .success(let payload): return Array(payload.bytes[payload.range])
        case .failure(let reason): throw CheckpointError(.damaged, detail: "chunk: \(reason)")
        }
    }
}
