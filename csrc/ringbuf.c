/*
 * ringbuf.c: see ringbuf.h for the protocol.
 *
 * The data area is tiled by blocks, each with a header (size, state, owner).  A
 * block is FREE, RESERVED (a producer is writing it) or COMMITTED (queued for, or
 * held by, the consumer).  Producers allocate next-fit: from a cursor that goes
 * round the area like a ring head, merging runs of free blocks as they pass and
 * splitting the first run that is large enough.  A block the consumer still holds
 * is stepped over rather than waited for, so releasing in any order gives space
 * back at once, and a long-held result never stalls the ring.
 *
 * Who writes what (all under the header mutex):
 *   parent (consumer): capacity (set once, then grown), closed, generation,
 *                      next_index/end/window (sq_task_reset), window_base, queue
 *                      head (q_read), block states COMMITTED -> FREE (release),
 *                      worker slots and blocks of dead producers
 *                      (sq_worker_reset).
 *   workers (producers): cursor, block headers FREE -> RESERVED -> COMMITTED,
 *                      queue tail (q_write), requested, their own slot.
 * Who reads what outside the mutex: only capacity (sq_ring_capacity: the
 * parent's Ring.capacity and Block bounds checks, the worker's allocation hook),
 * and the event counters (futex words, _Atomic).  capacity is a plain uint64_t
 * whose accesses outside the lock go through __atomic builtins: stored under the
 * lock with release ordering (set_capacity, grow; init stores it before the
 * magic is published), loaded outside it with acquire ordering, so a reader that
 * sees a capacity sees the free block that extends the area to it.  Under the
 * lock it is read plainly, since every store to it holds the lock too.
 */
#include "ringbuf.h"
#include "sq_limits.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <time.h>
#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

#define SQ_MAGIC 0x5351524e47425546ULL /* "SQRNGBUF" */
/* The layout of the shared structures: sq_ring_check refuses a region of another
 * version, so any change to them (fields, their meaning) takes a new number. */
#define SQ_VERSION 5
#define SQ_RETRY_MAX 64
#define SQ_DEATHS_MAX 64

/* Points inside critical sections where the C tests kill the calling process
 * (test_ringbuf.c defines it before including this file); nothing otherwise. */
#ifndef SQ_FAULT_POINT
#define SQ_FAULT_POINT() ((void)0)
#endif

/* Stores in a critical section are ordered for a producer killed between any two
 * of them (see ring_repair): the compiler must not move them across this. */
#define STORE_ORDER() atomic_signal_fence(memory_order_seq_cst)

/* KEPT: a producer's own allocation (sq_ring_keep), outside its task's list: left
 * alone by commit (unless adopted) and cancel, freed by sq_ring_unkeep or by
 * sq_worker_reset after a death. */
enum { BLK_FREE = 0, BLK_RESERVED = 1, BLK_COMMITTED = 2, BLK_KEPT = 3 };

typedef struct {
    uint64_t size;   /* whole block: header + payload, multiple of SQ_ALIGN */
    uint32_t state;  /* BLK_* */
    int32_t worker;  /* producer that reserved it */
    uint64_t magic;  /* SQ_MAGIC ^ block offset in the data area: stray offsets */
    char _pad[SQ_BLOCK_HEADER - 24];
} sq_block;

/* sq_slot.asleep: what the worker is sleeping in, so that sq_worker_reset can take
 * back the counts of a worker SIGKILLed in its sleep (otherwise space_waiters
 * never returned to zero).  Set after the counts go up and cleared before they go
 * down: a death in between leaves a count too high (harmless), never too low. */
enum { SLOT_AWAKE = 0, SLOT_IN_CLAIM = 1, SLOT_IN_RESERVE = 2 };

/* SQ_SLOT_BLOCKS (sq_limits.h): blocks one task may hold reserved at once, its
 * result's main block and the blocks its code built arrays in (sq_ring_commit
 * hands them over together). */

typedef struct {
    int64_t task;    /* current task index, -1 when idle */
    uint64_t generation; /* of the current task */
    uint64_t claimed_ns; /* CLOCK_MONOTONIC when it claimed the current task */
    uint64_t busy_ns;    /* time spent with a task in hand, tasks finished only */
    uint32_t asleep; /* SLOT_*, written by the worker */
    uint32_t n_held; /* blocks reserved by the current task, positions in held[] */
    uint64_t held[SQ_SLOT_BLOCKS];
    uint64_t waiting_for; /* bytes (header included) it waits for in reserve, or 0 */
    /* Its place in line for space (see in_turn), 0 if none: taken when a reserve
     * waits, kept when the wait times out (the worker asks again), given up when it
     * gets its block or makes any other call. */
    uint64_t ticket;
    /* The commit journal: what sq_ring_commit_n is handing over, written before
     * `committing` is set, so that whoever takes the lock after a producer died
     * inside a commit completes it (ring_repair). */
    uint32_t committing;
    uint32_t n_adopt;
    uint64_t adopt[SQ_SLOT_BLOCKS];
    uint64_t commit_qw; /* q_write when the commit began: its entry is queued iff moved */
    sq_entry commit_entry;
} sq_slot;

