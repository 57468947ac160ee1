"""Moving one result from a worker process to the parent through a ring block.

A result (arrays, buffer objects, scalars and any picklable objects, nested in
tuples, lists and dicts) is split into a *skeleton* — the structure with each array
replaced by a placeholder — and the arrays' bytes. The result's main block holds::

    [u64 meta length][pickled (skeleton, specs, aux)] pad [array 0] pad [array 1] ...

with every array 64-byte aligned. Only the skeleton is pickled; array bytes are
copied once into shared memory by the worker (GIL released) and viewed in place by
the parent, zero-copy: the parent's arrays keep their block leased until the last
of them is garbage-collected.

Arrays the worker's code already built inside the ring (``seqtools.stack`` in a
worker writes batches straight into blocks it reserves with :func:`out_block`) are
not copied at all: the specs name their *auxiliary* block, which the commit hands
over together with the main block.
"""

import pickle

import numpy as np

from ._ring import address

__all__ = ["encode", "write", "decode", "out_block"]

_HEAD = 8
_ALIGN = 64


class _RefType:
    """The placeholder for an array in a skeleton (one instance, pickled by name).

    Arrays are numbered in traversal order; their dtype, shape and position in the
    block are listed apart, as plain tuples, which pickle much faster than dtypes.
    """

    __slots__ = ()

    def __reduce__(self):
        return "REF"

    def __repr__(self):
        return "REF"


REF = _RefType()


def _align(n):
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _flatten(obj, arrays):
    """Return the skeleton of ``obj``, appending its arrays to ``arrays``."""
    t = type(obj)
    if t is np.ndarray or isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            return obj  # pickled with the skeleton
        arrays.append(obj)
        return REF
    if t is tuple:
        return tuple([_flatten(x, arrays) for x in obj])
    if t is list:
        return [_flatten(x, arrays) for x in obj]
    if t is dict:
        return {k: _flatten(v, arrays) for k, v in obj.items()}
    if isinstance(obj, tuple) and hasattr(obj, "_fields"):  # namedtuple
        return t(*[_flatten(x, arrays) for x in obj])
    if t in (int, float, bool, str, bytes, type(None)) or isinstance(obj, np.generic):
        return obj
    try:  # anything else with the buffer protocol travels as an array
        view = memoryview(obj)
    except TypeError:
        return obj
    return _flatten(np.asarray(view), arrays)


class _TaskBlocks:
    """Blocks reserved in the ring by the worker's own code for the current task."""

    def __init__(self, ring, slot, reserve):
        self.ring = ring
        self.slot = slot
        self.reserve = reserve  # reserve(nbytes) -> offset, waiting as needed
        self.blocks = []  # (start address, end address, offset, nbytes, Block)

    def new(self, nbytes):
        offset = self.reserve(nbytes)
        block = self.ring.block(offset, nbytes)
        view = np.frombuffer(block, np.uint8)
        start = address(view)
        self.blocks.append((start, start + nbytes, offset, nbytes, block))
        return view

    def find(self, a):
        """(aux index, position) of array ``a`` if it lies in a task block."""
        if not self.blocks or not a.flags.c_contiguous:
            return None
        addr = address(a)
        for k, (start, end, _, _, _) in enumerate(self.blocks):
            if start <= addr and addr + a.nbytes <= end:
                return k, addr - start
        return None


_task = None  # the _TaskBlocks of the task a worker runs now, else None


def out_block(nbytes):
    """A writable uint8 array of ``nbytes`` in the ring, for the running task.

    Only inside a worker process of ``prefetch``/``load_buffers`` (else None):
    arrays built in it are handed to the parent without any copy.
    """
    if _task is None:
        return None
    return _task.new(nbytes)


