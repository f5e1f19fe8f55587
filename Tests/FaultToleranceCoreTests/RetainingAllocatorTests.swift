import FaultToleranceCore
import NIOCore
import Testing

@Suite("Retaining large-buffer allocator")
struct RetainingAllocatorTests {
    static let allocator = ByteBufferAllocator.retainingLargeBuffers

    /// `count` bytes that differ by seed and position (a 4,093-byte cycle, prime to the block
    /// sizes, so a block shifted or mixed with another shows).
    static func pattern(_ count: Int, seed: UInt8) -> [UInt8] {
        let cycle = (0..<4093).map { UInt8(truncatingIfNeeded: $0 &* 31) &+ seed }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(count)
        while bytes.count < count { bytes += cycle.prefix(count - bytes.count) }
        return bytes
    }

    @Test("buffers of every size keep their own bytes while others are freed and reused")
    func contentsStayIndependent() {
        let sizes = [1, 100, 100_000, 128 << 10, 200_000, 1 << 20, (1 << 20) + 57, 3 << 20, 20 << 20]
        for round in 0..<3 {
            var buffers: [(ByteBuffer, [UInt8])] = []
            for (index, size) in sizes.enumerated() {
                var buffer = Self.allocator.buffer(capacity: size)
                let bytes = Self.pattern(size, seed: UInt8(index * 3 + round))
                buffer.writeBytes(bytes)
                buffers.append((buffer, bytes))
                // Free every other one at once, so later allocations reuse its block.
                if index % 2 == 1 { buffers.removeLast() }
            }
            for (buffer, bytes) in buffers {
                #expect(Array(buffer.readableBytesView) == bytes, "round \(round), \(bytes.count) bytes")
            }
        }
        #expect(ByteBufferAllocator.retainedBytes <= 32 << 20)
    }

    @Test("growing a buffer past its block moves the bytes intact")
    func growthKeepsBytes() {
        var buffer = Self.allocator.buffer(capacity: 150_000)
        var expected: [UInt8] = []
        for step in 0..<40 {
            let piece = Self.pattern(97_531, seed: UInt8(step))
            buffer.writeBytes(piece)
            expected += piece
        }
        #expect(Array(buffer.readableBytesView) == expected)
    }

    @Test("a freed block is kept and handed out again: retained bytes rise on free and fall on the next allocation")
    func freedBlocksAreReused() {
        // Other suites may use the allocator at the same time (it is process-wide), so reuse
        // must show in at least one of ten tries, not in every one. (Addresses prove nothing:
        // malloc maps blocks this large and may map the same address again.)
        var reused = 0
        for _ in 0..<10 {
            var buffer = Self.allocator.buffer(capacity: 1 << 20)
            buffer.writeInteger(UInt8(1))
            let held = ByteBufferAllocator.retainedBytes
            buffer = ByteBuffer()
            let freed = ByteBufferAllocator.retainedBytes
            var again = Self.allocator.buffer(capacity: (1 << 20) - 100)
            again.writeInteger(UInt8(2))
            let taken = ByteBufferAllocator.retainedBytes
            if freed - held >= 1 << 20 && freed - taken >= 1 << 20 { reused += 1 }
        }
        #expect(reused > 0, "no freed 1 MiB block was kept and handed out again in 10 tries")
    }
}
