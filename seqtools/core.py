"""The base class of every lazy view, the slice view, and memmap-aware pickling.

A view maps indices onto one or more source sequences and evaluates items only when
they are read. Subclasses implement ``_get(i)`` for a normalised index
``0 <= i < len`` (or any ``i >= 0`` for infinite views), optionally ``_set``
(with ``_check``), ``_slice``, ``_iter`` and ``_locate``; the base class handles
negative indices, slices (slices of slices collapse into one view), integer-array
keys, iteration, pickling and the errors Python lists give. The index arithmetic
itself runs in the ``_indexing`` Cython kernels.

Item writes
-----------
An assignment (``view[i] = x``, ``view[2:6] = values``, ``view[idx] = values``)
checks every value before it writes any, so that a failed assignment leaves the
sources as they were: ``_check(i, value)`` raises TypeError or ValueError where
``_set(i, value)`` would fail, down the view graph to the sources
(:func:`check_item`: views ask their own ``_check``, numpy arrays try the value on
a scratch row, sequences without ``__setitem__`` refuse), and only then are the
items written. A source that refuses a value it cannot be asked about beforehand
(a user sequence whose ``__setitem__`` raises) can still leave a partial write.

Item reads
----------
Index-only views (slices, ``gather``, ``concatenate``, ``collate``) compile, when
they are built, a *reader* (``_indexing.Reader``): a tree of C objects mirroring the
view graph down to the sources' own ``sq_item``, kept in the view's ``_rd`` slot.
``view[i]`` and iteration then cost one C call per view and per item instead of a
Python frame, and items are exactly what the sources' ``__getitem__`` returns. Other
views take part through the default ``_reader()``, which calls their getter.

Memory-mapped arrays (``np.memmap``, e.g. from ``np.load(..., mmap_mode='r')``) are
read through a plain ``ndarray`` view of the same memory (``np.memmap.__getitem__``
is Python code, ten times slower per item), and views pickle such sources by
reference (file name, byte position, dtype, shape, strides, mode), so that worker
processes reopen the file instead of receiving a copy of the dataset.

Fused reads
-----------
Reading a whole batch of items as one stacked array need not go through the items
one by one. ``fuse(seq, indices)`` resolves an int64 array of normalised indices
(``0 <= i < len(seq)``, checked by the caller) through the view graph, one numpy or
kernel call per level, into a *fusion plan* shaped like one item:

- :class:`Rows` -- a leaf: row ``k`` is ``sources[part[k]][local[k]]``, whole rows of
  numpy arrays, which ``seqtools.stack`` copies into its output with one Cython call
  (``_stack.RowGather``), the GIL released, no per-item Python;
- a ``tuple`` of plans -- items that are tuples (:func:`seqtools.collate`);
- :class:`Items` -- the fallback: items ``seq[indices[k]]`` read one by one (views
  that run user code, lists, object arrays...) and stacked like any sample.

Views take part by overriding ``_fuse(indices)``; the default follows ``_locate``
(index-only views hand the indices on to their source) and otherwise falls back to
:class:`Items`, so a view that does not know the protocol is still read correctly.

Views that combine sources (``collate``, ``concatenate``) also compile: on the first
fused read, :func:`program` walks the graph below the view once into a
:class:`Program` cached on the view -- per leaf, the index maps from the view down
to it (slices: affine, gathers: a table lookup, concatenations: a split by offsets),
run for a whole batch by one kernel call (``_indexing.Resolver``) -- so that a
sampler's batches skip the Python walk. Index-only views made per batch (a gather
of a dataset) map their indices with one kernel call and reuse their source's
program.
Views that fuse: numpy arrays (memory-mapped too) with a dtype holding data,
``gather``/``take`` and slices (through ``_locate``), ``concatenate`` (parts with one
row shape and dtype), ``collate`` (each source on its own: the array sources of
``collate([smap(f, x), labels])`` still fuse), ``arange``, and the padded last
batch of ``batch(..., pad=...)``.
"""

import itertools
import mmap
import os
from collections.abc import Sequence

import numpy as np

from . import _indexing
from .errors import creation_site

__all__ = ["View", "ReaderView", "SliceView", "Rows", "Items", "fuse", "Program",
           "program"]


