import FaultToleranceCore
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// A socket transport's inbound messages, on NIO's `NIOAsyncSequenceProducer` with high and
/// low watermarks: each connection's handler hands over what one read brought in one batch,
/// and when the producer says stop, reading stops (`autoRead` off) on that channel; when the
/// consumer has drained to the low watermark, the producer asks for more and every paused
/// channel reads again.
///
/// For TCP the peer's sends then block on a full socket (and its `send` waits); for UDP the
/// kernel drops datagrams past its buffer, which is what UDP promises.
///
/// Ordering: a pause runs inline on the channel's event loop while the channel is reading;
/// a resume is submitted to that event loop, so it always lands after the pause it answers,
/// and is dropped there if the channel was paused again in the meantime.
final class InboundQueue: Sendable {
    private struct State {
        var paused: [ObjectIdentifier: any Channel] = [:]
        /// Times the producer asked for more: a stop answered before the latest ask is stale.
        var demand: UInt64 = 0
    }

    /// The messages, for the transport's ``FaultToleranceCore/Transport/incoming``.
    let stream: EnvelopeStream
    private let source: EnvelopeStream.Producer.Source
    private let state = NIOLockedValueBox(State())
    private let counter: Counter

    init(highWatermark: Int, lowWatermark: Int) {
        let high = max(1, highWatermark)
        let delegate = EnvelopeProducerDelegate()
        let producer = EnvelopeStream.Producer.makeSequence(
            elementType: Envelope.self,
            backPressureStrategy: .init(lowWatermark: max(0, min(lowWatermark, high - 1)), highWatermark: high),
            finishOnDeinit: false, delegate: delegate)
        source = producer.source
        let counter = Counter()
        stream = EnvelopeStream(producer.sequence, consumed: { counter.take() })
        self.counter = counter
        delegate.set(produceMore: { [weak self] in self?.resumeAll() }, terminated: {})
    }

    /// The largest number of envelopes ever waiting for the consumer.
    var maximumBuffered: Int { counter.maximum }

    /// Hands `batch`, read from `channel`, to the consumer; called on `channel`'s event loop.
    func deliver(_ batch: [Envelope], from channel: any Channel) {
        guard !batch.isEmpty else { return }
        counter.add(batch.count)
        // The consumer may drain the buffer and ask for more between the yield and the pause
        // below; the ask would find nothing paused, and this channel would never read again.
        // So the pause is made only if no ask came after the yield began.
        let demand = state.withLockedValue { $0.demand }
        switch source.yield(contentsOf: batch) {
        case .produceMore, .dropped:
            break
        case .stopProducing:
            let pause = state.withLockedValue { state -> Bool in
                let key = ObjectIdentifier(channel)
                guard state.demand == demand, state.paused[key] == nil else { return false }
                state.paused[key] = channel
                return true
            }
            if pause { channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in } }
        }
    }

    /// Ends the stream once the consumer has taken what is buffered.
    func finish() { source.finish() }

    private func resumeAll() {
        let resume = state.withLockedValue { state -> [any Channel] in
            state.demand &+= 1
            defer { state.paused.removeAll() }
            return Array(state.paused.values)
        }
        for channel in resume {
            // Decided here, carried out on the channel's event loop, where pauses happen: if a
            // pause came in between (the event loop delivered enough to reach the watermark
            // again), the channel is paused once more and this resume is stale. Resuming it
            // anyway left reading on with no further pause until the next drain, and the
            // backlog grew past the watermark by megabytes under load.
            channel.eventLoop.execute {
                let key = ObjectIdentifier(channel)
                let stale = self.state.withLockedValue { $0.paused[key] != nil }
                guard !stale else { return }
                channel.setOption(ChannelOptions.autoRead, value: true).whenFailure { _ in }
            }
        }
    }

    /// Envelopes handed over and not yet taken, and the most there ever were.
    private final class Counter: Sendable {
        private let waiting = Atomic<Int>(0)
        private let peak = Atomic<Int>(0)

        func add(_ count: Int) {
            let now = waiting.add(count, ordering: .relaxed).newValue
            var seen = peak.load(ordering: .relaxed)
            while now > seen {
                let (exchanged, current) = peak.compareExchange(
                    expected: seen, desired: now, ordering: .relaxed)
                if exchanged { break }
                seen = current
            }
        }

        func take() { waiting.subtract(1, ordering: .relaxed) }

        var maximum: Int { peak.load(ordering: .relaxed) }
    }
}
