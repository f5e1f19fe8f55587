import CFaultToleranceShims
import FaultToleranceCore
public import NIOCore

/// A batch of pages on the wire (message type ``LiveCopyWire/MessageType/pageBatch``).
///
/// Layout (little-endian): version `u8`, flags `u8` (bit 0: body deflated), reserved `u16`
/// (zero), session `u64`, round `u32`, entry count `u32`, body length `u32` (uncompressed),
/// body CRC32C `u32` (of the uncompressed body when deflated, else zero: the transport frame's
/// CRC32C covers it). The body is a run of entries: page index `u64`, kind `u8` (0: the page's
/// bytes follow, 1: the page is all zeros), three reserved zero bytes, then the page's bytes for
/// kind 0. The decoder accepts nothing the encoder would not write.
public struct PageBatch: Sendable {
    /// One page in a batch.
    public struct Entry: Sendable, Hashable {
        /// The page index.
        public var page: Int
        /// Where the page's bytes start in ``PageBatch/body``, or nil for a zero page.
        public var offset: Int?
    }

    /// Size of the batch header.
    public static let headerSize = 28
    /// Size of an entry header.
    public static let entryHeaderSize = 12
    /// Flag: the body is deflated.
    public static let deflatedFlag: UInt8 = 1

    /// The session.
    public var session: UInt64
    /// The round the pages belong to.
    public var round: Int
    /// The entries in order.
    public var entries: [Entry]
    /// The uncompressed body.
    public var body: ByteBuffer

    /// The largest body a batch may declare (64 MiB; a sender's batches are about its
    /// `batchBytes`, 1 MiB by default, at most twice that).
    public static let maximumBodyLength = 64 << 20

    /// Decodes a batch for a region of `pageCount` pages of `pageSize` bytes; refuses anything
    /// malformed with ``LiveCopyError/Code/malformedMessage``, never trapping.
    public static func decode(_ payload: ByteBuffer, pageSize: Int, pageCount: Int) throws(LiveCopyError) -> PageBatch {
        var buffer = payload
        guard
            let (version, flags, reserved, session, round, count, length, crc) = buffer.readMultipleIntegers(
                as: (UInt8, UInt8, UInt16, UInt64, UInt32, UInt32, UInt32, UInt32).self)
        else { throw LiveCopyWire.malformed("page batch shorter than its header") }
        try LiveCopyWire.check(version)
        guard flags & ~deflatedFlag == 0, reserved == 0 else {
            throw LiveCopyWire.malformed("page batch has unknown flags \(flags) or reserved \(reserved)")
        }
        // Every entry is at least a header; a data entry is a header and a page.
        let bodyLength = Int(length)
        guard Int(count) <= bodyLength / entryHeaderSize, bodyLength <= Int(count) * (entryHeaderSize + pageSize)
        else { throw LiveCopyWire.malformed("page batch of \(count) entries cannot be \(length) bytes") }
        // What a batch may make the receiver hold (and inflate to), checked before inflating:
        // no more entries than the region has pages, no more than 64 MiB of body.
        guard Int(count) <= pageCount, bodyLength <= maximumBodyLength else {
            throw LiveCopyWire.malformed(
                "page batch of \(count) entries and \(length) bytes exceeds \(pageCount) pages or \(maximumBodyLength) bytes"
            )
        }
        var body: ByteBuffer
        if flags & deflatedFlag != 0 {
            let compressed = Array(buffer.readableBytesView)
            let inflated: [UInt8]
            do {
                inflated = try Inflate.decompress(compressed, maximumOutputSize: bodyLength)
            } catch {
                throw LiveCopyWire.malformed("page batch body does not inflate: \(error)")
            }
            guard inflated.count == bodyLength, CRC32C.checksum(inflated) == crc else {
                throw LiveCopyWire.malformed("page batch body fails its checksum after inflating")
            }
            body = ByteBuffer(bytes: inflated)
        } else {
            guard crc == 0, buffer.readableBytes == bodyLength else {
                throw LiveCopyWire.malformed("page batch body is \(buffer.readableBytes) bytes, header says \(length)")
            }
            body = buffer
            body.moveReaderIndex(to: buffer.readerIndex)
        }
        var entries: [Entry] = []
        entries.reserveCapacity(Int(count))
        var cursor = body
        let start = cursor.readerIndex
        for _ in 0..<count {
            guard let (page, kind, pad1, pad2) = cursor.readMultipleIntegers(as: (UInt64, UInt8, UInt8, UInt16).self)
            else { throw LiveCopyWire.malformed("page batch entry cut short") }
            guard page < UInt64(pageCount) else {
                throw LiveCopyWire.malformed("page \(page) outside a region of \(pageCount) pages")
            }
            guard pad1 == 0, pad2 == 0 else { throw LiveCopyWire.malformed("page batch entry has nonzero padding") }
            switch kind {
            case 0:
                guard cursor.readableBytes >= pageSize else {
                    throw LiveCopyWire.malformed("page \(page) has \(cursor.readableBytes) of \(pageSize) bytes")
                }
                entries.append(Entry(page: Int(page), offset: cursor.readerIndex - start))
                cursor.moveReaderIndex(forwardBy: pageSize)
            case 1:
                entries.append(Entry(page: Int(page), offset: nil))
            default:
                throw LiveCopyWire.malformed("page \(page) has unknown kind \(kind)")
            }
        }
        guard cursor.readableBytes == 0 else {
            throw LiveCopyWire.malformed("page batch has \(cursor.readableBytes) bytes after its entries")
        }
        return PageBatch(session: session, round: Int(round), entries: entries, body: body)
    }

