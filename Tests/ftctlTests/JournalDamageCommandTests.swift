import Foundation
import Testing

/// The damage cases of a journal made by the tool, checked through the tool: each is reported
/// (exit 1, naming the unit and offset), nothing intact is deleted, and a second writer is
/// refused while the first holds the directory.
@Suite("ftctl journal: damage is never silent", .serialized)
struct JournalDamageCommandTests {
    /// A fresh journal of about 1,500 records in 256 KiB units; returns its directory.
    static func journal() throws -> String {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("ftctl-damage-\(UUID().uuidString)").path
        #expect(try runTool(["journal", "create", directory, "--unit-size", "262144"]).status == 0)
        #expect(try runTool(["journal", "stress", directory, "--count", "1500"]).status == 0)
        return directory
    }

    static func units(_ directory: String) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: directory + "/units").filter { $0.hasSuffix(".ftu") }
            .sorted().map { directory + "/units/" + $0 }
    }

    static func zero(_ path: String, at offset: UInt64, count: Int) throws {
        let handle = try #require(FileHandle(forUpdatingAtPath: path))
        try handle.seek(toOffset: offset)
        try handle.write(contentsOf: Data(count: count))
        try handle.close()
    }

    @Test("4 KiB zeroed in the middle of the active unit: inspect, verify, recover and a dry-run salvage exit 1")
    func zeroedActiveUnit() throws {
        let directory = try Self.journal()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let active = try #require(try Self.units(directory).last)
        try Self.zero(active, at: 16 << 10, count: 4096)
        for command in [["inspect"], ["verify"], ["recover", "--out", directory + ".img"], ["salvage", "--dry-run"]] {
            let (status, output) = try runTool(["journal", command[0], directory] + command.dropFirst())
            #expect(status == 1, "\(command): \(output)")
            #expect(output.contains("damaged") && output.contains("offset"), "\(command): \(output)")
        }
        // Salvage cuts it, keeps a copy in quarantine, and the journal verifies again.
        let (status, output) = try runTool(["journal", "salvage", directory])
        #expect(status == 0, "\(output)")
        #expect(output.contains("quarantined"))
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory + "/units/quarantine").count == 1)
        #expect(try runTool(["journal", "verify", directory]).status == 0)
    }

    @Test("the active unit deleted: verify exits 1 and names the missing unit")
    func deletedActiveUnit() throws {
        let directory = try Self.journal()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let units = try Self.units(directory)
        try #require(units.count >= 2)
        try FileManager.default.removeItem(atPath: try #require(units.last))
        let (status, output) = try runTool(["journal", "verify", directory])
        #expect(status == 1)
        #expect(output.contains("missing"), "\(output)")
    }

    @Test("a second writer is refused, naming the first one's process")
    func secondWriterRefused() throws {
        let directory = try Self.journal()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pipe = Pipe()
        let first = try launchTool(["journal", "stress", directory, "--count", "100000000"], output: pipe)
        defer {
            first.terminate()
            first.waitUntilExit()
        }
        // The first writer holds the lock once it acknowledges its first record.
        _ = pipe.fileHandleForReading.availableData
        let (status, output) = try runTool(["journal", "stress", directory, "--count", "10"])
        #expect(status == 1)
        #expect(output.contains("locked") && output.contains("process \(first.processIdentifier)"), "\(output)")
    }

    @Test("stress --count is how many records this run appends, whatever the journal already holds")
    func stressCountsRecords() throws {
        let directory = try Self.journal()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (status, output) = try runTool(["journal", "stress", directory, "--count", "25", "--concurrency", "8"])
        #expect(status == 0)
        let acknowledged = output.split(separator: "\n").compactMap { line in
            line.hasPrefix("ack ") ? Int(line.dropFirst(4)) : nil
        }
        #expect(acknowledged.sorted() == Array(1501...1525))
    }
}
