import Foundation
import Testing

@Suite("ftctl keysync: real SQLite files, real processes, SIGKILL")
struct KeySyncCommandTests {
    struct Difference: Decodable, Equatable {
        var onlyInFirst: Int
        var onlyInSecond: Int
        var differ: Int
    }

    /// A fresh directory under the temporary directory; the caller removes it.
    func scratchDirectory() throws -> URL {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent(
            "ftctl-keysync-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        return directory
    }

    func diff(_ a: String, _ b: String) throws -> Difference {
        let (status, output) = try runTool(["keysync", "diff", a, b, "--json"])
        try #require(status == 0, "diff failed: \(output)")
        let start = try #require(output.firstIndex(of: "{"), "no JSON in: \(output)")
        let json = output[start...]
        return try JSONDecoder().decode(Difference.self, from: Data(json.utf8))
    }

    @Test func aSyncKilledMidwayLeavesAStoreThatARetryCompletes() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let a = directory.appendingPathComponent("a.sqlite").path
        let b = directory.appendingPathComponent("b.sqlite").path
        #expect(try runTool(["keysync", "generate", a, "--keys", "5000", "--schema", "1"]).status == 0)
        #expect(
            try runTool(["keysync", "generate", b, "--keys", "5000", "--change", "0.3", "--schema", "2"]).status == 0)
        let before = try diff(a, b)
        #expect(before.differ > 1200 && before.differ < 1800)
        #expect(before.onlyInFirst == 0 && before.onlyInSecond == 0)

        let server = try EmbeddedProcess(
            directory: directory.path, name: "serve", arguments: ["keysync", "serve", a, "--listen", "127.0.0.1:0"],
            executable: "ftctl")
        defer { server.kill() }
        let line = try #require(server.waitForLine(containing: "listening on port"))
        let port = try #require(line.split(separator: " ")[3].split(separator: ":").first.flatMap { Int($0) })

        // A backup SIGKILLed in the middle of its sync (streaming: the difference is 30%).
        let first = try EmbeddedProcess(
            directory: directory.path, name: "sync-1",
            arguments: ["keysync", "sync", b, "--from", "127.0.0.1:\(port)", "--timeout", "1"], executable: "ftctl")
        usleep(150_000)  // let the sync get going before the kill: the kill's moment, not an assertion
        first.kill()
        first.process.waitUntilExit()
        // The file is a whole store: every record either the old or the active's.
        let between = try diff(a, b)
        #expect(between.differ <= before.differ)

        // The retry completes and the stores agree, whatever their versions.
        let (status, output) = try runTool(["keysync", "sync", b, "--from", "127.0.0.1:\(port)", "--timeout", "2"])
        #expect(status == 0, "\(output)")
        #expect(output.contains("synced"))
        #expect(try diff(a, b).differ == 0)
        #expect(try runTool(["keysync", "migrate", b, "--to", "3"]).status == 0)
        #expect(try diff(a, b).differ == 0)
    }

    /// What the sqlite3 shell prints for `sql` on `path` (another program reading the file).
    func query(_ path: String, _ sql: String) throws -> String {
        let process = Process()
        let output = Pipe()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/sqlite3")
        process.arguments = [path, sql]
        process.standardOutput = output
        try process.run()
        let data = output.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    @Test func aMigrationKilledMidwayLeavesAStoreThatReadsAndARerunFinishes() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let killed = directory.appendingPathComponent("killed.sqlite").path
        let whole = directory.appendingPathComponent("whole.sqlite").path
        for path in [killed, whole] {
            #expect(try runTool(["keysync", "generate", path, "--keys", "20000", "--schema", "1"]).status == 0)
        }
        #expect(try runTool(["keysync", "migrate", whole, "--to", "3"]).status == 0)

        // 200 transactions of 100 records; SIGKILL once the first has committed.
        let migration = try EmbeddedProcess(
            directory: directory.path, name: "migrate",
            arguments: ["keysync", "migrate", killed, "--to", "3", "--batch", "100"], executable: "ftctl")
        defer { migration.kill() }
        let deadline = ContinuousClock.now + .seconds(60)
        while try query(killed, "SELECT count(*) FROM nks_records WHERE version = 3") == "0",
            ContinuousClock.now < deadline
        {
            usleep(2_000)  // polling for a condition, not timing one
        }
        migration.kill()
        migration.process.waitUntilExit()
        // Killed between or inside transactions: every record is whole, at version 1 or 3, and
        // the store still says version 1 until the last batch.
        let versions = try query(killed, "SELECT version, count(*) FROM nks_records GROUP BY version ORDER BY version")
        try #require(versions.hasPrefix("1|") && versions.contains("\n3|"), "not midway: \(versions)")
        #expect(try query(killed, "SELECT count(*) FROM nks_records") == "20000")
        #expect(try query(killed, "SELECT value FROM nks_meta WHERE name = 'version'") == "1")
        // The half-migrated store reads and compares: the same records as the whole migration.
        #expect(try diff(killed, whole).differ == 0)
        // The rerun finishes from where the kill left it.
        let (status, output) = try runTool(["keysync", "migrate", killed, "--to", "3", "--batch", "100"])
        #expect(status == 0, "\(output)")
        #expect(try query(killed, "SELECT count(*) FROM nks_records WHERE version = 3") == "20000")
        #expect(try diff(killed, whole) == Difference(onlyInFirst: 0, onlyInSecond: 0, differ: 0))
        #expect(try query(killed, "SELECT value FROM nks_meta WHERE name = 'version'") == "3")
    }

    @Test func filesThatAreNotStoresAndBadAddressesAreRefusedByName() throws {
        let directory = try scratchDirectory()
        defer { try? FileManager.default.removeItem(at: directory) }
        let garbage = directory.appendingPathComponent("notes.sqlite").path
        try Data("not a database at all, just text".utf8).write(to: URL(fileURLWithPath: garbage))
        let store = directory.appendingPathComponent("s.sqlite").path
        #expect(try runTool(["keysync", "generate", store, "--keys", "10"]).status == 0)
        let (status, output) = try runTool(["keysync", "diff", store, garbage])
        #expect(status == 1)
        #expect(output.contains("notes.sqlite"))
        #expect(try runTool(["keysync", "diff", store, directory.path + "/missing.sqlite"]).status == 1)
        #expect(!FileManager.default.fileExists(atPath: directory.path + "/missing.sqlite"))
        #expect(try runTool(["keysync", "sync", store, "--from", "localhost"]).status == 64)
        #expect(try runTool(["keysync", "migrate", store, "--to", "9"]).status == 64)
        #expect(try runTool(["keysync", "generate", store, "--keys", "10"]).status == 1)
        #expect(try runTool(["keysync", "generate", directory.path + "/x.sqlite", "--change", "nan"]).status == 64)
    }
}
