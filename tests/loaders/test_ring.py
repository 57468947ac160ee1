"""Tests of the shared-memory ring through its Cython wrapper (seqtools.loaders._ring).

Real processes under fork, spawn and forkserver: the Ring reaches spawn and
forkserver children by fd passing when pickled.  The C program csrc/test_ringbuf.c
(contention, SIGKILLed producers, robust mutex) is compiled and run here too when a
C compiler and the sources are at hand, so CI covers it.

Worker functions live at module level so that spawn/forkserver children can import
them.  Timeouts are safety nets against hangs, never timing assertions.
"""

import errno
import gc
import multiprocessing
import os
import pathlib
import platform
import resource
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from conftest import shm_leftovers, shm_listing

from seqtools import _testing
from seqtools.loaders._ring import (
    ALIGN,
    KIND_ERROR,
    KIND_RESULT,
    WATCHDOG_EXIT,
    QueueFull,
    Ring,
    RingClosed,
    set_pdeathsig,
    watchdog_start,
)

METHODS = [
    m for m in ("fork", "spawn", "forkserver")
    if m in multiprocessing.get_all_start_methods()
]
WAIT = 20.0  # seconds; never reached in a passing run
CSRC = pathlib.Path(__file__).resolve().parents[2] / "csrc"


@pytest.fixture(params=METHODS)
def ctx(request):
    return multiprocessing.get_context(request.param)


def wait_until(cond, what):
    """Poll cond() (a safety net of WAIT seconds, not a timing test)."""
    deadline = time.monotonic() + WAIT
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.002)


def pattern(n, seed):
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8)


def idle(ring):
    s = ring.stats()
    return s["used"] == s["reserved"] == s["committed"] == s["popped"] == 0


def memfd_links():
    """fds of this process that are the ring's memfd."""
    out = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            if "seqtools-ring" in os.readlink(f"/proc/self/fd/{fd}"):
                out.append(fd)
        except OSError:
            pass
    return out


def ring_mapped():
    with open("/proc/self/maps") as f:
        return "seqtools-ring" in f.read()


# --------------------------------------------------------------- children ----


def put(ring, offset, nbytes, data):
    """Copy the bytes of array ``data`` to the start of the reserved block."""
    data = np.ascontiguousarray(data).view(np.uint8).ravel()
    block = np.frombuffer(_testing.ring_block(ring, offset, nbytes), np.uint8)
    block[: data.size] = data


def produce(ring, worker, sizes, seed0):
    """Reserve, write and commit one block per size; exit code 0 iff all went well."""
    deadline = time.monotonic() + WAIT
    for k, n in enumerate(sizes):
        off = None
        while off is None:
            if time.monotonic() > deadline:
                os._exit(3)  # no room for WAIT seconds: the parent's join reports it
            off = ring.reserve(worker, n, WAIT)
        put(ring, off, n, pattern(n, seed0 + k))
        _testing.ring_commit(ring, worker, off, k, 0)


def claim_until_closed(ring, worker):
    try:
        ring.claim(worker, WAIT)
    except RingClosed:
        os._exit(0)
    os._exit(1)


def claim_reserve_and_hang(ring, worker, ready):
    index, _ = ring.claim(worker, WAIT)
    ring.reserve(worker, 1000, WAIT)
    ready.put(index)
    time.sleep(WAIT)


def drop_inherited_lease(holder):
    holder.clear()
    gc.collect()


def grow_past_rlimit(ring):
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, resource.RLIM_INFINITY))
    try:
        ring.set_capacity(1 << 24)
    except OSError as e:
        os._exit(0 if "cannot grow shared memory" in str(e) else 2)
    os._exit(1)


def stack_then_wait(ring, worker, first, second):
    """Reserve a block (a stacked batch), keep one, then wait for room for a
    second block and commit it; the payload names the first block."""
    kept = _testing.ring_keep(ring, worker, 64)
    a = ring.reserve(worker, first, WAIT)
    b = None
    while b is None:
        b = ring.reserve(worker, second, WAIT)
    put(ring, b, second, np.array([a], np.uint64))
    _testing.ring_commit(ring, worker, b, 0, 0)
    _testing.ring_unkeep(ring, worker, kept)


