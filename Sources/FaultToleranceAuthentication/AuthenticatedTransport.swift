public import Crypto
public import FaultToleranceCore
public import Metrics
import NIOConcurrencyHelpers
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A key shared by the nodes that may talk to each other, with the identifier that names it
/// on the wire (so keys can be rotated: the sender seals with one, receivers accept several).
public struct MessageKey: @unchecked Sendable {
    // unchecked: immutable after init; HMAC is a value type whose copies are independent.
    /// The key's identifier, carried in every sealed message.
    public let id: UInt32
    let key: SymmetricKey
    /// The MAC with the key already mixed in: each message starts from a copy of it (setting
    /// up the key cost as much as the rest of the MAC).
    let prepared: HMAC<SHA256>

    /// A key from at least 16 bytes of secret material (32 recommended).
    public init(id: UInt32, bytes: some Collection<UInt8>) throws(AuthenticationError) {
        guard bytes.count >= 16 else {
            throw AuthenticationError("key \(id) has \(bytes.count) bytes; at least 16 are needed (32 recommended)")
        }
        self.id = id
        self.key = SymmetricKey(data: Array(bytes))
        self.prepared = HMAC<SHA256>(key: key)
    }

    /// A key from exactly 32 bytes of secret material (cannot fail).
    public init(id: UInt32, bytes: SIMD32<UInt8>) {
        self.init(id: id, key: SymmetricKey(data: (0..<32).map { bytes[$0] }))
    }

    /// A new random 32-byte key.
    public static func random(id: UInt32) -> MessageKey {
        MessageKey(id: id, key: SymmetricKey(size: .bits256))
    }

    private init(id: UInt32, key: SymmetricKey) {
        self.id = id
        self.key = key
        self.prepared = HMAC<SHA256>(key: key)
    }
}

/// The keys of an ``AuthenticatedTransport``: one to seal with, and every key accepted
/// (the sealing key, plus old or new ones during a rotation's overlap).
public struct MessageKeys: Sendable {
    /// The key outgoing messages are sealed with.
    public var sealing: MessageKey
    /// Keys incoming messages may be sealed with, by identifier.
    public var accepted: [UInt32: MessageKey]

    /// Seals with `sealing`; accepts it and `alsoAccepting`.
    public init(sealing: MessageKey, alsoAccepting: [MessageKey] = []) {
        self.sealing = sealing
        var accepted: [UInt32: MessageKey] = [sealing.id: sealing]
        for key in alsoAccepting { accepted[key.id] = key }
        self.accepted = accepted
    }

    /// Reads keys from a text file of lines `ID HEX` (an identifier, then at least 32 hex
    /// digits; `#` starts a comment): the first key seals, every key is accepted. Keep the
    /// file readable by the service's user only.
    public static func load(contentsOf text: String) throws(AuthenticationError) -> MessageKeys {
        var keys: [MessageKey] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let content = line.split(separator: "#", maxSplits: 1, omittingEmptySubsequences: false).first ?? ""
            let fields = content.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if fields.isEmpty { continue }
            guard fields.count == 2, let id = UInt32(fields[0]), let bytes = Self.hex(fields[1]) else {
                throw AuthenticationError("line \(number + 1): expected `ID HEX`")
            }
            keys.append(try MessageKey(id: id, bytes: bytes))
        }
        guard let first = keys.first else { throw AuthenticationError("no key in the file") }
        return MessageKeys(sealing: first, alsoAccepting: Array(keys.dropFirst()))
    }

    private static func hex(_ text: Substring) -> [UInt8]? {
        let digits = Array(text.utf8)
        guard digits.count % 2 == 0 else { return nil }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(digits.count / 2)
        var index = 0
        while index < digits.count {
            guard let high = Self.nibble(digits[index]), let low = Self.nibble(digits[index + 1]) else { return nil }
            bytes.append(high << 4 | low)
            index += 2
        }
        return bytes
    }

    private static func nibble(_ digit: UInt8) -> UInt8? {
        switch digit {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): digit - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): digit - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): digit - UInt8(ascii: "A") + 10
        default: nil
        }
    }
}

/// A key or key file that cannot be used.
public struct AuthenticationError: Error, Sendable, Hashable, CustomStringConvertible {
    /// What is wrong.
    public var description: String

    /// Creates an error.
    public init(_ description: String) { self.description = description }
}