struct sq_ring {
    uint64_t magic;
    uint32_t version;
    int32_t nworkers;
    int32_t qlen;
    int32_t closed;
    uint64_t data_offset;
    uint64_t capacity;
    uint64_t requested;
    uint64_t max_capacity; /* what the consumer may grow it to (0: no growth) */
    /* allocator: where the next search starts, and bytes in non-free blocks */
    uint64_t cursor;
    uint64_t used;
    uint64_t n_reserved, n_committed, n_popped, space_waiters;
    /* completion queue: monotonic counters into entries[qlen] */
    uint64_t q_read, q_write;
    /* tasks */
    uint64_t generation;
    int64_t next_index, end, window, window_base;
    int32_t n_retry;
    int32_t _pad0;
    int64_t retry[SQ_RETRY_MAX];
    /* Indices producers died holding, and how often each (oldest first): an item
     * that kills every producer that takes it is given up on by the consumer.
     * One entry per index, not just the last one: with two such items taken by
     * two producers in turn, a single "last index" would restart its count at
     * each death, and the producers would be replaced forever. */
    int32_t n_deaths;
    int32_t _pad1;
    struct {
        int64_t index;
        int64_t count;
    } deaths[SQ_DEATHS_MAX];
    pthread_mutex_t lock;
    /* Event counters: bumped (under the lock) when producers (space) or the
     * consumer (ready) may proceed; waiters sleep on them with a futex.  Unlike a
     * process-shared pthread_cond_t, a futex keeps no state for its waiters, so a
     * worker SIGKILLed while waiting cannot wedge the others. */
    _Atomic uint32_t space_seq;  /* producers in sq_ring_reserve: space freed */
    _Atomic uint32_t ready_seq;  /* the consumer: entries queued */
    _Atomic uint32_t task_seq;   /* producers in sq_task_claim: tasks to claim */
    uint32_t space_sleepers, ready_sleepers, task_sleepers;
    /* Claimable tasks that wake producers asleep in sq_task_claim when the
     * consumer moves the window (sq_task_advance): with a consumer slower than
     * its producers, each of them then wakes once per `refill` results rather
     * than once per result (and the consumer skips the futex syscalls).  A
     * consumer about to sleep in sq_ring_pop wakes them whatever is claimable,
     * so the two sides can never both wait for the other. */
    int64_t refill;
    /* Queued entries that wake the sleeping consumer: 1 except while it sleeps in
     * sq_ring_pop_n, which coalesces wake-ups (a commit that leaves fewer queued
     * wakes nobody, and saves itself the futex syscall). */
    uint64_t ready_want;
    uint64_t n_kept;  /* blocks in state KEPT */
    uint64_t last_ticket; /* the latest place in line handed out (sq_slot.ticket) */
    /* followed by sq_slot slots[nworkers], sq_entry entries[qlen] */
};

static size_t align_up(size_t n, size_t a) { return (n + a - 1) / a * a; }

static size_t slots_offset(void) { return align_up(sizeof(struct sq_ring), SQ_ALIGN); }

static sq_slot *ring_slots(sq_ring *r) { return (sq_slot *)((char *)r + slots_offset()); }

static sq_entry *ring_entries(sq_ring *r) {
    return (sq_entry *)((char *)ring_slots(r) + sizeof(sq_slot) * (size_t)r->nworkers);
}

static sq_block *block_at(sq_ring *r, uint64_t pos) {
    return (sq_block *)((char *)r + r->data_offset + pos);
}

/* Write the header of a free block of `size` bytes at `pos`: no owner, no magic. */
static void block_set_free(sq_ring *r, uint64_t pos, uint64_t size) {
    sq_block *b = block_at(r, pos);
    b->size = size;
    b->state = BLK_FREE;
    b->worker = -1;
    b->magic = 0;
}

size_t sq_ring_header_size(int nworkers, int qlen) {
    size_t n = slots_offset() + sizeof(sq_slot) * (size_t)nworkers +
               sizeof(sq_entry) * (size_t)qlen;
    return align_up(n, 4096);
}

static void ring_repair(sq_ring *r);

/* Lock the header mutex; a producer that died holding it left EOWNERDEAD, and
 * ring_repair() puts the header right before the mutex is marked consistent. */
static int ring_lock(sq_ring *r) {
    int rc = pthread_mutex_lock(&r->lock);
    if (rc == EOWNERDEAD) {
        ring_repair(r);
        pthread_mutex_consistent(&r->lock);
        rc = 0;
    }
    if (rc != 0) {
        errno = rc;
        return SQ_ESYS;
    }
    return SQ_OK;
}

static void futex_wait(_Atomic uint32_t *word, uint32_t seen, const struct timespec *deadline);
static int64_t claimable(const sq_ring *r, int *all_left);
static void futex_wake(_Atomic uint32_t *word, int count);

/* Wake-ups are issued after the mutex is released, never under it: a sleeper
 * woken while the waker still holds the lock would run only to block on that
 * lock, and need a second wake-up (and two more context switches) when it is
 * unlocked.  ring_wake() bumps the event counter under the lock and notes the
 * word here; ring_unlock() wakes the noted words.  Per thread, since each
 * thread of each process holds the lock on its own.  Lost wake-ups are still
 * impossible: a sleeper reads the counter under the lock and futex_wait()
 * returns at once if it has moved since. */
static __thread _Atomic uint32_t *pending_wakes[3];
static __thread int pending_counts[3]; /* sleepers to wake on each word */
static __thread int n_pending_wakes;

static void ring_unlock(sq_ring *r) {
    int n = n_pending_wakes;
    _Atomic uint32_t *words[3] = {pending_wakes[0], pending_wakes[1], pending_wakes[2]};
    int counts[3] = {pending_counts[0], pending_counts[1], pending_counts[2]};
    n_pending_wakes = 0;
    pthread_mutex_unlock(&r->lock);
    for (int k = 0; k < n; k++) futex_wake(words[k], counts[k]);
}

/* Under the lock: sleep until the event counter moves past the value it has now
 * or `deadline` passes, then retake the lock.  The counter is read under the lock
 * and bumped under the lock, so no wake-up is lost.  Returns SQ_OK, the lock held
 * again; or ring_lock's SQ_ESYS (errno set: the mutex is not recoverable), the
 * lock NOT held: the caller returns that status at once, without touching the
 * header or unlocking.  The sleeper count and asleep mark then stay up (too
 * high, never too low; see sq_slot.asleep). */
static int ring_wait(sq_ring *r, _Atomic uint32_t *word, uint32_t *sleepers,
                     uint32_t *asleep, uint32_t how, const struct timespec *deadline) {
    uint32_t seen = atomic_load(word);
    (*sleepers)++;
    if (asleep) *asleep = how;
    ring_unlock(r);
    futex_wait(word, seen, deadline);
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    if (asleep) *asleep = SLOT_AWAKE;
    (*sleepers)--;
    return SQ_OK;
}

/* Under the lock: move the event counter on; if anyone sleeps on it, wake up to
 * `count` of them once the lock is released (see ring_unlock). */
