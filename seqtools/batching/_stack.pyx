# Batch stacking kernels behind seqtools.batching.stacking (the public API and docs live there).
#
# Structure(sample) reads the nested structure of one sample: a tree of containers
# (tuple, list, dict) whose leaves are numbered fields, each with a per-sample shape
# and dtype. stack_into() walks every sample against that tree with the GIL held --
# structure, shape and dtype checks, one buffer acquired per leaf, Python scalars
# converted into a staging block -- and only once everything has passed does it
# release the GIL to copy the rows: memcpy for C-contiguous rows, a strided gather
# otherwise. Nothing is written to the outputs before every check has passed, so a
# failed call leaves a caller's `out` untouched.
#
# RowGather is the fused path (the read plans of seqtools/views/fusion.py, copied by
# seqtools.batching.stacking._stack_plan): whole rows of source arrays, picked by
# int64 (source, row) index arrays, copied straight into the outputs. No per-row
# Python object exists: the sources' buffers are acquired once per call, every
# index is checked, and the copy runs with the GIL released. RowSources is the same
# copy for a compiled view graph (seqtools.views.fusion.Program, read by
# stacking._Stacker): the sources' buffers are acquired once, and each batch pays
# only for its indices. RowSources.job() checks one batch's copy and hands it over
# as a CopyJob (declared in _stack.pxd), which seqtools/loaders/_copypool.pyx runs
# on its native threads.

from .._buffers cimport release_buffers
# the most dimensions a row has: numpy's own maximum (csrc/sq_limits.h)
from .._limits cimport SQ_MAX_NDIM as MAX_NDIM
cimport cython
from cpython.buffer cimport (
    PyBUF_C_CONTIGUOUS,
    PyBUF_STRIDES,
    PyBUF_WRITABLE,
    PyObject_GetBuffer,
)
from cpython.complex cimport PyComplex_ImagAsDouble, PyComplex_RealAsDouble
from cpython.float cimport PyFloat_AS_DOUBLE
from cpython.long cimport PyLong_AsLongLong
from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc
from libc.string cimport memcpy

import numpy as np

cdef object _ndarray = np.ndarray
cdef object _generic = np.generic
cdef object _asarray = np.asarray
cdef object _empty = np.empty

# The dtype numpy gives each Python scalar type (np.asarray(x).dtype), which is
# what a field of such scalars stacks into.
cdef object _BOOL_DT = np.asarray(True).dtype
cdef object _INT_DT = np.asarray(0).dtype
cdef object _FLOAT_DT = np.asarray(0.0).dtype
cdef object _COMPLEX_DT = np.asarray(0j).dtype

cdef enum:
    PY_NONE = 0
    PY_BOOL = 1
    PY_INT = 2
    PY_FLOAT = 3
    PY_COMPLEX = 4

cdef dict _PYKIND_OF_DTYPE = {
    _BOOL_DT: PY_BOOL, _INT_DT: PY_INT, _FLOAT_DT: PY_FLOAT, _COMPLEX_DT: PY_COMPLEX
}

cdef enum:
    N_LEAF = 0
    N_TUPLE = 1
    N_LIST = 2
    N_DICT = 3

# -- kernels (no Python objects, GIL released) ----------------------------------------

cdef struct Src:
    # One sample's leaf: where its bytes are and, unless the row is C-contiguous
    # (strides == NULL), how to walk them. shape/strides point into a Py_buffer
    # held by the caller until the copy is done.
    const char* ptr
    int ndim
    const Py_ssize_t* shape
    const Py_ssize_t* strides


ctypedef fused word_t:
    uint8_t
    uint16_t
    uint32_t
    uint64_t


cdef inline void _copy_items(char* dst, Py_ssize_t dstride, const char* src,
                             Py_ssize_t sstride, Py_ssize_t n,
                             word_t tag) noexcept nogil:
    # n items of sizeof(word_t) bytes. Loads go through memcpy of a constant size,
    # which compiles to a plain load and, unlike a cast, is defined for unaligned
    # pointers (structured views, odd buffer offsets). Stores are typed when dst is
    # aligned, which lets the compiler vectorise the contiguous case (measured ~1.7x
    # faster than a memcpy store with gcc -O3).
    cdef Py_ssize_t k
    cdef word_t w
    cdef word_t* d
    cdef Py_ssize_t size = sizeof(word_t)
    if (<size_t>dst) % size == 0 and dstride % size == 0:
        d = <word_t*>dst
        if dstride == size:
            for k in range(n):
                memcpy(&w, src + k * sstride, sizeof(word_t))
                d[k] = w
        else:
            dstride = dstride // size
            for k in range(n):
                memcpy(&w, src + k * sstride, sizeof(word_t))
                d[k * dstride] = w
    else:
        for k in range(n):
            memcpy(&w, src + k * sstride, sizeof(word_t))
            memcpy(dst + k * dstride, &w, sizeof(word_t))


cdef inline void _copy_line(char* dst, Py_ssize_t dstride, const char* src,
                            Py_ssize_t sstride, Py_ssize_t n,
                            Py_ssize_t block) noexcept nogil:
    cdef Py_ssize_t k
    if block == 8:
        _copy_items(dst, dstride, src, sstride, n, <uint64_t>0)
    elif block == 4:
        _copy_items(dst, dstride, src, sstride, n, <uint32_t>0)
    elif block == 2:
        _copy_items(dst, dstride, src, sstride, n, <uint16_t>0)
    elif block == 1:
        _copy_items(dst, dstride, src, sstride, n, <uint8_t>0)
    else:
        for k in range(n):
            memcpy(dst + k * dstride, src + k * sstride, block)


