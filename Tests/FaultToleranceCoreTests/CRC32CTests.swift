import FaultToleranceCore
import Testing

@Suite("CRC32C")
struct CRC32CTests {
    /// RFC 3720 appendix B.4 test vectors, plus the common "123456789" check value.
    static let vectors: [([UInt8], UInt32)] = [
        ([UInt8](repeating: 0, count: 32), 0x8A91_36AA),
        ([UInt8](repeating: 0xFF, count: 32), 0x62A8_AB43),
        ((0..<32).map { UInt8($0) }, 0x46DD_794E),
        ((0..<32).map { UInt8(31 - $0) }, 0x113F_DB5C),
        (Array("123456789".utf8), 0xE306_9283),
        ([], 0),
    ]

    @Test("RFC 3720 vectors", arguments: CRC32C.Implementation.allCases)
    func rfcVectors(implementation: CRC32C.Implementation) {
        for (input, expected) in Self.vectors {
            var crc = CRC32C(implementation: implementation)
            crc.update(input)
            #expect(crc.value == expected, "input of \(input.count) bytes")
        }
    }

    @Test("hardware and table agree on random input at every length and alignment")
    func pathsAgree() {
        var generator = SplitMix(seed: 0xC0FFEE)
        // Lengths around the folding steps (256 bytes with AVX-512, 128 with AVX2), both
        // three-stream block sizes (3 x 1,360 and 3 x 4,096 bytes) and pages.
        let edges = [
            383, 384, 385, 399, 400, 401, 511, 512, 513, 639, 640, 641, 767, 768, 769, 1023, 1024, 1025, 4079, 4080,
            4081, 4095, 4096, 4097, 4112, 8160, 8161, 12_287, 12_288, 12_289,
            16_368,
        ]
        for length in Array(0..<300) + edges + [40_000, 65_537] {
            let bytes = (0..<(length + 7)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            for start in 0..<min(8, bytes.count + 1) where start + length <= bytes.count {
                let slice = Array(bytes[start..<start + length])
                var hardware = CRC32C(implementation: .hardware)
                var table = CRC32C(implementation: .table)
                hardware.update(slice)
                table.update(slice)
                #expect(hardware.value == table.value, "length \(length) start \(start)")
            }
        }
    }

    @Test("incremental updates equal one update")
    func incremental() {
        var generator = SplitMix(seed: 7)
        let bytes = (0..<10_000).map { _ in UInt8.random(in: 0...255, using: &generator) }
        var pieces = CRC32C()
        var index = 0
        while index < bytes.count {
            let step = Int.random(in: 1...700, using: &generator)
            pieces.update(bytes[index..<min(bytes.count, index + step)])
            index += step
        }
        #expect(pieces.value == CRC32C.checksum(bytes))
    }

    @Test("a single flipped bit changes the checksum")
    func detectsBitFlip() {
        let bytes = (0..<512).map { UInt8(truncatingIfNeeded: $0 &* 31) }
        let original = CRC32C.checksum(bytes)
        for bit in stride(from: 0, to: bytes.count * 8, by: 37) {
            var damaged = bytes
            damaged[bit / 8] ^= UInt8(1 << (bit % 8))
            #expect(CRC32C.checksum(damaged) != original)
        }
    }
}

/// A small deterministic generator for test inputs.
struct SplitMix: RandomNumberGenerator {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

extension CRC32CTests {
    @Test func combineEqualsTheChecksumOfTheConcatenation() {
        var generator = SplitMix(seed: 0xC0B1)
        for (a, b) in [(0, 0), (1, 0), (0, 1), (3, 5), (12, 4096), (1000, 1), (4096, 70_000)] {
            let first = (0..<a).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let second = (0..<b).map { _ in UInt8.random(in: 0...255, using: &generator) }
            let combined = CRC32C.combine(
                CRC32C.checksum(first), CRC32C.checksum(second), secondLength: second.count)
            #expect(combined == CRC32C.checksum(first + second), "lengths \(a), \(b)")
        }
    }
}

extension CRC32CTests {
    @Test(
        "update(copying:to:) copies the bytes and checksums them like update", arguments: CRC32C.Implementation.allCases
    )
    func copyingUpdate(implementation: CRC32C.Implementation) {
        var generator = SplitMix(seed: 0xC09F)
        for length in [0, 1, 15, 16, 255, 256, 257, 300, 383, 384, 385, 400, 511, 1000, 4096, 70_001] {
            let bytes = (0..<(length + 3)).map { _ in UInt8.random(in: 0...255, using: &generator) }
            for start in 0..<3 {
                let slice = Array(bytes[start..<(start + length)])
                var copied = [UInt8](repeating: 0xAA, count: length + 2)
                var viaCopy = CRC32C(implementation: implementation)
                viaCopy.update([0x11])  // a running checksum, not a fresh one
                var plain = viaCopy
                slice.withUnsafeBytes { source in
                    copied.withUnsafeMutableBytes { target in
                        if let base = target.baseAddress { viaCopy.update(copying: source, to: base + 1) }
                    }
                }
                plain.update(slice)
                #expect(viaCopy.value == plain.value, "length \(length) start \(start)")
                #expect(Array(copied[1..<(length + 1)]) == slice, "length \(length) start \(start)")
                #expect(copied[0] == 0xAA && copied[length + 1] == 0xAA, "nothing written outside")
            }
        }
    }
}
