"""Views that combine or repeat sequences: interleave, cycle, repeat, switch, case.

They merge several sources item by item (:func:`interleave`, :func:`switch`,
:func:`case`) or extend one without copying (:func:`cycle`, :func:`repeat`, which
can be infinite). The index arithmetic of interleave and cycle runs in the
``_indexmaps`` Cython kernels.
"""

import itertools
import operator
import sys

from .._checks import check_int, length
from . import _indexmaps
from .access import WriteThrough
from .core import View

__all__ = ["interleave", "cycle", "repeat", "switch", "case"]


def _is_infinite(seq):
    return isinstance(seq, View) and seq._n is None


def _common_length(func, named):
    """Length shared by the finite sequences of ``named`` ((name, seq) pairs).

    Infinite views (cycle, repeat) fit any length; None when all are infinite.
    """
    lengths = [(name, length(seq, func, name)) for name, seq in named
               if not _is_infinite(seq)]
    if len({n for _, n in lengths}) > 1:
        got = ", ".join(f"len({name}) = {n}" for name, n in lengths)
        raise ValueError(
            f"{func}(): all sequences must have the same length, got {got}; "
            "slice them to a common length (infinite views such as repeat() fit "
            "any length)"
        )
    return lengths[0][1] if lengths else None


# -- interleave ---------------------------------------------------------------------


class InterleaveView(WriteThrough, View):
    """Items of several sequences taken in turn (see :func:`interleave`)."""

    __slots__ = ("_seqs", "_lengths", "_map")
    _transient = ("_map",)  # a compiled index map, rebuilt from the lengths

    def __init__(self, seqs, lengths):
        self._seqs = seqs
        self._lengths = lengths
        self._bind()
        View.__init__(self, self._map.size)

    def _bind(self):
        self._map = _indexmaps.InterleaveMap(self._lengths)

    def _get(self, i):
        s, j = self._map.locate(i)
        return self._seqs[s][j]

    def _item_source(self, i):
        s, j = self._map.locate(i)
        return self._seqs[s], j

    def _iter(self):
        # Round robin over iterators, phase by phase (a phase ends when the
        # shortest sequence still active runs out).
        lengths = self._map.lengths.tolist()
        active = [(n, iter(s)) for n, s in zip(lengths, self._seqs) if n > 0]
        done = 0
        while active:
            end = min(n for n, _ in active)
            iters = [it for _, it in active]
            for _ in range(end - done):
                for it in iters:
                    yield next(it)
            done = end
            active = [(n, it) for n, it in active if n > end]


class EndlessInterleaveView(WriteThrough, View):
    """Interleaving where some sources are infinite views (see :func:`interleave`).

    Up to the end of the longest finite source, the items are those of the finite
    interleaving in which the infinite sources count as that long (the compiled
    ``InterleaveMap``); past it, the infinite sources take turns on their own.
    """

    __slots__ = ("_seqs", "_lengths", "_endless", "_head", "_map", "_mapped")
    _transient = ("_map", "_mapped")

    def __init__(self, seqs, lengths):
        View.__init__(self, None)
        self._seqs = seqs
        self._lengths = lengths  # None for an infinite source
        self._endless = tuple(k for k, n in enumerate(lengths) if n is None)
        self._head = max([n for n in lengths if n is not None], default=0)
        self._bind()

    def _bind(self):
        capped = [self._head if n is None else n for n in self._lengths]
        self._map = _indexmaps.InterleaveMap(capped)
        self._mapped = self._map.size

    def __getitem__(self, key):
        if type(key) is int and key > sys.maxsize:  # past 64 bits, still an item
            return self._get(key)
        return View.__getitem__(self, key)

    def _locate_one(self, i):
        if i < self._mapped:
            return self._map.locate(i)
        rnd, turn = divmod(i - self._mapped, len(self._endless))
        return self._endless[turn], self._head + rnd

    def _get(self, i):
        s, j = self._locate_one(i)
        return self._seqs[s][j]

    def _item_source(self, i):
        s, j = self._locate_one(i)
        return self._seqs[s], j

    def _iter(self):
        return _round_robin(self._seqs)


