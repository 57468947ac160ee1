"""Which samples make batch ``k`` of an :func:`~seqtools.epochs` stream.

Each batch is a pure function of (seed, epoch, position): the epoch's order is a
permutation drawn from (seed, epoch) (:func:`epoch_order`), :class:`Sharding`
cuts it into steps and gives each rank its part, and :class:`BatchStream` is the
view whose item ``k`` is the rank's batch ``k`` from a start position, read by
the fused path. :mod:`.epochs` puts a loader over it.

How an epoch is shared by ranks
-------------------------------
``N`` samples, batches of ``B``, ``W`` ranks, ``G = W * B`` samples per *step*
(one batch on every rank). From position ``p`` (0 at the start of an epoch, any
position after a resume), step ``j`` covers positions ``p + j*G ...`` of the
epoch's order, rank ``r`` taking positions ``[p + j*G + r*B, p + j*G + (r+1)*B)``.
The rest ``R' < G`` after the last full step is the tail:

- ``drop_last=True``: dropped; every batch has ``B`` samples; ``R' < W*B``
  samples of each epoch (different ones each epoch) are not seen.
- ``drop_last=False``: one more step in which every rank gets ``b = ceil(R'/W)``
  samples, rank ``r`` positions ``[g + r*b, g + (r+1)*b)``, ``g = N - R'``;
  positions past the end wrap to the epoch's first samples (padding with repeats,
  as ``DistributedSampler`` does: ``W*b - R' < W`` samples, none for ``W = 1``,
  where the last batch is simply short).

Every rank yields the same number of batches per epoch.
"""

import os
import sys
import threading

import numpy as np

from .._checks import check_seed
from ..batching.stacking import copy_job, stack_indices
from ..views import mapping
from ..views._indexing import permutation
from ..views.core import View

__all__ = ["epoch_order", "order_of", "Sharding", "BatchStream", "default_world"]

# Mixed into the seed sequence of the epochs' permutations, so that they are not
# the streams other users of the same seed draw (minibatches' workers use
# spawn_key=(w,)).
_ORDER_KEY = 0x65706F6368  # "epoch"

def epoch_order(n, seed, epoch, shuffle=True):
    """The global order of the samples in an epoch of :func:`epochs`.

    Parameters
    ----------
    n : int
        Dataset length.
    seed : int or list of int
        The loader's seed.
    epoch : int
        The epoch, ``>= 0``.
    shuffle : bool
        False: the identity.

    Returns
    -------
    numpy.ndarray
        ``n`` sample indices, int64: ``arange(n)`` shuffled by Fisher-Yates
        (for ``i = n-1`` down to 1, swap positions ``i`` and ``j``, ``j`` uniform
        in ``[0, i]`` by Lemire's multiply-and-reject on one ``next_uint32`` draw,
        ``next_uint64`` for ``i >= 2**32 - 1``) with the draws of
        ``PCG64(SeedSequence(seed, spawn_key=(0x65706f6368, epoch)))``: about
        three times as fast as ``Generator.shuffle``, which every worker would
        otherwise spend once per epoch.

    Examples
    --------
    >>> from seqtools.loaders.epochs import epoch_order
    >>> order = epoch_order(10, seed=0, epoch=3)
    >>> sorted(order.tolist()) == list(range(10))
    True
    >>> bool((order == epoch_order(10, seed=0, epoch=3)).all())
    True
    """
    return order_of(n, check_seed(seed, "epoch_order"), epoch, shuffle)


def order_of(n, seed, epoch, shuffle):
    """``epoch_order`` with a checked seed."""
    # int64, as the fused read takes indices: a batch is a slice of it, no copy.
    if not shuffle:
        return np.arange(n, dtype=np.int64)
    ss = np.random.SeedSequence(seed, spawn_key=(_ORDER_KEY, epoch))
    return permutation(n, np.random.PCG64(ss))


