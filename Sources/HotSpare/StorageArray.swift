public import FaultToleranceCore
import NIOConcurrencyHelpers

/// An array of member ``FaultToleranceCore/StorageUnit``s with hot spares, itself a
/// `StorageUnit`, that moves a member's data to a spare while the host keeps reading and
/// writing, then erases the member it left.
///
/// **Layouts.** ``ArrayLayout/mirror`` keeps every block on two members (RAID-10) and goes on
/// when one fails; ``ArrayLayout/concatenated`` keeps one copy. Either way the array knows
/// which blocks hold data (*live*: written and not discarded) and passes discards down, so a
/// migration copies only live blocks and a worn flash member gets its space back by TRIM.
///
/// **Metadata.** Every member starts with an ``ArrayLabel`` and two slots for an
/// ``ArrayRecord`` (membership, migration progress, the live map), written alternately and
/// made durable on every member before anything that depends on them: a block's live bit
/// before its first data (md's write-intent bitmap), a failed member before the write that
/// found it failed is acknowledged, a swap before the old member is erased. ``open(id:units:allowMissing:)``
/// assembles the array from the newest valid record and refuses a unit of another array
/// (``FaultToleranceCore/StorageError/Code/foreignUnit``, naming it).
///
/// **Migration.** ``beginMigration(of:)`` (a worn member, to a spare) or
/// ``beginRebuild(of:)`` (a failed mirror member, from its partner), then ``copyStep(maximumBlocks:erase:)``
/// until it reports the migration finished: each step copies the next live blocks of the role
/// to the spare, and a host write to a block already copied goes to both, so one pass is
/// enough and there is nothing to copy again; the progress is made durable at every step's
/// end, so a restart resumes where the last step ended. The swap waits for the host I/O in
/// flight, makes the new membership durable on every member, then erases the old member's
/// data region and makes it the spare. In the mirror layout the member being replaced keeps
/// serving until the swap: a proactive migration never runs on one copy.
///
/// Host I/O on one block is serialized (a lock per group of blocks), so the two copies of a
/// mirrored block always receive the same writes in the same order, and a copy of a block
/// never interleaves with a write to it.
public final class StorageArray: StorageUnit, @unchecked Sendable {
    // unchecked: `state` is guarded by `lock`, record writes by `metadataLock`, block I/O by the
    // stripe locks; every other field is immutable.

    /// How to build a new array.
    public struct Configuration: Sendable, Hashable {
        /// The layout.
        public var layout: ArrayLayout
        /// Bytes per block: the unit of placement, of the live map and of copying.
        public var blockSize: Int
        /// The array's identity, written in every member's label.
        public var arrayID: UInt64

        /// A configuration; the array id is drawn at random unless given.
        public init(layout: ArrayLayout, blockSize: Int = 64 << 10, arrayID: UInt64 = UInt64.random(in: 1...UInt64.max))
        {
            self.layout = layout
            self.blockSize = blockSize
            self.arrayID = arrayID
        }
    }

    /// A snapshot of the array's state, for people and tools.
    public struct Status: Sendable, Hashable {
        /// The member filling each role.
        public var roles: [UnitID]
        /// Erased members ready to take a role.
        public var spares: [UnitID]
        /// Members that failed.
        public var failed: [UnitID]
        /// Members left by a migration whose data is still to erase.
        public var erasing: [UnitID]
        /// The migration in progress and the role slots copied so far.
        public var migration: MigrationState?
        /// Blocks that hold data.
        public var liveBlocks: Int
        /// Bumped on every change of membership.
        public var generation: UInt64
        /// Bumped on every metadata record written.
        public var sequence: UInt64
    }

    /// What a migration did, when it finished.
    public struct MigrationReport: Sendable, Hashable {
        /// The role whose data moved.
        public var role: Int
        /// The member it left (erased and now a spare, unless it failed).
        public var from: UnitID
        /// The member that holds it now.
        public var to: UnitID
        /// Bytes of block data copied.
        public var bytesCopied: Int
        /// Whether the old member was erased (a failed one is not).
        public var erased: Bool
    }

    /// The array's identity as a unit.
    public let id: UnitID
    /// The host's bytes.
    public let capacity: Int
    /// Where every block lives.
    public let geometry: ArrayGeometry
    /// The array id in every label.
    public let arrayID: UInt64
    /// Bytes of each record slot.
    public let slotSize: Int
    /// Where the data region starts on every member.
    public let dataOffset: Int

    private struct State {
        var record: ArrayRecord
        var units: [UnitID: any StorageUnit]
        /// The live map changed since the last record.
        var liveChanged = false
        /// Role slots below this are on the migration's target.
        var cursor = 0
        var bytesCopied = 0
    }

    /// A member and its unit.
    private typealias Holder = (member: UnitID, unit: any StorageUnit)

    private let lock = NIOLock()
    private var state: State
    private let metadataLock = NIOLock()
    private let stripes: [NIOLock]
    private let plantedBug: HotSpareBug?

