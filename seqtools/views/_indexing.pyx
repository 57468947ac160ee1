"""Index arithmetic kernels behind the views of seqtools/views (core.py, access.py,
indexing.py, fusion.py) and the epoch orders of seqtools/loaders/epochs.py.

Each kernel is a ``cdef ... noexcept nogil`` function over pointers/memoryviews and
lengths that returns a status code and never touches Python objects. The ``def``
wrappers check every argument, run the kernel (inside ``with nogil:`` when it loops
over an array) and turn the status into an exception once the GIL is back.

Conventions: a length ``n < 0`` in a kernel means "infinite" (``None`` in Python);
array kernels return ``-1`` on success, else the position of the offending element.

The item readers at the end compile a graph of index-only views into a tree of C
calls, one per view, ending in the sources' own ``sq_item`` (see :class:`Reader`).
They build Python objects, so they hold the GIL and raise like Python code; the
index arithmetic they run is the kernels'.
"""

from .._buffers cimport release_buffers
from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS,
    PyBUF_WRITABLE,
    PyBuffer_Release,
    PyObject_GetBuffer,
)
from cpython.number cimport PyIndex_Check, PyNumber_AsSsize_t
from cpython.pycapsule cimport PyCapsule_GetPointer
from cpython.ref cimport Py_INCREF
from cpython.sequence cimport PySequence_Check, PySequence_GetItem
from cpython.slice cimport PySlice_Unpack
from cpython.tuple cimport PyTuple_New, PyTuple_SET_ITEM
from libc.stdlib cimport calloc, free
from libc.stdint cimport (
    INT64_MAX,
    int8_t,
    int16_t,
    int32_t,
    int64_t,
    uint8_t,
    uint16_t,
    uint32_t,
    uint64_t,
)

cimport cython
cimport numpy as cnp
from numpy.random cimport bitgen_t

import numpy as np
import sys

_MAXSIZE = sys.maxsize  # PY_SSIZE_T_MAX

cnp.import_array()

cdef extern from *:
    # gcc and clang builtins (the supported platforms are Linux and macOS).
    bint __builtin_mul_overflow(Py_ssize_t a, Py_ssize_t b, Py_ssize_t *res) nogil
    bint __builtin_add_overflow(Py_ssize_t a, Py_ssize_t b, Py_ssize_t *res) nogil

ctypedef fused index_t:
    int8_t
    int16_t
    int32_t
    int64_t
    uint8_t
    uint16_t
    uint32_t
    uint64_t

cdef enum:
    OK = 0
    ERR_RANGE = 1          # index out of range
    ERR_NEG_INFINITE = 2   # negative index on an infinite sequence
    ERR_OVERFLOW = 3       # arithmetic overflow

cdef object _INT64 = np.dtype(np.int64)
cdef object _ndarray = np.ndarray
cdef object _empty = np.empty

cdef enum:
    # Above this many elements, array kernels release the GIL; below it the
    # release/reacquire round trip costs more than the loop.
    NOGIL_THRESHOLD = 4096


# -- kernels -------------------------------------------------------------------------

cdef inline int _normalize(Py_ssize_t *i, Py_ssize_t n) noexcept nogil:
    """Wrap a negative ``i[0]`` and check ``0 <= i[0] < n`` (``n < 0``: infinite)."""
    if i[0] < 0:
        if n < 0:
            return ERR_NEG_INFINITE
        i[0] += n
        if i[0] < 0:
            return ERR_RANGE
    elif n >= 0 and i[0] >= n:
        return ERR_RANGE
    return OK


cdef Py_ssize_t _slice_adjust(Py_ssize_t n, Py_ssize_t *start, Py_ssize_t *stop,
                              Py_ssize_t step) noexcept nogil:
    """Clip unpacked slice bounds to ``n`` items, return the slice length.

    Same result as CPython's ``PySlice_AdjustIndices``; ``step != 0``.
    """
    if start[0] < 0:
        start[0] += n
        if start[0] < 0:
            start[0] = -1 if step < 0 else 0
    elif start[0] >= n:
        start[0] = n - 1 if step < 0 else n
    if stop[0] < 0:
        stop[0] += n
        if stop[0] < 0:
            stop[0] = -1 if step < 0 else 0
    elif stop[0] >= n:
        stop[0] = n - 1 if step < 0 else n
    if step < 0:
        if stop[0] < start[0]:
            return (start[0] - stop[0] - 1) // (-step) + 1
    elif start[0] < stop[0]:
        return (stop[0] - start[0] - 1) // step + 1
    return 0


cdef int _compose_slice(Py_ssize_t start1, Py_ssize_t step1,
                        Py_ssize_t start2, Py_ssize_t step2,
                        Py_ssize_t *start, Py_ssize_t *step) noexcept nogil:
    cdef Py_ssize_t offset
    if __builtin_mul_overflow(start2, step1, &offset):
        return ERR_OVERFLOW
    if __builtin_add_overflow(start1, offset, start):
        return ERR_OVERFLOW
    if __builtin_mul_overflow(step1, step2, step):
        return ERR_OVERFLOW
    return OK


cdef Py_ssize_t _wrap_indices(const char *src, Py_ssize_t stride, Py_ssize_t count,
                              int64_t *out, Py_ssize_t n,
                              index_t dtype_tag) noexcept nogil:
    """``out[k] = src[k]`` wrapped into ``[0, n)``; -1, or the first bad position.

    ``src`` holds ``count`` aligned items of type ``index_t`` every ``stride`` bytes;
    ``dtype_tag`` only picks the specialisation.
    """
    cdef Py_ssize_t k, i
    cdef index_t v
    for k in range(count):
        v = (<const index_t *>(src + k * stride))[0]
        if index_t is uint64_t:
            if v > <uint64_t>INT64_MAX:
                return k
        i = <Py_ssize_t>v
        if _normalize(&i, n) != OK:
            return k
        out[k] = i
    return -1


