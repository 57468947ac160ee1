"""Thread safety, and free-threaded CPython (3.13t): the GIL stays off, and views,
stacking and loaders give exact results when many threads use them at once.

The stress tests run on every build; they matter most with the GIL off, where the
threads really run at the same time. Each starts its threads together (a Barrier)
and compares every result, bit for bit, with a reference computed beforehand on
one thread or with numpy. No timing is asserted: the timeout is a safety net.

The loader tests at the end run per-sample Python work in the thread workers (an
image augmentation drawn from each sample's own generator), the work that thread
workers run at once only with the GIL off.
"""

import inspect
import os
import subprocess
import sys
import sysconfig
import threading
from types import SimpleNamespace

import numpy as np
import pytest

import seqtools
from seqtools.loaders.epochs import epoch_order
from seqtools.views.mapping import sample_rng

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
NTHREADS = 8
EXTENSIONS = ["views._indexing", "views._indexmaps", "batching._stack", "loaders._ring",
              "loaders._transport", "loaders._copypool", "storage._objmap",
              "_testing"]


def run_threads(work, n=NTHREADS):
    """Run ``work(t)`` on ``n`` threads started together; their results in order.

    The first exception raised by a thread is raised again here.
    """
    barrier = threading.Barrier(n)
    results = [None] * n
    errors = []

    def target(t):
        try:
            barrier.wait()
            results[t] = work(t)
        except BaseException as e:  # noqa: B036 (reported below, whatever it is)
            errors.append(e)
            barrier.abort()

    threads = [threading.Thread(target=target, args=(t,), name=f"stress-{t}")
               for t in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(100)
    assert not any(t.is_alive() for t in threads), "a stress thread hung"
    if errors:  # the first real error, not another thread's broken barrier
        real = [e for e in errors if not isinstance(e, threading.BrokenBarrierError)]
        raise (real or errors)[0]
    return results


def same(a, b):
    """Bit-exact equality of two items: arrays (dtype, shape, bytes), scalars, or
    tuples and lists of them."""
    if isinstance(a, (tuple, list)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(same(x, y) for x, y in zip(a, b)))
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def double_plus(x, y):
    """Module level, so that process workers can unpickle views that use it."""
    return x * 2 + y


@pytest.fixture
def data(tmp_path, rng):
    """Rows of shape (3, 5) in parts (numpy arrays and a memory-mapped .npy file),
    their concatenation in memory, and labels that are the row numbers."""
    parts = [rng.standard_normal((m, 3, 5)).astype(np.float32) for m in (97, 1, 250)]
    path = tmp_path / "rows.npy"
    np.save(path, rng.standard_normal((189, 3, 5)).astype(np.float32))
    parts.append(np.load(path, mmap_mode="r"))
    full = np.concatenate(parts)
    labels = np.arange(len(full), dtype=np.int64)
    dataset = seqtools.collate([seqtools.concatenate(parts), labels])
    return SimpleNamespace(parts=parts, full=full, labels=labels, dataset=dataset,
                           n=len(full))


def check_batch(data, batch):
    """A stacked batch ``(x, y)`` of the dataset: the rows ``x`` are rows ``y``."""
    x, y = batch
    assert y.dtype == np.int64 and y.ndim == 1
    assert ((y >= 0) & (y < data.n)).all()
    assert same(x, data.full[y])


# -- the GIL stays off ---------------------------------------------------------------


@pytest.mark.skipif(not FREE_THREADED, reason="a GIL build: the GIL is always on")
def test_import_leaves_the_gil_disabled():
    # In a new interpreter outside the checkout (the installed package), with the
    # GIL left to its default: importing a module that does not declare
    # free-threading support would turn it on (with a RuntimeWarning).
    code = ("import sys, importlib, seqtools\n"
            f"for m in {EXTENSIONS!r}:\n"
            "    importlib.import_module('seqtools.' + m)\n"
            "print(seqtools.__file__)\n"
            "print(sys._is_gil_enabled())\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHON_GIL", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-W", "error::RuntimeWarning", "-c", code],
                          cwd="/", env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    where, gil = proc.stdout.splitlines()
    assert gil == "False", (where, proc.stderr)


# -- views ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_views_read_by_threads_at_once(data, rng):
    perm = rng.permutation(data.n)
    gathered = seqtools.gather(data.dataset, perm)
    views = {
        "gather": gathered,
        "slice": gathered[7:-5:3],
        "smap": seqtools.smap(double_plus, seqtools.concatenate(data.parts),
                              data.labels),
        "batch": seqtools.batch(gathered, 16, collate_fn=seqtools.stack),
        "cycle": seqtools.cycle(gathered[:50], limit=170),
        "memmap": seqtools.gather(data.parts[-1], perm[perm < len(data.parts[-1])]),
    }
    # References: one thread, and numpy where it is direct.
    refs = {name: [v[i] for i in range(len(v))] for name, v in views.items()}
    assert all(same(refs["gather"][i], (data.full[p], data.labels[p]))
               for i, p in enumerate(perm))
    assert all(same(refs["smap"][i], data.full[i] * 2 + data.labels[i])
               for i in range(data.n))
    names = sorted(views)
    seeds = rng.integers(2**32, size=NTHREADS)

    def work(t):
        r = np.random.default_rng(seeds[t])
        for _ in range(300):
            name = names[r.integers(len(names))]
            view, ref = views[name], refs[name]
            n = len(ref)
            i = int(r.integers(-n, n))
            assert same(view[i], ref[i]), (name, i)
            start, stop = sorted(int(x) for x in r.integers(0, n, size=2))
            step = int(r.integers(1, 4))
            part = view[start:stop:step]  # a new view, made by many threads at once
            assert len(part) == len(ref[start:stop:step])
            for j, item in enumerate(part):
                assert same(item, ref[start + j * step]), (name, start, step, j)

    run_threads(work)


@pytest.mark.timeout(120)
def test_shared_iterator_hands_out_each_item_once():
    # One iterator of a slice (a compiled reader's) shared by all the threads, its
    # items cheap so that the threads' next() calls overlap: each item must come
    # out once. (On 3.13t, without a lock on the position, some came out twice in
    # some of the runs.)
    n = 200_000
    view = seqtools.gather(list(range(n)), np.arange(n))[1:]
    for _ in range(4):
        it = iter(view)
        got = run_threads(lambda t, it=it: [x for x in it])
        assert sorted(x for items in got for x in items) == list(range(1, n))


# -- stacking ------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_fused_stack_of_gathers_by_threads_at_once(data, rng):
    seeds = rng.integers(2**32, size=NTHREADS)
    for round_ in range(4):
        # A new dataset each round: the threads also race to compile its program
        # and build its stacker on their first batch.
        dataset = seqtools.collate([seqtools.concatenate(data.parts), data.labels])

        def work(t, dataset=dataset, round_=round_):
            r = np.random.default_rng(seeds[t] + round_)
            out = (np.empty((24, 3, 5), np.float32), np.empty(24, np.int64))
            for k in range(120):
                idx = r.integers(0, data.n, size=int(r.integers(1, 40)))
                x, y = seqtools.stack(seqtools.gather(dataset, idx))
                assert same(x, np.stack([data.full[i] for i in idx]))
                assert same(y, data.labels[idx])
                if k % 4 == 0:  # into the thread's own output arrays
                    idx = r.integers(0, data.n, size=24)
                    res = seqtools.stack(seqtools.gather(dataset, idx), out=out)
                    assert res is out
                    assert same(out, (data.full[idx], data.labels[idx]))
            return True

        assert all(run_threads(work))


@pytest.mark.timeout(120)
def test_stacked_batches_and_plain_stack_by_threads_at_once(data, rng):
    perm = rng.permutation(data.n)
    batches = seqtools.batch(seqtools.gather(data.dataset, perm), 32,
                             collate_fn=seqtools.stack)
    refs = [(data.full[perm[k:k + 32]], data.labels[perm[k:k + 32]])
            for k in range(0, data.n, 32)]
    samples = [(data.full[i], {"label": int(data.labels[i]), "w": 0.5 * i})
               for i in range(64)]
    seeds = rng.integers(2**32, size=NTHREADS)

    def work(t):
        r = np.random.default_rng(seeds[t])
        for _ in range(100):
            k = int(r.integers(len(refs)))
            assert same(batches[k], refs[k])
            lo = int(r.integers(0, 60))
            x, d = seqtools.stack(samples[lo:])  # item by item (a list)
            assert same(x, data.full[lo:64])
            assert same(d["label"], data.labels[lo:64])
            assert same(d["w"], 0.5 * np.arange(lo, 64))

    run_threads(work)


@pytest.mark.timeout(120)
def test_minibatch_sampler_shared_by_threads(data):
    sampler = seqtools.minibatches(data.dataset, 16, seed=1234)

    def work(t):
        drawn = []
        for _ in range(60):
            batch = sampler()
            check_batch(data, batch)
            drawn.append(batch[1].tobytes())
        return drawn

    drawn = [y for ys in run_threads(work) for y in ys]
    assert len(set(drawn)) == len(drawn)  # no batch handed out twice


# -- loaders -------------------------------------------------------------------------


def prefetched_view(data):
    return seqtools.smap(double_plus, seqtools.concatenate(data.parts), data.labels)


def fused_batches(data, rng):
    """Batches of 16 stacked rows in a shuffled order: the loaders' copy-thread
    path (copy jobs of stacking.copy_job run by the native copy threads)."""
    order = rng.permutation(data.n)
    return seqtools.batch(seqtools.gather(data.dataset, order), 16,
                          collate_fn=seqtools.stack)


@pytest.mark.parametrize("items", ["transformed samples", "fused batches"])
@pytest.mark.timeout(120)
def test_thread_prefetch_one_per_thread(data, rng, items):
    # fused batches: the copy-thread path (_copypool.CopyPool), a pool per thread
    view = (prefetched_view(data)[:300] if items == "transformed samples"
            else fused_batches(data, rng))
    ref = [view[i] for i in range(len(view))]

    def work(t):
        with seqtools.prefetch(view, nworkers=2, method="thread",
                               max_buffered=8) as p:
            for i, item in enumerate(p):
                assert same(item, ref[i]), i
        return True

    assert all(run_threads(work))


@pytest.mark.parametrize("method", ["thread", "process"])
@pytest.mark.timeout(120)
def test_one_prefetch_shared_by_threads(data, method):
    view = prefetched_view(data)[:200]
    ref = [view[i] for i in range(len(view))]
    chunk = len(ref) // NTHREADS
    with seqtools.prefetch(view, nworkers=2, method=method, max_buffered=4) as p:

        def work(t):
            # Each thread reads its own run of items in order: the reads of the
            # threads interleave, which restarts the prefetching again and again.
            for i in range(t * chunk, (t + 1) * chunk):
                assert same(p[i], ref[i]), i
            return True

        assert all(run_threads(work))


@pytest.mark.timeout(120)
def test_one_copy_thread_prefetch_shared_by_threads(data, rng):
    view = fused_batches(data, rng)
    ref = [view[i] for i in range(len(view))]
    with seqtools.prefetch(view, nworkers=2, method="thread", max_buffered=4) as p:

        def work(t):
            # interleaved runs of reads: the items ahead are dropped mid-copy
            # again and again
            for i in range(t, len(ref), NTHREADS):
                assert same(p[i], ref[i]), i
            return True

        assert all(run_threads(work))


def consume_shared(loader, data, per_thread=40):
    """Eight threads take batches from one loader; each batch is checked, and none
    may come twice."""

    def work(t):
        drawn = []
        for _ in range(per_thread):
            batch = next(loader)
            check_batch(data, batch)
            drawn.append(batch[1].tobytes())
            del batch  # its shared-memory blocks go back, from this thread
        return drawn

    drawn = [y for ys in run_threads(work) for y in ys]
    assert len(drawn) == NTHREADS * per_thread
    assert len(set(drawn)) == len(drawn)


@pytest.mark.timeout(120)
def test_one_load_buffers_shared_by_threads(data):
    sampler = seqtools.minibatches(data.dataset, 16, seed=99)
    with seqtools.load_buffers(sampler, max_cached=4, nworkers=2) as loader:
        consume_shared(loader, data)


@pytest.mark.skipif("method" not in inspect.signature(seqtools.load_buffers).parameters,
                    reason="load_buffers has no thread workers (method=) yet")
@pytest.mark.timeout(120)
def test_one_thread_load_buffers_shared_by_threads(data):
    # The worker threads share the sampler too.
    sampler = seqtools.minibatches(data.dataset, 16, seed=7)
    with seqtools.load_buffers(sampler, max_cached=4, nworkers=2,
                               method="thread") as loader:
        consume_shared(loader, data)


# -- thread loaders running per-sample Python work -----------------------------------

SIDE, CROP, B = 12, 8, 8  # images (3, SIDE, SIDE) uint8, crops CROP x CROP, batches
MEAN = np.array([124, 116, 104], np.float32).reshape(3, 1, 1)
INV_STD = (1 / np.array([58, 57, 57], np.float32)).reshape(3, 1, 1)
COLLATE = {"np.stack": np.stack, "seqtools.stack": seqtools.stack}


def augment(image, rng):
    """Per-sample Python work of an image pipeline, drawn from the generator
    ``rng``: a random crop, a random horizontal flip, float32 normalised by
    channel."""
    top, left = rng.integers(0, SIDE - CROP + 1, size=2)
    crop = image[:, top:top + CROP, left:left + CROP]
    if rng.integers(2):
        crop = crop[:, :, ::-1]
    return (crop.astype(np.float32) - MEAN) * INV_STD


@pytest.fixture
def images(tmp_path, rng):
    """100 random uint8 images in a memory-mapped .npy file, and labels that are
    their numbers."""
    path = tmp_path / "images.npy"
    np.save(path, rng.integers(0, 256, (100, 3, SIDE, SIDE), dtype=np.uint8))
    imgs = np.load(path, mmap_mode="r")
    return SimpleNamespace(imgs=imgs, labels=np.arange(len(imgs), dtype=np.int64),
                           n=len(imgs))


@pytest.mark.parametrize("sharing", ["one per thread", "one shared"])
@pytest.mark.parametrize("collate", sorted(COLLATE))
@pytest.mark.timeout(120)
def test_thread_prefetch_of_augmented_batches(images, rng, collate, sharing):
    # Indices with repeats: an image at several positions gets each position's own
    # draws. The last batch is shorter (398 = 49 * 8 + 6).
    idx = rng.integers(0, images.n, size=398)
    seed = int(rng.integers(2**32))
    view = seqtools.batch(
        seqtools.smap(augment, seqtools.gather(images.imgs, idx), rng=seed), B,
        collate_fn=COLLATE[collate])
    # References made sample by sample, without views or loaders: position j of
    # the smap view draws from sample_rng(seed, j) (epoch 0 outside
    # seqtools.epochs).
    refs = [np.stack([augment(images.imgs[idx[j]], sample_rng(seed, j))
                      for j in range(lo, min(lo + B, len(idx)))])
            for lo in range(0, len(idx), B)]
    assert len(view) == len(refs)
    assert all(same(view[k], refs[k]) for k in range(len(refs)))  # inline reads

    if sharing == "one per thread":
        def work(t):
            with seqtools.prefetch(view, nworkers=2, method="thread",
                                   max_buffered=8) as p:
                n = 0
                for k, got in enumerate(p):
                    assert same(got, refs[k]), k
                    n += 1
            assert n == len(refs)
            return True

        assert all(run_threads(work))
    else:
        with seqtools.prefetch(view, nworkers=2, method="thread",
                               max_buffered=4) as p:

            def work(t):
                # interleaved reads: the batches made ahead are dropped again and
                # again, mid-augmentation
                for k in range(t, len(refs), NTHREADS):
                    assert same(p[k], refs[k]), k
                return True

            assert all(run_threads(work))


class AugmentingSampler:
    """A load_buffers sampler doing per-sample Python work: call ``k`` draws its
    images and their crops and flips from a generator seeded with (seed, k), ``k``
    the call's index (:func:`seqtools.call_index`), so that the batch of call ``k``
    is the same whichever worker thread makes it, and made inline by ``make(k)``.
    Its result carries ``k``."""

    def __init__(self, imgs, seed):
        self.imgs, self.seed = imgs, seed

    def make(self, k):
        r = np.random.default_rng([self.seed, k])
        idx = r.integers(0, len(self.imgs), size=B)
        return np.stack([augment(self.imgs[i], r) for i in idx]), idx, k

    def __call__(self):
        return self.make(seqtools.call_index())  # None (outside a worker) raises


@pytest.mark.skipif("method" not in inspect.signature(seqtools.load_buffers).parameters,
                    reason="load_buffers has no thread workers (method=) yet")
@pytest.mark.parametrize("ordered", [False, True])
@pytest.mark.timeout(120)
def test_one_thread_load_buffers_of_augmented_batches_shared_by_threads(
        images, rng, ordered):
    sampler = AugmentingSampler(images.imgs, int(rng.integers(2**32)))
    per_thread, max_cached = 25, 4
    total = NTHREADS * per_thread
    # Unordered, a batch taken may be any call handed out: at most max_cached
    # past those taken, well inside these references.
    refs = [sampler.make(k) for k in range(total + 4 * max_cached)]
    with seqtools.load_buffers(sampler, max_cached=max_cached, nworkers=2,
                               method="thread", ordered=ordered) as loader:

        def work(t):
            calls = []
            for _ in range(per_thread):
                got = next(loader)
                k = got[2]
                assert 0 <= k < len(refs), k
                assert same(got, refs[k]), k
                calls.append(k)
            return calls

        calls = run_threads(work)
    drawn = sorted(k for ks in calls for k in ks)
    assert len(set(drawn)) == total  # no call's batch handed out twice
    if ordered:  # calls in order: the first ones, each thread's in its order
        assert drawn == list(range(total))
        assert all(ks == sorted(ks) for ks in calls)


@pytest.mark.parametrize("sharing", ["one per thread", "one shared"])
@pytest.mark.timeout(120)
def test_thread_epochs_of_augmented_samples(images, rng, sharing):
    seed, aug_seed = (int(s) for s in rng.integers(2**32, size=2))
    dataset = seqtools.collate(
        [seqtools.smap(augment, images.imgs, rng=aug_seed), images.labels])
    num_epochs = 4
    # References made sample by sample, without views or loaders: each epoch's
    # order, cut in batches of B (and a shorter last one: 100 = 12 * 8 + 4),
    # sample i of epoch e drawing from sample_rng(aug_seed, i, e).
    refs = []
    for epoch in range(num_epochs):
        order = epoch_order(images.n, seed, epoch)
        for lo in range(0, images.n, B):
            ids = order[lo:lo + B]
            refs.append((np.stack([augment(images.imgs[i],
                                           sample_rng(aug_seed, i, epoch))
                                   for i in ids]), images.labels[ids]))

    def loader():
        return seqtools.epochs(dataset, B, seed=seed, num_epochs=num_epochs,
                               rank=0, world_size=1, nworkers=2, method="thread")

    if sharing == "one per thread":
        def work(t):
            with loader() as batches:
                got = list(batches)
            assert len(got) == len(refs)
            for k, batch in enumerate(got):
                assert same(batch, refs[k]), k
            return True

        assert all(run_threads(work))
        return
    # One loader drained by all the threads: each batch is handed out once, to one
    # thread, and each thread gets its batches in the stream's order.
    where = {x.tobytes() + y.tobytes(): k for k, (x, y) in enumerate(refs)}
    assert len(where) == len(refs)
    with loader() as shared:

        def work(t):
            ks = []
            for batch in shared:
                k = where.get(batch[0].tobytes() + batch[1].tobytes())
                assert k is not None, "a batch that is not the reference's"
                assert same(batch, refs[k]), k
                ks.append(k)
            return ks

        calls = run_threads(work)
    assert sorted(k for ks in calls for k in ks) == list(range(len(refs)))
    assert all(ks == sorted(ks) for ks in calls)
