public import FaultToleranceCore
public import NIOCore

/// An out-of-band signal's kind. Signals travel hop by hop, separately from data traffic.
public enum SignalKind: UInt8, Sendable, Hashable, CaseIterable, CustomStringConvertible {
    /// Clear the subject's error counters and bring its drive back to ready.
    case reset = 1
    /// A link came up (the subject was linked into the chain).
    case linkUp = 2
    /// A link went down (the subject was cut out of the chain).
    case linkDown = 3
    /// A drive was plugged into the subject.
    case hotPlug = 4
    /// The subject's drive is ready.
    case driveReady = 5
    /// The subject's drive reported a fault.
    case driveFault = 6
    /// The subject's drive was unplugged.
    case driveRemoved = 7
    /// The subject's drive changed capacity.
    case capacityChange = 8
    /// Every element answers the origin with its registers.
    case identify = 9

    /// The value as people read it.
    public var description: String {
        switch self {
        case .reset: "reset"
        case .linkUp: "link-up"
        case .linkDown: "link-down"
        case .hotPlug: "hot-plug"
        case .driveReady: "drive-ready"
        case .driveFault: "drive-fault"
        case .driveRemoved: "drive-removed"
        case .capacityChange: "capacity-change"
        case .identify: "identify"
        }
    }
}

/// Which way along the chain a signal travels.
public struct SignalDirection: OptionSet, Sendable, Hashable {
    /// The bits.
    public let rawValue: UInt8
    /// Creates directions from bits.
    public init(rawValue: UInt8) { self.rawValue = rawValue }
    /// Towards the head.
    public static let up = SignalDirection(rawValue: 1)
    /// Towards the tail.
    public static let down = SignalDirection(rawValue: 2)
    /// Both ways.
    public static let both: SignalDirection = [.up, .down]
}

/// An out-of-band signal: what happened, to which element, who raised it, which way it goes,
/// and the sender's chain state register after applying it.
public struct ChainSignal: Sendable, Hashable {
    /// What happened.
    public var kind: SignalKind
    /// The element it happened to.
    public var subject: NodeID
    /// The element that raised it.
    public var origin: NodeID
    /// Which way it travels from here.
    public var direction: SignalDirection
    /// Hops travelled so far (a signal is dropped after ``ChainRegister/maximumElements`` hops).
    public var hops: UInt8
    /// The sender's register, after it applied the signal.
    public var register: ChainRegister

    /// Creates a signal.
    public init(
        kind: SignalKind, subject: NodeID, origin: NodeID, direction: SignalDirection, hops: UInt8 = 0,
        register: ChainRegister
    ) {
        self.kind = kind
        self.subject = subject
        self.origin = origin
        self.direction = direction
        self.hops = hops
        self.register = register
    }
}

/// What an entry of an ordered link stream carries.
public enum LinkPayload: Sendable, Hashable {
    /// A host write: its version, where, and the bytes (empty with `sync`: a durability barrier).
    case write(hostEpoch: UInt64, version: UInt64, offset: UInt64, sync: Bool, data: ByteBuffer)
    /// Catch-up starts: the receiver's applied version becomes `asOf` once the fills that follow are in.
    case catchUpBegin(asOf: UInt64, byFingerprint: Bool)
    /// A block range's current content from the sender, during catch-up.
    case fill(offset: UInt64, data: ByteBuffer)
    /// Catch-up is complete: the receiver holds everything through its applied version and is
    /// now linked as the tail in `register` (the sender's membership that links it).
    case catchUpEnd(ChainRegister)
}

/// How a read was answered.
public enum ReadStatus: UInt8, Sendable, Hashable {
    /// The bytes follow.
    case ok = 0
    /// A block of the range has a write not yet committed here: ask another element.
    case dirty = 1
    /// This element is not serving reads (catching up, cut out, failed).
    case notReady = 2
    /// The range is outside this element's drive.
    case outOfRange = 3
    /// The drive failed the read.
    case driveFault = 4
}

