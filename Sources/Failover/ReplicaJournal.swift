import FaultToleranceCore
import Foundation
import NIOConcurrencyHelpers
public import NIOCore
import NIOPosix

#if canImport(Glibc)
    import Glibc
#endif

/// One write to a server's journal (``ServerCore/Effect/journal(_:)``).
public enum JournalRecord: Sendable, Hashable {
    /// Entries the server applied since its last record, in order.
    case entries([ReplicationEntry])
    /// The server's whole state (``ReplicatedStore/snapshot()``): it replaces everything before
    /// it (a snapshot installed from the primary, or the journal compacted).
    case snapshot(ByteBuffer)
}

/// What a journal held when its server started.
public struct RecoveredReplica: Sendable {
    /// The last snapshot, if any.
    public var snapshot: ByteBuffer?
    /// The entries after it, in order.
    public var entries: [ReplicationEntry]
    /// Bytes of an unfinished last write dropped (a write counts only once synced, and nothing
    /// was acknowledged before that).
    public var droppedBytes: Int
    /// The journal's identity: drawn when the journal was created and kept with its data for as
    /// long as the data lives (a replaced disk holds a new journal with a new identity). A control
    /// plane that records which servers hold every acknowledged operation can name the journal
    /// by it, so a server back from a power loss on the same disk is still counted as holding
    /// them (``FailoverControlPlane/journalRestored(identity:)``). `nil` for a journal written
    /// before identities existed and not yet opened by ``FileReplicaJournal/recover()``.
    public var identity: UInt64?

    /// A recovered journal.
    public init(snapshot: ByteBuffer?, entries: [ReplicationEntry], droppedBytes: Int = 0, identity: UInt64? = nil) {
        self.snapshot = snapshot
        self.entries = entries
        self.droppedBytes = droppedBytes
        self.identity = identity
    }
}

/// Where a server keeps what it applies, so that a backup acknowledges only what is on its disk
/// and comes back from a restart with its state (``ServerCore/Settings/journaled``).
///
/// A ``FailoverServer`` given one recovers from it before it runs, and writes each
/// ``JournalRecord`` before it carries out what follows the record (a backup's acknowledgement,
/// a primary's reply); a failed write stops the server (fail-stop), so nothing it cannot keep is
/// ever acknowledged.
public protocol ReplicaJournal: Sendable {
    /// What the journal holds; throws ``FailoverError/Code/malformed`` for damage that is not an
    /// unfinished last write.
    func recover() async throws(FailoverError) -> RecoveredReplica
    /// Writes `record` durably before returning.
    func write(_ record: JournalRecord) async throws(FailoverError)
}

/// A journal in memory, for tests and the simulation: it survives its server's crash (the
/// simulation keeps it across a restart) but not the process.
public final class MemoryReplicaJournal: ReplicaJournal {
    private let state: NIOLockedValueBox<RecoveredReplica>

    /// An empty journal named `identity` (``RecoveredReplica/identity``).
    public init(identity: UInt64 = .random(in: 1...UInt64.max)) {
        state = NIOLockedValueBox(RecoveredReplica(snapshot: nil, entries: [], identity: identity))
    }

    /// What it holds.
    public func recover() async throws(FailoverError) -> RecoveredReplica { state.withLockedValue { $0 } }

    /// Keeps `record`.
    public func write(_ record: JournalRecord) async throws(FailoverError) {
        state.withLockedValue { held in
            switch record {
            case .entries(let entries): held.entries += entries
            case .snapshot(let bytes): held = RecoveredReplica(snapshot: bytes, entries: [], identity: held.identity)
            }
        }
    }
}

