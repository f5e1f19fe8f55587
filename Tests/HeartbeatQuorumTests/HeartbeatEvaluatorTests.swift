import FaultToleranceCore
import HeartbeatQuorum
import NIOCore
import Testing

/// Drives an evaluator by hand in virtual time.
struct Driver {
    var evaluator: HeartbeatEvaluator
    var now = Instant.zero
    var log: [HeartbeatEvaluator.Directive] = []
    let paths: [PathID] = ["p1", "p2", "p3"]

    init(configuration: HeartbeatConfiguration) {
        evaluator = HeartbeatEvaluator(configuration: configuration, at: .zero)
    }

    var transitions: [Transition] {
        log.compactMap { if case .transition(let transition) = $0 { transition } else { nil } }
    }

    var alarms: [TransitionReason] {
        log.compactMap { if case .alarm(let reason, _) = $0 { reason } else { nil } }
    }

    /// Advances time in 5 ms steps; on each 10 ms boundary the partner's heartbeat arrives on
    /// `live` paths; ticks every step.
    mutating func run(
        for duration: Duration,
        live: Set<PathID>,
        partner: RedundancyState = .operating,
        priority: UInt8 = 9,
        hearing: UInt8 = 3
    ) {
        let end = now + duration
        while now < end {
            now = now + .milliseconds(5)
            if now.nanoseconds % 10_000_000 == 0 {
                for path in paths where live.contains(path) {
                    let heartbeat = Heartbeat(
                        state: partner, priority: priority, pathsHearingReceiver: hearing, sequence: 1)
                    log += evaluator.heartbeatReceived(heartbeat, on: path, at: now)
                }
            }
            log += evaluator.tick(at: now)
        }
    }
}

func timeoutConfiguration(
    threshold: Int = 2,
    witnesses: [NodeID] = [],
    priority: UInt8 = 1,
    minimumDwell: Duration? = nil,
    maximumFlaps: Int = 4
) throws -> HeartbeatConfiguration {
    let detector = DetectorConfiguration.fixedTimeout(.milliseconds(30))
    return try HeartbeatConfiguration(
        paths: ["p1": detector, "p2": detector, "p3": detector], heartbeatInterval: .milliseconds(10),
        threshold: threshold, detectionBound: .milliseconds(200), minimumDwell: minimumDwell,
        maximumFlaps: maximumFlaps,
        witnesses: witnesses, witnessTimeout: .milliseconds(50), priority: priority)
}

@Suite("HeartbeatEvaluator rules")
struct HeartbeatEvaluatorTests {
    let all: Set<PathID> = ["p1", "p2", "p3"]

    @Test("healthy partner operating: standby; a partner below our priority not operating: we are elected")
    func standbyAndElection() throws {
        var driver = Driver(configuration: try timeoutConfiguration())
        driver.run(for: .milliseconds(100), live: all)
        #expect(driver.evaluator.state == .standby)
        #expect(driver.transitions.last?.reason == .partnerHealthy)

        var elected = Driver(configuration: try timeoutConfiguration(priority: 5))
        elected.run(for: .milliseconds(100), live: all, partner: .standby, priority: 1)
        #expect(elected.evaluator.state == .operating)
        #expect(elected.transitions.last?.reason == .electedByPriority)
    }

    @Test("rule 4: every path silent at once means the partner is gone, within the bound, with evidence")
    func partnerGone() throws {
        var driver = Driver(configuration: try timeoutConfiguration())
        driver.run(for: .milliseconds(100), live: all)
        let lastHeartbeat = driver.now
        driver.run(for: .milliseconds(300), live: [])
        #expect(driver.evaluator.state == .operating)
        let takeover = try #require(driver.transitions.last)
        #expect(takeover.reason == .partnerGone)
        #expect(takeover.at - lastHeartbeat <= driver.evaluator.configuration.detectionBound)
        #expect(takeover.evidence.healthyCount == 0)
        #expect(takeover.evidence.paths.allSatisfy { !$0.healthy && ($0.silence ?? .zero) >= .milliseconds(30) })
    }

