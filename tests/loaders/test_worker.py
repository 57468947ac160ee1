"""Tests of seqtools.loaders._worker, the loop of the loaders' worker processes: what it
reports, what it sends spawned workers, and where the arrays a task makes live
(``Placement``), in a worker and outside."""

import os
import pickle
import signal
import threading
import time

import numpy as np
import pytest
from conftest import pid_alive, wait_gone
from fused_helpers import (
    assert_same,
    call_stream,
    random_chunks,
    ring_block,
    seed_like_dataset,
)

import seqtools
import seqtools.batching.stacking
from seqtools import _task, stack
from seqtools.loaders import _ring, _transport, _worker

# -- reports ---------------------------------------------------------------------------


def test_cut_keeps_start_and_end():
    assert _worker.cut("abc", 10) == "abc"
    text = "a" * 600 + "z" * 400
    short = _worker.cut(text, 300)
    assert short.startswith("a" * 200) and short.endswith("z" * 100)
    assert "700 characters truncated" in short


def test_failure_reports_pickle_and_give_back_the_exception():
    exc = ValueError("bad sample")
    failure = _worker.Failure(_worker.ERR_USER, "text", _worker._pickled_exception(exc))
    copy = pickle.loads(pickle.dumps(failure))
    assert (copy.code, copy.text) == (_worker.ERR_USER, "text")
    got = copy.exception()
    assert type(got) is ValueError and got.args == ("bad sample",)
    assert _worker.Failure(_worker.ERR_START, "", None).exception() is None
    assert _worker.Failure(_worker.ERR_USER, "", b"not a pickle").exception() is None


def test_exceptions_too_large_or_unpicklable_are_left_out():
    assert _worker._pickled_exception(ValueError("x" * 2 * _worker.MAX_TEXT)) is None

    class Local(Exception):  # not importable by name: cannot be pickled
        pass

    assert _worker._pickled_exception(Local()) is None


def test_start_hook_gets_the_index_when_it_takes_one():
    seen = []
    _worker.run_start_hook(seen.append, 3)
    _worker.run_start_hook(lambda: seen.append("none"), 4)
    _worker.run_start_hook(None, 5)
    assert seen == [3, "none"]


# -- what a spawned worker receives ----------------------------------------------------


def test_memory_maps_travel_by_reference(tmp_path):
    np.save(tmp_path / "a.npy", np.arange(1000.0))
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    payload = _worker.dumps({"data": mm[10:20], "plain": np.ones(3)})
    assert len(payload) < 1000  # a reference to the file, not its 8000 bytes
    got = pickle.loads(payload)
    assert got["data"].tolist() == list(range(10, 20)) and got["plain"].sum() == 3


def test_payload_for_refuses_what_spawn_cannot_pickle():
    import multiprocessing

    ctx = multiprocessing.get_context("spawn")
    with pytest.raises(TypeError, match="must be picklable"):
        _worker.payload_for(ctx, lambda: 1, None, "the sampler")
    target, hook = pickle.loads(_worker.payload_for(ctx, len, None, "the sampler"))
    assert target is len and hook is None


# -- where arrays live: Placement ------------------------------------------------------


class FakeTask:
    """A TaskBlocks stand-in: hands out blocks, never kept, never disabled."""

    disabled = False

    def kept(self):
        return False


def test_placement_marks_the_task_on_its_thread_only(monkeypatch):
    monkeypatch.setattr(_worker, "ALLOC_HOOK", False)  # no hook to install
    calls = []
    monkeypatch.setattr(_transport, "set_task", calls.append)
    placement = _worker.Placement(None, 0, FakeTask())
    assert not placement.hooking and not _task.placing()
    placement.begin()
    assert _task.placing() and calls[-1] is placement.task
    seen = []

    import threading

    t = threading.Thread(target=lambda: seen.append(_task.placing()))
    t.start()
    t.join()
    assert seen == [False]  # threads the task's code starts build in their own memory
    placement.end()
    assert not _task.placing() and calls[-1] is None
    assert _task.out_block(64) is None


