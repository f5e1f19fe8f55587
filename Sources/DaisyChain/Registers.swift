public import FaultToleranceCore
public import NIOCore

/// The state of an element's local drive, as its drive state register holds it.
public enum DriveState: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// No drive attached.
    case absent = 0
    /// Attached, not yet serving: formatting, or catching up with the chain after a rejoin.
    case initializing = 1
    /// Serving reads and writes.
    case ready = 2
    /// Serving, but its error counters crossed the warning line.
    case degraded = 3
    /// Not serving: a write or flush failed, or the element was cut out of the chain.
    case failed = 4
    /// Unplugged by an operator.
    case removed = 5

    /// The value as people read it.
    public var description: String {
        switch self {
        case .absent: "absent"
        case .initializing: "initializing"
        case .ready: "ready"
        case .degraded: "degraded"
        case .failed: "failed"
        case .removed: "removed"
        }
    }

    /// Whether an element in this state may answer host reads.
    public var serves: Bool { self == .ready || self == .degraded }
}

/// How the chain presents its drives to the host.
public enum ChainMode: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// The seed's: capacities concatenated into one address space; each range has one holder.
    case span = 1
    /// Chain replication: every element holds every block; writes flow head to tail, any
    /// element answers reads of clean blocks (CRAQ).
    case mirror = 2

    /// The value as people read it.
    public var description: String { self == .span ? "span" : "mirror" }
}

/// One element's drive state register.
///
/// Only the element that owns the drive changes it, and every change raises ``version`` and
/// stamps the owner's ``incarnation``; a chain merges two copies of the same element's
/// register by keeping the later change (see ``isNewer(than:)``), so
/// every element converges to the owner's latest value whatever order signals arrive in.
public struct DriveRegister: Sendable, Hashable {
    /// A random identity chosen when the drive was formatted: a swapped drive has another.
    public var driveID: UInt64
    /// Bytes the drive offers the chain.
    public var capacity: UInt64
    /// What the drive is doing.
    public var state: DriveState
    /// Reads that failed since the last reset.
    public var readErrors: UInt32
    /// Writes and flushes that failed since the last reset.
    public var writeErrors: UInt32
    /// Raised by the owner on every change.
    public var version: UInt64
    /// The owner's incarnation when it last changed the register. A later incarnation wins
    /// whatever the versions: a change the owner made and never saved before it restarted
    /// must not outrank what it says after the restart.
    public var incarnation: UInt64

    /// Creates a register.
    public init(
        driveID: UInt64, capacity: UInt64, state: DriveState, readErrors: UInt32 = 0, writeErrors: UInt32 = 0,
        version: UInt64 = 1, incarnation: UInt64 = 0
    ) {
        self.driveID = driveID
        self.capacity = capacity
        self.state = state
        self.readErrors = readErrors
        self.writeErrors = writeErrors
        self.version = version
        self.incarnation = incarnation
    }

    /// Whether this copy is a later change by the owner than `other`: a later incarnation,
    /// or the same one and a higher version.
    public func isNewer(than other: DriveRegister) -> Bool {
        incarnation != other.incarnation ? incarnation > other.incarnation : version > other.version
    }
}

/// Orders concurrent changes of the chain's membership: the higher epoch wins; between
/// proposals of the same epoch, the proposer with the greater name; and between two of one
/// proposer, the later incarnation.
///
/// The incarnation makes every generation name one membership: an element whose proposal
/// was never saved (its drive failed) and that restarted makes the same epoch again, and
/// without it two different memberships would share a name.
public struct ChainGeneration: Sendable, Hashable, Comparable, CustomStringConvertible {
    /// Raised by one on every membership change.
    public var epoch: UInt64
    /// The element that proposed this membership.
    public var proposer: NodeID
    /// The proposer's incarnation (it grows with every start of the element).
    public var incarnation: UInt64

    /// Creates a generation.
    public init(epoch: UInt64, proposer: NodeID, incarnation: UInt64 = 0) {
        self.epoch = epoch
        self.proposer = proposer
        self.incarnation = incarnation
    }

    /// Whether `lhs` is older than `rhs`.
    public static func < (lhs: ChainGeneration, rhs: ChainGeneration) -> Bool {
        if lhs.epoch != rhs.epoch { return lhs.epoch < rhs.epoch }
        if lhs.proposer != rhs.proposer { return lhs.proposer < rhs.proposer }
        return lhs.incarnation < rhs.incarnation
    }

