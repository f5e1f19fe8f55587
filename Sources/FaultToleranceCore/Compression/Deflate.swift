internal import CZlib

/// zlib-format (RFC 1950) compression on the system zlib.
///
/// The zlib format carries an Adler-32 of the uncompressed data, so ``Inflate`` rejects most
/// damaged streams even where the damage leaves them decodable. Adler-32 is weak (a damaged
/// stream occasionally decodes to other bytes with the same sum), so anything stored or sent
/// compressed should also carry a ``CRC32C`` of its uncompressed bytes.
///
/// ```swift
/// let packed = try Deflate.compress(bytes, level: 1)
/// let unpacked = try Inflate.decompress(packed, maximumOutputSize: bytes.count)
/// ```
public enum Deflate {
    /// Compresses `bytes` in one call. Level 0 stores, 1 is fastest, 9 smallest; -1 is zlib's
    /// default (6).
    public static func compress(_ bytes: some Sequence<UInt8>, level: Int32 = 1) throws(CompressionError) -> [UInt8] {
        let stream = try DeflateStream(level: level)
        var output: [UInt8] = []
        let input = Array(bytes)
        output.reserveCapacity(Int(compressBound(UInt(input.count))))
        try input.withUnsafeBytes { raw in
            Result { () throws(CompressionError) in try stream.compress(raw, into: &output) }
        }.get()
        try stream.finish(into: &output)
        return output
    }
}

/// zlib-format (RFC 1950) decompression on the system zlib, safe on hostile input: corrupt
/// or truncated streams throw ``CompressionError`` and output is capped by the caller.
public enum Inflate {
    /// Decompresses a complete zlib stream. Throws ``CompressionError/Code/truncatedInput``
    /// when `bytes` ends early, ``CompressionError/Code/trailingBytes`` when bytes follow the
    /// stream, and ``CompressionError/Code/outputLimitExceeded`` past `maximumOutputSize`.
    public static func decompress(
        _ bytes: some Sequence<UInt8>,
        maximumOutputSize: Int = 1 << 30
    ) throws(CompressionError) -> [UInt8] {
        let stream = try InflateStream(maximumOutputSize: maximumOutputSize)
        var output: [UInt8] = []
        let input = Array(bytes)
        let consumed = try input.withUnsafeBytes { raw in
            Result { () throws(CompressionError) in try stream.decompress(raw, into: &output) }
        }.get()
        try stream.finish()
        if consumed < input.count {
            throw CompressionError(code: .trailingBytes, inputOffset: consumed)
        }
        return output
    }
}

/// An incremental zlib compressor: feed input in pieces with ``compress(_:into:)``, end
/// with ``finish(into:)``.
///
/// Not `Sendable`: a stream belongs to one task at a time.
public final class DeflateStream {
    private let stream: UnsafeMutablePointer<z_stream>
    private var finished = false
    private var consumed = 0

