public import FaultToleranceCore

/// A whole group restored at one epoch: each member's committed checkpoint of that epoch,
/// found in the members' stores and checked for every member before any byte is written.
///
/// A group epoch is all or nothing (``GroupCoordinator``), so an epoch committed at one member
/// is committed at all of them; these calls still check it, because a store can be damaged,
/// pruned by its own retention, or still hold that epoch in doubt. An epoch missing at any
/// member restores nothing.
///
/// ```swift
/// let stores = ["a": storeA, "b": storeB, "c": storeC]  // member (application) → its store
/// guard let epoch = GroupRestore.commonEpochs(stores).last else { return }
/// let restored = try GroupRestore.restore(
///     epoch: epoch, stores: stores,
///     into: ["a": ["heap": unitA], "b": ["heap": unitB], "c": ["heap": unitC]])
/// ```
public enum GroupRestore {
    /// The epochs at which every member (the key: its application name, as it checkpoints
    /// under) has a committed checkpoint in its store, oldest first.
    public static func commonEpochs(_ stores: [String: CheckpointStore]) -> [UInt64] {
        var common: Set<UInt64>? = nil
        for (application, store) in stores {
            let epochs = Set(store.checkpoints.filter { $0.application == application }.map(\.epoch))
            common = common.map { $0.intersection(epochs) } ?? epochs
        }
        return (common ?? []).sorted()
    }

    /// Each member's committed checkpoint of `epoch`. Throws
    /// ``CheckpointError/Code/unknownCheckpoint`` naming every member without one (and the
    /// members holding it in doubt), and ``CheckpointError/Code/invalidConfiguration`` for an
    /// empty group.
    public static func checkpoints(
        atEpoch epoch: UInt64, in stores: [String: CheckpointStore]
    ) throws(CheckpointError) -> [String: CheckpointSummary] {
        guard !stores.isEmpty else { throw CheckpointError(.invalidConfiguration, detail: "a group of no members") }
        var found: [String: CheckpointSummary] = [:]
        var missing: [String] = []
        for (application, store) in stores.sorted(by: { $0.key < $1.key }) {
            let mine = store.checkpoints.filter { $0.application == application && $0.epoch == epoch }
            if let summary = mine.max(by: { $0.id < $1.id }) {
                found[application] = summary
            } else if store.inDoubt.contains(where: { $0.application == application && $0.epoch == epoch }) {
                missing.append("\(application) (in doubt: its member has not learned the epoch's fate)")
            } else {
                missing.append(application)
            }
        }
        guard missing.isEmpty else {
            throw CheckpointError(
                .unknownCheckpoint,
                detail: "epoch \(epoch) is not committed at \(missing.joined(separator: ", ")); nothing restored")
        }
        return found
    }

    /// Restores every member at `epoch`: each item named in `destinations[member]` from that
    /// member's checkpoint of the epoch into its unit (synchronized). First every member's
    /// checkpoint is found and every item's presence and size checked, so a missing epoch, a
    /// missing item or a unit too small restores nothing; a damaged chunk found while copying
    /// throws ``CheckpointError/Code/damaged`` naming it (units already written then hold
    /// part of the epoch). `progress` is called with the items done and the items in all.
    @discardableResult
    public static func restore(
        epoch: UInt64, stores: [String: CheckpointStore], into destinations: [String: [String: any StorageUnit]],
        progress: (Int, Int) -> Void = { _, _ in }
    ) throws(CheckpointError) -> [String: CheckpointSummary] {
        let found = try checkpoints(atEpoch: epoch, in: stores)
        let strangers = Set(destinations.keys).subtracting(found.keys)
        guard strangers.isEmpty else {
            throw CheckpointError(
                .invalidConfiguration, detail: "destinations for \(strangers.sorted()), which are not members")
        }
        var work: [(store: CheckpointStore, id: CheckpointID, item: String, unit: any StorageUnit)] = []
        for (application, items) in destinations.sorted(by: { $0.key < $1.key }) {
            guard let summary = found[application], let store = stores[application] else { continue }
            let manifest = try store.resolve(summary.id)
            for (name, unit) in items.sorted(by: { $0.key < $1.key }) {
                guard let item = manifest.items.first(where: { $0.name == name }) else {
                    throw CheckpointError(
                        .unknownCheckpoint, checkpoint: summary.id,
                        detail: "\(application)'s checkpoint of epoch \(epoch) has no item \(name)")
                }
                guard unit.capacity >= item.unitSize * item.unitCount else {
                    throw CheckpointError(
                        .geometryMismatch, checkpoint: summary.id,
                        detail: "\(application)'s \(name) is \(item.unitSize * item.unitCount) bytes, the unit "
                            + "\(unit.capacity)")
                }
                work.append((store, summary.id, name, unit))
            }
        }
        progress(0, work.count)
        for (index, piece) in work.enumerated() {
            try piece.store.restore(piece.id, item: piece.item, into: piece.unit)
            progress(index + 1, work.count)
        }
        return found
    }
}
