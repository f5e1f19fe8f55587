import DaisyChain
import FaultToleranceCore
import Foundation
import NIOCore
import Testing

func sampleRegister(mode: ChainMode = .mirror, count: Int = 3) -> ChainRegister {
    var members: [ChainMember] = []
    for index in 0..<count {
        let drive = DriveRegister(
            driveID: UInt64(index + 10), capacity: 1 << 20, state: index == 1 ? .failed : .ready,
            readErrors: UInt32(index), writeErrors: 1, version: UInt64(index + 2))
        members.append(ChainMember(node: NodeID("e\(index)") ?? "e", linked: index != 1, drive: drive))
    }
    return ChainRegister(
        mode: mode, generation: ChainGeneration(epoch: 4, proposer: "e1"), members: members, host: "host")
}

@Suite struct RegisterTests {
    @Test func theChainRegisterRoundTripsThroughItsEncoding() throws {
        let register = sampleRegister()
        var buffer = register.encoded
        let decoded = try ChainRegister.decode(from: &buffer)
        #expect(decoded == register)
        #expect(buffer.readableBytes == 0)
    }

    @Test func everyFlippedByteOfARegisterIsRefused() {
        let bytes = Array(sampleRegister().encoded.readableBytesView)
        for index in bytes.indices {
            var damaged = bytes
            damaged[index] ^= 0x40
            var buffer = ByteBuffer(bytes: damaged)
            #expect(throws: ChainError.self) { try ChainRegister.decode(from: &buffer) }
        }
    }

    @Test func everyMessageRoundTrips() throws {
        let register = sampleRegister()
        let messages: [ChainMessage] = [
            .signal(
                ChainSignal(kind: .driveFault, subject: "e2", origin: "e2", direction: .up, hops: 3, register: register)
            ),
            .registers(register, applied: 77, reply: true),
            .heartbeat(digest: 9, epoch: 4),
            .entry(
                link: 5, sequence: 6,
                .write(hostEpoch: 1, version: 2, offset: 4096, sync: false, data: ByteBuffer(bytes: [1, 2, 3]))),
            .entry(link: 5, sequence: 7, .catchUpBegin(asOf: 10, byFingerprint: true)),
            .entry(link: 5, sequence: 8, .fill(offset: 8192, data: ByteBuffer(bytes: [9]))),
            .entry(link: 5, sequence: 9, .catchUpEnd(register)),
            .linkAck(link: 5, sequence: 9), .linkReset(link: 5, next: 6), .committed(version: 12),
            .read(request: 1, offset: 2, count: 3, atLeast: 4),
            .readReply(request: 1, status: .ok, data: ByteBuffer(bytes: [7, 7])),
            .join(register.members[0].drive, applied: 5), .hello(hostEpoch: 3, address: "127.0.0.1:9"),
            .fingerprints(firstBlock: 4, blocks: [1, 2, 3], last: true), .statusRequest, .statusReply("text"),
            .operatorSignal(.reset),
        ]
        for message in messages {
            let encoded = message.encode()
            #expect(ChainMessage.MessageType.contains(encoded.type))
            #expect(try ChainMessage.decode(encoded) == message)
            // The checksum a data message carries is its payload's.
            if let checksum = encoded.payloadChecksum {
                #expect(checksum == CRC32C.checksum(encoded.payload.readableBytesView))
            }
            // In two parts (data apart, for a transport that sends it where it lies), the same bytes.
            let (head, data) = message.encodeParts()
            var joined = head.payload
            if var data { joined.writeBuffer(&data) }
            #expect(head.type == encoded.type && joined == encoded.payload)
        }
        let dataCarrying = messages.filter { $0.encodeParts().data != nil }
        #expect(dataCarrying.count == 3)
    }
}

extension RegisterTests {
    /// Writes the fuzzer's seed corpus (FuzzTesting/Corpus/ChainMessages) when FT_WRITE_CORPUS
    /// names the directory: one file per message kind, steer byte first.
    @Test func theFuzzCorpusSeedsAreValidMessages() throws {
        let register = sampleRegister()
        let messages: [(String, ChainMessage)] = [
            (
                "signal",
                .signal(ChainSignal(kind: .linkDown, subject: "e1", origin: "e0", direction: .down, register: register))
            ),
            ("registers", .registers(register, applied: 9, reply: true)),
            ("heartbeat", .heartbeat(digest: 1, epoch: 2)),
            (
                "write",
                .entry(
                    link: 1, sequence: 1,
                    .write(hostEpoch: 1, version: 1, offset: 0, sync: true, data: ByteBuffer(bytes: [1, 2])))
            ),
            ("catch-up-end", .entry(link: 1, sequence: 2, .catchUpEnd(register))),
            ("read", .read(request: 1, offset: 0, count: 4096, atLeast: 3)),
            ("fingerprints", .fingerprints(firstBlock: 0, blocks: [1, 2], last: false)),
            ("join", .join(register.members[0].drive, applied: 4)),
            ("hello", .hello(hostEpoch: 1, address: "127.0.0.1:1")),
        ]
        for (name, message) in messages {
            let encoded = message.encode()
            #expect(try ChainMessage.decode(encoded) == message)
            if let directory = ProcessInfo.processInfo.environment["FT_WRITE_CORPUS"] {
                let bytes = [UInt8(encoded.type - 0x0500)] + Array(encoded.payload.readableBytesView)
                try Data(bytes).write(to: URL(fileURLWithPath: directory + "/" + name))
            }
        }
        if let directory = ProcessInfo.processInfo.environment["FT_WRITE_CORPUS"] {
            try Data([32] + Array(register.encoded.readableBytesView)).write(
                to: URL(fileURLWithPath: directory + "/register"))
        }
    }
}

extension RegisterTests {
    @Test("the drive keeps the registers: the latest save loads; a damaged slot falls back to the other")
    func theDriveKeepsItsRegisters() throws {
        let unit = MemoryStorageUnit(id: UnitID(1), capacity: ElementDrive.headerSize + 4096)
        let drive = try ElementDrive(unit: unit)
        #expect(drive.load() == nil)
        var register = sampleRegister()
        try drive.save(ElementDrive.Saved(chain: register, applied: 41, hostEpoch: 7))
        register.generation.epoch += 1
        try drive.save(ElementDrive.Saved(chain: register, applied: 42, hostEpoch: 7))
        let loaded = try ElementDrive(unit: unit).load()
        #expect(loaded == ElementDrive.Saved(chain: register, applied: 42, hostEpoch: 7))
        // Damage the newer slot (the second save went to slot 0): the older one loads.
        var byte = try unit.read(at: 40, count: 1)
        byte[0] ^= 0x10
        try unit.write(byte, at: 40)
        #expect(try ElementDrive(unit: unit).load()?.applied == 41)
    }
}