class View(Sequence):
    """Base class of lazy sequence views.

    Subclasses set ``self._n`` to their length (``None`` for an infinite view) and
    ``self._origin`` (see :func:`seqtools.errors.creation_site`).

    Attributes listed in a class's ``_transient`` tuple (cached bound methods and
    the like) are not pickled; ``_bind()`` rebuilds them, and subclasses call it at
    the end of ``__init__``.

    Views that compile a reader (see the module docstring) declare a ``_rd`` slot,
    list it in ``_transient`` and set it in ``_bind()``; integer keys then go
    straight to it. Elsewhere ``_rd`` is this class attribute, None.
    """

    __slots__ = ("_n", "_origin", "_program", "__weakref__")
    _transient = ("_program",)
    _rd = None

    def __init__(self, n):
        self._n = n
        self._origin = creation_site(2)
        self._program = None  # see program()

    # -- subclass hooks -------------------------------------------------------------
    def _get(self, i):
        raise NotImplementedError

    def _set(self, i, value):
        """Write ``value``, what ``_check(i, value)`` returned, as item ``i``.

        The base class is read-only.
        """
        raise TypeError(
            f"{type(self).__name__} views do not support item assignment; assign to "
            "their source instead"
        )

    def _check(self, i, value):
        """The value ``_set(i, value)`` will write; raises instead if it would fail.

        Raises TypeError or ValueError (writing nothing) where the write would fail,
        checking the view's sources through :func:`check_item`. Returns ``value``,
        or its items read once (into a list or tuple) when the view reads them
        several times (batch, collate...), so that a lazy value is evaluated once.

        The default refuses on views that do not define ``_set`` (read-only) and
        accepts any value on views that do: a subclass that defines only ``_set``
        (the documented hook) stays writable, but cannot be checked beforehand.
        """
        if type(self)._set is View._set:
            self._set(i, value)  # raises the read-only TypeError
        return value

    def _slice(self, start, step, length):
        """Return a view of items ``start + k * step`` for ``0 <= k < length``.

        ``length`` is ``None`` for an infinite slice of an infinite view.
        """
        return SliceView(self, start, step, length)

    def _iter(self):
        get = self._get
        if self._n is None:
            return map(get, itertools.count())
        return map(get, range(self._n))

    def _locate(self, indices):
        """Map normalised int64 ``indices`` to ``(source, source_indices)``.

        The default is the identity; index-only views (slices, gathers) return their
        innermost source so that a future batch path can read a whole batch of items
        from it in one call.
        """
        return self, indices

    def _fuse(self, indices):
        """The fusion plan (see the module docstring) of items ``indices``.

        ``indices`` is an int64 array of normalised indices, already checked. The
        default follows ``_locate`` to the view's source, else reads item by item.
        """
        source, local = self._locate(indices)
        if source is self:
            return Items(self, indices)
        return fuse(source, local)

    def _bind(self):
        """Rebuild the attributes named in ``_transient`` (after init, unpickling)."""

    def _getter(self):
        """A callable returning item ``i`` for a normalised ``i``, for outer views.

        Defaults to ``self._get``; views override it to hand out something cheaper
        to call (a closure, or a kernel's bound ``read``), since stacked views pay
        one such call per view and per item.
        """
        return self._get

    def _reader(self):
        """An ``_indexing.Reader`` of the items, for outer views to compile into theirs.

        Defaults to calling ``_getter()``; views with a compiled reader return it.
        """
        return _indexing.CallReader(self._getter(), self._n)

    # -- list semantics -------------------------------------------------------------
    def __len__(self):
        n = self._n
        if n is None:
            raise TypeError(
                f"{type(self).__name__} is infinite and has no len(); "
                "take a finite slice first, e.g. view[:1000]"
            )
        return n

    def __getitem__(self, key):
        rd = self._rd
        if rd is not None and type(key) is int:
            return rd[key]  # checks the key as lists do, reads in C
        if type(key) is slice:
            return self._slice(*_indexing.slice_range(key, self._n))
        if isinstance(key, np.ndarray) and key.ndim > 0:
            from .indexing import gather  # indexing imports core

            return gather(self, key)
        return self._get(_indexing.normalize_index(key, self._n))

    def __setitem__(self, key, value):
        if type(key) is slice:
            start, step, length = _indexing.slice_range(key, self._n)
            if length is None:
                raise ValueError("cannot assign to an unbounded slice")
            indices = range(start, start + length * step, step)
        elif isinstance(key, np.ndarray) and key.ndim > 0:
            indices = _indexing.as_indices(key, self._n).tolist()
        else:
            i = _indexing.normalize_index(key, self._n)
            self._set(i, self._check(i, value))
            return
        values = assigned_values(value, len(indices))
        # Every value is checked before any is written: a failed assignment leaves
        # the sources unchanged (see "Item writes" in the module docstring).
        try:
            checked = check_items(self, indices, values)
        except (TypeError, ValueError) as exc:
            raise reworded(exc, f"cannot assign to this {type(self).__name__}",
                           "nothing was assigned") from exc
        self._set_many(indices, checked)

    def _set_many(self, indices, values):
        """Write ``values[k]`` as item ``indices[k]``, the values already checked."""
        set_ = self._set
        for k, i in enumerate(indices):
            set_(i, values[k])

    def __iter__(self):
        return self._iter()

    def __bool__(self):
        return self._n is None or self._n > 0

    def __repr__(self):
        n = "inf" if self._n is None else self._n
        return f"<seqtools.{type(self).__name__} of {n} items>"

    # -- pickling -------------------------------------------------------------------
    def __getstate__(self):
        state = {}
        mro = type(self).__mro__
        transient = set().union(*(c.__dict__.get("_transient", ()) for c in mro))
        for cls in mro:
            for name in cls.__dict__.get("__slots__", ()):
                if name == "__weakref__" or name in transient:
                    continue
                try:
                    state[name] = pickle_source(getattr(self, name))
                except AttributeError:
                    pass
        if hasattr(self, "__dict__"):
            state.update(self.__dict__)
        return state

    def __setstate__(self, state):
        for name, value in state.items():
            object.__setattr__(self, name, value)
        self._program = None
        self._bind()


