public import FaultToleranceCore

/// How a ``StorageArray`` places its blocks on its members.
public enum ArrayLayout: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// RAID-10: roles in pairs, each block on both members of one pair, blocks striped across
    /// the pairs. A member can fail without losing data; a proactive migration keeps both
    /// copies of every block until the swap.
    case mirror = 1
    /// Roles end to end, each block on one member. No redundancy: a migration is the only
    /// protection, and a range whose member failed is unavailable.
    case concatenated = 2

    /// The layout's name.
    public var description: String {
        switch self {
        case .mirror: "mirror"
        case .concatenated: "concatenated"
        }
    }
}

/// The fixed part of a member's metadata, written once when the unit joins an array: which
/// array, which member, and where the record slots and the data are.
///
/// Encoding (4,096 bytes at offset 0 of every member; integers little-endian): magic
/// `FTSPAREL` (8 bytes), format version (UInt16, 1), layout (UInt8), reserved (UInt8, 0),
/// array id (UInt64), member id (UInt64), block size (UInt32), reserved (UInt32, 0), blocks per
/// role (UInt64), record slot size (UInt64), data offset (UInt64), CRC32C of the 60 bytes
/// before it (UInt32); zeros to the end.
public struct ArrayLabel: Sendable, Hashable {
    /// The label's bytes on disk.
    public static let size = 4096
    /// The format version this code writes and reads.
    public static let version: UInt16 = 1
    static let magic: UInt64 = 0x4C45_5241_5053_5446  // "FTSPAREL" little-endian
    static let encodedSize = 64

    /// The array this member belongs to.
    public var arrayID: UInt64
    /// This member's identity in the array (kept across restarts, whatever the unit is called).
    public var member: UnitID
    /// The array's layout.
    public var layout: ArrayLayout
    /// Bytes per array block: the unit of placement, liveness and copying.
    public var blockSize: Int
    /// Blocks each role holds.
    public var blocksPerRole: Int
    /// Bytes of each of the two record slots after the label.
    public var slotSize: Int
    /// Where the data region starts on every member.
    public var dataOffset: Int

    /// Creates a label.
    public init(
        arrayID: UInt64, member: UnitID, layout: ArrayLayout, blockSize: Int, blocksPerRole: Int, slotSize: Int
    ) {
        self.arrayID = arrayID
        self.member = member
        self.layout = layout
        self.blockSize = blockSize
        self.blocksPerRole = blocksPerRole
        self.slotSize = slotSize
        self.dataOffset = ArrayLabel.size + 2 * slotSize
    }

    /// The bytes a unit needs to hold a role: label, both slots and the data region.
    public var requiredCapacity: Int { dataOffset + blocksPerRole * blockSize }

    /// The label's encoding, `size` bytes.
    public func encode() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.size)
        bytes.appendLE(Self.magic)
        bytes.appendLE(Self.version)
        bytes.append(layout.rawValue)
        bytes.append(0)
        bytes.appendLE(arrayID)
        bytes.appendLE(member.rawValue)
        bytes.appendLE(UInt32(blockSize))
        bytes.appendLE(UInt32(0))
        bytes.appendLE(UInt64(blocksPerRole))
        bytes.appendLE(UInt64(slotSize))
        bytes.appendLE(UInt64(dataOffset))
        bytes.appendLE(CRC32C.checksum(bytes))
        bytes.append(contentsOf: repeatElement(0, count: Self.size - bytes.count))
        return bytes
    }

    /// Decodes a label; throws ``ArrayMetadataError`` for anything that is not one this code
    /// wrote: another magic, version, checksum, or fields out of their ranges.
    public static func decode(_ bytes: some Collection<UInt8>) throws(ArrayMetadataError) -> ArrayLabel {
        let bytes = Array(bytes.prefix(encodedSize))
        guard bytes.count == encodedSize else { throw ArrayMetadataError(.truncated, "label of \(bytes.count) bytes") }
        guard bytes.loadLE(UInt64.self, at: 0) == magic else {
            throw ArrayMetadataError(.notMetadata, "no array label")
        }
        let version = bytes.loadLE(UInt16.self, at: 8)
        guard version == Self.version else {
            throw ArrayMetadataError(.unsupportedVersion, "label version \(version)")
        }
        guard CRC32C.checksum(bytes[0..<60]) == bytes.loadLE(UInt32.self, at: 60) else {
            throw ArrayMetadataError(.checksumMismatch, "label")
        }
        guard let layout = ArrayLayout(rawValue: bytes[10]) else {
            throw ArrayMetadataError(.invalidField, "layout \(bytes[10])")
        }
        let blockSize = Int(bytes.loadLE(UInt32.self, at: 28))
        let blocksPerRole = bytes.loadLE(UInt64.self, at: 36)
        let slotSize = bytes.loadLE(UInt64.self, at: 44)
        let dataOffset = bytes.loadLE(UInt64.self, at: 52)
        guard ArrayGeometry.validBlockSize(blockSize), blocksPerRole >= 1, blocksPerRole <= 1 << 40,
            slotSize >= 4096, slotSize <= 1 << 30, slotSize % 4096 == 0,
            dataOffset == UInt64(size) + 2 * slotSize
        else {
            throw ArrayMetadataError(
                .invalidField,
                "block size \(blockSize), \(blocksPerRole) blocks per role, slots of \(slotSize), data at \(dataOffset)"
            )
        }
        return ArrayLabel(
            arrayID: bytes.loadLE(UInt64.self, at: 12), member: UnitID(bytes.loadLE(UInt64.self, at: 20)),
            layout: layout, blockSize: blockSize, blocksPerRole: Int(blocksPerRole), slotSize: Int(slotSize))
    }
}

