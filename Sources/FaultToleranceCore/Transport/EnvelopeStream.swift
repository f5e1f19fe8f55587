/// The messages a ``Transport`` delivers, as an `AsyncSequence` that tells the transport when
/// each one has been consumed, so the transport can stop reading from the network while the
/// consumer is behind (inbound back-pressure) instead of buffering without bound.
///
/// One consumer at a time, like `AsyncStream`.
public struct EnvelopeStream: AsyncSequence, Sendable {
    /// The element type.
    public typealias Element = Envelope

    private let stream: AsyncStream<Envelope>
    private let consumed: (@Sendable () -> Void)?

    /// Wraps `stream`; `consumed` runs after each envelope is handed to the consumer.
    public init(_ stream: AsyncStream<Envelope>, consumed: (@Sendable () -> Void)? = nil) {
        self.stream = stream
        self.consumed = consumed
    }

    /// Creates the iterator.
    public func makeAsyncIterator() -> Iterator {
        Iterator(base: stream.makeAsyncIterator(), consumed: consumed)
    }

    /// Iterates the envelopes, reporting each one consumed.
    public struct Iterator: AsyncIteratorProtocol {
        var base: AsyncStream<Envelope>.AsyncIterator
        let consumed: (@Sendable () -> Void)?

        /// The next envelope, or `nil` when the transport has closed.
        public mutating func next() async -> Envelope? {
            let envelope = await base.next()
            if envelope != nil { consumed?() }
            return envelope
        }

        /// The next envelope, staying on `actor` while waiting (so an actor can keep the
        /// iterator), or `nil` when the transport has closed.
        public mutating func next(isolation actor: isolated (any Actor)?) async -> Envelope? {
            let envelope = await base.next(isolation: actor)
            if envelope != nil { consumed?() }
            return envelope
        }
    }
}
