/*
 * test_ringbuf.c: stand-alone tests of the shared-memory ring (ringbuf.c), with
 * real processes sharing a MAP_SHARED|MAP_ANONYMOUS region.  No Python.
 *
 * It includes ringbuf.c itself (white-box): the tests can walk the block list
 * under the header mutex to check the allocator's invariants, and can take the
 * mutex directly to kill a process that provably holds it.  It includes
 * watchdog.c, shm.c (the region's memfd) and allochook.c (the worker's numpy
 * allocation hook, tested here with a stand-in for numpy's default allocator:
 * its numpy side is covered by tests/loaders/test_alloc_hook.py) and copypool.c (the copy
 * threads of thread loaders) too, so that this file stays the only source to
 * compile.
 *
 * The tests whose name contains "threads" run threads against one ring in one
 * process: `make tsan` runs them under ThreadSanitizer (it cannot follow memory
 * shared between processes, so the forked tests would tell it nothing).
 *
 * Each test runs in its own forked process group under an alarm, so a crash or a
 * deadlock fails that test only.  Usage: test_ringbuf [substring-of-test-name].
 * Prints one line per test and "ringbuf: N passed, M failed"; exits 1 on failure.
 * Random tests print their seed; replay with SQ_TEST_SEED=<seed>.
 */
#include <signal.h>

/* Fault injection: the process kills itself at the g_fault_at-th fault point
 * (SQ_FAULT_POINT in ringbuf.c) it passes, 0: never. */
static int g_fault_at;
#define SQ_FAULT_POINT() \
    ((g_fault_at > 0 && --g_fault_at == 0) ? (void)raise(SIGKILL) : (void)0)

#include "ringbuf.c"
#include "watchdog.c"
#include "shm.c"
#include "allochook.c"
#include "copypool.c"

#include <fcntl.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/wait.h>

#define TEST_ALARM 60 /* seconds: a safety net against deadlocks, not a timing test */
#define LONG_WAIT 20.0 /* timeouts that must never expire in a passing run */

static int g_fail; /* CHECK failures in this process */