/// A migration in progress, as the record keeps it.
public struct MigrationState: Sendable, Hashable {
    /// Why the data moves.
    public enum Kind: UInt8, Sendable, Hashable {
        /// The role's member is worn and still serving: its data is copied from it.
        case proactive = 1
        /// The role's member failed: its data is copied from its mirror partner.
        case rebuild = 2
    }

    /// The role whose data moves.
    public var role: Int
    /// The spare it moves to.
    public var target: UnitID
    /// Why.
    public var kind: Kind
    /// Every role block below this one is on the target (a restart copies from here).
    public var resumeFrom: Int

    /// Creates a migration state.
    public init(role: Int, target: UnitID, kind: Kind, resumeFrom: Int) {
        self.role = role
        self.target = target
        self.kind = kind
        self.resumeFrom = resumeFrom
    }
}

/// The changing part of an array's metadata, written whole to every member on every change of
/// membership, of migration progress and of the live-block map, into the slot its sequence
/// number picks (even: the first, odd: the second), so a torn write leaves the previous record
/// in the other slot. When the array is assembled, the valid record with the highest sequence
/// on any member is the array's state.
///
/// Encoding (integers little-endian): magic `FTSPARER` (8), version (UInt16, 1), reserved
/// (UInt16, 0), length of the whole record (UInt32), array id (UInt64), sequence (UInt64),
/// generation (UInt64), counts of roles, spares, failed and erasing members (UInt16 each),
/// migration kind (UInt8, 0 for none), reserved (3 bytes), the migration's role (UInt32),
/// reserved (UInt32), target (UInt64) and resume point (UInt64), then the member ids of each
/// list (UInt64 each), the live map's bit count (UInt64) and its bytes, and a CRC32C of all
/// that (UInt32).
public struct ArrayRecord: Sendable, Hashable {
    /// The format version this code writes and reads.
    public static let version: UInt16 = 1
    static let magic: UInt64 = 0x5245_5241_5053_5446  // "FTSPARER" little-endian
    static let headerSize = 76
    /// The most members any list may name.
    public static let maximumListCount = 64

    /// The array.
    public var arrayID: UInt64
    /// Bumped on every record written.
    public var sequence: UInt64
    /// Bumped on every change of membership (a swap, a failure, a spare added).
    public var generation: UInt64
    /// The member filling each role, in role order (a failed one stays until replaced).
    public var roles: [UnitID]
    /// Erased members ready to take a role.
    public var spares: [UnitID]
    /// Members that failed; never used again.
    public var failed: [UnitID]
    /// Members that left a role and still hold its data, to erase before they become spares.
    public var erasing: [UnitID]
    /// The migration in progress, if any.
    public var migration: MigrationState?
    /// One bit per array block: set when the block holds data (written and not discarded).
    public var live: BlockBitmap

    /// Creates a record.
    public init(
        arrayID: UInt64, sequence: UInt64, generation: UInt64, roles: [UnitID], spares: [UnitID],
        failed: [UnitID] = [], erasing: [UnitID] = [], migration: MigrationState? = nil, live: BlockBitmap
    ) {
        self.arrayID = arrayID
        self.sequence = sequence
        self.generation = generation
        self.roles = roles
        self.spares = spares
        self.failed = failed
        self.erasing = erasing
        self.migration = migration
        self.live = live
    }

