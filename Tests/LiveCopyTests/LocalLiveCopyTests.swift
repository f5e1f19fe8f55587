import Foundation
import LiveCopy
import MetricsTestKit
import Testing

/// Writer threads that write 8-byte words at random places until stopped.
final class Writers: @unchecked Sendable {
    private let stopFlag = LockedBool()
    private let finished: [LockedBool]
    private let counts: [LockedCount]

    init(memory: TrackedMemory, threads: Int, seed: UInt64) {
        finished = (0..<threads).map { _ in LockedBool() }
        counts = (0..<threads).map { _ in LockedCount() }
        for index in 0..<threads {
            let done = finished[index]
            let count = counts[index]
            let stop = stopFlag
            Thread {
                var state = seed &+ UInt64(index) &* 0x9E37_79B9_7F4A_7C15
                var writes = 0
                while !stop.get() {
                    state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
                    let page = Int((state >> 33) % UInt64(memory.pageCount))
                    let word = Int((state >> 13) % UInt64(memory.pageSize / 8))
                    try? memory.storeWord(state, at: page * memory.pageSize + word * 8)
                    writes += 1
                    // A load, not a timing assertion; paced so writer threads never starve the
                    // rest of a 2-core machine running the other suites (under TSan too).
                    if writes % 16 == 0 { usleep(500) }
                }
                count.add(writes)
                done.set()
            }.start()
        }
    }

    /// Stops the writers and waits until every thread has left.
    func stop() async throws {
        stopFlag.set()
        let deadline = ContinuousClock.now + .seconds(120)
        while !finished.allSatisfy({ $0.get() }) {
            guard ContinuousClock.now < deadline else { throw CancellationError() }
            try await Task.sleep(for: .milliseconds(1))
        }
    }

    var writes: Int { counts.reduce(0) { $0 + $1.get() } }
}

final class LockedCount: @unchecked Sendable {
    private let lock = NSLock()
    private var value = 0
    func add(_ n: Int) { lock.withLock { value += n } }
    func get() -> Int { lock.withLock { value } }
}

func identical(_ memory: TrackedMemory, _ region: OfflineRegion) -> Bool {
    memory.withUnsafeBytes { source in region.withUnsafeBytes { copy in source.elementsEqual(copy) } }
}

@Suite(.serialized) struct LocalLiveCopyTests {
    /// Two writer threads run throughout: the copy converges, both sides are identical after
    /// the switchover and stay identical in duplicated mode.
    @Test func twoWriterThreadsThroughoutAndDuplicatedMode() async throws {
        let memory = try TrackedMemory(pageCount: 1024)
        for page in stride(from: 0, to: 1024, by: 3) { try memory.storeWord(UInt64(page), at: page * 4096) }
        let region = try OfflineRegion(pageCount: 1024)
        let writers = Writers(memory: memory, threads: 2, seed: 7)
        let metrics = TestMetrics()
        // A generous budget: under ThreadSanitizer the copy runs at a few MB/s.
        let copy = LiveCopy(
            source: memory, destination: LocalDestination(region: region),
            policy: .adaptive(downtimeBudget: .seconds(5)),
            metricsFactory: metrics)
        let events = Task {
            var all: [LiveCopyProgress] = []
            for await event in copy.progress { all.append(event) }
            return all
        }
        let report = try await copy.run()
        #expect(report.rounds.count >= 1)
        #expect(report.rounds[0].pages == 1024)
        #expect(report.pagesRecopied == 0)
        // Duplicated mode while the writers keep going.
        for _ in 0..<20 { try await Task.sleep(for: .milliseconds(5)) }
        try await writers.stop()
        #expect(writers.writes > 0)
        #expect(identical(memory, region))
        #expect(try await copy.verify() == 0)
        await copy.detach()
        // After detaching, writes no longer reach the copy.
        try memory.storeWord(0xDEAD, at: 0)
        #expect(!identical(memory, region))

        let progress = await events.value
        #expect(progress.contains { if case .switchedOver = $0 { true } else { false } })
        #expect(progress.contains { if case .verified(1024, 0) = $0 { true } else { false } })
        #expect(try metrics.expectCounter("ft_livecopy_rounds_total").totalValue == Int64(report.rounds.count))
        #expect(try metrics.expectTimer("ft_livecopy_pause_seconds").values.count == 1)
    }

