import ElasticJournal
import FaultToleranceCore
import Testing

@Suite struct JournalFormatTests {
    private func encoded(payload: [UInt8], salt: UInt64 = 42) -> [UInt8] {
        var bytes = [UInt8](repeating: 0xEE, count: JournalFormat.footprint(payloadCount: payload.count))
        let footprint = bytes.withUnsafeMutableBytes { target -> Int in
            guard let base = target.baseAddress else { return 0 }
            return payload.withUnsafeBytes { source in
                RecordCodec.encode(
                    into: base, salt: salt, sequence: 7, time: Instant(nanoseconds: 99), volume: 3,
                    offset: 4096, payload: source)
            }
        }
        #expect(footprint == bytes.count)
        #expect(footprint % 8 == 0)
        return bytes
    }

    @Test func recordRoundTripsAndPadsWithZeros() throws {
        let payload = pattern(1, count: 13)
        let bytes = encoded(payload: payload)
        let record = try RecordCodec.decode(bytes, salt: 42)
        #expect(
            record
                == JournalRecord(sequence: 7, time: Instant(nanoseconds: 99), volume: 3, offset: 4096, bytes: payload))
        #expect(bytes[(40 + 13)...].allSatisfy { $0 == 0 })
    }

    /// The encoder composes the header and its checksum from 8-byte words: every field at its
    /// offset, with every bit of the wide ones in play, and the checksum the one computed over
    /// the bytes (``RecordCodec/checksum(salt:record:)``).
    @Test func wideFieldsLandAtTheirOffsetsAndTheChecksumCoversTheBytes() throws {
        let payload = pattern(9, count: 21)
        var bytes = [UInt8](repeating: 0xEE, count: JournalFormat.footprint(payloadCount: payload.count))
        let salt: UInt64 = 0xF00D_FACE_0123_4567
        let offset: UInt64 = 0x89AB_CDEF_0246_8ACE
        let time = Instant(nanoseconds: -0x0123_4567_89AB_CDEF)
        bytes.withUnsafeMutableBytes { target in
            guard let base = target.baseAddress else { return }
            payload.withUnsafeBytes { source in
                _ = RecordCodec.encode(
                    into: base, salt: salt, sequence: 0xFEDC_BA98_7654_3210, time: time, volume: 0xFFFF_FFFE,
                    offset: offset, payload: source, durableThrough: 0xFEDC_BA98_7654_3210 - 513)
            }
        }
        #expect(bytes.loadLE(UInt32.self, at: 0) == 40 + 21)
        #expect(bytes.loadLE(UInt16.self, at: 4) == JournalFormat.writeRecordType)
        #expect(bytes.loadLE(UInt16.self, at: 6) == 513)
        #expect(bytes.loadLE(UInt64.self, at: 8) == 0xFEDC_BA98_7654_3210)
        #expect(bytes.loadLE(Int64.self, at: 16) == time.nanoseconds)
        #expect(bytes.loadLE(UInt32.self, at: 24) == 0xFFFF_FFFE)
        #expect(bytes.loadLE(UInt64.self, at: 32) == offset)
        #expect(Array(bytes[40..<61]) == payload)
        let stored = bytes.loadLE(UInt32.self, at: 28)
        let computed = bytes.withUnsafeBytes {
            RecordCodec.checksum(salt: salt, record: UnsafeRawBufferPointer(rebasing: $0[0..<61]))
        }
        #expect(stored == computed)
        let record = try RecordCodec.decode(bytes, salt: salt)
        #expect(record.offset == offset && record.volume == 0xFFFF_FFFE && record.bytes == payload)
    }

    @Test func everySingleByteFlipIsRejected() {
        let bytes = encoded(payload: pattern(2, count: 50))
        for index in 0..<(40 + 50) {
            var damaged = bytes
            damaged[index] ^= 0x5A
            #expect(throws: JournalFormatError.self) { try RecordCodec.decode(damaged, salt: 42) }
        }
    }

    @Test func anotherSaltDoesNotVerify() {
        let bytes = encoded(payload: pattern(3, count: 64))
        #expect(throws: JournalFormatError.self) { try RecordCodec.decode(bytes, salt: 43) }
    }

    @Test func truncatedAndHostileLengthsAreTypedErrors() {
        let bytes = encoded(payload: pattern(4, count: 100))
        for cut in [0, 3, 39, 41, 139] {
            #expect(throws: JournalFormatError.self) { try RecordCodec.decode(Array(bytes[..<cut]), salt: 42) }
        }
        var huge = bytes
        huge[0] = 0xFF; huge[1] = 0xFF; huge[2] = 0xFF; huge[3] = 0x7F
        #expect(throws: JournalFormatError.self) { try RecordCodec.decode(huge, salt: 42) }
    }

    @Test func headerAndSealRoundTrip() throws {
        let capacity = 1 << 20
        let header = UnitHeader(
            journal: 5, unit: UnitID(9), salt: 0xABCDEF, firstSequence: 100, firstTime: Instant(nanoseconds: 5),
            previousLastSequence: 99, previousSealChecksum: 0x1234, indexInterval: 65536,
            trailerOffset: JournalFormat.trailerOffset(capacity: capacity, indexInterval: 65536), capacity: capacity)
        #expect(try UnitHeader.decode(header.encoded()) == header)
        #expect(try UnitHeader.decode([UInt8](repeating: 0, count: 96)) == nil)
        var damaged = header.encoded()
        damaged[50] ^= 1
        #expect(throws: JournalFormatError.self) { try UnitHeader.decode(damaged) }

        let seal = UnitSeal(
            count: 3, firstSequence: 100, lastSequence: 102, minimumTime: Instant(nanoseconds: 5),
            maximumTime: Instant(nanoseconds: 9), recordsEnd: 8000,
            index: [TimeIndexEntry(time: Instant(nanoseconds: 5), sequence: 100, offset: 4096)])
        let bytes = seal.encoded(salt: 77)
        #expect(try UnitSeal.decode(bytes, salt: 77, maximumEntries: 10)?.seal == seal)
        #expect(throws: JournalFormatError.self) { try UnitSeal.decode(bytes, salt: 78, maximumEntries: 10) }
        #expect(throws: JournalFormatError.self) { try UnitSeal.decode(bytes, salt: 77, maximumEntries: 0) }
    }

    @Test func baseManifestSlotsVerify() {
        let manifest = BaseManifest(
            journal: 1, volume: 2, appliedThrough: 10, appliedTime: Instant(nanoseconds: 3), generation: 4,
            window: .seconds(60), quota: 8)
        let bytes = manifest.encoded()
        #expect(bytes.count == BaseManifest.slotSize)
        #expect(BaseManifest.decode(bytes[...]) == manifest)
        var damaged = bytes
        damaged[30] ^= 1
        #expect(BaseManifest.decode(damaged[...]) == nil)
    }
}
