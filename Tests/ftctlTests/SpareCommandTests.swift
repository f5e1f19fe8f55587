import Foundation
import Testing

/// `ftctl spare` on file-backed members: create, status (read-only, also as JSON), migrate
/// (with its refusals), a foreign unit named, and the crash test's SIGKILLed child.
@Suite("ftctl spare: arrays of member files", .serialized)
struct SpareCommandTests {
    @Test("create, status, migrate a member with live data, status again; refusals name what is wrong")
    func createStatusMigrate() throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("ftctl-spare-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let created = try runTool(["spare", "create", directory, "--megabytes", "4", "--fill", "50"])
        #expect(created.status == 0 && created.output.contains("4 members and 1 spares"), "\(created.output)")
        let status = try runTool(["spare", "status", directory])
        #expect(status.status == 0 && status.output.contains("role 1: unit-2 ok"), "\(status.output)")
        #expect(status.output.contains("spare: unit-5") && status.output.contains("no migration"))

        let noMember = try runTool(["spare", "migrate", directory])
        #expect(noMember.status == 1 && noMember.output.contains("name the member"), "\(noMember.output)")
        let notInRole = try runTool(["spare", "migrate", directory, "--member", "5"])
        #expect(notInRole.status == 1 && notInRole.output.contains("unit-5 holds no role"), "\(notInRole.output)")

        let migrated = try runTool(["spare", "migrate", directory, "--member", "2"])
        #expect(migrated.status == 0, "\(migrated.output)")
        #expect(migrated.output.contains("unit-2 -> unit-5") && migrated.output.contains("erased and made a spare"))
        let after = try runTool(["spare", "status", directory, "--json"])
        #expect(after.status == 0, "\(after.output)")
        let object = try #require(
            try JSONSerialization.jsonObject(with: Data(after.output.utf8.drop { $0 != UInt8(ascii: "{") }))
                as? [String: Any])
        let roles = try #require(object["roles"] as? [[String: Any]]).compactMap { $0["member"] as? Int }
        #expect(roles == [1, 5, 3, 4])
        #expect(object["spares"] as? [Int] == [2])
        #expect((object["liveBytes"] as? Int ?? 0) > 0)
    }

    @Test("a unit from another array in the directory is refused by name")
    func foreignUnit() throws {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("ftctl-spare-\(UUID().uuidString)")
        defer { try? FileManager.default.removeItem(at: base) }
        let first = base.appendingPathComponent("a").path
        let second = base.appendingPathComponent("b").path
        #expect(try runTool(["spare", "create", first, "--megabytes", "2", "--members", "2"]).status == 0)
        #expect(try runTool(["spare", "create", second, "--megabytes", "2", "--members", "2"]).status == 0)
        // Swap in a member of the other array under the same file name.
        let name = "unit-0000000000000002.ftu"
        try FileManager.default.removeItem(atPath: first + "/" + name)
        try FileManager.default.copyItem(atPath: second + "/" + name, toPath: first + "/" + name)
        let status = try runTool(["spare", "status", first])
        #expect(status.status == 1 && status.output.contains("foreignUnit"), "\(status.output)")
        #expect(status.output.contains("unit-2"), "\(status.output)")
    }

    @Test("the crash test: a child SIGKILLed during migrations loses nothing acknowledged")
    func crashTest() throws {
        let result = try runTool(["spare", "crash-test", "--rounds", "4", "--maximum-delay", "300", "--megabytes", "4"])
        #expect(result.status == 0 && result.output.contains("crash test passed: 4 SIGKILLs"), "\(result.output)")
    }
}