    /// The value as people read it: epoch/proposer, and the incarnation's last four hex
    /// digits after a dot when it is not zero.
    public var description: String {
        incarnation == 0 ? "\(epoch)/\(proposer)" : "\(epoch)/\(proposer).\(String(incarnation & 0xFFFF, radix: 16))"
    }
}

/// One element as the chain state register lists it.
public struct ChainMember: Sendable, Hashable {
    /// The element.
    public var node: NodeID
    /// Whether it is linked into the live chain (signals and, in mirror mode, writes pass through it).
    public var linked: Bool
    /// Its drive state register, as last heard.
    public var drive: DriveRegister

    /// Creates a member.
    public init(node: NodeID, linked: Bool, drive: DriveRegister) {
        self.node = node
        self.linked = linked
        self.drive = drive
    }
}

/// The chain state register every element keeps: the elements in chain order with their drive
/// registers, which of them are linked, the mode, the host, and the generation of the membership.
///
/// In span mode the order is also the LBA map: element *i* holds the volume's bytes from the sum
/// of the capacities before it, and it keeps that range while it is cut out (its range is then
/// unavailable, never shifted onto another element). In mirror mode the linked elements in order
/// are the replication chain, head first.
///
/// ``merge(_:)`` is a join: the membership (order, linked flags) comes from the higher
/// generation, each drive register from its later change (``DriveRegister/isNewer(than:)``). It is commutative, associative and
/// idempotent, so elements that have seen the same signals hold the same register in whatever
/// order they saw them.
public struct ChainRegister: Sendable, Hashable {
    /// The encoding's version byte.
    public static let formatVersion: UInt8 = 1
    /// Most elements a chain can have.
    public static let maximumElements = 64

    /// Span or mirror.
    public var mode: ChainMode
    /// The generation of ``members``' order and linked flags.
    public var generation: ChainGeneration
    /// Every element in chain order.
    public var members: [ChainMember]
    /// The node the host runs on (elements send it commits and register changes).
    public var host: NodeID

    /// Creates a register.
    public init(mode: ChainMode, generation: ChainGeneration, members: [ChainMember], host: NodeID) {
        self.mode = mode
        self.generation = generation
        self.members = members
        self.host = host
    }

    /// The register a new chain forms with: `elements` in order, all linked, each drive ready
    /// with `capacity` bytes (drive ids 1, 2, …), generation 1 proposed by `init`.
    public static func forming(
        mode: ChainMode, elements: [NodeID], capacity: Int, host: NodeID = "host"
    ) -> ChainRegister {
        ChainRegister(
            mode: mode, generation: ChainGeneration(epoch: 1, proposer: "init"),
            members: elements.enumerated().map { index, node in
                ChainMember(
                    node: node, linked: true,
                    drive: DriveRegister(driveID: UInt64(index + 1), capacity: UInt64(capacity), state: .ready))
            }, host: host)
    }

    /// The linked elements in order (the live chain).
    public var linked: [NodeID] { members.filter(\.linked).map(\.node) }

    /// The first linked element.
    public var head: NodeID? { members.first(where: \.linked)?.node }

    /// The last linked element.
    public var tail: NodeID? { members.last(where: \.linked)?.node }

    /// The member record of `node`.
    public func member(_ node: NodeID) -> ChainMember? { members.first { $0.node == node } }

    /// The linked element after `node` in the chain (downstream), or `nil` at the tail.
    public func successor(of node: NodeID) -> NodeID? {
        guard let index = members.firstIndex(where: { $0.node == node }) else { return nil }
        return members[(index + 1)...].first(where: \.linked)?.node
    }

    /// The linked element before `node` in the chain (upstream), or `nil` at the head.
    public func predecessor(of node: NodeID) -> NodeID? {
        guard let index = members.firstIndex(where: { $0.node == node }) else { return nil }
        return members[..<index].last(where: \.linked)?.node
    }

    /// `node`'s position among the linked elements, from 0 at the head.
    public func position(of node: NodeID) -> Int? { linked.firstIndex(of: node) }

