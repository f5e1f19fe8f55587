import FaultToleranceCore
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// Inbound back-pressure for a transport: counts envelopes delivered but not yet consumed,
/// stops reading (`autoRead` off) on the channel that pushes the count to the high
/// watermark, and resumes every paused channel once the consumer has drained the count to
/// the low watermark.
///
/// For TCP the peer's sends then block on a full socket (and its `send` waits); for UDP the
/// kernel drops datagrams past its buffer, which is what UDP promises.
///
/// Ordering: a pause runs inline on the channel's event loop while the channel is reading;
/// a resume is submitted to that event loop, so it always lands after the pause it answers,
/// and is dropped there if the channel was paused again in the meantime.
final class InboundFlowControl: Sendable {
    private struct State {
        var buffered = 0
        var maximumBuffered = 0
        var paused: [ObjectIdentifier: any Channel] = [:]
    }

    let highWatermark: Int
    let lowWatermark: Int
    private let state = NIOLockedValueBox(State())

    init(highWatermark: Int, lowWatermark: Int) {
        self.highWatermark = max(1, highWatermark)
        self.lowWatermark = max(0, min(lowWatermark, highWatermark - 1))
    }

    /// The largest number of envelopes ever waiting for the consumer.
    var maximumBuffered: Int { state.withLockedValue { $0.maximumBuffered } }

    /// Called on `channel`'s event loop after an envelope from it was handed to the stream.
    func delivered(on channel: any Channel) {
        let pause = state.withLockedValue { state -> Bool in
            state.buffered += 1
            state.maximumBuffered = max(state.maximumBuffered, state.buffered)
            guard state.buffered >= highWatermark else { return false }
            let key = ObjectIdentifier(channel)
            guard state.paused[key] == nil else { return false }
            state.paused[key] = channel
            return true
        }
        if pause { channel.setOption(ChannelOptions.autoRead, value: false).whenFailure { _ in } }
    }

    /// Called by the consumer after taking an envelope.
    func consumed() {
        let resume = state.withLockedValue { state -> [any Channel] in
            state.buffered = max(0, state.buffered - 1)
            guard state.buffered <= lowWatermark, !state.paused.isEmpty else { return [] }
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
}
