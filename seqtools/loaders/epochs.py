"""Epochs for a training loop: shuffled passes, checkpoints, ranks.

:func:`epochs` yields stacked batches epoch after epoch. Each batch is a pure
function of (seed, epoch, position): the epoch's order is a permutation drawn from
(seed, epoch), the rank's batch is a fixed slice of it, and the batch is read by
the fused path (``stack(gather(dataset, indices))``, no per-sample Python over
arrays). Nothing depends on who computes a batch or when, so the stream is the
same with any number of workers, threads or processes, any start method, and
when a worker dies and its batch is computed again.

The loader's position is (epoch, samples of the epoch's global order consumed by
all ranks together): :meth:`EpochLoader.state_dict` is a handful of integers, and
:meth:`EpochLoader.load_state_dict` starts a new stream there, under any number
of ranks, at a cost that does not depend on the position.

It sits on :func:`seqtools.prefetch` (ordered, over the infinite view of
:mod:`.sharding` whose item k is batch k from the start position: which
samples, on which rank) and :mod:`seqtools.batching.stacking`'s fused reads.

Since the batches to come are known, a dataset over remote arrays with a block
cache (:func:`seqtools.open_npy`) has their rows fetched ahead: as batch ``k`` is
handed out, the parent queues the blocks of the batch ``readahead`` batches past
the workers' window (``k + max_buffered + readahead``; ``k + readahead`` inline)
for :func:`seqtools.storage.prefetch`, with the indices the batch itself will use.

What a failure leaves
---------------------
A batch that fails (user code in the dataset raises, a sample does not stack)
is not consumed: the error names the epoch, the batch, its positions in the
epoch's order and its samples, and the next ``next()`` makes that batch again.
The dataset's length is checked when the first batch of each epoch is handed
out (once per epoch, in the consuming process, before any batch of that epoch
is returned, whoever computed it ahead) and when a batch fails: a length other
than the loader's raises :class:`DatasetLengthChanged`, whose loader stops its
workers and stays at its position.
"""

import logging
import threading
from time import perf_counter

import numpy as np

from .._checks import check_int, check_seconds, check_seed, length
from ..errors import (
    EvaluationError,
    WorkersCannotStart,
    created_at,
    creation_site,
    passthrough,
)
from .api import STALL_REPORT, prefetch
from .sharding import BatchStream, Sharding, default_world, epoch_order
from .stats import Meter, report

__all__ = ["epochs", "EpochLoader", "epoch_order", "DatasetLengthChanged"]

log = logging.getLogger("seqtools")

STATE_VERSION = 1
#: Batches whose remote blocks epochs() fetches ahead of the one it hands out.
#: Eight: enough to cover a few 20-50 ms round trips to a cloud store behind
#: batches that take milliseconds to read from the cache, few enough that the
#: blocks read ahead fit a cache of a few hundred MiB with room to spare.
DEFAULT_READAHEAD = 8
# Sample indices a failed batch's error lists before "...".
_SHOWN_SAMPLES = 8


class DatasetLengthChanged(ValueError):
    """The dataset of :func:`epochs` no longer has the length the loader was made
    for (samples appended or removed during training).

    A ValueError, as the mismatch of a state's ``dataset_length`` in
    :meth:`EpochLoader.load_state_dict` is: the dataset's value is no longer one
    the loader works with. A class of its own so that a training loop can catch
    exactly this and make a new loader (see :func:`epochs`).

    Attributes
    ----------
    expected, found : int
        The loader's length, the dataset's now.
    epoch : int
        The epoch it was found in.
    """

    def __init__(self, message, expected, found, epoch):
        super().__init__(message)
        self.expected, self.found, self.epoch = expected, found, epoch


