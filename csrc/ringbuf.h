/*
 * ringbuf.h: shared-memory ring-buffer allocator, task dispenser and completion
 * queue, shared by one consumer (the parent process) and several producers (worker
 * processes).  C with no Python API: every function returns an int status code.
 *
 * One shared region holds everything:
 *
 *   [ sq_ring header | worker slots | completion queue | retry list ][ data area ]
 *   0                                                   data_offset ^          ^
 *                                                       data_offset + capacity
 *
 * The region is a memfd (or an unlinked shm object) created by the parent and
 * mapped by every process at a (possibly) different address: all positions are
 * offsets from the start of the region, never pointers.
 *
 * Producers (workers) loop: sq_task_claim -> compute -> sq_ring_reserve -> write ->
 * sq_ring_commit.  The consumer (parent) loops: sq_ring_pop -> hand the block to
 * the user -> sq_ring_release once the user drops it (in any order).  Allocation
 * is next-fit from a cursor going round the data area, stepping over blocks still
 * held: released space is reusable at once, and a result held for long never
 * stalls the ring (see ringbuf.c).  Producers that had to wait for space are
 * served in the order they began waiting (a timed-out wait keeps its place).
 *
 * Synchronisation: one process-shared, robust pthread mutex guards the header
 * (a process killed while holding it is recovered through EOWNERDEAD: the next
 * locker completes a commit it left half done, from the journal in its slot, and
 * counts the blocks again).  A mutex that cannot be locked (not recoverable)
 * makes every call that locks return SQ_ESYS with errno set, a call asleep in a
 * wait included: the call touches no shared state without the lock, nor unlocks
 * a mutex it does not hold.  Sleepers wait on event counters with a futex
 * (Linux; short polling elsewhere): producers for space, tasks, sizing or close;
 * the consumer for completions and size requests.  A futex holds no state for
 * its waiters, so a SIGKILLed sleeper cannot wedge the others (a process-shared
 * pthread_cond_t can).  Every wait takes a timeout so callers can check for a
 * dead peer between waits.
 */
#ifndef SQ_RINGBUF_H
#define SQ_RINGBUF_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Status codes. */
#define SQ_OK 0
#define SQ_TIMEOUT 1       /* the wait timed out; nothing changed */
#define SQ_UNSIZED 2       /* pop: a producer asked for the data area to be sized */
#define SQ_CLOSED (-1)     /* the ring was closed (shutdown); stop */
#define SQ_ETOOBIG (-2)    /* the block can never fit in the data area */
#define SQ_EINVAL (-3)     /* bad argument (worker id, offset, sizes) */
#define SQ_ESYS (-4)       /* a system call failed; errno is set */
#define SQ_ECORRUPT (-5)   /* the header or a block header is not what it must be */
#define SQ_EFULL (-6)      /* completion queue full (commit, post: wait for the
                            * consumer and try again), or a task holds the most
                            * blocks it may (reserve), or retry list full */

#define SQ_ALIGN 64        /* block payloads start on 64-byte boundaries */
#define SQ_BLOCK_HEADER 64 /* bytes in front of each payload */

/* Kinds of completion entries (sq_entry.kind). */
#define SQ_KIND_RESULT 0   /* payload holds a result */
#define SQ_KIND_ERROR 1    /* the task failed: the error report travels in the
                            * entry's block (offset != 0, committed like a
                            * result); with no block (offset 0, sq_ring_post) the
                            * report did not fit even shortened, and the entry
                            * only says that the task failed */
#define SQ_KIND_USER 2     /* first free value for callers */
/* The ring does not look at kinds: every kind is queued, popped and released the
 * same way, with or without a block. */

typedef struct sq_ring sq_ring;

/* A completed piece of work, as the consumer receives it. */
typedef struct {
    uint64_t offset;     /* payload offset from the region start; 0 if no block */
    uint64_t nbytes;     /* payload size as reserved */
    int64_t index;       /* task index claimed with sq_task_claim */
    uint64_t generation; /* task generation claimed with sq_task_claim */
    int32_t worker;      /* producer slot */
    uint32_t kind;       /* SQ_KIND_* */
} sq_entry;

