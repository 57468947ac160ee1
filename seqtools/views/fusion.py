"""Fused reads: a batch of items of a view graph read as whole rows of its arrays.

Reading a batch of items as one stacked array need not go through the items one by
one. :func:`fuse` resolves an int64 array of normalised indices (``0 <= i <
len(seq)``, checked by the caller) through the view graph, one numpy or kernel call
per level, into a *source map*: where each item of the batch lives in the sources,
shaped like one item (the index maps of the views on the way, composed):

- :class:`Rows` -- a leaf: row ``k`` is ``sources[part[k]][local[k]]``, whole rows of
  numpy arrays, which ``seqtools.stack`` copies into its output with one Cython call
  (``_stack.RowGather``), the GIL released, no per-item Python;
- a ``tuple`` of source maps -- items that are tuples (:func:`seqtools.collate`);
- :class:`Items` -- the fallback: items ``seq[indices[k]]`` read one by one (views
  that run user code, lists, object arrays...) and stacked like any sample.

How a view takes part
---------------------
A view class opts in by declaring hooks, all defined on
:class:`seqtools.views.core.View` as ``None`` (or, for ``_locate``, the identity) and
checked here, and only here, by
``type(view).hook is None``:

``_fuse(indices)``
    Returns the view's source map (``arange``, ``concatenate``, ``collate``, the padded
    last batch of ``batch(..., pad=...)``). Without it, :func:`fuse` follows
    ``_locate(indices)``, which maps the indices onto the view's source (slices,
    gathers, ``cycle``); a view whose ``_locate`` is the identity is read item by
    item (:class:`Items`), so a view that knows nothing of fusion still reads
    correctly.
``_index_op()``
    ``(source, op)``: the view is an index map over ``source`` that a
    :class:`Program` can run for a whole batch (``op``: ``("affine", start,
    step)``, ``("take", int64 table)`` or None for the identity): slices and
    gathers.
``_compile(ops, leaves)``
    Adds the view's leaves to a Program under construction and returns its
    structure (``concatenate``, ``collate``). A view whose class declares both
    ``_fuse`` and ``_compile`` is compiled (below).
``_prepare_rows(local, part, j)`` and ``_rows_spec``
    The view's items are rows of an array that becomes readable on demand
    (:class:`seqtools.storage.RemoteArray`: its cached blocks, mapped as they
    are fetched): ``_prepare_rows`` makes its rows ``local[part == j]`` (all of
    ``local`` if ``part`` is None) readable and returns the array (None when
    it cannot: the view is then read through its ``_fuse``), ``_rows_spec`` is
    their ``(dtype, row shape)`` or None. Such a
    view is a Rows source of compiled programs and concatenations like an
    array, *prepared*: before a batch's rows are copied, :func:`prepared`
    swaps it for the array its ``_prepare_rows`` returns for them.

``_index_op`` and ``_compile`` describe one class's items exactly, so a subclass
does not inherit them (``View.__init_subclass__`` resets them): a subclass may read
its items otherwise, and is then read through its inherited ``_fuse``/``_locate``.

Compiled programs
-----------------
Views that combine sources (``collate``, ``concatenate``) compile: on the first
fused read, :func:`program` walks the graph below the view once into a
:class:`Program` cached on the view -- per leaf, the index maps from the view down
to it (slices: affine, gathers: a table lookup, concatenations: a split by offsets),
run for a whole batch by one kernel call (``_indexing.Resolver``) -- so that a
sampler's batches skip the Python walk. Index-only views made per batch (a gather
of a dataset) are followed by :func:`peel` with one kernel call and reuse their
source's program.

Views that fuse: numpy arrays (memory-mapped too) with a dtype holding data,
``gather``/``take`` and slices, ``concatenate`` (parts with one row shape and
dtype), ``collate`` (each source on its own: the array sources of
``collate([smap(f, x), labels])`` still fuse), ``arange``, ``cycle``, and the padded
last batch of ``batch(..., pad=...)``.
"""

import numpy as np

from . import _indexing
from .access import item_getter
from .core import View

__all__ = ["Rows", "Items", "row_spec", "fuse", "peel", "locate_all",
           "merge_source_maps", "prepared_spec", "prepared", "fuse_parts",
           "Program", "ProgramLeaf", "compile_leaves", "program"]