    /// The largest encoding of a record for an array of `blocks` blocks.
    public static func maximumSize(blocks: Int) -> Int {
        headerSize + 4 * maximumListCount * 8 + 8 + (blocks + 7) / 8 + 4
    }

    /// The record's encoding.
    public func encode() -> [UInt8] {
        var bytes: [UInt8] = []
        let lists = [roles, spares, failed, erasing]
        bytes.reserveCapacity(Self.headerSize + lists.reduce(0) { $0 + $1.count * 8 } + 12 + live.bytes.count)
        bytes.appendLE(Self.magic)
        bytes.appendLE(Self.version)
        bytes.appendLE(UInt16(0))
        bytes.appendLE(UInt32(0))  // the length, set below
        bytes.appendLE(arrayID)
        bytes.appendLE(sequence)
        bytes.appendLE(generation)
        for list in lists { bytes.appendLE(UInt16(list.count)) }
        bytes.append(migration?.kind.rawValue ?? 0)
        bytes.append(contentsOf: [0, 0, 0])
        bytes.appendLE(UInt32(migration?.role ?? 0))
        bytes.appendLE(UInt32(0))
        bytes.appendLE(migration?.target.rawValue ?? 0)
        bytes.appendLE(UInt64(migration?.resumeFrom ?? 0))
        for list in lists { for member in list { bytes.appendLE(member.rawValue) } }
        bytes.appendLE(UInt64(live.count))
        bytes.append(contentsOf: live.bytes)
        let length = UInt32(bytes.count + 4)
        Swift.withUnsafeBytes(of: length.littleEndian) { raw in
            for index in 0..<4 { bytes[12 + index] = raw[index] }
        }
        bytes.appendLE(CRC32C.checksum(bytes))
        return bytes
    }

    /// The length a record's first 16 bytes announce, or `nil` when they are not a record's.
    static func announcedLength(_ header: some Collection<UInt8>) -> Int? {
        let header = Array(header.prefix(16))
        guard header.count == 16, header.loadLE(UInt64.self, at: 0) == magic else { return nil }
        return Int(header.loadLE(UInt32.self, at: 12))
    }

    /// Decodes a record; throws ``ArrayMetadataError`` for anything that is not one this code
    /// wrote: another magic or version, a length or checksum that does not match, lists too
    /// long or naming a member twice, a migration of a role that does not exist.
    public static func decode(_ bytes: some Collection<UInt8>) throws(ArrayMetadataError) -> ArrayRecord {
        let bytes = Array(bytes)
        guard bytes.count >= headerSize + 12 else {
            throw ArrayMetadataError(.truncated, "record of \(bytes.count) bytes")
        }
        guard bytes.loadLE(UInt64.self, at: 0) == magic else { throw ArrayMetadataError(.notMetadata, "no record") }
        let version = bytes.loadLE(UInt16.self, at: 8)
        guard version == Self.version else {
            throw ArrayMetadataError(.unsupportedVersion, "record version \(version)")
        }
        let length = Int(bytes.loadLE(UInt32.self, at: 12))
        guard length >= headerSize + 12, length <= bytes.count else {
            throw ArrayMetadataError(.truncated, "record of \(length) bytes in \(bytes.count)")
        }
        guard CRC32C.checksum(bytes[0..<length - 4]) == bytes.loadLE(UInt32.self, at: length - 4) else {
            throw ArrayMetadataError(.checksumMismatch, "record")
        }
        let counts = (0..<4).map { Int(bytes.loadLE(UInt16.self, at: 40 + 2 * $0)) }
        guard counts.allSatisfy({ $0 <= maximumListCount }) else {
            throw ArrayMetadataError(.invalidField, "lists of \(counts) members")
        }
        var offset = headerSize
        var lists: [[UnitID]] = []
        for count in counts {
            guard offset + count * 8 <= length - 12 else { throw ArrayMetadataError(.truncated, "member lists") }
            lists.append((0..<count).map { UnitID(bytes.loadLE(UInt64.self, at: offset + 8 * $0)) })
            offset += count * 8
        }
        // A failed member keeps its role until it is replaced; otherwise a member is in one list.
        let serving = lists[0] + lists[1] + lists[3]
        let named = Set(serving + lists[2])
        guard Set(serving).count == serving.count, Set(lists[2]).count == lists[2].count,
            Set(lists[1] + lists[3]).isDisjoint(with: lists[2])
        else {
            throw ArrayMetadataError(.invalidField, "a member named twice")
        }
        let bits = bytes.loadLE(UInt64.self, at: offset)
        offset += 8
        guard bits <= UInt64(length) * 8, offset + (Int(bits) + 7) / 8 == length - 4 else {
            throw ArrayMetadataError(.invalidField, "live map of \(bits) bits in a record of \(length) bytes")
        }
        let live = BlockBitmap(count: Int(bits), bytes: Array(bytes[offset..<length - 4]))
        var migration: MigrationState?
        if bytes[48] != 0 {
            guard let kind = MigrationState.Kind(rawValue: bytes[48]) else {
                throw ArrayMetadataError(.invalidField, "migration kind \(bytes[48])")
            }
            let role = Int(bytes.loadLE(UInt32.self, at: 52))
            let target = UnitID(bytes.loadLE(UInt64.self, at: 60))
            let resumeFrom = bytes.loadLE(UInt64.self, at: 68)
            guard role < lists[0].count, !named.contains(target),
                resumeFrom <= UInt64(Int32.max) * 1024
            else {
                throw ArrayMetadataError(.invalidField, "migration of role \(role) to \(target)")
            }
            migration = MigrationState(role: role, target: target, kind: kind, resumeFrom: Int(resumeFrom))
        }
        return ArrayRecord(
            arrayID: bytes.loadLE(UInt64.self, at: 16), sequence: bytes.loadLE(UInt64.self, at: 24),
            generation: bytes.loadLE(UInt64.self, at: 32), roles: lists[0], spares: lists[1], failed: lists[2],
            erasing: lists[3], migration: migration, live: live)
    }
}

