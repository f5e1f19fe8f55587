// Little-endian integers in raw bytes, for the on-disk formats (storage pool headers, journal
// records and manifests); one set for every module (package access).

extension UnsafeMutableRawPointer {
    /// Stores `value` little-endian at byte `offset`; the caller has checked the bounds.
    @inlinable
    package func storeLE<T: FixedWidthInteger>(_ value: T, at offset: Int) {
        storeBytes(of: value.littleEndian, toByteOffset: offset, as: T.self)
    }
}

extension UnsafeRawPointer {
    /// Loads a little-endian integer at byte `offset`; the caller has checked the bounds.
    @inlinable
    package func loadLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }
}

extension UnsafeRawBufferPointer {
    /// Loads a little-endian integer, or `nil` when it would read past the end.
    @inlinable
    package func loadLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T? {
        guard let base = baseAddress, offset >= 0, offset + MemoryLayout<T>.size <= count else { return nil }
        return UnsafeRawPointer(base).loadLE(T.self, at: offset)
    }
}

extension Array where Element == UInt8 {
    /// Appends an integer in little-endian byte order.
    @inlinable
    package mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }

    /// Reads a little-endian integer at `offset`; the caller has checked the bounds.
    @inlinable
    package func loadLE<T: FixedWidthInteger>(_: T.Type, at offset: Int) -> T {
        withUnsafeBytes { T(littleEndian: $0.loadUnaligned(fromByteOffset: offset, as: T.self)) }
    }
}
