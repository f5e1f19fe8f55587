import FaultToleranceCore

// Arbitrary bytes into the one-shot and the streaming inflater: each must return or throw
// CompressionError, never crash, never exceed its output limit; the two must agree.
/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: start, count: count))
    let limit = 1 << 20
    let oneShot = try? Inflate.decompress(bytes, maximumOutputSize: limit)
    if let oneShot, oneShot.count > limit { fatalError("output limit exceeded") }

    guard let stream = try? InflateStream(maximumOutputSize: limit) else { return 0 }
    var output: [UInt8] = []
    var consumedAll = true
    do {
        var index = 0
        while index < bytes.count {
            let end = min(bytes.count, index + 7)
            let used = try bytes[index..<end].withUnsafeBytes { try stream.decompress($0, into: &output) }
            if used < end - index {
                consumedAll = false
                break
            }
            index = end
        }
        try stream.finish()
    } catch {
        if oneShot != nil { fatalError("streaming failed where one-shot succeeded: \(error)") }
        return 0
    }
    if consumedAll, oneShot != output { fatalError("streaming and one-shot disagree") }
    return 0
}
