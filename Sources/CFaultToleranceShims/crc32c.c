// Hardware CRC32C (Castagnoli). Written for swift-fault-tolerance.
//
#include "ft_shims.h"

#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <pthread.h>

#include "fold.h"

int ft_crc32c_hardware_available(void) {
    unsigned int eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
        return 0;
    }
    return (ecx & bit_SSE4_2) != 0;
}

__attribute__((target("sse4.2")))
static uint32_t update_single(uint32_t crc, const unsigned char *p, size_t length) {
    uint64_t c = crc;
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        c = __builtin_ia32_crc32di(c, word);
        p += 8;
        length -= 8;
    }
    uint32_t c32 = (uint32_t)c;
    while (length > 0) {
        c32 = __builtin_ia32_crc32qi(c32, *p);
        p += 1;
        length -= 1;
    }
    return c32;
}

// Three independent streams over the thirds of each 3 * stripe block keep the instruction's
// pipeline full (latency 3 cycles, throughput 1 per cycle on current x86_64 cores). The
// streams are joined with the linearity of CRC over GF(2): crc(A || B) equals
// shift(crc(A), |B|) xor crc0(B), where crc0 starts from zero and shift(x, n) is the register
// after n zero bytes. shift(., stripe) is linear in its 32-bit input, so it is four table
// lookups; the tables are built once from the 32 basis vectors. Two stripe sizes: 4 KiB for
// long inputs, and 1,360 bytes so a 4 KiB page (3 x 1,360 + 16) also runs three streams
// instead of one, which is three times slower per byte.
enum { LARGE_STRIPE = 4096, SMALL_STRIPE = 1360 };
static uint32_t large_table[4][256];
static uint32_t small_table[4][256];
static pthread_once_t tables_once = PTHREAD_ONCE_INIT;

__attribute__((target("sse4.2")))
static void build_table(uint32_t table[4][256], size_t stripe) {
    uint32_t basis[32];
    for (int bit = 0; bit < 32; bit++) {
        uint64_t c = (uint64_t)1 << bit;
        for (size_t i = 0; i < stripe / 8; i++) {
            c = __builtin_ia32_crc32di(c, 0);
        }
        basis[bit] = (uint32_t)c;
    }
    for (int k = 0; k < 4; k++) {
        for (int b = 0; b < 256; b++) {
            uint32_t v = 0;
            for (int bit = 0; bit < 8; bit++) {
                if ((b >> bit) & 1) {
                    v ^= basis[8 * k + bit];
                }
            }
            table[k][b] = v;
        }
    }
}

static void build_tables(void) {
    build_table(large_table, LARGE_STRIPE);
    build_table(small_table, SMALL_STRIPE);
}

static inline uint32_t shift(const uint32_t table[4][256], uint32_t x) {
    return table[0][x & 0xFF] ^ table[1][(x >> 8) & 0xFF] ^ table[2][(x >> 16) & 0xFF] ^ table[3][x >> 24];
}

// Consumes whole 3 * stripe blocks from *p, returning the updated register.
__attribute__((target("sse4.2"), always_inline))
static inline uint32_t update_three_streams(
    uint32_t crc, const unsigned char **p, size_t *length, size_t stripe, const uint32_t table[4][256]
) {
    const unsigned char *q = *p;
    while (*length >= 3 * stripe) {
        uint64_t a = crc, b = 0, c = 0;
        for (size_t i = 0; i < stripe; i += 8) {
            uint64_t wa, wb, wc;
            memcpy(&wa, q + i, 8);
            memcpy(&wb, q + stripe + i, 8);
            memcpy(&wc, q + 2 * stripe + i, 8);
            a = __builtin_ia32_crc32di(a, wa);
            b = __builtin_ia32_crc32di(b, wb);
            c = __builtin_ia32_crc32di(c, wc);
        }
        crc = shift(table, shift(table, (uint32_t)a) ^ (uint32_t)b) ^ (uint32_t)c;
        q += 3 * stripe;
        *length -= 3 * stripe;
    }
    *p = q;
    return crc;
}

uint32_t ft_crc32c_shift_1360(uint32_t crc);