cdef void copy_strided(char* dst, const char* src, int ndim, const Py_ssize_t* shape,
                       const Py_ssize_t* strides, Py_ssize_t itemsize) noexcept nogil:
    """Copy one non-empty strided row into contiguous dst (C order).

    Walks the row in destination (C) order, as numpy's copies do: writes are
    sequential, reads strided. Dimensions contiguous in both source and destination
    are merged, and a tail contiguous in both is copied as one block.
    """
    cdef Py_ssize_t n[MAX_NDIM]
    cdef Py_ssize_t ss[MAX_NDIM]
    cdef Py_ssize_t ds[MAX_NDIM]
    cdef Py_ssize_t idx[MAX_NDIM]
    cdef Py_ssize_t dstride = itemsize
    cdef Py_ssize_t block = itemsize
    cdef int nd = 0
    cdef int d, k
    # Innermost first; length-1 dimensions are dropped.
    for d in range(ndim - 1, -1, -1):
        if shape[d] != 1:
            n[nd] = shape[d]
            ss[nd] = strides[d]
            ds[nd] = dstride
            nd += 1
        dstride *= shape[d]
    # Merge dimension d into d - 1 (the next inner one) where both are contiguous.
    k = 0
    for d in range(1, nd):
        if ss[d] == ss[k] * n[k] and ds[d] == ds[k] * n[k]:
            n[k] *= n[d]
        else:
            k += 1
            n[k] = n[d]
            ss[k] = ss[d]
            ds[k] = ds[d]
    if nd > 0:
        nd = k + 1
    # A tail contiguous in both source and destination is one block.
    if nd > 0 and ss[0] == block and ds[0] == block:
        block *= n[0]
        for d in range(1, nd):
            n[d - 1] = n[d]
            ss[d - 1] = ss[d]
            ds[d - 1] = ds[d]
        nd -= 1
    if nd == 0:
        memcpy(dst, src, block)
        return
    for d in range(nd):
        idx[d] = 0
    while True:
        _copy_line(dst, ds[0], src, ss[0], n[0], block)
        # Odometer over the outer dimensions 1 .. nd-1.
        d = 1
        while d < nd:
            idx[d] += 1
            src += ss[d]
            dst += ds[d]
            if idx[d] < n[d]:
                break
            src -= ss[d] * n[d]
            dst -= ds[d] * n[d]
            idx[d] = 0
            d += 1
        if d == nd:
            return


cdef void copy_rows(char* dst, const Src* srcs, Py_ssize_t n, Py_ssize_t rowbytes,
                    Py_ssize_t itemsize) noexcept nogil:
    """Copy n rows of rowbytes (> 0) bytes each into contiguous dst."""
    cdef Py_ssize_t i
    for i in range(n):
        if srcs[i].strides == NULL:
            memcpy(dst + i * rowbytes, srcs[i].ptr, rowbytes)
        else:
            copy_strided(dst + i * rowbytes, srcs[i].ptr, srcs[i].ndim, srcs[i].shape,
                         srcs[i].strides, itemsize)


cdef void copy_fields(char** dst, const Src* srcs, Py_ssize_t n, Py_ssize_t nf,
                      const Py_ssize_t* rowbytes, const Py_ssize_t* itemsize
                      ) noexcept nogil:
    cdef Py_ssize_t f
    for f in range(nf):
        if rowbytes[f] > 0:
            copy_rows(dst[f], &srcs[f * n], n, rowbytes[f], itemsize[f])


cdef bint _is_c_contiguous(const Py_buffer* view):
    cdef Py_ssize_t expected = view.itemsize
    cdef int d
    if view.strides == NULL:
        return True
    for d in range(view.ndim - 1, -1, -1):
        if view.shape[d] != 1 and view.strides[d] != expected:
            return False
        expected *= view.shape[d]
    return True


# -- the plan -------------------------------------------------------------------------

cdef class _Node:
    cdef int kind
    cdef _Field field            # leaf
    cdef tuple children          # containers, in order
    cdef tuple keys              # dict: keys in the first sample's order
    cdef object tuple_type       # tuple: namedtuple class to rebuild, else None
    cdef _Node parent
    cdef object step             # index or key in the parent
    cdef object label            # path text shown instead of [step], or None

    cdef str path(self):
        cdef list parts = []
        cdef _Node node = self
        while node.parent is not None:
            parts.append(f"[{node.step!r}]" if node.label is None else node.label)
            node = node.parent
        return "".join(reversed(parts))


cdef class _Field:
    cdef Py_ssize_t index
    cdef _Node node
    cdef tuple shape             # per sample
    cdef object dtype
    cdef int ndim
    cdef Py_ssize_t cshape[MAX_NDIM]
    cdef Py_ssize_t itemsize
    cdef Py_ssize_t rowbytes
    cdef int pykind              # the Python scalar type this field accepts, if any
    cdef bint flexible           # dtype kind S, U or V: numpy scalars need np.asarray


cdef str _describe(v):
    """Describe v as a structure node, for error messages."""
    if isinstance(v, tuple):
        return f"a {type(v).__name__} of {len(v)} items"
    if isinstance(v, list):
        return f"a list of {len(v)} items"
    if isinstance(v, dict):
        return f"a dict with keys {list(v)!r}"
    shape = getattr(v, "shape", None)
    dtype = getattr(v, "dtype", None)
    if isinstance(shape, tuple) and dtype is not None:
        return f"{type(v).__name__} of shape {shape} and dtype {dtype}"
    return f"{type(v).__name__}"


cdef str _describe_node(_Node node):
    if node.kind == N_TUPLE:
        return f"a tuple of {len(node.children)} items"
    if node.kind == N_LIST:
        return f"a list of {len(node.children)} items"
    if node.kind == N_DICT:
        return f"a dict with keys {list(node.keys)!r}"
    return (f"an array or scalar of shape {node.field.shape} "
            f"and dtype {node.field.dtype}")


