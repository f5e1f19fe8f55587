public import FaultToleranceCore

#if canImport(FoundationEssentials)
    public import FoundationEssentials
#else
    public import Foundation
#endif

/// A volume of a protected environment.
public struct VolumeSpec: Sendable, Hashable, Codable {
    /// The volume's name: 1 to 64 of `A–Z a–z 0–9 . _ -`, not starting with a dot.
    public var name: String
    /// The journal's volume number (`ElasticJournal`'s `VolumeID`) the volume's writes carry.
    public var journalVolume: UInt32
    /// The volume's size in bytes.
    public var capacity: Int
    /// Bytes per block of its lazy volume (a power of two from 512 to 1 MiB).
    public var blockSize: Int

    /// Creates a volume.
    public init(name: String, journalVolume: UInt32, capacity: Int, blockSize: Int = 4096) {
        self.name = name
        self.journalVolume = journalVolume
        self.capacity = capacity
        self.blockSize = blockSize
    }
}

/// Where a workload sees one of the environment's volumes.
public struct VolumeMount: Sendable, Hashable, Codable {
    /// The volume's name.
    public var volume: String
    /// The path inside the workload's root filesystem where the volume appears as a file.
    public var path: String

    /// Creates a mount.
    public init(volume: String, path: String) {
        self.volume = volume
        self.path = path
    }
}

/// A workload of a protected environment: what runs, on which volumes, after which others.
public struct WorkloadSpec: Sendable, Hashable, Codable {
    /// The workload's name (as a volume's name).
    public var name: String
    /// The command and its arguments, run inside the container.
    public var command: [String]
    /// The volumes it uses.
    public var mounts: [VolumeMount]
    /// The TCP ports it serves on (its first answered request marks it recovered).
    public var ports: [UInt16]
    /// Its environment variables.
    public var environment: [String: String]
    /// Workloads that must answer before this one starts.
    public var dependsOn: [String]

    /// Creates a workload.
    public init(
        name: String, command: [String], mounts: [VolumeMount] = [], ports: [UInt16] = [],
        environment: [String: String] = [:], dependsOn: [String] = []
    ) {
        self.name = name
        self.command = command
        self.mounts = mounts
        self.ports = ports
        self.environment = environment
        self.dependsOn = dependsOn
    }
}

/// What a disaster-recovery service protects: workloads and the volumes they write.
public struct ProtectedEnvironment: Sendable, Hashable, Codable {
    /// The environment's name.
    public var name: String
    /// Its volumes.
    public var volumes: [VolumeSpec]
    /// Its workloads.
    public var workloads: [WorkloadSpec]

    /// Creates an environment.
    public init(name: String, volumes: [VolumeSpec], workloads: [WorkloadSpec]) {
        self.name = name
        self.volumes = volumes
        self.workloads = workloads
    }
}

/// The instant a recovery brings the volumes to.
public enum RecoveryPoint: Sendable, Hashable, Codable, CustomStringConvertible {
    /// The newest write the recovery site holds.
    case latest
    /// The volumes as they were at this instant (within the recovery site's journal window).
    case at(Instant)

    /// "latest" or the instant.
    public var description: String {
        switch self {
        case .latest: "latest"
        case .at(let instant): "\(instant)"
        }
    }

    private enum CodingKeys: String, CodingKey {
        case atNanoseconds
    }

    /// Reads `{}` (latest) or `{"atNanoseconds": n}`.
    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        if let nanoseconds = try container.decodeIfPresent(Int64.self, forKey: .atNanoseconds) {
            self = .at(Instant(nanoseconds: nanoseconds))
        } else {
            self = .latest
        }
    }

    /// Writes `{}` (latest) or `{"atNanoseconds": n}`.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        if case .at(let instant) = self { try container.encode(instant.nanoseconds, forKey: .atNanoseconds) }
    }
}

/// How to recover a ``ProtectedEnvironment``: the point in time, and the order its workloads
/// start in, checked before anything runs.
///
/// A plan is made once (``make(for:point:test:)``), stored (``encoded()``), and validated again
/// whenever it is read (``decode(_:)``), so a plan edited by hand or damaged on disk is refused
/// with the reason instead of starting a workload on the wrong volume. A *test* plan recovers
/// into separate storage and touches nothing the protected site uses.
///
/// Stored form: magic `FTDRPLAN` (8 bytes), format version (UInt16, 1), reserved (UInt16, 0),
/// length of the body (UInt32), CRC32C of the body (UInt32), then the body: the plan as JSON.
public struct RecoveryPlan: Sendable, Hashable, Codable {
    /// The format version this code writes and reads.
    public static let version: UInt16 = 1
    /// The largest stored plan read.
    public static let maximumEncodedSize = 4 << 20
    /// The most workloads, and the most volumes, an environment may have.
    public static let maximumItems = 256
    /// The largest volume (1 TiB).
    public static let maximumVolumeBytes = 1 << 40
    static let magic: UInt64 = 0x4E41_4C50_5244_5446  // "FTDRPLAN" little-endian
    static let headerSize = 20