    /// The volume's capacity: the sum of the members' capacities (span), or the smallest linked
    /// member's (mirror; while no member is linked, the smallest member's: the volume keeps its
    /// size while the chain re-forms).
    public var volumeCapacity: Int {
        switch mode {
        case .span:
            return members.reduce(0) { $0 + Int(clamping: $1.drive.capacity) }
        case .mirror:
            let linked = members.filter(\.linked)
            return (linked.isEmpty ? members : linked).map { Int(clamping: $0.drive.capacity) }.min() ?? 0
        }
    }

    /// Span mode: the pieces of `range` and the element holding each, with the offset on its drive.
    public func spanPieces(_ range: Range<Int>) -> [(node: NodeID, volume: Range<Int>, driveOffset: Int)] {
        var pieces: [(NodeID, Range<Int>, Int)] = []
        var start = 0
        for member in members {
            let end = start + Int(clamping: member.drive.capacity)
            let low = max(start, range.lowerBound)
            let high = min(end, range.upperBound)
            if low < high { pieces.append((member.node, low..<high, low - start)) }
            start = end
            if start >= range.upperBound { break }
        }
        return pieces
    }

    /// Joins `other` into this register (see the type's discussion). Returns whether anything changed.
    @discardableResult
    public mutating func merge(_ other: ChainRegister) -> Bool {
        let before = self
        var drives: [NodeID: DriveRegister] = [:]
        for member in members + other.members {
            if let known = drives[member.node], !member.drive.isNewer(than: known) { continue }
            drives[member.node] = member.drive
        }
        if other.generation > generation {
            generation = other.generation
            members = other.members
            host = other.host
            mode = other.mode
        }
        for index in members.indices {
            if let drive = drives[members[index].node] { members[index].drive = drive }
        }
        return self != before
    }

    /// A 64-bit digest heartbeats carry, so neighbours notice a difference and exchange registers.
    public var digest: UInt64 {
        var hash = TraceHashLike()
        hash.mix(generation.epoch)
        hash.mix(UInt64(truncatingIfNeeded: generation.proposer.name.hashValueStable))
        hash.mix(generation.incarnation)
        for member in members {
            hash.mix(UInt64(truncatingIfNeeded: member.node.name.hashValueStable))
            hash.mix(member.linked ? 1 : 0)
            hash.mix(member.drive.version)
            hash.mix(member.drive.incarnation)
        }
        return hash.value
    }
}

/// splitmix64 over a running value: a digest that is the same in every process.
struct TraceHashLike {
    var value: UInt64 = 0xcbf2_9ce4_8422_2325
    mutating func mix(_ input: UInt64) {
        var z = (value ^ input) &+ 0x9e37_79b9_7f4a_7c15
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        value = z ^ (z >> 31)
    }
}

extension String {
    /// FNV-1a of the UTF-8 bytes: unlike `hashValue`, the same in every process.
    var hashValueStable: UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in utf8 {
            hash ^= UInt64(byte)
            hash &*= 0x100_0000_01b3
        }
        return hash
    }
}

// MARK: - Encoding

extension DriveRegister {
    /// Bytes of the encoding (fixed).
    public static let encodedSize = 8 + 8 + 1 + 4 + 4 + 8 + 8

    func encode(into buffer: inout ByteBuffer) {
        buffer.writeMultipleIntegers(
            driveID, capacity, state.rawValue, readErrors, writeErrors, version, incarnation, endianness: .little)
    }

    static func decode(from buffer: inout ByteBuffer) throws(ChainError) -> DriveRegister {
        guard
            let (driveID, capacity, state, readErrors, writeErrors, version, incarnation) = buffer.readMultipleIntegers(
                endianness: .little, as: (UInt64, UInt64, UInt8, UInt32, UInt32, UInt64, UInt64).self)
        else { throw ChainError(.malformed, detail: "drive register truncated") }
        guard let driveState = DriveState(rawValue: state) else {
            throw ChainError(.malformed, detail: "drive state \(state) unknown")
        }
        guard capacity <= UInt64(Int.max) else { throw ChainError(.malformed, detail: "drive capacity \(capacity)") }
        return DriveRegister(
            driveID: driveID, capacity: capacity, state: driveState, readErrors: readErrors,
            writeErrors: writeErrors, version: version, incarnation: incarnation)
    }
}

