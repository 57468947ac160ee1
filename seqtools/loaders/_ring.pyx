# Cython wrapper of the C shared-memory ring (csrc/ringbuf.c), of the worker
# watchdog (csrc/watchdog.c) and of the worker's allocation hook (csrc/allochook.c),
# used by seqtools/loaders/_transport.pyx (cimport, see _ring.pxd),
# seqtools/loaders/_worker.py and seqtools/loaders/api.py only.
#
# The region is an anonymous memfd (Linux) or an shm object unlinked as soon as it
# is open (other POSIX): it has no name in /dev/shm, so nothing can be left behind
# whatever kills the processes; it lives while a process maps it or holds its fd.
# Workers receive the fd by inheritance (fork) or by fd passing when the Ring is
# pickled into a spawn/forkserver child (multiprocessing.reduction.DupFd).
# Status codes from C become Python exceptions here, after the GIL is back.

cimport numpy as cnp
from cpython.pycapsule cimport PyCapsule_GetPointer, PyCapsule_New
from cpython.ref cimport Py_INCREF
from libc.errno cimport errno
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport strncpy
from posix.mman cimport MAP_FAILED, MAP_SHARED, PROT_READ, PROT_WRITE, mmap, munmap
from posix.unistd cimport close, ftruncate, getpid

from .._limits cimport SQ_SLOT_BLOCKS

import os

class RingClosed(Exception):
    """The ring was closed: the consumer has shut the workers down."""


class TooLarge(ValueError):
    """A block larger than the whole data area was asked for."""


class QueueFull(RuntimeError):
    """The completion queue is full: nothing was queued (and a commit's blocks
    are still the worker's). Wait for the consumer to pop, then try again."""


cdef object _raise(int rc, str what, bint queue=False):
    """Raise the exception for status ``rc`` of the call ``what``; ``queue``: the
    call queues an entry, and SQ_EFULL means the completion queue is full."""
    if rc == SQ_CLOSED:
        raise RingClosed(what)
    if rc == SQ_EFULL and queue:
        raise QueueFull(f"{what}: the completion queue is full")
    if rc == SQ_ESYS:
        raise OSError(errno, f"{what}: {os.strerror(errno)}")
    if rc == SQ_EINVAL:
        raise ValueError(f"{what}: invalid argument")
    if rc == SQ_ECORRUPT:
        raise RuntimeError(f"{what}: the shared ring is corrupt (a stray offset?)")
    if rc == SQ_EFULL:
        raise RuntimeError(f"{what}: internal queue full")
    raise RuntimeError(f"{what}: status {rc}")


KIND_RESULT = SQ_KIND_RESULT
KIND_ERROR = SQ_KIND_ERROR
ALIGN = SQ_ALIGN


cdef str too_many_blocks():
    """The error of a task reserving more than SQ_SLOT_BLOCKS blocks."""
    return (f"one task reserved too many shared-memory blocks (at most "
            f"SQ_SLOT_BLOCKS = {SQ_SLOT_BLOCKS}, the result's own block included): "
            "stack fewer separate batches per result, or stack them into one")


def _attach_dupfd(dupfd, map_size):
    return Ring.attach(dupfd.detach(), map_size)