cdef int _pykind_of(type t):
    if t is float:
        return PY_FLOAT
    if t is int:
        return PY_INT
    if t is bool:
        return PY_BOOL
    if t is complex:
        return PY_COMPLEX
    return PY_NONE


cdef object _pykind_dtype(int kind):
    if kind == PY_FLOAT:
        return _FLOAT_DT
    if kind == PY_INT:
        return _INT_DT
    if kind == PY_BOOL:
        return _BOOL_DT
    return _COMPLEX_DT


cdef class Structure:
    """The stacked structure planned from one sample (see seqtools.batching.stacking.plan)."""

    cdef _Node root
    cdef list fields             # of _Field, in depth-first order

    def __init__(self, sample, labels=None):
        # labels: for a tuple sample, the path text of each item in error messages
        # (the fused path stacks several parts of a sample as one tuple).
        cdef _Node child
        self.fields = []
        self.root = self._plan(sample, None, None)
        if labels is not None:
            if self.root.kind != N_TUPLE or len(labels) != len(self.root.children):
                raise ValueError("labels need a tuple sample with one label per item")
            for child, label in zip(self.root.children, labels):
                child.label = str(label)

    cdef _Node _plan(self, v, _Node parent, step):
        cdef _Node node = _Node.__new__(_Node)
        cdef _Field fd
        cdef Py_ssize_t k
        node.parent = parent
        node.step = step
        if isinstance(v, tuple):
            node.kind = N_TUPLE
            node.tuple_type = type(v) if hasattr(type(v), "_fields") else None
            node.children = tuple([self._plan(x, node, k) for k, x in enumerate(v)])
        elif isinstance(v, list):
            node.kind = N_LIST
            node.children = tuple([self._plan(x, node, k) for k, x in enumerate(v)])
        elif isinstance(v, dict):
            node.kind = N_DICT
            node.keys = tuple(v)
            node.children = tuple([self._plan(v[key], node, key) for key in node.keys])
        else:
            node.kind = N_LEAF
            fd = _Field.__new__(_Field)
            fd.index = len(self.fields)
            fd.node = node
            node.field = fd
            kind = _pykind_of(type(v))
            if kind != PY_NONE:
                fd.shape = ()
                fd.dtype = _pykind_dtype(kind)
            else:
                a = v if isinstance(v, (_ndarray, _generic)) else _asarray(v)
                fd.shape = tuple(a.shape)
                fd.dtype = a.dtype
                _check_dtype(fd.dtype, v, node)
            fd.ndim = len(fd.shape)
            fd.itemsize = fd.dtype.itemsize
            fd.rowbytes = fd.itemsize
            for k in range(fd.ndim):
                fd.cshape[k] = fd.shape[k]
                fd.rowbytes *= fd.shape[k]
            fd.flexible = fd.dtype.kind in "SUV"
            fd.pykind = PY_NONE
            if fd.ndim == 0:
                fd.pykind = _PYKIND_OF_DTYPE.get(fd.dtype, PY_NONE)
            self.fields.append(fd)
        return node

    @property
    def nfields(self):
        return len(self.fields)

    def field_info(self):
        """Return ``[(path, shape, dtype), ...]`` per field, shapes per sample."""
        cdef _Field fd
        return [(fd.node.path(), fd.shape, fd.dtype) for fd in self.fields]

    def unflatten(self, arrays):
        """Rebuild the planned structure with ``arrays[i]`` in place of field i."""
        return _unflatten(self.root, arrays)

    def flatten_out(self, out, Py_ssize_t n):
        """Check ``out`` against the plan for n samples; return its arrays in order."""
        cdef list arrays = []
        _flatten_out(self.root, out, n, arrays)
        return arrays


cdef _check_dtype(dtype, v, _Node node):
    if dtype.hasobject:
        raise TypeError(
            f"{_where(node, 0)}: cannot stack {type(v).__name__} values: as an array "
            f"its dtype is {dtype}, which holds Python references rather than data; "
            "convert the field to a numeric or fixed-size dtype, or leave it out of "
            "the samples"
        )
    if dtype.kind in "mM":
        raise TypeError(
            f"{_where(node, 0)}: cannot stack {dtype} values: numpy does not export "
            "datetime dtypes through the buffer protocol; stack x.view('int64') instead"
        )


cdef object _unflatten(_Node node, arrays):
    if node.kind == N_LEAF:
        return arrays[node.field.index]
    items = [_unflatten(child, arrays) for child in node.children]
    if node.kind == N_LIST:
        return items
    if node.kind == N_DICT:
        return dict(zip(node.keys, items))
    if node.tuple_type is not None:
        return node.tuple_type._make(items)
    return tuple(items)


cdef str _where(_Node node, Py_ssize_t i):
    """Name node in sample i (i < 0: in the `out` argument), for error messages."""
    return f"out{node.path()}" if i < 0 else f"sample[{i}]{node.path()}"


cdef str _like(_Node node, Py_ssize_t i):
    return "the stacked result" if i < 0 else f"sample[0]{node.path()}"


cdef int _check_container(_Node node, v, Py_ssize_t i) except -1:
    """Raise ValueError unless v is a container matching node (a non-leaf) in sample i
    (i < 0: in `out`)."""
    cdef bint ok
    if node.kind == N_TUPLE:
        ok = isinstance(v, tuple) and len(v) == len(node.children)
    elif node.kind == N_LIST:
        ok = isinstance(v, list) and len(v) == len(node.children)
    else:
        ok = isinstance(v, dict) and len(v) == len(node.keys)
        if ok:
            for key in node.keys:
                if key not in v:
                    ok = False
                    break
    if ok:
        return 0
    msg = (f"{_where(node, i)}: expected {_describe_node(node)} "
           f"(as in {_like(node, i)}), got {_describe(v)}")
    if node.kind == N_DICT and isinstance(v, dict):
        missing = [k for k in node.keys if k not in v]
        extra = [k for k in v if k not in node.keys]
        if missing:
            msg += f"; missing keys {missing!r}"
        if extra:
            msg += f"; unexpected keys {extra!r}"
    raise ValueError(msg)