static void ring_wake_n(_Atomic uint32_t *word, uint32_t sleepers, int count) {
    atomic_fetch_add(word, 1);
    if (!sleepers) return;
    for (int k = 0; k < n_pending_wakes; k++) {
        if (pending_wakes[k] == word) {
            if (count > pending_counts[k]) pending_counts[k] = count;
            return;
        }
    }
    if (n_pending_wakes < 3) {
        pending_wakes[n_pending_wakes] = word;
        pending_counts[n_pending_wakes++] = count;
    } else {
        futex_wake(word, count); /* cannot happen: there are three event counters */
    }
}

/* Under the lock: ring_wake_n for every sleeper. */
static void ring_wake(_Atomic uint32_t *word, uint32_t sleepers) {
    ring_wake_n(word, sleepers, INT32_MAX);
}

/* CLOCK_MONOTONIC in nanoseconds: one clock for every process of the machine. */
static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void deadline_after(double timeout, struct timespec *ts) {
    clock_gettime(CLOCK_MONOTONIC, ts);
    if (timeout < 0) timeout = 0;
    if (timeout > 1e6) timeout = 1e6;
    long sec = (long)timeout;
    long nsec = (long)((timeout - (double)sec) * 1e9);
    ts->tv_sec += sec;
    ts->tv_nsec += nsec;
    if (ts->tv_nsec >= 1000000000L) {
        ts->tv_sec += 1;
        ts->tv_nsec -= 1000000000L;
    }
}

static int past(const struct timespec *deadline) {
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return now.tv_sec > deadline->tv_sec ||
           (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

#ifdef __linux__
static void futex_wait(_Atomic uint32_t *word, uint32_t seen,
                       const struct timespec *deadline) {
    struct timespec now, rel;
    clock_gettime(CLOCK_MONOTONIC, &now);
    rel.tv_sec = deadline->tv_sec - now.tv_sec;
    rel.tv_nsec = deadline->tv_nsec - now.tv_nsec;
    if (rel.tv_nsec < 0) {
        rel.tv_sec -= 1;
        rel.tv_nsec += 1000000000L;
    }
    if (rel.tv_sec < 0) return;
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAIT, seen, &rel, NULL, 0);
}

static void futex_wake(_Atomic uint32_t *word, int count) {
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, count, NULL, NULL, 0);
}
#else
/* No futex: poll the counter with short sleeps (macOS and other POSIX). */
static void futex_wait(_Atomic uint32_t *word, uint32_t seen,
                       const struct timespec *deadline) {
    struct timespec nap = {0, 50000};
    while (atomic_load(word) == seen && !past(deadline)) nanosleep(&nap, NULL);
}

static void futex_wake(_Atomic uint32_t *word, int count) {
    (void)word;
    (void)count;
}
#endif

int sq_ring_init(void *region, int nworkers, int qlen, uint64_t capacity) {
    sq_ring *r = (sq_ring *)region;
    pthread_mutexattr_t ma;
    int rc = SQ_ESYS;

    if (region == NULL || nworkers <= 0 || qlen <= 0 || capacity % SQ_ALIGN != 0)
        return SQ_EINVAL;
    memset(r, 0, sizeof(*r));
    r->version = SQ_VERSION;
    r->nworkers = nworkers;
    r->qlen = qlen;
    r->data_offset = sq_ring_header_size(nworkers, qlen);
    r->capacity = capacity;
    r->ready_want = 1;
    r->refill = 1;
    /* A data area sized here starts as one free block, as sq_ring_set_capacity
     * makes it: ring_alloc walks the area block by block, and a zero-sized block
     * would keep it spinning forever under the lock. */
    if (capacity != 0) block_set_free(r, 0, capacity);
    sq_slot *slots = ring_slots(r);
    for (int w = 0; w < nworkers; w++) {
        slots[w].task = -1;
        slots[w].generation = 0;
    }

    if (pthread_mutexattr_init(&ma) != 0) return SQ_ESYS;
    if (pthread_mutexattr_setpshared(&ma, PTHREAD_PROCESS_SHARED) != 0) goto fail;
    /* Not `#ifdef PTHREAD_MUTEX_ROBUST`: glibc declares it as an enum constant,
     * not a macro, so that test silently left the mutex non-robust and a producer
     * killed holding it wedged every process.  macOS has no robust mutexes. */
#ifndef __APPLE__
    if (pthread_mutexattr_setrobust(&ma, PTHREAD_MUTEX_ROBUST) != 0) goto fail;
#endif
    if (pthread_mutex_init(&r->lock, &ma) != 0) goto fail;
    atomic_thread_fence(memory_order_release);
    r->magic = SQ_MAGIC; /* last: a process that sees the magic sees the rest */
    rc = SQ_OK;
fail:
    pthread_mutexattr_destroy(&ma);
    return rc;
}

int sq_ring_check(const void *region) {
    const sq_ring *r = (const sq_ring *)region;
    if (region == NULL || r->magic != SQ_MAGIC || r->version != SQ_VERSION)
        return SQ_ECORRUPT;
    return SQ_OK;
}

/* The data area grows to `capacity` bytes by one free block at its end, and
 * producers waiting for space are woken: from nothing if `first`
 * (sq_ring_set_capacity), else from its current size (sq_ring_grow).  Returns
 * SQ_EINVAL, changing nothing, if the ring is sized and `first` or unsized and
 * not, or if `capacity` is not a multiple of SQ_ALIGN above the current size;
 * or ring_lock's error. */
static int ring_resize(sq_ring *r, uint64_t capacity, int first) {
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    if ((r->capacity == 0) != first || capacity <= r->capacity ||
        capacity % SQ_ALIGN != 0) {
        rc = SQ_EINVAL;
    } else {
        /* A free run before the new block merges with it when the allocator next
         * passes (runs merge forward up to the capacity). */
        block_set_free(r, r->capacity, capacity - r->capacity);
        /* release: the block before the capacity that includes it, for readers
         * outside the lock and for ring_repair after a death here */
        __atomic_store_n(&r->capacity, capacity, __ATOMIC_RELEASE);
        ring_wake(&r->space_seq, r->space_sleepers);
    }
    ring_unlock(r);
    return rc;
}

