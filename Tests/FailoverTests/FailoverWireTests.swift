import DeterministicSimulation
import Failover
import FaultToleranceCore
import Foundation
import NIOCore
import Testing

/// One of every message kind.
func sampleFailoverMessages() throws -> [FailoverMessage] {
    var store = ReplicatedStore()
    var random = SimulationRandom(seed: 3)
    var entries: [ReplicationEntry] = []
    for request in 1...5 as ClosedRange<UInt64> {
        if let entry = try store.execute(randomOperation(&random), client: 2, request: request, epoch: 4).entry {
            entries.append(entry)
        }
    }
    let configuration = ServiceConfiguration(role: .primary, epoch: 4, host: "::1", port: 9, settings: ["k": "v"])
    if let entry = try store.execute(.configure(configuration), client: 0, request: 0, epoch: 4).entry {
        entries.append(entry)
    }
    return [
        .replicate(epoch: 4, previous: LogPosition(epoch: 4, index: 0), entries: entries),
        .replicate(epoch: 4, previous: LogPosition(epoch: 3, index: 9), entries: []),
        .replicated(epoch: 4, position: .init(epoch: 3, index: 77)),
        .catchUp(epoch: 4, after: .init(epoch: 2, index: 9)),
        .snapshot(epoch: 4, chunk: store.snapshot(), last: true),
        .report(
            .init(
                role: .primary, epoch: 4, position: .init(epoch: 4, index: 6), syncSet: ["b", "c"], stamp: -5,
                incarnation: 77)),
        .report(.init(role: .steppedDown, epoch: 5, position: .start)),
        .renewLease(epoch: 4, duration: .milliseconds(30), stamp: 1_234_567, syncSet: ["b"]),
        .stepDown(epoch: 5),
        .promote(epoch: 5, syncSet: ["c"], minimum: .init(epoch: 4, index: 6)),
        .promote(epoch: 6, syncSet: [], minimum: .start),
        .releaseBackup(epoch: 4, backup: "c"),
        .request(client: 1, request: 2, epoch: 4, operation: .compareAndSet(key: "x", expected: nil, new: [1])),
        .reply(client: 1, request: 2, epoch: 4, outcome: .done(.applied)),
        .reply(client: 1, request: 2, epoch: 4, outcome: .done(.compareFailed(index: 3))),
        .reply(client: 1, request: 2, epoch: 4, outcome: .refused(.staleEpoch, serverEpoch: 5)),
        .read(client: 1, request: 3, epoch: 4, key: "x"),
        .readReply(client: 1, request: 3, epoch: 4, value: [1, 2], error: nil),
        .readReply(client: 1, request: 3, epoch: 4, value: nil, error: .notPrimary),
        .whoIsPrimary,
        .primaryIs(node: "b", epoch: 5, host: "127.0.0.1", port: 7400),
        .primaryIs(node: nil, epoch: 5, host: "127.0.0.1", port: 7400),
        .statusQuery,
        .status(
            FailoverStatus(
                epoch: 5, primary: "b", failingOver: false, failingOverFrom: nil, waitingReason: nil, syncSet: ["c"],
                servers: [
                    .init(node: "a", alive: false, report: nil),
                    .init(
                        node: "b", alive: true,
                        report: .init(
                            role: .primary, epoch: 5, position: .init(epoch: 5, index: 9), syncSet: ["c"],
                            incarnation: 3)),
                    .init(
                        node: "c", alive: true,
                        report: .init(role: .backup, epoch: 5, position: .init(epoch: 5, index: 9))),
                ])),
        .status(
            FailoverStatus(
                epoch: 6, primary: nil, failingOver: true, failingOverFrom: "b",
                waitingReason: "waiting for the lease of b to run out", syncSet: [], servers: [])),
        .switchover(target: "c"),
        .switchover(target: nil),
        .switchoverAnswer(epoch: 6, refusal: nil),
        .switchoverAnswer(epoch: 5, refusal: "no primary serves to switch from"),
    ]
}

@Suite struct FailoverWireTests {
    @Test func everyMessageRoundTrips() throws {
        for message in try sampleFailoverMessages() {
            let encoded = message.encode()
            #expect(FailoverMessage.MessageType.contains(encoded.type))
            #expect(try FailoverMessage.decode(encoded) == message)
        }
    }