#define CHECK(cond)                                                                 \
    do {                                                                            \
        if (!(cond)) {                                                              \
            fprintf(stderr, "  %s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__,  \
                    __func__, #cond);                                               \
            g_fail++;                                                               \
        }                                                                           \
    } while (0)

#define CHECK_EQ(a, b)                                                              \
    do {                                                                            \
        long long a_ = (long long)(a), b_ = (long long)(b);                         \
        if (a_ != b_) {                                                             \
            fprintf(stderr, "  %s:%d: %s: %s == %lld, expected %s == %lld\n",       \
                    __FILE__, __LINE__, __func__, #a, a_, #b, b_);                  \
            g_fail++;                                                               \
        }                                                                           \
    } while (0)

/* ---------------------------------------------------------------- helpers ---- */

static size_t g_map_size;

/* A fresh zeroed shared region holding a ring; unmapped when the test exits. */
static sq_ring *ring_new(int nworkers, int qlen, uint64_t capacity, uint64_t max_capacity) {
    size_t hdr = sq_ring_header_size(nworkers, qlen);
    g_map_size = hdr + max_capacity;
    void *p = mmap(NULL, g_map_size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                   -1, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        exit(2);
    }
    if (sq_ring_init(p, nworkers, qlen, capacity) != SQ_OK) {
        fprintf(stderr, "sq_ring_init failed\n");
        exit(2);
    }
    return (sq_ring *)p;
}

/* Child processes run fn(arg) and exit with 0 iff no CHECK failed. */
static pid_t spawn(void (*fn)(sq_ring *, int), sq_ring *r, int arg) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        perror("fork");
        exit(2);
    }
    if (pid == 0) {
        g_fail = 0;
        fn(r, arg);
        _exit(g_fail ? 1 : 0);
    }
    return pid;
}

/* Reap pid; true if it exited with status 0. */
static int reap_ok(pid_t pid) {
    int st;
    if (waitpid(pid, &st, 0) != pid) return 0;
    if (WIFEXITED(st) && WEXITSTATUS(st) == 0) return 1;
    fprintf(stderr, "  child %d: %s %d\n", (int)pid,
            WIFEXITED(st) ? "exit status" : "killed by signal",
            WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
    return 0;
}

static void kill_reap(pid_t pid) {
    int st;
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
}

static void sleep_ms(double ms) {
    struct timespec ts = {(time_t)(ms / 1000), (long)((ms - 1000 * (long)(ms / 1000)) * 1e6)};
    nanosleep(&ts, NULL);
}

static sq_stats stats(sq_ring *r) {
    sq_stats s;
    memset(&s, 0xff, sizeof s);
    CHECK_EQ(sq_ring_stats(r, &s), SQ_OK);
    return s;
}

/* White-box reads of header fields, under the lock. */
static uint32_t producer_sleepers(sq_ring *r) { /* for space or for a task */
    ring_lock(r);
    uint32_t n = r->space_sleepers + r->task_sleepers;
    ring_unlock(r);
    return n;
}

static uint32_t ready_sleepers(sq_ring *r) {
    ring_lock(r);
    uint32_t n = r->ready_sleepers;
    ring_unlock(r);
    return n;
}

/* Poll (as a safety net, up to LONG_WAIT s) until fn(r) == want; true if reached. */
static int wait_for(uint64_t (*fn)(sq_ring *), sq_ring *r, uint64_t want) {
    for (int i = 0; i < (int)(LONG_WAIT * 1000); i++) {
        if (fn(r) == want) return 1;
        sleep_ms(1);
    }
    return 0;
}
static uint64_t n_space_waiters(sq_ring *r) { return stats(r).space_waiters; }
static uint64_t n_producer_sleepers(sq_ring *r) { return producer_sleepers(r); }
static uint64_t n_ready_sleepers(sq_ring *r) { return ready_sleepers(r); }


/* The allocator's invariants, checked under the lock: the blocks tile the data
 * area exactly, none crosses its end, live ones carry their position in their
 * magic, the counters match the block states, and the cursor names a block. */
static void check_invariants(sq_ring *r) {
    CHECK_EQ(ring_lock(r), SQ_OK);
    CHECK(r->q_write - r->q_read <= (uint64_t)r->qlen);
    if (r->capacity != 0) {
        uint64_t n_res = 0, n_com = 0, n_kept = 0, used = 0, pos = 0;
        int cursor_ok = r->cursor == 0;
        while (pos < r->capacity) {
            sq_block *b = block_at(r, pos);
            int live = b->state == BLK_RESERVED || b->state == BLK_COMMITTED ||
                       b->state == BLK_KEPT;
            if (b->size < SQ_BLOCK_HEADER || b->size % SQ_ALIGN ||
                (b->state != BLK_FREE && !live) || (live && b->magic != (SQ_MAGIC ^ pos))) {
                fprintf(stderr, "  bad block at %llu: size %llu state %u magic ok %d\n",
                        (unsigned long long)pos, (unsigned long long)b->size, b->state,
                        b->magic == (SQ_MAGIC ^ pos));
                g_fail++;
                break;
            }
            n_res += b->state == BLK_RESERVED;
            n_com += b->state == BLK_COMMITTED;
            n_kept += b->state == BLK_KEPT;
            used += live ? b->size : 0;
            cursor_ok |= r->cursor == pos;
            pos += b->size;
        }
        CHECK_EQ(pos, r->capacity);
        CHECK(cursor_ok);
        CHECK_EQ(used, r->used);
        CHECK_EQ(n_res, r->n_reserved);
        CHECK_EQ(n_com, r->n_committed + r->n_popped);
        CHECK_EQ(n_kept, r->n_kept);
    }
    ring_unlock(r);
}

static void check_idle(sq_ring *r) {
    sq_stats s = stats(r);
    CHECK_EQ(s.used, 0);
    CHECK_EQ(s.reserved, 0);
    CHECK_EQ(s.committed, 0);
    CHECK_EQ(s.popped, 0);
    CHECK_EQ(s.space_waiters, 0);
    CHECK_EQ(s.kept, 0);
    check_invariants(r);
}

/* Consumer: pop the next `n` results (each ready now) and release their blocks. */
static void pop_release(sq_ring *r, int n) {
    sq_entry e;
    for (int k = 0; k < n; k++) {
        CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
        CHECK_EQ(sq_ring_release(r, e.offset), SQ_OK);
    }
}

/* Deterministic bytes for block (worker, seq): splitmix64 stream. */
static uint64_t mix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

static void pattern_fill(unsigned char *p, uint64_t n, uint64_t worker, uint64_t seq) {
    uint64_t x = worker << 40 ^ seq;
    for (uint64_t i = 0; i < n; i += 8) {
        uint64_t v = mix64(&x);
        memcpy(p + i, &v, n - i < 8 ? n - i : 8);
    }
}

static int pattern_ok(const unsigned char *p, uint64_t n, uint64_t worker, uint64_t seq) {
    uint64_t x = worker << 40 ^ seq;
    for (uint64_t i = 0; i < n; i += 8) {
        uint64_t v = mix64(&x);
        if (memcmp(p + i, &v, n - i < 8 ? n - i : 8) != 0) return 0;
    }
    return 1;
}

static uint64_t g_seed;
static uint64_t rnd(uint64_t n) { return mix64(&g_seed) % n; }

/* sq_task_reset, checked: the new generation (0 if it failed). */
static uint64_t task_reset(sq_ring *r, int64_t start, int64_t end, int64_t window) {
    uint64_t generation = 0;
    CHECK_EQ(sq_task_reset(r, start, end, window, &generation), SQ_OK);
    return generation;
}

/* Reserve, retrying on SQ_TIMEOUT for up to LONG_WAIT seconds. */
static int reserve(sq_ring *r, int w, uint64_t nbytes, uint64_t *off) {
    int rc;
    for (int i = 0; i < (int)LONG_WAIT; i++)
        if ((rc = sq_ring_reserve(r, w, nbytes, 1.0, off)) != SQ_TIMEOUT) return rc;
    return SQ_TIMEOUT;
}

/* ------------------------------------------------------------------ tests ---- */

static void test_basics(void) {
    sq_ring *r = ring_new(2, 16, 4096, 4096);
    unsigned char *base = (unsigned char *)r;
    uint64_t off, off2, req = 7;
    sq_entry e;

    CHECK_EQ(sq_ring_check(r), SQ_OK);
    CHECK_EQ(sq_ring_data_offset(r) % 4096, 0);
    CHECK_EQ(sq_ring_capacity(r), 4096);
    CHECK_EQ(sq_ring_set_capacity(r, 8192), SQ_EINVAL); /* sized once only */
    check_idle(r);

    CHECK_EQ(sq_ring_pop(r, 0, &e, &req), SQ_TIMEOUT);
    CHECK_EQ(sq_ring_reserve(r, 0, 100, 0, &off), SQ_OK);
    CHECK_EQ((off - sq_ring_data_offset(r)) % SQ_ALIGN, 0);
    CHECK(off >= sq_ring_data_offset(r) + SQ_BLOCK_HEADER);
    CHECK(off + 128 <= sq_ring_data_offset(r) + 4096);
    memset(base + off, 0xab, 100);
    sq_stats s = stats(r);
    CHECK_EQ(s.reserved, 1);
    CHECK_EQ(s.used, 128 + SQ_BLOCK_HEADER);
    CHECK_EQ(sq_ring_release(r, off), SQ_ECORRUPT); /* not committed yet */
    CHECK_EQ(sq_ring_commit(r, 1, off, 7, 3, SQ_KIND_RESULT), SQ_ECORRUPT); /* not its block */
    CHECK_EQ(sq_ring_commit(r, 0, off + 64, 7, 3, SQ_KIND_RESULT), SQ_ECORRUPT);
    CHECK_EQ(sq_ring_commit(r, 0, off, 7, 3, SQ_KIND_RESULT), SQ_OK);
    CHECK_EQ(sq_ring_commit(r, 0, off, 7, 3, SQ_KIND_RESULT), SQ_ECORRUPT); /* twice */
    s = stats(r);
    CHECK_EQ(s.reserved, 0);
    CHECK_EQ(s.committed, 1);
    CHECK_EQ(sq_ring_post(r, 1, 8, 3, SQ_KIND_ERROR), SQ_OK);
    check_invariants(r);

    CHECK_EQ(sq_ring_pop(r, 0, &e, &req), SQ_OK);
    CHECK_EQ(e.offset, off);
    CHECK_EQ(e.nbytes, 128); /* rounded up to SQ_ALIGN */
    CHECK_EQ(e.index, 7);
    CHECK_EQ(e.generation, 3);
    CHECK_EQ(e.worker, 0);
    CHECK_EQ(e.kind, SQ_KIND_RESULT);
    CHECK(base[off] == 0xab && base[off + 99] == 0xab);
    CHECK_EQ(sq_ring_pop(r, 0, &e, &req), SQ_OK);
    CHECK_EQ(e.offset, 0);
    CHECK_EQ(e.index, 8);
    CHECK_EQ(e.worker, 1);
    CHECK_EQ(e.kind, SQ_KIND_ERROR);
    CHECK_EQ(stats(r).popped, 1);
    CHECK_EQ(stats(r).committed, 0);
    CHECK_EQ(req, 7); /* untouched unless SQ_UNSIZED */

    CHECK_EQ(sq_ring_release(r, off), SQ_OK);
    check_idle(r);
    CHECK(sq_ring_release(r, off) != SQ_OK);       /* double release */
    CHECK_EQ(sq_ring_release(r, 12345), SQ_EINVAL); /* stray offsets */
    CHECK_EQ(sq_ring_release(r, 0), SQ_EINVAL);
    CHECK_EQ(sq_ring_release(r, sq_ring_data_offset(r) + 8192), SQ_EINVAL);

    /* bad arguments */
    CHECK_EQ(sq_ring_reserve(r, 2, 10, 0, &off2), SQ_EINVAL);
    CHECK_EQ(sq_ring_reserve(r, -1, 10, 0, &off2), SQ_EINVAL);
    CHECK_EQ(sq_ring_reserve(r, 0, 10, 0, NULL), SQ_EINVAL);
    CHECK_EQ(sq_ring_commit(r, 5, off, 0, 0, 0), SQ_EINVAL);
    CHECK_EQ(sq_ring_post(r, -1, 0, 0, 0), SQ_EINVAL);
    int64_t idx;
    int deaths;
    CHECK_EQ(sq_worker_reset(r, 2, &idx, &deaths), SQ_EINVAL);
    uint64_t gen;
    CHECK_EQ(sq_task_claim(r, 9, 0, &idx, &gen), SQ_EINVAL);

    /* a zero-byte block still gets a header and a distinct offset */
    CHECK_EQ(sq_ring_reserve(r, 0, 0, 0, &off), SQ_OK);
    CHECK_EQ(sq_ring_reserve(r, 1, 0, 0, &off2), SQ_OK);
    CHECK(off != off2);
    CHECK_EQ(sq_ring_commit(r, 1, off2, 0, 0, 0), SQ_OK);
    CHECK_EQ(sq_ring_commit(r, 0, off, 1, 0, 0), SQ_OK);
    CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
    CHECK_EQ(e.offset, off2); /* the queue is in commit order, not block order */
    CHECK_EQ(e.nbytes, 0);
    CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
    CHECK_EQ(e.offset, off);
    CHECK_EQ(sq_ring_release(r, off), SQ_OK);
    CHECK_EQ(sq_ring_release(r, off2), SQ_OK);
    check_idle(r);
}

static void test_init_check(void) {
    static char zero[8192] __attribute__((aligned(64)));
    CHECK_EQ(sq_ring_check(zero), SQ_ECORRUPT);
    CHECK_EQ(sq_ring_check(NULL), SQ_ECORRUPT);
    void *p = mmap(NULL, 8192, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    CHECK_EQ(sq_ring_init(p, 1, 4, 100), SQ_EINVAL); /* not a multiple of SQ_ALIGN */
    CHECK_EQ(sq_ring_init(p, 0, 4, 0), SQ_EINVAL);
    CHECK_EQ(sq_ring_init(p, 1, 0, 0), SQ_EINVAL);
    CHECK_EQ(sq_ring_init(NULL, 1, 4, 0), SQ_EINVAL);
    CHECK_EQ(sq_ring_init(p, 1, 4, 0), SQ_OK);
    CHECK_EQ(sq_ring_check(p), SQ_OK);
    CHECK_EQ(sq_ring_set_capacity(p, 0), SQ_EINVAL);
    CHECK_EQ(sq_ring_set_capacity(p, 100), SQ_EINVAL);
    CHECK(sq_ring_header_size(1, 4) <= 8192);
    CHECK_EQ(sq_ring_header_size(3, 1000) % 4096, 0);
    CHECK(sq_ring_header_size(3, 1000) >= 3 * 64 + 1000 * sizeof(sq_entry));
    munmap(p, 8192);
}

/* Sizes that do not divide the capacity: every block lies whole inside the data
 * area (none crosses its end), the bytes survive, and the ring wraps many times. */
static void test_wrap(void) {
    const uint64_t cap = 64 * 37; /* 2368: not a power of two */
    sq_ring *r = ring_new(1, 64, cap, cap);
    unsigned char *base = (unsigned char *)r;
    const uint64_t sizes[] = {1, 100, 200, 333, 500, 777, 64, 0, 1000};
    uint64_t held[8], held_n[8], held_seq[8];
    int nheld = 0, wraps = 0;
    uint64_t last = 0, d0 = sq_ring_data_offset(r);

    for (uint64_t seq = 0; seq < 5000; seq++) {
        uint64_t n = sizes[seq % 9], off;
        sq_entry e;
        int rc = sq_ring_reserve(r, 0, n, 0, &off);
        while (rc == SQ_TIMEOUT && nheld > 0) { /* full: free the oldest */
            CHECK_EQ(sq_ring_release(r, held[0]), SQ_OK);
            CHECK(pattern_ok(base + held[0], held_n[0], 0, held_seq[0]));
            memmove(held, held + 1, --nheld * sizeof *held);
            memmove(held_n, held_n + 1, nheld * sizeof *held);
            memmove(held_seq, held_seq + 1, nheld * sizeof *held);
            rc = sq_ring_reserve(r, 0, n, 0, &off);
        }
        CHECK_EQ(rc, SQ_OK);
        if (rc != SQ_OK) return;
        CHECK(off >= d0 + SQ_BLOCK_HEADER && off + n <= d0 + cap);
        if (off < last) wraps++;
        last = off;
        pattern_fill(base + off, n, 0, seq);
        CHECK_EQ(sq_ring_commit(r, 0, off, (int64_t)seq, 0, 0), SQ_OK);
        CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
        CHECK_EQ(e.offset, off);
        held[nheld] = off;
        held_n[nheld] = n;
        held_seq[nheld++] = seq;
        if (nheld == 8) { /* keep at most 8 */
            CHECK_EQ(sq_ring_release(r, held[0]), SQ_OK);
            CHECK(pattern_ok(base + held[0], held_n[0], 0, held_seq[0]));
            memmove(held, held + 1, --nheld * sizeof *held);
            memmove(held_n, held_n + 1, nheld * sizeof *held);
            memmove(held_seq, held_seq + 1, nheld * sizeof *held);
        }
        if (seq % 97 == 0) check_invariants(r);
    }
    for (int i = 0; i < nheld; i++) {
        CHECK(pattern_ok(base + held[i], held_n[i], 0, held_seq[i]));
        CHECK_EQ(sq_ring_release(r, held[i]), SQ_OK);
    }
    CHECK(wraps > 100);
    check_idle(r);
}

/* A block bigger than the space on either side of the current position must still
 * fit once the ring is empty (it is the whole data area). */
static void test_big_block_in_empty_ring(void) {
    const uint64_t cap = 1024;
    sq_ring *r = ring_new(1, 8, cap, cap);
    uint64_t off;
    sq_entry e;
    for (uint64_t first = 0; first <= cap - 2 * SQ_BLOCK_HEADER; first += SQ_ALIGN) {
        CHECK_EQ(sq_ring_reserve(r, 0, first, 0, &off), SQ_OK);
        CHECK_EQ(sq_ring_commit(r, 0, off, 0, 0, 0), SQ_OK);
        CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
        CHECK_EQ(sq_ring_release(r, off), SQ_OK);
        /* empty now; the whole area is free */
        int rc = sq_ring_reserve(r, 0, cap - SQ_BLOCK_HEADER, 0.5, &off);
        CHECK_EQ(rc, SQ_OK);
        if (rc != SQ_OK) return;
        CHECK_EQ(off, sq_ring_data_offset(r) + SQ_BLOCK_HEADER);
        CHECK_EQ(sq_ring_commit(r, 0, off, 1, 0, 0), SQ_OK);
        CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
        CHECK_EQ(sq_ring_release(r, off), SQ_OK);
        check_idle(r);
    }
}

/* Out-of-order release: released space is reusable at once wherever it lies, a
 * held block is stepped over, adjacent free blocks merge, and a block is always
 * contiguous (two separate holes do not make room for a block as big as both). */
static void test_out_of_order(void) {
    const uint64_t cap = 4 * 256;
    sq_ring *r = ring_new(4, 8, cap, cap);
    uint64_t a, b, c, d, x, y;
    sq_entry e;
    CHECK_EQ(sq_ring_reserve(r, 0, 192, 0, &a), SQ_OK);
    CHECK_EQ(sq_ring_reserve(r, 1, 192, 0, &b), SQ_OK);
    CHECK_EQ(sq_ring_reserve(r, 2, 192, 0, &c), SQ_OK);
    CHECK_EQ(sq_ring_reserve(r, 3, 192, 0, &d), SQ_OK);
    CHECK(a < b && b < c && c < d);
    CHECK_EQ(stats(r).used, cap);
    CHECK_EQ(sq_ring_reserve(r, 0, 0, 0, &x), SQ_TIMEOUT); /* full */
    uint64_t order[] = {c, a, d, b};
    int owner[] = {2, 0, 3, 1};
    for (int i = 0; i < 4; i++) CHECK_EQ(sq_ring_commit(r, owner[i], order[i], i, 0, 0), SQ_OK);
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
        CHECK_EQ(e.offset, order[i]);
    }
    CHECK_EQ(sq_ring_release(r, b), SQ_OK);
    CHECK_EQ(stats(r).used, 3 * 256); /* at once, although a is still held */
    CHECK_EQ(stats(r).popped, 3);
    CHECK_EQ(sq_ring_reserve(r, 0, 192, 0, &x), SQ_OK);
    CHECK_EQ(x, b); /* the hole between a and c */
    CHECK_EQ(sq_ring_reserve(r, 0, 0, 0, &y), SQ_TIMEOUT);
    CHECK_EQ(sq_ring_release(r, d), SQ_OK);
    /* holes at d (256) and, once released, at a (256): not contiguous */
    CHECK_EQ(sq_ring_release(r, a), SQ_OK);
    CHECK_EQ(stats(r).used, 2 * 256);
    CHECK_EQ(sq_ring_reserve(r, 0, 448 - SQ_BLOCK_HEADER, 0, &y), SQ_TIMEOUT);
    check_invariants(r);
    /* c released: c and d merge into one run of 512 */
    CHECK_EQ(sq_ring_release(r, c), SQ_OK);
    CHECK_EQ(sq_ring_reserve(r, 1, 512 - SQ_BLOCK_HEADER, 0, &y), SQ_OK);
    CHECK_EQ(y, c);
    CHECK_EQ(sq_ring_commit(r, 0, x, 8, 0, 0), SQ_OK);
    CHECK_EQ(sq_ring_commit(r, 1, y, 9, 0, 0), SQ_OK);
    pop_release(r, 2);
    check_idle(r);
    /* all free again: the whole area is one block */
    CHECK_EQ(sq_ring_reserve(r, 0, cap - SQ_BLOCK_HEADER, 0, &x), SQ_OK);
    check_invariants(r);
}

/* Full ring: the producer blocks until the consumer releases (any block). */
static void backpressure_producer(sq_ring *r, int w) {
    for (int i = 0; i < 3; i++) {
        uint64_t off;
        CHECK_EQ(sq_ring_reserve(r, w, 448, LONG_WAIT, &off), SQ_OK);
        pattern_fill((unsigned char *)r + off, 448, w, i);
        CHECK_EQ(sq_ring_commit(r, w, off, i, 0, 0), SQ_OK);
    }
}

static void test_backpressure(void) {
    sq_ring *r = ring_new(1, 8, 1024, 1024);
    sq_entry e[3];
    pid_t pid = spawn(backpressure_producer, r, 0);
    for (int i = 0; i < 2; i++) CHECK_EQ(sq_ring_pop(r, LONG_WAIT, &e[i], NULL), SQ_OK);
    CHECK(wait_for(n_space_waiters, r, 1)); /* the third block waits for space */
    CHECK_EQ(sq_ring_pop(r, 0.05, &e[2], NULL), SQ_TIMEOUT);
    CHECK_EQ(stats(r).used, 1024);
    CHECK_EQ(stats(r).space_waiters, 1);
    CHECK(pattern_ok((unsigned char *)r + e[1].offset, 448, 0, 1));
    CHECK_EQ(sq_ring_release(r, e[1].offset), SQ_OK); /* the second: it wakes */
    CHECK_EQ(sq_ring_pop(r, LONG_WAIT, &e[2], NULL), SQ_OK);
    CHECK_EQ(e[2].index, 2);
    CHECK_EQ(e[2].offset, e[1].offset);
    CHECK(pattern_ok((unsigned char *)r + e[2].offset, 448, 0, 2));
    CHECK(pattern_ok((unsigned char *)r + e[0].offset, 448, 0, 0)); /* untouched */
    CHECK(reap_ok(pid));
    CHECK_EQ(sq_ring_release(r, e[0].offset), SQ_OK);
    CHECK_EQ(sq_ring_release(r, e[2].offset), SQ_OK);
    check_idle(r);
}

static void test_too_big(void) {
    sq_ring *r = ring_new(1, 8, 1024, 1024);
    uint64_t off;
    CHECK_EQ(sq_ring_reserve(r, 0, 1024, LONG_WAIT, &off), SQ_ETOOBIG);
    CHECK_EQ(sq_ring_reserve(r, 0, 961, LONG_WAIT, &off), SQ_ETOOBIG);
    CHECK_EQ(sq_ring_reserve(r, 0, UINT64_MAX, LONG_WAIT, &off), SQ_ETOOBIG);
    CHECK_EQ(sq_ring_reserve(r, 0, UINT64_MAX - 70, LONG_WAIT, &off), SQ_ETOOBIG);
    CHECK_EQ(sq_ring_reserve(r, 0, 960, 0, &off), SQ_OK); /* exactly the whole area */
    /* too big even while another block is live: fails at once, does not wait */
    CHECK_EQ(sq_ring_reserve(r, 0, 2000, LONG_WAIT, &off), SQ_ETOOBIG);
    check_invariants(r);
}

/* A growable ring: a block larger than the area waits for the consumer to grow
 * it (within max_capacity), in line with the other waiters. */
static void test_growable(void) {
    sq_ring *r = ring_new(1, 8, 1024, 8192);
    uint64_t off;
    sq_stats s;
    CHECK_EQ(sq_ring_set_max_capacity(r, 100), SQ_EINVAL);
    CHECK_EQ(sq_ring_set_max_capacity(r, 4096), SQ_OK);
    CHECK_EQ(sq_ring_reserve(r, 0, 5000, LONG_WAIT, &off), SQ_ETOOBIG); /* past it */
    CHECK_EQ(sq_ring_reserve(r, 0, 2000, 0.01, &off), SQ_TIMEOUT); /* waits */
    CHECK_EQ(sq_ring_stats(r, &s), SQ_OK);
    CHECK_EQ(s.capacity, 1024);
    CHECK_EQ(sq_ring_grow(r, 4096), SQ_OK);
    CHECK_EQ(sq_ring_reserve(r, 0, 2000, 0, &off), SQ_OK);
    check_invariants(r);
    CHECK_EQ(sq_ring_set_max_capacity(r, 0), SQ_OK); /* no more growth: fails */
    CHECK_EQ(sq_ring_reserve(r, 0, 5000, LONG_WAIT, &off), SQ_ETOOBIG);
}

/* Unsized ring: reserve records the request, pop reports it, set_capacity wakes. */
static void unsized_producer(sq_ring *r, int w) {
    uint64_t off;
    CHECK_EQ(sq_ring_reserve(r, w, 1000, LONG_WAIT, &off), SQ_OK);
    CHECK_EQ(sq_ring_capacity(r), 4096);
    pattern_fill((unsigned char *)r + off, 1000, w, 1);
    CHECK_EQ(sq_ring_commit(r, w, off, 1, 0, 0), SQ_OK);
}

static void test_unsized(void) {
    sq_ring *r = ring_new(2, 8, 0, 4096);
    sq_entry e;
    uint64_t req = 0, off;
    CHECK_EQ(sq_ring_pop(r, 0.01, &e, &req), SQ_TIMEOUT); /* nobody asked yet */
    CHECK_EQ(sq_ring_release(r, sq_ring_data_offset(r) + 64), SQ_EINVAL);
    CHECK_EQ(sq_ring_reserve(r, 0, 10, 0, &off), SQ_TIMEOUT); /* records 128 */
    CHECK_EQ(stats(r).requested, 128);
    pid_t pid = spawn(unsized_producer, r, 1);
    CHECK(wait_for(n_space_waiters, r, 1));
    CHECK_EQ(sq_ring_pop(r, LONG_WAIT, &e, &req), SQ_UNSIZED);
    CHECK_EQ(req, 1024 + SQ_BLOCK_HEADER); /* the largest request */
    CHECK_EQ(stats(r).capacity, 0);
    CHECK_EQ(sq_ring_set_capacity(r, 4096), SQ_OK);
    CHECK_EQ(sq_ring_pop(r, LONG_WAIT, &e, &req), SQ_OK);
    CHECK_EQ(e.worker, 1);
    CHECK(pattern_ok((unsigned char *)r + e.offset, 1000, 1, 1));
    CHECK(reap_ok(pid));
    CHECK_EQ(sq_ring_release(r, e.offset), SQ_OK);
    check_idle(r);
}

/* Close wakes everyone: producers in reserve and claim, a consumer in pop. */
static void closed_reserver(sq_ring *r, int w) {
    uint64_t off;
    CHECK_EQ(sq_ring_reserve(r, w, 512, LONG_WAIT, &off), SQ_CLOSED);
    CHECK_EQ(sq_ring_reserve(r, w, 1, 0, &off), SQ_CLOSED);
}

static void closed_claimer(sq_ring *r, int w) {
    int64_t i;
    uint64_t gen;
    CHECK_EQ(sq_task_claim(r, w, LONG_WAIT, &i, &gen), SQ_CLOSED);
}

static void closed_popper(sq_ring *r, int w) {
    sq_entry e;
    (void)w;
    CHECK_EQ(sq_ring_pop(r, LONG_WAIT, &e, NULL), SQ_OK); /* queued entries first */
    CHECK_EQ(e.index, 42);
    CHECK_EQ(sq_ring_pop(r, LONG_WAIT, &e, NULL), SQ_CLOSED);
}

static void unsized_closed_reserver(sq_ring *r, int w) {
    uint64_t off;
    CHECK_EQ(sq_ring_reserve(r, w, 64, LONG_WAIT, &off), SQ_CLOSED);
}

static void test_close(void) {
    sq_ring *r = ring_new(3, 8, 1024, 1024);
    uint64_t off;
    CHECK_EQ(sq_ring_reserve(r, 0, 900, 0, &off), SQ_OK); /* fill it */
    pid_t pr = spawn(closed_reserver, r, 1);
    pid_t pc = spawn(closed_claimer, r, 2);
    CHECK(wait_for(n_producer_sleepers, r, 2));
    pid_t pp = spawn(closed_popper, r, 0);
    CHECK(wait_for(n_ready_sleepers, r, 1));
    CHECK_EQ(sq_ring_post(r, 0, 42, 0, SQ_KIND_USER), SQ_OK);
    sq_ring_close(r);
    CHECK(reap_ok(pr));
    CHECK(reap_ok(pc));
    CHECK(reap_ok(pp));
    int64_t i;
    uint64_t gen;
    sq_entry e;
    CHECK_EQ(sq_task_claim(r, 1, 0, &i, &gen), SQ_CLOSED);
    CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_CLOSED);

    /* and a producer waiting for the ring to be sized */
    sq_ring *u = ring_new(1, 8, 0, 1024);
    pid_t pu = spawn(unsized_closed_reserver, u, 0);
    CHECK(wait_for(n_space_waiters, u, 1));
    sq_ring_close(u);
    CHECK(reap_ok(pu));
}

/* Contention: NPROD producers, variable sizes, every byte checked by the consumer,
 * releases shuffled and some blocks held back, no loss, duplicate or overlap. */
#define NPROD 4
#define NBLOCKS 3000
#define MAXHELD 24

typedef struct {
    uint64_t off, n, worker, seq;
} held_t;

static void contention_producer(sq_ring *r, int w) {
    uint64_t seed = g_seed ^ (uint64_t)w * 0x1234567ULL;
    for (uint64_t seq = 0; seq < NBLOCKS; seq++) {
        /* Mostly small, a few up to a fifth of the ring: the consumer pins up to 4
         * blocks of at most 2000 bytes to the end, which split the ring into 4 free
         * runs, the largest at least (cap - 4 * 2112) / 4 > 13,900 bytes; a larger
         * block could find no run once everything else is released, and wait for
         * space forever (the interleaving decides where the pinned blocks lie). */
        uint64_t n = mix64(&seed) % 8 == 0 ? 16 + mix64(&seed) % 12000 : 16 + mix64(&seed) % 2000;
        uint64_t off;
        int rc = reserve(r, w, n, &off);
        CHECK_EQ(rc, SQ_OK);
        if (rc != SQ_OK) return;
        unsigned char *p = (unsigned char *)r + off;
        uint64_t hdr[2] = {seq, n};
        memcpy(p, hdr, 16);
        pattern_fill(p + 16, n - 16, (uint64_t)w, seq);
        CHECK_EQ(sq_ring_commit(r, w, off, (int64_t)seq, 5, SQ_KIND_RESULT), SQ_OK);
    }
}

static void release_held(sq_ring *r, held_t *held, int *nheld, int i) {
    unsigned char *p = (unsigned char *)r + held[i].off;
    /* still intact while held: nobody wrote over a live block */
    CHECK(pattern_ok(p + 16, held[i].n - 16, held[i].worker, held[i].seq));
    CHECK_EQ(sq_ring_release(r, held[i].off), SQ_OK);
    held[i] = held[--*nheld];
}

static void test_contention(void) {
    const uint64_t cap = 64 * 1001; /* ~64 KiB, not a power of two */
    sq_ring *r = ring_new(NPROD, 1024, cap, cap);
    static unsigned char seen[NPROD][NBLOCKS];
    held_t held[MAXHELD], pinned[4];
    int nheld = 0, npinned = 0, target = 4;
    pid_t pids[NPROD];
    uint64_t got = 0, timeouts = 0, max_used = 0;

    memset(seen, 0, sizeof seen);
    for (int w = 0; w < NPROD; w++) pids[w] = spawn(contention_producer, r, w);
    while (got < (uint64_t)NPROD * NBLOCKS) {
        sq_entry e;
        int rc = sq_ring_pop(r, 0.02, &e, NULL);
        if (rc == SQ_TIMEOUT) { /* producers are blocked on what we hold */
            timeouts++;
            CHECK(timeouts < 5000); /* safety net */
            if (timeouts >= 5000) break;
            while (nheld > 0) release_held(r, held, &nheld, (int)rnd((uint64_t)nheld));
            continue;
        }
        CHECK_EQ(rc, SQ_OK);
        if (rc != SQ_OK) break;
        got++;
        uint64_t hdr[2];
        unsigned char *p = (unsigned char *)r + e.offset;
        memcpy(hdr, p, 16);
        CHECK(e.worker >= 0 && e.worker < NPROD);
        CHECK_EQ(hdr[0], (uint64_t)e.index);
        CHECK(hdr[0] < NBLOCKS);
        CHECK_EQ(e.generation, 5);
        /* rounded up to SQ_ALIGN, plus a remainder too small to split off */
        uint64_t aligned = (hdr[1] + SQ_ALIGN - 1) / SQ_ALIGN * SQ_ALIGN;
        CHECK(e.nbytes == aligned || e.nbytes == aligned + SQ_BLOCK_HEADER);
        if (e.worker < 0 || e.worker >= NPROD || hdr[0] >= NBLOCKS) break;
        CHECK(!seen[e.worker][hdr[0]]); /* no duplicate */
        seen[e.worker][hdr[0]] = 1;
        CHECK(pattern_ok(p + 16, hdr[1] - 16, (uint64_t)e.worker, hdr[0]));
        /* no overlap with any block we still hold (headers included) */
        for (int i = 0; i < nheld + npinned; i++) {
            held_t *h = i < nheld ? &held[i] : &pinned[i - nheld];
            uint64_t lo = h->off - SQ_BLOCK_HEADER, hi = h->off + h->n;
            CHECK(e.offset + e.nbytes <= lo || e.offset - SQ_BLOCK_HEADER >= hi);
        }
        held_t h = {e.offset, hdr[1], (uint64_t)e.worker, hdr[0]};
        if (got % 1500 == 0 && hdr[1] <= 2000 && npinned < 4)
            pinned[npinned++] = h; /* held to the very end: the ring goes round it */
        else
            held[nheld++] = h;
        uint64_t used = stats(r).used;
        if (used > max_used) max_used = used;
        /* release down to a random target, in random order: some blocks stay
         * held across many pops, so releases go out of order */
        if (nheld >= target || nheld == MAXHELD) {
            target = 1 + (int)rnd(MAXHELD - 1);
            while (nheld >= target) release_held(r, held, &nheld, (int)rnd((uint64_t)nheld));
        }
        if (got % 500 == 0) check_invariants(r);
    }
    for (int w = 0; w < NPROD; w++) CHECK(reap_ok(pids[w]));
    while (nheld > 0) release_held(r, held, &nheld, (int)rnd((uint64_t)nheld));
    CHECK(npinned > 0);
    while (npinned > 0) release_held(r, pinned, &npinned, npinned - 1);
    CHECK_EQ(got, (uint64_t)NPROD * NBLOCKS); /* nothing lost */
    for (int w = 0; w < NPROD; w++)
        for (int s = 0; s < NBLOCKS; s++) CHECK(seen[w][s] || (g_fail++, 0));
    CHECK(max_used > cap / 2); /* it did fill up */
    check_idle(r);
    CHECK_EQ(producer_sleepers(r), 0);
    CHECK_EQ(ready_sleepers(r), 0);
}

/* Tasks: each index handed out once across processes, never beyond the window. */
#define NTASKS 3000
#define WINDOW 16

static void task_worker(sq_ring *r, int w) {
    for (;;) {
        int64_t i;
        uint64_t gen;
        int rc = sq_task_claim(r, w, LONG_WAIT, &i, &gen);
        if (rc == SQ_CLOSED) return;
        CHECK_EQ(rc, SQ_OK);
        if (rc != SQ_OK) return;
        CHECK_EQ(gen, 1);
        CHECK_EQ(sq_ring_post(r, w, i, gen, SQ_KIND_USER), SQ_OK);
    }
}

static void test_tasks_window(void) {
    sq_ring *r = ring_new(NPROD, 64, 1024, 1024);
    static unsigned char done[NTASKS];
    int64_t base = 0, got = 0;
    int timeouts = 0;
    pid_t pids[NPROD];
    memset(done, 0, sizeof done);
    CHECK_EQ(task_reset(r, 0, NTASKS, WINDOW), 1);
    for (int w = 0; w < NPROD; w++) pids[w] = spawn(task_worker, r, w);
    while (got < NTASKS) {
        sq_entry e;
        int rc = sq_ring_pop(r, 0.05, &e, NULL);
        if (rc == SQ_TIMEOUT) { /* claimers wait on a lagging window: advance it */
            CHECK(++timeouts < 400); /* safety net */
            if (timeouts >= 400) break;
            while (base < NTASKS && done[base]) base++;
            sq_task_advance(r, base);
            continue;
        }
        CHECK_EQ(rc, SQ_OK);
        if (rc != SQ_OK) break;
        CHECK(e.index >= 0 && e.index < NTASKS);
        if (e.index < 0 || e.index >= NTASKS) break;
        CHECK(e.index < base + WINDOW); /* claimed within the window */
        CHECK(!done[e.index]);
        done[e.index] = 1;
        got++;
        /* advance the window to the first index not done, sometimes lagging */
        if (rnd(4) != 0) {
            while (base < NTASKS && done[base]) base++;
            sq_task_advance(r, base);
        }
        if (rnd(100) == 0) sleep_ms(1); /* let the claimers pile up on the window */
    }
    while (base < NTASKS && done[base]) base++;
    CHECK_EQ(base, NTASKS);
    sq_entry e;
    CHECK_EQ(sq_ring_pop(r, 0.05, &e, NULL), SQ_TIMEOUT); /* nothing beyond end */
    sq_ring_close(r);
    for (int w = 0; w < NPROD; w++) CHECK(reap_ok(pids[w]));
}

static void test_task_set_window(void) {
    sq_ring *r = ring_new(2, 16, 1024, 1024);
    int64_t i;
    uint64_t gen;
    CHECK_EQ(task_reset(r, 0, -1, 2), 1);
    for (int k = 0; k < 2; k++) {
        CHECK_EQ(sq_task_claim(r, k, 0, &i, &gen), SQ_OK);
        CHECK_EQ(i, k);
    }
    CHECK_EQ(sq_task_claim(r, 0, 0.01, &i, &gen), SQ_TIMEOUT); /* window 2 */
    CHECK_EQ(sq_task_set_window(r, 0), SQ_EINVAL);
    CHECK_EQ(sq_task_set_window(r, 4), SQ_OK); /* same generation, wider */
    for (int k = 2; k < 4; k++) {
        CHECK_EQ(sq_task_claim(r, 0, 0, &i, &gen), SQ_OK);
        CHECK_EQ(i, k);
        CHECK_EQ(gen, 1);
    }
    CHECK_EQ(sq_task_claim(r, 0, 0.01, &i, &gen), SQ_TIMEOUT);
    sq_task_advance(r, 1); /* the wider window moves with the base */
    CHECK_EQ(sq_task_claim(r, 0, 0, &i, &gen), SQ_OK);
    CHECK_EQ(i, 4);
    CHECK_EQ(sq_task_set_window(r, 1), SQ_OK); /* narrower: nothing taken back */
    CHECK_EQ(sq_task_claim(r, 0, 0.01, &i, &gen), SQ_TIMEOUT);
    sq_task_advance(r, 5);
    CHECK_EQ(sq_task_claim(r, 0, 0, &i, &gen), SQ_OK);
    CHECK_EQ(i, 5);
    CHECK_EQ(sq_task_claim(r, 0, 0.01, &i, &gen), SQ_TIMEOUT);
}

static void test_worker_task(void) {
    sq_ring *r = ring_new(2, 16, 1024, 1024);
    int64_t i, task;
    uint64_t gen, ns;
    CHECK_EQ(sq_worker_task(r, 2, &task, &ns), SQ_EINVAL);
    CHECK_EQ(task_reset(r, 0, -1, 4), 1);
    CHECK_EQ(sq_worker_task(r, 0, &task, &ns), SQ_OK); /* idle */
    CHECK_EQ(task, -1);
    CHECK_EQ(ns, 0);
    CHECK_EQ(sq_task_claim(r, 1, 0, &i, &gen), SQ_OK);
    sleep_ms(20);
    CHECK_EQ(sq_worker_task(r, 1, &task, &ns), SQ_OK); /* on task 0 for 20 ms */
    CHECK_EQ(task, i);
    CHECK(ns >= 20000000ULL && ns < 60000000000ULL);
    CHECK_EQ(sq_ring_post(r, 1, i, gen, SQ_KIND_RESULT), SQ_OK); /* answered */
    CHECK_EQ(sq_worker_task(r, 1, &task, &ns), SQ_OK);
    CHECK_EQ(task, -1);
    CHECK_EQ(sq_task_claim(r, 0, 0, &i, &gen), SQ_OK);
    CHECK_EQ(task_reset(r, 0, -1, 4), 2); /* a task of an older generation: none */
    CHECK_EQ(sq_worker_task(r, 0, &task, &ns), SQ_OK);
    CHECK_EQ(task, -1);
    sq_ring_close(r);
}

/* Busy time: a finished task's time from claim to answer counts, the running
 * one's so far too; an idle slot's does not grow. */
static void test_worker_busy(void) {
    sq_ring *r = ring_new(2, 16, 1024, 1024);
    int64_t i;
    uint64_t gen, busy, later;
    CHECK_EQ(sq_worker_busy(r, 2, &busy), SQ_EINVAL);
    CHECK_EQ(task_reset(r, 0, -1, 4), 1);
    CHECK_EQ(sq_worker_busy(r, 0, &busy), SQ_OK);
    CHECK_EQ(busy, 0);
    CHECK_EQ(sq_task_claim(r, 0, 0, &i, &gen), SQ_OK);
    sleep_ms(20);
    CHECK_EQ(sq_worker_busy(r, 0, &busy), SQ_OK); /* running for 20 ms */
    CHECK(busy >= 20000000ULL && busy < 60000000000ULL);
    CHECK_EQ(sq_ring_post(r, 0, i, gen, SQ_KIND_RESULT), SQ_OK);
    CHECK_EQ(sq_worker_busy(r, 0, &busy), SQ_OK);
    sleep_ms(20); /* idle */
    CHECK_EQ(sq_worker_busy(r, 0, &later), SQ_OK);
    CHECK_EQ(later, busy);
    CHECK(busy >= 20000000ULL);
    CHECK_EQ(sq_worker_busy(r, 1, &busy), SQ_OK); /* the other slot did nothing */
    CHECK_EQ(busy, 0);
    sq_ring_close(r);
}

static void test_tasks_generations(void) {
    sq_ring *r = ring_new(2, 8, 1024, 1024);
    int64_t i;
    uint64_t gen;
    int deaths;
    CHECK_EQ(sq_task_claim(r, 0, 0, &i, &gen), SQ_TIMEOUT); /* no generation yet */
    CHECK_EQ(task_reset(r, 10, -1, 3), 1); /* unbounded, window 3 */
    for (int k = 10; k < 13; k++) {
        CHECK_EQ(sq_task_claim(r, 0, 0, &i, &gen), SQ_OK);
        CHECK_EQ(i, k);
        CHECK_EQ(gen, 1);
    }
    CHECK_EQ(sq_task_claim(r, 0, 0.01, &i, &gen), SQ_TIMEOUT); /* window */
    sq_task_advance(r, 12);
    CHECK_EQ(sq_task_claim(r, 0, 0, &i, &gen), SQ_OK);
    CHECK_EQ(i, 13);
    CHECK_EQ(sq_task_claim(r, 0, 0, &i, &gen), SQ_OK);
    CHECK_EQ(i, 14);
    CHECK_EQ(sq_task_claim(r, 0, 0, &i, &gen), SQ_TIMEOUT);
    sq_task_advance(r, 5); /* never moves back */
    CHECK_EQ(sq_task_claim(r, 0, 0, &i, &gen), SQ_TIMEOUT);
    /* worker 0 dies holding 14 */
    CHECK_EQ(sq_worker_reset(r, 0, &i, &deaths), SQ_OK);
    CHECK_EQ(i, 14);
    CHECK_EQ(deaths, 1);
    /* a new generation empties the retry list and restarts the numbering */
    CHECK_EQ(task_reset(r, 0, 2, 100), 2);
    CHECK_EQ(sq_task_claim(r, 1, 0, &i, &gen), SQ_OK);
    CHECK_EQ(i, 0);
    CHECK_EQ(gen, 2);
    CHECK_EQ(sq_task_claim(r, 0, 0, &i, &gen), SQ_OK);
    CHECK_EQ(i, 1);
    CHECK_EQ(sq_task_claim(r, 0, 0, &i, &gen), SQ_TIMEOUT); /* end */
    /* worker 1 held a task of generation 2; after a new generation its death requeues nothing */
    CHECK_EQ(task_reset(r, 0, 1, 1), 3);
    CHECK_EQ(sq_worker_reset(r, 1, &i, &deaths), SQ_OK);
    CHECK_EQ(i, -1);
    CHECK_EQ(deaths, 0);
    CHECK_EQ(sq_task_claim(r, 1, 0, &i, &gen), SQ_OK);
    CHECK_EQ(i, 0);
    CHECK_EQ(gen, 3);
    /* a worker that finished its task (posted) holds nothing */
    CHECK_EQ(sq_ring_post(r, 1, 0, 3, SQ_KIND_RESULT), SQ_OK);
    CHECK_EQ(sq_worker_reset(r, 1, &i, &deaths), SQ_OK);
    CHECK_EQ(i, -1);
}

/* A producer SIGKILLed while holding a task and a reserved block. */
static int g_pipe[2];

static void dying_producer(sq_ring *r, int w) {
    int64_t i;
    uint64_t gen, off;
    CHECK_EQ(sq_task_claim(r, w, LONG_WAIT, &i, &gen), SQ_OK);
    CHECK_EQ(sq_ring_reserve(r, w, 300, LONG_WAIT, &off), SQ_OK);
    memset((char *)r + off, 0x5a, 300);
    char c = (char)i;
    if (write(g_pipe[1], &c, 1) != 1) g_fail++;
    pause(); /* killed here */
}

static void test_worker_death(void) {
    sq_ring *r = ring_new(4, 16, 2048, 2048);
    int64_t i;
    uint64_t gen, off_before, off_after;
    int deaths;
    char c;
    sq_entry e;
    CHECK_EQ(pipe(g_pipe), 0);
    CHECK_EQ(task_reset(r, 0, 100, 100), 1);

    /* a live block before and after the dead one's */
    CHECK_EQ(sq_task_claim(r, 2, 0, &i, &gen), SQ_OK);
    CHECK_EQ(i, 0);
    CHECK_EQ(sq_ring_reserve(r, 2, 100, 0, &off_before), SQ_OK);
    pid_t pid = spawn(dying_producer, r, 0);
    CHECK_EQ(read(g_pipe[0], &c, 1), 1);
    CHECK_EQ(c, 1); /* it holds task 1 */
    CHECK_EQ(sq_ring_reserve(r, 3, 100, 0, &off_after), SQ_OK);
    CHECK_EQ(stats(r).reserved, 3);
    uint64_t used = stats(r).used;
    kill_reap(pid);

    CHECK_EQ(sq_worker_reset(r, 0, &i, &deaths), SQ_OK);
    CHECK_EQ(i, 1);
    CHECK_EQ(deaths, 1);
    CHECK_EQ(stats(r).reserved, 2);
    CHECK_EQ(stats(r).used, used - 384); /* freed in place, between two live blocks */
    check_invariants(r);
    /* resetting again finds nothing more */
    CHECK_EQ(sq_worker_reset(r, 0, &i, &deaths), SQ_OK);
    CHECK_EQ(i, -1);
    CHECK_EQ(stats(r).reserved, 2);

    /* the requeued task is claimed first, by anyone; the slot can be reused */
    CHECK_EQ(sq_task_claim(r, 1, 0, &i, &gen), SQ_OK);
    CHECK_EQ(i, 1);
    CHECK_EQ(sq_task_claim(r, 1, 0, &i, &gen), SQ_OK);
    CHECK_EQ(i, 2);

    /* a death on another index restarts the count */
    CHECK_EQ(sq_worker_reset(r, 1, &i, &deaths), SQ_OK); /* as if worker 1 died on 2 */
    CHECK_EQ(i, 2);
    CHECK_EQ(deaths, 1);
    CHECK_EQ(sq_ring_commit(r, 2, off_before, 0, 1, 0), SQ_OK);
    CHECK_EQ(sq_ring_commit(r, 3, off_after, 0, 1, 0), SQ_OK);
    pop_release(r, 2);
    check_idle(r);

    /* poison detection: three producers die in turn holding the same index */
    CHECK_EQ(task_reset(r, 7, 8, 1), 2);
    for (int k = 1; k <= 3; k++) {
        pid = spawn(dying_producer, r, 0);
        CHECK_EQ(read(g_pipe[0], &c, 1), 1);
        CHECK_EQ(c, 7);
        kill_reap(pid);
        CHECK_EQ(sq_worker_reset(r, 0, &i, &deaths), SQ_OK);
        CHECK_EQ(i, 7);
        CHECK_EQ(deaths, k);
        check_idle(r);
    }
    /* a producer that dies after committing leaves its result to the consumer */
    CHECK_EQ(sq_task_claim(r, 1, 0, &i, &gen), SQ_OK);
    CHECK_EQ(i, 7);
    CHECK_EQ(sq_ring_reserve(r, 1, 10, 0, &off_before), SQ_OK);
    CHECK_EQ(sq_ring_commit(r, 1, off_before, i, gen, 0), SQ_OK);
    CHECK_EQ(sq_worker_reset(r, 1, &i, &deaths), SQ_OK);
    CHECK_EQ(i, -1);
    CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
    CHECK_EQ(e.index, 7);
    CHECK_EQ(sq_ring_release(r, e.offset), SQ_OK);
    check_idle(r);
    close(g_pipe[0]);
    close(g_pipe[1]);
}

/* Round trip through the ring as worker w: proves the mutex and wake-ups work. */
static void round_trip(sq_ring *r, int w) {
    uint64_t off;
    sq_entry e;
    CHECK_EQ(sq_ring_reserve(r, w, 64, LONG_WAIT, &off), SQ_OK);
    CHECK_EQ(sq_ring_commit(r, w, off, 1, 0, 0), SQ_OK);
    CHECK_EQ(sq_ring_pop(r, LONG_WAIT, &e, NULL), SQ_OK);
    CHECK_EQ(e.offset, off);
    CHECK_EQ(sq_ring_release(r, off), SQ_OK);
}

static void lock_holder(sq_ring *r, int w) {
    (void)w;
    CHECK_EQ(ring_lock(r), SQ_OK);
    char c = 1;
    if (write(g_pipe[1], &c, 1) != 1) g_fail++;
    pause(); /* killed holding the mutex */
}

static void lock_spinner(sq_ring *r, int w) {
    char c = 1;
    if (write(g_pipe[1], &c, 1) != 1) g_fail++;
    for (;;) {
        sq_stats s;
        int64_t i;
        uint64_t gen;
        sq_ring_stats(r, &s);
        sq_task_claim(r, w, 0, &i, &gen); /* no task available: changes nothing */
    }
}

static void test_killed_holding_mutex(void) {
    sq_ring *r = ring_new(2, 8, 1024, 1024);
    char c;
    CHECK_EQ(pipe(g_pipe), 0);
    /* deterministic: the child provably holds the mutex when it dies */
    for (int k = 0; k < 3; k++) {
        pid_t pid = spawn(lock_holder, r, 0);
        CHECK_EQ(read(g_pipe[0], &c, 1), 1);
        kill_reap(pid);
        check_idle(r); /* stats locks: recovered through EOWNERDEAD */
        round_trip(r, 1);
        pid = spawn(round_trip, r, 1); /* and across processes */
        CHECK(reap_ok(pid));
    }
    /* statistical: killed at random points of a tight lock/unlock loop, with a
     * second spinner contending (so some kills land while it waits for the lock) */
    for (int k = 0; k < 40; k++) {
        pid_t a = spawn(lock_spinner, r, 0), b = spawn(lock_spinner, r, 1);
        CHECK_EQ(read(g_pipe[0], &c, 1), 1);
        CHECK_EQ(read(g_pipe[0], &c, 1), 1);
        sleep_ms(0.2 + (double)rnd(3000) / 1000);
        kill_reap(a);
        sleep_ms((double)rnd(1000) / 1000);
        kill_reap(b);
        check_idle(r);
        round_trip(r, 1);
    }
    close(g_pipe[0]);
    close(g_pipe[1]);
}

/* A producer SIGKILLed while asleep in a wait does not wedge the wakers. */
static void sleeping_reserver(sq_ring *r, int w) {
    uint64_t off;
    sq_ring_reserve(r, w, 512, LONG_WAIT, &off); /* killed while waiting */
    g_fail++;
}

static void sleeping_claimer(sq_ring *r, int w) {
    int64_t i;
    uint64_t gen;
    sq_task_claim(r, w, LONG_WAIT, &i, &gen);
    g_fail++;
}

static void woken_reserver(sq_ring *r, int w) {
    uint64_t off;
    /* LONG_WAIT is a safety net: a lost wake-up would time out and fail */
    CHECK_EQ(sq_ring_reserve(r, w, 512, LONG_WAIT, &off), SQ_OK);
    CHECK_EQ(sq_ring_commit(r, w, off, 0, 0, 0), SQ_OK);
}

static void woken_claimer(sq_ring *r, int w) {
    int64_t i;
    uint64_t gen;
    CHECK_EQ(sq_task_claim(r, w, LONG_WAIT, &i, &gen), SQ_OK);
    CHECK_EQ(i, 0);
}

static void test_killed_while_waiting(void) {
    sq_ring *r = ring_new(4, 8, 1024, 1024);
    uint64_t off;
    int64_t i;
    int deaths;
    sq_entry e;
    CHECK_EQ(sq_ring_reserve(r, 3, 900, 0, &off), SQ_OK); /* full */
    pid_t a = spawn(sleeping_reserver, r, 0);
    pid_t b = spawn(sleeping_claimer, r, 1);
    CHECK(wait_for(n_producer_sleepers, r, 2));
    CHECK_EQ(stats(r).space_waiters, 1);
    kill_reap(a);
    kill_reap(b);
    /* the slots are reset: the waiter counts go back down */
    CHECK_EQ(sq_worker_reset(r, 0, &i, &deaths), SQ_OK);
    CHECK_EQ(sq_worker_reset(r, 1, &i, &deaths), SQ_OK);
    CHECK_EQ(stats(r).space_waiters, 0);
    CHECK_EQ(producer_sleepers(r), 0);

    pid_t c = spawn(woken_reserver, r, 0);
    pid_t d = spawn(woken_claimer, r, 1);
    CHECK(wait_for(n_producer_sleepers, r, 2));
    CHECK_EQ(sq_ring_commit(r, 3, off, 0, 0, 0), SQ_OK);
    CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
    CHECK_EQ(sq_ring_release(r, off), SQ_OK); /* wakes the reserver */
    CHECK_EQ(task_reset(r, 0, 1, 1), 1); /* wakes the claimer */
    CHECK(reap_ok(c));
    CHECK(reap_ok(d));
    CHECK_EQ(sq_ring_pop(r, LONG_WAIT, &e, NULL), SQ_OK);
    CHECK_EQ(sq_ring_release(r, e.offset), SQ_OK);
    check_idle(r);

    /* a consumer-side sleeper (pop) killed: producers still make progress */
    pid_t p = spawn(closed_popper, r, 0);
    CHECK(wait_for(n_ready_sleepers, r, 1));
    kill_reap(p);
    round_trip(r, 2);
    check_idle(r);
}

/* A result may span several blocks: commit hands the worker's other reserved
 * blocks to the consumer with the main one; cancel and death give them back. */
static void multi_producer(sq_ring *r, int w) {
    uint64_t aux[3], main_off;
    for (int k = 0; k < 3; k++) {
        CHECK_EQ(sq_ring_reserve(r, w, 200 + 64 * k, LONG_WAIT, &aux[k]), SQ_OK);
        pattern_fill((unsigned char *)r + aux[k], 200 + 64 * k, w, 100 + k);
    }
    CHECK_EQ(sq_ring_reserve(r, w, 3 * sizeof(uint64_t), LONG_WAIT, &main_off), SQ_OK);
    memcpy((char *)r + main_off, aux, sizeof aux); /* the payload names the others */
    CHECK_EQ(sq_ring_commit(r, w, main_off, 5, 1, 0), SQ_OK);
}

static void test_multi_block(void) {
    sq_ring *r = ring_new(3, 8, 8192, 8192);
    uint64_t other, x, y, aux[3];
    sq_entry e;
    int64_t i;
    int deaths;
    CHECK_EQ(sq_ring_reserve(r, 1, 100, 0, &other), SQ_OK); /* another worker's */
    pid_t pid = spawn(multi_producer, r, 0);
    CHECK_EQ(sq_ring_pop(r, LONG_WAIT, &e, NULL), SQ_OK);
    CHECK(reap_ok(pid));
    CHECK_EQ(e.index, 5);
    sq_stats s = stats(r);
    CHECK_EQ(s.reserved, 1); /* only worker 1's block */
    CHECK_EQ(s.committed, 0);
    CHECK_EQ(s.popped, 4);
    memcpy(aux, (char *)r + e.offset, sizeof aux);
    for (int k = 0; k < 3; k++)
        CHECK(pattern_ok((unsigned char *)r + aux[k], 200 + 64 * k, 0, 100 + k));
    check_invariants(r);
    /* released in any order, the main block first */
    CHECK_EQ(sq_ring_release(r, e.offset), SQ_OK);
    CHECK_EQ(sq_ring_release(r, aux[1]), SQ_OK);
    CHECK_EQ(sq_ring_release(r, aux[2]), SQ_OK);
    CHECK_EQ(sq_ring_release(r, aux[0]), SQ_OK);
    CHECK_EQ(sq_ring_release(r, aux[0]), SQ_EINVAL);
    /* worker 1's reservation was not taken along */
    CHECK_EQ(sq_ring_commit(r, 1, other, 6, 1, 0), SQ_OK);
    CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
    CHECK_EQ(e.offset, other);
    CHECK_EQ(sq_ring_release(r, other), SQ_OK);
    check_idle(r);

    /* cancel gives back every block of the worker, and only its own */
    CHECK_EQ(sq_ring_reserve(r, 0, 100, 0, &x), SQ_OK);
    CHECK_EQ(sq_ring_reserve(r, 0, 100, 0, &y), SQ_OK);
    CHECK_EQ(sq_ring_reserve(r, 1, 100, 0, &other), SQ_OK);
    CHECK_EQ(sq_ring_cancel(r, 0), SQ_OK);
    CHECK_EQ(stats(r).reserved, 1);
    CHECK_EQ(sq_ring_commit(r, 0, x, 0, 0, 0), SQ_ECORRUPT);
    CHECK_EQ(sq_ring_cancel(r, 3), SQ_EINVAL);
    CHECK_EQ(sq_ring_cancel(r, 1), SQ_OK);
    check_idle(r);

    /* a producer that dies with several blocks reserved: all freed */
    CHECK_EQ(pipe(g_pipe), 0);
    CHECK_EQ(task_reset(r, 0, 10, 10), 1);
    CHECK_EQ(sq_ring_reserve(r, 2, 100, 0, &x), SQ_OK); /* extra block, same slot */
    pid = spawn(dying_producer, r, 2);
    char c;
    CHECK_EQ(read(g_pipe[0], &c, 1), 1);
    kill_reap(pid);
    CHECK_EQ(stats(r).reserved, 2);
    CHECK_EQ(sq_worker_reset(r, 2, &i, &deaths), SQ_OK);
    CHECK_EQ(i, 0);
    check_idle(r);
    close(g_pipe[0]);
    close(g_pipe[1]);
}

/* A producer that keeps a block, then dies: sq_worker_reset frees it. */
static void keeping_producer(sq_ring *r, int w) {
    uint64_t off;
    CHECK_EQ(sq_ring_keep(r, w, 500, UINT64_MAX, &off), SQ_OK);
    memset((char *)r + off, 0x77, 500);
    char c = 1;
    if (write(g_pipe[1], &c, 1) != 1) g_fail++;
    pause(); /* killed here */
}

static void test_kept_blocks(void) {
    sq_ring *r = ring_new(2, 8, 8192, 8192);
    uint64_t k1, k2, k3, main_, other, big;
    sq_entry e;
    int64_t i;
    int deaths;
    /* unsized: no waiting, no request recorded */
    sq_ring *u = ring_new(1, 4, 0, 8192);
    CHECK_EQ(sq_ring_keep(u, 0, 100, UINT64_MAX, &k1), SQ_TIMEOUT);
    CHECK_EQ(stats(u).requested, 0);
    CHECK_EQ(sq_ring_keep(u, 1, 100, UINT64_MAX, &k1), SQ_EINVAL);

    CHECK_EQ(sq_ring_keep(r, 0, 1000, UINT64_MAX, &k1), SQ_OK);
    CHECK_EQ(sq_ring_keep(r, 0, 1000, UINT64_MAX, &k2), SQ_OK);
    CHECK_EQ(sq_ring_keep(r, 0, 1000, UINT64_MAX, &k3), SQ_OK);
    pattern_fill((unsigned char *)r + k1, 1000, 0, 1);
    pattern_fill((unsigned char *)r + k2, 1000, 0, 2);
    sq_stats s = stats(r);
    CHECK_EQ(s.kept, 3);
    CHECK_EQ(s.reserved, 0);
    CHECK_EQ(s.used, 3 * (1024 + SQ_BLOCK_HEADER));
    check_invariants(r);
    /* max_used: refused rather than waited for, and nothing changes */
    CHECK_EQ(sq_ring_keep(r, 0, 1000, s.used + 1000, &big), SQ_TIMEOUT);
    CHECK_EQ(sq_ring_keep(r, 0, 9000, UINT64_MAX, &big), SQ_TIMEOUT);
    CHECK_EQ(stats(r).kept, 3);
    /* the consumer cannot release a kept block; another worker cannot free it */
    CHECK_EQ(sq_ring_release(r, k1), SQ_ECORRUPT);
    CHECK_EQ(sq_ring_unkeep(r, 1, k1), SQ_ECORRUPT);
    CHECK_EQ(sq_ring_unkeep(r, 0, k1 + 64), SQ_EINVAL);
    /* cancel leaves kept blocks alone */
    CHECK_EQ(sq_ring_reserve(r, 0, 100, 0, &main_), SQ_OK);
    CHECK_EQ(sq_ring_cancel(r, 0), SQ_OK);
    CHECK_EQ(stats(r).kept, 3);
    CHECK_EQ(stats(r).reserved, 0);
    /* commit_n: all or nothing */
    CHECK_EQ(sq_ring_reserve(r, 0, 100, 0, &main_), SQ_OK);
    CHECK_EQ(sq_ring_reserve(r, 1, 100, 0, &other), SQ_OK);
    uint64_t dup[2] = {k1, k1}, foreign[2] = {k1, other}, self_[1] = {main_};
    CHECK_EQ(sq_ring_commit_n(r, 0, main_, 7, 0, 0, dup, 2), SQ_ECORRUPT);
    CHECK_EQ(sq_ring_commit_n(r, 0, main_, 7, 0, 0, foreign, 2), SQ_ECORRUPT);
    CHECK_EQ(sq_ring_commit_n(r, 0, main_, 7, 0, 0, self_, 1), SQ_ECORRUPT);
    CHECK_EQ(sq_ring_commit_n(r, 0, main_, 7, 0, 0, NULL, 1), SQ_EINVAL);
    CHECK_EQ(sq_ring_commit_n(r, 0, main_, 7, 0, 0, dup, -1), SQ_EINVAL);
    s = stats(r);
    CHECK_EQ(s.kept, 3);
    CHECK_EQ(s.reserved, 2);
    CHECK_EQ(s.committed, 0);
    check_invariants(r);
    /* adopt k2 with the main block: k1 and k3 stay kept */
    uint64_t adopt[1] = {k2};
    CHECK_EQ(sq_ring_commit_n(r, 0, main_, 7, 0, 0, adopt, 1), SQ_OK);
    s = stats(r);
    CHECK_EQ(s.kept, 2);
    CHECK_EQ(s.reserved, 1); /* worker 1's */
    CHECK_EQ(s.committed, 1);
    CHECK_EQ(s.popped, 1); /* the adopted block, held by the consumer */
    check_invariants(r);
    CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
    CHECK_EQ(e.offset, main_);
    CHECK_EQ(e.index, 7);
    CHECK(pattern_ok((unsigned char *)r + k2, 1000, 0, 2));
    CHECK_EQ(sq_ring_unkeep(r, 0, k2), SQ_ECORRUPT); /* the consumer's now */
    CHECK_EQ(sq_ring_release(r, k2), SQ_OK);
    CHECK_EQ(sq_ring_release(r, main_), SQ_OK);
    /* a kept block as the main block, alone */
    CHECK_EQ(sq_ring_commit_n(r, 0, k1, 8, 0, 0, NULL, 0), SQ_OK);
    CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
    CHECK_EQ(e.offset, k1);
    CHECK_EQ(e.nbytes, 1024);
    CHECK(pattern_ok((unsigned char *)r + k1, 1000, 0, 1));
    CHECK_EQ(sq_ring_release(r, k1), SQ_OK);
    CHECK_EQ(sq_ring_unkeep(r, 0, k3), SQ_OK);
    CHECK_EQ(sq_ring_unkeep(r, 0, k3), SQ_EINVAL);
    CHECK_EQ(sq_ring_commit(r, 1, other, 9, 0, 0), SQ_OK);
    CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
    CHECK_EQ(sq_ring_release(r, other), SQ_OK);
    check_idle(r);

    /* a producer killed while it keeps a block: the reset frees it */
    CHECK_EQ(pipe(g_pipe), 0);
    pid_t pid = spawn(keeping_producer, r, 1);
    char c;
    CHECK_EQ(read(g_pipe[0], &c, 1), 1);
    kill_reap(pid);
    CHECK_EQ(stats(r).kept, 1);
    CHECK_EQ(sq_worker_reset(r, 1, &i, &deaths), SQ_OK);
    check_idle(r);
    close(g_pipe[0]);
    close(g_pipe[1]);
}

/* A producer killed at each point inside a commit of a main block, an auxiliary
 * block and an adopted kept block (or inside the allocation of its main block):
 * whoever locks next finds the counters and blocks consistent, and the result
 * either arrives whole or its task is retried, never both, never neither; no
 * block is lost.  Without the commit journal, a death between the blocks' change
 * of state and the queued entry lost the blocks until the ring went away. */
static int g_fault_k, g_fault_in_alloc;

static void faulty_committer(sq_ring *r, int w) {
    uint64_t main_, aux, kept, gen;
    int64_t i;
    CHECK_EQ(sq_task_claim(r, w, 0, &i, &gen), SQ_OK);
    CHECK_EQ(sq_ring_keep(r, w, 300, UINT64_MAX, &kept), SQ_OK);
    CHECK_EQ(sq_ring_reserve(r, w, 200, 0, &aux), SQ_OK);
    pattern_fill((unsigned char *)r + kept, 300, w, 1);
    pattern_fill((unsigned char *)r + aux, 200, w, 2);
    g_fault_at = g_fault_k; /* counted from the main block's allocation, or ... */
    if (!g_fault_in_alloc) g_fault_at = 0;
    CHECK_EQ(sq_ring_reserve(r, w, 100, 0, &main_), SQ_OK);
    if (!g_fault_in_alloc) g_fault_at = g_fault_k; /* ... from the commit's start */
    uint64_t names[2] = {aux, kept}; /* as the transport names them, in the payload */
    memcpy((char *)r + main_, names, sizeof names);
    CHECK_EQ(sq_ring_commit_n(r, w, main_, i, gen, 0, &kept, 1), SQ_OK);
    g_fault_at = 0;
}

static void test_killed_inside_commit(void) {
    sq_ring *r = ring_new(2, 8, 8192, 8192);
    for (g_fault_in_alloc = 0; g_fault_in_alloc < 2; g_fault_in_alloc++) {
        int completed = 0, killed = 0;
        for (g_fault_k = 1; !completed && g_fault_k < 50; g_fault_k++) {
            uint64_t generation = task_reset(r, 0, 1, 1);
            pid_t pid = spawn(faulty_committer, r, 1);
            int st;
            CHECK_EQ(waitpid(pid, &st, 0), pid);
            completed = WIFEXITED(st) && WEXITSTATUS(st) == 0;
            CHECK(completed || (WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL));
            killed += !completed;
            check_invariants(r); /* the first lock after the death repairs */
            int64_t idx;
            int deaths;
            CHECK_EQ(sq_worker_reset(r, 1, &idx, &deaths), SQ_OK);
            sq_entry e;
            if (sq_ring_pop(r, 0, &e, NULL) == SQ_OK) {
                CHECK_EQ(idx, -1); /* delivered: not retried too */
                CHECK_EQ(e.index, 0);
                CHECK_EQ(e.generation, generation);
                uint64_t names[2];
                memcpy(names, (char *)r + e.offset, sizeof names);
                CHECK(pattern_ok((unsigned char *)r + names[0], 200, 1, 2));
                CHECK(pattern_ok((unsigned char *)r + names[1], 300, 1, 1));
                CHECK_EQ(sq_ring_release(r, names[0]), SQ_OK);
                CHECK_EQ(sq_ring_release(r, names[1]), SQ_OK);
                CHECK_EQ(sq_ring_release(r, e.offset), SQ_OK);
            } else {
                CHECK(!completed);
                CHECK_EQ(idx, 0); /* lost with its worker: retried */
            }
            check_idle(r);
        }
        CHECK(completed);
        /* the commit's 7 points (journal, flag, 3 blocks, entry, flag cleared),
         * and before them the main block's allocation */
        CHECK_EQ(killed, 7 + g_fault_in_alloc);
    }
}

/* Producers that had to wait for space are served first come, first served: a
 * producer waiting for a large block is not passed by others taking each small
 * run the consumer frees, except by one that already holds blocks for its task
 * (it may hold what the first one waits for). */
static void big_waiter(sq_ring *r, int w) {
    uint64_t off;
    CHECK_EQ(sq_ring_reserve(r, w, 5000, LONG_WAIT, &off), SQ_OK);
    pattern_fill((unsigned char *)r + off, 5000, w, 9);
    CHECK_EQ(sq_ring_commit(r, w, off, 9, 0, 0), SQ_OK);
}

static void test_fair_space(void) {
    sq_ring *r = ring_new(4, 8, 8192, 8192);
    uint64_t held3, off[4], small, k;
    sq_entry e;
    /* worker 3 holds a block for its task; the rest of the ring is held by the
     * consumer (512 + 3 x 2048 + 1536 bytes) */
    CHECK_EQ(sq_ring_reserve(r, 3, 448, 0, &held3), SQ_OK);
    uint64_t sizes[4] = {1984, 1984, 1984, 1472};
    for (int i = 0; i < 4; i++) {
        CHECK_EQ(sq_ring_reserve(r, 2, sizes[i], 0, &off[i]), SQ_OK);
        CHECK_EQ(sq_ring_commit(r, 2, off[i], i, 0, 0), SQ_OK);
        CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
    }
    CHECK_EQ(stats(r).used, 8192);
    pid_t pid = spawn(big_waiter, r, 0);
    CHECK(wait_for(n_space_waiters, r, 1));
    CHECK_EQ(sq_ring_release(r, off[0]), SQ_OK); /* 2048 free: not enough for it */
    /* a newcomer does not pass it, nor does a block kept on the way */
    CHECK_EQ(sq_ring_reserve(r, 1, 1000, 0, &small), SQ_TIMEOUT);
    CHECK_EQ(sq_ring_reserve(r, 1, 1000, 0.05, &small), SQ_TIMEOUT);
    CHECK_EQ(sq_ring_keep(r, 1, 500, UINT64_MAX, &k), SQ_TIMEOUT);
    /* a producer holding blocks for its task does: it must be able to finish */
    CHECK_EQ(sq_ring_reserve(r, 3, 1000, 0, &small), SQ_OK);
    CHECK_EQ(sq_ring_commit(r, 3, small, 4, 0, 0), SQ_OK);
    CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
    CHECK_EQ(sq_ring_release(r, small), SQ_OK);
    CHECK_EQ(sq_ring_release(r, held3), SQ_OK); /* it went over with the commit */
    CHECK_EQ(sq_ring_release(r, off[1]), SQ_OK); /* 512 + 4096 free in one run */
    CHECK_EQ(sq_ring_release(r, off[2]), SQ_OK); /* 6656: its turn */
    CHECK_EQ(sq_ring_pop(r, LONG_WAIT, &e, NULL), SQ_OK);
    CHECK_EQ(e.index, 9);
    CHECK(pattern_ok((unsigned char *)r + e.offset, 5000, 0, 9));
    CHECK(reap_ok(pid));
    /* served and gone from the line: newcomers are served again */
    CHECK_EQ(sq_ring_reserve(r, 1, 1000, 0, &small), SQ_OK);
    CHECK_EQ(sq_ring_cancel(r, 1), SQ_OK);
    CHECK_EQ(sq_ring_release(r, e.offset), SQ_OK);
    CHECK_EQ(sq_ring_release(r, off[3]), SQ_OK);
    check_idle(r);
}

/* Two items that each kill whoever takes them, taken by two producers in turn:
 * each item's count climbs on its own (a single "last index" count would restart
 * at every death, and the consumer would replace producers forever). */
static void test_interleaved_deaths(void) {
    sq_ring *r = ring_new(2, 8, 4096, 4096);
    int64_t i0, i1, idx;
    uint64_t gen;
    int deaths;
    CHECK_EQ(task_reset(r, 0, -1, 4), 1);
    for (int round = 1; round <= 3; round++) {
        CHECK_EQ(sq_task_claim(r, 0, 0, &i0, &gen), SQ_OK);
        CHECK_EQ(sq_task_claim(r, 1, 0, &i1, &gen), SQ_OK);
        CHECK_EQ(i0 + i1, 1); /* tasks 0 and 1, in either order */
        CHECK_EQ(sq_worker_reset(r, 0, &idx, &deaths), SQ_OK);
        CHECK_EQ(idx, i0);
        CHECK_EQ(deaths, round);
        CHECK_EQ(sq_worker_reset(r, 1, &idx, &deaths), SQ_OK);
        CHECK_EQ(idx, i1);
        CHECK_EQ(deaths, round);
    }
    /* given up on (dropped): its count is forgotten, the other's is not */
    CHECK_EQ(sq_task_drop(r, 0), SQ_OK);
    CHECK_EQ(sq_task_claim(r, 0, 0, &i0, &gen), SQ_OK);
    CHECK_EQ(i0, 1);
    CHECK_EQ(sq_worker_reset(r, 0, &idx, &deaths), SQ_OK);
    CHECK_EQ(deaths, 4);
    CHECK_EQ(sq_task_drop(r, 1), SQ_OK);
    CHECK_EQ(sq_task_claim(r, 0, 0, &i0, &gen), SQ_OK);
    CHECK_EQ(i0, 2);
    CHECK_EQ(sq_worker_reset(r, 0, &idx, &deaths), SQ_OK);
    CHECK_EQ(deaths, 1);
    /* more dying items than the table holds: the oldest are forgotten, no overflow */
    CHECK_EQ(sq_task_drop(r, 2), SQ_OK);
    for (int k = 0; k < 200; k++) {
        CHECK_EQ(sq_task_claim(r, 0, 0, &i0, &gen), SQ_OK);
        CHECK_EQ(sq_worker_reset(r, 0, &idx, &deaths), SQ_OK);
        CHECK_EQ(deaths, 1);
        CHECK_EQ(sq_task_drop(r, idx), SQ_OK);
        sq_task_advance(r, idx + 1);
    }
    check_invariants(r);
}

/* A mutex left not recoverable (a process died holding it, and the next locker
 * unlocked it without repairing the header) fails every call with SQ_ESYS,
 * calls asleep in a wait included: none goes on without the lock, nor unlocks a
 * mutex it does not hold.  Each sleeper is left something to take (a task, a
 * free block, an entry): one that went on without the lock would take it.  The
 * consumer's calls (sq_task_reset, sq_task_advance, sq_ring_close...) report the
 * failure too, and change nothing. */
static void unrecoverable_claimer(sq_ring *r, int w) {
    int64_t i = -7;
    uint64_t gen = 99;
    errno = 0;
    CHECK_EQ(sq_task_claim(r, w, LONG_WAIT, &i, &gen), SQ_ESYS);
    CHECK_EQ(errno, ENOTRECOVERABLE);
    CHECK_EQ(i, -7);
    CHECK_EQ(gen, 99);
}

static void unrecoverable_reserver(sq_ring *r, int w) {
    uint64_t off = 7;
    errno = 0;
    CHECK_EQ(sq_ring_reserve(r, w, 512, LONG_WAIT, &off), SQ_ESYS);
    CHECK_EQ(errno, ENOTRECOVERABLE);
    CHECK_EQ(off, 7);
}

static void unrecoverable_popper(sq_ring *r, int w) {
    sq_entry e = {0, 0, -7, 0, 0, 0};
    (void)w;
    errno = 0;
    CHECK_EQ(sq_ring_pop(r, LONG_WAIT, &e, NULL), SQ_ESYS);
    CHECK_EQ(errno, ENOTRECOVERABLE);
    CHECK_EQ(e.index, -7);
}

static void test_unrecoverable_lock(void) {
    sq_ring *r = ring_new(3, 8, 1024, 1024);
    uint64_t off, gen = 12345;
    char c;
    sq_stats s;
    CHECK_EQ(sq_ring_reserve(r, 2, 900, 0, &off), SQ_OK); /* full; no task, no entry */
    pid_t pc = spawn(unrecoverable_claimer, r, 0);
    pid_t pr = spawn(unrecoverable_reserver, r, 1);
    pid_t pp = spawn(unrecoverable_popper, r, 0);
    CHECK(wait_for(n_producer_sleepers, r, 2));
    CHECK(wait_for(n_ready_sleepers, r, 1));

    CHECK_EQ(pipe(g_pipe), 0);
    pid_t h = spawn(lock_holder, r, 0);
    CHECK_EQ(read(g_pipe[0], &c, 1), 1);
    kill_reap(h);
    CHECK_EQ(pthread_mutex_lock(&r->lock), EOWNERDEAD);
    CHECK_EQ(pthread_mutex_unlock(&r->lock), 0); /* not made consistent: lost */

    /* What each sleeper waits for, written without the lock (it cannot be had):
     * a task, a free block, a queued entry.  A call that went on without the
     * lock would now succeed, instead of failing. */
    r->generation = 1;
    r->end = -1;
    r->window = 1;
    block_at(r, 0)->state = BLK_FREE;
    block_at(r, 0)->magic = 0;
    r->used = 0;
    r->n_reserved = 0;
    ring_entries(r)[0] = (sq_entry){0, 0, 42, 1, 2, SQ_KIND_USER};
    r->q_write = 1;
    atomic_fetch_add(&r->task_seq, 1);
    atomic_fetch_add(&r->space_seq, 1);
    atomic_fetch_add(&r->ready_seq, 1);
    futex_wake(&r->task_seq, INT32_MAX);
    futex_wake(&r->space_seq, INT32_MAX);
    futex_wake(&r->ready_seq, INT32_MAX);
    CHECK(reap_ok(pc));
    CHECK(reap_ok(pr));
    CHECK(reap_ok(pp));

    /* the consumer's calls report it too, and change nothing */
    errno = 0;
    CHECK_EQ(sq_task_reset(r, 5, 6, 1, &gen), SQ_ESYS);
    CHECK_EQ(errno, ENOTRECOVERABLE);
    CHECK_EQ(gen, 12345);
    CHECK_EQ(r->generation, 1);
    CHECK_EQ(sq_task_advance(r, 3), SQ_ESYS);
    CHECK_EQ(r->window_base, 0);
    CHECK_EQ(sq_ring_close(r), SQ_ESYS);
    CHECK_EQ(r->closed, 0);
    CHECK_EQ(sq_task_drop(r, 0), SQ_ESYS);
    CHECK_EQ(sq_ring_stats(r, &s), SQ_ESYS);
    CHECK_EQ(sq_ring_post(r, 0, 1, 1, SQ_KIND_ERROR), SQ_ESYS);
    CHECK_EQ(r->q_write, 1);
    close(g_pipe[0]);
    close(g_pipe[1]);
}

/* Producer `w` claims a task, checks it is `want`, and dies (its slot reset by
 * the consumer): returns the count of deaths on it. */
static int die_on(sq_ring *r, int w, int64_t want) {
    int64_t i, idx;
    uint64_t gen;
    int deaths = -1;
    CHECK_EQ(sq_task_claim(r, w, 0, &i, &gen), SQ_OK);
    CHECK_EQ(i, want);
    CHECK_EQ(sq_worker_reset(r, w, &idx, &deaths), SQ_OK);
    CHECK_EQ(idx, want);
    return deaths;
}

/* A task that killed producers and then completes starts its count of deaths in
 * a row again: the consumer gives up on an item only when it kills every
 * producer that takes it in a row, and reports that count ("killed K workers in
 * a row"), which a success in between must break. */
static void test_deaths_forgotten_on_success(void) {
    sq_ring *r = ring_new(2, 8, 4096, 4096);
    int64_t i, idx;
    uint64_t gen, off;
    int deaths;
    sq_entry e;

    /* a commit for the task, in its generation */
    gen = task_reset(r, 5, 6, 1);
    CHECK_EQ(die_on(r, 0, 5), 1);
    CHECK_EQ(die_on(r, 0, 5), 2);
    CHECK_EQ(sq_task_claim(r, 1, 0, &i, &gen), SQ_OK);
    CHECK_EQ(i, 5);
    CHECK_EQ(sq_ring_reserve(r, 1, 100, 0, &off), SQ_OK);
    CHECK_EQ(sq_ring_commit(r, 1, off, i, gen, SQ_KIND_RESULT), SQ_OK);
    CHECK_EQ(r->n_deaths, 0);
    pop_release(r, 1);
    task_reset(r, 5, 6, 1);
    CHECK_EQ(die_on(r, 0, 5), 1);

    /* an error posted for the task forgets it too, and only it */
    gen = task_reset(r, 5, 7, 2);
    CHECK_EQ(sq_task_claim(r, 1, 0, &i, &gen), SQ_OK);
    CHECK_EQ(i, 5);
    CHECK_EQ(die_on(r, 0, 6), 1);
    CHECK_EQ(die_on(r, 0, 6), 2);
    CHECK_EQ(die_on(r, 0, 6), 3);
    CHECK_EQ(sq_worker_reset(r, 1, &idx, &deaths), SQ_OK);
    CHECK_EQ(idx, 5);
    CHECK_EQ(deaths, 2); /* the count of 5 from above goes on */
    CHECK_EQ(sq_task_claim(r, 1, 0, &i, &gen), SQ_OK);
    CHECK_EQ(i, 5);
    CHECK_EQ(sq_task_claim(r, 0, 0, &i, &gen), SQ_OK);
    CHECK_EQ(i, 6);
    CHECK_EQ(sq_ring_post(r, 0, 6, gen, SQ_KIND_ERROR), SQ_OK);
    CHECK_EQ(sq_ring_post(r, 1, 5, gen - 1, SQ_KIND_ERROR), SQ_OK); /* older generation */
    for (int k = 0; k < 2; k++) CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
    /* 6 answered in its generation: forgotten; 5 (answered only for an older generation,
     * which may have been another item): counted on */
    task_reset(r, 5, 7, 2);
    CHECK_EQ(die_on(r, 0, 5), 3);
    CHECK_EQ(die_on(r, 1, 5), 4);
    CHECK_EQ(sq_task_drop(r, 5), SQ_OK);
    CHECK_EQ(die_on(r, 1, 6), 1);
    check_idle(r);
}

/* What the consumer needs to tell a stalled ring from a slow one.  A producer
 * asleep in reserve, holding a reserved block (a batch it stacked) while it
 * waits for room for a second one, cannot move until the consumer releases:
 * its blocks are not "active", unlike those of a producer that is awake. */
static void stacked_then_waiting(sq_ring *r, int w) {
    uint64_t first, second, kept;
    CHECK_EQ(sq_ring_keep(r, w, 100, UINT64_MAX, &kept), SQ_OK);
    CHECK_EQ(sq_ring_reserve(r, w, 500, 0, &first), SQ_OK);
    CHECK_EQ(sq_ring_reserve(r, w, 1500, LONG_WAIT, &second), SQ_OK);
    memcpy((char *)r + second, &first, sizeof first); /* the result names it */
    CHECK_EQ(sq_ring_commit(r, w, second, 1, 0, SQ_KIND_RESULT), SQ_OK);
    CHECK_EQ(sq_ring_unkeep(r, w, kept), SQ_OK);
}

static uint64_t n_sleeping_in_reserve(sq_ring *r) { return stats(r).sleeping_in_reserve; }

static void test_stats_stall(void) {
    sq_ring *r = ring_new(2, 8, 4096, 4096);
    uint64_t held, mine, kept;
    sq_entry e;
    /* the consumer holds 2048 bytes; worker 1 keeps a block and reserves one */
    CHECK_EQ(sq_ring_reserve(r, 1, 2048 - SQ_BLOCK_HEADER, 0, &held), SQ_OK);
    CHECK_EQ(sq_ring_commit(r, 1, held, 0, 0, SQ_KIND_RESULT), SQ_OK);
    CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
    CHECK_EQ(sq_ring_keep(r, 1, 100, UINT64_MAX, &kept), SQ_OK);
    CHECK_EQ(sq_ring_reserve(r, 1, 100, 0, &mine), SQ_OK);
    sq_stats s = stats(r);
    CHECK_EQ(s.reserved_active, 1);
    CHECK_EQ(s.kept_active, 1);
    CHECK_EQ(s.sleeping_in_reserve, 0);
    CHECK_EQ(sq_ring_cancel(r, 1), SQ_OK);
    CHECK_EQ(sq_ring_unkeep(r, 1, kept), SQ_OK);

    /* worker 0 holds a kept block and a reserved one, and sleeps waiting for a
     * block larger than the free space (4096 - 2048 - 192 - 576) */
    pid_t pid = spawn(stacked_then_waiting, r, 0);
    CHECK(wait_for(n_sleeping_in_reserve, r, 1));
    s = stats(r);
    CHECK_EQ(s.reserved, 1);
    CHECK_EQ(s.kept, 1);
    CHECK_EQ(s.reserved_active, 0);
    CHECK_EQ(s.kept_active, 0);
    CHECK_EQ(s.space_waiters, 1);
    CHECK_EQ(s.committed, 0);
    CHECK_EQ(s.popped, 1);
    sq_stats again = stats(r); /* nothing moves */
    CHECK_EQ(again.space_events, s.space_events);
    CHECK_EQ(again.ready_events, s.ready_events);
    /* the release lets it go on: the counters move */
    CHECK_EQ(sq_ring_release(r, held), SQ_OK);
    CHECK(stats(r).space_events != s.space_events);
    CHECK_EQ(sq_ring_pop(r, LONG_WAIT, &e, NULL), SQ_OK);
    CHECK(reap_ok(pid));
    s = stats(r);
    CHECK(s.ready_events != again.ready_events);
    CHECK_EQ(s.sleeping_in_reserve, 0);
    CHECK_EQ(s.reserved_active, 0);
    CHECK_EQ(s.kept_active, 0);
    uint64_t first;
    memcpy(&first, (char *)r + e.offset, sizeof first);
    CHECK_EQ(sq_ring_release(r, first), SQ_OK); /* went over with the result */
    CHECK_EQ(sq_ring_release(r, e.offset), SQ_OK);
    check_idle(r);
}

/* The capacity is read without the lock (sq_ring_capacity: Ring.capacity, Block
 * bounds, the allocation hook) while the consumer grows it.  Readers see only
 * values the consumer stored, never decreasing, with the free block that
 * extends the area to them.  Threads of one process, so that ThreadSanitizer
 * (make tsan) sees the accesses: a plain read (or store) of the capacity is a
 * race it reports. */
#define GROW_STEPS 200

typedef struct {
    sq_ring *r;
    uint64_t start, end;
    int failures;
} capacity_watch;

static void *capacity_reader(void *arg) {
    capacity_watch *cw = arg;
    uint64_t last = cw->start;
    while (last < cw->end) {
        uint64_t c = sq_ring_capacity(cw->r);
        if (c < last || c % SQ_ALIGN || c > cw->end) {
            cw->failures++;
            break;
        }
        if (c > last) { /* the block sq_ring_grow wrote at the old end */
            sq_block *b = block_at(cw->r, last);
            if (b->size < SQ_ALIGN || last + b->size > c || b->state != BLK_FREE)
                cw->failures++;
            last = c;
        }
    }
    return NULL;
}

static void test_capacity_threads(void) {
    const uint64_t step = 4096, start = 4096, end = start + GROW_STEPS * step;
    sq_ring *r = ring_new(1, 8, start, end);
    capacity_watch cw[2] = {{r, start, end, 0}, {r, start, end, 0}};
    pthread_t t[2];
    for (int k = 0; k < 2; k++)
        CHECK_EQ(pthread_create(&t[k], NULL, capacity_reader, &cw[k]), 0);
    for (uint64_t c = start + step; c <= end; c += step)
        CHECK_EQ(sq_ring_grow(r, c), SQ_OK);
    for (int k = 0; k < 2; k++) {
        CHECK_EQ(pthread_join(t[k], NULL), 0);
        CHECK_EQ(cw[k].failures, 0);
    }
    CHECK_EQ(sq_ring_capacity(r), end);
    check_invariants(r);
}

/* The watchdog: a worker whose parent goes exits with SQ_WATCHDOG_EXIT, whatever
 * it is doing (here a busy loop); so does one whose watched process (not its
 * parent) goes; a healthy one is left alone.  The test process is a subreaper,
 * so that it adopts the orphans and can tell how they ended. */
#ifdef __linux__
static void busy_forever(void) {
    volatile uint64_t n = 0;
    for (;;) n++;
}

/* Fork a child running fn(arg) from a process that exits once the child says it
 * is ready (a byte on g_pipe): returns the child's pid when its parent has been
 * reaped (the child is this process's then), -1 on error. */
static pid_t orphan(int (*fn)(long), long arg) {
    int p[2];
    pid_t child = -1;
    if (pipe(p) != 0) return -1;
    fflush(NULL);
    pid_t mid = fork();
    if (mid == 0) {
        char ok;
        close(p[0]);
        pid_t c = fork();
        if (c == 0) _exit(fn(arg));
        if (write(p[1], &c, sizeof c) != sizeof c) _exit(1);
        if (read(g_pipe[0], &ok, 1) != 1) _exit(1);
        _exit(0);
    }
    close(p[1]);
    if (read(p[0], &child, sizeof child) != sizeof child) child = -1;
    close(p[0]);
    if (!reap_ok(mid)) return -1;
    return child;
}

static int watched_busy(long parent) {
    char ok = 1;
    if (sq_watchdog_start(parent ? parent : (long)getppid(), 0.005) != 0) return 1;
    if (write(g_pipe[1], &ok, 1) != 1) return 1;
    busy_forever();
    return 1;
}

static int pdeathsig_paused(long unused) {
    char ok = 1;
    (void)unused;
    if (sq_set_pdeathsig(SIGKILL, (long)getppid()) != 0) return 1;
    if (write(g_pipe[1], &ok, 1) != 1) return 1;
    pause();
    return 1;
}

/* Sets the signal only after its parent died: told so, it exits with 3. */
static int pdeathsig_late(long unused) {
    pid_t ppid0 = getppid();
    char ok = 1;
    (void)unused;
    if (write(g_pipe[1], &ok, 1) != 1) return 1;
    while (getppid() == ppid0) sleep_ms(1);
    return sq_set_pdeathsig(SIGKILL, (long)ppid0) == SQ_PARENT_GONE ? 3 : 1;
}

static int exited_with(pid_t pid, int code) {
    int st;
    if (pid <= 0 || waitpid(pid, &st, 0) != pid) return 0;
    if (code >= 0) return WIFEXITED(st) && WEXITSTATUS(st) == code;
    return WIFSIGNALED(st) && WTERMSIG(st) == -code;
}

static void test_watchdog(void) {
    CHECK_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1UL, 0UL, 0UL, 0UL), 0);
    CHECK_EQ(pipe(g_pipe), 0);
    /* the parent exits */
    CHECK(exited_with(orphan(watched_busy, 0), SQ_WATCHDOG_EXIT));
    /* the process watched is another one: it ends, then is reaped */
    pid_t q = fork();
    if (q == 0) {
        pause();
        _exit(0);
    }
    fflush(NULL);
    pid_t c = fork();
    if (c == 0) _exit(watched_busy(q));
    char ok;
    CHECK_EQ(read(g_pipe[0], &ok, 1), 1);
    kill_reap(q);
    CHECK(exited_with(c, SQ_WATCHDOG_EXIT));
    /* a healthy process is left alone */
    c = fork();
    if (c == 0) {
        if (sq_watchdog_start((long)getppid(), 0.001) != 0) _exit(1);
        sleep_ms(50);
        _exit(0);
    }
    CHECK(exited_with(c, 0));
    /* pdeathsig: killed with its parent, or told it came too late */
    CHECK(exited_with(orphan(pdeathsig_paused, 0), -SIGKILL));
    CHECK(exited_with(orphan(pdeathsig_late, 0), 3));
    /* bad arguments, nothing started or set */
    CHECK_EQ(sq_watchdog_start(0, 1.0), -EINVAL);
    CHECK_EQ(sq_watchdog_start((long)getpid(), 0.0), -EINVAL);
    CHECK_EQ(sq_watchdog_start((long)getpid(), -1.0), -EINVAL);
    CHECK_EQ(sq_watchdog_start((long)getpid(), NAN), -EINVAL);
    CHECK_EQ(sq_watchdog_start((long)getpid(), 2e6), -EINVAL);
    CHECK_EQ(sq_set_pdeathsig(SIGKILL, 0), -EINVAL);
    CHECK_EQ(sq_set_pdeathsig(12345, (long)getppid()), -EINVAL);
    close(g_pipe[0]);
    close(g_pipe[1]);
}
#else
static void test_watchdog(void) {
    CHECK_EQ(sq_set_pdeathsig(SIGKILL, (long)getppid()), -ENOSYS);
}
#endif

