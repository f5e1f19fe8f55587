import FaultToleranceCore
import NIOConcurrencyHelpers

/// The ordered channels between group members, as one member sees them, kept consistent with
/// the group's cuts by draining them.
///
/// Application messages between members go through ``GroupMemberService/send(_:to:)`` and
/// arrive at the handler set with ``GroupMemberService/setMessageHandler(_:)``, on the same
/// transport as the members' markers. At a cut for epoch E a member:
/// 1. holds its application's new sends, and waits for those already handed to the transport;
/// 2. sends a marker for E to every other member, after everything it sent before;
/// 3. waits for every other member's marker for E. Each peer's messages before its marker are
///    handled as they come; those after it are held back;
/// 4. takes its cut, then lets its sends go and hands over what it held back.
///
/// So every message is handled before the receiver's cut exactly when it was sent before the
/// sender's cut, and none is in flight across the cut: the channel state is empty, and
/// nothing needs recording (where Chandy–Lamport records the messages in flight, this drains
/// them: the application's sends wait for one exchange of markers, its writers do not). It
/// needs channels that deliver in order, as TCP does. A marker that does not come (a dead or
/// cut-off member) ends the wait after `markerTimeout`, and the member fails the epoch.
/// Messages held back for an epoch this member never cuts (its `prepare` lost, the epoch
/// aborted) are handed over when the member learns the epoch is over or after `holdLimit`,
/// and the member then refuses that epoch.
final class GroupChannel: Sendable {
    typealias Handler = @Sendable (NodeID, Message) -> Void

    struct Held {
        var epoch: UInt64
        var since: Instant
        var messages: [Message]
    }

    struct State {
        var handler: Handler?
        /// The epoch whose cut holds the application's sends.
        var holdingSends: UInt64?
        var sendWaiters: [CheckedContinuation<Void, Never>] = []
        /// Sends handed to the transport and not yet returned.
        var sendsInFlight = 0
        var inFlightWaiter: (epoch: UInt64, continuation: CheckedContinuation<Bool, Never>)?
        var markerWait: (epoch: UInt64, continuation: CheckedContinuation<Bool, Never>)?
        /// Per peer: its marker came, and what it sent after it is held back.
        var held: [NodeID: Held] = [:]
        /// The newest epoch cut here.
        var cutEpoch: UInt64 = 0
        /// The newest epoch whose cut timed out or was given up: waits for it (or an earlier
        /// one) end at once.
        var expired: UInt64 = 0
        /// Epochs this member must refuse: it handed over messages from after a peer's cut
        /// without having cut.
        var poisoned: Set<UInt64> = []
    }

    let peers: [NodeID]
    let holdLimit: Duration
    /// The planted bug: nothing held, nothing drained.
    let disabled: Bool
    let state = NIOLockedValueBox(State())

    init(peers: [NodeID], holdLimit: Duration, disabled: Bool) {
        self.peers = peers
        self.holdLimit = holdLimit
        self.disabled = disabled
    }

    // MARK: The application's side

    func setHandler(_ handler: Handler?) {
        state.withLockedValue { $0.handler = handler }
    }

