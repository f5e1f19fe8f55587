/// When a lazy volume's migration stops copying in rounds and switches: a pure decision over
/// the rounds so far, like QEMU's pre-copy convergence check at block granularity.
///
/// The switch copies what is left with the workload's writes held (the freeze), so it waits
/// until little is left; a workload that dirties blocks as fast as a round copies them would
/// never get there, so the rounds are capped, and a round that left more than the one before
/// it (no progress) switches too.
public struct MigrationPolicy: Sendable, Hashable {
    /// Switch once at most this many blocks remain to copy.
    public var switchAtBlocks: Int
    /// Switch after this many rounds, whatever remains.
    public var maximumRounds: Int

    /// Creates a policy.
    public init(switchAtBlocks: Int = 64, maximumRounds: Int = 16) {
        self.switchAtBlocks = max(0, switchAtBlocks)
        self.maximumRounds = max(1, maximumRounds)
    }

    /// What to do next.
    public enum Decision: Sendable, Hashable {
        /// Copy another round.
        case copyRound
        /// Freeze, copy what is left, switch.
        case switchNow
    }

    /// The decision after `rounds` rounds, the last of which left `remaining` blocks to copy
    /// (`previous` left by the round before it, if any).
    public func decide(rounds: Int, remaining: Int, previous: Int?) -> Decision {
        if remaining <= switchAtBlocks || rounds >= maximumRounds { return .switchNow }
        if let previous, rounds >= 2, remaining >= previous { return .switchNow }
        return .copyRound
    }
}