typedef struct {
    uint64_t capacity;       /* bytes in the data area (0: not sized yet) */
    uint64_t used;           /* bytes between tail and head (blocks not yet freed) */
    uint64_t reserved;       /* blocks reserved, not yet committed */
    uint64_t committed;      /* blocks committed, not yet popped */
    uint64_t popped;         /* blocks popped, not yet released */
    uint64_t space_waiters;  /* producers waiting for space in sq_ring_reserve */
    uint64_t requested;      /* largest size asked for while unsized */
    uint64_t largest_free;   /* largest run of free space, block headers included */
    uint64_t waiting_for;    /* largest block (header included) a sleeping producer
                                waits for in sq_ring_reserve; 0 if none */
    uint64_t kept;           /* blocks kept by producers (sq_ring_keep) */
    /* For telling a stalled ring (nothing can move until the consumer releases or
     * pops) from a slow one, asked by a consumer that waits.  A producer asleep
     * in sq_ring_reserve waits for space, one asleep in sq_task_claim for a task
     * that only the consumer can give (it advances the window when it gets the
     * result it waits for): neither can move.  Any other producer (computing,
     * writing, committing) is counted as able to move.  A producer that died
     * and was not yet reset (sq_worker_reset) counts as it was when it died. */
    uint64_t reserved_active;     /* reserved blocks of producers awake */
    uint64_t kept_active;         /* kept blocks of producers awake */
    uint64_t sleeping_in_reserve; /* producers asleep in sq_ring_reserve */
    /* Event counters (they wrap round): compare two readings for equality. */
    uint64_t space_events;        /* producers waiting for space may go on: space
                                     freed or added, their turn, close */
    uint64_t ready_events;        /* the consumer may go on: entries queued, a
                                     sizing request, close */
    uint64_t queued;              /* entries queued, not yet popped */
} sq_stats;

/* Bytes of header for nworkers producers and a completion queue of qlen entries;
 * the data area starts there (a multiple of 4096). */
size_t sq_ring_header_size(int nworkers, int qlen);

/* Parent, once, on a zeroed mapping of at least sq_ring_header_size() bytes:
 * initialise the header.  capacity may be 0 (sized later by sq_ring_set_capacity);
 * it must be a multiple of SQ_ALIGN.  Returns SQ_OK, SQ_EINVAL or SQ_ESYS. */
int sq_ring_init(void *region, int nworkers, int qlen, uint64_t capacity);

/* Any process, after mapping the region: check the magic number and version.
 * Returns SQ_OK or SQ_ECORRUPT. */
int sq_ring_check(const void *region);

/* Parent: publish the data area size after growing the mapping to
 * data_offset + capacity bytes; wakes producers waiting for it.  Only once:
 * SQ_EINVAL if already sized or capacity not a positive multiple of SQ_ALIGN. */
int sq_ring_set_capacity(sq_ring *r, uint64_t capacity);
/* Consumer: enlarge a sized data area to `capacity` bytes (a multiple of SQ_ALIGN,
 * larger than now), adding free space at its end, and wake producers waiting for
 * space.  The caller has made the region that large (the mapping already covers
 * it).  SQ_EINVAL for an unsized ring or a capacity not larger. */
int sq_ring_grow(sq_ring *r, uint64_t capacity);
/* Consumer: the data area may be grown up to max_capacity bytes (a multiple of
 * SQ_ALIGN; 0, the default: it is not grown).  A reserve larger than the area
 * but within max_capacity then waits, as for space, rather than failing with
 * SQ_ETOOBIG: the consumer sees it in sq_stats.waiting_for and may grow the
 * area.  Returns SQ_OK, SQ_EINVAL. */
int sq_ring_set_max_capacity(sq_ring *r, uint64_t max_capacity);

/* Any process or thread, without the lock.  The data offset and the number of
 * producers never change; the capacity grows only (0, then sized, then larger),
 * and is read with acquire ordering: a process that sees a capacity sees the
 * block headers that tile the data area up to it. */
uint64_t sq_ring_data_offset(const sq_ring *r);
uint64_t sq_ring_capacity(const sq_ring *r);
int sq_ring_nworkers(const sq_ring *r);

