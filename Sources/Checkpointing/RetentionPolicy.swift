/// Which checkpoints of an application to keep, as backup tools count them: the newest
/// ``last``, and the newest of each of the newest ``hourly`` hours and ``daily`` days that have
/// one (by capture time, in UTC). A checkpoint any rule keeps is kept.
///
/// ```swift
/// // The last 24, one an hour for two days, one a day for a month:
/// try store.retain(RetentionPolicy(last: 24, hourly: 48, daily: 31), application: "orders")
/// ```
public struct RetentionPolicy: Sendable, Hashable {
    /// The newest checkpoints kept whatever their time.
    public var last: Int
    /// Hours (the newest that hold a checkpoint) whose newest checkpoint is kept.
    public var hourly: Int
    /// Days (the newest that hold a checkpoint) whose newest checkpoint is kept.
    public var daily: Int

    /// Creates a policy; negative counts count as 0.
    public init(last: Int, hourly: Int = 0, daily: Int = 0) {
        self.last = max(0, last)
        self.hourly = max(0, hourly)
        self.daily = max(0, daily)
    }

    static let nanosecondsPerHour: UInt64 = 3_600_000_000_000

    /// The ids of `checkpoints` (one application's) the policy keeps.
    func kept(_ checkpoints: [CheckpointSummary]) -> Set<CheckpointID> {
        // Newest first: by capture time, then by id (a later id was captured later).
        let newest = checkpoints.sorted { ($0.captureTime, $0.id) > ($1.captureTime, $1.id) }
        var kept = Set(newest.prefix(last).map(\.id))
        for (count, span) in [(hourly, Self.nanosecondsPerHour), (daily, 24 * Self.nanosecondsPerHour)] where count > 0
        {
            var buckets = Set<UInt64>()
            for summary in newest {
                let bucket = summary.captureTime / span
                guard !buckets.contains(bucket) else { continue }
                guard buckets.count < count else { break }
                buckets.insert(bucket)
                kept.insert(summary.id)
            }
        }
        return kept
    }
}