cdef Py_ssize_t _affine_indices(const int64_t *idx, Py_ssize_t m, int64_t *out,
                                Py_ssize_t start, Py_ssize_t step) noexcept nogil:
    """``out[k] = start + idx[k] * step``; -1, or the first position that overflows."""
    cdef Py_ssize_t k, v
    for k in range(m):
        if __builtin_mul_overflow(<Py_ssize_t>idx[k], step, &v):
            return k
        if __builtin_add_overflow(start, v, &v):
            return k
        out[k] = v
    return -1


cdef Py_ssize_t _compose_indices(const int64_t *inner, Py_ssize_t n,
                                 const int64_t *outer, Py_ssize_t m,
                                 int64_t *out) noexcept nogil:
    """``out[k] = inner[outer[k]]``; -1, or the first position out of ``inner``."""
    cdef Py_ssize_t k
    cdef int64_t j
    for k in range(m):
        j = outer[k]
        if j < 0 or j >= n:
            return k
        out[k] = inner[j]
    return -1


cdef int _cumsum_lengths(const int64_t[:] lengths, int64_t[::1] offsets) noexcept nogil:
    """``offsets = [0, l0, l0 + l1, ...]``; -1, or the first bad (negative or
    overflowing) part."""
    cdef Py_ssize_t k, total = 0
    offsets[0] = 0
    for k in range(lengths.shape[0]):
        if lengths[k] < 0:
            return k
        if __builtin_add_overflow(total, <Py_ssize_t>lengths[k], &total):
            return k
        offsets[k + 1] = total
    return -1


cdef inline Py_ssize_t _upper_part(const int64_t *offsets, Py_ssize_t nparts,
                                   int64_t i) noexcept nogil:
    """The last part ``p`` with ``offsets[p] <= i``: a binary search that skips
    empty parts."""
    cdef Py_ssize_t lo = 0, hi = nparts, mid
    # invariant: offsets[lo] <= i < offsets[hi]
    while hi - lo > 1:
        mid = (lo + hi) >> 1
        if offsets[mid] <= i:
            lo = mid
        else:
            hi = mid
    return lo


cdef Py_ssize_t _locate_many(const int64_t *offsets, Py_ssize_t nparts,
                             const int64_t[:] idx, int64_t[::1] parts,
                             int64_t[::1] local) noexcept nogil:
    cdef Py_ssize_t k, p
    cdef int64_t i, total = offsets[nparts]
    for k in range(idx.shape[0]):
        i = idx[k]
        if i < 0 or i >= total:
            return k
        p = _upper_part(offsets, nparts, i)
        parts[k] = p
        local[k] = i - offsets[p]
    return -1


# -- Python wrappers -----------------------------------------------------------------

cdef inline Py_ssize_t _length_arg(n) except -2:
    """``None`` -> -1 (infinite), else a non-negative length."""
    cdef Py_ssize_t length
    if n is None:
        return -1
    length = n
    if length < 0:
        raise ValueError(f"sequence length must be >= 0 or None, got {n}")
    return length


cdef inline Py_ssize_t _index_arg(key) except? -1:
    if not PyIndex_Check(key):
        raise TypeError(
            f"sequence indices must be integers or slices, not {type(key).__name__}"
        )
    return PyNumber_AsSsize_t(key, IndexError)


cdef inline _range_error(key, Py_ssize_t n, int status):
    if status == ERR_NEG_INFINITE:
        return IndexError(
            f"index {key} out of range: negative indices are not supported on "
            "infinite views"
        )
    return IndexError(f"index {key} out of range for a sequence of {n} items")


def normalize_index(key, n):
    """Return ``key`` as an int in ``[0, n)`` (``n`` None: infinite, ``key >= 0``).

    Raises TypeError for non-integers and IndexError when out of range, as lists do.
    """
    cdef Py_ssize_t length = _length_arg(n)
    cdef Py_ssize_t i = _index_arg(key)
    cdef int status = _normalize(&i, length)
    if status != OK:
        raise _range_error(key, length, status)
    return i


def slice_range(s, n):
    """Return ``(start, step, length)`` of slice ``s`` over ``n`` items.

    ``n`` None means an infinite sequence: then the step must be positive, the
    bounds non-negative, and ``length`` is None when the slice has no stop. When
    ``length <= 1`` the step is reported as 1, which keeps composed steps small.
    """
    cdef Py_ssize_t start, stop, step, length
    cdef Py_ssize_t total = _length_arg(n)
    if not isinstance(s, slice):
        raise TypeError(f"expected a slice, not {type(s).__name__}")
    PySlice_Unpack(s, &start, &stop, &step)  # raises on step == 0 and bad types
    if total >= 0:
        length = _slice_adjust(total, &start, &stop, step)
    else:
        # PySlice_Unpack clamps bounds to PY_SSIZE_T_MAX: past it, the slice would
        # silently be another one.
        for bound in (s.start, s.stop):
            if bound is not None and bound > _MAXSIZE:
                raise OverflowError(
                    f"slice bound {bound} is past 2**63 - 1, the largest slice bound "
                    "of an infinite view; index such items one by one (view[i] "
                    "takes any integer)"
                )
        if step <= 0:
            raise ValueError(
                "only positive slice steps are supported on infinite views"
            )
        if start < 0 or (s.stop is not None and stop < 0):
            raise IndexError(
                "negative slice bounds are not supported on infinite views"
            )
        if s.stop is None:
            return start, step, None
        length = (stop - start - 1) // step + 1 if stop > start else 0
    if length <= 1:
        step = 1
    return start, step, length


