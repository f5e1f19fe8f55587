public import FaultToleranceCore
import NIOCore

/// What a pair keeps in etcd under its prefix, each value a framed, versioned and CRC32C-checked
/// record (types 0x0620–0x0623):
/// - `leader`: the primary, bound to its lease. Its create revision is the epoch.
/// - `sync`: the servers that hold every acknowledged operation (each with its incarnation), the
///   only ones that may take the leader key when it goes.
/// - `members/NAME`: each server's last report, bound to its own lease (so it goes when the
///   server stops renewing).
/// - `switchover`: an operator's request for a planned switchover to a backup, bound to a
///   lease of the operator's (so a request nobody could carry out goes by itself).
/// - `primary`: the last server to take the leader key, as the run (or journal) it took it as,
///   kept after its lease (type 0x0624).
public enum FailoverEtcdRecord: Sendable, Hashable {
    /// The primary: its name, its run, and the service address it serves on.
    case leader(node: NodeID, incarnation: UInt64, host: String, port: UInt16)
    /// The servers that may be promoted, with the run of each that holds everything.
    case sync([SyncMember])
    /// A server's last report.
    case member(node: NodeID, report: FailoverController.Report)
    /// An operator asks the primary to hand over to `target`.
    case switchover(target: NodeID)
    /// The last server to take the leader key, and the run (or journal) it took it as. It holds
    /// everything acknowledged until another takes the key, so it may take the key again even
    /// when the sync record no longer names a server that can (a journaled primary back from a
    /// power loss that also took its backup's disk).
    case primary(SyncMember)

    /// A server of the sync record: its name and which run of it holds everything (for a
    /// journaled server, which journal: ``EtcdControlPlane/journalRestored(identity:)``).
    public struct SyncMember: Sendable, Hashable, Comparable {
        /// The server.
        public var node: NodeID
        /// Its run (``FailoverController/Report/incarnation``), or its journal's identity.
        public var incarnation: UInt64

        /// A member.
        public init(node: NodeID, incarnation: UInt64) {
            self.node = node
            self.incarnation = incarnation
        }

        /// By name, then run.
        public static func < (left: SyncMember, right: SyncMember) -> Bool {
            (left.node.name, left.incarnation) < (right.node.name, right.incarnation)
        }
    }

    /// The record types.
    public enum RecordType {
        /// ``FailoverEtcdRecord/leader(node:incarnation:host:port:)``
        public static let leader: UInt16 = 0x0620
        /// ``FailoverEtcdRecord/sync(_:)``
        public static let sync: UInt16 = 0x0621
        /// ``FailoverEtcdRecord/member(node:report:)``
        public static let member: UInt16 = 0x0622
        /// ``FailoverEtcdRecord/switchover(target:)``
        public static let switchover: UInt16 = 0x0623
        /// ``FailoverEtcdRecord/primary(_:)``
        public static let primary: UInt16 = 0x0624
    }

    /// The most members a sync record holds.
    public static let maximumSyncMembers = 255

    /// The record's bytes: a frame around its fields.
    public func encoded() -> [UInt8] {
        var payload = ByteBuffer()
        let type: UInt16
        switch self {
        case .leader(let node, let incarnation, let host, let port):
            type = RecordType.leader
            writeShortString(node.name, into: &payload)
            payload.writeMultipleIntegers(incarnation, port, endianness: .little)
            writeShortString(host, into: &payload)
        case .sync(let members):
            type = RecordType.sync
            let kept = members.prefix(Self.maximumSyncMembers)
            payload.writeInteger(UInt8(kept.count))
            for member in kept {
                writeShortString(member.node.name, into: &payload)
                payload.writeInteger(member.incarnation, endianness: .little)
            }
        case .member(let node, let report):
            type = RecordType.member
            writeShortString(node.name, into: &payload)
            let message = FailoverMessage.report(report).encode()
            var body = message.payload
            payload.writeBuffer(&body)
        case .switchover(let target):
            type = RecordType.switchover
            writeShortString(target.name, into: &payload)
        case .primary(let member):
            type = RecordType.primary
            writeShortString(member.node.name, into: &payload)
            payload.writeInteger(member.incarnation, endianness: .little)
        }
        return Array(Frame(type: type, payload: payload).encoded().readableBytesView)
    }

    /// Decodes a record, throwing ``FailoverError/Code/malformed`` for anything but one whole,
    /// checked frame of a known type with valid fields.
    public static func decode(_ bytes: [UInt8]) throws(FailoverError) -> FailoverEtcdRecord {
        var buffer = ByteBuffer(bytes: bytes)
        var decoder = FrameDecoder(maximumPayloadLength: 64 << 10)
        let frame: Frame
        do {
            guard let whole = try decoder.next(from: &buffer), buffer.readableBytes == 0 else {
                throw FailoverError(.malformed, detail: "etcd record: not one whole frame")
            }
            frame = whole
        } catch let error as FailoverError {
            throw error
        } catch {
            throw FailoverError(.malformed, detail: "etcd record: \(error)")
        }
        var payload = frame.payload
        let record: FailoverEtcdRecord
        switch frame.type {
        case RecordType.leader:
            let node = try FailoverMessage.readNode(from: &payload)
            guard let (incarnation, port) = payload.readMultipleIntegers(endianness: .little, as: (UInt64, UInt16).self)
            else { throw FailoverError(.malformed, detail: "leader record truncated") }
            let host = try readShortString(from: &payload, what: "leader host")
            record = .leader(node: node, incarnation: incarnation, host: host, port: port)
        case RecordType.sync:
            guard let count = payload.readInteger(as: UInt8.self) else {
                throw FailoverError(.malformed, detail: "sync record truncated")
            }
            var members: [SyncMember] = []
            for _ in 0..<count {
                let node = try FailoverMessage.readNode(from: &payload)
                guard let incarnation = payload.readInteger(endianness: .little, as: UInt64.self) else {
                    throw FailoverError(.malformed, detail: "sync record truncated")
                }
                members.append(SyncMember(node: node, incarnation: incarnation))
            }
            record = .sync(members)
        case RecordType.member:
            let node = try FailoverMessage.readNode(from: &payload)
            let rest = payload.readSlice(length: payload.readableBytes) ?? ByteBuffer()
            guard
                case .report(let report) = try FailoverMessage.decode(
                    Message(type: FailoverMessage.MessageType.report, payload: rest))
            else {
                throw FailoverError(.malformed, detail: "member record without a report")
            }
            record = .member(node: node, report: report)
        case RecordType.switchover:
            record = .switchover(target: try FailoverMessage.readNode(from: &payload))
        case RecordType.primary:
            let node = try FailoverMessage.readNode(from: &payload)
            guard let incarnation = payload.readInteger(endianness: .little, as: UInt64.self) else {
                throw FailoverError(.malformed, detail: "primary record truncated")
            }
            record = .primary(SyncMember(node: node, incarnation: incarnation))
        default:
            throw FailoverError(.malformed, detail: "etcd record of unknown type 0x\(String(frame.type, radix: 16))")
        }
        guard payload.readableBytes == 0 else {
            throw FailoverError(.malformed, detail: "\(payload.readableBytes) bytes after the etcd record")
        }
        return record
    }
}
