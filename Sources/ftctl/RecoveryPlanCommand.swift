import ArgumentParser
import DisasterRecovery
import FaultToleranceCore
import Foundation

/// `ftctl dr plan`: a recovery plan made from an environment, checked, stored; or a stored
/// plan read back and checked again.
struct RecoveryPlanCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "plan",
        abstract: "Make a recovery plan from a protected environment (JSON), or show a stored plan.",
        discussion: """
            --environment FILE reads an environment: its volumes (name, the journal volume that \
            carries it, capacity and block size in bytes) and its workloads (name, command, \
            mounts, ports, environment variables, the workloads each depends on). The plan checks \
            it (a mount of a missing volume, a dependency on a missing workload, a cycle in the \
            start order, named in full, a port served twice, are refused with exit 1) and orders \
            the workloads in stages: every workload of a stage starts once those of the stages \
            before it answer. --out writes the plan in its stored form (magic, format version, \
            CRC32C); --show reads one back, checking it again: a damaged or edited plan is refused.

            An environment:
            {"name": "shop",
             "volumes": [{"name": "db", "journalVolume": 1, "capacity": 1073741824, "blockSize": 4096}],
             "workloads": [
              {"name": "database", "command": ["/bin/db"], "mounts": [{"volume": "db", "path": "/data"}],
               "ports": [5432], "environment": {}, "dependsOn": []},
              {"name": "web", "command": ["/bin/web"], "mounts": [], "ports": [8080],
               "environment": {"DB": "127.0.0.1:5432"}, "dependsOn": ["database"]}]}
            """)

    @Option(help: "The protected environment to plan for, as JSON (see below).") var environment: String?
    @Option(help: "Read and check a stored plan instead.") var show: String?
    @Option(
        help: "The point to recover to: latest, seconds since 1970 (UTC), or an ISO 8601 time (2026-12-07T16:00:00Z)."
    )
    var at = "latest"
    @Flag(help: "A test failover: it recovers into storage of its own and touches nothing the protected site uses.")
    var test = false
    @Option(help: "Write the plan here, in its stored form.") var out: String?
    @Flag(help: "Print the plan as JSON.") var json = false

    func validate() throws {
        guard (environment == nil) != (show == nil) else {
            throw ValidationError("give --environment FILE to make a plan, or --show PLAN to read one")
        }
        if show != nil, out != nil || test || at != "latest" {
            throw ValidationError("--at, --test and --out make a plan; --show reads a stored one")
        }
        _ = try Self.point(at)
    }

    /// `latest`, seconds since 1970, or an ISO 8601 time, as a recovery point.
    static func point(_ text: String) throws -> RecoveryPoint {
        if text == "latest" { return .latest }
        let seconds: Double
        if let number = Double(text) {
            seconds = number
        } else if let date = ISO8601DateFormatter().date(from: text) {
            seconds = date.timeIntervalSince1970
        } else {
            throw ValidationError("--at \(text.debugDescription): latest, seconds since 1970, or an ISO 8601 time")
        }
        guard seconds.isFinite, seconds >= 0, seconds < 9e9 else {
            throw ValidationError("--at \(text.debugDescription): a time from 1970 to the year 2255")
        }
        return .at(Instant(nanoseconds: Int64(seconds * 1e9)))
    }

    func run() throws {
        let plan: RecoveryPlan
        if let show {
            do {
                plan = try RecoveryPlan.decode(try Self.contents(of: show))
            } catch let error as CommandFailure {
                throw error
            } catch {
                throw CommandFailure("\(show): \(error)")
            }
        } else if let environment {
            let parsed: ProtectedEnvironment
            do {
                parsed = try JSONDecoder().decode(
                    ProtectedEnvironment.self, from: Data(try Self.contents(of: environment)))
            } catch let error as CommandFailure {
                throw error
            } catch let error as DecodingError {
                throw CommandFailure("\(environment) is not an environment: \(Self.describe(error))")
            } catch {
                throw CommandFailure("\(environment) is not an environment: \(error)")
            }
            do {
                plan = try RecoveryPlan.make(for: parsed, point: try Self.point(at), test: test)
            } catch {
                throw CommandFailure("\(environment): \(error)")
            }
            if let out {
                do {
                    try Data(plan.encoded()).write(to: URL(fileURLWithPath: out), options: .atomic)
                } catch {
                    throw CommandFailure("the plan cannot be written to \(out): \(error.localizedDescription)")
                }
            }
        } else {
            throw CommandFailure("give --environment FILE or --show PLAN")
        }
        if json {
            let encoder = JSONEncoder()
            encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
            print(String(decoding: try encoder.encode(plan), as: UTF8.self))
            return
        }
        print(Self.describe(plan))
        if let out { print("written to \(out) (\(plan.encoded().count) bytes, checksummed)") }
    }

    /// A file's bytes, refused beyond the largest plan (an environment is smaller still).
    static func contents(of path: String) throws -> [UInt8] {
        guard let handle = FileHandle(forReadingAtPath: path) else { throw CommandFailure("\(path) cannot be read") }
        defer { try? handle.close() }
        let data: Data?
        do {
            data = try handle.read(upToCount: RecoveryPlan.maximumEncodedSize + 1)
        } catch {
            throw CommandFailure("\(path) cannot be read: \(error.localizedDescription)")
        }
        let bytes = [UInt8](data ?? Data())
        guard bytes.count <= RecoveryPlan.maximumEncodedSize else {
            throw CommandFailure("\(path) is larger than \(RecoveryPlan.maximumEncodedSize) bytes")
        }
        return bytes
    }

    /// A decoding error in a sentence: what is wrong and where (the JSON path).
    static func describe(_ error: DecodingError) -> String {
        func path(_ context: DecodingError.Context) -> String {
            let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
            return keys.isEmpty ? "the top level" : String(keys.drop { $0 == "." })
        }
        switch error {
        case .keyNotFound(let key, let context): return "\(path(context)): the key \"\(key.stringValue)\" is missing"
        case .typeMismatch(_, let context), .valueNotFound(_, let context), .dataCorrupted(let context):
            return "\(path(context)): \(context.debugDescription)"
        @unknown default: return "\(error)"
        }
    }

    /// The plan for people: point, stages, and each workload's volumes.
    static func describe(_ plan: RecoveryPlan) -> String {
        var lines = [
            "plan for \(plan.environment.name)\(plan.test ? " (test failover)" : ""): recover to \(plan.point), "
                + "\(plan.environment.workloads.count) workloads in \(plan.stages.count) stages, "
                + "\(plan.environment.volumes.count) volumes"
        ]
        for (index, stage) in plan.stages.enumerated() {
            lines.append("  stage \(index + 1):")
            for name in stage {
                let mounts = plan.volumes(of: name).map { "\($0.name) (\($0.capacity) bytes)" }
                lines.append("    \(name)" + (mounts.isEmpty ? "" : " mounts " + mounts.joined(separator: ", ")))
            }
        }
        return lines.joined(separator: "\n")
    }
}