int sq_ring_set_capacity(sq_ring *r, uint64_t capacity) {
    return ring_resize(r, capacity, 1);
}

int sq_ring_grow(sq_ring *r, uint64_t capacity) { return ring_resize(r, capacity, 0); }

int sq_ring_set_max_capacity(sq_ring *r, uint64_t max_capacity) {
    if (max_capacity % SQ_ALIGN) return SQ_EINVAL;
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    r->max_capacity = max_capacity;
    ring_unlock(r);
    return SQ_OK;
}

uint64_t sq_ring_data_offset(const sq_ring *r) { return r->data_offset; }

uint64_t sq_ring_capacity(const sq_ring *r) {
    return __atomic_load_n(&r->capacity, __ATOMIC_ACQUIRE);
}

int sq_ring_nworkers(const sq_ring *r) { return r->nworkers; }

/* Under the lock: merge the free blocks that follow the free block at pos (up to
 * the end of the area; a run never wraps). */
static void ring_merge(sq_ring *r, uint64_t pos) {
    sq_block *b = block_at(r, pos);
    while (pos + b->size < r->capacity) {
        sq_block *next = block_at(r, pos + b->size);
        if (next->state != BLK_FREE) break;
        b->size += next->size;
    }
    /* The cursor must name a block header: if the merge swallowed it, pull it back
     * to the start of the merged run. */
    if (r->cursor > pos && r->cursor < pos + b->size) r->cursor = pos;
}

/* Under the lock: find and reserve `need` bytes (header included) for worker, next
 * fit from the cursor.  Returns the block position or UINT64_MAX when no free run
 * is large enough now. */
static uint64_t ring_alloc(sq_ring *r, int worker, uint64_t need) {
    if (r->capacity - r->used < need) return UINT64_MAX;
    uint64_t pos = r->cursor, scanned = 0;
    while (scanned < r->capacity + need) {
        sq_block *b = block_at(r, pos);
        if (b->state == BLK_FREE) {
            ring_merge(r, pos);
            if (b->size >= need) {
                if (b->size - need >= SQ_BLOCK_HEADER + SQ_ALIGN) {
                    block_set_free(r, pos + need, b->size - need);
                    STORE_ORDER(); /* the new header before the old one shrinks */
                    b->size = need;
                }
                b->worker = worker;
                b->magic = SQ_MAGIC ^ pos;
                STORE_ORDER(); /* owner and magic before the state that shows them */
                b->state = BLK_RESERVED;
                SQ_FAULT_POINT();
                r->used += b->size;
                r->cursor = pos + b->size == r->capacity ? 0 : pos + b->size;
                return pos;
            }
        }
        scanned += b->size;
        pos += b->size;
        if (pos >= r->capacity) pos = 0;
    }
    return UINT64_MAX;
}

/* Under the lock: does `worker` own a kept block? */
static int worker_keeps(sq_ring *r, int worker) {
    for (uint64_t pos = 0; pos < r->capacity;) {
        sq_block *b = block_at(r, pos);
        if (b->size == 0) return 0;
        if (b->state == BLK_KEPT && b->worker == worker) return 1;
        pos += b->size;
    }
    return 0;
}

/* Under the lock: may `worker` allocate now?  Producers that had to wait for
 * space are served in the order they started waiting: otherwise one waiting for a
 * large block could wait forever while others take each small run the consumer
 * frees (with the consumer slower than them, the ring is always nearly full).
 * Only a producer that already holds blocks for its task never waits behind
 * another, since the one ahead may be waiting for the very space it holds. */
static int in_turn(sq_ring *r, int worker) {
    sq_slot *slots = ring_slots(r);
    uint64_t mine = slots[worker].ticket;
    for (int w = 0; w < r->nworkers; w++) {
        uint64_t t = slots[w].ticket;
        if (w != worker && t != 0 && (mine == 0 || t < mine))
            return slots[worker].n_held > 0 || (r->n_kept > 0 && worker_keeps(r, worker));
    }
    return 1;
}

/* Under the lock: `worker` is no longer waiting for space. */
static void leave_line(sq_ring *r, int worker) {
    sq_slot *slot = &ring_slots(r)[worker];
    if (slot->ticket == 0) return;
    slot->ticket = 0;
    ring_wake(&r->space_seq, r->space_sleepers); /* the next one's turn */
}

int sq_ring_reserve(sq_ring *r, int worker, uint64_t nbytes, double timeout,
                    uint64_t *offset) {
    struct timespec deadline;
    int rc;
    uint64_t need = align_up(nbytes, SQ_ALIGN) + SQ_BLOCK_HEADER;

    if (worker < 0 || worker >= r->nworkers || offset == NULL) return SQ_EINVAL;
    /* Near UINT64_MAX the rounding above wraps round to a small `need`, which
     * would pass the size check and hand out a block far smaller than asked. */
    if (nbytes > UINT64_MAX - SQ_ALIGN - SQ_BLOCK_HEADER) return SQ_ETOOBIG;
    deadline_after(timeout, &deadline);
    rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    for (;;) {
        if (r->closed) {
            rc = SQ_CLOSED;
            break;
        }
        if (r->capacity == 0) {
            if (need > r->requested) r->requested = need;
            ring_wake(&r->ready_seq, r->ready_sleepers);
        } else {
            /* Larger than the area: fails, unless the consumer may grow the area
             * that far (it waits then, as for space, and the consumer sees what
             * it waits for in sq_stats.waiting_for). */
            if (need > r->capacity && need > r->max_capacity) {
                rc = SQ_ETOOBIG;
                break;
            }
            sq_slot *slot = &ring_slots(r)[worker];
            if (slot->n_held >= SQ_SLOT_BLOCKS) {
                rc = SQ_EFULL;
                break;
            }
            uint64_t pos = need <= r->capacity && in_turn(r, worker)
                               ? ring_alloc(r, worker, need) : UINT64_MAX;
            if (pos != UINT64_MAX) {
                slot->held[slot->n_held++] = pos;
                *offset = r->data_offset + pos + SQ_BLOCK_HEADER;
                r->n_reserved++;
                leave_line(r, worker);
                rc = SQ_OK;
                break;
            }
        }
        if (past(&deadline)) {
            rc = SQ_TIMEOUT;
            break;
        }
        if (r->capacity != 0 && ring_slots(r)[worker].ticket == 0)
            ring_slots(r)[worker].ticket = ++r->last_ticket;
        r->space_waiters++;
        ring_slots(r)[worker].waiting_for = need;
        rc = ring_wait(r, &r->space_seq, &r->space_sleepers,
                       &ring_slots(r)[worker].asleep, SLOT_IN_RESERVE, &deadline);
        if (rc != SQ_OK) return rc; /* the lock is not held */
        ring_slots(r)[worker].waiting_for = 0;
        r->space_waiters--;
    }
    ring_unlock(r);
    return rc;
}

