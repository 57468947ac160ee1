# Declarations of the C ring buffer (csrc/ringbuf.h), of its shared-memory region
# (csrc/shm.h), of the worker watchdog (csrc/watchdog.h) and of the worker's
# allocation hook (csrc/allochook.h), cimported by _ring.pyx; and of the Ring and
# Block classes and the functions below, cimported by _transport.pyx (which reads
# and writes payloads in place) and by seqtools/_testing.pyx, which call the C
# ring only through them, so that it is linked into _ring alone.
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t
from posix.types cimport off_t, pid_t


cdef extern from "ringbuf.h" nogil:
    enum:
        SQ_OK
        SQ_TIMEOUT
        SQ_UNSIZED
        SQ_CLOSED
        SQ_ETOOBIG
        SQ_EINVAL
        SQ_ESYS
        SQ_ECORRUPT
        SQ_EFULL
        SQ_ALIGN
        SQ_BLOCK_HEADER
        SQ_KIND_RESULT
        SQ_KIND_ERROR

    ctypedef struct sq_ring:
        pass

    ctypedef struct sq_entry:
        uint64_t offset
        uint64_t nbytes
        int64_t index
        uint64_t generation
        int32_t worker
        uint32_t kind

    ctypedef struct sq_stats:
        uint64_t capacity
        uint64_t used
        uint64_t reserved
        uint64_t committed
        uint64_t popped
        uint64_t space_waiters
        uint64_t requested
        uint64_t largest_free
        uint64_t waiting_for
        uint64_t kept
        uint64_t reserved_active
        uint64_t kept_active
        uint64_t sleeping_in_reserve
        uint64_t space_events
        uint64_t ready_events
        uint64_t queued

    size_t sq_ring_header_size(int nworkers, int qlen)
    int sq_ring_init(void *region, int nworkers, int qlen, uint64_t capacity)
    int sq_ring_check(const void *region)
    int sq_ring_set_capacity(sq_ring *r, uint64_t capacity)
    int sq_ring_grow(sq_ring *r, uint64_t capacity)
    int sq_ring_set_max_capacity(sq_ring *r, uint64_t max_capacity)
    uint64_t sq_ring_data_offset(const sq_ring *r)
    uint64_t sq_ring_capacity(const sq_ring *r)
    int sq_ring_nworkers(const sq_ring *r)
    int sq_ring_reserve(sq_ring *r, int worker, uint64_t nbytes, double timeout,
                        uint64_t *offset)
    int sq_ring_commit(sq_ring *r, int worker, uint64_t offset, int64_t index,
                       uint64_t generation, uint32_t kind)
    int sq_ring_commit_n(sq_ring *r, int worker, uint64_t offset, int64_t index,
                         uint64_t generation, uint32_t kind, const uint64_t *adopt,
                         int nadopt)
    int sq_ring_keep(sq_ring *r, int worker, uint64_t nbytes, uint64_t max_used,
                     uint64_t *offset)
    int sq_ring_unkeep(sq_ring *r, int worker, uint64_t offset)
    int sq_ring_cancel(sq_ring *r, int worker)
    int sq_ring_post(sq_ring *r, int worker, int64_t index, uint64_t generation,
                     uint32_t kind)
    int sq_ring_pop(sq_ring *r, double timeout, sq_entry *out, uint64_t *requested)
    int sq_ring_pop_n(sq_ring *r, double timeout, uint64_t want, sq_entry *out,
                      uint64_t *requested)
    int sq_ring_release(sq_ring *r, uint64_t offset)
    int sq_worker_reset(sq_ring *r, int worker, int64_t *index, int *deaths)
    int sq_worker_task(sq_ring *r, int worker, int64_t *index, uint64_t *running_ns)
    int sq_worker_busy(sq_ring *r, int worker, uint64_t *busy_ns)
    int sq_task_claim(sq_ring *r, int worker, double timeout, int64_t *index,
                      uint64_t *generation)
    int sq_task_reset(sq_ring *r, int64_t start, int64_t end, int64_t window,
                      uint64_t *generation)
    int sq_task_drop(sq_ring *r, int64_t index)
    int sq_task_advance(sq_ring *r, int64_t base)
    int sq_task_set_window(sq_ring *r, int64_t window)
    int sq_ring_close(sq_ring *r)
    int sq_ring_stats(sq_ring *r, sq_stats *out)


