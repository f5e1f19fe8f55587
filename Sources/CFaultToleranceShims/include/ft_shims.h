#ifndef FT_SHIMS_H
#define FT_SHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// Returns 1 when this CPU has a CRC32C instruction this library can use (SSE4.2 on x86_64,
/// the CRC extension on AArch64), otherwise 0.
int ft_crc32c_hardware_available(void);

/// The widest vector code this process runs, chosen once from the CPU's features and the
/// environment: `FT_DISABLE_AVX512=1` and `FT_DISABLE_AVX2=1` (which implies the first) rule
/// those paths out, so that tests cover every path on a machine that has them all.
enum {
    FT_SIMD_PORTABLE = 0,  ///< No SSE4.2 (or not x86_64): table CRC32C, scalar loops.
    FT_SIMD_SSE42 = 1,     ///< SSE4.2's CRC32C instruction and 16-byte vectors.
    FT_SIMD_AVX2 = 2,      ///< AVX2 with VPCLMULQDQ: 32-byte vectors, carry-less folding.
    FT_SIMD_AVX512 = 3,    ///< AVX-512 with VPCLMULQDQ: 64-byte vectors, carry-less folding.
};
int ft_simd_level(void);

/// The name of the path ft_simd_level chose ("avx512", "avx2", "sse4.2", "aarch64", "portable").
const char *ft_simd_path_name(void);

/// Continues a CRC32C computation over `length` bytes with the hardware instruction.
/// `crc` is the running value *before* the final inversion (start with 0xFFFFFFFF).
/// Must only be called when `ft_crc32c_hardware_available()` returned 1.
uint32_t ft_crc32c_hardware_update(uint32_t crc, const void *bytes, size_t length);

/// `ft_crc32c_hardware_update` over `source` that also copies it to `destination` (the two
/// must not overlap), reading each byte once where the CPU allows.
uint32_t ft_crc32c_hardware_update_copying(uint32_t crc, void *destination, const void *source, size_t length);

/// `fallocate(2)` on Linux (Glibc's Swift module does not export it); elsewhere fails with
/// `EOPNOTSUPP`. Returns 0 or -1 with `errno` set.
int ft_fallocate(int fd, int mode, int64_t offset, int64_t length);

/// `sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)` on Linux: starts writing the
/// range's dirty pages back without waiting (it makes nothing durable); elsewhere does nothing.
/// Returns 0 or -1 with `errno` set.
int ft_start_writeback(int fd, int64_t offset, int64_t length);

/// Atomically sets bit `bit` of the bitmap `words` (release ordering: the data written before
/// this call is visible to whoever takes the bit with `ft_bitmap_take`).
static inline void ft_bitmap_set(uint64_t *words, size_t bit) {
    __atomic_fetch_or(&words[bit >> 6], (uint64_t)1 << (bit & 63), __ATOMIC_RELEASE);
}

/// `ft_bitmap_set` that returns the word as it was before (0: this bit made the word non-empty,
/// so a summary level must be told).
static inline uint64_t ft_bitmap_fetch_set(uint64_t *words, size_t bit) {
    return __atomic_fetch_or(&words[bit >> 6], (uint64_t)1 << (bit & 63), __ATOMIC_RELEASE);
}

/// `ft_bitmap_or` that returns the word as it was before.
static inline uint64_t ft_bitmap_fetch_or(uint64_t *word, uint64_t bits) {
    return __atomic_fetch_or(word, bits, __ATOMIC_RELEASE);
}

/// Atomically reads and clears one word of a bitmap (acquire and release ordering).
static inline uint64_t ft_bitmap_take(uint64_t *word) {
    return __atomic_exchange_n(word, (uint64_t)0, __ATOMIC_ACQ_REL);
}

/// Atomically reads one word of a bitmap without changing it (relaxed ordering: a count).
static inline uint64_t ft_bitmap_load(const uint64_t *word) {
    return __atomic_load_n(word, __ATOMIC_RELAXED);
}

