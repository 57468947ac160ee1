/*
 * allochook.c: see allochook.h.
 *
 * Who touches what: everything below is this process's own.  sqh_setup writes
 * the configuration once; the entries and counters change under sqh.mu, from the
 * hooked thread (allocations) and from any thread numpy frees an array on.
 * `active` and `enabled` are set by the hooked thread and read by any allocating
 * thread, hence atomic.
 */
#include "allochook.h"

#include <pthread.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *ptr;        /* what numpy was given */
    uint64_t offset;  /* payload offset of the kept block */
    uint64_t nbytes;  /* payload bytes of the block */
    size_t size;      /* bytes numpy asked for */
    int state;        /* SQH_* */
} sqh_entry;

static struct {
    sq_ring *r;
    char *lo, *hi;    /* this process's mapping of the region */
    int slot, nworkers;
    pid_t pid;
    pthread_t thread;
    int installed;
    int active, enabled; /* __atomic accesses */
    uint64_t headroom, min_size, live_bytes;
    uint64_t n_hooked, n_adopted;
    sqh_entry e[SQH_MAX];
    sqh_allocator dflt;
    pthread_mutex_t mu;
} sqh = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* Under sqh.mu: the entry of ptr, or NULL. */
static sqh_entry *entry_of(const char *ptr) {
    for (int k = 0; k < SQH_MAX; k++)
        if (sqh.e[k].state != SQH_EMPTY && sqh.e[k].ptr == ptr) return &sqh.e[k];
    return NULL;
}

static int in_ring(const void *ptr) {
    return (const char *)ptr >= sqh.lo && (const char *)ptr < sqh.hi;
}

/* A kept block for `size` bytes, or NULL (then the default allocator serves). */
static void *try_keep(size_t size) {
    uint64_t cap, need, offset;
    void *p = NULL;
    if (!pthread_equal(pthread_self(), sqh.thread) || getpid() != sqh.pid) return NULL;
    cap = sq_ring_capacity(sqh.r);
    if (cap == 0 || (uint64_t)size > UINT64_MAX - sqh.headroom) return NULL;
    need = (uint64_t)size + sqh.headroom;
    pthread_mutex_lock(&sqh.mu);
    if (sqh.live_bytes + need <= cap / (2 * (uint64_t)sqh.nworkers)) {
        for (int k = 0; k < SQH_MAX; k++) {
            if (sqh.e[k].state != SQH_EMPTY) continue;
            if (sq_ring_keep(sqh.r, sqh.slot, need, UINT64_MAX, &offset) == SQ_OK) {
                sqh_entry *e = &sqh.e[k];
                e->ptr = sqh.lo + offset + sqh.headroom;
                e->offset = offset;
                e->nbytes = need;
                e->size = size;
                e->state = SQH_LIVE;
                sqh.live_bytes += need;
                sqh.n_hooked++;
                p = e->ptr;
            }
            break;
        }
    }
    pthread_mutex_unlock(&sqh.mu);
    return p;
}

/* Numpy frees (or moves) an array that lies in the ring. */
static void release(char *ptr) {
    if (getpid() != sqh.pid) return; /* a forked child: the blocks are not its */
    pthread_mutex_lock(&sqh.mu);
    sqh_entry *e = entry_of(ptr);
    if (e != NULL) {
        if (e->state == SQH_LIVE) {
            sq_ring_unkeep(sqh.r, sqh.slot, e->offset);
            sqh.live_bytes -= e->nbytes;
        } /* SQH_ADOPTED: the parent holds the block now */
        e->state = SQH_EMPTY;
    }
    pthread_mutex_unlock(&sqh.mu);
}

int sqh_setup(sq_ring *r, char *base, size_t map_size, int slot, uint64_t headroom,
              uint64_t min_size, const sqh_allocator *dflt) {
    if (sqh.installed) return -1;
    sqh.r = r;
    sqh.lo = base;
    sqh.hi = base + map_size;
    sqh.slot = slot;
    sqh.nworkers = sq_ring_nworkers(r);
    sqh.pid = getpid();
    sqh.thread = pthread_self();
    sqh.headroom = headroom;
    sqh.min_size = min_size;
    sqh.dflt = *dflt;
    __atomic_store_n(&sqh.enabled, 1, __ATOMIC_RELAXED);
    sqh.installed = 1;
    return 0;
}

