/// Folding manifests: the state at a checkpoint is its chain's extents laid over each other,
/// the newest on top. A merge writes the folded extents as a new manifest; no chunk is copied.
enum Extents {
    /// `top` laid over `base` (both sorted and disjoint): every page `top` covers comes from
    /// `top`, every other page `base` covers from `base`. The result is sorted, disjoint and
    /// coalesced.
    static func overlay(
        _ base: [CheckpointManifest.Extent], _ top: [CheckpointManifest.Extent]
    ) -> [CheckpointManifest.Extent] {
        guard !top.isEmpty else { return base }
        guard !base.isEmpty else { return top }
        var pieces: [CheckpointManifest.Extent] = []
        pieces.reserveCapacity(base.count + top.count)
        var low = 0
        for extent in base {
            while low < top.count && top[low].pages.upperBound <= extent.first { low += 1 }
            var cursor = extent.first
            var index = low
            while index < top.count && top[index].first < extent.pages.upperBound {
                if top[index].first > cursor { pieces.append(slice(extent, cursor..<top[index].first)) }
                cursor = max(cursor, top[index].pages.upperBound)
                index += 1
            }
            if cursor < extent.pages.upperBound { pieces.append(slice(extent, cursor..<extent.pages.upperBound)) }
        }
        // Merge two sorted, mutually disjoint lists.
        var result: [CheckpointManifest.Extent] = []
        result.reserveCapacity(pieces.count + top.count)
        var left = 0
        var right = 0
        while left < pieces.count || right < top.count {
            if right == top.count || (left < pieces.count && pieces[left].first < top[right].first) {
                append(pieces[left], to: &result)
                left += 1
            } else {
                append(top[right], to: &result)
                right += 1
            }
        }
        return result
    }

    /// The part of `extent` covering `pages` (inside it).
    static func slice(_ extent: CheckpointManifest.Extent, _ pages: Range<Int>) -> CheckpointManifest.Extent {
        switch extent.source {
        case .zero:
            return .init(first: pages.lowerBound, count: pages.count, source: .zero)
        case .chunk(let reference, let skip):
            return .init(
                first: pages.lowerBound, count: pages.count,
                source: .chunk(reference, skip: skip + pages.lowerBound - extent.first))
        }
    }

    /// Appends `extent`, joining it to the last one when they continue each other.
    static func append(_ extent: CheckpointManifest.Extent, to list: inout [CheckpointManifest.Extent]) {
        if let last = list.last, last.pages.upperBound == extent.first {
            switch (last.source, extent.source) {
            case (.zero, .zero):
                list[list.count - 1].count += extent.count
                return
            case (.chunk(let a, let skipA), .chunk(let b, let skipB)) where a == b && skipA + last.count == skipB:
                list[list.count - 1].count += extent.count
                return
            default:
                break
            }
        }
        list.append(extent)
    }
}
