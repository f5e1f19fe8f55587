// Checks the vector paths of the C shims (CRC32C, the page digest, the streaming copy) against
// plain C references at every length and alignment around their block sizes. Swift's tests do
// the same through the library on this machine's paths; this program exists for the paths a
// machine cannot run natively: scripts/check-shims-aarch64 builds it for AArch64 and runs it
// under qemu. Written for swift-fault-tolerance.
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ft_shims.h"

static unsigned long checks = 0;
static unsigned long failures = 0;

#define CHECK(condition, ...)                        \
    do {                                             \
        checks++;                                    \
        if (!(condition)) {                          \
            if (failures++ < 20) {                   \
                fprintf(stderr, "FAILED: " __VA_ARGS__); \
                fputc('\n', stderr);                 \
            }                                        \
        }                                            \
    } while (0)

// CRC32C one bit at a time (reflected polynomial 0x82F63B78), on the raw register.
static uint32_t reference_crc(uint32_t crc, const unsigned char *bytes, size_t length) {
    for (size_t i = 0; i < length; i++) {
        crc ^= bytes[i];
        for (int bit = 0; bit < 8; bit++) crc = (crc >> 1) ^ (0x82F63B78u & (0u - (crc & 1u)));
    }
    return crc;
}

static uint64_t state = 0x9E3779B97F4A7C15ULL;

static unsigned char next_byte(void) {
    state = state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (unsigned char)(state >> 40);
}

static void fill(unsigned char *bytes, size_t length) {
    for (size_t i = 0; i < length; i++) bytes[i] = next_byte();
}

static void check_crc(void) {
    static const size_t edges[] = {383, 384, 385, 511, 512, 513, 1023, 1024, 1025, 4079, 4080,
                                    4095, 4096, 4097, 8192, 12288, 12289, 40000, 65537};
    size_t capacity = 65537 + 64;
    unsigned char *bytes = malloc(capacity), *copy = malloc(capacity + 2);
    if (!bytes || !copy) exit(2);
    fill(bytes, capacity);
    for (size_t n = 0; n < 300 + sizeof edges / sizeof edges[0]; n++) {
        size_t length = n < 300 ? n : edges[n - 300];
        for (size_t start = 0; start < 8; start++) {
            uint32_t expected = reference_crc(0x12345678u, bytes + start, length);
            uint32_t got = ft_crc32c_hardware_update(0x12345678u, bytes + start, length);
            CHECK(got == expected, "crc32c length %zu start %zu: %08x, not %08x", length, start, got, expected);
            memset(copy, 0xAA, length + 2);
            got = ft_crc32c_hardware_update_copying(0x12345678u, copy + 1, bytes + start, length);
            CHECK(got == expected, "crc32c copying length %zu start %zu", length, start);
            CHECK(memcmp(copy + 1, bytes + start, length) == 0, "crc32c copying copies, length %zu", length);
            CHECK(copy[0] == 0xAA && copy[length + 1] == 0xAA, "crc32c copying writes only its bytes");
        }
    }
    free(bytes);
    free(copy);
}

static void check_digest(void) {
    ft_fingerprint_key key;
    for (int i = 0; i < 8; i++) key.words[i] = (uint64_t)(i + 1) * 0x9E3779B97F4A7C15ULL;
    for (size_t length = 64; length <= 8192; length *= 2) {
        unsigned char *page = malloc(length + 16), *out = malloc(length + 16);
        if (!page || !out) exit(2);
        for (int round = 0; round < 8; round++) {
            fill(page, length + 16);
            size_t offset = (size_t)round * 2;  // sources at several alignments
            uint32_t crc = 0xFFFFFFFFu;
            uint64_t fingerprint = 0;
            int fused = ft_copy_page_digest(out, page + offset, length, &crc, &fingerprint, &key);
            CHECK(memcmp(out, page + offset, length) == 0, "digest copies a %zu-byte page", length);
            if (fused) {
                CHECK(crc == reference_crc(0xFFFFFFFFu, page + offset, length), "digest CRC of %zu bytes", length);
            }
            CHECK(fingerprint == ft_page_fingerprint(out, length, &key), "digest fingerprint of %zu bytes", length);
            out[length / 2] ^= 1;
            CHECK(ft_page_fingerprint(out, length, &key) != fingerprint, "one bit changes the fingerprint");
        }
        free(page);
        free(out);
    }
}

static void check_streaming_copy(void) {
    static const size_t edges[] = {4095, 4096, 4097, 65535, 65536, 65600, (1 << 20) - 1, 1 << 20};
    size_t capacity = (1 << 20) + 256;
    unsigned char *source = malloc(capacity), *target = malloc(capacity);
    if (!source || !target) exit(2);
    fill(source, capacity);
    for (size_t n = 0; n < 321 + sizeof edges / sizeof edges[0]; n++) {
        size_t length = n < 321 ? n : edges[n - 321];
        for (size_t alignment = 0; alignment < 64; alignment += (n < 321 ? 1 : 9)) {
            size_t from = alignment, to = (alignment * 7) % 64;
            memset(target, 0xC5, length + 128);
            ft_copy_concurrent_streaming(target + to, source + from, length);
            CHECK(memcmp(target + to, source + from, length) == 0, "streaming copy of %zu bytes", length);
            int untouched = 1;
            for (size_t i = 0; i < to; i++) untouched &= target[i] == 0xC5;
            for (size_t i = to + length; i < length + 128; i++) untouched &= target[i] == 0xC5;
            CHECK(untouched, "streaming copy of %zu bytes writes only its bytes", length);
        }
    }
    free(source);
    free(target);
}

int main(void) {
    if (!ft_crc32c_hardware_available()) {
        fprintf(stderr, "this CPU has no CRC32C instruction: nothing to check\n");
        return 1;
    }
    check_crc();
    check_digest();
    check_streaming_copy();
    printf("vector path %s: %lu checks, %lu failed\n", ft_simd_path_name(), checks, failures);
    return failures == 0 ? 0 : 1;
}
