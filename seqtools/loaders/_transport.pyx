# Used by seqtools/loaders/_worker.py (TaskBlocks, set_task, out_block, send) and
# seqtools/loaders/api.py (decode); seqtools.batching.stacking reaches out_block
# only through seqtools._task, where the worker loop puts it.
"""Moving one result from a worker process to the parent through ring blocks.

A result (arrays, buffer objects, scalars and any picklable objects, nested in
tuples, lists and dicts) is split into a *skeleton* -- the structure with each array
replaced by a placeholder -- and the arrays' bytes. The result's main block holds::

    [u32 meta length | u32 naux] [naux x (u64 offset, u64 size)] [meta] pad
    [array 0] pad [array 1] ...

``meta`` is the pickled ``(skeleton, specs)``: one ``(dtype, shape, position,
block)`` per array, ``block`` -1 for the main block (position counted after the
header), -2 for the main block (counted from its start), ``k`` for auxiliary block
``k``. Every array is 64-byte aligned. Array bytes are copied once into shared
memory by the worker (GIL released) and viewed in place by the parent, zero-copy:
the parent's arrays keep their block leased until the last of them is
garbage-collected.

Arrays the worker's code built inside the ring are not copied at all:
``seqtools.stack`` in a worker writes batches straight into blocks reserved with
:func:`out_block`, and numpy's large allocations land in blocks the worker keeps
(the allocation hook, see _ring.pyx), adopted by the commit when the result holds
the only reference to the array. The specs name such an array's *auxiliary*
block, which the commit hands over together with the main block. Both kinds of
block start with spare bytes (:data:`HEADROOM`, ``_ring.HOOK_HEADROOM``): the
first of them carries the header and the small arrays (copied) there and goes
over as the main block itself, so that the commonest result -- one large batch
and a few small arrays -- costs one block and no copy of the batch.

Per batch, the cost is kept off the Python level: a sampler sends results with one
``meta`` over and over, so the worker keeps each pickled ``meta`` it has sent
(keyed by structure, dtypes, shapes and positions, never by values) and the
parent the unpickled form of each ``meta`` it has received; arrays are made
with the numpy C API. Block positions travel outside ``meta`` so that it stays the
same from batch to batch.
"""

cimport numpy as cnp
from cpython.bytes cimport (
    PyBytes_AS_STRING,
    PyBytes_FromStringAndSize,
    PyBytes_GET_SIZE,
)
from libc.stdint cimport uint64_t
from cpython.ref cimport Py_INCREF
from libc.string cimport memcpy

from cpython.object cimport PyObject, PyTypeObject
from cpython.pythread cimport PyThread_get_thread_ident

from .._limits cimport SQ_MAX_NDIM, SQ_RESULT_BLOCKS, SQ_SLOT_BLOCKS
from ._ring cimport (
    Block,
    Ring,
    commit_n,
    hook_adopted,
    hook_find,
    HOOK_HEADROOM_BYTES,
    hook_live,
    make_block,
    too_many_blocks,
)

import gc
import pickle
import weakref

import numpy as np

from ._ring import KIND_RESULT, QueueFull

cnp.import_array()

_memmap = np.memmap


cdef extern from "numpy/arrayobject.h":
    # Steals a reference to descr.
    object PyArray_NewFromDescr(type subtype, cnp.dtype descr, int nd,
                                cnp.npy_intp *dims, cnp.npy_intp *strides, void *data,
                                int flags, object obj)

__all__ = ["REF", "HEADROOM", "MAX_NDIM", "SLOT_BLOCKS", "TaskBlocks", "Unsendable",
           "out_block", "send", "decode"]

# The limits (csrc/sq_limits.h): SQ_MAX_NDIM dimensions per array (numpy's own
# maximum, so every numpy array qualifies); SQ_SLOT_BLOCKS blocks reserved per
# task (out_block's and the main block); SQ_RESULT_BLOCKS blocks named by one
# result's header (reserved or adopted).
if cnp.NPY_MAXDIMS > SQ_MAX_NDIM:
    raise ImportError(f"built with numpy headers allowing {cnp.NPY_MAXDIMS} "
                      f"dimensions, more than SQ_MAX_NDIM = {SQ_MAX_NDIM}")

