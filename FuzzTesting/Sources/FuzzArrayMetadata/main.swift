import FaultToleranceCore
import HotSpare

// Feeds arbitrary bytes to the HotSpare metadata decoders, what every member of an array holds
// at its start. The first byte steers: even, ArrayLabel.decode; odd, ArrayRecord.decode. Every
// input must decode or be refused with an ArrayMetadataError, never crash or hang; what decodes
// re-encodes and decodes to the same value.

/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard let steer = input.first else { return 0 }
    let bytes = Array(input.dropFirst())
    if steer % 2 == 0 {
        guard let label = try? ArrayLabel.decode(bytes) else { return 0 }
        precondition((try? ArrayLabel.decode(label.encode())) == label, "label does not round-trip")
        _ = label.requiredCapacity
    } else {
        guard let record = try? ArrayRecord.decode(bytes) else { return 0 }
        precondition((try? ArrayRecord.decode(record.encode())) == record, "record does not round-trip")
        _ = record.live.setCount
        _ = record.live.firstSet(from: 0)
    }
    return 0
}
