"""Background evaluation: ``prefetch`` (ordered, a sequence) and ``load_buffers``
(unordered, an endless iterator of results of a sampler function).

Process workers hand results over through one shared-memory ring (``_ring``, C in
``csrc/ringbuf.c``): a worker copies each array of its result into a ring block
with the GIL released, and the parent rebuilds the result as numpy arrays viewing
the block, zero-copy. A block is given back when the last array viewing it is
garbage-collected, so results stay valid for as long as they are held; holding many
only slows the workers down (backpressure), and holding the whole ring is reported.

The region has no name in ``/dev/shm`` (memfd), so nothing outlives the processes,
whatever kills them. Workers get it by inheritance (fork) or fd passing (spawn,
forkserver). A dead worker is noticed within a second, replaced, and its item
given to another worker; an item that keeps killing workers raises an error.
"""

import functools
import multiprocessing
import os
import pickle
import queue
import threading
import time
import weakref

from .._checks import check_int, length
from ..batching import _stack
from ..errors import (
    EvaluationError,
    WorkerTraceback,
    creation_site,
    passthrough,
    raise_evaluation_error,
    seterr,
)
from ..views.core import View
from . import _transport, _worker
from ._ring import ALIGN, HOOK_HEADROOM, KIND_ERROR, Ring, RingClosed

__all__ = ["prefetch", "load_buffers", "BufferLoader", "call_index"]

POLL = 0.1  # seconds: the longest the parent sleeps before checking its workers
CHECK_EVERY = 0.5  # seconds between worker checks while results keep coming
STALL = 1.0  # seconds a full ring may look stuck before it is reported
MAX_DEATHS = 3  # workers an item may kill before it is given up on
MIN_RING = 1 << 20
# Wake-up coalescing (see _Pool.next_entry): when results arrive faster than the
# consumer takes them, the parent sleeps until several are queued rather than
# being woken for each one, as long as that delays a result by at most about
# COALESCE_DELAY seconds and groups at most COALESCE_MAX results.  A wake-up costs
# the waking worker a futex syscall (on a VM, an inter-processor interrupt) and the
# parent a sleep and a context switch, CPU taken from the workers when they keep
# every core busy; docs/background.rst ("Fewer wake-ups") has the measurements
# behind the two values.
COALESCE_DELAY = 0.002
COALESCE_MAX = 8
RATE_EVERY = 32  # results between two estimates of the arrival interval
# A pool made with a wider window to grow to (``_Pool(widen=...)``, the ordered
# loader of ``epochs``) takes it at its first result if the ring sized for the
# wider window stays within this many bytes: small results, which come fast
# enough that a window of ten leaves the workers idle while the consumer waits
# for the one late result it needs next.
WIDEN_BUDGET = 64 << 20


def _nworkers(nworkers, func):
    """The number of workers: ``nworkers``, or the cores minus ``-nworkers``."""
    nworkers = check_int(nworkers, "nworkers", func)
    if nworkers > 0:
        return nworkers
    return max(1, (os.cpu_count() or 1) + nworkers)


def _physical_memory():
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 1 << 34


