"""An indexable view over an iterable that can only be read in order.

:func:`uniter` lets the rest of seqtools (batching, prefetching...) work on data that
only comes as an iterator, such as a generator reading a stream or a library's
loader. Items are reached by advancing (and restarting) a few iterators, and a small
cache keeps the most recently produced items.
"""

import collections
import threading

from .._checks import check_int
from ..errors import raise_evaluation_error
from .core import View

__all__ = ["uniter"]


class _Exhausted(Exception):
    """The iterable ended before the requested item."""


class _Cursor:
    """One running iterator: the index of the next item it yields."""

    __slots__ = ("it", "pos", "used")

    def __init__(self):
        self.it = None
        self.pos = 0
        self.used = 0


class Uniter(View):
    """Random access to the items of an iterable (see :func:`uniter`)."""

    __slots__ = ("_iterable", "_cache_size", "_n_parallel", "_one_shot",
                 "_cache", "_cursors", "_end", "_started", "_tick", "_lock")
    # Running iterators and locks cannot be pickled: a copy starts afresh.
    _transient = ("_cache", "_cursors", "_end", "_started", "_tick", "_lock")

    def __init__(self, iterable, cache_size, n_parallel, size, one_shot):
        View.__init__(self, size)
        self._iterable = iterable
        self._cache_size = cache_size
        self._one_shot = one_shot
        # A one-shot iterator cannot be restarted, so one cursor is all there is.
        self._n_parallel = 1 if one_shot else n_parallel
        self._bind()

    def _bind(self):
        self._cache = collections.OrderedDict()
        self._cursors = [_Cursor() for _ in range(self._n_parallel)]
        self._end = None  # number of items, once an iterator has run out
        self._started = False
        self._tick = 0
        self._lock = threading.Lock()

    def __len__(self):
        if self._n is None:
            raise TypeError(
                "this uniter() has no len(): the length of an iterable is unknown "
                "until it is exhausted; pass size=... to uniter()"
            )
        return self._n

    def _pick(self, i):
        """The cursor to advance to item ``i``: the closest one at or before it, or
        else the least recently used one, restarted."""
        best = None
        for c in self._cursors:
            if c.it is not None and c.pos <= i and (best is None or c.pos > best.pos):
                best = c
        if best is not None:
            return best
        best = min(self._cursors, key=lambda c: (c.it is not None, c.used))
        if self._one_shot and self._started:
            raise RuntimeError(
                f"uniter(): item {i} was already consumed from a one-shot iterator "
                "and is no longer cached; pass a re-iterable object (a list, a range, "
                "a class whose __iter__ returns a new iterator) or a larger cache_size"
            )
        try:
            best.it = iter(self._iterable)
        except Exception as exc:
            best.it = None
            raise_evaluation_error(self, i, exc)
        best.pos = 0
        self._started = True
        return best

    def _fetch(self, i):
        """Item ``i``, or _Exhausted when the iterable has fewer items."""
        with self._lock:
            cache = self._cache
            if i in cache:
                cache.move_to_end(i)
                return cache[i]
            if self._end is not None and i >= self._end:
                raise _Exhausted
            cursor = self._pick(i)
            self._tick += 1
            cursor.used = self._tick
            it, pos, size = cursor.it, cursor.pos, self._cache_size
            try:
                while True:
                    value = next(it)
                    pos += 1
                    if size:
                        # Keep what is stepped over: nearby reads often come next.
                        cache[pos - 1] = value
                        cache.move_to_end(pos - 1)
                        if len(cache) > size:
                            cache.popitem(last=False)
                    if pos > i:
                        cursor.pos = pos
                        return value
            except StopIteration:
                cursor.it = None
                self._end = pos
                raise _Exhausted from None
            except Exception as exc:
                cursor.it = None  # a failed iterator is not resumed
                raise_evaluation_error(self, i, exc)

    def _get(self, i):
        try:
            return self._fetch(i)
        except _Exhausted:
            pass
        if self._n is None:
            raise IndexError(
                f"index {i} out of range: the iterable has only {self._end} items"
            )
        raise IndexError(
            f"uniter(): the iterable ended after {self._end} items, before item {i}, "
            f"although size={self._n} was given"
        )

    def _iter(self):
        i = 0
        while self._n is None or i < self._n:
            try:
                value = self._fetch(i)
            except _Exhausted:
                if self._n is None:
                    return
                self._get(i)  # raises the IndexError explaining the size mismatch
            yield value
            i += 1


def uniter(iterable, cache_size=0, n_parallel=1, size=None):
    """Simulate an indexable sequence from an iterable.

    Item ``i`` is reached by advancing an iterator of `iterable` up to it, restarting
    one (``iter(iterable)`` again) when all are past it. A cache of the most
    recently produced items and several iterators running at different positions
    save restarts when reads are not in order.

    Parameters
    ----------
    iterable : Iterable
        Source of the items. A re-iterable object (list, range, an object whose
        ``__iter__`` returns a new iterator) can be restarted; a one-shot iterator
        (a generator) can only be read forward, plus what the cache holds.
    cache_size : int, optional
        Number of most recently produced items kept (default 0).
    n_parallel : int, optional
        Number of iterators kept running at different positions (default 1).
    size : int, optional
        The number of items, which gives the view a ``len()`` and negative indices.
        Without it ``len()`` raises TypeError and reading past the end raises
        IndexError.

    Returns
    -------
    Sequence
        A read-only view, thread safe. Errors raised by the iterable raise
        :class:`~seqtools.EvaluationError` naming the item.

    Raises
    ------
    TypeError
        If `iterable` is not iterable or a size is not an integer.
    ValueError
        If `cache_size` < 0, `n_parallel` < 1 or `size` < 0.

    Examples
    --------
    >>> import seqtools
    >>> items = seqtools.uniter(range(5000), cache_size=10, n_parallel=5, size=5000)
    >>> items[10], items[1], items[-1]
    (10, 1, 4999)
    >>> squares = seqtools.uniter(x * x for x in range(4))
    >>> list(squares)
    [0, 1, 4, 9]
    """
    if not hasattr(iterable, "__iter__") and not hasattr(iterable, "__getitem__"):
        raise TypeError(
            f"uniter(): expected an iterable, got {type(iterable).__name__}"
        )
    cache_size = check_int(cache_size, "cache_size", "uniter", 0)
    n_parallel = check_int(n_parallel, "n_parallel", "uniter", 1)
    if size is not None:
        size = check_int(size, "size", "uniter", 0)
    one_shot = hasattr(iterable, "__next__")
    return Uniter(iterable, cache_size, n_parallel, size, one_shot)
