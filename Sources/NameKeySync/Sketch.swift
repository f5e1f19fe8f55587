/// One coded symbol of a rateless invertible Bloom lookup table (Yang, Gilad and Alizadeh,
/// "Practical Rateless Set Reconciliation", SIGCOMM 2024) over 64-bit fingerprints.
///
/// Symbol `i` holds the XOR of the elements mapped to it, the XOR of their 32-bit checks and
/// their count. Every element maps to symbol 0 and to each later symbol `i` with probability
/// `2 / (i + 2)`, so an element touches about `2 ln n` of the first `n` symbols, and any prefix
/// of the stream decodes a difference of about `n / 1.35` elements.
public struct SketchSymbol: Sendable, Hashable {
    /// XOR of the elements.
    public var sum: UInt64
    /// XOR of the elements' checks (``SketchSymbol/check(of:)``).
    public var check: UInt32
    /// Elements added minus elements removed.
    public var count: Int64

    /// The empty symbol.
    public static let zero = SketchSymbol(sum: 0, check: 0, count: 0)

    /// Creates a symbol.
    public init(sum: UInt64, check: UInt32, count: Int64) {
        self.sum = sum
        self.check = check
        self.count = count
    }

    /// The 32-bit check of an element (a hash independent of its index mapping).
    public static func check(of element: UInt64) -> UInt32 {
        UInt32(truncatingIfNeeded: Hash64.finalize(element ^ 0x243F_6A88_85A3_08D3) >> 17)
    }

    /// Adds (`sign` 1) or removes (`sign` -1) an element.
    mutating func toggle(_ element: UInt64, check elementCheck: UInt32, sign: Int64) {
        sum ^= element
        check ^= elementCheck
        count &+= sign
    }

    /// `self` minus `other`: the symbol of the symmetric difference, counts signed.
    public func subtracting(_ other: SketchSymbol) -> SketchSymbol {
        SketchSymbol(sum: sum ^ other.sum, check: check ^ other.check, count: count &- other.count)
    }

    /// `self` plus `other`: the symbol of the union of their elements, counts added.
    public func adding(_ other: SketchSymbol) -> SketchSymbol {
        SketchSymbol(sum: sum ^ other.sum, check: check ^ other.check, count: count &+ other.count)
    }

    /// Whether the symbol is empty.
    public var isZero: Bool { sum == 0 && check == 0 && count == 0 }
}

/// The indices of the symbols an element maps to, in increasing order from 0.
///
/// Index `j > i` follows index `i` with probability `P(no index in (i, j]) = (i+1)(i+2) /
/// ((j+1)(j+2))`; one uniform draw from a generator seeded by the element picks the next index
/// directly, so walking an element's first `n` symbols costs about `2 ln n` steps. Both sides of a
/// sync must compute the same indices: the arithmetic is IEEE-754 double with a correctly rounded
/// square root, identical on every platform.
public struct SketchIndices: Sendable {
    /// The current index.
    public private(set) var index: Int = 0
    private var state: UInt64

    /// Starts at index 0 for `element`.
    public init(element: UInt64) { state = element ^ 0x5851_F42D_4C95_7F2D }

    /// Moves to the next index.
    public mutating func advance() {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        // A uniform draw in (0, 1].
        let u = (Double(z >> 11) + 1) * 0x1p-53
        let i = Double(index)
        let bound = (i + 1) * (i + 2) / u
        // The smallest j > i with (j+1)(j+2) > bound.
        var j = max(index + 1, Int(min((bound + 0.25).squareRoot() - 1.5, 0x1p60)))
        while Double(j + 1) * Double(j + 2) <= bound { j += 1 }
        while j > index + 1 && Double(j) * Double(j + 1) > bound { j -= 1 }
        index = j
    }
}

/// The first ``capacity`` symbols of a set's rateless stream, kept current as elements come and
/// go: what a store maintains on every write, so a sync reads symbols instead of scanning.
public struct SketchPrefix: Sendable, Equatable {
    /// The symbols.
    public private(set) var symbols: [SketchSymbol]

    /// The number of symbols kept.
    public var capacity: Int { symbols.count }

    /// An empty set's prefix of `capacity` symbols.
    public init(capacity: Int) {
        symbols = Array(repeating: .zero, count: max(1, capacity))
    }

    /// A prefix from stored symbols.
    public init(symbols: [SketchSymbol]) {
        self.symbols = symbols.isEmpty ? [.zero] : symbols
    }