/// Why bytes are not a label or a record this code wrote.
public struct ArrayMetadataError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of problem.
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// Fewer bytes than the format needs.
        public static let truncated = Code("truncated")
        /// Not this format at all (another magic): a unit that was never part of an array.
        public static let notMetadata = Code("notMetadata")
        /// A format version this code does not read.
        public static let unsupportedVersion = Code("unsupportedVersion")
        /// The checksum does not match: torn or damaged.
        public static let checksumMismatch = Code("checksumMismatch")
        /// A field outside its range.
        public static let invalidField = Code("invalidField")

        /// The code's name.
        public var description: String { name }
    }

    /// The kind of problem.
    public var code: Code
    /// What was wrong, for people.
    public var detail: String

    /// Creates an error.
    public init(_ code: Code, _ detail: String) {
        self.code = code
        self.detail = detail
    }

    /// The code and the detail.
    public var description: String { "\(code): \(detail)" }
}

/// A fixed number of bits, stored eight to a byte (bit `i` in byte `i / 8`, lowest bit first).
public struct BlockBitmap: Sendable, Hashable {
    /// The number of bits.
    public let count: Int
    /// The bits' bytes; bits past `count` in the last byte are zero.
    public private(set) var bytes: [UInt8]

    /// `count` clear bits.
    public init(count: Int) {
        self.count = max(0, count)
        bytes = [UInt8](repeating: 0, count: (self.count + 7) / 8)
    }

    /// Bits from their bytes (the bits past `count` are cleared).
    init(count: Int, bytes: [UInt8]) {
        self.count = count
        self.bytes = bytes
        if count % 8 != 0, !self.bytes.isEmpty { self.bytes[self.bytes.count - 1] &= UInt8((1 << (count % 8)) - 1) }
    }

    /// The bit at `index`; `false` outside `0..<count`.
    public subscript(index: Int) -> Bool {
        get { index >= 0 && index < count && bytes[index >> 3] & (1 << UInt8(index & 7)) != 0 }
        set {
            guard index >= 0, index < count else { return }
            if newValue {
                bytes[index >> 3] |= 1 << UInt8(index & 7)
            } else {
                bytes[index >> 3] &= ~(1 << UInt8(index & 7))
            }
        }
    }

    /// The number of set bits.
    public var setCount: Int { bytes.reduce(0) { $0 + $1.nonzeroBitCount } }

    /// The first set bit at or after `index`, if any.
    public func firstSet(from index: Int) -> Int? {
        var position = max(0, index)
        while position < count {
            let byte = bytes[position >> 3] >> UInt8(position & 7)
            if byte != 0 { return position + byte.trailingZeroBitCount }
            position = (position | 7) + 1
        }
        return nil
    }
}
