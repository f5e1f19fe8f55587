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
}
