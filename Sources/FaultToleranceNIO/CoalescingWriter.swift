import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// Batches writes from many tasks into one event-loop task and one flush.
///
/// `Channel.writeAndFlush` from outside the event loop submits one task and makes one
/// `write(2)` per message. Here senders append to a queue; the first append after a drain
/// schedules a single task that writes everything queued and flushes once, so a burst of
/// small messages becomes one `writev(2)`. Order is kept: the queue is drained in append
/// order, and an append that lands after a drain schedules the next one.
final class CoalescingWriter: Sendable {
    private struct State {
        var queue: [(ByteBuffer, EventLoopPromise<Void>?)] = []
        var scheduled = false
    }

    let channel: any Channel
    private let state = NIOLockedValueBox(State())

    init(channel: any Channel) {
        self.channel = channel
    }

    /// Queues `buffer`; `promise`, if any, completes when it has been written.
    func write(_ buffer: ByteBuffer, promise: EventLoopPromise<Void>?) {
        write(buffer, nil, promise: promise)
    }

    /// Queues `first` and then `second` (if any) with nothing from other callers between them.
    func write(_ first: ByteBuffer, _ second: ByteBuffer?, promise: EventLoopPromise<Void>?) {
        let schedule = state.withLockedValue { state -> Bool in
            if let second {
                state.queue.append((first, nil))
                state.queue.append((second, promise))
            } else {
                state.queue.append((first, promise))
            }
            defer { state.scheduled = true }
            return !state.scheduled
        }
        guard schedule else { return }
        channel.eventLoop.execute { [self] in
            let batch = state.withLockedValue { state -> [(ByteBuffer, EventLoopPromise<Void>?)] in
                state.scheduled = false
                defer { state.queue.removeAll(keepingCapacity: true) }
                return state.queue
            }
            for (buffer, promise) in batch { channel.write(buffer, promise: promise) }
            channel.flush()
        }
    }
}
