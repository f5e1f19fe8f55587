public import FaultToleranceCore

/// Where a ``LazyVolume`` stands, as its state unit keeps it: the phase, how far the replica is
/// built, and which blocks the workload has written to the overlay.
///
/// Layout of the state unit (integers little-endian):
/// - Two header slots of 512 bytes at offsets 0 and 512, written alternately; the valid one with
///   the higher generation wins, so a torn header write leaves the other. A slot: magic
///   `FTDRLAZY` (8 bytes), format version (UInt16, 1), phase (UInt8), reserved (UInt8, 0), block
///   size (UInt32), reserved (UInt32, 0), identity (UInt64), capacity (UInt64), generation
///   (UInt64), blocks built (UInt64), CRC32C of the 52 bytes before it (UInt32); zeros to 512.
/// - From offset 4,096, the overlay's dirty-block bitmap in sectors of 512 bytes: CRC32C of the
///   sector's bytes 4..<512 (UInt32), the sector's index (UInt32), then 504 bytes of bits (bit
///   `i` of the sector's 4,032 blocks in byte `8 + i / 8`, lowest bit first). A sector of zeros
///   is one never written. Bits are only ever set, so an old, new or lost sector write each
///   leaves every bit set at an earlier synchronize.
public struct LazyVolumeHeader: Sendable, Hashable {
    /// Bytes of one header slot.
    public static let slotSize = 512
    /// Where the dirty-block bitmap starts.
    public static let bitmapOffset = 4096
    /// Bytes of one bitmap sector.
    public static let bitmapSectorSize = 512
    /// Blocks one bitmap sector covers.
    public static let blocksPerBitmapSector = (bitmapSectorSize - 8) * 8
    /// The format version this code writes and reads.
    public static let version: UInt16 = 1
    static let magic: UInt64 = 0x595A_414C_5244_5446  // "FTDRLAZY" little-endian
    static let encodedSize = 56

    /// Where a lazy volume is in its life.
    public enum Phase: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
        /// The replica is being built from the recovery point; the workload's writes go to the overlay.
        case building = 1
        /// The replica is complete; the overlay's blocks are being copied onto it in rounds.
        case migrating = 2
        /// The replica is the volume: every read and write goes to it.
        case switched = 3

