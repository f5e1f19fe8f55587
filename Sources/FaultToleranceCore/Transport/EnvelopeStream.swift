import NIOConcurrencyHelpers
package import NIOCore

/// The messages a ``Transport`` delivers, as an `AsyncSequence` that tells the transport when
/// each one has been consumed, so the transport can stop reading from the network while the
/// consumer is behind (inbound back-pressure) instead of buffering without bound.
///
/// One consumer at a time, like `AsyncStream`: iterators made one after another share the
/// stream; a consumer whose task is cancelled ends it for good.
public struct EnvelopeStream: AsyncSequence, Sendable {
    /// The element type.
    public typealias Element = Envelope

    /// NIO's producer with high and low watermarks, as the socket transports use it.
    package typealias Producer = NIOAsyncSequenceProducer<
        Envelope, NIOAsyncSequenceProducerBackPressureStrategies.HighLowWatermark, EnvelopeProducerDelegate
    >

    private enum Backing: Sendable {
        case stream(AsyncStream<Envelope>)
        case producer(SharedProducerIterator)
        case queue(AsyncQueue<Envelope>)
    }

    private let backing: Backing
    private let consumed: (@Sendable () -> Void)?

    /// Wraps `stream`; `consumed` runs after each envelope is handed to the consumer.
    public init(_ stream: AsyncStream<Envelope>, consumed: (@Sendable () -> Void)? = nil) {
        backing = .stream(stream)
        self.consumed = consumed
    }

    /// Wraps a NIO producer (its back-pressure is the watermarks it was made with); `consumed`
    /// runs after each envelope is handed to the consumer.
    package init(_ producer: Producer, consumed: (@Sendable () -> Void)? = nil) {
        backing = .producer(SharedProducerIterator(producer.makeAsyncIterator()))
        self.consumed = consumed
    }

    /// Wraps `queue` (unbounded: for the in-process transports, whose senders run in step with
    /// the consumer); `consumed` runs after each envelope is handed to the consumer.
    package init(_ queue: AsyncQueue<Envelope>, consumed: (@Sendable () -> Void)? = nil) {
        backing = .queue(queue)
        self.consumed = consumed
    }

    /// Creates the iterator.
    public func makeAsyncIterator() -> Iterator {
        switch backing {
        case .stream(let stream): Iterator(base: .stream(stream.makeAsyncIterator()), consumed: consumed)
        case .producer(let shared): Iterator(base: .producer(shared), consumed: consumed)
        case .queue(let queue): Iterator(base: .queue(queue), consumed: consumed)
        }
    }

    /// Iterates the envelopes, reporting each one consumed.
    public struct Iterator: AsyncIteratorProtocol {
        enum Base {
            case stream(AsyncStream<Envelope>.AsyncIterator)
            case producer(SharedProducerIterator)
            case queue(AsyncQueue<Envelope>)
        }

        var base: Base
        let consumed: (@Sendable () -> Void)?

        /// The next envelope, or `nil` when the transport has closed.
        public mutating func next() async -> Envelope? {
            let envelope: Envelope?
            switch base {
            case .stream(var iterator):
                envelope = await iterator.next()
                base = .stream(iterator)
            case .producer(let shared):
                envelope = await shared.next()
            case .queue(let queue):
                envelope = await queue.next(isolation: nil)
            }
            if envelope != nil { consumed?() }
            return envelope
        }

        /// The next envelope, staying on `actor` while waiting (so an actor can keep the
        /// iterator), or `nil` when the transport has closed.
        public mutating func next(isolation actor: isolated (any Actor)?) async -> Envelope? {
            let envelope: Envelope?
            switch base {
            case .stream(var iterator):
                envelope = await iterator.next(isolation: actor)
                base = .stream(iterator)
            case .producer(let shared):
                envelope = await shared.next()
            case .queue(let queue):
                envelope = await queue.next(isolation: actor)
            }
            if envelope != nil { consumed?() }
            return envelope
        }
    }
}

/// The one iterator a NIO producer allows (a second one is a fatal error there), shared by
/// every iterator of an ``EnvelopeStream``: consumers one after another take turns on it, as
/// with `AsyncStream`.
package final class SharedProducerIterator: @unchecked Sendable {
    // unchecked: one consumer at a time (the stream's documented contract); the handoff between
    // consumers goes through task boundaries, which order their accesses.
    private var iterator: EnvelopeStream.Producer.AsyncIterator

    init(_ iterator: EnvelopeStream.Producer.AsyncIterator) { self.iterator = iterator }

    func next() async -> Envelope? { await iterator.next() }
}

/// Calls back a transport when its ``EnvelopeStream``'s producer wants more (reading resumes)
/// or has ended; the callbacks are set once the transport exists.
package final class EnvelopeProducerDelegate: NIOAsyncSequenceProducerDelegate {
    private let callbacks = NIOLockedValueBox<(produceMore: @Sendable () -> Void, terminated: @Sendable () -> Void)>(
        ({}, {}))

    package init() {}

    /// Sets what `produceMore()` and `didTerminate()` do.
    package func set(produceMore: @escaping @Sendable () -> Void, terminated: @escaping @Sendable () -> Void) {
        callbacks.withLockedValue { $0 = (produceMore, terminated) }
    }

    package func produceMore() { callbacks.withLockedValue { $0.produceMore }() }

    package func didTerminate() { callbacks.withLockedValue { $0.terminated }() }
}
