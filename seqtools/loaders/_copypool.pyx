# The native copy threads of thread loaders: a Cython wrapper of csrc/copypool.c,
# used by seqtools/loaders/api.py only (its _CopyAhead).
#
# The jobs are seqtools.batching._stack's CopyJob (declared in _stack.pxd): made
# and checked in the consumer's thread by RowSources.job(), each holds every
# buffer its copy touches until the copy ends. Its C part, an sq_job whose run
# function is _stack's row gather, is what the threads run, with no GIL. The pool
# is the job's CopyRunner: the job asks it to wait for the copy and, when
# dropped, to make sure no thread runs it any more. Status codes from C become
# Python exceptions here, after the GIL is back.

from cpython.exc cimport PyErr_CheckSignals
from libc.errno cimport EPIPE
from libc.stdint cimport uint64_t
from posix.unistd cimport getpid

from ..batching._stack cimport CopyJob, CopyRunner, sq_job


cdef extern from "copypool.h" nogil:
    ctypedef struct sq_pool:
        pass
    int sq_pool_new(int nthreads, sq_pool** out)
    int sq_pool_submit(sq_pool* pool, sq_job* job)
    int sq_pool_wait(sq_pool* pool, sq_job* job, double timeout)
    int sq_pool_cancel(sq_pool* pool, sq_job* job)
    int sq_pool_busy(sq_pool* pool, int thread, uint64_t* busy_ns)
    void sq_pool_stop(sq_pool* pool)
    void sq_pool_free(sq_pool* pool)


cdef class CopyPool(CopyRunner):
    """``nthreads`` native threads running submitted copy jobs
    (``seqtools.batching._stack.CopyJob``) in order, with no GIL: the copies
    overlap the submitting thread's Python and each other. Close it (or drop it)
    in the process that made it; a forked child must not use it (its threads are
    not there).

    ``close()`` stops the threads; the pool's memory lives until the object
    dies, which no submitted job outlives (each holds the pool), so a job can be
    waited for or dropped at any time, from any thread.
    """

    cdef sq_pool* pool           # from __cinit__ to __dealloc__
    cdef bint closed
    cdef readonly long pid
    cdef readonly int nthreads

    def __cinit__(self, int nthreads):
        cdef int rc
        if nthreads < 1 or nthreads > 1024:
            raise ValueError(f"CopyPool: nthreads must be in [1, 1024], got {nthreads}")
        rc = sq_pool_new(nthreads, &self.pool)
        if rc != 0:
            raise OSError(-rc, f"CopyPool: cannot start {nthreads} threads")
        self.pid = getpid()
        self.nthreads = nthreads

    def busy(self):
        """Per thread, the seconds it has spent running jobs (the running one's
        time so far included); empty once closed."""
        cdef uint64_t busy_ns
        cdef int t
        out = []
        if self.closed:
            return out
        for t in range(self.nthreads):
            if sq_pool_busy(self.pool, t, &busy_ns) != 0:
                return []
            out.append(busy_ns * 1e-9)
        return out

    def submit(self, CopyJob job not None):
        """Queue ``job`` to run after the jobs submitted before it."""
        cdef int rc
        if self.closed:
            raise ValueError("this copy pool is closed")
        if getpid() != self.pid:
            raise RuntimeError("this copy pool belongs to the process that made it, "
                               "not to this forked child")
        if job.data.fields == NULL or job.runner is not None:
            raise RuntimeError("this copy job has already been submitted or run")
        job.runner = self
        rc = sq_pool_submit(self.pool, &job.data.base)
        if rc != 0:
            job.runner = None
            if rc == -EPIPE:  # closed from another thread meanwhile
                raise ValueError("this copy pool is closed")
            raise RuntimeError(f"CopyPool.submit failed (error {-rc})")

    cdef int wait_job(self, sq_job* job, double timeout) except -1:
        # Waits with the GIL released, checking for signals every 0.1 s
        # (KeyboardInterrupt ends the wait). The job holds the pool, so self.pool
        # is valid here.
        cdef int rc
        cdef double step, left = timeout
        if getpid() != self.pid:
            raise RuntimeError("this copy job belongs to the process that made its "
                               "pool, not to this forked child")
        while True:
            rc = sq_pool_wait(self.pool, job, 0.0)
            if rc == 0 and left != 0:
                step = 0.1 if left < 0 or left > 0.1 else left
                with nogil:
                    rc = sq_pool_wait(self.pool, job, step)
                if left > 0:
                    left = max(left - step, 0.0)
            if rc == 1:
                return 1
            if rc < 0:
                raise RuntimeError("the copy pool was closed before this job ran")
            if left == 0:
                return 0
            PyErr_CheckSignals()

    cdef void settle_job(self, sq_job* job) noexcept:
        # Nothing to do in a process forked from the pool's: no thread there.
        if getpid() != self.pid:
            return
        if sq_pool_cancel(self.pool, job) == 1:
            return
        with nogil:
            while sq_pool_wait(self.pool, job, 1.0) == 0:
                pass

    def close(self):
        """Stop the threads: queued jobs never run (waiting for them raises),
        running ones finish first. Idempotent."""
        cdef sq_pool* p = self.pool
        self.closed = True
        if p != NULL and getpid() == self.pid:
            with nogil:
                sq_pool_stop(p)

    def __dealloc__(self):
        if self.pool != NULL and getpid() == self.pid:
            sq_pool_free(self.pool)
        # In a forked child the pool's memory is a copy with no threads: leaked.
        self.pool = NULL
