/// Mistakes planted in the lazy volume for the simulation to catch: each reproduces a real way
/// a recovery loses data, and CI requires the simulation to find it.
package enum DisasterRecoveryBug: String, Sendable, CaseIterable {
    /// Switches the volume to the replica without copying the overlay blocks the workload wrote
    /// during the last round: those writes are gone once the replica serves.
    case switchBeforeOverlayCopied = "switch-before-overlay-copied"
    /// Records build progress before the replica's blocks are durable: a crash then leaves blocks
    /// counted as built that read as zeros.
    case recordBuildBeforeSync = "record-build-before-sync"
    /// Ships records the protected journal has staged but not yet made durable: a crash of the
    /// protected site then loses records the recovery site holds, and the site reuses their
    /// sequence numbers for other writes.
    case shipBeforeDurable = "ship-before-durable"
}
