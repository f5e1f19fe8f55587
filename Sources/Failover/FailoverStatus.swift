public import FaultToleranceCore
import NIOCore

/// What the control server knows of the pair: the epoch, who serves or what a failover waits
/// for, and each server's last report. `ftctl failover status` prints it; an operator's
/// ``FailoverClient/status()`` asks for it.
public struct FailoverStatus: Sendable, Hashable, CustomStringConvertible {
    /// The newest epoch handed out.
    public var epoch: UInt64
    /// The server serving in ``epoch``, if one is.
    public var primary: NodeID?
    /// Whether a failover (or a planned switchover) is under way.
    public var failingOver: Bool
    /// The server a failover or switchover moves away from, while one is under way.
    public var failingOverFrom: NodeID?
    /// Why a promotion is held back, while one is.
    public var waitingReason: String?
    /// The backups the controller counts as holding every acknowledged operation.
    public var syncSet: [NodeID]
    /// Each server of the pair, in configuration order.
    public var servers: [Server]

    /// One server as the control server sees it.
    public struct Server: Sendable, Hashable {
        /// The server.
        public var node: NodeID
        /// Whether its reports still arrive.
        public var alive: Bool
        /// Its last report, if one arrived.
        public var report: FailoverController.Report?

        /// Creates a server's line.
        public init(node: NodeID, alive: Bool, report: FailoverController.Report?) {
            self.node = node
            self.alive = alive
            self.report = report
        }
    }

    /// The longest ``waitingReason`` carried, in UTF-8 bytes (longer ones are cut).
    public static let maximumReasonLength = 1024

    /// Creates a status.
    public init(
        epoch: UInt64, primary: NodeID?, failingOver: Bool, failingOverFrom: NodeID?, waitingReason: String?,
        syncSet: [NodeID], servers: [Server]
    ) {
        self.epoch = epoch
        self.primary = primary
        self.failingOver = failingOver
        self.failingOverFrom = failingOverFrom
        self.waitingReason = waitingReason
        self.syncSet = syncSet
        self.servers = servers
    }

    /// Several lines: the epoch and who serves, then one line per server.
    public var description: String {
        var lines: [String] = []
        if let primary {
            lines.append("epoch \(epoch): \(primary) serves; sync set [\(syncSet.map(\.name).joined(separator: ", "))]")
        } else if failingOver {
            let from = failingOverFrom.map { " from \($0)" } ?? ""
            lines.append("epoch \(epoch): failing over\(from)" + (waitingReason.map { ": \($0)" } ?? ""))
        } else {
            lines.append("epoch \(epoch): starting (no promotion until any earlier lease has run out)")
        }
        for server in servers {
            var line = "  \(server.node): \(server.alive ? "alive" : "silent")"
            if let report = server.report {
                line += ", \(report.role) in epoch \(report.epoch), at \(report.position)"
                if report.role == .primary {
                    line += ", waits for [\(report.syncSet.map(\.name).joined(separator: ", "))]"
                }
            } else {
                line += ", no report yet"
            }
            lines.append(line)
        }
        return lines.joined(separator: "\n")
    }

    func encode(into buffer: inout ByteBuffer) {
        buffer.writeMultipleIntegers(epoch, failingOver ? UInt8(1) : 0, endianness: .little)
        writeShortString(primary?.name ?? "", into: &buffer)
        writeShortString(failingOverFrom?.name ?? "", into: &buffer)
        var reason = waitingReason ?? ""
        while reason.utf8.count > Self.maximumReasonLength { reason.removeLast() }
        buffer.writeInteger(UInt16(reason.utf8.count), endianness: .little)
        buffer.writeString(reason)
        FailoverMessage.writeNodes(syncSet, into: &buffer)
        buffer.writeInteger(UInt8(truncatingIfNeeded: min(servers.count, 255)))
        for server in servers.prefix(255) {
            writeShortString(server.node.name, into: &buffer)
            buffer.writeInteger(server.alive ? UInt8(1) : 0)
            if let report = server.report {
                buffer.writeMultipleIntegers(
                    UInt8(1), report.role.rawValue, report.epoch, report.position.epoch, report.position.index,
                    report.incarnation, endianness: .little)
                FailoverMessage.writeNodes(report.syncSet, into: &buffer)
            } else {
                buffer.writeInteger(UInt8(0))
            }
        }
    }

    static func decode(from buffer: inout ByteBuffer) throws(FailoverError) -> FailoverStatus {
        guard let (epoch, failing) = buffer.readMultipleIntegers(endianness: .little, as: (UInt64, UInt8).self),
            failing <= 1
        else { throw FailoverError(.malformed, detail: "status header invalid") }
        let primary = try readOptionalNode(from: &buffer, what: "primary")
        let from = try readOptionalNode(from: &buffer, what: "failing-over server")
        guard let length = buffer.readInteger(endianness: .little, as: UInt16.self),
            Int(length) <= maximumReasonLength, let raw = buffer.readBytes(length: Int(length)),
            let reason = String(validating: raw, as: UTF8.self)
        else { throw FailoverError(.malformed, detail: "status reason invalid") }
        let syncSet = try FailoverMessage.readNodes(from: &buffer)
        guard let count = buffer.readInteger(as: UInt8.self) else {
            throw FailoverError(.malformed, detail: "status server count truncated")
        }
        var servers: [Server] = []
        for _ in 0..<count {
            guard let node = try readOptionalNode(from: &buffer, what: "server"),
                let (alive, hasReport) = buffer.readMultipleIntegers(as: (UInt8, UInt8).self), alive <= 1,
                hasReport <= 1
            else { throw FailoverError(.malformed, detail: "status server invalid") }
            var report: FailoverController.Report?
            if hasReport == 1 {
                guard
                    let (roleByte, reportEpoch, positionEpoch, index, incarnation) = buffer.readMultipleIntegers(
                        endianness: .little, as: (UInt8, UInt64, UInt64, UInt64, UInt64).self),
                    let role = ServiceConfiguration.Role(rawValue: roleByte)
                else { throw FailoverError(.malformed, detail: "status report invalid") }
                report = FailoverController.Report(
                    role: role, epoch: reportEpoch, position: LogPosition(epoch: positionEpoch, index: index),
                    syncSet: try FailoverMessage.readNodes(from: &buffer), incarnation: incarnation)
            }
            servers.append(Server(node: node, alive: alive == 1, report: report))
        }
        return FailoverStatus(
            epoch: epoch, primary: primary, failingOver: failing == 1, failingOverFrom: from,
            waitingReason: reason.isEmpty ? nil : reason, syncSet: syncSet, servers: servers)
    }

    private static func readOptionalNode(from buffer: inout ByteBuffer, what: String) throws(FailoverError)
        -> NodeID?
    {
        let name = try readShortString(from: &buffer, what: what)
        if name.isEmpty { return nil }
        guard let node = NodeID(name) else { throw FailoverError(.malformed, detail: "\(what) name invalid") }
        return node
    }
}

extension FailoverController {
    /// What ``FailoverStatus`` reports of this controller.
    public var status: FailoverStatus {
        var primary: NodeID?
        var failingOver = false
        var from: NodeID?
        switch phase {
        case .serving(let node): primary = node
        case .failingOver(let old, _, _):
            failingOver = true
            from = old
        case .starting: break
        }
        return FailoverStatus(
            epoch: epoch, primary: primary, failingOver: failingOver, failingOverFrom: from,
            waitingReason: failingOver ? waitingReason : nil, syncSet: syncSet,
            servers: configuration.servers.map {
                FailoverStatus.Server(node: $0, alive: isAlive($0), report: report(of: $0))
            })
    }
}
