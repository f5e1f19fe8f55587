public import FaultToleranceCore
import NIOConcurrencyHelpers
import Synchronization

/// A ``FaultToleranceCore/StorageUnit`` with the crash semantics of a real disk, for simulations.
///
/// Reads see every completed write. ``crash()`` models power loss: writes since the last
/// successful ``synchronize()`` are each lost, kept, or torn at ``sectorSize`` granularity
/// (some sectors written, others not), and the surviving sectors land in a random order —
/// what a disk with a volatile cache may do. Synchronize and read failures can be injected;
/// a failed synchronize poisons the disk until the next crash (a restart of its owner), as
/// ``FaultToleranceCore/FileStorageUnit`` does. So can the silent faults of TigerBeetle's
/// storage model, which report success: bits flipped on read, writes misdirected to another
/// offset, writes lost; and damage at rest (``damage(at:mask:)``).
public final class SimulatedDisk: StorageUnit {
    /// Fault probabilities for a disk.
    public struct Faults: Sendable, Hashable {
        /// Probability that an unsynchronized write is lost whole in a crash.
        public var loseUnsynchronized: Double
        /// Probability that an unsynchronized write is torn in a crash (otherwise kept).
        public var tearUnsynchronized: Double
        /// Probability that a ``SimulatedDisk/synchronize()`` fails.
        public var synchronizeFailure: Double
        /// Probability that a read fails.
        public var readFailure: Double
        /// Probability that a read returns its bytes with one bit flipped (the stored bytes
        /// stay intact: a bus or cable error). Silent: the read reports success.
        public var flipOnRead: Double
        /// Probability that a write lands at another offset (a whole number of sectors away,
        /// within the disk) instead of its own, which keeps its old bytes. Silent: the write
        /// reports success, and a later synchronize makes the misplaced bytes durable.
        public var misdirectWrite: Double
        /// Probability that a write is dropped while reporting success (a firmware bug):
        /// neither reads nor crashes ever see it.
        public var loseWrite: Double

        /// Creates fault probabilities.
        public init(
            loseUnsynchronized: Double = 0.4,
            tearUnsynchronized: Double = 0.3,
            synchronizeFailure: Double = 0,
            readFailure: Double = 0,
            flipOnRead: Double = 0,
            misdirectWrite: Double = 0,
            loseWrite: Double = 0
        ) {
            self.flipOnRead = flipOnRead
            self.misdirectWrite = misdirectWrite
            self.loseWrite = loseWrite
            self.loseUnsynchronized = loseUnsynchronized
            self.tearUnsynchronized = tearUnsynchronized
            self.synchronizeFailure = synchronizeFailure
            self.readFailure = readFailure
        }
    }

    /// What a crash did to the unsynchronized writes.
    public struct CrashOutcome: Sendable, Hashable {
        /// Writes lost whole.
        public var lost = 0
        /// Writes torn.
        public var torn = 0
        /// Writes that survived whole.
        public var survived = 0

        /// Creates an empty outcome.
        public init() {}
    }

    private struct PendingWrite {
        var offset: Int
        var bytes: [UInt8]
    }

    private struct State {
        var durable: [UInt8]
        var current: [UInt8]
        var pending: [PendingWrite] = []
        var random: SimulationRandom
        var faults: Faults
        var poisoned: StorageError?
        var failNextSynchronize = false
        var synchronizeFailures = 0
        var readFailures = 0
        var silent = SilentFaults()
    }

    /// Silent faults injected so far: each reported success while returning or storing the
    /// wrong bytes.
    public struct SilentFaults: Sendable, Hashable {
        /// Reads that returned a flipped bit.
        public var flippedReads = 0
        /// Writes that landed at the wrong offset.
        public var misdirectedWrites = 0
        /// Writes dropped while reporting success.
        public var lostWrites = 0

        /// Creates zero counts.
        public init() {}

        /// Every silent fault.
        public var total: Int { flippedReads + misdirectedWrites + lostWrites }
    }

    /// The unit's identity.
    public let id: UnitID
    /// The unit's size in bytes.
    public let capacity: Int
    /// The granularity of torn writes, 512 bytes by default (a disk sector).
    public let sectorSize: Int
    private let state: NIOLockedValueBox<State>
    private let power: PowerSwitch?
    private let synchronizeHook = NIOLockedValueBox<(@Sendable (UnitID) -> Void)?>(nil)