    @Test("rule 4: paths failing one by one are failing links: not-standby with an alarm, never operating")
    func gradualLoss() throws {
        var driver = Driver(configuration: try timeoutConfiguration(minimumDwell: .zero))
        driver.run(for: .milliseconds(100), live: all)
        driver.run(for: .milliseconds(300), live: ["p2", "p3"])
        #expect(driver.evaluator.state == .standby)
        driver.run(for: .milliseconds(300), live: ["p3"])
        #expect(driver.evaluator.state == .notStandby)
        #expect(driver.alarms.contains(.linksDegraded))
        driver.run(for: .milliseconds(500), live: [])
        #expect(driver.evaluator.state == .notStandby)
        #expect(!driver.transitions.contains { $0.to == .operating })
    }

    @Test("rule 1: an isolated side goes not-standby and never operates")
    func isolated() throws {
        var driver = Driver(configuration: try timeoutConfiguration())
        driver.run(for: .milliseconds(100), live: all)
        driver.log += driver.evaluator.selfCheck(healthy: false, at: driver.now)
        #expect(driver.evaluator.state == .notStandby)
        #expect(driver.alarms == [.ownSideIsolated])
        driver.run(for: .milliseconds(500), live: [])
        #expect(driver.evaluator.state == .notStandby)
    }

    @Test("rule 2: both operating, the lower priority yields")
    func yields() throws {
        var driver = Driver(configuration: try timeoutConfiguration(priority: 1))
        driver.run(for: .milliseconds(100), live: all)
        driver.run(for: .milliseconds(300), live: [])
        #expect(driver.evaluator.state == .operating)
        driver.run(for: .milliseconds(50), live: all, partner: .operating, priority: 9)
        #expect(driver.evaluator.state == .standby)
        #expect(driver.transitions.last?.reason == .yieldedToPartner)
    }

    @Test("rule 5: fewer healthy paths than the threshold leaves standby with an alarm")
    func degraded() throws {
        var driver = Driver(configuration: try timeoutConfiguration(threshold: 3, minimumDwell: .zero))
        driver.run(for: .milliseconds(100), live: all)
        driver.run(for: .milliseconds(200), live: ["p1", "p2"])
        #expect(driver.evaluator.state == .notStandby)
        #expect(driver.transitions.last?.evidence.failedPathsSummary.hasPrefix("p3") == true)
        #expect(driver.alarms.contains(.linksDegraded))
    }

    @Test("hysteresis: a path needs riseCount heartbeats; leaving not-standby waits the minimum dwell")
    func hysteresis() throws {
        var driver = Driver(configuration: try timeoutConfiguration(threshold: 3, minimumDwell: .milliseconds(500)))
        driver.run(for: .milliseconds(100), live: all)
        driver.run(for: .milliseconds(600), live: ["p1", "p2"])
        #expect(driver.evaluator.state == .notStandby)
        let entered = driver.evaluator.stateSince
        driver.run(for: .milliseconds(100), live: all)
        #expect(driver.evaluator.state == .notStandby, "dwell not yet over")
        driver.run(for: .milliseconds(500), live: all)
        #expect(driver.evaluator.state == .standby)
        #expect(driver.evaluator.stateSince - entered >= .milliseconds(500))
    }

    @Test("flap damping: at most maximumFlaps degradation transitions per window")
    func damping() throws {
        var driver = Driver(configuration: try timeoutConfiguration(threshold: 3, minimumDwell: .zero, maximumFlaps: 2))
        driver.run(for: .milliseconds(100), live: all)
        for _ in 0..<10 {
            driver.run(for: .milliseconds(100), live: ["p1", "p2"])
            driver.run(for: .milliseconds(100), live: all)
        }
        let flaps = driver.transitions.filter { Set([$0.from, $0.to]) == [.standby, .notStandby] }
        #expect(flaps.count == 2)
    }

