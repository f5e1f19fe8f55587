/// How many faults of each kind a simulation injected, for reports and for checking that a
/// run exercised what it claims to.
public struct FaultCounters: Sendable, Hashable, Codable {
    /// Messages the network dropped at random.
    public var messagesLost = 0
    /// Messages the network dropped because of a partition or a cut link.
    public var messagesPartitioned = 0
    /// Messages delivered twice.
    public var messagesDuplicated = 0
    /// Messages held back past later ones (reordering).
    public var messagesReordered = 0
    /// Messages delivered.
    public var messagesDelivered = 0
    /// Partitions and one-way cuts begun.
    public var partitions = 0
    /// Node crashes.
    public var nodeCrashes = 0
    /// Node restarts.
    public var nodeRestarts = 0
    /// Unsynchronized writes lost whole in a crash.
    public var writesLost = 0
    /// Unsynchronized writes torn (some sectors kept, some lost) in a crash.
    public var writesTorn = 0
    /// Unsynchronized writes that happened to survive a crash.
    public var writesSurvived = 0
    /// Durability barriers made to fail.
    public var synchronizeFailures = 0
    /// Reads made to fail.
    public var readFailures = 0
    /// Bytes damaged at rest, or units deleted, under a running system.
    public var damageInjected = 0
    /// Injected damage that was reported (a typed error naming it) rather than returned.
    public var damageDetected = 0
    /// Messages an attacker injected (forged, or replayed from a capture).
    public var forgeriesInjected = 0
    /// Messages the receivers refused as not authentic (bad or missing MAC, replayed).
    public var forgeriesRejected = 0
    /// Operator link-downs that held an element out of its chain (until a link-up).
    public var linksHeldDown = 0

    /// Creates zeroed counters.
    public init() {}

    /// Every counter with its name, in a stable order, for tables.
    public var entries: [(name: String, value: Int)] {
        [
            ("messages delivered", messagesDelivered), ("messages lost", messagesLost),
            ("messages partitioned", messagesPartitioned), ("messages duplicated", messagesDuplicated),
            ("messages reordered", messagesReordered), ("partitions", partitions), ("node crashes", nodeCrashes),
            ("node restarts", nodeRestarts), ("writes lost", writesLost), ("writes torn", writesTorn),
            ("writes survived crash", writesSurvived), ("fsync failures", synchronizeFailures),
            ("read failures", readFailures), ("damage injected", damageInjected),
            ("damage detected", damageDetected), ("forgeries injected", forgeriesInjected),
            ("forgeries rejected", forgeriesRejected), ("links held down", linksHeldDown),
        ]
    }

    /// Adds another run's counters to these.
    public mutating func add(_ other: FaultCounters) {
        messagesLost += other.messagesLost
        messagesPartitioned += other.messagesPartitioned
        messagesDuplicated += other.messagesDuplicated
        messagesReordered += other.messagesReordered
        messagesDelivered += other.messagesDelivered
        partitions += other.partitions
        nodeCrashes += other.nodeCrashes
        nodeRestarts += other.nodeRestarts
        writesLost += other.writesLost
        writesTorn += other.writesTorn
        writesSurvived += other.writesSurvived
        synchronizeFailures += other.synchronizeFailures
        readFailures += other.readFailures
        forgeriesInjected += other.forgeriesInjected
        forgeriesRejected += other.forgeriesRejected
        damageInjected += other.damageInjected
        damageDetected += other.damageDetected
        linksHeldDown += other.linksHeldDown
    }
}
