import FaultToleranceCore
import HeartbeatQuorum
import NIOCore

// The heartbeat protocol's messages, as a peer (or anyone who can reach a heartbeat port over
// a bare transport) sends them: the first byte picks the message type (0x0100-0x0104, or one
// beyond), the rest is the payload. Every input must decode or throw FrameError, never crash;
// a decoded message must encode to a message that decodes to the same value.
/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard let first = input.first else { return 0 }
    let type = HeartbeatMessage.WireType.heartbeat + UInt16(first % 6)
    let message = Message(type: type, bytes: input.dropFirst())
    guard let decoded = try? HeartbeatMessage(message) else { return 0 }
    guard let again = try? HeartbeatMessage(decoded.message), again == decoded else {
        fatalError("a decoded heartbeat message does not survive encoding: \(decoded)")
    }
    return 0
}
