"""seqtools' loaders against their peers on three workloads, in one interleaved run.

Workloads (data written to a temporary folder, read through memory maps):

- **W1** the seed workload: 64 x (248,) float64 rows plus int labels per batch,
  drawn at random from memory-mapped ``.npy`` chunks
  (``collate([concatenate(chunks), labels])[:-10000]``); no per-sample work.
- **W2** image-like: 128 samples per batch from 3000 memory-mapped 3x128x128 uint8
  images; per sample, in Python: random 112x112 crop, random horizontal flip,
  conversion to float32 normalised by channel mean and std. The crop and flip are
  drawn from a ``numpy.random.Generator`` the transform is given: in seqtools'
  rows, one per sample (``smap(augment, ..., rng=seed)``); in the peers' rows (and
  SeqTools 1.4.1's, whose ``smap`` has no ``rng=``), the one each worker thread or
  process holds (``np.random.default_rng()``, made on its first sample). Not
  numpy's global ``RandomState``: it takes a lock at each draw, which threads
  making samples at once would contend for.
- **W3** large rows: 16 samples of 1 MiB (512x512 float32) per batch from 384
  memory-mapped rows; no per-sample work, so copy bandwidth dominates.

Every row runs the same workload code (this file's ``Workload`` classes, plain numpy
plus ``seqtools.gather/smap/batch/collate/concatenate``, which SeqTools 1.4.1 has
too; only where W2's generators come from differs, as above) and consumes batches
the same way: take the next batch and drop it, without reading it. Rows, with
nworkers 1 and 2 for the loaders:

- ``inline``: the workload's sampler called in the loop (``np.random.choice`` of
  indices, ``gather``, per-sample transform, ``np.stack`` per field).
- ``inline stack(gather)``: the same, collated by ``seqtools.stack`` over the
  ``gather`` (``smap`` for W2) view instead of a list and ``np.stack``.
- ``prefetch thread`` / ``prefetch process``: ``seqtools.prefetch`` over
  ``batch(smap(transform, gather(dataset, shuffled order)), B, collate_fn=...)``.
- ``prefetch thread stack`` / ``prefetch process stack``: the same, collated by
  ``seqtools.stack`` (the fused read: no per-sample Python when there is no
  transform); the table ends with the thread / process ratios.
- ``load_buffers``: the sampler through ``seqtools.load_buffers``.
- ``load_buffers stack(gather)``: the ``seqtools.stack`` sampler through it (the
  fused path when ``seqtools.stack`` exists; skipped, with a message, otherwise).
- ``minibatches``: ``seqtools.minibatches(dataset, B)`` (over
  ``smap(transform, dataset)`` for W2), inline and through ``load_buffers``;
  skipped, with a message, when seqtools has no ``minibatches``.
- ``load_buffers thread minibatches``: ``minibatches`` through
  ``load_buffers(method='thread')``.
- ``SPDL pipeline``: SPDL's thread pipeline (``spdl`` on the package index): an
  index source, the sampler's batch built in ``pipe(..., concurrency=nw)``;
  skipped, with a message, when spdl is absent.
- ``Grain mp_prefetch``: Grain (``grain``): a shuffled ``MapDataset`` of transformed
  samples, ``batch``, ``to_iter_dataset().mp_prefetch(num_workers=nw)``; skipped,
  with a message, when grain is absent.
- ``SeqTools 1.4.1 prefetch process``: upstream's ``prefetch(method='process',
  shm_size=...)`` over the same batch sequence, run by this file in the interpreter
  named by ``--upstream-python`` (a subprocess started by ``_upstream.Child``; it
  has no ``load_buffers``).
- ``torch DataLoader``: ``num_workers`` 0, 1 and 2 over a ``Dataset`` whose item is
  the transformed sample, ``batch_size=B``, random sampling with replacement,
  default collate, ``torch.set_num_threads(1)``; skipped if torch is absent.
- ``ceiling threads`` / ``ceiling processes`` (workloads with a per-sample
  transform: W2): the sampler's batches made by two plain threads
  (``threading.Thread``) or two bare ``multiprocessing`` processes, each drawing
  indices and augmentations from its own ``np.random.default_rng()``, ``np.stack``
  collate, and dropped where they are made: the work of the two-worker rows
  without a loader's hand-over or per-sample generators, the rate they approach.
  Rate: the batches made after all workers are warm, over the time until the last
  is done.
- ``memcpy``: ``np.copyto`` of one batch's bytes into a preallocated batch, in one
  thread: the bandwidth reference (loaders whose workers copy in parallel and hand
  batches over without a copy can exceed it).

Each measurement builds its loader, warms it up (untimed: a tenth of N batches, and
at least the dataset's size in samples, so fresh worker processes have mapped the
data), times the next N batches, then closes the loader, so no workers compete with
the next row.
Configurations are interleaved within each repetition; tables give the median rate,
its min-max, and ratios of medians to the upstream row with the same nworkers and to
memcpy, all from this run.

Usage: python benchmarks/bench_peers.py [--workloads W1,W2,W3] [--batches N]
       [--scale F] [--repeats R] [--quick] [--upstream-python PATH|auto] [--out DIR]
"""