class ReaderView(View):
    """A view whose items are always read through its compiled reader ``_rd``.

    Subclasses build ``_rd`` (an ``_indexing.Reader``) in ``_bind()``; it is
    transient, rebuilt after unpickling.
    """

    __slots__ = ("_rd",)
    _transient = ("_rd",)

    def _reader(self):
        return self._rd

    def _getter(self):
        return self._rd.read

    def _get(self, i):
        return self._rd.read(i)


def item_getter(seq):
    """A callable returning item ``i`` of ``seq`` for a normalised index ``i``.

    Views hand out ``_getter()``, which skips the index checks already done by the
    caller.
    """
    if View in type(seq).__mro__:  # cheaper than isinstance on the ABC
        return seq._getter()
    return seq.__getitem__


def item_reader(seq):
    """An ``_indexing.Reader`` of ``seq``'s items, for a view to compile into its own.

    Views hand out ``_reader()``; lists, tuples, ranges and plain numpy arrays are
    read by their ``sq_item``, other sequences by their ``__getitem__``.
    """
    if isinstance(seq, View):
        return seq._reader()
    kind = type(seq)
    if kind is list or kind is tuple or kind is range or (
        kind is np.ndarray and seq.ndim > 0
    ):
        return _indexing.SequenceReader(seq)
    return _indexing.CallReader(seq.__getitem__, len(seq))


def item_setter(seq):
    """A callable writing item ``i`` of ``seq`` for a normalised index ``i``.

    Writes what :func:`check_item` returned, without checking again.
    """
    if isinstance(seq, View):
        return seq._set
    try:
        return seq.__setitem__
    except AttributeError:
        error = _not_assignable(seq)

        def refuse(i, value):
            raise error

        return refuse


# -- checked writes ------------------------------------------------------------------


def _not_assignable(seq):
    return TypeError(
        f"'{type(seq).__name__}' object does not support item assignment; build "
        "the view over a list or a numpy array to assign items"
    )


def reworded(exc, context, advice=None):
    """A new exception of ``exc``'s kind (TypeError or ValueError) saying where.

    The message is ``"{context}: {exc}"``, followed by ``advice`` if given; the
    caller raises it ``from exc``.
    """
    kind = TypeError if isinstance(exc, TypeError) else ValueError
    message = f"{context}: {exc}"
    if advice:
        message = f"{message.rstrip('.')}; {advice}"
    return kind(message)


def _shown(value, width=60):
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _array_refused(arr, exc, what):
    """``exc`` (numpy refusing ``what``) reworded to name the array's dtype."""
    kind = f"dtype {arr.dtype}"
    if arr.ndim > 1:
        kind += f" and items of shape {arr.shape[1:]}"
    return reworded(exc, f"cannot write {what} into a numpy array of {kind}")


def _check_writeable(arr):
    if not arr.flags.writeable:
        raise ValueError(
            "the numpy array is read-only (its writeable flag is False); assign into "
            "a copy (np.array(a)), or open memory-mapped files with mmap_mode='r+'"
        )


