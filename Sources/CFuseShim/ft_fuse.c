// A FUSE filesystem of one file whose reads, writes and fsyncs go to callbacks (libfuse3's
// high-level API, single-threaded loop).
#define FUSE_USE_VERSION 31
#define _FILE_OFFSET_BITS 64
#define _GNU_SOURCE

#include <fuse3/fuse.h>

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>

#include "ft_fuse.h"

struct ft_fuse_handle {
    struct fuse *fuse;
    ft_fuse_callbacks callbacks;
    char *mountpoint;
    char *file_path;  // "/" + file_name
};

static ft_fuse_handle *current(void) { return (ft_fuse_handle *)fuse_get_context()->private_data; }

static int ft_getattr(const char *path, struct stat *st, struct fuse_file_info *fi) {
    (void)fi;
    ft_fuse_handle *h = current();
    memset(st, 0, sizeof(*st));
    if (strcmp(path, "/") == 0) {
        st->st_mode = S_IFDIR | 0755;
        st->st_nlink = 2;
        return 0;
    }
    if (strcmp(path, h->file_path) == 0) {
        st->st_mode = S_IFREG | 0660;
        st->st_nlink = 1;
        st->st_size = (off_t)h->callbacks.size;
        st->st_blksize = 4096;
        st->st_blocks = (blkcnt_t)((h->callbacks.size + 511) / 512);
        return 0;
    }
    return -ENOENT;
}

static int ft_readdir(const char *path, void *buffer, fuse_fill_dir_t fill, off_t offset, struct fuse_file_info *fi,
                      enum fuse_readdir_flags flags) {
    (void)offset;
    (void)fi;
    (void)flags;
    if (strcmp(path, "/") != 0) return -ENOENT;
    fill(buffer, ".", NULL, 0, 0);
    fill(buffer, "..", NULL, 0, 0);
    fill(buffer, current()->file_path + 1, NULL, 0, 0);
    return 0;
}

static int ft_open(const char *path, struct fuse_file_info *fi) {
    if (strcmp(path, current()->file_path) != 0) return -ENOENT;
    if (fi->flags & O_TRUNC) return -EPERM;
    return 0;
}

static int ft_truncate(const char *path, off_t size, struct fuse_file_info *fi) {
    (void)fi;
    if (strcmp(path, current()->file_path) != 0) return -ENOENT;
    // The volume's size is fixed; truncating to it is a no-op (shells' redirections ask).
    return (uint64_t)size == current()->callbacks.size ? 0 : -EPERM;
}

static int ft_read(const char *path, char *buffer, size_t size, off_t offset, struct fuse_file_info *fi) {
    (void)fi;
    ft_fuse_handle *h = current();
    if (strcmp(path, h->file_path) != 0) return -ENOENT;
    if (offset < 0) return -EINVAL;
    if ((uint64_t)offset >= h->callbacks.size) return 0;
    if (size > h->callbacks.size - (uint64_t)offset) size = (size_t)(h->callbacks.size - (uint64_t)offset);
    return (int)h->callbacks.read(h->callbacks.context, buffer, size, (int64_t)offset);
}

static int ft_write(const char *path, const char *buffer, size_t size, off_t offset, struct fuse_file_info *fi) {
    (void)fi;
    ft_fuse_handle *h = current();
    if (strcmp(path, h->file_path) != 0) return -ENOENT;
    if (offset < 0 || (uint64_t)offset > h->callbacks.size || size > h->callbacks.size - (uint64_t)offset) {
        return -ENOSPC;
    }
    return (int)h->callbacks.write(h->callbacks.context, buffer, size, (int64_t)offset);
}

static int ft_fsync(const char *path, int datasync, struct fuse_file_info *fi) {
    (void)datasync;
    (void)fi;
    ft_fuse_handle *h = current();
    if (strcmp(path, h->file_path) != 0) return -ENOENT;
    return h->callbacks.synchronize(h->callbacks.context);
}

static int ft_flush(const char *path, struct fuse_file_info *fi) {
    (void)path;
    (void)fi;
    return 0;
}

static void *ft_init(struct fuse_conn_info *conn, struct fuse_config *config) {
    (void)conn;
    // Every read reaches the volume: the page cache must not answer for a block the volume
    // has since changed (a migration switch, a write by another path).
    config->direct_io = 1;
    config->kernel_cache = 0;
    config->attr_timeout = 1.0;
    config->entry_timeout = 1.0;
    return fuse_get_context()->private_data;
}

static const struct fuse_operations ft_operations = {
    .init = ft_init,
    .getattr = ft_getattr,
    .readdir = ft_readdir,
    .open = ft_open,
    .truncate = ft_truncate,
    .read = ft_read,
    .write = ft_write,
    .fsync = ft_fsync,
    .flush = ft_flush,
};

ft_fuse_handle *ft_fuse_mount(const char *mountpoint, const ft_fuse_callbacks *callbacks, int allow_other, int *error) {
    *error = 0;
    if (callbacks->file_name == NULL || callbacks->file_name[0] == 0 || strchr(callbacks->file_name, '/') != NULL) {
        *error = EINVAL;
        return NULL;
    }
    ft_fuse_handle *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        *error = ENOMEM;
        return NULL;
    }
    h->callbacks = *callbacks;
    h->mountpoint = strdup(mountpoint);
    size_t length = strlen(callbacks->file_name);
    h->file_path = malloc(length + 2);
    if (h->mountpoint == NULL || h->file_path == NULL) {
        ft_fuse_destroy(h);
        *error = ENOMEM;
        return NULL;
    }
    h->file_path[0] = '/';
    memcpy(h->file_path + 1, callbacks->file_name, length + 1);
    char *argv[] = {"ftctl", "-o", allow_other ? "allow_other" : "default_permissions", NULL};
    struct fuse_args args = FUSE_ARGS_INIT(3, argv);
    h->fuse = fuse_new(&args, &ft_operations, sizeof(ft_operations), h);
    if (h->fuse == NULL) {
        ft_fuse_destroy(h);
        *error = -1;
        return NULL;
    }
    if (fuse_mount(h->fuse, mountpoint) != 0) {
        *error = errno != 0 ? errno : -1;
        fuse_destroy(h->fuse);
        h->fuse = NULL;
        ft_fuse_destroy(h);
        return NULL;
    }
    return h;
}

int ft_fuse_loop(ft_fuse_handle *handle) { return fuse_loop(handle->fuse); }

void ft_fuse_stop(ft_fuse_handle *handle) {
    fuse_exit(handle->fuse);
    // The loop waits in a read of /dev/fuse; detaching the mount ends that read.
    umount2(handle->mountpoint, MNT_DETACH);
}

void ft_fuse_destroy(ft_fuse_handle *handle) {
    if (handle == NULL) return;
    if (handle->fuse != NULL) {
        fuse_unmount(handle->fuse);
        fuse_destroy(handle->fuse);
    }
    free(handle->mountpoint);
    free(handle->file_path);
    free(handle);
}

int ft_fuse_detach(const char *mountpoint) { return umount2(mountpoint, MNT_DETACH) == 0 ? 0 : errno; }
