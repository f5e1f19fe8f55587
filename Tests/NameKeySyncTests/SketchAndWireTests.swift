import FaultToleranceCore
import Foundation
import NIOCore
import Testing

@testable import NameKeySync

@Suite("Rateless sketch: peeling, capacity, wire format")
struct SketchTests {
    /// Two sets sharing `shared` elements, with `onlyA` and `onlyB` of their own.
    static func sets(shared: Int, onlyA: Int, onlyB: Int, seed: UInt64) -> (a: [UInt64], b: [UInt64]) {
        var generator = Hash64(seed: seed)
        func next() -> UInt64 {
            generator.combine(1)
            return generator.finish()
        }
        let common = (0..<shared).map { _ in next() }
        return (common + (0..<onlyA).map { _ in next() }, common + (0..<onlyB).map { _ in next() })
    }

    static func prefix(_ elements: [UInt64], capacity: Int) -> SketchPrefix {
        var prefix = SketchPrefix(capacity: capacity)
        for element in elements { prefix.insert(Fingerprint(element)) }
        return prefix
    }

    /// Decodes range by range as the session does; returns the decoder and symbols used.
    static func decode(_ a: SketchPrefix, _ b: SketchPrefix, step: Int = 16) -> SketchDecoder {
        var decoder = SketchDecoder()
        while !decoder.isComplete && !decoder.inconsistent && decoder.received < a.capacity {
            let range = decoder.received..<min(a.capacity, decoder.received + step)
            decoder.add(remote: Array(a.symbols[range]), local: Array(b.symbols[range]))
        }
        return decoder
    }

    @Test(arguments: [(0, 0), (1, 0), (0, 1), (5, 5), (40, 3), (300, 250)])
    func theDifferenceDecodesExactlyInAboutOneAndAHalfSymbolsPerElement(onlyA: Int, onlyB: Int) {
        let (a, b) = Self.sets(shared: 2000, onlyA: onlyA, onlyB: onlyB, seed: UInt64(onlyA * 1000 + onlyB))
        let capacity = 4096
        let decoder = Self.decode(Self.prefix(a, capacity: capacity), Self.prefix(b, capacity: capacity))
        #expect(decoder.isComplete)
        #expect(Set(decoder.remoteOnly.map(\.value)) == Set(a).subtracting(b))
        #expect(Set(decoder.localOnly.map(\.value)) == Set(b).subtracting(a))
        let d = onlyA + onlyB
        // Rateless IBLT needs about 1.35 symbols per element for large differences, more for
        // small ones; ranges of 16 add at most 15.
        if d >= 100 { #expect(decoder.received <= d * 17 / 10 + 16) }
        if d == 0 { #expect(decoder.received == 16) }
    }

    @Test func aDifferenceLargerThanTheSketchIsNeverDecodedWrongly() {
        for seed in UInt64(0)..<20 {
            let (a, b) = Self.sets(shared: 500, onlyA: 200, onlyB: 200, seed: seed)
            let decoder = Self.decode(Self.prefix(a, capacity: 256), Self.prefix(b, capacity: 256))
            #expect(!decoder.isComplete, "seed \(seed): 400 differences cannot decode from 256 symbols")
        }
    }

    @Test func insertingThenRemovingLeavesTheEmptySketch() {
        var prefix = SketchPrefix(capacity: 512)
        let elements = (0..<300).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 }
        for element in elements { prefix.insert(Fingerprint(element)) }
        #expect(prefix.digest.count == 300)
        for element in elements.reversed() { prefix.remove(Fingerprint(element)) }
        #expect(prefix == SketchPrefix(capacity: 512))
    }

    @Test func theFirstSixtyFourSymbolsEstimateTheDifferenceWithinAFifth() {
        // Both sides share 3,000 elements; the active holds `a` more, the backup `b` more (a
        // changed record is one of each). Twenty different sets per split.
        for (a, b) in [(500, 500), (1000, 0), (0, 300), (3000, 1000)] {
            var ratios: [Double] = []
            for trial in UInt64(0)..<20 {
                var active = SketchPrefix(capacity: 64)
                var backup = SketchPrefix(capacity: 64)
                var next = trial &* 0x1_0000_0000
                func element() -> Fingerprint {
                    next &+= 1
                    return Fingerprint(Hash64.finalize(next))
                }
                for _ in 0..<3000 {
                    let shared = element()
                    active.insert(shared)
                    backup.insert(shared)
                }
                for _ in 0..<a { active.insert(element()) }
                for _ in 0..<b { backup.insert(element()) }
                let estimate = KeySyncSession.estimateDifference(remote: active.symbols, local: backup.symbols)
                ratios.append(estimate / Double(a + b))
            }
            let mean = ratios.reduce(0, +) / Double(ratios.count)
            #expect(mean > 0.85 && mean < 1.15, "a \(a), b \(b): mean ratio \(mean)")
            #expect(ratios.allSatisfy { $0 > 0.4 && $0 < 2 }, "a \(a), b \(b): \(ratios)")
        }
        #expect(KeySyncSession.estimateDifference(remote: [], local: []) == 0)
        #expect(KeySyncSession.estimateDifference(remote: [.zero], local: [.zero]) == 0)
    }

    @Test func indicesFollowTheRatelessDensity() {
        // Every element maps to symbol 0; about 2 ln(n) of the first n symbols.
        var total = 0
        for element in UInt64(1)...2000 {
            var indices = SketchIndices(element: element &* 0xD1B5_4A32_D192_ED03)
            #expect(indices.index == 0)
            var count = 0
            while indices.index < 10_000 {
                count += 1
                indices.advance()
            }
            total += count
        }
        let mean = Double(total) / 2000
        #expect(mean > 15 && mean < 22, "mean \(mean) symbols of 10,000 (2 ln 5000 is about 17)")
    }
}

@Suite("Name-key sync messages: round trips and hostile bytes")
struct KeySyncWireTests {
    static let record = NameKeyRecord(key: "key-1", version: 2, stamp: 99, fields: ["quantity": "4", "unit": "pcs"])
    static let description = KeySyncMessage.StoreDescription(
        storeVersion: 2, fingerprintVersion: 3, sketchCapacity: 4096, count: 17,
        digest: SketchSymbol(sum: 5, check: 6, count: -7), replyAddress: "127.0.0.1:9")