/* ----------------------------------------------------------------- runner ---- */

static double seconds_since(const struct timespec *t0) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    return (double)(t1.tv_sec - t0->tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0->tv_nsec);
}

/* A producer handing HANDOFF_ROUNDS results to the consumer, one task at a time:
 * it claims tasks 0, 1, ... in order and writes each index as the payload. */
#define HANDOFF_ROUNDS 3000
static void handoff_producer(sq_ring *r, int worker) {
    for (int64_t k = 0; k < HANDOFF_ROUNDS; k++) {
        int64_t index;
        uint64_t generation, off;
        CHECK_EQ(sq_task_claim(r, worker, LONG_WAIT, &index, &generation), SQ_OK);
        CHECK_EQ(index, k);
        CHECK_EQ(sq_ring_reserve(r, worker, 64, LONG_WAIT, &off), SQ_OK);
        memcpy((char *)r + off, &index, sizeof index);
        CHECK_EQ(sq_ring_commit(r, worker, off, index, generation, SQ_KIND_RESULT), SQ_OK);
        if (g_fail) return;
    }
}

/* The consumer's side of a hand-off: pop (waking once `want` are queued, fewer
 * at the end), check the payload, release, move the window. */
static void handoff_consume(sq_ring *r, uint64_t want) {
    for (int64_t k = 0; k < HANDOFF_ROUNDS && !g_fail; k++) {
        sq_entry e;
        int64_t got;
        uint64_t left = (uint64_t)(HANDOFF_ROUNDS - k); /* the producer stops */
        CHECK_EQ(sq_ring_pop_n(r, LONG_WAIT, want < left ? want : left, &e, NULL),
                 SQ_OK);
        CHECK_EQ(e.index, k);
        memcpy(&got, (char *)r + e.offset, sizeof got);
        CHECK_EQ(got, k);
        CHECK_EQ(sq_ring_release(r, e.offset), SQ_OK);
        sq_task_advance(r, k + 1);
    }
}