import functools
import gc
import inspect
import json
import multiprocessing
import os
import queue
import statistics
import sys
import tempfile
import threading
import time
from contextlib import closing

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import _upstream  # noqa: E402

import seqtools  # noqa: E402  (SeqTools 1.4.1 when run as the upstream child)

MAX_BUFFERED = 10  # prefetch's and load_buffers' window, ours and upstream's
RNG_SEED = 7  # the seed of the per-sample generators in seqtools' rows


def _smap_takes_rng():
    """Whether this seqtools' smap hands ``f`` a generator per item (``rng=``);
    SeqTools 1.4.1's does not."""
    try:
        return "rng" in inspect.signature(seqtools.smap).parameters
    except (TypeError, ValueError):
        return False


SMAP_RNG = _smap_takes_rng()
_held = threading.local()


def worker_rng():
    """The generator of the calling thread, made on its first call in each process
    and thread (a forked worker makes its own rather than continue its parent's
    stream): what a peer's worker holds for the transform's draws."""
    pid = os.getpid()
    held = getattr(_held, "rng", None)
    if held is None or held[0] != pid:
        held = _held.rng = (pid, np.random.default_rng())
    return held[1]


def _with_worker_rng(transform, sample):
    return transform(sample, worker_rng())


def _np_collate(samples):
    """The workloads' collate: ``np.stack`` per field of (array, label) samples.

    ``list`` first: this seqtools' ``batch`` hands ``collate_fn`` a lazy view (SeqTools
    1.4.1 a list), and reading a view of ``smap`` twice runs the transform twice.
    """
    samples = list(samples)
    return (np.stack([s[0] for s in samples]), np.stack([s[1] for s in samples]))


