"""Samplers for :func:`seqtools.load_buffers`: callables whose ``k``-th call is a
function of ``(seed, k)`` only, stacked by the fused path of :mod:`.stacking`.

A sampler reads the call index a loader's worker sets (``seqtools._task``), so
the same stream comes out whatever the workers, the method and the start method.
"""

import threading

import numpy as np

from .._checks import check_int, length
from .._task import evaluating
from ..views.memmaps import pickle_source
from .stacking import copy_job, stack_indices

__all__ = ["minibatches", "MinibatchSampler"]


BLOCK = 256  # minibatches: batches whose indices are drawn at once


class MinibatchSampler:
    """Draws random minibatches of a dataset, stacked: see :func:`minibatches`."""

    def __init__(self, dataset, batch_size, seed):
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self._n = length(dataset, "minibatches", "dataset", True)
        self._calls = 0  # calls made outside a loader's workers
        self._lock = threading.Lock()
        self._block = (-1, None)  # (block number, its indices), replaced whole

    def indices(self, k):
        """The dataset indices of batch ``k``: a function of (seed, k) only."""
        # Generator construction and Generator.integers cost several microseconds
        # each whatever the size: the indices of BLOCK batches are drawn at once,
        # from a generator seeded by (seed, block number).
        block, offset = divmod(k, BLOCK)
        number, drawn = self._block
        if number != block:
            rng = np.random.default_rng(
                np.random.SeedSequence(self.seed, spawn_key=(block,)))
            drawn = rng.integers(0, self._n, size=BLOCK * self.batch_size,
                                 dtype=np.int64)
            self._block = (block, drawn)  # one assignment: safe between threads
        b = self.batch_size
        return drawn[offset * b : (offset + 1) * b]

    def _copy_job(self, k):
        """Call ``k``'s batch as a copy to run (see View._copy_job), or None."""
        return copy_job(self.dataset, self.indices(k))

    def __call__(self):
        k = evaluating.index  # seqtools.call_index()
        if k is None:
            with self._lock:
                k = self._calls
                self._calls = k + 1
        return stack_indices(self.dataset, self.indices(k))

    def __getstate__(self):
        return {"dataset": pickle_source(self.dataset), "batch_size": self.batch_size,
                "seed": self.seed, "_n": self._n, "_calls": self._calls}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._lock = threading.Lock()
        self._block = (-1, None)

    def __repr__(self):
        return (f"<seqtools.MinibatchSampler of {self.batch_size} items from "
                f"{self._n}, seed={self.seed}>")


def minibatches(dataset, batch_size, seed=None):
    """Return a sampler of random minibatches: each call draws and stacks one.

    ``sampler()`` draws ``batch_size`` indices uniformly, with replacement, and
    returns ``stack(gather(dataset, indices))``: a fused read when ``dataset`` is a
    view graph over arrays (see :func:`stack`), with no per-item Python. Made for
    :func:`seqtools.load_buffers`: the sampler is picklable (memory-mapped arrays
    travel by reference), and in a worker its batches are stacked straight into
    shared memory and reach the parent uncopied.

    Parameters
    ----------
    dataset : sequence
        The samples (a finite view, array, list...).
    batch_size : int
        Samples per batch, ``>= 1``.
    seed : int or sequence of int, optional
        Entropy for the random streams; None draws fresh entropy now, kept in
        ``sampler.seed`` so that a run can be replayed.

    Returns
    -------
    MinibatchSampler
        A callable without arguments returning one stacked minibatch.

    Notes
    -----
    Batch ``k`` is a function of ``(seed, k)`` only: its indices come from a
    ``numpy.random.Generator`` seeded with ``numpy.random.SeedSequence(seed,
    spawn_key=(k // 256,))``. In a worker of :func:`load_buffers`, ``k`` is the
    call's index (:func:`call_index`); called directly, the sampler counts its own
    calls from 0. So ``load_buffers(sampler, ..., ordered=True)`` yields the same
    batches, in the same order, as calling the sampler in a loop, whatever the
    number of workers, the method and the start method; a call retried after its
    worker died redraws the same batch, and nothing is replayed or duplicated.
    Unordered, the same batches come in completion order. The sampler may be
    shared by threads (direct calls from several threads share its call counter).

    Examples
    --------
    >>> import numpy as np, seqtools
    >>> data = seqtools.collate([np.random.rand(100, 3), np.arange(100)])
    >>> sample = seqtools.minibatches(data, 8, seed=0)
    >>> x, y = sample()
    >>> x.shape, y.shape
    ((8, 3), (8,))
    >>> bool((x == np.stack([data[i][0] for i in y])).all())
    True
    >>> y2 = seqtools.minibatches(data, 8, seed=0)()[1]
    >>> bool((y == y2).all())  # the same seed draws the same batches
    True
    >>> with seqtools.load_buffers(seqtools.minibatches(data, 8, seed=0), 4, 2,
    ...                            ordered=True) as loader:
    ...     y3 = next(loader)[1]
    >>> bool((y == y3).all())  # and so do workers, in call order
    True
    """
    batch_size = check_int(batch_size, "batch_size", "minibatches", 1)
    n = length(dataset, "minibatches", "dataset", True)
    if n is None or n == 0:
        raise ValueError("minibatches: the dataset must be finite and not empty")
    if seed is None:
        seed = np.random.SeedSequence().entropy
    return MinibatchSampler(dataset, int(batch_size), seed)
