// swift-tools-version:6.1
import Foundation
import PackageDescription

// libFuzzer targets for every decoder that reads bytes from a disk or a peer. Build with
//   swift build -c release --scratch-path .build-fuzz --sanitize=fuzzer --sanitize=address
// in its own package: sanitizer flags would otherwise reach plugin tools and break them.

// The root package is a path dependency named after its directory; read the name.
let rootPackage = URL(fileURLWithPath: Context.packageDirectory).deletingLastPathComponent().lastPathComponent

let package = Package(
    name: "swift-fault-tolerance-fuzzing",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(path: "../"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .target(
            name: "FuzzSupport",
            dependencies: [.product(name: "FaultToleranceCore", package: rootPackage)]
        ),
        .executableTarget(
            name: "FuzzFrameDecoder",
            dependencies: [
                "FuzzSupport",
                .product(name: "FaultToleranceCore", package: rootPackage),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "FuzzFrameAssembler",
            dependencies: [
                "FuzzSupport",
                .product(name: "FaultToleranceCore", package: rootPackage),
                .product(name: "FaultToleranceNIO", package: rootPackage),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "FuzzJournalRecords",
            dependencies: [
                .product(name: "ElasticJournal", package: rootPackage),
                .product(name: "FaultToleranceCore", package: rootPackage),
            ]
        ),
        .executableTarget(
            name: "FuzzGroupMessages",
            dependencies: [
                .product(name: "Checkpointing", package: rootPackage),
                .product(name: "FaultToleranceCore", package: rootPackage),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "FuzzCheckpoints",
            dependencies: [
                .product(name: "Checkpointing", package: rootPackage),
                .product(name: "LiveCopy", package: rootPackage),
                .product(name: "FaultToleranceCore", package: rootPackage),
            ]
        ),
        .executableTarget(
            name: "FuzzChainMessages",
            dependencies: [
                .product(name: "DaisyChain", package: rootPackage),
                .product(name: "FaultToleranceCore", package: rootPackage),
            ]
        ),
        .executableTarget(
            name: "FuzzFailoverMessages",
            dependencies: [
                .product(name: "Failover", package: rootPackage),
                .product(name: "FaultToleranceCore", package: rootPackage),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "FuzzKeySyncMessages",
            dependencies: [
                .product(name: "NameKeySync", package: rootPackage),
                .product(name: "FaultToleranceCore", package: rootPackage),
            ]
        ),
        .executableTarget(
            name: "FuzzLiveCopyMessages",
            dependencies: [
                .product(name: "LiveCopy", package: rootPackage),
                .product(name: "FaultToleranceCore", package: rootPackage),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "FuzzSealedMessages",
            dependencies: [
                .product(name: "FaultToleranceCore", package: rootPackage),
                .product(name: "NIOCore", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "FuzzHeartbeatMessages",
            dependencies: [
                .product(name: "HeartbeatQuorum", package: rootPackage),
                .product(name: "FaultToleranceCore", package: rootPackage),
            ]
        ),
        .executableTarget(
            name: "FuzzArrayMetadata",
            dependencies: [
                .product(name: "HotSpare", package: rootPackage),
                .product(name: "FaultToleranceCore", package: rootPackage),
            ]
        ),
        .executableTarget(
            name: "FuzzRecoveryFormats",
            dependencies: [
                .product(name: "DisasterRecovery", package: rootPackage),
                .product(name: "FaultToleranceCore", package: rootPackage),
            ]
        ),
        .executableTarget(
            name: "FuzzSmartReading",
            dependencies: [.product(name: "HotSpare", package: rootPackage)]
        ),
        .executableTarget(
            name: "FuzzInflate",
            dependencies: [.product(name: "FaultToleranceCore", package: rootPackage)]
        ),
    ]
)
