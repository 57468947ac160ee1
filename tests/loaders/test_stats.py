"""loader.stats() and loader.report() on every loader kind.

An input-bound loop (workers that sleep, a consumer that does nothing) and a
compute-bound one (the reverse) run through each kind; the test times its own
reads and checks the loader's wait fraction against that, over the window the
loader reports on, and the verdict. The window is shortened (MARK) so that
each loop takes about a second.
"""

import os
import signal
import subprocess
import sys
import time
from time import perf_counter

import numpy as np
import pytest

import seqtools
from seqtools.loaders import stats as stats_module

NAP = 0.02  # seconds a slow task sleeps, or the consumer after each read


def slow_item(x):
    time.sleep(NAP)
    return np.full(4, x)


def fast_item(x):
    return np.full(4, x)


class SlowSampler:
    def __call__(self):
        time.sleep(NAP)
        return np.full(4, seqtools.call_index())


class FastSampler:
    def __call__(self):
        return np.full(4, seqtools.call_index())


BIG = np.arange(256 * 16384.0).reshape(256, 16384)  # rows of 128 KiB


# With copy threads the consumer's thread prepares each batch (allocates it,
# works out the rows) as part of its read: small batches for a loop that must
# not wait.
SMALL = np.arange(256 * 512.0).reshape(256, 512)  # rows of 4 KiB


def copied(rows=BIG):
    """16000 fused batches of 32 rows, read by the native copy threads."""
    return seqtools.batch(seqtools.concatenate([rows] * 2000), 32,
                          collate_fn=seqtools.stack)


def prefetch(seq, method):
    return seqtools.prefetch(seq, 2, method, max_buffered=4)


# name -> (input-bound loader, compute-bound loader, method reported)
KINDS = {
    "prefetch-process": (
        lambda: prefetch(seqtools.smap(slow_item, range(10 ** 6)), "process"),
        lambda: prefetch(seqtools.smap(fast_item, range(10 ** 6)), "process"),
        "process"),
    "prefetch-thread": (
        lambda: prefetch(seqtools.smap(slow_item, range(10 ** 6)), "thread"),
        lambda: prefetch(seqtools.smap(fast_item, range(10 ** 6)), "thread"),
        "thread"),
    "prefetch-copy": (
        lambda: prefetch(copied(), "thread"),
        lambda: prefetch(copied(SMALL), "thread"),
        "copy"),
    "load_buffers-process": (
        lambda: seqtools.load_buffers(SlowSampler(), 4, 2),
        lambda: seqtools.load_buffers(FastSampler(), 4, 2),
        "process"),
    "load_buffers-process-ordered": (
        lambda: seqtools.load_buffers(SlowSampler(), 4, 2, ordered=True),
        lambda: seqtools.load_buffers(FastSampler(), 4, 2, ordered=True),
        "process"),
    "load_buffers-thread": (
        lambda: seqtools.load_buffers(SlowSampler(), 4, 2, method="thread"),
        lambda: seqtools.load_buffers(FastSampler(), 4, 2, method="thread"),
        "thread"),
    "load_buffers-copy": (
        lambda: seqtools.load_buffers(
            seqtools.minibatches(BIG, 32, seed=0), 4, 2, method="thread"),
        lambda: seqtools.load_buffers(
            seqtools.minibatches(SMALL, 32, seed=0), 4, 2, method="thread"),
        "copy"),
    "epochs-process": (
        lambda: seqtools.epochs(seqtools.smap(slow_item, range(400)), 2, seed=0,
                                nworkers=2, max_buffered=4),
        lambda: seqtools.epochs(seqtools.smap(fast_item, range(400)), 2, seed=0,
                                nworkers=2, max_buffered=4),
        "process"),
    "epochs-thread": (
        lambda: seqtools.epochs(seqtools.smap(slow_item, range(400)), 2, seed=0,
                                nworkers=2, method="thread", max_buffered=4),
        lambda: seqtools.epochs(seqtools.smap(fast_item, range(400)), 2, seed=0,
                                nworkers=2, method="thread", max_buffered=4),
        "thread"),
    "epochs-copy": (
        lambda: seqtools.epochs(BIG, 32, seed=0, nworkers=2, method="thread"),
        lambda: seqtools.epochs(SMALL, 32, seed=0, nworkers=2, method="thread"),
        "copy"),
    "epochs-inline": (
        lambda: seqtools.epochs(seqtools.smap(slow_item, range(400)), 2, seed=0,
                                nworkers=0),
        lambda: seqtools.epochs(seqtools.smap(fast_item, range(400)), 2, seed=0,
                                nworkers=0),
        "inline"),
}