cdef int _flatten_out(_Node node, v, Py_ssize_t n, list arrays) except -1:
    cdef _Field fd
    cdef Py_ssize_t k
    if node.kind != N_LEAF:
        _check_container(node, v, -1)
        if node.kind == N_DICT:
            for k in range(len(node.keys)):
                _flatten_out(node.children[k], v[node.keys[k]], n, arrays)
        else:
            for k in range(len(node.children)):
                _flatten_out(node.children[k], v[k], n, arrays)
        return 0
    fd = node.field
    shape = (n,) + fd.shape
    if not isinstance(v, _ndarray):
        raise TypeError(
            f"{_where(node, -1)}: expected a numpy array of shape {shape} and dtype "
            f"{fd.dtype}, "
            f"got {_describe(v)}"
        )
    if v.shape != shape or v.dtype != fd.dtype:
        raise ValueError(
            f"{_where(node, -1)}: expected an array of shape {shape} and dtype "
            f"{fd.dtype}, "
            f"got shape {v.shape} and dtype {v.dtype}"
        )
    if not v.flags.c_contiguous:
        raise ValueError(f"{_where(node, -1)}: the output array must be C-contiguous")
    if not v.flags.writeable:
        raise ValueError(f"{_where(node, -1)}: the output array is read-only")
    arrays.append(v)
    return 0


# -- one call -------------------------------------------------------------------------

cdef class _Batch:
    """The buffers and staging memory of one stack_into() call.

    Owns srcs (nfields * n, field-major), one Py_buffer per source and per output
    (released by release(), or at deallocation), and per-field staging blocks for
    Python scalars.
    """

    cdef Py_ssize_t n, nfields
    cdef Src* srcs
    cdef Py_buffer* bufs
    cdef Py_buffer* outbufs
    cdef char** stage

    def __cinit__(self, Py_ssize_t nfields, Py_ssize_t n):
        self.n = n
        self.nfields = nfields
        self.srcs = <Src*>calloc(max(nfields * n, 1), sizeof(Src))
        self.bufs = <Py_buffer*>calloc(max(nfields * n, 1), sizeof(Py_buffer))
        self.outbufs = <Py_buffer*>calloc(max(nfields, 1), sizeof(Py_buffer))
        self.stage = <char**>calloc(max(nfields, 1), sizeof(char*))
        if (self.srcs == NULL or self.bufs == NULL or self.outbufs == NULL
                or self.stage == NULL):
            raise MemoryError()

    cdef void release(self):
        cdef Py_ssize_t k
        release_buffers(self.bufs, self.nfields * self.n)
        free(self.bufs)
        self.bufs = NULL
        release_buffers(self.outbufs, self.nfields)
        free(self.outbufs)
        self.outbufs = NULL
        if self.stage != NULL:
            for k in range(self.nfields):
                free(self.stage[k])
            free(self.stage)
            self.stage = NULL
        free(self.srcs)
        self.srcs = NULL

    def __dealloc__(self):
        self.release()


cdef int _load(_Node node, v, Py_ssize_t i, _Batch b) except -1:
    cdef Py_ssize_t k
    if node.kind == N_LEAF:
        return _load_leaf(node.field, v, i, b)
    if node.kind == N_TUPLE:
        if type(v) is not tuple or len(<tuple>v) != len(node.children):
            _check_container(node, v, i)
        for k in range(len(node.children)):
            _load(node.children[k], v[k], i, b)
    elif node.kind == N_LIST:
        if type(v) is not list or len(<list>v) != len(node.children):
            _check_container(node, v, i)
        for k in range(len(node.children)):
            _load(node.children[k], v[k], i, b)
    else:
        _check_container(node, v, i)
        for k in range(len(node.keys)):
            _load(node.children[k], v[node.keys[k]], i, b)
    return 0


cdef _mismatch(_Field fd, v, Py_ssize_t i, str got, object got_dtype):
    path = fd.node.path()
    msg = (f"sample[{i}]{path}: expected shape {fd.shape} and dtype {fd.dtype} "
           f"(as in sample[0]{path}), got {got}")
    if got_dtype is not None and got_dtype != fd.dtype:
        msg += (f"; all samples of a field must share one dtype: cast them first, "
                f"e.g. x.astype({_dtype_expr(fd.dtype)})")
    return ValueError(msg)


cdef str _dtype_expr(dtype):
    """Python source for dtype, for hints: np.float32, np.dtype('>f8')..."""
    if dtype.isnative and dtype.fields is None and hasattr(np, dtype.name):
        return f"np.{dtype.name}"
    return f"np.dtype({dtype.descr if dtype.fields is not None else dtype.str!r})"


