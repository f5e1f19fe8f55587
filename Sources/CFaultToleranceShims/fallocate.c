#define _GNU_SOURCE
#include "ft_shims.h"

#include <errno.h>
#include <fcntl.h>

int ft_fallocate(int fd, int mode, int64_t offset, int64_t length) {
#if defined(__linux__)
    return fallocate(fd, mode, (off_t)offset, (off_t)length);
#else
    (void)fd; (void)mode; (void)offset; (void)length;
    errno = EOPNOTSUPP;
    return -1;
#endif
}

int ft_start_writeback(int fd, int64_t offset, int64_t length) {
#if defined(__linux__)
    return sync_file_range(fd, (off_t)offset, (off_t)length, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd; (void)offset; (void)length;
    return 0;
#endif
}
