import CFaultToleranceShims
import FaultToleranceCore
import Testing

@testable import LiveCopy

/// The copy into a region with stores that bypass the cache (`ft_copy_concurrent_streaming`),
/// on whichever vector path this run takes (CI runs it once per path the machine has).
@Suite struct StreamingCopyTests {
    static func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 40)
        }
    }

    /// Copies `length` bytes from `sourceOffset` to `targetOffset` of two buffers with the
    /// streaming copy, and checks the copied bytes and that nothing around them changed.
    static func check(length: Int, sourceOffset: Int, targetOffset: Int) throws {
        let source = bytes(length + sourceOffset, seed: UInt64(length * 64 + sourceOffset))
        let guardByte: UInt8 = 0xC5
        var target = [UInt8](repeating: guardByte, count: targetOffset + length + 64)
        try source.withUnsafeBytes { from in
            try target.withUnsafeMutableBytes { into in
                let base = try #require(into.baseAddress)
                let origin = try #require(from.baseAddress)
                ft_copy_concurrent_streaming(base + targetOffset, origin + sourceOffset, length)
            }
        }
        #expect(
            target[targetOffset..<(targetOffset + length)].elementsEqual(source[sourceOffset...]),
            "\(length) bytes from offset \(sourceOffset) to offset \(targetOffset) on \(VectorPath.current)")
        #expect(target[..<targetOffset].allSatisfy { $0 == guardByte }, "bytes before the copy untouched")
        #expect(target[(targetOffset + length)...].allSatisfy { $0 == guardByte }, "bytes after the copy untouched")
    }

    @Test("copies exactly the bytes asked at every length to 320 and every alignment of either side in 64")
    func everyLengthAndAlignment() throws {
        for length in 0...320 {
            for alignment in 0..<64 {
                try Self.check(length: length, sourceOffset: alignment, targetOffset: (alignment * 7) % 64)
            }
        }
    }

    @Test(
        "copies exactly the bytes asked around page and run sizes",
        arguments: [4095, 4096, 4097, 8191, 8192, 65_535, 65_536, 65_600, (1 << 20) - 1, 1 << 20, (1 << 20) + 33])
    func aroundBlockSizes(length: Int) throws {
        for (sourceOffset, targetOffset) in [(0, 0), (1, 0), (0, 1), (31, 17), (16, 48), (63, 63)] {
            try Self.check(length: length, sourceOffset: sourceOffset, targetOffset: targetOffset)
        }
    }

    @Test("a region copied from tracked memory bypassing the cache equals the one copied plainly")
    func trackedMemoryCopiesAgree() throws {
        let pageCount = 300
        let memory = try TrackedMemory(pageCount: pageCount)
        for page in 0..<pageCount {
            try memory.storeWord(UInt64(page) &* 0x9E37_79B9_7F4A_7C15 | 1, at: page * 4096 + 8)
        }
        var plain = [UInt8](repeating: 0, count: pageCount * 4096)
        let streamed = try OfflineRegion(pageCount: pageCount)
        for run in [0..<1, 1..<7, 7..<256, 256..<300] {
            try plain.withUnsafeMutableBytes { raw in
                memory.copyPages(run, into: try #require(raw.baseAddress) + run.lowerBound * 4096)
            }
            streamed.copyPages(run, from: memory)
        }
        #expect(streamed.withUnsafeBytes { $0.elementsEqual(plain) })
        #expect(memory.withUnsafeBytes { source in streamed.withUnsafeBytes { source.elementsEqual($0) } })
    }
}