cdef int _load_leaf(_Field fd, v, Py_ssize_t i, _Batch b) except -1:
    cdef Py_ssize_t k = fd.index * b.n + i
    cdef Src* s = &b.srcs[k]
    cdef Py_buffer* view = &b.bufs[k]
    cdef char* p
    cdef long long x
    cdef int kind = _pykind_of(type(v))
    cdef int d
    if kind != PY_NONE:
        # A Python scalar: convert it now (the conversion needs the GIL), copy later.
        if kind != fd.pykind:
            dt = _pykind_dtype(kind)
            raise _mismatch(fd, v, i, f"{type(v).__name__} (shape () and dtype {dt})",
                            dt)
        if b.stage[fd.index] == NULL:
            b.stage[fd.index] = <char*>malloc(b.n * fd.itemsize)
            if b.stage[fd.index] == NULL:
                raise MemoryError()
        p = b.stage[fd.index] + i * fd.itemsize
        if kind == PY_FLOAT:
            (<double*>p)[0] = PyFloat_AS_DOUBLE(v)
        elif kind == PY_BOOL:
            (<uint8_t*>p)[0] = 1 if v is True else 0
        elif kind == PY_COMPLEX:
            (<double*>p)[0] = PyComplex_RealAsDouble(v)
            (<double*>p)[1] = PyComplex_ImagAsDouble(v)
        else:
            try:
                x = PyLong_AsLongLong(v)
                if fd.itemsize == 4:
                    if x < -2147483648 or x > 2147483647:
                        raise OverflowError()
                    (<int32_t*>p)[0] = <int32_t>x
                else:
                    (<int64_t*>p)[0] = <int64_t>x
            except OverflowError:
                raise ValueError(
                    f"sample[{i}]{fd.node.path()}: int {v} does not fit in "
                    f"{fd.dtype}, the dtype of this field"
                ) from None
        s.ptr = p
        s.ndim = 0
        s.strides = NULL
        return 0
    if not (isinstance(v, _ndarray) or isinstance(v, _generic)):
        if isinstance(v, (tuple, list, dict)):
            raise ValueError(
                f"sample[{i}]{fd.node.path()}: expected {_describe_node(fd.node)} "
                f"(as in sample[0]{fd.node.path()}), got {_describe(v)}"
            )
        v = _asarray(v)
    dt = v.dtype
    if dt is not fd.dtype and dt != fd.dtype:
        raise _mismatch(fd, v, i, f"shape {v.shape} and dtype {dt}", dt)
    if fd.flexible and not isinstance(v, _ndarray):
        # np.bytes_ and np.str_ scalars export the buffer of their Python base class
        # (bytes: 1-d, one byte per item; str: none), not a 0-d item.
        v = _asarray(v)
    try:
        PyObject_GetBuffer(v, view, PyBUF_STRIDES)
    except (BufferError, ValueError, TypeError) as e:
        raise TypeError(
            f"sample[{i}]{fd.node.path()}: cannot read the {type(v).__name__} "
            f"through the buffer protocol: {e}"
        ) from None
    if view.itemsize != fd.itemsize:
        # Cannot happen for numpy exporters with matching dtypes; guards the copy.
        raise TypeError(
            f"sample[{i}]{fd.node.path()}: the {type(v).__name__} exports items of "
            f"{view.itemsize} bytes, expected {fd.itemsize} for dtype {fd.dtype}"
        )
    if view.ndim != fd.ndim:
        raise _mismatch(fd, v, i, f"shape {v.shape}", None)
    for d in range(fd.ndim):
        if view.shape[d] != fd.cshape[d]:
            raise _mismatch(fd, v, i, f"shape {v.shape}", None)
    s.ptr = <const char*>view.buf
    s.ndim = view.ndim
    s.shape = view.shape
    s.strides = NULL if _is_c_contiguous(view) else view.strides
    return 0


