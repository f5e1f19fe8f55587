public import FaultToleranceCore
public import NIOCore

/// A message of the Failover protocol (types 0x0600–0x06FF): replication between primary and
/// backups, the controller's commands and the servers' reports, and client requests.
///
/// Every message carries the sender's epoch where one applies; the frame around it carries the
/// CRC32C. Decoding checks every field and limit and throws ``FailoverError/Code/malformed``.
public enum FailoverMessage: Sendable, Hashable {
    /// The most entries in one ``replicate(epoch:previous:entries:)``.
    public static let maximumEntriesPerMessage = 4096

    /// Primary → backup: entries to apply, in order, following the entry at `previous` in the
    /// primary's log; a backup whose log does not hold `previous` (or holds other entries at
    /// those indexes) applies nothing and asks to catch up. Without entries, a beat: `previous`
    /// is the primary's position (0x0601).
    case replicate(epoch: UInt64, previous: LogPosition, entries: [ReplicationEntry])
    /// Backup → primary: the last entry applied (and made durable when the backup journals) (0x0602).
    case replicated(epoch: UInt64, position: LogPosition)
    /// Backup → primary: send what follows `after` (a gap, or a backup back from away) (0x0603).
    case catchUp(epoch: UInt64, after: LogPosition)
    /// Primary → backup: a piece of a snapshot; the backup replaces its state once `last` arrives (0x0604).
    case snapshot(epoch: UInt64, chunk: ByteBuffer, last: Bool)
    /// Server → controller: role, epoch, position, sync set (0x0605).
    case report(FailoverController.Report)
    /// Controller → primary: serve for `duration` from `stamp`, the primary's clock when it sent
    /// the report this answers (0x0606).
    /// `syncSet`: the backups the controller counts as holding every acknowledged operation.
    case renewLease(epoch: UInt64, duration: Duration, stamp: Int64, syncSet: [NodeID])
    /// Controller → server: stop serving; refuse anything older than `epoch` (0x0607).
    case stepDown(epoch: UInt64)
    /// Controller → backup: become primary of `epoch`, waiting for `syncSet` before
    /// acknowledging; refused by a server that holds less than `minimum` (it restarted) (0x0608).
    case promote(epoch: UInt64, syncSet: [NodeID], minimum: LogPosition)
    /// Controller → primary: stop waiting for `backup` (0x0609).
    case releaseBackup(epoch: UInt64, backup: NodeID)
    /// Client → primary: apply `operation` as `client`'s request `request`, seen at `epoch` (0x060A).
    case request(client: UInt64, request: UInt64, epoch: UInt64, operation: StoreOperation)
    /// Primary → client: the answer to a request (0x060B).
    case reply(client: UInt64, request: UInt64, epoch: UInt64, outcome: Outcome)
    /// Client → primary: read `key` (0x060C).
    case read(client: UInt64, request: UInt64, epoch: UInt64, key: StoreKey)
    /// Primary → client: a read's value (0x060D).
    case readReply(client: UInt64, request: UInt64, epoch: UInt64, value: [UInt8]?, error: RefusalCode?)
    /// Client → controller or server: who serves? (0x060E)
    case whoIsPrimary
    /// The answer: the primary, its epoch and the service address (0x060F).
    case primaryIs(node: NodeID?, epoch: UInt64, host: String, port: UInt16)
    /// Operator → control server: describe the pair (0x0610).
    case statusQuery
    /// Control server → operator: the pair as the controller sees it (0x0611).
    case status(FailoverStatus)
    /// Operator → control server: a planned switchover to `target`, or to the most up-to-date
    /// backup when `nil`: the primary steps down first, and the target is promoted once it holds
    /// everything the primary acknowledged (0x0612).
    case switchover(target: NodeID?)
    /// Control server → operator: the switchover began, towards `epoch`, or was refused and why
    /// (no primary serves, an unknown target) (0x0613).
    case switchoverAnswer(epoch: UInt64, refusal: String?)

    /// Why a server refused a request.
    public enum RefusalCode: UInt8, Sendable, Hashable {
        /// Not the primary (a backup, stepped down, or its lease lapsed).
        case notPrimary = 1
        /// The request's epoch is older than the server's.
        case staleEpoch = 2
        /// A request number lower than the client's last.
        case staleRequest = 3
        /// The operation breaks a limit.
        case tooLarge = 4
        /// Asynchronous replication lag beyond its bound.
        case lagExceeded = 5
        /// Malformed.
        case malformed = 6
    }