def run(ctx, target, *args):
    # daemon: should the test fail before joining it, the child is terminated when
    # the test process exits instead of keeping pytest from exiting
    p = ctx.Process(target=target, args=args, daemon=True)
    p.start()
    return p


def join_ok(p):
    p.join(WAIT)
    assert p.exitcode == 0, f"child exit code {p.exitcode}"
    p.close()  # its sentinel fd, so fd counts compare


# ------------------------------------------------------------------ tests ----


def test_child_writes_parent_views_zero_copy(ctx):
    ring = Ring.create(2, 16, 1 << 16, 1 << 16)
    sizes = [1000, 64, 4096, 1, 333]
    p = run(ctx, produce, ring, 1, sizes, 10)
    for k, n in enumerate(sizes):
        offset, nbytes, index, generation, worker, kind = ring.pop(WAIT)
        assert (index, generation, worker, kind) == (k, 0, 1, 0)
        assert nbytes >= n and offset % ALIGN == 0
        lease = _testing.ring_lease(ring, offset, nbytes)
        a = np.frombuffer(lease, np.uint8)[:n]
        np.testing.assert_array_equal(a, pattern(n, 10 + k))
        # zero-copy: another view of the same block sees writes through this one
        other = np.frombuffer(_testing.ring_block(ring, offset, nbytes), np.uint8)
        assert other.ctypes.data == a.ctypes.data
        a[0] ^= 0xFF
        assert other[0] == a[0]
        del a, other, lease
    join_ok(p)
    gc.collect()
    assert idle(ring)


def test_leases_released_on_gc():
    ring = Ring.create(1, 16, 1 << 14, 1 << 14)
    produce(ring, 0, [500, 500, 500], 0)
    arrays = []
    for _ in range(3):
        offset, nbytes, *_ = ring.pop(0)
        arrays.append(
            np.frombuffer(_testing.ring_lease(ring, offset, nbytes), np.uint8))
    views = [a[10:20].reshape(2, 5) for a in arrays]  # views keep the lease too
    del arrays
    gc.collect()
    assert ring.stats()["popped"] == 3
    views.pop(1)
    gc.collect()
    assert ring.stats()["popped"] == 2
    del views
    gc.collect()
    assert idle(ring)


def test_backpressure(ctx):
    ring = Ring.create(1, 16, 4096, 4096)
    sizes = [1000] * 8  # 1088 bytes with the header: 3 fit
    p = run(ctx, produce, ring, 0, sizes, 100)
    held = []
    for _ in range(3):
        offset, nbytes, *_ = ring.pop(WAIT)
        held.append(_testing.ring_lease(ring, offset, nbytes))
    wait_until(lambda: ring.stats()["space_waiters"] == 1, "the producer to block")
    assert ring.pop(0.05) is None
    assert ring.stats()["used"] == 3 * 1088
    del held[1]  # any block: space comes back at once
    got = 3
    while got < len(sizes):
        offset, nbytes, index, *_ = ring.pop(WAIT)
        a = np.frombuffer(_testing.ring_lease(ring, offset, nbytes), np.uint8)[:1000]
        np.testing.assert_array_equal(a, pattern(1000, 100 + index))
        got += 1
        del a
        gc.collect()
    join_ok(p)
    del held
    gc.collect()
    assert idle(ring)


def test_stats_tell_fragmentation_from_a_full_ring(ctx):
    from seqtools.loaders.memory import stall_message as _stall_message

    ring = Ring.create(1, 16, 4096, 4096)
    p = run(ctx, produce, ring, 0, [1000, 1000, 1000, 2500], 200)
    held = []
    for _ in range(3):  # blocks of 1088 bytes at 0, 1088 and 2176
        offset, nbytes, *_ = ring.pop(WAIT)
        held.append(_testing.ring_lease(ring, offset, nbytes))
    wait_until(lambda: ring.stats()["waiting_for"] == 2560 + 64, "the 4th reserve")
    s = ring.stats()
    assert s["largest_free"] == 4096 - 3 * 1088
    msg = _stall_message(s)
    assert "has 832 of 4096 bytes free, less than the 2624 bytes" in msg
    assert "the 3 results handed out earlier and still referenced take the" in msg
    del held[2], held[0]  # free: 1088 bytes, then 1920 at the end, the middle held
    wait_until(lambda: ring.stats()["largest_free"] == 4096 - 2176, "the releases")
    s = ring.stats()
    assert s["waiting_for"] == 2624 and s["capacity"] - s["used"] == 4096 - 1088
    msg = _stall_message(s)
    assert "not in one piece" in msg and "2624 contiguous bytes" in msg
    assert "largest free run is 1920" in msg and "1 result handed" in msg
    del held[0]  # the middle one: now it fits
    offset, nbytes, index, *_ = ring.pop(WAIT)
    assert index == 3 and ring.stats()["waiting_for"] == 0
    lease = _testing.ring_lease(ring, offset, nbytes)
    np.testing.assert_array_equal(np.frombuffer(lease, np.uint8)[:2500],
                                  pattern(2500, 203))
    del lease
    join_ok(p)
    gc.collect()
    assert idle(ring)