/// The CRC register after 1,360 zero bytes (for digest.c's three streams over a 4 KiB page).
uint32_t ft_crc32c_shift_1360(uint32_t crc) {
    pthread_once(&tables_once, build_tables);
    return shift(small_table, crc);
}

// Long inputs on CPUs with AVX-512 and VPCLMULQDQ: carry-less multiplication (fold.h) folds
// 256 bytes per step in four 512-bit accumulators, past the CRC32C instruction's
// one-per-cycle limit (and 128 bytes per step in 256-bit ones with AVX2, below).
enum { FOLD_MINIMUM = 256 };

// Loads 256 bytes at p into d, storing them at out too when out is not NULL.
FT_FOLD_TARGET static inline void load_block(__m512i d[4], const unsigned char *p, unsigned char *out) {
    for (int i = 0; i < 4; i++) {
        d[i] = _mm512_loadu_si512(p + 64 * i);
        if (out) _mm512_storeu_si512(out + 64 * i, d[i]);
    }
}

// With `out`, each block read is also stored there (the copy costs no second read).
FT_FOLD_TARGET
static inline uint32_t update_folding_into(unsigned char *out, uint32_t crc, const unsigned char *p, size_t length) {
    const __m512i k2048 = ft_fold_constant(FT_K2048_LO, FT_K2048_HI);
    const __m512i k512 = ft_fold_constant(FT_K512_LO, FT_K512_HI);
    __m512i d[4];
    load_block(d, p, out);
    __m512i x0 = _mm512_xor_si512(d[0], _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)crc)));
    __m512i x1 = d[1], x2 = d[2], x3 = d[3];
    for (p += 256, length -= 256, out = out ? out + 256 : NULL; length >= 256;
         p += 256, length -= 256, out = out ? out + 256 : NULL) {
        load_block(d, p, out);
        x0 = ft_fold512(x0, k2048, d[0]);
        x1 = ft_fold512(x1, k2048, d[1]);
        x2 = ft_fold512(x2, k2048, d[2]);
        x3 = ft_fold512(x3, k2048, d[3]);
    }
    if (out) memcpy(out, p, length);
    x1 = ft_fold512(x0, k512, x1);
    x2 = ft_fold512(x1, k512, x2);
    x3 = ft_fold512(x2, k512, x3);
    // The last 64 bytes' lanes into one 128-bit remainder, then 16 bytes at a time.
    __m128i x = _mm_xor_si128(
        _mm_xor_si128(_mm512_extracti32x4_epi32(x3, 3), ft_fold128(_mm512_extracti32x4_epi32(x3, 0), FT_K384_LO, FT_K384_HI)),
        _mm_xor_si128(
            ft_fold128(_mm512_extracti32x4_epi32(x3, 1), FT_K256_LO, FT_K256_HI),
            ft_fold128(_mm512_extracti32x4_epi32(x3, 2), FT_K128_LO, FT_K128_HI)));
    while (length >= 16) {
        x = _mm_xor_si128(ft_fold128(x, FT_K128_LO, FT_K128_HI), _mm_loadu_si128((const __m128i *)p));
        p += 16;
        length -= 16;
    }
    uint64_t c = __builtin_ia32_crc32di(0, (uint64_t)_mm_cvtsi128_si64(x));
    c = __builtin_ia32_crc32di(c, (uint64_t)_mm_extract_epi64(x, 1));
    return update_single((uint32_t)c, p, length);
}

FT_FOLD_TARGET
static uint32_t update_folding(uint32_t crc, const unsigned char *p, size_t length) {
    return update_folding_into(NULL, crc, p, length);
}

// With AVX2 and VPCLMULQDQ: 128 bytes per step in four 256-bit accumulators, each folded by
// 1,024 bits; then 256 bits at a time into the last, and 16 bytes at a time.
FT_FOLD256_TARGET static inline void load_block256(__m256i d[4], const unsigned char *p, unsigned char *out) {
    for (int i = 0; i < 4; i++) {
        d[i] = _mm256_loadu_si256((const __m256i *)(p + 32 * i));
        if (out) _mm256_storeu_si256((__m256i *)(out + 32 * i), d[i]);
    }
}