cdef class Ring:
    """A mapping of the shared region; see csrc/ringbuf.h for the protocol."""

    def __cinit__(self):
        self.r = NULL
        self.base = NULL
        self.fd = -1

    def __dealloc__(self):
        if self.base != NULL:
            munmap(self.base, self.map_size)
        if self.fd >= 0:
            close(self.fd)

    cdef int _map(self, int fd, size_t map_size) except -1:
        cdef void *p = mmap(NULL, map_size, PROT_READ | PROT_WRITE,
                            MAP_SHARED | MAP_NORESERVE, fd, 0)
        if p == MAP_FAILED:
            raise OSError(errno, f"mmap of {map_size} bytes: {os.strerror(errno)}")
        self.fd = fd
        self.base = <char *>p
        self.map_size = map_size
        self.r = <sq_ring *>p
        return 0

    @staticmethod
    def create(int nworkers, int qlen, uint64_t capacity, uint64_t max_capacity):
        """Parent: a new region for `nworkers` producers.

        ``capacity`` 0 leaves the data area unsized until :meth:`set_capacity`;
        the mapping reserves address space for ``max_capacity`` bytes of data.
        """
        cdef Ring self = Ring.__new__(Ring)
        cdef size_t hdr = sq_ring_header_size(nworkers, qlen)
        cdef int fd, rc
        if nworkers <= 0 or qlen <= 0:
            raise ValueError("nworkers and qlen must be positive")
        if capacity % SQ_ALIGN or max_capacity < capacity:
            raise ValueError("bad ring capacity")
        fd = sq_anon_shm()
        if fd < 0:
            raise OSError(errno, f"cannot create shared memory: {os.strerror(errno)}")
        if ftruncate(fd, hdr) != 0:
            close(fd)
            raise OSError(errno, f"cannot size shared memory: {os.strerror(errno)}")
        self._map(fd, hdr + max_capacity)
        self.nworkers = nworkers
        rc = sq_ring_init(self.base, nworkers, qlen, 0)
        if rc != SQ_OK:
            _raise(rc, "ring init")
        if capacity:
            self.set_capacity(capacity)
        return self

    @staticmethod
    def attach(int fd, size_t map_size):
        """Worker: map the region behind `fd` (the Ring takes ownership of it)."""
        cdef Ring self = Ring.__new__(Ring)
        self._map(fd, map_size)
        if sq_ring_check(self.base) != SQ_OK:
            raise RuntimeError("the shared region is not a seqtools ring")
        self.nworkers = -1
        return self

    def __reduce__(self):
        # Only meaningful while spawning a child (spawn/forkserver): the fd is
        # duplicated into the child, which maps the same region.
        from multiprocessing.reduction import DupFd
        return _attach_dupfd, (DupFd(self.fd), self.map_size)

    cdef int _back(self, uint64_t capacity) except -1:
        """Make the region large enough for a data area of ``capacity`` bytes and
        reserve its memory now, so that a shortage shows as an error here rather
        than as SIGBUS mid-run."""
        cdef uint64_t total = sq_ring_data_offset(self.r) + capacity
        cdef int rc
        if total > self.map_size:
            raise ValueError(f"capacity {capacity} exceeds the reserved mapping")
        if ftruncate(self.fd, total) != 0:
            raise OSError(errno, f"cannot grow shared memory to {total} bytes: "
                          f"{os.strerror(errno)}")
        with nogil:
            rc = sq_fallocate(self.fd, total)
        if rc != 0:
            raise MemoryError(
                f"cannot reserve {total} bytes of shared memory "
                f"({os.strerror(rc)}); free memory or pass a smaller shm_size")
        return 0

    def set_capacity(self, uint64_t capacity):
        """Parent: give the data area its size, reserving the memory now so that a
        shortage shows here as an error rather than as SIGBUS mid-run."""
        if sq_ring_capacity(self.r) != 0:
            raise ValueError("the ring is already sized")
        if capacity == 0 or capacity % SQ_ALIGN:
            raise ValueError(f"capacity {capacity} is not a positive multiple of "
                             f"{SQ_ALIGN}")
        self._resize(capacity, True)

    def set_max_capacity(self, uint64_t max_capacity):
        """Parent: the data area may be grown up to ``max_capacity`` bytes (0:
        never); a worker's result larger than the area but within that waits
        for the parent to grow it, rather than failing with TooLarge."""
        cdef int rc = sq_ring_set_max_capacity(self.r, max_capacity)
        if rc != SQ_OK:
            _raise(rc, "set_max_capacity")

    def grow(self, uint64_t capacity):
        """Parent: enlarge the sized data area to ``capacity`` bytes, free at its
        end; the memory is reserved first, as in :meth:`set_capacity`."""
        cdef uint64_t now = sq_ring_capacity(self.r)
        if now == 0:
            raise ValueError("the ring is not sized yet")
        if capacity <= now or capacity % SQ_ALIGN:
            raise ValueError(f"capacity {capacity} is not a multiple of {SQ_ALIGN} "
                             f"larger than {now}")
        self._resize(capacity, False)

    cdef int _resize(self, uint64_t capacity, bint first) except -1:
        """Back a data area of ``capacity`` bytes, then add the new space to the
        ring: sq_ring_set_capacity if ``first``, else sq_ring_grow.

        The callers check ``capacity`` before: the region is resized (ftruncate)
        before C sees the call, and a size C would refuse could shrink the region
        under the workers (SIGBUS at their next access)."""
        cdef int rc
        self._back(capacity)
        if first:
            rc = sq_ring_set_capacity(self.r, capacity)
        else:
            rc = sq_ring_grow(self.r, capacity)
        if rc != SQ_OK:
            _raise(rc, "set_capacity" if first else "grow")
        return 0

    @property
    def capacity(self):
        return sq_ring_capacity(self.r)

    @property
    def data_offset(self):
        return sq_ring_data_offset(self.r)

    # -- producer side ----------------------------------------------------------------
    def claim(self, int worker, double timeout):
        """Next task as (index, generation), or None on timeout."""
        cdef int64_t index
        cdef uint64_t generation
        cdef int rc
        with nogil:
            rc = sq_task_claim(self.r, worker, timeout, &index, &generation)
        if rc == SQ_OK:
            return index, generation
        if rc == SQ_TIMEOUT:
            return None
        _raise(rc, "claim")

    def reserve(self, int worker, uint64_t nbytes, double timeout):
        """Payload offset of a new block, or None on timeout."""
        cdef uint64_t offset
        cdef int rc
        with nogil:
            rc = sq_ring_reserve(self.r, worker, nbytes, timeout, &offset)
        if rc == SQ_OK:
            return offset
        if rc == SQ_TIMEOUT:
            return None
        if rc == SQ_ETOOBIG:
            raise TooLarge(
                f"a result of {nbytes} bytes does not fit in the shared ring of "
                f"{sq_ring_capacity(self.r)} bytes")
        if rc == SQ_EFULL:
            raise RuntimeError(too_many_blocks())
        _raise(rc, "reserve")

    def cancel(self, int worker):
        """Give back every block `worker` reserved and will not commit."""
        cdef int rc = sq_ring_cancel(self.r, worker)
        if rc != SQ_OK:
            _raise(rc, "cancel")

    def post(self, int worker, int64_t index, uint64_t generation,
             unsigned int kind):
        """Queue an entry with no block; :class:`QueueFull` if the queue is full."""
        cdef int rc = sq_ring_post(self.r, worker, index, generation, kind)
        if rc != SQ_OK:
            _raise(rc, "post", True)

    # -- consumer side ----------------------------------------------------------------
    def pop(self, double timeout, uint64_t want=1, bint hold=False):
        """Next entry ``(offset, nbytes, index, generation, worker, kind)``; None
        on timeout; ``('unsized', nbytes)`` when a producer asks for the data area.

        With nothing queued, sleep until ``want`` entries are (coalesced
        wake-ups, see ``sq_ring_pop_n``); a queued entry is returned at once.

        With ``hold``, the entry is held until acknowledged, by :meth:`ack`
        or by leasing its block (a leased Block, as ``_transport.decode``
        makes, releases it when collected), and every pop returns it again
        until then: an exception raised between the pop and the use of its
        entry (a KeyboardInterrupt from a signal handler, which Python runs as
        the call returns) loses neither the entry nor its blocks."""
        cdef sq_entry e
        cdef uint64_t requested = 0
        cdef int rc
        if self.has_held:
            e = self.held
            return e.offset, e.nbytes, e.index, e.generation, e.worker, e.kind
        with nogil:
            rc = sq_ring_pop_n(self.r, timeout, want, &e, &requested)
        if rc == SQ_OK:
            if hold:
                self.held = e
                self.has_held = True
            return e.offset, e.nbytes, e.index, e.generation, e.worker, e.kind
        if rc == SQ_TIMEOUT:
            return None
        if rc == SQ_UNSIZED:
            return "unsized", requested
        _raise(rc, "pop")

    def ack(self):
        """The entry last popped is taken care of: the next pop pops anew."""
        if self.has_held:
            self.has_held = False
            self.acked += 1

    cdef void ack_offset(self, uint64_t offset) noexcept:
        # decoding the block of the held entry acknowledges it
        if self.has_held and self.held.offset == offset:
            self.has_held = False
            self.acked += 1

    def worker_reset(self, int worker):
        """After producer `worker` died: (task index it held or -1, deaths on it)."""
        cdef int64_t index
        cdef int deaths
        cdef int rc = sq_worker_reset(self.r, worker, &index, &deaths)
        if rc != SQ_OK:
            _raise(rc, "worker_reset")
        return index, deaths

    def worker_task(self, int worker):
        """``(index, seconds)``: the task producer ``worker`` is on (-1: none of
        the current generation) and how long since it claimed it."""
        cdef int64_t index
        cdef uint64_t running_ns
        cdef int rc = sq_worker_task(self.r, worker, &index, &running_ns)
        if rc != SQ_OK:
            _raise(rc, "worker_task")
        return index, running_ns * 1e-9

    def worker_busy(self, int worker):
        """Seconds the producers of slot ``worker`` have spent with a task in
        hand, the running one's time so far included (see ``sq_worker_busy``)."""
        cdef uint64_t busy_ns
        cdef int rc = sq_worker_busy(self.r, worker, &busy_ns)
        if rc != SQ_OK:
            _raise(rc, "worker_busy")
        return busy_ns * 1e-9

    def task_reset(self, int64_t start, int64_t end, int64_t window):
        """Start a new generation of tasks, handing out ``start`` to ``end``
        (exclusive; -1: unbounded), at most ``window`` ahead of the window base;
        returns its number. Entries carry the generation of their task, so that
        answers to tasks of an earlier generation can be told apart and dropped
        (see ``sq_task_reset``)."""
        cdef uint64_t generation = 0
        cdef int rc = sq_task_reset(self.r, start, end, window, &generation)
        if rc != SQ_OK:
            _raise(rc, "task_reset")
        return generation

    def task_drop(self, int64_t index):
        cdef int rc = sq_task_drop(self.r, index)
        if rc != SQ_OK:
            _raise(rc, "task_drop")

    def task_advance(self, int64_t base):
        cdef int rc = sq_task_advance(self.r, base)
        if rc != SQ_OK:
            _raise(rc, "task_advance")

    def task_set_window(self, int64_t window):
        """Let up to ``window`` tasks be handed out ahead of the window base from
        now on, in the same generation."""
        cdef int rc = sq_task_set_window(self.r, window)
        if rc != SQ_OK:
            _raise(rc, "task_set_window")

    def close(self):
        """Close the ring for every process, and its descriptor here: the
        mapping stays until the last block viewing it is dropped (the arrays
        handed out stay valid); nothing may grow or pickle it after."""
        cdef int rc = sq_ring_close(self.r)
        if self.fd >= 0:
            close(self.fd)
            self.fd = -1
        if rc != SQ_OK:
            _raise(rc, "close")

    def stats(self):
        """A snapshot of the ring's counters (see ``sq_stats`` in ringbuf.h).

        For telling a stalled ring from a slow one: ``sleeping_in_reserve``
        producers wait for space; ``reserved_active`` and ``kept_active`` count
        the blocks of the other producers (they can still move);
        ``space_events`` and ``ready_events`` change whenever producers waiting
        for space, or the consumer, may go on (compare two snapshots).
        """
        cdef sq_stats s
        cdef int rc = sq_ring_stats(self.r, &s)
        if rc != SQ_OK:
            _raise(rc, "stats")
        return {"capacity": s.capacity, "used": s.used, "reserved": s.reserved,
                "committed": s.committed, "popped": s.popped,
                "space_waiters": s.space_waiters, "requested": s.requested,
                "largest_free": s.largest_free, "waiting_for": s.waiting_for,
                "kept": s.kept, "reserved_active": s.reserved_active,
                "kept_active": s.kept_active,
                "sleeping_in_reserve": s.sleeping_in_reserve,
                "space_events": s.space_events, "ready_events": s.ready_events,
                "queued": s.queued}


