# Index-map kernels behind the shape and combine views (seqtools/batching/shape.py
# and seqtools/views/combine.py own this module; the public API and docs live
# there).
#
# Each map is a single-index kernel, behind a `def` wrapper for item access; a map
# that views gather through (cycle) also has a whole-array form over int64 indices.
# The `def` wrappers check every argument with the GIL held; the loops run in
# `cdef ... noexcept nogil` kernels that return a status code (single index) or the
# position of the first bad index (arrays, -1 when all are good), and the wrappers
# raise once the GIL is back. _indexmaps.pxd declares the kernels and checks for
# seqtools/_testing.pyx, which runs every map over arrays for the tests.
#
# Conventions shared by every map: sizes are non-negative integers that fit in int64;
# indices follow list semantics (negative values count from the end of a finite view;
# an infinite view, size None, accepts only non-negative indices).

from cpython.number cimport PyNumber_Index
from libc.stdint cimport int64_t

import numpy as np

# Largest size or index the maps accept (int64 max); also "no limit" internally.
cdef int64_t SQ_INF = 0x7FFFFFFFFFFFFFFF


# -- argument checks (GIL held) ------------------------------------------------------

cdef int64_t as_size(object value, str name) except? -2:
    """``value`` as a non-negative int64, or TypeError / ValueError naming it."""
    if isinstance(value, float) or not hasattr(value, "__index__"):
        raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
    v = PyNumber_Index(value)
    if v < 0:
        raise ValueError(f"{name} must be >= 0, got {v}")
    if v > SQ_INF:
        raise ValueError(f"{name}={v} is too large (the limit is 2**63 - 1)")
    return v


cdef int64_t as_index(object key) except? -2:
    """``key`` as an int64 index (any sign), or TypeError / IndexError."""
    if isinstance(key, float) or not hasattr(key, "__index__"):
        raise TypeError(
            f"sequence indices must be integers or slices, not {type(key).__name__}"
        )
    k = PyNumber_Index(key)
    if k > SQ_INF or k < -SQ_INF:
        raise IndexError(f"index {k} out of range: it does not fit in 64 bits")
    return k


cdef object as_index_array(object idx):
    """``idx`` as a 1-D int64 array (a copy only when the dtype differs)."""
    arr = np.asarray(idx)
    if arr.ndim != 1:
        raise ValueError(f"indices must be a 1-D array, got {arr.ndim} dimensions")
    if arr.size and arr.dtype.kind not in "iu":
        raise TypeError(f"indices must be integers, got an array of {arr.dtype}")
    if arr.dtype.kind == "u" and arr.size and arr.max() > SQ_INF:
        raise IndexError(f"index {arr.max()} out of range: it does not fit in 64 bits")
    return np.ascontiguousarray(arr, dtype=np.int64)


cdef inline int _normalize(int64_t* i, int64_t n) noexcept nogil:
    """Turn ``*i`` into a list-style index in ``[0, n)``; ``n == SQ_INF``: infinite."""
    if n == SQ_INF:
        return SQ_OK if i[0] >= 0 else SQ_OUT_OF_RANGE
    if i[0] < 0:
        i[0] += n
    if i[0] < 0 or i[0] >= n:
        return SQ_OUT_OF_RANGE
    return SQ_OK


cdef raise_index_error(object key, int64_t n):
    if n == SQ_INF:
        raise IndexError(f"index {key} out of range: infinite views accept only "
                         "indices >= 0")
    raise IndexError(f"index {key} out of range for a sequence of {n} items")


# -- batch / unbatch: item i <-> (batch i // k, offset i % k) ------------------------

def batch_count(n, k, drop_last):
    """Number of batches of ``k`` items over ``n`` items."""
    cdef int64_t n_ = as_size(n, "the sequence length")
    cdef int64_t k_ = as_size(k, "the batch size")
    if k_ == 0:
        raise ValueError("the batch size must be >= 1, got 0")
    if drop_last:
        return n_ // k_
    return n_ // k_ + (1 if n_ % k_ else 0)


