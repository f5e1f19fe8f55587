import FaultToleranceCore
import LiveCopy
import NIOCore

// Feeds arbitrary bytes to the live copy's wire decoders, the page-batch decoder first among
// them. The first byte steers: its low three bits pick the decoder (page batch, reply, begin,
// barrier/end request, verify, mirrored writes); bit 3 repairs a deflated page batch's body
// checksum so mutations reach the entries behind it. Every input must decode or be refused with
// a LiveCopyError, never crash; every page batch accepted is applied to a 16-page region of
// 64-byte pages, and every mirrored write to it, through the same bounds checks the receiver
// uses.

let pageSize = 64
let pageCount = 16
let region: OfflineRegion? = try? OfflineRegion(pageCount: pageCount, pageSize: pageSize)

/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard let steer = input.first, let region else { return 0 }
    var bytes = Array(input.dropFirst())
    switch steer & 7 {
    case 0, 6, 7:
        if steer & 8 != 0 { bytes = repairDeflatedChecksum(bytes) }
        guard let batch = try? PageBatch.decode(ByteBuffer(bytes: bytes), pageSize: pageSize, pageCount: pageCount)
        else { return 0 }
        batch.forEachPage(pageSize: pageSize) { page, data in
            precondition(page >= 0 && page < pageCount, "decoder accepted page \(page)")
            if let data {
                precondition(data.count == pageSize, "decoder accepted a short page")
                try? region.write(data, at: page * pageSize)
            }
        }
    case 1:
        if let reply = try? LiveCopyWire.Reply.decode(ByteBuffer(bytes: bytes)) {
            // What decodes re-encodes to the same bytes.
            precondition(Array(reply.encode().readableBytesView) == bytes, "reply does not round-trip")
        }
    case 2:
        if let begin = try? LiveCopyWire.Begin.decode(ByteBuffer(bytes: bytes)) {
            precondition(Array(begin.encode().readableBytesView) == bytes, "begin does not round-trip")
        }
    case 3:
        _ = try? LiveCopyWire.decodeRequest(ByteBuffer(bytes: bytes))
    case 4:
        if let verify = try? LiveCopyWire.Verify.decode(ByteBuffer(bytes: bytes), pageCount: pageCount) {
            precondition(verify.firstPage + verify.checksums.count <= pageCount, "verify outside the region")
            _ = region.checksums(of: verify.firstPage..<(verify.firstPage + verify.checksums.count))
        }
    default:
        if let mirrored = try? LiveCopyWire.MirrorWrites.decode(ByteBuffer(bytes: bytes), byteCount: region.byteCount) {
            for write in mirrored.writes {
                write.bytes.withUnsafeReadableBytes { raw in
                    precondition((try? region.write(raw, at: write.offset)) != nil, "decoder accepted a write outside")
                }
            }
        }
    }
    return 0
}

/// Sets a deflated batch's body checksum to the CRC32C of what its body inflates to.
func repairDeflatedChecksum(_ bytes: [UInt8]) -> [UInt8] {
    guard bytes.count > PageBatch.headerSize, bytes[1] & PageBatch.deflatedFlag != 0,
        let body = try? Inflate.decompress(Array(bytes[PageBatch.headerSize...]), maximumOutputSize: 1 << 16)
    else { return bytes }
    var repaired = bytes
    let checksum = CRC32C.checksum(body)
    for index in 0..<4 { repaired[24 + index] = UInt8(truncatingIfNeeded: checksum >> (8 * index)) }
    return repaired
}
