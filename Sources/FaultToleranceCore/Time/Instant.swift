/// A point on a monotonic timeline, in nanoseconds since an arbitrary origin.
///
/// State machines in this library never read a clock: their callers pass `Instant`s in. A
/// runtime derives them from `ContinuousClock`; the simulator from its virtual clock. The
/// origin is the clock's own, so instants from different clocks must not be compared.
public struct Instant: Hashable, Sendable, Comparable, CustomStringConvertible {
    /// Nanoseconds since the clock's origin.
    public var nanoseconds: Int64

    /// Creates an instant from nanoseconds since the clock's origin.
    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    /// The clock's origin.
    public static let zero = Instant(nanoseconds: 0)

    /// Orders instants in time.
    public static func < (lhs: Instant, rhs: Instant) -> Bool { lhs.nanoseconds < rhs.nanoseconds }

    /// The instant `duration` after `lhs`; saturates instead of overflowing.
    public static func + (lhs: Instant, rhs: Duration) -> Instant {
        let (sum, overflow) = lhs.nanoseconds.addingReportingOverflow(rhs.nanoseconds)
        return Instant(nanoseconds: overflow ? (rhs.nanoseconds > 0 ? .max : .min) : sum)
    }

    /// The instant `duration` before `lhs`; saturates instead of overflowing.
    public static func - (lhs: Instant, rhs: Duration) -> Instant {
        let (difference, overflow) = lhs.nanoseconds.subtractingReportingOverflow(rhs.nanoseconds)
        return Instant(nanoseconds: overflow ? (rhs.nanoseconds > 0 ? .min : .max) : difference)
    }

    /// The time elapsed from `rhs` to `lhs`.
    public static func - (lhs: Instant, rhs: Instant) -> Duration {
        .nanoseconds(lhs.nanoseconds &- rhs.nanoseconds)
    }

    /// The instant as seconds with millisecond precision, e.g. `12.345s`.
    public var description: String {
        let millis = nanoseconds / 1_000_000
        let fraction = String(abs(millis % 1000))
        let padded = String(repeating: "0", count: 3 - fraction.count) + fraction
        return "\(millis / 1000).\(padded)s"
    }
}

extension Duration {
    /// The duration in whole nanoseconds, saturating at `Int64`'s bounds. Package access: a
    /// public extension on a standard type could clash with the same name in client code.
    package var nanoseconds: Int64 {
        let (seconds, attoseconds) = components
        let (scaled, overflow) = seconds.multipliedReportingOverflow(by: 1_000_000_000)
        if overflow { return seconds > 0 ? .max : .min }
        let (sum, overflow2) = scaled.addingReportingOverflow(attoseconds / 1_000_000_000)
        if overflow2 { return seconds > 0 ? .max : .min }
        return sum
    }
}