/* Under the lock: the block whose payload is at `offset`, or NULL if the offset
 * does not name a live block. */
static sq_block *block_of(sq_ring *r, uint64_t offset) {
    if (r->capacity == 0 || offset < r->data_offset + SQ_BLOCK_HEADER ||
        offset >= r->data_offset + r->capacity || (offset - r->data_offset) % SQ_ALIGN)
        return NULL;
    uint64_t pos = offset - r->data_offset - SQ_BLOCK_HEADER;
    sq_block *b = block_at(r, pos);
    if (b->magic != (SQ_MAGIC ^ pos) || b->state == BLK_FREE) return NULL;
    return b;
}

/* Under the lock: append an entry to the completion queue. */
static int queue_push(sq_ring *r, const sq_entry *e) {
    if (r->q_write - r->q_read >= (uint64_t)r->qlen) return SQ_EFULL;
    ring_entries(r)[r->q_write % (uint64_t)r->qlen] = *e;
    r->q_write++;
    if (r->q_write - r->q_read >= r->ready_want)
        ring_wake(&r->ready_seq, r->ready_sleepers);
    return SQ_OK;
}

/* Under the lock: the worker has finished its task (its time counts as busy). */
static void slot_done(sq_ring *r, int worker) {
    sq_slot *s = &ring_slots(r)[worker];
    if (s->task >= 0) s->busy_ns += now_ns() - s->claimed_ns;
    s->task = -1;
}

/* Under the lock: forget the producers that died holding `index`.  The others
 * keep their order (oldest first). */
static void forget_deaths(sq_ring *r, int64_t index) {
    int kept = 0;
    for (int i = 0; i < r->n_deaths; i++)
        if (r->deaths[i].index != index) r->deaths[kept++] = r->deaths[i];
    r->n_deaths = kept;
}

/* Under the lock: the task (index, generation) was answered, so whatever killed the
 * producers that held it before did not kill this one: its count of deaths in a
 * row starts again.  An answer from an older generation may be about another item. */
static void task_answered(sq_ring *r, int64_t index, uint64_t generation) {
    if (r->n_deaths > 0 && generation == r->generation) forget_deaths(r, index);
}

int sq_ring_commit(sq_ring *r, int worker, uint64_t offset, int64_t index,
                   uint64_t generation, uint32_t kind) {
    return sq_ring_commit_n(r, worker, offset, index, generation, kind, NULL, 0);
}

/* Under the lock: is every adopted offset a distinct KEPT block of worker, other
 * than the main block b? */
static int adoptable(sq_ring *r, int worker, const sq_block *b, const uint64_t *adopt,
                     int nadopt) {
    for (int i = 0; i < nadopt; i++) {
        sq_block *x = block_of(r, adopt[i]);
        if (x == NULL || x == b || x->state != BLK_KEPT || x->worker != worker)
            return 0;
        for (int j = 0; j < i; j++)
            if (adopt[j] == adopt[i]) return 0;
    }
    return 1;
}

/* Under the lock: hand over the commit in worker's journal.  Each step is done
 * only if not done yet, so that ring_repair can run it again after the worker
 * died halfway through: blocks change state before the entry is queued (an
 * entry never names a block still the worker's). */
static void commit_apply(sq_ring *r, int worker) {
    sq_slot *slot = &ring_slots(r)[worker];
    sq_block *b = block_of(r, slot->commit_entry.offset);
    for (uint32_t k = 0; k < slot->n_held && k < SQ_SLOT_BLOCKS; k++) {
        sq_block *x = block_at(r, slot->held[k]);
        if (x == b || x->state != BLK_RESERVED || x->worker != worker) continue;
        x->state = BLK_COMMITTED;
        r->n_reserved--;
        r->n_popped++;
        SQ_FAULT_POINT();
    }
    for (uint32_t i = 0; i < slot->n_adopt && i < SQ_SLOT_BLOCKS; i++) {
        sq_block *x = block_of(r, slot->adopt[i]);
        if (x == NULL || x->state != BLK_KEPT || x->worker != worker) continue;
        x->state = BLK_COMMITTED;
        r->n_kept--;
        r->n_popped++;
        SQ_FAULT_POINT();
    }
    if (b != NULL && b->worker == worker &&
        (b->state == BLK_KEPT || b->state == BLK_RESERVED)) {
        if (b->state == BLK_KEPT)
            r->n_kept--;
        else
            r->n_reserved--;
        b->state = BLK_COMMITTED;
        r->n_committed++;
        SQ_FAULT_POINT();
    }
    slot->n_held = 0;
    STORE_ORDER();
    if (r->q_write == slot->commit_qw)
        queue_push(r, &slot->commit_entry); /* cannot fail: space checked before */
    task_answered(r, slot->commit_entry.index, slot->commit_entry.generation);
    SQ_FAULT_POINT();
    slot_done(r, worker);
}

