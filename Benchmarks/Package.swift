// swift-tools-version:6.1
import Foundation
import PackageDescription

// The root package is a path dependency; SwiftPM names it after its directory, which differs
// between checkouts (a CI clone, a developer's folder), so read the name instead of
// hard-coding it.
let rootPackage = URL(fileURLWithPath: Context.packageDirectory).deletingLastPathComponent().lastPathComponent

let benchmarkPlugin: [Target.PluginUsage] = [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]

let package = Package(
    name: "swift-fault-tolerance-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: "../"),
        .package(
            url: "https://github.com/ordo-one/package-benchmark.git", from: "1.38.0", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
    ],
    targets: [
        .systemLibrary(name: "CZlibBenchmark", path: "Sources/CZlibBenchmark"),
        // SQLite's C API (Debian's libsqlite3-dev): the journal's durable-append baseline.
        .systemLibrary(name: "CSQLiteBenchmark", path: "Sources/CSQLiteBenchmark"),
        // The run modes (full, quick, CI's smoke run with ratio floors), the ratio metric and timing.
        .target(
            name: "BenchmarkSupport",
            dependencies: [
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "FaultToleranceCore", package: rootPackage),
                .product(name: "FaultToleranceNIO", package: rootPackage),
                .product(name: "LiveCopy", package: rootPackage),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "ChecksumBenchmarks",
            dependencies: [
                "CZlibBenchmark",
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "FaultToleranceCore", package: rootPackage),
            ],
            path: "Benchmarks/Checksum",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "StorageBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "FaultToleranceCore", package: rootPackage),
            ],
            path: "Benchmarks/Storage",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "TransportBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "FaultToleranceCore", package: rootPackage),
                .product(name: "FaultToleranceNIO", package: rootPackage),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Benchmarks/Transport",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "JournalBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "FaultToleranceCore", package: rootPackage),
                .product(name: "ElasticJournal", package: rootPackage),
                "CSQLiteBenchmark",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Benchmarks/Journal",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "HeartbeatBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "FaultToleranceCore", package: rootPackage),
                .product(name: "FaultToleranceNIO", package: rootPackage),
                .product(name: "HeartbeatQuorum", package: rootPackage),
                .product(name: "HeartbeatSimulation", package: rootPackage),
                .product(name: "FaultToleranceAuthentication", package: rootPackage),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/Heartbeat",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "CheckpointBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                "CZlibBenchmark",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "Checkpointing", package: rootPackage),
                .product(name: "FaultToleranceCore", package: rootPackage),
                .product(name: "LiveCopy", package: rootPackage),
            ],
            path: "Benchmarks/Checkpoint",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "KeySyncBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "FaultToleranceCore", package: rootPackage),
                .product(name: "FaultToleranceNIO", package: rootPackage),
                .product(name: "NameKeySync", package: rootPackage),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Benchmarks/KeySync",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "LiveCopyBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "FaultToleranceCore", package: rootPackage),
                .product(name: "FaultToleranceNIO", package: rootPackage),
                .product(name: "LiveCopy", package: rootPackage),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Benchmarks/LiveCopy",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "FailoverBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "Failover", package: rootPackage),
                .product(name: "FaultToleranceCore", package: rootPackage),
                .product(name: "FaultToleranceNIO", package: rootPackage),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/Failover",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "ChainBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "DaisyChain", package: rootPackage),
                .product(name: "FaultToleranceCore", package: rootPackage),
                .product(name: "FaultToleranceNIO", package: rootPackage),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/Chain",
            plugins: benchmarkPlugin
        ),
    ]
)

// TLSBenchmarks would build swift-nio-ssl's BoringSSL in release (about 300 CPU-seconds here).
// CI sets FT_CI_WITHOUT_TLS_BENCHMARKS=1 and builds every other target in one command (each
// `swift build --product` spends about 10 s planning the whole graph again).
if Context.environment["FT_CI_WITHOUT_TLS_BENCHMARKS"] == nil {
    package.targets.append(
        .executableTarget(
            name: "TLSBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                .product(name: "Benchmark", package: "package-benchmark"),
                .product(name: "FaultToleranceCore", package: rootPackage),
                .product(name: "FaultToleranceNIO", package: rootPackage),
                .product(name: "FaultToleranceTLS", package: rootPackage),
            ],
            path: "Benchmarks/TLS",
            plugins: benchmarkPlugin
        )
    )
}