class EpochLoader:
    """Stacked batches epoch after epoch, resumable: see :func:`epochs`.

    Attributes
    ----------
    epoch : int
        The epoch of the batch last returned (before the first: of the next one).
    batches_per_epoch : int
        Batches each rank yields in a whole epoch.
    rank, world_size : int
        This process's part.
    seed : int or list of int
        The seed the orders are drawn from.
    """

    def __init__(self, dataset, n, batch_size, seed, shuffle, drop_last, num_epochs,
                 rank, world_size, nworkers, method, options, transform=None,
                 readahead=0):
        self._dataset = dataset
        self._readahead = _ReadAhead.of(dataset, readahead)
        self._transform = transform
        self._sharding = Sharding(n, batch_size, rank, world_size, drop_last)
        self.seed = seed
        self._shuffle = shuffle
        self._num_epochs = num_epochs
        self._workers = (nworkers, method, options)
        self._origin = creation_site()  # the user's epochs(...) line
        self._lock = threading.Lock()
        self._loader = None
        self._meter = Meter()  # kept across the loaders under it (see stats)
        self._start(0, 0)

    @property
    def rank(self):
        return self._sharding.rank

    @property
    def world_size(self):
        return self._sharding.world_size

    @property
    def batches_per_epoch(self):
        return self._sharding.steps(0)

    @property
    def epoch(self):
        k = self._consumed
        return self._stream.where(k - 1 if k else 0)[0]

    def _start(self, epoch, position):
        """Start the stream at ``position`` of ``epoch`` (the workers start with
        the first batch asked for)."""
        sharding = self._sharding
        if position >= sharding.n:  # the epoch is over
            epoch, position = epoch + 1, 0
        total = None
        if self._num_epochs is not None:
            total = 0
            if epoch < self._num_epochs:
                total = (sharding.steps(position)
                         + (self._num_epochs - epoch - 1) * sharding.steps(0))
        self.close()
        self._stream = BatchStream(self._dataset, sharding, self.seed, self._shuffle,
                                   epoch, position, total, self._transform)
        if self._readahead is not None:
            # A stream of its own (the same batches: the same arguments), so
            # that asking for batches ahead moves neither the run nor the
            # orders cached in the stream the thread workers read.
            self._readahead.start(BatchStream(
                self._dataset, sharding, self.seed, self._shuffle, epoch, position,
                total), total, sharding.steps(0))
        self._total = total
        self._consumed = 0
        self._check_at = 0  # the batch before which the dataset's length is checked

    def __len__(self):
        """Batches this rank yields in a whole epoch (:attr:`batches_per_epoch`),
        as ``len()`` of torch's DataLoader."""
        return self._sharding.steps(0)

    def one_epoch(self):
        """The batches left in the current epoch, then stop.

        The current epoch is the one of the next batch: after the last batch of
        an epoch, the next epoch (whole); after :meth:`load_state_dict`, what
        is left of the epoch the state is in. So that the loop of torch's
        DataLoader trains exactly::

            for epoch in range(loader.epoch, num_epochs):
                for X, y in loader.one_epoch():
                    ...

        and resumes mid-epoch from a state. ``len()`` of the iterator is the
        number of batches it has left (for a progress bar). It ends early if
        the loader's ``num_epochs`` ends, or if :meth:`load_state_dict` moves the
        loader meanwhile.
        """
        with self._lock:
            stream, start = self._stream, self._consumed
            end = stream.next_epoch(start)
            if self._total is not None:
                end = min(end, self._total)
        return _OneEpoch(self, stream, end)

    def __iter__(self):
        return self

    def __next__(self):
        k = None
        try:
            with self._lock:
                k, stream = self._consumed, self._stream
                return self._next_batch()
        except KeyboardInterrupt:
            # Raised after the batch was taken (Python runs signal handlers as
            # calls return, the lock's release included): it never reached the
            # caller and is still the next one (the prefetch under it, asked
            # for it again, makes it again).
            if k is not None:
                with self._lock:
                    if self._consumed == k + 1 and self._stream is stream:
                        self._consumed = k
            raise

    def _next_batch(self):
        """The next batch; the caller holds the lock."""
        k = self._consumed
        if self._total is not None and k >= self._total:
            self.close()
            raise StopIteration
        if k == self._check_at:  # the first batch of an epoch (or of the stream)
            self._check_length(k)
            self._check_at = self._stream.next_epoch(k)
        loader = self._loader
        if loader is None:
            nworkers, method, options = self._workers
            if nworkers == 0:
                loader = self._stream
            else:
                with created_at(self._origin):
                    loader = prefetch(self._stream, nworkers, method,
                                      **options)
                self._meter.attach(loader._engine, loader._meter.tuner)
                loader._meter = self._meter  # its reads count here
            self._loader = loader
        if self._readahead is not None:
            self._readahead.advance(k, loader)
        # k is a valid index of the stream (or of the prefetch view over it):
        # _get skips View's key checks, a good part of what a batch costs
        # the training loop's own thread
        try:
            if loader is self._stream:  # read here: the meter is this one's
                began = perf_counter()
                batch = loader._get(k)
                meter, now = self._meter, perf_counter()
                meter.items += 1
                meter.waited += now - began
                if now > meter.tick:
                    meter.mark(now)
            else:
                batch = loader._get(k)
        except Exception as e:
            self._failed(k, e, loader is self._stream)
            raise
        # Only now: a failed batch is not consumed, the next call makes it
        # again (the prefetch front, asked for k again, resets its engine
        # there: the work ahead is dropped and done again).
        self._consumed = k + 1
        return batch

    def _check_length(self, k, cause=None):
        """Raise DatasetLengthChanged if the dataset's length is not the loader's
        any more, before batch ``k`` is returned (``cause``: how it failed, if
        it did). The loader then stays at its position with its workers
        stopped: process workers hold a copy of the dataset as it was."""
        n = self._sharding.n
        found = length(self._dataset, "epochs", "dataset")
        if found == n:
            return
        epoch, position = self._position(k)
        number = self._batch_number(k)
        if cause is not None:
            where = f"in epoch {epoch}, where batch {number} failed"
        elif number == 0:
            where = f"at the start of epoch {epoch}"
        else:
            where = f"before batch {number} of epoch {epoch}"
        if position == 0:
            carry = ("to carry the position over, call its "
                     "load_state_dict(loader.state_dict()): a state at the start "
                     "of an epoch is valid with any dataset length")
        else:
            carry = ("to go on from the next epoch (a position inside an epoch "
                     "means nothing with another length), call its "
                     f"load_state_dict({{**loader.state_dict(), 'epoch': "
                     f"{epoch + 1}, 'position': 0}})")
        self._start(epoch, position)
        raise DatasetLengthChanged(
            f"epochs(): the dataset has {found} samples {where}, but this loader "
            f"was made for {n} (its epochs' orders are permutations of {n} "
            "samples, and process workers read a copy of the dataset as it was). "
            "Make a new loader for the dataset as it is now, "
            f"seqtools.epochs(dataset, ...), and {carry}. This loader stays at its "
            "position and raises this error again while the length differs",
            n, found, epoch) from cause

    def _failed(self, k, e, inline):
        """Raise the error of batch ``k``, which failed with ``e``: the user
        knows the epoch, the batch and its samples, not the prefetch under the
        loader. Returns (for the caller to re-raise ``e``) for errors that are
        not the batch's: the loader's own (closed, ring full...), and under
        ``seterr('passthrough')`` the exception of user code, unchanged."""
        self._check_length(k, e)
        if isinstance(e, WorkersCannotStart):
            return  # the loader's, not the batch's: its message says what to do
        if not inline and not isinstance(e, EvaluationError):
            return  # workers report a batch's failure as an EvaluationError
        if passthrough() and not isinstance(e, EvaluationError):
            return
        epoch, position, j = self._stream.where(k)
        lo, _ = self._sharding.positions(position, j)
        samples = self._stream.indices(k)[1].tolist()
        shown = ", ".join(map(str, samples[:_SHOWN_SAMPLES]))
        if len(samples) > _SHOWN_SAMPLES:
            shown += f", ... ({len(samples)} in all)"
        rank = f" on rank {self.rank}" if self.world_size > 1 else ""
        message = str(e) if isinstance(e, EvaluationError) else (
            f"{type(e).__name__}: {e}")
        raise EvaluationError(
            f"epochs(): batch {self._batch_number(k)} of epoch {epoch}{rank} "
            f"(position {lo} of the epoch's order; samples [{shown}]) failed: "
            f"{message}") from e

    def _batch_number(self, k):
        """Batch ``k``'s number in its epoch on this rank, from 0."""
        epoch, position, j = self._stream.where(k)
        return position // self._sharding.step + j

    def _position(self, k):
        """``(epoch, position)`` before batch ``k``: what state_dict() gives."""
        epoch, position, j = self._stream.where(k)
        return epoch, min(position + j * self._sharding.step, self._sharding.n)

    def state_dict(self):
        """The position after the batch last returned, as a small dict.

        Returns
        -------
        dict
            JSON-serialisable: ``epoch`` and ``position`` (samples of the epoch's
            global order consumed by all ranks together; the same on every rank
            after the same number of batches), and what the position is only
            valid with: ``seed``, ``dataset_length``, ``batch_size``, ``shuffle``.
            ``version`` is the format's.
        """
        with self._lock:
            epoch, position = self._position(self._consumed)
            sharding = self._sharding
            return {"version": STATE_VERSION, "epoch": epoch, "position": position,
                    "seed": self.seed, "dataset_length": sharding.n,
                    "batch_size": sharding.batch_size, "shuffle": self._shuffle}

    def load_state_dict(self, state_dict):
        """Continue from a position :meth:`state_dict` gave, under any world size.

        The next batches are those the run that saved the state would have
        yielded next (with another world size: the ranks then share the rest of
        that epoch, each sample once). Costs the same whatever the position:
        nothing is replayed. Workers already running are stopped; new ones start
        with the next batch.

        Parameters
        ----------
        state_dict : dict
            From :meth:`state_dict` of a loader of the same batch size, seed and
            shuffle (possibly through JSON, ``torch.save``...), and of the same
            dataset length unless the state is at the start of an epoch
            (``position`` 0, or the saving loader's ``dataset_length``): that
            start is one for any length, so the state of a loader whose dataset
            grew or shrank (see :class:`DatasetLengthChanged`) carries over to a
            new loader of the new dataset, which goes on with that epoch's
            order of its own length.

        Raises
        ------
        ValueError
            If the state is of another batch size, seed or shuffle, of another
            dataset length inside an epoch, or is not a state of this loader.
        """
        state = _checked_state(state_dict)
        sharding = self._sharding
        epoch, position = state["epoch"], state["position"]
        theirs = state["dataset_length"]
        if position == theirs:  # the end of an epoch: the start of the next
            epoch, position = epoch + 1, 0
        mine = {"dataset_length": sharding.n, "batch_size": sharding.batch_size,
                "seed": self.seed, "shuffle": self._shuffle}
        if position == 0:
            # The start of an epoch is one with any dataset length: its order is
            # drawn from (seed, epoch) for the length the loader has.
            del mine["dataset_length"]
        for key, value in mine.items():
            theirs = state[key]
            if key == "seed" and isinstance(theirs, (list, tuple)):
                theirs = list(theirs)
            if theirs != value:
                hint = ("; a state at the start of an epoch (position 0) resumes "
                        "any dataset length" if key == "dataset_length" else "")
                raise ValueError(
                    f"load_state_dict: the state was saved by a loader with "
                    f"{key}={state[key]!r}, this one has {key}={value!r}: its "
                    "position means nothing here (it resumes the same dataset, "
                    f"batch size, seed and shuffle only{hint})")
        if position > sharding.n:
            raise ValueError(
                f"load_state_dict: position {position} is past the end of "
                f"an epoch of {sharding.n} samples")
        with self._lock:
            self._start(epoch, position)

    def stats(self):
        """Where the time goes: see :meth:`seqtools.BufferLoader.stats`. The
        figures cover the batches of this loader, across resumes; with
        ``nworkers=0`` the consumer's wait is the time it spends reading
        batches itself."""
        return self._meter.stats()

    def report(self):
        """The figures of :meth:`stats` and one sentence of advice."""
        return report(self.stats(), "epochs")

    def close(self):
        """Stop the workers (they also stop when the loader is garbage-collected);
        iterating again starts new ones."""
        loader, self._loader = self._loader, None
        if loader is not None and loader is not getattr(self, "_stream", None):
            loader.close()
            self._meter.cached_until = 0.0

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return (f"<seqtools.EpochLoader of {self._sharding.n} samples, batches of "
                f"{self._sharding.batch_size}, rank {self.rank} of {self.world_size}, "
                f"epoch {self.epoch}>")