    /// Sets a closure called (on the calling thread, before anything else) at the start of
    /// every ``synchronize()``: a simulation acts there in the middle of a multi-step
    /// operation of the code under test, deterministically. The closure must not synchronize
    /// this disk.
    public func setSynchronizeHook(_ hook: (@Sendable (UnitID) -> Void)?) {
        synchronizeHook.withLockedValue { $0 = hook }
    }

    /// Creates a zero-filled disk whose faults are drawn from `random`. With a `power`
    /// switch, writes, synchronizes and discards fail once the switch has been cut.
    public init(
        id: UnitID,
        capacity: Int,
        sectorSize: Int = 512,
        faults: Faults = Faults(),
        random: SimulationRandom,
        power: PowerSwitch? = nil
    ) {
        self.id = id
        self.capacity = max(0, capacity)
        self.sectorSize = max(1, sectorSize)
        self.power = power
        let zeros = [UInt8](repeating: 0, count: max(0, capacity))
        self.state = NIOLockedValueBox(State(durable: zeros, current: zeros, random: random, faults: faults))
    }

    /// Changes the fault probabilities.
    public func setFaults(_ faults: Faults) {
        state.withLockedValue { $0.faults = faults }
    }

    /// Makes the next ``synchronize()`` fail regardless of probabilities.
    public func failNextSynchronize() {
        state.withLockedValue { $0.failNextSynchronize = true }
    }

    /// How many synchronize and read failures were injected so far.
    public var injectedFailures: (synchronize: Int, read: Int) {
        state.withLockedValue { ($0.synchronizeFailures, $0.readFailures) }
    }

    /// How many silent faults (flipped reads, misdirected and lost writes) were injected so far.
    public var silentFaults: SilentFaults { state.withLockedValue { $0.silent } }

    /// Damage at rest: XORs `mask` into the bytes at `offset`, durable and current alike
    /// (bit rot, a stray write by something else). Bounds are clamped to the disk.
    public func damage(at offset: Int, mask: [UInt8]) {
        state.withLockedValue { state in
            for (index, value) in mask.enumerated() where offset + index >= 0 && offset + index < state.durable.count {
                state.durable[offset + index] ^= value
                state.current[offset + index] ^= value
            }
        }
    }

    /// Unsynchronized writes that a crash now could lose.
    public var pendingWriteCount: Int { state.withLockedValue { $0.pending.count } }

