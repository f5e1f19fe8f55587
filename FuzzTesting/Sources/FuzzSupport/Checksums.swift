import FaultToleranceCore

// Helpers shared by the fuzz harnesses.

/// Rewrites the CRC32C of each frame whose header and declared payload fit in `bytes`.
public func repairChecksums(_ bytes: [UInt8]) -> [UInt8] {
    var bytes = bytes
    var offset = 0
    while offset + Frame.headerSize <= bytes.count {
        let length = bytes[(offset + 8)..<(offset + 12)].reduce(0) { $0 << 8 | Int($1) }
        let end = offset + Frame.headerSize + length
        guard end <= bytes.count else { break }
        var crc = CRC32C()
        crc.update(bytes[offset..<(offset + 12)])
        crc.update(bytes[(offset + Frame.headerSize)..<end])
        let value = crc.value
        for index in 0..<4 { bytes[offset + 12 + index] = UInt8(truncatingIfNeeded: value >> (24 - 8 * index)) }
        offset = end
    }
    return bytes
}
