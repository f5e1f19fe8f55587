public import NIOCore

/// The wire layout of a sealed message (`FaultToleranceAuthentication`'s
/// `AuthenticatedTransport`, message type 0x0F01), without the cryptography: parsing it is
/// what a hostile peer reaches first, so it lives here, where the fuzzer reaches it too.
///
/// Payload (big-endian): version (1), key id (UInt32), counter (UInt64), the inner message's
/// type (UInt16), the inner message's body, then a 16-byte tag over everything before it
/// (and over both endpoints' names, which the tag's computation adds).
public struct SealedMessage: Sendable, Hashable {
    /// The message type that carries sealed messages.
    public static let messageType: UInt16 = 0x0F01
    /// The layout's version.
    public static let version: UInt8 = 1
    /// Bytes of the tag.
    public static let tagLength = 16
    /// Bytes before the inner body: version, key id, counter, inner type.
    public static let headerLength = 1 + 4 + 8 + 2
    /// Bytes a seal adds to a message.
    public static let overhead = headerLength + tagLength

    /// The key that made the tag.
    public var keyID: UInt32
    /// The sender's counter (each message's own; see ``ReplayWindow``).
    public var counter: UInt64
    /// The inner message.
    public var inner: Message
    /// The tag, ``tagLength`` bytes.
    public var tag: [UInt8]

    /// Creates a sealed message from its parts (the tag as computed over ``signedBytes``).
    public init(keyID: UInt32, counter: UInt64, inner: Message, tag: [UInt8]) {
        self.keyID = keyID
        self.counter = counter
        self.inner = inner
        self.tag = tag
    }

    /// Parses a sealed message's payload; `nil` when it is shorter than ``overhead`` or of
    /// another version. Nothing is verified: the tag is checked by whoever holds the key.
    public init?(payload: ByteBuffer) {
        var payload = payload
        guard payload.readableBytes >= Self.overhead,
            let (version, keyID, counter, type) = payload.readMultipleIntegers(
                as: (UInt8, UInt32, UInt64, UInt16).self),
            version == Self.version,
            let body = payload.readSlice(length: payload.readableBytes - Self.tagLength),
            let tag = payload.readBytes(length: Self.tagLength)
        else { return nil }
        self.init(keyID: keyID, counter: counter, inner: Message(type: type, payload: body), tag: tag)
    }

    /// The bytes the tag covers: the header and the inner body, as they travel.
    public var signedBytes: ByteBuffer {
        var bytes = ByteBuffer()
        bytes.reserveCapacity(Self.headerLength + inner.payload.readableBytes)
        bytes.writeMultipleIntegers(Self.version, keyID, counter, inner.type)
        var body = inner.payload
        bytes.writeBuffer(&body)
        return bytes
    }

    /// The whole payload: ``signedBytes`` followed by the tag.
    public var payload: ByteBuffer {
        var bytes = signedBytes
        bytes.writeBytes(tag)
        return bytes
    }
}

/// Which of a sender's counters have been accepted: the highest, and a bitmap of the
/// ``size`` below it (WireGuard's replay window). A counter is accepted once, and only when it
/// is above the highest seen or within the window below it; anything older is refused as a
/// replay, so a captured message can never be delivered twice.
public struct ReplayWindow: Sendable, Hashable {
    /// Counters below the highest that may still arrive late and be accepted.
    public static let size: UInt64 = 64

    private var highest: UInt64?
    /// Bit i: counter `highest - i` was accepted.
    private var seen: UInt64 = 0

    /// A window that has accepted nothing.
    public init() {}

    /// The highest counter accepted so far.
    public var highestAccepted: UInt64? { highest }

    /// Accepts `counter` if it is new: `true` the first time, `false` for a repeat or one
    /// older than the window.
    public mutating func accept(_ counter: UInt64) -> Bool {
        guard let top = highest else {
            highest = counter
            seen = 1
            return true
        }
        if counter > top {
            let shift = counter - top
            seen = shift >= Self.size ? 1 : (seen << shift) | 1
            highest = counter
            return true
        }
        let age = top - counter
        guard age < Self.size, seen & (1 << age) == 0 else { return false }
        seen |= 1 << age
        return true
    }
}