    /// Copies bytes out; may fail when read failures are injected.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkBounds(offset: offset, count: buffer.count)
        let result: Result<Void, StorageError> = state.withLockedValue { state in
            if let poisoned = state.poisoned {
                return .failure(StorageError(.poisoned, unit: id, offset: offset, errno: poisoned.errno))
            }
            if state.random.chance(state.faults.readFailure) {
                state.readFailures += 1
                return .failure(
                    StorageError(.ioFailed, unit: id, offset: offset, errno: 5, detail: "injected read failure"))
            }
            state.current.withUnsafeBytes { source in
                buffer.copyMemory(from: UnsafeRawBufferPointer(rebasing: source[offset..<offset + buffer.count]))
            }
            if buffer.count > 0, state.random.chance(state.faults.flipOnRead) {
                state.silent.flippedReads += 1
                let bit = Int(state.random.next() % UInt64(buffer.count * 8))
                buffer[bit / 8] ^= UInt8(1) << UInt8(bit % 8)
            }
            return .success(())
        }
        try result.get()
    }

    /// Applies a write to the volatile view and remembers it until the next barrier.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkBounds(offset: offset, count: bytes.count)
        try power?.consume(unit: id)
        let result: Result<Void, StorageError> = state.withLockedValue { state in
            if let poisoned = state.poisoned {
                return .failure(StorageError(.poisoned, unit: id, offset: offset, errno: poisoned.errno))
            }
            if bytes.count > 0, state.random.chance(state.faults.loseWrite) {
                state.silent.lostWrites += 1
                return .success(())
            }
            var target = offset
            if bytes.count > 0, state.random.chance(state.faults.misdirectWrite) {
                // Another place a whole number of sectors away that still fits the disk.
                let slots = (capacity - bytes.count) / sectorSize + 1
                var slot = Int(state.random.next() % UInt64(slots))
                if slot * sectorSize == offset { slot = (slot + 1) % slots }
                if slot * sectorSize != offset {
                    target = slot * sectorSize
                    state.silent.misdirectedWrites += 1
                }
            }
            state.current.withUnsafeMutableBytes { current in
                UnsafeMutableRawBufferPointer(rebasing: current[target..<target + bytes.count]).copyMemory(from: bytes)
            }
            state.pending.append(PendingWrite(offset: target, bytes: Array(bytes)))
            return .success(())
        }
        try result.get()
    }

    /// Makes pending writes durable, or fails and poisons the disk when a failure is
    /// injected.
    public func synchronize() throws(StorageError) {
        synchronizeHook.withLockedValue { $0 }?(id)
        try power?.consume(unit: id)
        let result: Result<Void, StorageError> = state.withLockedValue { state in
            if let poisoned = state.poisoned {
                return .failure(StorageError(.poisoned, unit: id, errno: poisoned.errno))
            }
            if state.failNextSynchronize || state.random.chance(state.faults.synchronizeFailure) {
                state.failNextSynchronize = false
                state.synchronizeFailures += 1
                let error = StorageError(.synchronizeFailed, unit: id, errno: 5, detail: "injected fsync failure")
                state.poisoned = error
                return .failure(error)
            }
            // The durable image plus the pending writes in order is the current view; applying
            // just those writes avoids sharing `current` with `durable`, which would make the
            // next write copy the whole disk.
            state.durable.withUnsafeMutableBytes { durable in
                for write in state.pending {
                    write.bytes.withUnsafeBytes { bytes in
                        UnsafeMutableRawBufferPointer(rebasing: durable[write.offset..<write.offset + bytes.count])
                            .copyMemory(from: bytes)
                    }
                }
            }
            state.pending.removeAll(keepingCapacity: true)
            return .success(())
        }
        try result.get()
    }

    /// Zeroes a range (as a write of zeros, subject to the same crash rules).
    public func discard(_ range: Range<Int>) throws(StorageError) {
        try checkBounds(offset: range.lowerBound, count: range.count)
        try power?.consume(unit: id)
        let zeros = [UInt8](repeating: 0, count: range.count)
        try zeros.withUnsafeBytes { raw in
            Result { () throws(StorageError) in try write(raw, at: range.lowerBound) }
        }.get()
    }

    /// Power loss: each unsynchronized write is lost, torn or kept; surviving sectors are
    /// applied in a random order; the disk then holds only what "reached the platter", and
    /// a poisoned disk becomes usable again (its owner restarts and recovers).
    @discardableResult
    public func crash() -> CrashOutcome {
        state.withLockedValue { state in
            var outcome = CrashOutcome()
            var sectors: [(offset: Int, bytes: ArraySlice<UInt8>)] = []
            for write in state.pending {
                if state.random.chance(state.faults.loseUnsynchronized) {
                    outcome.lost += 1
                    continue
                }
                let tear = state.random.chance(state.faults.tearUnsynchronized)
                var kept = 0
                var total = 0
                // Split the write at sector boundaries of the disk, not of the write.
                var position = write.offset
                let end = write.offset + write.bytes.count
                while position < end {
                    let sectorEnd = min(end, (position / sectorSize + 1) * sectorSize)
                    total += 1
                    if !tear || state.random.chance(0.5) {
                        let slice = write.bytes[(position - write.offset)..<(sectorEnd - write.offset)]
                        sectors.append((position, slice))
                        kept += 1
                    }
                    position = sectorEnd
                }
                if tear && kept < total {
                    outcome.torn += 1
                } else if kept == 0 {
                    outcome.lost += 1
                } else {
                    outcome.survived += 1
                }
            }
            // Reordering: a volatile cache may write back sectors in any order, so where two
            // pending writes overlap, either may win.
            for index in stride(from: sectors.count - 1, to: 0, by: -1) {
                let other = Int.random(in: 0...index, using: &state.random)
                if state.random.chance(0.25) { sectors.swapAt(index, other) }
            }
            var image = state.durable
            for sector in sectors {
                image.replaceSubrange(sector.offset..<sector.offset + sector.bytes.count, with: sector.bytes)
            }
            state.durable = image
            state.current = image
            state.pending.removeAll()
            state.poisoned = nil
            state.failNextSynchronize = false
            return outcome
        }
    }
}
