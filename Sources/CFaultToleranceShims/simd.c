// Which vector code paths this process runs. Written for swift-fault-tolerance.
#include "ft_shims.h"

#include <stdlib.h>

#if defined(__x86_64__)
static int environment_says(const char *name) {
    const char *value = getenv(name);
    return value && value[0] == '1';
}

static int detect(void) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("sse4.2")) return FT_SIMD_PORTABLE;
    // Both wide paths fold CRC32C with VPCLMULQDQ; an AVX2 CPU without it (before Zen 3 or
    // Ice Lake) takes the SSE4.2 path, whose three CRC32C streams are as fast there.
    if (environment_says("FT_DISABLE_AVX2") || !__builtin_cpu_supports("avx2")
        || !__builtin_cpu_supports("vpclmulqdq") || !__builtin_cpu_supports("pclmul")) {
        return FT_SIMD_SSE42;
    }
    if (!environment_says("FT_DISABLE_AVX512") && __builtin_cpu_supports("avx512f")
        && __builtin_cpu_supports("avx512vl")) {
        return FT_SIMD_AVX512;
    }
    return FT_SIMD_AVX2;
}
#else
static int detect(void) { return FT_SIMD_PORTABLE; }
#endif

int ft_simd_level(void) {
    static int known = -1;
    int value = __atomic_load_n(&known, __ATOMIC_RELAXED);
    if (value < 0) {
        value = detect();
        __atomic_store_n(&known, value, __ATOMIC_RELAXED);
    }
    return value;
}

const char *ft_simd_path_name(void) {
#if defined(__aarch64__)
    return "aarch64";
#else
    switch (ft_simd_level()) {
    case FT_SIMD_AVX512: return "avx512";
    case FT_SIMD_AVX2: return "avx2";
    case FT_SIMD_SSE42: return "sse4.2";
    default: return "portable";
    }
#endif
}
