"""The workers' allocation hook: large arrays built in shared memory, sent uncopied.

In a worker, numpy places large allocations of the task's code in ring blocks of
the worker's own (seqtools/_ring.pyx). A result array that nothing else references
then crosses to the parent in its block, with no copy; every other such array keeps
its block until numpy frees it. These tests check the values the parent gets in
every case where that choice matters (kept, shared, viewed, resized, failed, killed,
forked, threaded), and that the hook did what it claims, from the worker's own
counters (``_testing.hook_stats()``), returned with each result.

Worker functions live at module level so that spawn/forkserver children can import
them.
"""

import importlib
import os
import signal
import threading
import time

import numpy as np
import pytest
from conftest import shm_leftovers, shm_listing

import seqtools
from seqtools import EvaluationError, _testing
from seqtools.loaders import _worker

METHODS = ["fork", "spawn", "forkserver"]
SHAPE = (64, 300)  # 150 KiB of float64: above the hook's threshold


@pytest.fixture(autouse=True)
def no_shm_leak():
    before = shm_listing()
    yield
    assert shm_leftovers(before) == []


def stats():
    """This worker's hook counters, and its pid (``run`` adds them up per worker)."""
    s = _testing.hook_stats()
    return np.array([s["hooked"], s["adopted"], s["live"], s["adopted_alive"],
                     os.getpid()])


