"""nworkers="auto": the tuner's policy, the engines' moves, exact streams.

The policy is checked on a model engine whose rate is a known function of its
workers and window (deterministic); the moves (resize, set_window) on the real
engines while an ordered stream is read; and every loader kind with
nworkers="auto" and a tuner made to act every few milliseconds.
"""

import logging
import threading
import time

import numpy as np
import pytest
from conftest import pid_alive

import seqtools
from seqtools.loaders import stats as stats_module
from seqtools.loaders import tuning
from seqtools.loaders.api import cores
from seqtools.loaders.threads import ThreadEngine
from seqtools.loaders.tuning import Tuner


class ModelEngine:
    """An engine whose rate is ``rate(nworkers, window)`` items/s and whose
    workers are busy ``busy`` of the time; the consumer waits ``wait``."""

    def __init__(self, nworkers, window, rate, busy=0.9, wait=0.5):
        self.nworkers, self.window = nworkers, window
        self.rate, self.busy_fraction, self.wait = rate, busy, wait
        self.clock = 0.0
        self.resizes = []

    def info(self):
        return {"nworkers": self.nworkers, "window": self.window, "method": "model"}

    def busy(self):
        return [self.busy_fraction * self.clock] * self.nworkers

    def resize(self, n):
        self.resizes.append(n)
        self.nworkers = n
        return True

    def set_window(self, window):
        self.window = window
        return True


class ModelMeter:
    def __init__(self):
        self.items = 0
        self.waited = 0.0


def drive(engine, tuner, seconds, step=0.5):
    """Advance the model by marks of ``step`` seconds."""
    meter = ModelMeter()
    for _ in range(int(seconds / step)):
        engine.clock += step
        meter.items += engine.rate(engine.nworkers, engine.window) * step
        meter.waited += engine.wait * step
        tuner.step(meter, engine.clock, engine.busy())
    return meter


def test_an_input_bound_loop_gets_the_workers_and_window_that_pay():
    # workers pay up to 4, windows up to 32, nothing past them (a fifth
    # worker is given back)
    engine = ModelEngine(1, 8, lambda n, w: 100 * min(n, 4) * min(w, 32) / 32)
    tuner = Tuner(engine, 6, True)
    drive(engine, tuner, 40)
    # 8 -> 32 pays, 32 -> 64 does not: undone
    assert (engine.nworkers, engine.window) == (4, 32)
    assert tuner.state() == "settled"


def test_a_worker_that_does_not_pay_is_given_back():
    engine = ModelEngine(2, 8, lambda n, w: 100.0)  # nothing helps
    tuner = Tuner(engine, 4, False)
    drive(engine, tuner, 20)
    assert engine.nworkers == 2
    assert engine.resizes == [3, 2]  # tried, undone, not tried again
    assert tuner.state() == "settled" and tuner.moves == 0


def test_a_wider_window_is_kept_only_if_it_pays():
    # a window's memory is spent only for a faster loader
    engine = ModelEngine(2, 8, lambda n, w: 100.0 * min(w, 32))
    tuner = Tuner(engine, 2, True)
    drive(engine, tuner, 20)
    assert engine.window == 32
    engine = ModelEngine(2, 8, lambda n, w: 100.0)  # no faster: undone
    tuner = Tuner(engine, 2, True)
    drive(engine, tuner, 20)
    assert engine.window == 8 and tuner.state() == "settled"
    engine = ModelEngine(2, 8, lambda n, w: 100.0 if w <= 8 else 80.0)
    tuner = Tuner(engine, 2, True)
    drive(engine, tuner, 20)
    assert engine.window == 8 and tuner.state() == "settled"


def test_the_window_is_left_alone_when_the_user_set_it():
    engine = ModelEngine(1, 8, lambda n, w: 100 * min(w, 32))
    tuner = Tuner(engine, 2, False)
    drive(engine, tuner, 20)
    assert engine.window == 8


def test_idle_workers_of_a_compute_bound_loop_are_given_back():
    engine = ModelEngine(4, 8, lambda n, w: 100.0, busy=0.2, wait=0.0)
    tuner = Tuner(engine, 4, True)
    drive(engine, tuner, 20)
    assert engine.nworkers == 1


def test_the_tuner_looks_again_after_a_while():
    rates = {"value": 100.0}
    engine = ModelEngine(1, 8, lambda n, w: rates["value"] * n)
    tuner = Tuner(engine, 1, False)  # one worker at most: nothing to do
    drive(engine, tuner, 5)
    assert tuner.state() == "settled"
    tuner.max_workers = 3  # what would pay now
    drive(engine, tuner, tuning.REVISIT + 10)
    assert engine.nworkers == 3


# -- the real engines' moves ----------------------------------------------------------


def slow_item(x):
    time.sleep(0.002)
    return np.full(3, x)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["process", "thread"])
