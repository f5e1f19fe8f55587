import ArgumentParser

/// `ftctl heartbeat run` (placeholder replaced below).
struct HeartbeatRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "run", abstract: "Run a heartbeat node over UDP.")
}
