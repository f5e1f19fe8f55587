#include "ft_shims.h"

#include <string.h>

#include "racy.h"

#if defined(FT_UNDER_TSAN)
__attribute__((no_sanitize("thread"))) __attribute__((noinline))
void ft_copy_concurrent(void *destination, const void *source, size_t length) {
    size_t i = 0;
    if ((((uintptr_t)destination | (uintptr_t)source) & 7) == 0) {
        volatile uint64_t *out = (volatile uint64_t *)destination;
        const volatile uint64_t *in = (const volatile uint64_t *)source;
        for (; i < length / 8; i++) out[i] = in[i];
        i *= 8;
    }
    volatile unsigned char *out = (volatile unsigned char *)destination;
    const volatile unsigned char *in = (const volatile unsigned char *)source;
    for (; i < length; i++) out[i] = in[i];
}
#else
void ft_copy_concurrent(void *destination, const void *source, size_t length) {
    memcpy(destination, source, length);
}
#endif
