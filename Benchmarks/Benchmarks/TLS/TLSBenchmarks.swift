import Benchmark
import BenchmarkSupport
import FaultToleranceCore
import FaultToleranceNIO
import FaultToleranceTLS
import Foundation

// What mutual TLS (FaultToleranceTLS: TLS 1.3, certificates from a NodeCertificateAuthority)
// costs, each case against the same work in plain TCP in the same run; the ratio is plain /
// TLS throughput (0.5x: TLS moves half as much). Handshakes are inside each run, as a
// reconnecting sender pays them.
//   TCPTransport: 20,000 x 1 KiB and 400 x 1 MiB messages (2,000 and 50 in the smoke run).
//   Live copy: round one of a 64 MiB region of nonzero pages (16 MiB quick and smoke).
// Not in CI's smoke run: building it would compile swift-nio-ssl's BoringSSL in release a
// second time there. Run it with `swift package benchmark --target TLSBenchmarks`, or
// `FT_BENCH_SMOKE=1 .build/release/TLSBenchmarks` after `swift build -c release`.

let mode = BenchmarkMode.current

/// The benchmark's certificates could not be made.
struct CredentialsUnavailable: Error {}

/// Both ends secured with certificates for `sender` and `receiver` from one new authority.
func mutualTLS(sender: NodeID, receiver: NodeID) throws -> LoopbackSecurity {
    guard let authority = try? NodeCertificateAuthority(name: "benchmark") else { throw CredentialsUnavailable() }
    return LoopbackSecurity(
        sender: .secured(by: try authority.mutualTLS(for: [sender.name])),
        receiver: .secured(by: try authority.mutualTLS(for: [receiver.name])))
}

/// Times `secured` and `plain` in alternating order and records plain / secured.
func compare(
    _ benchmark: Benchmark, secured: () async throws -> Double, plain: () async throws -> Double
) async throws {
    var securedSeconds = 0.0
    var plainSeconds = 0.0
    if benchmark.currentIteration % 2 == 0 {
        securedSeconds = try await secured()
        plainSeconds = try await plain()
    } else {
        plainSeconds = try await plain()
        securedSeconds = try await secured()
    }
    record(ratio: plainSeconds / securedSeconds, floor: 0.1, in: benchmark)
}

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration.warmupIterations = mode.warmupIterations
    let smallCount = mode.pick(full: 20_000, quick: 2_000, smoke: 2_000)
    let largeCount = mode.pick(full: 400, quick: 100, smoke: 50)
    for (size, count, label) in [(1 << 10, smallCount, "1 KiB"), (1 << 20, largeCount, "1 MiB")] {
        Benchmark(
            "TCPTransport over mutual TLS vs plain TCPTransport, \(count) x \(label) on loopback",
            configuration: .init(
                metrics: [throughputRatio], maxDuration: .seconds(mode.isReduced ? 3 : 15),
                maxIterations: mode.pick(full: 10, quick: 3, smoke: 1))
        ) { benchmark in
            do {
                let tls = try mutualTLS(sender: "a", receiver: "b")
                try await compare(
                    benchmark,
                    secured: {
                        try await seconds { try await transferOverTCP(count: count, size: size, security: tls) }
                    },
                    plain: { try await seconds { try await transferOverTCP(count: count, size: size) } })
            } catch {
                fail(benchmark, "TLS transport benchmark failed: \(error)")
            }
        }
    }

    let pages = mode.pick(full: 64, quick: 16, smoke: 16) * 256
    Benchmark(
        "live copy round one of \(pages / 256) MiB over mutual TLS vs over plain TCP, loopback",
        configuration: .init(
            metrics: [throughputRatio], maxDuration: .seconds(mode.isReduced ? 10 : 60),
            maxIterations: mode.pick(full: 10, quick: 3, smoke: 1))
    ) { benchmark in
        do {
            let memory = try filledMemory(pages: pages)
            let tls = try mutualTLS(sender: "online", receiver: "offline")
            try await compare(
                benchmark, secured: { try await remoteRoundOne(memory, security: tls) },
                plain: { try await remoteRoundOne(memory) })
        } catch {
            fail(benchmark, "live copy over TLS benchmark failed: \(error)")
        }
    }
}
