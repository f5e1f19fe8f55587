import FaultTolerance
import Testing

/// Result types a program receives can also be built by it, for its own mocks and fixtures.
@Suite("Public initializers of result types")
struct FixtureInitializerTests {
    @Test("receipts, transitions with evidence, and live-copy reports can be built and compared")
    func resultTypesAreConstructible() throws {
        let receipt = JournalReceipt(sequence: 7, time: Instant(nanoseconds: 42))
        #expect(receipt.sequence == 7 && receipt.time == Instant(nanoseconds: 42))

        let detector = DetectorConfiguration.phiAccrual(
            threshold: 8, minimumStandardDeviation: .milliseconds(5), acceptablePause: .milliseconds(30),
            maximumSilence: .milliseconds(200))
        let evidence = Evidence(
            paths: [PathEvidence(path: "p1", healthy: false, phi: 12, silence: .milliseconds(90), detector: detector)],
            healthyCount: 0, threshold: 1, selfHealthy: true, partnerState: .operating, witnessVotes: ["w": false])
        let transition = Transition(
            from: .standby, to: .operating, at: Instant(nanoseconds: 5), reason: .partnerGone, evidence: evidence)
        #expect(transition.evidence.paths.first?.phi == 12)
        #expect(
            transition
                == Transition(
                    from: .standby, to: .operating, at: .init(nanoseconds: 5), reason: .partnerGone, evidence: evidence)
        )

        let round = RoundSummary(
            round: 1, pages: 10, pagesSent: 8, duration: .milliseconds(3), dirtyPages: 2, dirtyRate: 1000,
            bandwidth: 1e6, predictedPause: .milliseconds(1), throttlePercent: 0)
        let report = LiveCopyReport(
            rounds: [round],
            switchover: SwitchoverSummary(
                rounds: 1, pages: 2, predictedPause: .milliseconds(1), pause: .microseconds(900)),
            pagesRecopied: 0, pagesSent: 10)
        #expect(report.rounds.first?.pagesSent == 8)
        #expect(report.switchover.pause == .microseconds(900))
    }
}