def test_unsized_ring_sized_on_request(ctx):
    ring = Ring.create(1, 8, 0, 1 << 20)
    assert ring.capacity == 0
    p = run(ctx, produce, ring, 0, [5000], 7)
    msg = ring.pop(WAIT)
    assert msg == ("unsized", 5056 + 64)
    ring.set_capacity(1 << 16)
    offset, nbytes, *_ = ring.pop(WAIT)
    np.testing.assert_array_equal(
        np.frombuffer(_testing.ring_lease(ring, offset, nbytes), np.uint8)[:5000],
        pattern(5000, 7),
    )
    join_ok(p)
    gc.collect()
    assert idle(ring)


def test_set_capacity_errors():
    ring = Ring.create(1, 8, 0, 1 << 20)
    with pytest.raises(ValueError, match="exceeds the reserved mapping"):
        ring.set_capacity(1 << 50)
    with pytest.raises(ValueError, match="multiple"):
        ring.set_capacity(100)
    with pytest.raises(ValueError, match="multiple"):
        ring.set_capacity(0)
    ring.set_capacity(1 << 20)
    # sized once: a second call is refused before it can shrink the region
    with pytest.raises(ValueError, match="already sized"):
        ring.set_capacity(4096)
    # the whole data area is backed: touching its last byte does not SIGBUS
    off = ring.reserve(0, (1 << 20) - 64, 0)
    block = np.frombuffer(_testing.ring_block(ring, off, (1 << 20) - 64), np.uint8)
    block[-1] = 7
    assert block[-1] == 7
    with pytest.raises(ValueError, match="does not fit"):
        ring.reserve(0, 1 << 21, 0)
    with pytest.raises(ValueError, match="invalid argument"):
        ring.reserve(5, 10, 0)
    with pytest.raises(RuntimeError, match="corrupt"):
        _testing.ring_commit(ring, 0, off + 64, 0, 0)
    with pytest.raises(ValueError, match="outside the ring"):
        _testing.ring_lease(ring, ring.data_offset + (1 << 20), 64)


def test_grow_adds_free_space_at_the_end():
    with pytest.raises(ValueError, match="not sized"):
        Ring.create(1, 8, 0, 1 << 20).grow(8192)
    ring = Ring.create(1, 8, 4096, 1 << 20)
    for bad in (4096, 2048, 4096 + 100):
        with pytest.raises(ValueError, match="larger than 4096"):
            ring.grow(bad)
    with pytest.raises(ValueError, match="exceeds the reserved mapping"):
        ring.grow(1 << 50)
    first = ring.reserve(0, 3000, 0)  # a block of 3072 bytes; 1024 free after it
    assert ring.reserve(0, 2000, 0) is None
    ring.grow(8192)
    assert ring.capacity == 8192
    # the 1024 free bytes and the new ones make one run
    second = ring.reserve(0, 2000, 0)  # a block of 2112 bytes
    assert second == first + 3072
    block = np.frombuffer(_testing.ring_block(ring, second, 2000), np.uint8)
    block[-1] = 7  # backed memory: no SIGBUS
    assert block[-1] == 7
    assert ring.reserve(0, 8192 - 3072 - 2112 - 64, 0) is not None  # to the end
    ring.cancel(0)
    assert idle(ring)


