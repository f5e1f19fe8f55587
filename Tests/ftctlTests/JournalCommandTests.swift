import Foundation
import Testing

/// `ftctl journal` on a store of several journals: `create --journal` adds one beside the
/// others, `inspect` and `verify` show every journal (or the one `--journal` names), `stress`
/// and `recover` work on the one `--journal` names, and an unknown number is an error that
/// lists the journals there are.
@Suite("ftctl journal: every journal of a store", .serialized)
struct JournalCommandTests {
    @Test("two journals in one directory: create, stress, inspect, verify and recover each")
    func everyJournalOfAStore() throws {
        let directory = FileManager.default.temporaryDirectory
            .appendingPathComponent("ftctl-journals-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let create = ["journal", "create", directory, "--unit-size", "65536", "--volume-size", "8192", "--units", "32"]
        #expect(try runTool(create).status == 0)
        let added = try runTool(["journal", "create", directory, "--journal", "2", "--volumes", "2"])
        #expect(added.status == 0 && added.output.contains("now holds 2 journals"), "\(added.output)")
        // The pool's unit and volume sizes are the store's: a different one is refused.
        let refused = try runTool(["journal", "create", directory, "--journal", "3", "--volume-size", "4096"])
        #expect(refused.status == 1 && refused.output.contains("volumes of 8192 bytes"), "\(refused.output)")
        #expect(try runTool(["journal", "stress", directory, "--count", "30", "--size", "64"]).status == 0)
        #expect(
            try runTool(["journal", "stress", directory, "--journal", "2", "--count", "700", "--size", "200"]).status
                == 0)

        let inspect = try runTool(["journal", "inspect", directory])
        #expect(inspect.status == 0)
        #expect(inspect.output.contains("2 journal(s): 1, 2"), "\(inspect.output)")
        #expect(inspect.output.contains("journal-1:") && inspect.output.contains("records       1...30"))
        #expect(inspect.output.contains("journal-2:") && inspect.output.contains("records       1...700"))
        let one = try runTool(["journal", "inspect", directory, "--journal", "2"])
        #expect(one.status == 0 && one.output.contains("journal-2:") && !one.output.contains("journal-1:"))
        // 700 records of 200 bytes fill more than one 64 KiB unit: journal 2 rolled over.
        #expect(one.output.contains("sealed"), "\(one.output)")

        let verify = try runTool(["journal", "verify", directory])
        #expect(verify.status == 0)
        #expect(verify.output.contains("journal-1: OK") && verify.output.contains("30 records (1...30)"))
        #expect(verify.output.contains("journal-2: OK") && verify.output.contains("700 records (1...700)"))

        let image = directory + "-image"
        defer { try? FileManager.default.removeItem(atPath: image) }
        // Stress writes volume 1; each journal's image of it holds that journal's own writes.
        var images: [Data] = []
        for journal in ["1", "2"] {
            let recovered = try runTool(["journal", "recover", directory, "--journal", journal, "--out", image])
            #expect(
                recovered.status == 0 && recovered.output.contains("journal-\(journal) volume-1"), "\(recovered.output)"
            )
            images.append(try Data(contentsOf: URL(fileURLWithPath: image)))
        }
        #expect(images.allSatisfy { $0.count == 8192 && $0.contains { $0 != 0 } } && images[0] != images[1])
        let second = try runTool(["journal", "recover", directory, "--journal", "2", "--volume", "2", "--out", image])
        #expect(second.status == 0 && second.output.contains("journal-2 volume-2"), "\(second.output)")
        let noVolume = try runTool(["journal", "recover", directory, "--volume", "2", "--out", image])
        #expect(noVolume.status == 1 && noVolume.output.contains("unknownVolume"), "\(noVolume.output)")

        for command in ["inspect", "verify"] {
            let unknown = try runTool(["journal", command, directory, "--journal", "7"])
            #expect(unknown.status == 1 && unknown.output.contains("no journal 7 (it has 1, 2)"), "\(unknown.output)")
        }
    }
}