    /// Waits while a cut holds sends, then counts a send in flight; pair with ``sendEnded()``.
    func beginSend() async {
        guard !disabled else { return }
        while true {
            let admitted = state.withLockedValue { state -> Bool in
                guard state.holdingSends == nil else { return false }
                state.sendsInFlight += 1
                return true
            }
            if admitted { return }
            await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
                let held = state.withLockedValue { state -> Bool in
                    guard state.holdingSends != nil else { return false }
                    state.sendWaiters.append(continuation)
                    return true
                }
                if !held { continuation.resume() }
            }
        }
    }

    func sendEnded() {
        guard !disabled else { return }
        let waiter = state.withLockedValue { state -> CheckedContinuation<Bool, Never>? in
            state.sendsInFlight -= 1
            guard state.sendsInFlight == 0 else { return nil }
            defer { state.inFlightWaiter = nil }
            return state.inFlightWaiter?.continuation
        }
        waiter?.resume(returning: true)
    }

    // MARK: The cut's side

    /// Whether this member must refuse `epoch` (it handed over messages from after a peer's
    /// cut for it without having cut).
    func refuses(_ epoch: UInt64) -> Bool {
        state.withLockedValue { $0.poisoned.contains(epoch) }
    }

    /// Holds new sends for `epoch`'s cut and waits for those in flight; `false` when the epoch
    /// is refused here, or ``timeOut(_:)`` or ``abandon(through:)`` ends the wait first (the
    /// caller then abandons the epoch, which lets the sends go).
    func holdSends(for epoch: UInt64) async -> Bool {
        guard !disabled else { return true }
        let refused = state.withLockedValue { state -> Bool in
            if state.poisoned.contains(epoch) || epoch <= state.expired { return true }
            state.holdingSends = epoch
            return false
        }
        if refused { return false }
        return await withCheckedContinuation { (continuation: CheckedContinuation<Bool, Never>) in
            let done = state.withLockedValue { state -> Bool in
                if state.sendsInFlight == 0 { return true }
                state.inFlightWaiter = (epoch, continuation)
                return false
            }
            if done { continuation.resume(returning: true) }
        }
    }

    /// Waits until every peer's marker for `epoch` (or a later one) has come; `false` when
    /// ``abandon(through:)`` or the time-out ends the wait first.
    func waitForMarkers(_ epoch: UInt64) async -> Bool {
        guard !disabled else { return true }
        return await withCheckedContinuation { continuation in
            let done = state.withLockedValue { state -> Bool? in
                if epoch <= state.expired { return false }
                if allMarkersCame(epoch, state) { return true }
                state.markerWait = (epoch, continuation)
                return nil
            }
            if let done { continuation.resume(returning: done) }
        }
    }

    /// Ends the waits of `epoch`'s cut (for sends in flight, for markers) with `false`: its
    /// time-out.
    func timeOut(_ epoch: UInt64) {
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Bool, Never>] in
            state.expired = max(state.expired, epoch)
            var waiters: [CheckedContinuation<Bool, Never>] = []
            if let wait = state.markerWait, wait.epoch == epoch {
                state.markerWait = nil
                waiters.append(wait.continuation)
            }
            if let wait = state.inFlightWaiter, wait.epoch == epoch {
                state.inFlightWaiter = nil
                waiters.append(wait.continuation)
            }
            return waiters
        }
        for waiter in waiters { waiter.resume(returning: false) }
    }

    private func allMarkersCame(_ epoch: UInt64, _ state: State) -> Bool {
        peers.allSatisfy { (state.held[$0]?.epoch ?? 0) >= epoch }
    }

    /// The cut for `epoch` is taken (called right after the pause, on the capturing thread):
    /// the application's sends go again. Held-back messages are handed over by the loop
    /// (``cutTaken(_:)``), in order with what comes after them.
    func releaseSends(afterCut epoch: UInt64) {
        guard !disabled else { return }
        let waiters = state.withLockedValue { state -> [CheckedContinuation<Void, Never>] in
            state.cutEpoch = max(state.cutEpoch, epoch)
            state.holdingSends = nil
            defer { state.sendWaiters = [] }
            return state.sendWaiters
        }
        for waiter in waiters { waiter.resume() }
    }

    // MARK: The loop's side (one event at a time)

    /// A peer's marker.
    func marker(_ epoch: UInt64, from peer: NodeID, now: Instant) {
        guard !disabled, peers.contains(peer) else { return }
        var deliver: [Message] = []
        let waiter = state.withLockedValue { state -> CheckedContinuation<Bool, Never>? in
            // A marker for an epoch cut here, or given up here, holds nothing back.
            guard epoch > max(state.cutEpoch, state.expired) else { return nil }
            if let old = state.held[peer] {
                guard epoch > old.epoch else { return nil }
                // Held for an epoch now over here: hand it over (that epoch is refused).
                deliver = old.messages
                if old.epoch > state.cutEpoch { state.poisoned.insert(old.epoch) }
            }
            state.held[peer] = Held(epoch: epoch, since: now, messages: [])
            guard let wait = state.markerWait, allMarkersCame(wait.epoch, state) else { return nil }
            state.markerWait = nil
            return wait.continuation
        }
        hand(deliver, from: peer)
        waiter?.resume(returning: true)
    }

    /// An application message from a peer: handed over now, or held back behind its marker.
    func data(_ message: Message, from peer: NodeID) {
        let handler = state.withLockedValue { state -> Handler? in
            if !disabled, state.held[peer] != nil {
                state.held[peer]?.messages.append(message)
                return nil
            }
            return state.handler
        }
        handler?(peer, message)
    }

    /// The cut for `epoch` was taken: hand over what was held back for it (or earlier).
    func cutTaken(_ epoch: UInt64) {
        release { held in held.epoch <= epoch }
    }

    /// `epoch` (and every earlier one) is over without a cut here, or this member gave it up:
    /// sends go again, waits end, held-back messages are handed over.
    func abandon(through epoch: UInt64) {
        let (waiters, senders) = state.withLockedValue {
            state -> ([CheckedContinuation<Bool, Never>], [CheckedContinuation<Void, Never>]) in
            state.expired = max(state.expired, epoch)
            var waiters: [CheckedContinuation<Bool, Never>] = []
            if let wait = state.markerWait, wait.epoch <= epoch {
                state.markerWait = nil
                waiters.append(wait.continuation)
            }
            if let wait = state.inFlightWaiter, wait.epoch <= epoch {
                state.inFlightWaiter = nil
                waiters.append(wait.continuation)
            }
            var senders: [CheckedContinuation<Void, Never>] = []
            if let holding = state.holdingSends, holding <= epoch {
                state.holdingSends = nil
                senders = state.sendWaiters
                state.sendWaiters = []
            }
            return (waiters, senders)
        }
        for waiter in waiters { waiter.resume(returning: false) }
        for sender in senders { sender.resume() }
        release { held in held.epoch <= epoch }
    }

    /// Hands over what was held back longer than `holdLimit` (that epoch is then refused).
    func tick(now: Instant) {
        let limit = holdLimit
        release { held in now - held.since >= limit }
    }

    private func release(_ which: (Held) -> Bool) {
        let (handler, batches) = state.withLockedValue { state -> (Handler?, [(NodeID, [Message])]) in
            var batches: [(NodeID, [Message])] = []
            for peer in peers {
                guard let held = state.held[peer], which(held) else { continue }
                // Not cut here: messages from after the peer's cut get handled before ours.
                if held.epoch > state.cutEpoch { state.poisoned.insert(held.epoch) }
                state.held[peer] = nil
                batches.append((peer, held.messages))
            }
            return (state.handler, batches)
        }
        guard let handler else { return }
        for (peer, messages) in batches {
            for message in messages { handler(peer, message) }
        }
    }

    private func hand(_ messages: [Message], from peer: NodeID) {
        guard !messages.isEmpty, let handler = state.withLockedValue({ $0.handler }) else { return }
        for message in messages { handler(peer, message) }
    }
}
