public import FaultToleranceCore
import NIOCore

/// An element's local drive: a `StorageUnit` whose first 64 KiB hold the element's registers
/// (two alternating, checksummed slots, so a torn update leaves the previous one) and whose
/// remaining bytes are the data the chain stores.
///
/// Slot layout (little-endian): magic `FTDC` (u32), format (u8), sequence (u64), applied
/// version (u64), host epoch (u64), register length (u32), the ``ChainRegister`` encoding,
/// CRC32C of all of it (u32). The slot with the highest valid sequence wins.
public final class ElementDrive: @unchecked Sendable {
    /// Bytes reserved for the register slots.
    public static let headerSize = 64 << 10
    static let slotSize = 32 << 10
    /// Magic, format, sequence, applied version, host epoch, register length.
    static let slotHeaderSize = 4 + 1 + 8 + 8 + 8 + 4
    static let magic: UInt32 = 0x4344_5446  // "FTDC"
    static let format: UInt8 = 1

    /// What a slot holds.
    public struct Saved: Sendable, Hashable {
        /// The chain register as last saved.
        public var chain: ChainRegister
        /// The last version applied and flushed.
        public var applied: UInt64
        /// The highest host epoch seen.
        public var hostEpoch: UInt64

        /// What to save.
        public init(chain: ChainRegister, applied: UInt64, hostEpoch: UInt64) {
            self.chain = chain
            self.applied = applied
            self.hostEpoch = hostEpoch
        }
    }

    /// The unit underneath.
    public let unit: any StorageUnit
    private var sequence: UInt64 = 0

    /// Wraps `unit`, which must be larger than ``headerSize``.
    public init(unit: any StorageUnit) throws(ChainError) {
        guard unit.capacity > Self.headerSize else {
            throw ChainError(
                .invalidConfiguration,
                detail: "a drive needs more than \(Self.headerSize) bytes, this one has \(unit.capacity)")
        }
        self.unit = unit
    }

    /// Bytes the drive offers the chain.
    public var dataCapacity: Int { unit.capacity - Self.headerSize }

    /// The newest valid slot, or `nil` on a drive never saved to.
    public func load() -> Saved? {
        var best: (UInt64, Saved)?
        for slot in 0..<2 {
            guard let bytes = try? unit.read(at: slot * Self.slotSize, count: Self.slotSize),
                let (sequence, saved) = Self.decodeSlot(bytes)
            else { continue }
            if let current = best, current.0 >= sequence { continue }
            best = (sequence, saved)
        }
        if let best { sequence = best.0 }
        return best?.1
    }

    /// Writes `saved` to the older slot and flushes.
    public func save(_ saved: Saved) throws(StorageError) {
        sequence += 1
        var buffer = ByteBuffer()
        buffer.writeMultipleIntegers(
            Self.magic, Self.format, sequence, saved.applied, saved.hostEpoch, UInt32(0), endianness: .little)
        let lengthAt = buffer.writerIndex - 4
        let start = buffer.writerIndex
        saved.chain.encode(into: &buffer)
        buffer.setInteger(UInt32(buffer.writerIndex - start), at: lengthAt, endianness: .little)
        let checksum = buffer.withUnsafeReadableBytes { CRC32C.checksum($0) }
        buffer.writeInteger(checksum, endianness: .little)
        guard buffer.readableBytes <= Self.slotSize else {
            throw StorageError(.invalidConfiguration, unit: unit.id, detail: "registers exceed a slot")
        }
        let bytes = Array(buffer.readableBytesView)
        try unit.write(bytes, at: Int(sequence % 2) * Self.slotSize)
        try unit.synchronize()
    }

    static func decodeSlot(_ bytes: [UInt8]) -> (UInt64, Saved)? {
        var buffer = ByteBuffer(bytes: bytes)
        guard
            let (magic, format, sequence, applied, hostEpoch, length) = buffer.readMultipleIntegers(
                endianness: .little, as: (UInt32, UInt8, UInt64, UInt64, UInt64, UInt32).self),
            magic == Self.magic, format == Self.format, Int(length) <= slotSize - slotHeaderSize - 4,
            var body = buffer.readSlice(length: Int(length)),
            let stored = buffer.readInteger(endianness: .little, as: UInt32.self)
        else { return nil }
        // The checksum covers the 33-byte header and the register. (It covered 29 bytes: every
        // slot failed its check, and a restarted element came back as if its drive were blank.)
        let computed = CRC32C.checksum(bytes[0..<(Self.slotHeaderSize + Int(length))])
        guard computed == stored, let chain = try? ChainRegister.decode(from: &body) else { return nil }
        return (sequence, Saved(chain: chain, applied: applied, hostEpoch: hostEpoch))
    }

    /// Reads data bytes at `offset` of the data area.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        try check(offset, buffer.count)
        try unit.read(into: buffer, at: Self.headerSize + offset)
    }

    /// Writes data bytes at `offset` of the data area.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        try check(offset, bytes.count)
        try unit.write(bytes, at: Self.headerSize + offset)
    }

    /// Flushes the data area.
    public func synchronize() throws(StorageError) { try unit.synchronize() }

    private func check(_ offset: Int, _ count: Int) throws(StorageError) {
        guard offset >= 0, count >= 0, offset <= dataCapacity, count <= dataCapacity - offset else {
            throw StorageError(
                .outOfBounds, unit: unit.id, offset: offset,
                detail: "range \(offset)..<\(offset &+ count) outside the data area of \(dataCapacity) bytes")
        }
    }
}
