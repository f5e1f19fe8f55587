public import FaultToleranceCore
import NIOCore

/// The messages of the heartbeat protocol, as ``FaultToleranceCore/Message`` types 0x0100-0x0102.
///
/// Heartbeat payload (big-endian, 12 bytes): version (1), sender state, sender priority,
/// paths on which the sender hears the receiver, sequence number (UInt64). The frame around it
/// carries the CRC32C. Witness query: the round's nonce (UInt64, random per round), the partner's name (length byte, UTF-8),
/// the time the asker waits for the vote in milliseconds (UInt32).
/// Witness vote: the nonce of the round it answers (UInt64), whether the witness reaches the partner (UInt8). Probe and
/// probe reply: nonce (UInt64).
public enum HeartbeatMessage: Sendable, Hashable {
    /// A heartbeat: the sender's state and how well it hears the receiver.
    case heartbeat(Heartbeat)
    /// A request to a witness: can you reach `partner`?
    case witnessQuery(roundNonce: UInt64, partner: NodeID, answerWithin: Duration)
    /// A witness's answer.
    case witnessVote(roundNonce: UInt64, partnerReachable: Bool)
    /// A witness asking a device whether it is alive.
    case probe(nonce: UInt64)
    /// The device's answer to a probe.
    case probeReply(nonce: UInt64)

    /// Message types used on the wire.
    public enum WireType {
        /// A heartbeat.
        public static let heartbeat: UInt16 = 0x0100
        /// A witness query.
        public static let witnessQuery: UInt16 = 0x0101
        /// A witness vote.
        public static let witnessVote: UInt16 = 0x0102
        /// A probe.
        public static let probe: UInt16 = 0x0103
        /// A probe reply.
        public static let probeReply: UInt16 = 0x0104
    }

    /// The wire version of the heartbeat payload.
    public static let version: UInt8 = 1

    /// Encodes the message.
    public var message: Message {
        var buffer = ByteBuffer()
        switch self {
        case .heartbeat(let heartbeat):
            buffer.writeMultipleIntegers(
                Self.version, heartbeat.state.rawValue, heartbeat.priority, heartbeat.pathsHearingReceiver,
                heartbeat.sequence)
            return Message(type: WireType.heartbeat, payload: buffer)
        case .witnessQuery(let round, let partner, let answerWithin):
            buffer.writeInteger(round)
            buffer.writeInteger(UInt8(truncatingIfNeeded: partner.name.utf8.count))
            buffer.writeString(partner.name)
            buffer.writeInteger(UInt32(clamping: max(answerWithin.nanoseconds, 0) / 1_000_000))
            return Message(type: WireType.witnessQuery, payload: buffer)
        case .probe(let nonce):
            buffer.writeInteger(nonce)
            return Message(type: WireType.probe, payload: buffer)
        case .probeReply(let nonce):
            buffer.writeInteger(nonce)
            return Message(type: WireType.probeReply, payload: buffer)
        case .witnessVote(let round, let reachable):
            buffer.writeMultipleIntegers(round, UInt8(reachable ? 1 : 0))
            return Message(type: WireType.witnessVote, payload: buffer)
        }
    }

    /// Decodes a message; throws ``FaultToleranceCore/FrameError`` for an unknown type, a
    /// bad length, an unknown version or state.
    public init(_ message: Message) throws(FrameError) {
        var payload = message.payload
        func malformed(_ detail: String) -> FrameError { FrameError(.malformedPayload, offset: 0, detail: detail) }
        switch message.type {
        case WireType.heartbeat:
            guard
                let (version, rawState, priority, hearing, sequence) = payload.readMultipleIntegers(
                    as: (UInt8, UInt8, UInt8, UInt8, UInt64).self), payload.readableBytes == 0
            else { throw malformed("heartbeat of \(message.payload.readableBytes) bytes") }
            guard version == Self.version else { throw malformed("heartbeat version \(version)") }
            guard let state = RedundancyState(rawValue: rawState) else { throw malformed("state \(rawState)") }
            self = .heartbeat(
                Heartbeat(state: state, priority: priority, pathsHearingReceiver: hearing, sequence: sequence))
        case WireType.witnessQuery:
            guard let round = payload.readInteger(as: UInt64.self), let length = payload.readInteger(as: UInt8.self),
                let name = payload.readString(length: Int(length)), let partner = NodeID(name),
                let milliseconds = payload.readInteger(as: UInt32.self), payload.readableBytes == 0
            else {
                throw malformed("witness query")
            }
            self = .witnessQuery(roundNonce: round, partner: partner, answerWithin: .milliseconds(milliseconds))
        case WireType.probe, WireType.probeReply:
            guard let nonce = payload.readInteger(as: UInt64.self), payload.readableBytes == 0 else {
                throw malformed("probe")
            }
            self = message.type == WireType.probe ? .probe(nonce: nonce) : .probeReply(nonce: nonce)
        case WireType.witnessVote:
            guard let (round, reachable) = payload.readMultipleIntegers(as: (UInt64, UInt8).self),
                payload.readableBytes == 0, reachable <= 1
            else { throw malformed("witness vote") }
            self = .witnessVote(roundNonce: round, partnerReachable: reachable == 1)
        default:
            throw malformed("not a heartbeat message type: \(message.type)")
        }
    }
}

/// One heartbeat as the receiver's evaluator sees it.
public struct Heartbeat: Sendable, Hashable {
    /// The sender's state.
    public var state: RedundancyState
    /// The sender's priority (the higher wins an election).
    public var priority: UInt8
    /// On how many paths the sender currently hears the receiver.
    public var pathsHearingReceiver: UInt8
    /// The sender's heartbeat counter.
    public var sequence: UInt64

    /// Creates a heartbeat.
    public init(state: RedundancyState, priority: UInt8, pathsHearingReceiver: UInt8, sequence: UInt64) {
        self.state = state
        self.priority = priority
        self.pathsHearingReceiver = pathsHearingReceiver
        self.sequence = sequence
    }
}