def _available_memory():
    """Bytes the shared region may take: MemAvailable on Linux, else None."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _check_memory(nbytes):
    avail = _available_memory()
    if avail is not None and nbytes > avail:
        raise MemoryError(
            f"the shared-memory ring needs {nbytes / 2**20:.1f} MiB but only "
            f"{avail / 2**20:.1f} MiB of memory is available; lower shm_size or "
            "max_buffered/max_cached, or give the machine (container) more memory"
        )


def _coalesce(interval):
    """Results to wait for at once when they arrive every ``interval`` seconds."""
    if interval <= 0:
        return COALESCE_MAX
    return max(1, min(COALESCE_MAX, int(COALESCE_DELAY / interval)))


def _prefetch_slack(i, window, end, nready, nworkers):
    """Results a prefetch waiting for item ``i`` may wait for at once.

    Tasks ``i .. i + window - 1`` (fewer before ``end``; ``end < 0``: unbounded)
    can be under way; ``nready`` of them have arrived.  Waiting for more than
    the rest would wait for results that never come, and waiting for more than
    ``window - nworkers`` could leave a worker without a task.
    """
    upper = i + window if end < 0 else min(end, i + window)
    return min(window - nworkers, upper - i - nready)


def _round_up(n, a):
    return (n + a - 1) // a * a


class _Pool:
    """Worker processes around one ring: the consumer side of the protocol.

    Only the process that made it acts on it: a child forked from that process
    (a user's own multiprocessing.Process, a torch DataLoader worker) neither
    closes the ring nor stops the workers when its copy is dropped.
    """

    def __init__(self, target, call, nworkers, window, start_hook, shm_size,
                 start_method, origin, widen=None):
        self.ctx = multiprocessing.get_context(start_method)
        self.payload = _worker.payload_for(
            self.ctx, target, start_hook, "the sampler" if call else "the sequence")
        if not isinstance(shm_size, int) or shm_size < 0:
            raise ValueError(
                f"shm_size must be an int >= 0 (0: automatic), got {shm_size!r}")
        self.call = call
        self.target = target
        self.window = window
        # A wider window to take at the first result if it fits WIDEN_BUDGET
        # (an automatically sized ring only), else None.
        self.widen = widen if widen is not None and widen > window else None
        self.origin = origin
        self.nworkers = nworkers
        self.owner = _pid
        capacity = _round_up(shm_size, ALIGN)
        if capacity:
            _check_memory(capacity)
        self.max_capacity = max(capacity, _physical_memory())
        # Result size (block header included) an automatic ring is sized for;
        # 0 until then, and for a ring of the user's shm_size, which never grows.
        self.sized_for = 0
        # The completion queue holds every entry not yet popped: up to a window
        # and a task per worker of the current epoch, and as many again left by
        # the epoch before a prefetch restart (a worker that finds the queue full
        # waits all the same).
        widest = max(window, self.widen or 0)
        self.ring = Ring.create(nworkers, 2 * (widest + nworkers) + nworkers + 8,
                                capacity, self.max_capacity)
        self.seed_base = int.from_bytes(os.urandom(7), "little")
        self.spawned = 0
        self.procs = [None] * nworkers
        # Per slot: has its current process delivered anything, and how many of
        # its processes in a row died holding no task before delivering anything.
        self.delivered = [False] * nworkers
        self.early_deaths = [0] * nworkers
        self.poisoned = []  # (index, Failure) of items given up on, not yet returned
        self.last_check = time.monotonic()
        self.closed = False
        # Arrival interval estimate for wake-up coalescing.
        self.want = 1
        self.rate_count = 0
        self.rate_since = self.last_check
        try:
            for w in range(nworkers):
                self._start(w)
        except BaseException:
            _shutdown(self.ring, self.procs, self.owner)
            raise
        self._finalizer = weakref.finalize(
            self, _shutdown, self.ring, self.procs, self.owner)

    def _start(self, w):
        self.spawned += 1
        seed = (self.seed_base * 1_000_003 + self.spawned) % 2**63
        # The parent-death signal fires when the *thread* that started the worker
        # ends: only the main thread's (or the fork server's) lasts as long as
        # the process. The worker's watchdog covers the other cases.
        pdeathsig = (self.ctx.get_start_method() == "forkserver"
                     or threading.current_thread() is threading.main_thread())
        p = self.ctx.Process(
            target=_worker.main,
            # seterr's setting goes along: a spawned or forkserver worker would
            # otherwise wrap what the views it evaluates raise, passthrough or not
            args=(self.ring, w, self.payload, self.call, seed, os.getpid(),
                  pdeathsig, seterr()),
            name=f"seqtools-worker-{w}",
            daemon=True,
        )
        p.start()
        self.procs[w] = p
        self.delivered[w] = False

    def close(self):
        self.closed = True
        self._finalizer()

    def check_owner(self):
        if _pid != self.owner:
            raise RuntimeError(
                f"this loader belongs to process {self.owner}, and this process "
                f"({_pid}) is a child forked from it: its workers answer that "
                "process only. Create a loader in the child process")

    def _check_workers(self):
        """Replace dead workers; return [(index, Failure)] of items given up on.

        Raises EvaluationError when the processes of one slot keep dying before
        they do anything (they cannot start).
        """
        poisoned = []
        for w, p in enumerate(self.procs):
            if p.exitcode is None:
                continue
            index, deaths = self.ring.worker_reset(w)
            code = p.exitcode
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            if index < 0 and not self.delivered[w]:
                self.early_deaths[w] += 1
                if self.early_deaths[w] >= MAX_DEATHS:
                    self.close()
                    raise EvaluationError(self._start_failure(
                        f"worker processes died {self.early_deaths[w]} times in a "
                        f"row before finishing any task (the last one by {how})"))
            else:
                self.early_deaths[w] = 0
            if index >= 0 and deaths >= MAX_DEATHS:
                self.ring.task_drop(index)
                what = "call" if self.call else "item"
                poisoned.append((index, _worker.Failure(_worker.ERR_USER, (
                    f"{what} {index} killed {deaths} worker processes in a row "
                    f"(last one by {how}); it was given up on"))))
            if self.closed:  # closed from another thread meanwhile: no new worker
                break
            self._start(w)
        return poisoned

    def _start_failure(self, what, text=""):
        """The message for workers that cannot start, with the likely causes."""
        method = self.ctx.get_start_method()
        return (
            f"the worker processes of the loader created at {self.origin} cannot "
            f"start (start method {method!r}): {what}.{text}\n"
            "Likely causes:\n"
            "- with the 'spawn' or 'forkserver' start method (forkserver is "
            "Python 3.14's default on Linux), each worker imports the main script "
            "again as a module, without running its `if __name__ == "
            "'__main__':` block: create the loader inside that block, and define "
            "the sampler, and whatever it uses, at module level outside it;\n"
            "- start_hook ended or crashed the process (os._exit, sys.exit, a "
            "segmentation fault);\n"
            "- the process was killed (signal 9: by the kernel when out of memory)."
            "\nA worker's own error output, if any, is on stderr above")

    def _capacity_for(self, need, window=None):
        """Data-area bytes for results of ``need`` bytes each (header included),
        for the pool's window or ``window``."""
        # A result whose large array the allocation hook built in place comes in
        # a block with the hook's headroom in front (_ring.HOOK_HEADROOM).
        need += HOOK_HEADROOM + ALIGN
        window = self.window if window is None else window
        capacity = _round_up(max(need * (window + self.nworkers + 2), MIN_RING),
                             ALIGN)
        return min(capacity, _round_up(self.max_capacity - ALIGN + 1, ALIGN))

    def _size(self, requested):
        if self.widen is not None:
            if self._capacity_for(requested, self.widen) <= WIDEN_BUDGET:
                self.window = self.widen
                self.ring.task_set_window(self.window)
            self.widen = None
        capacity = self._capacity_for(requested)
        _check_memory(capacity)
        self.ring.set_capacity(capacity)
        self.sized_for = requested

    def _grow(self, s):
        """Size an automatically sized ring anew for a larger result; True if done.

        Called when the ring is stalled: the workers wait for space that cannot
        be found while the consumer holds what it holds. If a waiting worker's
        result (the blocks it holds and the one it waits for) is larger than the
        results the ring was sized for (from the first one), the ring grows as if
        the first result had been that large. Results of the expected size never
        grow it, so a consumer that keeps every result still gets the stall's
        BufferError rather than a ring growing without end.
        """
        need = max(s["waiting_for"], s.get("waiting_total", 0))
        if not self.sized_for or need <= self.sized_for:
            return False
        capacity = self._capacity_for(need)
        if capacity <= s["capacity"]:
            return False
        try:
            _check_memory(capacity - s["capacity"])
        except MemoryError:
            return False  # the stall's message says what to do
        self.ring.grow(capacity)
        self.sized_for = need
        return True

    def _stalled(self):
        """Whether no result can come until the consumer frees space, and the
        ring's stats: a worker waits for space while nothing is queued for the
        consumer and no worker holding blocks is on its way to a commit."""
        s = self.ring.stats()
        return (s["space_waiters"] > 0 and s["committed"] == 0
                and s["reserved_active"] == 0 and s["kept_active"] == 0), s

    def _entry(self, e):
        """``(index, epoch, offset, nbytes, failure)`` of a popped entry."""
        offset, nbytes, index, epoch, worker, kind = e
        self.delivered[worker] = True
        self.early_deaths[worker] = 0
        if kind != KIND_ERROR:
            return index, epoch, offset, nbytes, None
        if offset:
            failure = _transport.decode(self.ring, offset, nbytes)
        else:
            failure = _worker.Failure(
                _worker.ERR_USER,
                "(the error report did not fit in the shared-memory ring: pass a "
                "larger shm_size to see it)")
        if failure.code == _worker.ERR_START:
            self.close()
            raise EvaluationError(self._start_failure(
                "a worker reported", "\n" + failure.text))
        return index, epoch, 0, 0, failure

    def next_entry(self, slack, evict=None):
        """Block until the next completed task.

        Returns ``(index, epoch, offset, nbytes, failure)``: ``failure`` is None
        or the :class:`_worker.Failure` that answered the task. Poisoned items
        come back as failures too (epoch None).

        ``slack``: how many results may be waited for at once when none is queued
        without stalling the workers or waiting for tasks that do not exist (the
        caller knows its window).  The parent asks to be woken once
        ``min(slack, self.want)`` results are queued, where ``self.want`` is how
        many arrive within COALESCE_DELAY at the rate measured lately: 1 whenever
        results come slower than that, so a slow pipeline is never made to wait.
        A queued result is always returned at once.

        ``evict``: called when the ring is stalled (a worker waits for space
        that only the consumer can free); returns True if it freed some, by
        moving results the consumer holds for itself (not the user's) out of
        the ring.

        Every wait is bounded: a dead worker is replaced within CHECK_EVERY
        seconds, and a ring that stays stalled for STALL seconds, with no space
        freed and nothing queued in the meantime, raises BufferError.
        """
        stalled_since = None
        events = None
        want = max(1, min(slack, self.want))
        while True:
            if self.poisoned:
                index, failure = self.poisoned.pop(0)
                return index, None, 0, 0, failure
            try:
                e = self.ring.pop(POLL, want)
            except RingClosed:
                raise RuntimeError("the loader was closed") from None
            now = time.monotonic()
            if e is not None:
                self.rate_count += 1
                if self.rate_count == RATE_EVERY:
                    self.want = _coalesce((now - self.rate_since) / RATE_EVERY)
                    self.rate_count = 0
                    self.rate_since = now
            if e is None or now - self.last_check > CHECK_EVERY:
                self.last_check = now
                # Several items may be given up on at once, and an entry may have
                # been popped too: each is returned in turn, none is dropped.
                self.poisoned.extend(self._check_workers())
                if self.poisoned and e is None:
                    continue
            if e is None:
                stalled, s = self._stalled()
                if stalled and evict is not None and evict():
                    stalled_since = None
                    continue
                if stalled and self._grow(s):
                    stalled_since = None
                    continue
                moved = (s["space_events"], s["ready_events"])
                if not stalled or stalled_since is None or moved != events:
                    stalled_since = now if stalled else None
                    events = moved
                elif now - stalled_since > STALL:
                    raise BufferError(_stall_message(s))
                continue
            if e[0] == "unsized":
                self._size(e[1])
                continue
            return self._entry(e)


def _stall_message(s):
    """Why a stalled ring is stuck, from ``Ring.stats()``, and what to do."""
    n = s["popped"]
    results = f"{n} result{'s' if n != 1 else ''}"
    free = s["capacity"] - s["used"]
    need = s["waiting_for"]
    if n == 0:
        return (f"the shared-memory ring ({s['capacity']} bytes) is too small for "
                f"the results the workers write at once: each holds part of its "
                f"result and waits for room for the rest ({need} more bytes, "
                f"{free} free). Pass a larger shm_size (the largest result times "
                "the number of workers, twice over)")
    if need and free >= need > s["largest_free"]:
        return (f"the shared-memory ring has {free} of {s['capacity']} bytes free, "
                f"but not in one piece: a worker needs {need} contiguous bytes and "
                f"the largest free run is {s['largest_free']}: the {results} handed "
                f"out earlier and still referenced split{'s' if n == 1 else ''} it. "
                "Copy the arrays you keep (np.array(x)), drop them sooner, or pass "
                "a larger shm_size (twice the largest result or more)")
    if need > free:
        return (f"the shared-memory ring has {free} of {s['capacity']} bytes free, "
                f"less than the {need} bytes a worker needs: the {results} handed "
                f"out earlier and still referenced take{'s' if n == 1 else ''} the "
                "rest. Copy the arrays you keep (np.array(x)), drop them sooner, or "
                "pass a larger shm_size (twice the largest result or more)")
    return (f"the shared-memory ring is full ({s['used']} of {s['capacity']} "
            f"bytes): {results} handed out earlier are still referenced, so workers "
            "cannot write new ones. Copy the arrays you keep (np.array(x)), drop "
            "them sooner, or pass a larger shm_size")


def _raise_failure(failure, what):
    """Raise the failure that answered a task: EvaluationError saying ``what``
    with the worker's traceback text, or under ``seterr('passthrough')`` the
    worker's own exception (when it could be pickled), chained to that text."""
    if passthrough() and failure.code == _worker.ERR_USER:
        exc = failure.exception()
        if exc is not None:
            raise exc from WorkerTraceback(failure.text)
    raise EvaluationError(f"{what}:\n{failure.text}")


def _shutdown(ring, procs, owner):
    """Close the ring and stop the workers, in the process that started them."""
    if _pid != owner:
        return  # a forked child's copy: the ring and workers are its parent's
    ring.close()
    deadline = time.monotonic() + 2.0
    for p in procs:
        if p is not None:
            p.join(max(0.0, deadline - time.monotonic()))
    for p in procs:
        if p is not None and p.exitcode is None:
            p.kill()
            p.join(1.0)


# This process's id, kept current across fork (os.getpid() is a system call).
_pid = os.getpid()


def _after_fork():
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_after_fork)


