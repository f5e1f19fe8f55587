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

@Suite("Raw DEFLATE blocks")
struct RawDeflateTests {
    static func pack(_ bytes: [UInt8], room: Int, level: Int32 = 1) throws -> [UInt8]? {
        var output = [UInt8](repeating: 0, count: room)
        let count = try bytes.withUnsafeBytes { input in
            try output.withUnsafeMutableBytes { try RawDeflate.compress(input, into: $0, level: level) }
        }
        return count.map { Array(output[0..<$0]) }
    }

    static func unpack(_ packed: [UInt8], count: Int) throws -> [UInt8] {
        var output = [UInt8](repeating: 0, count: count)
        try packed.withUnsafeBytes { input in
            try output.withUnsafeMutableBytes { try RawDeflate.decompress(input, into: $0) }
        }
        return output
    }

    static func code(_ body: () throws -> Void) -> CompressionError.Code? {
        do {
            try body()
            return nil
        } catch {
            return (error as? CompressionError)?.code
        }
    }

    @Test("round trip, and equal to zlib's stream without its header and trailer", arguments: [1, 4096, 1 << 20])
    func roundTrip(count: Int) throws {
        let bytes = (0..<count).map { UInt8(truncatingIfNeeded: $0 * 7 / 13) }
        let packed = try #require(try Self.pack(bytes, room: count + 64))
        #expect(try Self.unpack(packed, count: count) == bytes)
        let zlib = try Deflate.compress(bytes, level: 1)
        #expect(Array(zlib[2..<(zlib.count - 4)]) == packed)
        // Streams are reused (reset between calls): repeated calls give the same bytes.
        for _ in 0..<20 { #expect(try Self.pack(bytes, room: count + 64) == packed) }
    }

    @Test("too little room returns nil; noise does not shrink by an eighth")
    func noRoom() throws {
        var random = SystemRandomNumberGenerator()
        let noise = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &random) }
        #expect(try Self.pack(noise, room: 4096 - 512) == nil)
        let text = [UInt8](repeating: 65, count: 4096)
        #expect(try Self.pack(text, room: 3) == nil)
        #expect(try Self.pack(text, room: 100) != nil)
        #expect(Self.code { _ = try Self.pack(text, room: 100, level: 0) } == .initializationFailed)
    }

    @Test("hostile input throws a typed error: damage, truncation, trailing bytes, more or less than asked")
    func hostile() throws {
        let bytes = (0..<20_000).map { UInt8(truncatingIfNeeded: $0 / 3) }
        let packed = try #require(try Self.pack(bytes, room: 30_000))
        #expect(Self.code { _ = try Self.unpack(Array(packed.dropLast(3)), count: bytes.count) } == .truncatedInput)
        #expect(Self.code { _ = try Self.unpack(packed + [0], count: bytes.count) } == .trailingBytes)
        #expect(Self.code { _ = try Self.unpack(packed, count: bytes.count - 1) } == .outputLimitExceeded)
        #expect(Self.code { _ = try Self.unpack(packed, count: bytes.count + 1) } == .truncatedInput)
        #expect(Self.code { _ = try Self.unpack([0xFF, 0xFF, 0xFF], count: 10) } == .corruptInput)
        var damaged = 0
        for index in stride(from: 0, to: packed.count, by: 7) {
            var copy = packed
            copy[index] ^= 0x5A
            // Either refused, or other bytes (the caller's checksum catches those); never a crash.
            if let output = try? Self.unpack(copy, count: bytes.count), output == bytes { continue }
            damaged += 1
        }
        #expect(damaged > 0)
        // The pool hands out a clean stream after a failure.
        #expect(try Self.unpack(packed, count: bytes.count) == bytes)
    }
}