def _round_robin(iterables):
    """Items of ``iterables`` in turn, skipping those that have run out.

    Each phase cycles over the iterators still active until one runs out (``map``
    stops at its StopIteration, the exhausted iterator already taken from the
    cycle), then goes on with the others in the same order, without the
    exhausted one.
    """
    turns = map(iter, iterables)
    for active in range(len(iterables), 0, -1):
        turns = itertools.cycle(itertools.islice(turns, active))
        yield from map(next, turns)


class InterleavedIterables:
    """Items of several iterables taken in turn, without random access.

    What :func:`interleave` returns when an input has no length (a generator, an
    iterator, a sequence without ``len()``): it can be iterated, as many times as
    its inputs can, but not indexed.
    """

    __slots__ = ("_iterables",)

    def __init__(self, iterables):
        self._iterables = iterables

    def __iter__(self):
        return _round_robin(self._iterables)

    def __repr__(self):
        return f"<seqtools.InterleavedIterables of {len(self._iterables)} iterables>"


def interleave(*sequences):
    """Interleave the items of several sequences into one.

    Sequences may have different lengths: once one runs out, the turns continue
    between those left.

    Parameters
    ----------
    *sequences : Sequence or iterable
        Sequences, infinite views (``cycle(x)``, ``repeat(x)``...) or, for a
        result that can only be iterated, iterables without a length.

    Returns
    -------
    Sequence or iterable
        With finite sequences, a view of ``sum(map(len, sequences))`` items;
        locating an item costs O(log m + m) for m sequences, whatever the index.
        With infinite views among them, an infinite view (once the finite
        sequences run out, the infinite ones go on in turn). Assigning an item of
        either writes it into its source. If an input has no length (a generator,
        an iterator), an ``InterleavedIterables`` object that can only be iterated,
        as in SeqTools 1.4.1.

    Raises
    ------
    TypeError
        If an input is not iterable.

    Examples
    --------
    >>> import seqtools
    >>> list(seqtools.interleave([1, 2, 3, 4, 5], ['a', 'b', 'c'], [.1, .2, .3, .4]))
    [1, 'a', 0.1, 2, 'b', 0.2, 3, 'c', 0.3, 4, 0.4, 5]
    >>> endless = seqtools.interleave(seqtools.cycle([1, 2]), ['a', 'b', 'c'])
    >>> list(endless[:8])
    [1, 'a', 2, 'b', 1, 'c', 2, 1]
    >>> endless[10 ** 12]
    2
    """
    lengths = []
    for k, s in enumerate(sequences):
        if isinstance(s, View) and s._n is None:
            lengths.append(None)
            continue
        try:
            lengths.append(length(s, "interleave", f"sequence (argument {k})"))
        except TypeError:
            if not hasattr(s, "__iter__") and not hasattr(s, "__getitem__"):
                raise TypeError(
                    f"interleave(): argument {k} is neither a sequence nor an "
                    f"iterable, got {type(s).__name__}"
                ) from None
            return InterleavedIterables(sequences)
    if None in lengths:
        return EndlessInterleaveView(sequences, lengths)
    return InterleaveView(sequences, lengths)


# -- cycle and repeat ---------------------------------------------------------------


class CycleView(WriteThrough, View):
    """A sequence repeated, up to a limit or forever (see :func:`cycle`)."""

    __slots__ = ("_seq", "_m")

    def __init__(self, seq, m, limit):
        View.__init__(self, limit)
        self._seq = seq
        self._m = m

    def __getitem__(self, key):
        # Indices beyond 64 bits still make sense on an infinite cycle.
        if self._n is None and type(key) is int and key > sys.maxsize:
            return self._seq[key % self._m]
        return View.__getitem__(self, key)

    def _get(self, i):
        # Inline modulo: cheaper than a kernel call for a single index.
        return self._seq[i % self._m]

    def _item_source(self, i):
        return self._seq, i % self._m

    def _locate(self, indices):
        return self._seq, _indexmaps.cycle_locate_array(indices, self._m, self._n)

    def _iter(self):
        # Iterate the source afresh on each round, so that writes show up.
        rounds = itertools.chain.from_iterable(itertools.repeat(self._seq))
        if self._n is None:
            return rounds
        return itertools.islice(rounds, self._n)