def _window(loader):
    """Batches after the one handed out that the workers under ``loader`` may
    be making already (their window, which may widen as they run); 0 inline."""
    engine = getattr(loader, "_engine", None)
    return 0 if engine is None else engine.info()["window"]


class _ReadAhead:
    """Read-ahead of an :class:`EpochLoader` over remote arrays: as batch ``k``
    is handed out while the workers may be making batches up to ``k + window``,
    the blocks of batch ``k + window + depth`` (of all the batches after
    ``k + window`` up to there, after a start or a resume) are queued for the
    background fetch of :func:`seqtools.storage.prefetch`, into the arrays'
    block cache. Not the batches in the workers' window: the workers are
    fetching those themselves, and a second fetch of the same blocks from
    this process costs requests and CPU for nothing (measured in
    ``benchmarks/bench_remote.py``: with 16 KiB blocks, a read-ahead of
    ``k + 8`` under a window of 16 made a cold epoch 2x slower).

    It holds the dataset and a stream of batch indices, never the loader: the
    fetches queued and their callbacks do not keep a loader alive. It is only a
    hint: the batches are read as they would be without it, and its failures
    are logged once, never raised.
    """

    __slots__ = ("dataset", "depth", "prefetch", "arrays", "all_seen", "done",
                 "stream", "total", "per_epoch", "next", "quiet", "skipped",
                 "logged")

    @classmethod
    def of(cls, dataset, depth):
        """A read-ahead for ``dataset``, or None if it has nothing to fill: no
        remote array with a cache under it (a local dataset: a walk over its
        views, once; fsspec is not imported)."""
        if depth == 0:
            return None
        from ..storage import remote

        arrays = remote.cached_arrays(dataset)
        if not arrays:
            return None
        return cls(dataset, depth, remote, arrays)

    def __init__(self, dataset, depth, remote, arrays):
        self.dataset, self.depth = dataset, depth
        self.prefetch, self.all_seen = remote.prefetch, remote.all_seen
        self.done = remote.prefetch_done  # what prefetch_rows gives for no work
        # once this process has seen all their blocks cached, there is nothing
        # left to fetch ahead: a batch then costs a look at each array
        self.arrays = arrays
        self.stream, self.total, self.per_epoch, self.next = None, None, 1, 0
        self.quiet = self.skipped = 0
        self.logged = False

    def start(self, stream, total, per_epoch):
        """Batch 0 of ``stream`` is the next to be handed out; an epoch has
        ``per_epoch`` batches."""
        self.stream, self.total, self.next = stream, total, 0
        self.per_epoch = max(1, per_epoch)
        self.quiet = self.skipped = 0

    def advance(self, k, loader):
        """Batch ``k`` is being handed out, the workers under ``loader`` may be
        making those up to ``k + window``: queue the batches after that up to
        ``k + window + depth`` not queued yet.

        Once a whole epoch of batches found every block cached (the next
        epochs read the same rows), it looks at one batch an epoch instead,
        and goes on as before if that one finds blocks to fetch."""
        if self.depth == 0:  # turned off after a failure
            return
        if self.quiet >= self.per_epoch:
            if self.skipped < self.per_epoch:
                self.skipped += 1
                return
            self.skipped = 0
        window = _window(loader)
        last = k + window + self.depth
        if self.total is not None:
            last = min(last, self.total - 1)
        if self.quiet >= self.per_epoch:  # the one look of the epoch
            if last >= self.next:
                self._ask(last)
                self.next = last + 1
            return
        j = max(self.next, k + window + 1)
        if self.all_seen(self.arrays):
            self.next = max(j, last + 1)
            return
        while j <= last and self._ask(j):
            j += 1
        self.next = j

    def _ask(self, b):
        """Queue batch ``b``'s blocks; False if read-ahead failed (it is then
        off for good: a hint must not stop the loop)."""
        try:
            idle = True
            for future in self.prefetch(self.dataset, self.stream.indices(b)[1]):
                if future is not self.done:
                    idle = False
                    future.add_done_callback(self._fetched)
        except Exception as exc:
            self.depth = 0
            log.warning("seqtools.epochs(): read-ahead of batch %d failed (%s: %s) "
                        "and is turned off for this loader; batches are read as "
                        "without it", b, type(exc).__name__, exc)
            return False
        self.quiet = self.quiet + 1 if idle else 0
        return True

    def _fetched(self, future):
        """Log the first failed fetch (in the thread that fetched). The batch's
        own read tries again, and raises if the store still fails."""
        if self.logged or future.cancelled() or future.exception() is None:
            return
        self.logged = True
        exc = future.exception()
        log.debug("seqtools.epochs(): a read-ahead fetch failed (%s: %s); the "
                  "batch's own read tries again (logged once per loader)",
                  type(exc).__name__, exc)


