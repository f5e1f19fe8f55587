#define _GNU_SOURCE
#include "ft_shims.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>

#if defined(__linux__)
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

// Newer than the kernel headers this may be built against (Linux 6.7 added them).
#ifndef UFFD_FEATURE_WP_UNPOPULATED
#define UFFD_FEATURE_WP_UNPOPULATED (1 << 13)
#endif
#ifndef UFFD_FEATURE_WP_ASYNC
#define UFFD_FEATURE_WP_ASYNC (1 << 15)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif

struct ft_page_region {
    uint64_t start;
    uint64_t end;
    uint64_t categories;
};

struct ft_pm_scan_arg {
    uint64_t size;
    uint64_t flags;
    uint64_t start;
    uint64_t end;
    uint64_t walk_end;
    uint64_t vec;
    uint64_t vec_len;
    uint64_t max_pages;
    uint64_t category_inverted;
    uint64_t category_mask;
    uint64_t category_anyof_mask;
    uint64_t return_mask;
};

#define FT_PAGE_IS_WRITTEN (1 << 1)
#define FT_PM_SCAN_WP_MATCHING (1 << 0)
#define FT_PM_SCAN_CHECK_WPASYNC (1 << 1)
#define FT_PAGEMAP_SCAN _IOWR('f', 16, struct ft_pm_scan_arg)

int ft_uffd_open(void *address, size_t length, int *pagemap, char *what, size_t what_size) {
    *pagemap = -1;
    int fd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY);
    if (fd < 0) {
        snprintf(what, what_size, "userfaultfd(2)");
        return -1;
    }
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED};
    if (ioctl(fd, UFFDIO_API, &api) != 0) {
        int saved = errno;
        snprintf(what, what_size, "UFFDIO_API with UFFD_FEATURE_WP_ASYNC and UFFD_FEATURE_WP_UNPOPULATED");
        close(fd);
        errno = saved;
        return -1;
    }
    struct uffdio_register reg = {
        .range = {.start = (uint64_t)(uintptr_t)address, .len = length}, .mode = UFFDIO_REGISTER_MODE_WP};
    if (ioctl(fd, UFFDIO_REGISTER, &reg) != 0) {
        int saved = errno;
        snprintf(what, what_size, "UFFDIO_REGISTER in write-protect mode");
        close(fd);
        errno = saved;
        return -1;
    }
    int map = open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
    if (map < 0) {
        int saved = errno;
        snprintf(what, what_size, "open /proc/self/pagemap");
        close(fd);
        errno = saved;
        return -1;
    }
    // Probe PAGEMAP_SCAN (Linux 6.7+) with an empty scan.
    struct ft_page_region region;
    struct ft_pm_scan_arg arg = {
        .size = sizeof(arg), .flags = 0, .start = (uint64_t)(uintptr_t)address,
        .end = (uint64_t)(uintptr_t)address, .vec = (uint64_t)(uintptr_t)&region, .vec_len = 1,
        .category_mask = FT_PAGE_IS_WRITTEN, .return_mask = FT_PAGE_IS_WRITTEN};
    if (ioctl(map, FT_PAGEMAP_SCAN, &arg) < 0) {
        int saved = errno;
        snprintf(what, what_size, "ioctl PAGEMAP_SCAN on /proc/self/pagemap");
        close(map);
        close(fd);
        errno = saved;
        return -1;
    }
    *pagemap = map;
    return fd;
}

int ft_uffd_write_protect(int fd, void *address, size_t length) {
    struct uffdio_writeprotect wp = {
        .range = {.start = (uint64_t)(uintptr_t)address, .len = length}, .mode = UFFDIO_WRITEPROTECT_MODE_WP};
    return ioctl(fd, UFFDIO_WRITEPROTECT, &wp);
}

long ft_pagemap_scan_written(int pagemap, void *start, void *end, uint64_t *ranges, size_t capacity, void **walk_end) {
    struct ft_pm_scan_arg arg = {
        .size = sizeof(arg), .flags = FT_PM_SCAN_WP_MATCHING | FT_PM_SCAN_CHECK_WPASYNC,
        .start = (uint64_t)(uintptr_t)start, .end = (uint64_t)(uintptr_t)end,
        .vec = (uint64_t)(uintptr_t)ranges, .vec_len = capacity,
        .category_mask = FT_PAGE_IS_WRITTEN, .return_mask = FT_PAGE_IS_WRITTEN};
    long found = ioctl(pagemap, FT_PAGEMAP_SCAN, &arg);
    *walk_end = (void *)(uintptr_t)arg.walk_end;
    return found;
}

void ft_uffd_close(int fd, int pagemap) {
    if (pagemap >= 0) close(pagemap);
    if (fd >= 0) close(fd);
}
#else
int ft_uffd_open(void *address, size_t length, int *pagemap, char *what, size_t what_size) {
    (void)address; (void)length;
    *pagemap = -1;
    snprintf(what, what_size, "userfaultfd (Linux only)");
    errno = ENOSYS;
    return -1;
}
int ft_uffd_write_protect(int fd, void *address, size_t length) { (void)fd; (void)address; (void)length; errno = ENOSYS; return -1; }
long ft_pagemap_scan_written(int pagemap, void *start, void *end, uint64_t *ranges, size_t capacity, void **walk_end) {
    (void)pagemap; (void)start; (void)end; (void)ranges; (void)capacity; *walk_end = end; errno = ENOSYS; return -1;
}
void ft_uffd_close(int fd, int pagemap) { (void)fd; (void)pagemap; }
#endif
