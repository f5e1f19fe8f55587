#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// A value behind a pthread mutex (visible to ThreadSanitizer, like NIO's `NIOLockedValueBox`)
/// that can also be tried: async code takes the lock only if it is free at once, and hands
/// the work to a thread of its own otherwise, so a cooperative-pool thread never waits for a
/// holder doing disk I/O.
package final class TryLockedValueBox<Value>: @unchecked Sendable {
    // unchecked: `value` is only touched with `mutex` held. Inlinable, so that callers in
    // other modules get it specialised: the generic version returns through memory and
    // copies the result, which costs the journal's append path more than the lock does.
    // No dynamic exclusivity checks either: the mutex already excludes (the checks were
    // 6 % of a 256-byte buffered append).
    @usableFromInline @exclusivity(unchecked) var value: Value
    private let mutex: UnsafeMutablePointer<pthread_mutex_t>

    package init(_ value: Value) {
        self.value = value
        mutex = UnsafeMutablePointer.allocate(capacity: 1)
        mutex.initialize(to: pthread_mutex_t())
        let created = pthread_mutex_init(mutex, nil)
        precondition(created == 0, "pthread_mutex_init failed: \(created)")
    }

    deinit {
        pthread_mutex_destroy(mutex)
        mutex.deallocate()
    }

    /// Runs `body` with the lock held, waiting for it if needed.
    @inlinable @inline(__always)
    package func withLockedValue<Result, Failure: Error>(
        _ body: (inout Value) throws(Failure) -> Result
    ) throws(Failure) -> Result {
        lock()
        defer { unlock() }
        return try body(&value)
    }

    /// Runs `body` with the lock held if it is free now; `nil` (and `body` not run) if another
    /// thread holds it.
    @inlinable @inline(__always)
    package func withLockedValueIfAvailable<Result, Failure: Error>(
        _ body: (inout Value) throws(Failure) -> Result
    ) throws(Failure) -> Result? {
        guard tryLock() else { return nil }
        defer { unlock() }
        return try body(&value)
    }

    @usableFromInline func lock() { pthread_mutex_lock(mutex) }

    @usableFromInline func tryLock() -> Bool { pthread_mutex_trylock(mutex) == 0 }

    @usableFromInline func unlock() { pthread_mutex_unlock(mutex) }
}
