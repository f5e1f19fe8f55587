/// The store's keys in order, as sorted chunks of at most ``chunkCapacity`` keys (a B+-tree one
/// level deep, the layout Python's sortedcontainers uses): an insert or a removal moves the keys
/// of one chunk, not every key after it, so a store of a million keys takes a new key in
/// O(log n + 1024) instead of moving megabytes. Iteration is in key order.
struct SortedKeys: Sequence, Sendable {
    /// A chunk splits in two once it holds more than this.
    static let chunkCapacity = 1024

    /// Non-empty chunks, each sorted, every key of a chunk below every key of the next.
    private var chunks: [[StoreKey]] = []
    /// The number of keys.
    private(set) var count = 0

    /// The last (largest) key.
    var last: StoreKey? { chunks.last?.last }

    /// Inserts `key`, which must not be present.
    mutating func insert(_ key: StoreKey) {
        count += 1
        guard !chunks.isEmpty else {
            chunks = [[key]]
            return
        }
        let chunk = chunkIndex(for: key)
        chunks[chunk].insert(key, at: Self.lowerBound(of: key, in: chunks[chunk]))
        if chunks[chunk].count > Self.chunkCapacity {
            let upper = Array(chunks[chunk][(Self.chunkCapacity / 2)...])
            chunks[chunk].removeLast(upper.count)
            chunks.insert(upper, at: chunk + 1)
        }
    }

    /// Removes `key` if present.
    mutating func remove(_ key: StoreKey) {
        guard !chunks.isEmpty else { return }
        let chunk = chunkIndex(for: key)
        let index = Self.lowerBound(of: key, in: chunks[chunk])
        guard index < chunks[chunk].count, chunks[chunk][index] == key else { return }
        chunks[chunk].remove(at: index)
        count -= 1
        if chunks[chunk].isEmpty { chunks.remove(at: chunk) }
    }

    /// Appends `key`, which must be above every key held (a snapshot's keys, in order).
    mutating func append(_ key: StoreKey) {
        count += 1
        if let lastChunk = chunks.indices.last, chunks[lastChunk].count < Self.chunkCapacity {
            chunks[lastChunk].append(key)
        } else {
            chunks.append([key])
        }
    }

    /// The keys from the first at or above `start` (every key when `nil`), in order.
    func keys(from start: StoreKey?) -> some Sequence<StoreKey> {
        var first = (chunk: 0, index: 0)
        if let start, !chunks.isEmpty {
            let chunk = chunkIndex(for: start)
            first = (chunk, Self.lowerBound(of: start, in: chunks[chunk]))
        }
        return chunks[first.chunk...].enumerated().lazy.flatMap { offset, keys in
            keys[(offset == 0 ? first.index : 0)...]
        }
    }

    func makeIterator() -> FlattenSequence<[[StoreKey]]>.Iterator { chunks.joined().makeIterator() }

    /// The chunk where `key` is or belongs: the first whose last key is not below it, or the
    /// last chunk. `chunks` must not be empty.
    private func chunkIndex(for key: StoreKey) -> Int {
        var low = 0
        var high = chunks.count
        while low < high {
            let middle = (low + high) / 2
            if let last = chunks[middle].last, last < key { low = middle + 1 } else { high = middle }
        }
        return Swift.min(low, chunks.count - 1)
    }

    private static func lowerBound(of key: StoreKey, in keys: [StoreKey]) -> Int {
        var low = 0
        var high = keys.count
        while low < high {
            let middle = (low + high) / 2
            if keys[middle] < key { low = middle + 1 } else { high = middle }
        }
        return low
    }
}
