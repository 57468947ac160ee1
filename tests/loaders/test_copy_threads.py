"""Thread loaders of fused batches: planned in the consumer's thread, copied by a
pool of native threads (``_copypool.CopyPool``, csrc/copypool.c).

``prefetch(batch(..., collate_fn=stack), method='thread')`` and
``load_buffers(minibatches(...), method='thread')`` take this path; every result is
compared bit for bit with the inline read. The C pool's own tests are in
csrc/test_ringbuf.c (tests/loaders/test_ring.py runs them, under ThreadSanitizer too).
"""

import gc
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest

import seqtools
from seqtools.batching import _stack
from seqtools.errors import EvaluationError
from seqtools.loaders import _copypool
from seqtools.loaders.copies import CopyEngine
from seqtools.loaders.threads import ThreadEngine


def copy_threads():
    """This process's copy threads (csrc/copypool.h names them)."""
    count = 0
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as f:
                count += f.read().strip() == "seqtools-copy"
        except OSError:  # a thread that ended meanwhile
            pass
    return count


def copy_threads_become(n):
    """Wait until this process has ``n`` copy threads (a joined thread's entry
    may linger an instant); the count then. The timeout is a safety net."""
    deadline = time.monotonic() + 30
    while copy_threads() != n and time.monotonic() < deadline:
        time.sleep(0.01)
    return copy_threads()


def dataset(n=500, seed=0):
    rng = np.random.default_rng(seed)
    rows = rng.random((n, 7))
    labels = rng.integers(0, 10, n)
    return seqtools.collate([seqtools.concatenate([rows[:200], rows[200:]]),
                             labels])


def batches(n=500, k=16, **kw):
    order = np.random.default_rng(1).permutation(n)
    return seqtools.batch(seqtools.gather(dataset(n), order), k,
                          collate_fn=seqtools.stack, **kw)


