import FaultToleranceCore
import NIOCore
import Testing

@Suite("InMemoryTransport")
struct InMemoryTransportTests {
    @Test("delivers in order and drops on cut links")
    func deliverAndCut() async throws {
        let network = InMemoryNetwork()
        let a = network.join("a")
        let b = network.join("b")
        for index in 0..<5 { try await a.send(Message(type: 1, bytes: [UInt8(index)]), to: "b") }
        network.cut(from: "a", to: "b")
        try await a.send(Message(type: 1, bytes: [99]), to: "b")
        network.heal()
        try await a.send(Message(type: 1, bytes: [5]), to: "b", over: "p1")
        await b.close()
        var received: [UInt8] = []
        for await envelope in b.incoming {
            #expect(envelope.from == "a")
            received.append(contentsOf: envelope.message.payload.readableBytesView)
        }
        #expect(received == [0, 1, 2, 3, 4, 5])
        #expect(network.counts.dropped == 1)
        await #expect(throws: TransportError.self) { try await a.send(Message(type: 1, bytes: []), to: "nobody") }
        await #expect(throws: TransportError.self) { try await a.send(Message(type: 0xFF01, bytes: []), to: "a") }
    }
}
