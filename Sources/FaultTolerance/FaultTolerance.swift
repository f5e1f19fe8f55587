// The umbrella module: `import FaultTolerance` brings in every primitive.
@_exported import Checkpointing
@_exported import CheckpointingSimulation
@_exported import DaisyChain
@_exported import DaisyChainSimulation
@_exported import DeterministicSimulation
@_exported import ElasticJournal
@_exported import ElasticJournalSimulation
@_exported import FaultToleranceAuthentication
@_exported import FaultToleranceCore
@_exported import FaultToleranceNIO
@_exported import HeartbeatQuorum
@_exported import HeartbeatSimulation
@_exported import LiveCopy
@_exported import LiveCopySimulation
@_exported import NameKeySync
@_exported import NameKeySyncSimulation