class _Closing:
    """``with`` support for the loaders: leaving the block calls ``close()``."""

    __slots__ = ()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _ProcessPrefetch(_Closing, View):
    """Items of a sequence computed ahead, in order, by worker processes."""

    def __init__(self, seq, n, nworkers, max_buffered, start_hook, shm_size,
                 start_method, call=False, origin=None, widen=None):
        View.__init__(self, n)
        # call: the workers call seq() for item i (an ordered load_buffers);
        # widen: see _Pool (the window is the pool's: it may widen once)
        self._origin = origin or creation_site(3)
        self._call = call
        self._pool = _Pool(seq, call, nworkers, max_buffered, start_hook,
                           shm_size, start_method, self._origin, widen)
        self._end = -1 if n is None else n
        self._ready = {}  # index -> (offset, nbytes, failure) of results ahead
        self._evicted = {}  # index -> result copied out of the ring (see _evict)
        self._lock = threading.Lock()
        self._restart(0)

    def _restart(self, start):
        ring = self._pool.ring
        for offset, nbytes, _ in self._ready.values():
            if offset:
                _transport.decode(ring, offset, nbytes)  # dropped: blocks released
        self._ready.clear()
        self._evicted.clear()
        self._epoch = ring.task_reset(start, self._end, self._pool.window)
        self._next = start

    def _get(self, i):
        pool = self._pool
        pool.check_owner()
        with self._lock:  # threads sharing the view take their turns
            if i != self._next:
                self._restart(i)
            ready = self._ready
            try:
                if i in ready:
                    offset, nbytes, failure = ready.pop(i)
                else:
                    while True:
                        slack = _prefetch_slack(i, pool.window, self._end, len(ready),
                                                pool.nworkers)
                        index, epoch, offset, nbytes, failure = pool.next_entry(
                            slack, self._evict)
                        if epoch is not None and epoch != self._epoch:
                            if offset:  # a stale result: dropping it frees its blocks
                                _transport.decode(pool.ring, offset, nbytes)
                            continue
                        if index == i:  # most often: the item waited for
                            break
                        ready[index] = (offset, nbytes, failure)
            except KeyboardInterrupt:
                self.close()
                raise
            self._next = i + 1
            pool.ring.task_advance(i + 1)
            if failure is not None:
                _raise_failure(failure, _call_failed(self._pool.target, i, self._origin)
                               if self._call else (
                    f"failed to evaluate item {i} of prefetch created at "
                    f"{self._origin} in a worker process"))
            if i in self._evicted:
                return self._evicted.pop(i)
            return _transport.decode(pool.ring, offset, nbytes)

    def _evict(self):
        """Copy the results computed ahead out of the ring, freeing their blocks.

        Called when the ring is stalled while waiting for the next item: its
        worker needs more contiguous space than is free, and the results held
        here for later items are what fills the ring (say, one large item among
        small ones). They are copied to private memory (a pickle round trip: the
        arrays are copied, as anything else in a result already was) and their
        blocks released; the item waited for can then be written. Returns True
        if any block was freed.
        """
        ring = self._pool.ring
        freed = False
        for index, (offset, nbytes, failure) in list(self._ready.items()):
            if offset and failure is None:
                value = _transport.decode(ring, offset, nbytes)
                self._evicted[index] = pickle.loads(pickle.dumps(value, protocol=5))
                del value  # the last reference: its blocks go back to the ring
                self._ready[index] = (0, 0, None)
                freed = True
        return freed

    def close(self):
        """Stop the workers now (otherwise done when the view is garbage-collected)."""
        self._pool.close()

    def __reduce__(self):
        raise TypeError("a prefetch view cannot be pickled; prefetch inside the "
                        "workers' sequence instead of sending one")


