import ArgumentParser

/// The swift-fault-tolerance command-line tool.
@main
struct FTCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ftctl",
        abstract: "Drive, inspect and verify swift-fault-tolerance primitives.",
        discussion: """
            ftctl runs the library's primitives from the shell. For now its main job is \
            `simulate`, which runs the deterministic simulator's example scenario — a \
            replicated register under message loss, partitions, crashes, torn writes and \
            fsync failures — over many seeds and reports the faults injected and the \
            invariants checked. Every failing seed can be replayed exactly with --seed.
            """,
        subcommands: [Simulate.self, HeartbeatCommand.self, JournalCommand.self, LiveCopyCommand.self, Demo.self],
        defaultSubcommand: nil
    )
}
