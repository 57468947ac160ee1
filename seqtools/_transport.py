"""Moving one result from a worker process to the parent through a ring block.

A result (arrays, buffer objects, scalars and any picklable objects, nested in
tuples, lists and dicts) is split into a *skeleton* — the structure with each array
replaced by a small reference — and the arrays' bytes. The block holds::

    [u64 skeleton length][pickled skeleton] pad [array 0] pad [array 1] ...

with every array 64-byte aligned. Only the skeleton is pickled; array bytes are
copied once into shared memory by the worker (GIL released) and viewed in place by
the parent, zero-copy: the parent's arrays keep the block leased until the last of
them is garbage-collected.
"""

import pickle

import numpy as np

__all__ = ["encode", "write", "decode"]

_HEAD = 8
_ALIGN = 64


class _Ref:
    """Placeholder for an array in a skeleton: where its bytes are in the block."""

    __slots__ = ("dtype", "shape", "pos")

    def __init__(self, dtype, shape, pos):
        self.dtype = dtype
        self.shape = shape
        self.pos = pos

    def __reduce__(self):
        return _Ref, (self.dtype, self.shape, self.pos)


def _align(n):
    return (n + _ALIGN - 1) // _ALIGN * _ALIGN


def _flatten(obj, arrays):
    """Return the skeleton of ``obj``, appending its arrays to ``arrays``."""
    t = type(obj)
    if t is np.ndarray or isinstance(obj, np.ndarray):
        if obj.dtype.hasobject:
            return obj  # pickled with the skeleton
        arrays.append(obj)
        return _Ref(obj.dtype, obj.shape, len(arrays) - 1)
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


def encode(result):
    """Plan the block for ``result``: ``(skeleton_bytes, arrays, positions, nbytes)``.

    Raises ``pickle.PicklingError``/``TypeError`` for results that cannot be sent.
    """
    arrays = []
    skeleton = _flatten(result, arrays)
    positions = []
    pos = 0
    if arrays:
        for a in arrays:
            pos = _align(pos)
            positions.append(pos)
            pos += a.nbytes
    # Positions become absolute once the skeleton length is known; encode them as
    # indices into `positions` in the skeleton, then fix up the offset base.
    meta = pickle.dumps((skeleton, positions), protocol=pickle.HIGHEST_PROTOCOL)
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


def _rebuild(skel, block, positions, base):
    t = type(skel)
    if t is _Ref:
        count = 1
        for d in skel.shape:
            count *= d
        arr = np.frombuffer(block, skel.dtype, count, base + positions[skel.pos])
        return arr.reshape(skel.shape)
    if t is tuple:
        return tuple([_rebuild(x, block, positions, base) for x in skel])
    if t is list:
        return [_rebuild(x, block, positions, base) for x in skel]
    if t is dict:
        return {k: _rebuild(v, block, positions, base) for k, v in skel.items()}
    if isinstance(skel, tuple) and hasattr(skel, "_fields"):
        return t(*[_rebuild(x, block, positions, base) for x in skel])
    return skel


_IMMUTABLE = (int, float, bool, str, bytes, type(None), complex, np.generic)
_cache = {}  # skeleton bytes -> (skeleton, positions), for skeletons safe to share


def _shareable(skel):
    """True if a skeleton holds nothing mutable that results could come to share."""
    t = type(skel)
    if t is _Ref or isinstance(skel, _IMMUTABLE):
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
    skeleton, positions = cached
    if not positions:
        return skeleton
    return _rebuild(skeleton, block, positions, _align(_HEAD + n))
