# Test-only entry points into the compiled modules, for tests/ alone: no module
# of the package imports this one. Each is a call the package makes only from C
# (or inside a kernel), exposed here so that the tests can check it against a
# reference: the ring calls that workers make through their allocation hook and
# _transport, and that the parent makes through Block; the index maps over whole
# arrays (views locate one index at a time) and the split map; a one-shot
# RowGather. They reach the modules through their .pxd declarations
# (seqtools/loaders/_ring.pxd, seqtools/views/_indexmaps.pxd); the C ring stays
# linked into _ring alone.

from libc.stdint cimport int64_t, uint32_t, uint64_t

from ._limits cimport SQ_SLOT_BLOCKS
from .loaders._ring cimport (
    SQ_KIND_RESULT,
    SQ_OK,
    Ring,
    commit_n,
    hook_get_stats,
    make_block,
    ring_keep as keep_block,
    ring_release as release_block,
    ring_unkeep as unkeep_block,
    sqh_stats,
)
from .views._indexmaps cimport (
    IlvPlan,
    InterleaveMap,
    as_index,
    as_index_array,
    as_size,
    cycle_args,
    cycle_one,
    interleave_one,
    raise_index_error,
    split_one,
    unbatch_one,
)
from .views._indexmaps cimport SQ_OK as MAP_OK

import numpy as np

from .batching import _stack


# -- the shared-memory ring (seqtools.loaders._ring) ----------------------------------

def ring_block(Ring ring, uint64_t offset, uint64_t nbytes):
    """A writable buffer over a reserved payload, not released when dropped
    (workers write through _transport)."""
    return make_block(ring, offset, nbytes, False)


def ring_lease(Ring ring, uint64_t offset, uint64_t nbytes):
    """A writable buffer over a popped payload, released when garbage-collected
    (the parent decodes through _transport)."""
    return make_block(ring, offset, nbytes, True)


def ring_release(Ring ring, uint64_t offset):
    """Give a popped block back (a Block does, when collected)."""
    release_block(ring, offset)


def ring_commit(Ring ring, int worker, uint64_t offset, int64_t index,
                uint64_t generation, unsigned int kind=SQ_KIND_RESULT):
    """Queue the block at ``offset`` (and the worker's other reserved blocks) as
    the answer to task ``index`` of ``generation``; QueueFull if the completion
    queue is full (workers commit through _transport.send)."""
    commit_n(ring, worker, offset, index, generation, kind, NULL, 0)


def ring_commit_adopt(Ring ring, int worker, uint64_t offset, int64_t index,
                      uint64_t generation, adopt, unsigned int kind=SQ_KIND_RESULT):
    """:func:`ring_commit`, also handing over the kept blocks at offsets
    ``adopt`` (workers adopt the blocks of their allocation hook)."""
    cdef uint64_t offs[SQ_SLOT_BLOCKS]
    if len(adopt) > SQ_SLOT_BLOCKS:
        raise ValueError("commit_adopt: too many blocks")
    for k, o in enumerate(adopt):
        offs[k] = o
    commit_n(ring, worker, offset, index, generation, kind, offs, len(adopt))


def ring_keep(Ring ring, int worker, uint64_t nbytes):
    """Producer: a kept block of ``nbytes`` (payload offset), or None if there is
    no room now (never waits); see ``sq_ring_keep``."""
    cdef uint64_t offset
    if keep_block(ring, worker, nbytes, &offset) == SQ_OK:
        return offset
    return None


def ring_unkeep(Ring ring, int worker, uint64_t offset):
    """Give back a kept block (``sq_ring_unkeep``)."""
    unkeep_block(ring, worker, offset)


def hook_stats():
    """What the worker's allocation hook did in this process: a dict of counts."""
    cdef sqh_stats s
    hook_get_stats(&s)
    return {"installed": bool(s.installed), "enabled": bool(s.enabled),
            "hooked": s.hooked, "adopted": s.adopted,
            "live": s.live, "live_bytes": s.live_bytes,
            "adopted_alive": s.adopted_alive}


# -- the index maps (seqtools.views._indexmaps), over whole arrays --------------------

# One map of an index to a pair (batch, offset), (part, local) or (sequence,
# local), with its parameters in `args`: a kernel of _indexmaps.
ctypedef int (*pair_map)(const void* args, int64_t* i, int64_t* a,
                         int64_t* b) noexcept nogil


cdef struct Unbatch:
    int64_t n, k


cdef struct Split:
    const int64_t* stops
    Py_ssize_t m


cdef int _unbatch(const void* args, int64_t* i, int64_t* a,
                  int64_t* b) noexcept nogil:
    cdef const Unbatch* u = <const Unbatch*>args
    return unbatch_one(i, u.n, u.k, a, b)


