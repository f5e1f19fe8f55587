import Foundation
public import NIOCore
import NIOHTTP1
public import NIOPosix

/// etcd through its v3 JSON gateway: each call an HTTP/1.1 POST on `/v3/…` with base64 keys
/// and values, one after another on a kept-alive connection (a watch has one of its own). A call
/// that takes longer than ``timeout`` fails with ``EtcdError/Code/timedOut`` and the connection
/// is opened anew; so does one after any failure.
///
/// ```swift
/// let etcd = EtcdGateway(host: "127.0.0.1", port: 2379)
/// let lease = try await etcd.grant(ttl: .seconds(1))
/// let (won, epoch) = try await etcd.transaction(
///     compare: [.createRevision(key: Array("leader".utf8), equals: 0)],
///     success: [.put(key: Array("leader".utf8), value: Array("a".utf8), lease: lease.id)], failure: [])
/// ```
public struct EtcdGateway: EtcdClient {
    /// The largest answer read (a range of many keys is refused beyond it).
    public static let maximumAnswerBytes = 4 << 20
    /// etcd's host.
    public let host: String
    /// etcd's client port.
    public let port: Int
    /// The longest a call may take.
    public let timeout: Duration
    private let group: any EventLoopGroup
    private let session: EtcdSession

    /// A gateway to the etcd at `host:port`.
    public init(
        host: String, port: Int, timeout: Duration = .seconds(2),
        group: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) {
        self.host = host
        self.port = port
        self.timeout = timeout
        self.group = group
        session = EtcdSession(
            host: host, port: port, group: group,
            connectTimeout: .milliseconds(Int64(timeout.components.seconds * 1000 + 1)))
    }

    /// A gateway to an endpoint written `http://HOST:PORT` (or `HOST:PORT`); `nil` if it is not one.
    public init?(endpoint: String, timeout: Duration = .seconds(2)) {
        var rest = Substring(endpoint)
        if rest.hasPrefix("http://") { rest = rest.dropFirst("http://".count) }
        while rest.hasSuffix("/") { rest = rest.dropLast() }
        guard let colon = rest.lastIndex(of: ":"), let port = Int(rest[rest.index(after: colon)...]),
            (1...65_535).contains(port), colon > rest.startIndex
        else { return nil }
        self.init(host: String(rest[..<colon]), port: port, timeout: timeout)
    }

    // MARK: EtcdClient

    /// Asks for a lease of `ttl`, rounded up to whole seconds (etcd's unit).
    public func grant(ttl: Duration) async throws(EtcdError) -> EtcdLease {
        let seconds = max(1, Int64((ttl + .nanoseconds(999_999_999)).components.seconds))
        let answer = try await call("/v3/lease/grant", ["TTL": String(seconds)])
        guard let id = int(answer["ID"]), let granted = int(answer["TTL"]), granted > 0 else {
            throw EtcdError(.refused, detail: "lease grant: \(answer["error"] ?? "no lease in the answer")")
        }
        return EtcdLease(id: id, ttl: .seconds(granted))
    }

    /// Renews `lease`; `nil` when etcd answers without a TTL (the lease ran out).
    public func keepAlive(_ lease: Int64) async throws(EtcdError) -> Duration? {
        let answer = try await call("/v3/lease/keepalive", ["ID": String(lease)])
        let result = answer["result"] as? [String: Any] ?? [:]
        guard let ttl = int(result["TTL"]), ttl > 0 else { return nil }
        return .seconds(ttl)
    }

    /// Ends `lease`.
    public func revoke(_ lease: Int64) async throws(EtcdError) {
        do {
            _ = try await call("/v3/lease/revoke", ["ID": String(lease)])
        } catch  where error.code == .refused && error.detail.contains("not found") {
            return
        }
    }

    /// Every key under `prefix`.
    public func range(prefix: [UInt8]) async throws(EtcdError) -> (revision: Int64, keys: [EtcdKeyValue]) {
        let answer = try await call("/v3/kv/range", ["key": base64(prefix), "range_end": base64(rangeEnd(of: prefix))])
        var keys: [EtcdKeyValue] = []
        for item in answer["kvs"] as? [Any] ?? [] {
            keys.append(try keyValue(item))
        }
        return (revision(answer), keys)
    }