def compose_slice(Py_ssize_t start1, Py_ssize_t step1,
                  Py_ssize_t start2, Py_ssize_t step2):
    """Compose slice ``(start2, step2)`` taken of slice ``(start1, step1)``.

    Returns ``(start, step)`` such that item ``k`` of the composition is item
    ``start + k * step`` of the source. Raises OverflowError if it does not fit.
    """
    cdef Py_ssize_t start, step
    if step1 == 0 or step2 == 0:
        raise ValueError("slice step cannot be zero")
    if _compose_slice(start1, step1, start2, step2, &start, &step) != OK:
        raise OverflowError("composed slice does not fit into an index-sized integer")
    return start, step


def as_indices(indices, n):
    """Check gather indices against a length ``n``; return them as an int64 array.

    Parameters
    ----------
    indices : array_like of int
        A 1-D numpy integer array (any integer dtype, read without per-element
        conversion), a ``range``, or a sequence of integers.
    n : int or None
        Length of the indexed sequence, None if infinite.

    Returns
    -------
    ndarray
        A new, read-only, contiguous int64 array with negative indices wrapped.

    Raises
    ------
    IndexError
        Naming the position and value of the first index out of range.
    TypeError
        For non-integer indices (including boolean masks).
    ValueError
        For arrays that are not one-dimensional.
    """
    cdef Py_ssize_t length = _length_arg(n)
    cdef Py_ssize_t bad
    cdef cnp.ndarray arr
    original = indices
    if isinstance(indices, range):
        indices = np.arange(indices.start, indices.stop, indices.step, dtype=np.int64)
    elif not isinstance(indices, np.ndarray):
        indices = _sequence_to_array(indices)
    arr = indices
    if cnp.PyArray_NDIM(arr) != 1:
        raise ValueError(
            f"indices must be one-dimensional, got an array of shape {indices.shape}"
        )
    out = _new_indices(cnp.PyArray_DIM(arr, 0))
    if cnp.PyArray_DIM(arr, 0) == 0:  # np.array([]) is float64; nothing to check
        return _read_only(out)
    if cnp.PyArray_ISBOOL(arr):
        raise TypeError(
            "boolean masks are not supported as indices; use np.flatnonzero(mask)"
        )
    if not cnp.PyArray_ISINTEGER(arr):
        raise TypeError(f"indices must be integers, got an array of dtype {arr.dtype}")
    if not (cnp.PyArray_ISNOTSWAPPED(arr) and cnp.PyArray_ISALIGNED(arr)):
        arr = arr.astype(np.int64 if cnp.PyArray_ISSIGNED(arr) else np.uint64)
    bad = _dispatch_wrap(arr, <int64_t *>cnp.PyArray_DATA(out), length)
    if bad >= 0:
        value = _item_or(original, arr, bad)
        raise IndexError(
            f"index {value} at position {bad} is out of range for a sequence of "
            + ("infinite length" if length < 0 else f"{length} items")
        )
    return _read_only(out)


cdef inline cnp.ndarray _new_indices(cnp.npy_intp n):
    """A new uninitialised, writeable int64 array of ``n`` items."""
    return cnp.PyArray_EMPTY(1, &n, cnp.NPY_INT64, 0)


cdef inline cnp.ndarray _read_only(cnp.ndarray arr):
    """``arr``, made read-only (the C-API twin of ``arr.setflags(write=False)``)."""
    cnp.PyArray_CLEARFLAGS(arr, cnp.NPY_ARRAY_WRITEABLE)
    return arr


cdef Py_ssize_t _dispatch_wrap(cnp.ndarray arr, int64_t *out, Py_ssize_t n) except -2:
    """Run ``_wrap_indices`` over a 1-D aligned, native integer ``arr``."""
    cdef const char *src = <const char *>cnp.PyArray_DATA(arr)
    cdef Py_ssize_t stride = cnp.PyArray_STRIDE(arr, 0)
    cdef Py_ssize_t count = cnp.PyArray_DIM(arr, 0)
    cdef Py_ssize_t size = cnp.PyArray_ITEMSIZE(arr)
    cdef bint signed = cnp.PyArray_ISSIGNED(arr)
    cdef Py_ssize_t bad
    if count > NOGIL_THRESHOLD:
        with nogil:
            bad = _wrap_any(src, stride, count, out, n, signed, size)
    else:
        bad = _wrap_any(src, stride, count, out, n, signed, size)
    return bad


cdef Py_ssize_t _wrap_any(const char *src, Py_ssize_t stride, Py_ssize_t count,
                          int64_t *out, Py_ssize_t n, bint signed,
                          Py_ssize_t size) noexcept nogil:
    """``_wrap_indices`` specialised for integers of ``size`` bytes."""
    if signed:
        if size == 8:
            return _wrap_indices(src, stride, count, out, n, <int64_t>0)
        if size == 4:
            return _wrap_indices(src, stride, count, out, n, <int32_t>0)
        if size == 2:
            return _wrap_indices(src, stride, count, out, n, <int16_t>0)
        return _wrap_indices(src, stride, count, out, n, <int8_t>0)
    if size == 8:
        return _wrap_indices(src, stride, count, out, n, <uint64_t>0)
    if size == 4:
        return _wrap_indices(src, stride, count, out, n, <uint32_t>0)
    if size == 2:
        return _wrap_indices(src, stride, count, out, n, <uint16_t>0)
    return _wrap_indices(src, stride, count, out, n, <uint8_t>0)


def _sequence_to_array(seq):
    """A sequence of integers as an integer array, naming the first bad element."""
    try:
        arr = np.asarray(seq)
    except (ValueError, TypeError, OverflowError):
        arr = None
    if arr is not None and arr.ndim == 1 and arr.dtype.kind in "iub":
        return arr
    if arr is not None and arr.ndim == 1 and arr.size == 0:
        return np.empty(0, dtype=np.int64)
    if arr is not None and arr.ndim > 1 and arr.dtype.kind in "iub":
        return arr  # rejected by the caller with the shape in the message
    # Mixed, huge or non-integer elements: one pass that names the culprit.
    # Integers beyond int64 become INT64_MIN, which no length admits, so that the
    # range check reports the first bad position whatever made it bad.
    out = []
    for k, v in enumerate(seq):
        if not PyIndex_Check(v):
            raise TypeError(
                f"indices must be integers, got {type(v).__name__} {v!r} "
                f"at position {k}"
            )
        try:
            out.append(PyNumber_AsSsize_t(v, OverflowError))
        except OverflowError:
            out.append(-INT64_MAX - 1)
    return np.array(out, dtype=np.int64)


