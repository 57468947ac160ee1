"""Stack samples into batches: the collate step between a dataset and a training loop.

:func:`stack` turns a sequence of samples -- arrays, buffers, scalars, or tuples,
lists and dicts of them, nested -- into the same structure of stacked arrays, like
``np.stack`` per field but in one pass: the first sample sets the structure, shapes
and dtypes of the output, every sample is checked against it, and only then are rows
copied, by the
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

**Fused reads.** When ``samples`` is a view (or a numpy array), :func:`stack` does
not read it item by item: it asks the view graph for a source map, where each item
lives in the underlying arrays (see :mod:`seqtools.views.fusion`), and copies whole
rows from them straight into the output, one Cython call for all fields, the GIL
released. Views that fuse:
numpy and memory-mapped arrays, ``gather``/``take``, slices, ``concatenate``,
``collate``, ``arange``, and batches of ``batch(..., collate_fn=stack)`` (padding
included). Parts that run user code (``smap``...) or hold Python objects (lists)
are read item by item and stacked as usual, in the same call. The result is the
same as ``stack(list(view))``, bit for bit.

**Shared memory.** Inside a worker process of :func:`seqtools.load_buffers` or
``prefetch(method='process')``, :func:`stack` without ``out`` writes the batch
straight into one block of the workers' shared-memory ring: returned from the
worker, it reaches the parent with no copy at all. That memory goes to the parent
with the result, so the worker's code must not keep the batch beyond the call
(``self.last = batch``; copy it with ``np.array``): a worker that does is told so
on stderr and stacks into its own memory from then on.

:func:`seqtools.minibatches` (:mod:`seqtools.batching.samplers`) builds a random
minibatch sampler on top of the fused path.
"""

import dataclasses
import math
from collections.abc import Mapping

import numpy as np

from .. import _task
from ..views.core import View
from ..views.fusion import Items, Rows, fuse, locate_all, peel, prepared, program
from . import _stack

__all__ = ["ALIGNMENT", "FieldPlan", "StackPlan", "plan", "stack", "stack_range",
           "stack_indices", "copy_job"]

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
            "to know the structure, shapes and dtypes of the batch"
        )
    return samples


def stack(samples, out=None):
    """Stack a sequence of samples into one structure of arrays.

    Parameters
    ----------
    samples : sequence
        The samples, all with the structure of ``samples[0]``: arrays, numpy or
        Python scalars, buffer-protocol objects, or tuples, lists and dicts of
        them, nested (see the module documentation for the rules). A view over
        arrays (``gather``, slices, ``concatenate``, ``collate``...) is read
        fused: rows are copied from the arrays with no per-item Python.
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

    IndexError
        If a fused read meets an index out of range (the message names the row).

    Notes
    -----
    Usable directly as the ``collate_fn`` of :func:`seqtools.batch` (fused reads).
    Inside a ``load_buffers``/``prefetch(method='process')`` worker, the result
    without ``out`` lives in the shared-memory ring and is handed over uncopied;
    it belongs to the parent once returned, so do not keep it in the worker
    across calls (copy what you keep).

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

    A view over arrays is stacked in one pass over its rows:

    >>> import seqtools
    >>> data = seqtools.collate([np.arange(10.0), np.arange(10) % 3])
    >>> seqtools.stack(seqtools.gather(data, [7, 2, 2]))
    (array([7., 2., 2.]), array([1, 2, 2]))
    """
    is_view = View in type(samples).__mro__
    if is_view or (isinstance(samples, np.ndarray) and samples.ndim > 0):
        n = samples._n if is_view else len(samples)
        if n is None:
            raise TypeError(
                f"cannot stack an infinite {type(samples).__name__}: take a finite "
                "slice first, e.g. view[:1000]"
            )
        if n > 0:
            source, indices = locate_all(samples, n)
            result = _stack_fused(source, indices, out)
            if type(result) is not Items:
                return result
    samples = _as_list(samples)
    structure = _stack.Structure(samples[0])
    if out is None:
        arrays = _shared_arrays(structure.field_info(), len(samples))
        return structure.unflatten(_stack.stack_into(structure, samples, arrays))
    _stack.stack_into(structure, samples, structure.flatten_out(out, len(samples)))
    return out