    /// A request's answer: its result, or why it was refused (with the server's epoch).
    public enum Outcome: Sendable, Hashable {
        /// Done.
        case done(OperationResult)
        /// Refused.
        case refused(RefusalCode, serverEpoch: UInt64)
    }

    /// The message types.
    public enum MessageType {
        /// ``FailoverMessage/replicate(epoch:previous:entries:)``
        public static let replicate: UInt16 = 0x0601
        /// ``FailoverMessage/replicated(epoch:position:)``
        public static let replicated: UInt16 = 0x0602
        /// ``FailoverMessage/catchUp(epoch:after:)``
        public static let catchUp: UInt16 = 0x0603
        /// ``FailoverMessage/snapshot(epoch:chunk:last:)``
        public static let snapshot: UInt16 = 0x0604
        /// ``FailoverMessage/report(_:)``
        public static let report: UInt16 = 0x0605
        /// ``FailoverMessage/renewLease(epoch:duration:stamp:syncSet:)``
        public static let renewLease: UInt16 = 0x0606
        /// ``FailoverMessage/stepDown(epoch:)``
        public static let stepDown: UInt16 = 0x0607
        /// ``FailoverMessage/promote(epoch:syncSet:minimum:)``
        public static let promote: UInt16 = 0x0608
        /// ``FailoverMessage/releaseBackup(epoch:backup:)``
        public static let releaseBackup: UInt16 = 0x0609
        /// ``FailoverMessage/request(client:request:epoch:operation:)``
        public static let request: UInt16 = 0x060A
        /// ``FailoverMessage/reply(client:request:epoch:outcome:)``
        public static let reply: UInt16 = 0x060B
        /// ``FailoverMessage/read(client:request:epoch:key:)``
        public static let read: UInt16 = 0x060C
        /// ``FailoverMessage/readReply(client:request:epoch:value:error:)``
        public static let readReply: UInt16 = 0x060D
        /// ``FailoverMessage/whoIsPrimary``
        public static let whoIsPrimary: UInt16 = 0x060E
        /// ``FailoverMessage/primaryIs(node:epoch:host:port:)``
        public static let primaryIs: UInt16 = 0x060F
        /// ``FailoverMessage/statusQuery``
        public static let statusQuery: UInt16 = 0x0610
        /// ``FailoverMessage/status(_:)``
        public static let status: UInt16 = 0x0611
        /// ``FailoverMessage/switchover(target:)``
        public static let switchover: UInt16 = 0x0612
        /// ``FailoverMessage/switchoverAnswer(epoch:refusal:)``
        public static let switchoverAnswer: UInt16 = 0x0613

        /// Whether `type` is one of this protocol's.
        public static func contains(_ type: UInt16) -> Bool { (0x0601...0x0613).contains(type) }
    }