/* Producer `worker`: reserve a contiguous payload of nbytes (rounded up to
 * SQ_ALIGN).  Waits while the ring is full (backpressure) or not yet sized (the
 * request is recorded so the consumer can size it), up to timeout seconds.
 * On SQ_OK *offset is the payload offset.  Returns SQ_OK, SQ_TIMEOUT (call again
 * after checking the parent is alive), SQ_CLOSED, SQ_ETOOBIG, SQ_EINVAL, SQ_EFULL
 * (the task already holds the most blocks one task may hold). */
int sq_ring_reserve(sq_ring *r, int worker, uint64_t nbytes, double timeout,
                    uint64_t *offset);

/* Producer: the payload at offset is written; queue it for the consumer with the
 * task it answers.  Every other block the worker holds reserved is handed over
 * with it, atomically, as a block the consumer holds (a result may span several
 * blocks: the payload names the others).  Returns SQ_OK, SQ_EINVAL, SQ_ECORRUPT,
 * SQ_EFULL (completion queue full; nothing changed). */
int sq_ring_commit(sq_ring *r, int worker, uint64_t offset, int64_t index,
                   uint64_t generation, uint32_t kind);

/* Producer: sq_ring_commit that also hands over `nadopt` blocks it kept
 * (sq_ring_keep), named by their payload offsets, as blocks the consumer holds;
 * the main block at `offset` may itself be a kept block.  All or nothing:
 * SQ_ECORRUPT (nothing changed) unless each adopted offset is a distinct kept
 * block of this worker.  Blocks it keeps and does not adopt stay kept. */
int sq_ring_commit_n(sq_ring *r, int worker, uint64_t offset, int64_t index,
                     uint64_t generation, uint32_t kind, const uint64_t *adopt,
                     int nadopt);

/* Producer: allocate a block of nbytes that stays the worker's own across tasks
 * (for memory its code allocates, which may or may not end up in a result):
 * sq_ring_commit hands it over only if adopted, sq_ring_cancel leaves it, and
 * only sq_ring_unkeep (or sq_worker_reset after a death) frees it.  Never waits:
 * SQ_TIMEOUT if the ring is unsized, if no free run is large enough now, or if
 * the bytes in use would pass max_used.  Returns SQ_OK (*offset: the payload),
 * SQ_TIMEOUT, SQ_CLOSED, SQ_EINVAL, SQ_ETOOBIG. */
int sq_ring_keep(sq_ring *r, int worker, uint64_t nbytes, uint64_t max_used,
                 uint64_t *offset);

/* Producer: free a block it kept.  Returns SQ_OK, SQ_EINVAL (no such block),
 * SQ_ECORRUPT (not a block this worker keeps). */
int sq_ring_unkeep(sq_ring *r, int worker, uint64_t offset);

/* Producer: give back every block it reserved and will not commit (its task
 * failed half-way).  Returns SQ_OK, SQ_EINVAL, SQ_ECORRUPT. */
int sq_ring_cancel(sq_ring *r, int worker);

/* Producer: queue an entry that has no block (e.g. SQ_KIND_ERROR), answering the
 * task it holds.  Returns SQ_OK, SQ_EINVAL, SQ_EFULL (completion queue full;
 * nothing changed: wait for the consumer to pop, then post again), SQ_ESYS. */
int sq_ring_post(sq_ring *r, int worker, int64_t index, uint64_t generation,
                 uint32_t kind);

/* Consumer: take the oldest queued entry, waiting up to timeout seconds.
 * Returns SQ_OK, SQ_TIMEOUT, SQ_UNSIZED (data area not sized and a producer asked
 * for *requested bytes: size it, then pop again), SQ_CLOSED. */
int sq_ring_pop(sq_ring *r, double timeout, sq_entry *out, uint64_t *requested);

/* Consumer: sq_ring_pop with coalesced wake-ups.  An entry already queued is
 * taken at once; otherwise the consumer sleeps until `want` entries are queued
 * (not until the first), the ring is closed or sized, or the timeout passes, and
 * then takes the oldest entry if there is one.  Producers whose commit leaves
 * fewer than `want` queued skip the wake-up.  `want` is a hint: a timeout with
 * fewer queued still returns one of them.  want <= 1 is sq_ring_pop. */
