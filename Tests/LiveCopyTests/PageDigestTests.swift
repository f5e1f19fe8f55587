import FaultToleranceCore
import Testing

@testable import LiveCopy

@Suite struct PageDigestTests {
    /// A fixed key, so every run checks the same values.
    static let digest = PageDigest(key: (1...8).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 })

    static func page(size: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        return (0..<size).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 40)
        }
    }

    /// The fingerprint and CRC32C of `bytes` through the one-pass copy and through a plain copy
    /// followed by the separate digests.
    static func digests(_ bytes: [UInt8], digest: PageDigest = Self.digest) throws -> [(UInt64, UInt32)] {
        var target = [UInt8](repeating: 0, count: bytes.count + 16)
        var checksum = CRC32C()
        let onePass = try bytes.withUnsafeBytes { source in
            try target.withUnsafeMutableBytes { raw in
                let base = try #require(raw.baseAddress)
                let from = try #require(source.baseAddress)
                return digest.copy(from: from, into: base + 16, pageSize: bytes.count, checksum: &checksum)
            }
        }
        #expect(Array(target[16...]) == bytes, "the page is copied")
        let separate = bytes.withUnsafeBytes { (digest.fingerprint(of: $0), CRC32C.checksum($0)) }
        return [(onePass, checksum.value), separate]
    }

    @Test(
        "both paths give the page's CRC32C and the same fingerprint, at every page size",
        arguments: [64, 256, 4096, 8192])
    func pathsAgree(pageSize: Int) throws {
        for seed in 0..<20 as Range<UInt64> {
            let bytes = Self.page(size: pageSize, seed: seed)
            let results = try Self.digests(bytes)
            #expect(results[0].1 == CRC32C.checksum(bytes))
            #expect(results[1].1 == CRC32C.checksum(bytes))
            #expect(results[0].0 == results[1].0)
        }
        let zero = [UInt8](repeating: 0, count: pageSize)
        #expect(try Self.digests(zero)[0].0 == Self.digest.zeroFingerprint(pageSize: pageSize))
    }

    @Test("the fingerprint changes with any bit, and with blocks swapped or moved")
    func fingerprintSeesChanges() throws {
        let original = Self.page(size: 4096, seed: 99)
        let base = try Self.digests(original)[0].0
        var seen: Set<UInt64> = [base]
        for bit in stride(from: 0, to: 4096 * 8, by: 61) {
            var changed = original
            changed[bit / 8] ^= UInt8(1 << (bit % 8))
            seen.insert(try Self.digests(changed)[0].0)
        }
        // Two 16-byte blocks swapped within a stripe, across stripes, and a block moved to the tail.
        for (first, second) in [(0, 16), (32, 1360 + 32), (1360, 4080), (2720, 16)] {
            var swapped = original
            for index in 0..<16 { swapped.swapAt(first + index, second + index) }
            seen.insert(try Self.digests(swapped)[0].0)
        }
        #expect(seen.count == 1 + (4096 * 8 + 60) / 61 + 4, "every change gives a new fingerprint")
    }

    @Test("the fingerprint is keyed: the same page under another session's key, a random one among them, differs")
    func keyed() throws {
        let bytes = Self.page(size: 4096, seed: 5)
        let zero = [UInt8](repeating: 0, count: 4096)
        var keys = [Self.digest, .random(), .random()]
        // Keys one bit apart.
        keys.append(PageDigest(key: (1...8).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 ^ ($0 == 8 ? 1 : 0) }))
        for page in [bytes, zero] {
            let fingerprints = try keys.map { try Self.digests(page, digest: $0)[0].0 }
            #expect(Set(fingerprints).count == keys.count, "each key gives its own fingerprint")
            // Within one key, both paths still agree.
            for digest in keys {
                let results = try Self.digests(page, digest: digest)
                #expect(results[0].0 == results[1].0)
            }
        }
    }
}
