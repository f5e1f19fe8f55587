import ElasticJournal
import FaultToleranceCore

// Feeds arbitrary bytes to the journal's decoders. The first byte steers the harness; the
// rest is the record area of a unit. Every input must decode or be rejected with a typed
// error, never crash; every record accepted must re-encode to exactly the bytes it came from.
//
// When the first byte is odd the harness first repairs the checksum of every record it can
// find (with the unit's salt), so mutations get past the CRC to the fields behind it. When
// bit 1 is set, the bytes also become the record area of a unit in a memory pool and a whole
// store is opened over it: recovery (torn-tail cut, seal and chain checks), verify and a
// point-in-time image must all either work or throw a JournalError.

let salt: UInt64 = 0x5EED_5A17
let unitCapacity = 64 << 10

/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard let first = input.first else { return 0 }
    var bytes = Array(input.dropFirst().prefix(unitCapacity - 8192))
    if first & 1 == 1 { bytes = repairChecksums(bytes) }
    decodeRecords(bytes)
    _ = try? UnitHeader.decode(bytes)
    _ = try? UnitSeal.decode(bytes, salt: salt, maximumEntries: 64)
    _ = BaseManifest.decode(bytes[...])
    if first & 2 == 2 { openStore(over: bytes) }
    return 0
}

/// Rewrites the checksum of each record whose declared length fits.
func repairChecksums(_ bytes: [UInt8]) -> [UInt8] {
    var bytes = bytes
    var offset = 0
    while offset + JournalFormat.recordHeaderSize <= bytes.count {
        let length = bytes[offset..<(offset + 4)].reversed().reduce(0) { $0 << 8 | Int($1) }
        guard length >= JournalFormat.recordHeaderSize, offset + length <= bytes.count else { break }
        let checksum = bytes.withUnsafeBytes {
            RecordCodec.checksum(salt: salt, record: UnsafeRawBufferPointer(rebasing: $0[offset..<(offset + length)]))
        }
        for index in 0..<4 { bytes[offset + 28 + index] = UInt8(truncatingIfNeeded: checksum >> (8 * index)) }
        offset += JournalFormat.aligned8(length)
    }
    return bytes
}

func decodeRecords(_ bytes: [UInt8]) {
    var offset = 0
    while offset < bytes.count {
        let probe = bytes.withUnsafeBytes {
            RecordCodec.probe(UnsafeRawBufferPointer(rebasing: $0[offset...]), salt: salt, limit: bytes.count - offset)
        }
        guard case .record(let header) = probe else { return }
        guard let record = try? RecordCodec.decode(Array(bytes[offset..<(offset + header.length)]), salt: salt) else {
            fatalError("probe accepted a record that decode rejects at \(offset)")
        }
        var encoded = [UInt8](repeating: 0, count: header.footprint)
        let written = encoded.withUnsafeMutableBytes { target in
            record.bytes.withUnsafeBytes { payload in
                target.baseAddress.map {
                    RecordCodec.encode(
                        into: $0, salt: salt, sequence: record.sequence, time: record.time, volume: record.volume,
                        offset: record.offset, payload: payload, durableThrough: header.durableThrough)
                } ?? 0
            }
        }
        guard written == header.footprint, encoded[0..<header.length] == bytes[offset..<(offset + header.length)] else {
            fatalError("record at \(offset) does not re-encode to its own bytes")
        }
        offset += header.footprint
    }
}

func openStore(over bytes: [UInt8]) {
    let pool = MemoryStoragePool(unitCapacity: unitCapacity, budget: 4 * unitCapacity)
    let bases = MemoryStoragePool(unitCapacity: JournalFormat.baseHeaderSize + 4096, budget: 1 << 20)
    do {
        let unit = try pool.allocate()
        let header = UnitHeader(
            journal: 1, unit: unit.id, salt: salt, firstSequence: 1, firstTime: .zero, previousLastSequence: 0,
            previousSealChecksum: 0, indexInterval: 4096,
            trailerOffset: JournalFormat.trailerOffset(capacity: unitCapacity, indexInterval: 4096),
            capacity: unitCapacity)
        try unit.write(header.encoded(), at: 0)
        try unit.write(bytes, at: JournalFormat.headerPageSize)
        let base = try bases.allocate()
        let manifest = BaseManifest(
            journal: 1, volume: 1, appliedThrough: 0, appliedTime: .zero, generation: 1, window: .seconds(60),
            quota: 4)
        try base.write(manifest.encoded(), at: BaseManifest.slotSize)
    } catch {
        fatalError("setting up the memory pools failed: \(error)")
    }
    do {
        let store = try JournalStore(journalPool: pool, basePool: bases, clock: { Instant(nanoseconds: 1 << 62) })
        defer { try? store.close() }
        guard let journal = store.journal(1) else { return }
        _ = try journal.verify()
        _ = try journal.image(of: 1, at: journal.status.lastTime)
        try journal.appendBuffered(volume: 1, offset: 0, bytes: UnsafeRawBufferPointer(start: nil, count: 0))
        try journal.synchronize()
        try store.close()
    } catch {
        // A typed JournalError is the expected way to refuse hostile bytes.
    }
}