    @Test func everyTruncationAndTrailingByteIsRefused() throws {
        for message in try sampleFailoverMessages() {
            let encoded = message.encode()
            let bytes = Array(encoded.payload.readableBytesView)
            for length in 0..<bytes.count {
                // A snapshot chunk is opaque at this layer: its own frames are checked when it is applied.
                if case .snapshot = message, length >= 9 { break }
                #expect(throws: FailoverError.self) {
                    _ = try FailoverMessage.decode(Message(type: encoded.type, bytes: bytes[0..<length]))
                }
            }
            if case .snapshot = message { continue }
            #expect(throws: FailoverError.self) {
                _ = try FailoverMessage.decode(Message(type: encoded.type, bytes: bytes + [0]))
            }
        }
    }

    /// Found by the fuzzer: entries numbered up to the last index once trapped on overflow.
    @Test func entriesAtTheEndOfTheIndexSpaceAreRefusedNotTrapped() throws {
        let last = ReplicationEntry(
            position: .init(epoch: 1, index: .max), client: 0, request: 0, operation: .delete(key: "k"))
        var wrapped = last
        wrapped.position.index = 1
        var payload = ByteBuffer()
        payload.writeMultipleIntegers(UInt64(1), UInt64(1), UInt64.max - 1, UInt32(2), endianness: .little)
        last.encode(into: &payload)
        wrapped.encode(into: &payload)
        #expect(throws: FailoverError.self) {
            _ = try FailoverMessage.decode(Message(type: FailoverMessage.MessageType.replicate, payload: payload))
        }
        // A store restored at the last index refuses to go further.
        var store = ReplicatedStore()
        _ = try store.execute(.put(key: "a", value: []), client: 0, request: 0, epoch: 1)
        var snapshot = store.snapshot()
        var header = try #require(FrameDecoder.decodeAll(snapshot).first).payload
        header.setInteger(UInt64.max, at: header.readerIndex + 10, endianness: .little)
        snapshot = Frame(type: 0x0622, payload: header).encoded()
        let keys = try #require(FrameDecoder.decodeAll(store.snapshot()).last)
        keys.encode(into: &snapshot)
        var restored = try ReplicatedStore(snapshot: snapshot)
        #expect(restored.position.index == .max)
        #expect { _ = try restored.execute(.delete(key: "a"), client: 0, request: 0, epoch: 1) } throws: {
            ($0 as? FailoverError)?.code == .tooLarge
        }
        #expect { try restored.apply(wrapped) } throws: { ($0 as? FailoverError)?.code == .outOfOrder }
    }

    @Test func randomBytesNeverDecodeToAnythingButATypedErrorOrAValidMessage() {
        var random = SimulationRandom(seed: 99)
        for _ in 0..<20_000 {
            let type = UInt16(0x0600 + random.next() % 21)
            let bytes = (0..<Int(random.next() % 64)).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            do {
                let decoded = try FailoverMessage.decode(Message(type: type, bytes: bytes))
                // Whatever decodes encodes back to the same bytes.
                #expect(decoded.encode().bytes == bytes || decoded.encode().type != type)
            } catch {
                #expect(!error.description.isEmpty)
            }
        }
    }

    /// FuzzTesting's seeds stay in step with the formats: each decodes, so fuzzing starts from
    /// valid inputs. With FT_WRITE_FUZZ_CORPUS set, the seeds are written first (one per sample
    /// message, a framed log, a configuration and a snapshot).
    @Test func theFuzzCorpusSeedsDecode() throws {
        let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
            .appendingPathComponent("../../FuzzTesting/Corpus/FailoverMessages").standardized
        if ProcessInfo.processInfo.environment["FT_WRITE_FUZZ_CORPUS"] != nil {
            var seeds: [(String, [UInt8])] = []
            for (index, message) in try sampleFailoverMessages().enumerated() {
                let encoded = message.encode()
                seeds.append(("message-\(index)", [Self.steer(encoded.type)] + encoded.bytes))
            }
            var store = ReplicatedStore()
            var log = ByteBuffer()
            for request in 1...3 as ClosedRange<UInt64> {
                var framed = try #require(
                    try store.execute(.put(key: "k", value: [UInt8(request)]), client: 1, request: request, epoch: 1)
                        .entry
                ).framed()
                log.writeBuffer(&framed)
            }
            seeds.append(("log", [15] + Array(log.readableBytesView)))
            let configuration = ServiceConfiguration(role: .primary, epoch: 1, host: "h", port: 1, settings: ["a": "b"])
            seeds.append(("configuration", [16] + Array(configuration.framed().readableBytesView)))
            seeds.append(("snapshot", [17] + Array(store.snapshot().readableBytesView)))
            let records: [(String, FailoverEtcdRecord)] = [
                ("etcd-leader", .leader(node: "a", incarnation: 3, host: "127.0.0.1", port: 7400)),
                ("etcd-sync", .sync([.init(node: "b", incarnation: 4)])),
                ("etcd-primary", .primary(.init(node: "a", incarnation: 3))),
                (
                    "etcd-member",
                    .member(
                        node: "b",
                        report: .init(
                            role: .backup, epoch: 9, position: LogPosition(epoch: 9, index: 2), syncSet: [], stamp: 1,
                            incarnation: 4))
                ),
            ]
            for (name, record) in records { seeds.append((name, [22] + record.encoded())) }
            try FileManager.default.createDirectory(at: corpus, withIntermediateDirectories: true)
            for (name, bytes) in seeds { try Data(bytes).write(to: corpus.appendingPathComponent(name)) }
        }
        var decoded = 0
        for name in try FileManager.default.contentsOfDirectory(atPath: corpus.path).sorted() {
            let bytes = try [UInt8](Data(contentsOf: corpus.appendingPathComponent(name)))
            guard let steer = bytes.first else { continue }
            let body = Message(type: 0, bytes: bytes.dropFirst()).payload
            #expect(throws: Never.self, "seed \(name)") {
                switch steer {
                case 0..<15, 18..<22:
                    let type = steer < 15 ? 0x0601 + UInt16(steer) : 0x0610 + UInt16(steer - 18)
                    _ = try FailoverMessage.decode(Message(type: type, bytes: bytes.dropFirst()))
                case 15: _ = try ReplicationEntry.unframeAll(body)
                case 16: _ = try ServiceConfiguration.unframe(body)
                case 22: _ = try FailoverEtcdRecord.decode(Array(bytes.dropFirst()))
                case 23: _ = try FileReplicaJournal.decode(body)
                default: _ = try ReplicatedStore(snapshot: body)
                }
            }
            decoded += 1
        }
        #expect(decoded >= 32)
    }

    /// The fuzz target's first byte for a message type: 0-14 for 0x0601-0x060F, 18-21 for
    /// 0x0610-0x0613 (15-17 steer to the log, the configuration and the snapshot).
    static func steer(_ type: UInt16) -> UInt8 {
        type < 0x0610 ? UInt8(type - 0x0601) : UInt8(type - 0x0610 + 18)
    }
}