    private init(
        id: UnitID, label: ArrayLabel, geometry: ArrayGeometry, record: ArrayRecord,
        units: [UnitID: any StorageUnit], bug: HotSpareBug?
    ) {
        self.id = id
        self.geometry = geometry
        self.capacity = geometry.capacity
        self.arrayID = label.arrayID
        self.slotSize = label.slotSize
        self.dataOffset = label.dataOffset
        self.stripes = (0..<64).map { _ in NIOLock() }
        self.plantedBug = bug
        state = State(record: record, units: units, cursor: record.migration?.resumeFrom ?? 0)
    }

    // MARK: - Creating and assembling

    /// Builds a new array over `members` (in role order) and `spares`: labels every unit, erases
    /// the spares' data regions and makes the first record durable on all of them. The blocks per
    /// role are as many as the smallest member holds after the metadata; every spare must hold
    /// as many. Throws ``FaultToleranceCore/StorageError/Code/invalidConfiguration`` for a layout
    /// the members do not fit (a mirror needs an even number, at least two), a bad block size,
    /// units named twice or too small.
    public static func create(
        id: UnitID, members: [any StorageUnit], spares: [any StorageUnit], configuration: Configuration
    ) throws(StorageError) -> StorageArray {
        try create(id: id, members: members, spares: spares, configuration: configuration, bug: nil)
    }

    package static func create(
        id: UnitID, members: [any StorageUnit], spares: [any StorageUnit], configuration: Configuration,
        bug: HotSpareBug?
    ) throws(StorageError) -> StorageArray {
        let all = members + spares
        let ids = all.map(\.id)
        guard Set(ids).count == ids.count, all.count <= ArrayRecord.maximumListCount,
            ArrayGeometry.validBlockSize(configuration.blockSize), let smallest = members.map(\.capacity).min()
        else {
            throw StorageError(
                .invalidConfiguration, unit: id,
                detail: "\(members.count) members and \(spares.count) spares (distinct, at most "
                    + "\(ArrayRecord.maximumListCount)), block size \(configuration.blockSize)")
        }
        let blockSize = configuration.blockSize
        let groups = configuration.layout == .mirror ? members.count / 2 : members.count
        // The slots grow with the live map, so fit the blocks by trying fewer until they fit.
        var blocksPerRole = max(0, (smallest - ArrayLabel.size) / blockSize)
        func label(_ blocks: Int, _ member: UnitID) -> ArrayLabel {
            let slot = roundUp(ArrayRecord.maximumSize(blocks: blocks * max(1, groups)), to: 4096)
            return ArrayLabel(
                arrayID: configuration.arrayID, member: member, layout: configuration.layout, blockSize: blockSize,
                blocksPerRole: blocks, slotSize: slot)
        }
        while blocksPerRole > 0, label(blocksPerRole, id).requiredCapacity > smallest {
            let over = label(blocksPerRole, id).requiredCapacity - smallest
            blocksPerRole -= max(1, (over + blockSize - 1) / blockSize)
        }
        let template = label(max(1, blocksPerRole), id)
        guard
            let geometry = ArrayGeometry(
                layout: configuration.layout, roleCount: members.count, blocksPerRole: blocksPerRole,
                blockSize: blockSize)
        else {
            throw StorageError(
                .invalidConfiguration, unit: id,
                detail: "\(members.count) members of \(smallest) bytes cannot make a \(configuration.layout) array "
                    + "of \(blockSize)-byte blocks")
        }
        if let small = spares.first(where: { $0.capacity < template.requiredCapacity }) {
            throw StorageError(
                .invalidConfiguration, unit: small.id,
                detail: "a spare of \(small.capacity) bytes; a role needs \(template.requiredCapacity)")
        }
        for unit in all {
            var own = template
            own.member = unit.id
            try unit.write(own.encode(), at: 0)
        }
        for spare in spares { try spare.discard(template.dataOffset..<spare.capacity) }
        let record = ArrayRecord(
            arrayID: configuration.arrayID, sequence: 0, generation: 1, roles: members.map(\.id),
            spares: spares.map(\.id), live: BlockBitmap(count: geometry.blockCount))
        let array = StorageArray(
            id: id, label: template, geometry: geometry, record: record,
            units: Dictionary(uniqueKeysWithValues: all.map { ($0.id, $0) }), bug: bug)
        try array.writeRecord { _ in }
        return array
    }

    /// Assembles an array from its units, in any order: reads every label and record, takes the
    /// newest valid record as the array's state, finishes an erase a crash interrupted, and
    /// leaves a migration ready to resume with ``copyStep(maximumBlocks:erase:)``.
    ///
    /// Throws ``FaultToleranceCore/StorageError/Code/foreignUnit`` naming a unit whose label
    /// belongs to another array or names a member the newest record does not know,
    /// ``FaultToleranceCore/StorageError/Code/malformedUnit`` for a unit with no valid label or
    /// record, and, unless `allowMissing`, ``FaultToleranceCore/StorageError/Code/unavailable``
    /// naming a member the record needs and no unit provides (with `allowMissing`, such a member
    /// is recorded as failed: a mirror runs degraded, a concatenated range is unavailable).
    /// A failed member's unit is ignored.
    public static func open(id: UnitID, units: [any StorageUnit], allowMissing: Bool = false) throws(StorageError)
        -> StorageArray
    {
        try open(id: id, units: units, allowMissing: allowMissing, bug: nil)
    }