    /// The environment recovered.
    public var environment: ProtectedEnvironment
    /// The point in time.
    public var point: RecoveryPoint
    /// Whether this is a test failover.
    public var test: Bool
    /// The start order: every workload of a stage starts once every workload of the stages
    /// before it answers; names sorted within a stage.
    public var stages: [[String]]

    /// Checks `environment` and orders its workloads. Throws ``RecoveryError/Code/invalidPlan``
    /// naming the first problem: a duplicate or malformed name, a mount of a missing volume, a
    /// dependency on a missing workload, a cycle in the start order (named in full), a port
    /// served twice, a volume of no bytes.
    public static func make(
        for environment: ProtectedEnvironment, point: RecoveryPoint = .latest, test: Bool = false
    ) throws(RecoveryError) -> RecoveryPlan {
        let stages = try order(environment)
        return RecoveryPlan(environment: environment, point: point, test: test, stages: stages)
    }

    private init(environment: ProtectedEnvironment, point: RecoveryPoint, test: Bool, stages: [[String]]) {
        self.environment = environment
        self.point = point
        self.test = test
        self.stages = stages
    }

    /// The volumes `workload` mounts, in mount order.
    public func volumes(of workload: String) -> [VolumeSpec] {
        guard let spec = environment.workloads.first(where: { $0.name == workload }) else { return [] }
        return spec.mounts.compactMap { mount in environment.volumes.first { $0.name == mount.volume } }
    }

    static func invalid(_ detail: String) -> RecoveryError { RecoveryError(.invalidPlan, detail) }

