import NIOConcurrencyHelpers
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// The gate every writer passes through: it lets the copier hold all writers for the final
/// stop-and-copy, and slow them down (throttle) when the copy does not converge.
///
/// Entering and leaving cost one atomic add each when the gate is open. `pause()` closes the
/// gate and waits until every writer already inside has left; writers arriving while it is
/// closed block until ``resume()``. Async callers (the copier) use `await pause()`, which
/// suspends instead of holding its thread while the writers inside finish. Throttling at `p`
/// percent holds writers at the gate for the first `p` percent of every 10 ms slice of the
/// monotonic clock, the way QEMU's auto-converge sleeps virtual CPUs for a share of each time
/// slice.
public final class PauseGate: Sendable {
    private static let pausedBit = 1 << 62
    private static let slice: UInt64 = 10_000_000

    private let state = Atomic<Int>(0)
    private let throttle = Atomic<Int>(0)
    private let paused = ConditionLock<Bool>(value: false)
    /// An async `pause()` waiting for the last writer inside to leave.
    private let drainWaiter = NIOLockedValueBox<CheckedContinuation<Void, Never>?>(nil)
    private let holdsThrottledWriters: Bool

    /// Creates an open gate.
    public init() { holdsThrottledWriters = true }

    /// Creates an open gate that, with `holdsThrottledWriters` false, only records the
    /// throttle: a simulation's writers are tasks on its one thread, which must not sleep, and
    /// slow themselves down by ``throttlePercent`` instead.
    package init(holdsThrottledWriters: Bool) { self.holdsThrottledWriters = holdsThrottledWriters }

    /// Whether the gate is closed.
    public var isPaused: Bool { state.load(ordering: .acquiring) & Self.pausedBit != 0 }

    /// The current throttle, in percent of writer time held at the gate (0 when not throttled).
    public var throttlePercent: Int { throttle.load(ordering: .relaxed) }

    /// Sets the throttle (clamped to 0...99).
    public func setThrottle(percent: Int) {
        throttle.store(min(99, max(0, percent)), ordering: .relaxed)
    }

    /// Enters the gate: returns at once when it is open, otherwise blocks until it opens.
    /// Every call must be paired with ``leave()``.
    public func enter() {
        let percent = throttle.load(ordering: .relaxed)
        if percent > 0 && holdsThrottledWriters { holdForThrottle(percent: percent) }
        while true {
            let previous = state.wrappingAdd(1, ordering: .acquiringAndReleasing).oldValue
            if previous & Self.pausedBit == 0 { return }
            // Closed: back out (waking an async pause that saw this writer's count).
            let backedOut = state.wrappingSubtract(1, ordering: .acquiringAndReleasing).oldValue
            if backedOut == Self.pausedBit | 1 { resumeDrainWaiter() }
            paused.lock(whenValue: false)
            paused.unlock()
        }
    }

    /// Leaves the gate.
    public func leave() {
        let previous = state.wrappingSubtract(1, ordering: .acquiringAndReleasing).oldValue
        // The last writer left a closed gate: wake an async pause waiting for it.
        if previous == Self.pausedBit | 1 { resumeDrainWaiter() }
    }

    /// Runs `body` inside the gate.
    @inlinable
    public func withEntry<Result, Failure: Error>(_ body: () throws(Failure) -> Result) throws(Failure) -> Result {
        enter()
        defer { leave() }
        return try body()
    }

    /// Closes the gate and suspends until the writers inside have left, without holding the
    /// calling task's thread. Writers arriving later block at the gate until ``resume()``.
    public func pause() async {
        paused.lock()
        paused.unlock(withValue: true)
        state.bitwiseOr(Self.pausedBit, ordering: .acquiringAndReleasing)
        await withCheckedContinuation { (waiter: CheckedContinuation<Void, Never>) in
            drainWaiter.withLockedValue { $0 = waiter }
            // Writers may all have left before the waiter was registered: then no leave() wakes
            // it, so look once more (whoever takes the waiter first resumes it).
            if state.load(ordering: .acquiring) & ~Self.pausedBit == 0 { resumeDrainWaiter() }
        }
    }

    private func resumeDrainWaiter() {
        drainWaiter.withLockedValue { waiter in
            defer { waiter = nil }
            return waiter
        }?.resume()
    }

    /// Closes the gate and waits until the writers inside have left, blocking the calling
    /// thread (a short spin: each writer inside is in the middle of one write). For a thread of
    /// the application's own; async code calls `await pause()`. Writers arriving later block.
    public func pause() {
        paused.lock()
        paused.unlock(withValue: true)
        state.bitwiseOr(Self.pausedBit, ordering: .acquiringAndReleasing)
        // Writers inside are in the middle of one write (a copy into a page): a short spin.
        var spins = 0
        while state.load(ordering: .acquiring) & ~Self.pausedBit != 0 {
            spins += 1
            if spins > 64 { sched_yield() }
        }
    }

    /// Opens the gate and releases the writers held at it.
    public func resume() {
        state.bitwiseAnd(~Self.pausedBit, ordering: .acquiringAndReleasing)
        paused.lock()
        paused.unlock(withValue: false)
    }

    private func holdForThrottle(percent: Int) {
        var now = timespec()
        clock_gettime(CLOCK_MONOTONIC, &now)
        let nanoseconds = UInt64(now.tv_sec) &* 1_000_000_000 &+ UInt64(now.tv_nsec)
        let phase = nanoseconds % Self.slice
        let closed = Self.slice * UInt64(percent) / 100
        guard phase < closed else { return }
        // Runs on a writer thread of the application (entering the gate), never on the
        // cooperative pool: throttling is exactly holding that thread back.
        var wait = timespec(tv_sec: 0, tv_nsec: Int(closed - phase))
        nanosleep(&wait, nil)
    }
}
