// A page for the live copy's sender: copy, CRC32C and fingerprint in one pass.
// Written for swift-fault-tolerance.
//
// The sender used to copy a page into its batch, then read it again for a 64-bit fingerprint
// and once more for the CRC32C the frame carries. For 4 KiB pages on x86_64 each 16-byte block
// is now loaded once, stored and fed to both digests (with the next page prefetched: a word
// loop without prefetching measured slower than a bulk copy plus a separate pass). Other
// sizes are copied in bulk and digested in one pass over the copy while it is in L1. Either
// way what is hashed is exactly what was copied, even while writers change the source.
//
// The fingerprint only ever compares pages within one process (it never travels), so each
// architecture may compute it its own way. It is keyed: each copy session draws a random
// 64-byte key (ft_fingerprint_key), so a writer inside the copied region, who never sees a
// fingerprint, cannot craft a changed page whose fingerprint matches the old one. On x86_64 it is vectorised: each 16-byte block is
// xored with a key that advances with its position, its 32-bit halves multiplied together and
// added, with the block itself, into one of three accumulators (the construction of XXH3's
// long-input loop), so it runs on the vector units while the CRC32C instruction keeps its own
// port busy; a scalar multiply chain per word measured as slow as copying the page.
#include "ft_shims.h"

#include <string.h>

#include "racy.h"

static inline uint64_t mix64(uint64_t h) {
    h ^= h >> 33;
    h *= 0xFF51AFD7ED558CCDULL;
    h ^= h >> 33;
    h *= 0xC4CEB9FE1A85EC53ULL;
    return h ^ (h >> 33);
}

#if defined(__x86_64__)
#include <immintrin.h>

#include "fold.h"

static inline __m128i seed_key(const ft_fingerprint_key *key, int index) {
    return _mm_set_epi64x((long long)key->words[2 * index + 1], (long long)key->words[2 * index]);
}

// One 16-byte block into an accumulator: (block ^ key), low half times high half of each
// 64-bit lane, plus the block with its lanes swapped so no input bit is lost to a zero factor.
static inline __m128i absorb_block(__m128i accumulator, __m128i block, __m128i key) {
    __m128i keyed = _mm_xor_si128(block, key);
    __m128i high = _mm_shuffle_epi32(keyed, _MM_SHUFFLE(3, 3, 1, 1));
    __m128i product = _mm_mul_epu32(keyed, high);
    __m128i swapped = _mm_shuffle_epi32(block, _MM_SHUFFLE(1, 0, 3, 2));
    return _mm_add_epi64(accumulator, _mm_add_epi64(product, swapped));
}

static inline uint64_t lane(__m128i v, int index) {
    uint64_t lanes[2];
    _mm_storeu_si128((__m128i *)lanes, v);
    return lanes[index];
}

static inline uint64_t finish(__m128i a, __m128i b, __m128i c, size_t length) {
    uint64_t h = mix64((uint64_t)length ^ 0x27D4EB2F165667C5ULL);
    h = mix64(h ^ lane(a, 0)) + lane(a, 1);
    h = mix64(h ^ lane(b, 0)) + lane(b, 1);
    h = mix64(h ^ lane(c, 0)) + lane(c, 1);
    return mix64(h);
}

// Layout shared by both functions below: three stripes of (length / 48) * 16 bytes, one
// accumulator each, then the tail (a multiple of 16 bytes for any power-of-two length >= 64)
// into the first accumulator with its own key. `length` is a multiple of 16, at least 48.
static uint64_t fingerprint_sse(const void *page, size_t length, const ft_fingerprint_key *key) {
    const unsigned char *in = (const unsigned char *)page;
    size_t stripe = (length / 48) * 16;
    const __m128i step = _mm_set1_epi64x((long long)0x9E3779B97F4A7C15ULL);
    __m128i a = _mm_setzero_si128(), b = _mm_setzero_si128(), c = _mm_setzero_si128();
    __m128i ka = seed_key(key, 0), kb = seed_key(key, 1), kc = seed_key(key, 2), kt = seed_key(key, 3);
    for (size_t i = 0; i < stripe; i += 16) {
        a = absorb_block(a, _mm_loadu_si128((const __m128i *)(in + i)), ka);
        b = absorb_block(b, _mm_loadu_si128((const __m128i *)(in + stripe + i)), kb);
        c = absorb_block(c, _mm_loadu_si128((const __m128i *)(in + 2 * stripe + i)), kc);
        ka = _mm_add_epi64(ka, step);
        kb = _mm_add_epi64(kb, step);
        kc = _mm_add_epi64(kc, step);
    }
    for (size_t i = 3 * stripe; i + 16 <= length; i += 16) {
        a = absorb_block(a, _mm_loadu_si128((const __m128i *)(in + i)), kt);
        kt = _mm_add_epi64(kt, step);
    }
    return finish(a, b, c, length);
}