cdef class Block:
    """Exports one payload of the ring through the buffer protocol.

    A leased block (consumer side) is released back to the ring when this object
    is garbage-collected, i.e. when the last numpy array viewing it is gone.
    """

    def __getbuffer__(self, Py_buffer *buffer, int flags):
        self.shape[0] = <Py_ssize_t>self.nbytes
        self.strides[0] = 1
        buffer.buf = self.ring.base + self.offset
        buffer.obj = self
        buffer.len = <Py_ssize_t>self.nbytes
        buffer.readonly = 0
        buffer.itemsize = 1
        buffer.format = "B"
        buffer.ndim = 1
        buffer.shape = self.shape
        buffer.strides = self.strides
        buffer.suboffsets = NULL
        buffer.internal = NULL

    def __releasebuffer__(self, Py_buffer *buffer):
        pass

    def __dealloc__(self):
        # Only in the process that leased it: a forked child dropping its copy of
        # a parent's lease must not free a block the parent still views.
        if self.leased and self.ring is not None and _pid == self.owner:
            sq_ring_release(self.ring.r, self.offset)


# This process's id, kept current across fork: getpid() is a system call, and the
# parent makes a Block for every result it receives.
cdef pid_t _pid = getpid()


def _after_fork():
    global _pid
    _pid = getpid()