/// A message of the DaisyChain protocol (types 0x0500–0x05FF).
///
/// Every message is versioned by its type, bounded, and decoded with typed errors; the frame
/// around it carries the CRC32C.
public enum ChainMessage: Sendable, Hashable {
    /// An out-of-band signal (0x0501).
    case signal(ChainSignal)
    /// A register exchange (0x0502): the sender's register, its applied version and drive state;
    /// `reply` asks the receiver to answer with its own.
    case registers(ChainRegister, applied: UInt64, reply: Bool)
    /// A heartbeat to a neighbour (0x0503), with the digest of the sender's register.
    case heartbeat(digest: UInt64, epoch: UInt64)
    /// An entry of the ordered stream from `from` on link `link` (0x0510).
    case entry(link: UInt64, sequence: UInt64, LinkPayload)
    /// The receiver has applied the link's entries through `sequence` (0x0511).
    case linkAck(link: UInt64, sequence: UInt64)
    /// The receiver does not take entries on `link` (it restarted, or the link is older than the
    /// one it expects): start again on link `next`, which the receiver chose (0x0512). A stale
    /// entry delayed in the network can never open a link, since only the receiver names links.
    case linkReset(link: UInt64, next: UInt64)
    /// The tail has applied every write through `version` (0x0513).
    case committed(version: UInt64)
    /// A host read (0x0514) of `count` bytes at `offset` of the receiver's drive (span) or the
    /// volume (mirror), answered only by an element that has applied every write through `atLeast`
    /// (the host's last commit) and holds no uncommitted write in the range.
    case read(request: UInt64, offset: UInt64, count: UInt32, atLeast: UInt64)
    /// The answer to a read (0x0515).
    case readReply(request: UInt64, status: ReadStatus, data: ByteBuffer)
    /// An element out of the chain asks to be linked again (0x0516), with its drive register.
    case join(DriveRegister, applied: UInt64)
    /// A host announces itself (0x0517), with where it listens (`HOST:PORT`, or empty): elements
    /// answer with ``registers(_:applied:reply:)`` and stop taking writes of older host epochs.
    case hello(hostEpoch: UInt64, address: String)
    /// A block-fingerprint page of a rejoining element's drive (0x0518): CRC32C per block from `firstBlock`.
    case fingerprints(firstBlock: UInt64, blocks: [UInt32], last: Bool)
    /// An operator's request for an element's registers and counters (0x0519).
    case statusRequest
    /// The answer (0x051A): the element's status as text lines, for `ftctl chain status`.
    case statusReply(String)
    /// An operator's signal (0x051B): the receiver raises `kind` about itself.
    case operatorSignal(SignalKind)

    /// The message types, in the 0x0500 block.
    public enum MessageType {
        /// An out-of-band signal.
        public static let signal: UInt16 = 0x0501
        /// A register exchange.
        public static let registers: UInt16 = 0x0502
        /// A heartbeat.
        public static let heartbeat: UInt16 = 0x0503
        /// A link entry.
        public static let entry: UInt16 = 0x0510
        /// A link acknowledgement.
        public static let linkAck: UInt16 = 0x0511
        /// A link reset.
        public static let linkReset: UInt16 = 0x0512
        /// A commit.
        public static let committed: UInt16 = 0x0513
        /// A host read.
        public static let read: UInt16 = 0x0514
        /// A read's answer.
        public static let readReply: UInt16 = 0x0515
        /// A rejoin request.
        public static let join: UInt16 = 0x0516
        /// A host's greeting.
        public static let hello: UInt16 = 0x0517
        /// A fingerprint page.
        public static let fingerprints: UInt16 = 0x0518
        /// A status request.
        public static let statusRequest: UInt16 = 0x0519
        /// A status answer.
        public static let statusReply: UInt16 = 0x051A
        /// An operator's signal.
        public static let operatorSignal: UInt16 = 0x051B

        /// Whether `type` belongs to this protocol.
        public static func contains(_ type: UInt16) -> Bool { type & 0xFF00 == 0x0500 }
    }

    /// Most bytes of data one entry, fill or read carries (4 MiB).
    public static let maximumData = 4 << 20
    /// Most fingerprints in one page.
    public static let maximumFingerprints = 65_536

    /// Encodes the message.
    public func encode() -> Message { encode(splitting: false).message }

    /// Encodes the message in two parts for `Transport.send(_:appending:to:)`: a message that
    /// carries data (a write, a fill, a read's answer) as everything before the data, and the
    /// data, which a TCP transport sends where it lies; any other message whole, and `nil`.
    /// The receiver sees what ``encode()`` gives.
    public func encodeParts() -> (message: Message, data: ByteBuffer?) { encode(splitting: true) }