    /// Calls `body` with each page: its index and its bytes (nil for a zero page).
    public func forEachPage(pageSize: Int, _ visit: (Int, UnsafeRawBufferPointer?) throws -> Void) rethrows {
        try body.withUnsafeReadableBytes { raw in
            for entry in entries {
                if let offset = entry.offset {
                    try visit(entry.page, UnsafeRawBufferPointer(rebasing: raw[offset..<(offset + pageSize)]))
                } else {
                    try visit(entry.page, nil)
                }
            }
        }
    }
}

/// Builds page batches: pages are appended straight from the source's memory into one buffer.
struct PageBatchBuilder {
    let session: UInt64
    let pageSize: Int
    let capacity: Int
    var round = 0
    private(set) var buffer: ByteBuffer
    /// Batches are filled, sent and freed over and over: their storage comes from blocks kept
    /// resident, not fresh mappings that fault on every page written.
    private static let allocator = ByteBufferAllocator.retainingLargeBuffers
    private(set) var count = 0
    /// The CRC32C of the entries so far, updated as each is committed (hot in cache).
    private var entriesChecksum = CRC32C()
    /// The running checksum including the last appended entry, before it is committed.
    private var pendingChecksum = CRC32C()
    private var lastEntry = 0
    /// The session's keyed page fingerprint.
    let digest: PageDigest

    init(session: UInt64, pageSize: Int, capacity: Int, digest: PageDigest = .random()) {
        self.digest = digest
        self.session = session
        self.pageSize = pageSize
        self.capacity = capacity
        buffer = Self.allocator.buffer(capacity: capacity)
        reset()
    }

    /// Bytes in the body so far.
    var bodyBytes: Int { buffer.readableBytes - PageBatch.headerSize }

    mutating func reset() {
        buffer.clear()
        buffer.writeRepeatingByte(0, count: PageBatch.headerSize)
        count = 0
        entriesChecksum = CRC32C()
    }

    /// Adds the last appended entry to the running checksum (after deciding to keep it).
    mutating func commitLast() {
        entriesChecksum = pendingChecksum
    }

