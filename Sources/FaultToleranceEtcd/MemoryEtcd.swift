public import FaultToleranceCore
import NIOConcurrencyHelpers

/// etcd in memory, for tests: the same revisions, leases, transactions and watches as
/// ``EtcdGateway`` gives, with leases that run out on `clock`. Never a stand-in for a real etcd
/// in a deployment. ``isReachable`` set to `false` makes every call fail as an unreachable etcd would.
public final class MemoryEtcd: EtcdClient {
    private struct State {
        var revision: Int64 = 1
        var keys: [[UInt8]: EtcdKeyValue] = [:]
        var leases: [Int64: (ttl: Duration, expires: Instant)] = [:]
        var nextLease: Int64 = 1
        var watchers:
            [UInt64: (prefix: [UInt8], continuation: AsyncThrowingStream<[EtcdEvent], any Error>.Continuation)] =
                [:]
        var nextWatcher: UInt64 = 0
        var reachable = true
    }

    private let state = NIOLockedValueBox(State())
    private let clock: any RuntimeClock
    /// The shortest lease granted (etcd's is 1.5 times its election timeout).
    public let minimumTTL: Duration

    /// An empty store whose leases run out on `clock`.
    public init(clock: any RuntimeClock, minimumTTL: Duration = .milliseconds(750)) {
        self.clock = clock
        self.minimumTTL = minimumTTL
    }

    /// Whether calls reach the store (`false`: each throws ``EtcdError/Code/unavailable``).
    public var isReachable: Bool {
        get { state.withLockedValue { $0.reachable } }
        set { state.withLockedValue { $0.reachable = newValue } }
    }

    /// Runs `body` on the state after deleting the keys of leases that ran out.
    private func withState<T>(_ body: (inout State) throws(EtcdError) -> T) throws(EtcdError) -> T {
        let now = clock.now
        let result: Result<T, EtcdError> = state.withLockedValue { state in
            guard state.reachable else { return .failure(EtcdError(.unavailable, detail: "memory etcd unreachable")) }
            // In id order, as every walk over a dictionary here: a dictionary's order differs from
            // one instance to the next, and a simulation must replay exactly.
            for (id, lease) in state.leases.sorted(by: { $0.key < $1.key }) where lease.expires <= now {
                state.leases[id] = nil
                var events: [EtcdEvent] = []
                let revision = state.revision + 1
                for (key, value) in state.keys.sorted(by: { $0.key.lexicographicallyPrecedes($1.key) })
                where value.lease == id {
                    state.keys[key] = nil
                    events.append(.delete(key: key, revision: revision))
                }
                if !events.isEmpty {
                    state.revision = revision
                    Self.notify(&state, events)
                }
            }
            do throws(EtcdError) {
                return .success(try body(&state))
            } catch {
                return .failure(error)
            }
        }
        return try result.get()
    }

    private static func notify(_ state: inout State, _ events: [EtcdEvent]) {
        for (_, watcher) in state.watchers.sorted(by: { $0.key < $1.key }) {
            let seen = events.filter { event in
                switch event {
                case .put(let value): value.key.starts(with: watcher.prefix)
                case .delete(let key, _): key.starts(with: watcher.prefix)
                }
            }
            if !seen.isEmpty { watcher.continuation.yield(seen) }
        }
    }

    /// Grants at least ``minimumTTL``.
    public func grant(ttl: Duration) throws(EtcdError) -> EtcdLease {
        let granted = max(ttl, minimumTTL)
        let now = clock.now
        return try withState { state throws(EtcdError) in
            let id = state.nextLease
            state.nextLease += 1
            state.leases[id] = (granted, now + granted)
            return EtcdLease(id: id, ttl: granted)
        }
    }

    /// Renews, or `nil` for a lease that ran out.
    public func keepAlive(_ lease: Int64) throws(EtcdError) -> Duration? {
        let now = clock.now
        return try withState { state throws(EtcdError) in
            guard let current = state.leases[lease] else { return nil }
            state.leases[lease] = (current.ttl, now + current.ttl)
            return current.ttl
        }
    }

    /// Ends `lease` and deletes its keys.
    public func revoke(_ lease: Int64) throws(EtcdError) {
        try withState { state throws(EtcdError) in
            guard state.leases.removeValue(forKey: lease) != nil else { return }
            let keys = state.keys.filter { $0.value.lease == lease }.keys.sorted { $0.lexicographicallyPrecedes($1) }
            guard !keys.isEmpty else { return }
            state.revision += 1
            for key in keys { state.keys[key] = nil }
            Self.notify(&state, keys.map { .delete(key: $0, revision: state.revision) })
        }
    }

    /// Every key under `prefix`.
    public func range(prefix: [UInt8]) throws(EtcdError) -> (revision: Int64, keys: [EtcdKeyValue]) {
        try withState { state throws(EtcdError) in
            let keys = state.keys.values.filter { $0.key.starts(with: prefix) }
                .sorted { $0.key.lexicographicallyPrecedes($1.key) }
            return (state.revision, keys)
        }
    }

    /// A transaction, atomically.
    public func transaction(compare: [EtcdCompare], success: [EtcdWrite], failure: [EtcdWrite])
        throws(EtcdError) -> (succeeded: Bool, revision: Int64)
    {
        try withState { state throws(EtcdError) in
            let holds = compare.allSatisfy { condition in
                switch condition {
                case .createRevision(let key, let revision): (state.keys[key]?.createRevision ?? 0) == revision
                case .modRevision(let key, let revision): (state.keys[key]?.modRevision ?? 0) == revision
                }
            }
            let writes = holds ? success : failure
            guard !writes.isEmpty else { return (holds, state.revision) }
            let revision = state.revision + 1
            var events: [EtcdEvent] = []
            for write in writes {
                switch write {
                case .put(let key, let value, let lease):
                    guard lease == 0 || state.leases[lease] != nil else {
                        throw EtcdError(.refused, detail: "requested lease not found")
                    }
                    let created = state.keys[key]?.createRevision ?? revision
                    let entry = EtcdKeyValue(
                        key: key, value: value, createRevision: created, modRevision: revision, lease: lease)
                    state.keys[key] = entry
                    events.append(.put(entry))
                case .delete(let key):
                    if state.keys.removeValue(forKey: key) != nil {
                        events.append(.delete(key: key, revision: revision))
                    }
                }
            }
            state.revision = revision
            Self.notify(&state, events)
            return (holds, revision)
        }
    }

    /// Changes under `prefix` from now on (`start` is not replayed: the memory store keeps no history).
    public func watch(prefix: [UInt8], from start: Int64) -> AsyncThrowingStream<[EtcdEvent], any Error> {
        let (stream, continuation) = AsyncThrowingStream<[EtcdEvent], any Error>.makeStream()
        let id = state.withLockedValue { state in
            state.nextWatcher += 1
            state.watchers[state.nextWatcher] = (prefix, continuation)
            return state.nextWatcher
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLockedValue { $0.watchers.removeValue(forKey: id) }
        }
        return stream
    }
}
