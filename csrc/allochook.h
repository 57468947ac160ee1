/*
 * allochook.h: the worker's numpy allocation hook (NEP 49), the C side.
 *
 * A sampler's last step is usually numpy building the batch (np.stack, a fancy
 * index, arithmetic): without help, the worker then copies that array into a ring
 * block.  In a worker, these allocator functions place the large arrays the
 * task's code allocates straight in *kept* ring blocks (sq_ring_keep): blocks of
 * this worker's own, which a commit hands over only when told to.  When such an
 * array is in the result, referenced by nothing else, the commit adopts its block
 * (sqh_find, then sqh_adopted) and the parent views the array where numpy built
 * it: no copy at all.  Any other array keeps its block until numpy frees it
 * (sq_ring_unkeep), whatever the worker's code does with it.
 *
 * What is hooked: allocations (not calloc: a ring block is not known zero) of at
 * least `min_size` bytes made on the thread that called sqh_setup, in the process
 * that called it (never in a child it forks), while sqh_set_active(1) is in force
 * and sqh_disable was not called, for at most SQH_MAX arrays at once, while the
 * hooked blocks take at most capacity / (2 * nworkers) of the ring in all.  A
 * hooked block never waits for space: with none free, the default allocator
 * serves the request.  Everything else goes to the default allocator.
 *
 * There is one hook per process (static state).  C with no Python API: _ring.pyx
 * wraps these functions in numpy's PyDataMem_Handler.
 */
#ifndef SQ_ALLOCHOOK_H
#define SQ_ALLOCHOOK_H

#include <stddef.h>
#include <stdint.h>

#include "ringbuf.h"
#include "sq_limits.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The four functions of an allocator and their context: the members and types
 * of numpy's PyDataMemAllocator (_ring.pyx copies them member by member). */
typedef struct {
    void *ctx;
    void *(*malloc)(void *ctx, size_t size);
    void *(*calloc)(void *ctx, size_t nelem, size_t elsize);
    void *(*realloc)(void *ctx, void *ptr, size_t new_size);
    void (*free)(void *ctx, void *ptr, size_t size);
} sqh_allocator;

/* States of an entry (one per hooked array). */
enum { SQH_EMPTY = 0, SQH_LIVE = 1, SQH_ADOPTED = 2 };

typedef struct {
    int installed, enabled;
    uint64_t hooked;        /* arrays ever placed in the ring */
    uint64_t adopted;       /* of them, adopted by a commit */
    int live;               /* arrays in kept blocks now */
    uint64_t live_bytes;    /* bytes of their blocks */
    int adopted_alive;      /* arrays adopted whose numpy free has not come */
} sqh_stats;

/* Once per process, on the thread whose allocations are to be hooked, before the
 * allocator functions below are handed to numpy: hook allocations into kept
 * blocks of producer `slot` of ring `r`, mapped at [base, base + map_size), each
 * array `headroom` bytes into its block.  `dflt` (copied) serves everything else;
 * the hook starts inactive (sqh_set_active).  Returns 0, or -1 if it was already
 * set up (nothing changes then). */
int sqh_setup(sq_ring *r, char *base, size_t map_size, int slot, uint64_t headroom,
              uint64_t min_size, const sqh_allocator *dflt);

/* True once sqh_setup succeeded in this process. */
int sqh_installed(void);

/* Hook allocations from now on (1) or not (0): the worker turns it on while a
 * task's code runs. */
void sqh_set_active(int on);

/* Hook nothing more, for good; frees of hooked arrays still come back. */
void sqh_disable(void);

/* The allocator: numpy's malloc, calloc, realloc and free (ctx unused). */
void *sqh_malloc(void *ctx, size_t size);
void *sqh_calloc(void *ctx, size_t nelem, size_t elsize);
void *sqh_realloc(void *ctx, void *ptr, size_t new_size);
void sqh_free(void *ctx, void *ptr, size_t size);

/* If `ptr` is a live hooked array of at least `nbytes` bytes: 1, with its kept
 * block's payload offset and size; else 0. */
int sqh_find(const char *ptr, size_t nbytes, uint64_t *offset, uint64_t *block_bytes);

/* The kept block at payload `offset` went over in a commit: the parent holds it
 * now, and numpy's free of its array leaves the ring alone. */
void sqh_adopted(uint64_t offset);

/* Entries in `state` (SQH_LIVE or SQH_ADOPTED); 0 before sqh_setup. */
int sqh_count(int state);

void sqh_get_stats(sqh_stats *out);

#ifdef __cplusplus
}
#endif

#endif
