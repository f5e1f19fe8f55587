#ifndef FT_FUSE_H
#define FT_FUSE_H

#include <stddef.h>
#include <stdint.h>

/// What a one-file FUSE filesystem asks its owner: every callback gets `context` back and
/// returns a byte count or zero on success, a negative errno on failure.
typedef struct ft_fuse_callbacks {
    void *context;
    long (*read)(void *context, char *buffer, size_t size, int64_t offset);
    long (*write)(void *context, const char *buffer, size_t size, int64_t offset);
    int (*synchronize)(void *context);
    uint64_t size;
    /// The file's name in the mount's root (no slash).
    const char *file_name;
} ft_fuse_callbacks;

typedef struct ft_fuse_handle ft_fuse_handle;

/// Mounts a filesystem holding one file at `mountpoint`. `allow_other` lets other users
/// (containers' users) open it. Returns NULL and sets `*error` (an errno, or -1 for a libfuse
/// failure it did not explain) when the mount fails.
ft_fuse_handle *ft_fuse_mount(const char *mountpoint, const ft_fuse_callbacks *callbacks, int allow_other, int *error);

/// Serves requests on the calling thread until ft_fuse_stop; returns libfuse's result.
int ft_fuse_loop(ft_fuse_handle *handle);

/// Asks the loop to end and detaches the mount (lazily: open files keep working until closed).
void ft_fuse_stop(ft_fuse_handle *handle);

/// Frees the handle once the loop has returned.
void ft_fuse_destroy(ft_fuse_handle *handle);

/// Detaches whatever is mounted at `mountpoint` (a mount left by a process that was killed).
int ft_fuse_detach(const char *mountpoint);

#endif
