/// Why bytes from a disk or a peer are not a valid frame, and where in the stream the bad
/// frame starts.
public struct FrameError: Error, Sendable, Hashable, CustomStringConvertible {
    /// The kind of damage.
    public enum Code: String, Sendable, Hashable {
        /// The first two bytes are not the frame magic: not our protocol, or out of step.
        case badMagic
        /// A format version this build does not read.
        case unsupportedVersion
        /// Flag bits this version does not define are set.
        case unknownFlags
        /// Reserved header bytes are not zero.
        case reservedNotZero
        /// The declared payload length exceeds the decoder's limit.
        case frameTooLarge
        /// The CRC32C does not match the header and payload.
        case checksumMismatch
        /// The bytes end inside a frame.
        case truncated
        /// The frame is intact but its payload does not parse (a bad envelope or message).
        case malformedPayload
        /// Assembling the frame would take the receiver past its budget for frames in
        /// progress (memory a peer can make it hold before sending the bytes).
        case overBudget
        /// A frame stayed incomplete, with no bytes arriving, for longer than allowed.
        case stalled
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
    public var description: String { "frame error \(code.rawValue) at offset \(offset): \(detail)" }
}
