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