/// A journal in one file, each write appended and `fdatasync`ed, on NIO's thread pool (the
/// cooperative pool never waits on the disk).
///
/// Layout: a sequence of ``FaultToleranceCore/Frame``s, each with its CRC32C. A write is its
/// records (entries: one frame of type 0x0621 each, ``ReplicationEntry/framed()``; a snapshot:
/// one frame of type 0x0630, format version 1 then the snapshot's bytes; the journal's identity:
/// one frame of type 0x0632, format version 1 then the identity, u64 little-endian) followed by a
/// commit frame (type 0x0631: format version 1, the number of records, u32 little-endian). Only
/// committed writes count. The identity (``RecoveredReplica/identity``) is written by the first
/// ``recover()`` of a journal without one, and again at the head of every snapshot file. On
/// recovery, a damaged or incomplete region after the last commit is an unfinished write and is
/// cut off; damage followed by a valid commit is damage in the middle, and recovery throws
/// rather than lose acknowledged entries silently. A snapshot replaces the file: written to
/// `journal.tmp`, synced, renamed over, and the directory synced.
public final class FileReplicaJournal: ReplicaJournal {
    /// The journal file.
    public let path: String
    /// The largest record the journal reads back (a snapshot's bytes).
    public let maximumRecordBytes: Int
    /// Where the committed part ends, and the journal's identity, once recovered.
    private let end = NIOLockedValueBox<(offset: Int, identity: UInt64)?>(nil)

    static let snapshotType: UInt16 = 0x0630
    static let commitType: UInt16 = 0x0631
    static let identityType: UInt16 = 0x0632
    static let formatVersion: UInt8 = 1