/// Atomically ORs `bits` into one word of a bitmap (release ordering).
static inline void ft_bitmap_or(uint64_t *word, uint64_t bits) {
    __atomic_fetch_or(word, bits, __ATOMIC_RELEASE);
}

/// Copies `length` bytes from memory that other threads may be writing at the same time (a live
/// copy reads pages while writers run; a torn page is marked dirty again and recopied). Under
/// ThreadSanitizer this is an uninstrumented word loop, since the race is intended; otherwise it
/// is `memcpy`.
void ft_copy_concurrent(void *destination, const void *source, size_t length);

/// `ft_copy_concurrent` into memory that will not be read again soon (a copy's destination
/// region): stores that bypass the cache (non-temporal, on every x86_64 and AArch64 CPU), so
/// that a copy made in runs of a megabyte runs at the speed of one large `memcpy` (which
/// switches to such stores itself past a size near the cache's) instead of about half of it.
/// The stores are ordered (a fence) before it returns.
void ft_copy_concurrent_streaming(void *destination, const void *source, size_t length);

/// The secret of a page fingerprint: 64 random bytes drawn once per copy session, so that
/// nobody who cannot read them can craft two pages with the same fingerprint.
typedef struct {
    uint64_t words[8];
} ft_fingerprint_key;

/// Copies a page of `length` bytes (a multiple of 16, at least 48) that writers may be changing,
/// reading each word once, and stores the copied bytes' 64-bit fingerprint under `key` in
/// `*fingerprint`.
/// Pass `crc` (a CRC32C register as in `ft_crc32c_hardware_update`) only when
/// `ft_crc32c_hardware_available()`; when it returns 1 it advanced `*crc` over the copied
/// bytes (4 KiB pages); when it returns 0 the caller computes the CRC32C itself.
int ft_copy_page_digest(
    void *destination, const void *source, size_t length, uint32_t *crc, uint64_t *fingerprint,
    const ft_fingerprint_key *key);

/// The fingerprint `ft_copy_page_digest` gives a page of these bytes under `key`.
uint64_t ft_page_fingerprint(const void *page, size_t length, const ft_fingerprint_key *key);

/// Creates a userfaultfd in asynchronous write-protect mode over `[address, address+length)`
/// and opens `/proc/self/pagemap` for `PAGEMAP_SCAN` (probing that it works). Returns the
/// userfaultfd and stores the pagemap descriptor in `*pagemap`, or returns -1 with `errno` set
/// and the failing step named in `what`.
int ft_uffd_open(void *address, size_t length, int *pagemap, char *what, size_t what_size);

/// Write-protects `[address, address+length)`: the next write to each page marks it written.
int ft_uffd_write_protect(int fd, void *address, size_t length);

/// Scans `[start, end)` for written pages and write-protects them again in the same step.
/// Fills `ranges` with up to `capacity` triples (start, end, categories); returns how many, or
/// -1 with `errno` set. `*walk_end` is where the scan stopped (before `end` when `ranges` filled).
long ft_pagemap_scan_written(int pagemap, void *start, void *end, uint64_t *ranges, size_t capacity, void **walk_end);

/// Closes both descriptors.
void ft_uffd_close(int fd, int pagemap);

/// Allocation functions for `ByteBuffer` storage that keep freed blocks of 128 KiB to 16 MiB
/// resident for reuse (up to 32 MiB in all), so megabyte buffers passed along a pipeline do
/// not page-fault on every use. Blocks from these functions must be freed and resized only by
/// them. Thread-safe.
void *ft_pool_allocate(size_t size);
void *ft_pool_reallocate(void *pointer, size_t old_size, size_t new_size);
void ft_pool_free(void *pointer);
void ft_pool_copy(void *destination, const void *source, size_t count);
/// Bytes currently cached by the pool.
size_t ft_pool_cached_bytes(void);

#endif
