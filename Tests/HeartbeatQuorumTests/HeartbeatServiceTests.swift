import DeterministicSimulation
import FaultToleranceCore
import FaultToleranceNIO
import HeartbeatQuorum
import NIOConcurrencyHelpers
import NIOCore
import Testing

/// Waits until `condition` holds, or fails after `limit`. The limit only stops a broken test
/// from hanging; nothing asserts on how long the wait took.
func eventually(
    _ what: @autoclosure () -> String,
    limit: Duration = .seconds(120),
    _ condition: () -> Bool
) async throws {
    let deadline = ContinuousClock.now + limit
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("timed out waiting for \(what())")
            return
        }
        try await Task.sleep(for: .milliseconds(5))
    }
}

@Suite("HeartbeatService over real UDP on three loopback paths", .timeLimit(.minutes(10)))
struct HeartbeatServiceTests {
    static let paths: [PathID] = ["p1", "p2", "p3"]

    /// Generous timings so a loaded CI machine (or ThreadSanitizer) does not look like a
    /// failed path: 20 ms heartbeats, 400 ms cap on silence, and a 5 s simultaneity window so
    /// a starved sender or receiver does not make a death look like links failing one by one
    /// (with 1 s, a CI run where another test copied 1.5 GiB beside this one saw A's last
    /// heartbeats on one path arrive 1.3 s after the others, and B released redundancy).
    static func configuration(priority: UInt8) throws -> HeartbeatConfiguration {
        let detector = DetectorConfiguration.phiAccrual(
            threshold: 8, minimumStandardDeviation: .milliseconds(20), acceptablePause: .milliseconds(200),
            maximumSilence: .milliseconds(400))
        return try HeartbeatConfiguration(
            paths: Dictionary(uniqueKeysWithValues: paths.map { ($0, detector) }), heartbeatInterval: .milliseconds(20),
            threshold: 2, detectionBound: .seconds(1), minimumDwell: .milliseconds(100),
            simultaneityWindow: .seconds(5), priority: priority)
    }

    static func transport(_ node: NodeID, firstHost: Int) async throws -> UDPTransport {
        var addresses: [PathID: SocketAddress] = [:]
        for (index, path) in paths.enumerated() {
            addresses[path] = try SocketAddress(ipAddress: "127.0.0.\(firstHost + index)", port: 0)
        }
        return try await UDPTransport.start(configuration: .init(localNode: node, paths: addresses))
    }

    /// A (priority 2) on 127.0.0.2-4 and B (priority 1) on 127.0.0.5-7, each knowing the
    /// other's address on every path.
    static func pair() async throws -> (UDPTransport, UDPTransport, HeartbeatService, HeartbeatService) {
        let transportA = try await transport("A", firstHost: 2)
        let transportB = try await transport("B", firstHost: 5)
        for path in paths {
            if let address = transportB.localAddresses[path] { transportA.setPeer("B", path: path, address: address) }
            if let address = transportA.localAddresses[path] { transportB.setPeer("A", path: path, address: address) }
        }
        let a = HeartbeatService(
            configuration: try configuration(priority: 2), partner: "B", transport: transportA, requirement: .insecure)
        let b = HeartbeatService(
            configuration: try configuration(priority: 1), partner: "A", transport: transportB, requirement: .insecure)
        return (transportA, transportB, a, b)
    }

    @Test(
        "over a transport that does not prove its senders, the service and the witness refuse to run unless told .insecure"
    )
    func unauthenticatedTransportRefused() async throws {
        let network = InMemoryNetwork()
        let service = HeartbeatService(
            configuration: try Self.configuration(priority: 1), partner: "B", transport: network.join("A"))
        do {
            try await service.run()
            Issue.record("the service ran over a bare transport")
        } catch let error as HeartbeatServiceError {
            #expect(error.code == .unauthenticatedTransport)
            #expect(error.detail.contains("AuthenticatedTransport"))
        }
        let witness = HeartbeatWitness(transport: network.join("W"))
        await #expect(throws: HeartbeatServiceError.self) { try await witness.run() }
        // Said explicitly, it runs (until cancelled).
        let insecure = HeartbeatService(
            configuration: try Self.configuration(priority: 1), partner: "B", transport: network.join("C"),
            requirement: .insecure)
        let running = Task { try await insecure.run() }
        running.cancel()
        if case .failure(let error) = await running.result {
            #expect(!(error is HeartbeatServiceError), "refused although told .insecure: \(error)")
        }
    }

