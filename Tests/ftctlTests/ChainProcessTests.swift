import DaisyChain
import FaultToleranceCore
import FaultToleranceNIO
import Foundation
import Logging
import NIOCore
import Testing

/// Real processes on loopback TCP: a 4-element mirror chain of `ftctl chain element`s, this
/// test as the host, SIGKILL of a middle element during a write load.
///
/// Five processes with 200 ms heartbeats starve when every other suite runs beside them, so
/// this suite runs on its own in CI's real-process step (`FT_CHAIN_PROCESSES=1 swift test
/// --filter ChainProcessTests`), not in the parallel test step.
@Suite(
    .serialized,
    .enabled(
        if: ProcessInfo.processInfo.environment["FT_CHAIN_PROCESSES"] != nil,
        "runs alone in CI's real-process step; set FT_CHAIN_PROCESSES=1"))
struct ChainProcessTests {
    static let blockSize = 4096

    func stamp(_ write: Int, block: Int) -> ByteBuffer {
        var buffer = ByteBuffer()
        buffer.writeInteger(UInt64(write), endianness: .little)
        buffer.writeInteger(UInt64(block), endianness: .little)
        buffer.writeBytes((16..<Self.blockSize).map { UInt8(truncatingIfNeeded: write &* 131 &+ $0) })
        return buffer
    }

    @Test func aKilledMiddleElementLosesNoAcknowledgedWriteAndRejoinsByCatchUp() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("chain-\(UUID().uuidString)").path
        defer {
            _ = try? runTool(["chain", "down", "--dir", directory])
            try? FileManager.default.removeItem(atPath: directory)
        }
        let up = try runTool([
            "chain", "up", "--elements", "4", "--mode", "mirror", "--dir", directory, "--capacity-mib", "16",
            "--heartbeat-ms", "200",
        ])
        try #require(up.status == 0, "\(up.output)")
        var logger = Logger(label: "test")
        logger.logLevel = .error
        var peers: [NodeID: SocketAddress] = [:]
        let lines = try String(contentsOfFile: directory + "/chain.state", encoding: .utf8).split(separator: "\n")
        for line in lines.dropFirst() {
            let fields = line.split(separator: " ")
            peers[NodeID(String(fields[0])) ?? "e"] = try SocketAddress(
                ipAddress: "127.0.0.1", port: Int(fields[1]) ?? 0)
        }
        let transport = try await TCPTransport.start(
            configuration: .init(
                localNode: "host", bindAddress: try SocketAddress(ipAddress: "127.0.0.1", port: 0), peers: peers),
            logger: logger)
        let host = ChainHost(
            node: "host", elements: ["e0", "e1", "e2", "e3"], transport: transport,
            timing: ChainTiming(heartbeatInterval: .milliseconds(200)),
            address: "127.0.0.1:\(transport.localAddress.port ?? 0)", logger: logger)
        let service = Task { try await host.run() }
        defer { service.cancel() }
        try await host.open(timeout: .seconds(60))
        let blocks = host.capacity / Self.blockSize
        #expect(blocks == 4096)
        // A write load: each write is acknowledged (on every element) before the next.
        var acknowledged: [Int: Int] = [:]
        var generator = SystemRandomNumberGenerator()
        for write in 1...600 {
            if write == 200 {
                let killed = try runTool(["chain", "kill", "e1", "--dir", directory])
                #expect(killed.status == 0, "\(killed.output)")
            }
            if write == 400 {
                let restarted = try runTool(["chain", "restart", "e1", "--dir", directory])
                #expect(restarted.status == 0, "\(restarted.output)")
            }
            // Most writes in the first 64 blocks, so what e1 misses is a small part of the volume.
            let block = Int.random(in: 0..<64, using: &generator)
            try await host.write(stamp(write, block: block), at: block * Self.blockSize)
            acknowledged[block] = write
        }
        try await host.synchronize()
        // e1 rejoins: linked again, ready, at the tail.
        var rejoined = false
        for _ in 0..<600 {
            if let register = host.register, let member = register.member("e1"), member.linked,
                member.drive.state == .ready
            {
                rejoined = true
                break
            }
            try await Task.sleep(for: .milliseconds(50))  // another process's catch-up, polled
        }
        #expect(rejoined, "e1 did not rejoin: \(String(describing: host.register))")
        #expect(host.register?.linked.count == 4)
        // Every acknowledged write reads back, whichever element answers.
        for (block, write) in acknowledged.sorted(by: { $0.key < $1.key }) {
            let data = try await host.read(at: block * Self.blockSize, count: Self.blockSize)
            #expect(data == stamp(write, block: block), "block \(block)")
        }
        // e1's own drive holds every acknowledged block, and its catch-up copied a fraction.
        let status = try runTool(["chain", "status", "--dir", directory])
        let e1 = status.output.components(separatedBy: "element e1").dropFirst().first ?? ""
        let fills = e1.components(separatedBy: "fills-in ").dropFirst().first?.split(separator: " ").first.flatMap {
            Int($0)
        }
        #expect(fills != nil && fills! <= 64 * Self.blockSize * 2, "\(status.output)")
        let unitDirectory = directory + "/e1"
        let unitFile = try #require(
            try FileManager.default.contentsOfDirectory(atPath: unitDirectory).first { $0.hasSuffix(".ftu") })
        let handle = try #require(FileHandle(forReadingAtPath: unitDirectory + "/" + unitFile))
        for (block, write) in acknowledged {
            try handle.seek(toOffset: UInt64(ElementDrive.headerSize + block * Self.blockSize))
            let bytes = try #require(try handle.read(upToCount: 16))
            var buffer = ByteBuffer(bytes: bytes)
            #expect(buffer.readInteger(endianness: .little, as: UInt64.self) == UInt64(write), "e1 block \(block)")
        }
        await transport.close()
    }
}
