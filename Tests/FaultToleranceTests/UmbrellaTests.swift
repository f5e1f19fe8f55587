import FaultTolerance
import Testing

@Suite("FaultTolerance umbrella")
struct UmbrellaTests {
    @Test("one import reaches every module, and summaries merge as ftctl reports them")
    func summariesMerge() {
        let scenario = ReplicatedRegisterScenario(duration: .milliseconds(500))
        var whole = SimulationSummary(scenario: "register")
        var first = SimulationSummary(scenario: "register")
        var second = SimulationSummary(scenario: "register")
        for seed in UInt64(1)...6 {
            let report = scenario.run(seed: seed)
            whole.add(report)
            if seed % 2 == 0 { first.add(report) } else { second.add(report) }
        }
        first.merge(second)
        #expect(first == whole)
        #expect(whole.seeds == 6 && whole.passed == 6)
        #expect(whole.invariantChecks > 0)
        // Core types are visible through the umbrella too.
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
    }

    @Test("a heartbeat crosses an in-memory transport and decodes on the other side")
    func heartbeatOverTransport() async throws {
        let network = InMemoryNetwork()
        let a = network.join("a")
        let b = network.join("b")
        let heartbeat = Heartbeat(state: .operating, priority: 2, pathsHearingReceiver: 3, sequence: 41)
        try await a.send(HeartbeatMessage.heartbeat(heartbeat).message, to: "b", over: "p2")
        var incoming = b.incoming.makeAsyncIterator()
        let envelope = try #require(await incoming.next())
        #expect(envelope.path == "p2")
        #expect(try HeartbeatMessage(envelope.message) == .heartbeat(heartbeat))
    }

    @Test("a program importing only FaultTolerance runs TCP by host and port, without naming a NIO type")
    func transportWithoutNIO() async throws {
        let loopback = Endpoint(host: "127.0.0.1", port: 0)
        let a = try await TCPTransport.start(configuration: .init(localNode: "a", listeningOn: loopback))
        let b = try await TCPTransport.start(configuration: .init(localNode: "b", listeningOn: loopback))
        #expect(b.localEndpoint.port != 0)
        try a.setPeer("b", at: b.localEndpoint)
        try await a.send(Message(type: 7, bytes: [1, 2, 3]), to: "b")
        var incoming = b.incoming.makeAsyncIterator()
        let envelope = try #require(await incoming.next())
        #expect(envelope.from == "a" && envelope.message.type == 7 && envelope.message.bytes == [1, 2, 3])
        // Hosts are IP literals, checked before anything binds.
        #expect(throws: TransportError.self) {
            try TCPTransport.Configuration(localNode: "a", listeningOn: Endpoint(host: "example.com", port: 1))
        }
        #expect(throws: TransportError.self) {
            try TCPTransport.Configuration(localNode: "a", listeningOn: Endpoint(host: "127.0.0.1", port: 70000))
        }
        await a.close()
        await b.close()
    }
}
