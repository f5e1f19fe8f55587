import FaultToleranceCore
import HeartbeatQuorum
import Testing

@Suite("Witnesses", .timeLimit(.minutes(2)))
struct WitnessTests {
    static func configuration(priority: UInt8, witnesses: [NodeID]) throws -> HeartbeatConfiguration {
        let detector = DetectorConfiguration.phiAccrual(
            threshold: 8, minimumStandardDeviation: .milliseconds(20), acceptablePause: .milliseconds(200),
            maximumSilence: .milliseconds(400))
        return try HeartbeatConfiguration(
            paths: ["p1": detector, "p2": detector, "p3": detector], heartbeatInterval: .milliseconds(20), threshold: 2,
            detectionBound: .seconds(2), simultaneityWindow: .seconds(1), witnesses: witnesses, priority: priority)
    }

    @Test("a cut between the pair alone does not make two operating sides; a dead partner does take over")
    func witnessVeto() async throws {
        let network = InMemoryNetwork()
        let transportA = network.join("A")
        let transportB = network.join("B")
        let transportW = network.join("W")
        let a = HeartbeatService(
            configuration: try Self.configuration(priority: 2, witnesses: []), partner: "B", transport: transportA)
        let b = HeartbeatService(
            configuration: try Self.configuration(priority: 1, witnesses: ["W"]), partner: "A", transport: transportB)
        let witness = HeartbeatWitness(transport: transportW)
        let runA = Task { try await a.run() }
        let runB = Task { try await b.run() }
        let runW = Task { try await witness.run() }
        try await eventually("A operating, and B standby having heard A say so") {
            a.state == .operating && b.state == .standby && b.evidence.partnerState == .operating
        }

        // Cut every path between A and B, both ways; W still reaches A.
        network.cut(from: "A", to: "B")
        network.cut(from: "B", to: "A")
        // B cannot tell a cut from a death; the witness still reaches A, so B must not take over.
        try await eventually("B not-standby on the witness's vote") {
            b.state == .notStandby && b.evidence.witnessVotes["W"] == true
        }
        #expect(a.state == .operating)

        // Now A really dies: the witness can no longer reach it, and B takes over.
        runA.cancel()
        _ = try? await runA.value
        await transportA.close()
        let seen = Transitions(b.transitions)
        try await eventually("B's takeover; B's transitions: \(seen.summary)") {
            seen.afterHearingOperatingPartner.contains { $0.to == .operating }
        }
        let takeover = seen.afterHearingOperatingPartner.first { $0.to == .operating }
        // The first takeover B made after hearing A operating is the witness-confirmed one:
        // none during the cut. (A startup takeover before B first heard A does not count.)
        #expect(takeover?.reason == .witnessesConfirmPartnerGone)
        #expect(takeover?.evidence.witnessVotes["W"] == false)
        runB.cancel()
        runW.cancel()
        _ = try? await runB.value
        _ = try? await runW.value
    }
}
