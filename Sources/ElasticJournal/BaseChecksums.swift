public import FaultToleranceCore

/// The layout of a base image's chunk checksums.
///
/// A base unit is `[manifest slots, 1 KiB][checksum table, up to 3 KiB][image]`. The image is
/// cut into chunks of ``chunkSize(imageSize:)`` bytes (64 KiB, or larger for images over 48
/// MiB so the table fits its 3 KiB: at most 768 entries); the table holds each chunk's
/// CRC32C, and the manifest holds the table's own CRC32C while the table matches the image.
///
/// An age-out first writes a manifest saying the table is stale, then applies the records,
/// then rewrites the checksums of the chunks it touched and a manifest saying the table is
/// current again; a crash in between leaves a stale table, which recovery recomputes in full.
/// Every read of an image (point-in-time images, `verify`) checks the chunks against a
/// current table, so damage to a base image is reported with its unit and offset instead of
/// being returned as data.
public enum BaseChecksums {
    /// Where the table starts in a base unit.
    public static let tableOffset = 2 * BaseManifest.slotSize
    /// The most entries the table holds.
    public static let maximumEntries = (JournalFormat.baseHeaderSize - tableOffset) / 4
    /// The smallest chunk.
    public static let minimumChunkSize = 64 << 10

    /// The chunk size for an image of `imageSize` bytes: 64 KiB, or the multiple of 4 KiB
    /// that keeps the table within ``maximumEntries``.
    public static func chunkSize(imageSize: Int) -> Int {
        let needed = (max(imageSize, 1) + maximumEntries - 1) / maximumEntries
        return max(minimumChunkSize, (needed + 4095) & ~4095)
    }

    /// How many chunks an image of `imageSize` bytes has.
    public static func chunkCount(imageSize: Int) -> Int {
        let size = chunkSize(imageSize: imageSize)
        return (imageSize + size - 1) / size
    }

    /// The table's bytes for `checksums`, little-endian.
    static func encode(_ checksums: [UInt32]) -> [UInt8] {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(checksums.count * 4)
        for checksum in checksums { bytes.appendLE(checksum) }
        return bytes
    }

    static func decode(_ bytes: [UInt8]) -> [UInt32] {
        bytes.withUnsafeBytes { raw in
            (0..<(bytes.count / 4)).map { raw.loadLE(UInt32.self, at: $0 * 4) ?? 0 }
        }
    }
}

extension BaseVolume {
    var chunkSize: Int { BaseChecksums.chunkSize(imageSize: size) }
    var chunkCount: Int { BaseChecksums.chunkCount(imageSize: size) }

    /// The chunks bytes `offset..<offset+count` of the image fall in.
    func chunks(offset: Int, count: Int) -> ClosedRange<Int>? {
        guard count > 0 else { return nil }
        return (offset / chunkSize)...((offset + count - 1) / chunkSize)
    }

    /// The image bytes of `chunk`.
    func range(of chunk: Int) -> Range<Int> {
        (chunk * chunkSize)..<min(size, (chunk + 1) * chunkSize)
    }

    /// The checksum of `chunk` as the image holds it now.
    func computeChecksum(of chunk: Int) throws(StorageError) -> UInt32 {
        let range = range(of: chunk)
        return CRC32C.checksum(
            try storage.read(at: JournalFormat.baseHeaderSize + range.lowerBound, count: range.count))
    }

    /// The stored table when the manifest vouches for it (its CRC matches); `nil` when the
    /// table is stale or absent.
    func currentTable() throws(StorageError) -> [UInt32]? {
        guard let expected = manifest.checksums else { return nil }
        let bytes = try storage.read(at: BaseChecksums.tableOffset, count: chunkCount * 4)
        guard CRC32C.checksum(bytes) == expected else { return nil }
        return BaseChecksums.decode(bytes)
    }

