"""Thread safety, and free-threaded CPython (3.13t): the GIL stays off, and views,
stacking and loaders give exact results when many threads use them at once.

The stress tests run on every build; they matter most with the GIL off, where the
threads really run at the same time. Each starts its threads together (a Barrier)
and compares every result, bit for bit, with a reference computed beforehand on
one thread or with numpy. No timing is asserted: the timeout is a safety net.
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

FREE_THREADED = bool(sysconfig.get_config_var("Py_GIL_DISABLED"))
NTHREADS = 8
EXTENSIONS = ["views._indexing", "views._indexmaps", "batching._stack", "loaders._ring",
              "loaders._transport", "loaders._copypool", "_testing"]


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