def test_set_capacity_failure_is_an_error_not_sigbus():
    # The file cannot grow (RLIMIT_FSIZE): a clear OSError, in a forked child so
    # the limit does not leak into the test process.
    ring = Ring.create(1, 8, 0, 1 << 24)
    p = run(multiprocessing.get_context("fork"), grow_past_rlimit, ring)
    join_ok(p)


def test_close_wakes_claimer(ctx):
    ring = Ring.create(2, 8, 4096, 4096)
    p = run(ctx, claim_until_closed, ring, 0)
    ring.task_reset(0, 0, 1)  # no task to hand out
    time.sleep(0.05)  # let it go to sleep (not required for correctness)
    ring.close()
    join_ok(p)
    with pytest.raises(RingClosed):
        ring.pop(0)
    with pytest.raises(RingClosed):
        ring.reserve(1, 10, 0)


def test_worker_killed_holding_task_and_block(ctx):
    ring = Ring.create(2, 8, 1 << 14, 1 << 14)
    ring.task_reset(0, 10, 10)
    q = ctx.Queue()
    p = run(ctx, claim_reserve_and_hang, ring, 0, q)
    index = q.get(timeout=WAIT)
    assert ring.stats()["reserved"] == 1
    p.kill()
    p.join(WAIT)
    assert ring.worker_reset(0) == (index, 1)
    assert idle(ring)
    assert ring.claim(1, 0) == (index, 1)  # requeued, claimed first
    q.close()
    q.join_thread()


def test_forked_child_dropping_inherited_lease_keeps_it():
    ring = Ring.create(1, 8, 1 << 14, 1 << 14)
    produce(ring, 0, [100], 0)
    offset, nbytes, *_ = ring.pop(0)
    holder = [_testing.ring_lease(ring, offset, nbytes)]
    p = run(multiprocessing.get_context("fork"), drop_inherited_lease, holder)
    join_ok(p)
    assert ring.stats()["popped"] == 1  # still the parent's
    holder.clear()
    gc.collect()
    assert idle(ring)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
def test_nothing_left_behind(ctx):
    # warm up the context (forkserver, resource tracker) so its own fds are open
    join_ok(run(ctx, gc.collect))
    shm_before = shm_listing()
    nfd_before = len(os.listdir("/proc/self/fd"))

    ring = Ring.create(2, 16, 1 << 16, 1 << 16)
    assert len(memfd_links()) == 1 and ring_mapped()
    p = run(ctx, produce, ring, 0, [2000, 3000], 1)
    leases = []
    for _ in range(2):
        offset, nbytes, *_ = ring.pop(WAIT)
        leases.append(
            np.frombuffer(_testing.ring_lease(ring, offset, nbytes), np.uint8))
    join_ok(p)
    del ring
    gc.collect()
    assert memfd_links() and ring_mapped()  # the leases keep the region alive
    del leases
    gc.collect()

    assert memfd_links() == []
    assert not ring_mapped()
    assert len(os.listdir("/proc/self/fd")) == nfd_before
    assert shm_leftovers(shm_before) == []


@pytest.mark.skipif(
    shutil.which("cc") is None or not (CSRC / "test_ringbuf.c").exists(),
    reason="needs a C compiler and the csrc/ sources",
)
def test_c_program(tmp_path):
    exe = tmp_path / "test_ringbuf"
    subprocess.run(
        ["cc", "-O2", "-g", "-D_GNU_SOURCE", "-pthread", "-o", str(exe),
         str(CSRC / "test_ringbuf.c")],
        check=True,
    )
    res = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300)
    print(res.stdout, res.stderr)
    assert res.returncode == 0, res.stdout + res.stderr
    assert ", 0 failed" in res.stdout


