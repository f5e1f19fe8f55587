/// What one place of a simulated disk (a sector, a block) may read as, through writes,
/// synchronizes and power cuts: its content at the last acknowledged synchronize, what was
/// written before a power cut and not acknowledged (the cut left one of them), and what was
/// written since. A scenario keeps one per place and checks every read against ``candidates``.
public struct AcknowledgedContent<Value: Sendable>: Sendable {
    /// The content at the last acknowledged synchronize.
    public var acknowledged: Value
    /// Written before the last power cut and never acknowledged: any of them may have landed.
    public var beforeCut: [Value] = []
    /// Written since the last cut, not yet acknowledged.
    public var later: [Value] = []

    /// A place whose durable content is `acknowledged`.
    public init(_ acknowledged: Value) { self.acknowledged = acknowledged }

    /// Everything a read may return.
    public var candidates: [Value] { [acknowledged] + beforeCut + later }

    /// A write was issued (it may or may not land before the next synchronize).
    public mutating func written(_ value: Value) { later.append(value) }

    /// A synchronize succeeded: the newest write since the cut is durable; with none, the
    /// place holds whichever the cut left, durably.
    public mutating func synchronized() {
        guard let last = later.last else { return }
        acknowledged = last
        beforeCut.removeAll()
        later.removeAll()
    }

    /// The power went: what was not acknowledged may or may not have landed, and a later
    /// synchronize does not decide which.
    public mutating func powerCut() {
        beforeCut += later
        later.removeAll()
    }
}
