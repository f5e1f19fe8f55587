public import FaultToleranceCore

extension ServerCore {
    /// The most bytes of entries one merged replicate message carries (a single larger entry
    /// still goes alone).
    public static let batchedReplicationBytes = 1 << 20

    /// `effects`, decided in this order, with fewer messages and journal writes and the same
    /// outcome: what a runtime carries out when several events were decided while it was busy.
    ///
    /// - Entries replicated to a server join an earlier replicate message to that server when
    ///   they continue it, in the same epoch (up to `limit` entries and
    ///   ``batchedReplicationBytes``): one message, and one acknowledgement back, for many.
    ///   A message only moves earlier past effects that do not concern its server (messages to
    ///   others, journal writes, which replication precedes by design); never past a message
    ///   to the same server, a promotion or a step-down.
    /// - An acknowledgement (`replicated`) to a server is dropped when a later one to the same
    ///   server, in the same epoch and at least as far, follows with no other message to it
    ///   between: positions are cumulative, so the later one says everything the earlier did.
    /// - Journal writes of entries that end up side by side become one write (one sync). A
    ///   write is never moved past a message: whatever waited for it still does.
    public static func batched(_ effects: [Effect], limit: Int) -> [Effect] {
        guard effects.count > 1 else { return effects }
        // Acknowledgements superseded by a later one to the same server.
        var superseded = Set<Int>()
        var lastAcknowledgement: [NodeID: (index: Int, epoch: UInt64, position: UInt64)] = [:]
        for (index, effect) in effects.enumerated() {
            switch effect {
            case .send(.replicated(let epoch, let position), let target):
                if let last = lastAcknowledgement[target], last.epoch == epoch, last.position <= position.index {
                    superseded.insert(last.index)
                }
                lastAcknowledgement[target] = (index, epoch, position.index)
            case .send(_, let target):
                lastAcknowledgement[target] = nil
            case .bindService, .releaseService:
                lastAcknowledgement.removeAll()
            case .journal:
                break
            }
        }
        var out: [Effect] = []
        out.reserveCapacity(effects.count)
        // Per server: where in `out` its open replicate message is, with its size so far.
        var open: [NodeID: (index: Int, count: Int, bytes: Int)] = [:]
        for (index, effect) in effects.enumerated() where !superseded.contains(index) {
            switch effect {
            case .send(.replicate(let epoch, let previous, let entries), let target):
                let bytes = entries.reduce(0) { $0 + $1.encodedSize }
                if let merge = open[target],
                    case .send(.replicate(let openEpoch, let openPrevious, let openEntries), _) = out[merge.index],
                    openEpoch == epoch, (openEntries.last?.position ?? openPrevious) == previous,
                    merge.count + entries.count <= limit, merge.bytes + bytes <= batchedReplicationBytes
                {
                    out[merge.index] = .send(
                        .replicate(epoch: epoch, previous: openPrevious, entries: openEntries + entries), to: target)
                    open[target] = (merge.index, merge.count + entries.count, merge.bytes + bytes)
                } else {
                    open[target] = (out.count, entries.count, bytes)
                    out.append(effect)
                }
            case .send(_, let target):
                open[target] = nil
                out.append(effect)
            case .bindService, .releaseService:
                open.removeAll()
                out.append(effect)
            case .journal(.entries(let entries)):
                if case .journal(.entries(let before))? = out.last {
                    out[out.count - 1] = .journal(.entries(before + entries))
                } else {
                    out.append(effect)
                }
            case .journal:
                out.append(effect)
            }
        }
        return out
    }
}
