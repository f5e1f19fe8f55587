import FaultToleranceCore
public import NIOCore

/// The live copy's messages on a ``FaultToleranceCore/Transport``: message types
/// `0x0200`–`0x0206`, every payload starting with a version byte.
///
/// The transport's frame carries a CRC32C over each payload; a compressed page batch also
/// carries the CRC32C of its uncompressed body, so a corrupt stream that still inflates is
/// caught too. Byte layouts are in the LiveCopy article.
public enum LiveCopyWire {
    /// The format version this code writes and reads.
    public static let version: UInt8 = 1

    /// Message types.
    public enum MessageType {
        /// Start of a session: geometry. Answered by a ``reply``.
        public static let begin: UInt16 = 0x0200
        /// Answers from the destination.
        public static let reply: UInt16 = 0x0201
        /// A batch of pages.
        public static let pageBatch: UInt16 = 0x0202
        /// Asks for a reply once everything before it is applied.
        public static let barrier: UInt16 = 0x0203
        /// Page checksums to compare; answered with the pages that differ.
        public static let verify: UInt16 = 0x0204
        /// Writes made in duplicated mode.
        public static let mirrorWrites: UInt16 = 0x0205
        /// End of the session.
        public static let end: UInt16 = 0x0206
    }

    /// Kinds of ``MessageType/reply``.
    public enum ReplyKind: UInt8, Sendable {
        /// The session is set up.
        case ready = 0
        /// Everything up to the barrier is applied.
        case barrier = 1
        /// The pages that differ, for a verify request.
        case mismatches = 2
        /// The destination refused (geometry, malformed message); the detail follows.
        case refused = 3
    }

    /// A decoded reply.
    public struct Reply: Sendable, Hashable {
        /// The kind.
        public var kind: ReplyKind
        /// The session.
        public var session: UInt64
        /// The request it answers (barrier or verify id).
        public var request: UInt64
        /// For ``ReplyKind/mismatches``: the pages that differ.
        public var pages: [Int]
        /// For ``ReplyKind/refused``: why.
        public var detail: String

        /// Creates a reply.
        public init(kind: ReplyKind, session: UInt64, request: UInt64, pages: [Int] = [], detail: String = "") {
            self.kind = kind
            self.session = session
            self.request = request
            self.pages = pages
            self.detail = detail
        }

        /// Encodes the reply.
        public func encode() -> ByteBuffer {
            var buffer = ByteBuffer()
            buffer.writeMultipleIntegers(LiveCopyWire.version, kind.rawValue, session, request, UInt32(pages.count))
            for page in pages { buffer.writeInteger(UInt64(page)) }
            buffer.writeInteger(UInt32(detail.utf8.count))
            buffer.writeString(detail)
            return buffer
        }

        /// Decodes a reply.
        public static func decode(_ payload: ByteBuffer) throws(LiveCopyError) -> Reply {
            var buffer = payload
            guard
                let (version, rawKind, session, request, count) = buffer.readMultipleIntegers(
                    as: (UInt8, UInt8, UInt64, UInt64, UInt32).self)
            else { throw malformed("reply shorter than its header") }
            try check(version)
            guard let kind = ReplyKind(rawValue: rawKind) else { throw malformed("unknown reply kind \(rawKind)") }
            guard Int(count) <= buffer.readableBytes / 8 else { throw malformed("reply claims \(count) pages") }
            var pages: [Int] = []
            pages.reserveCapacity(Int(count))
            for _ in 0..<count {
                guard let page = buffer.readInteger(as: UInt64.self), page <= UInt64(Int.max) else {
                    throw malformed("reply page index out of range")
                }
                pages.append(Int(page))
            }
            guard let length = buffer.readInteger(as: UInt32.self), Int(length) == buffer.readableBytes,
                let raw = buffer.readBytes(length: Int(length))
            else { throw malformed("reply detail length does not match") }
            guard let detail = String(validating: raw, as: UTF8.self) else {
                throw malformed("reply detail is not UTF-8")
            }
            return Reply(kind: kind, session: session, request: request, pages: pages, detail: detail)
        }
    }