def stack_range(seq, start, stop):
    """``stack(seq[start:stop])`` for a view or array ``seq``, ``start < stop``.

    The batch read of ``batch(seq, k, collate_fn=stack)``: the rows are read fused
    straight from ``seq`` without making the slice view first, which is most of
    the Python a batch costs otherwise (the read itself releases the GIL, so on
    worker threads this is what they contend for).
    """
    if View in type(seq).__mro__ or (isinstance(seq, np.ndarray) and seq.ndim > 0):
        # stack_indices, one call shorter: this is each batch's read
        result = _stack_fused(seq, np.arange(start, stop, dtype=np.int64), None)
        if type(result) is not Items:
            return result
    return stack(seq[start:stop])


def _shared_arrays(field_info, n):
    """Outputs in one block of the worker's ring, or None outside a worker."""
    if _task.evaluating.out_block is None:
        return None
    return _block_arrays(_block_layout([(shape, dtype) for _, shape, dtype
                                        in field_info], n))


def _block_layout(fields, n):
    """``(nbytes, [(shape, dtype, offset), ...])``: n rows of ``(shape, dtype)``
    fields laid out in one block."""
    offsets, nbytes = _layout(fields, n)
    return nbytes, [((n,) + shape, dtype, o)
                    for (shape, dtype), o in zip(fields, offsets)]


def _block_arrays(block_layout):
    """Arrays laid out by :func:`_block_layout` in a new ring block, or None."""
    nbytes, views = block_layout
    block = _task.out_block(nbytes)
    if block is None:
        return None
    return [np.ndarray(shape, dtype, block, offset) for shape, dtype, offset in views]


