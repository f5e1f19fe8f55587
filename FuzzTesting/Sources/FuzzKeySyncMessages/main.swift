import FaultToleranceCore
import NameKeySync

// Feeds arbitrary bytes to the name-key sync decoders. The first byte steers: values 0-10 pick
// a message type (0x0400 + n) for KeySyncMessage.decode; 11 the sketch snapshot decoder; 12 the
// record body decoder; 13 and above the sketch decoder (peeling), with the bytes read as two
// ranges of symbols against a small local set. Every input must decode or be refused with a
// KeySyncError, never crash or hang; what decodes re-encodes and decodes to the same message.

let local: SketchPrefix = {
    var prefix = SketchPrefix(capacity: 64)
    for element in UInt64(1)...40 { prefix.insert(Fingerprint(element &* 0x9E37_79B9_7F4A_7C15)) }
    return prefix
}()

/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard let steer = input.first else { return 0 }
    let bytes = Array(input.dropFirst())
    switch steer {
    case 0...10:
        let type = KeySyncMessage.MessageType.hello + UInt16(steer)
        guard let message = try? KeySyncMessage.decode(Message(type: type, bytes: bytes)) else { return 0 }
        guard let encoded = try? message.encode(), let again = try? KeySyncMessage.decode(encoded) else {
            preconditionFailure("\(message.name) decoded but does not re-encode")
        }
        precondition(again == message, "\(message.name) does not round-trip")
    case 11:
        if let sketch = try? SQLiteNameKeyStore.decodeSnapshot(bytes) {
            precondition(SQLiteNameKeyStore.encodeSnapshot(sketch) == bytes, "snapshot does not round-trip")
        }
    case 12:
        if let fields = try? NameKeyRecord.decodeBody(bytes) {
            precondition(NameKeyRecord(key: "k", version: 1, fields: fields).body == bytes, "body does not round-trip")
        }
    default:
        // Symbols as the wire carries them, peeled against the local set.
        var body: [UInt8] = [KeySyncMessage.protocolVersion] + [UInt8](repeating: 0, count: 8)
        let symbolCount = min(64, bytes.count / 13)
        body += [0, 0, 0, 0]
        body += withUnsafeBytes(of: UInt32(symbolCount).littleEndian, Array.init)
        body += bytes
        guard
            case .symbols(_, _, let symbols)? = try? KeySyncMessage.decode(
                Message(type: KeySyncMessage.MessageType.symbols, bytes: body))
        else { return 0 }
        var decoder = SketchDecoder()
        let split = symbols.count / 2
        decoder.add(remote: Array(symbols[..<split]), local: Array(local.symbols[..<split]))
        decoder.add(
            remote: Array(symbols[split...]), local: Array(local.symbols[split..<symbols.count]))
        precondition(decoder.received == symbols.count, "symbols lost")
    }
    return 0
}
