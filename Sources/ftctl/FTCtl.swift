import ArgumentParser

/// The swift-fault-tolerance command-line tool.
@main
struct FTCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "ftctl",
        abstract: "Drive, inspect and verify swift-fault-tolerance primitives.",
        discussion: """
            ftctl runs the library's primitives from the shell: `demo` shows them at work on \
            real files and sockets; each module's `simulate` runs its scenario over many seeds \
            in virtual time and replays any failing seed exactly with --seed; `journal` \
            creates, inspects, verifies and recovers journals on disk.

            Exit status: 0 success; 1 a check failed (a simulation seed broke an invariant, \
            a crash test lost data, a journal is damaged); 64 bad input, refused before \
            anything runs, with one line naming the option, the value and what is accepted.
            """,
        subcommands: [
            Simulate.self, HeartbeatCommand.self, JournalCommand.self, LiveCopyCommand.self, CheckpointCommand.self,
            KeySyncCommand.self, ChainCommand.self, FailoverCommand.self, SpareCommand.self, RecoveryCommand.self,
            Demo.self,
        ],
        defaultSubcommand: nil
    )
}