def cycle(sequence, limit=None):
    """Return a view of a sequence repeated over and over.

    Parameters
    ----------
    sequence : Sequence
        The sequence to repeat, finite and non-empty (unless `limit` is 0). An
        infinite view is its own cycle: the result is then `sequence` (or its first
        `limit` items).
    limit : int, optional
        Number of items of the view; ``None`` (the default) makes it infinite.

    Returns
    -------
    Sequence
        Item ``i`` is ``sequence[i % len(sequence)]``; assigning it writes into
        `sequence`. An infinite view has no ``len()`` (TypeError), refuses negative
        indices (IndexError), but can be iterated, indexed with any non-negative
        integer and sliced with a ``stop``.

    Raises
    ------
    TypeError
        If `sequence` has no length or `limit` is not an integer.
    ValueError
        If `limit` < 0, or `sequence` is empty and the view is not (SeqTools
        1.4.1 loops forever there).

    Examples
    --------
    >>> import seqtools
    >>> loop = seqtools.cycle(['a', 'b', 'c'])
    >>> loop[3], loop[3 * 10 ** 9 + 1]
    ('a', 'b')
    >>> list(loop[2:6])
    ['c', 'a', 'b', 'c']
    >>> list(seqtools.cycle(['a', 'b', 'c'], 7))
    ['a', 'b', 'c', 'a', 'b', 'c', 'a']
    """
    if limit is not None:
        limit = check_int(limit, "limit", "cycle", 0)
    if isinstance(sequence, View) and sequence._n is None:
        return sequence if limit is None else sequence[:limit]
    m = length(sequence, "cycle")
    if m == 0 and limit != 0:
        raise ValueError(
            "cycle(): cannot cycle over an empty sequence (it would have no items to "
            "repeat); check the source, or pass limit=0"
        )
    return CycleView(sequence, m, limit)


class RepeatView(View):
    """One value repeated, a number of times or forever (see :func:`repeat`).

    The value sits in a one-item list shared with the slices of the view, so that
    assigning any item of any of them sets the value of all.
    """

    __slots__ = ("_cell",)

    def __init__(self, cell, times):
        View.__init__(self, times)
        self._cell = cell

    def __getitem__(self, key):
        if self._n is None and type(key) is int and key > sys.maxsize:
            return self._cell[0]
        return View.__getitem__(self, key)

    def __setitem__(self, key, value):
        if self._n is None and type(key) is int and key > sys.maxsize:
            self._cell[0] = value
            return
        View.__setitem__(self, key, value)

    def _get(self, i):
        return self._cell[0]

    def _check(self, i, value):
        return value

    def _set(self, i, value):
        self._cell[0] = value

    def _set_many(self, indices, values):
        if len(indices):  # the last value assigned wins
            self._cell[0] = values[len(indices) - 1]

    def _slice(self, start, step, length):
        return RepeatView(self._cell, length)

    def _iter(self):
        # Reads the cell at each step (in C), so that an assignment shows up.
        cells = itertools.repeat(self._cell)
        if self._n is not None:
            cells = itertools.repeat(self._cell, self._n)
        return map(operator.itemgetter(0), cells)


def repeat(value, times=None):
    """Return a view repeating one value.

    Parameters
    ----------
    value : object
        The item (the same object is returned every time, not a copy).
    times : int, optional
        Number of items; ``None`` (the default) makes the view infinite.

    Returns
    -------
    Sequence
        A view holding one value: assigning any item (of the view or of a slice
        of it) replaces the value of every item; a slice assignment leaves the
        last value assigned. An infinite view has no ``len()`` (TypeError) and
        refuses negative indices (IndexError).

    Raises
    ------
    TypeError
        If `times` is not an integer.
    ValueError
        If `times` < 0.

    Examples
    --------
    >>> import seqtools
    >>> r = seqtools.repeat(3, 4)
    >>> list(r)
    [3, 3, 3, 3]
    >>> r[-1] = 2
    >>> list(r)
    [2, 2, 2, 2]
    >>> seqtools.repeat('x')[10 ** 12]
    'x'
    """
    if times is not None:
        times = check_int(times, "times", "repeat", 0)
    return RepeatView([value], times)