def encode(result, task=None):
    """Plan the main block for ``result``: ``(meta, arrays, positions, base, nbytes)``.

    ``meta`` is the pickled skeleton, array specs and auxiliary blocks; arrays to
    copy go at ``base + p`` for ``p`` in ``positions``. Raises
    ``pickle.PicklingError``/``TypeError`` for results that cannot be sent.
    """
    found = []
    skeleton = _flatten(result, found)
    arrays = []
    positions = []
    specs = []
    pos = 0
    for a in found:
        dtype = a.dtype
        dt = dtype.str if dtype.fields is None else dtype
        where = task.find(a) if task is not None else None
        if where is not None:
            specs.append((dt, a.shape, where[1], where[0]))
            continue
        pos = _align(pos)
        positions.append(pos)
        arrays.append(a)
        specs.append((dt, a.shape, pos, -1))
        pos += a.nbytes
    aux = [(b[2], b[3]) for b in task.blocks] if task is not None else []
    meta = pickle.dumps((skeleton, specs, aux), protocol=pickle.HIGHEST_PROTOCOL)
    base = _align(_HEAD + len(meta))
    return meta, arrays, positions, base, base + pos


def write(ring, offset, nbytes, meta, arrays, positions, base):
    """Copy the skeleton and arrays into the reserved block at ``offset``."""
    parts = [(0, len(meta).to_bytes(_HEAD, "little")), (_HEAD, meta)]
    strided = []
    for a, p in zip(arrays, positions):
        if a.flags.c_contiguous:
            parts.append((base + p, a))
        else:
            strided.append((a, base + p))
    ring.write(offset, nbytes, parts)
    if strided:
        block = ring.block(offset, nbytes)
        for a, p in strided:
            dst = np.frombuffer(block, a.dtype, a.size, p).reshape(a.shape)
            np.copyto(dst, a)  # numpy releases the GIL for plain dtypes


def _rebuild(skel, arrays):
    t = type(skel)
    if skel is REF:
        return next(arrays)
    if t is tuple:
        return tuple([_rebuild(x, arrays) for x in skel])
    if t is list:
        return [_rebuild(x, arrays) for x in skel]
    if t is dict:
        return {k: _rebuild(v, arrays) for k, v in skel.items()}
    if isinstance(skel, tuple) and hasattr(skel, "_fields"):
        return t(*[_rebuild(x, arrays) for x in skel])
    return skel


_IMMUTABLE = (int, float, bool, str, bytes, type(None), complex, np.generic)
_cache = {}  # skeleton bytes -> (skeleton, positions), for skeletons safe to share


def _shareable(skel):
    """True if a skeleton holds nothing mutable that results could come to share."""
    t = type(skel)
    if skel is REF or isinstance(skel, _IMMUTABLE):
        return True
    if t is tuple or t is list or (isinstance(skel, tuple) and hasattr(skel, "_fields")):
        return all(_shareable(x) for x in skel)
    if t is dict:
        return all(_shareable(v) for v in skel.values())
    return False


def decode(ring, offset, nbytes):
    """Rebuild the result in block ``offset`` as arrays viewing shared memory.

    The block is released when the last array viewing it is garbage-collected (at
    once if the result holds no array).
    """
    block = ring.lease(offset, nbytes)
    mv = memoryview(block)
    n = int.from_bytes(mv[:_HEAD], "little")
    meta = bytes(mv[_HEAD : _HEAD + n])
    mv.release()
    # Workers usually send the same skeleton (same shapes) over and over: unpickle
    # each distinct one once.
    cached = _cache.get(meta)
    if cached is None:
        cached = pickle.loads(meta)
        if _shareable(cached[0]):
            if len(_cache) >= 256:
                _cache.clear()
            _cache[meta] = cached
    skeleton, specs, aux = cached
    if aux:
        aux = [ring.lease(off, size) for off, size in aux]
    if not specs:
        return skeleton
    base = _align(_HEAD + n)
    arrays = []
    for dtype, shape, pos, k in specs:
        count = 1
        for d in shape:
            count *= d
        if k < 0:
            a = np.frombuffer(block, dtype, count, base + pos)
        else:
            a = np.frombuffer(aux[k], dtype, count, pos)
        arrays.append(a.reshape(shape))
    if skeleton is REF:
        return arrays[0]
    return _rebuild(skeleton, iter(arrays))