    /// Appends page `page` and returns the fingerprint of the bytes copied; the entry's
    /// checksum is pending until ``commitLast()``. The page is read from `address` when its
    /// memory is directly addressable (one pass copies, fingerprints and checksums it), else
    /// copied out of `source`.
    mutating func appendData(page: Int, at address: UnsafeRawPointer?, from source: any LiveCopySource) -> UInt64 {
        lastEntry = buffer.writerIndex
        buffer.writeMultipleIntegers(UInt64(page), UInt8(0), UInt8(0), UInt16(0))
        var checksum = entriesChecksum
        let entryStart = lastEntry - buffer.readerIndex
        buffer.withUnsafeReadableBytes { raw in checksum.update(UnsafeRawBufferPointer(rebasing: raw[entryStart...])) }
        let pageSize = self.pageSize
        var fingerprint: UInt64 = 0
        buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: pageSize) { raw in
            // safe: minimumWritableBytes guarantees a non-empty buffer.
            guard let target = raw.baseAddress else { return 0 }
            if let address {
                fingerprint = digest.copy(from: address, into: target, pageSize: pageSize, checksum: &checksum)
            } else {
                source.copyPages(page..<(page + 1), into: target)
                let copied = UnsafeRawBufferPointer(start: target, count: pageSize)
                checksum.update(copied)
                fingerprint = digest.fingerprint(of: copied)
            }
            return pageSize
        }
        count += 1
        pendingChecksum = checksum
        return fingerprint
    }

    /// Takes the last data page back out (it turned out unchanged or zero).
    mutating func dropLastData() {
        buffer.moveWriterIndex(to: buffer.writerIndex - pageSize - PageBatch.entryHeaderSize)
        count -= 1
    }

    mutating func appendZero(page: Int) {
        lastEntry = buffer.writerIndex
        buffer.writeMultipleIntegers(UInt64(page), UInt8(1), UInt8(0), UInt16(0))
        count += 1
        let entryStart = lastEntry - buffer.readerIndex
        buffer.withUnsafeReadableBytes { raw in
            entriesChecksum.update(UnsafeRawBufferPointer(rebasing: raw[entryStart...]))
        }
    }

    /// Finishes the batch (deflating the body when asked) and returns the payload, with its
    /// CRC32C when it could be joined from the running checksum.
    mutating func finish(deflate: Bool) throws(LiveCopyError) -> (ByteBuffer, UInt32?) {
        let length = UInt32(bodyBytes)
        var payload: ByteBuffer
        var checksum: UInt32?
        if deflate {
            let body = Array(buffer.readableBytesView.dropFirst(PageBatch.headerSize))
            let compressed: [UInt8]
            do {
                compressed = try Deflate.compress(body, level: 1)
            } catch {
                throw LiveCopyError(.invalidConfiguration, detail: "deflate failed: \(error)")
            }
            payload = ByteBuffer()
            payload.reserveCapacity(PageBatch.headerSize + compressed.count)
            payload.writeMultipleIntegers(
                LiveCopyWire.version, PageBatch.deflatedFlag, UInt16(0), session, UInt32(round), UInt32(count), length,
                CRC32C.checksum(body))
            payload.writeBytes(compressed)
        } else {
            // The header goes in while the buffer is still uniquely ours (setting it on a shared
            // copy would copy the whole batch), then the buffer is handed over and replaced.
            buffer.setMultipleIntegers(
                LiveCopyWire.version, UInt8(0), UInt16(0), session, UInt32(round), UInt32(count), length, UInt32(0),
                at: buffer.readerIndex)
            let header = buffer.withUnsafeReadableBytes {
                CRC32C.checksum(UnsafeRawBufferPointer(rebasing: $0[0..<PageBatch.headerSize]))
            }
            checksum = CRC32C.combine(header, entriesChecksum.value, secondLength: Int(length))
            payload = buffer
            buffer = Self.allocator.buffer(capacity: capacity)
        }
        reset()
        return (payload, checksum)
    }
}

/// Copies a page into a batch with its 64-bit fingerprint (independent of CRC32C, to skip pages
/// unchanged since they were last sent; the verification pass compares CRC32C, so a page would
/// have to collide in both to slip through) and its CRC32C.
///
/// The fingerprint is keyed: each copy session draws its own random key (``random()``), so a
/// writer inside the copied region, who never sees a fingerprint, cannot craft a changed page
/// that looks unchanged.
struct PageDigest: Sendable {
    private let key: ft_fingerprint_key

    /// A digest under `key`'s eight words (tests use fixed ones).
    init(key words: [UInt64]) {
        precondition(words.count == 8, "a fingerprint key is 8 words")
        key = ft_fingerprint_key(
            words: (words[0], words[1], words[2], words[3], words[4], words[5], words[6], words[7]))
    }

    /// A digest under a key from the system's random number generator.
    static func random() -> PageDigest {
        var generator = SystemRandomNumberGenerator()
        return PageDigest(key: (0..<8).map { _ in generator.next() })
    }

    /// Copies the page at `source` into `target` in one pass, returning its fingerprint and
    /// adding its bytes to `checksum`.
    func copy(
        from source: UnsafeRawPointer, into target: UnsafeMutableRawPointer, pageSize: Int, checksum: inout CRC32C
    ) -> UInt64 {
        var fingerprint: UInt64 = 0
        // The C side advances the register itself when it can (hardware checksums only).
        var register = checksum.hardwareRegister ?? 0
        let advanced = withUnsafePointer(to: key) { key in
            checksum.hardwareRegister == nil
                ? ft_copy_page_digest(target, source, pageSize, nil, &fingerprint, key)
                : ft_copy_page_digest(target, source, pageSize, &register, &fingerprint, key)
        }
        if advanced == 1 {
            checksum.hardwareRegister = register
        } else {
            checksum.update(UnsafeRawBufferPointer(start: target, count: pageSize))
        }
        return fingerprint
    }

    /// The fingerprint of a page already copied (the same value ``copy(from:into:pageSize:checksum:)``
    /// gives for these bytes).
    func fingerprint(of page: UnsafeRawBufferPointer) -> UInt64 {
        withUnsafePointer(to: key) { ft_page_fingerprint(page.baseAddress, page.count, $0) }
    }

    /// The fingerprint of a page of zeros (the receiving region starts zeroed).
    func zeroFingerprint(pageSize: Int) -> UInt64 {
        let zero = [UInt8](repeating: 0, count: pageSize)
        return zero.withUnsafeBytes { fingerprint(of: $0) }
    }
}