class Rows:
    """A source-map leaf: row ``k`` is ``sources[part[k]][local[k]]``.

    ``sources`` is a tuple of numpy arrays (at least 1-D) sharing ``dtype`` and the
    row shape ``shape``; ``part`` is an int64 array of source numbers (None: all from
    source 0); ``local`` an int64 array of rows in their source (None: every row of
    the single source, in order).
    """

    __slots__ = ("sources", "part", "local", "dtype", "shape")

    def __init__(self, sources, part, local, dtype, shape):
        self.sources = sources
        self.part = part
        self.local = local
        self.dtype = dtype
        self.shape = shape

    def __len__(self):
        return len(self.sources[0]) if self.local is None else len(self.local)

    def __repr__(self):
        return (f"Rows({len(self)} rows of shape {self.shape} and dtype {self.dtype} "
                f"from {len(self.sources)} source(s))")


class Items:
    """A source-map leaf read item by item: ``seq[i]`` for ``i`` in ``indices``."""

    __slots__ = ("seq", "indices")

    def __init__(self, seq, indices):
        self.seq = seq
        self.indices = indices

    def read(self):
        """The items, as a list (the fallback path: one Python call per item)."""
        get = item_getter(self.seq)
        return [get(i) for i in self.indices.tolist()]

    def __len__(self):
        return len(self.indices)

    def __repr__(self):
        return f"Items({len(self)} items of {type(self.seq).__name__})"


def row_spec(arr):
    """``(dtype, row shape)`` if ``arr``'s rows can be copied as bytes, else None.

    That is what reading ``arr[i]`` and stacking it would give: a row of ``arr``'s
    dtype. Not for object or datetime dtypes (stack refuses them), nor 1-D arrays
    whose items numpy turns into scalars of another dtype (non-native byte order,
    strings: ``np.bytes_`` drops trailing NULs).
    """
    if not isinstance(arr, np.ndarray) or arr.ndim == 0:
        return None
    dtype = arr.dtype
    if dtype.hasobject or dtype.kind in "mM":
        return None
    if arr.ndim == 1 and (dtype.kind not in "biufcV" or not dtype.isnative):
        return None
    return dtype, arr.shape[1:]


def prepared_spec(seq):
    """``(dtype, row shape)`` of a view read as rows of an array it prepares on
    demand (``_prepare_rows``), else None."""
    if View in type(seq).__mro__ and type(seq)._prepare_rows is not None:
        return seq._rows_spec
    return None


# Sources up to which prepared() asks every one (asking one with no rows in the
# batch costs about what finding the parts with rows does).
_ASK_ALL = 8


def prepared(sources, part, local, current=None):
    """``sources`` with each view that prepares its rows (``_prepare_rows``)
    swapped for its array, made readable for the rows ``local[part == j]`` of
    it (``part`` None: all of ``local`` are rows of the one source); None if
    one cannot (the caller then reads through :func:`fuse_parts`).

    ``current``: what ``sources`` were swapped for before (a compiled read's
    last batch): past _ASK_ALL sources, those no row of this batch reads keep
    those arrays and are not asked, so that a batch costs what the parts it
    reads cost, however many parts there are.
    """
    if current is not None and part is not None and len(sources) > _ASK_ALL:
        out = list(current)
        for j in np.flatnonzero(np.bincount(part, minlength=len(sources))).tolist():
            src = sources[j]
            if getattr(type(src), "_prepare_rows", None) is not None:
                array = src._prepare_rows(local, part, j)
                if array is None:
                    return None
                out[j] = array
        return tuple(out)
    out = None
    for j, src in enumerate(sources):
        if getattr(type(src), "_prepare_rows", None) is None:
            continue  # an array
        array = src._prepare_rows(local, part, j)
        if array is None:
            return None
        if out is None:
            out = list(sources)
        out[j] = array
    return sources if out is None else tuple(out)


def fuse_parts(parts, part, local, n):
    """The source map of ``n`` items that are rows ``local[k]`` of
    ``parts[part[k]]``: a source map per part, merged if they agree (else
    None: the items are read one by one)."""
    used = np.unique(part)
    maps, positions = [], []
    for j in used.tolist():
        pos = np.flatnonzero(part == j)
        maps.append(fuse(parts[j], local[pos]))
        positions.append(pos)
    return merge_source_maps(maps, positions, n) if maps else None