def _item_result(view, i, value, exc):
    """``value``, item ``i`` of a thread prefetch ``view``, or ``exc`` (raised
    evaluating it) raised as its evaluation error."""
    if exc is not None:
        try:
            raise exc
        except BaseException as e:
            raise_evaluation_error(view, i, e)
    return value


class _ThreadPrefetch(_Closing, View):
    """Items of a sequence computed ahead, in order, by worker threads."""

    def __init__(self, seq, n, nworkers, max_buffered, start_hook):
        View.__init__(self, n)
        self._work = _ThreadWork(seq, False, n, max_buffered, True)
        self._workers = _start_threads(self._work, nworkers, start_hook,
                                       "seqtools-prefetch")
        self._next = 0
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, self._work.close)

    def _get(self, i):
        with self._lock:  # threads sharing the view take their turns
            if i != self._next:
                self._work.restart(i)
            self._next = i + 1
            try:
                _, value, exc = self._work.take(i)
            except KeyboardInterrupt:
                self.close()
                raise
            except StopIteration:
                raise ValueError("this prefetch view was closed") from None
            except BaseException as e:
                self.close()
                _start_hook_failed(e, "prefetch", self._origin)
        return _item_result(self, i, value, exc)

    def close(self):
        """Stop the worker threads (each ends after its current item)."""
        self._finalizer()