    @Test("witnesses: a quorum that cannot reach the partner confirms; one that can vetoes")
    func witnesses() throws {
        for (votes, expected) in [
            ([false, false, true], RedundancyState.operating), ([true, true, false], .notStandby),
        ] {
            var driver = Driver(configuration: try timeoutConfiguration(witnesses: ["w1", "w2", "w3"]))
            driver.run(for: .milliseconds(100), live: all)
            driver.run(for: .milliseconds(60), live: [])
            let round = try #require(
                driver.log.compactMap { if case .queryWitnesses(let round) = $0 { round } else { nil } }.first)
            #expect(driver.evaluator.state == .standby, "no takeover before the witnesses answer")
            for (index, reachable) in votes.enumerated() {
                driver.log += driver.evaluator.witnessVote(
                    from: NodeID("w\(index + 1)") ?? "w", round: round, partnerReachable: reachable, at: driver.now)
            }
            #expect(driver.evaluator.state == expected)
        }
    }

    @Test("phi grows with silence; a pause under the acceptable pause stays below the threshold")
    func phi() throws {
        let detector = DetectorConfiguration.phiAccrual(
            threshold: 8, minimumStandardDeviation: .milliseconds(2), acceptablePause: .milliseconds(30),
            maximumSilence: .milliseconds(80))
        let configuration = try HeartbeatConfiguration(
            paths: ["p1": detector], heartbeatInterval: .milliseconds(10), threshold: 1,
            detectionBound: .milliseconds(150))
        var driver = Driver(configuration: configuration)
        driver.run(for: .milliseconds(200), live: ["p1"])
        let base = driver.now
        let phis = [10, 30, 45, 60].map { millis in
            driver.evaluator.evidence(at: base + .milliseconds(Int64(millis))).paths[0].phi
        }
        #expect(phis == phis.sorted())
        #expect(phis[1] < 8, "a 30 ms silence is within the acceptable pause")
        #expect(phis[3] >= 8)
    }

    @Test("configurations that cannot work are rejected, naming the setting")
    func validation() {
        let detector = DetectorConfiguration.fixedTimeout(.milliseconds(30))
        func rejected(_ setting: String, _ build: () throws -> HeartbeatConfiguration) {
            do {
                _ = try build()
                Issue.record("\(setting) accepted")
            } catch let error as ConfigurationError {
                #expect(error.setting.hasPrefix(setting), "\(error)")
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
        rejected("threshold") {
            try HeartbeatConfiguration(
                paths: ["p1": detector], heartbeatInterval: .milliseconds(10), threshold: 2, detectionBound: .seconds(1)
            )
        }
        rejected("detectionBound") {
            try HeartbeatConfiguration(
                paths: ["p1": detector], heartbeatInterval: .milliseconds(10), threshold: 1,
                detectionBound: .milliseconds(20))
        }
        rejected("paths[p1]") {
            try HeartbeatConfiguration(
                paths: ["p1": .fixedTimeout(.milliseconds(15))], heartbeatInterval: .milliseconds(10), threshold: 1,
                detectionBound: .seconds(1))
        }
        rejected("paths") {
            try HeartbeatConfiguration(
                paths: [:], heartbeatInterval: .milliseconds(10), threshold: 1, detectionBound: .seconds(1))
        }
        rejected("paths[p1]") {
            try HeartbeatConfiguration(
                paths: [
                    "p1": .phiAccrual(
                        threshold: 8, minimumStandardDeviation: .milliseconds(1), acceptablePause: .milliseconds(100),
                        maximumSilence: .milliseconds(50))
                ], heartbeatInterval: .milliseconds(10), threshold: 1, detectionBound: .seconds(1))
        }
    }

    @Test("heartbeat messages round-trip; hostile bytes are typed errors")
    func messages() throws {
        let messages: [HeartbeatMessage] = [
            .heartbeat(Heartbeat(state: .operating, priority: 3, pathsHearingReceiver: 2, sequence: 99)),
            .witnessQuery(roundNonce: 7, partner: "B", answerWithin: .milliseconds(250)),
            .witnessVote(roundNonce: 7, partnerReachable: true),
            .probe(nonce: 5), .probeReply(nonce: 6),
        ]
        for message in messages { #expect(try HeartbeatMessage(message.message) == message) }
        let hostile: [Message] = [
            Message(type: 0x0100, bytes: [1, 9, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),  // unknown state
            Message(type: 0x0100, bytes: [2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]),  // unknown version
            Message(type: 0x0100, bytes: [1, 1, 0]),  // short
            Message(type: 0x0102, bytes: [0, 0, 0, 0, 0, 0, 0, 1, 7]),  // vote not 0/1
            Message(type: 0x0101, bytes: [0, 0, 0, 0, 0, 0, 0, 1, 1, 0x42]),  // query without its deadline
            Message(type: 0x0042, bytes: []),
        ]
        for message in hostile { #expect(throws: FrameError.self) { try HeartbeatMessage(message) } }
    }
}