# ------------------------------------------------------- errors, kinds, stalls ----


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc" or not hasattr(os, "memfd_create"),
    reason="needs glibc (its error for a garbage mutex) and memfd",
)
def test_lock_failure_raises():
    # A region that passes the magic and version check but whose mutex is garbage:
    # glibc refuses to lock it (EINVAL). Every consumer call reports it, none
    # answers as if it had done its work (task_reset with a generation of 0).
    real = Ring.create(1, 8, 4096, 4096)  # its memfd: a real magic and version
    fd = int(memfd_links()[0])
    head = os.pread(fd, 16, 0)  # magic, version, nworkers
    size = real.data_offset  # the header of a ring of 1 worker, 8 entries
    fake = os.memfd_create("seqtools-test-fake")
    os.ftruncate(fake, size)
    os.pwrite(fake, head + b"\xff" * (size - 16), 0)
    ring = Ring.attach(fake, size)
    for call, args in [("task_reset", (0, 10, 4)), ("task_advance", (3,)),
                       ("task_drop", (1,)), ("task_set_window", (5,)),
                       ("close", ()), ("stats", ())]:
        with pytest.raises(OSError, match=call) as info:
            getattr(ring, call)(*args)
        assert info.value.errno == errno.EINVAL
    del real


def test_task_reset_returns_each_new_generation():
    ring = Ring.create(1, 8, 4096, 4096)
    assert [ring.task_reset(0, 3, 2) for _ in range(3)] == [1, 2, 3]
    assert ring.claim(0, 0) == (0, 3)
    ring.task_advance(1)
    ring.task_drop(0)
    ring.close()
    ring.close()  # closing twice is harmless
    with pytest.raises(RingClosed):
        ring.claim(0, 0)


def test_task_window_widens_in_the_same_generation():
    ring = Ring.create(2, 16, 4096, 4096)
    generation = ring.task_reset(0, -1, 2)
    assert [ring.claim(w, 0) for w in (0, 1)] == [(0, generation), (1, generation)]
    assert ring.claim(0, 0) is None  # the window is full
    ring.task_set_window(4)
    assert [ring.claim(0, 0), ring.claim(1, 0)] == [(2, generation), (3, generation)]
    assert ring.claim(0, 0) is None
    with pytest.raises(ValueError, match="task_set_window"):
        ring.task_set_window(0)


def test_full_completion_queue_raises_queue_full():
    ring = Ring.create(2, 2, 1 << 14, 1 << 14)
    ring.task_reset(0, -1, 100)
    ring.post(0, 0, 1, KIND_ERROR)
    block = ring.reserve(1, 100, 0)
    _testing.ring_commit(ring, 1, block, 1, 1)
    # full: nothing is queued, and the block is still the worker's
    with pytest.raises(QueueFull, match="post: the completion queue is full"):
        ring.post(0, 2, 1, KIND_ERROR)
    other = ring.reserve(0, 100, 0)
    kept = _testing.ring_keep(ring, 0, 100)
    with pytest.raises(QueueFull, match="commit"):
        _testing.ring_commit(ring, 0, other, 3, 1)
    with pytest.raises(QueueFull, match="commit"):
        _testing.ring_commit_adopt(ring, 0, other, 3, 1, [kept])
    s = ring.stats()
    assert (s["reserved"], s["kept"], s["committed"]) == (1, 1, 1)
    assert ring.pop(0)[2] == 0
    # room again: it goes through
    _testing.ring_commit_adopt(ring, 0, other, 3, 1, [kept])
    got = [ring.pop(0) for _ in range(2)]
    assert [e[2] for e in got] == [1, 3]
    for offset in (got[0][0], got[1][0], kept):
        _testing.ring_release(ring, offset)
    assert idle(ring)
    # a QueueFull is a RuntimeError (callers that caught that still do); a task
    # holding too many blocks is not a full queue
    assert issubclass(QueueFull, RuntimeError)
    for _ in range(12):
        ring.reserve(1, 10, 0)
    with pytest.raises(RuntimeError, match="too many shared-memory blocks") as info:
        ring.reserve(1, 10, 0)
    assert not isinstance(info.value, QueueFull)
    ring.cancel(1)


def test_error_report_travels_in_a_block():
    ring = Ring.create(1, 8, 1 << 14, 1 << 14)
    generation = ring.task_reset(0, -1, 10)
    index, _ = ring.claim(0, 0)
    text = b"Traceback: ValueError in the user's code"
    main = _testing.ring_keep(ring, 0, 200)
    extra = _testing.ring_keep(ring, 0, 100)
    put(ring, main, 200, np.frombuffer(text, np.uint8))
    _testing.ring_commit_adopt(ring, 0, main, index, generation, [extra],
                               kind=KIND_ERROR)
    offset, nbytes, got, got_generation, worker, kind = ring.pop(0)
    assert (offset, got, got_generation, worker, kind) == (
        main, index, generation, 0, KIND_ERROR)
    lease = _testing.ring_lease(ring, offset, nbytes)
    assert bytes(lease)[: len(text)] == text
    del lease
    _testing.ring_release(ring, extra)  # adopted with it, as for a result
    gc.collect()
    assert idle(ring)
    # the default is still a result
    block = _testing.ring_keep(ring, 0, 64)
    _testing.ring_commit_adopt(ring, 0, block, index, generation, [])
    assert ring.pop(0)[5] == KIND_RESULT
    _testing.ring_release(ring, block)


