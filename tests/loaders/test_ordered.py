"""Ordered load_buffers, thread-mode load_buffers, call_index, and minibatches as a
function of (seed, call index).

Samplers live at module level so that spawn/forkserver children can import them.
"""

import gc
import os
import signal
import threading

import numpy as np
import pytest

import seqtools
from seqtools import EvaluationError

METHODS = ["fork", "spawn", "forkserver"]


def dataset(n=500):
    data = np.random.default_rng(1).random((n, 7))
    return seqtools.collate([data, np.arange(n)])


def reference(seed, batch_size, count, n=500):
    """The first ``count`` batches of minibatches(seed) called in a loop."""
    sampler = seqtools.minibatches(dataset(n), batch_size, seed=seed)
    return [tuple(a.copy() for a in sampler()) for _ in range(count)]


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


class CallIndex:
    def __call__(self):
        return np.array([seqtools.call_index(), os.getpid()])


class KillOnce:
    """minibatches, except that the worker running call ``kill`` dies (once)."""

    def __init__(self, sampler, kill, flag):
        self.sampler, self.kill, self.flag = sampler, kill, flag

    def __call__(self):
        if seqtools.call_index() == self.kill and not os.path.exists(self.flag):
            open(self.flag, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return self.sampler()


class Failing:
    def __call__(self):
        k = seqtools.call_index()
        if k % 5 == 3:
            raise ValueError(f"call {k} is unlucky")
        return np.full(3, k)


def failing_hook():
    raise OSError("no device")


# -- minibatches: a function of (seed, k) --------------------------------------------
def test_minibatches_direct_calls_are_a_function_of_seed_and_count():
    a, b = reference(7, 16, 300), reference(7, 16, 300)
    assert all(same(x, y) for x, y in zip(a, b))
    c = reference(8, 16, 300)
    assert not all(same(x, y) for x, y in zip(a, c))
    data = dataset()
    for x, y in a[:20]:  # rows match their labels: the fused read is right
        assert np.array_equal(x, np.stack([data[int(i)][0] for i in y]))


def test_minibatches_indices_do_not_depend_on_the_order_of_calls():
    s = seqtools.minibatches(dataset(), 8, seed=3)
    forward = [s.indices(k).copy() for k in range(600)]
    s2 = seqtools.minibatches(dataset(), 8, seed=3)
    backward = [s2.indices(k).copy() for k in reversed(range(600))][::-1]
    assert all(np.array_equal(x, y) for x, y in zip(forward, backward))
    assert len({x.tobytes() for x in forward}) == 600


def test_minibatches_shared_by_threads_hand_out_each_call_once():
    s = seqtools.minibatches(dataset(), 4, seed=5)
    got, barrier = [], threading.Barrier(4)

    def run():
        barrier.wait()
        mine = [s()[1].tobytes() for _ in range(200)]
        got.extend(mine)

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ref = {y.tobytes() for _, y in reference(5, 4, 800)}
    assert sorted(got) == sorted(ref) or set(got) == ref and len(got) == 800


# -- ordered load_buffers -----------------------------------------------------------
@pytest.mark.parametrize("method", ["process", "thread"])
@pytest.mark.parametrize("nworkers", [1, 2, 4])
def test_ordered_stream_is_the_same_for_any_workers(method, nworkers):
    ref = reference(3, 16, 400)
    sampler = seqtools.minibatches(dataset(), 16, seed=3)
    with seqtools.load_buffers(sampler, max_cached=6, nworkers=nworkers,
                               ordered=True, method=method) as loader:
        got = [tuple(a.copy() for a in next(loader)) for _ in range(400)]
    assert all(same(x, y) for x, y in zip(ref, got))


@pytest.mark.parametrize("start_method", METHODS)
def test_ordered_stream_is_the_same_for_any_start_method(start_method):
    ref = reference(4, 16, 300)
    sampler = seqtools.minibatches(dataset(), 16, seed=4)
    with seqtools.load_buffers(sampler, max_cached=4, nworkers=2, ordered=True,
                               start_method=start_method) as loader:
        got = [tuple(a.copy() for a in next(loader)) for _ in range(300)]
    assert all(same(x, y) for x, y in zip(ref, got))


def test_killed_worker_redraws_the_same_batch(tmp_path):
    ref = reference(9, 8, 200)
    sampler = KillOnce(seqtools.minibatches(dataset(), 8, seed=9), kill=37,
                       flag=str(tmp_path / "killed"))
    with seqtools.load_buffers(sampler, max_cached=4, nworkers=2,
                               ordered=True) as loader:
        got = [tuple(a.copy() for a in next(loader)) for _ in range(200)]
    assert os.path.exists(tmp_path / "killed")  # a worker did die
    assert all(same(x, y) for x, y in zip(ref, got))


def test_killed_worker_unordered_loses_and_duplicates_nothing(tmp_path):
    sampler = KillOnce(CallIndex(), kill=37, flag=str(tmp_path / "killed"))
    got = []
    with seqtools.load_buffers(sampler, max_cached=4, nworkers=2) as loader:
        # the retried call comes once its worker's death is noticed (within a
        # second), however many results the other worker delivers meanwhile
        while 37 not in got and len(got) < 10**6:
            got.append(int(next(loader)[0]))
    assert os.path.exists(tmp_path / "killed")
    assert 37 in got and len(set(got)) == len(got)


@pytest.mark.parametrize("method", ["process", "thread"])
def test_unordered_yields_the_same_multiset(method):
    count = 300
    sampler = seqtools.minibatches(dataset(), 16, seed=11)
    with seqtools.load_buffers(sampler, max_cached=4, nworkers=3,
                               method=method) as loader:
        got = [next(loader)[1].tobytes() for _ in range(count)]
    # batches of distinct calls (a call a worker is slow on comes later)
    ref = [y.tobytes() for _, y in reference(11, 16, 2 * count)]
    assert len(set(got)) == count and set(got) <= set(ref)


@pytest.mark.parametrize("method", ["process", "thread"])
def test_call_index_counts_calls(method):
    with seqtools.load_buffers(CallIndex(), max_cached=3, nworkers=2, ordered=True,
                               method=method) as loader:
        got = [next(loader) for _ in range(100)]
    assert [int(k) for k, _ in got] == list(range(100))
    if method == "process":
        assert os.getpid() not in {int(p) for _, p in got}
    with seqtools.load_buffers(CallIndex(), max_cached=3, nworkers=2,
                               method=method) as loader:
        ks = sorted(int(next(loader)[0]) for _ in range(100))
    assert len(set(ks)) == 100 and ks[-1] < 100 + 3 + 2
    assert seqtools.call_index() is None


@pytest.mark.parametrize("method", ["process", "thread"])
def test_ordered_failures_come_in_place_and_the_loader_goes_on(method):
    with seqtools.load_buffers(Failing(), max_cached=4, nworkers=2, ordered=True,
                               method=method) as loader:
        for k in range(30):
            if k % 5 == 3:
                with pytest.raises(EvaluationError, match=f"call {k} is unlucky") as e:
                    next(loader)
                assert f"(call {k})" in str(e.value)
            else:
                assert next(loader).tolist() == [k] * 3


def test_ordered_process_loader_results_outlive_it():
    with seqtools.load_buffers(seqtools.minibatches(dataset(), 8, seed=2), 4, 2,
                               ordered=True) as loader:
        held = [next(loader) for _ in range(20)]
    ref = reference(2, 8, 20)
    assert all(same(x, y) for x, y in zip(ref, held))


# -- thread mode --------------------------------------------------------------------
def loader_threads():
    return [t for t in threading.enumerate()
            if t.name.startswith("seqtools-load_buffers")]


def wait_for(predicate, timeout=10.0):
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_thread_loader_threads_end_on_close_and_when_dropped():
    loader = seqtools.load_buffers(CallIndex(), max_cached=3, nworkers=3,
                                   method="thread")
    next(loader)
    assert len(loader_threads()) == 3
    loader.close()
    assert wait_for(lambda: not loader_threads())
    with pytest.raises(seqtools.LoaderClosed):
        next(loader)
    loader = seqtools.load_buffers(CallIndex(), max_cached=3, nworkers=2,
                                   method="thread")
    next(loader)
    del loader
    gc.collect()
    assert wait_for(lambda: not loader_threads())


def test_thread_loader_start_hook_failure_is_reported():
    loader = seqtools.load_buffers(CallIndex(), max_cached=3, nworkers=2,
                                   start_hook=failing_hook, method="thread")
    with pytest.raises(EvaluationError, match="start_hook failed.*OSError: no device"):
        next(loader)
    assert wait_for(lambda: not loader_threads())


def test_thread_loader_passthrough_raises_the_original(passthrough):
    with seqtools.load_buffers(Failing(), max_cached=2, nworkers=1, ordered=True,
                               method="thread") as loader:
        for _ in range(3):
            next(loader)
        with pytest.raises(ValueError, match="call 3 is unlucky"):
            next(loader)


def test_thread_loader_shared_by_threads():
    sampler = seqtools.minibatches(dataset(), 8, seed=6)
    with seqtools.load_buffers(sampler, max_cached=4, nworkers=2, ordered=True,
                               method="thread") as loader:
        got, lock = [], threading.Lock()

        def run():
            for _ in range(50):
                b = next(loader)
                with lock:
                    got.append(b[1].tobytes())

        threads = [threading.Thread(target=run) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    ref = [y.tobytes() for _, y in reference(6, 8, 200)]
    assert sorted(got) == sorted(ref)


def test_bad_arguments():
    with pytest.raises(ValueError, match="method must be 'process' or 'thread'"):
        seqtools.load_buffers(CallIndex(), method="threads")
    with pytest.raises(TypeError, match="ordered must be True or False"):
        seqtools.load_buffers(CallIndex(), ordered="yes")
