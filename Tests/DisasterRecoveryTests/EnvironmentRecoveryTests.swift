import DisasterRecovery
import DisasterRecoverySite
import FaultToleranceCore
import Testing

/// ``EnvironmentRecovery`` refuses what it cannot run before it mounts or starts anything.
@Suite struct EnvironmentRecoveryTests {
    static let environment = ProtectedEnvironment(
        name: "shop", volumes: [VolumeSpec(name: "db", journalVolume: 1, capacity: 1 << 20)],
        workloads: [
            WorkloadSpec(
                name: "database", command: ["/bin/db"], mounts: [VolumeMount(volume: "db", path: "/data/db")],
                ports: [5432]),
            WorkloadSpec(name: "web", command: ["/bin/web"], ports: [8080], dependsOn: ["database"]),
        ])

    static func source(capacity: Int) throws -> any RecoveryPointSource {
        try ImageRecoveryPoint(unit: MemoryStorageUnit(id: UnitID(1), capacity: capacity))
    }

    func refusal(
        sources: [String: any RecoveryPointSource], prefix: String = "ft-dr", stepBlocks: Int = 64
    ) throws -> RecoveryError? {
        let plan = try RecoveryPlan.make(for: Self.environment)
        do {
            _ = try EnvironmentRecovery(
                plan: plan, sources: sources,
                configuration: .init(directory: "/nonexistent", containerPrefix: prefix, stepBlocks: stepBlocks))
            return nil
        } catch {
            return error
        }
    }

    @Test func aVolumeWithoutARecoveryPointIsRefusedByName() throws {
        let error = try #require(try refusal(sources: [:]))
        #expect(error.code == .invalidPlan && error.detail.contains("volume db"), "\(error)")
    }

    @Test func aRecoveryPointOfAnotherSizeIsRefused() throws {
        let error = try #require(try refusal(sources: ["db": try Self.source(capacity: 1 << 19)]))
        #expect(error.code == .invalidPlan && error.detail.contains("planned at 1048576 bytes"), "\(error)")
    }

    @Test func aContainerPrefixThatMakesNoNameAndAStepOfNoBlocksAreRefused() throws {
        let sources = ["db": try Self.source(capacity: 1 << 20)]
        let name = try #require(try refusal(sources: sources, prefix: "a/b"))
        #expect(name.code == .invalidPlan && name.detail.contains("container name"), "\(name)")
        let step = try #require(try refusal(sources: sources, stepBlocks: 0))
        #expect(step.code == .invalidField, "\(step)")
        #expect(try refusal(sources: sources) == nil)
    }

    @Test func migratingBeforeStartingSaysSo() async throws {
        let recovery = try EnvironmentRecovery(
            plan: try RecoveryPlan.make(for: Self.environment), sources: ["db": try Self.source(capacity: 1 << 20)],
            configuration: .init(directory: "/nonexistent"))
        await #expect(throws: RecoveryError.self) { try await recovery.migrate() }
        #expect(recovery.volumes.isEmpty && recovery.container(of: "database") == nil)
        recovery.stop()
    }
}