    private func encode(splitting: Bool) -> (message: Message, data: ByteBuffer?) {
        var buffer = ByteBuffer()
        let type: UInt16
        switch self {
        case .signal(let signal):
            type = MessageType.signal
            buffer.writeMultipleIntegers(signal.kind.rawValue, signal.direction.rawValue, signal.hops)
            writeName(signal.subject, into: &buffer)
            writeName(signal.origin, into: &buffer)
            signal.register.encode(into: &buffer)
        case .registers(let register, let applied, let reply):
            type = MessageType.registers
            buffer.writeMultipleIntegers(applied, reply ? UInt8(1) : 0, endianness: .little)
            register.encode(into: &buffer)
        case .heartbeat(let digest, let epoch):
            type = MessageType.heartbeat
            buffer.writeMultipleIntegers(digest, epoch, endianness: .little)
        case .entry(let link, let sequence, let payload):
            type = MessageType.entry
            buffer.writeMultipleIntegers(link, sequence, endianness: .little)
            switch payload {
            case .write(let hostEpoch, let version, let offset, let sync, let data):
                buffer.reserveCapacity(minimumWritableBytes: 42 + data.readableBytes)
                buffer.writeMultipleIntegers(
                    UInt8(1), hostEpoch, version, offset, sync ? UInt8(1) : 0, endianness: .little)
                return Self.message(type: MessageType.entry, header: buffer, data: data, splitting: splitting)
            case .catchUpBegin(let asOf, let byFingerprint):
                buffer.writeMultipleIntegers(UInt8(2), asOf, byFingerprint ? UInt8(1) : 0, endianness: .little)
            case .fill(let offset, let data):
                buffer.reserveCapacity(minimumWritableBytes: 25 + data.readableBytes)
                buffer.writeMultipleIntegers(UInt8(3), offset, endianness: .little)
                return Self.message(type: MessageType.entry, header: buffer, data: data, splitting: splitting)
            case .catchUpEnd(let register):
                buffer.writeInteger(UInt8(4))
                register.encode(into: &buffer)
            }
        case .linkAck(let link, let sequence):
            type = MessageType.linkAck
            buffer.writeMultipleIntegers(link, sequence, endianness: .little)
        case .linkReset(let link, let next):
            type = MessageType.linkReset
            buffer.writeMultipleIntegers(link, next, endianness: .little)
        case .committed(let version):
            type = MessageType.committed
            buffer.writeInteger(version, endianness: .little)
        case .read(let request, let offset, let count, let atLeast):
            type = MessageType.read
            buffer.writeMultipleIntegers(request, offset, count, atLeast, endianness: .little)
        case .readReply(let request, let status, let data):
            buffer.reserveCapacity(minimumWritableBytes: 9 + data.readableBytes)
            buffer.writeMultipleIntegers(request, status.rawValue, endianness: .little)
            return Self.message(type: MessageType.readReply, header: buffer, data: data, splitting: splitting)
        case .join(let drive, let applied):
            type = MessageType.join
            buffer.writeInteger(applied, endianness: .little)
            drive.encode(into: &buffer)
        case .hello(let hostEpoch, let address):
            type = MessageType.hello
            buffer.writeInteger(hostEpoch, endianness: .little)
            // At most 255 bytes, cut at a character boundary.
            var cut = address
            while cut.utf8.count > 255 { cut.removeLast() }
            buffer.writeString(cut)
        case .fingerprints(let firstBlock, let blocks, let last):
            type = MessageType.fingerprints
            buffer.writeMultipleIntegers(
                firstBlock, UInt32(truncatingIfNeeded: blocks.count), last ? UInt8(1) : 0, endianness: .little)
            for block in blocks { buffer.writeInteger(block, endianness: .little) }
        case .statusRequest:
            type = MessageType.statusRequest
        case .statusReply(let text):
            type = MessageType.statusReply
            buffer.writeString(text)
        case .operatorSignal(let kind):
            type = MessageType.operatorSignal
            buffer.writeInteger(kind.rawValue)
        }
        return (Message(type: type, payload: buffer), nil)
    }

