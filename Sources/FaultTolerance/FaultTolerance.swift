@_exported import FaultToleranceCore
