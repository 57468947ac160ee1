"""Memory-mapped arrays pickled by reference: the file region, not its bytes.

Views pickle their sources through :func:`pickle_source` and the loaders' spawned
workers receive their targets through ``_worker.dumps``: an array that lives in a
file mapping (``np.memmap``, ``np.load(..., mmap_mode='r')``, views of those)
travels as a :class:`MemmapRef` -- file name, byte position, dtype, shape, strides,
mode -- and the receiving process maps the same file instead of getting a copy of
the dataset. Depends on numpy only: views and workers both use it.
"""

import mmap
import os

import numpy as np

__all__ = ["MemmapRef", "memmap_ref", "pickle_source"]


def _memmap_root(arr):
    """The ``np.memmap`` that owns the file mapping behind ``arr``, or None."""
    base = arr
    while isinstance(base, np.ndarray):
        if isinstance(base, np.memmap) and isinstance(base.base, mmap.mmap):
            return base
        base = base.base
    return None


class MemmapRef:
    """Pickles as a reference to the file region behind a memory-mapped array.

    Unpickling reopens the file with ``np.memmap`` and returns a plain ``ndarray``
    with the original dtype, shape and strides over the same file bytes. The mode
    is kept, except ``'w+'`` (which would truncate the file) which becomes ``'r+'``.
    """

    __slots__ = ("args",)

    def __init__(self, filename, mode, position, dtype, shape, strides):
        self.args = (filename, mode, position, dtype, shape, strides)

    def __reduce__(self):
        return _open_memmap_region, self.args


def _open_memmap_region(filename, mode, position, dtype, shape, strides):
    dtype = np.dtype(dtype)
    lo = sum((s - 1) * st for s, st in zip(shape, strides) if st < 0)
    hi = sum((s - 1) * st for s, st in zip(shape, strides) if st > 0) + dtype.itemsize
    mm = np.memmap(
        filename,
        dtype=np.uint8,
        mode="r+" if mode == "w+" else mode,
        offset=position + lo,
        shape=(hi - lo,),
    )
    return np.ndarray(shape, dtype=dtype, buffer=mm, offset=-lo, strides=strides)


def memmap_ref(arr):
    """A :class:`MemmapRef` for ``arr`` if it lives in a file mapping, else None."""
    if not isinstance(arr, np.ndarray) or arr.size == 0:
        return None
    root = _memmap_root(arr)
    if root is None or root.filename is None or not os.path.exists(root.filename):
        return None
    ptr = arr.__array_interface__["data"][0]
    root_ptr = root.__array_interface__["data"][0]
    return MemmapRef(
        root.filename,
        root.mode,
        root.offset + (ptr - root_ptr),
        arr.dtype.str if arr.dtype.names is None else arr.dtype.descr,
        arr.shape,
        arr.strides,
    )


def pickle_source(value):
    """``value`` ready for pickling: memory-mapped arrays become references.

    Tuples (the way views store several sources) are looked into, one level deep.
    """
    if isinstance(value, np.ndarray):
        ref = memmap_ref(value)
        return value if ref is None else ref
    if type(value) is tuple and any(isinstance(v, np.ndarray) for v in value):
        return tuple(pickle_source(v) for v in value)
    return value

