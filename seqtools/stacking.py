"""Stack samples into batches: the collate step between a dataset and a training loop.

:func:`stack` turns a sequence of samples -- arrays, buffers, scalars, or tuples,
lists and dicts of them, nested -- into the same structure of stacked arrays, like
``np.stack`` per field but in one pass: the first sample plans the output, every
sample is checked against the plan, and only then are rows copied, by the
``_stack`` Cython kernel with the GIL released. :func:`plan` describes the stacked
result without allocating it, so that a worker process can stack batches straight
into a shared-memory block (``stack(samples, out=p.views(block))``).

Rules shared by both functions:

- **Structure.** ``tuple``, ``list`` and ``dict`` (and their subclasses) are
  containers; anything else is a leaf, stacked into one field. The output has the
  first sample's containers (namedtuples stay namedtuples, other subclasses become
  plain tuples, lists and dicts) and its dict key order; every sample must have the
  same containers, lengths and keys (in any order).
- **Leaves.** numpy arrays and numpy scalars are used as they are; Python ``bool``,
  ``int``, ``float`` and ``complex`` have the dtype numpy gives them
  (``np.asarray(x).dtype``: bool, int64, float64, complex128 on Linux); anything else
  goes through ``np.asarray`` (buffer-protocol objects without a copy, ``str`` and
  ``bytes`` as fixed-width strings).
- **dtypes.** All samples of a field must have the same shape and the same dtype,
  exactly: there is no promotion (an int in a float field is an error naming the
  sample, suggesting a cast), because silently upcasting one odd sample would change
  the dtype of a whole batch.
- **Unsupported leaves.** Fields whose dtype holds Python objects (``object``
  arrays, ``None``, arbitrary objects) raise TypeError: their items are references,
  not data, and could not be written to shared memory. datetime64/timedelta64
  raise TypeError too (numpy does not export them as buffers; stack ``.view('int64')``).
- **Errors.** Mismatches raise ValueError naming the field path and sample index,
  e.g. ``sample[3][1]['label']: expected shape (248,) and dtype float64 (as in
  sample[0][1]['label']), got shape (247,) ...``; nothing is written to ``out``
  unless every sample passed.
"""

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from . import _stack

__all__ = ["ALIGNMENT", "FieldPlan", "StackPlan", "plan", "stack"]

#: Byte alignment of each field in :attr:`StackPlan.nbytes` layouts (a cache line).
ALIGNMENT = 64


def _as_list(samples):
    if type(samples) is list or type(samples) is tuple:
        if samples:
            return samples
    elif isinstance(samples, (str, bytes, Mapping)) or not hasattr(samples, "__len__"):
        raise TypeError(
            f"samples must be a sequence of samples (list, tuple, view, array), "
            f"not {type(samples).__name__}"
        )
    else:
        samples = list(samples)
    if len(samples) == 0:
        raise ValueError(
            "cannot stack an empty sequence of samples: the first sample is needed "
            "to plan the structure, shapes and dtypes of the batch"
        )
    return samples


def stack(samples, out=None):
    """Stack a sequence of samples into one structure of arrays.

    Parameters
    ----------
    samples : sequence
        The samples, all with the structure of ``samples[0]``: arrays, numpy or
        Python scalars, buffer-protocol objects, or tuples, lists and dicts of
        them, nested (see the module documentation for the rules).
    out : structure of numpy.ndarray, optional
        Where to write the result: the structure of the result, with C-contiguous,
        writable arrays of the exact shapes and dtypes (for instance
        ``plan(samples).views(buffer)``); must not overlap the samples.

    Returns
    -------
    structure of numpy.ndarray
        The samples' structure with each leaf replaced by a new C-contiguous array
        of shape ``(len(samples),) + leaf.shape``, or ``out`` itself when given.

    Raises
    ------
    ValueError
        If ``samples`` is empty, or a sample differs from ``samples[0]`` in
        structure, shape or dtype, or ``out`` has the wrong structure, shape or
        dtype, or is read-only or not C-contiguous. The message names the field
        path and the sample index.
    TypeError
        If a leaf holds Python objects (object dtype) or a datetime dtype, or
        ``out`` holds something other than numpy arrays.

    Notes
    -----
    Usable directly as the ``collate_fn`` of :func:`seqtools.batch`.

    Examples
    --------
    >>> import numpy as np
    >>> from seqtools import stack
    >>> samples = [(np.full(3, i, dtype=np.float32), {"label": i}) for i in range(4)]
    >>> images, targets = stack(samples)
    >>> images.shape, images.dtype
    ((4, 3), dtype('float32'))
    >>> targets["label"]
    array([0, 1, 2, 3])
    """
    samples = _as_list(samples)
    layout = _stack.Layout(samples[0])
    if out is None:
        return layout.unflatten(_stack.stack_into(layout, samples))
    _stack.stack_into(layout, samples, layout.flatten_out(out, len(samples)))
    return out