def plain_array(seq):
    """True for numpy arrays whose writes :func:`check_array_rows` can foresee.

    Plain and memory-mapped arrays; subclasses (masked arrays...) convert values
    their own way, and are written unchecked, like lists.
    """
    return type(seq) is np.ndarray or type(seq) is np.memmap


def check_array_rows(arr, rows):
    """Raise, writing nothing, if a numpy ``arr`` refuses one of ``rows`` as an item.

    Each value is tried on a scratch row of the array's dtype and row shape, which
    goes through the same conversion as ``arr[i] = value``; errors name the value
    (TypeError or ValueError, numpy's OverflowError becoming a ValueError).
    """
    _check_writeable(arr)
    scratch = np.empty((1,) + arr.shape[1:], arr.dtype)
    for value in rows:
        try:
            scratch[0] = value
        except (TypeError, ValueError, OverflowError) as exc:
            raise _array_refused(arr, exc, _shown(value)) from exc


def check_array_slice(arr, values):
    """Raise, writing nothing, if ``arr[a:a + len(values)] = values`` would fail.

    Tried on a scratch array of the slice's dtype and shape: a slice assignment
    converts all the values at once, which differs from item by item (a ragged list
    of rows, say).
    """
    _check_writeable(arr)
    scratch = np.empty((len(values),) + arr.shape[1:], arr.dtype)
    try:
        scratch[:] = values
    except (TypeError, ValueError, OverflowError) as exc:
        raise _array_refused(arr, exc, f"these {len(values)} values") from exc


def check_item(seq, i, value):
    """The value to write as item ``i`` (normalised) of ``seq``, checked.

    Raises TypeError or ValueError, writing nothing, where ``seq[i] = value`` would
    fail and it can be known: views answer through their ``_check`` (and return
    the value to hand to their ``_set``), numpy arrays try it on a scratch row,
    sequences without ``__setitem__`` refuse. Other sequences (lists, numpy array
    subclasses...) accept any value.
    """
    if View in type(seq).__mro__:
        return seq._check(i, value)
    if plain_array(seq):
        check_array_rows(seq, (value,))
    elif not hasattr(seq, "__setitem__"):
        raise _not_assignable(seq)
    return value


def check_items(seq, indices, values):
    """The list of values to write over items ``indices`` of ``seq``, checked.

    As :func:`check_item` for each, the error naming the first refused value.
    """
    checked = []
    append = checked.append
    for k, i in enumerate(indices):
        value = values[k]
        try:
            append(check_item(seq, i, value))
        except (TypeError, ValueError) as exc:
            raise reworded(exc, f"values[{k}] (for item {i})") from exc
    return checked


def assigned_values(value, n):
    """``value`` as ``n`` values to assign to ``n`` items.

    Lists, tuples and numpy arrays are taken as they are; other iterables (views,
    generators) are read once into a list, since the values are read twice (checked,
    then written) and a slice of the same view may be assigned onto itself.
    """
    if not (type(value) in (list, tuple)
            or (isinstance(value, np.ndarray) and value.ndim > 0)):
        try:
            value = list(value)
        except TypeError:
            raise TypeError(
                "assigning to a slice or to an index array takes a sequence of "
                f"values, one per item, not {type(value).__name__}"
            ) from None
    if len(value) != n:
        raise ValueError(
            f"attempt to assign a sequence of size {len(value)} to a slice "
            f"of size {n}: views cannot change size"
        )
    return value


def as_source(seq):
    """``seq``, with a memory-mapped array replaced by a plain view of its memory."""
    if isinstance(seq, np.memmap):
        return seq.view(np.ndarray)
    return seq


def source_length(seq, what="sequence"):
    """``len(seq)``, or None for an infinite view; TypeError for non-sequences."""
    if View in type(seq).__mro__:
        return seq._n
    if not hasattr(seq, "__getitem__"):
        raise TypeError(f"{what} must be indexable, got {type(seq).__name__}")
    try:
        return len(seq)
    except TypeError:
        raise TypeError(
            f"{what} must have a length, got {type(seq).__name__}"
        ) from None


# -- fused reads ---------------------------------------------------------------------