class _CopyAhead:
    """Items that are each one native copy, computed ahead in order: the
    consumer's thread plans item ``k`` (``plan(k) -> (job, value)``, Python:
    index arithmetic, allocation, checks) and submits its copy to a pool of
    native threads, which run it with no GIL. On a GIL build the copies then
    overlap the consumer's Python and each other, with no GIL hand-over per
    item; threads running Python could do neither. ``plan(k)`` returns None for
    an item that is not one copy: the consumer reads it itself (``read(k)``).
    Not thread-safe: the loader's lock serialises callers.
    """

    _READ = object()  # entry value: the consumer reads the item itself

    def __init__(self, plan, read, nthreads, window, end, first=None):
        self.plan, self.read = plan, read
        self.window, self.end = window, end
        self.pool = _stack.CopyPool(nthreads)
        self.pending = {}  # k -> (job, value, exception): issued, not taken
        self.issued = 0
        self.pid = os.getpid()
        if first is not None:  # plan(0), made by the caller's dispatch
            self.pending[0] = self._submit(first)
            self.issued = 1
        self._issue(0)

    def _submit(self, planned):
        if planned is None:
            return None, self._READ, None
        job, value = planned
        try:
            self.pool.submit(job)
        except ValueError:  # closed, by another thread
            raise _CopyAhead.Closed from None
        return job, value, None

    def _entry(self, k):
        try:
            planned = self.plan(k)
        except Exception as e:  # the item's error: raised when it is taken
            return None, None, e
        return self._submit(planned)

    def _issue(self, k):
        """Plan and submit the items after ``k`` that the window allows."""
        limit = k + self.window + 1
        if self.end is not None:
            limit = min(limit, self.end)
        for j in range(self.issued, limit):
            self.pending[j] = self._entry(j)
        self.issued = max(self.issued, limit)

    def restart(self, start):
        """Drop the items ahead (their copies are cancelled or waited for)."""
        self.pending.clear()
        self.issued = start

    def take(self, k):
        """``(value, exception)`` of item ``k``, planned now if it was not."""
        if os.getpid() != self.pid:
            raise RuntimeError(
                "this loader's copy threads belong to the process that created it "
                f"(pid {self.pid}), not to this forked child: create a loader in "
                "the child")
        entry = self.pending.pop(k, None)
        if entry is None:
            entry = self._entry(k)
            self.issued = max(self.issued, k + 1)
        self._issue(k)
        job, value, exc = entry
        if value is self._READ:
            try:
                return self.read(k), None
            except Exception as e:
                return None, e
        if job is not None:
            try:
                job.wait()
            except RuntimeError:  # the pool was closed before the job ran
                raise _CopyAhead.Closed from None
        return value, exc

    class Closed(Exception):
        """Raised by take() when the loader was closed meanwhile."""

    def close(self):
        self.pool.close()
        self.pending.clear()


class _CopyPrefetch(_Closing, View):
    """``prefetch(method='thread')`` of a view whose items are native copies
    (``View._copy_job``: batches of ``batch(..., collate_fn=stack)`` over arrays):
    planned ahead in the reading thread, copied by ``nworkers`` native threads."""

    def __init__(self, seq, n, nworkers, max_buffered, first):
        View.__init__(self, n)
        self._seq = seq
        self._ahead = _CopyAhead(seq._copy_job, seq.__getitem__, nworkers,
                                 max_buffered, n, first)
        self._next = 0
        self._closed = False
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, self._ahead.close)

    def _get(self, i):
        with self._lock:  # threads sharing the view take their turns
            if self._closed:
                raise ValueError("this prefetch view was closed")
            if i != self._next:
                self._ahead.restart(i)
            self._next = i + 1
            try:
                value, exc = self._ahead.take(i)
            except _CopyAhead.Closed:
                raise ValueError("this prefetch view was closed") from None
            except KeyboardInterrupt:
                self.close()
                raise
        return _item_result(self, i, value, exc)

    def close(self):
        """Stop the copy threads (each ends after its current copy)."""
        self._closed = True
        self._finalizer()