def _item_or(original, converted, k):
    try:
        return original[k]
    except Exception:
        return converted[k]


cdef inline bint _is_int64_vector(a):
    return (isinstance(a, _ndarray) and a.ndim == 1
            and (a.dtype is _INT64 or a.dtype == _INT64))


cdef object _int64_buffer(a, Py_buffer *view, str name):
    """Acquire 1-D int64 array ``a`` as a C-contiguous buffer (released by the
    caller), copying it first if strided; returns the array acquired."""
    if not _is_int64_vector(a):
        raise TypeError(f"{name} must be a 1-D int64 array")
    try:
        PyObject_GetBuffer(a, view, PyBUF_C_CONTIGUOUS)
    except (BufferError, ValueError):
        a = np.ascontiguousarray(a)
        PyObject_GetBuffer(a, view, PyBUF_C_CONTIGUOUS)
    return a


def affine_indices(idx, Py_ssize_t start, Py_ssize_t step):
    """Return ``start + idx * step`` as a new read-only int64 array.

    Used to push a gather through a slice. Raises OverflowError naming the first
    position whose result does not fit into an index-sized integer.
    """
    cdef Py_buffer src, dst
    cdef Py_ssize_t bad, m
    idx = _int64_buffer(idx, &src, "idx")
    try:
        m = src.shape[0]
        out = _empty(m, _INT64)
        PyObject_GetBuffer(out, &dst, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE)
        if m > NOGIL_THRESHOLD:
            with nogil:
                bad = _affine_indices(<const int64_t*>src.buf, m, <int64_t*>dst.buf,
                                      start, step)
        else:
            bad = _affine_indices(<const int64_t*>src.buf, m, <int64_t*>dst.buf,
                                  start, step)
        PyBuffer_Release(&dst)
    finally:
        PyBuffer_Release(&src)
    if bad >= 0:
        raise OverflowError(
            f"index {start} + {idx[bad]} * {step} at position {bad} does not fit into "
            "an index-sized integer"
        )
    out.setflags(write=False)
    return out


cdef extern from *:
    """
    /* High and low 64 bits of a * b. */
    static inline uint64_t sq_mul_wide(uint64_t a, uint64_t b, uint64_t *lo) {
    #if defined(__SIZEOF_INT128__)
        unsigned __int128 m = (unsigned __int128)a * b;
        *lo = (uint64_t)m;
        return (uint64_t)(m >> 64);
    #else
        uint64_t a0 = (uint32_t)a, a1 = a >> 32, b0 = (uint32_t)b, b1 = b >> 32;
        uint64_t p00 = a0 * b0, p01 = a0 * b1, p10 = a1 * b0, p11 = a1 * b1;
        uint64_t mid = (p00 >> 32) + (uint32_t)p01 + (uint32_t)p10;
        *lo = (mid << 32) | (uint32_t)p00;
        return p11 + (p01 >> 32) + (p10 >> 32) + (mid >> 32);
    #endif
    }
    """
    uint64_t sq_mul_wide(uint64_t a, uint64_t b, uint64_t *lo) nogil


cdef void _shuffle(int64_t *a, int64_t n, bitgen_t *bg, int64_t wide) noexcept nogil:
    """Fisher-Yates: for i = n-1 down to 1, swap a[i] and a[j], j uniform in
    [0, i] by Lemire's multiply-and-reject on 64-bit draws while ``i >= wide``,
    then on 32-bit draws (``wide`` <= 2**32 - 1: the bound i+1 fits in them)."""
    cdef int64_t i = n - 1, j, tmp
    cdef uint64_t s, lo, hi, m
    cdef uint32_t s32, t32
    while i >= wide:
        s = <uint64_t>i + 1
        hi = sq_mul_wide(bg.next_uint64(bg.state), s, &lo)
        if lo < s:
            m = (0 - s) % s  # 2**64 mod s: the draws to reject
            while lo < m:
                hi = sq_mul_wide(bg.next_uint64(bg.state), s, &lo)
        j = <int64_t>hi
        tmp = a[i]; a[i] = a[j]; a[j] = tmp
        i -= 1
    while i > 0:
        s32 = <uint32_t>(i + 1)
        m = <uint64_t>bg.next_uint32(bg.state) * s32
        if <uint32_t>m < s32:
            t32 = (0 - s32) % s32  # 2**32 mod s32: the draws to reject
            while <uint32_t>m < t32:
                m = <uint64_t>bg.next_uint32(bg.state) * s32
        j = <int64_t>(m >> 32)
        tmp = a[i]; a[i] = a[j]; a[j] = tmp
        i -= 1


def permutation(Py_ssize_t n, bit_generator, int64_t wide=0xFFFFFFFF):
    """``arange(n)`` (int64) shuffled by ``_shuffle`` with draws from
    ``bit_generator`` (a ``numpy.random.BitGenerator`` this call alone uses).

    ``wide``: the swaps at ``i >= wide`` draw 64 bits, the others 32. Its default
    is the one the 32-bit draws need; the tests pass smaller ones to check the
    64-bit draws on small arrays."""
    cdef Py_buffer dst
    cdef bitgen_t *bg
    if n < 0:
        raise ValueError(f"permutation: n must be >= 0, got {n}")
    if not 1 <= wide <= 0xFFFFFFFF:
        raise ValueError(f"permutation: wide must be in [1, 2**32 - 1], got {wide}")
    capsule = bit_generator.capsule
    bg = <bitgen_t *>PyCapsule_GetPointer(capsule, "BitGenerator")
    out = np.arange(n, dtype=np.int64)
    PyObject_GetBuffer(out, &dst, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE)
    try:
        with nogil:
            _shuffle(<int64_t*>dst.buf, n, bg, wide)
    finally:
        PyBuffer_Release(&dst)
    return out


