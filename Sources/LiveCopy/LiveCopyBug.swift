/// A bug planted in the shipped copier (`LiveCopy.plant(_:)`, package access), for the
/// simulation to show that its invariants catch it. Off unless a simulation turns it on.
public enum LiveCopyBug: String, Sendable, Hashable, CaseIterable, Codable {
    /// The stop-and-copy does not hold the writers: writes land during the final copy.
    case pauseWithoutHoldingWriters = "pause-without-holding-writers"
}