class Rows:
    """A fusion-plan leaf: row ``k`` is ``sources[part[k]][local[k]]``.

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
    """A fusion-plan leaf read item by item: ``seq[i]`` for ``i`` in ``indices``."""

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


def fuse(seq, indices):
    """The fusion plan of items ``indices`` (normalised int64 array) of ``seq``."""
    if View in type(seq).__mro__:
        prog = program(seq)
        if prog is not None:
            return prog.plan(indices)
        return seq._fuse(indices)
    if isinstance(seq, np.ndarray):
        spec = row_spec(seq)
        if spec is not None:
            return Rows((seq,), None, indices, *spec)
    return Items(seq, indices)


def peel(seq, indices):
    """Follow the index-only views at the top of ``seq`` for items ``indices``.

    Returns ``(source, source_indices)``: the first view (or array...) that does not
    hand its indices on through ``_locate``, and the indices of the items there.
    """
    while View in type(seq).__mro__ and type(seq)._fuse is View._fuse:
        source, local = seq._locate(indices)
        if source is seq:
            break
        seq, indices = source, local
    return seq, indices


# -- compiled programs ---------------------------------------------------------------


class Program:
    """A view graph compiled for fused reads, once per view: see :func:`program`.

    Attributes
    ----------
    structure : int or tuple
        The plan's structure, with each leaf replaced by its number (nested tuples
        for :func:`seqtools.collate`).
    leaves : tuple of ProgramLeaf
        The leaves in depth-first order.
    resolver : seqtools._indexing.Resolver
        Maps a batch of indices of the view to every leaf, in one call.
    rows_only : bool
        True when every leaf is a :class:`Rows` source (no per-item reads).
    stacker : object
        Left to :mod:`seqtools.stacking`, which keeps its own compiled state here
        (output layout, source buffers); None until the first stack.
    """

    __slots__ = ("structure", "leaves", "resolver", "rows_only", "stacker")

    def __init__(self, n, structure, leaves):
        self.structure = structure
        self.leaves = tuple(leaves)
        self.resolver = _indexing.Resolver(
            n, [(leaf.ops, leaf.offsets) for leaf in self.leaves])
        self.rows_only = all(leaf.spec is not None for leaf in self.leaves)
        self.stacker = None

    def plan(self, indices):
        """The fusion plan of items ``indices`` (see :func:`fuse`)."""
        plans = []
        for leaf, (part, local) in zip(self.leaves, self.resolver.resolve(indices)):
            if leaf.spec is None:
                plans.append(fuse(leaf.seq, local))
            else:
                plans.append(Rows(leaf.seq, part, local, *leaf.spec))
        structure = self.structure
        if type(structure) is int:
            return plans[structure]
        return _build(structure, plans)


def _build(structure, plans):
    return tuple([plans[s] if type(s) is int else _build(s, plans)
                  for s in structure])


class ProgramLeaf:
    """A leaf of a :class:`Program`, reached from the view through index maps.

    ``ops`` is the tuple of maps from the view's indices to the leaf's, root first
    (``("affine", start, step)``: a slice; ``("take", table)``: a gather, with an
    int64 ``table``). With a ``spec`` ``(dtype, row shape)``, the leaf is a
    :class:`Rows` source: ``seq`` is its tuple of arrays and ``offsets`` (int64,
    ``[0, len0, len0 + len1, ...]``, None for one array) splits the leaf's indices
    between them. Without (``spec`` None), ``seq`` is read through :func:`fuse`
    with the mapped indices.
    """

    __slots__ = ("ops", "seq", "offsets", "spec")

    def __init__(self, ops, seq, offsets=None, spec=None):
        self.ops = ops
        self.seq = seq
        self.offsets = offsets
        self.spec = spec


def compile_leaves(seq, ops, leaves):
    """Compile ``seq``, reached through the index maps ``ops``, into ``leaves``.

    Appends the leaves of ``seq`` to the list ``leaves`` and returns its structure
    (a leaf number, or a tuple of structures). Views take part through a
    ``_compile(ops, leaves)`` method defined by their class itself (an inherited
    one does not count: a subclass may read its items otherwise); other views are
    leaves read through :func:`fuse`.
    """
    method = type(seq).__dict__.get("_compile")
    if method is not None:
        return method(seq, ops, leaves)
    spec = row_spec(seq)
    if spec is not None:
        leaves.append(ProgramLeaf(ops, (seq,), None, spec))
    else:
        leaves.append(ProgramLeaf(ops, seq))
    return len(leaves) - 1


def program(seq):
    """The compiled :class:`Program` of view ``seq``, or None if it has none.

    Views compile when their class defines both ``_fuse`` and ``_compile`` (collate,
    concatenate): the walk down the graph happens on the first fused read and is
    cached on the view, since views never change structure (item assignment writes
    to the sources). Index-only views (slices, gathers) define ``_compile`` only:
    made per batch more often than not, they are not compiled themselves; their
    ``_fuse`` maps the indices with one kernel call and reads on from their source,
    whose program is reused. Inside a compiled graph they are index maps.
    """
    try:
        prog = seq._program
    except AttributeError:  # not a view, or a subclass that skipped View.__init__
        return None
    if prog is None:
        prog = False
        cls = type(seq)
        if "_compile" in cls.__dict__ and "_fuse" in cls.__dict__:
            leaves = []
            structure = compile_leaves(seq, (), leaves)
            # A view that compiles to itself (mixed concatenations) reads through
            # its own _fuse: caching that would only tie the view to itself.
            if not (type(structure) is int and leaves[0].seq is seq):
                prog = Program(seq._n, structure, leaves)
        seq._program = prog
    return prog or None


def merge_plans(plans, positions, n):
    """One plan of ``n`` rows from ``plans[j]`` giving rows ``positions[j]``.

    The plans must have one structure, and their Rows leaves one dtype and row
    shape; returns None otherwise (or if a leaf is :class:`Items`), and the caller
    reads item by item.
    """
    first = plans[0]
    if type(first) is tuple:
        if any(type(p) is not tuple or len(p) != len(first) for p in plans):
            return None
        children = []
        for k in range(len(first)):
            child = merge_plans([p[k] for p in plans], positions, n)
            if child is None:
                return None
            children.append(child)
        return tuple(children)
    if type(first) is not Rows:
        return None
    sources = []
    part = np.empty(n, np.int64)
    local = np.empty(n, np.int64)
    for p, pos in zip(plans, positions):
        if type(p) is not Rows or p.dtype != first.dtype or p.shape != first.shape:
            return None
        part[pos] = len(sources) if p.part is None else p.part + len(sources)
        local[pos] = np.arange(len(p)) if p.local is None else p.local
        sources.extend(p.sources)
    return Rows(tuple(sources), part, local, first.dtype, first.shape)


# -- pickling memory-mapped sources by reference -------------------------------------


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


class SliceView(View):
    """Items ``start + k * step`` of a source sequence, ``0 <= k < length``."""

    __slots__ = ("_base", "_start", "_step", "_base_get", "_rd")
    _transient = ("_base_get", "_rd")

    def __init__(self, base, start, step, length):
        View.__init__(self, length)
        self._base = as_source(base)
        self._start = start
        self._step = step
        self._bind()

    def _bind(self):
        self._base_get = item_getter(self._base)
        if self._n is None:
            # Indices past 64 bits still make sense on an infinite view: keep to
            # Python ints.
            self._rd = None
        else:
            self._rd = _indexing.SliceReader(
                item_reader(self._base), self._start, self._step, self._n
            )

    def _reader(self):
        return View._reader(self) if self._rd is None else self._rd

    def _getter(self):
        return self._get if self._rd is None else self._rd.read

    def _get(self, i):
        return self._base_get(self._start + i * self._step)

    def _check(self, i, value):
        return check_item(self._base, self._start + i * self._step, value)

    def _set(self, i, value):
        item_setter(self._base)(self._start + i * self._step, value)

    def _slice(self, start, step, length):
        # A slice of a slice is one slice of the source.
        start, step = _indexing.compose_slice(self._start, self._step, start, step)
        if isinstance(self._base, View):
            return self._base._slice(start, step, length)
        return SliceView(self._base, start, step, length)

    def _locate(self, indices):
        if self._start == 0 and self._step == 1:  # view[:n]: the same indices
            return self._base, indices
        return self._base, _indexing.affine_indices(indices, self._start, self._step)

    def _compile(self, ops, leaves):
        if self._start != 0 or self._step != 1:
            ops = ops + (("affine", self._start, self._step),)
        return compile_leaves(self._base, ops, leaves)

    def _iter(self):
        base = self._base
        n, start, step = self._n, self._start, self._step
        if n is None:
            return map(self._base_get, itertools.count(start, step))
        if isinstance(base, View):
            return iter(self._rd)
        stop = start + n * step
        if stop < 0:
            stop = None
        try:
            # Native slicing is fastest for lists/arrays; fall back otherwise.
            return iter(base[start:stop:step])
        except TypeError:
            return iter(self._rd)