def compose_indices(inner, outer):
    """Return ``inner[outer]`` (gather of a gather) as a new read-only int64 array.

    Raises IndexError naming the first position of ``outer`` out of ``inner``.
    """
    cdef Py_buffer a, b, dst
    cdef Py_ssize_t bad, m
    inner = _int64_buffer(inner, &a, "inner")
    try:
        outer = _int64_buffer(outer, &b, "outer")
        try:
            m = b.shape[0]
            out = _empty(m, _INT64)
            PyObject_GetBuffer(out, &dst, PyBUF_C_CONTIGUOUS | PyBUF_WRITABLE)
            if m > NOGIL_THRESHOLD:
                with nogil:
                    bad = _compose_indices(<const int64_t*>a.buf, a.shape[0],
                                           <const int64_t*>b.buf, m, <int64_t*>dst.buf)
            else:
                bad = _compose_indices(<const int64_t*>a.buf, a.shape[0],
                                       <const int64_t*>b.buf, m, <int64_t*>dst.buf)
            PyBuffer_Release(&dst)
        finally:
            PyBuffer_Release(&b)
    finally:
        PyBuffer_Release(&a)
    if bad >= 0:
        raise IndexError(
            f"index {outer[bad]} at position {bad} is out of range for a sequence of "
            f"{inner.shape[0]} items"
        )
    out.setflags(write=False)
    return out


@cython.final  # _index() is then a direct call in TakeReader.get
cdef class IndexTable:
    """A read-only 1-D int64 index array with a fast, list-like ``at(key)``.

    Backs gather views: ``at`` normalises ``key`` (negative, range and type checks as
    lists do) and returns the stored index as a Python int in one call; a
    :class:`TakeReader` reads the items it points to.
    """

    cdef readonly cnp.ndarray array
    cdef Py_ssize_t _n

    def __cinit__(self, array):
        if not _is_int64_vector(array):
            raise TypeError("array must be a 1-D int64 array")
        self.array = array
        self._n = cnp.PyArray_DIM(self.array, 0)

    cdef inline int64_t _index(self, Py_ssize_t i) noexcept:
        """Entry ``i``, ``0 <= i < len``. The array is read in place: cheaper to
        set up than a typed memoryview, which matters once per gather."""
        cdef const char *data = cnp.PyArray_BYTES(self.array)
        return (<const int64_t *>(data + i * cnp.PyArray_STRIDE(self.array, 0)))[0]

    def __len__(self):
        return self._n

    cdef inline Py_ssize_t _position(self, key) except? -1:
        cdef Py_ssize_t i
        if type(key) is int:  # skip PyIndex_Check for the common case
            i = PyNumber_AsSsize_t(key, IndexError)
        else:
            i = _index_arg(key)
        if i < 0:
            i += self._n
            if i < 0:
                raise _range_error(key, self._n, ERR_RANGE)
        elif i >= self._n:
            raise _range_error(key, self._n, ERR_RANGE)
        return i

    def at(self, key):
        """Item ``key`` (an integer, negative counts from the end) as a Python int."""
        return self._index(self._position(key))

    def __reduce__(self):
        return IndexTable, (self.array,)


cdef class OffsetTable:
    """Offsets of concatenated parts, and the lookup of an index into its part.

    Parameters
    ----------
    lengths : sequence of int
        Length of each part (``>= 0``).
    """

    cdef readonly object offsets   # int64, nparts + 1 entries, offsets[0] == 0
    cdef const int64_t[::1] _mv
    cdef const int64_t *_off
    cdef Py_ssize_t _nparts

    def __cinit__(self, lengths):
        cdef Py_ssize_t bad
        arr = _sequence_to_array(lengths)
        if arr.ndim != 1 or arr.dtype.kind not in "iu":
            raise TypeError("lengths must be a 1-D sequence of integers")
        arr = arr.astype(np.int64)
        nparts = arr.shape[0]
        offsets = np.empty(nparts + 1, dtype=np.int64)
        cdef const int64_t[:] src = arr
        cdef int64_t[::1] dst = offsets
        with nogil:
            bad = _cumsum_lengths(src, dst)
        if bad >= 0:
            raise ValueError(
                f"invalid length {_item_or(lengths, arr, bad)} for part {bad}: "
                "lengths must be >= 0 and their sum must fit into an index-sized "
                "integer"
            )
        offsets.setflags(write=False)
        self.offsets = offsets
        self._mv = offsets
        self._off = &self._mv[0]
        self._nparts = nparts

    @property
    def total(self):
        """Total number of items."""
        return self._off[self._nparts]

    @property
    def nparts(self):
        """Number of parts."""
        return self._nparts

    def locate(self, Py_ssize_t i):
        """Return ``(part, local_index)`` of item ``i``, ``0 <= i < total``."""
        cdef Py_ssize_t p
        if i < 0 or i >= self._off[self._nparts]:
            raise IndexError(
                f"index {i} out of range for a sequence of {self.total} items"
            )
        # One lookup is a handful of comparisons: releasing the GIL would cost more.
        p = _upper_part(self._off, self._nparts, i)
        return p, i - self._off[p]

    def locate_many(self, indices):
        """Return int64 arrays ``(parts, local)`` for an array of item indices.

        ``indices`` may have any integer dtype (converted to int64 in one numpy
        call); they must satisfy ``0 <= i < total``, else IndexError names the
        first offending position and value.
        """
        cdef Py_ssize_t bad
        idx = np.asarray(indices)
        if idx.ndim != 1 or (idx.dtype.kind not in "iu" and idx.size):
            raise TypeError("indices must be a 1-D array of integers")
        if idx.dtype.kind == "u" and idx.size and idx.max() > INT64_MAX:
            bad = int(np.argmax(idx > INT64_MAX))
            raise IndexError(
                f"index {idx[bad]} at position {bad} is out of range for a sequence "
                f"of {self.total} items"
            )
        idx64 = idx.astype(np.int64, copy=False)
        parts = np.empty(idx64.shape[0], dtype=np.int64)
        local = np.empty(idx64.shape[0], dtype=np.int64)
        cdef const int64_t[:] src = idx64
        cdef int64_t[::1] p = parts
        cdef int64_t[::1] loc = local
        with nogil:
            bad = _locate_many(self._off, self._nparts, src, p, loc)
        if bad >= 0:
            raise IndexError(
                f"index {idx[bad]} at position {bad} is out of range for a sequence "
                f"of {self.total} items"
            )
        return parts, local

    def __reduce__(self):
        return OffsetTable, (np.diff(self.offsets),)


