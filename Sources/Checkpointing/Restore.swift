public import FaultToleranceCore
public import LiveCopy

extension CheckpointStore {
    /// Writes the state of item `name` at checkpoint `id` into `destination` (exactly the
    /// item's size): every page from its chunk, zero pages as zeros. Throws
    /// ``CheckpointError/Code/damaged`` naming the checkpoint, unit and offset of the first
    /// chunk that does not check; never fills missing data with zeros.
    public func restore(
        _ id: CheckpointID, item name: String, into destination: UnsafeMutableRawBufferPointer
    ) throws(CheckpointError) {
        let item = try resolvedItem(id, name: name)
        guard destination.count == item.unitSize * item.unitCount, let base = destination.baseAddress else {
            throw CheckpointError(
                .geometryMismatch, checkpoint: id,
                detail: "item \(name) is \(item.unitSize * item.unitCount) bytes, the destination \(destination.count)")
        }
        let direct = { (pages: Range<Int>) in
            UnsafeMutableRawBufferPointer(
                start: base + pages.lowerBound * item.unitSize, count: pages.count * item.unitSize)
        }
        try forEachPiece(of: item, checkpoint: id, direct: direct) { (pages, bytes) throws(CheckpointError) in
            let target = base + pages.lowerBound * item.unitSize
            if let bytes, let source = bytes.baseAddress {
                target.copyMemory(from: source, byteCount: bytes.count)
            } else {
                target.initializeMemory(as: UInt8.self, repeating: 0, count: pages.count * item.unitSize)
            }
        }
    }

    /// Writes the state of item `name` at checkpoint `id` into `unit` (at least the item's
    /// size) and synchronizes it.
    public func restore(_ id: CheckpointID, item name: String, into unit: any StorageUnit) throws(CheckpointError) {
        let item = try resolvedItem(id, name: name)
        guard unit.capacity >= item.unitSize * item.unitCount else {
            throw CheckpointError(
                .geometryMismatch, checkpoint: id,
                detail: "item \(name) is \(item.unitSize * item.unitCount) bytes, the unit \(unit.capacity)")
        }
        let zeros = [UInt8](repeating: 0, count: item.unitSize * 64)
        try forEachPiece(of: item, checkpoint: id) { (pages, bytes) throws(CheckpointError) in
            do throws(StorageError) {
                if let bytes {
                    try unit.write(bytes, at: pages.lowerBound * item.unitSize)
                    return
                }
                var page = pages.lowerBound
                while page < pages.upperBound {
                    let count = min(64, pages.upperBound - page)
                    try zeros.withBytes { (raw) throws(StorageError) in
                        try unit.write(
                            UnsafeRawBufferPointer(rebasing: raw[0..<count * item.unitSize]), at: page * item.unitSize)
                    }
                    page += count
                }
            } catch {
                throw CheckpointError(error, checkpoint: id)
            }
        }
        do throws(StorageError) { try unit.synchronize() } catch { throw CheckpointError(error, checkpoint: id) }
    }

    /// Writes the state of region `name` at checkpoint `id` into `memory` (same page size and
    /// count), through its gate.
    public func restore(_ id: CheckpointID, item name: String, into memory: TrackedMemory) throws(CheckpointError) {
        let item = try resolvedItem(id, name: name)
        guard item.unitSize == memory.pageSize, item.unitCount == memory.pageCount else {
            throw CheckpointError(
                .geometryMismatch, checkpoint: id,
                detail:
                    "item \(name) has \(item.unitCount) pages of \(item.unitSize), the region \(memory.pageCount) of \(memory.pageSize)"
            )
        }
        let zeros = [UInt8](repeating: 0, count: item.unitSize)
        try forEachPiece(of: item, checkpoint: id) { (pages, bytes) throws(CheckpointError) in
            do {
                if let bytes {
                    try memory.write(bytes, at: pages.lowerBound * item.unitSize)
                } else {
                    for page in pages {
                        try zeros.withUnsafeBytes { raw in
                            Result { () throws(LiveCopyError) in try memory.write(raw, at: page * item.unitSize) }
                        }.get()
                    }
                }
            } catch {
                throw CheckpointError(.outOfBounds, checkpoint: id, detail: "\(error)")
            }
        }
    }