class Workload:
    """Files, dataset view, per-sample transform and batch size of one workload."""

    name = title = ""
    batch_size = 0
    default_batches = 0
    transform = None  # per-sample function transform(sample, rng), or None

    def make(self, workdir):
        raise NotImplementedError

    def open(self, workdir):
        raise NotImplementedError

    def samples(self, dataset, idx, rng=None):
        """The view of transformed samples at ``idx``.

        The transform draws from a generator per sample given by seqtools,
        ``smap(transform, ..., rng=rng)``, when ``rng`` (a seed) is given and this
        seqtools' smap takes one; else from the generator of the thread reading
        the sample (:func:`worker_rng`).
        """
        view = seqtools.gather(dataset, idx)
        if self.transform is None:
            return view
        if rng is not None and SMAP_RNG:
            return seqtools.smap(self.transform, view, rng=rng)
        return seqtools.smap(functools.partial(_with_worker_rng, self.transform),
                             view)

    def batches(self, dataset, n, seed=0, fused=False, rng=None):
        """A sequence of ``n`` batches over shuffled epochs (prefetch's input),
        collated by np.stack per field or, ``fused``, by ``seqtools.stack``; ``rng``
        as in :meth:`samples` (sample ``j`` of the sequence draws from its own
        generator)."""
        shuffle = np.random.default_rng(seed)
        need = n * self.batch_size
        order = np.concatenate(
            [shuffle.permutation(len(dataset))
             for _ in range(-(-need // len(dataset)))]
        )[:need]
        return seqtools.batch(self.samples(dataset, order, rng), self.batch_size,
                              drop_last=True,
                              collate_fn=seqtools.stack if fused else _np_collate)


class Sampler:
    """Random minibatch sampler of a workload: gather, transform, collate.

    seqtools' sampler: indices from numpy's global RandomState (one draw per
    batch), the transform's draws from a generator per sample, given by seqtools
    (``smap(..., rng=[RNG_SEED, k])`` in call ``k``). ``own_rng``: the ceiling rows'
    sampler, indices and draws from the calling thread's own generator
    (:func:`worker_rng`), so that its threads share no state.
    """

    def __init__(self, workload, dataset, fused=False, own_rng=False):
        self.workload = workload
        self.dataset = dataset
        self.fused = fused
        self.own_rng = own_rng
        self._calls = 0  # calls made outside a loader's workers

    def _call_seed(self):
        """Seed of this call's per-sample generators: ``[RNG_SEED, k]``, ``k`` the
        call's index in a load_buffers worker, else the sampler's own count."""
        k = seqtools.call_index()
        if k is None:  # called in the loop, by one thread
            k = self._calls
            self._calls += 1
        return [RNG_SEED, k]

    def __call__(self):
        wl = self.workload
        if self.own_rng:
            idx = worker_rng().integers(0, len(self.dataset), wl.batch_size)
            samples = wl.samples(self.dataset, idx)
        else:
            idx = np.random.choice(len(self.dataset), wl.batch_size)
            samples = wl.samples(self.dataset, idx, None if wl.transform is None
                                 else self._call_seed())
        if self.fused:
            return seqtools.stack(samples)
        return _np_collate(list(samples))


class W1(Workload):
    name = "W1"
    title = "seed workload: 64 x (248,) float64 + int label, from memmapped chunks"
    batch_size = 64
    default_batches = 600

    def make(self, workdir):
        _common.make_seed_dataset(workdir)

    def open(self, workdir):
        chunks, labels = _common.load_seed_dataset(workdir)
        return seqtools.collate([seqtools.concatenate(chunks), labels])[:-10000]


class MemmapWorkload(Workload):
    """A workload over one memory-mapped ``.npy`` file of rows and its labels,
    written ``step`` rows at a time from the generator seeded with ``seed``."""

    rows_file = labels_file = ""
    shape = ()  # of the rows file
    dtype = None
    seed = step = n_labels = 0

    def random_rows(self, rng, shape):
        raise NotImplementedError

    def make(self, workdir):
        rng = np.random.default_rng(self.seed)
        rows = np.lib.format.open_memmap(
            os.path.join(workdir, self.rows_file), mode="w+", dtype=self.dtype,
            shape=self.shape)
        for lo in range(0, len(rows), self.step):
            rows[lo:lo + self.step] = self.random_rows(
                rng, rows[lo:lo + self.step].shape)
        rows.flush()
        del rows
        np.save(os.path.join(workdir, self.labels_file),
                rng.integers(0, self.n_labels, self.shape[0]))

    def open(self, workdir):
        rows = np.load(os.path.join(workdir, self.rows_file), mmap_mode="r")
        labels = np.load(os.path.join(workdir, self.labels_file))
        return seqtools.collate([rows, labels])


IMG_N, IMG_SIDE, CROP = 3000, 128, 112
MEAN = (np.array([0.485, 0.456, 0.406], np.float32) * 255).reshape(3, 1, 1)
INV_STD = (1 / (np.array([0.229, 0.224, 0.225], np.float32) * 255)).reshape(3, 1, 1)


def augment(sample, rng):
    """W2's per-sample transform, drawing from the generator ``rng``: random crop,
    random flip, normalised float32."""
    image, label = sample
    top, left = rng.integers(0, IMG_SIDE - CROP + 1, size=2)
    crop = image[:, top:top + CROP, left:left + CROP]
    if rng.integers(2):
        crop = crop[:, :, ::-1]
    return (crop.astype(np.float32) - MEAN) * INV_STD, label


class W2(MemmapWorkload):
    name = "W2"
    title = (f"image-like: 128 x (3,{IMG_SIDE},{IMG_SIDE}) uint8 -> crop {CROP}, "
             "flip, normalised float32, per sample in Python")
    batch_size = 128
    default_batches = 40
    transform = staticmethod(augment)
    rows_file, labels_file = "images.npy", "image_labels.npy"
    shape, dtype = (IMG_N, 3, IMG_SIDE, IMG_SIDE), np.uint8
    seed, step, n_labels = 1, 500, 1000

    def random_rows(self, rng, shape):
        return rng.integers(0, 256, shape, dtype=np.uint8)


ROW_N, ROW_SHAPE = 384, (512, 512)  # float32: 1 MiB per row


class W3(MemmapWorkload):
    name = "W3"
    title = "large rows: 16 x (512,512) float32 (1 MiB) + int label, no transform"
    batch_size = 16
    default_batches = 150
    rows_file, labels_file = "rows.npy", "row_labels.npy"
    shape, dtype = (ROW_N, *ROW_SHAPE), np.float32
    seed, step, n_labels = 2, 64, 10

    def random_rows(self, rng, shape):
        return rng.random(shape, dtype=np.float32)


WORKLOADS = {w.name: w for w in (W1(), W2(), W3())}


def batch_nbytes(batch):
    return sum(np.asarray(a).nbytes for a in batch)


def warmup_count(n, dataset_len=0, batch_size=1):
    """Untimed batches before a measurement: a tenth of it, and at least one pass
    over the dataset's size, so that fresh worker processes have mapped the data."""
    return max(5, n // 10, -(-dataset_len // batch_size))


# -- Timed loops: each builds its loader, warms it up, times n batches, closes it ----


def _time_next(get, warm, n):
    for _ in range(warm):
        get()
    t0 = time.perf_counter()
    for _ in range(n):
        get()
    return n / (time.perf_counter() - t0)


def run_inline(sampler, warm, n):
    return _time_next(sampler, warm, n)


def run_prefetch(workload, dataset, warm, n, nworkers, method, fused=False):
    loader = seqtools.prefetch(workload.batches(dataset, warm + n, fused=fused,
                                                rng=RNG_SEED),
                               nworkers=nworkers, method=method,
                               max_buffered=MAX_BUFFERED)
    try:
        it = iter(range(warm + n))
        return _time_next(lambda: loader[next(it)], warm, n)
    finally:
        loader.close()  # workers stop now, not when the view is collected


def run_load_buffers(sampler, warm, n, nworkers, method="process"):
    extra = {"method": method} if method != "process" else {}  # 1.4.1 has none
    loader = seqtools.load_buffers(sampler, max_cached=MAX_BUFFERED, nworkers=nworkers,
                                   **extra)
    try:
        return _time_next(loader.__next__, warm, n)
    finally:
        loader.close()


def run_spdl(workload, dataset, warm, n, nworkers):
    """SPDL's thread pipeline: index batches in, the workload's batch built by
    ``nworkers`` threads (gather, transform, np.stack per field), in completion
    order, as load_buffers yields."""
    from spdl.pipeline import PipelineBuilder

    def indices():
        while True:
            yield np.random.choice(len(dataset), workload.batch_size)

    def load(idx):
        return _np_collate(workload.samples(dataset, idx))

    pipeline = (PipelineBuilder().add_source(indices())
                .pipe(load, concurrency=nworkers)
                .add_sink(MAX_BUFFERED).build(num_threads=nworkers))
    with pipeline.auto_stop():
        it = iter(pipeline)
        return _time_next(lambda: next(it), warm, n)


class _Samples:
    """Map-style dataset (Grain's source, torch's Dataset): item i is the
    transformed sample i, drawn from the reading worker's generator."""

    def __init__(self, workload, dataset):
        self.transform = workload.transform
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        sample = self.dataset[i]
        if self.transform is None:
            return sample
        return self.transform(sample, worker_rng())


def run_grain(workload, dataset, warm, n, nworkers):
    """Grain: a shuffled MapDataset of samples, batched (np.stack per field), its
    iterator prefetched by ``nworkers`` processes (``mp_prefetch``)."""
    import grain

    epochs = -(-(warm + n) * workload.batch_size // len(dataset)) + 1
    ds = (grain.MapDataset.source(_Samples(workload, dataset)).shuffle(seed=0)
          .repeat(epochs).batch(workload.batch_size, drop_remainder=True)
          .to_iter_dataset()
          .mp_prefetch(grain.MultiprocessingOptions(num_workers=nworkers,
                                                    per_worker_buffer_size=2)))
    it = iter(ds)
    try:
        return _time_next(lambda: next(it), warm, n)
    finally:
        close = getattr(it, "close", None) or getattr(it, "stop", None)
        if close is not None:
            close()


def run_torch(workload, dataset, warm, n, nworkers):
    import warnings

    from torch.utils.data import DataLoader, RandomSampler

    # default_collate warns once that memory-mapped (read-only) rows make read-only
    # tensors; it then stacks them into a new tensor, so the warning does not apply.
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    ds = _Samples(workload, dataset)
    sampler = RandomSampler(ds, replacement=True,
                            num_samples=(warm + n) * workload.batch_size)
    loader = DataLoader(ds, batch_size=workload.batch_size, sampler=sampler,
                        num_workers=nworkers, drop_last=True)
    it = iter(loader)
    try:
        return _time_next(lambda: next(it), warm, n)
    finally:
        if hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()  # what its __del__ does; now, not at collection


def _ceiling_worker(sampler, warm, n, go, report):
    """A ceiling worker (thread or process): ``warm`` batches, "warm" reported,
    then, once ``go`` is set, ``n`` batches, "done" reported (or the error)."""
    try:
        for _ in range(warm):
            sampler()
        report.put("warm")
        go.wait()
        for _ in range(n):
            sampler()
        report.put("done")
    except BaseException as e:  # noqa: B036 (reported to the parent, whatever it is)
        report.put(f"failed: {e!r}")


def _collect(report, workers, what):
    """Wait for every worker's ``what`` report; a worker that stops without
    reporting is an error (no wait outlives the workers)."""
    pending = len(workers)
    while pending:
        try:
            msg = report.get(timeout=1)
        except queue.Empty:
            if sum(w.is_alive() for w in workers) < pending:
                raise RuntimeError(f"a ceiling worker ended before {what!r}") from None
            continue
        if msg != what:
            raise RuntimeError(f"ceiling worker: {msg}")
        pending -= 1


def run_ceiling(workload, dataset, warm, n, nworkers, kind):
    """The ceiling sampler (its own generator in each thread) in ``nworkers`` plain
    threads (``kind`` "thread") or bare processes ("process", multiprocessing's
    default start method), each making its share of ``warm`` batches, then of
    ``n``: the ``n`` batches over the time from all warm to the last done."""
    sampler = Sampler(workload, dataset, own_rng=True)
    if kind == "thread":
        go, report, make = threading.Event(), queue.Queue(), threading.Thread
    else:
        ctx = multiprocessing.get_context()
        go, report, make = ctx.Event(), ctx.Queue(), ctx.Process
    warm_each = -(-warm // nworkers)
    workers = [make(target=_ceiling_worker, daemon=True,
                    args=(sampler, warm_each, n // nworkers + (w < n % nworkers),
                          go, report))
               for w in range(nworkers)]
    for w in workers:
        w.start()
    try:
        _collect(report, workers, "warm")
        t0 = time.perf_counter()
        go.set()
        _collect(report, workers, "done")
        return n / (time.perf_counter() - t0)
    finally:
        go.set()  # workers waiting after a failure go on, and end
        for w in workers:
            w.join(30)
            if kind == "process" and w.is_alive():
                w.terminate()
                w.join()


def run_memcpy(batch, warm, n):
    src = [np.ascontiguousarray(a) for a in batch]
    dst = [_common.copy_target(a) for a in src]  # away from 4K aliasing

    def copy():
        for d, s in zip(dst, src):
            np.copyto(d, s)

    return _time_next(copy, warm, n)


def upstream_shm_size(workload, dataset):
    """shm_size for upstream prefetch: MAX_BUFFERED slots of one batch (+ margin)."""
    nbytes = batch_nbytes(workload.batches(dataset, 1)[0])
    return MAX_BUFFERED * (nbytes + 64 * 1024)


def child_upstream(spec):
    """In the upstream interpreter: time prefetch(process, shm) on a workload."""
    workload = WORKLOADS[spec["workload"]]
    dataset = workload.open(spec["workdir"])
    n, nworkers, warm = spec["batches"], spec["nworkers"], spec["warmup"]
    batches = workload.batches(dataset, warm + n)
    loader = seqtools.prefetch(batches, nworkers=nworkers, method="process",
                               max_buffered=MAX_BUFFERED,
                               shm_size=upstream_shm_size(workload, dataset))
    it = iter(range(warm + n))

    def get():
        x = loader[next(it)]
        del x  # upstream's shm slots come back when results are dropped

    rate = _time_next(get, warm, n)
    _upstream.reply({"rate": rate,
                     "shapes": [list(np.shape(a)) for a in batches[0]]})


def run_upstream(python, workload, workdir, warm, n, nworkers, expect_shapes, log):
    spec = {"workload": workload.name, "workdir": workdir, "batches": n,
            "warmup": warm, "nworkers": nworkers}
    try:
        with closing(_upstream.Child(python, "bench_peers:child_upstream",
                                     spec)) as child:
            info = child.read()
    except _upstream.ChildFailed as e:
        log(f"upstream row failed: {e}")
        return None
    if info["shapes"] != expect_shapes:
        raise SystemExit(
            f"upstream batches differ: {info['shapes']} != {expect_shapes}")
    run_upstream.version = child.hello["version"]
    return info["rate"]


run_upstream.version = None


# -- One workload: its configurations, interleaved ----------------------------------


def measure(workload, workdir, n, repeats, upstream_python, log):
    """Rates of every configuration on ``workload``: (rows, notes, batch bytes)."""
    dataset = workload.open(workdir)
    sampler = Sampler(workload, dataset)
    batch = sampler()
    nbytes = batch_nbytes(batch)
    shapes = [list(np.shape(a)) for a in batch]
    notes = []
    warm = warmup_count(n, len(dataset), workload.batch_size)
    fused = hasattr(seqtools, "stack")
    fused_sampler = Sampler(workload, dataset, fused=True) if fused else None
    if fused:
        got = fused_sampler()
        assert [list(a.shape) for a in got] == shapes, "stack(gather) batch differs"
    else:
        notes.append("stack(gather) rows skipped: this seqtools has no seqtools.stack")
    mini = None
    if hasattr(seqtools, "minibatches"):
        # With a transform (W2), sample i draws from a generator of its own, the
        # same at each draw (the epoch smap(rng=) mixes in is 0 outside
        # seqtools.epochs): other draws, the same work.
        source = (dataset if workload.transform is None
                  else seqtools.smap(workload.transform, dataset, rng=RNG_SEED))
        mini = seqtools.minibatches(source, workload.batch_size, seed=0)
        got = mini()
        assert [list(a.shape) for a in got] == shapes, "minibatches batch differs"
    else:
        notes.append("minibatches rows skipped: this seqtools has no "
                     "seqtools.minibatches")
    has_torch = _common.available("torch")
    if not has_torch:
        notes.append("torch DataLoader rows skipped: torch is not importable")
    has_spdl = _common.available("spdl.pipeline")
    if not has_spdl:
        notes.append("SPDL rows skipped: spdl is not importable (pip install spdl)")
    has_grain = _common.available("grain")
    if not has_grain:
        notes.append("Grain rows skipped: grain is not importable (pip install grain)")
    threaded = "method" in inspect.signature(seqtools.load_buffers).parameters
    if not threaded:
        notes.append("load_buffers thread rows skipped: this seqtools's load_buffers "
                     "has no method='thread'")
    if not upstream_python:
        notes.append("SeqTools 1.4.1 rows skipped: pass --upstream-python PATH "
                     "or auto")

    # (key, loader family, nworkers, what it runs, fn or None when skipped)
    rows = [("inline", "inline", 0, "sampler called in the loop, np.stack collate",
             lambda: run_inline(sampler, warm, n))]
    rows.append(("inline stack(gather)", "inline stack(gather)", 0,
                 "sampler called in the loop, seqtools.stack over the samples view",
                 (lambda: run_inline(fused_sampler, warm, n)) if fused else None))
    rows.append(("inline minibatches", "inline minibatches", 0,
                 "seqtools.minibatches(dataset, B) called in the loop",
                 (lambda: run_inline(mini, warm, n)) if mini else None))
    for k in (1, 2):
        rows += [
            (f"prefetch thread nw={k}", "prefetch thread", k,
             "seqtools.prefetch(batch(smap(transform, gather)), method='thread')",
             lambda k=k: run_prefetch(workload, dataset, warm, n, k, "thread")),
            (f"prefetch process nw={k}", "prefetch process", k,
             "seqtools.prefetch(batch(smap(transform, gather)), method='process')",
             lambda k=k: run_prefetch(workload, dataset, warm, n, k, "process")),
            (f"prefetch thread stack nw={k}", "prefetch thread stack", k,
             "seqtools.prefetch(batch(..., collate_fn=seqtools.stack), "
             "method='thread')",
             (lambda k=k: run_prefetch(workload, dataset, warm, n, k, "thread",
                                       fused=True)) if fused else None),
            (f"prefetch process stack nw={k}", "prefetch process stack", k,
             "seqtools.prefetch(batch(..., collate_fn=seqtools.stack), "
             "method='process')",
             (lambda k=k: run_prefetch(workload, dataset, warm, n, k, "process",
                                       fused=True)) if fused else None),
            (f"load_buffers nw={k}", "load_buffers", k,
             "seqtools.load_buffers(sampler), np.stack collate",
             lambda k=k: run_load_buffers(sampler, warm, n, k)),
            (f"load_buffers stack(gather) nw={k}", "load_buffers stack(gather)", k,
             "seqtools.load_buffers(sampler), seqtools.stack(gather/smap view)",
             (lambda k=k: run_load_buffers(fused_sampler, warm, n, k))
             if fused else None),
            (f"load_buffers minibatches nw={k}", "load_buffers minibatches", k,
             "seqtools.load_buffers(seqtools.minibatches(dataset, B))",
             (lambda k=k: run_load_buffers(mini, warm, n, k)) if mini else None),
            (f"load_buffers thread minibatches nw={k}",
             "load_buffers thread minibatches", k,
             "seqtools.load_buffers(seqtools.minibatches(dataset, B), "
             "method='thread')",
             (lambda k=k: run_load_buffers(mini, warm, n, k, "thread"))
             if mini and threaded else None),
            (f"SPDL pipeline nw={k}", "SPDL pipeline", k,
             "spdl PipelineBuilder: index source, pipe(load batch, concurrency=nw), "
             "num_threads=nw",
             (lambda k=k: run_spdl(workload, dataset, warm, n, k))
             if has_spdl else None),
            (f"Grain mp_prefetch nw={k}", "Grain mp_prefetch", k,
             "grain MapDataset.source.shuffle.repeat.batch, to_iter_dataset()"
             ".mp_prefetch(num_workers=nw)",
             (lambda k=k: run_grain(workload, dataset, warm, n, k))
             if has_grain else None),
            (f"SeqTools 1.4.1 prefetch process nw={k}",
             "SeqTools 1.4.1 prefetch process", k,
             "upstream prefetch(batch(smap(transform, gather)), method='process', "
             "shm_size)",
             (lambda k=k: run_upstream(upstream_python, workload, workdir, warm, n, k,
                                       shapes, log)) if upstream_python else None),
        ]
    for k in (0, 1, 2):
        rows.append((f"torch DataLoader nw={k}", "torch DataLoader", k,
                     "DataLoader(Dataset of transformed samples, batch_size, "
                     "RandomSampler, default collate)",
                     (lambda k=k: run_torch(workload, dataset, warm, n, k))
                     if has_torch else None))
    if workload.transform is not None:  # the per-sample Python work's ceiling
        rows += [
            ("ceiling threads nw=2", "ceiling threads", 2,
             "the sampler in 2 plain threading.Threads, each its own "
             "np.random.default_rng, np.stack collate, nothing handed over",
             lambda: run_ceiling(workload, dataset, warm, n, 2, "thread")),
            ("ceiling processes nw=2", "ceiling processes", 2,
             "the sampler in 2 bare multiprocessing processes, each its own "
             "np.random.default_rng, np.stack collate, nothing handed over",
             lambda: run_ceiling(workload, dataset, warm, n, 2, "process")),
        ]
    rows.append(("memcpy", "memcpy", 0,
                 "np.copyto of one batch's bytes, 1 thread (bandwidth reference)",
                 lambda: run_memcpy(batch, warm, n)))

    def collected(fn):
        def run():
            try:
                return fn()
            finally:
                gc.collect()  # loaders and their results go before the next row
        return run

    configs = [(key, collected(fn)) for key, _, _, _, fn in rows if fn is not None]
    results = _common.interleaved(
        configs, repeats, progress=lambda s: log(f"{workload.name} {s}"))
    table = [
        {"key": key, "family": family, "nworkers": k, "runs": what,
         "rates": results.get(key, [])}
        for key, family, k, what, _ in rows
    ]
    return table, notes, nbytes, warm


def ratio(a, b):
    if not (a and b):
        return ""
    r = a / b
    return f"{r:.2f}x" if r >= 0.1 else f"{r:.2g}x"


def markdown(workload, table, nbytes, warm, n, repeats):
    """The workload's table: medians, min-max, MB/s, ratios to upstream and memcpy."""
    med = {r["key"]: statistics.median(r["rates"]) for r in table if r["rates"]}
    memcpy = med.get("memcpy")
    lines = [
        f"**{workload.name}** {workload.title}; {nbytes / 1e6:.2f} MB per batch, "
        f"{warm} untimed then {n} timed batches per measurement, {repeats} "
        "interleaved repetitions.",
        "",
        "| configuration | runs | batches/s median | min-max | MB/s | "
        "vs SeqTools 1.4.1 same nw | vs memcpy |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in table:
        if not r["rates"]:
            lines.append(f"| {r['key']} | {r['runs']} | skipped | | | | |")
            continue
        m = med[r["key"]]
        up = med.get(f"SeqTools 1.4.1 prefetch process nw={r['nworkers']}")
        vs_up = ratio(m, up) if r["nworkers"] and not r["family"].startswith(
            ("SeqTools", "torch", "SPDL", "Grain", "ceiling")) else ""
        lines.append(
            f"| {r['key']} | {r['runs']} | {m:,.1f} | "
            f"{min(r['rates']):,.1f}-{max(r['rates']):,.1f} | "
            f"{m * nbytes / 1e6:,.0f} | {vs_up} | {ratio(m, memcpy)} |")
    pairs = [(f"prefetch thread stack nw={k}", f"prefetch process stack nw={k}")
             for k in (1, 2)]
    pairs += [(f"load_buffers thread minibatches nw={k}",
               f"load_buffers minibatches nw={k}") for k in (1, 2)]
    found = [(a, b) for a, b in pairs if med.get(a) and med.get(b)]
    if found:
        lines += ["", "Thread workers against process workers, same work, this run: "
                  + "; ".join(f"{a} / {b.split(' nw=')[0]} = {ratio(med[a], med[b])}"
                              for a, b in found) + "."]
    ceiling = [(f"{ours} nw=2", f"ceiling {kind} nw=2")
               for ours, kind in (("prefetch thread", "threads"),
                                  ("prefetch thread stack", "threads"),
                                  ("load_buffers thread minibatches", "threads"),
                                  ("prefetch process", "processes"),
                                  ("load_buffers", "processes"))]
    found = [(a, b) for a, b in ceiling if med.get(a) and med.get(b)]
    if found:
        lines += ["", "Against the ceiling (two plain threads or processes making the "
                  "same batches, handing none over), this run: "
                  + "; ".join(f"{a} / {b.split(' nw=')[0]} = {ratio(med[a], med[b])}"
                              for a, b in found) + "."]
    return "\n".join(lines)


def main(argv=None):
    parser = _common.parser(__doc__, repeats=3, batches="W1 600, W2 40, W3 150")
    parser.add_argument("--workloads", default="W1,W2,W3",
                        help="comma-separated subset of W1,W2,W3")
    args = _common.parse_args(parser, argv)
    args.repeats = _common.repeats(args, 3)

    names = [w.strip() for w in args.workloads.split(",") if w.strip()]
    for name in names:
        if name not in WORKLOADS:
            parser.error(f"unknown workload {name!r}; choose from {list(WORKLOADS)}")
    if _common.available("torch"):
        import torch

        torch.set_num_threads(1)  # as in DataLoader workers; one thread per core

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    info = _common.machine_info(upstream_python=args.upstream_python)
    monitor = _common.LoadMonitor()
    report = {"machine": info, "workloads": {}}
    sections = []
    with tempfile.TemporaryDirectory(prefix="seqtools-peers-") as workdir:
        for name in names:
            wl = WORKLOADS[name]
            n = _common.batches(args, wl.default_batches)
            sub = os.path.join(workdir, name)
            os.mkdir(sub)
            log(f"{name}: writing data")
            wl.make(sub)
            wl_load = _common.LoadMonitor()
            table, notes, nbytes, warm = measure(wl, sub, n, args.repeats,
                                                 args.upstream_python, log)
            others = wl_load.summary().get("others_share")
            if others is not None:
                notes.append(f"other processes took {others:.0%} of the machine "
                             "while this workload ran")
            report["workloads"][name] = {"title": wl.title, "batch_bytes": nbytes,
                                         "batches": n, "warmup": warm,
                                         "repeats": args.repeats,
                                         "rows": table, "notes": notes}
            section = markdown(wl, table, nbytes, warm, n, args.repeats)
            if notes:
                section += "\n\n" + "\n".join(f"- {x}" for x in notes)
            sections.append(section)
            print(section + "\n", flush=True)
    if run_upstream.version:
        report["machine"]["upstream seqtools"] = run_upstream.version
    text = "\n\n".join(sections)
    report["load"] = monitor.summary()
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "peers.json"), "w") as f:
            json.dump(report, f, indent=1)
        with open(os.path.join(args.out, "peers.md"), "w") as f:
            machine = _common.machine_markdown(report["machine"], report["load"])
            f.write(f"{machine}\n\n{text}\n")
        wrote = "peers.md, peers.json"
        if _common.available("matplotlib"):
            _common.plot_workers(report, os.path.join(args.out, "peers.png"))
            wrote += ", peers.png"
        else:
            log("peers.png skipped: matplotlib is not installed (pip install "
                "'.[bench]')")
        log(f"wrote {args.out}/{wrote}")
    return report


if __name__ == "__main__":
    main()
