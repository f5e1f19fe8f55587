public import DequeModule
public import NIOConcurrencyHelpers

/// A first-in first-out queue between any number of producers (`yield` from any thread, never
/// waiting) and its consumers (`for await`), in the role of `AsyncStream` on paths that carry
/// every message. Each element goes to one consumer; consumers waiting together are served in
/// the order they began to wait (`AsyncStream` traps on a second one).
///
/// Why not `AsyncStream`: the standard library's is not inlinable, so each `yield` and `next`
/// runs its generic code unspecialised, looking up type metadata on every call. In the chain
/// simulation those two calls took a fifth of the CPU (`perf`, 200 seeds); this one is
/// specialised in the modules that use it.
///
/// Waiting consumers are held as `CheckedContinuation`s: resuming an `UnsafeContinuation` from
/// code inlined here showed ThreadSanitizer a read of the waiting task's context that the
/// (uninstrumented) concurrency runtime orders before the task runs again, a known false report
/// (swiftlang/swift#57803); the checked one resumes inside the runtime.
///
/// Semantics follow `AsyncStream`'s where the chain runtimes rely on them: elements arrive in
/// the order yielded; after ``finish()`` consumers take what is buffered and then `nil`; the
/// cancellation of a consumer's task ends the queue for good, and a consumer waiting then gets
/// `nil` at once; with a `limit`, an element yielded while `limit` wait is dropped
/// (`bufferingOldest`).
public final class AsyncQueue<Element: Sendable>: AsyncSequence, Sendable {
    @usableFromInline
    struct State: Sendable {
        @usableFromInline var buffer = Deque<Element>()
        @usableFromInline var waiting = Deque<CheckedContinuation<Element?, Never>>()
        @usableFromInline var finished = false

        @inlinable init() {}
    }

    @usableFromInline let state = NIOLockedValueBox(State())
    @usableFromInline let limit: Int

    /// A queue keeping at most `limit` elements waiting (unbounded by default).
    @inlinable public init(limit: Int = .max) { self.limit = Swift.max(1, limit) }

    /// Hands `element` to the consumer; `false` if it was dropped (the queue has ended or holds
    /// `limit` elements).
    @inlinable @inline(__always) @discardableResult
    public func yield(_ element: Element) -> Bool {
        let (accepted, consumer) = state.withLockedValue { state -> (Bool, CheckedContinuation<Element?, Never>?) in
            guard !state.finished else { return (false, nil) }
            if let consumer = state.waiting.popFirst() { return (true, consumer) }
            guard state.buffer.count < limit else { return (false, nil) }
            state.buffer.append(element)
            return (true, nil)
        }
        consumer?.resume(returning: element)
        return accepted
    }

    /// Ends the queue: consumers take what is buffered, then `nil`; later yields are dropped.
    @inlinable
    public func finish() {
        let consumers = state.withLockedValue { state -> Deque<CheckedContinuation<Element?, Never>> in
            state.finished = true
            defer { state.waiting.removeAll() }
            return state.waiting
        }
        for consumer in consumers { consumer.resume(returning: nil) }
    }

    /// The next element, waiting for one; `nil` once the queue has ended and is drained, or
    /// when the calling task is cancelled (which ends the queue).
    @inlinable
    public func next(isolation actor: isolated (any Actor)? = #isolation) async -> Element? {
        if let ready = state.withLockedValue({ state -> Element?? in
            if let first = state.buffer.popFirst() { return .some(first) }
            return state.finished ? .some(nil) : nil
        }) {
            return ready
        }
        return await withTaskCancellationHandler {
            await withCheckedContinuation(isolation: actor) { (continuation: CheckedContinuation<Element?, Never>) in
                let answer = state.withLockedValue { state -> Element?? in
                    if let first = state.buffer.popFirst() { return .some(first) }
                    if state.finished || Task.isCancelled {
                        state.finished = true
                        return .some(nil)
                    }
                    state.waiting.append(continuation)
                    return nil
                }
                if let answer { continuation.resume(returning: answer) }
            }
        } onCancel: {
            finish()
        }
    }

    /// Consumers waiting for an element now (for tests).
    package var consumersWaiting: Int { state.withLockedValue { $0.waiting.count } }

    /// Iterates the queue; iterators made one after another share it.
    @inlinable
    public func makeAsyncIterator() -> Iterator { Iterator(queue: self) }

    /// The consumer's iterator.
    public struct Iterator: AsyncIteratorProtocol {
        @usableFromInline let queue: AsyncQueue

        @inlinable init(queue: AsyncQueue) { self.queue = queue }

        /// The next element, or `nil` at the end.
        @inlinable
        public mutating func next() async -> Element? { await queue.next(isolation: nil) }

        /// The next element, staying on `actor` while waiting, or `nil` at the end.
        @inlinable
        public mutating func next(isolation actor: isolated (any Actor)?) async -> Element? {
            await queue.next(isolation: actor)
        }
    }
}
