import ElasticJournal
import Foundation
import Testing

/// The embedding example (Examples/EmbeddedNode), run as a user would run it: two processes
/// on loopback, each a journal, a heartbeat service and live copy over one demultiplexed,
/// authenticated TCP transport in a ServiceGroup; both stopped with SIGTERM.
@Suite struct EmbeddedNodeTests {
    @Test func twoNodesRunAndStopCleanlyOnSIGTERM() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("embedded-\(UUID())").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let keyFile = directory + "/ha.keys"
        try "1 \(String(repeating: "5a", count: 32))\n".write(toFile: keyFile, atomically: true, encoding: .utf8)
        let (portA, portB) = (try freePort(), try freePort())

        let b = try EmbeddedProcess(
            directory: directory, name: "b",
            arguments: [
                "--name", "b", "--port", "\(portB)", "--partner", "a=\(portA)", "--priority", "1", "--journal",
                directory + "/b.journal", "--key-file", keyFile,
            ])
        let a = try EmbeddedProcess(
            directory: directory, name: "a",
            arguments: [
                "--name", "a", "--port", "\(portA)", "--partner", "b=\(portB)", "--priority", "2", "--journal",
                directory + "/a.journal", "--key-file", keyFile, "--copy-pages", "256",
            ])
        defer {
            a.kill()
            b.kill()
        }

        // Heartbeats flow both ways (over the same TCP connections as the copy), and the copy
        // arrives whole: the receiver's region has the source's checksum.
        let sent = try #require(a.waitForLine(containing: "live copy sent"), "a: \(a.output)")
        let received = try #require(b.waitForLine(containing: "live copy received"), "b: \(b.output)")
        #expect(sent.hasSuffix("source checksum \(received.split(separator: " ").last ?? "")"))
        #expect(a.waitForLine(containing: "-> operating") != nil, "a: \(a.output)")
        #expect(b.waitForLine(containing: "-> standby") != nil, "b: \(b.output)")

        for node in [a, b] {
            let status = node.terminate()
            #expect(status == 0, "\(node.name) exited \(String(describing: status)): \(node.output)")
            let summary = try #require(node.waitForLine(containing: "stopped; journal:"), "\(node.output)")
            // "NAME: stopped; journal: N appends acknowledged, durable sequence S, closed"
            let words = summary.split(separator: " ")
            let acknowledged = try #require(words.firstIndex(of: "appends").flatMap { Int(words[$0 - 1]) })
            let durable = try #require(words.firstIndex(of: "sequence").flatMap { UInt64(words[$0 + 1].dropLast()) })
            #expect(acknowledged > 0)
            #expect(durable >= UInt64(acknowledged))
            // Every acknowledged append is on disk, and the journal was closed, not cut short.
            let store = try JournalStore.open(
                directory: directory + "/\(node.name).journal", options: .init(readOnly: true))
            let journal = try #require(store.journal(1))
            #expect(journal.durableSequence == durable)
            #expect(
                !store.recentEvents.contains { if case .tornTailTruncated = $0 { true } else { false } },
                "\(store.recentEvents)")
        }
    }
}

/// A running EmbeddedNode or ftctl (built beside this test bundle), its output in a file.
final class EmbeddedProcess: Sendable {
    let name: String
    let process: Process
    let outputPath: String

    init(directory: String, name: String, arguments: [String], executable: String = "EmbeddedNode") throws {
        let tool = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
            .appendingPathComponent(executable)
        try #require(FileManager.default.isExecutableFile(atPath: tool.path), "no \(executable) at \(tool.path)")
        self.name = name
        outputPath = directory + "/\(name).out"
        FileManager.default.createFile(atPath: outputPath, contents: nil)
        let output = try FileHandle(forWritingTo: URL(fileURLWithPath: outputPath))
        process = Process()
        process.executableURL = tool
        process.arguments = arguments
        process.standardOutput = output
        process.standardError = output
        try process.run()
    }

    var output: String { (try? String(contentsOfFile: outputPath, encoding: .utf8)) ?? "" }

    /// The first output line containing `text`, waiting up to 60 s for it (the process is
    /// polled, not timed: a slow machine only waits longer).
    func waitForLine(containing text: String) -> String? {
        for _ in 0..<1200 {
            if let line = output.split(separator: "\n").first(where: { $0.contains(text) }) { return String(line) }
            if !process.isRunning {
                return output.split(separator: "\n").first(where: { $0.contains(text) }).map(String.init)
            }
            usleep(50_000)  // the other process's progress, polled from this test thread
        }
        return nil
    }

    /// Sends SIGTERM and returns the exit status, or `nil` (after SIGKILL) if the process has
    /// not exited within 30 s.
    func terminate() -> Int32? {
        process.terminate()
        for _ in 0..<600 where process.isRunning {
            usleep(50_000)  // waiting for the other process to exit, from this test thread
        }
        guard !process.isRunning else {
            kill()
            return nil
        }
        return process.terminationStatus
    }

    func kill() {
        if process.isRunning { Foundation.kill(process.processIdentifier, SIGKILL) }
    }
}

/// A loopback TCP port that was free a moment ago.
func freePort() throws -> Int {
    let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    try #require(descriptor >= 0)
    defer { close(descriptor) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    address.sin_port = 0
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let bound = withUnsafeMutablePointer(to: &address) { pointer in
        pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { socketAddress in
            bind(descriptor, socketAddress, length) == 0 && getsockname(descriptor, socketAddress, &length) == 0
        }
    }
    try #require(bound)
    return Int(UInt16(bigEndian: address.sin_port))
}
