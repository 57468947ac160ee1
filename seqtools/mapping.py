"""Views that compute their items with user code: smap and starmap.

``smap(f, seq)`` is ``[f(x) for x in seq]`` evaluated one item at a time, when the
item is read. A failure inside ``f`` raises :class:`seqtools.EvaluationError`, which
names the item and where the view was created (see :func:`seqtools.seterr` to let the
original exception through instead). Mapped views are read-only.
"""

from .core import View, as_source, item_getter, source_length
from .errors import raise_evaluation_error

__all__ = ["smap", "starmap"]


class ZipMapping(View):
    """Items ``f(s0[i], s1[i], ...)`` over sources of a common length."""

    __slots__ = ("_f", "_sources", "_getters")
    _transient = ("_getters",)

    def __init__(self, f, sources, n):
        View.__init__(self, n)
        self._f = f
        self._sources = sources
        self._bind()

    def _bind(self):
        self._getters = tuple(item_getter(s) for s in self._sources)

    def _get(self, i):
        args = [get(i) for get in self._getters]
        try:
            return self._f(*args)
        except Exception as e:
            raise_evaluation_error(self, i, e)

    def _check(self, i, value):
        raise TypeError(
            f"{type(self).__name__} views are read-only: their items are computed by "
            f"{getattr(self._f, '__name__', 'f')}(); assign to the source instead"
        )

    _set = _check

    def _iter(self):
        f = self._f
        i = 0
        # Source errors propagate as they are; only failures of f are wrapped.
        for args in zip(*self._sources):
            try:
                y = f(*args)
            except Exception as e:
                raise_evaluation_error(self, i, e)
            yield y
            i += 1


class Mapping(ZipMapping):
    """Items ``f(s[i])``: one source, the common case, without an argument list."""

    __slots__ = ("_get0",)
    _transient = ("_getters", "_get0")

    def _bind(self):
        ZipMapping._bind(self)
        (self._get0,) = self._getters

    def _get(self, i):
        x = self._get0(i)
        try:
            return self._f(x)
        except Exception as e:
            raise_evaluation_error(self, i, e)

    def _iter(self):
        f = self._f
        i = 0
        for x in self._sources[0]:
            try:
                y = f(x)
            except Exception as e:
                raise_evaluation_error(self, i, e)
            yield y
            i += 1


class StarMapping(ZipMapping):
    """Items ``f(*s[i])`` for a sequence ``s`` of argument tuples."""

    __slots__ = ("_get0",)
    _transient = ("_getters", "_get0")

    def _bind(self):
        ZipMapping._bind(self)
        (self._get0,) = self._getters

    def _get(self, i):
        args = self._get0(i)
        try:
            return self._f(*args)
        except Exception as e:
            raise_evaluation_error(self, i, e)

    def _iter(self):
        f = self._f
        i = 0
        for args in self._sources[0]:
            try:
                y = f(*args)
            except Exception as e:
                raise_evaluation_error(self, i, e)
            yield y
            i += 1


def _check_sources(name, f, sequences):
    if not callable(f):
        raise TypeError(f"{name}: f must be callable, not {type(f).__name__}")
    if not sequences:
        raise ValueError(f"{name}: at least one sequence must be given")
    sources = tuple(as_source(s) for s in sequences)
    lengths = [source_length(s, f"{name}: sequence {k}") for k, s in enumerate(sources)]
    if any(n != lengths[0] for n in lengths):
        shown = ["inf" if n is None else n for n in lengths]
        raise ValueError(
            f"{name}: sequences have different lengths {shown}; slice them to a "
            "common length first"
        )
    return sources, lengths[0]


def smap(f, *sequences):
    """Return a view of ``f`` mapped over the items of the sequence(s).

    Equivalent to ``[f(x) for x in sequence]``, or with several sequences to
    ``[f(*x) for x in zip(*sequences)]``, with each item computed when it is read
    (again at each read: nothing is cached). The view is read-only.

    Parameters
    ----------
    f : callable
        Called with one item of each sequence.
    *sequences : sequences
        At least one. They must have the same length: unlike ``zip`` (and upstream
        SeqTools 1.4, whose ``len`` followed the first sequence while iteration
        stopped at the shortest), sequences of different lengths raise ValueError.

    Returns
    -------
    View
        A read-only view with the length of the sequences.

    Raises
    ------
    seqtools.EvaluationError
        When reading an item, if ``f`` raises; the message names the item index
        and where the view was created, the original exception is the ``__cause__``.
        Under ``seterr('passthrough')`` the original exception propagates instead.

    Examples
    --------
    >>> import seqtools
    >>> m = seqtools.smap(lambda x: x + 2, [1, 2, 3, 4])
    >>> list(m), m[-1]
    ([3, 4, 5, 6], 6)
    >>> list(seqtools.smap(max, [1, 5, 3], [4, 2, 6]))
    [4, 5, 6]
    """
    sources, n = _check_sources("smap", f, sequences)
    cls = Mapping if len(sources) == 1 else ZipMapping
    return cls(f, sources, n)


def starmap(f, sequence):
    """Return a view of ``f(*args)`` for each tuple ``args`` of ``sequence``.

    A lazy, indexable equivalent of :func:`itertools.starmap`. The view is
    read-only; failures of ``f`` are reported as in :func:`smap`.

    Parameters
    ----------
    f : callable
        Called with the elements of one item of ``sequence`` as arguments.
    sequence : sequence of tuples
        The argument tuples (any iterable items).

    Returns
    -------
    View
        A read-only view of ``len(sequence)`` items.

    Examples
    --------
    >>> import seqtools
    >>> list(seqtools.starmap(pow, [(2, 3), (3, 2)]))
    [8, 9]
    """
    sources, n = _check_sources("starmap", f, (sequence,))
    return StarMapping(f, sources, n)
