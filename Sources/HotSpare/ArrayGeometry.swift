/// Where each block of a ``StorageArray`` lives: pure arithmetic over the layout, the number of
/// roles and the blocks each role holds.
///
/// A *role* is a position in the array (a member fills it); a *slot* is a block's index within
/// its role's data region. In the mirror layout roles go in pairs (0 and 1, 2 and 3, …) and
/// array blocks are striped across the pairs: block `b` is slot `b / pairs` of both roles of
/// pair `b % pairs`. In the concatenated layout block `b` is slot `b % blocksPerRole` of role
/// `b / blocksPerRole`.
public struct ArrayGeometry: Sendable, Hashable {
    /// The layout.
    public let layout: ArrayLayout
    /// The number of roles.
    public let roleCount: Int
    /// Blocks each role holds.
    public let blocksPerRole: Int
    /// Bytes per block.
    public let blockSize: Int

    /// A geometry; `nil` unless the roles are at least one (two, and even, for a mirror), the
    /// block size valid and the blocks positive.
    public init?(layout: ArrayLayout, roleCount: Int, blocksPerRole: Int, blockSize: Int) {
        guard roleCount >= 1, roleCount <= ArrayRecord.maximumListCount, blocksPerRole >= 1,
            Self.validBlockSize(blockSize), blocksPerRole <= Int.max / blockSize / roleCount,
            layout == .concatenated || (roleCount >= 2 && roleCount % 2 == 0)
        else { return nil }
        self.layout = layout
        self.roleCount = roleCount
        self.blocksPerRole = blocksPerRole
        self.blockSize = blockSize
    }

    /// Whether `size` can be a block size: a power of two from 4 KiB to 16 MiB.
    public static func validBlockSize(_ size: Int) -> Bool {
        size >= 4096 && size <= 16 << 20 && size.nonzeroBitCount == 1
    }

    /// Roles that hold distinct data: pairs in a mirror, every role when concatenated.
    public var groups: Int { layout == .mirror ? roleCount / 2 : roleCount }

    /// Blocks in the array.
    public var blockCount: Int { blocksPerRole * groups }

    /// The array's bytes.
    public var capacity: Int { blockCount * blockSize }

    /// The roles holding block `block` (one, or a mirror's pair) and its slot in them.
    public func placement(ofBlock block: Int) -> (roles: [Int], slot: Int) {
        switch layout {
        case .mirror:
            let pair = block % groups
            return ([2 * pair, 2 * pair + 1], block / groups)
        case .concatenated:
            return ([block / blocksPerRole], block % blocksPerRole)
        }
    }

    /// The array block at `slot` of `role`.
    public func block(role: Int, slot: Int) -> Int {
        switch layout {
        case .mirror: slot * groups + role / 2
        case .concatenated: role * blocksPerRole + slot
        }
    }

    /// The role holding the same blocks as `role` (a mirror's partner), if any.
    public func partner(of role: Int) -> Int? {
        layout == .mirror ? role ^ 1 : nil
    }
}