def test_death_count_forgotten_once_the_task_completes():
    ring = Ring.create(2, 8, 1 << 14, 1 << 14)
    generation = ring.task_reset(0, 1, 1)
    for k in (1, 2):
        assert ring.claim(0, 0) == (0, generation)
        assert ring.worker_reset(0) == (0, k)
    assert ring.claim(1, 0) == (0, generation)
    block = ring.reserve(1, 10, 0)
    _testing.ring_commit(ring, 1, block, 0, generation)
    _testing.ring_release(ring, ring.pop(0)[0])
    generation = ring.task_reset(0, 1, 1)
    assert ring.claim(0, 0) == (0, generation)
    assert ring.worker_reset(0) == (0, 1)  # not 3: the success came between


def stalled(s):
    """The ring can make no progress without the consumer (one snapshot)."""
    return (s["sleeping_in_reserve"] > 0 and s["reserved_active"] == 0
            and s["kept_active"] == 0 and s["committed"] == 0)


def test_stats_count_blocks_of_active_producers():
    ring = Ring.create(2, 8, 1 << 14, 1 << 14)
    s0 = ring.stats()
    assert s0["reserved_active"] == s0["kept_active"] == s0["sleeping_in_reserve"] == 0
    assert ring.stats()["space_events"] == s0["space_events"]  # nothing moved
    assert ring.stats()["ready_events"] == s0["ready_events"]
    a = ring.reserve(0, 100, 0)
    b = ring.reserve(0, 100, 0)
    k = _testing.ring_keep(ring, 1, 100)
    s = ring.stats()
    assert (s["reserved"], s["reserved_active"]) == (2, 2)
    assert (s["kept"], s["kept_active"]) == (1, 1)
    _testing.ring_commit(ring, 0, a, 0, 0)
    s1 = ring.stats()
    assert s1["ready_events"] != s0["ready_events"]
    assert (s1["reserved_active"], s1["committed"], s1["popped"]) == (0, 1, 1)
    ring.pop(0)
    _testing.ring_release(ring, a)
    assert ring.stats()["space_events"] != s1["space_events"]
    _testing.ring_release(ring, b)  # it went over with the commit
    _testing.ring_unkeep(ring, 1, k)
    assert idle(ring)


def test_stats_see_a_producer_asleep_holding_its_batch():
    # A worker holds a stacked batch (a reserved block) and waits in reserve for
    # room for a second array, which only the consumer can free: the ring cannot
    # move on its own, although a block is reserved (a test of reserved == 0
    # misses this hang).
    ring = Ring.create(1, 8, 4096, 4096)
    held = ring.reserve(0, 2048 - 64, 0)
    _testing.ring_commit(ring, 0, held, 0, 0)
    ring.pop(0)
    assert ring.reserve(0, 500, 0) is not None  # the batch it stacked
    got = []
    t = threading.Thread(target=lambda: got.append(ring.reserve(0, 1500, WAIT)))
    t.start()
    wait_until(lambda: ring.stats()["sleeping_in_reserve"] == 1, "the reserve to sleep")
    s = ring.stats()
    assert (s["reserved"], s["reserved_active"], s["space_waiters"]) == (1, 0, 1)
    assert stalled(s)
    again = ring.stats()
    assert (again["space_events"], again["ready_events"]) == (
        s["space_events"], s["ready_events"])
    _testing.ring_release(ring, held)
    t.join(WAIT)
    assert got and got[0] is not None
    s2 = ring.stats()
    assert s2["space_events"] != s["space_events"]
    assert (s2["sleeping_in_reserve"], s2["reserved_active"]) == (0, 2)
    assert not stalled(s2)
    ring.cancel(0)
    assert idle(ring)