    @Test("stopping the partner: the standby takes over, and the transition says why")
    func partnerStops() async throws {
        let (transportA, transportB, a, b) = try await Self.pair()
        let runA = Task { try await a.run() }
        let runB = Task { try await b.run() }
        // Collect B's transitions as they come, to explain a failure.
        let seenByB = Transitions(b.transitions)
        let seenByA = Transitions(a.transitions)
        // A, of the higher priority, operates once both are up; but on a loaded machine B may
        // take over at startup while A seems silent (a CI run saw A silent 514 ms while the
        // whole suite started at once), and then rightly keeps operating: an operating side is
        // never preempted. Either way the pair settles with one operating and the other standby
        // having heard it say so; the one operating is stopped.
        try await eventually(
            "one operating, the other standby having heard it; A: \(seenByA.summary); B: \(seenByB.summary)"
        ) {
            (a.state == .operating && b.state == .standby && b.evidence.partnerState == .operating)
                || (b.state == .operating && a.state == .standby && a.evidence.partnerState == .operating)
        }
        let aOperates = a.state == .operating
        let (standby, seen) = aOperates ? (b, seenByB) : (a, seenByA)
        let (stopped, stoppedTransport) = aOperates ? (runA, transportA) : (runB, transportB)
        let (survivor, survivorTransport) = aOperates ? (runB, transportB) : (runA, transportA)

        // The takeover that counts is the standby's first after the stop (a side may have
        // taken over once at startup, before it first heard its partner, and yielded since).
        // Its transitions up to now collected first: the last one is into standby.
        try await eventually("the standby's transitions collected: \(seen.summary)") { seen.all.last?.to == .standby }
        let earlier = seen.all.count
        stopped.cancel()
        _ = try? await stopped.value
        await stoppedTransport.close()

        try await eventually("the standby's takeover; its transitions: \(seen.summary)") {
            seen.all.dropFirst(earlier).contains { $0.to == .operating }
        }
        let takeover = seen.all.dropFirst(earlier).first { $0.to == .operating }
        #expect(takeover?.reason == .partnerGone)
        #expect(takeover?.evidence.healthyCount == 0)
        try await eventually("the standby operating") { standby.state == .operating }
        survivor.cancel()
        _ = try? await survivor.value
        await survivorTransport.close()
    }
}

/// The same services over simulated paths in virtual time, where cutting paths one by one
/// cannot be confused by a loaded machine's scheduling (the wall-clock version of this test
/// timed out under CI's load).
@Suite("HeartbeatService: paths cut one by one, in virtual time")
struct HeartbeatPathTests {
    @Test("cutting paths lowers the healthy count as predicted, down to not-standby below the threshold")
    func pathsAndTakeover() async throws {
        let world = AsyncSimulation(
            seed: 3, linkConditions: LinkConditions(delay: .microseconds(300)...(.milliseconds(2))))
        try await world.run(timeLimit: .seconds(120)) {
            let network = world.network
            let a = HeartbeatService(
                configuration: try HeartbeatServiceTests.configuration(priority: 2), partner: "B",
                transport: network.transport(for: "A"), requirement: .insecure, clock: world.clock)
            let b = HeartbeatService(
                configuration: try HeartbeatServiceTests.configuration(priority: 1), partner: "A",
                transport: network.transport(for: "B"), requirement: .insecure, clock: world.clock)
            let runA = world.spawn { try await a.run() }
            let runB = world.spawn { try await b.run() }
            try await world.eventually("A operating, and B standby having heard A say so") {
                a.state == .operating && b.state == .standby && b.evidence.partnerState == .operating
            }
            try await world.eventually("B hearing A on all three paths") { b.evidence.healthyCount == 3 }

            // A can no longer send on p1, so B hears A on two paths: still at the threshold.
            network.cut(from: "A", to: "B", path: "p1")
            try await world.eventually("B counting 2 healthy paths") { b.evidence.healthyCount == 2 }
            #expect(b.state == .standby)
            #expect(b.evidence.paths.first { $0.path == "p1" }?.healthy == false)

            // One path left: below the threshold, B releases redundancy with an alarm.
            network.cut(from: "A", to: "B", path: "p2")
            try await world.eventually("B counting 1 healthy path") { b.evidence.healthyCount == 1 }
            try await world.eventually("B not-standby") { b.state == .notStandby }
            #expect(a.state == .operating)
            runA.cancel()
            runB.cancel()
            _ = await runA.result
            _ = await runB.result
        }
    }
}