cdef int unbatch_one(int64_t* i, int64_t n, int64_t k,
                     int64_t* batch, int64_t* offset) noexcept nogil:
    if _normalize(i, n) != SQ_OK:
        return SQ_OUT_OF_RANGE
    batch[0] = i[0] // k
    offset[0] = i[0] % k
    return SQ_OK


def unbatch_locate(i, n, k):
    """``(batch, offset)`` of item ``i`` of ``n`` items cut in batches of ``k``."""
    cdef int64_t i_ = as_index(i)
    cdef int64_t n_ = as_size(n, "the number of items")
    cdef int64_t k_ = as_size(k, "the batch size")
    cdef int64_t batch = 0, offset = 0
    cdef int status
    if k_ == 0:
        raise ValueError("the batch size must be >= 1, got 0")
    with nogil:
        status = unbatch_one(&i_, n_, k_, &batch, &offset)
    if status != SQ_OK:
        raise_index_error(i, n_)
    return batch, offset


# -- split: cut points or (start, stop) pairs -> parts ------------------------------

cdef Py_ssize_t _cuts_to_bounds(const int64_t* cuts, Py_ssize_t m, int64_t n,
                                int64_t* starts, int64_t* stops) noexcept nogil:
    # Returns -1, or the position of the first cut out of [0, n] or below the
    # previous one.
    cdef Py_ssize_t j
    cdef int64_t prev = 0
    for j in range(m):
        if cuts[j] < prev or cuts[j] > n:
            return j
        starts[j] = prev
        stops[j] = cuts[j]
        prev = cuts[j]
    starts[m] = prev
    stops[m] = n
    return -1


cdef Py_ssize_t _check_pairs(const int64_t* starts, const int64_t* stops,
                             Py_ssize_t m, int64_t n) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(m):
        if starts[j] < 0 or starts[j] > stops[j] or stops[j] > n:
            return j
    return -1


def split_bounds_from_cuts(cuts, n):
    """``(starts, stops)`` of the ``len(cuts) + 1`` parts cut at ``cuts``.

    Cut points must be non-decreasing and within ``[0, n]`` (equal cuts make empty
    parts, as numpy.split does).
    """
    cdef int64_t n_ = as_size(n, "the sequence length")
    arr = np.asarray(cuts)
    if arr.ndim != 1:
        raise ValueError(f"cut points must be a 1-D sequence, got {arr.ndim} dims")
    if arr.size and (arr.dtype.kind not in "iu"):
        raise TypeError(f"cut points must be integers, got {arr.dtype} values")
    if arr.dtype.kind == "u" and arr.size and arr.max() > SQ_INF:
        raise ValueError(f"cut point {arr.max()} is out of range [0, {n_}]")
    arr = np.ascontiguousarray(arr, dtype=np.int64)
    cdef const int64_t[::1] c = arr
    cdef Py_ssize_t m = c.shape[0]
    starts = np.empty(m + 1, dtype=np.int64)
    stops = np.empty(m + 1, dtype=np.int64)
    cdef int64_t[::1] s = starts
    cdef int64_t[::1] e = stops
    cdef Py_ssize_t bad
    with nogil:
        bad = _cuts_to_bounds(&c[0] if m else NULL, m, n_, &s[0], &e[0])
    if bad >= 0:
        if c[bad] < 0 or c[bad] > n_:
            raise ValueError(
                f"cut point {c[bad]} (position {bad}) is out of range [0, {n_}] "
                f"for a sequence of {n_} items"
            )
        raise ValueError(
            f"cut points must be non-decreasing: cut {c[bad]} (position {bad}) comes "
            f"after {c[bad - 1]}; sort them, or pass (start, stop) pairs for parts in "
            "any order"
        )
    return starts, stops