    package static func open(id: UnitID, units: [any StorageUnit], allowMissing: Bool, bug: HotSpareBug?)
        throws(StorageError) -> StorageArray
    {
        let found = try assemble(id: id, units: units)
        var record = found.record
        for member in found.missing {
            guard allowMissing else {
                throw StorageError(.unavailable, unit: id, detail: "member \(member) is missing")
            }
            markFailed(member, in: &record, geometry: found.geometry)
        }
        let array = StorageArray(
            id: id, label: found.label, geometry: found.geometry, record: record, units: found.units, bug: bug)
        // Bring every member to the newest record (and record the missing as failed).
        try array.writeRecord { _ in }
        try array.finishErases()
        return array
    }

    /// What the members of an array say, read without writing anything: for a tool that looks
    /// at an array another process may be running.
    public struct Examination: Sendable, Hashable {
        /// The array id in the labels.
        public var arrayID: UInt64
        /// Where every block lives.
        public var geometry: ArrayGeometry
        /// The state in the newest valid record.
        public var status: Status
        /// Members the record needs that no unit provides.
        public var missing: [UnitID]
        /// The unit holding each member found.
        public var units: [UnitID: UnitID]
    }

    /// Reads the labels and newest record of `units` as ``open(id:units:allowMissing:)`` does,
    /// with the same errors for foreign, blank and malformed units, but writes nothing and
    /// reports missing members instead of refusing them.
    public static func examine(units: [any StorageUnit]) throws(StorageError) -> Examination {
        let found = try assemble(id: UnitID(0), units: units)
        let record = found.record
        return Examination(
            arrayID: found.label.arrayID, geometry: found.geometry,
            status: Status(
                roles: record.roles, spares: record.spares, failed: record.failed, erasing: record.erasing,
                migration: record.migration, liveBlocks: record.live.setCount, generation: record.generation,
                sequence: record.sequence),
            missing: found.missing, units: found.units.mapValues(\.id))
    }

    /// The labels and the newest record of `units`, checked against each other.
    private static func assemble(id: UnitID, units: [any StorageUnit]) throws(StorageError) -> (
        label: ArrayLabel, geometry: ArrayGeometry, record: ArrayRecord, units: [UnitID: any StorageUnit],
        missing: [UnitID]
    ) {
        var labels: [(ArrayLabel, any StorageUnit)] = []
        for unit in units {
            let bytes = try unit.read(at: 0, count: min(ArrayLabel.size, unit.capacity))
            do throws(ArrayMetadataError) {
                labels.append((try ArrayLabel.decode(bytes), unit))
            } catch {
                throw StorageError(.malformedUnit, unit: unit.id, detail: "not an array member: \(error)")
            }
        }
        guard let first = labels.first?.0 else {
            throw StorageError(.invalidConfiguration, unit: id, detail: "no units to assemble")
        }
        var byMember: [UnitID: any StorageUnit] = [:]
        for (label, unit) in labels {
            guard label.arrayID == first.arrayID, label.layout == first.layout, label.blockSize == first.blockSize,
                label.blocksPerRole == first.blocksPerRole, label.slotSize == first.slotSize
            else {
                throw StorageError(
                    .foreignUnit, unit: unit.id,
                    detail: "member \(label.member) of array \(hex(label.arrayID)), not of \(hex(first.arrayID))")
            }
            guard byMember[label.member] == nil else {
                throw StorageError(.foreignUnit, unit: unit.id, detail: "member \(label.member) given twice")
            }
            byMember[label.member] = unit
        }
        var newest: ArrayRecord?
        for (label, unit) in labels {
            for slot in 0..<2 {
                guard let record = try? readRecord(from: unit, label: label, slot: slot),
                    record.arrayID == first.arrayID
                else { continue }
                if record.sequence >= newest?.sequence ?? 0 { newest = record }
            }
        }
        guard let record = newest else {
            throw StorageError(.malformedUnit, unit: id, detail: "no valid record on any of \(units.count) units")
        }
        let known = Set(
            record.roles + record.spares + record.erasing + record.failed + (record.migration.map { [$0.target] } ?? [])
        )
        if let stranger = labels.first(where: { !known.contains($0.0.member) }) {
            throw StorageError(
                .foreignUnit, unit: stranger.1.id,
                detail: "member \(stranger.0.member) is not in array \(hex(first.arrayID))'s record \(record.sequence)")
        }
        for member in record.failed { byMember[member] = nil }
        let needed = record.roles + record.spares + record.erasing + (record.migration.map { [$0.target] } ?? [])
        guard
            let geometry = ArrayGeometry(
                layout: first.layout, roleCount: record.roles.count, blocksPerRole: first.blocksPerRole,
                blockSize: first.blockSize), record.live.count == geometry.blockCount
        else {
            throw StorageError(
                .malformedUnit, unit: id, detail: "record \(record.sequence) does not fit its labels' geometry")
        }
        let missing = needed.filter { byMember[$0] == nil && !record.failed.contains($0) }
        return (first, geometry, record, byMember, missing)
    }