uint32_t ft_crc32c_shift_1360(uint32_t crc);

// Copy, fingerprint and CRC32C in one pass over a 4 KiB page: each 16-byte block is loaded
// once from the source (which writers may be changing: the race is intended, a torn page is
// dirty again), stored, and fed to both digests, so they cover exactly what was copied. The
// next page is prefetched, since these narrow loads cannot hide memory latency the way a
// bulk copy's wide ones do.
FT_RACY_READ __attribute__((target("sse4.2")))
static uint64_t copy_fingerprint_crc_4k(
    unsigned char *out, const unsigned char *in, uint32_t *crc, const ft_fingerprint_key *key) {
    enum { STRIPE = 1360, LENGTH = 4096 };
    for (int line = 0; line < LENGTH; line += 64) __builtin_prefetch(in + LENGTH + line, 0, 3);
    const __m128i step = _mm_set1_epi64x((long long)0x9E3779B97F4A7C15ULL);
    __m128i a = _mm_setzero_si128(), b = _mm_setzero_si128(), c = _mm_setzero_si128();
    __m128i ka = seed_key(key, 0), kb = seed_key(key, 1), kc = seed_key(key, 2), kt = seed_key(key, 3);
    uint64_t ca = *crc, cb = 0, cc = 0;
    for (size_t i = 0; i < STRIPE; i += 16) {
        __m128i va = _mm_loadu_si128((const __m128i *)(in + i));
        __m128i vb = _mm_loadu_si128((const __m128i *)(in + STRIPE + i));
        __m128i vc = _mm_loadu_si128((const __m128i *)(in + 2 * STRIPE + i));
        _mm_storeu_si128((__m128i *)(out + i), va);
        _mm_storeu_si128((__m128i *)(out + STRIPE + i), vb);
        _mm_storeu_si128((__m128i *)(out + 2 * STRIPE + i), vc);
        a = absorb_block(a, va, ka);
        b = absorb_block(b, vb, kb);
        c = absorb_block(c, vc, kc);
        ka = _mm_add_epi64(ka, step);
        kb = _mm_add_epi64(kb, step);
        kc = _mm_add_epi64(kc, step);
        ca = __builtin_ia32_crc32di(ca, (uint64_t)_mm_cvtsi128_si64(va));
        cb = __builtin_ia32_crc32di(cb, (uint64_t)_mm_cvtsi128_si64(vb));
        cc = __builtin_ia32_crc32di(cc, (uint64_t)_mm_cvtsi128_si64(vc));
        ca = __builtin_ia32_crc32di(ca, (uint64_t)_mm_extract_epi64(va, 1));
        cb = __builtin_ia32_crc32di(cb, (uint64_t)_mm_extract_epi64(vb, 1));
        cc = __builtin_ia32_crc32di(cc, (uint64_t)_mm_extract_epi64(vc, 1));
    }
    uint64_t joined = ft_crc32c_shift_1360(ft_crc32c_shift_1360((uint32_t)ca) ^ (uint32_t)cb) ^ (uint32_t)cc;
    for (size_t i = 3 * STRIPE; i < LENGTH; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(in + i));
        _mm_storeu_si128((__m128i *)(out + i), v);
        a = absorb_block(a, v, kt);
        kt = _mm_add_epi64(kt, step);
        joined = __builtin_ia32_crc32di(joined, (uint64_t)_mm_cvtsi128_si64(v));
        joined = __builtin_ia32_crc32di(joined, (uint64_t)_mm_extract_epi64(v, 1));
    }
    *crc = (uint32_t)joined;
    return finish(a, b, c, LENGTH);
}