@dataclasses.dataclass(frozen=True)
class FieldPlan:
    """One field of a :class:`StackPlan`.

    Attributes
    ----------
    path : str
        Where the field sits in a sample, e.g. ``"[1]['label']"`` (``""`` when the
        samples are single arrays).
    shape : tuple of int
        Stacked shape, ``(length,) + sample shape``.
    dtype : numpy.dtype
        Element type.
    offset : int
        Byte offset of the field in a block laid out by the plan, a multiple of
        :data:`ALIGNMENT`.
    nbytes : int
        Size of the field in bytes.
    """

    path: str
    shape: tuple
    dtype: np.dtype
    offset: int
    nbytes: int


@dataclasses.dataclass(frozen=True)
class StackPlan:
    """The structure, shapes and dtypes of a stacked batch, and a memory layout.

    Plain data (picklable, comparable with ``==``), so that a process can plan once
    and lay out batches in shared memory.

    Attributes
    ----------
    structure : tuple, list, dict or int
        The structure of a sample with each leaf replaced by its field number.
    fields : tuple of FieldPlan
        The fields in depth-first order (the order of their numbers).
    length : int
        The number of samples stacked.
    nbytes : int
        Bytes needed to hold every field, each starting at a multiple of
        :data:`ALIGNMENT`; a multiple of :data:`ALIGNMENT` itself, so that blocks
        can follow each other.
    """

    structure: object
    fields: tuple
    length: int
    nbytes: int

    def views(self, buffer):
        """Return the stacked structure as arrays over ``buffer``, without copying.

        Parameters
        ----------
        buffer : writable buffer
            Any writable, contiguous buffer of at least :attr:`nbytes` bytes (a
            ``multiprocessing.shared_memory.SharedMemory.buf``, an ``mmap``, a
            ``bytearray``, a uint8 array...). Field ``f`` starts at byte
            ``f.offset`` of it; aligned in memory if the buffer start is.

        Returns
        -------
        structure of numpy.ndarray
            Views for ``stack(samples, out=...)``; they share the buffer's memory
            and keep it alive.

        Examples
        --------
        >>> import numpy as np
        >>> from seqtools.stacking import plan
        >>> samples = [(np.ones(5), 1), (np.zeros(5), 2)]
        >>> p = plan(samples)
        >>> p.nbytes, [(f.shape, f.offset, f.nbytes) for f in p.fields]
        (192, [((2, 5), 0, 80), ((2,), 128, 16)])
        >>> x, y = p.views(bytearray(p.nbytes))
        >>> x.shape, y.shape, x.flags.writeable
        ((2, 5), (2,), True)
        """
        view = memoryview(buffer)
        if view.readonly:
            raise ValueError("StackPlan.views() needs a writable buffer")
        if not view.c_contiguous:
            raise ValueError("StackPlan.views() needs a C-contiguous buffer")
        if view.nbytes < self.nbytes:
            raise ValueError(
                f"buffer holds {view.nbytes} bytes, the plan needs {self.nbytes}"
            )
        raw = np.frombuffer(view.cast("B"), dtype=np.uint8, count=self.nbytes)
        arrays = [
            raw[f.offset : f.offset + f.nbytes].view(f.dtype).reshape(f.shape)
            for f in self.fields
        ]
        return _unflatten(self.structure, arrays)


def _unflatten(structure, arrays):
    if isinstance(structure, int):
        return arrays[structure]
    if isinstance(structure, list):
        return [_unflatten(s, arrays) for s in structure]
    if isinstance(structure, dict):
        return {k: _unflatten(s, arrays) for k, s in structure.items()}
    items = [_unflatten(s, arrays) for s in structure]
    if hasattr(type(structure), "_fields"):
        return type(structure)._make(items)
    return tuple(items)


def plan(samples):
    """Describe the result of ``stack(samples)`` without allocating it.

    Only ``samples[0]`` and ``len(samples)`` are inspected; :func:`stack` checks the
    other samples against the plan when it runs.

    Parameters
    ----------
    samples : sequence
        As for :func:`stack`.

    Returns
    -------
    StackPlan
        The output structure, each field's path, stacked shape, dtype, byte offset
        and size, and the total size with every field aligned to
        :data:`ALIGNMENT` bytes.

    Examples
    --------
    >>> import numpy as np
    >>> from seqtools.stacking import plan, stack
    >>> samples = [{"x": np.arange(3.0), "y": i} for i in range(8)]
    >>> p = plan(samples)
    >>> p.structure
    {'x': 0, 'y': 1}
    >>> [(f.path, f.shape, str(f.dtype), f.offset) for f in p.fields]
    [("['x']", (8, 3), 'float64', 0), ("['y']", (8,), 'int64', 192)]
    >>> p.nbytes
    256
    >>> block = bytearray(p.nbytes)  # e.g. a shared-memory slot
    >>> out = stack(samples, out=p.views(block))
    >>> out["y"]
    array([0, 1, 2, 3, 4, 5, 6, 7])
    """
    samples = _as_list(samples)
    layout = _stack.Layout(samples[0])
    n = len(samples)
    fields = []
    offset = 0
    for path, shape, dtype in layout.field_info():
        nbytes = n * math.prod(shape) * dtype.itemsize
        fields.append(FieldPlan(path, (n,) + shape, dtype, offset, nbytes))
        offset += -(-nbytes // ALIGNMENT) * ALIGNMENT
    return StackPlan(
        structure=layout.unflatten(range(len(fields))),
        fields=tuple(fields),
        length=n,
        nbytes=offset,
    )
