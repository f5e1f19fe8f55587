import ElasticJournal
import FaultToleranceCore
import Foundation
import Testing

/// `JournalStore.open(directory:)`: the journal directory layout in one call, without ftctl.
@Suite struct JournalDirectoryTests {
    @Test("a directory laid out as units/ and base/ opens in one call, its journal and records recovered")
    func opensALaidOutDirectory() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("ft-journal-dir-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let configuration = JournalConfiguration(window: .seconds(60), quota: 4, durability: .groupCommit)
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        do {
            let units = try FileStoragePool(
                directories: [JournalStore.Directory.units(in: root)], unitCapacity: 64 << 10, budget: 8 * (64 << 10))
            let bases = try FileStoragePool(
                directories: [JournalStore.Directory.base(in: root)],
                unitCapacity: JournalFormat.baseHeaderSize + (64 << 10), budget: 1 << 30)
            let store = try JournalStore(journalPool: units, basePool: bases)
            let journal = try store.createJournal(1, configuration: configuration, volumes: [1])
            for index in 0..<10 as Range<UInt64> {
                _ = try await journal.append(volume: 1, offset: index * 8, bytes: Array(repeating: 7, count: 8))
            }
            try store.close()
            units.close()
            bases.close()
        }
        let reopened = try JournalStore.open(directory: root, options: .init(readOnly: true))
        let journal = try #require(reopened.journal(1))
        #expect(journal.lastSequence == 10)
        try reopened.close()
    }

    @Test("a folder that is not a journal directory is a configuration error, not a crash or a new journal")
    func refusesOtherFolders() throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("ft-not-journal-\(UUID())").path
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: root) }
        do {
            _ = try JournalStore.open(directory: root)
            Issue.record("opened a folder with no pools")
        } catch {
            #expect(error.code == .invalidConfiguration)
        }
        #expect((try? FileManager.default.contentsOfDirectory(atPath: root))?.isEmpty == true, "nothing was created")
    }

    @Test("create builds the directory crash-safely and opens it; an occupied folder is refused and left alone")
    func createsADirectory() async throws {
        let parent = FileManager.default.temporaryDirectory.appendingPathComponent("ft-create-\(UUID())").path
        try FileManager.default.createDirectory(atPath: parent, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: parent) }
        // The staging folder of a create whose process is gone is cleared first.
        let stale = parent + "/.journal.creating-999999999"
        try FileManager.default.createDirectory(atPath: stale + "/units", withIntermediateDirectories: true)
        let configuration = JournalConfiguration(window: .seconds(60), quota: 4)
        let store = try JournalStore.create(
            directory: parent + "/journal", unitSize: 64 << 10, journalUnits: 8, volumes: [1, 2], volumeSize: 4096,
            configuration: configuration)
        let journal = try #require(store.journal(1))
        _ = try await journal.append(volume: 2, offset: 0, bytes: [1, 2, 3])
        try store.close()
        #expect(try FileManager.default.contentsOfDirectory(atPath: parent) == ["journal"])
        let reopened = try JournalStore.open(directory: parent + "/journal", options: .init(readOnly: true))
        #expect(reopened.journal(1)?.lastSequence == 1)
        #expect(reopened.journal(1)?.status.volumes.keys.sorted() == [1, 2])
        // Creating over it again is refused, and it is untouched.
        do {
            _ = try JournalStore.create(
                directory: parent + "/journal", unitSize: 64 << 10, journalUnits: 8, volumes: [1], volumeSize: 4096,
                configuration: configuration)
            Issue.record("created over an existing journal")
        } catch {
            #expect(error.code == .invalidConfiguration)
        }
        #expect(try JournalStore.open(directory: parent + "/journal").journal(1)?.lastSequence == 1)
    }

    @Test("as a Service, the store runs maintenance passes and closes every journal when it stops")
    func runsAsAService() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("ft-service-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        let store = try JournalStore.create(
            directory: root, unitSize: 64 << 10, journalUnits: 8, volumes: [1], volumeSize: 4096,
            configuration: JournalConfiguration(window: .seconds(60), quota: 4))
        let journal = try #require(store.journal(1))
        _ = try await journal.append(volume: 1, offset: 0, bytes: [9])
        let running = Task { try await store.run(maintenanceInterval: .milliseconds(5)) }
        // Let a few maintenance passes run (how many does not matter; none may fail).
        try await Task.sleep(for: .milliseconds(50))
        running.cancel()
        try await running.value
        // Closed by the service: an append now is refused as closed, and nothing was lost.
        await #expect(throws: JournalError.self) { try await journal.append(volume: 1, offset: 0, bytes: [1]) }
        #expect(try JournalStore.open(directory: root, options: .init(readOnly: true)).journal(1)?.lastSequence == 1)
    }

    @Test("status names each unit's file and whether it is sealed; the pool finds a unit by its id")
    func statusLocatesUnits() async throws {
        let root = FileManager.default.temporaryDirectory.appendingPathComponent("ft-status-\(UUID())").path
        defer { try? FileManager.default.removeItem(atPath: root) }
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
        let units = try FileStoragePool(
            directories: [JournalStore.Directory.units(in: root)], unitCapacity: 64 << 10, budget: 16 * (64 << 10))
        let bases = try FileStoragePool(
            directories: [JournalStore.Directory.base(in: root)], unitCapacity: JournalFormat.baseHeaderSize + 8192,
            budget: 1 << 30)
        let store = try JournalStore(journalPool: units, basePool: bases)
        let journal = try store.createJournal(
            1, configuration: JournalConfiguration(window: .seconds(60), quota: 8), volumes: [1])
        for _ in 0..<20 {
            _ = try await journal.append(volume: 1, offset: 0, bytes: [UInt8](repeating: 3, count: 8000))
        }
        // Closing writes the last rollover's seal if the background has not yet.
        try store.close()
        let status = journal.status.units
        #expect(status.count >= 3)
        #expect(status.dropLast().allSatisfy { $0.sealed })
        #expect(status.last?.sealed == false)
        for unit in status {
            let location = try #require(unit.location)
            #expect(FileManager.default.fileExists(atPath: location))
            #expect(units.unit(unit.unit)?.path == location)
        }
        #expect(units.unit(UnitID(999_999)) == nil)
        try store.close()
    }
}