FT_FOLD256_TARGET
static inline uint32_t update_folding256_into(unsigned char *out, uint32_t crc, const unsigned char *p, size_t length) {
    const __m256i k1024 = ft_fold_constant256(FT_K1024_LO, FT_K1024_HI);
    const __m256i k256 = ft_fold_constant256(FT_K256_LO, FT_K256_HI);
    __m256i d[4];
    load_block256(d, p, out);
    __m256i x0 = _mm256_xor_si256(d[0], _mm256_zextsi128_si256(_mm_cvtsi32_si128((int)crc)));
    __m256i x1 = d[1], x2 = d[2], x3 = d[3];
    for (p += 128, length -= 128, out = out ? out + 128 : NULL; length >= 128;
         p += 128, length -= 128, out = out ? out + 128 : NULL) {
        load_block256(d, p, out);
        x0 = ft_fold256(x0, k1024, d[0]);
        x1 = ft_fold256(x1, k1024, d[1]);
        x2 = ft_fold256(x2, k1024, d[2]);
        x3 = ft_fold256(x3, k1024, d[3]);
    }
    if (out) memcpy(out, p, length);
    x1 = ft_fold256(x0, k256, x1);
    x2 = ft_fold256(x1, k256, x2);
    x3 = ft_fold256(x2, k256, x3);
    __m128i x = ft_fold_lanes256(x3);
    while (length >= 16) {
        x = _mm_xor_si128(ft_fold128_256(x, FT_K128_LO, FT_K128_HI), _mm_loadu_si128((const __m128i *)p));
        p += 16;
        length -= 16;
    }
    return update_single(ft_fold_reduce128(x), p, length);
}

__attribute__((target("sse4.2")))
uint32_t ft_crc32c_hardware_update_copying(uint32_t crc, void *destination, const void *source, size_t length) {
    if (length >= FOLD_MINIMUM && ft_fold_available()) {
        return update_folding_into((unsigned char *)destination, crc, (const unsigned char *)source, length);
    }
    if (length >= FOLD_MINIMUM && ft_fold256_available()) {
        return update_folding256_into((unsigned char *)destination, crc, (const unsigned char *)source, length);
    }
    memcpy(destination, source, length);
    return ft_crc32c_hardware_update(crc, source, length);
}

__attribute__((target("sse4.2")))
uint32_t ft_crc32c_hardware_update(uint32_t crc, const void *bytes, size_t length) {
    const unsigned char *p = (const unsigned char *)bytes;
    if (length >= FOLD_MINIMUM && ft_fold_available()) return update_folding(crc, p, length);
    if (length >= FOLD_MINIMUM && ft_fold256_available()) return update_folding256_into(NULL, crc, p, length);
    if (length >= 3 * SMALL_STRIPE) {
        pthread_once(&tables_once, build_tables);
        crc = update_three_streams(crc, &p, &length, LARGE_STRIPE, large_table);
        crc = update_three_streams(crc, &p, &length, SMALL_STRIPE, small_table);
    }
    return update_single(crc, p, length);
}

#elif defined(__aarch64__)
#include <arm_acle.h>
#include <sys/auxv.h>
#ifndef HWCAP_CRC32
#define HWCAP_CRC32 (1 << 7)
#endif

int ft_crc32c_hardware_available(void) {
    return (getauxval(AT_HWCAP) & HWCAP_CRC32) != 0;
}

__attribute__((target("crc")))
uint32_t ft_crc32c_hardware_update(uint32_t crc, const void *bytes, size_t length) {
    const unsigned char *p = (const unsigned char *)bytes;
    while (length >= 8) {
        uint64_t word;
        memcpy(&word, p, 8);
        crc = __crc32cd(crc, word);
        p += 8;
        length -= 8;
    }
    while (length > 0) {
        crc = __crc32cb(crc, *p);
        p += 1;
        length -= 1;
    }
    return crc;
}

#else

int ft_crc32c_hardware_available(void) { return 0; }

uint32_t ft_crc32c_hardware_update(uint32_t crc, const void *bytes, size_t length) {
    (void)bytes;
    (void)length;
    return crc;
}

#endif

#if !defined(__x86_64__)
uint32_t ft_crc32c_hardware_update_copying(uint32_t crc, void *destination, const void *source, size_t length) {
    memcpy(destination, source, length);
    return ft_crc32c_hardware_update(crc, source, length);
}
#endif