cdef enum:
    _HEAD = 8
    _ALIGN = 64
    _CACHE = 256  # metas remembered on each side
    _HEADROOM = 512
    # Where a spec's array lies (its last field); k >= 0 is auxiliary block k.
    _MAIN = -1  # in the main block, after the header
    _MAIN_ABS = -2  # in the main block, from its start (a merged out_block)

#: Spare bytes at the start of every block from :func:`out_block`, for the header.
HEADROOM = _HEADROOM
#: Dimensions of an array a result may hold (numpy's own maximum).
MAX_NDIM = SQ_MAX_NDIM
#: Blocks one task may reserve: out_block's ones and its result's main block.
SLOT_BLOCKS = SQ_SLOT_BLOCKS


cdef inline Py_ssize_t _align(Py_ssize_t n) noexcept nogil:
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


class Unsendable(Exception):
    """The result cannot be sent to the parent process (the message says why)."""


cdef class _RefType:
    """The placeholder for an array in a skeleton (one instance, pickled by name)."""

    def __reduce__(self):
        return "REF"

    def __repr__(self):
        return "REF"


REF = _RefType()


# -- worker side ----------------------------------------------------------------------


cdef class TaskBlocks:
    """Blocks reserved in the ring by the worker's own code for the current task.

    One per worker, emptied when a task starts (:meth:`reset`). ``reserve(nbytes)``
    returns the offset of a new block, waiting as needed; ``wait()`` waits a
    little for the parent to take a result from the full completion queue. Both
    raise ``RingClosed`` once the parent is gone.
    """

    cdef readonly Ring ring
    cdef readonly int slot
    cdef object reserve
    cdef public object wait
    cdef int n
    cdef uint64_t offsets[SQ_SLOT_BLOCKS]
    cdef uint64_t sizes[SQ_SLOT_BLOCKS]
    cdef list made  # weak references to the arrays new() made for this task
    cdef public bint disabled  # new() is refused: out_block() returns None

    def __init__(self, Ring ring, int slot, reserve, wait):
        self.ring = ring
        self.slot = slot
        self.reserve = reserve
        self.wait = wait
        self.n = 0
        self.made = []
        self.disabled = False

    def reset(self):
        self.n = 0
        if self.made:
            self.made = []

    def kept(self):
        """True if an array new() made for the last task is still alive.

        Call it once the task's result is sent and dropped: its blocks then
        belong to the parent, which reuses them for later results, so such an
        array (kept by the worker's code, say ``self.last = batch``) would change
        under whoever reads it. Reference cycles are collected first.
        """
        if not self._alive():
            return False
        gc.collect()
        return self._alive()

    cdef bint _alive(self):
        for r in self.made:
            if r() is not None:
                return True
        return False

    def new(self, Py_ssize_t nbytes):
        """A writable uint8 array of ``nbytes`` in a new block, after its headroom."""
        cdef cnp.npy_intp dims[1]
        cdef uint64_t offset
        if nbytes < 0:
            raise ValueError(f"out_block: nbytes must be >= 0, got {nbytes}")
        if self.n == SQ_SLOT_BLOCKS:
            raise RuntimeError(too_many_blocks())
        offset = self.reserve(_HEADROOM + nbytes)
        self.offsets[self.n] = offset
        self.sizes[self.n] = _HEADROOM + nbytes
        self.n += 1
        dims[0] = nbytes
        a = cnp.PyArray_SimpleNewFromData(1, dims, cnp.NPY_UINT8,
                                          self.ring.base + offset + _HEADROOM)
        cnp.set_array_base(a, self.ring)  # the mapping outlives the array
        self.made.append(weakref.ref(a))  # views of it keep it alive
        return a

    cdef int find(self, cnp.ndarray a, uint64_t *pos) noexcept:
        """Block number of ``a`` (and its position there) if it lies in one, else -1."""
        cdef char *p
        cdef uint64_t start
        cdef Py_ssize_t size
        cdef int k
        if self.n == 0 or not cnp.PyArray_IS_C_CONTIGUOUS(a):
            return -1
        p = <char *>cnp.PyArray_DATA(a)
        if p < self.ring.base:
            return -1
        size = cnp.PyArray_NBYTES(a)
        start = <uint64_t>(p - self.ring.base)
        for k in range(self.n):
            if start >= self.offsets[k] and \
                    start + size <= self.offsets[k] + self.sizes[k]:
                pos[0] = start - self.offsets[k]
                return k
        return -1