def same(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


@pytest.mark.parametrize("nworkers", [1, 2, 4])
@pytest.mark.parametrize("max_buffered", [1, 3, 10])
def test_prefetch_of_fused_batches_runs_on_copy_threads(nworkers, max_buffered):
    view = batches()
    with seqtools.prefetch(view, nworkers, "thread", max_buffered) as pf:
        assert type(pf._engine) is CopyEngine
        got = list(pf)
    assert len(got) == len(view)
    for b, x in enumerate(got):
        same(x, view[b])
    assert len(got[-1][0]) == 500 % 16  # the short last batch


@pytest.mark.parametrize("array", [
    np.arange(400.0).reshape(100, 4), np.arange(100, dtype=np.int8),
    np.zeros((50, 2), [("a", "i4"), ("b", "f8")]),
    np.arange(90).reshape(30, 3)[:, ::2]])
def test_prefetch_of_batches_of_an_array_runs_on_copy_threads(array):
    view = seqtools.batch(array, 7, collate_fn=seqtools.stack)
    with seqtools.prefetch(view, 2, "thread", 3) as pf:
        assert type(pf._engine) is CopyEngine
        for b in range(len(view)):
            x, y = pf[b], view[b]
            assert type(x) is type(y) and x.dtype == y.dtype and x.shape == y.shape
            assert x.tobytes() == y.tobytes()


def test_prefetch_copy_threads_random_access_and_padded_last_batch():
    view = batches(pad=(np.zeros(7), -1))  # the padded last batch: read in place
    rng = np.random.default_rng(2)
    with seqtools.prefetch(view, 2, "thread", 4) as pf:
        assert type(pf._engine) is CopyEngine
        for i in list(rng.integers(0, len(view), 60)) + [len(view) - 1, -1, 0, 1]:
            same(pf[int(i)], view[int(i)])
        assert (pf[-1][1][500 % 16:] == -1).all()


def test_prefetch_copy_threads_shared_by_threads():
    view = batches()
    expected = [view[b] for b in range(len(view))]
    pf = seqtools.prefetch(view, 2, "thread", 5)
    errors = []

    def read(t):
        try:
            rng = np.random.default_rng(t)
            for i in rng.integers(0, len(view), 200):
                same(pf[int(i)], expected[int(i)])
        except BaseException as e:  # noqa: B036 (reported below)
            errors.append(e)

    threads = [threading.Thread(target=read, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert not errors, errors[0]
    pf.close()


@pytest.mark.parametrize("nworkers", [1, 2, 4])
@pytest.mark.parametrize("ordered", [False, True])
def test_load_buffers_of_minibatches_runs_on_copy_threads(nworkers, ordered):
    data = dataset()
    reference = seqtools.minibatches(data, 32, seed=7)
    expected = [reference() for _ in range(300)]
    sampler = seqtools.minibatches(data, 32, seed=7)
    with seqtools.load_buffers(sampler, 6, nworkers, method="thread",
                               ordered=ordered) as loader:
        assert type(loader._engine) is CopyEngine
        for want in expected:
            got = next(loader)
            same(got, want)
            assert seqtools.call_index() is None


def test_copy_threads_are_not_used_with_a_start_hook_or_other_items():
    hooked = threading.Semaphore(0)

    def hook():
        hooked.release()

    with seqtools.prefetch(batches(), 2, "thread", start_hook=hook) as pf:
        assert type(pf._engine) is ThreadEngine
        pf[0]
        # each worker thread runs the hook (the timeout is a safety net)
        assert hooked.acquire(timeout=60) and hooked.acquire(timeout=60)
    mapped = seqtools.batch(seqtools.smap(lambda x: x, dataset()), 8,
                            collate_fn=seqtools.stack)
    with seqtools.prefetch(mapped, 2, "thread") as pf:
        assert type(pf._engine) is ThreadEngine
        same(pf[3], mapped[3])
    with seqtools.load_buffers(lambda: 1, 2, 2, method="thread") as loader:
        assert type(loader._engine) is ThreadEngine


class FailingPlans:
    """A sampler whose call k is a copy job, except call 2 (an error) and call 3
    (not a copy: read by calling the sampler)."""

    def __init__(self):
        self.src = np.arange(40.0).reshape(10, 4)
        self.sources = _stack.RowSources([(self.src,)])
        self.calls = []

    def _copy_job(self, k):
        if k == 2:
            raise ValueError("no batch 2")
        if k == 3:
            return None
        out = np.empty((2, 4))
        idx = np.array([k % 10, (k + 1) % 10], np.int64)
        return self.sources.job([(None, idx)], [out]), out

    def __call__(self):
        self.calls.append(seqtools.call_index())
        return "read in place"


def test_copy_loader_errors_and_items_read_in_place():
    sampler = FailingPlans()
    loader = seqtools.load_buffers(sampler, 3, 2, method="thread")
    assert type(loader._engine) is CopyEngine
    assert (next(loader) == sampler.src[[0, 1]]).all()
    assert (next(loader) == sampler.src[[1, 2]]).all()
    with pytest.raises(EvaluationError, match=r"call 2\) of load_buffers.*no batch 2"):
        next(loader)
    assert next(loader) == "read in place"
    assert sampler.calls == [3]  # with call_index() set to the call's index
    assert (next(loader) == sampler.src[[4, 5]]).all()
    loader.close()
    with pytest.raises(seqtools.LoaderClosed):
        next(loader)
    seqtools.seterr("passthrough")
    try:
        loader = seqtools.load_buffers(FailingPlans(), 3, 1, method="thread")
        next(loader), next(loader)
        with pytest.raises(ValueError, match="no batch 2"):
            next(loader)
        loader.close()
    finally:
        seqtools.seterr("wrap")


def test_closed_copy_prefetch_refuses_reads():
    pf = seqtools.prefetch(batches(), 2, "thread")
    pf[0]
    pf.close()
    with pytest.raises(ValueError, match="closed"):
        pf[1]


def test_closing_from_another_thread_ends_reads_cleanly():
    # A reader in a loop, the loader closed by another thread: the reader gets
    # the closed loader's answer (LoaderClosed), whatever state its next item's
    # copy was in, and never waits forever.
    big = seqtools.batch(np.random.default_rng(0).random((4000, 512)), 100,
                         collate_fn=seqtools.stack)
    for make, indexed in [
            (lambda: seqtools.prefetch(big, 2, "thread", 8), True),
            (lambda: seqtools.load_buffers(seqtools.minibatches(big._seq, 100, seed=0),
                                           8, 2, method="thread"), False)]:
        for _ in range(20):
            loader = make()
            outcome = []

            def read(loader=loader, outcome=outcome, indexed=indexed):
                try:
                    for i in range(10**6):
                        loader[i % len(big)] if indexed else next(loader)
                except BaseException as e:  # noqa: B036 (checked below)
                    outcome.append(e)

            reader = threading.Thread(target=read)
            reader.start()
            loader.close()
            reader.join(30)
            assert not reader.is_alive()
            assert len(outcome) == 1, outcome
            assert isinstance(outcome[0], seqtools.LoaderClosed), outcome


def test_copy_threads_end_with_their_loader():
    gc.collect()
    before = copy_threads_become(0)
    assert before == 0
    loaders = [seqtools.prefetch(batches(), 3, "thread"),
               seqtools.load_buffers(seqtools.minibatches(dataset(), 8, seed=0), 4, 3,
                                     method="thread")]
    assert copy_threads() == 6
    loaders[0][5], next(loaders[1])
    loaders[0].close()
    assert copy_threads_become(3) == 3
    del loaders
    gc.collect()
    assert copy_threads_become(0) == 0


def test_dropping_a_loader_mid_copy_waits_for_its_copies():
    # Big batches, dropped with every copy queued or running: the copies in
    # flight end before their buffers are released (a crash otherwise, under
    # the sanitizers a report).
    big = seqtools.batch(np.random.default_rng(0).random((4000, 2048)), 500,
                         collate_fn=seqtools.stack)
    for _ in range(5):
        pf = seqtools.prefetch(big, 2, "thread", 8)
        pf[0]
        pf[5]  # restart: the items ahead are dropped mid-copy
        del pf
        gc.collect()


def test_copy_pool_checks():
    with pytest.raises(ValueError, match="nthreads"):
        _copypool.CopyPool(0)
    pool = _copypool.CopyPool(1)
    src = np.arange(12.0).reshape(6, 2)
    sources = _stack.RowSources([(src,)])
    out = np.empty((2, 2))
    job = sources.job([(None, np.array([5, 0], np.int64))], [out])
    with pytest.raises(RuntimeError, match="not submitted"):
        job.wait()
    pool.submit(job)
    with pytest.raises(RuntimeError, match="already"):
        pool.submit(job)
    assert job.wait() and (out == src[[5, 0]]).all()
    with pytest.raises(IndexError, match="out of range"):
        sources.job([(None, np.array([6], np.int64))], [np.empty((1, 2))])
    pool.close()
    with pytest.raises(ValueError, match="closed"):
        pool.submit(sources.job([(None, np.array([1], np.int64))], [np.empty((1, 2))]))


def test_jobs_dropped_while_queued_or_running_are_settled_first():
    # Jobs dropped (here by the garbage collector, held by cyclic garbage) while
    # one runs and others wait: each is taken back from the queue, or its copy
    # waited for, before its buffers go. Then nothing writes to an output once
    # collect() returns, and each output is either untouched or whole.
    src = np.random.default_rng(0).random((4000, 512))
    idx = np.arange(4000, dtype=np.int64)[::-1].copy()
    sources = _stack.RowSources([(src,)])
    pool = _copypool.CopyPool(1)
    outs = [np.zeros_like(src) for _ in range(4)]
    for out in outs:
        job = sources.job([(None, idx)], [out])
        pool.submit(job)
        cycle = [job]
        cycle.append(cycle)
    del job, cycle
    gc.collect()
    seen = [out.copy() for out in outs]
    pool.close()  # joins the thread: a copy still running would end here
    for out, before in zip(outs, seen):
        assert (out == before).all()
        assert (out == 0).all() or (out == src[idx]).all()
    gc.collect()


def test_forked_child_is_told_to_make_its_own_loader(tmp_path):
    script = tmp_path / "fork_child.py"  # run from tmp_path: the installed seqtools
    script.write_text(textwrap.dedent("""
        import os, sys
        import numpy as np, seqtools
        view = seqtools.batch(np.arange(400.0).reshape(100, 4), 10,
                              collate_fn=seqtools.stack)
        pf = seqtools.prefetch(view, 2, "thread")
        assert (pf[0] == view[0]).all()
        pid = os.fork()
        if pid == 0:
            try:
                pf[1]
            except RuntimeError as e:
                os._exit(0 if "create a loader in the child" in str(e) else 3)
            os._exit(4)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert (pf[1] == view[1]).all()  # the parent's loader is untouched
        pf.close()
        print("ok")
    """))
    res = subprocess.run([sys.executable, str(script)], capture_output=True,
                         text=True, timeout=120, cwd=tmp_path)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr


def test_epochs_on_threads_run_on_copy_threads():
    data = dataset()
    inline = seqtools.epochs(data, 24, seed=3, num_epochs=2)
    expected = list(inline)
    with seqtools.epochs(data, 24, seed=3, num_epochs=2, nworkers=2,
                         method="thread") as loader:
        got = [next(loader)]
        assert type(loader._loader._engine) is CopyEngine
        got += list(loader)
    assert len(got) == len(expected) == 2 * loader.batches_per_epoch
    for x, y in zip(got, expected):
        same(x, y)


def slow_copies(**kw):
    """A loader whose every item is a 64 MiB copy on one copy thread: the
    consumer, which does nothing else, waits for each copy."""
    rows = np.random.default_rng(0).random((64, 1 << 17))  # 1 MiB rows
    return rows, seqtools.load_buffers(seqtools.minibatches(rows, 64, seed=0), 2, 1,
                                       method="thread", **kw)


@pytest.mark.timeout(120)
def test_a_copy_past_the_timeout_raises_and_reading_again_retries_it():
    rows, loader = slow_copies(timeout=1e-4)
    assert type(loader._engine) is CopyEngine
    sampler = seqtools.minibatches(rows, 64, seed=0)
    timeouts, got = [], []
    while len(got) < 6:
        try:
            got.append(next(loader))
        except seqtools.LoaderTimeout as e:
            timeouts.append(e)
    loader.close()
    assert timeouts  # the consumer waits for each copy: some waits run past
    e = timeouts[0]
    assert isinstance(e, TimeoutError) and e.seconds > 1e-4
    assert "native copy threads" in str(e) and "timeout=0.0001" in str(e)
    assert f"call {e.index}" in str(e) and __file__ in str(e)
    for x in got:  # each call once, in order, whole
        np.testing.assert_array_equal(x, sampler())


@pytest.mark.timeout(120)
def test_a_copy_stall_is_reported_once_per_wait(caplog):
    caplog.set_level(logging.WARNING, logger="seqtools")
    rows, loader = slow_copies(stall_report=1e-4)
    sampler = seqtools.minibatches(rows, 64, seed=0)
    for _ in range(6):
        np.testing.assert_array_equal(next(loader), sampler())
    loader.close()
    stalls = [r.getMessage() for r in caplog.records
              if "native copy threads" in r.getMessage()]
    assert stalls and all("stall_report=0.0001" in m for m in stalls)
    calls = [m.split(" of the loader")[0] for m in stalls]
    assert len(calls) == len(set(calls))  # once per wait
