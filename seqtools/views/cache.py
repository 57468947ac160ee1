"""A view that keeps the most recently read items of a sequence.

:func:`add_cache` sits over an expensive lazy pipeline (``smap`` of decoding or
augmentation code) read several times at nearby indices, so that each item is
computed once while it stays among the ``cache_size`` most recently used.
"""

import collections
import threading

from .._checks import check_int, length
from ..errors import raise_evaluation_error
from .access import check_item, item_setter
from .core import View

__all__ = ["add_cache"]


class CachedView(View):
    """A sequence with an LRU cache of its items (see :func:`add_cache`).

    Reads of the source happen outside the lock, so a write through the view may
    land while a miss is reading the old value. Each write therefore counts itself
    in ``_writes`` once the source holds the new value (and drops the item's cached
    value, under the lock); a miss keeps the value it read only if no write was
    counted since the miss began. A write racing a miss costs that miss its cache
    entry, never the cache its consistency with the source.
    """

    __slots__ = ("_seq", "_size", "_cache", "_order", "_lock", "_writes")
    _transient = ("_lock",)

    def __init__(self, seq, n, cache_size, cache):
        View.__init__(self, n)
        self._seq = seq
        self._size = cache_size
        self._cache = cache
        self._order = collections.OrderedDict()  # keys of self._cache, LRU first
        self._writes = 0  # writes through the view so far (see the class docstring)
        self._bind()

    def _bind(self):
        self._lock = threading.Lock()

    def _touch(self, i):
        """Mark ``i`` most recently used and evict past the size (lock held)."""
        order = self._order
        order[i] = None
        order.move_to_end(i)
        while len(order) > self._size:
            old, _ = order.popitem(last=False)
            self._cache.pop(old, None)

    def _read(self, i):
        try:
            return self._seq[i]
        except Exception as exc:
            raise_evaluation_error(self, i, exc)

    def _get(self, i):
        if not self._size:
            return self._read(i)
        with self._lock:
            try:
                value = self._cache[i]
            except KeyError:
                writes = self._writes
            else:
                self._touch(i)
                return value
        # Computed outside the lock so that threads evaluate items in parallel; two
        # threads missing the same item both compute it.
        value = self._read(i)
        with self._lock:
            if self._writes == writes:  # else the source may have changed meanwhile
                self._cache[i] = value
                self._touch(i)
        return value

    def _iter(self):
        # A pass over every item gains nothing from a cache of the most recent
        # ones: iterate the source itself, by its fastest path, as SeqTools 1.4.1
        # does, leaving the cache as it is. Views report their own failures;
        # failures of other sources are reported as item reads are.
        if isinstance(self._seq, View):
            return iter(self._seq)
        return self._iter_reported()

    def _iter_reported(self):
        items = iter(self._seq)
        i = 0
        while True:
            try:
                value = next(items)
            except StopIteration:
                return
            except Exception as exc:
                raise_evaluation_error(self, i, exc)
            yield value
            i += 1

    def _check(self, i, value):
        return check_item(self._seq, i, value)

    def _set(self, i, value):
        try:
            item_setter(self._seq)(i, value)
        finally:
            # Counted once the source holds the new value, so that a miss which read
            # it before does not keep what it read. Dropped rather than overwritten:
            # the source may store a converted value (a numpy array casts), and the
            # next read must return what it holds. Dropped even when the write
            # failed, since it may have changed part of the item.
            with self._lock:
                self._writes += 1
                self._cache.pop(i, None)
                self._order.pop(i, None)


def add_cache(arr, cache_size=1, cache=None):
    """Add a cache of the most recently read items over a sequence.

    Parameters
    ----------
    arr : Sequence
        The sequence to cache, typically an expensive lazy view.
    cache_size : int, optional
        Maximum number of cached items (default 1); 0 disables the cache.
    cache : MutableMapping, optional
        Container for the cached items, keyed by index (default: a new
        :class:`dict`). Items it holds are served as cached, e.g. a
        ``multiprocessing.Manager().dict()`` shared by several processes.

    Returns
    -------
    Sequence
        A view, thread safe, holding references to (not copies of) the cached
        items. Assigning an item writes it into `arr` and drops its cached value;
        a read racing the write does not put the old value back in the cache.
        Writes made to `arr` directly, or through other processes sharing
        `cache`, are not seen: the cache may then serve the old value. Errors
        raised when computing an item raise :class:`~seqtools.EvaluationError`
        naming it. Iterating the view iterates `arr` itself, neither reading
        nor filling the cache, as in SeqTools 1.4.1 (a pass over all the items
        gains nothing from a cache of the most recent ones); to go through the
        cache, index it: ``(cached[i] for i in range(len(cached)))``.

    Raises
    ------
    TypeError
        If `arr` has no length, `cache_size` is not an integer or `cache` is not a
        mapping.
    ValueError
        If `cache_size` < 0.

    Examples
    --------
    >>> import seqtools
    >>> class Expensive:
    ...     def __len__(self):
    ...         return 10
    ...     def __getitem__(self, i):
    ...         print("working")
    ...         return i * 2
    >>> cached = seqtools.add_cache(Expensive(), cache_size=2)
    >>> cached[3]
    working
    6
    >>> cached[3]  # skips computation
    6
    """
    infinite = isinstance(arr, View) and arr._n is None
    n = None if infinite else length(arr, "add_cache")
    cache_size = check_int(cache_size, "cache_size", "add_cache", 0)
    if cache is None:
        cache = {}
    elif not all(hasattr(cache, a) for a in ("keys", "__setitem__", "pop")):
        raise TypeError(
            "add_cache(): cache must be a mutable mapping (with keys, __getitem__, "
            f"__setitem__ and pop), got {type(cache).__name__}"
        )
    return CachedView(arr, n, cache_size, cache)
