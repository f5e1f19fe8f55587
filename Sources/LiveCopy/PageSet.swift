/// A set of page indices in a region, kept as a bitmap (one bit per page).
///
/// Not thread-safe: it is the copier's private view of the pages it is about to copy. The
/// shared, atomic dirty bitmap lives in the ``DirtyTracker``.
public struct PageSet: Sendable, Hashable {
    /// The number of pages the set can hold (indices `0..<pageCount`).
    public let pageCount: Int
    /// The bitmap, 64 pages per word.
    public package(set) var words: [UInt64]

    /// An empty set over `pageCount` pages.
    public init(pageCount: Int) {
        self.pageCount = max(0, pageCount)
        self.words = Array(repeating: 0, count: (self.pageCount + 63) / 64)
    }

    /// The set holding every page.
    public static func all(pageCount: Int) -> PageSet {
        var set = PageSet(pageCount: pageCount)
        set.insertAll()
        return set
    }

    /// The number of pages in the set.
    public var count: Int { words.reduce(0) { $0 + $1.nonzeroBitCount } }

    /// Whether the set holds no page.
    public var isEmpty: Bool { words.allSatisfy { $0 == 0 } }

    /// Whether `page` is in the set.
    public func contains(_ page: Int) -> Bool {
        guard page >= 0, page < pageCount else { return false }
        return words[page >> 6] & (1 << UInt64(page & 63)) != 0
    }

    /// Adds `page` (ignored when out of range).
    public mutating func insert(_ page: Int) {
        guard page >= 0, page < pageCount else { return }
        words[page >> 6] |= 1 << UInt64(page & 63)
    }

    /// Removes `page`.
    public mutating func remove(_ page: Int) {
        guard page >= 0, page < pageCount else { return }
        words[page >> 6] &= ~(1 << UInt64(page & 63))
    }

    /// Adds every page.
    public mutating func insertAll() {
        for index in words.indices { words[index] = ~0 }
        let tail = pageCount & 63
        if tail != 0, let last = words.indices.last { words[last] = (1 << UInt64(tail)) - 1 }
    }

    /// Removes every page.
    public mutating func removeAll() {
        for index in words.indices { words[index] = 0 }
    }

    /// Adds every page of `other` (which must cover the same number of pages).
    public mutating func formUnion(_ other: PageSet) {
        for index in words.indices where index < other.words.count { words[index] |= other.words[index] }
    }

    /// The pages in ascending order.
    public var pages: [Int] {
        var result: [Int] = []
        result.reserveCapacity(count)
        forEachRun { run in result.append(contentsOf: run) }
        return result
    }

    /// Calls `body` with each maximal run of consecutive pages, in ascending order.
    public func forEachRun(_ body: (Range<Int>) throws -> Void) rethrows {
        var start = -1
        for (wordIndex, word) in words.enumerated() {
            if word == 0 {
                if start >= 0 {
                    try body(start..<(wordIndex << 6))
                    start = -1
                }
                continue
            }
            if word == ~0 {
                if start < 0 { start = wordIndex << 6 }
                continue
            }
            for bit in 0..<64 {
                let page = wordIndex << 6 + bit
                if word & (1 << UInt64(bit)) != 0 {
                    if start < 0 { start = page }
                } else if start >= 0 {
                    try body(start..<page)
                    start = -1
                }
            }
        }
        if start >= 0 { try body(start..<min(pageCount, words.count << 6)) }
    }

    /// Calls `body` with runs of at most `maximum` consecutive pages, in ascending order.
    public func forEachRun(maximumLength maximum: Int, _ body: (Range<Int>) throws -> Void) rethrows {
        let limit = max(1, maximum)
        try forEachRun { run in
            var start = run.lowerBound
            while start < run.upperBound {
                let end = min(run.upperBound, start + limit)
                try body(start..<end)
                start = end
            }
        }
    }
}