os.register_at_fork(after_in_child=_after_fork)


cdef int commit_n(Ring ring, int worker, uint64_t offset, int64_t index,
                  uint64_t generation, uint32_t kind, const uint64_t *adopt,
                  int nadopt) except -1:
    """Commit the block at ``offset`` as an entry of ``kind`` (SQ_KIND_RESULT, or
    SQ_KIND_ERROR for an error report in the block), adopting ``nadopt`` kept
    blocks; :class:`QueueFull` if the completion queue is full."""
    cdef int rc = sq_ring_commit_n(ring.r, worker, offset, index, generation,
                                   kind, adopt, nadopt)
    if rc != SQ_OK:
        _raise(rc, "commit", True)
    return 0


cdef int ring_keep(Ring ring, int worker, uint64_t nbytes,
                   uint64_t *offset) except -1:
    """``sq_ring_keep`` with no limit on the ring's use: SQ_OK (a kept block at
    ``*offset``) or SQ_TIMEOUT (no room now; it never waits)."""
    cdef int rc = sq_ring_keep(ring.r, worker, nbytes, <uint64_t>-1, offset)
    if rc != SQ_OK and rc != SQ_TIMEOUT:
        _raise(rc, "keep")
    return rc


cdef int ring_unkeep(Ring ring, int worker, uint64_t offset) except -1:
    """Give back a kept block (``sq_ring_unkeep``)."""
    cdef int rc = sq_ring_unkeep(ring.r, worker, offset)
    if rc != SQ_OK:
        _raise(rc, "unkeep")
    return 0


