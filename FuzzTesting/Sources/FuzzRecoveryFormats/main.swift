import DisasterRecovery
import FaultToleranceCore

// Feeds arbitrary bytes to the DisasterRecovery decoders: stored recovery plans, and a lazy
// volume's state unit (header slots and dirty-block bitmap sectors), and journal shipping's
// messages. The first byte steers (its value modulo 4): 0, RecoveryPlan.decode; 1,
// LazyVolumeHeader.decode; 2, a bitmap sector; 3, ShippingMessage.decode, the second byte
// choosing the message type (0x0801 + its value modulo 5).
// Every input must decode or be refused with a RecoveryError, never crash or hang; what
// decodes re-encodes and decodes to the same value.

/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard let steer = input.first else { return 0 }
    let bytes = Array(input.dropFirst())
    switch steer % 4 {
    case 0:
        guard let plan = try? RecoveryPlan.decode(bytes) else { return 0 }
        precondition((try? RecoveryPlan.decode(plan.encoded())) == plan, "plan does not round-trip")
        precondition(plan.stages.joined().count == plan.environment.workloads.count, "a workload outside the stages")
    case 1:
        guard let header = try? LazyVolumeHeader.decode(bytes) else { return 0 }
        precondition((try? LazyVolumeHeader.decode(header.encoded())) == header, "header does not round-trip")
        precondition(header.built <= header.blockCount, "more built than blocks")
    case 3:
        guard let kind = bytes.first else { return 0 }
        let message = Message(type: 0x0801 + UInt16(kind % 5), bytes: bytes.dropFirst())
        guard let decoded = try? ShippingMessage.decode(message) else { return 0 }
        precondition((try? ShippingMessage.decode(decoded.encode())) == decoded, "message does not round-trip")
    default:
        let blocks = 2 * LazyVolumeHeader.blocksPerBitmapSector
        var words = [UInt64](repeating: 0, count: blocks / 64)
        guard (try? LazyVolumeHeader.decodeBitmapSector(bytes, index: 1, blocks: blocks, into: &words)) != nil else {
            return 0
        }
        if words.contains(where: { $0 != 0 }) {
            let again = LazyVolumeHeader.encodeBitmapSector(index: 1, words: words)
            precondition(again == bytes, "bitmap sector does not round-trip")
        }
    }
    return 0
}