        /// The phase's name.
        public var description: String {
            switch self {
            case .building: "building"
            case .migrating: "migrating"
            case .switched: "switched"
            }
        }
    }

    /// The phase.
    public var phase: Phase
    /// Bytes per block.
    public var blockSize: Int
    /// Which volume the state belongs to (chosen by the caller; a state unit of another volume is refused).
    public var identity: UInt64
    /// The volume's size in bytes.
    public var capacity: Int
    /// Increases with every header written.
    public var generation: UInt64
    /// Blocks `0..<built` of the replica hold the recovery point's content, durably.
    public var built: Int

    /// Creates a header.
    public init(phase: Phase, blockSize: Int, identity: UInt64, capacity: Int, generation: UInt64, built: Int) {
        self.phase = phase
        self.blockSize = blockSize
        self.identity = identity
        self.capacity = capacity
        self.generation = generation
        self.built = built
    }

    /// The volume's blocks (the last may be partial).
    public var blockCount: Int { blockSize > 0 ? (capacity + blockSize - 1) / blockSize : 0 }

    /// Bytes a state unit needs for a volume of `capacity` bytes in blocks of `blockSize`.
    public static func stateSize(capacity: Int, blockSize: Int) -> Int {
        let blocks = (capacity + blockSize - 1) / blockSize
        let sectors = (blocks + blocksPerBitmapSector - 1) / blocksPerBitmapSector
        return bitmapOffset + sectors * bitmapSectorSize
    }

    /// The slot's 512 bytes.
    public func encoded() -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(Self.slotSize)
        bytes.appendLE(Self.magic)
        bytes.appendLE(Self.version)
        bytes.append(phase.rawValue)
        bytes.append(0)
        bytes.appendLE(UInt32(truncatingIfNeeded: blockSize))
        bytes.appendLE(UInt32(0))
        bytes.appendLE(identity)
        bytes.appendLE(UInt64(capacity))
        bytes.appendLE(generation)
        bytes.appendLE(UInt64(built))
        bytes.appendLE(CRC32C.checksum(bytes))
        bytes += [UInt8](repeating: 0, count: Self.slotSize - bytes.count)
        return bytes
    }

    /// Decodes a slot; throws ``RecoveryError`` for anything that is not one this code wrote.
    public static func decode(_ bytes: some Collection<UInt8>) throws(RecoveryError) -> LazyVolumeHeader {
        let bytes = Array(bytes.prefix(encodedSize))
        guard bytes.count == encodedSize else { throw RecoveryError(.truncated, "header slot of \(bytes.count) bytes") }
        guard bytes.loadLE(UInt64.self, at: 0) == magic else {
            throw RecoveryError(.notRecoveryData, "no lazy-volume header")
        }
        let version = bytes.loadLE(UInt16.self, at: 8)
        guard version == Self.version else {
            throw RecoveryError(.unsupportedVersion, "lazy-volume header version \(version)")
        }
        guard bytes.loadLE(UInt32.self, at: 52) == CRC32C.checksum(bytes[0..<52]) else {
            throw RecoveryError(.checksumMismatch, "lazy-volume header")
        }
        guard let phase = Phase(rawValue: bytes[10]) else { throw RecoveryError(.invalidField, "phase \(bytes[10])") }
        let blockSize = Int(bytes.loadLE(UInt32.self, at: 12))
        guard blockSize >= 512, blockSize <= 1 << 20, blockSize.nonzeroBitCount == 1 else {
            throw RecoveryError(.invalidField, "block size \(blockSize)")
        }
        let capacity = bytes.loadLE(UInt64.self, at: 28)
        guard capacity > 0, capacity <= UInt64(Int.max / 2) else {
            throw RecoveryError(.invalidField, "capacity \(capacity)")
        }
        let header = LazyVolumeHeader(
            phase: phase, blockSize: blockSize, identity: bytes.loadLE(UInt64.self, at: 20), capacity: Int(capacity),
            generation: bytes.loadLE(UInt64.self, at: 36), built: 0)
        let built = bytes.loadLE(UInt64.self, at: 44)
        guard built <= UInt64(header.blockCount) else {
            throw RecoveryError(.invalidField, "\(built) blocks built of \(header.blockCount)")
        }
        var result = header
        result.built = Int(built)
        return result
    }

    /// The newer valid header of two slots. Throws when neither is valid: ``RecoveryError/Code/notInitialized``
    /// when both are zeros, the first slot's error otherwise.
    public static func newest(first: [UInt8], second: [UInt8]) throws(RecoveryError) -> LazyVolumeHeader {
        let a = Result { () throws(RecoveryError) in try decode(first) }
        let b = Result { () throws(RecoveryError) in try decode(second) }
        switch (a, b) {
        case (.success(let x), .success(let y)): return x.generation >= y.generation ? x : y
        case (.success(let x), .failure): return x
        case (.failure, .success(let y)): return y
        case (.failure(let error), .failure):
            if first.allSatisfy({ $0 == 0 }) && second.allSatisfy({ $0 == 0 }) {
                throw RecoveryError(.notInitialized, "the state unit holds no lazy-volume header")
            }
            throw error
        }
    }

    /// Encodes bitmap sector `index` from the bitmap's 64-bit words.
    public static func encodeBitmapSector(index: Int, words: [UInt64]) -> [UInt8] {
        var bytes = [UInt8](repeating: 0, count: bitmapSectorSize)
        let first = index * blocksPerBitmapSector
        for bit in 0..<blocksPerBitmapSector {
            let block = first + bit
            guard block / 64 < words.count else { break }
            if words[block / 64] & (1 << UInt64(block % 64)) != 0 {
                bytes[8 + bit / 8] |= 1 << UInt8(bit % 8)
            }
        }
        bytes.withUnsafeMutableBytes { $0.baseAddress?.storeLE(UInt32(truncatingIfNeeded: index), at: 4) }
        let checksum = CRC32C.checksum(bytes[4...])
        bytes.withUnsafeMutableBytes { $0.baseAddress?.storeLE(checksum, at: 0) }
        return bytes
    }

    /// Sets in `words` the bits bitmap sector `index` holds; a sector of zeros holds none. Throws
    /// for a sector that fails its checksum or names another index.
    public static func decodeBitmapSector(
        _ bytes: some Collection<UInt8>, index: Int, blocks: Int, into words: inout [UInt64]
    ) throws(RecoveryError) {
        let bytes = Array(bytes)
        guard bytes.count == bitmapSectorSize else {
            throw RecoveryError(.truncated, "bitmap sector \(index) of \(bytes.count) bytes")
        }
        if bytes.allSatisfy({ $0 == 0 }) { return }
        guard bytes.loadLE(UInt32.self, at: 0) == CRC32C.checksum(bytes[4...]) else {
            throw RecoveryError(.checksumMismatch, "bitmap sector \(index)")
        }
        guard bytes.loadLE(UInt32.self, at: 4) == UInt32(truncatingIfNeeded: index) else {
            throw RecoveryError(
                .invalidField, "bitmap sector \(index) names sector \(bytes.loadLE(UInt32.self, at: 4))")
        }
        let first = index * blocksPerBitmapSector
        for bit in 0..<blocksPerBitmapSector where bytes[8 + bit / 8] & (1 << UInt8(bit % 8)) != 0 {
            let block = first + bit
            guard block < blocks, block / 64 < words.count else {
                throw RecoveryError(.invalidField, "bitmap sector \(index) marks block \(block) of \(blocks)")
            }
            words[block / 64] |= 1 << UInt64(block % 64)
        }
    }
}