cdef int ring_release(Ring ring, uint64_t offset) except -1:
    """Give a popped block back (``sq_ring_release``), as a Block does when
    collected."""
    cdef int rc
    ring.ack_offset(offset)
    rc = sq_ring_release(ring.r, offset)
    if rc != SQ_OK:
        _raise(rc, "release")
    return 0


cdef Block make_block(Ring ring, uint64_t offset, uint64_t nbytes, bint leased):
    cdef Block b
    if offset < sq_ring_data_offset(ring.r) or \
            offset + nbytes > sq_ring_data_offset(ring.r) + sq_ring_capacity(ring.r):
        raise ValueError(f"block [{offset}, {offset + nbytes}) outside the ring")
    b = Block.__new__(Block)
    b.ring = ring
    b.offset = offset
    b.nbytes = nbytes
    b.leased = leased
    b.owner = _pid
    if leased:  # the held entry's block, now released when this is collected
        ring.ack_offset(offset)
    return b


# -- the worker's liveness watchdog (csrc/watchdog.c) -------------------------------

#: Exit status of a worker ended by its watchdog.
WATCHDOG_EXIT = SQ_WATCHDOG_EXIT


def watchdog_start(long parent_pid, double interval=0.2):
    """Worker, once: a C thread ends this process (``os._exit(WATCHDOG_EXIT)``:
    no cleanup) once its parent changes or process ``parent_pid`` is gone,
    checking every ``interval`` seconds, whatever the Python code is doing.

    Raises ValueError for a pid or interval out of range, OSError if the thread
    cannot be started.
    """
    cdef int rc
    if parent_pid <= 0:
        raise ValueError(f"parent_pid must be positive, not {parent_pid}")
    if not 0 < interval <= 1e6:
        raise ValueError(f"interval must be in (0, 1e6] seconds, not {interval}")
    rc = sq_watchdog_start(parent_pid, interval)
    if rc != 0:
        raise OSError(-rc, f"watchdog_start: {os.strerror(-rc)}")


def set_pdeathsig(int sig, long expected_ppid):
    """Worker (Linux): have the kernel send ``sig`` to this process when the
    thread that forked it ends. Returns True if the parent is already gone
    (``os.getppid()`` is no longer ``expected_ppid``): then no signal will come.

    Raises ValueError for ``expected_ppid`` <= 0, OSError on failure (errno
    ENOSYS on systems without it, EINVAL for a bad signal number).
    """
    cdef int rc
    if expected_ppid <= 0:
        raise ValueError(f"expected_ppid must be positive, not {expected_ppid}")
    rc = sq_set_pdeathsig(sig, expected_ppid)
    if rc < 0:
        raise OSError(-rc, f"set_pdeathsig: {os.strerror(-rc)}")
    return rc == SQ_PARENT_GONE