# -- compiled index maps: fused reads of a whole view graph -------------------------

cdef enum:
    OP_AFFINE = 0          # i -> start + i * step (a slice)
    OP_TAKE = 1            # i -> table[i] (a gather)


cdef struct MapOp:
    int kind
    Py_ssize_t start
    Py_ssize_t step
    const int64_t *table
    Py_ssize_t length      # of table


cdef struct LeafMap:
    # The maps from the root's indices to one leaf, root first, then the split of
    # the leaf's concatenated parts (offsets == NULL: one part, no split).
    MapOp *ops
    Py_ssize_t nops
    const int64_t *offsets
    Py_ssize_t nparts


cdef Py_ssize_t _check_range(const int64_t *idx, Py_ssize_t m,
                             Py_ssize_t n) noexcept nogil:
    """The first position of ``idx`` outside ``[0, n)`` (n < 0: ``[0, inf)``), or -1."""
    cdef Py_ssize_t k
    cdef int64_t i
    for k in range(m):
        i = idx[k]
        if i < 0 or (n >= 0 and i >= n):
            return k
    return -1


cdef Py_ssize_t _resolve_leaf(const LeafMap *leaf, const int64_t *idx, Py_ssize_t m,
                              int64_t *part, int64_t *local) noexcept nogil:
    """Map ``idx`` to ``(part, local)`` through one leaf's maps (part unused when the
    leaf has one part); -1, or the first position that leaves a table or overflows."""
    cdef Py_ssize_t k, o, p, v
    cdef int64_t i
    cdef const MapOp *op
    for k in range(m):
        i = idx[k]
        for o in range(leaf.nops):
            op = &leaf.ops[o]
            if op.kind == OP_AFFINE:
                if __builtin_mul_overflow(<Py_ssize_t>i, op.step, &v):
                    return k
                if __builtin_add_overflow(op.start, v, &v):
                    return k
                i = v
            else:
                if i < 0 or i >= op.length:
                    return k
                i = op.table[i]
        if leaf.offsets != NULL:
            if i < 0 or i >= leaf.offsets[leaf.nparts]:
                return k
            p = _upper_part(leaf.offsets, leaf.nparts, i)
            part[k] = p
            i -= leaf.offsets[p]
        local[k] = i
    return -1