/* One hand-off run: a producer in a child, the consumer popping `want` at a time
 * through a task window of `window`; none of its wake-ups may be lost. */
static void handoff_run(int qlen, uint64_t capacity, int64_t window, uint64_t want) {
    sq_ring *r = ring_new(1, qlen, capacity, capacity);
    task_reset(r, 0, -1, window);
    struct timespec t0;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    pid_t pid = spawn(handoff_producer, r, 0);
    handoff_consume(r, want);
    CHECK(reap_ok(pid));
    CHECK(seconds_since(&t0) < LONG_WAIT / 2); /* not a timing test: see below */
}

/* Wake-ups are issued after the mutex is released (ring_unlock): none may be lost.
 * A producer and the consumer hand work back and forth with a window of one task,
 * so that every step sleeps on one side and is woken by the other: the producer
 * waits in claim for task_advance, the consumer in pop for commit.  A lost
 * wake-up would leave a side asleep until its LONG_WAIT timeout (20 s); the whole
 * exchange must take far less than one such timeout. */
static void test_wakeups_not_lost(void) { handoff_run(4, 4096, 1, 1); }

static void test_coalesced_pop(void) {
    sq_ring *r = ring_new(2, 8, 1 << 16, 1 << 16);
    sq_entry e;
    struct timespec t0;
    uint64_t off;

    /* A queued entry is taken at once, whatever `want` says. */
    task_reset(r, 0, -1, 4);
    CHECK_EQ(sq_ring_reserve(r, 0, 64, LONG_WAIT, &off), SQ_OK);
    CHECK_EQ(sq_ring_commit(r, 0, off, 0, 1, SQ_KIND_RESULT), SQ_OK);
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_EQ(sq_ring_pop_n(r, LONG_WAIT, 8, &e, NULL), SQ_OK);
    CHECK(seconds_since(&t0) < LONG_WAIT / 2);
    CHECK_EQ(e.offset, off);
    CHECK_EQ(sq_ring_release(r, e.offset), SQ_OK);

    /* `want` is a hint: the timeout returns what came, not SQ_TIMEOUT. */
    pid_t pid = fork();
    if (pid == 0) {
        struct timespec nap = {0, 20 * 1000 * 1000};
        nanosleep(&nap, NULL);
        uint64_t o;
        int ok = sq_ring_reserve(r, 1, 64, LONG_WAIT, &o) == SQ_OK &&
                 sq_ring_commit(r, 1, o, 7, 1, SQ_KIND_RESULT) == SQ_OK;
        _exit(ok ? 0 : 1);
    }
    /* 3 s: the child commits after 20 ms, even when forked on a loaded machine */
    CHECK_EQ(sq_ring_pop_n(r, 3.0, 3, &e, NULL), SQ_OK);
    CHECK_EQ(e.index, 7);
    CHECK(reap_ok(pid));
    CHECK_EQ(sq_ring_release(r, e.offset), SQ_OK);
    CHECK_EQ(r->ready_want, 1); /* restored: a plain pop is woken by one entry */

    /* Close still wakes a consumer waiting for more entries than will come. */
    pid = fork();
    if (pid == 0) {
        struct timespec nap = {0, 20 * 1000 * 1000};
        nanosleep(&nap, NULL);
        sq_ring_close(r);
        _exit(0);
    }
    clock_gettime(CLOCK_MONOTONIC, &t0);
    CHECK_EQ(sq_ring_pop_n(r, LONG_WAIT, 3, &e, NULL), SQ_CLOSED);
    CHECK(seconds_since(&t0) < LONG_WAIT / 2);
    CHECK(reap_ok(pid));
}