    static let samples: [KeySyncMessage] = [
        .hello(request: 1, description),
        .welcome(request: 2, description),
        .welcome(
            request: 2,
            KeySyncMessage.StoreDescription(
                storeVersion: 3, fingerprintVersion: 3, sketchCapacity: 64, count: 1 << 40,
                digest: SketchSymbol(sum: 1, check: 2, count: 3), generation: .max,
                leadingSymbols: [SketchSymbol(sum: .max, check: .max, count: .min), .zero])),
        .symbolsRequest(request: 3, first: 64, count: 128),
        .symbols(request: 4, first: 0, symbols: [SketchSymbol(sum: 1, check: 2, count: 3), .zero]),
        .recordsByFingerprint(request: 5, fingerprints: [Fingerprint(1), Fingerprint(.max)]),
        .range(request: 6, after: "a", limit: 10),
        .range(request: 7, after: nil, limit: 1),
        .keyList(request: 8, keys: ["x", "y", ""]),
        .sharedKeys(request: 9, keys: ["x"]),
        .recordsByKey(request: 10, keys: ["x"]),
        .records(request: 11, records: [record, record], next: "key-1", answered: 2),
        .records(request: 12, records: [], next: nil, answered: 0),
        .refused(request: 13, detail: "no"),
    ]

    @Test(arguments: samples)
    func everyMessageRoundTrips(_ message: KeySyncMessage) throws {
        #expect(try KeySyncMessage.decode(message.encode()) == message)
    }

    @Test func theFuzzCorpusSeedsOfEveryMessageDecode() throws {
        // FuzzTesting's seeds (a steering byte, then a message of type 0x0400 + it) stay in step
        // with the wire format: each decodes, so fuzzing starts from valid messages.
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../FuzzTesting/Corpus/KeySyncMessages").standardized
        var decoded = 0
        for name in try FileManager.default.contentsOfDirectory(atPath: corpus.path).sorted() {
            let bytes = try [UInt8](Data(contentsOf: corpus.appendingPathComponent(name)))
            guard let steer = bytes.first, steer <= 10 else { continue }
            let message = Message(
                type: KeySyncMessage.MessageType.hello + UInt16(steer), bytes: Array(bytes.dropFirst()))
            #expect(throws: Never.self, "seed \(name)") { _ = try KeySyncMessage.decode(message) }
            decoded += 1
        }
        #expect(decoded >= 8)
    }

    @Test(arguments: samples)
    func everyTruncationIsRefusedNamingTheMessage(_ message: KeySyncMessage) throws {
        let encoded = try message.encode()
        let bytes = encoded.bytes
        for length in 0..<bytes.count {
            do {
                _ = try KeySyncMessage.decode(Message(type: encoded.type, bytes: bytes.prefix(length)))
                Issue.record("\(message.name) cut to \(length) bytes decoded")
            } catch {
                #expect(error.code == .malformedMessage)
                #expect(error.description.contains(message.name))
            }
        }
        // And one byte too many.
        #expect(throws: KeySyncError.self) {
            try KeySyncMessage.decode(Message(type: encoded.type, bytes: bytes + [0]))
        }
    }