def test_stats_tell_a_stalled_producer_process(ctx):
    ring = Ring.create(2, 8, 4096, 4096)
    held = ring.reserve(1, 2048 - 64, 0)  # the consumer will hold this one
    _testing.ring_commit(ring, 1, held, 9, 0)
    assert ring.pop(0)[0] == held
    p = run(ctx, stack_then_wait, ring, 0, 500, 1500)
    wait_until(lambda: ring.stats()["sleeping_in_reserve"] == 1, "the producer to wait")
    s = ring.stats()
    assert (s["reserved"], s["kept"], s["space_waiters"]) == (1, 1, 1)
    assert (s["reserved_active"], s["kept_active"], s["committed"]) == (0, 0, 0)
    assert stalled(s)
    _testing.ring_release(ring, held)  # room: it goes on
    offset, nbytes, *_ = ring.pop(WAIT)
    join_ok(p)
    s2 = ring.stats()
    assert s2["space_events"] != s["space_events"]
    assert s2["ready_events"] != s["ready_events"]
    assert not stalled(s2)
    first = int(np.frombuffer(_testing.ring_block(ring, offset, 8), np.uint64)[0])
    _testing.ring_release(ring, first)  # handed over with the result
    _testing.ring_release(ring, offset)
    assert idle(ring)


@pytest.mark.skipif(
    shutil.which("cc") is None or not (CSRC / "test_ringbuf.c").exists(),
    reason="needs a C compiler and the csrc/ sources",
)
def test_c_program_under_thread_sanitizer(tmp_path):
    # The capacity is read without the lock while the consumer grows it, and the
    # copy pool's threads share its queue: under ThreadSanitizer the threaded C
    # tests report any race on either.
    exe = tmp_path / "test_ringbuf_tsan"
    build = subprocess.run(
        ["cc", "-O1", "-g", "-fsanitize=thread", "-D_GNU_SOURCE", "-pthread", "-o",
         str(exe), str(CSRC / "test_ringbuf.c")],
        capture_output=True, text=True,
    )
    if build.returncode != 0:
        pytest.skip(f"no ThreadSanitizer here: {build.stderr[-300:]}")
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1")
    env.pop("LD_PRELOAD", None)  # the sanitize run preloads ASan: not with TSan
    res = subprocess.run([str(exe), "threads"], capture_output=True, text=True,
                         timeout=300, env=env)
    print(res.stdout, res.stderr)
    if "FATAL: ThreadSanitizer" in res.stderr:  # e.g. a memory layout it refuses
        pytest.skip("ThreadSanitizer cannot run here")
    assert res.returncode == 0, res.stdout + res.stderr
    for name in ("capacity_threads", "pool_threads_order", "pool_threads_many",
                 "pool_threads_cancel_and_free"):
        assert f"ok   {name}\n" in res.stdout
    assert " 0 failed" in res.stdout


# ---------------------------------------------------------------- watchdog ----

