import DaisyChain
import FaultToleranceCore
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
            .signal(ChainSignal(kind: .driveFault, subject: "e2", origin: "e2", direction: .up, hops: 3, register: register)),
            .registers(register, applied: 77, reply: true),
            .heartbeat(digest: 9, epoch: 4),
            .entry(link: 5, sequence: 6, .write(hostEpoch: 1, version: 2, offset: 4096, sync: false, data: ByteBuffer(bytes: [1, 2, 3]))),
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
        }
    }
}