    /// Adds an element.
    public mutating func insert(_ element: Fingerprint) { toggle(element.value, sign: 1) }

    /// Removes an element.
    public mutating func remove(_ element: Fingerprint) { toggle(element.value, sign: -1) }

    /// Adds (`sign` 1) or removes (`sign` -1) an element.
    public mutating func toggle(_ element: UInt64, sign: Int64) {
        let check = SketchSymbol.check(of: element)
        var indices = SketchIndices(element: element)
        let count = symbols.count
        symbols.withUnsafeMutableBufferPointer { symbols in
            while indices.index < count {
                symbols[indices.index].toggle(element, check: check, sign: sign)
                indices.advance()
            }
        }
    }

    /// Symbol 0: every element, a digest of the whole set (count, XOR, XOR of checks).
    public var digest: SketchSymbol { symbols[0] }
}

/// Peels the difference between a remote set and the local one from their symbols, range by range.
///
/// Feed it the remote side's symbols and the local side's for the same indices, in order from 0
/// (``add(remote:local:)``); after each range, ``isComplete`` says whether the whole difference
/// is known. A symbol counts as holding one element only if its count is ±1, its check matches
/// the element and the element maps to it; whatever slips through is caught by comparing the
/// sets' digests after the sync.
public struct SketchDecoder: Sendable {
    private var differences: [SketchSymbol] = []
    /// Elements the remote set has and the local one lacks.
    public private(set) var remoteOnly: [Fingerprint] = []
    /// Elements the local set has and the remote one lacks.
    public private(set) var localOnly: [Fingerprint] = []
    /// Decoded elements with the position of their next index beyond the symbols received.
    private var cursors: [(element: UInt64, check: UInt32, sign: Int64, indices: SketchIndices)] = []
    private var seen = Set<UInt64>()
    /// Set when the symbols contradict themselves (an element decoded twice): the difference
    /// cannot be trusted and the sync falls back.
    public private(set) var inconsistent = false

    /// A decoder with no symbols yet.
    public init() {}

    /// Symbols received so far.
    public var received: Int { differences.count }

    /// Whether the difference is fully decoded: symbol 0, which every element maps to, is empty
    /// once every element of the difference has been peeled.
    public var isComplete: Bool { !differences.isEmpty && differences[0].isZero && !inconsistent }

    /// Adds the next range of symbols: `remote[k]` and `local[k]` are symbol `received + k` of
    /// each side. Ranges of different lengths cannot be compared: the decoder becomes
    /// ``inconsistent``.
    public mutating func add(remote: [SketchSymbol], local: [SketchSymbol]) {
        guard remote.count == local.count else {
            inconsistent = true
            return
        }
        let start = differences.count
        differences.reserveCapacity(start + remote.count)
        for (r, l) in zip(remote, local) { differences.append(r.subtracting(l)) }
        let end = differences.count
        // Elements already peeled leave the new symbols too.
        for k in cursors.indices {
            while cursors[k].indices.index < end {
                differences[cursors[k].indices.index].toggle(
                    cursors[k].element, check: cursors[k].check, sign: -cursors[k].sign)
                cursors[k].indices.advance()
            }
        }
        var queue = Array(start..<end)
        // Symbol 0 is the densest; peel from the sparse end first.
        queue.reverse()
        while let index = queue.popLast(), !inconsistent {
            peel(index, queue: &queue)
        }
    }

    private mutating func peel(_ index: Int, queue: inout [Int]) {
        let symbol = differences[index]
        guard symbol.count == 1 || symbol.count == -1, symbol.check == SketchSymbol.check(of: symbol.sum) else {
            return
        }
        // The element must map to this index.
        var indices = SketchIndices(element: symbol.sum)
        while indices.index < index { indices.advance() }
        guard indices.index == index else { return }
        let element = symbol.sum
        guard seen.insert(element).inserted else {
            inconsistent = true
            return
        }
        if symbol.count == 1 { remoteOnly.append(Fingerprint(element)) } else { localOnly.append(Fingerprint(element)) }
        var walk = SketchIndices(element: element)
        let end = differences.count
        while walk.index < end {
            let target = walk.index
            differences[target].toggle(element, check: symbol.check, sign: -symbol.count)
            if target != index, differences[target].count == 1 || differences[target].count == -1 {
                queue.append(target)
            }
            walk.advance()
        }
        cursors.append((element, symbol.check, symbol.count, walk))
    }
}
