import Failover
import FaultToleranceCore
import NIOCore

// Feeds arbitrary bytes to the Failover decoders. The first byte steers: 0-14 pick a message
// type (0x0601 + n) for FailoverMessage.decode, and 18-21 the operator's (0x0610 + n - 18:
// status query, status, switchover, its answer); 15 the journal form of the replication log
// (framed entries); 16 a framed ServiceConfiguration; 22 a record the pair keeps in etcd (leader, sync
// or member: FailoverEtcdRecord); 23 a server's journal file (FileReplicaJournal.decode), whose
// committed records are then restored into a server; 17 and the rest a store snapshot. Every input must
// decode or be refused with a FailoverError, never crash or hang; what decodes re-encodes and
// decodes to the same value, and decoded entries are applied to a store.

/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard let steer = input.first else { return 0 }
    let bytes = Array(input.dropFirst())
    let buffer = Message(type: 0, bytes: bytes).payload
    switch steer {
    case 0..<15, 18..<22:
        let type = steer < 15 ? 0x0601 + UInt16(steer) : 0x0610 + UInt16(steer - 18)
        guard let message = try? FailoverMessage.decode(Message(type: type, bytes: bytes)) else { return 0 }
        precondition((try? FailoverMessage.decode(message.encode())) == message, "type \(type) does not round-trip")
        if case .replicate(_, _, let entries) = message { apply(entries) }
    case 15:
        guard let entries = try? ReplicationEntry.unframeAll(buffer) else { return 0 }
        apply(entries)
    case 16:
        guard let configuration = try? ServiceConfiguration.unframe(buffer) else { return 0 }
        precondition((try? ServiceConfiguration.unframe(configuration.framed())) == configuration)
    case 22:
        guard let record = try? FailoverEtcdRecord.decode(bytes) else { return 0 }
        precondition((try? FailoverEtcdRecord.decode(record.encoded())) == record, "an etcd record does not round-trip")
    case 23:
        guard let recovered = try? FileReplicaJournal.decode(buffer, maximumRecordBytes: 1 << 20) else { return 0 }
        precondition(recovered.droppedBytes <= buffer.readableBytes, "more dropped than read")
        var core = ServerCore(
            node: "b", controller: "control", servers: ["a", "b"],
            configuration: ServiceConfiguration(role: .backup, epoch: 0, host: "127.0.0.1", port: 1))
        _ = try? core.restore(recovered)
        _ = core.store.digest
    default:
        guard let store = try? ReplicatedStore(snapshot: buffer) else { return 0 }
        precondition((try? ReplicatedStore(snapshot: store.snapshot()))?.digest == store.digest)
        _ = store.range(limit: 16)
    }
    return 0
}

/// Applies entries from an empty store, as a backup would; refusals are fine, crashes are not.
func apply(_ entries: [ReplicationEntry]) {
    var store = ReplicatedStore()
    for entry in entries {
        var renumbered = entry
        renumbered.position.index = store.position.index + 1
        _ = try? store.apply(renumbered)
    }
    _ = store.digest
}
