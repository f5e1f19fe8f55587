import FaultToleranceCore
import Foundation
import Testing

@testable import HotSpare

@Suite struct ArrayMetadataTests {
    static func sampleRecord() -> ArrayRecord {
        var live = BlockBitmap(count: 37)
        for index in [0, 5, 8, 36] { live[index] = true }
        return ArrayRecord(
            arrayID: 0xABCD, sequence: 41, generation: 7, roles: [UnitID(1), UnitID(2), UnitID(3), UnitID(4)],
            spares: [UnitID(9)], failed: [UnitID(5)], erasing: [UnitID(6)],
            migration: MigrationState(role: 2, target: UnitID(8), kind: .proactive, resumeFrom: 12), live: live)
    }

    @Test func aRecordAndALabelDecodeToWhatWasEncoded() throws {
        let record = Self.sampleRecord()
        #expect(try ArrayRecord.decode(record.encode()) == record)
        #expect(record.encode().count <= ArrayRecord.maximumSize(blocks: 37))
        let label = ArrayLabel(
            arrayID: 0xABCD, member: UnitID(3), layout: .mirror, blockSize: 65536, blocksPerRole: 100, slotSize: 8192)
        let bytes = label.encode()
        #expect(bytes.count == ArrayLabel.size)
        #expect(try ArrayLabel.decode(bytes) == label)
        #expect(label.dataOffset == ArrayLabel.size + 2 * 8192)
    }

    /// The fuzz target's seeds (FuzzTesting/Corpus/ArrayMetadata, first byte the steering
    /// byte) are what this code writes, so the fuzzer starts past the checksums.
    @Test func theFuzzCorpusSeedsDecode() throws {
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("FuzzTesting/Corpus/ArrayMetadata")
        let label = try [UInt8](Data(contentsOf: corpus.appendingPathComponent("label-mirror")))
        #expect(try ArrayLabel.decode(label.dropFirst()).blocksPerRole == 100)
        let migrating = try [UInt8](Data(contentsOf: corpus.appendingPathComponent("record-migrating")))
        #expect(try ArrayRecord.decode(migrating.dropFirst()) == Self.sampleRecord())
        let degraded = try [UInt8](Data(contentsOf: corpus.appendingPathComponent("record-degraded")))
        #expect(try ArrayRecord.decode(degraded.dropFirst()).failed == [UnitID(1)])
    }

    @Test func everyFlippedBitAndEveryTruncationIsRefused() throws {
        let bytes = Self.sampleRecord().encode()
        for index in 0..<bytes.count {
            var damaged = bytes
            damaged[index] ^= 0x10
            #expect(throws: ArrayMetadataError.self) { try ArrayRecord.decode(damaged) }
        }
        for length in 0..<bytes.count {
            #expect(throws: ArrayMetadataError.self) { try ArrayRecord.decode(bytes.prefix(length)) }
        }
        let label = ArrayLabel(
            arrayID: 1, member: UnitID(1), layout: .concatenated, blockSize: 4096, blocksPerRole: 1, slotSize: 4096
        ).encode()
        for index in 0..<ArrayLabel.encodedSize {
            var damaged = label
            damaged[index] ^= 0x01
            #expect(throws: ArrayMetadataError.self) { try ArrayLabel.decode(damaged) }
        }
        #expect(throws: ArrayMetadataError.self) { try ArrayLabel.decode([UInt8](repeating: 0, count: 4096)) }
    }

    @Test func aRecordThatNamesAMemberTwiceOrMigratesAMissingRoleIsRefused() throws {
        var twice = Self.sampleRecord()
        twice.spares = [UnitID(1)]
        #expect(throws: ArrayMetadataError.self) { try ArrayRecord.decode(twice.encode()) }
        var failedSpare = Self.sampleRecord()
        failedSpare.failed = [UnitID(9)]
        #expect(throws: ArrayMetadataError.self) { try ArrayRecord.decode(failedSpare.encode()) }
        // A failed member keeps its role until it is replaced.
        var failedInRole = Self.sampleRecord()
        failedInRole.failed = [UnitID(3)]
        #expect(try ArrayRecord.decode(failedInRole.encode()) == failedInRole)
        var missingRole = Self.sampleRecord()
        missingRole.migration?.role = 4
        #expect(throws: ArrayMetadataError.self) { try ArrayRecord.decode(missingRole.encode()) }
        var targetInUse = Self.sampleRecord()
        targetInUse.migration?.target = UnitID(2)
        #expect(throws: ArrayMetadataError.self) { try ArrayRecord.decode(targetInUse.encode()) }
    }

    @Test func placementAndItsInverseAgreeForBothLayouts() throws {
        for layout in ArrayLayout.allCases {
            let geometry = try #require(ArrayGeometry(layout: layout, roleCount: 4, blocksPerRole: 5, blockSize: 4096))
            var seen: [[Int]: Int] = [:]
            for block in 0..<geometry.blockCount {
                let (roles, slot) = geometry.placement(ofBlock: block)
                #expect(roles.count == (layout == .mirror ? 2 : 1))
                for role in roles {
                    #expect(geometry.block(role: role, slot: slot) == block)
                    seen[[role, slot], default: 0] += 1
                }
            }
            // Every slot of every role holds exactly one block.
            #expect(seen.count == 4 * 5)
            #expect(seen.values.allSatisfy { $0 == 1 })
        }
        #expect(ArrayGeometry(layout: .mirror, roleCount: 3, blocksPerRole: 5, blockSize: 4096) == nil)
        #expect(ArrayGeometry(layout: .concatenated, roleCount: 1, blocksPerRole: 5, blockSize: 5000) == nil)
    }

    @Test func theBitmapFindsItsSetBits() {
        var bits = BlockBitmap(count: 70)
        for index in [3, 8, 69] { bits[index] = true }
        bits[70] = true  // out of range: ignored
        #expect(bits.setCount == 3)
        #expect(bits.firstSet(from: 0) == 3)
        #expect(bits.firstSet(from: 4) == 8)
        #expect(bits.firstSet(from: 9) == 69)
        #expect(bits.firstSet(from: 70) == nil)
        bits[8] = false
        #expect(bits.firstSet(from: 4) == 69)
    }
}
