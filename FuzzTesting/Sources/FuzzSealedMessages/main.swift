import FaultToleranceCore
import NIOCore

// The authenticated framing a hostile peer reaches before any key is used: the sealed
// message's layout, and the replay window that decides which counters are new.
//
// First byte odd: the rest is a sealed message's payload. It must parse or be refused (never
// crash), and a parsed one must re-encode to exactly the input (the parser accepts nothing
// the sealer would not write).
// First byte even: the rest is a run of counters (each two bytes, a signed step from the last,
// so the run lingers around the window's edge) fed to a ReplayWindow and to a model that
// remembers every counter it accepted; they must agree on every one: a counter is accepted
// once, and only above the highest or within 64 below it.
/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard let first = input.first else { return 0 }
    let rest = Array(input.dropFirst())
    if first & 1 == 1 {
        parse(rest)
    } else {
        replay(rest, start: UInt64(first) << 56)
    }
    return 0
}

func parse(_ bytes: [UInt8]) {
    guard let sealed = SealedMessage(payload: ByteBuffer(bytes: bytes)) else { return }
    guard Array(sealed.payload.readableBytesView) == bytes else {
        fatalError("a parsed sealed message does not re-encode to its input")
    }
    guard sealed.tag.count == SealedMessage.tagLength else { fatalError("a tag of \(sealed.tag.count) bytes") }
}

func replay(_ bytes: [UInt8], start: UInt64) {
    var window = ReplayWindow()
    var accepted: Set<UInt64> = []
    var highest: UInt64?
    var counter = start
    var index = 0
    while index + 1 < bytes.count {
        let step = Int16(bitPattern: UInt16(bytes[index]) << 8 | UInt16(bytes[index + 1]))
        index += 2
        counter = step >= 0 ? counter &+ UInt64(step) : counter &- UInt64(-Int(step))
        let expected: Bool
        if let top = highest {
            expected = !accepted.contains(counter) && (counter > top || top - counter < ReplayWindow.size)
        } else {
            expected = true
        }
        guard window.accept(counter) == expected else {
            fatalError(
                "the window and the model disagree on counter \(counter) (highest \(String(describing: highest)))")
        }
        if expected {
            accepted.insert(counter)
            highest = max(highest ?? counter, counter)
        }
    }
    guard window.highestAccepted == highest else { fatalError("the highest accepted counter differs") }
}
