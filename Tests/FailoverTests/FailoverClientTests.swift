import DeterministicSimulation
import Failover
import FaultToleranceCore
import Testing

@Suite struct FailoverClientTests {
    /// The primary is gone (a send to it fails at once, as a refused TCP connection does) while
    /// the backup still names it. The client must pace its retries: before, it discovered and
    /// failed again as fast as answers came back (in virtual time, at one instant for ever).
    @Test func aClientPacesItsRetriesWhileTheOthersStillNameAPrimaryThatIsGone() async throws {
        let world = AsyncSimulation(seed: 1)
        let network = InMemoryNetwork()
        let backup = network.join("b")
        // "a" never joins: every send to it fails with unknownPeer.
        let asked = try await world.run(timeLimit: .seconds(10), maximumJobs: 200_000) { () async -> Int in
            let responder = world.spawn { () async -> Int in
                var asked = 0
                for await envelope in backup.incoming {
                    guard case .whoIsPrimary? = try? FailoverMessage.decode(envelope.message) else { continue }
                    asked += 1
                    let answer = FailoverMessage.primaryIs(node: "a", epoch: 1, host: "127.0.0.1", port: 1)
                    try? await backup.send(answer.encode(), to: envelope.from)
                }
                return asked
            }
            let client = FailoverClient(
                id: 1, transport: network.join("client"), servers: ["a", "b"], clock: world.clock,
                timeout: .milliseconds(10), deadline: .milliseconds(100))
            do {
                _ = try await client.execute(.put(key: "k", value: [1]))
                Issue.record("a put succeeded with no primary")
            } catch {
                #expect((error as? FailoverError)?.code == .timedOut)
            }
            await client.close()
            await backup.close()
            return await responder.value
        }
        // One round a millisecond at most over the 100 ms deadline.
        #expect(asked > 10)
        #expect(asked <= 110)
    }

    /// A control server that answers at once, over a transport whose `send` returns a
    /// millisecond after the message left (as TCP's can, when the write completes later): the
    /// answer is in before the client begins to wait for it. It must still count; before, the
    /// one-shot switchover answer was dropped for want of a waiter and the operator's `switch`
    /// timed out (CI, FailoverOperatorTests, 30 s).
    @Test(arguments: [nil, "zz"] as [String?])
    func anAnswerThatArrivesBeforeTheWaitBeginsIsNotLost(target: String?) async throws {
        let world = AsyncSimulation(seed: 1)
        let network = InMemoryNetwork()
        let control = network.join("control")
        let outcome = try await world.run(timeLimit: .seconds(10), maximumJobs: 200_000) { () async -> String in
            let responder = world.spawn { () async -> Void in
                for await envelope in control.incoming {
                    let answer: FailoverMessage
                    switch try? FailoverMessage.decode(envelope.message) {
                    case .switchover(let target)?:
                        answer = .switchoverAnswer(epoch: 7, refusal: target == nil ? nil : "not a backup of this pair")
                    case .statusQuery?:
                        answer = .status(
                            FailoverStatus(
                                epoch: 6, primary: "a", failingOver: false, failingOverFrom: nil, waitingReason: nil,
                                syncSet: ["b"], servers: []))
                    default:
                        continue
                    }
                    try? await control.send(answer.encode(), to: envelope.from)
                }
            }
            let client = FailoverClient(
                id: 1, transport: LateReturningTransport(network.join("operator"), clock: world.clock),
                servers: ["a", "b"], controller: "control", clock: world.clock, timeout: .milliseconds(10),
                deadline: .milliseconds(100))
            var outcome: String
            do {
                let status = try await client.status()
                outcome = "epoch \(status.epoch), "
                outcome += "switch to epoch \(try await client.switchover(to: target.flatMap(NodeID.init)))"
            } catch {
                outcome = "\(error)"
            }
            await client.close()
            await control.close()
            await responder.value
            return outcome
        }
        if target == nil {
            #expect(outcome == "epoch 6, switch to epoch 7")
        } else {
            #expect(
                outcome.contains("switchoverRefused") && outcome.contains("not a backup of this pair"), "\(outcome)")
        }
    }
}

/// A transport whose `send` delivers at once and returns a millisecond of virtual time later.
private struct LateReturningTransport: Transport {
    let inner: InMemoryTransport
    let clock: VirtualClock
    init(_ inner: InMemoryTransport, clock: VirtualClock) {
        self.inner = inner
        self.clock = clock
    }
    var localNode: NodeID { inner.localNode }
    var incoming: EnvelopeStream { inner.incoming }
    func send(_ message: Message, to node: NodeID, over path: PathID?) async throws(TransportError) {
        try await inner.send(message, to: node, over: path)
        try? await clock.sleep(for: .milliseconds(1))
    }
    func close() async { await inner.close() }
}