/* Many rounds of waiting for 3 of a window of 4 from 1 producer (the most that
 * can be waited for without stalling it), fewer at the end: every wake-up that
 * is due must come (a lost one costs LONG_WAIT), and every entry must arrive
 * once, in order. */
static void test_coalesced_pop_rounds(void) { handoff_run(8, 1 << 16, 4, 3); }

static uint32_t task_seq(sq_ring *r) { return atomic_load(&r->task_seq); }

/* Producers waiting for a task are woken when `refill` tasks can be claimed, not
 * for each one; when the last tasks of a bounded range are all claimable; when
 * the consumer is about to wait for results; and never by a release (it frees
 * space, which only producers waiting in sq_ring_reserve need). */
static void test_task_refill(void) {
    sq_ring *r = ring_new(2, 16, 1 << 16, 1 << 16);
    int64_t index;
    uint64_t generation, off;
    sq_entry e;

    task_reset(r, 0, 14, 10); /* window 10, 2 producers: refill (10 - 2) / 2 */
    CHECK_EQ(r->refill, 4);
    for (int k = 0; k < 10; k++) CHECK_EQ(sq_task_claim(r, k % 2, 0, &index, &generation), SQ_OK);
    CHECK_EQ(sq_task_claim(r, 0, 0, &index, &generation), SQ_TIMEOUT); /* window full */
    uint32_t seq = task_seq(r);
    for (int64_t base = 1; base <= 3; base++) {
        sq_task_advance(r, base);
        CHECK_EQ(task_seq(r), seq); /* 1 to 3 claimable: nobody woken */
    }
    sq_task_advance(r, 4);
    CHECK(task_seq(r) != seq); /* 4 claimable */
    for (int k = 0; k < 4; k++) CHECK_EQ(sq_task_claim(r, 0, 0, &index, &generation), SQ_OK);
    CHECK_EQ(index, 13); /* the last task of the range */

    /* the tail of a bounded range: everything left is claimable, wake for it */
    task_reset(r, 0, 12, 10);
    for (int k = 0; k < 10; k++) CHECK_EQ(sq_task_claim(r, 0, 0, &index, &generation), SQ_OK);
    seq = task_seq(r);
    sq_task_advance(r, 1);
    CHECK_EQ(task_seq(r), seq); /* task 10 is claimable, 11 is not yet */
    sq_task_advance(r, 2);
    CHECK(task_seq(r) != seq); /* 10 and 11, the last ones, are claimable */

    /* a consumer about to wait for results wakes producers held back */
    task_reset(r, 0, -1, 10);
    for (int k = 0; k < 10; k++) CHECK_EQ(sq_task_claim(r, 0, 0, &index, &generation), SQ_OK);
    sq_task_advance(r, 1);
    seq = task_seq(r);
    r->task_sleepers = 1; /* as if one slept (white-box: no process needed) */
    CHECK_EQ(sq_ring_pop(r, 0.001, &e, NULL), SQ_TIMEOUT);
    CHECK(task_seq(r) != seq);
    r->task_sleepers = 0;

    /* a release does not wake producers waiting for a task */
    CHECK_EQ(sq_ring_reserve(r, 0, 64, 0, &off), SQ_OK);
    CHECK_EQ(sq_ring_commit(r, 0, off, 0, generation, SQ_KIND_RESULT), SQ_OK);
    CHECK_EQ(sq_ring_pop(r, 0, &e, NULL), SQ_OK);
    seq = task_seq(r);
    CHECK_EQ(sq_ring_release(r, e.offset), SQ_OK);
    CHECK_EQ(task_seq(r), seq);
}

