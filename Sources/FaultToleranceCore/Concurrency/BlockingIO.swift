import NIOPosix

/// Where a runtime runs work that blocks on a disk: on NIO's shared thread pool (production),
/// or inline on the calling task (a simulation, whose deterministic executor must see every
/// job and whose simulated disks do not block).
///
/// ```swift
/// let records = await blockingIO.run { try? journal.records(fromSequence: 1) }
/// ```
public enum BlockingIO: Sendable, Hashable {
    /// NIO's shared thread pool: the cooperative pool never waits on a disk.
    case threadPool
    /// The calling task.
    case inline

    /// Runs `body` where this says and returns its result. When the thread pool is shutting
    /// down, `body` runs on the calling task rather than being lost.
    public func run<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T {
        switch self {
        case .inline:
            return body()
        case .threadPool:
            do {
                return try await NIOThreadPool.singleton.runIfActive { body() }
            } catch {
                return body()
            }
        }
    }
}
