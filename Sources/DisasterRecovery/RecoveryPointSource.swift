public import FaultToleranceCore

/// Where a volume's content at the recovery point comes from: the recovery site's base image and
/// journal, or an image already at that point.
///
/// A ``LazyVolume`` reads a block from its source on first access, and its replica build reads
/// every block once; the source is never written.
public protocol RecoveryPointSource: AnyObject, Sendable {
    /// The volume's size in bytes.
    var capacity: Int { get }

    /// Fills `buffer` with the volume's bytes at the recovery point, from `offset`. Throws
    /// ``RecoveryError/Code/sourceUnavailable`` or ``RecoveryError/Code/damaged`` naming where.
    func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(RecoveryError)
}

/// A recovery point held as a whole image in a ``FaultToleranceCore/StorageUnit`` (a replicated
/// snapshot, an image file a journal reconstructed): reads pass through.
public final class ImageRecoveryPoint: RecoveryPointSource {
    /// The unit holding the image.
    public let unit: any StorageUnit
    /// The image's size in bytes.
    public let capacity: Int

    /// A recovery point of `capacity` bytes (the unit's capacity when `nil`) at the start of `unit`.
    public init(unit: any StorageUnit, capacity: Int? = nil) throws(RecoveryError) {
        let size = capacity ?? unit.capacity
        guard size > 0, size <= unit.capacity else {
            throw RecoveryError(.mismatchedUnits, "an image of \(size) bytes on \(unit.id) of \(unit.capacity)")
        }
        self.unit = unit
        self.capacity = size
    }

    /// Reads from the unit.
    public func read(into buffer: UnsafeMutableRawBufferPointer, at offset: Int) throws(RecoveryError) {
        guard offset >= 0, buffer.count <= capacity, offset <= capacity - buffer.count else {
            throw RecoveryError(.outOfBounds, "\(buffer.count) bytes at \(offset) of an image of \(capacity)")
        }
        do {
            try unit.read(into: buffer, at: offset)
        } catch {
            throw RecoveryError(.sourceUnavailable, "image \(unit.id) at \(offset): \(error)")
        }
    }
}