# The TaskBlocks of the task a worker runs now, and the thread running it. Only
# that thread builds results in the ring: threads the task's code starts itself
# get None from current_task() (TaskBlocks is not thread-safe, and what they make
# may not end up in the result).
cdef TaskBlocks _task = None
cdef unsigned long _task_thread = 0


def set_task(TaskBlocks task):
    """Worker: ``task`` runs now on the calling thread (None: no task runs)."""
    global _task, _task_thread
    # Other threads read _task only after seeing their own id in _task_thread
    # (current_task), so the thread id is set last and cleared first.
    if task is None:
        _task_thread = 0
        _task = None
    else:
        _task = task
        _task_thread = PyThread_get_thread_ident()


cpdef TaskBlocks current_task():
    """The TaskBlocks of the task running on the calling thread, else None."""
    if PyThread_get_thread_ident() != _task_thread:
        return None
    return _task


def out_block(nbytes):
    """A writable uint8 array of ``nbytes`` in the ring, for the running task.

    Only on the thread running a task in a worker process of
    ``prefetch``/``load_buffers`` (else None): arrays built in it are handed to
    the parent without any copy.
    """
    cdef TaskBlocks task = current_task()
    if task is None or task.disabled:
        return None
    return task.new(nbytes)


cdef class _Flat:
    """What flattening a result found: its arrays, and a signature of its structure
    (None when the skeleton holds values, so that it cannot be shared).

    The signature is the skeleton written in prefix order, one token per node (a
    container's type and size before its items, dict keys before their values,
    REF for an array), so that two skeletons have the same signature only if they
    are the same.
    """

    cdef list arrays
    cdef list sig

    def __cinit__(self):
        self.arrays = []
        self.sig = []