cdef extern from "watchdog.h" nogil:
    enum:
        SQ_WATCHDOG_EXIT
        SQ_PARENT_GONE

    int sq_watchdog_start(long parent_pid, double interval)
    int sq_set_pdeathsig(int sig, long expected_ppid)
    int sq_is_zombie(long pid)


cdef extern from "shm.h" nogil:
    int MAP_NORESERVE
    int sq_anon_shm()
    int sq_fallocate(int fd, off_t len)


cdef extern from "allochook.h" nogil:
    ctypedef struct sqh_allocator:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr, size_t size) noexcept nogil

    enum:
        SQH_LIVE
        SQH_ADOPTED

    ctypedef struct sqh_stats:
        int installed
        int enabled
        uint64_t hooked
        uint64_t adopted
        int live
        uint64_t live_bytes
        int adopted_alive

    int sqh_setup(sq_ring *r, char *base, size_t map_size, int slot,
                  uint64_t headroom, uint64_t min_size, const sqh_allocator *dflt)
    int sqh_installed()
    void sqh_set_active(int on)
    void sqh_disable()
    void *sqh_malloc(void *ctx, size_t size)
    void *sqh_calloc(void *ctx, size_t nelem, size_t elsize)
    void *sqh_realloc(void *ctx, void *ptr, size_t new_size)
    void sqh_free(void *ctx, void *ptr, size_t size)
    int sqh_find(const char *ptr, size_t nbytes, uint64_t *offset,
                 uint64_t *block_bytes)
    void sqh_adopted(uint64_t offset)
    int sqh_count(int state)
    void sqh_get_stats(sqh_stats *out)


cdef class Ring:
    cdef sq_ring *r
    cdef char *base
    cdef size_t map_size
    cdef int fd
    cdef readonly int nworkers
    # The entry pop last returned, until it is acknowledged (see Ring.pop)
    cdef bint has_held
    cdef sq_entry held
    cdef readonly uint64_t acked
    cdef void ack_offset(self, uint64_t offset) noexcept
    cdef int _map(self, int fd, size_t map_size) except -1
    cdef int _back(self, uint64_t capacity) except -1
    cdef int _resize(self, uint64_t capacity, bint first) except -1


cdef class Block:
    cdef Ring ring
    cdef readonly uint64_t offset
    cdef readonly uint64_t nbytes
    cdef bint leased
    cdef pid_t owner
    cdef Py_ssize_t shape[1]
    cdef Py_ssize_t strides[1]


cdef Block make_block(Ring ring, uint64_t offset, uint64_t nbytes, bint leased)
cdef str too_many_blocks()

# The ring calls of the test-only entry points (seqtools/_testing.pyx), which
# the package makes in C or through Block: the C ring is linked into _ring alone.
cdef int ring_keep(Ring ring, int worker, uint64_t nbytes,
                   uint64_t *offset) except -1
cdef int ring_unkeep(Ring ring, int worker, uint64_t offset) except -1
cdef int ring_release(Ring ring, uint64_t offset) except -1
cdef void hook_get_stats(sqh_stats *out) noexcept


# The worker's numpy allocation hook (see _ring.pyx): large arrays its code
# allocates while a task runs are placed in kept ring blocks, so that a result
# made of them crosses to the parent with no copy.  Each such array starts
# HOOK_HEADROOM_BYTES into its block, for the result's header.
cdef enum:
    HOOK_HEADROOM_BYTES = 4096
cdef bint hook_find(const char *ptr, size_t nbytes, uint64_t *offset,
                    uint64_t *block_bytes) noexcept
cdef void hook_adopted(uint64_t offset) noexcept
cdef int hook_live() noexcept
cdef int commit_n(Ring ring, int worker, uint64_t offset, int64_t index,
                  uint64_t generation, uint32_t kind, const uint64_t *adopt,
                  int nadopt) except -1
