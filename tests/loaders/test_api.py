"""prefetch and load_buffers: results, ordering, and every failure path.

Worker functions live at module level so that spawn/forkserver children can import
them. Timeouts here are safety nets against hangs, never performance assertions.
"""

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import pid_alive, shm_leftovers, shm_listing, wait_gone

import seqtools
from seqtools import EvaluationError

METHODS = ["fork", "spawn", "forkserver"]
# For tests reading what workers print: forkserver workers write to the fork
# server's stderr, which pytest's per-test capture does not reach (the server
# outlives the test that started it); spawn behaves the same otherwise.
PRINTING = "spawn" if multiprocessing.get_start_method() == "forkserver" else None


@pytest.fixture(autouse=True)
def no_shm_leak():
    before = shm_listing()
    yield
    assert shm_leftovers(before) == []


class Items:
    """A sequence whose item i is (array filled with i, i); item `bad` raises."""

    def __init__(self, n, bad=None, shape=(3,)):
        self.n, self.bad, self.shape = n, bad, shape

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.bad:
            raise ValueError(f"bad item {i}")
        return np.full(self.shape, i, dtype=np.int64), i


class Killer(Items):
    """Kills its worker on every item listed in `kill`, and once on `once`."""

    def __init__(self, n, kill=(), once=None, flag=None):
        super().__init__(n)
        self.kill, self.once, self.flag = set(kill), once, flag

    def __getitem__(self, i):
        if i in self.kill or (i == self.once and not os.path.exists(self.flag)):
            if i == self.once:
                open(self.flag, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__getitem__(i)


class Endless(seqtools.View):
    """An infinite view: item i is np.arange(3) + i."""

    def __init__(self):
        seqtools.View.__init__(self, None)

    def _get(self, i):
        return np.arange(3) + i


def sample_seeded():
    return np.random.randint(0, 2**31, size=8)


def sample_batch():
    return {"x": np.random.rand(16, 5), "y": np.arange(16), "name": "batch"}


def sample_varying():
    n = np.random.randint(1, 50)
    return np.full((n, 3), n, dtype=np.float32)


def sample_unpicklable():
    return lambda: None


def sample_big():
    return np.ones(1 << 17)


class GrowingSampler:
    """400 KB results, and one of 1.7 MB: more than the ring sized for the first
    ones can hold while the consumer holds one of them."""

    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1
        return np.full(1_700_000 if self.n == 4 else 400_000, self.n, np.uint8)


def sample_in_ring():
    """Builds one array straight in the ring (as seqtools.stack does in workers)."""
    from seqtools.loaders import _transport

    n = np.random.randint(1, 100)
    buf = _transport.out_block(n * 8)
    inplace = np.frombuffer(buf, np.float64, n) if buf is not None else np.empty(n)
    inplace[:] = n
    if n % 7 == 0:
        raise ValueError("unlucky")  # the block must be given back
    return inplace, np.full(3, n)


def failing_sampler():
    raise KeyError("no such sample")


class KeepsItsBatch:
    """Keeps the batch seqtools.stack made in shared memory (self.last = batch)."""

    data = np.arange(400.0).reshape(100, 4)

    def __init__(self):
        self.last = None
        self.n = 0

    def __call__(self):
        prev = None if self.last is None else self.last.copy()
        self.n += 1
        rows = [self.data[(self.n + k) % 100] for k in range(8)]
        self.last = seqtools.stack(rows)
        return self.n, self.last, prev


def sample_slow():
    time.sleep(0.003)
    return np.arange(4)


class Counter:
    """load_buffers sampler returning 0, 1, 2... per worker, tagged by pid."""

    def __init__(self):
        self.n = 0

    def __call__(self):
        self.n += 1
        return np.full(2, self.n), os.getpid()


def failing_hook():
    raise RuntimeError("hook broken")


# -- prefetch ----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["thread", "process"])
def test_prefetch_in_order(method):
    p = seqtools.prefetch(Items(50), nworkers=2, method=method, max_buffered=5)
    assert len(p) == 50
    for i, (a, j) in enumerate(p):
        assert j == i and a.tolist() == [i, i, i]
    p.close()


@pytest.mark.parametrize("method", ["thread", "process"])
def test_prefetch_random_access_restarts(method):
    p = seqtools.prefetch(Items(40), nworkers=2, method=method, max_buffered=3)
    order = [0, 1, 30, 31, 5, -1, 2, 2, 39, 0]
    assert [p[i][1] for i in order] == [range(40)[i] for i in order]
    assert [x[1] for x in p[10:14]] == [10, 11, 12, 13]
    p.close()


@pytest.mark.parametrize("method", ["thread", "process"])
def test_prefetch_infinite(method):
    p = seqtools.prefetch(Endless(), nworkers=2, method=method)
    with pytest.raises(TypeError):
        len(p)
    assert all(p[i].tolist() == [i, i + 1, i + 2] for i in range(20))
    assert p[10**12].tolist() == [10**12, 10**12 + 1, 10**12 + 2]
    p.close()


@pytest.mark.parametrize("max_buffered", [1, 2, 7])
def test_prefetch_process_any_buffer_size(max_buffered):
    p = seqtools.prefetch(Items(25), nworkers=2, method="process",
                          max_buffered=max_buffered)
    assert [x[1] for x in p] == list(range(25))
    p.close()


# -- wake-up coalescing -------------------------------------------------------------
def test_coalesce_waits_for_at_most_the_delay_worth_of_results():
    from seqtools.loaders import process as ev

    assert ev._coalesce(ev.COALESCE_DELAY * 2) == 1  # slow results: one at a time
    assert ev._coalesce(ev.COALESCE_DELAY) == 1
    assert ev._coalesce(ev.COALESCE_DELAY / 3.5) == 3
    assert ev._coalesce(1e-9) == ev.COALESCE_MAX
    assert ev._coalesce(0.0) == ev.COALESCE_MAX


@pytest.mark.parametrize("i, window, end, nready, nworkers, expected", [
    (0, 10, -1, 0, 2, 8),     # unbounded: the window less one task per worker
    (0, 10, 100, 3, 2, 7),    # results that came out of order are not waited for
    (95, 10, 100, 0, 2, 5),   # near the end: only what is left
    (99, 10, 100, 0, 2, 1),   # the last item
    (0, 2, -1, 0, 2, 0),      # no slack: wait for one (next_entry takes >= 1)
    (0, 1, 10, 0, 4, -3),
])
def test_prefetch_slack(i, window, end, nready, nworkers, expected):
    from seqtools.loaders import process as ev

    assert ev._prefetch_slack(i, window, end, nready, nworkers) == expected


@pytest.fixture
def always_coalesce(monkeypatch):
    """Make every pool coalesce as much as it may after its first 2 results."""
    from seqtools.loaders import process as ev

    monkeypatch.setattr(ev, "COALESCE_DELAY", 1e6)
    monkeypatch.setattr(ev, "RATE_EVERY", 2)


@pytest.mark.parametrize("max_buffered", [1, 3, 10])
def test_prefetch_coalesced_delivers_every_item_in_order(always_coalesce, max_buffered):
    p = seqtools.prefetch(Items(300), nworkers=2, method="process",
                          max_buffered=max_buffered)
    assert [x[1] for x in p] == list(range(300))
    assert [p[i][1] for i in (250, 251, 7, 299)] == [250, 251, 7, 299]
    if max_buffered > 2:
        assert p._engine.pool.want > 1  # it did coalesce
    p.close()


@pytest.mark.parametrize("max_cached", [2, 3, 10])
def test_load_buffers_coalesced_loses_nothing(always_coalesce, max_cached):
    with seqtools.load_buffers(Counter(), max_cached=max_cached, nworkers=2) as it:
        seen = {}
        for _ in range(400):
            a, pid = next(it)
            assert a[0] == a[1]
            seen.setdefault(pid, []).append(int(a[0]))
        if max_cached > 2:
            assert it._engine.pool.want > 1
    # each worker's results arrive once each, in the order it made them
    for values in seen.values():
        assert values == list(range(1, len(values) + 1))


def sample_pid_slowly():
    time.sleep(0.005)
    return np.array([os.getpid()])


def test_workers_all_work_when_one_cannot_keep_up():
    # A worker makes 200 results/s, the loop takes 280/s: a refill wakes one
    # worker at a time, so the others must be woken as the queue runs low (the
    # loop waits, or claimable tasks pile up), not left asleep.
    with seqtools.load_buffers(sample_pid_slowly, max_cached=10, nworkers=2) as it:
        pids = []
        for _ in range(300):
            pids.append(int(next(it)[0]))
            time.sleep(0.0035)
    counts = sorted(pids[100:].count(p) for p in set(pids[100:]))
    assert len(counts) == 2 and counts[0] >= 60, counts


def test_slow_results_are_not_coalesced():
    # 3 ms a result from 2 workers: at least 1.5 ms apart, so waiting for a
    # second one would delay the first by more than COALESCE_DELAY.
    with seqtools.load_buffers(sample_slow, max_cached=10, nworkers=2) as it:
        for _ in range(100):
            assert next(it).tolist() == [0, 1, 2, 3]
        assert it._engine.pool.want == 1


@pytest.mark.parametrize("method", ["thread", "process"])
def test_prefetch_worker_error_names_item(method):
    p = seqtools.prefetch(Items(10, bad=4), nworkers=2, method=method)
    got = []
    for i in range(10):
        try:
            got.append(p[i][1])
        except EvaluationError as e:
            got.append("E")
            assert "item 4" in str(e) and "bad item 4" in str(e)
            assert __file__ in str(e)  # where the view was created
    assert got == [0, 1, 2, 3, "E", 5, 6, 7, 8, 9]
    p.close()


def test_prefetch_results_view_shared_memory_and_survive():
    p = seqtools.prefetch(Items(200, shape=(1000,)), nworkers=2, method="process",
                          max_buffered=4)
    kept = [p[i] for i in range(0, 8)]
    for i in range(8, 200):
        assert p[i][1] == i
    # arrays held since the start were never overwritten by later results
    for i, (a, j) in enumerate(kept):
        assert j == i and (a == i).all()
    assert isinstance(kept[0][0].base, np.ndarray) or kept[0][0].base is not None
    p.close()


@pytest.mark.parametrize("start_method", METHODS)
def test_prefetch_start_methods(start_method):
    p = seqtools.prefetch(Items(30), nworkers=2, method="process",
                          start_method=start_method)
    assert [x[1] for x in p] == list(range(30))
    p.close()


def test_prefetch_killed_worker_is_replaced_and_item_kept(tmp_path):
    seq = Killer(30, once=7, flag=str(tmp_path / "flag"))
    p = seqtools.prefetch(seq, nworkers=2, method="process", max_buffered=4)
    assert [x[1] for x in p] == list(range(30))  # nothing lost or duplicated
    p.close()


@pytest.mark.parametrize("kill", [[6], [6, 7]])
def test_prefetch_items_killing_workers_repeatedly_raise(kill):
    # With two such items, each of two workers takes one, dies, and its
    # replacement takes the other: each item's deaths must still add up.
    p = seqtools.prefetch(Killer(20, kill=kill), nworkers=2, method="process",
                          max_buffered=3)
    got = []
    for i in range(20):
        try:
            got.append(p[i][1])
        except EvaluationError as e:
            assert f"item {i} killed 3 worker processes" in str(e)
            got.append("E")
    assert got == ["E" if i in kill else i for i in range(20)]
    p.close()


def kill_self():
    os.kill(os.getpid(), signal.SIGKILL)


def test_load_buffers_sampler_killing_every_worker_raises():
    with seqtools.load_buffers(kill_self, nworkers=2) as it:
        for _ in range(2):  # and again: an error, not a hang
            with pytest.raises(EvaluationError, match="killed 3 worker processes"):
                next(it)


def test_prefetch_bad_arguments():
    with pytest.raises(ValueError, match="method"):
        seqtools.prefetch([1], method="fiber")
    with pytest.raises(ValueError, match="max_buffered"):
        seqtools.prefetch([1], max_buffered=0)
    with pytest.raises(TypeError, match="sequence"):
        seqtools.prefetch(iter([1, 2]))
    with pytest.raises(ValueError, match="shm_size"):
        seqtools.prefetch([1], method="process", shm_size=-1)
    with pytest.raises(TypeError, match="picklable"):
        seqtools.prefetch([lambda x: x], method="process", start_method="spawn")


class OneLarge:
    """Items of 90 kB, but item 25 is 700 kB, and every 7th item is slow."""

    def __len__(self):
        return 60

    def __getitem__(self, i):
        if i % 7 == 3:
            time.sleep(0.002)
        return np.full((700_000 if i == 25 else 90_000) // 8, i, dtype=np.int64)


def test_prefetch_large_item_behind_results_computed_ahead():
    # While item 25 waits for 700 kB of contiguous space, the other worker
    # computes items 26-34 ahead; their 90 kB results, held by the prefetch for
    # later, filled 1.5 MB and the ring stalled with a BufferError blaming the
    # user. They are now moved out of the ring, and every item arrives.
    p = seqtools.prefetch(OneLarge(), nworkers=2, method="process",
                          max_buffered=10, shm_size=1_500_000)
    for i, x in enumerate(p):
        assert x.shape == ((700_000 if i == 25 else 90_000) // 8,)
        assert (x == i).all()
    p.close()


def test_prefetch_result_larger_than_shm_size():
    p = seqtools.prefetch(Items(3, shape=(10000,)), nworkers=1, method="process",
                          shm_size=4096)
    with pytest.raises(EvaluationError, match="larger shm_size"):
        p[0]
    p.close()


def test_prefetch_non_array_results():
    data = [{"name": f"s{i}", "tags": ["a", i]} for i in range(10)]
    p = seqtools.prefetch(data, nworkers=2, method="process")
    assert list(p) == data
    p.close()


# -- load_buffers --------------------------------------------------------------------
def test_load_buffers_structure():
    with seqtools.load_buffers(sample_batch, max_cached=3, nworkers=2) as it:
        for _ in range(20):
            b = next(it)
            assert set(b) == {"x", "y", "name"} and b["name"] == "batch"
            assert b["x"].shape == (16, 5) and b["y"].tolist() == list(range(16))


@pytest.mark.parametrize("start_method", METHODS)
def test_load_buffers_workers_seeded_differently(start_method):
    with seqtools.load_buffers(sample_seeded, max_cached=4, nworkers=2,
                               start_method=start_method) as it:
        draws = [tuple(next(it)) for _ in range(40)]
    assert len(set(draws)) == len(draws)


def test_load_buffers_varying_shapes():
    with seqtools.load_buffers(sample_varying, max_cached=4, nworkers=2) as it:
        for _ in range(200):
            a = next(it)
            assert a.shape[1] == 3 and (a == a.shape[0]).all()


def test_load_buffers_arrays_built_in_ring_are_not_copied():
    with seqtools.load_buffers(sample_in_ring, max_cached=4, nworkers=2) as it:
        ring = it._engine.pool.ring
        held, errors, good = [], 0, 0
        while good < 300:
            try:
                a, b = next(it)
            except EvaluationError as e:
                assert "unlucky" in str(e)
                errors += 1
                continue
            n = len(a)
            assert (a == n).all() and (b == n).all()
            good += 1
            held.append((a, b))
            if len(held) % 7 == 0:
                held = held[-3:]
        assert errors > 0
        del held, a, b
        s = ring.stats()
        # only blocks of results still in flight remain; none leaked by failures
        assert s["reserved"] + s["committed"] + s["popped"] <= 2 * (4 + 2 + 4)


def test_load_buffers_worker_keeping_a_shared_batch_is_warned_and_made_safe(capfd):
    with seqtools.load_buffers(KeepsItsBatch(), max_cached=4, nworkers=1,
                               start_method=PRINTING) as it:
        for _ in range(60):
            n, batch, prev = next(it)
            expected = [KeepsItsBatch.data[(n + k) % 100] for k in range(8)]
            np.testing.assert_array_equal(batch, expected)
            # From the third call on, what it kept is in its own memory.
            if n >= 3:
                np.testing.assert_array_equal(
                    prev, [KeepsItsBatch.data[(n - 1 + k) % 100] for k in range(8)])
    err = capfd.readouterr().err
    assert "code kept an array that seqtools.stack" in err
    assert err.count("kept an array") == 1  # once: then it stacks privately


def test_worker_keeping_a_shared_batch_is_told_once_even_when_idle(capfd):
    # shm_size: the ring is sized up front, so the first batch is made at once;
    # the worker then polls for a task, idle, while the loop sleeps.
    with seqtools.load_buffers(KeepsItsBatch(), max_cached=1, nworkers=1,
                               shm_size=1 << 20, start_method=PRINTING) as it:
        time.sleep(0.5)
        next(it)
        next(it)
    assert capfd.readouterr().err.count("kept an array") == 1


def test_load_buffers_sampler_error():
    it = seqtools.load_buffers(failing_sampler, nworkers=1)
    with pytest.raises(EvaluationError, match="(?s)failing_sampler.*no such sample"):
        next(it)
    it.close()


def test_load_buffers_start_hook_error():
    it = seqtools.load_buffers(sample_seeded, nworkers=2, start_hook=failing_hook)
    with pytest.raises(EvaluationError, match="(?s)start_hook.*hook broken"):
        next(it)
    it.close()


def test_load_buffers_unpicklable_result():
    with seqtools.load_buffers(sample_unpicklable, nworkers=1) as it:
        with pytest.raises(EvaluationError, match="cannot be sent"):
            next(it)


def test_load_buffers_consumer_holding_every_buffer_gets_clear_error():
    # the ring grows while the loop keeps results, up to shm_budget: past it,
    # the error says so
    with seqtools.load_buffers(sample_big, max_cached=2, nworkers=2,
                               shm_budget=4 << 20) as it:
        held = []
        with pytest.raises(BufferError, match="(?s)still referenced.*shm_budget"):
            for _ in range(100):
                held.append(next(it))
        assert all((a == 1).all() for a in held)  # nothing was overwritten
        del held
        assert next(it).sum() == 1 << 17  # and it recovers once they are dropped


def test_load_buffers_grows_its_ring_for_a_larger_result():
    with seqtools.load_buffers(GrowingSampler(), max_cached=2, nworkers=1) as it:
        first = next(it)
        capacity = it._engine.pool.ring.capacity
        got = [first] + [next(it) for _ in range(7)]
        assert [a.size for a in got] == [400_000] * 3 + [1_700_000] + [400_000] * 4
        for n, a in enumerate(got, 1):
            assert (a == n).all()
        assert it._engine.pool.ring.capacity > capacity


def test_load_buffers_of_fixed_shm_size_does_not_grow():
    with seqtools.load_buffers(GrowingSampler(), max_cached=2, nworkers=1,
                               shm_size=2_100_000) as it:
        with pytest.raises(BufferError, match="less than the 1700.* bytes a worker"):
            for _ in range(8):
                a = next(it)
        del a


def test_load_buffers_killed_worker_is_replaced():
    with seqtools.load_buffers(sample_seeded, max_cached=2, nworkers=2) as it:
        next(it)
        victim = it._engine.pool.procs[0]
        os.kill(victim.pid, signal.SIGKILL)
        deadline = time.monotonic() + 30  # a safety net; replacement takes < 1 s
        while it._engine.pool.procs[0] is victim and time.monotonic() < deadline:
            next(it)
        now = it._engine.pool.procs[0]
        assert now is not victim and now.is_alive()
        for _ in range(20):
            next(it)


def test_load_buffers_close_stops_workers():
    it = seqtools.load_buffers(sample_seeded, nworkers=2)
    next(it)
    pids = [p.pid for p in it._engine.pool.procs]
    it.close()  # joined: gone at once, and their Process objects closed
    assert not any(pid_alive(pid) for pid in pids)
    with pytest.raises(seqtools.LoaderClosed):
        next(it)


def test_load_buffers_bad_arguments():
    with pytest.raises(TypeError, match="callable"):
        seqtools.load_buffers(42)
    with pytest.raises(ValueError, match="max_cached"):
        seqtools.load_buffers(sample_seeded, max_cached=0)
    with pytest.raises(TypeError, match="nworkers"):
        seqtools.load_buffers(sample_seeded, nworkers=1.5)


def test_load_buffers_memory_is_flat():
    def rss():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    with seqtools.load_buffers(sample_batch, max_cached=4, nworkers=2) as it:
        for _ in range(2000):
            next(it)
        before = rss()
        for _ in range(20000):
            next(it)
        growth = rss() - before
    assert growth < 8 << 20, f"resident memory grew by {growth} bytes"


# -- the process dies or is interrupted ---------------------------------------------
SCRIPT = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    import seqtools

    # Ctrl-C raises KeyboardInterrupt, as in a terminal, whatever this process
    # inherited: run as a background job of a non-interactive shell (a CI script
    # started with `&`), it starts with SIGINT ignored, and Python then leaves
    # it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    def sample():
        return np.random.rand(8, 8)

    it = seqtools.load_buffers(sample, max_cached=2, nworkers=2)
    next(it)
    try:  # from here on, Ctrl-C must end in the except clause below
        print(" ".join(str(p.pid) for p in it._engine.pool.procs), flush=True)
        if sys.argv[1] == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        while True:
            next(it)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
        sys.exit(3)
""")


def _signal_state(pid):
    """The SigBlk/SigIgn/SigCgt lines of /proc/<pid>/status, for a failure message."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return " ".join(line.strip() for line in f if line.startswith("Sig"))
    except OSError as e:
        return str(e)


@pytest.mark.parametrize("how", ["die", "interrupt"])
def test_workers_exit_with_parent(tmp_path, how):
    script = tmp_path / "loader.py"
    script.write_text(SCRIPT)
    proc = subprocess.Popen([sys.executable, str(script), how],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pids = []
    ended = False
    try:
        pids = [int(x) for x in proc.stdout.readline().split()]
        assert len(pids) == 2
        if how == "interrupt":
            time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            try:
                out, err = proc.communicate(timeout=30)
            except subprocess.TimeoutExpired:
                state = _signal_state(proc.pid)
                proc.kill()
                out, err = proc.communicate()
                pytest.fail(f"the loader did not stop on SIGINT within 30 s; its "
                            f"signal state then: {state}; stderr: {err[-2000:]}")
            assert proc.returncode == 3 and "interrupted" in out, err[-2000:]
        else:
            proc.communicate(timeout=30)
            assert proc.returncode == -signal.SIGKILL
        ended = True
    finally:
        if not ended:  # a failure above: leave nothing running or open behind it
            for pid in pids:  # first: live workers would hold the pipes open
                if pid_alive(pid):
                    os.kill(pid, signal.SIGKILL)
            if proc.poll() is None:
                proc.kill()
            try:
                proc.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError):
                pass
            for f in (proc.stdout, proc.stderr):
                f.close()  # else a ResourceWarning fails a later test
            proc.wait(timeout=10)
    assert wait_gone(pids) == []  # the workers went by themselves
