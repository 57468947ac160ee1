"""Tests of the shared-memory ring through its Cython wrapper (seqtools._ring).

Real processes under fork, spawn and forkserver: the Ring reaches spawn and
forkserver children by fd passing when pickled.  The C program csrc/test_ringbuf.c
(contention, SIGKILLed producers, robust mutex) is compiled and run here too when a
C compiler and the sources are at hand, so CI covers it.

Worker functions live at module level so that spawn/forkserver children can import
them.  Timeouts are safety nets against hangs, never timing assertions.
"""

import gc
import multiprocessing
import os
import pathlib
import resource
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest
from conftest import shm_leftovers, shm_listing
from seqtools._ring import ALIGN, Ring, RingClosed

METHODS = [
    m for m in ("fork", "spawn", "forkserver")
    if m in multiprocessing.get_all_start_methods()
]
WAIT = 20.0  # seconds; never reached in a passing run
CSRC = pathlib.Path(__file__).resolve().parent.parent / "csrc"


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


def produce(ring, worker, sizes, seed0):
    """Reserve, write and commit one block per size; exit code 0 iff all went well."""
    for k, n in enumerate(sizes):
        off = None
        while off is None:
            off = ring.reserve(worker, n, WAIT)
        ring.write(off, n, [(0, pattern(n, seed0 + k))])
        ring.commit(worker, off, k, 0)


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


def run(ctx, target, *args):
    p = ctx.Process(target=target, args=args)
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
        offset, nbytes, index, epoch, worker, kind = ring.pop(WAIT)
        assert (index, epoch, worker, kind) == (k, 0, 1, 0)
        assert nbytes >= n and offset % ALIGN == 0
        lease = ring.lease(offset, nbytes)
        a = np.frombuffer(lease, np.uint8)[:n]
        np.testing.assert_array_equal(a, pattern(n, 10 + k))
        # zero-copy: another view of the same block sees writes through this one
        other = np.frombuffer(ring.block(offset, nbytes), np.uint8)
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
        arrays.append(np.frombuffer(ring.lease(offset, nbytes), np.uint8))
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
        held.append(ring.lease(offset, nbytes))
    wait_until(lambda: ring.stats()["space_waiters"] == 1, "the producer to block")
    assert ring.pop(0.05) is None
    assert ring.stats()["used"] == 3 * 1088
    del held[1]  # any block: space comes back at once
    got = 3
    while got < len(sizes):
        offset, nbytes, index, *_ = ring.pop(WAIT)
        a = np.frombuffer(ring.lease(offset, nbytes), np.uint8)[:1000]
        np.testing.assert_array_equal(a, pattern(1000, 100 + index))
        got += 1
        del a
        gc.collect()
    join_ok(p)
    del held
    gc.collect()
    assert idle(ring)


def test_stats_tell_fragmentation_from_a_full_ring(ctx):
    from seqtools.evaluation import _stall_message

    ring = Ring.create(1, 16, 4096, 4096)
    p = run(ctx, produce, ring, 0, [1000, 1000, 1000, 2500], 200)
    held = []
    for _ in range(3):  # blocks of 1088 bytes at 0, 1088 and 2176
        offset, nbytes, *_ = ring.pop(WAIT)
        held.append(ring.lease(offset, nbytes))
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
    lease = ring.lease(offset, nbytes)
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
        np.frombuffer(ring.lease(offset, nbytes), np.uint8)[:5000], pattern(5000, 7)
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
    block = np.frombuffer(ring.block(off, (1 << 20) - 64), np.uint8)
    block[-1] = 7
    assert block[-1] == 7
    with pytest.raises(ValueError, match="does not fit"):
        ring.reserve(0, 1 << 21, 0)
    with pytest.raises(ValueError, match="invalid argument"):
        ring.reserve(5, 10, 0)
    with pytest.raises(RuntimeError, match="corrupt"):
        ring.commit(0, off + 64, 0, 0)
    with pytest.raises(ValueError, match="outside the ring"):
        ring.lease(ring.data_offset + (1 << 20), 64)


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
    block = np.frombuffer(ring.block(second, 2000), np.uint8)
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
    holder = [ring.lease(offset, nbytes)]
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
        leases.append(np.frombuffer(ring.lease(offset, nbytes), np.uint8))
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