def test_workers_come_and_go_while_the_stream_stays_exact(method, caplog):
    most = 3
    loader = seqtools.prefetch(seqtools.smap(slow_item, range(2000)), 1, method,
                               max_buffered=6)
    engine = loader._engine
    if method == "process":  # a pool made with room for 3 workers
        loader.close()
        from seqtools.loaders.process import ProcessEngine
        engine = ProcessEngine(seqtools.smap(slow_item, range(2000)), False, 2000,
                               1, 6, None, 0, None, "here", slots=most, widest=64)
        loader = seqtools.loaders.fronts.OrderedLoader(engine, 2000, "prefetch",
                                                       "here")
    got = []
    with caplog.at_level(logging.WARNING, logger="seqtools"), loader:
        for k in range(600):
            if k % 100 == 50:
                n = [2, 3, 1, 3, 2, 1][k // 100]
                if method == "process":  # a slot is taken again once its
                    deadline = time.monotonic() + 20  # retired worker ended
                    while any(engine.pool.procs[w].exitcode is None
                              for w in engine.pool.retiring):
                        assert time.monotonic() < deadline
                        time.sleep(0.01)
                assert engine.resize(n)
                assert engine.info()["nworkers"] == n
            if k == 275:
                assert engine.set_window(12)
            got.append(int(loader[k][0]))
        assert got == list(range(600))
        assert len(engine.busy()) == 1
    assert not [r for r in caplog.records if "ended by" in r.getMessage()]


@pytest.mark.timeout(60)
def test_retired_worker_processes_end_and_leave_no_orphan():
    from seqtools.loaders.process import ProcessEngine

    engine = ProcessEngine(seqtools.smap(slow_item, range(10 ** 6)), False, 10 ** 6,
                           3, 6, None, 0, None, "here", slots=3, widest=64)
    try:
        for k in range(20):
            engine.take(k)
        pids = [p.pid for p in engine.pool.procs]
        assert engine.resize(1)
        deadline = time.monotonic() + 20
        k = 20
        while engine.pool.retiring and time.monotonic() < deadline:
            engine.take(k)  # the checks run as results come
            k += 1
        assert not engine.pool.retiring
        assert not any(pid_alive(pid) for pid in pids[1:])  # ended, reaped
        assert engine.pool.procs[1:] == [None, None]
        assert engine.pool.restarts == 0
        assert engine.resize(3)  # and back
        for j in range(k, k + 30):
            assert engine.take(j)[1][0] == j
    finally:
        engine.close()


# -- every loader kind under nworkers="auto" -----------------------------------------


class Sampler:
    def __call__(self):
        time.sleep(0.001)
        return np.full(3, seqtools.call_index())


ROWS = np.arange(3000.0).reshape(1000, 3)

AUTO = {
    "prefetch-process": lambda: seqtools.prefetch(
        seqtools.smap(slow_item, range(10 ** 6)), "auto", "process"),
    "prefetch-thread": lambda: seqtools.prefetch(
        seqtools.smap(slow_item, range(10 ** 6)), "auto", "thread"),
    "prefetch-copy": lambda: seqtools.prefetch(
        seqtools.batch(ROWS, 10, collate_fn=seqtools.stack), "auto", "thread"),
    "load_buffers-process-ordered": lambda: seqtools.load_buffers(
        Sampler(), nworkers="auto", ordered=True),
    "load_buffers-thread-ordered": lambda: seqtools.load_buffers(
        Sampler(), nworkers="auto", method="thread", ordered=True),
    "epochs-process": lambda: seqtools.epochs(
        seqtools.smap(slow_item, range(300)), 3, seed=0, nworkers="auto"),
    "epochs-thread": lambda: seqtools.epochs(
        seqtools.smap(slow_item, range(300)), 3, seed=0, nworkers="auto",
        method="thread"),
}


def read(loader, n):
    if isinstance(loader, seqtools.View):
        return [np.asarray(loader[k]).tolist() for k in range(n)]
    return [np.asarray(next(loader)).tolist() for _ in range(n)]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", sorted(AUTO))
def test_auto_loaders_give_the_stream_of_fixed_ones(kind, monkeypatch):
    monkeypatch.setattr(stats_module, "MARK", 0.01)
    monkeypatch.setattr(tuning, "PERIOD", 0.02)
    n = 100 if "copy" in kind else 400
    with AUTO[kind]() as loader:
        got = read(loader, n)
        s = loader.stats()
        assert s["autotune"] in ("exploring", "settled")
        assert 1 <= s["nworkers"] <= cores()
        assert 1 <= s["window"] <= tuning.MAX_WINDOW
    fixed = AUTO[kind]
    with monkeypatch.context() as m:
        m.setattr(seqtools.loaders.api, "_nworkers", lambda nworkers, func: (2, None))
        with fixed() as quiet:
            assert got == read(quiet, n)


class Rows:
    """Calls returning ``rows`` float64 rows of 1 KiB."""

    def __init__(self, rows):
        self.rows = rows

    def __call__(self):
        return np.zeros((self.rows, 128))


@pytest.mark.timeout(60)
def test_auto_worker_processes_start_wide_for_small_results(monkeypatch):
    # Small results: the widest window at the first one, as the tuner would
    # find out; results too large for process.WIDEN_BUDGET even at half of
    # it keep the automatic window; a window the user gives stays.
    def window(**kw):
        with seqtools.load_buffers(kw.pop("sampler", Rows(1)), nworkers="auto",
                                   **kw) as loader:
            next(loader)
            return loader._engine.pool.window

    start = max(10, 2 * cores())
    assert window() == tuning.MAX_WINDOW
    # results of ~1 MiB: the ring for 16 stays under 32 MiB, for 32 does not
    monkeypatch.setattr(seqtools.loaders.process, "WIDEN_BUDGET", 32 << 20)
    assert window(sampler=Rows(1024)) == (16 if start < 16 else start)
    monkeypatch.setattr(seqtools.loaders.process, "WIDEN_BUDGET", 0)
    assert window() == start
    assert window(max_cached=5) == 5


def test_auto_is_the_only_word_nworkers_takes():
    with pytest.raises(ValueError, match="'auto'"):
        seqtools.load_buffers(Sampler(), nworkers="Auto")
    with pytest.raises(ValueError, match="'auto'"):
        seqtools.prefetch([1, 2], nworkers="all")


def test_fixed_loaders_have_no_tuner():
    with seqtools.load_buffers(Sampler(), 2, 1) as loader:
        next(loader)
        assert loader.stats()["autotune"] is None
    assert repr(seqtools.loaders.api.load_buffers.__defaults__[0]) == "2"


def test_a_tuner_that_fails_stops_and_the_reads_go_on(monkeypatch, caplog):
    monkeypatch.setattr(stats_module, "MARK", 0.01)
    monkeypatch.setattr(tuning, "PERIOD", 0.02)

    def broken(self, n):
        raise OSError("cannot start a thread")

    monkeypatch.setattr(seqtools.loaders.api, "cores", lambda: 4)  # room to grow

    with seqtools.load_buffers(Sampler(), nworkers="auto", method="thread",
                               ordered=True) as loader:
        monkeypatch.setattr(type(loader._engine), "resize", broken)
        monkeypatch.setattr(type(loader._engine), "set_window", broken)
        with caplog.at_level(logging.WARNING, logger="seqtools"):
            got = [int(next(loader)[0]) for _ in range(300)]
        assert got == list(range(300))
        assert loader.stats()["autotune"] is None
        assert any("stops tuning" in r.getMessage() for r in caplog.records)


def stuck_after_0(x):
    if x > 0:
        time.sleep(60)
    return np.full(3, x)


@pytest.mark.timeout(60)
def test_a_retiring_worker_process_stuck_in_its_task_times_out():
    # Retired by the tuner while it holds a task the consumer then waits for:
    # the timeout still watches it, the wait ends.
    from seqtools.loaders.process import ProcessEngine

    engine = ProcessEngine(seqtools.smap(stuck_after_0, range(100)), False, 100,
                           2, 4, None, 0, None, "here", timeout=1.0, slots=2,
                           widest=64)
    try:
        engine.take(0)
        deadline = time.monotonic() + 20
        while engine.pool.ring.worker_task(1)[0] < 0:  # slot 1 holds a task
            assert time.monotonic() < deadline
            time.sleep(0.01)
        held = engine.pool.ring.worker_task(1)[0]
        assert engine.resize(1)
        with pytest.raises(seqtools.LoaderTimeout, match="worker 1"):
            engine.take(held)
    finally:
        engine.close()


@pytest.mark.timeout(60)
def test_a_retired_thread_stuck_in_its_task_is_not_replaced_nor_answers_twice():
    release = threading.Event()

    def item(x):
        if x > 0:
            release.wait(30)
        return x

    engine = ThreadEngine(seqtools.smap(item, range(1000)), False, 1000, 2, 4,
                          None, "prefetch", "here", timeout=0.5)
    try:
        assert engine.take(0)[1] == 0
        deadline = time.monotonic() + 20
        while engine._work.current[1] is None:  # slot 1 holds a task
            assert time.monotonic() < deadline
            time.sleep(0.01)
        held = engine._work.current[1][0]
        assert engine.resize(1)
        with pytest.raises(seqtools.LoaderTimeout, match="thread 1"):
            engine.take(held)
        assert engine._work.restarts == 0  # a retired slot is not refilled
        release.set()  # the stuck threads end: the retired one's late answer
        time.sleep(0.3)  # is dropped
        got = [engine.take(k)[1] for k in range(1, 40)]
        assert got == list(range(1, 40))
        time.sleep(0.2)
        engine.take(40)
        assert held not in engine._work.done  # no second answer
        assert all(r[0] != held for r in engine._work.inbox)
    finally:
        release.set()
        engine.close()