class Sharding:
    """How an epoch is cut into batches and shared by ranks: steps, positions,
    the rank's part."""

    __slots__ = ("n", "batch_size", "rank", "world_size", "drop_last", "step")

    def __init__(self, n, batch_size, rank, world_size, drop_last):
        self.n = n
        self.batch_size = batch_size
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.step = batch_size * world_size

    def steps(self, position):
        """Batches per rank from ``position`` to the end of an epoch."""
        rest = self.n - position
        if self.drop_last:
            return rest // self.step
        return -(-rest // self.step)

    def positions(self, position, j):
        """``(lo, hi)``: the positions of the rank's batch at step ``j`` from
        ``position``; ``hi`` may pass ``n`` (padding: wrap to the start)."""
        g = position + j * self.step
        if g + self.step <= self.n:
            lo = g + self.rank * self.batch_size
            return lo, lo + self.batch_size
        b = -(-(self.n - g) // self.world_size)
        lo = g + self.rank * b
        return lo, lo + b

    def __getstate__(self):
        return {k: getattr(self, k) for k in self.__slots__}

    def __setstate__(self, state):
        for k, v in state.items():
            setattr(self, k, v)


class BatchStream(View):
    """Infinite (or, with a last epoch, finite) view: item k is the rank's batch k
    from a start position, stacked by the fused path.

    Pickles small (the dataset's memory maps travel by reference); each process
    keeps the order of the epochs it is working on (two at most, made when first
    needed: O(n) once per epoch, nothing that grows with the position).
    """

    __slots__ = ("_dataset", "_sharding", "_seed", "_shuffle", "_epoch0", "_position0",
                 "_steps0", "_steps", "_transform", "_orders", "_lock", "_run")
    _transient = ("_orders", "_lock", "_run")

    def __init__(self, dataset, sharding, seed, shuffle, epoch, position, total,
                 transform=None):
        View.__init__(self, total)
        self._transform = transform  # applied to each stacked batch
        self._dataset = dataset
        self._sharding = sharding
        self._seed = seed
        self._shuffle = shuffle
        self._epoch0 = epoch
        self._position0 = position
        self._steps0 = sharding.steps(position)
        self._steps = sharding.steps(0)
        self._bind()

    def _bind(self):
        self._orders = {}
        self._lock = threading.Lock()
        # The full batches of the epoch of a batch made lately, as one tuple (one
        # read: safe between threads): batch k, k0 <= k < k1, is
        # order[base + k*step : base + k*step + batch_size] (with order None when
        # not shuffled: those positions themselves).
        self._run = (0, 0, None, None, 0)  # (k0, k1, epoch, order, base)

    def __getitem__(self, key):
        # A worker asks for item k: skip the generic key checks of View.
        if type(key) is int and key >= 0 and (self._n is None or key < self._n):
            return self._get(key)
        return View.__getitem__(self, key)

    def where(self, k):
        """``(epoch, start position, step)`` of batch ``k``."""
        if k < self._steps0:
            return self._epoch0, self._position0, k
        k -= self._steps0
        return self._epoch0 + 1 + k // self._steps, 0, k % self._steps

    def next_epoch(self, k):
        """The index of the first batch of the epoch after batch ``k``'s."""
        if k < self._steps0:
            return self._steps0
        return k + self._steps - (k - self._steps0) % self._steps

    def _order(self, epoch):
        """The order of ``epoch`` (asked for once per run of full batches)."""
        with self._lock:  # worker threads: one of them makes it
            order = self._orders.get(epoch)
            if order is None:
                if len(self._orders) >= 2:
                    del self._orders[min(self._orders)]
                order = order_of(self._sharding.n, self._seed, epoch, self._shuffle)
                order.flags.writeable = False  # batches are views of it
                self._orders[epoch] = order
            return order

    def indices(self, k):
        """``(epoch, int64 sample indices)`` of batch ``k``."""
        k0, k1, epoch, order, base = self._run
        if k0 <= k < k1:  # most batches: a slice at a fixed stride
            sharding = self._sharding
            lo = base + k * sharding.step
            if order is None:
                return epoch, np.arange(lo, lo + sharding.batch_size, dtype=np.int64)
            return epoch, order[lo:lo + sharding.batch_size]
        return self._indices(k)

    def _indices(self, k):
        """indices() of a batch outside the run it knows; the run becomes batch
        ``k``'s if ``k`` is a full batch."""
        epoch, position, j = self.where(k)
        sharding = self._sharding
        n = sharding.n
        order = self._order(epoch) if self._shuffle else None
        full = (n - position) // sharding.step  # steps j < full are full batches
        if j < full:
            k0 = k - j
            start = position + sharding.rank * sharding.batch_size
            self._run = (k0, k0 + full, epoch, order, start - k0 * sharding.step)
        lo, hi = sharding.positions(position, j)
        if hi <= n:
            return epoch, (np.arange(lo, hi, dtype=np.int64) if order is None
                           else order[lo:hi])
        positions = np.arange(lo, hi, dtype=np.int64)
        tail = positions >= n
        positions[tail] = (positions[tail] - n) % n
        return epoch, positions if order is None else order[positions]

    def _copy_job(self, k):
        """Batch ``k`` as a copy to run (see View._copy_job), or None. A copy
        runs no Python, so the epoch setting of ``smap(..., rng=)`` is moot;
        a batch with a transform to run is no copy."""
        if self._transform is not None:
            return None
        return copy_job(self._dataset, self.indices(k)[1])

    def _get(self, k):
        epoch, idx = self.indices(k)
        previous = mapping.set_epoch(epoch)  # for smap(..., rng=seed)
        try:
            batch = stack_indices(self._dataset, idx)
            if self._transform is not None:
                batch = self._transform(batch)
            return batch
        finally:
            mapping.set_epoch(previous)


def default_world(rank, world_size):
    """``(rank, world_size)``: the given ones, else torch.distributed's when it is
    initialised, else RANK and WORLD_SIZE from the environment, else 0 and 1."""
    if rank is not None and world_size is not None:
        return rank, world_size
    # torch is imported only if the program did: if torch.distributed is not in
    # sys.modules, no process group can be initialised.
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        source = (dist.get_rank(), dist.get_world_size())
    elif "RANK" in os.environ or "WORLD_SIZE" in os.environ:
        try:
            source = (int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]))
        except KeyError as e:
            given = "RANK" if e.args[0] == "WORLD_SIZE" else "WORLD_SIZE"
            raise ValueError(
                f"epochs(): the environment sets {given} but not {e.args[0]}: set "
                "both (torchrun does), or pass rank= and world_size=") from None
        except ValueError:
            raise ValueError(
                f"epochs(): RANK={os.environ['RANK']!r} and WORLD_SIZE="
                f"{os.environ['WORLD_SIZE']!r} in the environment are not integers"
            ) from None
    else:
        source = (0, 1)
    return (source[0] if rank is None else rank,
            source[1] if world_size is None else world_size)
