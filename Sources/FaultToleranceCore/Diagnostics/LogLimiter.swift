import NIOConcurrencyHelpers

/// Admits one log line per interval and counts the ones it holds back. Thread-safe.
package final class LogLimiter: Sendable {
    private let interval: Duration
    private let state = NIOLockedValueBox<(last: ContinuousClock.Instant?, held: Int)>((nil, 0))

    package init(interval: Duration = .seconds(1)) { self.interval = interval }

    /// The number of lines held back since the last one admitted, when this one may be
    /// logged; `nil` when it must not.
    package func admit() -> Int? {
        state.withLockedValue { state in
            let now = ContinuousClock.now
            if let last = state.last, now - last < interval {
                state.held += 1
                return nil
            }
            defer { state = (now, 0) }
            return state.held
        }
    }
}
