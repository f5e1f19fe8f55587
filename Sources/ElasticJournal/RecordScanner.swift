import FaultToleranceCore

/// Reads the records of one unit in large chunks and hands each to a closure.
enum RecordScanner {
    /// Why a scan ended.
    enum End: Equatable {
        /// It reached `end` (every record up to there is valid).
        case reachedEnd(Int)
        /// The closure asked to stop before the record at this offset.
        case stopped(Int)
        /// Zeros at this offset: nothing was written here.
        case empty(Int)
        /// Bytes that are not a valid record at this offset.
        case invalid(Int, JournalFormatError)

        var offset: Int {
            switch self {
            case .reachedEnd(let offset), .stopped(let offset), .empty(let offset), .invalid(let offset, _): offset
            }
        }
    }

    /// Reads start at 64 KiB (a seek needs about one index interval) and double up to 4 MiB
    /// as a scan goes on (a verify or a replay reads whole units).
    static let firstChunkSize = 64 << 10
    static let chunkSize = 4 << 20

    /// Scans records from `start` until `end`; a record may not extend past `limit`.
    /// `body` gets each record's header, offset and payload and returns whether to go on.
    static func scan(
        _ storage: any StorageUnit,
        salt: UInt64,
        from start: Int,
        to end: Int,
        limit: Int,
        body: (RecordHeader, Int, UnsafeRawBufferPointer) throws(JournalError) -> Bool
    ) throws(JournalError) -> End {
        var buffer = [UInt8](repeating: 0, count: min(firstChunkSize, max(4096, end - start)))
        var chunkStart = start
        var chunkCount = 0
        var position = start
        var rereadAt = -1
        while position < end {
            // Refill when the next record header is not wholly in the chunk.
            if position + JournalFormat.recordHeaderSize > chunkStart + chunkCount {
                if chunkCount > 0 && buffer.count < min(chunkSize, end - position) {
                    buffer = [UInt8](repeating: 0, count: min(chunkSize, buffer.count * 2))
                }
                chunkStart = position
                chunkCount = min(buffer.count, end - position)
                try read(storage, into: &buffer, count: chunkCount, at: chunkStart)
            }
            let probe = buffer.withUnsafeBytes { raw in
                RecordCodec.probe(
                    UnsafeRawBufferPointer(rebasing: raw[(position - chunkStart)..<chunkCount]),
                    salt: salt, limit: limit - position)
            }
            switch probe {
            case .empty:
                return .empty(position)
            case .invalid(let error):
                // Read once more before calling it invalid: a transient read error (a flipped
                // bit on the bus) must not turn into damage, which recovery acts on.
                guard rereadAt != position else { return .invalid(position, error) }
                rereadAt = position
                chunkStart = position
                chunkCount = min(buffer.count, end - position)
                try read(storage, into: &buffer, count: chunkCount, at: chunkStart)
            case .needMore(let needed):
                guard position + needed <= end else {
                    return .invalid(position, JournalFormatError("record of \(needed) bytes runs past the end"))
                }
                if needed > buffer.count { buffer = [UInt8](repeating: 0, count: needed) }
                chunkStart = position
                chunkCount = min(buffer.count, end - position)
                try read(storage, into: &buffer, count: chunkCount, at: chunkStart)
            case .record(let header):
                let keepGoing = try buffer.withUnsafeBytes { raw in
                    Result { () throws(JournalError) -> Bool in
                        let from = position - chunkStart + JournalFormat.recordHeaderSize
                        let payload = UnsafeRawBufferPointer(rebasing: raw[from..<(from + header.payloadCount)])
                        return try body(header, position, payload)
                    }
                }.get()
                if !keepGoing { return .stopped(position) }
                position += header.footprint
            }
        }
        return .reachedEnd(position)
    }

    private static func read(
        _ storage: any StorageUnit, into buffer: inout [UInt8], count: Int, at offset: Int
    ) throws(JournalError) {
        let result = buffer.withUnsafeMutableBytes { raw in
            Result { () throws(StorageError) in
                try storage.read(into: UnsafeMutableRawBufferPointer(rebasing: raw[0..<count]), at: offset)
            }
        }
        do { try result.get() } catch { throw JournalError(error) }
    }
}