    /// `header` and `data` apart (`splitting`), or one message of `header` followed by `data`,
    /// whose bytes are copied and checksummed in one pass: the transport joins the checksum to
    /// its frame's instead of reading the data again.
    private static func message(
        type: UInt16, header: ByteBuffer, data: ByteBuffer, splitting: Bool
    ) -> (message: Message, data: ByteBuffer?) {
        if splitting { return (Message(type: type, payload: header), data) }
        var buffer = header
        var checksum = CRC32C()
        buffer.withUnsafeReadableBytes { checksum.update($0) }
        let count = data.readableBytes
        buffer.reserveCapacity(minimumWritableBytes: count)
        data.withUnsafeReadableBytes { source in
            _ = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: count) { destination in
                if let base = destination.baseAddress { checksum.update(copying: source, to: base) }
                return count
            }
        }
        return (Message(type: type, payload: buffer, payloadChecksum: checksum.value), nil)
    }

    /// Decodes a message, throwing ``ChainError/Code/malformed`` for anything but a valid encoding.
    public static func decode(_ message: Message) throws(ChainError) -> ChainMessage {
        var buffer = message.payload
        let decoded: ChainMessage
        switch message.type {
        case MessageType.signal:
            guard let (kindByte, directionByte, hops) = buffer.readMultipleIntegers(as: (UInt8, UInt8, UInt8).self),
                let kind = SignalKind(rawValue: kindByte), directionByte <= 3
            else { throw ChainError(.malformed, detail: "signal header invalid") }
            let subject = try readName(from: &buffer)
            let origin = try readName(from: &buffer)
            let register = try ChainRegister.decode(from: &buffer)
            decoded = .signal(
                ChainSignal(
                    kind: kind, subject: subject, origin: origin,
                    direction: SignalDirection(rawValue: directionByte), hops: hops, register: register))
        case MessageType.registers:
            guard let (applied, reply) = buffer.readMultipleIntegers(endianness: .little, as: (UInt64, UInt8).self),
                reply <= 1
            else { throw ChainError(.malformed, detail: "registers header invalid") }
            decoded = .registers(try ChainRegister.decode(from: &buffer), applied: applied, reply: reply == 1)
        case MessageType.heartbeat:
            guard let (digest, epoch) = buffer.readMultipleIntegers(endianness: .little, as: (UInt64, UInt64).self)
            else { throw ChainError(.malformed, detail: "heartbeat truncated") }
            decoded = .heartbeat(digest: digest, epoch: epoch)
        case MessageType.entry:
            guard
                let (link, sequence, kind) = buffer.readMultipleIntegers(
                    endianness: .little, as: (UInt64, UInt64, UInt8).self)
            else { throw ChainError(.malformed, detail: "entry header truncated") }
            let payload: LinkPayload
            switch kind {
            case 1:
                guard
                    let (hostEpoch, version, offset, sync) = buffer.readMultipleIntegers(
                        endianness: .little, as: (UInt64, UInt64, UInt64, UInt8).self), sync <= 1,
                    offset <= UInt64(Int.max / 2)
                else { throw ChainError(.malformed, detail: "write entry header invalid") }
                guard buffer.readableBytes <= maximumData else {
                    throw ChainError(
                        .malformed, detail: "write of \(buffer.readableBytes) bytes exceeds \(maximumData)")
                }
                payload = .write(hostEpoch: hostEpoch, version: version, offset: offset, sync: sync == 1, data: buffer)
                buffer.moveReaderIndex(to: buffer.writerIndex)
            case 2:
                guard
                    let (asOf, byFingerprint) = buffer.readMultipleIntegers(
                        endianness: .little, as: (UInt64, UInt8).self), byFingerprint <= 1
                else { throw ChainError(.malformed, detail: "catch-up entry invalid") }
                payload = .catchUpBegin(asOf: asOf, byFingerprint: byFingerprint == 1)
            case 3:
                guard let offset = buffer.readInteger(endianness: .little, as: UInt64.self),
                    offset <= UInt64(Int.max / 2), buffer.readableBytes <= maximumData
                else { throw ChainError(.malformed, detail: "fill entry invalid") }
                payload = .fill(offset: offset, data: buffer)
                buffer.moveReaderIndex(to: buffer.writerIndex)
            case 4:
                payload = .catchUpEnd(try ChainRegister.decode(from: &buffer))
            default:
                throw ChainError(.malformed, detail: "entry kind \(kind) unknown")
            }
            decoded = .entry(link: link, sequence: sequence, payload)
        case MessageType.linkAck:
            guard let (link, sequence) = buffer.readMultipleIntegers(endianness: .little, as: (UInt64, UInt64).self)
            else { throw ChainError(.malformed, detail: "link ack truncated") }
            decoded = .linkAck(link: link, sequence: sequence)
        case MessageType.linkReset:
            guard let (link, next) = buffer.readMultipleIntegers(endianness: .little, as: (UInt64, UInt64).self) else {
                throw ChainError(.malformed, detail: "link reset truncated")
            }
            decoded = .linkReset(link: link, next: next)
        case MessageType.committed:
            guard let version = buffer.readInteger(endianness: .little, as: UInt64.self) else {
                throw ChainError(.malformed, detail: "commit truncated")
            }
            decoded = .committed(version: version)
        case MessageType.read:
            guard
                let (request, offset, count, atLeast) = buffer.readMultipleIntegers(
                    endianness: .little, as: (UInt64, UInt64, UInt32, UInt64).self),
                Int(count) <= maximumData, offset <= UInt64(Int.max / 2)
            else { throw ChainError(.malformed, detail: "read request invalid") }
            decoded = .read(request: request, offset: offset, count: count, atLeast: atLeast)
        case MessageType.readReply:
            guard
                let (request, statusByte) = buffer.readMultipleIntegers(endianness: .little, as: (UInt64, UInt8).self),
                let status = ReadStatus(rawValue: statusByte), buffer.readableBytes <= maximumData
            else { throw ChainError(.malformed, detail: "read reply invalid") }
            decoded = .readReply(request: request, status: status, data: buffer)
            buffer.moveReaderIndex(to: buffer.writerIndex)
        case MessageType.join:
            guard let applied = buffer.readInteger(endianness: .little, as: UInt64.self) else {
                throw ChainError(.malformed, detail: "join truncated")
            }
            decoded = .join(try DriveRegister.decode(from: &buffer), applied: applied)
        case MessageType.hello:
            guard let epoch = buffer.readInteger(endianness: .little, as: UInt64.self), buffer.readableBytes <= 255,
                let raw = buffer.readBytes(length: buffer.readableBytes),
                let address = String(validating: raw, as: UTF8.self)
            else {
                throw ChainError(.malformed, detail: "hello invalid")
            }
            decoded = .hello(hostEpoch: epoch, address: address)
        case MessageType.fingerprints:
            guard
                let (firstBlock, count, last) = buffer.readMultipleIntegers(
                    endianness: .little, as: (UInt64, UInt32, UInt8).self), last <= 1,
                Int(count) <= maximumFingerprints, buffer.readableBytes == Int(count) * 4,
                firstBlock <= UInt64(Int.max / 8)
            else { throw ChainError(.malformed, detail: "fingerprint page invalid") }
            var blocks: [UInt32] = []
            blocks.reserveCapacity(Int(count))
            for _ in 0..<count {
                guard let value = buffer.readInteger(endianness: .little, as: UInt32.self) else {
                    throw ChainError(.malformed, detail: "fingerprint page truncated")
                }
                blocks.append(value)
            }
            decoded = .fingerprints(firstBlock: firstBlock, blocks: blocks, last: last == 1)
        case MessageType.statusRequest:
            decoded = .statusRequest
        case MessageType.statusReply:
            guard buffer.readableBytes <= 1 << 20, let raw = buffer.readBytes(length: buffer.readableBytes),
                let text = String(validating: raw, as: UTF8.self)
            else {
                throw ChainError(.malformed, detail: "status reply invalid")
            }
            decoded = .statusReply(text)
        case MessageType.operatorSignal:
            guard let byte = buffer.readInteger(as: UInt8.self), let kind = SignalKind(rawValue: byte) else {
                throw ChainError(.malformed, detail: "operator signal invalid")
            }
            decoded = .operatorSignal(kind)
        default:
            throw ChainError(.malformed, detail: "message type \(message.type) is not DaisyChain's")
        }
        guard buffer.readableBytes == 0 else {
            throw ChainError(.malformed, detail: "\(buffer.readableBytes) bytes after the message")
        }
        return decoded
    }
}