def fuse(seq, indices):
    """The source map of items ``indices`` (normalised int64 array) of ``seq``."""
    if View in type(seq).__mro__:
        prog = program(seq)
        if prog is not None:
            return prog.source_map(indices)
        if type(seq)._fuse is not None:
            return seq._fuse(indices)
        source, local = seq._locate(indices)
        if source is seq:
            return Items(seq, indices)
        return fuse(source, local)
    if isinstance(seq, np.ndarray):
        spec = row_spec(seq)
        if spec is not None:
            return Rows((seq,), None, indices, *spec)
    return Items(seq, indices)


def peel(seq, indices):
    """Follow the index-only views at the top of ``seq`` for items ``indices``.

    Returns ``(source, source_indices)``: the first view (or array...) that does not
    hand its indices on through ``_locate`` (or has a ``_fuse`` of its own), and the
    indices of the items there.
    """
    while View in type(seq).__mro__ and type(seq)._fuse is None:
        source, local = seq._locate(indices)
        if source is seq:
            break
        seq, indices = source, local
    return seq, indices


def locate_all(seq, n):
    """``(source, indices)`` of all ``n`` items of ``seq``, for a fused read.

    A gather's items are rows of its index table in its source, taken as they are;
    any other sequence's are ``arange(n)``.
    """
    if View in type(seq).__mro__ and type(seq)._index_op is not None:
        source, op = seq._index_op()
        if op is not None and op[0] == "take":
            return source, op[1]
    return seq, np.arange(n, dtype=np.int64)


# -- compiled programs ---------------------------------------------------------------


class Program:
    """A view graph compiled for fused reads, once per view: see :func:`program`.

    Attributes
    ----------
    structure : int or tuple
        The structure of the items (their nesting), with each leaf replaced by its
        number (nested tuples for :func:`seqtools.collate`).
    leaves : tuple of ProgramLeaf
        The leaves in depth-first order.
    resolver : seqtools.views._indexing.Resolver
        Maps a batch of indices of the view to every leaf, in one call.
    rows_only : bool
        True when every leaf is a :class:`Rows` source (no per-item reads).
    stacker : object
        Left to :mod:`seqtools.batching.stacking`, which keeps its own compiled
        state here (output structure, source buffers); None until the first stack.
    """

    __slots__ = ("structure", "leaves", "resolver", "rows_only", "stacker")

    def __init__(self, n, structure, leaves):
        self.structure = structure
        self.leaves = tuple(leaves)
        self.resolver = _indexing.Resolver(
            n, [(leaf.ops, leaf.offsets) for leaf in self.leaves])
        self.rows_only = all(leaf.spec is not None for leaf in self.leaves)
        self.stacker = None

    def source_map(self, indices):
        """The source map of items ``indices`` (see :func:`fuse`)."""
        maps = []
        for leaf, (part, local) in zip(self.leaves, self.resolver.resolve(indices)):
            if leaf.spec is None:
                maps.append(fuse(leaf.seq, local))
            elif leaf.prepare:
                maps.append(leaf.prepared_map(part, local))
            else:
                maps.append(Rows(leaf.seq, part, local, *leaf.spec))
        structure = self.structure
        if type(structure) is int:
            return maps[structure]
        return _build(structure, maps)


def _build(structure, maps):
    return tuple([maps[s] if type(s) is int else _build(s, maps)
                  for s in structure])


class ProgramLeaf:
    """A leaf of a :class:`Program`, reached from the view through index maps.

    ``ops`` is the tuple of maps from the view's indices to the leaf's, root first
    (``("affine", start, step)``: a slice; ``("take", table)``: a gather, with an
    int64 ``table``). With a ``spec`` ``(dtype, row shape)``, the leaf is a
    :class:`Rows` source: ``seq`` is its tuple of arrays and ``offsets`` (int64,
    ``[0, len0, len0 + len1, ...]``, None for one array) splits the leaf's indices
    between them. Without (``spec`` None), ``seq`` is read through :func:`fuse`
    with the mapped indices. ``prepare``: some of the arrays are views that
    prepare their rows on demand (see :func:`prepared`).
    """

    __slots__ = ("ops", "seq", "offsets", "spec", "prepare")

    def __init__(self, ops, seq, offsets=None, spec=None, prepare=False):
        self.ops = ops
        self.seq = seq
        self.offsets = offsets
        self.spec = spec
        self.prepare = prepare

    def prepared_map(self, part, local):
        """The source map of this prepared leaf's rows ``(part, local)``."""
        sources = prepared(self.seq, part, local)
        if sources is not None:
            return Rows(sources, part, local, *self.spec)
        if part is None:
            part = np.zeros(len(local), np.int64)
        merged = fuse_parts(self.seq, part, local, len(local))
        return Items(_Parts(self.seq, part, local), np.arange(len(local))) \
            if merged is None else merged