    private static func readRecord(from unit: any StorageUnit, label: ArrayLabel, slot: Int) throws -> ArrayRecord {
        let offset = ArrayLabel.size + slot * label.slotSize
        let header = try unit.read(at: offset, count: 16)
        guard let length = ArrayRecord.announcedLength(header), length <= label.slotSize else {
            throw ArrayMetadataError(.notMetadata, "slot \(slot)")
        }
        return try ArrayRecord.decode(try unit.read(at: offset, count: length))
    }

    // MARK: - Host I/O

    /// The array's state now.
    public var status: Status {
        lock.withLock {
            let record = state.record
            var migration = record.migration
            migration?.resumeFrom = state.cursor
            return Status(
                roles: record.roles, spares: record.spares, failed: record.failed, erasing: record.erasing,
                migration: migration, liveBlocks: record.live.setCount, generation: record.generation,
                sequence: record.sequence)
        }
    }

    /// One copy of a block on a member.
    public struct BlockCopy: Sendable {
        /// The member holding it.
        public var member: UnitID
        /// The member's unit.
        public var unit: any StorageUnit
        /// Where on the unit the block starts.
        public var offset: Int
    }

    /// Every copy of block `block` the array keeps: on the members of its roles that have not
    /// failed, and on the migration's target once the copy has passed it. For tools that check
    /// or scrub each copy on its own; empty for a block outside the array.
    public func copies(ofBlock block: Int) -> [BlockCopy] {
        guard block >= 0, block < geometry.blockCount else { return [] }
        let (roles, slot) = geometry.placement(ofBlock: block)
        let offset = dataOffset + slot * geometry.blockSize
        return lock.withLock {
            var members = roles.map { state.record.roles[$0] }
            if let migration = state.record.migration, roles.contains(migration.role), slot < state.cursor {
                members.append(migration.target)
            }
            return members.filter { !state.record.failed.contains($0) }.compactMap { member in
                state.units[member].map { BlockCopy(member: member, unit: $0, offset: offset) }
            }
        }
    }

    /// The member unit for `member`, if the array holds it (for tools and tests).
    public func unit(for member: UnitID) -> (any StorageUnit)? {
        lock.withLock { state.units[member] }
    }