class _CopyLoader(_Closing):
    """``load_buffers(method='thread')`` of a sampler whose results are native
    copies (``sampler._copy_job(k)`` for call ``k``, as :func:`minibatches`
    has): call ``k``'s batch planned in the consumer's thread, copied by
    ``nworkers`` native threads, yielded in call order (which is also a
    completion order: unordered loaders may yield it)."""

    def __init__(self, func, max_cached, nworkers, first):
        self._origin = creation_site(3)
        self._func = func
        # Nothing _ahead holds may refer to self: the finalizer holds _ahead.
        self._ahead = _CopyAhead(func._copy_job, functools.partial(_call_as, func),
                                 nworkers, max_cached, None, first)
        self._k = 0
        self._closed = False
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, self._ahead.close)

    def __iter__(self):
        return self

    def __next__(self):
        with self._lock:
            if self._closed:
                raise StopIteration
            k = self._k
            self._k = k + 1
            try:
                value, exc = self._ahead.take(k)
            except _CopyAhead.Closed:
                raise StopIteration from None
            except KeyboardInterrupt:
                self.close()
                raise
        return _call_result(self, k, value, exc)

    def close(self):
        """Stop the copy threads (each ends after its current copy); results
        already handed out stay valid."""
        self._closed = True
        self._finalizer()


def _call_result(loader, k, value, exc):
    """``value``, the result of call ``k`` of a thread ``loader``, or ``exc``
    (raised by the call) raised as the call's error."""
    if exc is not None:
        if isinstance(exc, EvaluationError) or passthrough():
            raise exc
        raise EvaluationError(
            f"{_call_failed(loader._func, k, loader._origin, 'thread')}: "
            f"{type(exc).__name__}: {exc}") from exc
    return value


def _call_as(func, k):
    """``func()`` as call ``k`` of a loader (see :func:`call_index`)."""
    evaluating = _worker.evaluating
    evaluating.index = k
    try:
        return func()
    finally:
        evaluating.index = None


def _first_copy_job(target, start_hook):
    """``target._copy_job(0)`` when a thread loader of ``target`` can run on
    copy threads (no start_hook to run in worker threads, item 0 one copy),
    else None. The job is item 0's: the loader submits it."""
    plan = getattr(target, "_copy_job", None)
    if plan is None or start_hook is not None:
        return None
    try:
        return plan(0)
    except Exception:
        return None  # item 0 fails: the thread workers report it as usual


def prefetch(seq, nworkers=0, method="thread", max_buffered=10, start_hook=None,
             shm_size=0, *, start_method=None):
    """Wrap a sequence so that items are computed ahead by background workers.

    Reading item ``i`` queues items ``i+1 ... i+max_buffered`` for evaluation; read
    in order for best effect (reading elsewhere restarts the prefetching there).
    Infinite sequences work. With ``method='process'``, arrays in the results are
    handed over through shared memory, zero-copy: they stay valid for as long as
    they are referenced.

    Parameters
    ----------
    seq : Sequence
        The data source.
    nworkers : int
        Number of workers; ``0`` or negative means the number of cores minus that.
    method : {'thread', 'process'}
        Threads suit I/O-bound items; processes give full parallelism. Batches
        of ``batch(..., collate_fn=stack)`` over arrays (no ``start_hook``) are
        an exception: with threads, the reading thread plans each batch ahead
        and ``nworkers`` native threads copy its rows with no GIL, which
        beats process workers there.
    max_buffered : int
        At most this many items are computed ahead of the last one read (>= 1).
    start_hook : callable, optional
        Called in each worker when it starts: ``start_hook(i)`` with the worker's
        index ``0 <= i < nworkers`` (a replacement keeps the index of the worker
        it replaces), or ``start_hook()`` if it takes no argument.
    shm_size : int
        Bytes of shared memory for results in flight (processes only); 0 sizes it
        from the first result to hold ``max_buffered + nworkers + 2`` such results.
    start_method : {'fork', 'spawn', 'forkserver'}, optional
        multiprocessing start method (default: multiprocessing's current default).

    Returns
    -------
    Sequence
        A view with the items of ``seq``.

    Examples
    --------
    >>> import seqtools
    >>> squares = seqtools.prefetch([x * x for x in range(5)], nworkers=2)
    >>> list(squares)
    [0, 1, 4, 9, 16]
    """
    n = length(seq, "prefetch", "sequence", True)
    nworkers = _nworkers(nworkers, "prefetch")
    max_buffered = check_int(max_buffered, "max_buffered", "prefetch", 1)
    if start_hook is not None and not callable(start_hook):
        raise TypeError("start_hook must be callable")
    if method == "thread":
        first = _first_copy_job(seq, start_hook) if n != 0 else None
        if first is not None:
            return _CopyPrefetch(seq, n, nworkers, max_buffered, first)
        return _ThreadPrefetch(seq, n, nworkers, max_buffered, start_hook)
    if method == "process":
        return _ProcessPrefetch(seq, n, nworkers, max_buffered, start_hook, shm_size,
                                start_method)
    raise ValueError(f"method must be 'thread' or 'process', got {method!r}")


def _call_failed(func, index, origin, where="process"):
    name = getattr(func, "__qualname__", type(func).__name__)
    return (f"{name}() failed in a worker {where} (call {index}) of load_buffers "
            f"created at {origin}")


def call_index():
    """The index of the ``load_buffers`` call this thread is evaluating, else None.

    In a worker (process or thread) of :func:`load_buffers`, the ``k``-th call of
    the sampler (counting from 0 in the order calls are handed out, which is the
    order results are yielded with ``ordered=True``) sees ``k``; a call that is
    retried after its worker died sees the same ``k``. A sampler whose result is a
    function of ``call_index()`` (and of its own seed) gives the same stream
    whatever the number of workers, the method and the start method: see
    :func:`minibatches`. Under ``prefetch``, the index of the item evaluated.
    None outside a loader's worker.
    """
    return getattr(_worker.evaluating, "index", None)


