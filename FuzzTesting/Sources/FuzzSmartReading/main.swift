import HotSpare

// Feeds arbitrary bytes to the `smartctl --json` reader that turns a drive's output into wear
// counters, and to the reader of nvme-cli's OCP SMART log. Every input must give a reading or a SmartParseError, never crash or hang; a
// reading's figures must be consistent (a write amplification only with both counters).

/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let bytes = Array(UnsafeRawBufferPointer(start: start, count: count))
    _ = try? SmartReading.mediaBytes(ocpLogJSON: bytes)
    guard let reading = try? SmartReading.parse(smartctlJSON: bytes) else { return 0 }
    if let amplification = reading.writeAmplification {
        precondition(reading.mediaBytesWritten != nil && reading.hostBytesWritten > 0, "amplification without counters")
        precondition(amplification.isFinite && amplification >= 0, "amplification \(amplification)")
    }
    return 0
}