cdef int _split(const void* args, int64_t* i, int64_t* a, int64_t* b) noexcept nogil:
    cdef const Split* s = <const Split*>args
    return split_one(i, s.stops, s.m, a, b)


cdef int _interleave(const void* args, int64_t* i, int64_t* a,
                     int64_t* b) noexcept nogil:
    return interleave_one(<const IlvPlan*>args, i, a, b)


cdef Py_ssize_t _map_pairs(pair_map f, const void* args, const int64_t* idx,
                           Py_ssize_t k, int64_t* a, int64_t* b) noexcept nogil:
    cdef Py_ssize_t j
    cdef int64_t i
    for j in range(k):
        i = idx[j]
        if f(args, &i, &a[j], &b[j]) != MAP_OK:
            return j
    return -1


cdef tuple _locate_pairs(pair_map f, const void* args, idx, int64_t size):
    """``f`` over the indices ``idx``: two int64 arrays; IndexError naming the
    first index out of range for ``size`` items."""
    iarr = as_index_array(idx)
    cdef const int64_t[::1] ia = iarr
    cdef Py_ssize_t k = ia.shape[0]
    first = np.empty(k, dtype=np.int64)
    second = np.empty(k, dtype=np.int64)
    cdef int64_t[::1] fa = first
    cdef int64_t[::1] sa = second
    cdef Py_ssize_t bad
    with nogil:
        bad = _map_pairs(f, args, &ia[0] if k else NULL, k, &fa[0] if k else NULL,
                         &sa[0] if k else NULL)
    if bad >= 0:
        raise_index_error(int(iarr[bad]), size)
    return first, second


cdef Unbatch _unbatch_args(n, k) except *:
    cdef Unbatch u
    u.n = as_size(n, "the number of items")
    u.k = as_size(k, "the batch size")
    if u.k == 0:
        raise ValueError("the batch size must be >= 1, got 0")
    return u


def unbatch_locate_array(idx, n, k):
    """``_indexmaps.unbatch_locate`` over an array: ``(batch, offset)`` arrays."""
    cdef Unbatch u = _unbatch_args(n, k)
    return _locate_pairs(_unbatch, &u, idx, u.n)


cdef object _check_stops(object stops):
    arr = np.ascontiguousarray(stops, dtype=np.int64)
    if arr.ndim != 1:
        raise ValueError("stops must be a 1-D array")
    if arr.size and (arr[0] < 0 or np.any(np.diff(arr) < 0)):
        raise ValueError("stops must be non-negative and non-decreasing "
                         "(as returned by split_bounds_from_cuts)")
    return arr


def split_locate(i, stops):
    """``(part, local)`` of source item ``i`` for contiguous parts ending at
    ``stops`` (empty parts are skipped). O(log parts)."""
    arr = _check_stops(stops)
    cdef const int64_t[::1] e = arr
    cdef Split s
    cdef int64_t i_ = as_index(i)
    cdef int64_t part = 0, local = 0
    s.m = e.shape[0]
    s.stops = &e[0] if s.m else NULL
    if _split(&s, &i_, &part, &local) != MAP_OK:
        raise_index_error(i, e[s.m - 1] if s.m else 0)
    return part, local


def split_locate_array(idx, stops):
    """:func:`split_locate` over an array: ``(part, local)`` arrays."""
    arr = _check_stops(stops)
    cdef const int64_t[::1] e = arr
    cdef Split s
    s.m = e.shape[0]
    s.stops = &e[0] if s.m else NULL
    return _locate_pairs(_split, &s, idx, e[s.m - 1] if s.m else 0)


def interleave_locate_array(InterleaveMap imap not None, idx):
    """``imap.locate`` over an array: ``(sequence, local)`` arrays."""
    return _locate_pairs(_interleave, &imap.plan, idx,
                         imap.plan.offsets[imap.plan.nphase])


def cycle_locate(i, n, limit=None):
    """Source index of item ``i`` of a sequence of ``n`` items repeated up to
    ``limit`` items (``None``: forever): the reference of
    ``_indexmaps.cycle_locate_array``, which views use."""
    cdef int64_t lim = cycle_args(n, limit)
    cdef int64_t n_ = n
    cdef int64_t i_ = as_index(i)
    if cycle_one(&i_, n_, lim) != MAP_OK:
        raise_index_error(i, lim)
    return i_


# -- the stacking kernels (seqtools.batching._stack) ----------------------------------

def gather_rows(list fields):
    """Check and copy ``fields`` at once (see ``_stack.RowGather``)."""
    _stack.RowGather(fields).run()