int sq_ring_commit_n(sq_ring *r, int worker, uint64_t offset, int64_t index,
                     uint64_t generation, uint32_t kind, const uint64_t *adopt, int nadopt) {
    if (worker < 0 || worker >= r->nworkers || nadopt < 0 ||
        nadopt > SQ_SLOT_BLOCKS || (nadopt > 0 && adopt == NULL))
        return SQ_EINVAL;
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    sq_block *b = block_of(r, offset);
    sq_slot *slot = &ring_slots(r)[worker];
    if (b == NULL || (b->state != BLK_RESERVED && b->state != BLK_KEPT) ||
        b->worker != worker || !adoptable(r, worker, b, adopt, nadopt)) {
        rc = SQ_ECORRUPT;
    } else if (r->q_write - r->q_read >= (uint64_t)r->qlen) {
        rc = SQ_EFULL; /* the blocks stay reserved (or kept) */
    } else {
        /* Every block the task reserved goes over together: the main block to
         * the queue, the others (arrays its code built in place, named in the
         * payload) as blocks the consumer holds, and with them the kept blocks it
         * adopts.  The journal goes first: a producer killed once `committing` is
         * set leaves a commit that ring_repair completes (killed before, its
         * blocks are still its own, and sq_worker_reset frees them). */
        leave_line(r, worker);
        slot->n_adopt = (uint32_t)nadopt;
        for (int i = 0; i < nadopt; i++) slot->adopt[i] = adopt[i];
        slot->commit_entry = (sq_entry){offset, b->size - SQ_BLOCK_HEADER, index, generation,
                                        worker, kind};
        slot->commit_qw = r->q_write;
        STORE_ORDER();
        SQ_FAULT_POINT();
        slot->committing = 1;
        STORE_ORDER();
        SQ_FAULT_POINT();
        commit_apply(r, worker);
        STORE_ORDER();
        SQ_FAULT_POINT();
        slot->committing = 0;
    }
    ring_unlock(r);
    return rc;
}

/* Under the lock, taken with EOWNERDEAD: a process died inside a critical
 * section.  Block headers are written so that the data area is tiled by valid
 * blocks after every store (a block splits by writing the new header before
 * shrinking the old one; runs merge by growing one size), but a commit changes
 * several blocks and the counters change one store after the states they count.
 * So: complete a commit the journal says was under way, then count the blocks
 * and queued entries again, and move a cursor a merge left inside a block back to
 * the start. */
static void ring_repair(sq_ring *r) {
    sq_slot *slots = ring_slots(r);
    for (int w = 0; w < r->nworkers; w++) {
        if (slots[w].committing) {
            commit_apply(r, w);
            slots[w].committing = 0;
        }
    }
    if (r->capacity == 0) return;
    uint64_t used = 0, n_res = 0, n_com = 0, n_kept = 0, n_queued = 0, pos = 0;
    int cursor_ok = 0;
    while (pos < r->capacity) {
        sq_block *b = block_at(r, pos);
        if (b->size < SQ_BLOCK_HEADER || b->size % SQ_ALIGN || b->size > r->capacity - pos)
            return; /* not a tiling (cannot happen): leave it to block_of's checks */
        if (b->state != BLK_FREE) used += b->size;
        n_res += b->state == BLK_RESERVED;
        n_com += b->state == BLK_COMMITTED;
        n_kept += b->state == BLK_KEPT;
        cursor_ok |= r->cursor == pos;
        pos += b->size;
    }
    for (uint64_t q = r->q_read; q != r->q_write; q++)
        n_queued += ring_entries(r)[q % (uint64_t)r->qlen].offset != 0;
    r->used = used;
    r->n_reserved = n_res;
    r->n_kept = n_kept;
    r->n_committed = n_queued;
    r->n_popped = n_com - n_queued;
    if (!cursor_ok) r->cursor = 0;
}

int sq_ring_keep(sq_ring *r, int worker, uint64_t nbytes, uint64_t max_used,
                 uint64_t *offset) {
    uint64_t need = align_up(nbytes, SQ_ALIGN) + SQ_BLOCK_HEADER;
    if (worker < 0 || worker >= r->nworkers || offset == NULL) return SQ_EINVAL;
    if (nbytes > UINT64_MAX - SQ_ALIGN - SQ_BLOCK_HEADER) return SQ_ETOOBIG;
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    if (r->closed) {
        rc = SQ_CLOSED;
    } else if (r->capacity == 0 || r->used + need > max_used || !in_turn(r, worker)) {
        rc = SQ_TIMEOUT; /* never waits, nor goes ahead of a producer waiting */
    } else {
        uint64_t pos = ring_alloc(r, worker, need);
        if (pos == UINT64_MAX) {
            rc = SQ_TIMEOUT;
        } else {
            block_at(r, pos)->state = BLK_KEPT;
            r->n_kept++;
            *offset = r->data_offset + pos + SQ_BLOCK_HEADER;
        }
    }
    ring_unlock(r);
    return rc;
}

static void free_block(sq_ring *r, sq_block *b);

int sq_ring_unkeep(sq_ring *r, int worker, uint64_t offset) {
    if (worker < 0 || worker >= r->nworkers) return SQ_EINVAL;
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    sq_block *b = block_of(r, offset);
    if (b == NULL) {
        rc = SQ_EINVAL;
    } else if (b->state != BLK_KEPT || b->worker != worker) {
        rc = SQ_ECORRUPT;
    } else {
        free_block(r, b);
        ring_wake(&r->space_seq, r->space_sleepers);
    }
    ring_unlock(r);
    return rc;
}

int sq_ring_post(sq_ring *r, int worker, int64_t index, uint64_t generation, uint32_t kind) {
    if (worker < 0 || worker >= r->nworkers) return SQ_EINVAL;
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    leave_line(r, worker);
    sq_entry e = {0, 0, index, generation, worker, kind};
    rc = queue_push(r, &e);
    if (rc == SQ_OK) {
        task_answered(r, index, generation);
        slot_done(r, worker);
    }
    ring_unlock(r);
    return rc;
}

int sq_ring_pop(sq_ring *r, double timeout, sq_entry *out, uint64_t *requested) {
    return sq_ring_pop_n(r, timeout, 1, out, requested);
}

