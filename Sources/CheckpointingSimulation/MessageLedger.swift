public import FaultToleranceCore
public import LiveCopy
import NIOCore

/// The message counts the group checkpoint scenario and `ftctl checkpoint group-demo` keep in
/// page 0 of each member's region, to check that every committed epoch is a consistent cut.
/// Words (u64): 0 the member's incarnation; 1 + q the number of its last message to member q;
/// 4 + 2p and 5 + 2p the newest (incarnation, number) it handled from member p. Three members.
public enum MessageLedger {
    /// Members the ledger has room for.
    public static let members = 3
    /// Words of page 0 the ledger uses.
    public static let words = 10

    /// Starts an incarnation: its messages are numbered from 1 again.
    public static func begin(incarnation: UInt64, in memory: TrackedMemory) throws(LiveCopyError) {
        try memory.storeWord(incarnation, at: 0)
        for peer in 0..<members { try memory.storeWord(0, at: (1 + peer) * 8) }
    }

    /// Counts message `number` to member `peer` as sent (before it is sent) and returns it.
    public static func send(
        _ number: UInt64, to peer: Int, incarnation: UInt64, in memory: TrackedMemory
    ) throws(LiveCopyError) -> Message {
        try memory.storeWord(number, at: (1 + peer) * 8)
        var payload = ByteBuffer()
        payload.writeMultipleIntegers(incarnation, number)
        return Message(type: 0x0001, payload: payload)
    }

    /// Records a message from member `sender` as handled, when it is newer than the last.
    public static func handle(_ message: Message, from sender: Int, in memory: TrackedMemory) {
        guard sender >= 0, sender < members,
            let (incarnation, number) = message.payload.getMultipleIntegers(
                at: message.payload.readerIndex, as: (UInt64, UInt64).self),
            let old = try? memory.read(at: (4 + 2 * sender) * 8, count: 16)
        else { return }
        let oldIncarnation = old.withUnsafeBytes { $0.load(as: UInt64.self) }
        let oldNumber = old.withUnsafeBytes { $0.load(fromByteOffset: 8, as: UInt64.self) }
        guard (incarnation, number) > (oldIncarnation, oldNumber) else { return }
        try? memory.storeWord(incarnation, at: (4 + 2 * sender) * 8)
        try? memory.storeWord(number, at: (5 + 2 * sender) * 8)
    }

    /// The ledger's words in a restored region's bytes.
    public static func words(of region: [UInt8]) -> [UInt64] {
        region.withUnsafeBytes { raw in (0..<words).map { raw.load(fromByteOffset: $0 * 8, as: UInt64.self) } }
    }

    /// Why the members' ledgers at one epoch (in member order) are not a consistent cut: a
    /// message handled by one that its sender's ledger has not sent; `nil` when they are.
    public static func inconsistency(_ ledgers: [[UInt64]], names: [String]) -> String? {
        for (sender, state) in ledgers.enumerated() {
            for (receiver, other) in ledgers.enumerated() where receiver != sender {
                let sent = state[1 + receiver]
                let (incarnation, newest) = (other[4 + 2 * sender], other[5 + 2 * sender])
                if incarnation > state[0] || (incarnation == state[0] && newest > sent) {
                    return "\(names[receiver]) handled message \(newest) of \(names[sender])'s incarnation "
                        + "\(incarnation); its checkpoint sent \(sent) in incarnation \(state[0])"
                }
            }
        }
        return nil
    }
}
