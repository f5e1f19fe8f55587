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
}
