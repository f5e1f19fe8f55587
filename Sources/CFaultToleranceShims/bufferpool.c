// A cache of large blocks for ByteBuffer storage. Written for swift-fault-tolerance.
//
// A live copy moves megabyte buffers through a pipeline: a page batch is built, written to the
// socket and freed; a received frame is assembled, applied and freed. With malloc, each such
// block is a fresh mapping (or a heap top the allocator has just trimmed), so every 4 KiB of
// it costs a page fault when first written, about a quarter of the copy's time in a profile.
// Here freed blocks of at least 128 KiB are kept, resident, in size classes two to an octave
// (128, 192, 256, 384 KiB, ... 12, 16 MiB), up to a total of FT_POOL_MAX_BYTES, and handed out
// again; everything else goes to malloc.
#include "ft_shims.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

enum {
    HEADER = 64,                  // keeps the class before the block; preserves 16-byte alignment
    SMALLEST_CLASS_SHIFT = 17,    // 128 KiB
    CLASSES = 15,                 // up to 16 MiB
    PER_CLASS = 16,
};
#define FT_POOL_MAX_BYTES ((size_t)32 << 20)

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static void *free_blocks[CLASSES][PER_CLASS];
static int free_counts[CLASSES];
static size_t cached_bytes;

static size_t class_size(int class) {
    size_t base = (size_t)1 << (SMALLEST_CLASS_SHIFT + class / 2);
    return class % 2 ? base + base / 2 : base;
}

// The class whose blocks hold `total` bytes, or -1 when it is too small or too large to cache.
static int class_of(size_t total) {
    if (total < class_size(0) || total > class_size(CLASSES - 1)) return -1;
    int class = 0;
    while (class_size(class) < total) class++;
    return class;
}

void *ft_pool_allocate(size_t size) {
    if (size > SIZE_MAX - HEADER) return NULL;
    size_t total = size + HEADER;
    int class = class_of(total);
    unsigned char *block = NULL;
    if (class >= 0) {
        pthread_mutex_lock(&pool_lock);
        if (free_counts[class] > 0) {
            block = free_blocks[class][--free_counts[class]];
            cached_bytes -= class_size(class);
        }
        pthread_mutex_unlock(&pool_lock);
        if (!block) block = malloc(class_size(class));
    } else {
        block = malloc(total);
    }
    if (!block) return NULL;
    memcpy(block, &class, sizeof class);
    return block + HEADER;
}

void ft_pool_free(void *pointer) {
    if (!pointer) return;
    unsigned char *block = (unsigned char *)pointer - HEADER;
    int class;
    memcpy(&class, block, sizeof class);
    if (class >= 0) {
        pthread_mutex_lock(&pool_lock);
        int kept = 0;
        if (free_counts[class] < PER_CLASS && cached_bytes + class_size(class) <= FT_POOL_MAX_BYTES) {
            free_blocks[class][free_counts[class]++] = block;
            cached_bytes += class_size(class);
            kept = 1;
        }
        pthread_mutex_unlock(&pool_lock);
        if (kept) return;
    }
    free(block);
}

void *ft_pool_reallocate(void *pointer, size_t old_size, size_t new_size) {
    if (!pointer) return ft_pool_allocate(new_size);
    unsigned char *block = (unsigned char *)pointer - HEADER;
    int class;
    memcpy(&class, block, sizeof class);
    // Still fits its block: nothing to do.
    if (class >= 0 && new_size + HEADER <= class_size(class)) return pointer;
    void *moved = ft_pool_allocate(new_size);
    if (!moved) return NULL;
    memcpy(moved, pointer, old_size < new_size ? old_size : new_size);
    ft_pool_free(pointer);
    return moved;
}

void ft_pool_copy(void *destination, const void *source, size_t count) { memcpy(destination, source, count); }

size_t ft_pool_cached_bytes(void) {
    pthread_mutex_lock(&pool_lock);
    size_t bytes = cached_bytes;
    pthread_mutex_unlock(&pool_lock);
    return bytes;
}