/* Claims one task (any), then exits. */
static void one_claimer(sq_ring *r, int w) {
    int64_t i;
    uint64_t gen;
    CHECK_EQ(sq_task_claim(r, w, LONG_WAIT, &i, &gen), SQ_OK);
}

/* True once process pid is blocked in the futex syscall (Linux: the first field
 * of /proc/<pid>/syscall is the syscall number), polled up to LONG_WAIT s.
 * Where that file cannot be read, waits 200 ms and says yes. */
static int blocked_in_futex(pid_t pid) {
    char path[64], buf[64];
    snprintf(path, sizeof path, "/proc/%d/syscall", (int)pid);
    for (int i = 0; i < (int)(LONG_WAIT * 1000); i++) {
        FILE *f = fopen(path, "r");
        if (f == NULL) { /* not readable here (permissions): give it time */
            sleep_ms(200);
            return 1;
        }
        int ok = fgets(buf, sizeof buf, f) != NULL && atoi(buf) == SYS_futex;
        fclose(f);
        if (ok) return 1;
        sleep_ms(1);
    }
    return 0;
}

/* A refill wakes one sleeping producer, which claims the tasks in a row; the
 * others sleep on until the consumer is about to wait for a result. */
static void test_refill_wakes_one(void) {
    sq_ring *r = ring_new(2, 16, 1 << 16, 1 << 16);
    int64_t index;
    uint64_t generation;
    sq_entry e;
    task_reset(r, 0, -1, 6); /* refill (6 - 2) / 2 = 2 */
    for (int k = 0; k < 6; k++) CHECK_EQ(sq_task_claim(r, 0, 0, &index, &generation), SQ_OK);
    pid_t a = spawn(one_claimer, r, 0);
    pid_t b = spawn(one_claimer, r, 1);
    CHECK(wait_for(n_producer_sleepers, r, 2));
    CHECK(blocked_in_futex(a) && blocked_in_futex(b));
    sq_task_advance(r, 2); /* 2 claimable: wake one */
    int st;
    pid_t first = waitpid(-1, &st, 0);
    CHECK(first == a || first == b);
    CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    pid_t other = first == a ? b : a;
    sleep_ms(100);
    CHECK_EQ(waitpid(other, &st, WNOHANG), 0); /* still asleep */
    CHECK_EQ(producer_sleepers(r), 1);
    /* the consumer, about to wait, wakes it: one task is still claimable */
    CHECK_EQ(sq_ring_pop(r, 0.001, &e, NULL), SQ_TIMEOUT);
    CHECK(reap_ok(other));
}