    /// A revision-checked transaction.
    public func transaction(compare: [EtcdCompare], success: [EtcdWrite], failure: [EtcdWrite])
        async throws(EtcdError) -> (succeeded: Bool, revision: Int64)
    {
        let conditions: [[String: Any]] = compare.map { condition in
            switch condition {
            case .createRevision(let key, let revision):
                ["key": base64(key), "target": "CREATE", "result": "EQUAL", "create_revision": String(revision)]
            case .modRevision(let key, let revision):
                ["key": base64(key), "target": "MOD", "result": "EQUAL", "mod_revision": String(revision)]
            }
        }
        func requests(_ writes: [EtcdWrite]) -> [[String: Any]] {
            writes.map { write in
                switch write {
                case .put(let key, let value, let lease):
                    ["request_put": ["key": base64(key), "value": base64(value), "lease": String(lease)]]
                case .delete(let key):
                    ["request_delete_range": ["key": base64(key)]]
                }
            }
        }
        let answer = try await call(
            "/v3/kv/txn", ["compare": conditions, "success": requests(success), "failure": requests(failure)])
        // Protocol buffers' JSON leaves out a false `succeeded`.
        return ((answer["succeeded"] as? Bool) ?? false, revision(answer))
    }

    /// A watch on its own connection: etcd streams one JSON object per line.
    public func watch(prefix: [UInt8], from start: Int64) -> AsyncThrowingStream<[EtcdEvent], any Error> {
        let (stream, continuation) = AsyncThrowingStream<[EtcdEvent], any Error>.makeStream()
        let request: [String: Any] = [
            "create_request": [
                "key": base64(prefix), "range_end": base64(rangeEnd(of: prefix)), "start_revision": String(start),
            ]
        ]
        let task = Task {
            do {
                try await streamLines(request: request) { line throws(EtcdError) in
                    let object = try parse(line)
                    guard let result = object["result"] as? [String: Any] else {
                        throw EtcdError(.refused, detail: "watch: \(object["error"] ?? "no result")")
                    }
                    if (result["canceled"] as? Bool) == true {
                        throw EtcdError(.refused, detail: "watch canceled: \(result["cancel_reason"] ?? "no reason")")
                    }
                    var events: [EtcdEvent] = []
                    for item in result["events"] as? [Any] ?? [] {
                        guard let event = item as? [String: Any] else {
                            throw EtcdError(.malformed, detail: "watch event is not an object")
                        }
                        let kv = try keyValue(event["kv"] as Any)
                        if (event["type"] as? String) == "DELETE" {
                            events.append(.delete(key: kv.key, revision: kv.modRevision))
                        } else {
                            events.append(.put(kv))
                        }
                    }
                    if !events.isEmpty { continuation.yield(events) }
                }
                continuation.finish(throwing: EtcdError(.unavailable, detail: "the watch's connection closed"))
            } catch {
                continuation.finish(throwing: error)
            }
        }
        continuation.onTermination = { _ in task.cancel() }
        return stream
    }

    // MARK: HTTP

    private typealias Connection = NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>