// With AVX-512: one accumulator of eight 64-bit lanes over the page's 64-byte blocks in order,
// the key advancing per block. (A process runs one variant throughout, fixed by
// ft_simd_level: ft_page_fingerprint and ft_copy_page_digest pick the same one.)
FT_FOLD_TARGET static inline __m512i absorb512(__m512i accumulator, __m512i block, __m512i key) {
    __m512i keyed = _mm512_xor_si512(block, key);
    __m512i high = _mm512_shuffle_epi32(keyed, (_MM_PERM_ENUM)_MM_SHUFFLE(3, 3, 1, 1));
    __m512i product = _mm512_mul_epu32(keyed, high);
    __m512i swapped = _mm512_shuffle_epi32(block, (_MM_PERM_ENUM)_MM_SHUFFLE(1, 0, 3, 2));
    return _mm512_add_epi64(accumulator, _mm512_add_epi64(product, swapped));
}

FT_FOLD_TARGET static inline __m512i seed512(const ft_fingerprint_key *key) {
    return _mm512_loadu_si512(key->words);
}

FT_FOLD_TARGET static inline uint64_t finish512(__m512i accumulator, size_t length) {
    uint64_t lanes[8];
    _mm512_storeu_si512(lanes, accumulator);
    uint64_t h = mix64((uint64_t)length ^ 0x27D4EB2F165667C5ULL);
    for (int i = 0; i < 8; i += 2) h = mix64(h ^ lanes[i]) + lanes[i + 1];
    return mix64(h);
}

FT_FOLD_TARGET static uint64_t fingerprint512(const void *page, size_t length, const ft_fingerprint_key *seed) {
    const unsigned char *in = (const unsigned char *)page;
    const __m512i step = _mm512_set1_epi64((long long)0x9E3779B97F4A7C15ULL);
    __m512i key = seed512(seed), accumulator = _mm512_setzero_si512();
    for (size_t i = 0; i + 64 <= length; i += 64) {
        accumulator = absorb512(accumulator, _mm512_loadu_si512(in + i), key);
        key = _mm512_add_epi64(key, step);
    }
    return finish512(accumulator, length);
}

// Copy, fingerprint and CRC32C of a 4 KiB page in one pass of 64-byte blocks: the CRC32C folded
// with carry-less multiplication in two 512-bit registers (alternate blocks, folded 1,024
// bits at a time), the fingerprint as in fingerprint512.
FT_RACY_READ FT_FOLD_TARGET
static uint64_t copy_fingerprint_crc_4k_512(
    unsigned char *out, const unsigned char *in, uint32_t *crc, const ft_fingerprint_key *seed) {
    enum { LENGTH = 4096 };
    for (int line = 0; line < LENGTH; line += 64) __builtin_prefetch(in + LENGTH + line, 0, 3);
    const __m512i step = _mm512_set1_epi64((long long)0x9E3779B97F4A7C15ULL);
    const __m512i k1024 = ft_fold_constant(FT_K1024_LO, FT_K1024_HI);
    const __m512i k512 = ft_fold_constant(FT_K512_LO, FT_K512_HI);
    __m512i key = seed512(seed), accumulator = _mm512_setzero_si512();
    __m512i d0 = _mm512_loadu_si512(in), d1 = _mm512_loadu_si512(in + 64);
    _mm512_storeu_si512(out, d0);
    _mm512_storeu_si512(out + 64, d1);
    accumulator = absorb512(accumulator, d0, key);
    key = _mm512_add_epi64(key, step);
    accumulator = absorb512(accumulator, d1, key);
    key = _mm512_add_epi64(key, step);
    __m512i x0 = _mm512_xor_si512(d0, _mm512_zextsi128_si512(_mm_cvtsi32_si128((int)*crc)));
    __m512i x1 = d1;
    for (size_t i = 128; i < LENGTH; i += 128) {
        d0 = _mm512_loadu_si512(in + i);
        d1 = _mm512_loadu_si512(in + i + 64);
        _mm512_storeu_si512(out + i, d0);
        _mm512_storeu_si512(out + i + 64, d1);
        accumulator = absorb512(accumulator, d0, key);
        key = _mm512_add_epi64(key, step);
        accumulator = absorb512(accumulator, d1, key);
        key = _mm512_add_epi64(key, step);
        x0 = ft_fold512(x0, k1024, d0);
        x1 = ft_fold512(x1, k1024, d1);
    }
    *crc = ft_fold_reduce(ft_fold512(x0, k512, x1));
    return finish512(accumulator, LENGTH);
}