    /// Sets up a compressor at `level` (0-9, or -1 for zlib's default).
    public init(level: Int32 = 1) throws(CompressionError) {
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let status = deflateInit_(stream, level, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else {
            stream.deinitialize(count: 1)
            stream.deallocate()
            throw CompressionError(code: .initializationFailed, zlibCode: status, inputOffset: 0)
        }
    }

    deinit {
        deflateEnd(stream)
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    /// Compresses `input`, appending whatever output zlib produces so far to `output`.
    public func compress(_ input: UnsafeRawBufferPointer, into output: inout [UInt8]) throws(CompressionError) {
        guard !finished else {
            throw CompressionError(code: .internalError, message: "stream finished", inputOffset: consumed)
        }
        try run(input, flush: Z_NO_FLUSH, into: &output)
    }

    /// Ends the stream, appending the remaining output and the Adler-32 trailer to `output`.
    public func finish(into output: inout [UInt8]) throws(CompressionError) {
        guard !finished else { return }
        try run(UnsafeRawBufferPointer(start: nil, count: 0), flush: Z_FINISH, into: &output)
        finished = true
    }

    private func run(_ input: UnsafeRawBufferPointer, flush: Int32, into output: inout [UInt8]) throws(CompressionError)
    {
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = uInt(input.count)
        var chunk = [UInt8](repeating: 0, count: max(4096, input.count / 2))
        while true {
            let produced: Int
            let status: Int32
            (status, produced) = chunk.withUnsafeMutableBytes { buffer in
                stream.pointee.next_out = buffer.baseAddress?.assumingMemoryBound(to: Bytef.self)
                stream.pointee.avail_out = uInt(buffer.count)
                let status = deflate(stream, flush)
                return (status, buffer.count - Int(stream.pointee.avail_out))
            }
            output.append(contentsOf: chunk[0..<produced])
            if status == Z_STREAM_END { break }
            guard status == Z_OK || status == Z_BUF_ERROR else {
                throw CompressionError(code: .internalError, zlibCode: status, inputOffset: consumed)
            }
            // Done when zlib took all input and, for a flush, left output space unused.
            if stream.pointee.avail_in == 0 && stream.pointee.avail_out != 0 && flush == Z_NO_FLUSH { break }
            if status == Z_BUF_ERROR && stream.pointee.avail_in == 0 && flush == Z_NO_FLUSH { break }
        }
        consumed += input.count
        stream.pointee.next_in = nil
        stream.pointee.avail_in = 0
    }
}

/// An incremental zlib decompressor: feed compressed input in pieces with
/// ``decompress(_:into:)``; ``finish()`` throws if the stream did not end.
///
/// Not `Sendable`: a stream belongs to one task at a time.
public final class InflateStream {
    private let stream: UnsafeMutablePointer<z_stream>
    private let maximumOutputSize: Int
    private var produced = 0
    private var consumed = 0

    /// Whether the compressed stream has ended (its trailer was read and verified).
    public private(set) var isFinished = false

    /// Sets up a decompressor that refuses to produce more than `maximumOutputSize` bytes.
    public init(maximumOutputSize: Int = 1 << 30) throws(CompressionError) {
        self.maximumOutputSize = maximumOutputSize
        stream = .allocate(capacity: 1)
        stream.initialize(to: z_stream())
        let status = inflateInit_(stream, ZLIB_VERSION, Int32(MemoryLayout<z_stream>.size))
        guard status == Z_OK else {
            stream.deinitialize(count: 1)
            stream.deallocate()
            throw CompressionError(code: .initializationFailed, zlibCode: status, inputOffset: 0)
        }
    }

    deinit {
        inflateEnd(stream)
        stream.deinitialize(count: 1)
        stream.deallocate()
    }

    /// Decompresses as much of `input` as belongs to the stream, appending to `output`.
    /// Returns how many bytes of `input` were consumed: fewer than `input.count` only when
    /// the stream ended inside it.
    @discardableResult
    public func decompress(_ input: UnsafeRawBufferPointer, into output: inout [UInt8]) throws(CompressionError) -> Int
    {
        guard !isFinished else { return 0 }
        stream.pointee.next_in = UnsafeMutablePointer(mutating: input.baseAddress?.assumingMemoryBound(to: Bytef.self))
        stream.pointee.avail_in = uInt(input.count)
        defer {
            stream.pointee.next_in = nil
            stream.pointee.avail_in = 0
        }
        var chunk = [UInt8](repeating: 0, count: 16 * 1024)
        while stream.pointee.avail_in > 0 || !isFinished {
            let before = Int(stream.pointee.avail_in)
            let (status, count) = chunk.withUnsafeMutableBytes { buffer in
                stream.pointee.next_out = buffer.baseAddress?.assumingMemoryBound(to: Bytef.self)
                stream.pointee.avail_out = uInt(buffer.count)
                let status = inflate(stream, Z_NO_FLUSH)
                return (status, buffer.count - Int(stream.pointee.avail_out))
            }
            let offset = consumed + input.count - Int(stream.pointee.avail_in)
            produced += count
            if produced > maximumOutputSize {
                throw CompressionError(code: .outputLimitExceeded, inputOffset: offset)
            }
            output.append(contentsOf: chunk[0..<count])
            switch status {
            case Z_STREAM_END:
                isFinished = true
            case Z_OK:
                break
            case Z_BUF_ERROR:
                // No progress possible: input exhausted (more may come later).
                if count == 0 && Int(stream.pointee.avail_in) == before { break }
            case Z_NEED_DICT, Z_DATA_ERROR:
                throw CompressionError(code: .corruptInput, zlibCode: status, message: zlibMessage, inputOffset: offset)
            default:
                throw CompressionError(
                    code: .internalError, zlibCode: status, message: zlibMessage, inputOffset: offset)
            }
            if isFinished { break }
            // Stop when all input is consumed and zlib had output space to spare.
            if stream.pointee.avail_in == 0 && stream.pointee.avail_out != 0 { break }
            if count == 0 && Int(stream.pointee.avail_in) == before { break }
        }
        let used = input.count - Int(stream.pointee.avail_in)
        consumed += used
        return used
    }

    /// Throws ``CompressionError/Code/truncatedInput`` unless the stream has ended.
    public func finish() throws(CompressionError) {
        if !isFinished { throw CompressionError(code: .truncatedInput, inputOffset: consumed) }
    }

    private var zlibMessage: String? {
        stream.pointee.msg.map { String(cString: $0) }
    }
}