    /// Reads a raw chunk's payload straight into `destination` (exactly its size) and checks
    /// its frame checksum there; `false`, with `destination` untouched, when the frame is not
    /// raw or not that size.
    private func readWholeRawChunk(
        _ reference: ChunkReference, into destination: UnsafeMutableRawBufferPointer, checkpoint: CheckpointID
    ) throws(CheckpointError) -> Bool {
        guard let unit = pool.unit(reference.unit), reference.offset >= UnitHeader.size,
            reference.length <= unit.capacity - reference.offset
        else { return false }
        let headerBytes: [UInt8]
        do throws(StorageError) {
            headerBytes = try unit.read(at: reference.offset, count: ChunkFrame.headerSize)
        } catch { throw CheckpointError(error, checkpoint: checkpoint) }
        guard case .success(let header) = headerBytes.withUnsafeBytes({ ChunkFrame.decodeHeader($0) }),
            header.contents == .data, header.encoding == .raw, header.storedLength == destination.count
        else { return false }
        let payloadChecksum: UInt32
        do throws(StorageError) {
            payloadChecksum = try unit.readChecksummed(into: destination, at: reference.offset + ChunkFrame.headerSize)
        } catch { throw CheckpointError(error, checkpoint: checkpoint) }
        let headerChecksum = headerBytes.withUnsafeBytes {
            CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<28]))
        }
        let checksum = CRC32C.combine(headerChecksum, payloadChecksum, secondLength: destination.count)
        guard checksum == header.frameChecksum else {
            throw CheckpointError(
                .damaged, checkpoint: checkpoint, unit: reference.unit, offset: reference.offset,
                detail: "chunk frame checksum mismatch")
        }
        return true
    }

    func resolvedItem(_ id: CheckpointID, name: String) throws(CheckpointError) -> CheckpointManifest.Item {
        let state = try resolve(id)
        guard let item = state.items.first(where: { $0.name == name }) else {
            throw CheckpointError(.geometryMismatch, checkpoint: id, detail: "no item named \(name)")
        }
        return item
    }

    /// Calls `body` for each extent of a resolved item in page order, with its bytes (or `nil`
    /// for zeros), reading each chunk once.
    ///
    /// With `direct`, an extent that is a whole raw chunk is read straight into the memory
    /// `direct` gives for its pages and checked there (one copy and one checksum pass), and
    /// `body` is not called for it.
    func forEachPiece(
        of item: CheckpointManifest.Item, checkpoint: CheckpointID,
        direct: ((Range<Int>) -> UnsafeMutableRawBufferPointer)? = nil,
        _ body: (Range<Int>, UnsafeRawBufferPointer?) throws(CheckpointError) -> Void
    ) throws(CheckpointError) {
        var covered = 0
        var cached: (reference: ChunkReference, bytes: [UInt8], range: Range<Int>)?
        for extent in item.extents {
            guard extent.first == covered else {
                throw CheckpointError(
                    .damaged, checkpoint: checkpoint,
                    detail: "item \(item.name): pages \(covered)..<\(extent.first) missing")
            }
            covered = extent.pages.upperBound
            switch extent.source {
            case .zero:
                try body(extent.pages, nil)
            case .chunk(let reference, let skip):
                let bytes = extent.count * item.unitSize
                if let direct, skip == 0, reference.length == ChunkFrame.headerSize + bytes,
                    try readWholeRawChunk(reference, into: direct(extent.pages), checkpoint: checkpoint)
                {
                    continue
                }
                if cached?.reference != reference {
                    let payload = try readPayload(reference, contents: .data, checkpoint: checkpoint)
                    cached = (reference, payload.bytes, payload.range)
                }
                guard let bytes = cached?.bytes, let range = cached?.range,
                    (skip + extent.count) * item.unitSize <= range.count
                else {
                    throw CheckpointError(
                        .damaged, checkpoint: checkpoint, unit: reference.unit, offset: reference.offset,
                        detail: "item \(item.name) takes pages past the chunk's end")
                }
                try bytes.withBytes { (raw) throws(CheckpointError) in
                    try body(
                        extent.pages,
                        UnsafeRawBufferPointer(
                            rebasing: raw[
                                range.lowerBound + skip * item.unitSize..<range.lowerBound + (skip + extent.count)
                                    * item.unitSize]))
                }
            }
        }
        guard covered == item.unitCount else {
            throw CheckpointError(
                .damaged, checkpoint: checkpoint,
                detail: "item \(item.name): pages \(covered)..<\(item.unitCount) missing")
        }
    }
}