    /// The session header (``MessageType/begin``).
    public struct Begin: Sendable, Hashable {
        /// The session.
        public var session: UInt64
        /// Bytes per page.
        public var pageSize: Int
        /// Pages in the region.
        public var pageCount: Int

        /// Creates a header.
        public init(session: UInt64, pageSize: Int, pageCount: Int) {
            self.session = session
            self.pageSize = pageSize
            self.pageCount = pageCount
        }

        /// Encodes it.
        public func encode() -> ByteBuffer {
            var buffer = ByteBuffer()
            buffer.writeMultipleIntegers(
                LiveCopyWire.version, UInt8(0), UInt16(0), session, UInt32(pageSize), UInt64(pageCount))
            return buffer
        }

        /// Decodes it.
        public static func decode(_ payload: ByteBuffer) throws(LiveCopyError) -> Begin {
            var buffer = payload
            guard
                let (version, flags, reserved, session, pageSize, pageCount) = buffer.readMultipleIntegers(
                    as: (UInt8, UInt8, UInt16, UInt64, UInt32, UInt64).self),
                buffer.readableBytes == 0
            else { throw malformed("begin is not 24 bytes") }
            try check(version)
            guard flags == 0, reserved == 0 else { throw malformed("begin has nonzero reserved bits") }
            guard pageSize >= 64, pageSize & (pageSize - 1) == 0, pageSize <= 1 << 20, pageCount > 0,
                pageCount <= UInt64(Int.max) / UInt64(pageSize)
            else { throw malformed("begin geometry \(pageCount) pages of \(pageSize) bytes is invalid") }
            return Begin(session: session, pageSize: Int(pageSize), pageCount: Int(pageCount))
        }
    }

