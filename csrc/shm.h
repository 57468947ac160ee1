/*
 * shm.h: the anonymous shared-memory region behind a ring (_ring.pyx maps it).
 * C with no Python API; errors are -1 (or an errno value) as for system calls.
 */
#ifndef SQ_SHM_H
#define SQ_SHM_H

#include <sys/mman.h>
#include <sys/types.h>

/* Systems without it reserve swap for shared mappings anyway. */
#ifndef MAP_NORESERVE
#define MAP_NORESERVE 0
#endif

/* A new shared-memory fd with no name left anywhere: a memfd (Linux) or an shm
 * object unlinked as soon as it is open.  The caller owns the fd (close-on-exec).
 * Returns -1 with errno set on failure. */
int sq_anon_shm(void);

/* Reserve the memory of the first len bytes of fd now (Linux; a no-op returning
 * 0 elsewhere), so that a shortage is an error here instead of SIGBUS at first
 * touch.  Returns 0, or an errno value (errno itself is left alone). */
int sq_fallocate(int fd, off_t len);

#endif