def test_placement_stops_placing_what_is_kept(monkeypatch, capsys):
    monkeypatch.setattr(_worker, "ALLOC_HOOK", False)
    task = FakeTask()
    task.kept = lambda: True
    placement = _worker.Placement(None, 2, task)
    placement.check()
    assert task.disabled
    assert "seqtools worker 2:" in capsys.readouterr().err
    placement.check()  # said once
    assert capsys.readouterr().err == ""


# -- stack in workers: results built in the ring ---------------------------------------


def test_stack_in_a_worker_fills_one_block(monkeypatch, rng):
    chunks, data = random_chunks(rng, 40, (5,), np.float32)
    labels = rng.integers(0, 10, 40)
    dataset = seqtools.collate([seqtools.concatenate(chunks), labels])
    blocks = []

    def out_block(nbytes):
        blocks.append(np.zeros(nbytes + 64, np.uint8)[64:])
        return blocks[-1]

    monkeypatch.setattr(_task.evaluating, "out_block", out_block, raising=False)
    for m in (7, 3, 7):
        idx = rng.integers(0, 40, m)
        x, y = stack(seqtools.gather(dataset, idx))
        assert_same((x, y), (data[idx], labels[idx]))
        p = seqtools.batching.stacking.plan(seqtools.gather(dataset, idx))
        assert blocks[-1].nbytes == p.nbytes
        for a, f in zip((x, y), p.fields):
            assert np.shares_memory(a, blocks[-1])
            assert a.__array_interface__["data"][0] == (
                blocks[-1].__array_interface__["data"][0] + f.offset)
    monkeypatch.setattr(_task.evaluating, "out_block", lambda nbytes: None)
    assert_same(stack(seqtools.gather(dataset, [1])), (data[[1]], labels[[1]]))


def test_minibatches_through_load_buffers_no_copy(rng, tmp_path):
    dataset, data, _ = seed_like_dataset(rng, tmp_path)
    sampler = seqtools.minibatches(dataset, 8, seed=7)
    plan = seqtools.batching.stacking.plan(dataset[:8])
    with seqtools.load_buffers(sampler, max_cached=4, nworkers=2,
                               ordered=True) as loader:
        for k in range(300):
            x, y = next(loader)
            # batch k is a function of (seed, k) whichever worker drew it, and
            # its rows are right
            assert_same(y, call_stream(7, k, 8, len(dataset)))
            assert (x == data[y]).all()
            # stacked straight in the ring: both fields in one block of the plan's
            # size after the block's headroom, which holds the result's header, so
            # that this block is the whole result (nothing copied, no other block)
            bx, by = ring_block(x), ring_block(y)
            assert type(bx).__name__ == "Block" and bx is by
            assert bx.nbytes == _transport.HEADROOM + plan.nbytes
            start = np.frombuffer(bx, np.uint8).ctypes.data + _transport.HEADROOM
            assert x.ctypes.data == start


def sample_fused(dataset):
    idx = np.random.randint(0, len(dataset), 5)
    return stack(seqtools.gather(dataset, idx)), idx


def test_stack_in_prefetch_process_is_not_copied(rng, tmp_path):
    dataset, data, labels = seed_like_dataset(rng, tmp_path)
    tasks = seqtools.smap(lambda _: sample_fused(dataset), range(20))
    p = seqtools.prefetch(tasks, nworkers=2, method="process", max_buffered=4,
                          start_method="fork")
    for i in range(20):
        (x, y), idx = p[i]
        assert (x == data[idx]).all() and (y == labels[idx]).all()
        assert ring_block(x) is ring_block(y)
        # x and y were stacked in place, past the block's headroom; idx was
        # copied into that headroom, beside the header: one block for it all.
        block = ring_block(x)
        start = np.frombuffer(block, np.uint8).__array_interface__["data"][0]
        pos = {name: a.__array_interface__["data"][0] - start
               for name, a in (("x", x), ("y", y), ("idx", idx))}
        assert ring_block(idx) is block
        assert pos["x"] >= _transport.HEADROOM and pos["y"] >= _transport.HEADROOM
        assert 0 < pos["idx"] < _transport.HEADROOM
    p.close()