    /// A small request (barrier, verify without checksums, end): session and request id.
    static func encodeRequest(session: UInt64, request: UInt64) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeMultipleIntegers(LiveCopyWire.version, UInt8(0), UInt16(0), session, request)
        return buffer
    }

    /// Decodes a barrier or end request.
    public static func decodeRequest(_ payload: ByteBuffer) throws(LiveCopyError) -> (session: UInt64, request: UInt64)
    {
        var buffer = payload
        guard
            let (version, flags, reserved, session, request) = buffer.readMultipleIntegers(
                as: (UInt8, UInt8, UInt16, UInt64, UInt64).self),
            buffer.readableBytes == 0
        else { throw malformed("request is not 20 bytes") }
        try check(version)
        guard flags == 0, reserved == 0 else { throw malformed("request has nonzero reserved bits") }
        return (session, request)
    }

    /// A verify request: the source's CRC32C for pages `first..<first+checksums.count`.
    public struct Verify: Sendable, Hashable {
        /// The session.
        public var session: UInt64
        /// The request id.
        public var request: UInt64
        /// The first page.
        public var firstPage: Int
        /// One CRC32C per page.
        public var checksums: [UInt32]

        /// Creates a request.
        public init(session: UInt64, request: UInt64, firstPage: Int, checksums: [UInt32]) {
            self.session = session
            self.request = request
            self.firstPage = firstPage
            self.checksums = checksums
        }

        /// Encodes it.
        public func encode() -> ByteBuffer {
            var buffer = ByteBuffer()
            buffer.reserveCapacity(32 + checksums.count * 4)
            buffer.writeMultipleIntegers(
                LiveCopyWire.version, UInt8(0), UInt16(0), session, request, UInt64(firstPage),
                UInt32(checksums.count))
            for checksum in checksums { buffer.writeInteger(checksum) }
            return buffer
        }

        /// Decodes it, checking the pages lie within `pageCount`.
        public static func decode(_ payload: ByteBuffer, pageCount: Int) throws(LiveCopyError) -> Verify {
            var buffer = payload
            guard
                let (version, flags, reserved, session, request, first, count) = buffer.readMultipleIntegers(
                    as: (UInt8, UInt8, UInt16, UInt64, UInt64, UInt64, UInt32).self)
            else { throw malformed("verify shorter than its header") }
            try check(version)
            guard flags == 0, reserved == 0 else { throw malformed("verify has nonzero reserved bits") }
            guard Int(count) * 4 == buffer.readableBytes else { throw malformed("verify length does not match") }
            guard first < UInt64(pageCount), UInt64(count) <= UInt64(pageCount) - first else {
                throw malformed("verify pages \(first)+\(count) outside \(pageCount)")
            }
            var checksums: [UInt32] = []
            checksums.reserveCapacity(Int(count))
            while let checksum = buffer.readInteger(as: UInt32.self) { checksums.append(checksum) }
            return Verify(session: session, request: request, firstPage: Int(first), checksums: checksums)
        }
    }

    /// Mirrored writes in duplicated mode, in the order they were made: version `u8`, flags `u8`
    /// and reserved `u16` (zero), session `u64`, count `u32`, then per write: offset `u64`,
    /// length `u32`, the bytes.
    public struct MirrorWrites: Sendable, Hashable {
        /// Size of the header.
        public static let headerSize = 16
        /// The session.
        public var session: UInt64
        /// Each write: byte offset and bytes.
        public var writes: [(offset: Int, bytes: ByteBuffer)]

        /// Equal when session and writes are.
        public static func == (lhs: MirrorWrites, rhs: MirrorWrites) -> Bool {
            lhs.session == rhs.session && lhs.writes.count == rhs.writes.count
                && zip(lhs.writes, rhs.writes).allSatisfy { $0.offset == $1.offset && $0.bytes == $1.bytes }
        }

        /// Hashes session and writes.
        public func hash(into hasher: inout Hasher) {
            hasher.combine(session)
            for write in writes {
                hasher.combine(write.offset)
                hasher.combine(write.bytes)
            }
        }

        /// Starts a message: the header with a zero count (``setCount(_:in:)`` fills it in).
        static func start(session: UInt64, into buffer: inout ByteBuffer) {
            buffer.writeMultipleIntegers(LiveCopyWire.version, UInt8(0), UInt16(0), session, UInt32(0))
        }

        /// Appends one write.
        static func append(offset: Int, bytes: UnsafeRawBufferPointer, to buffer: inout ByteBuffer) {
            buffer.writeMultipleIntegers(UInt64(offset), UInt32(bytes.count))
            buffer.writeBytes(bytes)
        }

        /// Sets the count in a started message.
        static func setCount(_ count: Int, in buffer: inout ByteBuffer) {
            buffer.setInteger(UInt32(count), at: buffer.readerIndex + 12)
        }

        /// Decodes the writes, checking each lies within `byteCount`.
        public static func decode(_ payload: ByteBuffer, byteCount: Int) throws(LiveCopyError) -> MirrorWrites {
            var buffer = payload
            guard
                let (version, flags, reserved, session, count) = buffer.readMultipleIntegers(
                    as: (UInt8, UInt8, UInt16, UInt64, UInt32).self)
            else { throw malformed("mirrored writes shorter than their header") }
            try check(version)
            guard flags == 0, reserved == 0 else { throw malformed("mirrored writes have nonzero reserved bits") }
            guard Int(count) <= buffer.readableBytes / 12 else {
                throw malformed("mirrored writes claim \(count) writes in \(buffer.readableBytes) bytes")
            }
            var writes: [(offset: Int, bytes: ByteBuffer)] = []
            writes.reserveCapacity(Int(count))
            for _ in 0..<count {
                guard let (offset, length) = buffer.readMultipleIntegers(as: (UInt64, UInt32).self),
                    let bytes = buffer.readSlice(length: Int(length))
                else { throw malformed("mirrored write cut short") }
                guard offset <= UInt64(byteCount), UInt64(length) <= UInt64(byteCount) - offset else {
                    throw malformed("mirrored write of \(length) bytes at \(offset) outside \(byteCount)")
                }
                writes.append((Int(offset), bytes))
            }
            guard buffer.readableBytes == 0 else {
                throw malformed("mirrored writes have \(buffer.readableBytes) bytes after the last write")
            }
            return MirrorWrites(session: session, writes: writes)
        }
    }

    static func check(_ version: UInt8) throws(LiveCopyError) {
        guard version == LiveCopyWire.version else {
            throw malformed("version \(version), this code reads \(LiveCopyWire.version)")
        }
    }

    static func malformed(_ detail: String) -> LiveCopyError { LiveCopyError(.malformedMessage, detail: detail) }
}
