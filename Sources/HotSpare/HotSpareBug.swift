/// Mistakes planted in the array for the simulation to catch: each reproduces a real way an
/// array loses data, and CI requires the simulation to find it.
package enum HotSpareBug: String, Sendable, CaseIterable {
    /// Erases the old member's data before the swap is durable on any member: a crash in the
    /// swap leaves the record naming the old member, whose data is gone.
    case eraseBeforeSwapIsDurable = "erase-before-swap-is-durable"
}