    private func connect() async throws -> Connection {
        try await ClientBootstrap(group: group)
            .connectTimeout(.milliseconds(Int64(timeout.components.seconds * 1000 + 1)))
            .connect(host: host, port: port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.addHTTPClientHandlers()
                    return try Connection(wrappingChannelSynchronously: channel)
                }
            }
    }

    private func head(_ path: String, length: Int) -> HTTPRequestHead {
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: path)
        head.headers.add(name: "Host", value: "\(host):\(port)")
        head.headers.add(name: "Content-Type", value: "application/json")
        head.headers.add(name: "Content-Length", value: String(length))
        head.headers.add(name: "Connection", value: "close")
        return head
    }

    /// POSTs `body` as JSON to `path` on the kept-alive connection and returns the answer's
    /// object; an HTTP error status becomes ``EtcdError/Code/refused`` with etcd's message.
    private func call(_ path: String, _ body: [String: Any]) async throws(EtcdError) -> [String: Any] {
        let bytes = try json(body)
        let (status, answer) = try await session.perform(path: path, body: bytes, timeout: timeout).get()
        let object = try parse(Array(answer.readableBytesView))
        guard status == .ok else {
            let message = object["message"] ?? object["error"] ?? "HTTP \(status.code)"
            throw EtcdError(.refused, detail: "\(path): \(message)")
        }
        return object
    }

    /// POSTs `body` to /v3/watch and hands each line of the streamed answer to `line`.
    private func streamLines(
        request body: [String: Any], line: @escaping @Sendable ([UInt8]) throws(EtcdError) -> Void
    ) async throws {
        let bytes = try json(body)
        let connection = try await withTimeout("/v3/watch") { try await connect() }
        try await connection.executeThenClose { inbound, outbound in
            try await outbound.write(
                contentsOf: [
                    .head(head("/v3/watch", length: bytes.count)), .body(.byteBuffer(ByteBuffer(bytes: bytes))),
                    .end(nil),
                ])
            var pending: [UInt8] = []
            for try await part in inbound {
                switch part {
                case .head(let head):
                    guard head.status == .ok else {
                        throw EtcdError(.refused, detail: "/v3/watch: HTTP \(head.status.code)")
                    }
                case .body(let chunk):
                    pending += chunk.readableBytesView
                    while let newline = pending.firstIndex(of: UInt8(ascii: "\n")) {
                        let text = Array(pending[..<newline])
                        pending.removeSubrange(...newline)
                        if !text.isEmpty { try line(text) }
                    }
                    guard pending.count <= Self.maximumAnswerBytes else {
                        throw EtcdError(.tooLarge, detail: "/v3/watch: a line over \(Self.maximumAnswerBytes) bytes")
                    }
                case .end:
                    return
                }
            }
        }
    }

    private func withTimeout<T: Sendable>(_ what: String, _ body: @escaping @Sendable () async throws -> T)
        async throws(EtcdError) -> T
    {
        let timeout = self.timeout
        do {
            return try await withThrowingTaskGroup(of: T?.self) { group in
                group.addTask { try await body() }
                group.addTask {
                    // The connect's deadline (a watch's connection; calls have EtcdSession's).
                    try await Task.sleep(for: timeout)
                    return nil
                }
                defer { group.cancelAll() }
                guard let first = try await group.next(), let value = first else {
                    throw EtcdError(.timedOut, detail: "\(what): no answer within \(timeout)")
                }
                return value
            }
        } catch let error as EtcdError {
            throw error
        } catch {
            throw EtcdError(.unavailable, detail: "\(what): \(error)")
        }
    }
}

// MARK: JSON

private func json(_ object: [String: Any]) throws(EtcdError) -> [UInt8] {
    do {
        return Array(try JSONSerialization.data(withJSONObject: object))
    } catch {
        throw EtcdError(.malformed, detail: "request: \(error)")
    }
}

private func parse(_ bytes: [UInt8]) throws(EtcdError) -> [String: Any] {
    guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)), let dictionary = object as? [String: Any]
    else {
        throw EtcdError(.malformed, detail: "not a JSON object: \(String(decoding: bytes.prefix(120), as: UTF8.self))")
    }
    return dictionary
}

private func base64(_ bytes: [UInt8]) -> String { Data(bytes).base64EncodedString() }

/// etcd's 64-bit numbers arrive as strings (protocol buffers' JSON); absent means 0 to it.
private func int(_ value: Any?) -> Int64? {
    switch value {
    case let text as String: Int64(text)
    case let number as NSNumber: number.int64Value
    default: nil
    }
}

private func revision(_ answer: [String: Any]) -> Int64 {
    int((answer["header"] as? [String: Any])?["revision"]) ?? 0
}

private func keyValue(_ item: Any) throws(EtcdError) -> EtcdKeyValue {
    guard let object = item as? [String: Any], let key = object["key"] as? String,
        let keyBytes = Data(base64Encoded: key)
    else { throw EtcdError(.malformed, detail: "a key-value without a base64 key") }
    var value: [UInt8] = []
    if let text = object["value"] as? String {
        guard let data = Data(base64Encoded: text) else {
            throw EtcdError(.malformed, detail: "a value that is not base64")
        }
        value = Array(data)
    }
    return EtcdKeyValue(
        key: Array(keyBytes), value: value, createRevision: int(object["create_revision"]) ?? 0,
        modRevision: int(object["mod_revision"]) ?? 0, lease: int(object["lease"]) ?? 0)
}
