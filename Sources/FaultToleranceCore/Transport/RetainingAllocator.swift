internal import CFaultToleranceShims
@_spi(CustomByteBufferAllocator) public import NIOCore

extension ByteBufferAllocator {
    /// An allocator for large buffers that are filled, passed on and freed over and over (page
    /// batches, frames being assembled): freed blocks of 128 KiB to 16 MiB are kept resident,
    /// up to 32 MiB in all, and handed out again, instead of returning to `malloc`, which maps
    /// fresh memory for them and page-faults on every 4 KiB written. Smaller and larger
    /// requests go to `malloc` as usual. Thread-safe.
    public static let retainingLargeBuffers = ByteBufferAllocator(
        allocate: { ft_pool_allocate($0) },
        reallocate: { ft_pool_reallocate($0, $1, $2) },
        deallocate: { ft_pool_free($0) },
        copy: { ft_pool_copy($0, $1, $2) })

    /// Bytes ``retainingLargeBuffers`` holds for reuse right now.
    public static var retainedBytes: Int { Int(ft_pool_cached_bytes()) }
}