// With AVX2 (and VPCLMULQDQ): two accumulators of four 64-bit lanes, over alternate 32-byte
// blocks (the first seeded with key words 0-3, the second with 4-7), each key advancing per
// block; a last 32-byte block, if any, goes to the first.
FT_FOLD256_TARGET static inline __m256i absorb256(__m256i accumulator, __m256i block, __m256i key) {
    __m256i keyed = _mm256_xor_si256(block, key);
    __m256i high = _mm256_shuffle_epi32(keyed, _MM_SHUFFLE(3, 3, 1, 1));
    __m256i product = _mm256_mul_epu32(keyed, high);
    __m256i swapped = _mm256_shuffle_epi32(block, _MM_SHUFFLE(1, 0, 3, 2));
    return _mm256_add_epi64(accumulator, _mm256_add_epi64(product, swapped));
}

FT_FOLD256_TARGET static inline uint64_t finish256(__m256i a, __m256i b, size_t length) {
    uint64_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, a);
    _mm256_storeu_si256((__m256i *)(lanes + 4), b);
    uint64_t h = mix64((uint64_t)length ^ 0x27D4EB2F165667C5ULL);
    for (int i = 0; i < 8; i += 2) h = mix64(h ^ lanes[i]) + lanes[i + 1];
    return mix64(h);
}

FT_FOLD256_TARGET static uint64_t fingerprint256(const void *page, size_t length, const ft_fingerprint_key *seed) {
    const unsigned char *in = (const unsigned char *)page;
    const __m256i step = _mm256_set1_epi64x((long long)0x9E3779B97F4A7C15ULL);
    __m256i ka = _mm256_loadu_si256((const __m256i *)seed->words);
    __m256i kb = _mm256_loadu_si256((const __m256i *)(seed->words + 4));
    __m256i a = _mm256_setzero_si256(), b = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 64 <= length; i += 64) {
        a = absorb256(a, _mm256_loadu_si256((const __m256i *)(in + i)), ka);
        ka = _mm256_add_epi64(ka, step);
        b = absorb256(b, _mm256_loadu_si256((const __m256i *)(in + i + 32)), kb);
        kb = _mm256_add_epi64(kb, step);
    }
    if (i + 32 <= length) a = absorb256(a, _mm256_loadu_si256((const __m256i *)(in + i)), ka);
    return finish256(a, b, length);
}

// Copy, fingerprint and CRC32C of a 4 KiB page in one pass of 32-byte blocks: the CRC32C folded
// in four 256-bit registers (128 bytes, 1,024 bits, per step), the fingerprint as in
// fingerprint256.
FT_RACY_READ FT_FOLD256_TARGET
static uint64_t copy_fingerprint_crc_4k_256(
    unsigned char *out, const unsigned char *in, uint32_t *crc, const ft_fingerprint_key *seed) {
    enum { LENGTH = 4096 };
    for (int line = 0; line < LENGTH; line += 64) __builtin_prefetch(in + LENGTH + line, 0, 3);
    const __m256i step = _mm256_set1_epi64x((long long)0x9E3779B97F4A7C15ULL);
    const __m256i k1024 = ft_fold_constant256(FT_K1024_LO, FT_K1024_HI);
    const __m256i k256 = ft_fold_constant256(FT_K256_LO, FT_K256_HI);
    __m256i ka = _mm256_loadu_si256((const __m256i *)seed->words);
    __m256i kb = _mm256_loadu_si256((const __m256i *)(seed->words + 4));
    __m256i a = _mm256_setzero_si256(), b = _mm256_setzero_si256();
    __m256i x0 = _mm256_zextsi128_si256(_mm_cvtsi32_si128((int)*crc));
    __m256i x1 = _mm256_setzero_si256(), x2 = _mm256_setzero_si256(), x3 = _mm256_setzero_si256();
    for (size_t i = 0; i < LENGTH; i += 128) {
        __m256i d0 = _mm256_loadu_si256((const __m256i *)(in + i));
        __m256i d1 = _mm256_loadu_si256((const __m256i *)(in + i + 32));
        __m256i d2 = _mm256_loadu_si256((const __m256i *)(in + i + 64));
        __m256i d3 = _mm256_loadu_si256((const __m256i *)(in + i + 96));
        _mm256_storeu_si256((__m256i *)(out + i), d0);
        _mm256_storeu_si256((__m256i *)(out + i + 32), d1);
        _mm256_storeu_si256((__m256i *)(out + i + 64), d2);
        _mm256_storeu_si256((__m256i *)(out + i + 96), d3);
        a = absorb256(a, d0, ka);
        ka = _mm256_add_epi64(ka, step);
        b = absorb256(b, d1, kb);
        kb = _mm256_add_epi64(kb, step);
        a = absorb256(a, d2, ka);
        ka = _mm256_add_epi64(ka, step);
        b = absorb256(b, d3, kb);
        kb = _mm256_add_epi64(kb, step);
        if (i == 0) {
            x0 = _mm256_xor_si256(x0, d0);
            x1 = d1;
            x2 = d2;
            x3 = d3;
        } else {
            x0 = ft_fold256(x0, k1024, d0);
            x1 = ft_fold256(x1, k1024, d1);
            x2 = ft_fold256(x2, k1024, d2);
            x3 = ft_fold256(x3, k1024, d3);
        }
    }
    x1 = ft_fold256(x0, k256, x1);
    x2 = ft_fold256(x1, k256, x2);
    x3 = ft_fold256(x2, k256, x3);
    *crc = ft_fold_reduce128(ft_fold_lanes256(x3));
    return finish256(a, b, LENGTH);
}