/// A ``FaultToleranceCore/Transport`` whose every message is authenticated: a keyed MAC
/// (HMAC-SHA-256, truncated to 128 bits) over the message, its sender's and receiver's names
/// and a per-sender counter, checked against a replay window — WireGuard's scheme, with
/// Corosync's shared cluster key. Wrap any transport (UDP heartbeats, a witness) with the
/// same keys on every node:
///
/// ```swift
/// let keys = try MessageKeys.load(contentsOf: String(contentsOfFile: "/etc/ft/heartbeat.keys"))
/// let transport = AuthenticatedTransport(try await UDPTransport.start(configuration: udp), keys: keys)
/// let service = HeartbeatService(configuration: configuration, partner: "B", transport: transport)
/// ```
///
/// Incoming messages that are not sealed, sealed with a key not accepted, whose MAC does not
/// verify (forged, or altered, or addressed to another node), or whose counter was seen
/// before or is older than the replay window (64 messages) are dropped and counted in
/// ``rejected`` and `ft_auth_messages_rejected_total{reason}`; they never reach the consumer.
///
/// A sender's counter starts at the wall clock in nanoseconds, so a restarted sender continues
/// above everything it sent before (unless its clock went back by more than its downtime:
/// then its messages are dropped as replays until the counter passes the old ones — the safe
/// side for a heartbeat). Sealed messages are 31 bytes longer. Message type 0x0F01 (the
/// authentication block, 0x0F00) carries them.
public final class AuthenticatedTransport: Transport, Sendable {
    /// The message type of a sealed message (``FaultToleranceCore/SealedMessage/messageType``).
    public static let sealedType: UInt16 = SealedMessage.messageType
    /// Bytes a seal adds to a message: version, key id, counter, inner type, tag.
    public static let overhead = SealedMessage.overhead
    static let tagLength = SealedMessage.tagLength
    /// Messages a receiver may see out of order (later counters first) and still accept.
    public static let replayWindow: UInt64 = ReplayWindow.size

    /// This node.
    public var localNode: NodeID { inner.localNode }

    /// `true`: every delivered message carried a valid seal from its sender's key.
    public var authenticatesSenders: Bool { true }
    /// Authenticated messages delivered to this node, unsealed.
    public let incoming: EnvelopeStream

    private let inner: any Transport
    private let opener: Opener
    private let counter: NIOLockedValueBox<UInt64>

    /// Wraps `inner`; messages are sealed with `keys.sealing` and accepted under any of
    /// `keys.accepted`. `counterStart` (the wall clock in nanoseconds by default) is where
    /// this sender's counter begins; a simulation passes a fixed one.
    public init(
        _ inner: any Transport, keys: MessageKeys, counterStart: UInt64? = nil,
        metricsFactory: (any MetricsFactory)? = nil
    ) {
        self.inner = inner
        let opener = Opener(
            localNode: inner.localNode, keys: keys, factory: metricsFactory ?? MetricsSystem.factory,
            base: inner.incoming.makeAsyncIterator())
        self.opener = opener
        self.counter = NIOLockedValueBox(counterStart ?? Self.wallClockNanoseconds())
        // Pulled by the consumer's own task, one message at a time: no task of its own, and the
        // inner transport's back-pressure still applies.
        incoming = EnvelopeStream(AsyncStream(unfolding: { await opener.next() }))
    }

    /// Messages dropped so far, by reason: `unsealed`, `malformed`, `unknown-key`, `bad-mac`,
    /// `replayed`.
    public var rejected: [String: Int] { opener.rejected }

    /// Seals `message` for `node` and sends it through the inner transport.
    public func send(_ message: Message, to node: NodeID, over path: PathID?) async throws(TransportError) {
        let count = counter.withLockedValue { counter in
            defer { counter &+= 1 }
            return counter
        }
        let sealed = Self.seal(message, from: inner.localNode, to: node, counter: count, key: opener.keys.sealing)
        try await inner.send(sealed, to: node, over: path)
    }

    /// Closes the inner transport.
    public func close() async { await inner.close() }

    /// The message inside `envelope` as delivered to `receiver`, if it is sealed under one of
    /// `keys` and its MAC verifies — without the replay check, which belongs to the receiving
    /// transport. For observers: a simulation's oracle, a capture tool.
    public static func authenticContent(of envelope: Envelope, at receiver: NodeID, keys: MessageKeys) -> Message? {
        guard case .success(let (opened, _)) = Opener.verify(envelope, at: receiver, keys: keys) else { return nil }
        return opened.message
    }

    /// The message inside a sealed `message`, unchecked (no MAC, no replay check), or `nil`
    /// if it is not a sealed message: for an observer that already knows which messages are
    /// genuine, such as a simulation that records what its attacker injected.
    public static func uncheckedContent(of message: Message) -> Message? {
        guard message.type == sealedType else { return nil }
        return SealedMessage(payload: message.payload)?.inner
    }

    /// The sealed form of `message` from `sender` to `receiver` under `keys.sealing`, with
    /// counter `counter` (what ``send(_:to:over:)`` sends; for tools and benchmarks).
    public static func seal(
        _ message: Message, from sender: NodeID, to receiver: NodeID, counter: UInt64, keys: MessageKeys
    ) -> Message {
        seal(message, from: sender, to: receiver, counter: counter, key: keys.sealing)
    }

    /// The sealed form of `message` from `sender` to `receiver`.
    static func seal(_ message: Message, from sender: NodeID, to receiver: NodeID, counter: UInt64, key: MessageKey)
        -> Message
    {
        var payload = ByteBuffer()
        payload.reserveCapacity(message.payload.readableBytes + overhead)
        payload.writeMultipleIntegers(SealedMessage.version, key.id, counter, message.type)
        var body = message.payload
        payload.writeBuffer(&body)
        let tag = mac(payload.readableBytesView, from: sender, to: receiver, key: key)
        payload.writeBytes(tag)
        return Message(type: sealedType, payload: payload)
    }

