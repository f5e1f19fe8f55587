import FaultToleranceCore
import LiveCopy

/// The cut's pages of a ``LiveCopy/UserfaultMemory`` region, copied aside by the capture.
///
/// The kernel tracks writes to such a region (userfaultfd write-protection, asynchronous mode)
/// but tells no one before a write lands, so no copy-before-write guard can sit in front of
/// its writers. The capture instead copies like a live migration's last rounds: the pages
/// dirty since the parent are collected (re-protected) and copied while writers run (``add(_:)``);
/// in the pause the pages written since are collected and copied again (``refresh(_:)``).
/// Every page then holds its bytes at the pause: one not written since its first copy still
/// has those bytes. The pause grows with what was written during the first copy, not with the
/// region; a full capture holds a copy of the whole region until its chunks are written.
final class PageSnapshot: @unchecked Sendable {
    private let memory: UserfaultMemory
    /// Copied pages in parts, each sorted, with the page bytes in the same order.
    private var parts: [(pages: [Int], buffer: UnsafeMutableRawPointer)] = []

    init(memory: UserfaultMemory) {
        self.memory = memory
    }

    deinit {
        for part in parts { part.buffer.deallocate() }
    }

    /// Pages held.
    var count: Int { parts.reduce(0) { $0 + $1.pages.count } }

    /// Copies `set`'s pages (none already held) into a new part, a run at a time.
    func add(_ set: PageSet) {
        let pages = set.pages
        guard !pages.isEmpty else { return }
        let size = memory.pageSize
        let buffer = UnsafeMutableRawPointer.allocate(byteCount: pages.count * size, alignment: 4096)
        var slot = 0
        set.forEachRun { run in
            memory.copyPages(run, into: buffer + slot * size)
            slot += run.count
        }
        parts.append((pages, buffer))
    }

    /// Copies `set`'s pages again: over their earlier copy where held, into a new part where not.
    func refresh(_ set: PageSet) {
        var fresh = PageSet(pageCount: set.pageCount)
        for page in set.pages {
            if let slot = locate(page) {
                memory.copyPages(page..<page + 1, into: slot)
            } else {
                fresh.insert(page)
            }
        }
        add(fresh)
    }

    /// Copies held page `page` into `destination` (a page).
    func read(_ page: Int, into destination: UnsafeMutableRawBufferPointer) throws(StorageError) {
        guard let slot = locate(page), let target = destination.baseAddress else {
            throw StorageError(.outOfBounds, detail: "page \(page) was not copied at the cut")
        }
        target.copyMemory(from: slot, byteCount: min(destination.count, memory.pageSize))
    }

    private func locate(_ page: Int) -> UnsafeMutableRawPointer? {
        for part in parts {
            var low = 0
            var high = part.pages.count
            while low < high {
                let middle = (low + high) / 2
                if part.pages[middle] < page { low = middle + 1 } else { high = middle }
            }
            if low < part.pages.count && part.pages[low] == page { return part.buffer + low * memory.pageSize }
        }
        return nil
    }
}
