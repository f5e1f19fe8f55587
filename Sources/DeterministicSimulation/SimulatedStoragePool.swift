public import FaultToleranceCore
import NIOConcurrencyHelpers
import Synchronization

/// A power supply shared by simulated disks: once cut, every write, synchronize, discard,
/// allocation and release fails, as if power were lost in the middle of a multi-step
/// operation. ``SimulatedStoragePool/crash()`` restores it.
public final class PowerSwitch: Sendable {
    private let remaining = Atomic<Int>(-1)

    /// Creates a switch that is on.
    public init() {}

    /// Cuts power after `operations` more storage operations succeed.
    public func cut(afterOperations operations: Int) {
        remaining.store(max(0, operations), ordering: .sequentiallyConsistent)
    }

    /// Turns power back on for good.
    public func restore() {
        remaining.store(-1, ordering: .sequentiallyConsistent)
    }

    /// Whether power is off.
    public var isCut: Bool { remaining.load(ordering: .sequentiallyConsistent) == 0 }

    /// Uses one operation's worth of power, or throws when there is none.
    public func consume(unit: UnitID?) throws(StorageError) {
        while true {
            let current = remaining.load(ordering: .sequentiallyConsistent)
            if current < 0 { return }
            if current == 0 { throw StorageError(.ioFailed, unit: unit, errno: 5, detail: "simulated power cut") }
            if remaining.compareExchange(expected: current, desired: current - 1, ordering: .sequentiallyConsistent)
                .exchanged
            {
                return
            }
        }
    }
}

/// A ``FaultToleranceCore/StoragePool`` of ``SimulatedDisk``s for simulations. Allocations
/// and releases are durable at once (as ``FaultToleranceCore/FileStoragePool`` makes them);
/// ``crash()`` is a power loss for every disk.
public final class SimulatedStoragePool: StoragePool {
    /// The capacity of every disk.
    public let unitCapacity: Int
    /// The most bytes all disks may occupy.
    public let budget: Int
    /// The pool's power supply.
    public let power: PowerSwitch

    private struct State {
        var units: [SimulatedDisk] = []
        var quarantined: [SimulatedDisk] = []
        var nextID: UInt64
        var random: SimulationRandom
        var faults: SimulatedDisk.Faults
        var synchronizeHook: (@Sendable (UnitID) -> Void)?
    }

    private let state: NIOLockedValueBox<State>

    /// Creates an empty pool whose disks draw their faults from `random`. Unit numbers start
    /// at `firstUnit` (give pools in one simulation different ranges).
    public init(
        unitCapacity: Int,
        budget: Int,
        faults: SimulatedDisk.Faults = SimulatedDisk.Faults(),
        random: SimulationRandom,
        firstUnit: UInt64 = 1,
        power: PowerSwitch = PowerSwitch()
    ) {
        self.unitCapacity = unitCapacity
        self.budget = budget
        self.power = power
        self.state = NIOLockedValueBox(State(nextID: firstUnit, random: random, faults: faults))
    }

    /// Every disk, in allocation order.
    public var units: [SimulatedDisk] { state.withLockedValue { $0.units } }

    /// Allocates a zero-filled disk.
    public func allocate() throws(StorageError) -> SimulatedDisk {
        try power.consume(unit: nil)
        let result: Result<SimulatedDisk, StorageError> = state.withLockedValue { state in
            guard (state.units.count + 1) * unitCapacity <= budget else {
                return .failure(
                    StorageError(.budgetExceeded, detail: "budget \(budget) bytes, units of \(unitCapacity)"))
            }
            let disk = SimulatedDisk(
                id: UnitID(state.nextID), capacity: unitCapacity, faults: state.faults, random: state.random.split(),
                power: power)
            disk.setSynchronizeHook(state.synchronizeHook)
            state.nextID += 1
            state.units.append(disk)
            return .success(disk)
        }
        return try result.get()
    }

    /// Disks taken out by ``quarantine(_:)``, bytes intact.
    public var quarantined: [SimulatedDisk] { state.withLockedValue { $0.quarantined } }

    /// Moves a disk from ``units`` to ``quarantined`` (durable at once, like a release).
    public func quarantine(_ unit: UnitID) throws(StorageError) {
        try power.consume(unit: unit)
        let found = state.withLockedValue { state in
            guard let index = state.units.firstIndex(where: { $0.id == unit }) else { return false }
            state.quarantined.append(state.units.remove(at: index))
            return true
        }
        if !found { throw StorageError(.unknownUnit, unit: unit) }
    }

    /// Forgets a disk.
    public func release(_ unit: UnitID) throws(StorageError) {
        try power.consume(unit: unit)
        let found = state.withLockedValue { state in
            guard let index = state.units.firstIndex(where: { $0.id == unit }) else { return false }
            state.units.remove(at: index)
            return true
        }
        if !found { throw StorageError(.unknownUnit, unit: unit) }
    }

    /// Sets the synchronize hook (``SimulatedDisk/setSynchronizeHook(_:)``) of every disk,
    /// present and future; `nil` removes it.
    public func setSynchronizeHook(_ hook: (@Sendable (UnitID) -> Void)?) {
        let disks = state.withLockedValue { state in
            state.synchronizeHook = hook
            return state.units
        }
        for disk in disks { disk.setSynchronizeHook(hook) }
    }

    /// Changes the fault probabilities of every disk, present and future.
    public func setFaults(_ faults: SimulatedDisk.Faults) {
        let disks = state.withLockedValue { state in
            state.faults = faults
            return state.units
        }
        for disk in disks { disk.setFaults(faults) }
    }

    /// Power loss on every disk (see ``SimulatedDisk/crash()``); power is then restored.
    @discardableResult
    public func crash() -> SimulatedDisk.CrashOutcome {
        var total = SimulatedDisk.CrashOutcome()
        for disk in units {
            let outcome = disk.crash()
            total.lost += outcome.lost
            total.torn += outcome.torn
            total.survived += outcome.survived
        }
        power.restore()
        return total
    }
}