extension ChainRegister {
    /// Appends the register: version byte, mode, generation, host, members, then a CRC32C of
    /// all of it. The layout is in the DocC article *DaisyChain*.
    public func encode(into buffer: inout ByteBuffer) {
        let start = buffer.writerIndex
        buffer.writeInteger(Self.formatVersion)
        buffer.writeInteger(mode.rawValue)
        buffer.writeInteger(generation.epoch, endianness: .little)
        writeName(generation.proposer, into: &buffer)
        buffer.writeInteger(generation.incarnation, endianness: .little)
        writeName(host, into: &buffer)
        buffer.writeInteger(UInt8(truncatingIfNeeded: members.count))
        for member in members {
            writeName(member.node, into: &buffer)
            buffer.writeInteger(member.linked ? UInt8(1) : 0)
            member.drive.encode(into: &buffer)
        }
        let checksum = buffer.withUnsafeReadableBytes { raw in
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: raw[(start - buffer.readerIndex)...]))
        }
        buffer.writeInteger(checksum, endianness: .little)
    }

    /// The encoding as bytes.
    public var encoded: ByteBuffer {
        var buffer = ByteBuffer()
        encode(into: &buffer)
        return buffer
    }

    /// Reads a register, checking its checksum, version and every field.
    public static func decode(from buffer: inout ByteBuffer) throws(ChainError) -> ChainRegister {
        let original = buffer
        let start = buffer.readerIndex
        guard let version = buffer.readInteger(as: UInt8.self) else {
            throw ChainError(.malformed, detail: "chain register empty")
        }
        guard version == formatVersion else {
            throw ChainError(.malformed, detail: "chain register version \(version), this code reads \(formatVersion)")
        }
        guard let modeByte = buffer.readInteger(as: UInt8.self), let mode = ChainMode(rawValue: modeByte) else {
            throw ChainError(.malformed, detail: "chain mode unknown")
        }
        guard let epoch = buffer.readInteger(endianness: .little, as: UInt64.self) else {
            throw ChainError(.malformed, detail: "chain register truncated")
        }
        let proposer = try readName(from: &buffer)
        guard let incarnation = buffer.readInteger(endianness: .little, as: UInt64.self) else {
            throw ChainError(.malformed, detail: "chain register truncated")
        }
        let host = try readName(from: &buffer)
        guard let count = buffer.readInteger(as: UInt8.self), Int(count) <= maximumElements else {
            throw ChainError(.malformed, detail: "chain register lists too many elements")
        }
        var members: [ChainMember] = []
        var seen = Set<NodeID>()
        for _ in 0..<count {
            let node = try readName(from: &buffer)
            guard seen.insert(node).inserted else {
                throw ChainError(.malformed, element: node, detail: "element listed twice")
            }
            guard let linked = buffer.readInteger(as: UInt8.self), linked <= 1 else {
                throw ChainError(.malformed, element: node, detail: "linked flag invalid")
            }
            let drive = try DriveRegister.decode(from: &buffer)
            members.append(ChainMember(node: node, linked: linked == 1, drive: drive))
        }
        let length = buffer.readerIndex - start
        guard let stored = buffer.readInteger(endianness: .little, as: UInt32.self) else {
            throw ChainError(.malformed, detail: "chain register checksum missing")
        }
        guard let body = original.getSlice(at: start, length: length) else {
            throw ChainError(.malformed, detail: "chain register truncated")
        }
        let check = body.withUnsafeReadableBytes { CRC32C.checksum($0) }
        guard check == stored else {
            throw ChainError(.malformed, detail: "chain register checksum mismatch")
        }
        return ChainRegister(
            mode: mode, generation: ChainGeneration(epoch: epoch, proposer: proposer, incarnation: incarnation),
            members: members, host: host)
    }
}

func writeName(_ node: NodeID, into buffer: inout ByteBuffer) {
    buffer.writeInteger(UInt8(truncatingIfNeeded: node.name.utf8.count))
    buffer.writeString(node.name)
}

func readName(from buffer: inout ByteBuffer) throws(ChainError) -> NodeID {
    guard let length = buffer.readInteger(as: UInt8.self), length > 0,
        let raw = buffer.readBytes(length: Int(length)), let name = String(validating: raw, as: UTF8.self),
        let node = NodeID(name)
    else { throw ChainError(.malformed, detail: "element name invalid") }
    return node
}
