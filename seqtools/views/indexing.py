"""Views that rearrange items without computing anything: arange, gather, concatenate,
collate.

They sit between a dataset (lists, numpy arrays, memory-mapped ``.npy`` chunks) and a
training loop: ``gather(collate([concatenate(chunks), labels]), order)`` is a
shuffled, paired view of the whole dataset that reads one item only when asked.
Index arithmetic runs in the ``_indexing`` kernels; stacked index views collapse
into one (a gather of a gather or of a slice is one gather over the innermost source,
with one int64 index array), and each view compiles an ``_indexing`` reader from its
sources' (see :mod:`seqtools.views.core`), so that reading an item costs no Python
frame between the caller and the sources. The view ``gather`` returns
(:class:`~seqtools.views.core.Gathering`) lives in :mod:`seqtools.views.core` with the
slices, where the collapsing rules are.

All four take part in fused reads (see :mod:`seqtools.views.fusion`):
``seqtools.stack`` of a gather over ``collate([concatenate(chunks), labels])``
resolves the whole batch of indices with one kernel call per level and copies rows
straight from the chunks.
"""

import itertools

import numpy as np

from .._checks import length
from . import _indexing
from .access import (
    WriteThrough,
    as_source,
    check_item,
    item_reader,
    item_setter,
    reworded,
)
from .core import Gathering, ReaderView, View, gathered
from .fusion import (
    Items,
    ProgramLeaf,
    Rows,
    compile_leaves,
    fuse,
    fuse_parts,
    prepared,
    prepared_spec,
    row_spec,
)