/* ------------------------------------------------ shm.c: the ring's region ---- */

static void test_anon_shm(void) {
    int fd = sq_anon_shm();
    CHECK(fd >= 0);
    if (fd < 0) return;
    CHECK(fcntl(fd, F_GETFD) & FD_CLOEXEC); /* a worker gets it on purpose only */
#ifdef __linux__
    char link[64], target[256];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    CHECK(n > 0);
    target[n > 0 ? n : 0] = 0;
    CHECK(strstr(target, "seqtools-ring") != NULL); /* memfd: no file in /dev/shm */
#endif
    CHECK_EQ(ftruncate(fd, 1 << 16), 0);
    CHECK_EQ(sq_fallocate(fd, 1 << 16), 0);
    char *p = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE,
                   fd, 0);
    CHECK(p != MAP_FAILED);
    if (p == MAP_FAILED) return;
    CHECK_EQ(p[12345], 0);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) { /* a second mapping of the same fd, as a worker makes */
        char *q = mmap(NULL, 1 << 16, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
        if (q == MAP_FAILED) _exit(1);
        q[12345] = 42;
        _exit(0);
    }
    CHECK(reap_ok(pid));
    CHECK_EQ(p[12345], 42);
    munmap(p, 1 << 16);
    /* a size the system cannot back is an error value, not a signal later */
    CHECK(sq_fallocate(fd, -1) != 0);
    close(fd);
}

/* --------------------------------- allochook.c: the worker's allocation hook ---- */

/* A stand-in for numpy's default allocator, counting what it serves. */
static int g_dflt_calls;

static void *dflt_malloc(void *ctx, size_t size) {
    CHECK(ctx == &g_dflt_calls);
    g_dflt_calls++;
    return malloc(size);
}

static void *dflt_calloc(void *ctx, size_t nelem, size_t elsize) {
    g_dflt_calls++;
    return calloc(nelem, elsize);
}

static void *dflt_realloc(void *ctx, void *ptr, size_t new_size) {
    g_dflt_calls++;
    return realloc(ptr, new_size);
}

static void dflt_free(void *ctx, void *ptr, size_t size) {
    g_dflt_calls++;
    free(ptr);
}

#define HOOK_HEADROOM 4096
#define HOOK_MIN 1024

/* A ring of 2 producers with 1 MiB of data (a hook budget of 256 KiB, a quarter),
 * and the hook set up on it for producer 0 and left inactive. */
static sq_ring *hook_ring(void) {
    sq_ring *r = ring_new(2, 16, 1 << 20, 1 << 20);
    sqh_allocator d = {&g_dflt_calls, dflt_malloc, dflt_calloc, dflt_realloc, dflt_free};
    CHECK_EQ(sqh_setup(r, (char *)r, g_map_size, 0, HOOK_HEADROOM, HOOK_MIN, &d), 0);
    CHECK_EQ(sqh_setup(r, (char *)r, g_map_size, 0, HOOK_HEADROOM, HOOK_MIN, &d), -1);
    CHECK(sqh_installed());
    return r;
}

static int in_region(sq_ring *r, const void *p) {
    return (const char *)p >= (const char *)r && (const char *)p < (const char *)r + g_map_size;
}

static void test_hook_placement(void) {
    sq_ring *r = hook_ring();
    uint64_t off = 0, nbytes = 0;
    sqh_stats st;

    char *p = sqh_malloc(NULL, 100000); /* inactive: the default allocator */
    CHECK(p != NULL && !in_region(r, p));
    CHECK_EQ(g_dflt_calls, 1);
    CHECK_EQ(sqh_find(p, 1, &off, &nbytes), 0);
    sqh_free(NULL, p, 100000);
    CHECK_EQ(g_dflt_calls, 2);

    sqh_set_active(1);
    p = sqh_malloc(NULL, 100000);
    CHECK(in_region(r, p));
    CHECK_EQ(g_dflt_calls, 2);
    memset(p, 0x5a, 100000);
    CHECK_EQ(sqh_find(p, 100000, &off, &nbytes), 1);
    CHECK(p == (char *)r + off + HOOK_HEADROOM); /* the headroom is in front */
    CHECK_EQ(nbytes, 100000 + HOOK_HEADROOM);
    CHECK_EQ(sqh_find(p, 100001, &off, &nbytes), 0); /* larger than the array */
    CHECK_EQ(sqh_find(p + 64, 64, &off, &nbytes), 0); /* not an array's start */
    CHECK_EQ(stats(r).kept, 1);
    sqh_get_stats(&st);
    CHECK_EQ(st.live, 1);
    CHECK_EQ(st.hooked, 1);
    CHECK_EQ(st.live_bytes, 100000 + HOOK_HEADROOM);

    char *small = sqh_malloc(NULL, HOOK_MIN - 1); /* small: not worth a block */
    CHECK(!in_region(r, small));
    char *zeroed = sqh_calloc(NULL, 1000, 100); /* a block is not known zero */
    CHECK(!in_region(r, zeroed));
    CHECK_EQ(zeroed[99999], 0);
    sqh_free(NULL, small, HOOK_MIN - 1);
    sqh_free(NULL, zeroed, 100000);

    /* realloc moves an array out of its block, contents kept, block given back */
    char *q = sqh_realloc(NULL, p, 120000); /* both blocks fit in the budget */
    CHECK(q != NULL && q != p);
    CHECK_EQ(q[99999], 0x5a);
    CHECK_EQ(sqh_find(p, 1, &off, &nbytes), 0);
    sqh_get_stats(&st);
    CHECK_EQ(st.live, 1); /* q itself, in a block of its own */
    CHECK(in_region(r, q));
    sqh_free(NULL, q, 120000);
    sqh_get_stats(&st);
    CHECK_EQ(st.live, 0);
    CHECK_EQ(st.live_bytes, 0);
    CHECK_EQ(stats(r).kept, 0);
    check_idle(r);

    sqh_disable(); /* for good: frees come back, allocations no longer */
    p = sqh_malloc(NULL, 100000);
    CHECK(!in_region(r, p));
    sqh_free(NULL, p, 100000);
    sqh_get_stats(&st);
    CHECK_EQ(st.enabled, 0);
    check_invariants(r);
}