def numpy_handler_api():
    """numpy's ``get_handler_name``, the Python face of its allocation-handler C API
    (NEP 49, numpy >= 1.22, what the hook is built on); None where numpy has none.

    ``numpy._core`` first: numpy 2 warns when ``numpy.core`` is imported.
    """
    for name in ("numpy._core.multiarray", "numpy.core.multiarray"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        return getattr(module, "get_handler_name", None)
    return None


def draw():
    return float(np.random.randint(1, 2**30))


def check(x, v, shape=SHAPE):
    assert x.shape == shape
    assert (x == v).all(), f"expected every value {v}, got {np.unique(x)[:5]}"


class Fresh:
    """A new large array each call (np.full: numpy's malloc), with small ones."""

    def __call__(self):
        v = draw()
        return np.full(SHAPE, v), np.full(8, v), v, stats()


class HandlerName:
    """A new large array, with the name of the numpy handler that allocated it
    (None where numpy cannot tell) and whether seqtools installed its hook here."""

    def __call__(self):
        v = draw()
        x = np.full(SHAPE, v)
        get_handler_name = numpy_handler_api()
        name = None if get_handler_name is None else get_handler_name(x)
        return x, v, name, _testing.hook_stats()["installed"], stats()


class DictResult:
    def __call__(self):
        v = draw()
        return {"x": np.full(SHAPE, v), "v": v, "stats": stats()}


class KeepsLast:
    """Keeps what it returns; reports whether what it kept last time changed."""

    def __init__(self):
        self.last = None
        self.last_v = None

    def __call__(self):
        intact = self.last is None or bool((self.last == self.last_v).all())
        v = draw()
        x = np.full(SHAPE, v)
        self.last, self.last_v = x, v
        return x, v, intact, stats()


class SharedAndViews:
    """The same array twice, a view of it and a transposed view."""

    def __call__(self):
        v = draw()
        x = np.full(SHAPE, v)
        return x, x, x[:10], x.T, v, stats()


class Cached:
    """Builds a large table on its second call (the ring is sized by then, so the
    table is built in it) and returns it from then on."""

    def __init__(self):
        self.table = None
        self.n = 0

    def __call__(self):
        self.n += 1
        if self.n == 1:
            v = draw()
            return np.full(SHAPE, v), v, stats()
        if self.table is None:
            self.v = draw()
            self.table = np.full(SHAPE, self.v)
        return self.table, self.v, stats()


class FailsSometimes:
    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1
        v = draw()
        x = np.full(SHAPE, v)
        if self.n % 3 == 0:
            raise ValueError(f"unlucky {x.shape}")
        return x, v, stats()


class KillsOnce:
    def __init__(self, flag):
        self.flag = flag

    def __call__(self):
        v = draw()
        x = np.full(SHAPE, v)
        if not os.path.exists(self.flag):
            open(self.flag, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return x, v, stats()


class Resizes:
    """Grows one array and shrinks another in place (numpy's realloc)."""

    def __call__(self):
        v = draw()
        grown = np.full(SHAPE, v)
        grown.resize((2 * SHAPE[0], SHAPE[1]), refcheck=False)
        grown[SHAPE[0]:] = v
        shrunk = np.full(SHAPE, v)
        shrunk.resize((SHAPE[0] // 2, SHAPE[1]), refcheck=False)
        return grown, shrunk, v, stats()


class Forks:
    """Forks a child that drops its copy of an array built in shared memory."""

    def __call__(self):
        v = draw()
        x = np.full(SHAPE, v)
        pid = os.fork()
        if pid == 0:
            del x
            os._exit(0)
        os.waitpid(pid, 0)
        return x, v, stats()


class Threaded:
    """The large array comes from another thread."""

    def __call__(self):
        v = draw()
        out = []
        t = threading.Thread(target=lambda: out.append(np.full(SHAPE, v)))
        t.start()
        t.join()
        return out[0], v, stats()


def settled_kept(it, most, settle=5.0):
    """Kept blocks once the workers have filled the window and gone idle (at once
    if there are no more than ``most``).

    A worker waiting for space for its result (the ring fragmented by the results
    the test held) legitimately holds the blocks of that result: the loop then
    takes a result, as a training loop would.
    """
    ring = it._engine.pool.ring
    deadline = time.monotonic() + settle
    while True:
        s = ring.stats()
        if s["kept"] <= most or time.monotonic() > deadline:
            return s["kept"]
        if s["space_waiters"]:
            next(it)
        time.sleep(0.05)


def run(sampler, n, check_one, nworkers=2, max_cached=4, kept_each=0, **kw):
    """Check ``n`` results, holding some for a while to check they stay intact;
    returns the hook counters (hooked, adopted, live, adopted_alive) of every
    worker process that produced a result, each worker's latest, added up.

    Per worker, not the last result's: a worker that started late (spawn on a
    loaded machine) may give the last result as its first, before it adopted any.

    ``kept_each``: arrays each worker's code keeps between calls (in kept blocks
    of the ring): once the workers are idle, no other block may be kept.
    """
    held = []
    latest = {}  # worker pid -> its counters in its latest result
    with seqtools.load_buffers(sampler, max_cached=max_cached, nworkers=nworkers,
                               **kw) as it:
        for _ in range(n):
            r = next(it)
            check_one(r)
            counters = r[-1] if not isinstance(r, dict) else r["stats"]
            latest[int(counters[-1])] = counters[:-1]
            held.append(r)
            if len(held) == 3:  # (the ring holds max_cached + 4 results)
                for h in held:  # results held across later ones are unchanged
                    check_one(h)
                held = held[-1:]
        del held, r
        # Idle workers keep nothing but what their code keeps: every other
        # block went to the parent with a result or back to the ring.
        assert settled_kept(it, kept_each * nworkers) <= kept_each * nworkers
    return sum(latest.values())


@pytest.mark.parametrize("method", METHODS)
def test_large_result_crosses_in_place(method):
    def one(r):
        x, small, v, _ = r
        check(x, v)
        check(small, v, (8,))

    hooked, adopted, live, adopted_alive = run(Fresh(), 150, one, start_method=method)
    assert adopted > 0  # the hook did its work ...
    assert adopted_alive == 0  # ... and the worker kept nothing it handed over
    assert hooked >= adopted


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_hook_is_used_exactly_when_numpy_has_the_handler_api(method):
    # The build needs numpy >= 1.23 (NEP 49 is 1.22), so today the API is always
    # there; a build that could do without it must still say so truthfully.
    has_api = numpy_handler_api() is not None
    installed, names = set(), []

    def one(r):
        x, v, name, hook_installed, _ = r
        check(x, v)
        installed.add(hook_installed)
        names.append(name)

    hooked, adopted, _, adopted_alive = run(HandlerName(), 40, one,
                                            start_method=method)
    assert installed == {has_api}, f"hook installed: {installed}, numpy API: {has_api}"
    if has_api:
        # Results really were built by numpy in the ring, and crossed uncopied.
        assert "seqtools_ring" in names, f"numpy's handlers: {set(names)}"
        assert adopted > 0 and hooked >= adopted and adopted_alive == 0
    else:
        assert hooked == 0 and adopted == 0


def test_dict_result_crosses_in_place():
    def one(r):
        check(r["x"], r["v"])

    assert run(DictResult(), 100, one)[1] > 0


def test_result_the_worker_also_keeps_is_copied():
    def one(r):
        x, v, intact, _ = r
        check(x, v)
        assert intact, "an array the worker kept changed under it"

    hooked, adopted, _, _ = run(KeepsLast(), 150, one, kept_each=1)
    assert adopted == 0 and hooked > 0


def test_shared_arrays_and_views_are_copied():
    def one(r):
        x, x2, head, xt, v, _ = r
        check(x, v)
        check(x2, v)
        check(head, v, (10, SHAPE[1]))
        check(xt, v, SHAPE[::-1])
        assert not np.shares_memory(x, x2)  # each a copy, in the result's block

    hooked, adopted, _, _ = run(SharedAndViews(), 100, one)
    assert adopted == 0 and hooked > 0


def test_cached_array_returned_every_call_stays_intact():
    values = set()

    def one(r):
        table, v, _ = r
        check(table, v)
        values.add(v)

    hooked, adopted, live, _ = run(Cached(), 200, one, kept_each=1)
    assert hooked > 0
    assert adopted <= 2  # each worker's first batch, perhaps, never the table
    assert len(values) <= 4  # a first batch and then one table, per worker


def test_failing_sampler_gives_its_blocks_back():
    errors = 0
    with seqtools.load_buffers(FailsSometimes(), max_cached=4, nworkers=2) as it:
        good = 0
        while good < 120:
            try:
                x, v, _ = next(it)
            except EvaluationError as e:
                assert "unlucky" in str(e)
                errors += 1
                continue
            check(x, v)
            good += 1
        del x
        assert settled_kept(it, 0) == 0
    assert errors > 0


def test_killed_worker_gives_its_blocks_back(tmp_path):
    def one(r):
        x, v, _ = r
        check(x, v)

    run(KillsOnce(str(tmp_path / "flag")), 60, one)
    assert (tmp_path / "flag").exists()


def test_resized_arrays_keep_their_values():
    def one(r):
        grown, shrunk, v, _ = r
        check(grown, v, (2 * SHAPE[0], SHAPE[1]))
        check(shrunk, v, (SHAPE[0] // 2, SHAPE[1]))

    run(Resizes(), 100, one)


def test_forked_child_does_not_touch_the_ring():
    def one(r):
        x, v, _ = r
        check(x, v)

    assert run(Forks(), 40, one)[1] > 0


def test_other_threads_allocate_privately():
    def one(r):
        x, v, _ = r
        check(x, v)

    hooked, adopted, _, _ = run(Threaded(), 60, one)
    assert hooked == 0 and adopted == 0


def test_hook_can_be_turned_off(monkeypatch):
    monkeypatch.setattr(_worker, "ALLOC_HOOK", False)  # inherited by fork

    def one(r):
        x, small, v, _ = r
        check(x, v)

    hooked, adopted, _, _ = run(Fresh(), 40, one, start_method="fork")
    assert hooked == 0 and adopted == 0


def item(i):
    return np.full(SHAPE, float(i)), i


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_prefetch_large_items_cross_in_place(method):
    seq = seqtools.smap(item, range(80))
    with seqtools.prefetch(seq, nworkers=2, method="process", max_buffered=4,
                           start_method=method) as p:
        prev = None
        for i in range(80):
            x, j = p[i]
            assert j == i
            check(x, float(i))
            if prev is not None:
                check(*prev)  # the one before is still intact
            prev = x, float(i)