def is_zombie(long pid):
    """True if process ``pid`` has ended but not been reaped (Linux /proc), which
    ``os.kill(pid, 0)`` does not tell; False otherwise and where it cannot tell."""
    return sq_is_zombie(pid) == 1


# -- the worker's numpy allocation hook (csrc/allochook.c) -------------------------
#
# In a worker, the large arrays the task's code allocates with numpy are built in
# ring blocks the worker keeps, and a result holding the only reference to such an
# array hands its block over uncopied (csrc/allochook.h says what is hooked).
# Here: numpy's handler (NEP 49) around the C allocator functions.

cdef extern from "numpy/ndarraytypes.h":
    ctypedef struct PyDataMemAllocator:
        void *ctx
        void *(*malloc)(void *ctx, size_t size) noexcept nogil
        void *(*calloc)(void *ctx, size_t nelem, size_t elsize) noexcept nogil
        void *(*realloc)(void *ctx, void *ptr, size_t new_size) noexcept nogil
        void (*free)(void *ctx, void *ptr, size_t size) noexcept nogil
    ctypedef struct PyDataMem_Handler:
        char name[127]
        uint8_t version
        PyDataMemAllocator allocator

cdef extern from "numpy/arrayobject.h":
    object PyDataMem_SetHandler(object handler)
    object PyDataMem_GetHandler()

cnp.import_array()

#: Spare bytes in front of a hooked array in its block, for the result's header
#: and small arrays, so that a result with one large array travels in one block.
HOOK_HEADROOM = HOOK_HEADROOM_BYTES
#: Smaller allocations stay with numpy's allocator (copying them costs less than
#: a block of their own).
HOOK_MIN = 64 * 1024

cdef object _hook_keep = None  # the Ring and capsules the hook needs, forever
cdef PyDataMem_Handler _hook_handler


def hook_install(Ring ring, int slot, uint64_t min_size=HOOK_MIN):
    """Worker, once, on its main thread: route the task code's large numpy
    allocations to kept ring blocks (enabled between ``hook_active(True)`` and
    ``hook_active(False)``)."""
    global _hook_keep
    cdef PyDataMem_Handler *dflt
    cdef sqh_allocator d
    if sqh_installed():
        raise RuntimeError("the allocation hook is already installed")
    old = PyDataMem_GetHandler()
    dflt = <PyDataMem_Handler *>PyCapsule_GetPointer(old, "mem_handler")
    d.ctx = dflt.allocator.ctx
    d.malloc = dflt.allocator.malloc
    d.calloc = dflt.allocator.calloc
    d.realloc = dflt.allocator.realloc
    d.free = dflt.allocator.free
    sqh_setup(ring.r, ring.base, ring.map_size, slot, HOOK_HEADROOM_BYTES, min_size,
              &d)
    strncpy(_hook_handler.name, b"seqtools_ring", sizeof(_hook_handler.name))
    _hook_handler.version = 1
    _hook_handler.allocator.ctx = NULL
    _hook_handler.allocator.malloc = sqh_malloc
    _hook_handler.allocator.calloc = sqh_calloc
    _hook_handler.allocator.realloc = sqh_realloc
    _hook_handler.allocator.free = sqh_free
    capsule = PyCapsule_New(&_hook_handler, "mem_handler", NULL)
    PyDataMem_SetHandler(capsule)
    # Arrays may outlive every other reference to the ring (module teardown at
    # exit): their free must still find the mapping and the old handler. One
    # reference is never given back, so the mapping stays until the process ends.
    _hook_keep = (ring, old, capsule)
    Py_INCREF(_hook_keep)


def hook_active(bint on):
    sqh_set_active(on)


def hook_disable():
    """Allocate nothing more in the ring (frees still come back to it)."""
    sqh_disable()


cdef void hook_get_stats(sqh_stats *out) noexcept:
    sqh_get_stats(out)


cdef bint hook_find(const char *ptr, size_t nbytes, uint64_t *offset,
                    uint64_t *block_bytes) noexcept:
    return sqh_find(ptr, nbytes, offset, block_bytes)


cdef void hook_adopted(uint64_t offset) noexcept:
    sqh_adopted(offset)


cdef int hook_live() noexcept:
    return sqh_count(SQH_LIVE)


def hook_adopted_alive():
    """Arrays whose blocks went to the parent and that are still alive here."""
    return sqh_count(SQH_ADOPTED)