int sq_ring_pop_n(sq_ring *r, double timeout, uint64_t want, sq_entry *out,
                  uint64_t *requested) {
    struct timespec deadline;
    deadline_after(timeout, &deadline);
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    for (;;) {
        if (r->q_read != r->q_write) {
            *out = ring_entries(r)[r->q_read % (uint64_t)r->qlen];
            r->q_read++;
            if (out->offset != 0) {
                r->n_committed--;
                r->n_popped++;
            }
            rc = SQ_OK;
            break;
        }
        if (r->closed) {
            rc = SQ_CLOSED;
            break;
        }
        if (r->capacity == 0 && r->requested > 0) {
            if (requested) *requested = r->requested;
            rc = SQ_UNSIZED;
            break;
        }
        if (past(&deadline)) {
            rc = SQ_TIMEOUT;
            break;
        }
        /* Only entries are held back to `want`: close and sizing requests still
         * wake at once, and the deadline bounds the wait whatever comes. */
        r->ready_want = want > 0 ? want : 1;
        /* About to wait for producers: any held back by `refill` go now. */
        if (r->task_sleepers && claimable(r, NULL) > 0)
            ring_wake(&r->task_seq, r->task_sleepers);
        rc = ring_wait(r, &r->ready_seq, &r->ready_sleepers, NULL, 0, &deadline);
        if (rc != SQ_OK) return rc; /* the lock is not held */
        r->ready_want = 1;
    }
    ring_unlock(r);
    return rc;
}

int sq_ring_release(sq_ring *r, uint64_t offset) {
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    sq_block *b = block_of(r, offset);
    if (b == NULL || b->state != BLK_COMMITTED) {
        rc = b == NULL ? SQ_EINVAL : SQ_ECORRUPT;
    } else {
        b->state = BLK_FREE;
        b->magic = 0;
        r->used -= b->size;
        r->n_popped--;
        ring_wake(&r->space_seq, r->space_sleepers);
    }
    ring_unlock(r);
    return rc;
}

/* Under the lock: free one reserved or kept block. */
static void free_block(sq_ring *r, sq_block *b) {
    if (b->state == BLK_KEPT)
        r->n_kept--;
    else
        r->n_reserved--;
    b->state = BLK_FREE;
    b->magic = 0;
    r->used -= b->size;
}

/* Under the lock: free every block `worker` reserved and did not commit.  The
 * slot's list is enough for a live worker, whose kept blocks stay its own; after
 * a death the whole area is walked, since it may have died between allocating a
 * block and listing it, and its kept blocks go too. */
static int free_reserved(sq_ring *r, int worker, int walk) {
    sq_slot *slot = &ring_slots(r)[worker];
    if (r->capacity == 0) return SQ_OK;
    if (!walk) {
        for (uint32_t k = 0; k < slot->n_held && k < SQ_SLOT_BLOCKS; k++) {
            sq_block *b = block_at(r, slot->held[k]);
            if (b->state == BLK_RESERVED && b->worker == worker) free_block(r, b);
        }
    } else {
        for (uint64_t pos = 0; pos < r->capacity;) {
            sq_block *b = block_at(r, pos);
            if (b->size == 0 || b->size % SQ_ALIGN) return SQ_ECORRUPT;
            if ((b->state == BLK_RESERVED || b->state == BLK_KEPT) && b->worker == worker)
                free_block(r, b);
            pos += b->size;
        }
    }
    slot->n_held = 0;
    ring_wake(&r->space_seq, r->space_sleepers);
    return SQ_OK;
}

int sq_ring_cancel(sq_ring *r, int worker) {
    if (worker < 0 || worker >= r->nworkers) return SQ_EINVAL;
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    leave_line(r, worker);
    rc = free_reserved(r, worker, 0);
    ring_unlock(r);
    return rc;
}

/* Under the lock: one more producer died holding `index`; returns how many have. */
static int count_death(sq_ring *r, int64_t index) {
    for (int i = 0; i < r->n_deaths; i++)
        if (r->deaths[i].index == index) return (int)++r->deaths[i].count;
    if (r->n_deaths == SQ_DEATHS_MAX) { /* forget the oldest */
        memmove(&r->deaths[0], &r->deaths[1], sizeof r->deaths[0] * (SQ_DEATHS_MAX - 1));
        r->n_deaths--;
    }
    r->deaths[r->n_deaths].index = index;
    r->deaths[r->n_deaths].count = 1;
    r->n_deaths++;
    return 1;
}

int sq_worker_reset(sq_ring *r, int worker, int64_t *index, int *deaths) {
    if (worker < 0 || worker >= r->nworkers) return SQ_EINVAL;
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    *index = -1;
    *deaths = 0;
    /* Free what it reserved and never committed. */
    rc = free_reserved(r, worker, 1);
    sq_slot *s = &ring_slots(r)[worker];
    if (s->asleep == SLOT_IN_CLAIM) { /* it died asleep: take back its counts */
        if (r->task_sleepers > 0) r->task_sleepers--;
    } else if (s->asleep == SLOT_IN_RESERVE) {
        if (r->space_sleepers > 0) r->space_sleepers--;
        if (r->space_waiters > 0) r->space_waiters--;
    }
    s->waiting_for = 0;
    s->ticket = 0; /* its place in line goes: space_seq is bumped below */
    s->asleep = SLOT_AWAKE;
    if (s->task >= 0 && s->generation == r->generation) {
        if (r->n_retry >= SQ_RETRY_MAX) {
            rc = SQ_EFULL;
        } else {
            r->retry[r->n_retry++] = s->task;
            *index = s->task;
            *deaths = count_death(r, s->task);
        }
    }
    s->task = -1;
    ring_wake(&r->space_seq, r->space_sleepers);
    ring_wake(&r->task_seq, r->task_sleepers); /* its task may be on the retry list */
    ring_unlock(r);
    return rc;
}

/* Under the lock: tasks a producer could claim now. */
static int64_t claimable(const sq_ring *r, int *all_left) {
    int64_t top = r->window_base + r->window;
    int bounded = r->end >= 0 && r->end <= top;
    if (bounded) top = r->end;
    int64_t n = top > r->next_index ? top - r->next_index : 0;
    if (all_left) *all_left = bounded; /* no task beyond these will come */
    return n + r->n_retry;
}

