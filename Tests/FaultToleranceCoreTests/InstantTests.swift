import FaultToleranceCore
import Testing

@Suite("Instant arithmetic")
struct InstantTests {
    @Test("adding and subtracting durations are inverses, and both saturate at the ends")
    func arithmetic() {
        let instant = Instant(nanoseconds: 5_000_000_000)
        #expect(instant - .seconds(2) == Instant(nanoseconds: 3_000_000_000))
        #expect(instant - .seconds(2) + .seconds(2) == instant)
        #expect(instant - (instant - .milliseconds(1)) == .milliseconds(1))
        #expect(Instant(nanoseconds: .min + 5) - .seconds(1) == Instant(nanoseconds: .min))
        #expect(Instant(nanoseconds: .max - 5) - .nanoseconds(-10) == Instant(nanoseconds: .max))
        #expect(Instant(nanoseconds: .max - 5) + .seconds(1) == Instant(nanoseconds: .max))
    }
}
