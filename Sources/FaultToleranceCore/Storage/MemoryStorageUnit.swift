import NIOConcurrencyHelpers
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A ``StorageUnit`` held in memory, for tests and for data that need not outlive the
/// process. ``synchronize()`` succeeds at once; nothing survives the process.
public final class MemoryStorageUnit: StorageUnit, @unchecked Sendable {
    /// The unit's identity.
    public let id: UnitID
    /// The unit's size in bytes.
    public let capacity: Int
    /// `calloc`ed: large units come from zero pages the kernel maps on first write, so a unit
    /// costs memory for what is written to it, not for its capacity.
    private let base: UnsafeMutableRawPointer
    private let calloced: Bool
    private let lock = NIOLock()  // guards the bytes at `base`

    /// Creates a zero-filled unit of `capacity` bytes.
    public init(id: UnitID, capacity: Int) {
        self.id = id
        self.capacity = max(0, capacity)
        if let zeroed = calloc(max(1, self.capacity), 1) {
            self.base = zeroed
            self.calloced = true
        } else {
            // Where calloc refuses, Swift's allocator traps as an Array of this size would.
            let memory = UnsafeMutableRawPointer.allocate(byteCount: max(1, self.capacity), alignment: 16)
            memory.initializeMemory(as: UInt8.self, repeating: 0, count: max(1, self.capacity))
            self.base = memory
            self.calloced = false
        }
    }

    deinit {
        if calloced { free(base) } else { base.deallocate() }
    }

    /// Copies the bytes at `offset` into `buffer`.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkBounds(offset: offset, count: buffer.count)
        guard let target = buffer.baseAddress else { return }
        lock.withLock { target.copyMemory(from: base + offset, byteCount: buffer.count) }
    }

    /// Copies the bytes at `offset` into `buffer` and checksums them in the same pass.
    public func readChecksummed(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError)
        -> UInt32
    {
        try checkBounds(offset: offset, count: buffer.count)
        guard let target = buffer.baseAddress else { return CRC32C.checksum(UnsafeRawBufferPointer(buffer)) }
        var crc = CRC32C()
        lock.withLock {
            crc.update(copying: UnsafeRawBufferPointer(start: base + offset, count: buffer.count), to: target)
        }
        return crc.value
    }

    /// Copies `bytes` into the unit at `offset`.
    public func write(_ source: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkBounds(offset: offset, count: source.count)
        guard let from = source.baseAddress else { return }
        lock.withLock { (base + offset).copyMemory(from: from, byteCount: source.count) }
    }

    /// Does nothing: memory has no durability barrier.
    public func synchronize() throws(StorageError) {}

    /// Zeroes `range`.
    public func discard(_ range: Range<Int>) throws(StorageError) {
        try checkBounds(offset: range.lowerBound, count: range.count)
        lock.withLock { (base + range.lowerBound).initializeMemory(as: UInt8.self, repeating: 0, count: range.count) }
    }
}

/// A ``StoragePool`` of ``MemoryStorageUnit``s.
public final class MemoryStoragePool: StoragePool {
    private struct State {
        var units: [MemoryStorageUnit] = []
        var quarantined: [MemoryStorageUnit] = []
        var nextID: UInt64 = 1
    }

    /// The capacity of every unit.
    public let unitCapacity: Int
    /// The most bytes all units may occupy together.
    public let budget: Int
    private let state = NIOLockedValueBox(State())

    /// Creates an empty pool handing out units of `unitCapacity` bytes, at most `budget`
    /// bytes in all.
    public init(unitCapacity: Int, budget: Int) {
        self.unitCapacity = unitCapacity
        self.budget = budget
    }

    /// Every allocated unit, in allocation order.
    public var units: [MemoryStorageUnit] { state.withLockedValue { $0.units } }

    /// Allocates a zero-filled unit.
    public func allocate() throws(StorageError) -> MemoryStorageUnit {
        let result: Result<MemoryStorageUnit, StorageError> = state.withLockedValue { state in
            guard (state.units.count + 1) * unitCapacity <= budget else {
                return .failure(
                    StorageError(.budgetExceeded, detail: "budget \(budget) bytes, units of \(unitCapacity)"))
            }
            let unit = MemoryStorageUnit(id: UnitID(state.nextID), capacity: unitCapacity)
            state.nextID += 1
            state.units.append(unit)
            return .success(unit)
        }
        return try result.get()
    }

    /// Forgets a unit.
    public func release(_ unit: UnitID) throws(StorageError) {
        let found = state.withLockedValue { state in
            guard let index = state.units.firstIndex(where: { $0.id == unit }) else { return false }
            state.units.remove(at: index)
            return true
        }
        if !found { throw StorageError(.unknownUnit, unit: unit) }
    }

    /// Units taken out by ``quarantine(_:)``, bytes intact.
    public var quarantined: [MemoryStorageUnit] { state.withLockedValue { $0.quarantined } }

    /// Moves a unit from ``units`` to ``quarantined``.
    public func quarantine(_ unit: UnitID) throws(StorageError) {
        let found = state.withLockedValue { state in
            guard let index = state.units.firstIndex(where: { $0.id == unit }) else { return false }
            state.quarantined.append(state.units.remove(at: index))
            return true
        }
        if !found { throw StorageError(.unknownUnit, unit: unit) }
    }
}
