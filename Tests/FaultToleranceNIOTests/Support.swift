import FaultToleranceCore
import NIOConcurrencyHelpers
import NIOCore
import Synchronization

/// Thrown when an expected message does not arrive within the safety bound. The bound only
/// stops a broken test from hanging; no test asserts on how long anything took.
struct Timeout: Error, CustomStringConvertible {
    var what: String
    var description: String { "timed out waiting for \(what)" }
}

/// Collects a transport's incoming envelopes in the background so tests can wait for them.
final class Inbox: Sendable {
    private final class Storage: Sendable {
        let envelopes = NIOLockedValueBox<[Envelope]>([])
    }

    private let storage = Storage()
    private let task: Task<Void, Never>

    init(_ stream: EnvelopeStream) {
        let storage = self.storage
        task = Task {
            for await envelope in stream { storage.envelopes.withLockedValue { $0.append(envelope) } }
        }
    }

    deinit { task.cancel() }

    /// Everything received so far.
    var envelopes: [Envelope] { storage.envelopes.withLockedValue { $0 } }

    /// Waits until `predicate` holds for what has been received, or throws after `limit`.
    @discardableResult
    func wait(
        for what: String,
        limit: Duration = .seconds(120),
        until predicate: ([Envelope]) -> Bool
    ) async throws -> [Envelope] {
        let deadline = ContinuousClock.now + limit
        while true {
            let current = envelopes
            if predicate(current) { return current }
            guard ContinuousClock.now < deadline else { throw Timeout(what: what) }
            try await Task.sleep(for: .milliseconds(2))
        }
    }

    /// Waits for at least `count` envelopes.
    @discardableResult
    func wait(count: Int, limit: Duration = .seconds(120)) async throws -> [Envelope] {
        try await wait(for: "\(count) messages", limit: limit) { $0.count >= count }
    }
}

extension Message {
    /// A message carrying a UTF-8 string, for readable tests.
    static func text(_ string: String) -> Message { Message(type: 7, bytes: Array(string.utf8)) }

    /// The payload as a UTF-8 string.
    var text: String { String(decoding: payload.readableBytesView, as: UTF8.self) }
}
