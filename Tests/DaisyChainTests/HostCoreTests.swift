import DaisyChain
import FaultToleranceCore
import NIOCore
import Testing

/// The host's state machine alone: registers in, effects out, time passed by hand.
@Suite struct HostCoreTests {
    let timing = ChainTiming(heartbeatInterval: .milliseconds(100))
    let formed = ChainRegister.forming(mode: .mirror, elements: ["e0", "e1"], capacity: 1 << 20)

    /// The register `formed` with only `linked` still linked, one generation on.
    func relinked(_ linked: Set<NodeID>, epoch: UInt64) -> ChainRegister {
        var register = formed
        register.generation = ChainGeneration(epoch: epoch, proposer: "e1")
        for index in register.members.indices {
            register.members[index].linked = linked.contains(register.members[index].node)
        }
        return register
    }

    func hear(_ register: ChainRegister, from node: NodeID, by host: HostCore, at now: Instant) -> [HostCore.Effect] {
        let message = ChainMessage.registers(register, applied: 0, reply: false).encode()
        return host.handle(Envelope(from: node, path: nil, message: message), now: now)
    }

    func writesSent(_ effects: [HostCore.Effect]) -> [(NodeID, UInt64)] {
        effects.compactMap { effect in
            guard case .send(.entry(_, _, .write(_, let version, _, _, _)), let target) = effect else { return nil }
            return (target, version)
        }
    }

    func failures(_ effects: [HostCore.Effect]) -> [ChainError] {
        effects.compactMap { effect in
            guard case .complete(_, .failure(let error)) = effect else { return nil }
            return error
        }
    }

    @Test("a mirror write waits while no element is linked and goes to the next head, with no gap in versions")
    func aWriteWaitsForAHead() {
        let host = HostCore(node: "host", epoch: 1, timing: timing)
        let start = Instant.zero
        _ = hear(formed, from: "e0", by: host, at: start)
        #expect(host.isOpen)
        _ = hear(relinked([], epoch: 2), from: "e0", by: host, at: start + .milliseconds(10))
        let (_, queued) = host.write(ByteBuffer(repeating: 1, count: 4096), at: 0, now: start + .milliseconds(20))
        #expect(writesSent(queued).isEmpty)
        #expect(failures(queued).isEmpty)
        // Well past the detection timeout, still waiting.
        let later = host.tick(now: start + timing.detectionTimeout * 3)
        #expect(failures(later).isEmpty)
        #expect(host.pendingWrites == 1)
        // e1 re-forms the chain: the write goes to it, as version 1.
        let resumed = hear(relinked(["e1"], epoch: 3), from: "e1", by: host, at: start + .seconds(1))
        #expect(writesSent(resumed).map(\.0) == ["e1"])
        #expect(writesSent(resumed).map(\.1) == [1])
    }

    @Test(
        "a mirror write with no linked element for the whole wait fails with a typed error, and still goes to the next head first"
    )
    func aWriteFailsAfterTheWait() {
        let host = HostCore(node: "host", epoch: 1, timing: timing)
        let start = Instant.zero
        _ = hear(formed, from: "e0", by: host, at: start)
        _ = hear(relinked([], epoch: 2), from: "e0", by: host, at: start)
        _ = host.write(ByteBuffer(repeating: 1, count: 4096), at: 0, now: start)
        let wait = timing.catchUpTimeout + timing.detectionTimeout * 4
        #expect(failures(host.tick(now: start + wait - .milliseconds(1))).isEmpty)
        let failed = failures(host.tick(now: start + wait))
        #expect(failed.map(\.code) == [.unavailable])
        // The failed write keeps its version: the next head gets it before the next write, so
        // it sees no gap in the versions (and leaves nothing to catch up on).
        #expect(host.pendingWrites == 1)
        _ = host.write(ByteBuffer(repeating: 2, count: 4096), at: 0, now: start + wait + .milliseconds(1))
        let resumed = hear(relinked(["e0"], epoch: 3), from: "e0", by: host, at: start + wait + .seconds(1))
        #expect(writesSent(resumed).map(\.1) == [1, 2])
        #expect(writesSent(resumed).allSatisfy { $0.0 == "e0" })
    }

    @Test("failed writes waiting for a head are bounded: past 256 MiB a new write fails at once, taking no version")
    func failedWritesWaitingAreBounded() {
        let host = HostCore(node: "host", epoch: 1, timing: timing)
        var register = ChainRegister.forming(mode: .mirror, elements: ["e0"], capacity: 8 << 20)
        let start = Instant.zero
        _ = hear(register, from: "e0", by: host, at: start)
        register.generation = ChainGeneration(epoch: 2, proposer: "e0")
        register.members[0].linked = false
        _ = hear(register, from: "e0", by: host, at: start)
        // 65 writes of 4 MiB (one buffer, shared): 260 MiB.
        let big = ByteBuffer(repeating: 1, count: 4 << 20)
        for _ in 0..<65 { _ = host.write(big, at: 0, now: start) }
        let wait = timing.catchUpTimeout + timing.detectionTimeout * 4
        #expect(failures(host.tick(now: start + wait)).count == 65)
        #expect(host.pendingWrites == 65)
        let (_, refused) = host.write(big, at: 0, now: start + wait)
        #expect(failures(refused).map(\.code) == [.unavailable])
        #expect(host.pendingWrites == 65)
        // A head returns: the 65 go to it as versions 1 to 65, no gap and nothing more.
        register.generation = ChainGeneration(epoch: 3, proposer: "e0")
        register.members[0].linked = true
        let resumed = hear(register, from: "e0", by: host, at: start + wait + .seconds(1))
        #expect(writesSent(resumed).map(\.1) == Array(1...65))
    }
}
