import FaultToleranceCore
import HotSpare
import Testing

@Suite struct WearMonitorTests {
    static let a = UnitID(1)
    static let b = UnitID(2)
    static let mib: UInt64 = 1 << 20

    static func at(_ seconds: Int64) -> Instant { Instant.zero + .seconds(seconds) }

    /// A monitor fed, every 10 s up to `until`, `a` at `amplificationOfA` and `b` at 1.2, each
    /// writing 10 MiB a step.
    static func fed(
        _ monitor: inout WearMonitor, from start: Int64 = 0, until end: Int64, amplificationOfA: Double,
        base: (a: UInt64, b: UInt64) = (0, 0)
    ) -> (a: UInt64, b: UInt64) {
        var hosts = base
        for second in stride(from: start, through: end, by: 10) {
            hosts.a += 10 * mib
            hosts.b += 10 * mib
            monitor.observe(a, media: UInt64(Double(hosts.a) * amplificationOfA), host: hosts.a, at: at(second))
            monitor.observe(b, media: UInt64(Double(hosts.b) * 1.2), host: hosts.b, at: at(second))
        }
        return hosts
    }

    @Test func aWornMemberIsProposedOnlyAfterItsDwellAndWithASpare() {
        var monitor = WearMonitor(
            policy: .init(threshold: 3, clearBelow: 2.5, window: .seconds(120), minimumDwell: .seconds(60)))
        _ = Self.fed(&monitor, until: 100, amplificationOfA: 4)
        // Worn since now: not yet.
        #expect(
            monitor.evaluate(now: Self.at(100), freeSpares: 1, migrating: false)
                == .none(waiting: "worn for less than 60.0 seconds"))
        #expect(monitor.states[Self.a] == .worn(since: Self.at(100)))
        #expect(monitor.states[Self.b] == .healthy)
        _ = Self.fed(
            &monitor, from: 110, until: 160, amplificationOfA: 4, base: (11 * 10 * Self.mib, 11 * 10 * Self.mib))
        #expect(
            monitor.evaluate(now: Self.at(160), freeSpares: 0, migrating: false) == .none(waiting: "no spare is free"))
        #expect(
            monitor.evaluate(now: Self.at(160), freeSpares: 1, migrating: true)
                == .none(waiting: "a migration is running (one at a time)"))
        guard
            case .migrate(let member, let amplification) = monitor.evaluate(
                now: Self.at(160), freeSpares: 1, migrating: false)
        else {
            Issue.record("no migration proposed")
            return
        }
        #expect(member == Self.a)
        #expect(abs(amplification - 4) < 0.01)
        #expect(monitor.transitions.contains { $0.member == Self.a && $0.reason.contains("at or above 3") })
    }

    /// Between the two bounds a worn member stays worn; below the lower it is healthy again.
    @Test func hysteresisKeepsAMemberNearTheThresholdFromFlapping() {
        var monitor = WearMonitor(
            policy: .init(
                threshold: 3, clearBelow: 2, window: .seconds(60), minimumDwell: .seconds(0), minimumHostBytes: Self.mib
            ))
        var hosts = Self.fed(&monitor, until: 60, amplificationOfA: 3.5)
        _ = monitor.evaluate(now: Self.at(60), freeSpares: 0, migrating: false)
        #expect(monitor.states[Self.a] == .worn(since: Self.at(60)))
        // Then 2.5 per byte for a whole window: between the bounds, still worn.
        var media = UInt64(Double(hosts.a) * 3.5)
        for second in stride(from: Int64(70), through: 200, by: 10) {
            hosts.a += 10 * Self.mib
            media += UInt64(Double(10 * Self.mib) * 2.5)
            monitor.observe(Self.a, media: media, host: hosts.a, at: Self.at(second))
        }
        _ = monitor.evaluate(now: Self.at(200), freeSpares: 0, migrating: false)
        #expect(monitor.states[Self.a] == .worn(since: Self.at(60)))
        // Then 1.5: healthy.
        for second in stride(from: Int64(210), through: 300, by: 10) {
            hosts.a += 10 * Self.mib
            media += UInt64(Double(10 * Self.mib) * 1.5)
            monitor.observe(Self.a, media: media, host: hosts.a, at: Self.at(second))
        }
        _ = monitor.evaluate(now: Self.at(300), freeSpares: 0, migrating: false)
        #expect(monitor.states[Self.a] == .healthy)
        #expect(monitor.transitions.filter { $0.member == Self.a }.count == 2)
    }

    /// Too little written in the window: not judged, whatever the ratio.
    @Test func aQuietMemberIsNotJudged() {
        var monitor = WearMonitor(policy: .init(minimumHostBytes: 64 * Self.mib))
        monitor.observe(Self.a, media: 0, host: 0, at: Self.at(0))
        monitor.observe(Self.a, media: 50 * Self.mib, host: Self.mib, at: Self.at(10))
        #expect(monitor.writeAmplification(of: Self.a) == nil)
        #expect(monitor.evaluate(now: Self.at(10), freeSpares: 1, migrating: false) == .none(waiting: nil))
        #expect(monitor.states[Self.a] == .healthy)
    }

    /// A replaced drive's counters start low again: its window restarts and says why.
    @Test func countersThatGoBackwardsRestartTheWindow() {
        var monitor = WearMonitor(policy: .init(window: .seconds(600), minimumHostBytes: Self.mib))
        monitor.observe(Self.a, media: 400 * Self.mib, host: 100 * Self.mib, at: Self.at(0))
        monitor.observe(Self.a, media: 800 * Self.mib, host: 200 * Self.mib, at: Self.at(10))
        #expect(monitor.writeAmplification(of: Self.a) == 4)
        monitor.observe(Self.a, media: Self.mib, host: Self.mib, at: Self.at(20))
        #expect(monitor.writeAmplification(of: Self.a) == nil)
        #expect(monitor.transitions.last?.reason.contains("backwards") == true)
        monitor.migrated(Self.a, at: Self.at(30))
        #expect(monitor.states[Self.a] == .healthy)
        monitor.remove(Self.a)
        #expect(monitor.states[Self.a] == nil)
    }

    /// The window slides: what was written before it no longer counts.
    @Test func onlyTheWindowCounts() {
        var monitor = WearMonitor(policy: .init(window: .seconds(100), minimumHostBytes: Self.mib))
        // 5x for the first 200 s, then 1x.
        var host: UInt64 = 0
        var media: UInt64 = 0
        for second in stride(from: Int64(0), through: 400, by: 10) {
            host += 10 * Self.mib
            media += (second <= 200 ? 5 : 1) * 10 * Self.mib
            monitor.observe(Self.a, media: media, host: host, at: Self.at(second))
        }
        #expect(monitor.writeAmplification(of: Self.a) == 1)
    }
}