def stack_into(Structure structure, samples, list arrays=None):
    """Check every sample against ``structure``, then copy them with the GIL
    released.

    ``samples`` is a list or tuple. ``arrays`` holds one C-contiguous, writable output
    per field, of shape ``(len(samples),) + field shape`` (as checked by
    ``Structure.flatten_out``); None allocates them after the checks. Returns the
    list of output arrays.
    """
    cdef Py_ssize_t n = len(samples)
    cdef Py_ssize_t nf = len(structure.fields)
    cdef Py_ssize_t i, f
    cdef _Field fd
    cdef _Batch b = _Batch(nf, n)
    cdef char** dst = NULL
    cdef Py_ssize_t* rowbytes = NULL
    cdef Py_ssize_t* itemsize = NULL
    try:
        for i in range(n):
            _load(structure.root, samples[i], i, b)
        if arrays is None:
            arrays = [_empty((n,) + fd.shape, fd.dtype) for fd in structure.fields]
        elif len(arrays) != nf:
            raise ValueError(f"expected {nf} output arrays, got {len(arrays)}")
        dst = <char**>malloc(max(nf, 1) * sizeof(char*))
        rowbytes = <Py_ssize_t*>malloc(max(nf, 1) * sizeof(Py_ssize_t))
        itemsize = <Py_ssize_t*>malloc(max(nf, 1) * sizeof(Py_ssize_t))
        if dst == NULL or rowbytes == NULL or itemsize == NULL:
            raise MemoryError()
        for f in range(nf):
            fd = structure.fields[f]
            PyObject_GetBuffer(arrays[f], &b.outbufs[f],
                               PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
            if b.outbufs[f].len != n * fd.rowbytes:
                raise ValueError(
                    f"output array {f} holds {b.outbufs[f].len} bytes, "
                    f"expected {n * fd.rowbytes}"
                )
            dst[f] = <char*>b.outbufs[f].buf
            rowbytes[f] = fd.rowbytes
            itemsize[f] = fd.itemsize
        with nogil:
            copy_fields(dst, b.srcs, n, nf, rowbytes, itemsize)
    finally:
        free(dst)
        free(rowbytes)
        free(itemsize)
        b.release()
    return arrays


# -- fused gathers: rows of source arrays, picked by index arrays ----------------------

cdef Py_ssize_t check_rows(const RowField* f) noexcept nogil:
    """Position of the first row whose (part, local) is out of range, else -1."""
    cdef Py_ssize_t k, p
    cdef int64_t i
    if f.local == NULL:
        return -1 if f.nrows <= f.srcs[0].length else f.srcs[0].length
    for k in range(f.nrows):
        p = 0 if f.part == NULL else f.part[k]
        if p < 0 or p >= f.nsrcs:
            return k
        i = f.local[k]
        if i < 0 or i >= f.srcs[p].length:
            return k
    return -1


cdef void gather_field(const RowField* f) noexcept nogil:
    """Copy the (checked) rows of one field into its output."""
    cdef Py_ssize_t k, i
    cdef const RowSrc* s = f.srcs
    cdef char* dst = f.dst
    if f.rowbytes == 0:
        return
    # Rows ahead are not prefetched in software: it gives no measurable gain.
    for k in range(f.nrows):
        if f.part != NULL:
            s = &f.srcs[f.part[k]]
        i = k if f.local == NULL else f.local[k]
        if s.strides == NULL:
            memcpy(dst, s.base + i * s.stride0, f.rowbytes)
        else:
            copy_strided(dst, s.base + i * s.stride0, s.ndim, s.shape, s.strides,
                         f.itemsize)
        dst += f.rowbytes


cdef void gather_fields(const RowField* fs, Py_ssize_t nf) noexcept nogil:
    cdef Py_ssize_t f
    for f in range(nf):
        gather_field(&fs[f])


cdef bint _row_contiguous(const Py_buffer* view):
    cdef Py_ssize_t expected = view.itemsize
    cdef int d
    if view.strides == NULL:
        return True
    for d in range(view.ndim - 1, 0, -1):
        if view.shape[d] != 1 and view.strides[d] != expected:
            return False
        expected *= view.shape[d]
    return True


cdef object _INT64_DT = np.dtype(np.int64)


cdef const int64_t* _index_ptr(a, Py_buffer* view, Py_ssize_t nrows,
                               str what) except? NULL:
    if a is None:
        return NULL
    if not isinstance(a, _ndarray) or a.dtype != _INT64_DT or a.ndim != 1:
        raise TypeError(f"{what} must be a 1-D int64 array, got {_describe(a)}")
    if a.shape[0] != nrows:
        raise ValueError(f"{what} holds {a.shape[0]} indices, expected {nrows}")
    PyObject_GetBuffer(a, view, PyBUF_C_CONTIGUOUS)
    return <const int64_t*>view.buf


cdef int _acquire_sources(Py_ssize_t f, sources, dtype, RowField* fd,
                          Py_buffer* bufs) except -1:
    """Acquire the buffers of field f's source arrays (one per source, into bufs) and
    fill fd.srcs (room for len(sources)), fd.nsrcs, fd.itemsize and fd.rowbytes.

    The buffers acquired are released by the caller, even when this raises.
    """
    cdef Py_ssize_t j, d, rowbytes
    cdef Py_buffer* view
    cdef Py_buffer* first = NULL
    fd.nsrcs = len(sources)
    if fd.nsrcs == 0:
        raise ValueError(f"field {f}: no source arrays")
    for j in range(fd.nsrcs):
        src = sources[j]
        if not isinstance(src, _ndarray) or src.ndim < 1:
            raise TypeError(f"field {f}: source {j} must be a numpy array of "
                            f"at least one dimension, got {_describe(src)}")
        if src.dtype is not dtype and src.dtype != dtype:
            raise ValueError(f"field {f}: source {j} has dtype {src.dtype}, "
                             f"the output {dtype}")
        view = &bufs[j]
        PyObject_GetBuffer(src, view, PyBUF_STRIDES)
        if first == NULL:
            first = view
        elif view.ndim != first.ndim or any_differ(view, first):
            raise ValueError(
                f"field {f}: source {j} has rows of shape {src.shape[1:]}, "
                f"source 0 rows of shape {sources[0].shape[1:]}")
        fd.srcs[j].base = <const char*>view.buf
        fd.srcs[j].length = view.shape[0]
        fd.srcs[j].stride0 = view.strides[0] if view.strides != NULL else (
            view.len // view.shape[0] if view.shape[0] else 0)
        fd.srcs[j].ndim = view.ndim - 1
        fd.srcs[j].shape = view.shape + 1
        fd.srcs[j].strides = (NULL if _row_contiguous(view)
                              else view.strides + 1)
    fd.itemsize = first.itemsize
    rowbytes = first.itemsize
    for d in range(1, first.ndim):
        rowbytes *= first.shape[d]
    fd.rowbytes = rowbytes
    return 0


cdef int _bind_rows(Py_ssize_t f, RowField* fd, sources, part, local, out,
                    Py_buffer* bufs) except -1:
    """Point fd at the indices and output of one call, acquired into bufs[0:3]
    (released by the caller), and check every row; fd.nrows must be set."""
    cdef Py_ssize_t bad
    fd.part = _index_ptr(part, &bufs[0], fd.nrows, f"field {f}: part")
    fd.local = _index_ptr(local, &bufs[1], fd.nrows, f"field {f}: local")
    PyObject_GetBuffer(out, &bufs[2], PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS)
    if bufs[2].len != fd.nrows * fd.rowbytes:
        raise ValueError(f"field {f}: out holds {bufs[2].len} bytes, expected "
                         f"{fd.nrows} rows of {fd.rowbytes} bytes")
    fd.dst = <char*>bufs[2].buf
    bad = check_rows(fd)  # a few ns a row: not worth a GIL hand-over
    if bad >= 0:
        _row_index_error(f, bad, fd.nrows, sources, part, local)
    return 0


cdef _row_index_error(Py_ssize_t f, Py_ssize_t k, Py_ssize_t nrows, sources, part,
                      local):
    if local is None:
        raise IndexError(f"field {f}: {nrows} rows requested from a source of {k} "
                         "rows")
    p = 0 if part is None else int(part[k])
    if p < 0 or p >= len(sources):
        raise IndexError(f"row {k} of the batch: source {p} out of range "
                         f"(field {f} has {len(sources)} sources)")
    raise IndexError(
        f"row {k} of the batch: index {int(local[k])} is out of range for source "
        f"{p} of {len(sources[p])} items")


cdef class RowGather:
    """Rows of source arrays gathered into outputs: checked now, copied by run().

    ``fields`` is a list of ``(sources, part, local, out)``: row ``k`` of ``out`` is
    ``sources[part[k]][local[k]]`` (``part`` None: source 0; ``local`` None: row
    ``k``, with a single source as long as ``out``). Sources are numpy arrays of at
    least one dimension with ``out``'s dtype and one row shape; ``out`` is a
    C-contiguous, writable array of ``len(local)`` such rows (any shape with that
    many bytes: grouped rows). Indices are not wrapped: out-of-range ones raise
    IndexError naming the row. run() copies with the GIL released, once.
    """

    cdef RowField* fields
    cdef Py_ssize_t nfields
    cdef RowSrc* srcs
    cdef Py_buffer* bufs         # acquired: sources, then part, local, out per field
    cdef Py_ssize_t nbufs

    def __cinit__(self, list fields):
        cdef Py_ssize_t f, nsrc = 0, used = 0
        cdef RowField* fd
        for item in fields:
            nsrc += len(item[0])
        self.nfields = len(fields)
        self.fields = <RowField*>calloc(max(self.nfields, 1), sizeof(RowField))
        self.srcs = <RowSrc*>calloc(max(nsrc, 1), sizeof(RowSrc))
        self.bufs = <Py_buffer*>calloc(nsrc + 3 * self.nfields + 1,
                                       sizeof(Py_buffer))
        if self.fields == NULL or self.srcs == NULL or self.bufs == NULL:
            raise MemoryError()
        self.nbufs = nsrc + 3 * self.nfields
        for f in range(self.nfields):
            sources, part, local, out = fields[f]
            fd = &self.fields[f]
            fd.srcs = &self.srcs[used]
            if not isinstance(out, _ndarray):
                raise TypeError(f"field {f}: out must be a numpy array, got "
                                f"{_describe(out)}")
            _acquire_sources(f, sources, out.dtype, fd, &self.bufs[used + 3 * f])
            used += fd.nsrcs
            if local is None:
                if part is not None or fd.nsrcs != 1:
                    raise ValueError(f"field {f}: rows from several sources need "
                                     "local indices")
                fd.nrows = fd.srcs[0].length
            else:
                fd.nrows = len(local)
            _bind_rows(f, fd, sources, part, local, out,
                       &self.bufs[used + 3 * f])

    def run(self):
        """Copy every field (GIL released), then release the buffers. Once only."""
        cdef RowField* fields
        # Taken out of the object first: a second run() from another thread
        # (possible while this one copies without the GIL) finds nothing to run.
        with cython.critical_section(self):
            fields = self.fields
            self.fields = NULL
        if fields == NULL:
            raise RuntimeError("RowGather.run() was already called")
        try:
            with nogil:
                gather_fields(fields, self.nfields)
        finally:
            free(fields)
            self._release()

    cdef void _release(self):
        release_buffers(self.bufs, self.nbufs)
        free(self.bufs)
        self.bufs = NULL
        free(self.fields)
        self.fields = NULL
        free(self.srcs)
        self.srcs = NULL

    def __dealloc__(self):
        self._release()


cdef class RowSources:
    """The source arrays of fused fields, acquired once for many batches.

    ``fields`` is a list with one tuple of source arrays per field (numpy arrays of
    at least one dimension, one dtype and row shape per field). Each ``copy`` call
    gathers one batch: the fused read of a compiled view graph, whose sources do not
    change from batch to batch, pays for the sources' buffers once. Safe to use from
    several threads at once (each call keeps its own state).
    """

    cdef RowField* fields        # per field: sources, row size; no batch state
    cdef Py_ssize_t nfields
    cdef RowSrc* srcs
    cdef Py_buffer* bufs         # the sources' buffers, held until deallocation
    cdef Py_ssize_t nbufs
    cdef readonly tuple sources
    cdef tuple dtypes

    def __cinit__(self, list fields):
        cdef Py_ssize_t f, nsrc = 0, used = 0
        cdef RowField* fd
        self.sources = tuple([tuple(s) for s in fields])
        for sources in self.sources:
            nsrc += len(sources)
        self.nfields = len(fields)
        self.fields = <RowField*>calloc(max(self.nfields, 1), sizeof(RowField))
        self.srcs = <RowSrc*>calloc(max(nsrc, 1), sizeof(RowSrc))
        self.bufs = <Py_buffer*>calloc(max(nsrc, 1), sizeof(Py_buffer))
        if self.fields == NULL or self.srcs == NULL or self.bufs == NULL:
            raise MemoryError()
        self.nbufs = nsrc
        dtypes = []
        for f in range(self.nfields):
            sources = self.sources[f]
            fd = &self.fields[f]
            fd.srcs = &self.srcs[used]
            dtype = getattr(sources[0], "dtype", None) if sources else None
            _acquire_sources(f, sources, dtype, fd, &self.bufs[used])
            used += fd.nsrcs
            dtypes.append(dtype)
        self.dtypes = tuple(dtypes)

    def copy(self, list resolved, list outs):
        """Copy one batch: row ``k`` of ``outs[f]`` is ``sources[part[k]][local[k]]``
        with ``(part, local) = resolved[f]`` (int64 arrays; ``part`` None: source 0).

        Every index and output is checked before anything is written; out-of-range
        indices raise IndexError naming the row. The copy runs with the GIL released.
        """
        cdef RowField* fs = NULL
        cdef Py_buffer* bufs = NULL
        try:
            self._bind(resolved, outs, &fs, &bufs)
            with nogil:
                gather_fields(fs, self.nfields)
        finally:
            release_buffers(bufs, 3 * self.nfields)
            free(bufs)
            free(fs)

    def job(self, list resolved, list outs):
        """The checked copy of ``copy(resolved, outs)``, as a :class:`CopyJob` to
        run here (``run()``) or on a pool of copy threads (``pool.submit(job)``).
        Checks, and raises, as ``copy`` does; writes nothing yet."""
        cdef CopyJob job = CopyJob.__new__(CopyJob)
        job.sources = self  # keeps self.srcs, which the fields point into, alive
        job.nbufs = 3 * self.nfields
        self._bind(resolved, outs, &job.data.fields, &job.bufs)
        job.data.nfields = self.nfields
        return job

    cdef int _bind(self, list resolved, list outs, RowField** fields,
                   Py_buffer** buffers) except -1:
        """Allocate (into *fields, *buffers: the caller frees and releases them,
        whatever happens) and check one batch's fields."""
        cdef Py_ssize_t f
        cdef RowField* fs
        cdef Py_buffer* bufs
        if len(resolved) != self.nfields or len(outs) != self.nfields:
            raise ValueError(f"expected indices and an output for each of the "
                             f"{self.nfields} fields")
        fields[0] = fs = <RowField*>malloc(max(self.nfields, 1) * sizeof(RowField))
        buffers[0] = bufs = <Py_buffer*>calloc(max(3 * self.nfields, 1),
                                               sizeof(Py_buffer))
        if fs == NULL or bufs == NULL:
            raise MemoryError()
        for f in range(self.nfields):
            part, local = resolved[f]
            out = outs[f]
            if not isinstance(out, _ndarray):
                raise TypeError(f"field {f}: out must be a numpy array, got "
                                f"{_describe(out)}")
            if out.dtype is not self.dtypes[f] and out.dtype != self.dtypes[f]:
                raise ValueError(f"field {f}: the sources have dtype "
                                 f"{self.dtypes[f]}, out {out.dtype}")
            if local is None:
                raise TypeError(f"field {f}: local must be a 1-D int64 array")
            fs[f] = self.fields[f]
            fs[f].nrows = len(local)
            _bind_rows(f, &fs[f], self.sources[f], part, local, out, &bufs[3 * f])
        return 0

    def __dealloc__(self):
        release_buffers(self.bufs, self.nbufs)
        free(self.bufs)
        free(self.fields)
        free(self.srcs)


# -- copy jobs, run by the pool of native threads of seqtools/loaders/_copypool.pyx --

cdef void _run_copy(sq_job* job) noexcept nogil:
    cdef CopyData* d = <CopyData*>job
    gather_fields(d.fields, d.nfields)


cdef class CopyRunner:
    """Where a submitted :class:`CopyJob` runs: the job waits through it, and asks
    it, when dropped, to make sure no thread touches the job any more.
    ``seqtools.loaders._copypool.CopyPool`` is one; this base runs nothing."""

    cdef int wait_job(self, sq_job* job, double timeout) except -1:
        raise NotImplementedError("CopyRunner.wait_job")

    cdef void settle_job(self, sq_job* job) noexcept:
        pass


# A job dropped while queued or running must still reach its runner in
# __dealloc__ (to take the job back or wait), so the garbage collector must not
# clear `runner` first; no cycle runs through a job's own references (its
# RowSources and runner hold none back).
@cython.no_gc_clear
cdef class CopyJob:
    """One checked batch copy (made by :meth:`RowSources.job`): run it here with
    ``run()``, or submit it to a pool (``seqtools.loaders._copypool.CopyPool``)
    and ``wait()`` for it. The job holds the buffers of its sources, indices and
    outputs until it has run; a job dropped while a pool thread copies waits for
    the copy to end first."""

    def __cinit__(self):
        self.data.base.run = _run_copy
        self.data.base.state = SQ_JOB_IDLE

    def run(self):
        """Copy now, in this thread (GIL released). Once only."""
        if self.data.fields == NULL:
            raise RuntimeError("this copy job has already run")
        if self.runner is not None:
            raise RuntimeError("this copy job was submitted to a pool: wait() for it")
        try:
            with nogil:
                gather_fields(self.data.fields, self.data.nfields)
        finally:
            self._release()

    def wait(self, double timeout=-1.0):
        """Wait until the pool has run the job: True once done (its outputs are
        then written), False when ``timeout`` seconds (< 0: no limit) pass first.

        The pool says how it waits (CopyPool: GIL released, KeyboardInterrupt
        ends the wait). RuntimeError if the job was not submitted, or if the
        pool was closed before the job ran.
        """
        if self.data.fields == NULL:
            return True  # done, and released
        if self.runner is None:
            raise RuntimeError("this copy job was not submitted to a pool")
        if not self.runner.wait_job(&self.data.base, timeout):
            return False
        self._release()
        return True

    cdef void _release(self):
        release_buffers(self.bufs, self.nbufs)
        free(self.bufs)
        self.bufs = NULL
        free(self.data.fields)
        self.data.fields = NULL

    def __dealloc__(self):
        if self.runner is not None:
            self.runner.settle_job(&self.data.base)
        self._release()


cdef bint any_differ(const Py_buffer* a, const Py_buffer* b):
    """True if two buffers of one ndim have different row shapes or item sizes."""
    cdef int d
    if a.itemsize != b.itemsize:
        return True
    for d in range(1, a.ndim):
        if a.shape[d] != b.shape[d]:
            return True
    return False