int sqh_installed(void) { return sqh.installed; }

void sqh_set_active(int on) { __atomic_store_n(&sqh.active, on != 0, __ATOMIC_RELAXED); }

void sqh_disable(void) { __atomic_store_n(&sqh.enabled, 0, __ATOMIC_RELAXED); }

void *sqh_malloc(void *ctx, size_t size) {
    if (size >= sqh.min_size && __atomic_load_n(&sqh.active, __ATOMIC_RELAXED) &&
        __atomic_load_n(&sqh.enabled, __ATOMIC_RELAXED)) {
        void *p = try_keep(size);
        if (p != NULL) return p;
    }
    return sqh.dflt.malloc(sqh.dflt.ctx, size);
}

void *sqh_calloc(void *ctx, size_t nelem, size_t elsize) {
    return sqh.dflt.calloc(sqh.dflt.ctx, nelem, elsize);
}

void *sqh_realloc(void *ctx, void *ptr, size_t new_size) {
    if (ptr == NULL || !in_ring(ptr)) return sqh.dflt.realloc(sqh.dflt.ctx, ptr, new_size);
    size_t old = 0;
    pthread_mutex_lock(&sqh.mu);
    sqh_entry *e = entry_of((char *)ptr);
    if (e != NULL) old = e->size;
    pthread_mutex_unlock(&sqh.mu);
    void *q = sqh_malloc(ctx, new_size ? new_size : 1);
    if (q == NULL) return NULL; /* ptr stays valid, as realloc leaves it */
    memcpy(q, ptr, old < new_size ? old : new_size);
    release((char *)ptr);
    return q;
}

void sqh_free(void *ctx, void *ptr, size_t size) {
    if (ptr != NULL && in_ring(ptr)) {
        release((char *)ptr);
        return;
    }
    sqh.dflt.free(sqh.dflt.ctx, ptr, size);
}

int sqh_find(const char *ptr, size_t nbytes, uint64_t *offset, uint64_t *block_bytes) {
    int found = 0;
    if (!sqh.installed || !in_ring(ptr)) return 0;
    pthread_mutex_lock(&sqh.mu);
    sqh_entry *e = entry_of(ptr);
    if (e != NULL && e->state == SQH_LIVE && nbytes <= e->size) {
        *offset = e->offset;
        *block_bytes = e->nbytes;
        found = 1;
    }
    pthread_mutex_unlock(&sqh.mu);
    return found;
}

void sqh_adopted(uint64_t offset) {
    pthread_mutex_lock(&sqh.mu);
    for (int k = 0; k < SQH_MAX; k++) {
        sqh_entry *e = &sqh.e[k];
        if (e->state == SQH_LIVE && e->offset == offset) {
            e->state = SQH_ADOPTED;
            sqh.live_bytes -= e->nbytes;
            sqh.n_adopted++;
        }
    }
    pthread_mutex_unlock(&sqh.mu);
}

int sqh_count(int state) {
    int n = 0;
    if (!sqh.installed) return 0;
    pthread_mutex_lock(&sqh.mu);
    for (int k = 0; k < SQH_MAX; k++) n += sqh.e[k].state == state;
    pthread_mutex_unlock(&sqh.mu);
    return n;
}

void sqh_get_stats(sqh_stats *out) {
    pthread_mutex_lock(&sqh.mu);
    out->installed = sqh.installed;
    out->enabled = __atomic_load_n(&sqh.enabled, __ATOMIC_RELAXED);
    out->hooked = sqh.n_hooked;
    out->adopted = sqh.n_adopted;
    out->live_bytes = sqh.live_bytes;
    out->live = out->adopted_alive = 0;
    for (int k = 0; k < SQH_MAX; k++) {
        out->live += sqh.e[k].state == SQH_LIVE;
        out->adopted_alive += sqh.e[k].state == SQH_ADOPTED;
    }
    pthread_mutex_unlock(&sqh.mu);
}