@pytest.fixture
def short_window(monkeypatch):
    """A window of about 0.5 s (10 marks of 0.05 s), figures never cached."""
    monkeypatch.setattr(stats_module, "MARK", 0.05)
    monkeypatch.setattr(stats_module, "REFRESH", 0.0)


def reader(loader):
    if isinstance(loader, seqtools.View):
        position = iter(range(len(loader)))
        return lambda: loader[next(position)]
    return lambda: next(loader)


def run(loader, seconds, nap):
    """Read for ``seconds`` (after a warm-up), napping ``nap`` after each read;
    the loader's stats and the wait fraction this side measured over the
    window they cover."""
    read = reader(loader)
    for _ in range(4):  # the workers are up
        read()
    reads = []
    stop = perf_counter() + seconds
    while perf_counter() < stop:
        began = perf_counter()
        read()
        reads.append((began, perf_counter()))
        if nap:
            time.sleep(nap)
    end = perf_counter()
    s = loader.stats()
    start = end - s["span"]
    # The loader counts a read's wait when the read ends: the reads that
    # began after the window's start (which is a read's end) count whole.
    waited = sum(b - a for a, b in reads if a > start)
    return s, waited / s["span"]


def check_common(s, method):
    assert set(s) >= {"items", "rate", "consumer_wait", "worker_busy", "buffered",
                      "memory", "restarts", "verdict", "nworkers", "window",
                      "method", "span"}
    assert s["method"] == method
    assert 0.0 <= s["consumer_wait"] <= 1.0
    assert s["restarts"] == 0
    assert s["memory"]["in_use"] <= s["memory"]["reserved"]
    if method == "process":
        assert s["memory"]["reserved"] > 0
    else:
        assert s["memory"] == {"in_use": 0, "reserved": 0}
    if method == "inline":
        assert s["worker_busy"] == [] and s["nworkers"] == 0
    else:
        assert len(s["worker_busy"]) == s["nworkers"] == 2
        assert all(0.0 <= b <= 1.0 for b in s["worker_busy"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_an_input_bound_loop_is_called_so(kind, short_window):
    make, _, method = KINDS[kind]
    with make() as loader:
        s, measured = run(loader, 0.8, 0.0)
        check_common(s, method)
        assert s["consumer_wait"] == pytest.approx(measured, abs=0.1)
        assert s["verdict"] == "input-bound", loader.report()
        assert s["rate"] > 0
        if method in ("process", "thread"):  # each worker sleeps in every task
            assert min(s["worker_busy"]) > 0.5, s
        text = loader.report()
        assert "input-bound" in text and "waited" in text


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_compute_bound_loop_is_called_so(kind, short_window):
    _, make, method = KINDS[kind]
    if method == "inline":
        pytest.skip("with no workers, reading is the loop's own work")
    with make() as loader:
        s, measured = run(loader, 1.2, 4 * NAP)
        check_common(s, method)
        assert s["consumer_wait"] == pytest.approx(measured, abs=0.05)
        # A read that waits for nothing still takes its own time, longer on a
        # loaded machine (the thread may be descheduled in it, a collection
        # may run): the verdict is checked against the wait this side
        # measured, away from the borders.
        if min(abs(measured - stats_module.COMPUTE_BOUND),
               abs(measured - stats_module.INPUT_BOUND)) > 0.01:
            assert s["verdict"] == stats_module.verdict(measured), loader.report()
        if measured < stats_module.COMPUTE_BOUND - 0.01:
            assert s["verdict"] == "compute-bound"
        # the window is full: the results wait for the consumer
        assert s["buffered"] >= 1
        assert s["verdict"] in loader.report()


def test_items_count_what_was_handed_out_and_failures_too():
    def sometimes_bad(x):
        if x == 2:
            raise ValueError("bad")
        return x

    with seqtools.prefetch(seqtools.smap(sometimes_bad, range(10)), 2) as loader:
        for i in range(5):
            try:
                loader[i]
            except seqtools.EvaluationError:
                pass
        assert loader.stats()["items"] == 5
        loader[5]
        assert loader.stats()["items"] == 6  # at once, cache or not


def test_stats_are_served_from_cache_between_refreshes():
    with seqtools.load_buffers(FastSampler(), 4, 1, method="thread") as loader:
        next(loader)
        a = loader.stats()
        a["verdict"] = "changed by the caller"
        b = loader.stats()
        assert b["verdict"] != "changed by the caller"  # a copy each time
        next(loader)
        assert loader.stats()["items"] == b["items"] + 1


def test_stats_after_close_and_before_any_read():
    loader = seqtools.load_buffers(FastSampler(), 4, 2)
    s = loader.stats()
    assert s["items"] == 0 and s["rate"] == 0
    next(loader)
    loader.close()
    s = loader.stats()
    assert s["items"] == 1
    assert s["worker_busy"] == [] and s["memory"] == {"in_use": 0, "reserved": 0}
    assert "load_buffers" in loader.report()


class DieOnceInCall2:
    """Kills its worker process the first time call 2 is made."""

    def __init__(self, marker):
        self.marker = marker

    def __call__(self):
        if seqtools.call_index() == 2 and not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return np.zeros(2)


def test_a_replaced_worker_is_counted(tmp_path):
    sampler = DieOnceInCall2(str(tmp_path / "died"))
    with seqtools.load_buffers(sampler, 2, 1, ordered=True) as loader:
        for _ in range(4):
            next(loader)
        assert loader.stats()["restarts"] == 1


def test_a_timed_out_thread_is_counted():
    def stuck_first():
        if seqtools.call_index() == 0:
            time.sleep(1.0)
        return 0

    with seqtools.load_buffers(stuck_first, 2, 1, method="thread", ordered=True,
                               timeout=0.2) as loader:
        with pytest.raises(seqtools.LoaderTimeout):
            next(loader)
        assert loader.stats()["restarts"] == 1


def test_epochs_count_across_a_resume():
    data = np.arange(80.0).reshape(40, 2)
    loader = seqtools.epochs(data, 4, seed=0, nworkers=2)
    for _ in range(3):
        next(loader)
    state = loader.state_dict()
    next(loader)
    loader.load_state_dict(state)
    next(loader)
    s = loader.stats()
    assert s["items"] == 5
    assert s["method"] == "process" and len(s["worker_busy"]) == 2
    assert "epochs" in loader.report()
    loader.close()


def test_the_report_says_what_to_do():
    s = {"items": 100, "rate": 50.0, "consumer_wait": 0.41,
         "worker_busy": [0.98, 0.97], "buffered": 0,
         "memory": {"in_use": 2 << 20, "reserved": 8 << 20}, "restarts": 0,
         "verdict": "input-bound", "nworkers": 2, "window": 4,
         "method": "process", "span": 5.0}
    text = stats_module.report(s, "load_buffers")
    assert "41%" in text and "98%" in text and "more workers" in text
    assert "2.0 MiB in use of 8.0 MiB" in text
    s.update(worker_busy=[0.2, 0.3])
    assert "not what holds it back" in stats_module.report(s, "load_buffers")
    s.update(consumer_wait=0.001, verdict="compute-bound")
    text = stats_module.report(s, "load_buffers")
    assert "compute-bound" in text and "fewer would do" in text
    s.update(consumer_wait=0.07, verdict="balanced", worker_busy=[0.9, 0.9])
    assert "one more worker" in stats_module.report(s, "load_buffers")
    s.update(worker_busy=[0.1, 0.1])
    assert "the hand-over" in stats_module.report(s, "load_buffers")


@pytest.mark.parametrize("wait,verdict", [
    (0.5, "input-bound"), (0.11, "input-bound"), (0.07, "balanced"),
    (0.04, "compute-bound"), (0.0, "compute-bound")])
def test_verdict_thresholds(wait, verdict):
    assert stats_module.verdict(wait) == verdict


@pytest.mark.timeout(120)
def test_the_documented_input_bound_example_says_so():
    # docs/input-bound.rst shows this script's report; run as a user runs it
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                        "docs", "examples", "input_bound.py")
    out = subprocess.run([sys.executable, path], capture_output=True, text=True,
                         timeout=100, cwd=os.path.dirname(path))
    assert out.returncode == 0, out.stderr
    assert "input-bound: the loop waited" in out.stdout, out.stdout
