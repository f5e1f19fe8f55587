import FaultToleranceCore
import LiveCopy
import NIOConcurrencyHelpers

/// The copy-before-write guard of one item during a capture.
///
/// Two bitmaps: `cut`, the pages of the cut, filled before and during the pause and read-only
/// after it; and `done`, the pages already copied. The copier takes each page of the cut with
/// ``take(_:into:)``; a writer about to change a page of the cut first preserves it with
/// ``preserve(blocks:)``. Whichever comes first copies the page under its stripe's lock and
/// marks it done, so the copier always gets the bytes of the cut and a writer waits for at most
/// one page copy. A page outside the cut costs a writer one bit test and no lock.
final class CutGuard: WriteGuard, @unchecked Sendable {
    typealias PageReader = @Sendable (Int, UnsafeMutableRawBufferPointer) throws(StorageError) -> Void

    let unitSize: Int
    let unitCount: Int
    private let wordCount: Int
    private let cut: UnsafeMutablePointer<UInt64>
    private let done: UnsafeMutablePointer<UInt64>
    private let locks: [NIOLock]
    private let readPage: PageReader
    private let preservedState = NIOLockedValueBox<(pages: [Int: [UInt8]], failure: StorageError?, count: Int)>(
        ([:], nil, 0))

    /// A guard over `unitCount` pages with an empty cut, made before the pause.
    init(unitCount: Int, unitSize: Int, readPage: @escaping PageReader) {
        self.unitSize = unitSize
        self.unitCount = unitCount
        self.wordCount = (unitCount + 63) / 64
        self.cut = .allocate(capacity: max(1, wordCount))
        self.cut.initialize(repeating: 0, count: max(1, wordCount))
        self.done = .allocate(capacity: max(1, wordCount))
        self.done.initialize(repeating: 0, count: max(1, wordCount))
        self.locks = (0..<64).map { _ in NIOLock() }
        self.readPage = readPage
    }

    deinit {
        cut.deallocate()
        done.deallocate()
    }

    /// Adds `set` to the cut; only before the guard is installed.
    func arm(_ set: PageSet) {
        for index in 0..<min(wordCount, set.words.count) { cut[index] |= set.words[index] }
    }

    /// The cut's words, for a tracker to move its dirty bits into during the pause.
    var cutWords: UnsafeMutableBufferPointer<UInt64> { UnsafeMutableBufferPointer(start: cut, count: wordCount) }

    /// The pages of the cut (read-only once the pause is over).
    var cutSet: PageSet {
        var set = PageSet(pageCount: unitCount)
        for index in 0..<wordCount { set.words[index] = cut[index] }
        return set
    }

    /// A memory writer's hook: preserve, recording a failure the capture will report.
    func willWrite(pages: ClosedRange<Int>) {
        do { try preserve(blocks: pages) } catch {
            preservedState.withLockedValue { state in if state.failure == nil { state.failure = error } }
        }
    }

    /// Copies each page of `blocks` that is in the cut and not yet copied aside before a writer
    /// changes it.
    func preserve(blocks: ClosedRange<Int>) throws(StorageError) {
        for page in blocks where page >= 0 && page < unitCount {
            let word = page >> 6
            let bit = UInt64(1) << UInt64(page & 63)
            guard cut[word] & bit != 0 else { continue }
            let lock = locks[word & 63]
            lock.lock()
            defer { lock.unlock() }
            guard done[word] & bit == 0 else { continue }
            let copy = try [UInt8](unsafeUninitializedCapacity: unitSize) {
                (buffer, initialized) throws(StorageError) in
                try readPage(page, UnsafeMutableRawBufferPointer(buffer))
                initialized = unitSize
            }
            done[word] |= bit
            preservedState.withLockedValue { state in
                state.pages[page] = copy
                state.count += 1
            }
        }
    }

    /// Copies page `page` of the cut, as it was at the cut, into `destination` (`unitSize`
    /// bytes).
    func take(_ page: Int, into destination: UnsafeMutableRawBufferPointer) throws(CheckpointError) {
        let word = page >> 6
        let bit = UInt64(1) << UInt64(page & 63)
        guard page >= 0, page < unitCount, cut[word] & bit != 0 else {
            throw CheckpointError(.unavailable, detail: "page \(page) is not part of the cut")
        }
        let lock = locks[word & 63]
        lock.lock()
        defer { lock.unlock() }
        if done[word] & bit == 0 {
            do { try readPage(page, destination) } catch { throw CheckpointError(error) }
            done[word] |= bit
            return
        }
        guard let saved = preservedState.withLockedValue({ $0.pages.removeValue(forKey: page) }) else {
            throw CheckpointError(.unavailable, detail: "page \(page) was taken twice")
        }
        saved.withUnsafeBytes { destination.copyMemory(from: $0) }
    }

    /// Pages writers preserved so far, and the first failure of a memory writer's preserve.
    var preserved: (count: Int, failure: StorageError?) {
        preservedState.withLockedValue { ($0.count, $0.failure) }
    }
}
