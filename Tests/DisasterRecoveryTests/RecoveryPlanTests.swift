import ElasticJournal
import FaultToleranceCore
import Foundation
import Testing

@testable import DisasterRecovery

/// Plans: the start order, what is refused, and the stored form.
@Suite struct RecoveryPlanTests {
    static func environment() -> ProtectedEnvironment {
        ProtectedEnvironment(
            name: "shop",
            volumes: [
                VolumeSpec(name: "db", journalVolume: 1, capacity: 1 << 30),
                VolumeSpec(name: "media", journalVolume: 2, capacity: 8 << 30, blockSize: 65536),
            ],
            workloads: [
                WorkloadSpec(
                    name: "web", command: ["/bin/web"], ports: [8080], dependsOn: ["api", "cache"]),
                WorkloadSpec(
                    name: "api", command: ["/bin/api", "--db", "/data/db"],
                    mounts: [
                        VolumeMount(volume: "db", path: "/data/db"), VolumeMount(volume: "media", path: "/media"),
                    ],
                    ports: [9000], environment: ["MODE": "recovered"], dependsOn: ["db-server"]),
                WorkloadSpec(name: "db-server", command: ["/bin/db"], mounts: [VolumeMount(volume: "db", path: "/db")]),
                WorkloadSpec(name: "cache", command: ["/bin/cache"]),
            ])
    }

    @Test func ordersTheWorkloadsInStages() throws {
        let plan = try RecoveryPlan.make(for: Self.environment(), point: .at(Instant(nanoseconds: 5_000)))
        #expect(plan.stages == [["cache", "db-server"], ["api"], ["web"]])
        #expect(plan.volumes(of: "api").map(\.name) == ["db", "media"])
    }

    @Test func refusesWhatCannotRunNamingIt() {
        func refusal(_ change: (inout ProtectedEnvironment) -> Void) -> String? {
            var environment = Self.environment()
            change(&environment)
            do {
                _ = try RecoveryPlan.make(for: environment)
                return nil
            } catch {
                return error.code == .invalidPlan ? error.detail : "code \(error.code)"
            }
        }
        #expect(refusal { $0.workloads[2].mounts[0].volume = "logs" }?.contains("mounts volume logs") == true)
        #expect(refusal { $0.workloads[3].dependsOn = ["web"] }?.contains("cache → web → cache") == true)
        #expect(refusal { $0.workloads[2].dependsOn = ["db-server"] }?.contains("db-server → db-server") == true)
        #expect(refusal { $0.workloads[0].dependsOn.append("ghost") }?.contains("depends on ghost") == true)
        #expect(refusal { $0.workloads[3].name = "web" }?.contains("two workloads named web") == true)
        #expect(refusal { $0.volumes[1].journalVolume = 1 }?.contains("journal volume 1") == true)
        #expect(refusal { $0.workloads[3].ports = [9000] }?.contains("port 9000") == true)
        #expect(refusal { $0.volumes[0].capacity = 0 }?.contains("0 bytes") == true)
        #expect(refusal { $0.volumes[0].blockSize = 1000 }?.contains("block size 1000") == true)
        #expect(refusal { $0.workloads[1].name = "../etc" }?.contains("workload name") == true)
        #expect(refusal { $0.workloads[1].mounts[0].path = "/data/../../etc" }?.contains("mounts at") == true)
        #expect(refusal { $0.workloads[1].command = [] }?.contains("no command") == true)
        #expect(refusal { $0.workloads = [] }?.contains("no workloads") == true)
    }

    @Test func theStoredFormRoundTripsAndRefusesDamageAndHandEdits() throws {
        let plan = try RecoveryPlan.make(for: Self.environment(), point: .at(Instant(nanoseconds: 77)), test: true)
        let bytes = plan.encoded()
        #expect(try RecoveryPlan.decode(bytes) == plan)
        let latest = try RecoveryPlan.make(for: Self.environment())
        #expect(try RecoveryPlan.decode(latest.encoded()).point == .latest)
        for index in stride(from: 0, to: bytes.count, by: 7) {
            var damaged = bytes
            damaged[index] ^= 0x40
            #expect(throws: RecoveryError.self) { try RecoveryPlan.decode(damaged) }
        }
        #expect(throws: RecoveryError.self) { try RecoveryPlan.decode(bytes.dropLast()) }
        #expect(throws: RecoveryError.self) { try RecoveryPlan.decode([UInt8]()) }
        // A body edited by hand with its checksum redone: the start order no longer matches.
        var edited = plan
        edited.stages = [["web"], ["api"], ["cache", "db-server"]]
        #expect { try RecoveryPlan.decode(edited.encoded()) } throws: { ($0 as? RecoveryError)?.code == .invalidPlan }
        // And one whose environment has since lost a volume its workloads mount.
        var broken = plan
        broken.environment.volumes.removeLast()
        #expect { try RecoveryPlan.decode(broken.encoded()) } throws: { ($0 as? RecoveryError)?.code == .invalidPlan }
    }
}

extension RecoveryPlanTests {
    /// Writes the fuzzer's seed corpus (FuzzTesting/Corpus/RecoveryFormats) when FT_WRITE_CORPUS
    /// names the directory: steer byte first, as FuzzRecoveryFormats reads it.
    @Test func theFuzzCorpusSeedsDecode() throws {
        let plan = try RecoveryPlan.make(for: Self.environment(), point: .at(Instant(nanoseconds: 1)))
        let header = LazyVolumeHeader(
            phase: .building, blockSize: 4096, identity: 3, capacity: 1 << 20, generation: 2, built: 17)
        var words = [UInt64](repeating: 0, count: 2 * LazyVolumeHeader.blocksPerBitmapSector / 64)
        words[70] = 0x8000_0000_0000_0001
        let sector = LazyVolumeHeader.encodeBitmapSector(index: 1, words: words)
        var decoded = [UInt64](repeating: 0, count: words.count)
        try LazyVolumeHeader.decodeBitmapSector(sector, index: 1, blocks: 2 * 4032, into: &decoded)
        #expect(decoded == words)
        #expect(try RecoveryPlan.decode(plan.encoded()) == plan)
        #expect(try LazyVolumeHeader.decode(header.encoded()) == header)
        var seeds: [(String, [UInt8])] = [
            ("plan", [0] + plan.encoded()), ("header", [1] + header.encoded()), ("bitmap-sector", [2] + sector),
        ]
        let record = JournalRecord(
            sequence: 7, time: Instant(nanoseconds: 9), volume: 1, offset: 512, bytes: [1, 2, 3])
        let messages: [(String, ShippingMessage)] = [
            ("hello", .hello(journal: 1, durableThrough: 6)), ("resume", .resume(journal: 1, from: 7)),
            ("records", .records(journal: 1, [record])), ("acknowledged", .acknowledged(journal: 1, through: 7)),
            ("unavailable", .unavailable(journal: 1, requested: 2, oldest: 5)),
        ]
        for (name, message) in messages {
            let encoded = message.encode()
            #expect(try ShippingMessage.decode(encoded) == message)
            seeds.append(("ship-" + name, [3, UInt8(encoded.type - 0x0801)] + encoded.bytes))
        }
        if let directory = ProcessInfo.processInfo.environment["FT_WRITE_CORPUS"] {
            for (name, bytes) in seeds { try Data(bytes).write(to: URL(fileURLWithPath: directory + "/" + name)) }
        }
    }
}