cdef object _flatten(object obj, _Flat f):
    """Return the skeleton of ``obj``, appending its arrays to ``f.arrays``."""
    cdef type t = type(obj)
    if t is cnp.ndarray or t is _memmap:
        # A memmap arrives as the plain array it views: the parent has no file.
        if (<cnp.ndarray>obj).ndim > SQ_MAX_NDIM:  # no numpy array so far
            raise Unsendable(
                f"an array of {(<cnp.ndarray>obj).ndim} dimensions cannot be sent "
                f"(at most SQ_MAX_NDIM = {SQ_MAX_NDIM}); reshape it")
        if (<cnp.ndarray>obj).dtype.hasobject:
            f.sig = None
            return obj  # pickled with the skeleton
        f.arrays.append(obj)
        if f.sig is not None:
            f.sig.append(REF)
        return REF
    if t is tuple:
        if f.sig is not None:
            f.sig.append(len(<tuple>obj))
        return tuple([_flatten(x, f) for x in <tuple>obj])
    if t is list:
        if f.sig is not None:
            f.sig.append(list)
            f.sig.append(len(<list>obj))
        return [_flatten(x, f) for x in <list>obj]
    if t is dict:
        if f.sig is not None:
            f.sig.append(dict)
            f.sig.append(len(<dict>obj))
            for k in <dict>obj:
                if type(k) is not str:
                    f.sig = None
                    break
                f.sig.append(k)
        return {k: _flatten(v, f) for k, v in (<dict>obj).items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        if f.sig is not None:
            f.sig.append(t)
        return t(*[_flatten(x, f) for x in obj])
    f.sig = None  # a value: the skeleton differs from result to result
    if t in (int, float, bool, str, bytes, type(None)) or isinstance(obj, np.generic):
        return obj
    if isinstance(obj, cnp.ndarray):
        # A subclass (masked array, matrix, recarray...) keeps its type and
        # whatever it carries besides the data only through its own pickling.
        return obj
    try:  # anything else with the buffer protocol travels as an array
        view = memoryview(obj)
    except TypeError:
        return obj
    return _flatten(np.asarray(view), f)


_metas = {}  # (signature, specs) -> pickled (skeleton, specs)


cdef bytes _meta(object skeleton, list specs, _Flat f):
    key = None
    if f.sig is not None:
        key = (tuple(f.sig), tuple(specs))
        meta = _metas.get(key)
        if meta is not None:
            return meta
    try:
        meta = pickle.dumps((skeleton, specs), protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:
        raise Unsendable(
            f"the result cannot be sent to the parent process "
            f"({type(e).__name__}: {e}); return numpy arrays, scalars and "
            "picklable objects (tuples, lists, dicts of them)") from None
    if key is not None:
        if len(_metas) >= _CACHE:
            _metas.clear()
        _metas[key] = meta
    return meta


_dtype_strs = {}  # id(dtype) -> (dtype, dtype.str); holding the dtype keeps its id its own


cdef object _dtype_spec(cnp.dtype d):
    # A plain dtype travels as its string, which pickles and hashes faster. numpy
    # formats ``.str`` anew on each read; results reuse a few dtype objects (the
    # builtin ones are singletons), so each is formatted once.
    if cnp.PyDataType_HASFIELDS(d):
        return d
    key = <size_t><PyObject *>d
    e = _dtype_strs.get(key)
    if e is not None:
        return (<tuple>e)[1]
    s = (<object>d).str
    if len(_dtype_strs) >= _CACHE:
        _dtype_strs.clear()
    _dtype_strs[key] = (d, s)
    return s


cdef inline void _put_u64(char *p, uint64_t v) noexcept nogil:
    memcpy(p, &v, 8)


cdef inline uint64_t _get_u64(const char *p) noexcept nogil:
    cdef uint64_t v
    memcpy(&v, p, 8)
    return v


cdef extern from "Python.h":
    Py_ssize_t Py_REFCNT(PyObject *o)
    PyObject *PyTuple_GET_ITEM(PyObject *o, Py_ssize_t i)
    Py_ssize_t PyTuple_GET_SIZE(PyObject *o)
    PyObject *PyList_GET_ITEM(PyObject *o, Py_ssize_t i)
    Py_ssize_t PyList_GET_SIZE(PyObject *o)
    bint PyTuple_Check(PyObject *o)
    bint PyList_CheckExact(PyObject *o)
    bint PyDict_CheckExact(PyObject *o)
    int PyDict_Next(PyObject *d, Py_ssize_t *pos, PyObject **k, PyObject **v)
    PyTypeObject *Py_TYPE(PyObject *o)


cdef void _sole(PyObject *o, set out, int depth):
    """Add to ``out`` the address of every array in ``o`` that nothing but ``o``
    references: ``o`` and every container on the way hold the only reference.

    ``o`` is borrowed and must itself be referenced once (the caller's own
    reference, or its container's); nothing here takes a reference, so the
    counts read are exact.
    """
    cdef Py_ssize_t i, n, pos = 0
    cdef PyObject *k
    cdef PyObject *v
    if Py_REFCNT(o) != 1 or depth > 32:
        return
    if Py_TYPE(o) == <PyTypeObject *>cnp.ndarray:
        out.add(<size_t>o)
    elif PyTuple_Check(o):
        n = PyTuple_GET_SIZE(o)
        for i in range(n):
            _sole(PyTuple_GET_ITEM(o, i), out, depth + 1)
    elif PyList_CheckExact(o):
        n = PyList_GET_SIZE(o)
        for i in range(n):
            _sole(PyList_GET_ITEM(o, i), out, depth + 1)
    elif PyDict_CheckExact(o):
        while PyDict_Next(o, &pos, &k, &v):
            _sole(v, out, depth + 1)


def send(Ring ring, int slot, long long index, unsigned long long generation,
         list box, TaskBlocks task not None, unsigned int kind=KIND_RESULT):
    """Write the result in ``box`` (its only reference) into the ring and commit it
    as the answer to task ``index`` of ``generation`` (as claimed), an entry of
    ``kind`` (KIND_ERROR for a failure report).

    ``task`` holds the blocks the worker's code reserved for this result (with
    :func:`out_block`) and reserves the main block. Arrays numpy allocated in kept
    blocks (the worker's allocation hook, see _ring.pyx) go over in their block,
    uncopied, when the result holds the only reference to them. Raises
    :class:`Unsendable` for results that cannot cross (nothing is committed), and
    ``TooLarge`` from the reserve for a result larger than the ring. While the
    completion queue is full, waits with ``task.wait()``.
    """
    cdef _Flat f = _Flat()
    cdef cnp.ndarray a
    cdef list specs = [], copies = [], hspecs
    cdef Py_ssize_t pos = 0, base, room, start, head
    cdef uint64_t where = 0, offset, hoff, hbytes
    # The blocks arrays lie in: the task's out_block ones, then adopted ones.
    cdef uint64_t blk_off[SQ_RESULT_BLOCKS]
    cdef uint64_t blk_size[SQ_RESULT_BLOCKS]
    cdef uint64_t adopt[SQ_RESULT_BLOCKS]
    cdef int k, nb, nadopt = 0, skip
    cdef bint merged
    cdef bytes meta
    cdef char *dst
    cdef set sole = None
    result = box.pop()
    if hook_live():
        sole = set()
        _sole(<PyObject *>result, sole, 0)
    skeleton = _flatten(result, f)
    for k in range(task.n):
        blk_off[k] = task.offsets[k]
        blk_size[k] = task.sizes[k]
    nb = task.n
    for a in f.arrays:
        shape = (<object>a).shape
        dt = _dtype_spec(a.dtype)
        k = task.find(a, &where)
        if k >= 0:
            specs.append((dt, shape, <Py_ssize_t>where, k))
        elif sole and <size_t><PyObject *>a in sole and nb < SQ_RESULT_BLOCKS \
                and cnp.PyArray_CHKFLAGS(a, cnp.NPY_ARRAY_OWNDATA) \
                and cnp.PyArray_IS_C_CONTIGUOUS(a) \
                and hook_find(<const char *>cnp.PyArray_DATA(a),
                              cnp.PyArray_NBYTES(a), &hoff, &hbytes):
            specs.append((dt, shape, HOOK_HEADROOM_BYTES, nb))
            blk_off[nb] = hoff
            blk_size[nb] = hbytes
            nb += 1
            adopt[nadopt] = hoff
            nadopt += 1
        else:
            pos = _align(pos)
            specs.append((dt, shape, pos, _MAIN))
            copies.append((a, pos))
            pos += cnp.PyArray_NBYTES(a)
    pos = _align(pos)
    merged = False
    if nb >= 1:
        # The first block carries the header, naming the others, and the small
        # arrays (copied) in its headroom, and goes over as the main block: no
        # block to wait for while holding the others.
        room = _HEADROOM if task.n >= 1 else HOOK_HEADROOM_BYTES
        start = room - pos  # the copies end where the headroom does
        head = _HEAD + 16 * (nb - 1)
        if start >= head:
            hspecs = []
            for sp in specs:
                if sp[3] == _MAIN:
                    hspecs.append((sp[0], sp[1], sp[2] + start, _MAIN_ABS))
                elif sp[3] == 0:
                    hspecs.append((sp[0], sp[1], sp[2], _MAIN_ABS))
                else:
                    hspecs.append((sp[0], sp[1], sp[2], sp[3] - 1))
            meta = _meta(skeleton, hspecs, f)
            merged = head + PyBytes_GET_SIZE(meta) <= start
    if merged:
        offset = blk_off[0]
        dst = ring.base + offset
        _write_head(dst, meta, blk_off + 1, blk_size + 1, nb - 1)
        _copy_all(copies, dst + start, ring)
        # An adopted main block is handed over as the main block, not named again.
        skip = 0 if task.n >= 1 else 1
    else:
        meta = _meta(skeleton, specs, f)
        base = _align(_HEAD + 16 * nb + PyBytes_GET_SIZE(meta))
        offset = task.reserve(base + pos)
        dst = ring.base + offset
        _write_head(dst, meta, blk_off, blk_size, nb)
        _copy_all(copies, dst + base, ring)
        skip = 0
    while True:
        try:
            commit_n(ring, slot, offset, index, generation, kind, adopt + skip,
                     nadopt - skip)
            break
        except QueueFull:
            task.wait()
    for k in range(nadopt):
        hook_adopted(adopt[k])


cdef void _copy_all(list copies, char *dst, Ring ring) except *:
    cdef cnp.ndarray a
    cdef Py_ssize_t p, n
    cdef const char *src
    for a, p in copies:
        if cnp.PyArray_IS_C_CONTIGUOUS(a):
            src = <const char *>cnp.PyArray_DATA(a)
            n = cnp.PyArray_NBYTES(a)
            with nogil:
                memcpy(dst + p, src, n)
        else:  # numpy copies strided data with the GIL released
            np.copyto(_array_at(a.dtype, (<object>a).shape, dst + p, ring), a)


cdef void _write_head(char *dst, bytes meta, const uint64_t *offsets,
                      const uint64_t *sizes, int naux):
    """The header: the length of ``meta``, the ``naux`` auxiliary blocks, ``meta``."""
    cdef Py_ssize_t m = PyBytes_GET_SIZE(meta)
    cdef int k
    _put_u64(dst, <uint64_t>m | (<uint64_t>naux << 32))
    for k in range(naux):
        _put_u64(dst + _HEAD + 16 * k, offsets[k])
        _put_u64(dst + _HEAD + 16 * k + 8, sizes[k])
    memcpy(dst + _HEAD + 16 * naux, PyBytes_AS_STRING(meta), m)


# -- parent side ----------------------------------------------------------------------


_IMMUTABLE = (int, float, bool, str, bytes, type(None), complex, np.generic)


def _shareable(skel):
    """True if a skeleton holds nothing mutable that results could come to share."""
    t = type(skel)
    if skel is REF or isinstance(skel, _IMMUTABLE):
        return True
    if t is tuple or t is list or (isinstance(skel, tuple)
                                   and hasattr(skel, "_fields")):
        return all(_shareable(x) for x in skel)
    if t is dict:
        return all(_shareable(v) for v in skel.values())
    return False


cdef class _Spec:
    cdef cnp.dtype dtype
    cdef int ndim
    cdef cnp.npy_intp dims[SQ_MAX_NDIM]
    cdef Py_ssize_t pos
    cdef Py_ssize_t nbytes
    cdef int block


cdef _Spec _make_spec(spec):
    dt, shape, pos, k = spec
    cdef _Spec s = _Spec()
    s.dtype = np.dtype(dt)
    s.ndim = len(shape)
    if s.ndim > SQ_MAX_NDIM:  # the worker refuses them (_flatten)
        raise RuntimeError("corrupt result header: too many dimensions")
    s.nbytes = s.dtype.itemsize
    for j in range(s.ndim):
        s.dims[j] = shape[j]
        s.nbytes *= shape[j]
    s.pos = pos
    s.block = k
    return s


_decoded = {}  # meta bytes -> (skeleton, [_Spec]), for skeletons safe to share


cdef object _rebuild(object skel, list arrays, Py_ssize_t *next_):
    t = type(skel)
    if skel is REF:
        next_[0] += 1
        return arrays[next_[0] - 1]
    if t is tuple:
        return tuple([_rebuild(x, arrays, next_) for x in <tuple>skel])
    if t is list:
        return [_rebuild(x, arrays, next_) for x in <list>skel]
    if t is dict:
        return {k: _rebuild(v, arrays, next_) for k, v in (<dict>skel).items()}
    if isinstance(skel, tuple) and hasattr(skel, "_fields"):
        return t(*[_rebuild(x, arrays, next_) for x in skel])
    return skel


cdef object _new_array(cnp.dtype dtype, int ndim, cnp.npy_intp *dims, char *data,
                       base):
    """A writable C-contiguous array over ``data``, kept alive by ``base``."""
    Py_INCREF(dtype)  # PyArray_NewFromDescr steals it
    a = PyArray_NewFromDescr(cnp.ndarray, dtype, ndim, dims, NULL, data,
                             cnp.NPY_ARRAY_CARRAY, None)
    cnp.set_array_base(a, base)
    return a


cdef object _array_at(cnp.dtype dtype, tuple shape, char *data, base):
    """:func:`_new_array` with the dimensions given as a tuple."""
    cdef cnp.npy_intp dims[SQ_MAX_NDIM]
    cdef int ndim = len(shape)
    if ndim > SQ_MAX_NDIM:
        raise ValueError(f"more than SQ_MAX_NDIM = {SQ_MAX_NDIM} dimensions")
    for j in range(ndim):
        dims[j] = shape[j]
    return _new_array(dtype, ndim, dims, data, base)


cdef object _view(_Spec s, Block b, Py_ssize_t start):
    """The array of spec ``s`` in block ``b``, ``start`` bytes into its payload."""
    cdef Py_ssize_t pos = start + s.pos
    if s.pos < 0 or pos + s.nbytes > <Py_ssize_t>b.nbytes:
        raise RuntimeError("corrupt result header: an array lies outside its block")
    return _new_array(s.dtype, s.ndim, s.dims, b.ring.base + b.offset + pos, b)


def decode(Ring ring, uint64_t offset, uint64_t nbytes):
    """Rebuild the result in block ``offset`` as arrays viewing shared memory.

    The blocks are released when the last array viewing them is garbage-collected
    (at once if the result holds no array).
    """
    cdef Block main = make_block(ring, offset, nbytes, True)  # acknowledges it
    cdef const char *p = ring.base + offset
    cdef uint64_t word, m, naux
    cdef list aux = [], arrays
    cdef _Spec s
    cdef Py_ssize_t next_ = 0, base
    cdef uint64_t k
    if nbytes < _HEAD:
        raise RuntimeError("corrupt result header: block too small")
    word = _get_u64(p)
    m = word & 0xffffffffu
    naux = word >> 32
    if naux > SQ_RESULT_BLOCKS or _HEAD + 16 * naux + m > nbytes:
        raise RuntimeError("corrupt result header")
    for k in range(naux):
        aux.append(make_block(ring, _get_u64(p + _HEAD + 16 * k),
                              _get_u64(p + _HEAD + 16 * k + 8), True))
    meta = PyBytes_FromStringAndSize(p + _HEAD + 16 * naux, m)
    cached = _decoded.get(meta)
    if cached is None:
        skeleton, specs = pickle.loads(meta)
        cached = (skeleton, [_make_spec(x) for x in specs])
        if _shareable(skeleton):
            if len(_decoded) >= _CACHE:
                _decoded.clear()
            _decoded[meta] = cached
    skeleton, specs = cached
    if not specs:
        return skeleton
    base = _align(_HEAD + 16 * naux + m)
    arrays = []
    for s in specs:
        if s.block == _MAIN:
            arrays.append(_view(s, main, base))
        elif s.block == _MAIN_ABS:
            arrays.append(_view(s, main, 0))
        elif 0 <= s.block < len(aux):
            arrays.append(_view(s, aux[s.block], 0))
        else:
            raise RuntimeError("corrupt result header: no such block")
    if skeleton is REF:
        return arrays[0]
    return _rebuild(skeleton, arrays, &next_)
