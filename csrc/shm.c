/* shm.c: see shm.h. */
#include "shm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

int sq_anon_shm(void) {
#if defined(__linux__) && defined(MFD_CLOEXEC)
    return memfd_create("seqtools-ring", MFD_CLOEXEC);
#else
    char name[64];
    for (int i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "/seqtools-%ld-%d", (long)getpid(), i);
        int fd = shm_open(name, O_RDWR | O_CREAT | O_EXCL, 0600);
        if (fd >= 0) {
            shm_unlink(name);
            return fd;
        }
        if (errno != EEXIST) return -1;
    }
    errno = EEXIST;
    return -1;
#endif
}

int sq_fallocate(int fd, off_t len) {
#if defined(__linux__)
    return posix_fallocate(fd, 0, len);
#else
    (void)fd;
    (void)len;
    return 0;
#endif
}