    package static func checkName(_ name: String, _ what: String) throws(RecoveryError) {
        let allowed = name.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || byte == 0x2E || byte == 0x5F || byte == 0x2D
        }
        guard !name.isEmpty, name.utf8.count <= 64, allowed, !name.hasPrefix(".") else {
            throw invalid(
                "\(what) name \(name.debugDescription): 1 to 64 of A-Z a-z 0-9 . _ -, not starting with a dot")
        }
    }

    /// Validates the environment and returns its start stages (Kahn's algorithm).
    static func order(_ environment: ProtectedEnvironment) throws(RecoveryError) -> [[String]] {
        try checkName(environment.name, "environment")
        guard !environment.workloads.isEmpty else { throw invalid("the environment has no workloads") }
        guard environment.workloads.count <= maximumItems, environment.volumes.count <= maximumItems else {
            throw invalid("more than \(maximumItems) workloads or volumes")
        }
        var volumes: Set<String> = []
        var journalVolumes: Set<UInt32> = []
        for volume in environment.volumes {
            try checkName(volume.name, "volume")
            guard volumes.insert(volume.name).inserted else { throw invalid("two volumes named \(volume.name)") }
            guard journalVolumes.insert(volume.journalVolume).inserted else {
                throw invalid("two volumes carry journal volume \(volume.journalVolume)")
            }
            guard volume.capacity > 0, volume.capacity <= maximumVolumeBytes else {
                throw invalid("volume \(volume.name) of \(volume.capacity) bytes (1 byte to 1 TiB)")
            }
            guard volume.blockSize >= 512, volume.blockSize <= 1 << 20, volume.blockSize.nonzeroBitCount == 1 else {
                throw invalid("volume \(volume.name): block size \(volume.blockSize), a power of two from 512 to 1 MiB")
            }
        }
        var names: Set<String> = []
        var ports: [UInt16: String] = [:]
        for workload in environment.workloads {
            try checkName(workload.name, "workload")
            guard names.insert(workload.name).inserted else { throw invalid("two workloads named \(workload.name)") }
            guard !workload.command.isEmpty, !(workload.command.first ?? "").isEmpty else {
                throw invalid("workload \(workload.name) has no command")
            }
            var paths: Set<String> = []
            for mount in workload.mounts {
                guard volumes.contains(mount.volume) else {
                    throw invalid(
                        "workload \(workload.name) mounts volume \(mount.volume), which the environment lacks")
                }
                guard mount.path.hasPrefix("/"), !mount.path.split(separator: "/").contains(".."),
                    paths.insert(mount.path).inserted
                else {
                    throw invalid(
                        "workload \(workload.name) mounts at \(mount.path.debugDescription): an absolute path without '..', once"
                    )
                }
            }
            for port in workload.ports {
                guard port > 0 else { throw invalid("workload \(workload.name) serves on port 0") }
                if let other = ports.updateValue(workload.name, forKey: port) {
                    throw invalid("port \(port) is served by both \(other) and \(workload.name)")
                }
            }
        }
        for workload in environment.workloads {
            for dependency in workload.dependsOn where !names.contains(dependency) {
                throw invalid("workload \(workload.name) depends on \(dependency), which the environment lacks")
            }
        }
        var remaining = Dictionary(
            environment.workloads.map { ($0.name, Set($0.dependsOn)) }, uniquingKeysWith: { a, _ in a })
        var stages: [[String]] = []
        while !remaining.isEmpty {
            let ready = remaining.filter { $0.value.isEmpty }.map(\.key).sorted()
            guard !ready.isEmpty else { throw invalid("the start order has a cycle: \(cycle(in: remaining))") }
            stages.append(ready)
            for name in ready { remaining[name] = nil }
            for name in remaining.keys { remaining[name]?.subtract(ready) }
        }
        return stages
    }

    /// One cycle among `waiting` (every workload there waits on another there), as "a → b → a".
    static func cycle(in waiting: [String: Set<String>]) -> String {
        guard var current = waiting.keys.sorted().first else { return "" }
        var path: [String] = []
        var seen: [String: Int] = [:]
        while seen[current] == nil {
            seen[current] = path.count
            path.append(current)
            guard let next = waiting[current]?.sorted().first else { break }
            current = next
        }
        let start = seen[current] ?? 0
        return (path[start...] + [current]).joined(separator: " → ")
    }

    /// The stored form.
    public func encoded() -> [UInt8] {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys]
        let body = (try? encoder.encode(self)).map { [UInt8]($0) } ?? []
        var bytes: [UInt8] = []
        bytes.appendLE(Self.magic)
        bytes.appendLE(Self.version)
        bytes.appendLE(UInt16(0))
        bytes.appendLE(UInt32(body.count))
        bytes.appendLE(CRC32C.checksum(body))
        return bytes + body
    }

    /// Reads a stored plan and validates it again. Throws ``RecoveryError`` for bytes that are
    /// not a plan this code wrote (``RecoveryError/Code/checksumMismatch`` for damage) and
    /// ``RecoveryError/Code/invalidPlan`` for a plan that does not hold together.
    public static func decode(_ bytes: some Collection<UInt8>) throws(RecoveryError) -> RecoveryPlan {
        guard bytes.count <= headerSize + maximumEncodedSize else {
            throw RecoveryError(.invalidField, "a stored plan of \(bytes.count) bytes (at most \(maximumEncodedSize))")
        }
        let bytes = Array(bytes)
        guard bytes.count >= headerSize else {
            throw RecoveryError(.truncated, "a stored plan of \(bytes.count) bytes")
        }
        guard bytes.loadLE(UInt64.self, at: 0) == magic else {
            throw RecoveryError(.notRecoveryData, "not a recovery plan")
        }
        let version = bytes.loadLE(UInt16.self, at: 8)
        guard version == Self.version else { throw RecoveryError(.unsupportedVersion, "plan version \(version)") }
        let length = Int(bytes.loadLE(UInt32.self, at: 12))
        guard bytes.count - headerSize == length else {
            throw RecoveryError(.truncated, "the plan says \(length) bytes of body, \(bytes.count - headerSize) follow")
        }
        let body = bytes[headerSize...]
        guard bytes.loadLE(UInt32.self, at: 16) == CRC32C.checksum(body) else {
            throw RecoveryError(.checksumMismatch, "the plan's body")
        }
        let plan: RecoveryPlan
        do {
            plan = try JSONDecoder().decode(RecoveryPlan.self, from: Data(body))
        } catch {
            throw RecoveryError(.invalidField, "the plan's body: \(error)")
        }
        let stages = try order(plan.environment)
        guard stages == plan.stages else {
            throw invalid("the stored start order \(plan.stages) is not the environment's \(stages)")
        }
        return plan
    }
}
