"""Views that compute their items with user code: smap and starmap.

``smap(f, seq)`` is ``[f(x) for x in seq]`` evaluated one item at a time, when the
item is read. A failure inside ``f`` raises :class:`seqtools.EvaluationError`, which
names the item and where the view was created (see :func:`seqtools.seterr` to let the
original exception through instead). Mapped views are read-only.

``smap(f, seq, rng=seed)`` also hands ``f`` a ``numpy.random.Generator`` of its
own for each item, a pure function of (seed, epoch, item index): random
augmentations are reproducible whichever process or thread reads the item, and
in whatever order (see :func:`sample_rng`).
"""

import threading

import numpy as np
from numpy.random.bit_generator import ISeedSequence

from .._checks import check_seed, length
from ..errors import raise_evaluation_error
from .access import as_source, item_getter
from .core import View

__all__ = ["smap", "starmap", "sample_rng"]


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
        return _calls(self, self._f, zip(*self._sources), True)


def _calls(view, f, arguments, star):
    """Iterate ``f(*args)`` (``f(args)`` unless ``star``) over ``arguments``.

    Source errors propagate as they are; only failures of ``f`` are wrapped, naming
    the item of ``view``.
    """
    i = 0
    for args in arguments:
        try:
            y = f(*args) if star else f(args)
        except Exception as e:
            raise_evaluation_error(view, i, e)
        yield y
        i += 1


class _OneSource(ZipMapping):
    """A mapping of one source: reads it through ``_get0``, without a tuple."""

    __slots__ = ("_get0",)
    _transient = ("_getters", "_get0")

    def _bind(self):
        ZipMapping._bind(self)
        (self._get0,) = self._getters


class Mapping(_OneSource):
    """Items ``f(s[i])``: one source, the common case, without an argument list."""

    __slots__ = ()

    def _get(self, i):
        x = self._get0(i)
        try:
            return self._f(x)
        except Exception as e:
            raise_evaluation_error(self, i, e)

    def _iter(self):
        return _calls(self, self._f, self._sources[0], False)


class StarMapping(_OneSource):
    """Items ``f(*s[i])`` for a sequence ``s`` of argument tuples."""

    __slots__ = ()

    def _get(self, i):
        args = self._get0(i)
        try:
            return self._f(*args)
        except Exception as e:
            raise_evaluation_error(self, i, e)

    def _iter(self):
        return _calls(self, self._f, self._sources[0], True)


# -- per-item random generators ------------------------------------------------------

# The epoch that smap(..., rng=seed) mixes into its generators: set by the
# seqtools.epochs loader around each batch it makes, per thread (worker threads
# make batches of different epochs at once), 0 wherever it is not set.
_context = threading.local()


def current_epoch():
    """The epoch the generators of ``smap(..., rng=seed)`` use in this thread."""
    return getattr(_context, "epoch", 0)


def set_epoch(epoch):
    """Make ``epoch`` the current epoch of this thread; return the previous one."""
    previous = getattr(_context, "epoch", 0)
    _context.epoch = epoch
    return previous


class _PhiloxKey(ISeedSequence):
    """Hands ``numpy.random.Philox`` a key derived once from the seed.

    ``Philox(key=k, counter=c)`` first makes a seed sequence from fresh OS
    entropy, which it then ignores: most of the cost of a generator made so (about
    as much as ``default_rng(SeedSequence(seed, spawn_key=(epoch, i)))``). Given
    this object as its seed, Philox takes the key from ``generate_state`` and
    draws no OS entropy: a generator costs about a third as much.
    """

    __slots__ = ("key",)

    def __init__(self, seed):
        self.key = np.random.SeedSequence(seed).generate_state(2, np.uint64)

    def generate_state(self, n_words, dtype=np.uint32):
        if n_words != 2 or np.dtype(dtype) != np.uint64:
            raise ValueError("a per-item Philox key is two uint64 words")
        return self.key


def _generator(key, epoch, index):
    # Philox counts in 256 bits, words low to high, and one block (4 outputs)
    # advances the low 128 bits: items and epochs in the high words get streams
    # 2**128 blocks apart, never overlapping.
    counter = np.array((0, 0, index, epoch), dtype=np.uint64)
    return np.random.Generator(np.random.Philox(key, counter=counter))


