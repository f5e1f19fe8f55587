internal import CFaultToleranceShims

/// CRC-32C (Castagnoli, polynomial 0x1EDC6F41 reflected as 0x82F63B78), the checksum on every
/// record this library writes to disk or sends over the wire.
///
/// Castagnoli's polynomial detects more error patterns than the IEEE CRC-32 at the lengths we
/// frame (Castagnoli, Bräuer, Herrmann 1993; RFC 3720 §12.1 chose it for iSCSI for that
/// reason), and x86_64 (SSE4.2) and AArch64 (CRC extension) compute it in one instruction.
/// When the CPU has the instruction ``CRC32C`` uses it; otherwise a slicing-by-8 table.
///
/// ```swift
/// var crc = CRC32C()
/// crc.update(header)
/// crc.update(payload)
/// let checksum = crc.value
/// ```
public struct CRC32C: Sendable, Hashable {
    /// Which implementation computes checksums.
    public enum Implementation: String, Sendable, CaseIterable {
        /// The CPU's CRC32C instruction.
        case hardware
        /// A portable slicing-by-8 table walk.
        case table
    }

    /// Whether this CPU has the instruction ``Implementation/hardware`` needs.
    public static let isHardwareAvailable: Bool = ft_crc32c_hardware_available() != 0

    /// The implementation ``init()`` picks on this machine.
    public static var preferredImplementation: Implementation { isHardwareAvailable ? .hardware : .table }

    private var state: UInt32
    private let implementation: Implementation

    /// Starts a checksum with the fastest implementation this CPU supports.
    public init() {
        self.state = 0xFFFF_FFFF
        self.implementation = Self.preferredImplementation
    }

    /// Starts a checksum with a chosen implementation; asking for ``Implementation/hardware``
    /// on a CPU without it falls back to the table, since both produce the same values.
    public init(implementation: Implementation) {
        self.state = 0xFFFF_FFFF
        self.implementation = implementation == .hardware && !Self.isHardwareAvailable ? .table : implementation
    }

    /// The checksum of every byte passed to ``update(_:)-(UnsafeRawBufferPointer)`` so far.
    public var value: UInt32 { ~state }

    /// The running CRC32C register (before the final inversion), for code in this package that
    /// advances it with the CPU instruction inside a loop of its own (the live copy's one-pass
    /// page copy); `nil` when this checksum uses the table.
    package var hardwareRegister: UInt32? {
        get { implementation == .hardware ? state : nil }
        set { if let newValue, implementation == .hardware { state = newValue } }
    }

    /// Adds `source` to the checksum and copies it to `destination` (which has room for it and
    /// does not overlap it), reading each byte once where the CPU allows.
    public mutating func update(copying source: UnsafeRawBufferPointer, to destination: UnsafeMutableRawPointer) {
        guard let base = source.baseAddress, !source.isEmpty else { return }
        switch implementation {
        case .hardware: state = ft_crc32c_hardware_update_copying(state, destination, base, source.count)
        case .table:
            destination.copyMemory(from: base, byteCount: source.count)
            state = CRC32CTable.update(state, source)
        }
    }

    /// Adds bytes to the checksum.
    public mutating func update(_ bytes: UnsafeRawBufferPointer) {
        guard let base = bytes.baseAddress, !bytes.isEmpty else { return }
        switch implementation {
        case .hardware: state = ft_crc32c_hardware_update(state, base, bytes.count)
        case .table: state = CRC32CTable.update(state, bytes)
        }
    }

    /// Adds the bytes of a contiguous collection to the checksum.
    public mutating func update(_ bytes: some Sequence<UInt8>) {
        let done: Void? = bytes.withContiguousStorageIfAvailable { update(UnsafeRawBufferPointer($0)) }
        if done == nil {
            let copy = Array(bytes)
            copy.withUnsafeBytes { update($0) }
        }
    }

    /// The checksum of `bytes` in one call.
    public static func checksum(_ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc = CRC32C()
        crc.update(bytes)
        return crc.value
    }

    /// The checksum of a byte sequence in one call.
    public static func checksum(_ bytes: some Sequence<UInt8>) -> UInt32 {
        var crc = CRC32C()
        crc.update(bytes)
        return crc.value
    }
}