uint64_t ft_page_fingerprint(const void *page, size_t length, const ft_fingerprint_key *key) {
    if (ft_fold_available()) return fingerprint512(page, length, key);
    if (ft_fold256_available()) return fingerprint256(page, length, key);
    return fingerprint_sse(page, length, key);
}

int ft_copy_page_digest(
    void *destination, const void *source, size_t length, uint32_t *crc, uint64_t *fingerprint,
    const ft_fingerprint_key *key) {
    // A non-NULL crc means the caller's checksum uses the CRC32C instruction (see ft_shims.h).
    if (length == 4096 && crc) {
        unsigned char *out = (unsigned char *)destination;
        const unsigned char *in = (const unsigned char *)source;
        if (ft_fold_available()) {
            *fingerprint = copy_fingerprint_crc_4k_512(out, in, crc, key);
        } else if (ft_fold256_available()) {
            *fingerprint = copy_fingerprint_crc_4k_256(out, in, crc, key);
        } else {
            *fingerprint = copy_fingerprint_crc_4k(out, in, crc, key);
        }
        return 1;
    }
    ft_copy_concurrent(destination, source, length);
    *fingerprint = ft_page_fingerprint(destination, length, key);
    return 0;
}

#elif defined(__aarch64__)
#include <arm_acle.h>
#include <arm_neon.h>

// On AArch64 with NEON and the CRC32 instructions (ARMv8.1 and later have both; the kernel
// reports CRC32 in HWCAP, and ft_crc32c_hardware_available checks it): two accumulators over
// alternate 16-byte blocks, each block xored with a key that advances with its position, its
// 32-bit halves multiplied together and added, with the block's lanes swapped, as on x86_64.
static inline uint64x2_t absorb_neon(uint64x2_t accumulator, uint64x2_t block, uint64x2_t key) {
    uint64x2_t keyed = veorq_u64(block, key);
    uint64x2_t product = vmull_u32(vmovn_u64(keyed), vshrn_n_u64(keyed, 32));
    return vaddq_u64(accumulator, vaddq_u64(product, vextq_u64(block, block, 1)));
}

static inline uint64_t finish_neon(uint64x2_t a, uint64x2_t b, size_t length) {
    uint64_t h = mix64((uint64_t)length ^ 0x27D4EB2F165667C5ULL);
    h = mix64(h ^ vgetq_lane_u64(a, 0)) + vgetq_lane_u64(a, 1);
    h = mix64(h ^ vgetq_lane_u64(b, 0)) + vgetq_lane_u64(b, 1);
    return mix64(h);
}

