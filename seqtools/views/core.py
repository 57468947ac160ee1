"""The base class of every lazy view, and what ``view[key]`` returns for each key.

A view maps indices onto one or more source sequences and evaluates items only when
they are read. Subclasses implement ``_get(i)`` for a normalised index
``0 <= i < len`` (or any ``i >= 0`` for infinite views), optionally ``_set``
(with ``_check``, see :mod:`seqtools.views.access`), ``_slice``, ``_iter``, and the
fused-read hooks of :mod:`seqtools.views.fusion`; the base class handles negative
indices, slices, integer-array keys, iteration, pickling and the errors Python
lists give. The index arithmetic itself runs in the ``_indexing`` Cython kernels.

A slice of a view is a :class:`SliceView`, an integer-array key a
:class:`Gathering` (what :func:`seqtools.gather` makes); stacked index views
collapse here, so that a batch is one index array over the innermost source: a
slice of a slice is one slice, a slice of a gather one gather, and a gather of a
gather or of a slice one gather (:func:`gathered`).

Item reads
----------
Index-only views (slices, ``gather``, ``concatenate``, ``collate``) compile, when
they are built, a *reader* (``_indexing.Reader``): a tree of C objects mirroring the
view graph down to the sources' own ``sq_item``, kept in the view's ``_rd`` slot
(see :mod:`seqtools.views.access`). ``view[i]`` and iteration then cost one C call per
view and per item instead of a Python frame, and items are exactly what the
sources' ``__getitem__`` returns.

Views pickle memory-mapped sources by reference (:mod:`seqtools.views.memmaps`), so that
worker processes reopen the file instead of receiving a copy of the dataset.
"""

import itertools
from collections.abc import Sequence

import numpy as np

from ..errors import creation_site
from . import _indexing
from .access import (
    Accessible,
    WriteThrough,
    as_source,
    assigned_values,
    check_items,
    item_getter,
    item_reader,
    reworded,
)
from .memmaps import pickle_source

__all__ = ["View", "ReaderView", "SliceView", "Gathering", "gathered"]

# Fused-read hooks that describe one class's items exactly: a subclass does not
# inherit them (see seqtools.views.fusion, "How a view takes part").
_PER_CLASS_HOOKS = ("_index_op", "_compile")


class View(Accessible, Sequence):
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
        self._program = None  # see seqtools.views.fusion.program()

    # -- subclass hooks -------------------------------------------------------------
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

        The default is the identity; index-only views (slices, gathers, cycles)
        return their source, so that a fused read (:mod:`seqtools.views.fusion`) reads a
        whole batch of items from it in one call.
        """
        return self, indices

    # Fused reads (see seqtools.views.fusion): a class opts in by defining these.
    _fuse = None  # method (indices) -> source map
    _index_op = None  # method () -> (source, index map); not inherited
    _compile = None  # method (ops, leaves) -> structure; not inherited
    # method (local, part, j) -> the array whose rows are the view's items,
    # rows local[part == j] made readable first (rows that arrive on demand:
    # remote arrays); with ``_rows_spec``, their (dtype, row shape) or None.
    # See fusion.prepared.
    _prepare_rows = None
    # Thread loaders (seqtools.loaders): a view whose item can be one native
    # copy defines ``_copy_job(i) -> (job, item)`` (see stacking.copy_job), or
    # None for an item that cannot; the loader's copy threads then run the job.
    _copy_job = None

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for name in _PER_CLASS_HOOKS:
            if name not in cls.__dict__:
                setattr(cls, name, None)

    def _bind(self):
        """Rebuild the attributes named in ``_transient`` (after init, unpickling)."""

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
            return gathered(self, _indexing.as_indices(key, self._n), True)
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


class SliceView(WriteThrough, View):
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

    def _item_source(self, i):
        return self._base, self._start + i * self._step

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

    def _index_op(self):
        if self._start == 0 and self._step == 1:
            return self._base, None
        return self._base, ("affine", self._start, self._step)

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


class Gathering(WriteThrough, ReaderView):
    """Items ``base[idx[k]]`` for a validated, read-only int64 index array ``idx``.

    ``as_array`` says whether the indices were given as a numpy array, for
    :attr:`indexes` to answer in kind.
    """

    __slots__ = ("_base", "_table", "_as_array")

    def __init__(self, base, idx, as_array):
        View.__init__(self, idx.shape[0])
        self._base = base
        self._table = _indexing.IndexTable(idx)
        self._as_array = as_array
        self._bind()

    def _bind(self):
        self._rd = _indexing.TakeReader(self._table, item_reader(self._base))

    @property
    def indices(self):
        """The int64 array of source indices (read-only)."""
        return self._table.array

    @property
    def indexes(self):
        """The indices into :attr:`sequence`, as SeqTools 1.4.1 code reads them.

        A new list (a read-only int64 array when the indices were given as a
        numpy array), negative ones wrapped, composed through slices and nested
        gathers: ``view[k]`` is ``view.sequence[view.indexes[k]]``.
        """
        if self._as_array:
            return self._table.array
        return self._table.array.tolist()

    @property
    def sequence(self):
        """The source the items are read from (that of nested gathers and slices)."""
        return self._base

    def _item_source(self, i):
        return self._base, self._table.at(i)

    def _slice(self, start, step, length):
        idx = self._table.array[start::step][:length]
        return Gathering(self._base, idx, self._as_array)

    def _locate(self, indices):
        return self._base, _indexing.compose_indices(self._table.array, indices)

    def _index_op(self):
        return self._base, ("take", self._table.array)

    def _iter(self):
        return iter(self._rd)


def gathered(seq, idx, as_array):
    """A :class:`Gathering` of the checked int64 indices ``idx`` over ``seq``.

    The gather is pushed through the slices and gathers at the top of ``seq``, so
    that the result reads from the innermost source with one index array (a
    prefix slice such as ``ds[:-100]`` keeps the indices as they are).
    ``as_array``: see :class:`Gathering`.
    """
    while True:
        kind = type(seq)
        if kind is Gathering:
            idx = _indexing.compose_indices(seq._table.array, idx)
        elif kind is SliceView:
            if seq._start != 0 or seq._step != 1:
                idx = _indexing.affine_indices(idx, seq._start, seq._step)
        else:
            break
        seq = seq._base
    return Gathering(seq, idx, as_array)