/// Slicing-by-8 tables for CRC-32C: eight table lookups consume eight bytes per step, which
/// removes the per-byte loop-carried dependency of the classic one-table algorithm.
private enum CRC32CTable {
    static let tables: [[UInt32]] = {
        var tables = [[UInt32]](repeating: [UInt32](repeating: 0, count: 256), count: 8)
        for index in 0..<256 {
            var crc = UInt32(index)
            for _ in 0..<8 {
                crc = (crc & 1) != 0 ? (crc >> 1) ^ 0x82F6_3B78 : crc >> 1
            }
            tables[0][index] = crc
        }
        for index in 0..<256 {
            for slice in 1..<8 {
                let previous = tables[slice - 1][index]
                tables[slice][index] = (previous >> 8) ^ tables[0][Int(previous & 0xFF)]
            }
        }
        return tables
    }()

    /// A flat copy of ``tables`` so the hot loop indexes one buffer without bounds checks.
    static let flat: [UInt32] = tables.flatMap { $0 }

    static func update(_ initial: UInt32, _ bytes: UnsafeRawBufferPointer) -> UInt32 {
        var crc = initial
        flat.withUnsafeBufferPointer { table in
            guard let t = table.baseAddress else { return }
            var index = 0
            let count = bytes.count
            while index + 8 <= count {
                let low = bytes.loadUnaligned(fromByteOffset: index, as: UInt32.self).littleEndian ^ crc
                let high = bytes.loadUnaligned(fromByteOffset: index + 4, as: UInt32.self).littleEndian
                crc =
                    t[7 * 256 + Int(low & 0xFF)] ^ t[6 * 256 + Int((low >> 8) & 0xFF)]
                    ^ t[5 * 256 + Int((low >> 16) & 0xFF)] ^ t[4 * 256 + Int(low >> 24)]
                    ^ t[3 * 256 + Int(high & 0xFF)] ^ t[2 * 256 + Int((high >> 8) & 0xFF)]
                    ^ t[1 * 256 + Int((high >> 16) & 0xFF)] ^ t[Int(high >> 24)]
                index += 8
            }
            while index < count {
                crc = (crc >> 8) ^ t[Int((crc ^ UInt32(bytes[index])) & 0xFF)]
                index += 1
            }
        }
        return crc
    }
}

extension CRC32C {
    /// The CRC32C of the concatenation `A ‖ B`, from `crc(A)`, `crc(B)` and the length of `B`,
    /// without reading either: `crc(A)` is advanced over `length` zero bytes by multiplying
    /// with x^(8·length) modulo the polynomial, then combined with `crc(B)`. Lets a producer
    /// checksum pieces while they are hot in cache and join them later.
    public static func combine(_ first: UInt32, _ second: UInt32, secondLength length: Int) -> UInt32 {
        guard length > 0 else { return first }
        return multiply(powerOfX(bytes: length), first) ^ second
    }

    /// The reflected CRC32C polynomial.
    private static let reflectedPolynomial: UInt32 = 0x82F6_3B78

    /// x^(2^k) modulo the polynomial, for k = 0...63 (in reflected form, x^0 is bit 31).
    private static let powersOfTwo: [UInt32] = {
        var table = [UInt32](repeating: 0, count: 64)
        var power: UInt32 = 1 << 30  // x^1
        for k in 0..<64 {
            table[k] = power
            power = multiply(power, power)
        }
        return table
    }()

    /// a·b modulo the polynomial, both reflected.
    private static func multiply(_ a: UInt32, _ b: UInt32) -> UInt32 {
        var product: UInt32 = 0
        var multiplier = a
        var shifted = b
        while multiplier != 0 {
            if multiplier & (1 << 31) != 0 { product ^= shifted }
            multiplier <<= 1
            shifted = shifted & 1 != 0 ? (shifted >> 1) ^ reflectedPolynomial : shifted >> 1
        }
        return product
    }

    /// x^(8·bytes) modulo the polynomial.
    private static func powerOfX(bytes: Int) -> UInt32 {
        var result: UInt32 = 1 << 31  // x^0
        var bits = UInt64(bytes) << 3
        var k = 0
        while bits != 0 {
            if bits & 1 != 0 { result = multiply(powersOfTwo[k], result) }
            bits >>= 1
            k += 1
        }
        return result
    }
}
