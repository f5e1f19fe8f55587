public import DeterministicSimulation
public import Failover

/// The shared keys whose histories are checked for linearizability, by the failover scenario
/// and by `ftctl failover demo`, and how their values map to ``DeterministicSimulation/RegisterHistory``'s
/// integers.
public enum SharedRegisters {
    /// The keys every client writes and reads.
    public static let keys: [StoreKey] = ["r0", "r1", "r2"]

    /// A value no other write wrote: the client and request, as 8 bytes, and its integer.
    public static func value(client: UInt64, request: UInt64) -> (bytes: [UInt8], id: Int) {
        let id = Int(truncatingIfNeeded: client << 32 | (request & 0xFFFF_FFFF))
        return (withUnsafeBytes(of: UInt64(truncatingIfNeeded: id).littleEndian, Array.init), id)
    }

    /// The integer of a value read back (``DeterministicSimulation/RegisterHistory/absent`` for
    /// none, -1 for bytes no write wrote).
    public static func id(of bytes: [UInt8]?) -> Int {
        guard let bytes else { return RegisterHistory.absent }
        guard bytes.count == 8 else { return -1 }
        return Int(
            truncatingIfNeeded: bytes.withUnsafeBytes { UInt64(littleEndian: $0.loadUnaligned(as: UInt64.self)) })
    }
}
