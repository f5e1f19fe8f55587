// Hardware CRC32C (Castagnoli). Written for swift-fault-tolerance.
//
#include "ft_shims.h"

#include <string.h>

#if defined(__x86_64__)
#include <cpuid.h>
#include <pthread.h>

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

__attribute__((target("sse4.2")))
uint32_t ft_crc32c_hardware_update(uint32_t crc, const void *bytes, size_t length) {
    const unsigned char *p = (const unsigned char *)bytes;
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
