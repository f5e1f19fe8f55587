import FaultToleranceCore
import Testing

@testable import Checkpointing

@Suite("Checkpoint formats: chunk frames, manifests, log records, extents")
struct CheckpointFormatTests {
    static func sampleManifest(kind: CheckpointManifest.Kind = .incremental) -> CheckpointManifest {
        let reference = ChunkReference(unit: UnitID(7), offset: 4160, length: 9000)
        let extents: [CheckpointManifest.Extent] =
            kind == .incremental
            ? [
                .init(first: 3, count: 2, source: .zero),
                .init(first: 9, count: 5, source: .chunk(reference, skip: 1)),
            ]
            : [
                .init(first: 0, count: 9, source: .zero),
                .init(first: 9, count: 7, source: .chunk(reference, skip: 0)),
            ]
        return CheckpointManifest(
            id: CheckpointID(12), application: "orders", epoch: 4,
            parent: kind == .incremental ? CheckpointID(11) : nil,
            kind: kind, captureTime: 1_700_000_000_000_000_000,
            items: [
                .init(name: "heap", kind: .memory, unitSize: 4096, unitCount: 16, extents: extents),
                .init(name: "data", kind: .volume, unitSize: 512, unitCount: 16, extents: extents),
            ])
    }

    @Test func manifestsRoundTripAndEveryFlippedByteIsCaught() throws {
        for kind in [CheckpointManifest.Kind.full, .incremental, .synthetic] {
            let manifest = Self.sampleManifest(kind: kind)
            let bytes = ManifestCodec.encode(manifest)
            let decoded = try bytes.withUnsafeBytes { try ManifestCodec.decode($0).get() }
            #expect(decoded == manifest)
            for index in bytes.indices {
                var damaged = bytes
                damaged[index] ^= 0x20
                let result = damaged.withUnsafeBytes { ManifestCodec.decode($0) }
                #expect((try? result.get()) == nil, "flip at \(index) of \(kind) decoded")
            }
            for length in [0, 1, 51, bytes.count - 1] {
                let result = Array(bytes.prefix(length)).withUnsafeBytes { ManifestCodec.decode($0) }
                #expect((try? result.get()) == nil, "truncation to \(length) decoded")
            }
        }
    }

    /// Found by FuzzCheckpoints: an extent starting near 2^64 overflowed the bounds check.
    @Test func anExtentPastTheEndOfSixtyFourBitsIsRejectedNotATrap() {
        var manifest = Self.sampleManifest(kind: .incremental)
        manifest.items[0].extents = [.init(first: 0, count: 1, source: .zero)]
        var bytes = ManifestCodec.encode(manifest)
        // The first extent's `first` field, after the item header and the name "heap".
        let extentOffset = 48 + "orders".utf8.count + 24 + "heap".utf8.count
        for index in 0..<8 { bytes[extentOffset + index] = index == 0 ? 0x7F : 0xFF }
        let checksum = CRC32C.checksum(bytes[0..<bytes.count - 4])
        for index in 0..<4 { bytes[bytes.count - 4 + index] = UInt8(truncatingIfNeeded: checksum >> (8 * index)) }
        let result = bytes.withUnsafeBytes { ManifestCodec.decode($0) }
        #expect((try? result.get()) == nil)
    }

    @Test func aFullManifestThatLeavesPagesUncoveredIsRejected() {
        var manifest = Self.sampleManifest(kind: .full)
        manifest.items[0].extents.removeFirst()
        let result = ManifestCodec.encode(manifest).withUnsafeBytes { ManifestCodec.decode($0) }
        #expect((try? result.get()) == nil)
    }

    @Test func chunkFramesKeepRawBytesUnlessDeflateSavesAnEighth() throws {
        let compressible = [UInt8](repeating: 0x41, count: 8192)
        var random = SystemRandomNumberGenerator()
        let noise = (0..<8192).map { _ in UInt8.random(in: 0...255, using: &random) }
        for (payload, expectDeflate) in [(compressible, true), (noise, false)] {
            let frame = try payload.withUnsafeBytes {
                try ChunkFrame.encode($0, contents: .data, serial: 5, deflateLevel: 1)
            }
            let header = try frame.withUnsafeBytes { try ChunkFrame.decodeHeader($0).get() }
            #expect((header.encoding == .deflateRaw) == expectDeflate)
            #expect(header.logicalLength == payload.count)
            let decoded = try frame.withUnsafeBytes { try ChunkFrame.decode($0, expecting: .data).get() }
            #expect(decoded == payload)
            // A flipped bit anywhere, and the wrong contents, are refused.
            for index in stride(from: 0, to: frame.count, by: max(1, frame.count / 97)) {
                var damaged = frame
                damaged[index] ^= 0x01
                #expect((try? damaged.withUnsafeBytes { try ChunkFrame.decode($0, expecting: .data).get() }) == nil)
            }
            #expect((try? frame.withUnsafeBytes { try ChunkFrame.decode($0, expecting: .manifest).get() }) == nil)
        }
    }

