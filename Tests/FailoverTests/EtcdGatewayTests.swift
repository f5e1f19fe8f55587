import FaultToleranceEtcd
import Foundation
import Testing

/// ``EtcdGateway`` against a real etcd: `FT_ETCD_ENDPOINT` (`.ci/run` starts one and sets it;
/// `FT_ETCD_REQUIRED=1` there makes its absence a failure rather than a skip).
@Suite struct EtcdGatewayTests {
    static let endpoint = ProcessInfo.processInfo.environment["FT_ETCD_ENDPOINT"]
    static let required = ProcessInfo.processInfo.environment["FT_ETCD_REQUIRED"] == "1"

    @Test func theEtcdTestsRunWhereCIRequiresThem() {
        if Self.required { #expect(Self.endpoint != nil, "FT_ETCD_REQUIRED=1 but FT_ETCD_ENDPOINT is not set") }
    }

    @Test(
        .enabled(if: endpoint != nil, "no etcd: set FT_ETCD_ENDPOINT=http://127.0.0.1:2379 (CI starts one)"))
    func leasesTransactionsRangesAndWatchesOnARealEtcd() async throws {
        // A generous timeout: beside the whole suite on two cores, the tasks that carry a call can
        // wait seconds for a thread (a stall measured here, not etcd's).
        let etcd = try #require(EtcdGateway(endpoint: Self.endpoint ?? "", timeout: .seconds(30)))
        let prefix = Array("/ft/test/\(UUID().uuidString)/".utf8)
        let key = prefix + Array("leader".utf8)
        let lease = try await etcd.grant(ttl: .seconds(1))
        #expect(lease.ttl >= .seconds(1))
        let (start, _) = try await etcd.range(prefix: prefix)
        let watch = etcd.watch(prefix: prefix, from: start + 1)
        let won = try await etcd.transaction(
            compare: [.createRevision(key: key, equals: 0)], success: [.put(key: key, value: [1, 2], lease: lease.id)],
            failure: [])
        let lost = try await etcd.transaction(
            compare: [.createRevision(key: key, equals: 0)], success: [.put(key: key, value: [9], lease: 0)],
            failure: [])
        #expect(won.succeeded && !lost.succeeded)
        let (_, keys) = try await etcd.range(prefix: prefix)
        #expect(keys.map(\.value) == [[1, 2]])
        #expect(keys.first?.createRevision == won.revision && keys.first?.lease == lease.id)
        #expect(try await etcd.keepAlive(lease.id) != nil)
        try await etcd.revoke(lease.id)
        #expect(try await etcd.keepAlive(lease.id) == nil)
        #expect(try await etcd.range(prefix: prefix).keys.isEmpty)
        var events = watch.makeAsyncIterator()
        var seen: [EtcdEvent] = []
        while seen.count < 2, let batch = try await events.next() { seen += batch }
        guard case .put(let put) = seen.first, case .delete(let deleted, _) = seen.last else {
            Issue.record("watch saw \(seen)")
            return
        }
        #expect(put.key == key && deleted == key)
        // A revoked or unknown lease is no error to revoke again; a refused call names etcd's reason.
        try await etcd.revoke(lease.id)
        await #expect(throws: EtcdError.self) {
            _ = try await etcd.put(key, [1], lease: lease.id)
        }
    }

    @Test func anUnreachableEtcdIsATypedErrorNotAHang() async throws {
        // Port 9 (discard) on loopback: nothing listens in a test run.
        let etcd = EtcdGateway(host: "127.0.0.1", port: 9, timeout: .seconds(2))
        await #expect(throws: EtcdError.self) { _ = try await etcd.grant(ttl: .seconds(1)) }
        #expect(EtcdGateway(endpoint: "http://127.0.0.1:2379")?.port == 2379)
        #expect(EtcdGateway(endpoint: "127.0.0.1") == nil)
        #expect(EtcdGateway(endpoint: "http://:2379") == nil)
    }
}
