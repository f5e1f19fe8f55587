import CFaultToleranceShims

/// The vector code this process runs for CRC32C, page digests and copies into a region:
/// chosen once, from the CPU's features and the environment.
///
/// `FT_DISABLE_AVX512=1` rules out ``avx512``, and `FT_DISABLE_AVX2=1` rules out ``avx2``
/// and ``avx512`` both, so that the tests can cover every path on a machine that has them all
/// (CI runs the checksum, digest and framing tests once per path the machine has).
public enum VectorPath: String, Sendable, CaseIterable {
    /// AVX-512 with VPCLMULQDQ: 64-byte vectors and carry-less CRC32C folding.
    case avx512
    /// AVX2 with VPCLMULQDQ: 32-byte vectors and carry-less CRC32C folding. (An AVX2 CPU
    /// without VPCLMULQDQ takes ``sse42``.)
    case avx2
    /// SSE4.2: 16-byte vectors and the CRC32C instruction.
    case sse42 = "sse4.2"
    /// AArch64: the CRC32C instructions.
    case aarch64
    /// No vector code: table-driven CRC32C and scalar loops.
    case portable

    /// The path this process runs.
    public static let current: VectorPath = VectorPath(rawValue: String(cString: ft_simd_path_name())) ?? .portable
}
