"""The engine of worker processes, over one shared-memory ring.

Process workers hand results over through one shared-memory ring (``_ring``, C
in ``csrc/ringbuf.c``): a worker copies each array of its result into a ring
block with the GIL released, and the parent rebuilds the result as numpy arrays
viewing the block, zero-copy. A block is given back when the last array viewing
it is garbage-collected, so results stay valid for as long as they are held;
holding many only slows the workers down (backpressure), and holding the whole
ring is reported.

The region has no name in ``/dev/shm`` (memfd), so nothing outlives the
processes, whatever kills them. Workers get it by inheritance (fork) or fd
passing (spawn, forkserver). A dead worker is noticed within a second, replaced,
and its task given to another worker; a task that keeps killing workers is
answered with a failure. See :mod:`.engine` for the protocol.
"""

import logging
import multiprocessing
import os
import pickle
import select
import signal
import sys
import threading
import time
import weakref

from ..errors import LoaderTimeout, WorkersCannotStart, seterr
from . import _transport, _worker
from ._ring import ALIGN, HOOK_HEADROOM, KIND_ERROR, Ring, RingClosed
from .engine import PROCESS, EngineClosed
from .memory import (
    available_memory,
    check_memory,
    physical_memory,
    round_up,
    stall_message,
)

__all__ = ["ProcessEngine", "check_not_importing_main"]

log = logging.getLogger("seqtools")

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
# A pool made with a wider window to grow to (``_Pool(widen=...)``: the ordered
# loader of ``epochs``, a window tuned by ``nworkers="auto"``) takes it, or
# the widest of its halves that fits, at its first result if the ring sized
# for it stays within this many bytes: small results, which come fast enough
# that a window of ten leaves the workers idle while the consumer waits for
# the one late result it needs next.
WIDEN_BUDGET = 64 << 20


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


def _main_guard_message(origin, method):
    return (
        f"the loader created at {origin} cannot start its worker processes: each "
        f"worker (start method {method!r}) imports the main script again, and "
        "the script creates this loader again when imported. Put the code that "
        "creates and reads loaders under `if __name__ == '__main__':`, and define "
        "the sampler (or sequence), and whatever it uses, at module level outside "
        "it (the 'spawn' and 'forkserver' start methods need this: macOS, and "
        "Linux from Python 3.14 on)")


def check_not_importing_main(origin):
    """End this process quietly if it is a worker process importing the main
    script (spawn, forkserver) that creates a loader at import: it exits with
    ``_worker.EXIT_IMPORTING_MAIN``, which its parent reports once, first,
    instead of each worker's traceback of multiprocessing's bootstrap error."""
    # multiprocessing marks a process that is still importing the parent's main
    # module (spawn.py's _check_not_importing_main reads the same flag).
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # os._exit: a forkserver child would turn SystemExit into exit code 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(_worker.EXIT_IMPORTING_MAIN)