    @Test func anotherProtocolVersionIsARefusalNotAMalformedMessage() throws {
        var bytes = try KeySyncMessage.symbolsRequest(request: 1, first: 0, count: 4).encode().bytes
        // Version 1 (descriptions without the generation) and a version from the future.
        for version: UInt8 in [1, KeySyncMessage.protocolVersion + 1] {
            bytes[0] = version
            do {
                _ = try KeySyncMessage.decode(Message(type: KeySyncMessage.MessageType.symbolsRequest, bytes: bytes))
                Issue.record("version \(version) accepted")
            } catch {
                #expect(error.code == .refused)
                #expect(error.description.contains("protocol version \(version)"))
            }
        }
    }

    @Test func flippedCompressedRecordsFailTheirChecksum() throws {
        let encoded = try KeySyncMessage.records(request: 1, records: [Self.record], next: nil, answered: 1).encode()
        let bytes = encoded.bytes
        // Every byte after the header fields: the compressed body or its lengths and CRC.
        for index in 15..<bytes.count {
            var damaged = bytes
            damaged[index] ^= 0x10
            if let decoded = try? KeySyncMessage.decode(Message(type: encoded.type, bytes: damaged)) {
                Issue.record("a flip at byte \(index) decoded to \(decoded)")
            }
        }
    }

    @Test func limitsAreCheckedBeforeAllocating() {
        var bytes: [UInt8] = [1]
        bytes.appendLittleEndian(UInt64(1))
        bytes.appendLittleEndian(UInt32(0))
        bytes.appendLittleEndian(UInt32.max)
        #expect(throws: KeySyncError.self) {
            try KeySyncMessage.decode(Message(type: KeySyncMessage.MessageType.symbols, bytes: bytes))
        }
        var keys: [UInt8] = [1]
        keys.appendLittleEndian(UInt64(1))
        keys.appendLittleEndian(UInt32(1 << 30))
        #expect(throws: KeySyncError.self) {
            try KeySyncMessage.decode(Message(type: KeySyncMessage.MessageType.keyList, bytes: keys))
        }
    }
}

@Suite("Schema versions and version-normalised fingerprints")
struct SchemaTests {
    @Test func aRecordAndItsMigrationsFingerprintAlike() throws {
        let schema = Schema.inventory
        let v1 = NameKeyRecord(key: "a", version: 1, stamp: 3, fields: ["qty": "2", "legacy": "x", "name": "n"])
        let v2 = try schema.migrate(v1, to: 2)
        let v3 = try schema.migrate(v1, to: 3)
        #expect(v2.fields == ["quantity": "2", "unit": "pcs", "legacy": "x", "name": "n"])
        #expect(v3.key == "sku:a")
        #expect(v3.fields == ["quantity": "2", "unit": "PCS", "name": "n"])
        #expect(try schema.fingerprint(of: v1) == schema.fingerprint(of: v2))
        #expect(try schema.fingerprint(of: v2) == schema.fingerprint(of: v3))
        var changed = v1
        changed.fields["qty"] = "3"
        #expect(try schema.fingerprint(of: changed) != schema.fingerprint(of: v1))
    }

    @Test func migrationsOnlyGoForwardAndOnlyToKnownVersions() {
        let record = NameKeyRecord(key: "a", version: 2, fields: [:])
        #expect(throws: KeySyncError.self) { try Schema.inventory.migrate(record, to: 1) }
        #expect(throws: KeySyncError.self) { try Schema.inventory.migrate(record, to: 4) }
        #expect(throws: KeySyncError.self) {
            try Schema.inventory.migrate(NameKeyRecord(key: "a", version: 0, fields: [:]), to: 2)
        }
    }

    @Test func recordBodiesAreCanonicalAndTheirDecoderRefusesOthers() throws {
        let record = NameKeyRecord(key: "k", version: 1, fields: ["b": "2", "a": "1", "é": "ü"])
        #expect(try NameKeyRecord.decodeBody(record.body) == record.fields)
        var swapped: [UInt8] = []
        swapped.appendLittleEndian(UInt16(2))
        for name in ["b", "a"] {
            swapped.appendLittleEndian(UInt16(1))
            swapped.append(contentsOf: name.utf8)
            swapped.appendLittleEndian(UInt32(0))
        }
        #expect(throws: KeySyncError.self) { try NameKeyRecord.decodeBody(swapped) }
        #expect(throws: KeySyncError.self) { try NameKeyRecord.decodeBody(record.body.dropLast()) }
    }
}
