import DaisyChain
import FaultToleranceCore

// Feeds arbitrary bytes to the DaisyChain decoders. The first byte steers: values 0-31 pick a
// message type (0x0500 + n) for ChainMessage.decode; 32 and above the chain register decoder
// (also what the drive's register slots hold). Every input must decode or be refused with a
// ChainError, never crash or hang; what decodes re-encodes and decodes to the same value.

/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard let steer = input.first else { return 0 }
    let bytes = Array(input.dropFirst())
    if steer < 32 {
        let type = 0x0500 + UInt16(steer)
        guard let message = try? ChainMessage.decode(Message(type: type, bytes: bytes)) else { return 0 }
        let again = try? ChainMessage.decode(message.encode())
        precondition(again == message, "message type \(type) does not round-trip")
    } else {
        var buffer = Message(type: 0, bytes: bytes).payload
        guard let register = try? ChainRegister.decode(from: &buffer) else { return 0 }
        var encoded = register.encoded
        precondition((try? ChainRegister.decode(from: &encoded)) == register, "register does not round-trip")
        _ = register.digest
        _ = register.spanPieces(0..<4096)
    }
    return 0
}
