/// A failure to compress or decompress, with zlib's own code and message where it gave one.
public struct CompressionError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What went wrong.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// The code's name.
        public var description: String { name }

        /// zlib could not set up a stream (out of memory, or a bad level).
        public static let initializationFailed = Code("initializationFailed")
        /// The compressed bytes are not a valid zlib stream (bad header, bad block, bad
        /// checksum).
        public static let corruptInput = Code("corruptInput")
        /// The input ended before the compressed stream did.
        public static let truncatedInput = Code("truncatedInput")
        /// The decompressed data would exceed the caller's limit (a decompression bomb, or a
        /// limit set too low).
        public static let outputLimitExceeded = Code("outputLimitExceeded")
        /// Bytes follow the end of the compressed stream.
        public static let trailingBytes = Code("trailingBytes")
        /// zlib failed in a way this library does not expect.
        public static let internalError = Code("internalError")
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
        var text = "compression error \(code) at input offset \(inputOffset)"
        if let zlibCode { text += " (zlib \(zlibCode)" + (message.map { ": \($0)" } ?? "") + ")" }
        return text
    }
}