# -- switch and case ----------------------------------------------------------------


class SwitchView(WriteThrough, View):
    """``x[i] if condition[i] else y[i]`` (see :func:`switch`)."""

    __slots__ = ("_cond", "_x", "_y")

    def __init__(self, n, cond, x, y):
        View.__init__(self, n)
        self._cond = cond
        self._x = x
        self._y = y

    def _get(self, i):
        return self._x[i] if self._cond[i] else self._y[i]

    def _item_source(self, i):
        return (self._x if self._cond[i] else self._y), i

    def _iter(self):
        # Only the selected side is evaluated for each item.
        x, y = self._x, self._y
        cond = iter(self._cond)
        if self._n is not None:
            cond = itertools.islice(cond, self._n)
        for i, c in enumerate(cond):
            yield x[i] if c else y[i]


def switch(condition, x, y):
    """Pick items from two sequences according to a sequence of conditions.

    Parameters
    ----------
    condition : Sequence
        Truth values; item ``i`` is ``x[i]`` when ``condition[i]`` is true, else
        ``y[i]``.
    x, y : Sequence
        Values for true and false conditions. Only the selected item is read.

    Returns
    -------
    Sequence
        A view; assigning item ``i`` writes into `x` or `y` according to
        ``condition[i]``.

    Raises
    ------
    ValueError
        If the finite inputs have different lengths (infinite views such as
        ``repeat(0)`` fit any length).
    TypeError
        If an input has no length.

    Examples
    --------
    >>> import seqtools
    >>> list(seqtools.switch([True, False, True], [1, 2, 3], ['a', 'b', 'c']))
    [1, 'b', 3]
    >>> list(seqtools.switch([0, 1, 0], [1, 2, 3], seqtools.repeat(None)))
    [None, 2, None]
    """
    n = _common_length("switch", [("condition", condition), ("x", x), ("y", y)])
    return SwitchView(n, condition, x, y)


class CaseView(WriteThrough, View):
    """``values[selector[i]][i]`` (see :func:`case`)."""

    __slots__ = ("_selector", "_values")

    def __init__(self, n, selector, values):
        View.__init__(self, n)
        self._selector = selector
        self._values = values

    def _which(self, i):
        s = self._selector[i]
        if isinstance(s, (float, str)) or not hasattr(s, "__index__"):
            raise TypeError(
                f"case(): selector[{i}] = {s!r} is not an integer; the selector must "
                "hold indices into the value sequences"
            )
        k = s.__index__()
        m = len(self._values)
        if not -m <= k < m:  # negative ones count from the end, as in a tuple
            raise ValueError(
                f"case(): selector[{i}] = {k} but only {m} value sequences were "
                f"given (valid: -{m} to {m - 1})"
            )
        return self._values[k]

    def _get(self, i):
        return self._which(i)[i]

    def _item_source(self, i):
        return self._which(i), i


def case(selector, *values):
    """Pick items from several sequences according to a sequence of indices.

    Parameters
    ----------
    selector : Sequence of int
        Item ``i`` is ``values[selector[i]][i]``; negative selectors count from
        the end of `values`, as tuple indices do.
    *values : Sequence
        At least one sequence. Only the selected item is read.

    Returns
    -------
    Sequence
        A view; assigning item ``i`` writes into ``values[selector[i]]``. Reading
        an item whose selector is not an integer in ``[-len(values), len(values))``
        raises TypeError or ValueError naming it.

    Raises
    ------
    ValueError
        If no value sequence is given or the finite inputs have different lengths.
    TypeError
        If an input has no length.

    Examples
    --------
    >>> import seqtools
    >>> list(seqtools.case([0, 1, 2, 0], 'abcd', 'efgh', 'ijkl'))
    ['a', 'f', 'k', 'd']
    """
    if not values:
        raise ValueError("case(): give at least one value sequence after the selector")
    named = [("selector", selector)]
    named += [(f"values[{k}]", v) for k, v in enumerate(values)]
    n = _common_length("case", named)
    return CaseView(n, selector, values)
