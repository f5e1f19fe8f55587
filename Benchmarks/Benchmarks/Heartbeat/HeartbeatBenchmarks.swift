import Benchmark
import BenchmarkSupport
import FaultToleranceAuthentication
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import HeartbeatQuorum
import HeartbeatSimulation
import Logging
import NIOCore

// Detection time of a dead partner at a 10 ms heartbeat interval — in virtual time over many
// seeds and over real UDP on loopback — the evaluator's CPU cost per heartbeat, and false
// takeovers under 5% loss and 20 ms jitter.
//
// Each detection sample is the time from the partner's crash to the standby's takeover, in
// microseconds; package-benchmark prints its percentiles (p50, p99). The target is
// p99 within 3 intervals + 5 ms = 35 ms. The smoke run checks that bound over 100 crashes in
// virtual time (fast tuning) and the evaluator's cost per heartbeat against a ceiling of 10 µs
// (at 3 paths x 100 heartbeats/s, 0.3 % of one core), once each. (An earlier version divided
// that cost by an almost empty loop's; the ratio said nothing and is gone.)

let mode = BenchmarkMode.current
let detectionMicroseconds = BenchmarkMetric.custom("detection (µs, crash to takeover)", useScalingFactor: false)
let falseTakeovers = BenchmarkMetric.custom("false takeovers (seeds)", useScalingFactor: false)
let nanosecondsPerHeartbeat = BenchmarkMetric.custom("ns per heartbeat", useScalingFactor: false)
let authenticationCost = BenchmarkMetric.custom(
    "cost x100 (sealed: seal, check, decode, evaluate / plain: decode, evaluate)", useScalingFactor: false)

func microseconds(_ duration: Duration) -> Int { Int(nanoseconds(duration) / 1000) }

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration.warmupIterations = mode.warmupIterations
    let seeds = mode.pick(full: 2000, quick: 200, smoke: 100)
    // Two tunings: "fast" (10 ms acceptable pause, 1 ms minimum deviation) and the scenario's
    // default (30 ms, 2 ms), which tolerates longer pauses of the partner.
    for (pause, deviation) in mode.isSmoke ? [(10, 1)] : [(10, 1), (30, 2)] {
        Benchmark(
            "detection in virtual time, 10 ms interval, pause \(pause) ms, deviation \(deviation) ms, \(seeds) crashes",
            configuration: .init(
                metrics: [detectionMicroseconds], maxDuration: .seconds(60), maxIterations: 1)
        ) { benchmark in
            let scenario = HeartbeatScenario(
                acceptablePause: .milliseconds(Int64(pause)), minimumDeviation: .milliseconds(Int64(deviation)))
            // Seeds whose standby never took over count as failures, not as missing samples.
            let times = await scenario.detectionTimes(seeds: 1...UInt64(seeds)).compactMap { $0 }.map(microseconds)
                .sorted()
            guard times.count == seeds else {
                fail(benchmark, "\(seeds - times.count) of \(seeds) crashes were never detected")
                return
            }
            for time in times.dropLast() { benchmark.measurement(detectionMicroseconds, time) }
            // The 99th percentile, recorded last so the smoke run can check it against the bound.
            let p99 = times[(times.count * 99 - 1) / 100]
            record(cost: Double(p99) / 1000, as: detectionMicroseconds, scale: 1000, ceiling: 35, in: benchmark)
        }
        if mode.isSmoke { continue }
        Benchmark(
            "false takeovers, 5% loss + 20 ms jitter, pause \(pause) ms, deviation \(deviation) ms, \(seeds) seeds x 3 s",
            configuration: .init(metrics: [falseTakeovers], maxDuration: .seconds(60), maxIterations: 1)
        ) { benchmark in
            let scenario = HeartbeatScenario(
                fault: .lossWithJitter, acceptablePause: .milliseconds(Int64(pause)),
                minimumDeviation: .milliseconds(Int64(deviation)))
            var failures = 0
            for seed in 1...UInt64(seeds) where !(await scenario.run(seed: seed).passed) { failures += 1 }
            benchmark.measurement(falseTakeovers, failures)
        }
    }

    Benchmark(
        "evaluator CPU cost per heartbeat (ceiling 10 µs: 0.3 % of a core at 300 heartbeats/s)",
        configuration: .init(
            metrics: [nanosecondsPerHeartbeat], maxDuration: .seconds(5),
            maxIterations: mode.isSmoke ? 1 : 20)
    ) { benchmark in
        let count = 100_000
        let paths: [PathID] = ["p1", "p2", "p3"]
        let configuration: HeartbeatConfiguration
        do {
            configuration = try HeartbeatScenario.configuration(priority: 1)
        } catch {
            fail(benchmark, "configuration refused: \(error)")
            return
        }
        var evaluator = HeartbeatEvaluator(configuration: configuration, at: .zero)
        let clock = ContinuousClock()
        let start = clock.now
        var now = Instant.zero
        for index in 0..<count {
            now = now + .microseconds(3333)
            let heartbeat = Heartbeat(state: .operating, priority: 2, pathsHearingReceiver: 3, sequence: UInt64(index))
            blackHole(evaluator.heartbeatReceived(heartbeat, on: paths[index % 3], at: now))
        }
        let evaluated = clock.now - start
        record(
            cost: Double(nanoseconds(evaluated)) / Double(count), as: nanosecondsPerHeartbeat, ceiling: 10_000,
            in: benchmark)
    }

    Benchmark(
        "authenticated heartbeat (seal, MAC check, decode, evaluate) vs plain (decode, evaluate)",
        configuration: .init(
            metrics: [authenticationCost], maxDuration: .seconds(5), maxIterations: mode.isSmoke ? 1 : 20)
    ) { benchmark in
        let count = 20_000
        let paths: [PathID] = ["p1", "p2", "p3"]
        guard let configuration = try? HeartbeatScenario.configuration(priority: 1),
            let key = try? MessageKey(id: 1, bytes: [UInt8](repeating: 7, count: 32))
        else {
            fail(benchmark, "setup failed")
            return
        }
        let keys = MessageKeys(sealing: key)
        func run(sealed: Bool) -> Duration? {
            var evaluator = HeartbeatEvaluator(configuration: configuration, at: .zero)
            var now = Instant.zero
            let clock = ContinuousClock()
            let start = clock.now
            for index in 0..<count {
                now = now + .microseconds(3333)
                var message = HeartbeatMessage.heartbeat(
                    Heartbeat(state: .operating, priority: 2, pathsHearingReceiver: 3, sequence: UInt64(index))
                ).message
                if sealed {
                    let envelope = Envelope(
                        from: "A", path: paths[index % 3],
                        message: AuthenticatedTransport.seal(
                            message, from: "A", to: "B", counter: UInt64(index), keys: keys))
                    guard let opened = AuthenticatedTransport.authenticContent(of: envelope, at: "B", keys: keys) else {
                        return nil
                    }
                    message = opened
                }
                guard case .heartbeat(let heartbeat)? = try? HeartbeatMessage(message) else { return nil }
                blackHole(evaluator.heartbeatReceived(heartbeat, on: paths[index % 3], at: now))
            }
            return clock.now - start
        }
        guard let plain = run(sealed: false), let sealed = run(sealed: true) else {
            fail(benchmark, "a heartbeat did not decode or authenticate")
            return
        }
        record(
            cost: Double(nanoseconds(sealed)) / Double(max(1, nanoseconds(plain))), as: authenticationCost, scale: 100,
            ceiling: 20, in: benchmark)
    }

    if mode.isSmoke { return }
    Benchmark(
        "detection over real UDP on 3 loopback paths, 10 ms interval, pause 10 ms, deviation 1 ms",
        configuration: .init(
            metrics: [detectionMicroseconds], maxDuration: .seconds(60), maxIterations: mode.isReduced ? 5 : 40)
    ) { benchmark in
        do {
            benchmark.measurement(detectionMicroseconds, microseconds(try await udpDetection()))
        } catch {
            fail(benchmark, "\(error)")
        }
    }
}