__all__ = ["arange", "gather", "take", "concatenate", "collate", "Gathering"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


class Arange(ReaderView):
    """The integers of a ``range``, as a view, read by the range's own ``sq_item``."""

    __slots__ = ("_range",)

    def __init__(self, r):
        View.__init__(self, len(r))
        self._range = r
        self._bind()

    def _bind(self):
        self._rd = _indexing.SequenceReader(self._range)

    def _check(self, i, value):
        raise TypeError(
            "arange views are read-only: their items are computed; gather from a "
            "list or an array instead to assign items"
        )

    _set = _check

    def _slice(self, start, step, length):
        r = self._range
        first = r.start + r.step * start
        step = r.step * step
        return Arange(range(first, first + length * step, step))

    def _iter(self):
        return iter(self._range)

    def _fuse(self, indices):
        r = self._range
        lo, hi = min(r.start, r.stop), max(r.start, r.stop)
        if not (_INT64_MIN <= lo and hi <= _INT64_MAX):
            return Items(self, indices)
        values = indices * r.step + r.start  # int64: stacked Python ints are int64
        return Rows((values,), None, None, values.dtype, ())

    def __repr__(self):
        r = self._range
        return f"<seqtools.arange({r.start}, {r.stop}, {r.step})>"


def arange(start, stop=None, step=None):
    """Return a view of the integers of ``range(start, stop, step)``.

    Sequential equivalent of the built-in :class:`range`, usable wherever a view
    is expected (for example as gather indices). Items cannot be assigned.

    Parameters
    ----------
    start : int
        First value, or the stop value when ``stop`` is omitted (then start is 0).
    stop : int, optional
        End value, excluded.
    step : int, optional
        Increment (default 1, cannot be 0).

    Returns
    -------
    View
        A read-only view of ``len(range(start, stop, step))`` integers.

    Examples
    --------
    >>> import seqtools
    >>> list(seqtools.arange(2, 10, 3))
    [2, 5, 8]
    >>> seqtools.arange(5)[::-2][0]
    4
    """
    if stop is None:
        r = range(start) if step is None else range(0, start, step)
    else:
        r = range(start, stop, 1 if step is None else step)
    return Arange(r)


def gather(sequence, indexes):
    """Return a view of ``sequence`` reordered by ``indexes``.

    Item ``k`` of the view is ``sequence[indexes[k]]``, read on demand; assigning
    an item writes it to ``sequence``. Indices are checked once, here: negative
    ones are wrapped and out-of-range ones rejected. Stacked index views collapse:
    a gather of a gather, a gather of a slice and a slice of a gather are each one
    gather with a single int64 index array over the innermost source.

    Parameters
    ----------
    sequence : sequence
        The source: a list, a numpy array (memory-mapped ones are read through a
        plain ``ndarray`` view of their memory), a view...
    indexes : array_like of int
        A 1-D numpy array of any integer dtype, a range, or a sequence of integers.
        The view keeps its own copy: later changes to ``indexes`` do not affect it.

    Returns
    -------
    View
        A view of ``len(indexes)`` items. Its ``sequence`` and ``indexes``
        attributes are the source and the indices into it (a list, or an array
        when `indexes` is one), after collapsing: ``view[k]`` is
        ``view.sequence[view.indexes[k]]``; ``indices`` is the int64 array itself.

    Raises
    ------
    IndexError
        If an index is out of range (SeqTools 1.4.1 fails later, when the item is
        read); the message names its position and value.
    TypeError
        If an index is not an integer (boolean masks included).

    Examples
    --------
    >>> import seqtools
    >>> arr = ['d', 'e', 'h', 'l', 'o', 'r', 'w', ' ']
    >>> idx = [2, 1, 3, 3, 4, 7, 6, 4, 5, 3, 0]
    >>> ''.join(seqtools.gather(arr, idx))
    'hello world'
    >>> seqtools.gather(arr, idx)[-1]
    'd'
    >>> seqtools.gather(arr, idx)[2:8:2].indexes
    [3, 4, 6]
    """
    seq = as_source(sequence)
    as_array = isinstance(indexes, np.ndarray)
    if type(indexes) is Arange:
        indexes = indexes._range  # one numpy call instead of reading item by item
    idx = _indexing.as_indices(indexes, length(seq, "gather", infinite=True))
    return gathered(seq, idx, as_array)


def take(sequence, indexes):
    """Alias for :func:`gather`.

    Examples
    --------
    >>> import seqtools
    >>> list(seqtools.take([10, 11, 12], [2, 0]))
    [12, 10]
    """
    return gather(sequence, indexes)


class Concatenation(WriteThrough, ReaderView):
    """The items of several finite sequences, one after the other."""

    __slots__ = ("_parts", "_table", "_rows", "_prepare")
    _transient = ("_rows", "_prepare")

    def __init__(self, parts):
        table = _indexing.OffsetTable([length(p, "concatenate") for p in parts])
        View.__init__(self, table.total)
        self._parts = parts
        self._table = table
        self._bind()

    def _bind(self):
        self._rd = _indexing.PartsReader(
            self._table, [item_reader(p) for p in self._parts]
        )
        # (dtype, row shape) when every part is an array with these rows: a batch
        # is then one Rows over the parts, straight from ``locate_many``. Parts
        # that prepare their rows on demand (remote arrays) count as arrays,
        # swapped for theirs per batch (fusion.prepared).
        specs = {row_spec(p) or prepared_spec(p) for p in self._parts}
        self._rows = specs.pop() if len(specs) == 1 else None
        self._prepare = self._rows is not None and any(
            row_spec(p) is None for p in self._parts)

    @property
    def sequences(self):
        """The parts, nested concatenations flattened, as a new list."""
        return list(self._parts)

    def _item_source(self, i):
        p, j = self._table.locate(i)
        return self._parts[p], j

    def _iter(self):
        return itertools.chain.from_iterable(map(iter, self._parts))

    def _locate_parts(self, indices):
        """``(parts, local)`` int64 arrays for normalised item ``indices``."""
        return self._table.locate_many(indices)

    def _fuse(self, indices):
        part, local = self._table.locate_many(indices)
        if self._rows is not None:
            parts = self._parts
            if self._prepare:
                parts = prepared(parts, part, local)
            if parts is not None:
                return Rows(parts, part, local, *self._rows)
        # Mixed parts: a source map per part for the rows it holds, merged if they
        # agree.
        merged = fuse_parts(self._parts, part, local, len(indices))
        return Items(self, indices) if merged is None else merged

    def _compile(self, ops, leaves):
        if self._rows is None:
            leaves.append(ProgramLeaf(ops, self))
        else:
            offsets = self._table.offsets
            leaves.append(ProgramLeaf(ops, self._parts, offsets, self._rows,
                                      self._prepare))
        return len(leaves) - 1


def concatenate(sequences):
    """Return a view of the items of ``sequences``, one sequence after the other.

    Assigning an item writes it to the sequence that holds it. Nested
    concatenations are flattened into one.

    Parameters
    ----------
    sequences : iterable of sequences
        Finite sequences (lists, arrays, memory-mapped arrays, views); empty ones
        are allowed.

    Returns
    -------
    View
        A view of ``sum(len(s) for s in sequences)`` items. Its ``sequences``
        attribute lists the parts, those of nested concatenations included.

    Raises
    ------
    TypeError
        If `sequences` is not an iterable of sequences, or one of them has no
        length (infinite views included).

    Examples
    --------
    >>> import seqtools
    >>> cat = seqtools.concatenate([[0, 1, 2, 3], [4, 5], [6, 7, 8]])
    >>> len(cat), cat[4], cat[-1]
    (9, 4, 8)
    >>> list(cat[3:6])
    [3, 4, 5]
    """
    if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__iter__"):
        raise TypeError(
            "concatenate expects an iterable of sequences, not "
            f"{type(sequences).__name__}"
        )
    parts = []
    for k, s in enumerate(sequences):
        if type(s) is Concatenation:
            parts.extend(s._parts)
            continue
        n = length(s, "concatenate", f"sequence {k}", True)
        if n is None:
            raise TypeError(
                f"concatenate: sequence {k} is infinite (it has no len()); take a "
                "finite slice first, e.g. seq[:1000]"
            )
        parts.append(as_source(s))
    return Concatenation(tuple(parts))


class Collation(ReaderView):
    """Tuples of the items with the same index in several sequences."""

    __slots__ = ("_sources",)

    def __init__(self, sources, n):
        View.__init__(self, n)
        self._sources = sources
        self._bind()

    def _bind(self):
        self._rd = _indexing.TupleReader(
            [item_reader(s) for s in self._sources], self._n
        )

    def _check(self, i, value):
        n = len(self._sources)
        if not hasattr(value, "__len__") or not hasattr(value, "__iter__"):
            raise TypeError(
                f"collate: assign a sequence of {n} values, one per source, not "
                f"{type(value).__name__} {value!r}"
            )
        if len(value) != n:
            raise ValueError(
                f"collate: assign a sequence of {n} values, one per source, not "
                f"{len(value)} values {value!r}"
            )
        checked = []
        for k, (s, v) in enumerate(zip(self._sources, value)):
            try:
                checked.append(check_item(s, i, v))
            except (TypeError, ValueError) as exc:
                raise reworded(exc, f"collate: value {k} (for source {k})") from exc
        return tuple(checked)

    def _set(self, i, value):
        for s, v in zip(self._sources, value):
            item_setter(s)(i, v)

    def _fuse(self, indices):
        return tuple([fuse(s, indices) for s in self._sources])

    def _compile(self, ops, leaves):
        return tuple([compile_leaves(s, ops, leaves) for s in self._sources])

    def _iter(self):
        # Each source iterates by its fastest path (views iterate faster than they
        # index); the finite lengths are equal, so zip stops where they end.
        return zip(*self._sources)


def collate(sequences):
    """Return a view of tuples of the items of ``sequences`` with the same index.

    Item ``k`` is ``(s[k] for s in sequences)`` as a tuple, read on demand.
    Assigning an item takes one value per sequence and writes each to its sequence.

    Parameters
    ----------
    sequences : iterable of sequences
        At least one; the finite ones must have the same length, which infinite
        views (``repeat(label)``...) fit.

    Returns
    -------
    View
        A view of as many tuples as the finite sequences have items (infinite if
        all are infinite views).

    Raises
    ------
    ValueError
        If no sequence is given or their lengths differ.

    Examples
    --------
    >>> import seqtools
    >>> arr = seqtools.collate([[1, 2, 3, 4], ['a', 'b', 'c', 'd'], [5, 6, 7, 8]])
    >>> arr[2]
    (3, 'c', 7)
    >>> arr[-1] = (0, 'z', 0)
    >>> arr[3]
    (0, 'z', 0)
    """
    if isinstance(sequences, (str, bytes)) or not hasattr(sequences, "__iter__"):
        raise TypeError(
            f"collate expects an iterable of sequences, not {type(sequences).__name__}"
        )
    sources = tuple(as_source(s) for s in sequences)
    if not sources:
        raise ValueError("collate needs at least one sequence")
    lengths = [
        length(s, "collate", f"sequence {k}", True) for k, s in enumerate(sources)
    ]
    finite = {n for n in lengths if n is not None}
    if len(finite) > 1:
        shown = ["inf" if n is None else n for n in lengths]
        raise ValueError(f"collate: sequences have different lengths {shown}")
    return Collation(sources, finite.pop() if finite else None)