int sq_ring_pop_n(sq_ring *r, double timeout, uint64_t want, sq_entry *out,
                  uint64_t *requested);

/* Consumer (any thread of the parent): free the block whose payload is at offset.
 * Blocks may be released in any order. Returns SQ_OK, SQ_EINVAL, SQ_ECORRUPT. */
int sq_ring_release(sq_ring *r, uint64_t offset);

/* Consumer, after producer `worker` died: free the blocks it had reserved but
 * not committed, and give back its task.  If it was working on a task of the
 * current generation, that task goes on the retry list (claimed again first) and
 * *index is set to it (else -1); *deaths counts how many producers died in a row
 * while holding that same index (for poison-item detection): the count is
 * forgotten when the task completes (a commit or post for it in the current
 * generation) or is dropped (sq_task_drop).  The slot is then free for a new
 * producer.  Returns SQ_OK, SQ_EINVAL, SQ_EFULL. */
int sq_worker_reset(sq_ring *r, int worker, int64_t *index, int *deaths);

/* Producer: wait for the next task (retry list first, then next_index while
 * next_index < end (end < 0: unbounded) and next_index < window_base + window).
 * Records it as the worker's current task.  Returns SQ_OK, SQ_TIMEOUT, SQ_CLOSED. */
int sq_task_claim(sq_ring *r, int worker, double timeout, int64_t *index,
                  uint64_t *generation);

/* Consumer: the task producer `worker` is computing or sending (-1: none of
 * the current generation) in *index, and in *running_ns the nanoseconds since
 * it claimed it (0 with none): what a stuck worker is stuck on. A snapshot taken
 * under the lock. Returns SQ_OK, SQ_EINVAL. */
int sq_worker_task(sq_ring *r, int worker, int64_t *index, uint64_t *running_ns);

/* Consumer: the nanoseconds the producers of slot `worker` have spent with a
 * task in hand (from its claim to its commit or post: computing it, writing it,
 * waiting for space), the running task's time so far included, in *busy_ns:
 * what loader statistics call busy. A dead producer's last task is not counted.
 * Returns SQ_OK, SQ_EINVAL, SQ_ESYS. */
int sq_worker_busy(sq_ring *r, int worker, uint64_t *busy_ns);

/* Consumer: start a new generation handing out tasks start, start+1, ... < end
 * (end < 0: unbounded) with at most `window` tasks ahead of window_base = start.
 * A generation is one run of the task numbering, counted from 1: every restart
 * (the consumer seeking, or starting over) begins the next one, and each claim,
 * entry and answer carries the generation it belongs to, so that the consumer
 * can drop answers to tasks of an older run, whose indices it now reuses.
 * Empties the retry list; results of older generations should be dropped by the
 * consumer.  On SQ_OK *generation (if not NULL) is the new generation.  Returns
 * SQ_OK or SQ_ESYS (the mutex cannot be locked; nothing changed). */
int sq_task_reset(sq_ring *r, int64_t start, int64_t end, int64_t window,
                  uint64_t *generation);

/* Consumer: remove `index` from the retry list (an item that keeps killing its
 * producers is given up on) and forget its death count.  Returns SQ_OK or
 * SQ_ESYS. */
int sq_task_drop(sq_ring *r, int64_t index);

/* Consumer: move the window base (tasks < base + window may be claimed; it never
 * moves back).  Returns SQ_OK or SQ_ESYS. */
int sq_task_advance(sq_ring *r, int64_t base);

/* Consumer: from now on, at most `window` tasks ahead of the window base, in the
 * same generation (a wider window wakes the producers waiting for a task; a
 * narrower one takes back no task already claimed).  Returns SQ_OK, SQ_EINVAL
 * (window < 1) or SQ_ESYS. */
int sq_task_set_window(sq_ring *r, int64_t window);

/* Consumer: stop; every current and future wait returns SQ_CLOSED.  Returns
 * SQ_OK or SQ_ESYS (not closed). */
int sq_ring_close(sq_ring *r);

/* Any process: a snapshot of the counters, taken under the lock.  Returns SQ_OK
 * or SQ_ESYS. */
int sq_ring_stats(sq_ring *r, sq_stats *out);

#ifdef __cplusplus
}
#endif
#endif /* SQ_RINGBUF_H */
