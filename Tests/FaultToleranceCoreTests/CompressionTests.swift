import FaultToleranceCore
import Testing

@Suite("Deflate and Inflate")
struct CompressionTests {
    static func sample(count: Int, seed: UInt64) -> [UInt8] {
        var generator = SplitMix(seed: seed)
        // Compressible: runs of a few symbols.
        return (0..<count).map { _ in UInt8.random(in: 0...5, using: &generator) &* 17 }
    }

    @Test("one-shot round trip", arguments: [0, 1, 100, 65_536, 1_000_000])
    func roundTrip(count: Int) throws {
        let input = Self.sample(count: count, seed: UInt64(count))
        for level: Int32 in [0, 1, 6, 9] {
            let packed = try Deflate.compress(input, level: level)
            #expect(try Inflate.decompress(packed) == input)
        }
    }

    @Test("streaming in uneven pieces equals one shot")
    func streaming() throws {
        let input = Self.sample(count: 300_000, seed: 3)
        let deflater = try DeflateStream(level: 1)
        var packed: [UInt8] = []
        var index = 0
        var step = 1
        while index < input.count {
            let end = min(input.count, index + step)
            try input[index..<end].withUnsafeBytes { try deflater.compress($0, into: &packed) }
            index = end
            step = step * 3 % 70_001 + 1
        }
        try deflater.finish(into: &packed)

        let inflater = try InflateStream()
        var output: [UInt8] = []
        index = 0
        while index < packed.count {
            let end = min(packed.count, index + 997)
            try packed[index..<end].withUnsafeBytes { _ = try inflater.decompress($0, into: &output) }
            index = end
        }
        try inflater.finish()
        #expect(inflater.isFinished)
        #expect(output == input)
    }

    @Test("every truncation throws truncatedInput")
    func truncated() throws {
        let packed = try Deflate.compress(Self.sample(count: 5_000, seed: 9))
        for cut in stride(from: 0, to: packed.count, by: max(1, packed.count / 40)) {
            #expect {
                _ = try Inflate.decompress(packed[0..<cut])
            } throws: { error in
                (error as? CompressionError)?.code == .truncatedInput
            }
        }
    }

    @Test("corrupt bytes throw, never crash")
    func corrupt() throws {
        let packed = try Deflate.compress(Self.sample(count: 5_000, seed: 11))
        var generator = SplitMix(seed: 12)
        var caught = 0
        for _ in 0..<300 {
            var damaged = packed
            let index = Int.random(in: 0..<damaged.count, using: &generator)
            damaged[index] ^= UInt8.random(in: 1...255, using: &generator)
            do {
                // Adler-32 is weak: a damaged stream can, rarely, decode to other bytes with
                // the same checksum (seen here about once in 300). That is why every record
                // this library stores also carries a CRC32C of its uncompressed bytes.
                _ = try Inflate.decompress(damaged)
            } catch {
                caught += 1
            }
        }
        #expect(caught > 280)
    }

    @Test("output limit stops a decompression bomb")
    func bomb() throws {
        let packed = try Deflate.compress([UInt8](repeating: 0, count: 10_000_000), level: 9)
        #expect(packed.count < 20_000)
        #expect {
            _ = try Inflate.decompress(packed, maximumOutputSize: 1_000_000)
        } throws: { error in
            (error as? CompressionError)?.code == .outputLimitExceeded
        }
    }

    @Test("bytes after the stream are rejected")
    func trailing() throws {
        let packed = try Deflate.compress([1, 2, 3])
        #expect {
            _ = try Inflate.decompress(packed + [0])
        } throws: { error in
            (error as? CompressionError)?.code == .trailingBytes
        }
    }
}