    /// The message's encoding.
    public func encode() -> Message {
        var buffer = ByteBuffer()
        let type: UInt16
        switch self {
        case .replicate(let epoch, let previous, let entries):
            type = MessageType.replicate
            buffer.reserveCapacity(28 + entries.reduce(0) { $0 + $1.encodedSize })
            buffer.writeMultipleIntegers(
                epoch, previous.epoch, previous.index,
                UInt32(truncatingIfNeeded: min(entries.count, Self.maximumEntriesPerMessage)), endianness: .little)
            for entry in entries.prefix(Self.maximumEntriesPerMessage) { entry.encode(into: &buffer) }
        case .replicated(let epoch, let position):
            type = MessageType.replicated
            buffer.writeMultipleIntegers(epoch, position.epoch, position.index, endianness: .little)
        case .catchUp(let epoch, let after):
            type = MessageType.catchUp
            buffer.writeMultipleIntegers(epoch, after.epoch, after.index, endianness: .little)
        case .snapshot(let epoch, let chunk, let last):
            type = MessageType.snapshot
            buffer.writeMultipleIntegers(epoch, last ? UInt8(1) : 0, endianness: .little)
            var body = chunk
            buffer.writeBuffer(&body)
        case .report(let report):
            type = MessageType.report
            buffer.writeMultipleIntegers(
                report.role.rawValue, report.epoch, report.position.epoch, report.position.index, report.stamp,
                report.incarnation,
                UInt8(truncatingIfNeeded: min(report.syncSet.count, 255)), endianness: .little)
            for node in report.syncSet.prefix(255) { writeShortString(node.name, into: &buffer) }
        case .renewLease(let epoch, let duration, let stamp, let syncSet):
            type = MessageType.renewLease
            let nanoseconds =
                duration.components.seconds * 1_000_000_000 + duration.components.attoseconds / 1_000_000_000
            buffer.writeMultipleIntegers(epoch, UInt64(clamping: max(0, nanoseconds)), stamp, endianness: .little)
            Self.writeNodes(syncSet, into: &buffer)
        case .stepDown(let epoch):
            type = MessageType.stepDown
            buffer.writeInteger(epoch, endianness: .little)
        case .promote(let epoch, let syncSet, let minimum):
            type = MessageType.promote
            buffer.writeMultipleIntegers(epoch, minimum.epoch, minimum.index, endianness: .little)
            Self.writeNodes(syncSet, into: &buffer)
        case .releaseBackup(let epoch, let backup):
            type = MessageType.releaseBackup
            buffer.writeInteger(epoch, endianness: .little)
            writeShortString(backup.name, into: &buffer)
        case .request(let client, let request, let epoch, let operation):
            type = MessageType.request
            buffer.writeMultipleIntegers(client, request, epoch, endianness: .little)
            operation.encode(into: &buffer)
        case .reply(let client, let request, let epoch, let outcome):
            type = MessageType.reply
            buffer.writeMultipleIntegers(client, request, epoch, endianness: .little)
            switch outcome {
            case .done(.applied):
                buffer.writeInteger(UInt8(0))
            case .done(.compareFailed(let index)):
                buffer.writeInteger(UInt8(1))
                buffer.writeInteger(UInt32(truncatingIfNeeded: index), endianness: .little)
            case .refused(let code, let serverEpoch):
                buffer.writeMultipleIntegers(UInt8(2), code.rawValue, serverEpoch, endianness: .little)
            }
        case .read(let client, let request, let epoch, let key):
            type = MessageType.read
            buffer.writeMultipleIntegers(client, request, epoch, UInt16(key.bytes.count), endianness: .little)
            buffer.writeBytes(key.bytes)
        case .readReply(let client, let request, let epoch, let value, let error):
            type = MessageType.readReply
            buffer.writeMultipleIntegers(client, request, epoch, error?.rawValue ?? 0, endianness: .little)
            if let value {
                buffer.writeInteger(UInt8(1))
                buffer.writeInteger(UInt32(truncatingIfNeeded: value.count), endianness: .little)
                buffer.writeBytes(value)
            } else {
                buffer.writeInteger(UInt8(0))
            }
        case .whoIsPrimary:
            type = MessageType.whoIsPrimary
        case .primaryIs(let node, let epoch, let host, let port):
            type = MessageType.primaryIs
            buffer.writeMultipleIntegers(epoch, port, endianness: .little)
            writeShortString(node?.name ?? "", into: &buffer)
            writeShortString(host, into: &buffer)
        case .statusQuery:
            type = MessageType.statusQuery
        case .status(let status):
            type = MessageType.status
            status.encode(into: &buffer)
        case .switchover(let target):
            type = MessageType.switchover
            writeShortString(target?.name ?? "", into: &buffer)
        case .switchoverAnswer(let epoch, let refusal):
            type = MessageType.switchoverAnswer
            buffer.writeInteger(epoch, endianness: .little)
            writeShortString(refusal ?? "", into: &buffer)
        }
        return Message(type: type, payload: buffer)
    }

