internal import CZlib
import NIOConcurrencyHelpers

/// Raw DEFLATE (RFC 1951) of whole blocks, between caller buffers, on reused zlib streams.
///
/// For formats that frame each block and carry their own checksum of the uncompressed
/// bytes (``CRC32C``): no zlib header, no Adler-32 pass over the data, no stream set up and
/// torn down per block (zlib's state is over 256 KiB for compression), and no intermediate
/// arrays. The streams are kept in a small shared pool, so any thread may call these at any
/// time.
///
/// ```swift
/// var packed = [UInt8](repeating: 0, count: page.count - page.count / 8)
/// let count = try packed.withUnsafeMutableBytes { try RawDeflate.compress(page, into: $0, level: 1) }
/// // count == nil: the page does not shrink by an eighth; store it raw.
/// ```
public enum RawDeflate {
    /// Compresses `input` at `level` (1-9) into `output`. Returns the compressed length, or
    /// `nil` when the compressed block does not fit in `output` (size `output` to the most
    /// the caller would accept: the work stops as soon as that is exceeded).
    public static func compress(
        _ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer, level: Int32
    ) throws(CompressionError) -> Int? {
        guard (1...9).contains(level) else {
            throw CompressionError(code: .initializationFailed, message: "level \(level) is not 1-9", inputOffset: 0)
        }
        let stream = try StreamPool.shared.takeCompressor(level: level)
        defer { StreamPool.shared.give(compressor: stream, level: level) }
        let z = stream.point(from: input, to: output)
        let status = deflate(z, Z_FINISH)
        let produced = output.count - Int(z.pointee.avail_out)
        deflateReset(z)
        switch status {
        case Z_STREAM_END: return produced
        case Z_OK, Z_BUF_ERROR: return nil  // out of output space
        default: throw CompressionError(code: .internalError, zlibCode: status, inputOffset: 0)
        }
    }

    /// Decompresses one complete raw DEFLATE block into exactly `output.count` bytes. Safe on
    /// hostile input: throws ``CompressionError/Code/corruptInput`` for an invalid stream,
    /// ``CompressionError/Code/outputLimitExceeded`` when it would produce more,
    /// ``CompressionError/Code/truncatedInput`` when it ends early or produces less, and
    /// ``CompressionError/Code/trailingBytes`` when input follows its end.
    public static func decompress(
        _ input: UnsafeRawBufferPointer, into output: UnsafeMutableRawBufferPointer
    ) throws(CompressionError) {
        let stream = try StreamPool.shared.takeDecompressor()
        defer { StreamPool.shared.give(decompressor: stream) }
        let z = stream.point(from: input, to: output)
        let status = inflate(z, Z_FINISH)
        let consumed = input.count - Int(z.pointee.avail_in)
        let produced = output.count - Int(z.pointee.avail_out)
        let message = z.pointee.msg.map { String(cString: $0) }
        inflateReset(z)
        switch status {
        case Z_STREAM_END:
            guard produced == output.count else {
                throw CompressionError(
                    code: .truncatedInput, message: "\(produced) of \(output.count) bytes", inputOffset: consumed)
            }
            guard consumed == input.count else { throw CompressionError(code: .trailingBytes, inputOffset: consumed) }
        case Z_BUF_ERROR, Z_OK:
            // Out of output space with input left, or out of input before the end.
            if produced == output.count && consumed < input.count {
                throw CompressionError(code: .outputLimitExceeded, inputOffset: consumed)
            }
            throw CompressionError(code: .truncatedInput, inputOffset: consumed)
        case Z_NEED_DICT, Z_DATA_ERROR:
            throw CompressionError(code: .corruptInput, zlibCode: status, message: message, inputOffset: consumed)
        default:
            throw CompressionError(code: .internalError, zlibCode: status, message: message, inputOffset: consumed)
        }
    }

    /// One zlib stream set up for raw DEFLATE; ended when released.
    private final class Stream {
        let stream: UnsafeMutablePointer<z_stream>
        let compresses: Bool

        init(compressingAt level: Int32?) throws(CompressionError) {
            stream = .allocate(capacity: 1)
            stream.initialize(to: z_stream())
            compresses = level != nil
            let size = Int32(MemoryLayout<z_stream>.size)
            // windowBits -15: a raw stream (no header, no trailer) with a 32 KiB window.
            let status =
                if let level {
                    deflateInit2_(stream, level, Z_DEFLATED, -15, 8, Z_DEFAULT_STRATEGY, ZLIB_VERSION, size)
                } else {
                    inflateInit2_(stream, -15, ZLIB_VERSION, size)
                }
            guard status == Z_OK else {
                stream.deinitialize(count: 1)
                stream.deallocate()
                throw CompressionError(code: .initializationFailed, zlibCode: status, inputOffset: 0)
            }
        }

        /// Sets the stream's input and output to the caller's buffers; returns the stream.
        func point(
            from input: UnsafeRawBufferPointer, to output: UnsafeMutableRawBufferPointer
        ) -> UnsafeMutablePointer<z_stream> {
            stream.pointee.next_in = UnsafeMutablePointer(
                mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
            stream.pointee.avail_in = uInt(input.count)
            stream.pointee.next_out = output.baseAddress?.assumingMemoryBound(to: Bytef.self)
            stream.pointee.avail_out = uInt(output.count)
            return stream
        }

        deinit {
            if compresses { deflateEnd(stream) } else { inflateEnd(stream) }
            stream.deinitialize(count: 1)
            stream.deallocate()
        }
    }

    /// Idle streams, a few per level: taken for one call, given back after.
    private final class StreamPool: @unchecked Sendable {
        static let shared = StreamPool()
        private static let idleLimit = 8
        private let compressors = NIOLockedValueBox<[Int32: [Stream]]>([:])
        private let decompressors = NIOLockedValueBox<[Stream]>([])

        func takeCompressor(level: Int32) throws(CompressionError) -> Stream {
            if let idle = compressors.withLockedValue({ $0[level]?.popLast() }) { return idle }
            return try Stream(compressingAt: level)
        }

        func give(compressor: Stream, level: Int32) {
            compressors.withLockedValue { idle in
                if idle[level, default: []].count < Self.idleLimit { idle[level, default: []].append(compressor) }
            }
        }

        func takeDecompressor() throws(CompressionError) -> Stream {
            if let idle = decompressors.withLockedValue({ $0.popLast() }) { return idle }
            return try Stream(compressingAt: nil)
        }

        func give(decompressor: Stream) {
            decompressors.withLockedValue { idle in
                if idle.count < Self.idleLimit { idle.append(decompressor) }
            }
        }
    }
}
