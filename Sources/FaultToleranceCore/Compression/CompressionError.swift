/// A failure to compress or decompress, with zlib's own code and message where it gave one.
public struct CompressionError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong.
    public enum Code: String, Sendable, Hashable {
        /// zlib could not set up a stream (out of memory, or a bad level).
        case initializationFailed
        /// The compressed bytes are not a valid zlib stream (bad header, bad block, bad
        /// checksum).
        case corruptInput
        /// The input ended before the compressed stream did.
        case truncatedInput
        /// The decompressed data would exceed the caller's limit (a decompression bomb, or a
        /// limit set too low).
        case outputLimitExceeded
        /// Bytes follow the end of the compressed stream.
        case trailingBytes
        /// zlib failed in a way this library does not expect.
        case internalError
    }

    /// What went wrong.
    public var code: Code
    /// zlib's return code, when zlib reported the failure.
    public var zlibCode: Int32?
    /// zlib's message, when it gave one.
    public var message: String?
    /// How many input bytes had been consumed when the failure was found.
    public var inputOffset: Int

    /// Creates an error.
    public init(code: Code, zlibCode: Int32? = nil, message: String? = nil, inputOffset: Int) {
        self.code = code
        self.zlibCode = zlibCode
        self.message = message
        self.inputOffset = inputOffset
    }

    /// A one-line explanation naming the code, zlib's view and the input offset.
    public var description: String {
        var text = "compression error \(code.rawValue) at input offset \(inputOffset)"
        if let zlibCode { text += " (zlib \(zlibCode)" + (message.map { ": \($0)" } ?? "") + ")" }
        return text
    }
}