    /// The MAC of a sealed message's bytes before its tag, bound to both endpoints' names.
    static func mac(_ bytes: some Collection<UInt8>, from sender: NodeID, to receiver: NodeID, key: MessageKey)
        -> [UInt8]
    {
        // One contiguous input, one call: feeding HMAC piece by piece through its generic
        // `DataProtocol` updates cost more than the hash itself.
        var input: [UInt8] = []
        input.reserveCapacity(context.count + 2 + sender.name.utf8.count + receiver.name.utf8.count + bytes.count)
        input += context
        for name in [sender.name, receiver.name] {
            input.append(UInt8(truncatingIfNeeded: name.utf8.count))
            input += name.utf8
        }
        input += bytes
        var hmac = key.prepared
        input.withUnsafeBytes { hmac.update(data: $0) }
        return hmac.finalize().withUnsafeBytes { Array($0.prefix(tagLength)) }
    }

    private static let context = Array("ft-auth-v1".utf8)

    static func wallClockNanoseconds() -> UInt64 {
        var now = timespec()
        clock_gettime(CLOCK_REALTIME, &now)
        return UInt64(max(0, now.tv_sec)) &* 1_000_000_000 &+ UInt64(max(0, now.tv_nsec))
    }
}

/// Checks incoming messages: MAC, then the sender's replay window. Used only from the one
/// consumer's task (`AsyncStream(unfolding:)`), hence unchecked Sendable for the iterator.
final class Opener: @unchecked Sendable {
    let localNode: NodeID
    let keys: MessageKeys
    private var base: EnvelopeStream.Iterator
    private var windows: [NodeID: ReplayWindow] = [:]
    private let counts = NIOLockedValueBox<[String: Int]>([:])
    /// One counter per reason, made once (not one per rejected message).
    private let rejectedCounters: [Rejection: Counter]

    init(localNode: NodeID, keys: MessageKeys, factory: any MetricsFactory, base: EnvelopeStream.Iterator) {
        self.localNode = localNode
        self.keys = keys
        self.base = base
        rejectedCounters = Dictionary(
            uniqueKeysWithValues: Rejection.allCases.map { reason in
                (
                    reason,
                    Counter(
                        label: "ft_auth_messages_rejected_total", dimensions: [("reason", reason.rawValue)],
                        factory: factory)
                )
            })
    }

    var rejected: [String: Int] { counts.withLockedValue { $0 } }

    func next() async -> Envelope? {
        while let envelope = await base.next() {
            switch open(envelope) {
            case .success(let opened): return opened
            case .failure(let reason):
                counts.withLockedValue { $0[reason.rawValue, default: 0] += 1 }
                rejectedCounters[reason]?.increment()
            }
        }
        return nil
    }

    enum Rejection: String, Error, CaseIterable {
        case unsealed
        case malformed
        case unknownKey = "unknown-key"
        case badMAC = "bad-mac"
        case replayed
    }

    /// Verifies `envelope` and returns it unsealed, or says why not.
    func open(_ envelope: Envelope) -> Result<Envelope, Rejection> {
        switch Self.verify(envelope, at: localNode, keys: keys) {
        case .failure(let rejection): return .failure(rejection)
        case .success(let (opened, counter)):
            return accept(counter, from: envelope.from) ? .success(opened) : .failure(.replayed)
        }
    }

    /// The MAC check alone: the unsealed envelope and its counter, or why not.
    static func verify(_ envelope: Envelope, at localNode: NodeID, keys: MessageKeys) -> Result<
        (Envelope, UInt64), Rejection
    > {
        guard envelope.message.type == AuthenticatedTransport.sealedType else { return .failure(.unsealed) }
        let all = envelope.message.payload
        guard let sealed = SealedMessage(payload: all) else { return .failure(.malformed) }
        guard let key = keys.accepted[sealed.keyID] else { return .failure(.unknownKey) }
        // The tag covers the bytes as they arrived, sliced where they lie.
        let signedLength = all.readableBytes - SealedMessage.tagLength
        guard let signed = all.getSlice(at: all.readerIndex, length: signedLength) else { return .failure(.malformed) }
        let expected = AuthenticatedTransport.mac(
            signed.readableBytesView, from: envelope.from, to: localNode, key: key)
        // Constant time: a timing difference must not tell a forger how many bytes matched.
        var difference: UInt8 = 0
        for (a, b) in zip(sealed.tag, expected) { difference |= a ^ b }
        guard difference == 0 else { return .failure(.badMAC) }
        return .success(
            (Envelope(from: envelope.from, path: envelope.path, message: sealed.inner), sealed.counter))
    }

    /// Accepts `counter` from `sender` once: above the highest seen, or within the window
    /// below it and not seen yet.
    private func accept(_ counter: UInt64, from sender: NodeID) -> Bool {
        windows[sender, default: ReplayWindow()].accept(counter)
    }
}