    @Test func zlibFramesOfTheFirstReleasesStillDecode() throws {
        // Encoding 1 (zlib, RFC 1950) was written before raw DEFLATE (2); stores hold both.
        let payload = (0..<8192).map { UInt8(truncatingIfNeeded: $0 / 64) }
        let stored = try Deflate.compress(payload, level: 1)
        var frame = [UInt8](repeating: 0, count: ChunkFrame.headerSize + stored.count)
        frame.withUnsafeMutableBytes { raw in
            guard let base = raw.baseAddress else { return }
            base.storeLE(ChunkFrame.magic, at: 0)
            base.storeLE(ChunkFrame.version, at: 4)
            base.storeLE(ChunkFrame.Contents.data.rawValue, at: 5)
            base.storeLE(ChunkFrame.Encoding.deflate.rawValue, at: 6)
            base.storeLE(UInt32(payload.count), at: 8)
            base.storeLE(UInt32(stored.count), at: 12)
            base.storeLE(UInt64(1), at: 16)
            base.storeLE(CRC32C.checksum(payload), at: 24)
            UnsafeMutableRawBufferPointer(rebasing: raw[ChunkFrame.headerSize...]).copyBytes(from: stored)
            var crc = CRC32C()
            crc.update(UnsafeRawBufferPointer(start: base, count: 28))
            crc.update(stored)
            base.storeLE(crc.value, at: 28)
        }
        #expect(try frame.withUnsafeBytes { try ChunkFrame.decode($0, expecting: .data).get() } == payload)
        frame[frame.count - 1] ^= 0x10
        #expect((try? frame.withUnsafeBytes { try ChunkFrame.decode($0, expecting: .data).get() }) == nil)
    }

    @Test func logRecordsRoundTripAndAreBoundToTheirGeneration() throws {
        let summary = CheckpointSummary(
            id: CheckpointID(3), application: "app", epoch: 9, parent: CheckpointID(2), kind: .incremental,
            captureTime: 77, manifest: ChunkReference(unit: UnitID(4), offset: 64, length: 200), capturedBytes: 8192,
            storedBytes: 300)
        for record in [
            LogRecord.commit(summary), .replace(summary), .delete(CheckpointID(3)), .seal(nextID: 4, nextSerial: 9),
        ] {
            let bytes = record.encoded(generation: 2)
            let decoded = bytes.withUnsafeBytes { LogRecord.decode($0, at: 0, generation: 2) }
            #expect(decoded == .record(record, length: bytes.count))
            let otherGeneration = bytes.withUnsafeBytes { LogRecord.decode($0, at: 0, generation: 3) }
            #expect(otherGeneration != .record(record, length: bytes.count))
        }
        #expect([UInt8](repeating: 0, count: 32).withUnsafeBytes { LogRecord.decode($0, at: 0, generation: 1) } == .end)
    }

    /// The overlay against a page-by-page model, over random extents.
    @Test func overlayAgreesWithAPageByPageModel() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<300 {
            let pages = Int.random(in: 1...80, using: &generator)
            func randomExtents(_ label: UInt64) -> [CheckpointManifest.Extent] {
                var extents: [CheckpointManifest.Extent] = []
                var page = Int.random(in: 0...3, using: &generator)
                while page < pages {
                    let count = Int.random(in: 1...min(9, pages - page), using: &generator)
                    let source: CheckpointManifest.Extent.Source =
                        Bool.random(using: &generator)
                        ? .zero
                        : .chunk(ChunkReference(unit: UnitID(label), offset: 64 + page * 10, length: 100), skip: 2)
                    extents.append(.init(first: page, count: count, source: source))
                    page += count + Int.random(in: 0...4, using: &generator)
                }
                return extents
            }
            func model(_ extents: [CheckpointManifest.Extent], into map: inout [String?]) {
                for extent in extents {
                    for page in extent.pages {
                        switch extent.source {
                        case .zero: map[page] = "zero"
                        case .chunk(let reference, let skip):
                            map[page] = "\(reference)/\(skip + page - extent.first)"
                        }
                    }
                }
            }
            let base = randomExtents(1)
            let top = randomExtents(2)
            var expected = [String?](repeating: nil, count: pages)
            model(base, into: &expected)
            model(top, into: &expected)
            let result = Extents.overlay(base, top)
            var actual = [String?](repeating: nil, count: pages)
            model(result, into: &actual)
            #expect(actual == expected)
            #expect(zip(result, result.dropFirst()).allSatisfy { $0.pages.upperBound <= $1.first })
        }
    }
}

@Suite("Raw chunk frames built in place")
struct InPlaceFrameTests {
    @Test func aFrameBuiltInPlaceIsTheFrameEncodeBuilds() throws {
        var generator = SystemRandomNumberGenerator()
        for count in [1, 100, 4096, 3 * 4096 + 5] {
            let payload = (0..<count).map { _ in UInt8.random(in: 0...255, using: &generator) }
            var buffer = [UInt8](repeating: 0xAA, count: ChunkFrame.headerSize) + payload
            buffer.withUnsafeMutableBytes { ChunkFrame.encodeRawInPlace($0, payloadCount: count, serial: 77) }
            let encoded = try payload.withUnsafeBytes {
                try ChunkFrame.encode($0, contents: .data, serial: 77, deflateLevel: nil)
            }
            #expect(buffer == encoded)
        }
    }
}