class BufferLoader(_Closing):
    """Iterator over results of a function called repeatedly in worker processes.

    See :func:`load_buffers`. Use ``close()`` (or a ``with`` block) to stop the
    workers early; they also stop when the loader is garbage-collected.
    """

    def __init__(self, func, max_cached, nworkers, start_hook, shm_size,
                 start_method, ordered=False):
        self._origin = creation_site(3)
        self._func = func
        self._consumed = 0
        self._closed = False
        self._lock = threading.Lock()
        if ordered:
            # Results in call order: the ordered machinery of prefetch, over the
            # endless sequence of calls.
            self._ordered = _ProcessPrefetch(func, None, nworkers, max_cached,
                                             start_hook, shm_size, start_method,
                                             call=True, origin=self._origin)
            self._pool = self._ordered._pool
            return
        self._ordered = None
        self._pool = _Pool(func, True, nworkers, max_cached, start_hook, shm_size,
                           start_method, self._origin)
        self._pool.ring.task_reset(0, -1, max_cached)
        # Results that may be waited for at once (see _Pool.next_entry): the
        # window less one task per worker, so that none of them runs dry.
        self._slack = max_cached - nworkers

    def __iter__(self):
        return self

    def __next__(self):
        if self._closed:
            raise StopIteration
        if self._ordered is not None:
            with self._lock:
                k = self._consumed
                self._consumed += 1  # a failed call is passed, as unordered
                return self._ordered._get(k)
        pool = self._pool
        pool.check_owner()
        with self._lock:  # threads sharing the loader take their turns
            try:
                index, _, offset, nbytes, failure = pool.next_entry(self._slack)
            except KeyboardInterrupt:
                self.close()
                raise
            self._consumed += 1
            pool.ring.task_advance(self._consumed)
        if failure is not None:
            _raise_failure(failure, _call_failed(self._func, index, self._origin))
        return _transport.decode(pool.ring, offset, nbytes)

    def close(self):
        """Stop the workers; results already handed out stay valid."""
        if not self._closed:
            self._closed = True
            self._pool.close()


class _ThreadWork:
    """The state worker threads share with a thread-mode loader.

    Kept apart from the loader so that the threads do not keep the loader alive:
    when it is dropped, its finalizer closes this and the threads end.

    Work moves through two ``queue.SimpleQueue``: ``tasks`` holds ``(epoch, k)``,
    the tasks workers may start, issued by the consumer at most ``window`` ahead
    of it; ``results`` holds ``(epoch, k, value, exception)`` as workers finish.
    A hand-off is one put and one blocking get, with no lock shared by workers
    and consumer: on a free-threaded build a contended lock spins before it
    sleeps, and a Condition's wait is always contended, so the loader would
    burn the cores its workers need. The consumer side (issuing, taking,
    ``done``) runs under ``consumer``. ``restart`` bumps the epoch: workers skip
    tasks of older epochs and the consumer drops their results. Every wait is
    bounded (POLL) and rechecks ``closed``.
    """

    _CLOSED = object()  # a result that wakes the consumer of a closed loader

    def __init__(self, target, call, end, window, ordered):
        self.target = target
        self.call = call  # True: target(), else target[k]
        self.end = end  # None: endless
        self.window = window
        self.ordered = ordered
        self.tasks = queue.SimpleQueue()
        self.results = queue.SimpleQueue()
        self.consumer = threading.Lock()
        self.epoch = 0  # bumped by restart()
        self.issued = 0  # next task index to hand out
        self.consumed = 0  # tasks whose result was taken
        self.done = {}  # ordered: index -> result that came ahead of its turn
        self.start_failure = None
        self.closed = False
        self.nworkers = 0  # set by _start_threads: how many to wake on close
        with self.consumer:
            self._issue()

    def _issue(self):
        """Hand out the tasks the window allows (consumer lock held)."""
        limit = self.consumed + self.window
        if self.end is not None:
            limit = min(limit, self.end)
        epoch, put = self.epoch, self.tasks.put
        for k in range(self.issued, limit):
            put((epoch, k))
        self.issued = max(self.issued, limit)

    def close(self):
        self.closed = True
        self.done.clear()
        for _ in range(self.nworkers):
            self.tasks.put(None)  # wakes a worker, which then ends
        self.results.put(self._CLOSED)

    def restart(self, start):
        """Drop everything ahead and go on from task ``start`` (prefetch)."""
        with self.consumer:
            self.epoch += 1
            self.done.clear()
            self.issued = self.consumed = start
            self._issue()

    def work(self, start_hook, index):
        evaluating = _worker.evaluating
        try:
            _worker.run_start_hook(start_hook, index)
        except BaseException as e:
            self.results.put((None, -1, None, e))
            return
        target, call = self.target, self.call
        get, put = self.tasks.get, self.results.put
        Empty = queue.Empty
        while True:
            try:
                task = get(timeout=POLL)
            except Empty:
                if self.closed:
                    return
                continue
            if task is None or self.closed:
                return
            epoch, k = task
            if epoch != self.epoch:
                continue  # issued before a restart: nobody waits for it
            evaluating.index = k
            try:
                result = (epoch, k, target() if call else target[k], None)
            except BaseException as e:  # SystemExit too: it answers this task
                result = (epoch, k, None, e)
            finally:
                evaluating.index = None
            if self.closed:
                return
            put(result)
            del result

    def take(self, k=None):
        """Result (index, value, exception) of task ``k`` (ordered), or of the
        next task to complete. Raises StopIteration once closed, and what a
        start_hook raised."""
        with self.consumer:
            if self.ordered and k is None:
                k = self.consumed
            result = self.done.pop(k, None) if self.ordered else None
            get, Empty = self.results.get, queue.Empty
            while result is None:
                if self.closed:
                    raise StopIteration
                try:
                    r = get(timeout=POLL)
                except Empty:
                    continue
                if r is self._CLOSED:
                    continue  # closed: the check above ends the wait
                epoch, i, value, exc = r
                if epoch is None:  # a worker's start_hook failed
                    if self.start_failure is None:
                        self.start_failure = exc
                    raise exc
                if epoch != self.epoch:
                    continue  # a task of before a restart
                if not self.ordered or i == k:
                    result = (i, value, exc)
                else:
                    self.done[i] = (i, value, exc)
            self.consumed += 1
            self._issue()
            return result


