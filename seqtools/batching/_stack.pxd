# What a copy job copies, declared for seqtools/loaders/_copypool.pyx, which runs
# jobs on native threads: RowSources.job() (in _stack.pyx) checks one batch's copy
# and returns it as a CopyJob, whose C part (CopyData, an sq_job of csrc/copypool.h
# whose run function gathers the rows) a pool thread runs with no GIL. Only the
# struct of csrc/copypool.h is used here: copypool.c is linked into _copypool.
from libc.stdint cimport int64_t


cdef extern from "copypool.h" nogil:
    cdef struct sq_job
    ctypedef void (*sq_job_fn)(sq_job* job) noexcept nogil
    cdef struct sq_job:
        sq_job_fn run
        int state
    int SQ_JOB_IDLE


cdef struct RowSrc:
    # One source array: row i starts at base + i * stride0. The row is C-contiguous
    # when strides == NULL, else walked with the row's shape/strides (pointing into
    # the source's Py_buffer, held until the copy is done).
    const char* base
    Py_ssize_t stride0
    Py_ssize_t length
    int ndim
    const Py_ssize_t* shape
    const Py_ssize_t* strides


cdef struct RowField:
    char* dst                    # C-contiguous output, nrows * rowbytes bytes
    Py_ssize_t nrows
    Py_ssize_t rowbytes
    Py_ssize_t itemsize
    const int64_t* part          # source of each row; NULL: all from source 0
    const int64_t* local         # row in its source; NULL: row k is row k
    RowSrc* srcs
    Py_ssize_t nsrcs


cdef struct CopyData:
    sq_job base                  # first: the pool hands the job back as this
    RowField* fields             # checked: only memcpy is left to do; NULL once run
    Py_ssize_t nfields


cdef class CopyRunner:
    """Where a submitted CopyJob runs (seqtools.loaders._copypool.CopyPool)."""

    # 1 once the job is done, 0 if `timeout` seconds (< 0: no limit) pass first;
    # raises if it never will be.
    cdef int wait_job(self, sq_job* job, double timeout) except -1
    # Make sure no thread touches the job any more: take it back if queued, wait
    # if running. For a job being dropped: no Python error may come out.
    cdef void settle_job(self, sq_job* job) noexcept


cdef class CopyJob:
    cdef CopyData data
    cdef Py_buffer* bufs         # part, local, out per field
    cdef Py_ssize_t nbufs
    cdef object sources          # the RowSources whose sources the fields point into
    cdef CopyRunner runner       # set by the runner it is submitted to
    cdef void _release(self)
