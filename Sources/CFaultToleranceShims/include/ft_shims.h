#ifndef FT_SHIMS_H
#define FT_SHIMS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// Returns 1 when this CPU has a CRC32C instruction this library can use (SSE4.2 on x86_64,
/// the CRC extension on AArch64), otherwise 0.
int ft_crc32c_hardware_available(void);

/// Continues a CRC32C computation over `length` bytes with the hardware instruction.
/// `crc` is the running value *before* the final inversion (start with 0xFFFFFFFF).
/// Must only be called when `ft_crc32c_hardware_available()` returned 1.
uint32_t ft_crc32c_hardware_update(uint32_t crc, const void *bytes, size_t length);

/// `fallocate(2)` on Linux (Glibc's Swift module does not export it); elsewhere fails with
/// `EOPNOTSUPP`. Returns 0 or -1 with `errno` set.
int ft_fallocate(int fd, int mode, int64_t offset, int64_t length);

#endif