def sample_rng(seed, index, epoch=0):
    """The generator ``smap(f, seq, rng=seed)`` hands ``f`` for item ``index``.

    Parameters
    ----------
    seed : int or list of int
        The ``rng`` argument of :func:`smap`.
    index : int
        The item's index in the mapped view (``0 <= index < 2**64``).
    epoch : int
        The epoch (see :func:`smap`).

    Returns
    -------
    numpy.random.Generator
        Over a ``numpy.random.Philox`` bit generator keyed by the seed, its
        counter starting at ``(0, 0, index, epoch)`` (four 64-bit words, low
        first): the streams of two items, or of one item in two epochs, lie
        ``2**128`` blocks apart and never overlap.

    Examples
    --------
    >>> import seqtools
    >>> from seqtools.views.mapping import sample_rng
    >>> noisy = seqtools.smap(lambda x, rng: x + rng.normal(), [0.0, 0.0], rng=7)
    >>> bool(noisy[1] == sample_rng(7, 1).normal())
    True
    """
    seed = check_seed(seed, "sample_rng")
    return _generator(_PhiloxKey(seed), epoch, index)


class RandomMapping(ZipMapping):
    """Items ``f(s0[i], s1[i], ..., rng)``, ``rng`` made for item ``i``."""

    __slots__ = ("_seed", "_key")
    _transient = ("_key",)

    def __init__(self, f, sources, n, seed):
        self._seed = seed
        ZipMapping.__init__(self, f, sources, n)

    def _bind(self):
        ZipMapping._bind(self)
        self._key = _PhiloxKey(self._seed)

    def _get(self, i):
        args = [get(i) for get in self._getters]
        args.append(_generator(self._key, current_epoch(), i))
        try:
            return self._f(*args)
        except Exception as e:
            raise_evaluation_error(self, i, e)

    def _iter(self):
        f, key = self._f, self._key
        i = 0
        for args in zip(*self._sources):
            rng = _generator(key, current_epoch(), i)
            try:
                y = f(*args, rng)
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
    lengths = [length(s, name, f"sequence {k}", True) for k, s in enumerate(sources)]
    if any(n != lengths[0] for n in lengths):
        shown = ["inf" if n is None else n for n in lengths]
        raise ValueError(
            f"{name}: sequences have different lengths {shown}; slice them to a "
            "common length first"
        )
    return sources, lengths[0]


def smap(f, *sequences, rng=None):
    """Return a view of ``f`` mapped over the items of the sequence(s).

    Equivalent to ``[f(x) for x in sequence]``, or with several sequences to
    ``[f(*x) for x in zip(*sequences)]``, with each item computed when it is read
    (again at each read: nothing is cached). The view is read-only.

    Parameters
    ----------
    f : callable
        Called with one item of each sequence, and with ``rng`` given, a
        ``numpy.random.Generator`` last: ``f(x, rng)``.
    *sequences : sequences
        At least one. They must have the same length: unlike ``zip`` (and upstream
        SeqTools 1.4, whose ``len`` followed the first sequence while iteration
        stopped at the shortest), sequences of different lengths raise ValueError.
    rng : int or list of int, optional
        A seed: item ``i`` is then ``f(x, g)`` where ``g`` is a new generator made
        from (seed, epoch, ``i``) at each read (:func:`sample_rng` gives it):
        random transforms (crops, flips, noise) give the same item whichever
        worker reads it, and no two items, nor one item in two epochs, share a
        stream. The epoch is the one of the batch :func:`seqtools.epochs` is
        making when it reads the item, 0 anywhere else. Making the generator
        costs about 5 microseconds per item. Two views given the same seed draw
        the same streams: give each its own.

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

    A random transform, reproducible item by item:

    >>> import numpy as np
    >>> flip = seqtools.smap(lambda x, rng: x[::-1] if rng.random() < 0.5 else x,
    ...                      np.arange(12).reshape(4, 3), rng=0)
    >>> all(np.array_equal(flip[i], flip[i]) for i in range(4))
    True
    """
    sources, n = _check_sources("smap", f, sequences)
    if rng is not None:
        return RandomMapping(f, sources, n, check_seed(rng, "smap: rng"))
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