def _start_threads(work, nworkers, start_hook, name):
    threads = [threading.Thread(target=work.work, args=(start_hook, w), daemon=True,
                                name=f"{name}-{w}")
               for w in range(nworkers)]
    work.nworkers = nworkers
    for t in threads:
        t.start()
    return threads


def _start_hook_failed(exc, what, origin):
    if passthrough():
        raise exc
    raise EvaluationError(
        f"start_hook failed in a worker thread of {what} created at {origin}: "
        f"{type(exc).__name__}: {exc}") from exc


class _ThreadLoader(_Closing):
    """Iterator over results of a function called repeatedly by worker threads.

    See :func:`load_buffers` with ``method='thread'``.
    """

    def __init__(self, func, max_cached, nworkers, start_hook, ordered):
        self._origin = creation_site(3)
        self._func = func
        self._work = _ThreadWork(func, True, None, max_cached, ordered)
        self._threads = _start_threads(self._work, nworkers, start_hook,
                                       "seqtools-load_buffers")
        self._finalizer = weakref.finalize(self, self._work.close)

    def __iter__(self):
        return self

    def __next__(self):
        try:
            index, value, exc = self._work.take()
        except StopIteration:
            raise
        except KeyboardInterrupt:
            self.close()
            raise
        except BaseException as e:  # start_hook failed: the loader cannot go on
            self.close()
            _start_hook_failed(e, "load_buffers", self._origin)
        return _call_result(self, index, value, exc)

    def close(self):
        """Stop the workers (each ends after its current call); results already
        handed out stay valid."""
        self._finalizer()


def load_buffers(func, max_cached=2, nworkers=0, start_hook=None, shm_size=0, *,
                 start_method=None, ordered=False, method="process"):
    """Call ``func()`` over and over in background workers and iterate its results.

    Typical use is a minibatch sampler feeding a training loop: the loading cost is
    hidden behind the loop's own work. Results are yielded as they complete, or
    in call order with ``ordered=True``. With process workers (the default), arrays
    in results view shared memory, zero-copy, and remain valid for as long as they
    are referenced; large arrays that ``func`` makes with numpy are built in shared
    memory to begin with and are not copied at all (see "How background loading
    works" in the documentation). Each worker process seeds Python's and numpy's
    global random generators differently, so workers never repeat each other's
    draws; for a stream that does not depend on the workers, make each result a
    function of :func:`call_index` (as :func:`minibatches` does).

    Parameters
    ----------
    func : callable
        Called without arguments; returns arrays, scalars or picklable objects,
        possibly nested in tuples, lists and dicts.
    max_cached : int
        At most this many results are computed ahead of the consumer (>= 1).
    nworkers : int
        Number of workers; ``0`` or negative: cores minus that.
    start_hook : callable, optional
        Called in each worker when it starts: ``start_hook(i)`` with the worker's
        index ``0 <= i < nworkers``, or ``start_hook()`` if it takes no argument.
    shm_size : int
        Bytes of shared memory for results in flight (processes only); 0 sizes it
        from the first result.
    start_method : {'fork', 'spawn', 'forkserver'}, optional
        multiprocessing start method (default: multiprocessing's current default).
    ordered : bool
        Yield the result of call ``k`` in position ``k`` (a slow call holds back
        those after it, up to ``max_cached``); by default, as they complete.
    method : {'process', 'thread'}
        Worker processes, or threads of this process: threads share the sampler
        (it must be thread-safe) and pay off when it releases the GIL or on a
        free-threaded Python. A :func:`minibatches` sampler over arrays (no
        ``start_hook``) is planned call by call in the consuming thread and
        copied by ``nworkers`` native threads with no GIL, in call order.

    Returns
    -------
    BufferLoader
        An endless iterator of results.

    Examples
    --------
    >>> import numpy as np, seqtools
    >>> def sample():
    ...     return np.random.rand(4, 3), np.random.randint(10, size=4)
    >>> with seqtools.load_buffers(sample, max_cached=4, nworkers=2) as batches:
    ...     X, y = next(batches)
    >>> X.shape, y.shape
    ((4, 3), (4,))
    """
    if not callable(func):
        raise TypeError(f"load_buffers needs a callable, got {type(func).__name__}")
    max_cached = check_int(max_cached, "max_cached", "load_buffers", 1)
    nworkers = _nworkers(nworkers, "load_buffers")
    if start_hook is not None and not callable(start_hook):
        raise TypeError("start_hook must be callable")
    if not isinstance(ordered, bool):
        raise TypeError(f"ordered must be True or False, got {ordered!r}")
    if method == "thread":
        first = _first_copy_job(func, start_hook)
        if first is not None:
            return _CopyLoader(func, max_cached, nworkers, first)
        return _ThreadLoader(func, max_cached, nworkers, start_hook, ordered)
    if method == "process":
        return BufferLoader(func, max_cached, nworkers, start_hook, shm_size,
                            start_method, ordered)
    raise ValueError(f"method must be 'process' or 'thread', got {method!r}")
