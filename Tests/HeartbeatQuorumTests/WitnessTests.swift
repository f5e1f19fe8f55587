import DeterministicSimulation
import FaultToleranceCore
import HeartbeatQuorum
import NIOConcurrencyHelpers
import Testing

/// The shipped `HeartbeatService` and `HeartbeatWitness` over simulated transports in virtual
/// time: the same seed gives the same run, and no wall-clock load can fail it.
@Suite("Witnesses, in virtual time")
struct WitnessTests {
    static func configuration(priority: UInt8, witnesses: [NodeID]) throws -> HeartbeatConfiguration {
        let detector = DetectorConfiguration.phiAccrual(
            threshold: 8, minimumStandardDeviation: .milliseconds(20), acceptablePause: .milliseconds(200),
            maximumSilence: .milliseconds(400))
        return try HeartbeatConfiguration(
            paths: ["p1": detector, "p2": detector, "p3": detector], heartbeatInterval: .milliseconds(20), threshold: 2,
            detectionBound: .seconds(2), simultaneityWindow: .seconds(1), witnesses: witnesses, priority: priority)
    }

    /// What one run saw: B's transitions, and the states when the cut had settled.
    struct Outcome: Sendable, Equatable {
        var transitionsOfB: [Transition]
        var stateOfAAfterCut: RedundancyState
        var votesAfterCut: [NodeID: Bool]
    }

    static func witnessVeto(seed: UInt64) async throws -> Outcome {
        let world = AsyncSimulation(
            seed: seed, linkConditions: LinkConditions(delay: .microseconds(200) ... .milliseconds(3)))
        return try await world.run(timeLimit: .seconds(120)) {
            let network = world.network
            let transportA = network.transport(for: "A")
            let a = HeartbeatService(
                configuration: try Self.configuration(priority: 2, witnesses: []), partner: "B",
                transport: transportA, requirement: .insecure, clock: world.clock)
            let b = HeartbeatService(
                configuration: try Self.configuration(priority: 1, witnesses: ["W"]), partner: "A",
                transport: network.transport(for: "B"), requirement: .insecure,
                randomNumbers: SimulationRandom(seed: seed), clock: world.clock)
            let witness = HeartbeatWitness(
                transport: network.transport(for: "W"), requirement: .insecure, clock: world.clock)
            let seen = TransitionLog(b.transitions, in: world)
            let runA = world.spawn { try await a.run() }
            let runB = world.spawn { try await b.run() }
            let runW = world.spawn { try await witness.run() }
            try await world.eventually("A operating, and B standby having heard A say so") {
                a.state == .operating && b.state == .standby && b.evidence.partnerState == .operating
            }

            // Cut every path between A and B, both ways; W still reaches A. B cannot tell a
            // cut from a death; the witness still reaches A, so B must not take over.
            network.cut(from: "A", to: "B")
            network.cut(from: "B", to: "A")
            try await world.eventually("B not-standby on the witness's vote; B's transitions: \(seen.summary)") {
                b.state == .notStandby && b.evidence.witnessVotes["W"] == true
            }
            let stateOfA = a.state
            let votes = b.evidence.witnessVotes

            // Now A really dies: the witness can no longer reach it, and B takes over.
            runA.cancel()
            _ = await runA.result
            await transportA.close()
            try await world.eventually(
                "B's takeover; B's transitions: \(seen.summary); votes \(b.evidence.witnessVotes) at \(world.clock.now)"
            ) {
                seen.all.contains { $0.to == .operating && $0.evidence.partnerState == .operating }
            }
            runB.cancel()
            runW.cancel()
            _ = await runB.result
            _ = await runW.result
            return Outcome(transitionsOfB: seen.all, stateOfAAfterCut: stateOfA, votesAfterCut: votes)
        }
    }

    @Test(
        "a cut between the pair alone does not make two operating sides; a dead partner does take over",
        arguments: [1, 2, 3] as [UInt64])
    func witnessVeto(seed: UInt64) async throws {
        let outcome = try await Self.witnessVeto(seed: seed)
        #expect(outcome.stateOfAAfterCut == .operating)
        #expect(outcome.votesAfterCut["W"] == true)
        // The first takeover B made after hearing A operating is the witness-confirmed one:
        // none during the cut. (A startup takeover before B first heard A does not count.)
        let takeover = outcome.transitionsOfB.first { $0.to == .operating && $0.evidence.partnerState == .operating }
        #expect(takeover?.reason == .witnessesConfirmPartnerGone)
        #expect(takeover?.evidence.witnessVotes["W"] == false)
    }