    /// A journal at `directory`/journal (the directory is created if needed).
    public init(directory: String, maximumRecordBytes: Int = 1 << 30) throws(FailoverError) {
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw FailoverError(.closed, detail: "cannot create the journal directory \(directory): \(error)")
        }
        path = (directory as NSString).appendingPathComponent("journal")
        self.maximumRecordBytes = maximumRecordBytes
    }

    /// Reads the file back; cuts off an unfinished last write. A journal without an identity
    /// (new, or written before identities existed) gets one, written and synced before this
    /// returns.
    public func recover() async throws(FailoverError) -> RecoveredReplica {
        let path = self.path
        let maximum = maximumRecordBytes
        let outcome = await Self.offload { () -> Result<(RecoveredReplica, Int), FailoverError> in
            var recovered = RecoveredReplica(snapshot: nil, entries: [])
            var committed = 0
            let data = FileManager.default.contents(atPath: path)
            if let data {
                var buffer = ByteBuffer(bytes: data)
                do throws(FailoverError) {
                    (recovered, committed) = try Self.decode(&buffer, maximumRecordBytes: maximum)
                } catch {
                    return .failure(error)
                }
                if committed < data.count, truncate(path, off_t(committed)) != 0 {
                    return .failure(
                        FailoverError(.closed, detail: "cannot cut \(path) at \(committed): errno \(errno)"))
                }
            }
            if recovered.identity == nil {
                let identity = UInt64.random(in: 1...UInt64.max)
                var bytes = ByteBuffer()
                Self.identityFrame(identity).encode(into: &bytes)
                Self.commitFrame(records: 1).encode(into: &bytes)
                switch Self.append(path, Array(bytes.readableBytesView), at: committed) {
                case .success(let newEnd): committed = newEnd
                case .failure(let error): return .failure(error)
                }
                // A new file: its name must be as durable as what will be acknowledged from it.
                if data == nil, case .failure(let error) = Self.syncDirectory(of: path) { return .failure(error) }
                recovered.identity = identity
            }
            return .success((recovered, committed))
        }
        let (recovered, committed) = try outcome.get()
        let identity = recovered.identity ?? 0
        end.withLockedValue { $0 = (committed, identity) }
        return recovered
    }

    /// The frame naming the journal.
    static func identityFrame(_ identity: UInt64) -> Frame {
        var payload = ByteBuffer()
        payload.writeInteger(formatVersion)
        payload.writeInteger(identity, endianness: .little)
        return Frame(type: identityType, payload: payload)
    }

    /// The frame that commits the `records` before it.
    static func commitFrame(records: UInt32) -> Frame {
        var commit = ByteBuffer()
        commit.writeInteger(formatVersion)
        commit.writeInteger(records, endianness: .little)
        return Frame(type: commitType, payload: commit)
    }

    /// Appends `record` (or, for a snapshot, replaces the file with it) and syncs. Recovers the
    /// file first if ``recover()`` was not called (appending after an unfinished write would
    /// leave damage before a commit). One writer at a time.
    public func write(_ record: JournalRecord) async throws(FailoverError) {
        if end.withLockedValue({ $0 }) == nil { _ = try await recover() }
        guard let recovered = end.withLockedValue({ $0 }) else {
            throw FailoverError(.closed, detail: "journal \(path) was not recovered")
        }
        let (offset, identity) = recovered
        var bytes = ByteBuffer()
        var count: UInt32 = 0
        switch record {
        case .entries(let entries):
            guard !entries.isEmpty else { return }
            for entry in entries {
                var frame = entry.framed()
                bytes.writeBuffer(&frame)
            }
            count = UInt32(entries.count)
        case .snapshot(let snapshot):
            // The snapshot replaces the file: the identity goes first, in the same write.
            Self.identityFrame(identity).encode(into: &bytes)
            var payload = ByteBuffer()
            payload.reserveCapacity(1 + snapshot.readableBytes)
            payload.writeInteger(Self.formatVersion)
            var body = snapshot
            payload.writeBuffer(&body)
            Frame(type: Self.snapshotType, payload: payload).encode(into: &bytes)
            count = 2
        }
        Self.commitFrame(records: count).encode(into: &bytes)
        let path = self.path
        let replace: Bool
        if case .snapshot = record { replace = true } else { replace = false }
        let written = Array(bytes.readableBytesView)
        let outcome = await Self.offload { () -> Result<Int, FailoverError> in
            replace ? Self.replaceFile(path, with: written) : Self.append(path, written, at: offset)
        }
        let newEnd = try outcome.get()
        end.withLockedValue { $0 = (newEnd, identity) }
    }

    // MARK: Decoding

    /// Decodes a journal file's bytes as ``recover()`` does (without touching the file): what its
    /// committed writes hold, with ``RecoveredReplica/droppedBytes`` the unfinished write after
    /// them. Throws ``FailoverError/Code/malformed`` for damage followed by a committed write, a
    /// record of an unknown type or version, or a commit that does not match its records.
    public static func decode(_ bytes: ByteBuffer, maximumRecordBytes: Int = 1 << 30) throws(FailoverError)
        -> RecoveredReplica
    {
        var buffer = bytes
        return try decode(&buffer, maximumRecordBytes: maximumRecordBytes).0
    }

    /// The committed records of `buffer` and the length of its committed prefix.
    static func decode(_ buffer: inout ByteBuffer, maximumRecordBytes: Int) throws(FailoverError) -> (
        RecoveredReplica, Int
    ) {
        var decoder = FrameDecoder(maximumPayloadLength: maximumRecordBytes + 1)
        var recovered = RecoveredReplica(snapshot: nil, entries: [])
        /// A committed write's records; the identity counts as one.
        var batch: [JournalRecord] = []
        var batchIdentity: UInt64?
        var batchRecords = 0
        var committed = 0
        let total = buffer.readableBytes
        while buffer.readableBytes > 0 {
            let frame: Frame
            do {
                guard let next = try decoder.next(from: &buffer) else { break }
                frame = next
            } catch {
                break
            }
            switch frame.type {
            case ReplicationEntry.frameType:
                var payload = frame.payload
                let entry = try ReplicationEntry.decode(from: &payload)
                guard payload.readableBytes == 0 else {
                    throw FailoverError(.malformed, detail: "journal: bytes after an entry at \(decoder.offset)")
                }
                batch.append(.entries([entry]))
                batchRecords += 1
            case identityType:
                var payload = frame.payload
                guard payload.readInteger(as: UInt8.self) == formatVersion,
                    let identity = payload.readInteger(endianness: .little, as: UInt64.self), payload.readableBytes == 0
                else { throw FailoverError(.malformed, detail: "journal: malformed identity at \(decoder.offset)") }
                batchIdentity = identity
                batchRecords += 1
            case snapshotType:
                var payload = frame.payload
                guard payload.readInteger(as: UInt8.self) == formatVersion else {
                    throw FailoverError(.malformed, detail: "journal: snapshot record of an unknown version")
                }
                batch.append(.snapshot(payload))
                batchRecords += 1
            case commitType:
                var payload = frame.payload
                guard payload.readInteger(as: UInt8.self) == formatVersion,
                    let count = payload.readInteger(endianness: .little, as: UInt32.self), payload.readableBytes == 0
                else { throw FailoverError(.malformed, detail: "journal: malformed commit at \(decoder.offset)") }
                guard count == batchRecords else {
                    throw FailoverError(
                        .malformed,
                        detail: "journal: a commit of \(count) records after \(batchRecords) at \(decoder.offset)")
                }
                if let batchIdentity { recovered.identity = batchIdentity }
                for record in batch {
                    switch record {
                    case .entries(let entries): recovered.entries += entries
                    case .snapshot(let bytes):
                        recovered = RecoveredReplica(snapshot: bytes, entries: [], identity: recovered.identity)
                    }
                }
                batch = []
                batchIdentity = nil
                batchRecords = 0
                committed = decoder.offset
            default:
                throw FailoverError(
                    .malformed, detail: "journal: frame type 0x\(String(frame.type, radix: 16)) at \(decoder.offset)")
            }
        }
        if committed < total {
            // After the last commit: an unfinished write, unless a valid commit follows the
            // damage (then a committed write was damaged: refuse, never drop it silently).
            let damaged = total - buffer.readableBytes
            if let offset = firstCommit(in: buffer, maximumRecordBytes: maximumRecordBytes) {
                throw FailoverError(
                    .malformed,
                    detail: "journal damaged at byte \(damaged): a committed write follows at byte \(damaged + offset)")
            }
        }
        recovered.droppedBytes = total - committed
        return (recovered, committed)
    }

    /// The offset of the first valid commit frame in `bytes`, trying every position where the
    /// frame magic appears.
    static func firstCommit(in bytes: ByteBuffer, maximumRecordBytes: Int) -> Int? {
        let view = bytes.readableBytesView
        guard view.count >= Frame.headerSize else { return nil }
        var index = view.startIndex
        while index + 1 < view.endIndex {
            if view[index] == 0x46, view[index + 1] == 0x54 {
                var candidate = bytes.getSlice(at: index, length: view.endIndex - index) ?? ByteBuffer()
                var decoder = FrameDecoder(maximumPayloadLength: maximumRecordBytes + 1)
                if let frame = try? decoder.next(from: &candidate), frame.type == commitType {
                    return index - view.startIndex
                }
            }
            index += 1
        }
        return nil
    }

    // MARK: Files

    private static func offload<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        do {
            return try await NIOThreadPool.singleton.runIfActive { body() }
        } catch {
            // The pool is shutting down: do it here rather than lose the write.
            return body()
        }
    }

    private static func append(_ path: String, _ bytes: [UInt8], at offset: Int) -> Result<Int, FailoverError> {
        let descriptor = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            return .failure(FailoverError(.closed, detail: "cannot open \(path): errno \(errno)"))
        }
        defer { close(descriptor) }
        let written = bytes.withUnsafeBytes { pwrite(descriptor, $0.baseAddress, $0.count, off_t(offset)) }
        guard written == bytes.count, fdatasync(descriptor) == 0 else {
            return .failure(
                FailoverError(.closed, detail: "cannot write \(bytes.count) bytes to \(path): errno \(errno)"))
        }
        return .success(offset + bytes.count)
    }

    private static func replaceFile(_ path: String, with bytes: [UInt8]) -> Result<Int, FailoverError> {
        let temporary = path + ".tmp"
        let descriptor = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard descriptor >= 0 else {
            return .failure(FailoverError(.closed, detail: "cannot create \(temporary): errno \(errno)"))
        }
        let written = bytes.withUnsafeBytes { Glibc.write(descriptor, $0.baseAddress, $0.count) }
        let synced = fdatasync(descriptor)
        close(descriptor)
        guard written == bytes.count, synced == 0, rename(temporary, path) == 0 else {
            return .failure(FailoverError(.closed, detail: "cannot replace \(path): errno \(errno)"))
        }
        return syncDirectory(of: path).map { bytes.count }
    }

    /// Syncs the directory holding `path`, so that a file created or renamed there stays.
    private static func syncDirectory(of path: String) -> Result<Void, FailoverError> {
        let directory = (path as NSString).deletingLastPathComponent
        let handle = open(directory.isEmpty ? "." : directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard handle >= 0 else { return .failure(FailoverError(.closed, detail: "cannot open \(directory)")) }
        defer { close(handle) }
        guard fsync(handle) == 0 else {
            return .failure(FailoverError(.closed, detail: "cannot sync \(directory): errno \(errno)"))
        }
        return .success(())
    }
}
