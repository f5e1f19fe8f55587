import FaultToleranceEtcd
import NIOConcurrencyHelpers

/// One server's way to the simulation's etcd: every call goes through, unless the link is cut
/// (a partition between that server and etcd), when it fails as an unreachable etcd would.
final class SimulatedEtcdLink: EtcdClient {
    private let etcd: MemoryEtcd
    private let cut = NIOLockedValueBox(false)

    init(_ etcd: MemoryEtcd) { self.etcd = etcd }

    /// Whether the link is cut.
    var isCut: Bool {
        get { cut.withLockedValue { $0 } }
        set { cut.withLockedValue { $0 = newValue } }
    }

    private func check() throws(EtcdError) {
        if isCut { throw EtcdError(.unavailable, detail: "cut from etcd") }
    }

    func grant(ttl: Duration) throws(EtcdError) -> EtcdLease {
        try check()
        return try etcd.grant(ttl: ttl)
    }

    func keepAlive(_ lease: Int64) throws(EtcdError) -> Duration? {
        try check()
        return try etcd.keepAlive(lease)
    }

    func revoke(_ lease: Int64) throws(EtcdError) {
        try check()
        try etcd.revoke(lease)
    }

    func range(prefix: [UInt8]) throws(EtcdError) -> (revision: Int64, keys: [EtcdKeyValue]) {
        try check()
        return try etcd.range(prefix: prefix)
    }

    func transaction(compare: [EtcdCompare], success: [EtcdWrite], failure: [EtcdWrite]) throws(EtcdError) -> (
        succeeded: Bool, revision: Int64
    ) {
        try check()
        return try etcd.transaction(compare: compare, success: success, failure: failure)
    }

    /// A watch sees changes even while cut (it only wakes the server early; what it does next
    /// goes through the link).
    func watch(prefix: [UInt8], from start: Int64) -> AsyncThrowingStream<[EtcdEvent], any Error> {
        etcd.watch(prefix: prefix, from: start)
    }
}
