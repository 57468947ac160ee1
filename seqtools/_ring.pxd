# Declarations of the C ring buffer (csrc/ringbuf.h); cimported by _ring.pyx only.
from libc.stdint cimport int32_t, int64_t, uint32_t, uint64_t


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
        SQ_KIND_USER

    ctypedef struct sq_ring:
        pass

    ctypedef struct sq_entry:
        uint64_t offset
        uint64_t nbytes
        int64_t index
        uint64_t epoch
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

    size_t sq_ring_header_size(int nworkers, int qlen)
    int sq_ring_init(void *region, int nworkers, int qlen, uint64_t capacity)
    int sq_ring_check(const void *region)
    int sq_ring_set_capacity(sq_ring *r, uint64_t capacity)
    uint64_t sq_ring_data_offset(const sq_ring *r)
    uint64_t sq_ring_capacity(const sq_ring *r)
    int sq_ring_reserve(sq_ring *r, int worker, uint64_t nbytes, double timeout,
                        uint64_t *offset)
    int sq_ring_commit(sq_ring *r, int worker, uint64_t offset, int64_t index,
                       uint64_t epoch, uint32_t kind)
    int sq_ring_cancel(sq_ring *r, int worker)
    int sq_ring_post(sq_ring *r, int worker, int64_t index, uint64_t epoch,
                     uint32_t kind)
    int sq_ring_pop(sq_ring *r, double timeout, sq_entry *out, uint64_t *requested)
    int sq_ring_release(sq_ring *r, uint64_t offset)
    int sq_worker_reset(sq_ring *r, int worker, int64_t *index, int *deaths)
    int sq_task_claim(sq_ring *r, int worker, double timeout, int64_t *index,
                      uint64_t *epoch)
    uint64_t sq_task_reset(sq_ring *r, int64_t start, int64_t end, int64_t window)
    int sq_task_drop(sq_ring *r, int64_t index)
    void sq_task_advance(sq_ring *r, int64_t base)
    void sq_ring_close(sq_ring *r)
    int sq_ring_stats(sq_ring *r, sq_stats *out)