def split_check_pairs(starts, stops, n):
    """Check ``0 <= starts[j] <= stops[j] <= n``; return both as int64 arrays."""
    cdef int64_t n_ = as_size(n, "the sequence length")
    a = np.asarray(starts)
    b = np.asarray(stops)
    if a.ndim != 1 or b.ndim != 1 or a.shape[0] != b.shape[0]:
        raise ValueError("starts and stops must be 1-D sequences of the same length")
    for v in (a, b):
        if v.size and v.dtype.kind not in "iu":
            raise TypeError(f"part bounds must be integers, got {v.dtype} values")
        if v.dtype.kind == "u" and v.size and v.max() > SQ_INF:
            raise ValueError(f"part bound {v.max()} is out of range [0, {n_}]")
    a = np.ascontiguousarray(a, dtype=np.int64)
    b = np.ascontiguousarray(b, dtype=np.int64)
    cdef const int64_t[::1] s = a
    cdef const int64_t[::1] e = b
    cdef Py_ssize_t m = s.shape[0]
    cdef Py_ssize_t bad
    with nogil:
        bad = _check_pairs(&s[0] if m else NULL, &e[0] if m else NULL, m, n_)
    if bad >= 0:
        raise ValueError(
            f"part {bad} = ({s[bad]}, {e[bad]}) is not a valid (start, stop) pair for "
            f"a sequence of {n_} items: expected 0 <= start <= stop <= {n_}"
        )
    return a, b