func udpDetection() async throws -> Duration {
    var logger = Logger(label: "bench")
    logger.logLevel = .error
    let paths: [PathID] = ["p1", "p2", "p3"]
    func transport(_ node: NodeID, _ firstHost: Int) async throws -> UDPTransport {
        var addresses: [PathID: SocketAddress] = [:]
        for (index, path) in paths.enumerated() {
            addresses[path] = try SocketAddress(ipAddress: "127.0.0.\(firstHost + index)", port: 0)
        }
        return try await UDPTransport.start(configuration: .init(localNode: node, paths: addresses), logger: logger)
    }
    let a = try await transport("A", 2)
    let b = try await transport("B", 5)
    for path in paths {
        if let address = b.localAddresses[path] { a.setPeer("B", path: path, address: address) }
        if let address = a.localAddresses[path] { b.setPeer("A", path: path, address: address) }
    }
    let serviceA = HeartbeatService(
        configuration: try HeartbeatScenario.configuration(
            priority: 2, acceptablePause: .milliseconds(10), minimumDeviation: .milliseconds(1)), partner: "B",
        transport: a, requirement: .insecure, logger: logger)
    let serviceB = HeartbeatService(
        configuration: try HeartbeatScenario.configuration(
            priority: 1, acceptablePause: .milliseconds(10), minimumDeviation: .milliseconds(1)), partner: "A",
        transport: b, requirement: .insecure, logger: logger)
    let runA = Task { try await serviceA.run() }
    let runB = Task { try await serviceB.run() }
    var transitions = serviceB.transitions.makeAsyncIterator()
    while let transition = await transitions.next(), transition.to != .standby {}
    // Let the detectors learn the steady inter-arrival times.
    try await Task.sleep(for: .milliseconds(300))
    let crash = ContinuousClock.now
    runA.cancel()
    await a.close()
    while let transition = await transitions.next(), transition.to != .operating {}
    let detection = ContinuousClock.now - crash
    runB.cancel()
    _ = try? await runA.value
    _ = try? await runB.value
    await b.close()
    return detection
}
