// A page for the live copy's sender: copy, then CRC32C and fingerprint in one pass.
// Written for swift-fault-tolerance.
//
// The sender used to copy a page into its batch, then read it again for a 64-bit fingerprint
// and once more for the CRC32C the frame carries. The copy stays a bulk copy (wide loads pull
// cold memory in far faster: a fused word-by-word copy measured slower), and both digests are
// computed in one pass over the copy while it is in L1, so what is hashed is exactly what was
// copied even while writers change the source.
#include "ft_shims.h"

#include <string.h>

static const uint64_t lane_multiplier[3] = {0xFF51AFD7ED558CCDULL, 0xC4CEB9FE1A85EC53ULL, 0x9E3779B97F4A7C15ULL};
static const uint64_t lane_seed[3] = {0x9E3779B97F4A7C15ULL, 0xC2B2AE3D27D4EB4FULL, 0x165667B19E3779F9ULL};

static inline uint64_t absorb(uint64_t lane, uint64_t word, uint64_t multiplier) {
    lane = (lane ^ word) * multiplier;
    return lane ^ (lane >> 29);
}

static inline uint64_t finish(uint64_t a, uint64_t b, uint64_t c, size_t length) {
    uint64_t h = a ^ (b * 31) ^ (c * 961) ^ (uint64_t)length;
    h = (h ^ (h >> 33)) * 0xFF51AFD7ED558CCDULL;
    return h ^ (h >> 33);
}

static inline uint64_t load_word(const unsigned char *p) {
    uint64_t word;
    memcpy(&word, p, 8);
    return word;
}

// The fingerprint: three lanes over the three stripes of (length / 24) * 8 bytes, the tail
// words into the first lane, then a final mix. Any length that is a multiple of 8.
uint64_t ft_page_fingerprint(const void *page, size_t length) {
    const unsigned char *in = (const unsigned char *)page;
    size_t stripe = (length / 24) * 8;
    uint64_t a = lane_seed[0], b = lane_seed[1], c = lane_seed[2];
    for (size_t i = 0; i < stripe; i += 8) {
        a = absorb(a, load_word(in + i), lane_multiplier[0]);
        b = absorb(b, load_word(in + stripe + i), lane_multiplier[1]);
        c = absorb(c, load_word(in + 2 * stripe + i), lane_multiplier[2]);
    }
    for (size_t i = 3 * stripe; i < length; i += 8) {
        a = absorb(a, load_word(in + i), lane_multiplier[0]);
    }
    return finish(a, b, c, length);
}

#if defined(__x86_64__)

uint32_t ft_crc32c_shift_1360(uint32_t crc);

// The same fingerprint of a 4 KiB page (3 x 1,360 + 16 bytes), with CRC32C in three streams
// over the same stripes, joined with the shift by one stripe.
__attribute__((target("sse4.2")))
static uint64_t fingerprint_crc_4k(const unsigned char *in, uint32_t *crc) {
    enum { STRIPE = 1360, LENGTH = 4096 };
    uint64_t a = lane_seed[0], b = lane_seed[1], c = lane_seed[2];
    uint64_t ca = *crc, cb = 0, cc = 0;
    for (size_t i = 0; i < STRIPE; i += 8) {
        uint64_t wa = load_word(in + i), wb = load_word(in + STRIPE + i), wc = load_word(in + 2 * STRIPE + i);
        a = absorb(a, wa, lane_multiplier[0]);
        b = absorb(b, wb, lane_multiplier[1]);
        c = absorb(c, wc, lane_multiplier[2]);
        ca = __builtin_ia32_crc32di(ca, wa);
        cb = __builtin_ia32_crc32di(cb, wb);
        cc = __builtin_ia32_crc32di(cc, wc);
    }
    uint64_t joined = ft_crc32c_shift_1360(ft_crc32c_shift_1360((uint32_t)ca) ^ (uint32_t)cb) ^ (uint32_t)cc;
    for (size_t i = 3 * STRIPE; i < LENGTH; i += 8) {
        uint64_t w = load_word(in + i);
        a = absorb(a, w, lane_multiplier[0]);
        joined = __builtin_ia32_crc32di(joined, w);
    }
    *crc = (uint32_t)joined;
    return finish(a, b, c, LENGTH);
}

int ft_copy_page_digest(void *destination, const void *source, size_t length, uint32_t *crc, uint64_t *fingerprint) {
    ft_copy_concurrent(destination, source, length);
    // cpuid traps to the hypervisor in a VM: ask once.
    static int hardware = -1;
    int known = __atomic_load_n(&hardware, __ATOMIC_RELAXED);
    if (known < 0) {
        known = ft_crc32c_hardware_available();
        __atomic_store_n(&hardware, known, __ATOMIC_RELAXED);
    }
    if (length == 4096 && known && crc) {
        *fingerprint = fingerprint_crc_4k((const unsigned char *)destination, crc);
        return 1;
    }
    *fingerprint = ft_page_fingerprint(destination, length);
    return 0;
}

#else

int ft_copy_page_digest(void *destination, const void *source, size_t length, uint32_t *crc, uint64_t *fingerprint) {
    (void)crc;
    ft_copy_concurrent(destination, source, length);
    *fingerprint = ft_page_fingerprint(destination, length);
    return 0;
}

#endif
