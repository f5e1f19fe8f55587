/// Why bytes from a disk or a peer are not a valid frame, and where in the stream the bad
/// frame starts.
public struct FrameError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of damage.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        private let name: String
        private init(_ name: String) { self.name = name }

        /// The code's name.
        public var description: String { name }

        /// The first two bytes are not the frame magic: not our protocol, or out of step.
        public static let badMagic = Code("badMagic")
        /// A format version this build does not read.
        public static let unsupportedVersion = Code("unsupportedVersion")
        /// Flag bits this version does not define are set.
        public static let unknownFlags = Code("unknownFlags")
        /// Reserved header bytes are not zero.
        public static let reservedNotZero = Code("reservedNotZero")
        /// The declared payload length exceeds the decoder's limit.
        public static let frameTooLarge = Code("frameTooLarge")
        /// The CRC32C does not match the header and payload.
        public static let checksumMismatch = Code("checksumMismatch")
        /// The bytes end inside a frame.
        public static let truncated = Code("truncated")
        /// The frame is intact but its payload does not parse (a bad envelope or message).
        public static let malformedPayload = Code("malformedPayload")
        /// Assembling the frame would take the receiver past its budget for frames in
        /// progress (memory a peer can make it hold before sending the bytes).
        public static let overBudget = Code("overBudget")
        /// A frame stayed incomplete, with no bytes arriving, for longer than allowed.
        public static let stalled = Code("stalled")
    }

    /// The kind of damage.
    public var code: Code
    /// The offset in the stream (or file) at which the damaged frame starts.
    public var offset: Int
    /// More detail for people.
    public var detail: String

    /// Creates an error.
    public init(_ code: Code, offset: Int, detail: String) {
        self.code = code
        self.offset = offset
        self.detail = detail
    }

    /// One line with the code, the offset and the detail.
    public var description: String { "frame error \(code) at offset \(offset): \(detail)" }
}