    /// Decodes a message, throwing ``FailoverError/Code/malformed`` for anything but a valid
    /// encoding (trailing bytes included).
    public static func decode(_ message: Message) throws(FailoverError) -> FailoverMessage {
        var buffer = message.payload
        let decoded: FailoverMessage
        switch message.type {
        case MessageType.replicate:
            guard
                let (epoch, previousEpoch, previousIndex, count) = buffer.readMultipleIntegers(
                    endianness: .little, as: (UInt64, UInt64, UInt64, UInt32).self),
                Int(count) <= maximumEntriesPerMessage, Int(count) * 34 <= buffer.readableBytes
            else { throw FailoverError(.malformed, detail: "replicate header invalid") }
            let previous = LogPosition(epoch: previousEpoch, index: previousIndex)
            var entries: [ReplicationEntry] = []
            entries.reserveCapacity(Int(count))
            for _ in 0..<count {
                let entry = try ReplicationEntry.decode(from: &buffer)
                let before = entries.last?.position ?? previous
                guard entry.position.index == before.index &+ 1, entry.position.epoch >= before.epoch else {
                    throw FailoverError(
                        .malformed, detail: "replicate entry \(entry.position) does not follow \(before)")
                }
                entries.append(entry)
            }
            decoded = .replicate(epoch: epoch, previous: previous, entries: entries)
        case MessageType.replicated, MessageType.catchUp:
            guard
                let (epoch, positionEpoch, index) = buffer.readMultipleIntegers(
                    endianness: .little, as: (UInt64, UInt64, UInt64).self)
            else { throw FailoverError(.malformed, detail: "position truncated") }
            let position = LogPosition(epoch: positionEpoch, index: index)
            decoded =
                message.type == MessageType.replicated
                ? .replicated(epoch: epoch, position: position) : .catchUp(epoch: epoch, after: position)
        case MessageType.snapshot:
            guard let (epoch, last) = buffer.readMultipleIntegers(endianness: .little, as: (UInt64, UInt8).self),
                last <= 1
            else { throw FailoverError(.malformed, detail: "snapshot header invalid") }
            decoded = .snapshot(epoch: epoch, chunk: buffer, last: last == 1)
            buffer.moveReaderIndex(to: buffer.writerIndex)
        case MessageType.report:
            guard
                let (roleByte, epoch, positionEpoch, index, stamp, incarnation, count) = buffer.readMultipleIntegers(
                    endianness: .little, as: (UInt8, UInt64, UInt64, UInt64, Int64, UInt64, UInt8).self),
                let role = ServiceConfiguration.Role(rawValue: roleByte)
            else { throw FailoverError(.malformed, detail: "report header invalid") }
            var syncSet: [NodeID] = []
            for _ in 0..<count { syncSet.append(try readNode(from: &buffer)) }
            decoded = .report(
                .init(
                    role: role, epoch: epoch, position: LogPosition(epoch: positionEpoch, index: index),
                    syncSet: syncSet, stamp: stamp, incarnation: incarnation))
        case MessageType.renewLease:
            guard
                let (epoch, nanoseconds, stamp) = buffer.readMultipleIntegers(
                    endianness: .little, as: (UInt64, UInt64, Int64).self),
                nanoseconds <= 3_600_000_000_000
            else { throw FailoverError(.malformed, detail: "lease invalid (at most an hour)") }
            decoded = .renewLease(
                epoch: epoch, duration: .nanoseconds(Int64(nanoseconds)), stamp: stamp,
                syncSet: try readNodes(from: &buffer))
        case MessageType.promote:
            guard
                let (epoch, minimumEpoch, minimumIndex) = buffer.readMultipleIntegers(
                    endianness: .little, as: (UInt64, UInt64, UInt64).self)
            else { throw FailoverError(.malformed, detail: "promote header truncated") }
            decoded = .promote(
                epoch: epoch, syncSet: try readNodes(from: &buffer),
                minimum: LogPosition(epoch: minimumEpoch, index: minimumIndex))
        case MessageType.stepDown:
            guard let epoch = buffer.readInteger(endianness: .little, as: UInt64.self) else {
                throw FailoverError(.malformed, detail: "epoch truncated")
            }
            decoded = .stepDown(epoch: epoch)
        case MessageType.releaseBackup:
            guard let epoch = buffer.readInteger(endianness: .little, as: UInt64.self) else {
                throw FailoverError(.malformed, detail: "epoch truncated")
            }
            decoded = .releaseBackup(epoch: epoch, backup: try readNode(from: &buffer))
        case MessageType.request:
            guard
                let (client, request, epoch) = buffer.readMultipleIntegers(
                    endianness: .little, as: (UInt64, UInt64, UInt64).self)
            else { throw FailoverError(.malformed, detail: "request header truncated") }
            let operation = try StoreOperation.decode(from: &buffer, nested: false)
            decoded = .request(client: client, request: request, epoch: epoch, operation: operation)
        case MessageType.reply:
            guard
                let (client, request, epoch, kind) = buffer.readMultipleIntegers(
                    endianness: .little, as: (UInt64, UInt64, UInt64, UInt8).self)
            else { throw FailoverError(.malformed, detail: "reply header truncated") }
            let outcome: Outcome
            switch kind {
            case 0:
                outcome = .done(.applied)
            case 1:
                guard let index = buffer.readInteger(endianness: .little, as: UInt32.self),
                    Int(index) < StoreOperation.maximumBatchCount
                else { throw FailoverError(.malformed, detail: "reply index invalid") }
                outcome = .done(.compareFailed(index: Int(index)))
            case 2:
                guard
                    let (code, serverEpoch) = buffer.readMultipleIntegers(
                        endianness: .little, as: (UInt8, UInt64).self),
                    let refusal = RefusalCode(rawValue: code)
                else { throw FailoverError(.malformed, detail: "reply refusal invalid") }
                outcome = .refused(refusal, serverEpoch: serverEpoch)
            default:
                throw FailoverError(.malformed, detail: "reply kind \(kind)")
            }
            decoded = .reply(client: client, request: request, epoch: epoch, outcome: outcome)
        case MessageType.read:
            guard
                let (client, request, epoch) = buffer.readMultipleIntegers(
                    endianness: .little, as: (UInt64, UInt64, UInt64).self)
            else { throw FailoverError(.malformed, detail: "read header truncated") }
            decoded = .read(
                client: client, request: request, epoch: epoch, key: try StoreOperation.readKey(from: &buffer))
        case MessageType.readReply:
            guard
                let (client, request, epoch, code, present) = buffer.readMultipleIntegers(
                    endianness: .little, as: (UInt64, UInt64, UInt64, UInt8, UInt8).self),
                present <= 1
            else { throw FailoverError(.malformed, detail: "read reply header invalid") }
            let error: RefusalCode?
            if code == 0 {
                error = nil
            } else {
                guard let refusal = RefusalCode(rawValue: code) else {
                    throw FailoverError(.malformed, detail: "read reply code \(code)")
                }
                error = refusal
            }
            let value = present == 1 ? try StoreOperation.readValue(from: &buffer) : nil
            decoded = .readReply(client: client, request: request, epoch: epoch, value: value, error: error)
        case MessageType.whoIsPrimary:
            decoded = .whoIsPrimary
        case MessageType.primaryIs:
            guard let (epoch, port) = buffer.readMultipleIntegers(endianness: .little, as: (UInt64, UInt16).self) else {
                throw FailoverError(.malformed, detail: "primary header truncated")
            }
            let name = try readShortString(from: &buffer, what: "primary name")
            let host = try readShortString(from: &buffer, what: "service host")
            let node: NodeID?
            if name.isEmpty {
                node = nil
            } else {
                guard let parsed = NodeID(name) else { throw FailoverError(.malformed, detail: "primary name invalid") }
                node = parsed
            }
            decoded = .primaryIs(node: node, epoch: epoch, host: host, port: port)
        case MessageType.statusQuery:
            decoded = .statusQuery
        case MessageType.status:
            decoded = .status(try FailoverStatus.decode(from: &buffer))
        case MessageType.switchover:
            let name = try readShortString(from: &buffer, what: "switchover target")
            if name.isEmpty {
                decoded = .switchover(target: nil)
            } else {
                guard let target = NodeID(name) else {
                    throw FailoverError(.malformed, detail: "switchover target invalid")
                }
                decoded = .switchover(target: target)
            }
        case MessageType.switchoverAnswer:
            guard let epoch = buffer.readInteger(endianness: .little, as: UInt64.self) else {
                throw FailoverError(.malformed, detail: "switchover answer truncated")
            }
            let refusal = try readShortString(from: &buffer, what: "switchover refusal")
            decoded = .switchoverAnswer(epoch: epoch, refusal: refusal.isEmpty ? nil : refusal)
        default:
            throw FailoverError(
                .malformed, detail: "message type 0x\(String(message.type, radix: 16)) is not Failover's")
        }
        guard buffer.readableBytes == 0 else {
            throw FailoverError(.malformed, detail: "\(buffer.readableBytes) bytes after the message")
        }
        return decoded
    }

    static func writeNodes(_ nodes: [NodeID], into buffer: inout ByteBuffer) {
        buffer.writeInteger(UInt8(truncatingIfNeeded: min(nodes.count, 255)))
        for node in nodes.prefix(255) { writeShortString(node.name, into: &buffer) }
    }

    static func readNodes(from buffer: inout ByteBuffer) throws(FailoverError) -> [NodeID] {
        guard let count = buffer.readInteger(as: UInt8.self) else {
            throw FailoverError(.malformed, detail: "server list truncated")
        }
        var nodes: [NodeID] = []
        for _ in 0..<count { nodes.append(try readNode(from: &buffer)) }
        return nodes
    }

    static func readNode(from buffer: inout ByteBuffer) throws(FailoverError) -> NodeID {
        guard let node = NodeID(try readShortString(from: &buffer, what: "server name")) else {
            throw FailoverError(.malformed, detail: "server name invalid")
        }
        return node
    }
}
