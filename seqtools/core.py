"""The base class of every lazy view, and the slice view.

A view maps indices onto one or more source sequences and evaluates items only when
they are read. Subclasses implement ``_get(i)`` for a normalised index
``0 <= i < len`` (or any ``i >= 0`` for infinite views), optionally ``_set``,
``_slice`` and ``_iter``; the base class handles negative indices, slices (slices of
slices collapse into one view), iteration and the errors Python lists give. The
index arithmetic itself runs in the ``_indexing`` Cython kernels.
"""

import itertools
from collections.abc import Sequence

from . import _indexing
from .errors import creation_site

__all__ = ["View", "SliceView"]


class View(Sequence):
    """Base class of lazy sequence views.

    Subclasses set ``self._n`` to their length (``None`` for an infinite view) and
    ``self._origin`` (see :func:`seqtools.errors.creation_site`).
    """

    __slots__ = ("_n", "_origin", "__weakref__")

    def __init__(self, n):
        self._n = n
        self._origin = creation_site(2)

    # -- subclass hooks -------------------------------------------------------------
    def _get(self, i):
        raise NotImplementedError

    def _set(self, i, value):
        raise TypeError(f"{type(self).__name__} views do not support item assignment")

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
        if isinstance(key, slice):
            return self._slice(*_indexing.slice_range(key, self._n))
        return self._get(_indexing.normalize_index(key, self._n))

    def __setitem__(self, key, value):
        if isinstance(key, slice):
            start, step, length = _indexing.slice_range(key, self._n)
            if length is None:
                raise ValueError("cannot assign to an unbounded slice")
            values = list(value) if not hasattr(value, "__len__") else value
            if len(values) != length:
                raise ValueError(
                    f"attempt to assign a sequence of size {len(values)} to a slice "
                    f"of size {length}: views cannot change size"
                )
            for k in range(length):
                self._set(start + k * step, values[k])
            return
        self._set(_indexing.normalize_index(key, self._n), value)

    def __iter__(self):
        return self._iter()

    def __bool__(self):
        return self._n is None or self._n > 0

    def __repr__(self):
        n = "inf" if self._n is None else self._n
        return f"<seqtools.{type(self).__name__} of {n} items>"


class SliceView(View):
    """Items ``start + k * step`` of a source sequence, ``0 <= k < length``."""

    __slots__ = ("_base", "_start", "_step")

    def __init__(self, base, start, step, length):
        View.__init__(self, length)
        self._origin = creation_site(3)
        self._base = base
        self._start = start
        self._step = step

    def _get(self, i):
        return self._base[self._start + i * self._step]

    def _set(self, i, value):
        self._base[self._start + i * self._step] = value

    def _slice(self, start, step, length):
        # A slice of a slice is one slice of the source.
        start, step = _indexing.compose_slice(self._start, self._step, start, step)
        if isinstance(self._base, View):
            return self._base._slice(start, step, length)
        return SliceView(self._base, start, step, length)

    def _iter(self):
        base = self._base
        if self._n is not None and not isinstance(base, View):
            stop = self._start + self._n * self._step
            if stop < 0:
                stop = None
            try:
                # Native slicing is fastest for lists/arrays; fall back otherwise.
                return iter(base[self._start : stop : self._step])
            except TypeError:
                pass
        return View._iter(self)