static void test_hook_limits(void) {
    sq_ring *r = hook_ring();
    char *p[SQH_MAX + 1];
    sqh_set_active(1);
    /* the budget: capacity / (2 * nworkers) = 256 KiB of blocks in all */
    p[0] = sqh_malloc(NULL, 200000);
    p[1] = sqh_malloc(NULL, 100000);
    CHECK(in_region(r, p[0]));
    CHECK(!in_region(r, p[1])); /* over the budget: the default allocator */
    sqh_free(NULL, p[1], 100000);
    sqh_free(NULL, p[0], 200000);
    /* at most SQH_MAX arrays at once */
    for (int k = 0; k <= SQH_MAX; k++) p[k] = sqh_malloc(NULL, HOOK_MIN);
    for (int k = 0; k < SQH_MAX; k++) CHECK(in_region(r, p[k]));
    CHECK(!in_region(r, p[SQH_MAX]));
    CHECK_EQ(sqh_count(SQH_LIVE), SQH_MAX);
    for (int k = 0; k <= SQH_MAX; k++) sqh_free(NULL, p[k], HOOK_MIN);
    CHECK_EQ(sqh_count(SQH_LIVE), 0);
    check_idle(r);
}

static void *malloc_elsewhere(void *arg) {
    return sqh_malloc(NULL, 100000);
}

static void test_hook_only_its_thread_and_process(void) {
    sq_ring *r = hook_ring();
    sqh_set_active(1);
    pthread_t t;
    void *other = NULL;
    CHECK_EQ(pthread_create(&t, NULL, malloc_elsewhere, NULL), 0);
    CHECK_EQ(pthread_join(t, &other), 0);
    CHECK(other != NULL && !in_region(r, other)); /* another thread: not hooked */
    sqh_free(NULL, other, 100000);

    char *p = sqh_malloc(NULL, 100000);
    CHECK(in_region(r, p));
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* a forked child: neither allocates in the ring nor frees its blocks */
        char *q = sqh_malloc(NULL, 100000);
        int ok = q != NULL && !in_region(r, q);
        sqh_free(NULL, q, 100000);
        sqh_free(NULL, p, 100000);
        _exit(ok && g_fail == 0 ? 0 : 1);
    }
    CHECK(reap_ok(pid));
    CHECK_EQ(stats(r).kept, 1);
    sqh_free(NULL, p, 100000);
    CHECK_EQ(stats(r).kept, 0);
}

static void test_hook_adoption(void) {
    sq_ring *r = hook_ring();
    uint64_t off = 0, nbytes = 0, small_off, small_bytes;
    sq_entry e;
    uint64_t req;
    sqh_set_active(1);
    char *p = sqh_malloc(NULL, 100000);
    char *kept = sqh_malloc(NULL, 50000);
    CHECK_EQ(sqh_find(p, 100000, &off, &nbytes), 1);
    CHECK_EQ(sqh_find(kept, 50000, &small_off, &small_bytes), 1);
    /* the result is p's block itself: _transport's merged header */
    CHECK_EQ(sq_ring_commit_n(r, 0, off, 5, 1, SQ_KIND_RESULT, NULL, 0), SQ_OK);
    sqh_adopted(off);
    CHECK_EQ(sqh_count(SQH_ADOPTED), 1);
    CHECK_EQ(sqh_count(SQH_LIVE), 1); /* `kept`, not in the result */
    CHECK_EQ(sqh_find(p, 100000, &off, &nbytes), 0); /* no longer the worker's */
    sqh_free(NULL, p, 100000); /* the worker's array dies: the block is the parent's */
    CHECK_EQ(sqh_count(SQH_ADOPTED), 0);
    sqh_stats st;
    sqh_get_stats(&st);
    CHECK_EQ(st.adopted, 1);
    CHECK_EQ(st.live_bytes, 50000 + HOOK_HEADROOM);
    CHECK_EQ(sq_ring_pop(r, 0, &e, &req), SQ_OK);
    CHECK_EQ(e.offset, off);
    CHECK_EQ(e.index, 5);
    CHECK_EQ(sq_ring_release(r, off), SQ_OK);
    sqh_free(NULL, kept, 50000);
    check_idle(r);
}

/* ------------------------------------------------------------- copy pool ---- */

typedef struct {
    sq_job job;
    int id;
    int *log;               /* ids in run order */
    int *nlog;
    pthread_mutex_t *lock;
    volatile int *gate;     /* the job spins until *gate is set (NULL: none) */
    long sum;
} test_job;

static void test_job_run(sq_job *j) {
    test_job *t = (test_job *)j;
    long s = 0;
    int i;
    while (t->gate != NULL && !__atomic_load_n(t->gate, __ATOMIC_ACQUIRE)) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    for (i = 0; i <= t->id; i++) s += i;
    t->sum = s;
    if (t->log != NULL) {
        pthread_mutex_lock(t->lock);
        t->log[(*t->nlog)++] = t->id;
        pthread_mutex_unlock(t->lock);
    }
}

static void test_job_init(test_job *t, int id) {
    memset(t, 0, sizeof *t);
    t->job.run = test_job_run;
    t->id = id;
}

/* One thread runs jobs in submission order; each is done once waited for. */
static void test_pool_threads_order(void) {
    sq_pool *p = NULL;
    test_job jobs[64];
    int log[64], nlog = 0, i;
    pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
    CHECK_EQ(sq_pool_new(1, &p), 0);
    for (i = 0; i < 64; i++) {
        test_job_init(&jobs[i], i);
        jobs[i].log = log;
        jobs[i].nlog = &nlog;
        jobs[i].lock = &lock;
        CHECK_EQ(sq_pool_submit(p, &jobs[i].job), 0);
    }
    for (i = 0; i < 64; i++) {
        CHECK_EQ(sq_pool_wait(p, &jobs[i].job, LONG_WAIT), 1);
        CHECK_EQ(jobs[i].sum, (long)i * (i + 1) / 2);
    }
    CHECK_EQ(nlog, 64);
    for (i = 0; i < 64; i++) CHECK_EQ(log[i], i);
    CHECK_EQ(p->pending, 0); /* read after a wait took the mutex */
    /* a done job can be submitted again; a queued or running one cannot */
    jobs[0].log = NULL;
    CHECK_EQ(sq_pool_submit(p, &jobs[0].job), 0);
    CHECK_EQ(sq_pool_wait(p, &jobs[0].job, LONG_WAIT), 1);
    sq_pool_free(p);
}

/* Busy time per pool thread: a job's run time counts; an idle thread's does
 * not grow; no thread past nthreads, and none once stopped. */
static void test_pool_busy(void) {
    sq_pool *p = NULL;
    test_job job;
    int gate = 0;
    uint64_t busy, later;
    CHECK_EQ(sq_pool_new(1, &p), 0);
    CHECK_EQ(sq_pool_busy(p, 1, &busy), -EINVAL);
    CHECK_EQ(sq_pool_busy(p, 0, &busy), 0);
    CHECK_EQ(busy, 0);
    test_job_init(&job, 3);
    job.gate = &gate;
    CHECK_EQ(sq_pool_submit(p, &job.job), 0);
    sleep_ms(30);
    CHECK_EQ(sq_pool_busy(p, 0, &busy), 0); /* running, held by its gate */
    CHECK(busy >= 20000000ULL);
    __atomic_store_n(&gate, 1, __ATOMIC_RELEASE);
    CHECK_EQ(sq_pool_wait(p, &job.job, LONG_WAIT), 1);
    CHECK_EQ(sq_pool_busy(p, 0, &busy), 0);
    sleep_ms(20);
    CHECK_EQ(sq_pool_busy(p, 0, &later), 0);
    CHECK_EQ(later, busy);
    sq_pool_stop(p);
    CHECK_EQ(sq_pool_busy(p, 0, &busy), -EINVAL);
    sq_pool_free(p);
}

/* Many threads, many jobs: each runs exactly once. */
static void test_pool_threads_many(void) {
    enum { N = 5000 };
    sq_pool *p = NULL;
    static test_job jobs[N];
    int i;
    CHECK_EQ(sq_pool_new(4, &p), 0);
    for (i = 0; i < N; i++) {
        test_job_init(&jobs[i], i % 100);
        CHECK_EQ(sq_pool_submit(p, &jobs[i].job), 0);
    }
    for (i = N - 1; i >= 0; i--) {
        CHECK_EQ(sq_pool_wait(p, &jobs[i].job, LONG_WAIT), 1);
        CHECK_EQ(jobs[i].sum, (long)(i % 100) * (i % 100 + 1) / 2);
    }
    CHECK_EQ(p->pending, 0); /* read after a wait took the mutex */
    sq_pool_free(p);
}

/* Wait times out on a running job; cancel takes queued jobs back, not running
 * ones; free takes the queue back and waits for the running job. */
static void test_pool_threads_cancel_and_free(void) {
    sq_pool *p = NULL;
    test_job blocker, queued[3], idle;
    volatile int gate = 0;
    int i;
    CHECK_EQ(sq_pool_new(1, &p), 0);
    test_job_init(&blocker, 10);
    blocker.gate = &gate;
    CHECK_EQ(sq_pool_submit(p, &blocker.job), 0);
    for (i = 0; i < 3; i++) {
        test_job_init(&queued[i], i);
        CHECK_EQ(sq_pool_submit(p, &queued[i].job), 0);
    }
    CHECK_EQ(sq_pool_submit(p, &queued[0].job), -EINVAL); /* already queued */
    while (sq_pool_state(p, &blocker.job) != SQ_JOB_RUNNING) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    CHECK_EQ(sq_pool_wait(p, &blocker.job, 0.01), 0);
    CHECK_EQ(sq_pool_cancel(p, &blocker.job), 0); /* running */
    CHECK_EQ(sq_pool_cancel(p, &queued[1].job), 1);
    CHECK_EQ(sq_pool_state(p, &queued[1].job), SQ_JOB_IDLE);
    CHECK_EQ(sq_pool_wait(p, &queued[1].job, 0), -EINVAL);
    CHECK_EQ(p->pending, 3); /* blocker running, 2 queued; no thread changes it now */
    test_job_init(&idle, 0);
    CHECK_EQ(sq_pool_wait(p, &idle.job, 0), -EINVAL); /* never submitted */
    __atomic_store_n(&gate, 1, __ATOMIC_RELEASE);
    CHECK_EQ(sq_pool_wait(p, &queued[2].job, LONG_WAIT), 1);
    CHECK_EQ(queued[0].sum, 0);
    CHECK_EQ(blocker.sum, 55);
    CHECK_EQ(queued[1].sum, 0); /* never ran */
    /* free with a running job and a queued one */
    __atomic_store_n(&gate, 0, __ATOMIC_RELEASE);
    test_job_init(&blocker, 3);
    blocker.gate = &gate;
    test_job_init(&queued[0], 4);
    CHECK_EQ(sq_pool_submit(p, &blocker.job), 0);
    CHECK_EQ(sq_pool_submit(p, &queued[0].job), 0);
    while (sq_pool_state(p, &blocker.job) != SQ_JOB_RUNNING) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    __atomic_store_n(&gate, 1, __ATOMIC_RELEASE);
    sq_pool_free(p); /* joins: the running job ends first */
    CHECK_EQ(blocker.job.state, SQ_JOB_DONE);
    CHECK_EQ(blocker.sum, 6);
    /* the queued job ran if the thread took it before free() did */
    CHECK(queued[0].job.state == SQ_JOB_IDLE ? queued[0].sum == 0
                                             : queued[0].sum == 10);
}

static void test_pool_bad_arguments(void) {
    sq_pool *p = NULL;
    CHECK_EQ(sq_pool_new(0, &p), -EINVAL);
    CHECK_EQ(sq_pool_new(1025, &p), -EINVAL);
    CHECK_EQ(sq_pool_new(1, NULL), -EINVAL);
    CHECK(p == NULL);
    sq_pool_free(NULL);
}

static const struct {
    const char *name;
    void (*fn)(void);
} tests[] = {
    {"basics", test_basics},
    {"wakeups_not_lost", test_wakeups_not_lost},
    {"coalesced_pop", test_coalesced_pop},
    {"coalesced_pop_rounds", test_coalesced_pop_rounds},
    {"task_refill", test_task_refill},
    {"refill_wakes_one", test_refill_wakes_one},
    {"init_check", test_init_check},
    {"wrap", test_wrap},
    {"big_block_in_empty_ring", test_big_block_in_empty_ring},
    {"out_of_order", test_out_of_order},
    {"backpressure", test_backpressure},
    {"too_big", test_too_big},
    {"growable", test_growable},
    {"unsized", test_unsized},
    {"close", test_close},
    {"contention", test_contention},
    {"tasks_window", test_tasks_window},
    {"tasks_generations", test_tasks_generations},
    {"worker_task", test_worker_task},
    {"worker_busy", test_worker_busy},
    {"task_set_window", test_task_set_window},
    {"worker_death", test_worker_death},
    {"killed_holding_mutex", test_killed_holding_mutex},
    {"killed_while_waiting", test_killed_while_waiting},
    {"multi_block", test_multi_block},
    {"kept_blocks", test_kept_blocks},
    {"interleaved_deaths", test_interleaved_deaths},
    {"killed_inside_commit", test_killed_inside_commit},
    {"fair_space", test_fair_space},
    {"unrecoverable_lock", test_unrecoverable_lock},
    {"deaths_forgotten_on_success", test_deaths_forgotten_on_success},
    {"stats_stall", test_stats_stall},
    {"capacity_threads", test_capacity_threads},
    {"watchdog", test_watchdog},
    {"anon_shm", test_anon_shm},
    {"hook_placement", test_hook_placement},
    {"hook_limits", test_hook_limits},
    {"hook_only_its_thread_and_process", test_hook_only_its_thread_and_process},
    {"hook_adoption", test_hook_adoption},
    {"pool_threads_order", test_pool_threads_order},
    {"pool_threads_many", test_pool_threads_many},
    {"pool_threads_cancel_and_free", test_pool_threads_cancel_and_free},
    {"pool_bad_arguments", test_pool_bad_arguments},
    {"pool_busy", test_pool_busy},
};

int main(int argc, char **argv) {
    const char *only = argc > 1 ? argv[1] : NULL;
    const char *env = getenv("SQ_TEST_SEED");
    struct timespec t0;
    clock_gettime(CLOCK_REALTIME, &t0);
    uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)t0.tv_nsec ^ (uint64_t)getpid();
    int passed = 0, failed = 0;

    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("ringbuf: seed %llu (replay with SQ_TEST_SEED=%llu)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    for (size_t k = 0; k < sizeof tests / sizeof tests[0]; k++) {
        if (only && !strstr(tests[k].name, only)) continue;
        fflush(NULL);
        pid_t pid = fork();
        if (pid < 0) {
            perror("fork");
            return 2;
        }
        if (pid == 0) {
            /* own process group, so leftovers of a failed test can be killed */
            setpgid(0, 0);
            alarm(TEST_ALARM);
            g_seed = seed + k;
            g_fail = 0;
            tests[k].fn();
            fflush(NULL);
            _exit(g_fail ? 1 : 0);
        }
        setpgid(pid, pid);
        int st;
        waitpid(pid, &st, 0);
        kill(-pid, SIGKILL); /* any child the test left behind */
        if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
            passed++;
            printf("ok   %s\n", tests[k].name);
        } else {
            failed++;
            if (WIFSIGNALED(st))
                printf("FAIL %s (signal %d%s)\n", tests[k].name, WTERMSIG(st),
                       WTERMSIG(st) == SIGALRM ? ": timed out, deadlock?" : "");
            else
                printf("FAIL %s\n", tests[k].name);
        }
    }
    printf("ringbuf: %d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}