cdef inline Py_ssize_t _bisect_right(const int64_t* a, Py_ssize_t m,
                                     int64_t x) noexcept nogil:
    # First position j with a[j] > x (m when none).
    cdef Py_ssize_t lo = 0, hi = m, mid
    while lo < hi:
        mid = lo + (hi - lo) // 2
        if a[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


cdef int split_one(int64_t* i, const int64_t* stops, Py_ssize_t m,
                   int64_t* part, int64_t* local) noexcept nogil:
    # Contiguous parts: part j covers [stops[j-1], stops[j]) (stops[-1] = 0).
    # Empty parts are skipped. The split views locate items by their own bounds;
    # seqtools._testing.split_locate runs this for tests/batching/test_shape.py.
    cdef int64_t n = stops[m - 1] if m else 0
    cdef Py_ssize_t j
    if _normalize(i, n) != SQ_OK:
        return SQ_OUT_OF_RANGE
    j = _bisect_right(stops, m, i[0])  # skips empty parts
    part[0] = j
    local[0] = i[0] - (stops[j - 1] if j else 0)
    return SQ_OK


# -- interleave: item i -> (sequence, local) for sequences of unequal lengths --------
#
# Sorting the distinct lengths t_1 < ... < t_P cuts the output into phases: during
# phase p the sequences longer than t_{p-1} take turns for local positions
# t_{p-1} .. t_p - 1. A lookup is a binary search over the phase offsets, then a scan
# for the q-th sequence still active: O(log P + number of sequences), independent of i.

cdef int interleave_one(const IlvPlan* plan, int64_t* i,
                        int64_t* seq, int64_t* local) noexcept nogil:
    cdef Py_ssize_t p, j
    cdef int64_t r, q, lo
    cdef int64_t total = plan.offsets[plan.nphase]
    if _normalize(i, total) != SQ_OK:
        return SQ_OUT_OF_RANGE
    # Phase p (1-based) holds offsets[p-1] <= i < offsets[p].
    p = _bisect_right(plan.offsets, plan.nphase + 1, i[0])
    r = i[0] - plan.offsets[p - 1]
    lo = plan.thresh[p - 1]
    local[0] = lo + r // plan.active[p - 1]
    q = r % plan.active[p - 1]
    for j in range(plan.nseq):
        if plan.lengths[j] > lo:
            if q == 0:
                seq[0] = j
                return SQ_OK
            q -= 1
    return SQ_OUT_OF_RANGE  # unreachable with a consistent plan


cdef class InterleaveMap:
    """Index map of the interleaving of sequences of the given lengths.

    ``locate(i)`` returns ``(sequence, local)``; ``size`` is the total number of
    items.
    """

    def __cinit__(self, lengths):
        arr = np.asarray(lengths)
        if arr.ndim != 1:
            raise ValueError("lengths must be a 1-D sequence of integers")
        if arr.size and arr.dtype.kind not in "iu":
            raise TypeError(f"lengths must be integers, got {arr.dtype} values")
        if arr.size and (arr.min() < 0 or arr.max() > SQ_INF):
            raise ValueError("lengths must be in [0, 2**63 - 1]")
        arr = np.ascontiguousarray(arr, dtype=np.int64)
        # Phase table, computed with Python ints so that an overflowing total is
        # caught rather than wrapped.
        thresh = [0] + sorted({int(x) for x in arr if x > 0})
        # (No negative indexing here: wraparound is off in this module.)
        offsets = [0]
        active = []
        total = 0
        for p in range(1, len(thresh)):
            count = int(np.count_nonzero(arr > thresh[p - 1]))
            active.append(count)
            total += count * (thresh[p] - thresh[p - 1])
            offsets.append(total)
        if total > SQ_INF:
            raise ValueError("the interleaved sequences hold more than 2**63 - 1 items")
        self.lengths = arr
        self._thresh = np.asarray(thresh, dtype=np.int64)
        self._offsets = np.asarray(offsets, dtype=np.int64)
        self._active = np.asarray(active + [1], dtype=np.int64)  # never empty
        cdef const int64_t[::1] ln = self.lengths
        cdef const int64_t[::1] th = self._thresh
        cdef const int64_t[::1] of = self._offsets
        cdef const int64_t[::1] ac = self._active
        self.plan.lengths = &ln[0] if ln.shape[0] else NULL
        self.plan.nseq = ln.shape[0]
        self.plan.thresh = &th[0]
        self.plan.offsets = &of[0]
        self.plan.active = &ac[0]
        self.plan.nphase = th.shape[0] - 1

    @property
    def size(self):
        return int(self.plan.offsets[self.plan.nphase])

    def locate(self, i):
        """``(sequence, local)`` of item ``i`` (list-style negative indices)."""
        cdef int64_t i_ = as_index(i)
        cdef int64_t seq = 0, local = 0
        cdef int status
        with nogil:
            status = interleave_one(&self.plan, &i_, &seq, &local)
        if status != SQ_OK:
            raise_index_error(i, self.plan.offsets[self.plan.nphase])
        return seq, local


# -- cycle: item i -> source item i % n ---------------------------------------------

cdef int cycle_one(int64_t* i, int64_t n, int64_t limit) noexcept nogil:
    if _normalize(i, limit) != SQ_OK:
        return SQ_OUT_OF_RANGE
    i[0] = i[0] % n
    return SQ_OK


cdef Py_ssize_t _cycle_many(const int64_t* idx, Py_ssize_t k, int64_t n, int64_t limit,
                            int64_t* out) noexcept nogil:
    cdef Py_ssize_t j
    for j in range(k):
        out[j] = idx[j]
        if cycle_one(&out[j], n, limit) != SQ_OK:
            return j
    return -1


cdef int64_t cycle_args(object n, object limit) except? -2:
    cdef int64_t n_ = as_size(n, "the sequence length")
    if n_ == 0:
        raise ValueError("cannot cycle over an empty sequence")
    return SQ_INF if limit is None else as_size(limit, "limit")


def cycle_locate_array(idx, n, limit=None):
    """Source indices (an int64 array) of items ``idx`` of a sequence of ``n`` items
    repeated up to ``limit`` items (``None``: forever)."""
    cdef int64_t lim = cycle_args(n, limit)
    cdef int64_t n_ = n
    iarr = as_index_array(idx)
    cdef const int64_t[::1] a = iarr
    cdef Py_ssize_t k = a.shape[0]
    out = np.empty(k, dtype=np.int64)
    cdef int64_t[::1] o = out
    cdef Py_ssize_t bad
    with nogil:
        bad = _cycle_many(&a[0] if k else NULL, k, n_, lim, &o[0] if k else NULL)
    if bad >= 0:
        raise_index_error(int(iarr[bad]), lim)
    return out