class _Pool:
    """Worker processes around one ring: the consumer side of the protocol.

    Only the process that made it acts on it: a child forked from that process
    (a user's own multiprocessing.Process, a torch DataLoader worker) neither
    closes the ring nor stops the workers when its copy is dropped.
    """

    def __init__(self, target, call, nworkers, window, start_hook, shm_size,
                 start_method, origin, widen=None, timeout=None, stall_report=None,
                 shm_budget=None, slots=None, widest=None):
        # slots, widest: the most workers and the widest window a tuner may
        # take (nworkers="auto"); the ring has room for both from the start.
        slots = max(nworkers, slots or nworkers)
        self.ctx = multiprocessing.get_context(start_method)
        self.timeout = timeout
        self.stall_report = stall_report
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
        self.owner = PROCESS.pid
        capacity = round_up(shm_size, ALIGN)
        if capacity:
            check_memory(capacity)
        self.max_capacity = max(capacity, physical_memory())
        # What an automatic ring may grow to (see _grow); a ring of the user's
        # shm_size never grows.
        if shm_budget is None:
            shm_budget = (available_memory() or physical_memory()) // 2
        self.budget = 0 if capacity else min(
            max(shm_budget // ALIGN * ALIGN, MIN_RING),
            self.max_capacity // ALIGN * ALIGN)
        self.grown = False  # for the one warning when it first grows
        # Result size (block header included) an automatic ring is sized for;
        # 0 until then, and for a ring of the user's shm_size, which never grows.
        self.sized_for = 0
        # The completion queue holds every entry not yet popped: up to a window
        # and a task per worker of the current generation, and as many again
        # left by the generation before a prefetch reset (a worker that finds
        # the queue full waits all the same).
        widest = max(window, self.widen or 0, widest or 0)
        self.ring = Ring.create(slots, 2 * (widest + slots) + slots + 8,
                                capacity, self.max_capacity)
        # A result larger than an automatic ring waits for it to grow, up to the
        # budget (set before the ring is sized: no worker sees it sized without)
        self.ring.set_max_capacity(self.budget)
        self.seed_base = int.from_bytes(os.urandom(7), "little")
        self.spawned = 0
        self.procs = [None] * slots  # those of slots nworkers and up: retiring
        self.retiring = set()  # slots whose worker was asked to end (resize)
        # Per slot: has its current process delivered anything, and how many of
        # its processes in a row died holding no task before delivering anything.
        self.delivered = [False] * slots
        self.early_deaths = [0] * slots
        self.poisoned = []  # (index, Failure) of items given up on, not yet returned
        self.given_up = 0  # items given up on, returned
        self.restarts = 0  # workers replaced
        self.last_check = time.monotonic()
        self.last_result = self.last_check  # for stall reports
        self.stall_reported = False
        self.stall_reported_at = 0.0
        self.stopped = [False] * slots  # stopped by a timeout: not "died"
        # Per slot, a pipe the worker's faulthandler writes its stacks into.
        self.stack_pipes = []
        for _ in range(slots):
            r, w = os.pipe()
            os.set_blocking(r, False)
            self.stack_pipes.append((r, w))
        self.closed = False
        # Arrival interval estimate for wake-up coalescing.
        self.want = 1
        self.rate_count = 0
        self.rate_since = self.last_check
        try:
            for w in range(nworkers):
                self._start(w)
        except BaseException:
            _shutdown(self.ring, self.procs, self.owner, self.stack_pipes)
            raise
        self._finalizer = weakref.finalize(
            self, _shutdown, self.ring, self.procs, self.owner, self.stack_pipes)

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
                  pdeathsig, seterr(), _worker.StackPipe(self.stack_pipes[w][1])),
            name=f"seqtools-worker-{w}",
            daemon=True,
        )
        p.start()
        self.procs[w] = p
        self.delivered[w] = False

    def close(self):
        self.closed = True
        self._finalizer()
        # The mapping goes with the last reference to the ring: the arrays the
        # user holds keep it (their blocks reference it), this pool no longer.
        self.ring = _CLOSED_RING

    def _check_workers(self):
        """Replace dead workers; return [(index, Failure)] of items given up on.

        Raises EvaluationError when the processes of one slot keep dying before
        they do anything (they cannot start).
        """
        poisoned = []
        if self.closed:  # from another thread meanwhile: its processes are closed
            return poisoned
        for w, p in enumerate(self.procs):
            if p is None or p.exitcode is None:
                continue
            index, deaths = self.ring.worker_reset(w)
            if w in self.retiring:  # ended as asked (resize): not replaced
                self.retiring.discard(w)
                self.procs[w] = None
                p.close()
                continue
            code = p.exitcode
            if code == _worker.EXIT_IMPORTING_MAIN:
                self.close()
                raise WorkersCannotStart(_main_guard_message(self.origin, method=(
                    self.ctx.get_start_method())))
            how = f"signal {-code}" if code < 0 else f"exit code {code}"
            what = "call" if self.call else "item"
            if self.closed:  # closed from another thread meanwhile: no new worker
                break
            stopped, self.stopped[w] = self.stopped[w], False
            log.warning(
                "seqtools: worker %d (pid %s) of the loader created at %s ended by "
                "%s%s; a new worker replaces it%s", w, p.pid, self.origin, how,
                " (stopped after its timeout)" if stopped else
                " (killed by the kernel when out of memory?)" if code == -9 else "",
                f" and {what} {index} is retried" if index >= 0 and deaths
                < MAX_DEATHS else "")
            if index < 0 and not self.delivered[w]:
                self.early_deaths[w] += 1
                if self.early_deaths[w] >= MAX_DEATHS:
                    self.close()
                    raise WorkersCannotStart(self._start_failure(
                        f"worker processes died {self.early_deaths[w]} times in a "
                        f"row before finishing any task (the last one by {how})"))
            else:
                self.early_deaths[w] = 0
            if index >= 0 and deaths >= MAX_DEATHS:
                self.ring.task_drop(index)
                poisoned.append((index, _worker.Failure(_worker.ERR_USER, (
                    f"{what} {index} killed {deaths} worker processes in a row "
                    f"(last one by {how}); it was given up on"))))
            self._start(w)
            self.restarts += 1
        return poisoned

    def _watch(self, now, since, waiting):
        """Raise LoaderTimeout for a task past the timeout (the one ``waiting``
        for, or any); log once when no result has come since ``since`` for
        ``stall_report`` seconds, with what each busy worker is doing."""
        # Every slot with a process, retiring ones included: a worker asked to
        # end (resize) may still hold the task the consumer waits for.
        live = [w for w, p in enumerate(self.procs) if p is not None]
        timeout = self.timeout
        if timeout is not None:
            for w in live:
                index, running = self.ring.worker_task(w)
                if index >= 0 and running > timeout and waiting in (None, index):
                    self._time_out(w, index, running)
        if since > self.stall_reported_at:
            self.stall_reported = False  # results came since the last report
        if (self.stall_report is not None and not self.stall_reported
                and now - since > self.stall_report):
            self.stall_reported_at = now
            self.stall_reported = True
            busy = []
            for w in live:
                index, running = self.ring.worker_task(w)
                if index >= 0:
                    busy.append(f"worker {w} (pid {self.procs[w].pid}) on "
                                f"{self._task_name(index)} for {running:.1f} s:\n"
                                f"{self._stack(w)}")
            log.warning(
                "seqtools: the loader created at %s has had no result for %.0f s "
                "(stall_report=%s). %s", self.origin, now - since, self.stall_report,
                "\n".join(busy) if busy else "No worker holds a task.")

    def _task_name(self, index):
        return f"{'call' if self.call else 'item'} {index}"

    def _stack(self, w):
        """Worker ``w``'s Python stacks, as faulthandler writes them."""
        r = self.stack_pipes[w][0]
        try:
            while os.read(r, 65536):  # what an earlier worker of the slot left
                pass
        except BlockingIOError:
            pass
        try:
            os.kill(self.procs[w].pid, _worker.STACK_SIGNAL)
        except ProcessLookupError:
            return "(the worker is gone)"
        chunks = []
        deadline = time.monotonic() + 1.0
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([r], [], [], min(0.1, left) if chunks
                                        else max(0.0, left))
            if not ready:
                break
            try:
                data = os.read(r, 65536)
            except BlockingIOError:
                continue
            if not data:
                break
            chunks.append(data)
        text = b"".join(chunks).decode(errors="replace").strip()
        return text or "(no stack came back within 1 s)"

    def _time_out(self, w, index, running):
        stack = self._stack(w)
        self.stopped[w] = True
        try:
            os.kill(self.procs[w].pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        name = self._task_name(index)
        raise LoaderTimeout(
            f"{name} of the loader created at {self.origin} has run for "
            f"{running:.1f} s in worker {w} (pid {self.procs[w].pid}), past "
            f"timeout={self.timeout:g} s. The worker's Python stack:\n{stack}\n"
            f"The worker was stopped and a new one replaces it; reading again "
            f"retries {name}.", index, running, stack)

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

    def resize(self, n):
        """Run ``n`` workers from now on (a tuner's move; ``n`` at most the
        slots): new ones start in the slots after the last, the last ones are
        asked to end after their task (``_worker.RETIRE_SIGNAL``) and are not
        replaced. False if it cannot be done now: a slot to start is still
        retiring, or the ring cannot grow for the results in flight."""
        if self.closed or not 1 <= n <= len(self.procs):
            return False
        if n > self.nworkers:
            for w in list(self.retiring):  # those that ended already
                if self.procs[w].exitcode is not None:
                    self.ring.worker_reset(w)
                    self.retiring.discard(w)
                    self.procs[w].close()
                    self.procs[w] = None
            if any(w in self.retiring for w in range(self.nworkers, n)):
                return False
            if not self.make_room(self.window, n):
                return False
            for w in range(self.nworkers, n):
                self._start(w)
        else:
            for w in range(n, self.nworkers):
                self.retiring.add(w)
                try:
                    os.kill(self.procs[w].pid, _worker.RETIRE_SIGNAL)
                except ProcessLookupError:
                    pass  # already gone: _check_workers sees to its slot
        self.nworkers = n
        return True

    def make_room(self, window, nworkers):
        """Grow an automatic ring for ``window`` results ahead and ``nworkers``
        workers (a tuner's move), within the budget; False if it cannot
        (a ring of the user's shm_size, or not sized yet: no result came)."""
        if not self.sized_for:
            return False
        capacity = self._capacity_for(self.sized_for, window, nworkers)
        have = self.ring.stats()["capacity"]
        if capacity <= have:
            return True
        if capacity > self.budget:
            return False
        try:
            check_memory(capacity - have)
        except MemoryError:
            return False
        self.ring.grow(capacity)
        return True

    def _capacity_for(self, need, window=None, nworkers=None):
        """Data-area bytes for results of ``need`` bytes each (header included),
        for the pool's window and workers or ``window`` and ``nworkers``."""
        # A result whose large array the allocation hook built in place comes in
        # a block with the hook's headroom in front (_ring.HOOK_HEADROOM).
        need += HOOK_HEADROOM + ALIGN
        window = self.window if window is None else window
        nworkers = self.nworkers if nworkers is None else nworkers
        capacity = round_up(max(need * (window + nworkers + 2), MIN_RING),
                             ALIGN)
        return min(capacity, round_up(self.max_capacity - ALIGN + 1, ALIGN))

    def _size(self, requested):
        if self.widen is not None:
            # the widest of widen, widen / 2, ... (down to the window) whose
            # ring stays within WIDEN_BUDGET
            wider = self.widen
            while (wider > self.window
                   and self._capacity_for(requested, wider) > WIDEN_BUDGET):
                wider //= 2
            if wider > self.window:
                self.window = wider
                self.ring.task_set_window(self.window)
            self.widen = None
        capacity = min(self._capacity_for(requested), self.budget)
        check_memory(capacity)
        self.ring.set_capacity(capacity)
        self.sized_for = requested

    def _grow(self, s):
        """Grow an automatically sized ring, within its budget; True if done.

        Called when the ring is stalled: the workers wait for space that cannot
        be found while the consumer holds what it holds. A waiting worker's
        result larger than the results the ring was sized for (the first one)
        sizes it anew as if the first had been that large; otherwise, if the
        consumer holds results (a loop that keeps batches, as torch users may),
        the ring doubles. Either way not past ``shm_budget``: there the stall's
        BufferError says what to do. The first growth for held results logs a
        warning: memory then grows with what the loop keeps.
        """
        if not self.sized_for:
            return False  # the user's shm_size: never grows
        need = max(s["waiting_for"], s.get("waiting_total", 0))
        if need > self.sized_for:
            capacity = self._capacity_for(need)
        elif s["popped"] > 0:
            capacity = 2 * s["capacity"]
        else:
            return False
        capacity = min(capacity, self.budget)
        if capacity <= s["capacity"] or need > capacity:
            return False
        try:
            check_memory(capacity - s["capacity"])
        except MemoryError:
            return False  # the stall's message says what to do
        if need <= self.sized_for and not self.grown:
            self.grown = True
            log.warning(
                "seqtools: the shared memory of the loader created at %s grows "
                "from %.1f to %.1f MiB: the loop keeps %d of its results (batches) "
                "alive. It may grow to shm_budget=%.0f MiB; copy what you keep "
                "(np.array(x)) to keep memory flat", self.origin,
                s["capacity"] / 2**20, capacity / 2**20, s["popped"],
                self.budget / 2**20)
        self.ring.grow(capacity)
        self.sized_for = max(need, self.sized_for)
        return True

    def _stalled(self):
        """Whether no result can come until the consumer frees space, and the
        ring's stats: a worker waits for space while nothing is queued for the
        consumer and no worker holding blocks is on its way to a commit."""
        s = self.ring.stats()
        return (s["space_waiters"] > 0 and s["committed"] == 0
                and s["reserved_active"] == 0 and s["kept_active"] == 0), s

    def _entry(self, e):
        """``(index, generation, offset, nbytes, failure)`` of a popped entry."""
        offset, nbytes, index, generation, worker, kind = e
        self.delivered[worker] = True
        self.early_deaths[worker] = 0
        if kind != KIND_ERROR:
            return index, generation, offset, nbytes, None
        if offset:
            failure = _transport.decode(self.ring, offset, nbytes)
        else:
            self.ring.ack()
            failure = _worker.Failure(
                _worker.ERR_USER,
                "(the error report did not fit in the shared-memory ring: pass a "
                "larger shm_size to see it)")
        if failure.code == _worker.ERR_START:
            self.close()
            raise WorkersCannotStart(self._start_failure(
                "a worker reported", "\n" + failure.text))
        return index, generation, 0, 0, failure

    def next_entry(self, slack, evict=None, waiting=None):
        """Block until the next completed task.

        Returns ``(index, generation, offset, nbytes, failure)``: ``failure`` is None
        or the :class:`_worker.Failure` that answered the task. Poisoned items
        come back as failures too (generation None).

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

        ``waiting``: the task the caller waits for (an ordered front), or None
        (any task): what the timeout applies to.

        Every wait is bounded: a dead worker is replaced within CHECK_EVERY
        seconds, a ring that stays stalled for STALL seconds, with no space
        freed and nothing queued in the meantime, raises BufferError, a task
        past the timeout raises LoaderTimeout, and a wait with no result for
        ``stall_report`` seconds is reported once (see :meth:`_watch`).
        """
        began = None  # when the checks first run: the wait's start, near enough
        stalled_since = None
        events = None
        want = max(1, min(slack, self.want))
        while True:
            if self.poisoned:
                index, failure = self.poisoned[0]
                del self.poisoned[0]  # no call between this and the count
                self.given_up += 1
                return index, None, 0, 0, failure
            try:
                e = self.ring.pop(POLL, want, True)
            except RingClosed:
                raise EngineClosed from None
            now = time.monotonic()
            if e is not None:
                self.last_result = now
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
                if began is None:
                    began = now
                self._watch(now, max(began, self.last_result), waiting)
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
                    raise BufferError(stall_message(s, self.budget))
                continue
            if e[0] == "unsized":
                self._size(e[1])
                continue
            return self._entry(e)


class _ClosedRing:
    """What a closed pool holds instead of its ring: any use raises
    EngineClosed, as a call on a closed ring would."""

    def __getattr__(self, name):
        if name.startswith("__"):  # what tools probe (inspect, doctest, copy)
            raise AttributeError(name)
        raise EngineClosed


_CLOSED_RING = _ClosedRing()


def _shutdown(ring, procs, owner, pipes):
    """Close the ring and stop the workers, in the process that started them."""
    if PROCESS.pid != owner:
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
    for p in procs:
        if p is not None and p.exitcode is not None:
            p.close()  # its sentinel descriptor
    for pair in pipes:
        for fd in pair:
            os.close(fd)
    pipes.clear()


class ProcessEngine:
    """Worker processes computing tasks of ``target`` (see :mod:`.engine`).

    ``call``: tasks are calls ``target()``, else items ``target[k]`` for ``k <
    end`` (None: endless). ``widen``: a wider window to take at the first
    result if the ring for it stays within WIDEN_BUDGET (an automatically sized
    ring only). The other arguments are :func:`seqtools.prefetch`'s.
    """

    where = "process"
    in_order = False

    def __init__(self, target, call, end, nworkers, window, start_hook, shm_size,
                 start_method, origin, widen=None, timeout=None, stall_report=None,
                 shm_budget=None, slots=None, widest=None):
        check_not_importing_main(origin)
        self.pool = _Pool(target, call, nworkers, window, start_hook, shm_size,
                          start_method, origin, widen, timeout, stall_report,
                          shm_budget, slots, widest)
        self.end = -1 if end is None else end
        self.ready = {}  # index -> (offset, nbytes, failure) of results ahead
        self.evicted = {}  # index -> result copied out of the ring (see _evict)
        # Results take_next may wait for at once (see _Pool.next_entry): the
        # window less one task per worker, so that none of them runs dry.
        self.slack = self.pool.window - nworkers
        self.reset(0)

    def reset(self, start):
        pool = self.pool
        ring = pool.ring
        ready = self.ready
        while ready:  # each entry leaves ready before its blocks are released
            index = next(iter(ready))
            offset, nbytes, _ = ready[index]
            del ready[index]
            if offset:
                _transport.decode(ring, offset, nbytes)  # dropped: blocks released
        self.evicted.clear()
        self.generation = ring.task_reset(start, self.end, pool.window)
        # take_next's count of tasks taken is the ring's count of entries
        # acknowledged and the pool's of items given up on, from here
        self.taken_shift = start - ring.acked - pool.given_up
        self.advanced = start

    def take(self, k):
        # An entry leaves ``ready`` with no call in between (no signal handler
        # runs there, see Ring.pop), then its blocks go to the value: a
        # KeyboardInterrupt anywhere leaks no block and releases none twice;
        # the front then resets the engine.
        pool = self.pool
        ready = self.ready
        if k in ready:
            offset, nbytes, failure = ready[k]
            del ready[k]
        else:
            while True:
                slack = _prefetch_slack(k, pool.window, self.end, len(ready),
                                        pool.nworkers)
                index, generation, offset, nbytes, failure = pool.next_entry(
                    slack, self._evict, k)
                if generation is not None and generation != self.generation:
                    if offset:  # a stale result: dropping it frees its blocks
                        _transport.decode(pool.ring, offset, nbytes)
                    continue
                if index == k:  # most often: the task waited for
                    break
                ready[index] = (offset, nbytes, failure)
                pool.ring.ack()  # kept in ready now (see Ring.pop)
        if failure is not None:
            value = None
        elif k in self.evicted:
            value = self.evicted.pop(k)
        else:
            value = _transport.decode(pool.ring, offset, nbytes)
        pool.ring.task_advance(k + 1)
        return k, value, failure

    def take_next(self):
        # Tasks taken are counted as the ring acknowledges their entries (as
        # the result is decoded, see Ring.pop): a KeyboardInterrupt raised
        # anywhere in a take neither loses an entry's blocks nor shrinks or
        # widens the window.
        pool = self.pool
        self._advance()  # after a take interrupted before its advance
        index, _, offset, nbytes, failure = pool.next_entry(self.slack)
        value = (None if failure is not None
                 else _transport.decode(pool.ring, offset, nbytes))
        self._advance()
        return index, value, failure

    def _advance(self):
        pool = self.pool
        taken = pool.ring.acked + pool.given_up + self.taken_shift
        if taken != self.advanced:
            pool.ring.task_advance(taken)
            self.advanced = taken

    def _evict(self):
        """Copy the results computed ahead out of the ring, freeing their blocks.

        Called when the ring is stalled while waiting for the next task: its
        worker needs more contiguous space than is free, and the results held
        here for later tasks are what fills the ring (say, one large item among
        small ones). They are copied to private memory (a pickle round trip: the
        arrays are copied, as anything else in a result already was) and their
        blocks released; the task waited for can then be written. Returns True
        if any block was freed.
        """
        ring = self.pool.ring
        freed = False
        ready = self.ready
        for index, (offset, nbytes, failure) in list(ready.items()):
            if offset and failure is None:
                ready[index] = (0, 0, None)  # its blocks are the copy's to free
                try:
                    value = _transport.decode(ring, offset, nbytes)
                    self.evicted[index] = pickle.loads(pickle.dumps(value,
                                                                    protocol=5))
                except BaseException:  # say, an interrupt: the item is lost
                    del ready[index]  # (an ordered front resets after one)
                    raise
                del value  # the last reference: its blocks go back to the ring
                freed = True
        return freed

    # Statistics (see .stats): what the consumer's meter reads.

    def info(self):
        return {"nworkers": self.pool.nworkers, "window": self.pool.window,
                "method": "process"}

    def busy(self):
        pool = self.pool
        if pool.closed:
            return []
        return [pool.ring.worker_busy(w) for w in range(pool.nworkers)]

    def buffered(self):
        if self.pool.closed:
            return 0
        return len(self.ready) + self.pool.ring.stats()["queued"]

    def memory(self):
        if self.pool.closed:
            return 0, 0
        s = self.pool.ring.stats()
        return s["used"], s["capacity"]

    @property
    def restarts(self):
        return self.pool.restarts

    # A tuner's moves (see .tuning).

    def resize(self, n):
        if not self.pool.resize(n):
            return False
        self.slack = self.pool.window - n
        return True

    def set_window(self, window):
        pool = self.pool
        if pool.closed or not pool.make_room(window, pool.nworkers):
            return False
        pool.window = window
        pool.ring.task_set_window(window)
        self.slack = window - pool.nworkers
        return True

    def close(self):
        self.pool.close()