int sq_task_claim(sq_ring *r, int worker, double timeout, int64_t *index,
                  uint64_t *generation) {
    struct timespec deadline;
    if (worker < 0 || worker >= r->nworkers) return SQ_EINVAL;
    deadline_after(timeout, &deadline);
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    leave_line(r, worker);
    for (;;) {
        if (r->closed) {
            rc = SQ_CLOSED;
            break;
        }
        int64_t task = -1;
        if (r->n_retry > 0) {
            task = r->retry[--r->n_retry];
        } else if ((r->end < 0 || r->next_index < r->end) &&
                   r->next_index < r->window_base + r->window) {
            task = r->next_index++;
        }
        if (task >= 0) {
            sq_slot *s = &ring_slots(r)[worker];
            s->task = task;
            s->generation = r->generation;
            s->claimed_ns = now_ns();
            *index = task;
            *generation = r->generation;
            rc = SQ_OK;
            break;
        }
        if (past(&deadline)) {
            rc = SQ_TIMEOUT;
            break;
        }
        rc = ring_wait(r, &r->task_seq, &r->task_sleepers,
                       &ring_slots(r)[worker].asleep, SLOT_IN_CLAIM, &deadline);
        if (rc != SQ_OK) return rc; /* the lock is not held */
    }
    ring_unlock(r);
    return rc;
}

int sq_worker_task(sq_ring *r, int worker, int64_t *index, uint64_t *running_ns) {
    if (worker < 0 || worker >= r->nworkers) return SQ_EINVAL;
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    const sq_slot *s = &ring_slots(r)[worker];
    *index = s->generation == r->generation ? s->task : -1;
    *running_ns = *index >= 0 ? now_ns() - s->claimed_ns : 0;
    ring_unlock(r);
    return SQ_OK;
}

int sq_worker_busy(sq_ring *r, int worker, uint64_t *busy_ns) {
    if (worker < 0 || worker >= r->nworkers) return SQ_EINVAL;
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    const sq_slot *s = &ring_slots(r)[worker];
    *busy_ns = s->busy_ns + (s->task >= 0 ? now_ns() - s->claimed_ns : 0);
    ring_unlock(r);
    return SQ_OK;
}

/* Under the lock: the window, and the refill that goes with it. */
static void set_window(sq_ring *r, int64_t window) {
    r->window = window;
    r->refill = (window - r->nworkers) / 2;
    if (r->refill < 1) r->refill = 1;
}

int sq_task_reset(sq_ring *r, int64_t start, int64_t end, int64_t window,
                  uint64_t *generation) {
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    r->generation++;
    r->next_index = start;
    r->end = end;
    r->window_base = start;
    r->n_retry = 0;
    set_window(r, window);
    if (generation) *generation = r->generation;
    ring_wake(&r->task_seq, r->task_sleepers);
    ring_unlock(r);
    return SQ_OK;
}

int sq_task_drop(sq_ring *r, int64_t index) {
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    int kept = 0;
    for (int i = 0; i < r->n_retry; i++)
        if (r->retry[i] != index) r->retry[kept++] = r->retry[i];
    r->n_retry = kept;
    forget_deaths(r, index);
    ring_unlock(r);
    return SQ_OK;
}

int sq_task_advance(sq_ring *r, int64_t base) {
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    if (base > r->window_base) {
        r->window_base = base;
        int all_left;
        int64_t n = claimable(r, &all_left);
        /* One producer: it claims them in a row.  Waking them all would put
         * every producer on the CPUs at once, beside a consumer that is the
         * slow side (a training loop), and gain nothing: the consumer wakes
         * them all itself as soon as it has to wait for a result. */
        if (n > 0 && (n >= r->refill || all_left))
            ring_wake_n(&r->task_seq, r->task_sleepers, 1);
    }
    ring_unlock(r);
    return SQ_OK;
}

int sq_task_set_window(sq_ring *r, int64_t window) {
    if (window < 1) return SQ_EINVAL;
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    set_window(r, window);
    if (claimable(r, NULL) > 0) ring_wake(&r->task_seq, r->task_sleepers);
    ring_unlock(r);
    return SQ_OK;
}

int sq_ring_close(sq_ring *r) {
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    r->closed = 1;
    ring_wake(&r->space_seq, r->space_sleepers);
    ring_wake(&r->ready_seq, r->ready_sleepers);
    ring_wake(&r->task_seq, r->task_sleepers);
    ring_unlock(r);
    return SQ_OK;
}

int sq_ring_stats(sq_ring *r, sq_stats *out) {
    int rc = ring_lock(r);
    if (rc != SQ_OK) return rc;
    out->capacity = r->capacity;
    out->used = r->used;
    out->reserved = r->n_reserved;
    out->committed = r->n_committed;
    out->popped = r->n_popped;
    out->space_waiters = r->space_waiters;
    out->requested = r->requested;
    out->kept = r->n_kept;
    out->space_events = atomic_load(&r->space_seq);
    out->ready_events = atomic_load(&r->ready_seq);
    out->queued = r->q_write - r->q_read;
    sq_slot *slots = ring_slots(r);
    /* Free runs as ring_alloc would merge them (without merging: read only), and
     * the blocks of producers awake (an owner out of range cannot happen; it
     * counts as awake, so that no stall is made up). */
    out->largest_free = 0;
    out->reserved_active = 0;
    out->kept_active = 0;
    uint64_t run = 0;
    for (uint64_t pos = 0; pos < r->capacity;) {
        sq_block *b = block_at(r, pos);
        if (b->size == 0 || b->size % SQ_ALIGN) break; /* corrupt: stop, no loop */
        run = b->state == BLK_FREE ? run + b->size : 0;
        if (run > out->largest_free) out->largest_free = run;
        if (b->state == BLK_RESERVED || b->state == BLK_KEPT) {
            int w = b->worker;
            if (w < 0 || w >= r->nworkers || slots[w].asleep == SLOT_AWAKE) {
                if (b->state == BLK_RESERVED)
                    out->reserved_active++;
                else
                    out->kept_active++;
            }
        }
        pos += b->size;
    }
    out->waiting_for = 0;
    out->sleeping_in_reserve = 0;
    for (int w = 0; w < r->nworkers; w++) {
        if (slots[w].asleep != SLOT_IN_RESERVE) continue;
        out->sleeping_in_reserve++;
        if (slots[w].waiting_for > out->waiting_for)
            out->waiting_for = slots[w].waiting_for;
    }
    ring_unlock(r);
    return SQ_OK;
}
