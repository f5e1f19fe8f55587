import FaultToleranceCore
import LiveCopy
import NIOConcurrencyHelpers

/// The copy-before-write guard of one item during a capture: the pages of the cut that are not
/// yet copied. The copier takes each page with ``take(_:into:)``; a writer about to change a
/// page first preserves it with ``preserve(blocks:)``. Whichever comes first copies the page
/// under its stripe's lock and clears its bit, so the copier always gets the bytes of the cut,
/// and a writer never waits for more than one page copy.
final class CutGuard: WriteGuard, @unchecked Sendable {
    typealias PageReader = @Sendable (Int, UnsafeMutableRawBufferPointer) throws(StorageError) -> Void

    let unitSize: Int
    let unitCount: Int
    private let pending: UnsafeMutablePointer<UInt64>
    private let wordCount: Int
    private let locks: [NIOLock]
    private let readPage: PageReader
    private let preservedState = NIOLockedValueBox<(pages: [Int: [UInt8]], failure: StorageError?, count: Int)>(
        ([:], nil, 0))

    init(pending set: PageSet, unitSize: Int, readPage: @escaping PageReader) {
        self.unitSize = unitSize
        self.unitCount = set.pageCount
        self.wordCount = set.words.count
        self.pending = .allocate(capacity: max(1, wordCount))
        self.pending.initialize(repeating: 0, count: max(1, wordCount))
        for index in 0..<wordCount { pending[index] = set.words[index] }
        self.locks = (0..<64).map { _ in NIOLock() }
        self.readPage = readPage
    }

    deinit { pending.deallocate() }

    /// A memory writer's hook: preserve, recording a failure the capture will report.
    func willWrite(pages: ClosedRange<Int>) {
        do { try preserve(blocks: pages) } catch {
            preservedState.withLockedValue { state in if state.failure == nil { state.failure = error } }
        }
    }

    /// Copies each page of `blocks` still pending aside before a writer changes it.
    func preserve(blocks: ClosedRange<Int>) throws(StorageError) {
        for page in blocks where page >= 0 && page < unitCount {
            let word = page >> 6
            let bit = UInt64(1) << UInt64(page & 63)
            let lock = locks[word & 63]
            lock.lock()
            defer { lock.unlock() }
            guard pending[word] & bit != 0 else { continue }
            let copy = try [UInt8](unsafeUninitializedCapacity: unitSize) {
                (buffer, initialized) throws(StorageError) in
                try readPage(page, UnsafeMutableRawBufferPointer(buffer))
                initialized = unitSize
            }
            pending[word] &= ~bit
            preservedState.withLockedValue { state in
                state.pages[page] = copy
                state.count += 1
            }
        }
    }

    /// Copies page `page` as it was at the cut into `destination` (`unitSize` bytes).
    func take(_ page: Int, into destination: UnsafeMutableRawBufferPointer) throws(CheckpointError) {
        let word = page >> 6
        let bit = UInt64(1) << UInt64(page & 63)
        let lock = locks[word & 63]
        lock.lock()
        defer { lock.unlock() }
        if pending[word] & bit != 0 {
            do { try readPage(page, destination) } catch { throw CheckpointError(error) }
            pending[word] &= ~bit
            return
        }
        guard let saved = preservedState.withLockedValue({ $0.pages.removeValue(forKey: page) }) else {
            throw CheckpointError(.unavailable, detail: "page \(page) is not part of the cut or was taken twice")
        }
        saved.withUnsafeBytes { destination.copyMemory(from: $0) }
    }

    /// Pages writers preserved so far, and the first failure of a memory writer's preserve.
    var preserved: (count: Int, failure: StorageError?) {
        preservedState.withLockedValue { ($0.count, $0.failure) }
    }
}