    /// Reads from the first copy of each block that answers; a member that fails is recorded as
    /// failed and the next copy is read. Throws ``FaultToleranceCore/StorageError/Code/unavailable``
    /// naming the member when no copy of a block answers: never zeros in its place.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkRange(offset, buffer.count)
        try forEachPiece(offset: offset, count: buffer.count) { (block, within, range) throws(StorageError) in
            let piece = UnsafeMutableRawBufferPointer(rebasing: buffer[range])
            let (roles, slot) = geometry.placement(ofBlock: block)
            let memberOffset = dataOffset + slot * geometry.blockSize + within
            var lastFailed: UnitID?
            while true {
                let holders = self.holders(roles: roles, slot: slot, forWrite: false)
                guard let (member, unit) = holders.first else {
                    throw StorageError(
                        .unavailable, unit: lastFailed ?? roles.first.map { self.member(ofRole: $0) } ?? id,
                        offset: offset + range.lowerBound, detail: "no member holds block \(block)")
                }
                do throws(StorageError) {
                    try unit.read(into: piece, at: memberOffset)
                    return
                } catch  where error.code == .outOfBounds {
                    throw error
                } catch {
                    lastFailed = member
                    try recordFailure(of: member, error)
                }
            }
        }
    }

    /// Writes to every copy of each block (and to the migration's target once it holds the
    /// block). A block's first data makes its live bit durable first. A member that fails is
    /// recorded as failed (durably) before the write returns; the write fails with
    /// ``FaultToleranceCore/StorageError/Code/unavailable`` only when no copy took it.
    public func write(_ bytes: UnsafeRawBufferPointer, at offset: Int) throws(StorageError) {
        try checkRange(offset, bytes.count)
        try forEachPiece(offset: offset, count: bytes.count) { (block, within, range) throws(StorageError) in
            let piece = UnsafeRawBufferPointer(rebasing: bytes[range])
            let (roles, slot) = geometry.placement(ofBlock: block)
            let newlyLive = lock.withLock { () -> Bool in
                guard !state.record.live[block] else { return false }
                state.record.live[block] = true
                state.liveChanged = true
                return true
            }
            if newlyLive { try writeRecord { _ in } }
            let memberOffset = dataOffset + slot * geometry.blockSize + within
            var written = 0
            var lastFailed: UnitID?
            for (member, unit) in holders(roles: roles, slot: slot, forWrite: true) {
                do throws(StorageError) {
                    try unit.write(piece, at: memberOffset)
                    written += 1
                } catch  where error.code == .outOfBounds {
                    throw error
                } catch {
                    lastFailed = member
                    try recordFailure(of: member, error)
                }
            }
            guard written > 0 else {
                throw StorageError(
                    .unavailable, unit: lastFailed ?? self.member(ofRole: roles[0]), offset: offset + range.lowerBound,
                    detail: "no member took block \(block)")
            }
        }
    }

    /// Writes the live map if it changed, then makes every member durable; a member whose
    /// synchronize fails is recorded as failed. Throws when a block's every copy failed.
    public func synchronize() throws(StorageError) {
        let changed = lock.withLock { state.liveChanged }
        if changed {
            try writeRecord { _ in }
            try checkEveryBlockHeld()
            return
        }
        for (member, unit) in liveUnits() {
            do throws(StorageError) {
                try unit.synchronize()
            } catch {
                try recordFailure(of: member, error)
            }
        }
        try checkEveryBlockHeld()
    }

    /// Passes the discard to every copy; whole blocks in `range` stop being live (a partial
    /// block stays live, its discarded part zeros).
    public func discard(_ range: Range<Int>) throws(StorageError) {
        try checkRange(range.lowerBound, range.count)
        try forEachPiece(offset: range.lowerBound, count: range.count) { (block, within, piece) throws(StorageError) in
            let (roles, slot) = geometry.placement(ofBlock: block)
            let memberOffset = dataOffset + slot * geometry.blockSize + within
            for (member, unit) in holders(roles: roles, slot: slot, forWrite: true, everySlot: true) {
                do throws(StorageError) {
                    try unit.discard(memberOffset..<memberOffset + piece.count)
                } catch {
                    try recordFailure(of: member, error)
                }
            }
            if piece.count == geometry.blockSize {
                lock.withLock {
                    if state.record.live[block] {
                        state.record.live[block] = false
                        state.liveChanged = true
                    }
                }
            }
        }
    }

    /// Whether block `block` holds data.
    public func isLive(block: Int) -> Bool {
        lock.withLock { state.record.live[block] }
    }

    private func checkRange(_ offset: Int, _ count: Int) throws(StorageError) {
        guard offset >= 0, count >= 0, offset <= capacity, count <= capacity - offset else {
            throw StorageError(.outOfBounds, unit: id, offset: offset, detail: "\(count) bytes in \(capacity)")
        }
    }

    /// Calls `body` for each block piece of `offset..<offset + count` with the block, the
    /// offset within it and the piece's range relative to `offset`, holding the block's stripe.
    private func forEachPiece(
        offset: Int, count: Int, _ body: (Int, Int, Range<Int>) throws(StorageError) -> Void
    ) throws(StorageError) {
        var done = 0
        while done < count {
            let position = offset + done
            let block = position / geometry.blockSize
            let within = position % geometry.blockSize
            let length = min(geometry.blockSize - within, count - done)
            let stripe = stripes[block % stripes.count]
            stripe.lock()
            defer { stripe.unlock() }
            try body(block, within, done..<done + length)
            done += length
        }
    }

    private func member(ofRole role: Int) -> UnitID {
        lock.withLock { state.record.roles[role] }
    }

    /// The members to read (first first) or write for a block at `slot` of `roles`: the roles'
    /// members that have not failed and, for a write or once nothing else holds it, the
    /// migration's target when it already holds the slot.
    ///
    /// A discard (`everySlot`) reaches the target at any slot: the copy skips blocks that are
    /// not live, trusting the target to read zeros there, and a block the copy took before a
    /// restart may be discarded before the copy comes back to it.
    private func holders(roles: [Int], slot: Int, forWrite: Bool, everySlot: Bool = false) -> [Holder] {
        lock.withLock {
            var result: [Holder] = []
            let failed = Set(state.record.failed)
            for role in roles {
                let member = state.record.roles[role]
                if !failed.contains(member), let unit = state.units[member] { result.append((member, unit)) }
            }
            if let migration = state.record.migration, roles.contains(migration.role),
                slot < state.cursor || everySlot, forWrite || result.isEmpty, let unit = state.units[migration.target]
            {
                result.append((migration.target, unit))
            }
            return result
        }
    }

    private func liveUnits() -> [Holder] {
        lock.withLock {
            let failed = Set(state.record.failed)
            return state.units.filter { !failed.contains($0.key) }.sorted { $0.key < $1.key }.map { ($0.key, $0.value) }
        }
    }

    private func checkEveryBlockHeld() throws(StorageError) {
        let lost = lock.withLock { () -> UnitID? in
            let failed = Set(state.record.failed)
            for group in 0..<geometry.groups {
                let roles = geometry.layout == .mirror ? [2 * group, 2 * group + 1] : [group]
                let members = roles.map { state.record.roles[$0] }
                if members.allSatisfy({ failed.contains($0) }) { return members.last }
            }
            return nil
        }
        if let lost {
            throw StorageError(.unavailable, unit: lost, detail: "every copy of a part of the array failed")
        }
    }

    // MARK: - Failures

    /// Records `member` as failed, durably on every other member. A migration whose target
    /// failed is abandoned; a proactive migration whose source failed becomes a rebuild.
    public func fail(member: UnitID) throws(StorageError) {
        try recordFailure(of: member, StorageError(.unavailable, unit: member, detail: "failed by request"))
    }

    private func recordFailure(of member: UnitID, _ error: StorageError) throws(StorageError) {
        let isNew = lock.withLock { () -> Bool in
            guard !state.record.failed.contains(member) else { return false }
            Self.markFailed(member, in: &state.record, geometry: geometry)
            if state.record.migration == nil { state.cursor = 0 }
            return true
        }
        if isNew { try writeRecord { _ in } }
    }

    /// Records `member` as failed in `record` with every consequence: it leaves the spares and
    /// the members to erase; a migration to it is abandoned; a proactive migration from it
    /// becomes a rebuild from its mirror partner, or, with no partner (concatenated), is
    /// abandoned and its target erased before it is a spare again (a target holds stale
    /// blocks where the copy skipped dead ones, and a spare must read as zeros).
    private static func markFailed(_ member: UnitID, in record: inout ArrayRecord, geometry: ArrayGeometry) {
        guard !record.failed.contains(member) else { return }
        record.failed.append(member)
        record.spares.removeAll { $0 == member }
        record.erasing.removeAll { $0 == member }
        if let migration = record.migration {
            if migration.target == member {
                record.migration = nil
            } else if record.roles[migration.role] == member {
                if let partner = geometry.partner(of: migration.role), !record.failed.contains(record.roles[partner]) {
                    record.migration?.kind = .rebuild
                } else {
                    record.migration = nil
                    record.erasing.append(migration.target)
                }
            }
        }
        record.generation += 1
    }

    // MARK: - Metadata

    /// Applies `change` to the record, bumps its sequence and writes it to every member that has
    /// not failed, then synchronizes each; a member that fails is recorded as failed and the
    /// record written again without it. Throws when no member took it.
    private func writeRecord(_ change: (inout ArrayRecord) -> Void) throws(StorageError) {
        metadataLock.lock()
        defer { metadataLock.unlock() }
        lock.withLock { change(&state.record) }
        while true {
            let (record, targets) = lock.withLock { () -> (ArrayRecord, [Holder]) in
                state.record.sequence += 1
                state.liveChanged = false
                let record = state.record
                let failed = Set(state.record.failed)
                let targets = state.units.filter { !failed.contains($0.key) }.sorted { $0.key < $1.key }
                return (record, targets.map { ($0.key, $0.value) })
            }
            guard !targets.isEmpty else {
                throw StorageError(.unavailable, unit: id, detail: "no member left to hold the array's record")
            }
            // Whole 4 KiB pages, as a drive writes them: a torn page then tears only this slot,
            // and a flash member does not count a page per record against a few hundred bytes.
            var bytes = record.encode()
            bytes.append(contentsOf: repeatElement(0, count: roundUp(bytes.count, to: 4096) - bytes.count))
            let offset = ArrayLabel.size + Int(record.sequence % 2) * slotSize
            var failures: [UnitID] = []
            for (member, unit) in targets {
                do throws(StorageError) {
                    try unit.write(bytes, at: offset)
                    try unit.synchronize()
                } catch {
                    failures.append(member)
                }
            }
            if failures.isEmpty { return }
            lock.withLock {
                for member in failures { Self.markFailed(member, in: &state.record, geometry: geometry) }
                if state.record.migration == nil { state.cursor = 0 }
            }
        }
    }

    // MARK: - Spares and migration

    /// Adds `unit` as a spare: labels it, erases its data region and records it on every member.
    public func addSpare(_ unit: any StorageUnit) throws(StorageError) {
        let known = lock.withLock { state.units[unit.id] != nil }
        let label = ArrayLabel(
            arrayID: arrayID, member: unit.id, layout: geometry.layout, blockSize: geometry.blockSize,
            blocksPerRole: geometry.blocksPerRole, slotSize: slotSize)
        guard !known, unit.capacity >= label.requiredCapacity else {
            throw StorageError(
                .invalidConfiguration, unit: unit.id,
                detail: known
                    ? "already in the array" : "\(unit.capacity) bytes; a role needs \(label.requiredCapacity)")
        }
        try unit.write(label.encode(), at: 0)
        try unit.discard(dataOffset..<unit.capacity)
        try unit.synchronize()
        lock.withLock { state.units[unit.id] = unit }
        try writeRecord { $0.spares.append(unit.id) }
    }

    /// Starts moving the data of `member` (a worn member still serving) to a spare. Throws
    /// ``FaultToleranceCore/StorageError/Code/invalidConfiguration`` when a migration runs, no
    /// spare is free or `member` fills no role.
    public func beginMigration(of member: UnitID) throws(StorageError) {
        try begin(member: member, kind: .proactive)
    }

    /// Starts rebuilding the role of `member` (failed) onto a spare from its mirror partner.
    public func beginRebuild(of member: UnitID) throws(StorageError) {
        try begin(member: member, kind: .rebuild)
    }

    private func begin(member: UnitID, kind: MigrationState.Kind) throws(StorageError) {
        let problem = lock.withLock { () -> String? in
            let record = state.record
            guard record.migration == nil else { return "a migration of role \(record.migration?.role ?? 0) runs" }
            guard let role = record.roles.firstIndex(of: member) else { return "\(member) fills no role" }
            guard !record.spares.isEmpty else { return "no spare is free" }
            if kind == .rebuild {
                guard let partner = geometry.partner(of: role), !record.failed.contains(record.roles[partner]) else {
                    return "\(member) has no mirror partner to rebuild from"
                }
            }
            if kind == .proactive, record.failed.contains(member) { return "\(member) failed: rebuild it" }
            return nil
        }
        if let problem { throw StorageError(.invalidConfiguration, unit: member, detail: problem) }
        // The copy skips blocks that are not live, so the target must read as zeros: a spare
        // may hold what an earlier migration copied to it before a restart undid that migration.
        if let (spare, unit) = lock.withLock({ () -> (UnitID, any StorageUnit)? in
            guard let spare = state.record.spares.first, let unit = state.units[spare] else { return nil }
            return (spare, unit)
        }) {
            do throws(StorageError) {
                try unit.discard(dataOffset..<unit.capacity)
                try unit.synchronize()
            } catch {
                try recordFailure(of: spare, error)
                throw StorageError(.unavailable, unit: spare, detail: "the spare failed as it was erased: \(error)")
            }
        }
        lock.withLock { state.cursor = 0 }
        try writeRecord { record in
            guard let role = record.roles.firstIndex(of: member), !record.spares.isEmpty else { return }
            let target = record.spares.removeFirst()
            record.migration = MigrationState(role: role, target: target, kind: kind, resumeFrom: 0)
        }
    }

    /// Copies up to `maximumBlocks` live blocks of the migrating role to its target (passing at
    /// most 16 times as many slots, live or not), then makes
    /// the progress durable; once every block is copied, swaps the target in, makes that
    /// durable on every member and erases the member it replaced. Returns the report when the
    /// migration finished in this step, `nil` while it goes on. Throws
    /// ``FaultToleranceCore/StorageError/Code/invalidConfiguration`` when no migration runs, and
    /// ``FaultToleranceCore/StorageError/Code/unavailable`` when no copy of a block is left to
    /// read (the migration is then abandoned).
    ///
    /// With `erase` false the old member is left in ``Status/erasing`` (the report says it was
    /// not erased) for a later ``finishErases()``: the swap is durable, so the data is safe and
    /// the erase (a discard of the whole data region, slow on some file systems) can wait.
    public func copyStep(maximumBlocks: Int, erase: Bool = true) throws(StorageError) -> MigrationReport? {
        guard let migration = lock.withLock({ state.record.migration }) else {
            throw StorageError(.invalidConfiguration, unit: id, detail: "no migration runs")
        }
        // A step copies up to `maximumBlocks` live blocks; dead slots cost a look each, so a step
        // passes at most 16 times as many slots in all.
        var copied = 0
        var visited = 0
        let buffer = UnsafeMutableRawBufferPointer.allocate(byteCount: geometry.blockSize, alignment: 4096)
        defer { buffer.deallocate() }
        while copied < max(1, maximumBlocks), visited < max(1, maximumBlocks) * 16 {
            let slot = lock.withLock { state.cursor }
            guard slot < geometry.blocksPerRole else { break }
            guard let wasLive = try copySlot(slot, of: migration, buffer: buffer) else { return nil }
            if wasLive { copied += 1 }
            visited += 1
        }
        // What the record will call copied must be durable on the target before any member has
        // the record.
        let (cursor, target) = lock.withLock { (state.cursor, state.units[migration.target]) }
        if let target {
            do throws(StorageError) {
                try target.synchronize()
            } catch {
                try recordFailure(of: migration.target, error)
                return nil
            }
        }
        try writeRecord { record in
            if record.migration?.target == migration.target { record.migration?.resumeFrom = cursor }
        }
        guard cursor >= geometry.blocksPerRole, let current = lock.withLock({ state.record.migration }),
            current.target == migration.target
        else { return nil }
        return try swap(current, erase: erase)
    }

    /// Copies slot `slot` if its block is live: whether it was, or `nil` when the migration was
    /// abandoned meanwhile.
    private func copySlot(_ slot: Int, of migration: MigrationState, buffer: UnsafeMutableRawBufferPointer)
        throws(StorageError) -> Bool?
    {
        let block = geometry.block(role: migration.role, slot: slot)
        let stripe = stripes[block % stripes.count]
        stripe.lock()
        defer { stripe.unlock() }
        let (sources, target, live) = lock.withLock {
            () -> ([Holder], (any StorageUnit)?, Bool) in
            guard state.record.migration?.target == migration.target, state.cursor == slot else {
                return ([], nil, false)
            }
            let failed = Set(state.record.failed)
            var roles = [migration.role]
            if let partner = geometry.partner(of: migration.role) { roles.append(partner) }
            let sources = roles.map { state.record.roles[$0] }.filter { !failed.contains($0) }.compactMap { member in
                state.units[member].map { (member, $0) }
            }
            return (sources, state.units[migration.target], state.record.live[block])
        }
        guard let target else { return nil }
        if live {
            let offset = dataOffset + slot * geometry.blockSize
            var read = false
            for (member, unit) in sources where !read {
                do throws(StorageError) {
                    try unit.read(into: buffer, at: offset)
                    read = true
                } catch {
                    try recordFailure(of: member, error)
                }
            }
            guard read else {
                throw StorageError(
                    .unavailable, unit: migration.target, detail: "no member left to copy block \(block) from")
            }
            do throws(StorageError) {
                try target.write(UnsafeRawBufferPointer(buffer), at: offset)
            } catch {
                try recordFailure(of: migration.target, error)
                return nil
            }
        }
        lock.withLock {
            state.cursor = slot + 1
            if live { state.bytesCopied += geometry.blockSize }
        }
        return live
    }

    /// Swaps the target in for the role, durably on every member, then erases the old member.
    private func swap(_ migration: MigrationState, erase: Bool) throws(StorageError) -> MigrationReport {
        for stripe in stripes { stripe.lock() }
        let old = lock.withLock { state.record.roles[migration.role] }
        let oldFailed = lock.withLock { state.record.failed.contains(old) }
        if plantedBug == .eraseBeforeSwapIsDurable, !oldFailed, let unit = lock.withLock({ state.units[old] }) {
            // The planted bug: the old member's data is gone before any member knows of the swap.
            try? unit.discard(dataOffset..<unit.capacity)
        }
        do throws(StorageError) {
            try writeRecord { record in
                record.roles[migration.role] = migration.target
                record.migration = nil
                record.generation += 1
                if !oldFailed { record.erasing.append(old) }
            }
        } catch {
            for stripe in stripes { stripe.unlock() }
            throw error
        }
        let bytesCopied = lock.withLock {
            defer {
                state.cursor = 0
                state.bytesCopied = 0
            }
            return state.bytesCopied
        }
        for stripe in stripes { stripe.unlock() }
        if erase { try finishErases() }
        return MigrationReport(
            role: migration.role, from: old, to: migration.target, bytesCopied: bytesCopied, erased: erase && !oldFailed
        )
    }

    /// Erases every member waiting for it (TRIM or hole punching over the data region) and
    /// makes each a spare: the member a swap left, or the target of an abandoned migration.
    /// The swap and ``open(id:units:allowMissing:)`` call it; ``SpareController`` calls it
    /// whenever ``Status/erasing`` is not empty.
    public func finishErases() throws(StorageError) {
        let erasing = lock.withLock {
            state.record.erasing.compactMap { member in state.units[member].map { (member, $0) } }
        }
        for (member, unit) in erasing {
            do throws(StorageError) {
                try unit.discard(dataOffset..<unit.capacity)
                try unit.synchronize()
            } catch {
                try recordFailure(of: member, error)
                continue
            }
            try writeRecord { record in
                guard record.erasing.contains(member) else { return }
                record.erasing.removeAll { $0 == member }
                record.spares.append(member)
            }
        }
    }

    /// Runs a migration begun with ``beginMigration(of:)`` or ``beginRebuild(of:)`` (or resumed by
    /// ``open(id:units:allowMissing:)``) to its end in steps of `stepBlocks`, yielding between
    /// steps and calling `progress` with the role slots done and the total. `erase` as for
    /// ``copyStep(maximumBlocks:erase:)``.
    public func runMigration(
        stepBlocks: Int = 256, erase: Bool = true, progress: (_ done: Int, _ total: Int) -> Void = { _, _ in }
    ) async throws(StorageError) -> MigrationReport {
        while true {
            if let report = try copyStep(maximumBlocks: stepBlocks, erase: erase) { return report }
            guard let cursor = lock.withLock({ state.record.migration == nil ? nil : state.cursor }) else {
                throw StorageError(.unavailable, unit: id, detail: "the migration was abandoned: its target failed")
            }
            progress(cursor, geometry.blocksPerRole)
            await Task.yield()
        }
    }
}

private func roundUp(_ value: Int, to multiple: Int) -> Int {
    (value + multiple - 1) / multiple * multiple
}

private func hex(_ value: UInt64) -> String {
    String(value, radix: 16)
}
