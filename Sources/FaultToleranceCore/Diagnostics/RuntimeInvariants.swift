import NIOConcurrencyHelpers

/// Internal invariants of the runtimes (journal sequencing, send queues, page accounting,
/// state-machine transitions), checked where they must hold.
///
/// Under a simulation, which sets ``sink`` for its run, a broken invariant is recorded there
/// and the seed fails at its end with the first one, naming the place: the run is replayable
/// from its seed like any other failure, and nothing traps inside the simulator. Elsewhere a
/// broken invariant stops a debug build (`assertionFailure`) and costs a release build only
/// the check itself.
public enum RuntimeInvariants {
    /// Where broken invariants go during a simulated run (task-local: set for a run, seen by
    /// every task it starts, and by the code it calls synchronously).
    @TaskLocal public static var sink: RuntimeInvariantSink?

    /// Checks `condition`; when it does not hold, records `message` with the place in
    /// ``sink`` (in a simulation) or stops a debug build.
    @inlinable
    public static func check(
        _ condition: @autoclosure () -> Bool, _ message: @autoclosure () -> String,
        file: StaticString = #fileID, line: UInt = #line
    ) {
        if condition() { return }
        broken(message(), file: file, line: line)
    }

    @usableFromInline
    static func broken(_ message: String, file: StaticString, line: UInt) {
        if let sink {
            sink.record("\(message) (\(file):\(line))")
        } else {
            assertionFailure("runtime invariant broken: \(message)", file: file, line: line)
        }
    }
}

/// Collects the runtime invariants a simulated run broke; see ``RuntimeInvariants``.
public final class RuntimeInvariantSink: Sendable {
    private let state = NIOLockedValueBox<(first: String?, count: Int)>((nil, 0))

    /// An empty sink.
    public init() {}

    /// Records one broken invariant.
    public func record(_ description: String) {
        state.withLockedValue { state in
            if state.first == nil { state.first = description }
            state.count += 1
        }
    }

    /// The first invariant broken, with its place, or `nil`.
    public var firstViolation: String? { state.withLockedValue { $0.first } }

    /// How many were broken.
    public var count: Int { state.withLockedValue { $0.count } }
}