    @Test("a forger who cannot read the queries votes for rounds 0-63 over and over: no vote is ever counted")
    func forgedVotesRefused() async throws {
        let world = AsyncSimulation(
            seed: 5, linkConditions: LinkConditions(delay: .microseconds(200) ... .milliseconds(3)))
        let (votesSeen, refused) = try await world.run(timeLimit: .seconds(60)) { () async throws -> (Int, Int) in
            let network = world.network
            // B alone, its witness W silent and A gone: B asks W every round; only the forger answers.
            let b = HeartbeatService(
                configuration: try Self.configuration(priority: 1, witnesses: ["W"]), partner: "A",
                transport: network.transport(for: "B"), requirement: .insecure,
                randomNumbers: SimulationRandom(seed: 5), clock: world.clock)
            let runB = world.spawn { try await b.run() }
            var votesSeen = 0
            for _ in 0..<300 {
                for round in 0..<64 as Range<UInt64> {
                    _ = network.inject(
                        HeartbeatMessage.witnessVote(roundNonce: round, partnerReachable: true).message,
                        claimingToBe: "W", to: "B")
                }
                try await world.clock.sleep(for: .milliseconds(10))
                if b.evidence.witnessVotes["W"] != nil { votesSeen += 1 }
            }
            runB.cancel()
            _ = await runB.result
            return (votesSeen, b.witnessVotesRefused)
        }
        // With rounds numbered 1, 2, 3 (before nonces) the forged vote for the round in progress
        // was counted, and B saw W vote "A reachable".
        #expect(votesSeen == 0)
        #expect(refused > 0)
    }

    @Test("a probe lost on the way is sent again: one lost datagram does not vote a live partner gone")
    func lostProbeIsResent() async throws {
        let world = AsyncSimulation(seed: 7)
        let vote = try await world.run(timeLimit: .seconds(10)) { () async throws -> HeartbeatMessage? in
            let witness = HeartbeatWitness(
                transport: world.network.transport(for: "W"), requirement: .insecure, clock: world.clock)
            let partner = world.network.transport(for: "A")
            let asker = world.network.transport(for: "B")
            let service = world.spawn { try await witness.run() }
            // The partner answers every probe but the first, as if the first were lost.
            let answering = world.spawn {
                var probes = 0
                for await envelope in partner.incoming {
                    guard case .probe(let nonce)? = try? HeartbeatMessage(envelope.message) else { continue }
                    probes += 1
                    if probes == 1 { continue }
                    try? await partner.send(HeartbeatMessage.probeReply(nonce: nonce).message, to: envelope.from)
                }
            }
            try await asker.send(
                HeartbeatMessage.witnessQuery(roundNonce: 1, partner: "A", answerWithin: .milliseconds(100)).message,
                to: "W")
            var vote: HeartbeatMessage?
            for await envelope in asker.incoming {
                vote = try? HeartbeatMessage(envelope.message)
                break
            }
            service.cancel()
            await partner.close()
            _ = await answering.value
            return vote
        }
        #expect(vote == .witnessVote(roundNonce: 1, partnerReachable: true))
    }

    @Test("the Simulation article's example: a crashed partner is taken over from, on every replay")
    func articleExample() async throws {
        let configurationA = try Self.configuration(priority: 2, witnesses: [])
        let configurationB = try Self.configuration(priority: 1, witnesses: [])
        for _ in 0..<2 {
            let world = AsyncSimulation(seed: 42)
            let operating = try await world.run(timeLimit: .seconds(60)) {
                let a = HeartbeatService(
                    configuration: configurationA, partner: "B",
                    transport: world.network.transport(for: "A"), requirement: .insecure, clock: world.clock)
                let b = HeartbeatService(
                    configuration: configurationB, partner: "A",
                    transport: world.network.transport(for: "B"), requirement: .insecure, clock: world.clock)
                let runA = world.spawn { try await a.run() }
                let runB = world.spawn { try await b.run() }
                try await world.clock.sleep(for: .seconds(1))
                #expect(b.state == .standby)
                world.network.crash("A")
                try await world.clock.sleep(for: .seconds(1))
                runA.cancel()
                runB.cancel()
                return b.state
            }
            #expect(operating == .operating)
        }
    }

    @Test("one seed replays the same run: identical transitions, at identical virtual times")
    func replay() async throws {
        let first = try await Self.witnessVeto(seed: 42)
        let second = try await Self.witnessVeto(seed: 42)
        #expect(!first.transitionsOfB.isEmpty)
        #expect(first == second)
    }
}

/// Collects a service's transitions in a task of the simulation.
final class TransitionLog: Sendable {
    private let box = NIOLockedValueBox<[Transition]>([])

    init(_ stream: AsyncStream<Transition>, in world: AsyncSimulation) {
        let box = self.box
        world.spawn { for await transition in stream { box.withLockedValue { $0.append(transition) } } }
    }

    var all: [Transition] { box.withLockedValue { $0 } }

    var summary: String {
        all.map { "\($0.at) \($0.from)→\($0.to) [\($0.reason.rawValue)]" }.joined(separator: ", ")
    }
}

/// A condition that must come true within a limit of virtual time.
struct TimedOut: Error, CustomStringConvertible {
    var description: String
}

extension AsyncSimulation {
    /// Polls `condition` every 5 ms of virtual time; throws once `limit` has passed.
    func eventually(
        _ what: @autoclosure () -> String, limit: Duration = .seconds(30), _ condition: () -> Bool
    ) async throws {
        let deadline = clock.now + limit
        while !condition() {
            guard clock.now < deadline else { throw TimedOut(description: "timed out waiting for \(what())") }
            try await clock.sleep(for: .milliseconds(5))
        }
    }
}
