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
        // Core and NIO types are visible through the umbrella too.
        #expect(CRC32C.checksum(Array("123456789".utf8)) == 0xE306_9283)
        #expect(TCPTransport.Configuration.self != UDPTransport.Configuration.self)
    }
}