class _OneEpoch:
    """Iterator of :meth:`EpochLoader.one_epoch`: batches of ``loader`` while it
    reads ``stream`` and is before batch ``end``."""

    __slots__ = ("_loader", "_stream", "_end")

    def __init__(self, loader, stream, end):
        self._loader, self._stream, self._end = loader, stream, end

    def __iter__(self):
        return self

    def __next__(self):
        loader = self._loader
        if loader._stream is not self._stream or loader._consumed >= self._end:
            raise StopIteration
        return next(loader)

    def __len__(self):
        loader = self._loader
        if loader._stream is not self._stream:
            return 0
        return max(0, self._end - loader._consumed)


_STATE_KEYS = ("version", "epoch", "position", "seed", "dataset_length", "batch_size",
               "shuffle")


def _checked_state(state):
    if not hasattr(state, "keys"):
        raise TypeError(f"load_state_dict: expected the dict state_dict() returned, "
                        f"got {type(state).__name__}")
    missing = [k for k in _STATE_KEYS if k not in state]
    if missing:
        raise ValueError(f"load_state_dict: not a seqtools.epochs state (no "
                         f"{', '.join(missing)})")
    if state["version"] != STATE_VERSION:
        raise ValueError(f"load_state_dict: state format version {state['version']!r}"
                         f", this seqtools reads version {STATE_VERSION}")
    for key in ("epoch", "position"):
        v = state[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
            raise ValueError(f"load_state_dict: {key} must be an int >= 0, "
                             f"got {v!r}")
    return {k: state[k] for k in _STATE_KEYS}


def _check_strings(dataset):
    """Refuse a 1-D array of strings: its samples are numpy scalars whose dtype
    is their own length (``np.str_('bb')`` is ``<U2`` in a ``<U3`` array, and
    ``np.bytes_`` drops trailing NULs), which ``stack`` refuses to mix, so a
    batch would stack or fail depending on which samples the epoch's order put
    in it."""
    if (isinstance(dataset, np.ndarray) and dataset.ndim == 1
            and dataset.dtype.kind in "US"):
        kind = "strings" if dataset.dtype.kind == "U" else "bytes"
        raise TypeError(
            f"epochs(): cannot stack samples of a 1-D array of {kind} (dtype "
            f"{dataset.dtype.str}): each sample is a numpy scalar of its own "
            "length, and stack() refuses to mix lengths. Load batches of indices, "
            "seqtools.epochs(np.arange(len(dataset)), ...), and take "
            "dataset[batch] in the loop, or give rows of one column, "
            "dataset[:, None] (batches of shape (batch_size, 1))")


def epochs(dataset, batch_size, *, seed, shuffle=True, drop_last=False,
           num_epochs=None, rank=None, world_size=None, nworkers=0, method="process",
           max_buffered=None, start_method=None, timeout=None,
           stall_report=STALL_REPORT, shm_size=0, shm_budget=None, transform=None,
           start_hook=None, readahead=DEFAULT_READAHEAD):
    """Iterate stacked batches of a dataset, epoch after epoch, resumably.

    Each epoch is a permutation of the dataset drawn from (``seed``, epoch) (see
    :func:`seqtools.loaders.epochs.epoch_order`), split between the ranks and cut into
    batches of ``batch_size``, each read as ``stack(gather(dataset, indices))``:
    fused, with no per-sample Python over arrays. A batch is a pure function of
    (seed, epoch, position): the stream is the same whatever ``nworkers``,
    ``method`` and start method, and when a worker dies (its batch is made
    again).

    Parameters
    ----------
    dataset : sequence
        The samples: a finite, non-empty view, array or sequence, of samples
        :func:`seqtools.stack` can stack (not a 1-D array of strings or bytes:
        see Raises). Picklable for process workers. Its length is the loader's:
        see "Datasets that change length" below.
    batch_size : int
        Samples per batch and rank, ``>= 1``.
    seed : int or list of int
        Entropy of the epochs' orders; the same on every rank (there is no
        default: each process would draw its own).
    shuffle : bool
        False: every epoch in dataset order.
    drop_last : bool
        True: the tail of an epoch that does not fill a batch on every rank
        (``len(dataset) % (batch_size * world_size)`` samples) is dropped. False:
        one more, shorter batch on every rank, padded with the epoch's first
        samples when the ranks would not all get as many (fewer than
        ``world_size`` repeats; none for one rank). See the module documentation.
    num_epochs : int, optional
        Stop after that epoch count (counted from epoch 0, resumed runs
        included); None: endless.
    rank, world_size : int, optional
        This process's part of each epoch. Default: ``torch.distributed``'s when a
        process group is initialised, else the ``RANK`` and ``WORLD_SIZE``
        environment variables, else 0 and 1.
    nworkers : int or 'auto'
        0: batches are made inline, when asked for; else that many workers make
        them ahead (see :func:`seqtools.prefetch`); ``'auto'``: as many as the
        loop needs, up to the cores, and with ``max_buffered`` left as None the
        window too. The batches are the same whatever the workers.
    method : {'process', 'thread'}
        The workers: processes hand batches over through shared memory,
        zero-copy.
    max_buffered : int, optional
        Batches made ahead of the loop. Default: ``max(10, 2 * nworkers)``; with
        process workers, ``max(16, 4 * nworkers)`` from the first batch on if
        the shared memory for that many batches stays under 64 MiB (small
        batches come fast: a deeper window keeps the workers busy while the
        loop waits for the one batch it needs next).
    start_method : {'fork', 'spawn', 'forkserver'}, optional
        multiprocessing start method of process workers.
    shm_size, shm_budget : int, optional
        As :func:`seqtools.prefetch`'s: the shared memory of process workers
        is sized from the first batch and grows, for a larger batch (after a
        resume at an epoch's short tail) or while the loop keeps batches alive,
        up to ``shm_budget`` bytes (default: half the available memory).
    timeout, stall_report : float, optional
        As :func:`seqtools.prefetch`'s, for the workers' batches: a batch that
        takes longer than ``timeout`` seconds raises
        :class:`~seqtools.LoaderTimeout` and is not consumed (the next
        ``next()`` makes it again); a wait of ``stall_report`` seconds with no
        batch is logged once with what each worker is doing.
    transform : callable, optional
        Applied to each stacked batch where it is made (in the worker, or
        inline with ``nworkers=0``), before it is handed over:
        ``transform(batch)`` (normalise, cast, augment a whole batch); its result
        may be any structure the workers hand over (arrays, scalars, tuples,
        lists and dicts of them). Picklable for process workers under spawn
        and forkserver (a module-level function). Batches with a transform are
        made by Python workers, not by the native copy threads.
    start_hook : callable, optional
        Called in each worker when it starts, as torch's ``worker_init_fn``:
        ``start_hook(i)`` with the worker's index ``0 <= i < nworkers``, or
        ``start_hook()``. Not called with ``nworkers=0``.
    readahead : int
        Batches ahead whose rows are fetched into the block cache of the
        remote arrays under ``dataset`` (:func:`seqtools.open_npy` with a
        ``cache_dir``): as batch ``k`` is handed out, the blocks of batch
        ``k + w + readahead`` are queued for background fetch (see
        :func:`seqtools.storage.prefetch`), where ``w`` is the workers' window
        (the batches they may be making already, which fetch their own
        blocks; 0 with ``nworkers=0``), in the order the loader will read
        them, epoch boundaries, ranks and resumes included. 0: no read-ahead.
        Without such arrays (local data) it does nothing and costs nothing.
        Default 8. It only fills the cache: the batches are the same with any
        value, and a failed read-ahead is logged (logger ``"seqtools"``), never
        raised.

    Returns
    -------
    EpochLoader
        An iterator of batches, with ``one_epoch()`` (the batches left in the
        current epoch), ``len()`` (batches per epoch on this rank), ``epoch``,
        ``state_dict()``, ``load_state_dict()`` and ``close()``.

    Raises
    ------
    TypeError
        For arguments of the wrong type, and if ``dataset`` is a 1-D array of
        strings or bytes: its samples are numpy scalars whose dtype is their own
        length, which ``stack`` does not mix. Load indices instead
        (``epochs(np.arange(len(strings)), ...)``, then ``strings[batch]``), or
        rows of one column (``strings[:, None]``).
    ValueError
        For arguments out of range, an empty dataset, or ``drop_last=True``
        with fewer samples than one batch on every rank.
    DatasetLengthChanged
        From ``next()``: the dataset's length is not the loader's any more (a
        ValueError; see below).
    EvaluationError
        From ``next()``: reading a batch failed (see below).

    Notes
    -----
    **Datasets that change length.** The orders are permutations of the length
    the dataset had when the loader was made. ``next()`` reads the dataset's
    length again when it hands out the first batch of each epoch (and the first
    after ``epochs()`` or ``load_state_dict()``), in the calling process, before
    that batch is read or taken from the workers, and when a batch fails. If
    samples were appended or removed, it raises
    :class:`~seqtools.loaders.epochs.DatasetLengthChanged` naming both lengths
    and the epoch: no batch made ahead from the dataset as it was is returned.
    Make a new loader, ``epochs(dataset, ...)``, and carry the position over
    with ``new.load_state_dict(loader.state_dict())``: a state at the start of
    an epoch is valid with any length, the new loader goes on with that
    epoch's order of the new length. The old loader stops its workers and stays
    where it was: ``next()`` raises the same error while the length differs,
    and goes on from there if the length comes back. Inside an epoch, a change
    is seen at the start of the next one, or earlier when a removed sample
    fails to read (inline and thread workers read the dataset itself; process
    workers read it as it was when they started, to the end of the epoch):
    change a dataset between epochs. A view's length is fixed when it is
    made: a view over a list that grows does not grow.

    **Errors.** When reading a batch fails (code in the dataset raises, a
    sample ``stack`` refuses), ``next()`` raises
    :class:`~seqtools.EvaluationError` whose message starts with what the
    training loop knows, ``"epochs(): batch 3 of epoch 1 (position 24 of the
    epoch's order; samples [17, 4, 9, ...]) failed: "``, then the error's own
    message (a worker process's traceback included), chained to it. Under
    ``seqtools.seterr('passthrough')`` the exception of the dataset's code is
    raised unchanged. The batch is not consumed: ``state_dict()`` is the
    position before it, and the next ``next()`` makes it again (the workers
    start over from it), so that a sample that failed for a passing reason (a
    file system hiccup) costs nothing; a sample that always fails blocks the
    loader until the dataset is fixed (or a state past it is loaded).

    **Checkpoints.** ``state_dict()`` gives the global position (epoch, samples of
    the epoch's order consumed by all ranks), the same on every rank;
    ``load_state_dict(state)`` continues with the batches the saving run would
    have yielded next, at once (nothing replayed), under any world size: the ranks
    then share the rest of that epoch, each sample once. The two methods follow
    ``torchdata``'s ``Stateful`` protocol.

    **Randomness.** ``smap(f, ..., rng=seed)`` in the dataset gives ``f`` a
    generator per sample derived from (seed, epoch, sample index); the loader
    sets the epoch.

    Examples
    --------
    The loop of torch's DataLoader: one epoch at a time.

    >>> import numpy as np, seqtools
    >>> data = seqtools.collate([np.arange(10.0), np.arange(10)])
    >>> loader = seqtools.epochs(data, 4, seed=0)
    >>> len(loader)
    3
    >>> for epoch in range(loader.epoch, 2):
    ...     print(epoch, [y.tolist() for x, y in loader.one_epoch()])
    0 [[8, 7, 9, 4], [1, 5, 2, 6], [3, 0]]
    1 [[3, 0, 5, 4], [6, 1, 9, 7], [2, 8]]

    Or one stream of ``num_epochs`` epochs:

    >>> loader = seqtools.epochs(data, 4, seed=0, num_epochs=2)
    >>> [(loader.epoch, y.tolist())
    ...  for x, y in loader]  # doctest: +NORMALIZE_WHITESPACE
    [(0, [8, 7, 9, 4]), (0, [1, 5, 2, 6]), (0, [3, 0]),
     (1, [3, 0, 5, 4]), (1, [6, 1, 9, 7]), (1, [2, 8])]

    Checkpoint and resume:

    >>> loader = seqtools.epochs(data, 4, seed=0)
    >>> _ = next(loader)
    >>> state = loader.state_dict()
    >>> state["epoch"], state["position"]
    (0, 4)
    >>> resumed = seqtools.epochs(data, 4, seed=0)
    >>> resumed.load_state_dict(state)
    >>> next(resumed)[1].tolist() == next(loader)[1].tolist()
    True
    """
    n = length(dataset, "epochs", "dataset")
    if n == 0:
        raise ValueError("epochs(): the dataset is empty")
    _check_strings(dataset)
    batch_size = check_int(batch_size, "batch_size", "epochs", 1)
    seed = check_seed(seed, "epochs(): seed")
    if num_epochs is not None:
        num_epochs = check_int(num_epochs, "num_epochs", "epochs", 0)
    rank, world_size = default_world(rank, world_size)
    world_size = check_int(world_size, "world_size", "epochs", 1)
    rank = check_int(rank, "rank", "epochs", 0)
    if rank >= world_size:
        raise ValueError(f"epochs(): rank {rank} is not below world_size {world_size}")
    if nworkers != "auto":
        nworkers = check_int(nworkers, "nworkers", "epochs", 0)
    if method not in ("process", "thread"):
        raise ValueError(f"epochs(): method must be 'process' or 'thread', got "
                         f"{method!r}")
    if start_method is not None and method != "process":
        raise ValueError("epochs(): start_method is for method='process'")
    if max_buffered is not None:
        max_buffered = check_int(max_buffered, "max_buffered", "epochs", 1)
    if drop_last and n < batch_size * world_size:
        raise ValueError(
            f"epochs(): with drop_last=True, {n} samples never fill a batch of "
            f"{batch_size} on each of {world_size} rank(s): every epoch would be "
            "empty")
    if transform is not None and not callable(transform):
        raise TypeError(f"epochs(): transform must be callable, got "
                        f"{type(transform).__name__}")
    if start_hook is not None and not callable(start_hook):
        raise TypeError(f"epochs(): start_hook must be callable, got "
                        f"{type(start_hook).__name__}")
    readahead = _check_readahead(readahead)
    options = {"max_buffered": max_buffered, "start_method": start_method,
               "start_hook": start_hook,
               "shm_size": shm_size, "shm_budget": shm_budget,
               "timeout": check_seconds(timeout, "timeout", "epochs"),
               "stall_report": check_seconds(stall_report, "stall_report",
                                             "epochs")}
    return EpochLoader(dataset, n, batch_size, seed, bool(shuffle), bool(drop_last),
                       num_epochs, rank, world_size, nworkers, method, options,
                       transform, readahead)


def _check_readahead(value):
    if isinstance(value, (bool, float)) or not hasattr(value, "__index__"):
        raise TypeError(
            f"epochs(): readahead must be an int (batches fetched ahead into the "
            f"cache of remote arrays; 0 turns read-ahead off), got "
            f"{type(value).__name__} {value!r}")
    value = value.__index__()
    if value < 0:
        raise ValueError(
            f"epochs(): readahead must be >= 0 (batches fetched ahead into the "
            f"cache of remote arrays; 0 turns read-ahead off), got {value}")
    return value