def _layout(fields, n):
    """Byte offsets of ``(shape, dtype)`` fields of n rows, and the total size."""
    offsets = []
    offset = 0
    for shape, dtype in fields:
        offsets.append(offset)
        nbytes = n * math.prod(shape) * dtype.itemsize
        offset += -(-nbytes // ALIGNMENT) * ALIGNMENT
    return offsets, offset


def _walk(node, path, leaves):
    """Append the ``(path, leaf)`` of a source map in order; return its signature.

    The signature names the output structure, dtypes and row shapes; it is None
    when a leaf is read item by item (the items decide the structure).
    """
    t = type(node)
    if t is Rows:
        leaves.append((path, node))
        return ("R", node.dtype, node.shape)
    if t is tuple:
        sig = ["T"]
        for k, child in enumerate(node):
            sig.append(_walk(child, f"{path}[{k}]", leaves))
        return None if None in sig else tuple(sig)
    leaves.append((path, node))
    return None


def _map_prototype(node, values):
    """A sample shaped like the items of a source map: ``_stack`` takes the batch's
    structure from it."""
    if type(node) is tuple:
        return tuple([_map_prototype(child, values) for child in node])
    if type(node) is Rows:
        return np.empty(node.shape, node.dtype)
    return values[id(node)][0]


def _stack_fused(seq, indices, out):
    """``stack`` of items ``indices`` of a view or array, read fused.

    Returns the source map instead, an :class:`~seqtools.views.fusion.Items`, when every
    item has to be read one by one (the caller then stacks the items).
    """
    seq, indices = peel(seq, indices)
    prog = program(seq)
    if prog is None:
        node = fuse(seq, indices)
    else:
        stacker = _stacker(prog)
        if stacker:
            result = stacker(indices, out)
            if result is not None:
                return result
        node = prog.source_map(indices)
    if type(node) is Items:
        return node
    return _stack_source_map(node, len(indices), out)


def stack_indices(seq, indices, out=None):
    """``stack(gather(seq, indices))`` for a view or array ``seq``: read fused
    when the view graph allows, else item by item and stacked."""
    result = _stack_fused(seq, indices, out)
    if type(result) is Items:
        return stack(result.read(), out)
    return result


def copy_job(seq, indices):
    """``stack`` of items ``indices`` of a view or array as a copy yet to run:
    ``(job, result)``, where ``job`` is the checked copy job (a ``CopyJob``) that
    fills ``result``, for the loaders' native copy threads to run; None when the
    items are not rows of arrays read through a compiled program (``stack`` then
    reads them another way).

    Checks and raises as ``stack`` does; nothing is read before the job runs.
    """
    if isinstance(seq, np.ndarray):
        if seq.ndim == 0 or seq.dtype.hasobject or seq.dtype.kind in "mM":
            return None  # stack raises, or reads these its own way
        out = np.empty((len(indices),) + seq.shape[1:], seq.dtype)
        job = _stack.RowSources([(seq,)]).job([(None, indices)], [out])
        return job, out
    seq, indices = peel(seq, indices)
    prog = program(seq)
    stacker = prog and _stacker(prog)
    return stacker.job(indices) if stacker else None


def _stacker(prog):
    """The :class:`_Stacker` of a compiled program, made on first use; False when
    its leaves are not all Rows sources."""
    stacker = prog.stacker
    if stacker is None:
        stacker = prog.stacker = _Stacker(prog) if prog.rows_only else False
    return stacker


class _Stacker:
    """``stack`` through a compiled program whose leaves are all Rows sources.

    Holds what does not change from batch to batch: the output structure, the field
    shapes and dtypes, the sources' buffers, and the block layouts of the batch
    sizes seen, so that a batch costs a few calls: resolve the indices, allocate,
    copy (GIL released).
    """

    __slots__ = ("resolve", "structure", "fields", "sources", "copy", "shapes",
                 "blocks", "leaves", "prepare", "state")

    def __init__(self, prog):
        self.resolve = prog.resolver.resolve
        # The Structure of a prototype sample gives the output's nesting, the field
        # order (the leaves' order) and the checks of `out`, as for stack(list(view)).
        self.structure = _stack.Structure(_prototype(prog.structure, prog.leaves))
        self.fields = [(shape, dtype)
                       for _, shape, dtype in self.structure.field_info()]
        self.leaves = [leaf.seq for leaf in prog.leaves]
        # The leaves with sources that prepare their rows (remote arrays): each
        # batch swaps them for their arrays (fusion.prepared), and the sources'
        # buffers are acquired again when those change (rarely: a remote
        # array's is one mapping of its object, made once).
        self.prepare = [f for f, leaf in enumerate(prog.leaves) if leaf.prepare]
        fields = self.leaves
        if self.prepare:
            empty = np.empty(0, np.int64)
            fields = list(fields)
            for f in self.prepare:
                fields[f] = prepared(fields[f], None, empty)
        self.sources = None if fields is None or None in fields \
            else _stack.RowSources(fields)
        self.state = (self.sources, fields)
        self.copy = self.sources.copy if self.sources is not None else None
        self.shapes = {}  # batch size -> [(stacked shape, dtype)]
        self.blocks = {}  # batch size -> _block_layout

    def _sources_for(self, resolved):
        """The RowSources to copy the batch ``resolved`` from, its prepared
        sources readable for its rows; None when one cannot be made so (the
        batch is then read through the program's source map)."""
        rowsources, fields = self.state
        if not self.prepare:
            return rowsources
        new = None
        for f in self.prepare:
            part, local = resolved[f]
            sources = prepared(self.leaves[f], part, local,
                               fields[f] if rowsources is not None else None)
            if sources is None:
                return None
            if rowsources is not None:
                for a, b in zip(sources, fields[f]):
                    if a is not b:
                        break
                else:
                    continue  # the arrays of the last batch
            if new is None:
                new = list(fields)
            new[f] = sources
        if new is None:
            return rowsources
        if None in new:  # a leaf left unprepared earlier, not in this batch
            return None
        rowsources = _stack.RowSources(new)
        # the copy uses the RowSources of the arrays prepared for it: a
        # thread that swaps the state meanwhile changes no batch under way
        self.state = (rowsources, new)
        return rowsources

    def _new_arrays(self, n):
        shapes = self.shapes.get(n)
        if shapes is None:
            shapes = _bounded_put(self.shapes, n, [((n,) + shape, dtype) for
                                                   shape, dtype in self.fields])
        return [np.empty(shape, dtype) for shape, dtype in shapes]

    def job(self, indices):
        """``(job, result)``: see :func:`copy_job` (None when a prepared source
        cannot be made readable). The result is in this process's own memory."""
        resolved = self.resolve(indices)
        sources = self._sources_for(resolved)
        if sources is None:
            return None
        arrays = self._new_arrays(len(indices))
        job = sources.job(resolved, arrays)
        return job, self.structure.unflatten(arrays)

    def __call__(self, indices, out):
        """The stacked batch of items ``indices``; None when a prepared source
        cannot be made readable (the caller reads the source map instead)."""
        resolved = self.resolve(indices)
        copy = self.copy if not self.prepare else None
        if copy is None:
            sources = self._sources_for(resolved)
            if sources is None:
                return None
            copy = sources.copy
        n = len(indices)
        if out is not None:
            copy(resolved, self.structure.flatten_out(out, n))
            return out
        arrays = None
        if _task.evaluating.out_block is not None:  # in a worker: see _task
            layout = self.blocks.get(n)
            if layout is None:
                layout = _bounded_put(self.blocks, n, _block_layout(self.fields, n))
            arrays = _block_arrays(layout)
        if arrays is None:
            arrays = self._new_arrays(n)
        copy(resolved, arrays)
        return self.structure.unflatten(arrays)


def _bounded_put(cache, key, value):
    """``cache[key] = value``, emptying the cache first when it holds 16 entries
    (batch sizes: a sampler uses one or two)."""
    if len(cache) >= 16:
        cache.clear()
    cache[key] = value
    return value


def _prototype(structure, leaves):
    """A sample shaped like a program's items: ``_stack`` takes the output structure
    from it."""
    if type(structure) is int:
        spec = leaves[structure].spec
        return np.empty(spec[1], spec[0])
    return tuple([_prototype(s, leaves) for s in structure])


# Output structures of source maps without Items, by signature: a sampler stacks
# batches of one structure over and over, and reading it from a prototype sample is
# most of the Python left per batch.
_structures = {}


def _stack_source_map(node, n, out):
    """Stack the n rows described by a source map (see seqtools.views.fusion)."""
    leaves = []
    sig = _walk(node, "", leaves)
    cached = _structures.get(sig) if sig is not None else None
    values = {}
    if cached is not None:
        structure, info = cached
    else:
        for _, leaf in leaves:
            if type(leaf) is Items:
                values[id(leaf)] = leaf.read()
        # The Structure of a prototype sample gives the output's nesting, the field
        # order and the checks of `out`, exactly as for stack(list(view)).
        structure = _stack.Structure(_map_prototype(node, values))
        info = structure.field_info()
        if sig is not None:
            if len(_structures) >= 64:
                _structures.clear()
            _structures[sig] = structure, info
    if out is not None:
        arrays = structure.flatten_out(out, n)
    else:
        arrays = _shared_arrays(info, n)
        if arrays is None:
            arrays = [np.empty((n,) + shape, dtype) for _, shape, dtype in info]
    if not values:
        gather = _stack.RowGather(
            [(leaf.sources, leaf.part, leaf.local, a) for (_, leaf), a
             in zip(leaves, arrays)])
        gather.run()
        return out if out is not None else structure.unflatten(arrays)
    # Split the fields between Rows leaves (one field each) and Items leaves.
    rows, item_arrays, items, labels = [], [], [], []
    f = 0
    for path, leaf in leaves:
        if type(leaf) is Rows:
            rows.append((leaf.sources, leaf.part, leaf.local, arrays[f]))
            f += 1
        else:
            count = _stack.Structure(values[id(leaf)][0]).nfields
            item_arrays.extend(arrays[f : f + count])
            f += count
            items.append(values[id(leaf)])
            labels.append(path)
    gather = _stack.RowGather(rows)  # every index checked before anything is written
    per_item = list(zip(*items))
    _stack.stack_into(_stack.Structure(per_item[0], labels), per_item, item_arrays)
    gather.run()
    return out if out is not None else structure.unflatten(arrays)


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
        >>> from seqtools.batching.stacking import plan
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
    >>> from seqtools.batching.stacking import plan, stack
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
    structure = _stack.Structure(samples[0])
    n = len(samples)
    fields = []
    offset = 0
    for path, shape, dtype in structure.field_info():
        nbytes = n * math.prod(shape) * dtype.itemsize
        fields.append(FieldPlan(path, (n,) + shape, dtype, offset, nbytes))
        offset += -(-nbytes // ALIGNMENT) * ALIGNMENT
    return StackPlan(
        structure=structure.unflatten(range(len(fields))),
        fields=tuple(fields),
        length=n,
        nbytes=offset,
    )