uint64_t ft_page_fingerprint(const void *page, size_t length, const ft_fingerprint_key *key) {
    const unsigned char *in = (const unsigned char *)page;
    const uint64x2_t step = vdupq_n_u64(0x9E3779B97F4A7C15ULL);
    uint64x2_t ka = vld1q_u64(key->words), kb = vld1q_u64(key->words + 2);
    uint64x2_t a = vdupq_n_u64(0), b = vdupq_n_u64(0);
    size_t i = 0;
    for (; i + 32 <= length; i += 32) {
        a = absorb_neon(a, vld1q_u64((const uint64_t *)(in + i)), ka);
        ka = vaddq_u64(ka, step);
        b = absorb_neon(b, vld1q_u64((const uint64_t *)(in + i + 16)), kb);
        kb = vaddq_u64(kb, step);
    }
    if (i + 16 <= length) a = absorb_neon(a, vld1q_u64((const uint64_t *)(in + i)), ka);
    return finish_neon(a, b, length);
}

// Copy, fingerprint and CRC32C of a page in one pass of 32-byte blocks: each block is loaded
// once, stored, absorbed as in ft_page_fingerprint and fed to the CRC32C instruction.
FT_RACY_READ __attribute__((target("+crc")))
static uint64_t copy_fingerprint_crc_neon(
    unsigned char *out, const unsigned char *in, size_t length, uint32_t *crc, const ft_fingerprint_key *key) {
    const uint64x2_t step = vdupq_n_u64(0x9E3779B97F4A7C15ULL);
    uint64x2_t ka = vld1q_u64(key->words), kb = vld1q_u64(key->words + 2);
    uint64x2_t a = vdupq_n_u64(0), b = vdupq_n_u64(0);
    uint32_t c = *crc;
    for (size_t i = 0; i < length; i += 32) {
        uint64x2_t va = vld1q_u64((const uint64_t *)(in + i));
        uint64x2_t vb = vld1q_u64((const uint64_t *)(in + i + 16));
        vst1q_u64((uint64_t *)(out + i), va);
        vst1q_u64((uint64_t *)(out + i + 16), vb);
        a = absorb_neon(a, va, ka);
        ka = vaddq_u64(ka, step);
        b = absorb_neon(b, vb, kb);
        kb = vaddq_u64(kb, step);
        c = __crc32cd(c, vgetq_lane_u64(va, 0));
        c = __crc32cd(c, vgetq_lane_u64(va, 1));
        c = __crc32cd(c, vgetq_lane_u64(vb, 0));
        c = __crc32cd(c, vgetq_lane_u64(vb, 1));
    }
    *crc = c;
    return finish_neon(a, b, length);
}

int ft_copy_page_digest(
    void *destination, const void *source, size_t length, uint32_t *crc, uint64_t *fingerprint,
    const ft_fingerprint_key *key) {
    // A non-NULL crc means the caller's checksum uses the CRC32C instructions (ft_shims.h).
    if (crc && length >= 32 && length % 32 == 0) {
        *fingerprint = copy_fingerprint_crc_neon(
            (unsigned char *)destination, (const unsigned char *)source, length, crc, key);
        return 1;
    }
    ft_copy_concurrent(destination, source, length);
    *fingerprint = ft_page_fingerprint(destination, length, key);
    return 0;
}

#else

static inline uint64_t load_word(const unsigned char *p) {
    uint64_t word;
    memcpy(&word, p, 8);
    return word;
}

// Elsewhere: three scalar multiply-xorshift lanes over the words of the page.
uint64_t ft_page_fingerprint(const void *page, size_t length, const ft_fingerprint_key *key) {
    const unsigned char *in = (const unsigned char *)page;
    uint64_t lanes[3] = {key->words[0] | 1, key->words[1] | 1, key->words[2] | 1};
    for (size_t i = 0; i + 8 <= length; i += 8) {
        uint64_t *l = &lanes[(i / 8) % 3];
        *l = (*l ^ load_word(in + i)) * 0xFF51AFD7ED558CCDULL;
        *l ^= *l >> 29;
    }
    return mix64(mix64(lanes[0] ^ length) ^ lanes[1]) ^ lanes[2];
}

int ft_copy_page_digest(
    void *destination, const void *source, size_t length, uint32_t *crc, uint64_t *fingerprint,
    const ft_fingerprint_key *key) {
    (void)crc;
    ft_copy_concurrent(destination, source, length);
    *fingerprint = ft_page_fingerprint(destination, length, key);
    return 0;
}

#endif