# Run by a fresh interpreter (as a subreaper, so that it adopts the orphaned
# worker and can tell how it ended): a "middle" process forks a worker that arms
# its guard, then exits (or, for "watched", another process the worker watches
# dies). Prints how the worker ended.
GUARD_SCRIPT = textwrap.dedent("""
    import ctypes, os, signal, sys, time
    from seqtools.loaders import _ring

    mode, wait = sys.argv[1], float(sys.argv[2])
    if ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0) != 0:
        print("no subreaper"); sys.exit(0)  # PR_SET_CHILD_SUBREAPER

    def stuck():
        if "busy" in mode:
            sum(range(1 << 62))  # a C loop that holds the GIL
        else:
            time.sleep(wait)

    def worker(watched, ready):
        ppid0 = os.getppid()
        if mode.startswith("pdeathsig_late"):
            os.write(ready, b"1")
            while os.getppid() == ppid0:
                time.sleep(0.001)
            os._exit(3 if _ring.set_pdeathsig(signal.SIGKILL, ppid0) else 4)
        if mode.startswith("pdeathsig"):
            if _ring.set_pdeathsig(signal.SIGKILL, ppid0):
                os._exit(4)
        else:
            _ring.watchdog_start(watched or ppid0, 0.01)
        os.write(ready, b"1")
        stuck()
        os._exit(1)

    ready_r, ready_w = os.pipe()
    pid_r, pid_w = os.pipe()
    if mode.startswith("watched"):
        q = os.fork()
        if q == 0:
            time.sleep(wait)
            os._exit(0)
        child = os.fork()
        if child == 0:
            worker(q, ready_w)
        os.read(ready_r, 1)
        os.kill(q, signal.SIGKILL)
        os.waitpid(q, 0)  # reaped: gone for kill(pid, 0) too
    else:
        mid = os.fork()
        if mid == 0:
            child = os.fork()
            if child == 0:
                worker(0, ready_w)
            os.write(pid_w, child.to_bytes(8, "little"))
            os.read(ready_r, 1)
            os._exit(0)
        child = int.from_bytes(os.read(pid_r, 8), "little")
        os.waitpid(mid, 0)
    deadline = time.monotonic() + wait
    while True:
        pid, status = os.waitpid(child, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            os.kill(child, signal.SIGKILL)
            print("still alive"); sys.exit(0)
        time.sleep(0.01)
    if os.WIFEXITED(status):
        print("exit", os.WEXITSTATUS(status))
    else:
        print("signal", os.WTERMSIG(status))
""")


def run_guard(mode):
    # cwd "/": `python -c` puts the working directory first on sys.path, and a
    # checkout there (no compiled modules) would shadow the installed package.
    res = subprocess.run([sys.executable, "-c", GUARD_SCRIPT, mode, str(WAIT)],
                         capture_output=True, text=True, timeout=3 * WAIT, cwd="/")
    assert res.returncode == 0, res.stderr
    out = res.stdout.strip()
    if out == "no subreaper":
        pytest.skip("prctl(PR_SET_CHILD_SUBREAPER) refused here")
    return out


linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="needs Linux (prctl)")


@linux_only
@pytest.mark.parametrize("mode", ["parent_sleep", "parent_busy", "watched_sleep",
                                  "watched_busy"])
def test_watchdog_ends_a_stuck_worker_whose_parent_is_gone(mode):
    assert run_guard(mode) == f"exit {WATCHDOG_EXIT}"


@linux_only
@pytest.mark.parametrize("mode", ["pdeathsig_sleep", "pdeathsig_busy"])
def test_pdeathsig_kills_a_stuck_worker_with_its_parent(mode):
    assert run_guard(mode) == f"signal {signal.SIGKILL}"


@linux_only
def test_pdeathsig_set_too_late_is_reported():
    assert run_guard("pdeathsig_late") == "exit 3"


def test_guard_argument_errors():
    # nothing is started or set in this process: every call is refused first
    with pytest.raises(ValueError, match="parent_pid"):
        watchdog_start(0)
    for interval in (0.0, -1.0, float("nan"), 2e6):
        with pytest.raises(ValueError, match="interval"):
            watchdog_start(os.getpid(), interval)
    with pytest.raises(ValueError, match="expected_ppid"):
        set_pdeathsig(signal.SIGKILL, 0)
    if sys.platform.startswith("linux"):
        with pytest.raises(OSError) as info:
            set_pdeathsig(12345, os.getppid())
        assert info.value.errno == errno.EINVAL


def test_a_held_entry_comes_again_until_acknowledged():
    # What lets a consumer interrupted between a pop and the entry's use (a
    # KeyboardInterrupt) lose neither: see Ring.pop.
    ring = Ring.create(1, 16, 1 << 14, 1 << 14)
    ring.task_reset(0, -1, 100)
    produce(ring, 0, [100, 200], 0)
    first = ring.pop(WAIT, 1, True)
    assert ring.pop(WAIT, 1, True) == first == ring.pop(0, 1, True)
    assert ring.acked == 0
    lease = _testing.ring_lease(ring, first[0], first[1])  # leasing acknowledges
    assert ring.acked == 1
    second = ring.pop(WAIT, 1, True)
    assert second[2] == first[2] + 1
    ring.ack()
    ring.ack()  # nothing held: no count
    assert ring.acked == 2 and ring.pop(0, 1, True) is None
    _testing.ring_release(ring, second[0])
    del lease
    gc.collect()
    assert idle(ring)
