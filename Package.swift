// swift-tools-version:6.1
import PackageDescription

// Applied to every Swift target in one place, as swift-log does.
let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("InternalImportsByDefault"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

/// Dependencies only the TLS trait needs.
let tls: TargetDependencyCondition? = .when(traits: ["TLS"])

let package = Package(
    name: "swift-fault-tolerance",
    platforms: [.macOS(.v15)],
    products: [
        .library(name: "FaultTolerance", targets: ["FaultTolerance"]),
        .library(name: "FaultToleranceCore", targets: ["FaultToleranceCore"]),
        .library(name: "FaultToleranceNIO", targets: ["FaultToleranceNIO"]),
        .library(name: "DeterministicSimulation", targets: ["DeterministicSimulation"]),
        .library(name: "HeartbeatQuorum", targets: ["HeartbeatQuorum"]),
        .library(name: "HeartbeatSimulation", targets: ["HeartbeatSimulation"]),
        .library(name: "ElasticJournal", targets: ["ElasticJournal"]),
        .library(name: "ElasticJournalSimulation", targets: ["ElasticJournalSimulation"]),
        .library(name: "LiveCopy", targets: ["LiveCopy"]),
        .library(name: "LiveCopySimulation", targets: ["LiveCopySimulation"]),
        .library(name: "Checkpointing", targets: ["Checkpointing"]),
        .library(name: "CheckpointingSimulation", targets: ["CheckpointingSimulation"]),
        .library(name: "NameKeySync", targets: ["NameKeySync"]),
        .library(name: "NameKeySyncSimulation", targets: ["NameKeySyncSimulation"]),
        .library(name: "DaisyChain", targets: ["DaisyChain"]),
        .library(name: "DaisyChainSimulation", targets: ["DaisyChainSimulation"]),
        .library(name: "HotSpare", targets: ["HotSpare"]),
        .library(name: "HotSpareSimulation", targets: ["HotSpareSimulation"]),
        .library(name: "DisasterRecovery", targets: ["DisasterRecovery"]),
        .library(name: "DisasterRecoverySimulation", targets: ["DisasterRecoverySimulation"]),
        .library(name: "DisasterRecoverySite", targets: ["DisasterRecoverySite"]),
        .library(name: "Failover", targets: ["Failover"]),
        .library(name: "FaultToleranceEtcd", targets: ["FaultToleranceEtcd"]),
        .library(name: "FailoverSimulation", targets: ["FailoverSimulation"]),
        .library(name: "FaultToleranceAuthentication", targets: ["FaultToleranceAuthentication"]),
        // Not in the umbrella: a program that needs no TLS does not build BoringSSL for it.
        .library(name: "FaultToleranceTLS", targets: ["FaultToleranceTLS"]),
        .executable(name: "ftctl", targets: ["ftctl"]),
    ],
    traits: [
        .default(enabledTraits: ["TLS"]),
        // Off (`--disable-default-traits`), FaultToleranceTLS is empty and swift-nio-ssl and
        // swift-certificates are not built: CI's ThreadSanitizer build uses this not to build a
        // second BoringSSL under the sanitizer.
        .trait(name: "TLS", description: "Mutual TLS for TCPTransport (FaultToleranceTLS), on swift-nio-ssl"),
    ],
    dependencies: [
        // Minor version pinned: RetainingAllocator uses NIO's @_spi(CustomByteBufferAllocator),
        // which semantic versioning does not cover.
        .package(url: "https://github.com/apple/swift-nio.git", .upToNextMinor(from: "2.101.2")),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-collections.git", from: "1.6.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
    ],
    targets: [
        .systemLibrary(name: "CZlib", path: "Sources/CZlib"),
        .target(name: "CFaultToleranceShims"),
        .target(
            name: "FaultToleranceCore",
            dependencies: [
                "CZlib",
                "CFaultToleranceShims",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                // NIOThreadPool: BlockingIO, where runtimes run what blocks on a disk.
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "DequeModule", package: "swift-collections"),
            ]
        ),
        .target(
            name: "FaultToleranceNIO",
            dependencies: [
                "FaultToleranceCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "FaultToleranceAuthentication",
            dependencies: [
                "FaultToleranceCore",
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "FaultToleranceTLS",
            dependencies: [
                "FaultToleranceCore",
                "FaultToleranceNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio", condition: tls),
                .product(name: "NIOSSL", package: "swift-nio-ssl", condition: tls),
                .product(name: "X509", package: "swift-certificates", condition: tls),
                .product(name: "SwiftASN1", package: "swift-asn1", condition: tls),
                .product(name: "Crypto", package: "swift-crypto", condition: tls),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        .target(
            name: "DeterministicSimulation",
            dependencies: [
                "FaultToleranceCore",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .target(
            name: "HeartbeatQuorum",
            dependencies: [
                "FaultToleranceCore",
                "FaultToleranceNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The heartbeat scenario: the shipped services in virtual time.
        .target(
            name: "HeartbeatSimulation",
            dependencies: [
                "FaultToleranceCore",
                "FaultToleranceAuthentication",
                "DeterministicSimulation",
                "HeartbeatQuorum",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "ElasticJournal",
            dependencies: [
                "FaultToleranceCore",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "LiveCopy",
            dependencies: [
                "FaultToleranceCore",
                "CFaultToleranceShims",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "Checkpointing",
            dependencies: [
                "FaultToleranceCore",
                "CFaultToleranceShims",
                "LiveCopy",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // The checkpoint scenario: the shipped store and checkpointer on simulated disks.
        .target(
            name: "CheckpointingSimulation",
            dependencies: [
                "Checkpointing",
                "DeterministicSimulation",
                "FaultToleranceCore",
                "LiveCopy",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "NameKeySync",
            dependencies: [
                "FaultToleranceCore",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        .target(
            name: "HotSpare",
            dependencies: [
                "FaultToleranceCore",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                // NIOThreadPool: SpareController.run's polls, off the cooperative pool.
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // The hot-spare scenario: the shipped array and controller over simulated disks that
        // wear like flash, in virtual time.
        .target(
            name: "HotSpareSimulation",
            dependencies: [
                "HotSpare",
                "DeterministicSimulation",
                "FaultToleranceCore",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .target(
            name: "DisasterRecovery",
            dependencies: [
                "FaultToleranceCore",
                "ElasticJournal",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                // NIOThreadPool: VolumeRecovery's copies, off the cooperative pool.
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Metrics", package: "swift-metrics"),
            ]
        ),
        // A one-file FUSE filesystem (libfuse3, Debian's libfuse3-dev) that serves a StorageUnit.
        .target(
            name: "CFuseShim",
            linkerSettings: [.linkedLibrary("fuse3")]
        ),
        // The recovery site's real parts: lazy volumes as files on FUSE mounts, workloads in runc containers.
        .target(
            name: "DisasterRecoverySite",
            dependencies: [
                "CFuseShim",
                "DisasterRecovery",
                "FaultToleranceCore",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                // NIOThreadPool: runc calls and connection probes, off the cooperative pool.
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        // The disaster-recovery scenario: the shipped lazy volume over simulated disks, a workload
        // writing through it while the replica builds and the migration switches, in virtual time.
        .target(
            name: "DisasterRecoverySimulation",
            dependencies: [
                "DisasterRecovery",
                "DeterministicSimulation",
                "ElasticJournal",
                "FaultToleranceCore",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The name-key sync scenario: the shipped client session and server responder on a
        // simulated network, in virtual time.
        .target(
            name: "NameKeySyncSimulation",
            dependencies: [
                "NameKeySync",
                "DeterministicSimulation",
                "FaultToleranceCore",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "DaisyChain",
            dependencies: [
                "FaultToleranceCore",
                "HeartbeatQuorum",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // etcd through its v3 JSON gateway (HTTP/1.1 on SwiftNIO), and in memory for tests.
        .target(
            name: "FaultToleranceEtcd",
            dependencies: [
                "FaultToleranceCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .target(
            name: "Failover",
            dependencies: [
                "FaultToleranceCore",
                "FaultToleranceEtcd",
                "HeartbeatQuorum",
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // The failover scenario: the shipped servers, control server and clients on a simulated
        // network, in virtual time.
        .target(
            name: "FailoverSimulation",
            dependencies: [
                "Failover",
                "DeterministicSimulation",
                "FaultToleranceCore",
                "FaultToleranceEtcd",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The chain scenario: the shipped elements and host on a simulated network, in virtual time.
        .target(
            name: "DaisyChainSimulation",
            dependencies: [
                "DaisyChain",
                "DeterministicSimulation",
                "FaultToleranceCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "ElasticJournalSimulation",
            dependencies: [
                "FaultToleranceCore",
                "DeterministicSimulation",
                "ElasticJournal",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "LiveCopySimulation",
            dependencies: [
                "FaultToleranceCore",
                "DeterministicSimulation",
                "LiveCopy",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .target(
            name: "FaultTolerance",
            dependencies: [
                "FaultToleranceCore", "FaultToleranceNIO", "DeterministicSimulation", "HeartbeatQuorum",
                "HeartbeatSimulation",
                "ElasticJournal", "ElasticJournalSimulation",
                "LiveCopy", "LiveCopySimulation", "FaultToleranceAuthentication", "Checkpointing",
                "CheckpointingSimulation", "NameKeySync", "NameKeySyncSimulation", "DaisyChain",
                "DaisyChainSimulation", "Failover", "FailoverSimulation", "FaultToleranceEtcd", "HotSpare",
                "HotSpareSimulation", "DisasterRecovery", "DisasterRecoverySimulation",
            ]
        ),
        .executableTarget(
            name: "ftctl",
            dependencies: [
                "FaultTolerance",
                "DisasterRecoverySite",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .testTarget(
            name: "FaultToleranceCoreTests",
            dependencies: [
                "FaultToleranceCore", .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "FaultToleranceNIOTests",
            dependencies: [
                "FaultToleranceNIO",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "DeterministicSimulationTests",
            dependencies: ["DeterministicSimulation", .product(name: "NIOCore", package: "swift-nio")]
        ),
        .testTarget(
            name: "HeartbeatQuorumTests",
            dependencies: [
                "HeartbeatQuorum",
                "HeartbeatSimulation",
                "DeterministicSimulation",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "ElasticJournalTests",
            dependencies: [
                "ElasticJournal",
                "ElasticJournalSimulation",
                "DeterministicSimulation",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "LiveCopyTests",
            dependencies: [
                "LiveCopy",
                "LiveCopySimulation",
                "FaultToleranceNIO",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "CheckpointingTests",
            dependencies: [
                "Checkpointing", "CheckpointingSimulation", "DeterministicSimulation", "LiveCopy", "FaultToleranceCore",
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "HotSpareTests",
            dependencies: ["HotSpare", "HotSpareSimulation", "FaultToleranceCore", "DeterministicSimulation"],
            exclude: ["SmartSamples"]
        ),
        .testTarget(
            name: "DisasterRecoveryTests",
            dependencies: [
                "DisasterRecovery", "DisasterRecoverySimulation", "DisasterRecoverySite", "FaultToleranceCore",
                "DeterministicSimulation", "ElasticJournal",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "NameKeySyncTests",
            dependencies: [
                "NameKeySync", "NameKeySyncSimulation", "DeterministicSimulation", "FaultToleranceCore",
                "FaultToleranceNIO",
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        .testTarget(
            name: "DaisyChainTests",
            dependencies: [
                "DaisyChain", "DaisyChainSimulation", "DeterministicSimulation", "FaultToleranceCore",
                "FaultToleranceNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "FailoverTests",
            dependencies: [
                "Failover", "FailoverSimulation", "FaultToleranceCore", "FaultToleranceEtcd", "DeterministicSimulation",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(name: "FaultToleranceTests", dependencies: ["FaultTolerance"]),
        .testTarget(
            name: "FaultToleranceAuthenticationTests",
            dependencies: [
                "FaultToleranceAuthentication", "DeterministicSimulation", "HeartbeatQuorum", "HeartbeatSimulation",
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "FaultToleranceTLSTests",
            dependencies: [
                "FaultToleranceTLS", "FaultToleranceNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl", condition: tls),
                .product(name: "X509", package: "swift-certificates", condition: tls),
                .product(name: "SwiftASN1", package: "swift-asn1", condition: tls),
                .product(name: "Crypto", package: "swift-crypto", condition: tls),
                .product(name: "MetricsTestKit", package: "swift-metrics"),
            ]
        ),
        // An embedding example: one program, one demultiplexed transport, a ServiceGroup.
        .executableTarget(
            name: "EmbeddedNode",
            dependencies: [
                "FaultTolerance",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Examples/EmbeddedNode"
        ),
        // Runs the `ftctl` and `EmbeddedNode` that `swift test` builds beside the test bundle,
        // as a user would.
        .testTarget(
            name: "ftctlTests",
            dependencies: [
                "ElasticJournal", "DaisyChain", "FaultToleranceNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]),
    ]
)

for target in package.targets where target.type != .system && target.name != "CFaultToleranceShims" {
    target.swiftSettings = (target.swiftSettings ?? []) + swiftSettings
}
// Tests unoptimised in a release build (CI's, which runs them against the optimised library):
// the optimiser took 130 CPU-seconds here over the test modules, whose own code is thin.
for target in package.targets where target.type == .test {
    target.swiftSettings = (target.swiftSettings ?? []) + [.unsafeFlags(["-Onone"], .when(configuration: .release))]
}

// The benchmarks (Benchmarks/), only with FT_BENCHMARKS set, so that a program depending on this
// package never resolves package-benchmark: `FT_BENCHMARKS=1 swift package benchmark` runs them.
// In the same package as the tests and ftctl, one release build (`FT_BENCHMARKS=1 swift build
// -c release --build-tests`) makes all three: CI compiles the library in release once.
// Declared after the settings above: the benchmarks keep Swift's default imports.
if Context.environment["FT_BENCHMARKS"] != nil {
    let benchmark: Target.Dependency = .product(name: "Benchmark", package: "package-benchmark")
    let benchmarkPlugin: [Target.PluginUsage] = [.plugin(name: "BenchmarkPlugin", package: "package-benchmark")]
    package.dependencies.append(
        .package(url: "https://github.com/ordo-one/package-benchmark.git", from: "1.38.0", traits: ["MallocInterposer"])
    )
    package.targets += [
        .systemLibrary(name: "CZlibBenchmark", path: "Benchmarks/Sources/CZlibBenchmark"),
        // SQLite's C API (Debian's libsqlite3-dev): the journal's durable-append baseline.
        .systemLibrary(name: "CSQLiteBenchmark", path: "Benchmarks/Sources/CSQLiteBenchmark"),
        // The run modes (full, quick, CI's smoke run with ratio floors), the ratio metric and timing.
        .target(
            name: "BenchmarkSupport",
            dependencies: [
                benchmark,
                "FaultToleranceCore",
                "FaultToleranceNIO",
                "LiveCopy",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/Sources/BenchmarkSupport"
        ),
        .executableTarget(
            name: "ChecksumBenchmarks",
            dependencies: [
                "CZlibBenchmark",
                "BenchmarkSupport",
                benchmark,
                "FaultToleranceCore",
            ],
            path: "Benchmarks/Benchmarks/Checksum",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "StorageBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                benchmark,
                "FaultToleranceCore",
            ],
            path: "Benchmarks/Benchmarks/Storage",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "TransportBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                benchmark,
                "FaultToleranceCore",
                "FaultToleranceNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Benchmarks/Benchmarks/Transport",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "JournalBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                benchmark,
                "FaultToleranceCore",
                "ElasticJournal",
                "CSQLiteBenchmark",
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
            ],
            path: "Benchmarks/Benchmarks/Journal",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "HeartbeatBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                benchmark,
                "FaultToleranceCore",
                "FaultToleranceNIO",
                "HeartbeatQuorum",
                "HeartbeatSimulation",
                "FaultToleranceAuthentication",
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/Benchmarks/Heartbeat",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "CheckpointBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                "CZlibBenchmark",
                benchmark,
                "Checkpointing",
                "FaultToleranceCore",
                "LiveCopy",
            ],
            path: "Benchmarks/Benchmarks/Checkpoint",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "KeySyncBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                benchmark,
                "FaultToleranceCore",
                "FaultToleranceNIO",
                "NameKeySync",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Benchmarks/Benchmarks/KeySync",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "LiveCopyBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                benchmark,
                "FaultToleranceCore",
                "FaultToleranceNIO",
                "LiveCopy",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Benchmarks/Benchmarks/LiveCopy",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "FailoverBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                benchmark,
                "Failover",
                "FaultToleranceCore",
                "FaultToleranceNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/Benchmarks/Failover",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "ChainBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                benchmark,
                "DaisyChain",
                "FaultToleranceCore",
                "FaultToleranceNIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/Benchmarks/Chain",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "SpareBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                benchmark,
                "HotSpare",
                "FaultToleranceCore",
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Benchmarks/Benchmarks/Spare",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "RecoveryBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                benchmark,
                "DisasterRecovery",
                "ElasticJournal",
                "FaultToleranceCore",
                "FaultToleranceNIO",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/Benchmarks/Recovery",
            plugins: benchmarkPlugin
        ),
        .executableTarget(
            name: "TLSBenchmarks",
            dependencies: [
                "BenchmarkSupport",
                benchmark,
                "FaultToleranceCore",
                "FaultToleranceNIO",
                "FaultToleranceTLS",
            ],
            path: "Benchmarks/Benchmarks/TLS",
            plugins: benchmarkPlugin
        ),
    ]
}