    /// A page damaged on the offline side is found by the checksum pass and recopied.
    @Test func verificationRecopiesADamagedPage() async throws {
        let memory = try TrackedMemory(pageCount: 64, pageSize: 4096)
        for page in 0..<64 { try memory.storeWord(UInt64(page) + 1, at: page * 4096 + 8) }
        let region = try OfflineRegion(pageCount: 64, pageSize: 4096)
        let copy = LiveCopy(source: memory, destination: LocalDestination(region: region))
        _ = try await copy.run()
        try [0xFF, 0xEE].withUnsafeBytes { try region.write($0, at: 4096 * 17 + 100) }
        #expect(!identical(memory, region))
        #expect(try await copy.verify() == 1)
        #expect(identical(memory, region))
        await copy.detach()
    }

    /// Two threads hammering the same words in duplicated mode: the copy must end with the
    /// bytes memory ended with (write and mirror are one step per page; without that, the
    /// mirror could apply two racing writes in the other order).
    @Test func racingWritersToTheSameWordsStayIdenticalWhenDuplicated() async throws {
        let memory = try TrackedMemory(pageCount: 4, pageSize: 4096)
        let region = try OfflineRegion(pageCount: 4, pageSize: 4096)
        let copy = LiveCopy(source: memory, destination: LocalDestination(region: region))
        _ = try await copy.run()
        let done = (0..<2).map { _ in LockedBool() }
        let ready = LockedCount()
        for (index, flag) in done.enumerated() {
            Thread {
                // Start together, so the two really race.
                ready.add(1)
                while ready.get() < 2 {}
                for round in 0..<60_000 { try? memory.storeWord(UInt64(index << 32 | round), at: 0) }
                flag.set()
            }.start()
        }
        // Pause the writers again and again mid-race: every pause must find the copy equal.
        var differed = 0
        while !done.allSatisfy({ $0.get() }) {
            await memory.gate.pause()
            if try memory.read(at: 0, count: 8) != region.read(at: 0, count: 8) { differed += 1 }
            memory.gate.resume()
            await Task.yield()
        }
        #expect(differed == 0)
        #expect(identical(memory, region))
        await copy.detach()
    }

    @Test func geometryMismatchIsRefused() async throws {
        let memory = try TrackedMemory(pageCount: 64)
        let copy = LiveCopy(source: memory, destination: LocalDestination(region: try OfflineRegion(pageCount: 32)))
        await #expect(throws: LiveCopyError.self) { try await copy.run() }
        #expect(!memory.gate.isPaused)
    }
}

@Suite("ConvergencePolicy validation")
struct ConvergencePolicyValidationTests {
    @Test(
        "settings out of range are typed errors naming the setting, not traps or hangs",
        arguments: [
            ("downtimeBudget", ConvergencePolicy(strategy: .adaptive, downtimeBudget: .zero)),
            ("maximumRounds", ConvergencePolicy(strategy: .adaptive, maximumRounds: -1)),
            ("safetyMargin", ConvergencePolicy(strategy: .adaptive, safetyMargin: .nan)),
            ("safetyMargin", ConvergencePolicy(strategy: .adaptive, safetyMargin: 1)),
            ("triggerRatio", ConvergencePolicy(strategy: .qemu, triggerRatio: -.infinity)),
            ("fixedRounds", ConvergencePolicy(strategy: .fixedRounds(0))),
            (
                "throttling",
                ConvergencePolicy(strategy: .qemu, throttling: ConvergencePolicy.Throttling(initial: 50, maximum: 20))
            ),
        ])
    func rejected(_ setting: String, _ policy: ConvergencePolicy) {
        do {
            try policy.validate()
            Issue.record("\(setting) out of range was accepted")
        } catch {
            #expect(error.code == .invalidConfiguration)
            #expect("\(error)".contains(setting))
        }
    }

    @Test("the shipped policies validate")
    func shippedPoliciesValidate() throws {
        for policy in [ConvergencePolicy.adaptive(), .qemu, .fixedRounds(5), .stopAndCopy] { try policy.validate() }
    }
}