    /// The table to check an image against: `nil` only when the manifest says it is stale (an
    /// age-out in progress). A table the manifest vouches for whose bytes do not match is
    /// read again (a transient read error) and then reported as damage — never taken for a
    /// stale one, which would let an image go unchecked.
    func checkedTable(journal: JournalID) throws(JournalError) -> [UInt32]? {
        guard manifest.checksums != nil else { return nil }
        for _ in 0..<2 {
            do {
                if let table = try currentTable() { return table }
            } catch {
                throw JournalError(error, journal: journal)
            }
        }
        throw JournalError(
            .damaged, journal: journal, unit: storage.id, offset: BaseChecksums.tableOffset,
            detail: "base image of \(manifest.volume): its checksum table does not match the manifest")
    }

    /// Makes the table current: recomputes `touched` chunks over the table as it was before
    /// ``markChecksumsStale(_:)``, or every chunk when there was none or `full` (recovery,
    /// which cannot know what an interrupted age-out wrote); then writes the table and a
    /// manifest vouching for it.
    mutating func refreshChecksums(touched: Set<Int>, full: Bool = false) throws(StorageError) {
        var table: [UInt32]
        var recompute: [Int]
        if !full, let current = try currentTable(manifestChecksums: tableBeforeChange) {
            table = current
            recompute = touched.sorted()
        } else {
            table = [UInt32](repeating: 0, count: chunkCount)
            recompute = Array(0..<chunkCount)
        }
        for chunk in recompute where chunk < table.count { table[chunk] = try computeChecksum(of: chunk) }
        let bytes = BaseChecksums.encode(table)
        try storage.write(bytes, at: BaseChecksums.tableOffset)
        try storage.synchronize()
        let checksum = CRC32C.checksum(bytes)
        try update { $0.checksums = checksum }
        tableBeforeChange = nil
    }

    /// Marks the table stale in a new manifest (before the image changes), remembering the
    /// table's checksum so the refresh after the change can start from it.
    mutating func markChecksumsStale(_ body: (inout BaseManifest) -> Void) throws(StorageError) {
        if tableBeforeChange == nil { tableBeforeChange = manifest.checksums }
        try update { manifest in
            body(&manifest)
            manifest.checksums = nil
        }
    }

    /// The table as it was before ``markChecksumsStale(_:)`` (while an age-out applies), if
    /// it was current then.
    func tableBeforeApply() throws(StorageError) -> [UInt32]? {
        try currentTable(manifestChecksums: tableBeforeChange)
    }

    private func currentTable(manifestChecksums: UInt32?) throws(StorageError) -> [UInt32]? {
        guard let expected = manifestChecksums else { return nil }
        let bytes = try storage.read(at: BaseChecksums.tableOffset, count: chunkCount * 4)
        guard CRC32C.checksum(bytes) == expected else { return nil }
        return BaseChecksums.decode(bytes)
    }

    /// The first chunk of `image` (this volume's bytes) that does not match `table`, with its
    /// stored and computed checksums; `nil` when every chunk matches.
    func firstMismatch(in image: UnsafeRawBufferPointer, table: [UInt32]) -> (
        chunk: Int, stored: UInt32, computed: UInt32
    )? {
        for chunk in 0..<min(table.count, chunkCount) {
            let range = range(of: chunk)
            guard range.upperBound <= image.count else { break }
            let computed = CRC32C.checksum(UnsafeRawBufferPointer(rebasing: image[range]))
            if computed != table[chunk] { return (chunk, table[chunk], computed) }
        }
        return nil
    }

    /// The damage error for a mismatching chunk.
    func damage(chunk: Int, stored: UInt32, computed: UInt32, journal: JournalID) -> JournalError {
        let range = range(of: chunk)
        return JournalError(
            .damaged, journal: journal, unit: storage.id, offset: JournalFormat.baseHeaderSize + range.lowerBound,
            detail:
                "base image of \(manifest.volume): chunk \(chunk) (bytes \(range.lowerBound)..<\(range.upperBound)) "
                + "has checksum \(hex(computed)), the table says \(hex(stored))")
    }
}