cdef class Resolver:
    """Index maps from a view to the leaves of its graph, compiled once.

    Parameters
    ----------
    n : int or None
        Length of the view (None: infinite); the indices resolved must lie in
        ``[0, n)``.
    leaves : list of (ops, offsets)
        Per leaf, the maps from the view's indices to the leaf's, root first: a
        tuple of ``("affine", start, step)`` (item ``i`` is item ``start + i * step``
        of the next level) and ``("take", table)`` (item ``table[i]``, ``table`` a
        1-D int64 array); then ``offsets``, the int64 part offsets of a
        concatenated leaf (``[0, len0, len0 + len1, ...]``), or None.

    ``resolve(indices)`` then maps a whole batch of indices to every leaf in one call.
    """

    cdef Py_ssize_t n
    cdef LeafMap *leaves
    cdef Py_ssize_t nleaves
    cdef MapOp *ops
    cdef Py_buffer *bufs          # tables and offsets, held for the pointers above
    cdef Py_ssize_t nbufs
    cdef tuple identity           # per leaf: True if it maps indices to themselves

    def __cinit__(self, n, list leaves):
        cdef Py_ssize_t nops = 0, used = 0, j, o
        cdef LeafMap *leaf
        cdef MapOp *op
        self.n = _length_arg(n)
        for ops, _ in leaves:
            nops += len(ops)
        self.nleaves = len(leaves)
        self.leaves = <LeafMap*>calloc(max(self.nleaves, 1), sizeof(LeafMap))
        self.ops = <MapOp*>calloc(max(nops, 1), sizeof(MapOp))
        self.bufs = <Py_buffer*>calloc(nops + self.nleaves + 1, sizeof(Py_buffer))
        if self.leaves == NULL or self.ops == NULL or self.bufs == NULL:
            raise MemoryError()
        identity = []
        for j in range(self.nleaves):
            ops, offsets = leaves[j]
            leaf = &self.leaves[j]
            leaf.ops = &self.ops[used]
            leaf.nops = len(ops)
            used += leaf.nops
            for o in range(leaf.nops):
                op = &leaf.ops[o]
                if ops[o][0] == "affine":
                    _, start, step = ops[o]
                    op.kind = OP_AFFINE
                    op.start = start
                    op.step = step
                elif ops[o][0] == "take":
                    op.kind = OP_TAKE
                    op.table = self._int64_data(ops[o][1], "a take table")
                    op.length = len(ops[o][1])
                else:
                    raise ValueError(f"unknown index map {ops[o][0]!r}")
            if offsets is not None:
                leaf.offsets = self._int64_data(offsets, "offsets")
                leaf.nparts = len(offsets) - 1
                if leaf.nparts < 1:
                    raise ValueError("offsets need at least two entries")
            identity.append(leaf.nops == 0 and leaf.offsets == NULL)
        self.identity = tuple(identity)

    cdef const int64_t *_int64_data(self, a, str what) except NULL:
        if not _is_int64_vector(a):
            raise TypeError(f"{what} must be a 1-D int64 array")
        PyObject_GetBuffer(a, &self.bufs[self.nbufs], PyBUF_C_CONTIGUOUS)
        self.nbufs += 1
        return <const int64_t*>self.bufs[self.nbufs - 1].buf

    def resolve(self, indices):
        """Map a 1-D int64 array of indices of the view to each leaf.

        Returns a list with one ``(part, local)`` per leaf: ``local`` the indices in
        the leaf (``indices`` itself when the leaf's maps are the identity), ``part``
        an int64 array of part numbers for concatenated leaves, else None. Raises
        IndexError naming the first index out of ``[0, n)``.
        """
        cdef Py_buffer src
        cdef Py_buffer dst[2]
        cdef Py_ssize_t m, j, bad
        cdef const int64_t *idx
        cdef int64_t *part
        cdef list out = []
        indices = _int64_buffer(indices, &src, "indices")
        try:
            idx = <const int64_t*>src.buf
            m = src.shape[0]
            with nogil:
                bad = _check_range(idx, m, self.n)
            if bad >= 0:
                raise IndexError(
                    f"index {idx[bad]} at position {bad} is out of range for a "
                    "sequence of "
                    + ("infinite length" if self.n < 0 else f"{self.n} items")
                )
            for j in range(self.nleaves):
                if self.identity[j]:
                    out.append((None, indices))
                    continue
                local = _empty(m, _INT64)
                parts = None if self.leaves[j].offsets == NULL else _empty(m, _INT64)
                PyObject_GetBuffer(local, &dst[0], PyBUF_C_CONTIGUOUS)
                part = NULL
                if parts is not None:
                    PyObject_GetBuffer(parts, &dst[1], PyBUF_C_CONTIGUOUS)
                    part = <int64_t*>dst[1].buf
                if m > NOGIL_THRESHOLD:
                    with nogil:
                        bad = _resolve_leaf(&self.leaves[j], idx, m, part,
                                            <int64_t*>dst[0].buf)
                else:
                    bad = _resolve_leaf(&self.leaves[j], idx, m, part,
                                        <int64_t*>dst[0].buf)
                PyBuffer_Release(&dst[0])
                if parts is not None:
                    PyBuffer_Release(&dst[1])
                if bad >= 0:
                    # Cannot happen for maps compiled from views (their tables were
                    # checked when built): guards the reads above.
                    raise IndexError(
                        f"index {idx[bad]} at position {bad} leaves the index maps "
                        f"of leaf {j} (out of a gather's table, or overflowing)"
                    )
                out.append((parts, local))
        finally:
            PyBuffer_Release(&src)
        return out

    def __dealloc__(self):
        release_buffers(self.bufs, self.nbufs)
        free(self.bufs)
        free(self.ops)
        free(self.leaves)

# -- item readers --------------------------------------------------------------------
#
# Reading item i of gather(collate([concatenate(chunks), labels])[:-10000], order)
# through the views' Python methods costs a frame per view; their readers form a
# tree (TakeReader -> TupleReader -> PartsReader -> SequenceReader) that does the
# same in C calls, and items come out exactly as the sources' __getitem__ makes them.


cdef class Reader:
    """Reads the items of a sequence of ``n`` items (``n < 0``: infinite) by index.

    Views compile one from their sources' readers when they are built (see
    ``View._reader`` in core.py). Subclasses implement ``get`` for a normalised
    index ``i``; ``get`` checks whatever it needs to stay memory-safe, so a wrong
    ``i`` raises instead of reading out of bounds.
    """

    cdef Py_ssize_t _n

    cdef object get(self, Py_ssize_t i):
        raise NotImplementedError

    def __len__(self):
        if self._n < 0:
            raise TypeError("an infinite reader has no len()")
        return self._n

    def read(self, Py_ssize_t i):
        """Item ``i``, ``0 <= i < n``: the getter handed to outer views."""
        if i < 0 or (self._n >= 0 and i >= self._n):
            raise _range_error(i, self._n, ERR_RANGE)
        return self.get(i)

    def __getitem__(self, key):
        """Item ``key`` with list semantics: negative keys count from the end."""
        cdef Py_ssize_t i = _index_arg(key)
        cdef int status = _normalize(&i, self._n)
        if status != OK:
            raise _range_error(key, self._n, status)
        return self.get(i)

    def __iter__(self):
        return ReaderIter(self)


cdef class ReaderIter:
    """Iterator over the items of a :class:`Reader`, one ``get`` per item."""

    cdef Reader _reader
    cdef Py_ssize_t _k

    def __cinit__(self, Reader reader not None):
        self._reader = reader
        self._k = 0

    def __iter__(self):
        return self

    def __next__(self):
        cdef Py_ssize_t k
        cdef bint done
        # Threads sharing the iterator each take a position of their own: without
        # a GIL, two could read the same _k (a no-op on GIL builds).
        with cython.critical_section(self):
            k = self._k
            done = self._reader._n >= 0 and k >= self._reader._n
            if not done:
                self._k = k + 1  # before get(), so that next() after an error moves on
        if done:
            raise StopIteration
        return self._reader.get(k)

    def __length_hint__(self):
        if self._reader._n < 0:
            return NotImplemented
        return self._reader._n - self._k