def test_stack_outside_workers_does_not_use_the_ring():
    assert _transport.out_block(64) is None
    x = stack(seqtools.gather(np.zeros((4, 2)), [1, 2]))
    assert x.base is None or isinstance(x.base, np.ndarray)


def stack_list_sample():
    samples = [(np.full(3, i, np.float32), i) for i in range(4)]
    return stack(samples)


def test_stack_of_a_list_in_a_worker_lands_in_the_ring():
    with seqtools.load_buffers(stack_list_sample, max_cached=2, nworkers=1) as loader:
        x, y = next(loader)
    assert x.tolist() == [[i] * 3 for i in range(4)] and y.tolist() == [0, 1, 2, 3]
    assert type(ring_block(x)).__name__ == "Block" and ring_block(x) is ring_block(y)


def _draw():
    return np.random.random(3)


@pytest.mark.timeout(120)
def test_fork_while_another_thread_holds_numpys_generator_lock():
    # A thread of the parent drawing from numpy's global generator when a fork
    # worker starts (a thread loader still finishing its sampler call): the worker
    # inherits the generator's lock held, by a thread it does not have. Its
    # seeding and its own draws must not wait for it.
    lock = np.random.mtrand._rand._bit_generator.lock
    held, release = threading.Event(), threading.Event()

    def hold():
        with lock:
            held.set()
            release.wait(60)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert held.wait(10)
        with seqtools.load_buffers(_draw, max_cached=2, nworkers=1,
                                   start_method="fork") as loader:
            draws = [next(loader) for _ in range(3)]
        assert all(d.shape == (3,) and ((0 <= d) & (d < 1)).all() for d in draws)
    finally:
        release.set()
        holder.join()
    # the parent's generator is untouched by the workers' replacement
    np.random.seed(5)
    first = np.random.random(3)
    np.random.seed(5)
    assert (np.random.random(3) == first).all()


def _zombie_child():
    """The pid of a child that has ended and is not reaped (the caller reaps it)."""
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    deadline = time.monotonic() + 10
    while not _ring.is_zombie(pid):
        assert time.monotonic() < deadline, "the child did not end"
        time.sleep(0.01)
    return pid


def test_a_zombie_parent_counts_as_gone():
    # kill(pid, 0) succeeds on a zombie: a worker whose parent died before the
    # worker's own checks began (so that getppid() never changes) would wait on
    # it for as long as the zombie lasts
    assert not _ring.is_zombie(os.getpid())
    pid = _zombie_child()
    try:
        os.kill(pid, 0)  # the check alone would say alive
        assert not _worker._parent_alive(pid, os.getppid())
        assert _worker._parent_alive(os.getpid(), os.getppid())
    finally:
        os.waitpid(pid, 0)
    assert not _ring.is_zombie(pid)  # reaped: gone, and not a zombie


@pytest.mark.timeout(60)
def test_watchdog_ends_a_worker_whose_parent_is_a_zombie():
    # A is the "parent": it forks B, then ends and stays a zombie (not reaped
    # here). B starts its watchdog only then, as a worker late to its checks
    # would: its getppid() is already the reaper's, so only the zombie check
    # can end it.
    r, w = os.pipe()
    a = os.fork()
    if a == 0:
        os.close(r)
        parent = os.getpid()  # before the fork: B may start after A has ended
        b = os.fork()
        if b == 0:
            os.write(w, f"{os.getpid()}\n".encode())
            os.close(w)
            while os.getppid() == parent:  # A ends
                time.sleep(0.01)
            time.sleep(0.2)
            _ring.watchdog_start(parent, 0.05)
            time.sleep(30)  # the watchdog ends this process long before
            os._exit(0)
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        b = int(f.readline())
    try:
        assert wait_gone([b], timeout=20) == []
    finally:
        if pid_alive(b):
            os.kill(b, signal.SIGKILL)
        os.waitpid(a, 0)
