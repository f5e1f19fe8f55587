// Carry-less-multiply folding for CRC32C, shared by crc32c.c and digest.c.
// Written for swift-fault-tolerance.
//
// Folding a 128-bit remainder x forward by D bits is lo(x) * k_lo(D) xor hi(x) * k_hi(D) in
// the bit-reflected domain of the CRC32C instruction, with k_lo(D) = reflect32(x^(D+31) mod P)
// and k_hi(D) = reflect32(x^(D-33) mod P); scripts/crc32c_fold_constants.py derives these and
// checks both algorithms that use them against a bitwise CRC32C. A final 128-bit remainder is
// reduced by two CRC32C instructions over it from zero, which give its remainder times x^32.
#ifndef FT_FOLD_H
#define FT_FOLD_H

#if defined(__x86_64__)
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>

#include "ft_shims.h"

#define FT_K2048_LO 0xdcb17aa4ULL
#define FT_K2048_HI 0xb9e02b86ULL
#define FT_K1024_LO 0x6992cea2ULL
#define FT_K1024_HI 0x0d3b6092ULL
#define FT_K512_LO 0x740eef02ULL
#define FT_K512_HI 0x9e4addf8ULL
#define FT_K384_LO 0x1c291d04ULL
#define FT_K384_HI 0xddc0152bULL
#define FT_K256_LO 0x3da6d0cbULL
#define FT_K256_HI 0xba4fc28eULL
#define FT_K128_LO 0xf20c0dfeULL
#define FT_K128_HI 0x493c7d27ULL

#define FT_FOLD_TARGET __attribute__((target("avx512f,avx512vl,vpclmulqdq,pclmul,sse4.2")))

// The constant pair for one distance, repeated in each 128-bit lane (k_lo low, k_hi high).
FT_FOLD_TARGET static inline __m512i ft_fold_constant(uint64_t lo, uint64_t hi) {
    return _mm512_set_epi64((long long)hi, (long long)lo, (long long)hi, (long long)lo, (long long)hi,
                            (long long)lo, (long long)hi, (long long)lo);
}

// Each 128-bit lane of x folded forward by the distance of k, xored with data.
FT_FOLD_TARGET static inline __m512i ft_fold512(__m512i x, __m512i k, __m512i data) {
    return _mm512_ternarylogic_epi64(
        _mm512_clmulepi64_epi128(x, k, 0x00), _mm512_clmulepi64_epi128(x, k, 0x11), data, 0x96);
}

FT_FOLD_TARGET static inline __m128i ft_fold128(__m128i x, uint64_t lo, uint64_t hi) {
    __m128i k = _mm_set_epi64x((long long)hi, (long long)lo);
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

// The CRC32C register for the 512 bits of remainder in x (lane 0 the earliest).
FT_FOLD_TARGET static inline uint32_t ft_fold_reduce(__m512i x) {
    __m128i r = _mm_xor_si128(
        _mm_xor_si128(_mm512_extracti32x4_epi32(x, 3), ft_fold128(_mm512_extracti32x4_epi32(x, 0), FT_K384_LO, FT_K384_HI)),
        _mm_xor_si128(
            ft_fold128(_mm512_extracti32x4_epi32(x, 1), FT_K256_LO, FT_K256_HI),
            ft_fold128(_mm512_extracti32x4_epi32(x, 2), FT_K128_LO, FT_K128_HI)));
    uint64_t c = __builtin_ia32_crc32di(0, (uint64_t)_mm_cvtsi128_si64(r));
    c = __builtin_ia32_crc32di(c, (uint64_t)_mm_extract_epi64(r, 1));
    return (uint32_t)c;
}

// The same on 256-bit registers, for CPUs with AVX2 and VPCLMULQDQ but no AVX-512.
#define FT_FOLD256_TARGET __attribute__((target("avx2,vpclmulqdq,pclmul,sse4.2")))

FT_FOLD256_TARGET static inline __m256i ft_fold_constant256(uint64_t lo, uint64_t hi) {
    return _mm256_set_epi64x((long long)hi, (long long)lo, (long long)hi, (long long)lo);
}

FT_FOLD256_TARGET static inline __m256i ft_fold256(__m256i x, __m256i k, __m256i data) {
    return _mm256_xor_si256(
        _mm256_xor_si256(_mm256_clmulepi64_epi128(x, k, 0x00), _mm256_clmulepi64_epi128(x, k, 0x11)), data);
}

FT_FOLD256_TARGET static inline __m128i ft_fold128_256(__m128i x, uint64_t lo, uint64_t hi) {
    __m128i k = _mm_set_epi64x((long long)hi, (long long)lo);
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

// The 256 bits of remainder in x (lane 0 the earlier) as one 128-bit remainder.
FT_FOLD256_TARGET static inline __m128i ft_fold_lanes256(__m256i x) {
    return _mm_xor_si128(
        ft_fold128_256(_mm256_castsi256_si128(x), FT_K128_LO, FT_K128_HI), _mm256_extracti128_si256(x, 1));
}

// The CRC32C register for a 128-bit remainder: two CRC32C instructions over it from zero.
FT_FOLD256_TARGET static inline uint32_t ft_fold_reduce128(__m128i r) {
    uint64_t c = __builtin_ia32_crc32di(0, (uint64_t)_mm_cvtsi128_si64(r));
    c = __builtin_ia32_crc32di(c, (uint64_t)_mm_extract_epi64(r, 1));
    return (uint32_t)c;
}

// Whether this CPU (and OS) can run the FT_FOLD_TARGET code (ft_simd_level, which
// FT_DISABLE_AVX512=1 or FT_DISABLE_AVX2=1 in the environment lowers).
static inline int ft_fold_available(void) { return ft_simd_level() >= FT_SIMD_AVX512; }

// Whether it can run the FT_FOLD256_TARGET code instead (and not the wider one).
static inline int ft_fold256_available(void) { return ft_simd_level() == FT_SIMD_AVX2; }

#endif
#endif