class _Parts:
    """Items ``k`` = ``parts[part[k]][local[k]]``: what an :class:`Items` reads
    of a prepared leaf that neither prepares nor fuses."""

    __slots__ = ("parts", "part", "local")

    def __init__(self, parts, part, local):
        self.parts, self.part, self.local = parts, part, local

    def __getitem__(self, k):
        return self.parts[int(self.part[k])][int(self.local[k])]

    def __len__(self):
        return len(self.local)



def compile_leaves(seq, ops, leaves):
    """Compile ``seq``, reached through the index maps ``ops``, into ``leaves``.

    Appends the leaves of ``seq`` to the list ``leaves`` and returns its structure
    (a leaf number, or a tuple of structures). Views take part through
    ``_index_op()`` (an index map on the way to their source) or
    ``_compile(ops, leaves)`` (see "How a view takes part"); other views are leaves
    read through :func:`fuse`.
    """
    cls = type(seq)
    if View in cls.__mro__:
        if cls._index_op is not None:
            source, op = seq._index_op()
            return compile_leaves(source, ops if op is None else ops + (op,), leaves)
        if cls._compile is not None:
            return seq._compile(ops, leaves)
    spec = row_spec(seq)
    if spec is not None:
        leaves.append(ProgramLeaf(ops, (seq,), None, spec))
    elif prepared_spec(seq) is not None:
        leaves.append(ProgramLeaf(ops, (seq,), None, prepared_spec(seq), True))
    else:
        leaves.append(ProgramLeaf(ops, seq))
    return len(leaves) - 1


def program(seq):
    """The compiled :class:`Program` of view ``seq``, or None if it has none.

    Views compile when their class declares both ``_fuse`` and ``_compile``
    (collate, concatenate): the walk down the graph happens on the first fused read
    and is cached on the view, since views never change structure (item assignment
    writes to the sources). Index-only views (slices, gathers) declare
    ``_index_op`` instead: made per batch more often than not, they are not
    compiled themselves; :func:`peel` maps their indices with one kernel call and
    their source's program is reused. Inside a compiled graph they are index maps.
    """
    try:
        prog = seq._program
    except AttributeError:  # not a view, or a subclass that skipped View.__init__
        return None
    if prog is None:
        prog = False
        cls = type(seq)
        if View in cls.__mro__ and cls._compile is not None and cls._fuse is not None:
            leaves = []
            structure = compile_leaves(seq, (), leaves)
            # A view that compiles to itself (mixed concatenations) reads through
            # its own _fuse: caching that would only tie the view to itself.
            if not (type(structure) is int and leaves[0].seq is seq):
                prog = Program(seq._n, structure, leaves)
        seq._program = prog
    return prog or None


def merge_source_maps(maps, positions, n):
    """One source map of ``n`` rows from ``maps[j]`` giving rows ``positions[j]``.

    The maps must have one structure, and their Rows leaves one dtype and row
    shape; returns None otherwise (or if a leaf is :class:`Items`), and the caller
    reads item by item.
    """
    first = maps[0]
    if type(first) is tuple:
        if any(type(m) is not tuple or len(m) != len(first) for m in maps):
            return None
        children = []
        for k in range(len(first)):
            child = merge_source_maps([m[k] for m in maps], positions, n)
            if child is None:
                return None
            children.append(child)
        return tuple(children)
    if type(first) is not Rows:
        return None
    sources = []
    part = np.empty(n, np.int64)
    local = np.empty(n, np.int64)
    for m, pos in zip(maps, positions):
        if type(m) is not Rows or m.dtype != first.dtype or m.shape != first.shape:
            return None
        part[pos] = len(sources) if m.part is None else m.part + len(sources)
        local[pos] = np.arange(len(m)) if m.local is None else m.local
        sources.extend(m.sources)
    return Rows(tuple(sources), part, local, first.dtype, first.shape)
