import NIOConcurrencyHelpers
import NIOCore
import NIOHTTP1
import NIOPosix

/// One kept-alive HTTP/1.1 connection to etcd's gateway, its calls one after another (a
/// connection per call left thousands of sockets in TIME_WAIT and, under load, calls that
/// waited a second for a connect). A call that fails or outlives its timeout ends the
/// connection; the next call opens a new one.
actor EtcdSession {
    /// One POST and where its answer goes.
    struct Call: Sendable {
        var path: String
        var body: [UInt8]
        var reply: @Sendable (Result<(HTTPResponseStatus, ByteBuffer), EtcdError>) -> Void
    }

    private typealias Connection = NIOAsyncChannel<HTTPClientResponsePart, HTTPClientRequestPart>

    private let host: String
    private let port: Int
    private let group: any EventLoopGroup
    private let connectTimeout: TimeAmount
    private var calls: AsyncStream<Call>.Continuation?
    private var worker: Task<Void, Never>?
    private var generation = 0

    init(host: String, port: Int, group: any EventLoopGroup, connectTimeout: TimeAmount) {
        self.host = host
        self.port = port
        self.group = group
        self.connectTimeout = connectTimeout
    }

    /// POSTs `body` to `path` and returns the status and the whole answer, or an error; never
    /// waits longer than `timeout`.
    nonisolated func perform(path: String, body: [UInt8], timeout: Duration) async -> Result<
        (HTTPResponseStatus, ByteBuffer), EtcdError
    > {
        await withCheckedContinuation { continuation in
            let answered = NIOLockedValueBox(false)
            let reply: @Sendable (Result<(HTTPResponseStatus, ByteBuffer), EtcdError>) -> Bool = { result in
                let first = answered.withLockedValue { done in
                    defer { done = true }
                    return !done
                }
                if first { continuation.resume(returning: result) }
                return first
            }
            Task {
                await self.submit(Call(path: path, body: body, reply: { _ = reply($0) }))
            }
            Task {
                // The call's deadline, on its own task.
                try? await Task.sleep(for: timeout)
                if reply(.failure(EtcdError(.timedOut, detail: "\(path): no answer within \(timeout)"))) {
                    await self.reset()
                }
            }
        }
    }

    private func submit(_ call: Call) {
        if calls == nil { start() }
        calls?.yield(call)
    }

    /// Ends the connection (a call on it outlived its timeout).
    private func reset() {
        worker?.cancel()
        calls?.finish()
        calls = nil
        worker = nil
    }

    private func ended(_ ending: Int) {
        guard ending == generation else { return }
        calls = nil
        worker = nil
    }

    private func start() {
        let (stream, continuation) = AsyncStream<Call>.makeStream()
        calls = continuation
        generation += 1
        let ending = generation
        let (host, port, group, connectTimeout) = (host, port, group, connectTimeout)
        worker = Task {
            var pending = stream.makeAsyncIterator()
            var failure = EtcdError(.unavailable, detail: "the connection to etcd closed")
            do {
                let connection = try await ClientBootstrap(group: group)
                    .connectTimeout(connectTimeout)
                    .connect(host: host, port: port) { channel in
                        channel.eventLoop.makeCompletedFuture {
                            try channel.pipeline.syncOperations.addHTTPClientHandlers()
                            return try Connection(wrappingChannelSynchronously: channel)
                        }
                    }
                try await connection.executeThenClose { inbound, outbound in
                    var answers = inbound.makeAsyncIterator()
                    while let call = await pending.next() {
                        do {
                            call.reply(
                                .success(
                                    try await Self.exchange(
                                        call, host: host, port: port, answers: &answers, outbound: outbound)))
                        } catch {
                            let reason =
                                error as? EtcdError ?? EtcdError(.unavailable, detail: "\(call.path): \(error)")
                            call.reply(.failure(reason))
                            throw reason
                        }
                    }
                }
            } catch {
                failure = error as? EtcdError ?? EtcdError(.unavailable, detail: "etcd at \(host):\(port): \(error)")
            }
            continuation.finish()
            while let call = await pending.next() { call.reply(.failure(failure)) }
            await self.ended(ending)
        }
    }

    private static func exchange(
        _ call: Call, host: String, port: Int,
        answers: inout NIOAsyncChannelInboundStream<HTTPClientResponsePart>.AsyncIterator,
        outbound: NIOAsyncChannelOutboundWriter<HTTPClientRequestPart>
    ) async throws -> (HTTPResponseStatus, ByteBuffer) {
        var head = HTTPRequestHead(version: .http1_1, method: .POST, uri: call.path)
        head.headers.add(name: "Host", value: "\(host):\(port)")
        head.headers.add(name: "Content-Type", value: "application/json")
        head.headers.add(name: "Content-Length", value: String(call.body.count))
        try await outbound.write(
            contentsOf: [.head(head), .body(.byteBuffer(ByteBuffer(bytes: call.body))), .end(nil)])
        var status = HTTPResponseStatus.internalServerError
        var collected = ByteBuffer()
        while let part = try await answers.next() {
            switch part {
            case .head(let answer):
                status = answer.status
            case .body(var chunk):
                guard collected.readableBytes + chunk.readableBytes <= EtcdGateway.maximumAnswerBytes else {
                    throw EtcdError(
                        .tooLarge, detail: "\(call.path): an answer over \(EtcdGateway.maximumAnswerBytes) bytes")
                }
                collected.writeBuffer(&chunk)
            case .end:
                return (status, collected)
            }
        }
        throw EtcdError(.unavailable, detail: "\(call.path): the connection closed mid-answer")
    }
}