cdef class CallReader(Reader):
    """Items ``func(i)``: any getter, such as a view's ``_get``.

    Parameters
    ----------
    func : callable
        Called with a normalised index ``i``, returns item ``i``.
    n : int or None
        Number of items, None if infinite.
    """

    cdef object _func

    def __cinit__(self, func, n):
        if not callable(func):
            raise TypeError(f"func must be callable, not {type(func).__name__}")
        self._func = func
        self._n = _length_arg(n)

    cdef object get(self, Py_ssize_t i):
        return self._func(i)


cdef extern from *:
    void __builtin_prefetch(const void *addr, int rw, int locality) nogil

# Bytes of a row view that SequenceReader asks the CPU to fetch ahead.
cdef enum:
    PREFETCH_MAX = 16384


cdef class SequenceReader(Reader):
    """Items ``seq[i]`` of a list, tuple, range or numpy array, by its ``sq_item``.

    For these types ``sq_item`` gives what ``seq[i]`` does (rows of an array are
    views of its memory, items of a 1-D array numpy scalars) without building an
    int and parsing it as a key. ``n`` is ``len(seq)`` now; a list that shrinks
    later raises IndexError as it would.

    A row view of a numpy array is handed out with its bytes being fetched into
    the cache (a prefetch hint, up to 16 KiB a row): whoever reads items by the
    batch (a sampler stacking them) next reads those bytes, and for rows drawn at
    random from a memory-mapped file each would otherwise be a cache and TLB miss
    met one at a time inside the copy.
    """

    cdef object _seq
    cdef bint _rows

    def __cinit__(self, seq):
        if not PySequence_Check(seq):
            raise TypeError(f"expected a sequence, not {type(seq).__name__}")
        self._seq = seq
        self._n = len(seq)
        self._rows = isinstance(seq, np.ndarray) and seq.ndim >= 2

    cdef object get(self, Py_ssize_t i):
        cdef object item = PySequence_GetItem(self._seq, i)
        cdef const char *p
        cdef Py_ssize_t k, n
        if self._rows and cnp.PyArray_Check(item):
            p = <const char *>cnp.PyArray_DATA(<cnp.ndarray>item)
            n = cnp.PyArray_NBYTES(<cnp.ndarray>item)
            if n > PREFETCH_MAX or not cnp.PyArray_IS_C_CONTIGUOUS(<cnp.ndarray>item):
                n = min(n, <Py_ssize_t>64)
            k = 0
            while k < n:
                __builtin_prefetch(p + k, 0, 3)
                k += 64
        return item


cdef class TupleReader(Reader):
    """Items ``(r[i] for r in readers)`` as tuples (collate).

    Parameters
    ----------
    readers : sequence of Reader
        At least one.
    n : int or None
        Number of items, None if infinite.
    """

    cdef tuple _readers
    cdef Py_ssize_t _m

    def __cinit__(self, readers, n):
        readers = tuple(readers)
        if not readers:
            raise ValueError("TupleReader needs at least one reader")
        for r in readers:
            if not isinstance(r, Reader):
                raise TypeError(f"expected Reader objects, not {type(r).__name__}")
        self._readers = readers
        self._m = len(readers)
        self._n = _length_arg(n)

    cdef object get(self, Py_ssize_t i):
        cdef Py_ssize_t k
        cdef object item
        cdef object out = PyTuple_New(self._m)
        for k in range(self._m):
            item = (<Reader>self._readers[k]).get(i)
            Py_INCREF(item)  # PyTuple_SET_ITEM steals a reference
            PyTuple_SET_ITEM(out, k, item)
        return out


cdef class SliceReader(Reader):
    """Items ``source[start + i * step]`` for ``0 <= i < n`` (finite slices).

    Raises OverflowError if the last index does not fit into an index-sized
    integer, so that no later read overflows.
    """

    cdef Reader _source
    cdef Py_ssize_t _start, _step

    def __cinit__(self, Reader source not None, Py_ssize_t start, Py_ssize_t step,
                  Py_ssize_t n):
        cdef Py_ssize_t last
        if n < 0:
            raise ValueError(f"SliceReader needs a length >= 0, got {n}")
        if n > 0 and (__builtin_mul_overflow(n - 1, step, &last)
                      or __builtin_add_overflow(start, last, &last)):
            raise OverflowError("slice indices do not fit into an index-sized integer")
        self._source = source
        self._start = start
        self._step = step
        self._n = n

    cdef object get(self, Py_ssize_t i):
        if i < 0 or i >= self._n:
            raise _range_error(i, self._n, ERR_RANGE)
        return self._source.get(self._start + i * self._step)


cdef class TakeReader(Reader):
    """Items ``source[table.at(i)]`` (gather)."""

    cdef IndexTable _table
    cdef Reader _source

    def __cinit__(self, IndexTable table not None, Reader source not None):
        self._table = table
        self._source = source
        self._n = table._n

    cdef object get(self, Py_ssize_t i):
        if i < 0 or i >= self._n:
            raise _range_error(i, self._n, ERR_RANGE)
        return self._source.get(self._table._index(i))


cdef class PartsReader(Reader):
    """Items of parts laid end to end (concatenate): one reader per part."""

    cdef OffsetTable _table
    cdef tuple _parts

    def __cinit__(self, OffsetTable table not None, parts):
        parts = tuple(parts)
        if len(parts) != table._nparts:
            raise ValueError(f"expected {table._nparts} readers, got {len(parts)}")
        for r in parts:
            if not isinstance(r, Reader):
                raise TypeError(f"expected Reader objects, not {type(r).__name__}")
        self._table = table
        self._parts = parts
        self._n = table._off[table._nparts]

    cdef object get(self, Py_ssize_t i):
        cdef const int64_t *off = self._table._off
        cdef Py_ssize_t p
        if i < 0 or i >= self._n:
            raise _range_error(i, self._n, ERR_RANGE)
        p = _upper_part(off, self._table._nparts, i)
        return (<Reader>self._parts[p]).get(i - off[p])
