import Checkpointing
import FaultToleranceCore
import NIOCore

// Feeds arbitrary bytes to the group checkpoint protocol's decoders. The first byte steers:
//   even: a message of type 0x0300 + (byte / 2) % 10 (0x0300-0x0309: the seven protocol types,
//     the channel's data type and two outside them) with the rest as its payload. A message
//     accepted must re-encode to one that decodes to the same message; a protocol message is
//     then handed to a coordinator and a member machine mid-epoch, which must not crash.
//   odd: the rest written over the two slots of a coordinator's record unit (the first half
//     at offset 0, the second at 4096); opening it must give a record or a CheckpointError.

/// libFuzzer's entry point: one input per call.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafeRawPointer, _ count: Int) -> CInt {
    let input = UnsafeRawBufferPointer(start: start, count: count)
    guard let first = input.first else { return 0 }
    let bytes = Array(input.dropFirst().prefix(4096))
    if first % 2 == 0 {
        let type = 0x0300 + UInt16((first / 2) % 10)
        if type == GroupChannelData.type {
            guard
                let (group, inner) = try? GroupChannelData.decode(
                    Message(type: type, payload: ByteBuffer(bytes: bytes)))
            else { return 0 }
            guard let again = try? GroupChannelData.decode(GroupChannelData.encode(inner, group: group)),
                again.group == group, again.message == inner
            else { fatalError("channel data does not survive re-encoding") }
            return 0
        }
        guard let (group, message) = try? GroupMessage.decode(Message(type: type, payload: ByteBuffer(bytes: bytes)))
        else { return 0 }
        guard let again = try? GroupMessage.decode(message.message(group: group)), again.group == group,
            again.message == message
        else { fatalError("\(message) does not survive re-encoding") }
        drive(message)
    } else {
        let unit = MemoryStorageUnit(id: UnitID(1), capacity: 8192)
        let half = bytes.count / 2
        do {
            try unit.write(Array(bytes[0..<half]), at: 0)
            try unit.write(Array(bytes[half...]), at: 4096)
            let log = try GroupCoordinatorLog(unit: unit, group: 1)
            // A record it accepts must be one a coordinator can start from.
            _ = try GroupCoordinator(members: ["a"], epochTimeout: .seconds(1), record: log.record)
        } catch is CheckpointError {
        } catch {
            fatalError("\(error) is not a CheckpointError")
        }
    }
    return 0
}

/// Hands `message` to both machines, from a member and from the coordinator, mid-epoch.
func drive(_ message: GroupMessage) {
    guard var coordinator = try? GroupCoordinator(members: ["a", "b"], epochTimeout: .seconds(1)),
        var member = try? GroupMember(fateInterval: .seconds(1))
    else { fatalError("machines refused a valid configuration") }
    _ = coordinator.start(now: .zero)
    _ = coordinator.receive(message, from: "a", now: .zero)
    _ = coordinator.receive(message, from: "b", now: .zero)
    _ = coordinator.tick(now: Instant.zero + .seconds(2))
    _ = member.receive(.prepare(epoch: 1, full: false, lastCommitted: 0), now: .zero)
    _ = member.receive(message, now: .zero)
    _ = member.captured(epoch: 1, checkpoint: CheckpointID(1), now: .zero)
    _ = member.receive(message, now: .zero)
    _ = member.tick(now: Instant.zero + .seconds(2))
}