/// Collects a service's transitions in the background.
final class Transitions: Sendable {
    private let box = NIOLockedValueBox<[Transition]>([])
    private let task: Task<Void, Never>

    init(_ stream: AsyncStream<Transition>) {
        let box = self.box
        task = Task { for await transition in stream { box.withLockedValue { $0.append(transition) } } }
    }

    deinit { task.cancel() }

    var all: [Transition] { box.withLockedValue { $0 } }

    var summary: String {
        all.map {
            "\($0.from)→\($0.to) [\($0.reason.rawValue)] partner \($0.evidence.partnerState.map { "\($0)" } ?? "-") failed: \($0.evidence.failedPathsSummary)"
        }
        .joined(separator: "; ")
    }
}

/// Heartbeats over a transport without paths: TCP, shared with other protocols through a
/// demultiplexer, as an embedding program runs them on one port per peer.
@Suite("HeartbeatService over a demultiplexed TCP transport", .timeLimit(.minutes(10)))
struct HeartbeatOverTCPTests {
    static func configuration(priority: UInt8, paths: [PathID] = ["tcp"]) throws -> HeartbeatConfiguration {
        let detector = DetectorConfiguration.phiAccrual(
            threshold: 8, minimumStandardDeviation: .milliseconds(20), acceptablePause: .milliseconds(200),
            maximumSilence: .milliseconds(400))
        return try HeartbeatConfiguration(
            paths: Dictionary(uniqueKeysWithValues: paths.map { ($0, detector) }), heartbeatInterval: .milliseconds(20),
            threshold: 1, detectionBound: .seconds(1), priority: priority)
    }

    @Test("one configured path stands for TCP's one: A operates, B stands by having heard it")
    func singleUnnamedPath() async throws {
        let loopback = Endpoint(host: "127.0.0.1", port: 0)
        let tcpA = try await TCPTransport.start(configuration: .init(localNode: "A", listeningOn: loopback))
        let tcpB = try await TCPTransport.start(configuration: .init(localNode: "B", listeningOn: loopback))
        try tcpA.setPeer("B", at: tcpB.localEndpoint)
        try tcpB.setPeer("A", at: tcpA.localEndpoint)
        let (sharedA, sharedB) = (TransportDemultiplexer(tcpA), TransportDemultiplexer(tcpB))
        let a = HeartbeatService(
            configuration: try Self.configuration(priority: 2), partner: "B",
            transport: sharedA.channel(forBlock: 0x01), requirement: .insecure, pathMapping: .singleUnnamedPath)
        let b = HeartbeatService(
            configuration: try Self.configuration(priority: 1), partner: "A",
            transport: sharedB.channel(forBlock: 0x01), requirement: .insecure, pathMapping: .singleUnnamedPath)
        let runA = Task { try await a.run() }
        let runB = Task { try await b.run() }
        // The one path healthy in the same look: a check after the wait could land in a stall of
        // the whole suite on two cores past the detector's 400 ms silence.
        try await eventually("A operating, and B standby having heard A say so over its one healthy path") {
            a.state == .operating && b.state == .standby && b.evidence.partnerState == .operating
                && b.evidence.healthyCount == 1
        }
        #expect(b.evidence.paths.map(\.path) == ["tcp"])
        runA.cancel()
        runB.cancel()
        _ = try? await (runA.value, runB.value)
        await tcpA.close()
        await tcpB.close()
    }

    @Test("a transport without paths cannot carry a configuration of several paths")
    func severalPathsRefused() async throws {
        let service = HeartbeatService(
            configuration: try Self.configuration(priority: 1, paths: ["p1", "p2"]), partner: "B",
            transport: InMemoryNetwork().join("A"), requirement: .insecure, pathMapping: .singleUnnamedPath)
        do {
            try await service.run()
            Issue.record("the service ran with two paths over one")
        } catch let error as HeartbeatServiceError {
            #expect(error.code == .pathMismatch)
        }
    }
}
