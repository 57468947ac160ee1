"""The loop run by each worker process of ``prefetch`` and ``load_buffers``.

A worker claims a task (an item index, or a call number for ``load_buffers``)
from the shared ring, evaluates it, reserves a block, copies the result in and
commits it. A failure is a result too: its report (what failed, the traceback
text cut to :data:`MAX_TEXT` characters, the exception pickled when it can be)
goes through the same ring, committed as the answer to its task, so the parent
never waits on a side channel nor pairs a report with the wrong task. A worker
that cannot start (its sampler does not unpickle, its ``start_hook`` raises)
reports that as the answer to task -1 and exits.

Every wait is short, so a worker notices within a fraction of a second that the
parent died or closed the ring; a C watchdog thread (and, on Linux, the
parent-death signal) ends it even while the task's own code runs.
"""

import faulthandler
import inspect
import os
import pickle
import random
import signal
import sys
import time
import traceback

import numpy as np

from .._task import evaluating
from ..errors import seterr
from ..views.memmaps import memmap_ref
from . import _ring, _transport
from ._ring import KIND_ERROR, QueueFull, RingClosed

POLL = 0.1  # seconds between checks that the parent is alive
WATCHDOG_INTERVAL = 0.2  # seconds between the watchdog thread's checks

# An error report carries at most this many characters of traceback text: the
# start (where it was raised from) and the end (the exception), with a note of
# what was cut in between. A report is one ring block, like a result.
MAX_TEXT = 16384

KEPT_WARNING = (
    "the worker's code kept an array that seqtools.stack (or out_block) "
    "had placed in shared memory beyond the call that made it (for instance "
    "self.last = batch). That memory went to the parent process with the result "
    "and is reused for later results, so the kept array changes under whoever "
    "reads it. Copy what you keep (np.array(batch)); this worker now stacks into "
    "its own memory instead (one more copy per batch).")

ADOPTED_WARNING = (
    "an array numpy built in shared memory went to the parent process with the "
    "result, and the worker still references it after the result was sent. That "
    "memory is reused for later results; copy what you keep (np.array(x)). This "
    "worker no longer builds arrays in shared memory.")

# The allocation hook (_ring.hook_install): large arrays the task's code makes
# are built in shared memory and cross without a copy. SEQTOOLS_ALLOC_HOOK=0
# turns it off (every result is then copied once), to rule it out when debugging.
ALLOC_HOOK = os.environ.get("SEQTOOLS_ALLOC_HOOK", "1") != "0"

# The exit code of a worker whose import of the main script created a loader
# (no `if __name__ == '__main__':` guard; see process.check_not_importing_main).
EXIT_IMPORTING_MAIN = 86

# What a report is about (Failure.code).
ERR_USER = "user"  # the task's code raised
ERR_TRANSFER = "transfer"  # the result could not be sent
ERR_START = "start"  # the worker could not start: answers task -1


class Failure:
    """A failure report, as it travels from a worker to the parent.

    ``code`` is one of the ``ERR_*`` values, ``text`` the traceback text (cut to
    :data:`MAX_TEXT` characters), ``exc`` the pickled exception or None.
    """

    __slots__ = ("code", "text", "exc")

    def __init__(self, code, text, exc=None):
        self.code = code
        self.text = text
        self.exc = exc

    def __reduce__(self):
        return Failure, (self.code, self.text, self.exc)

    def exception(self):
        """The worker's exception object, or None if it did not survive pickling."""
        if self.exc is None:
            return None
        try:
            return pickle.loads(self.exc)
        except Exception:
            return None


def cut(text, limit=MAX_TEXT):
    """``text`` cut to about ``limit`` characters, keeping its start and end."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return (f"{text[:head]}\n[... {len(text) - head - tail} characters truncated "
            f"...]\n{text[-tail:]}")


def _pickled_exception(exc):
    try:
        data = pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        return None
    return data if len(data) <= MAX_TEXT else None


# -- what the parent sends a spawned worker ---------------------------------------


class _ByReference(pickle.Pickler):
    """Pickles arrays that live in a file mapping as references to the file."""

    def reducer_override(self, obj):
        if isinstance(obj, np.ndarray):
            ref = memmap_ref(obj)
            if ref is not None:
                return ref.__reduce__()
        return NotImplemented


def dumps(obj):
    """Pickle ``obj`` for a spawned worker: memory maps travel by reference.

    Wherever a memory-mapped array sits (a sequence that is one, a sampler object
    holding one, a list of them), the worker maps the same file instead of
    receiving a copy of its bytes.
    """
    import io

    f = io.BytesIO()
    _ByReference(f, protocol=pickle.HIGHEST_PROTOCOL).dump(obj)
    return f.getvalue()


def payload_for(ctx, target, start_hook, what):
    """What a worker receives: the objects (fork), else their pickle.

    Under spawn and forkserver, pickling happens once, here, so that an object
    that cannot be pickled is a clear TypeError in the parent, at start, and the
    worker unpickles it inside its own error handling (see :func:`main`).
    """
    if ctx.get_start_method() == "fork":
        return target, start_hook
    try:
        return dumps((target, start_hook))
    except Exception as e:
        raise TypeError(
            f"{what} (and start_hook) must be picklable to run in "
            f"{ctx.get_start_method()} worker processes ({type(e).__name__}: {e}); "
            "define it at module level, or use the 'fork' start method") from e


# -- the worker -----------------------------------------------------------------


def run_start_hook(start_hook, index):
    """Call a loader's start_hook in worker ``index`` (0 to nworkers - 1).

    As in SeqTools 1.4.1's process workers and torch's ``worker_init_fn``, the hook
    gets the worker's index when its signature takes one positional argument;
    a hook that takes none is called without.
    """
    if start_hook is None:
        return
    try:
        inspect.signature(start_hook).bind(index)
    except (TypeError, ValueError):  # takes no argument, or has no signature
        start_hook()
    else:
        start_hook(index)


def _parent_alive(parent_pid, ppid0):
    """False once this process was orphaned or process ``parent_pid`` ended.

    An ended process that is not reaped yet (a zombie) still answers
    ``os.kill(pid, 0)``: it counts as gone. Its own parent may wait for output
    this worker holds open before reaping it, and would wait forever.
    """
    if os.getppid() != ppid0:
        return False
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not _ring.is_zombie(parent_pid)


def _seed(seed):
    """Seed Python's and numpy's global generators differently in every worker."""
    random.seed(seed)
    # numpy's global generator has a lock. A forked worker inherits it held if
    # another thread of the parent was drawing numbers at the fork (a thread
    # loader's sampler, say): no thread of this process can ever release it, and
    # np.random.seed() or the task's own draws would wait forever. Such a
    # generator gets a fresh bit generator, and so a free lock, before seeding.
    state = np.random.mtrand._rand
    lock = state._bit_generator.lock
    if lock.acquire(blocking=False):
        lock.release()
    else:
        state.__init__(np.random.MT19937())
    np.random.seed(seed % 2**32)


def _guard(parent_pid, pdeathsig):
    """End this process with its parent, whatever its code is doing then."""
    ppid0 = os.getppid()
    if pdeathsig and hasattr(signal, "SIGKILL"):
        try:
            if _ring.set_pdeathsig(signal.SIGKILL, ppid0):
                os._exit(1)  # the parent died before the signal was set
        except OSError:
            pass  # not Linux: the watchdog alone
    # A parent that died before this worker got here left it re-parented
    # already (ppid0 is the reaper's pid): neither check above can see that.
    if not _parent_alive(parent_pid, ppid0):
        os._exit(1)
    _ring.watchdog_start(parent_pid, WATCHDOG_INTERVAL)
    return ppid0


# The signal on which a worker writes its threads' Python stacks to its stack
# pipe (faulthandler: from C, even while the task's code holds the GIL).
STACK_SIGNAL = signal.SIGUSR2
# The parent's request that a worker end after its task (the tuner of
# nworkers="auto" retiring it): the worker leaves its loop before it claims
# another task, so no task is cut short.
RETIRE_SIGNAL = signal.SIGUSR1
_retiring = False


def _retire(signum, frame):
    global _retiring
    _retiring = True


class StackPipe:
    """The write end of a pipe into which a worker's faulthandler dumps its
    Python stacks on STACK_SIGNAL; the parent holds the read end. Crosses to a
    spawn or forkserver worker as a duplicated descriptor, like the ring."""

    __slots__ = ("fd",)

    def __init__(self, fd):
        self.fd = fd

    def __reduce__(self):
        from multiprocessing.reduction import DupFd
        return _stack_pipe_from_dup, (DupFd(self.fd),)


def _stack_pipe_from_dup(dup):
    return StackPipe(dup.detach())


def main(ring, slot, payload, call, seed, parent_pid, pdeathsig, evaluation="wrap",
         stacks=None):
    """Worker entry point. ``call``: True to run ``target()``, else ``target[i]``.

    ``evaluation`` is the parent's :func:`seqtools.seterr` setting when it started
    this worker, which a forked worker has anyway and a spawned one does not.
    ``stacks``: the :class:`StackPipe` to dump stacks into when asked.

    ``payload`` is ``(target, start_hook)`` or its pickle (see :func:`payload_for`).
    """
    # Ctrl-C is the parent's to handle: it shuts the workers down cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(RETIRE_SIGNAL, _retire)
    if stacks is not None:  # before any task is claimed: see process.py
        faulthandler.register(STACK_SIGNAL, file=stacks.fd, all_threads=True)
    seterr(evaluation)
    ppid0 = _guard(parent_pid, pdeathsig)
    _seed(seed)
    alive = _Liveness(ring, slot, parent_pid, ppid0)
    task = _transport.TaskBlocks(ring, slot, alive.reserve, alive.wait)
    try:
        try:
            target, start_hook = (pickle.loads(payload) if type(payload) is bytes
                                  else payload)
        except BaseException as e:
            _report(task, -1, 0, ERR_START, e,
                    "the worker could not unpickle what it was given")
            return
        try:
            run_start_hook(start_hook, slot)
        except BaseException as e:
            _report(task, -1, 0, ERR_START, e, "start_hook failed")
            return
        _loop(ring, slot, task, target, call, alive, Placement(ring, slot, task))
    except RingClosed:
        pass
    finally:
        sys.stdout.flush()
        sys.stderr.flush()


class _Liveness:
    """The worker's bounded waits: each ends if the parent is gone."""

    def __init__(self, ring, slot, parent_pid, ppid0):
        self.ring = ring
        self.slot = slot
        self.parent_pid = parent_pid
        self.ppid0 = ppid0

    def check(self):
        if not _parent_alive(self.parent_pid, self.ppid0):
            raise RingClosed("the parent process is gone")

    def reserve(self, nbytes):
        """Offset of a new block of ``nbytes`` for this worker's task."""
        while True:
            offset = self.ring.reserve(self.slot, nbytes, POLL)
            if offset is not None:
                return offset
            self.check()

    def wait(self):
        """The completion queue is full: wait a little for the parent to pop."""
        time.sleep(0.005)
        self.check()


def _report(task, index, generation, code, exc, what=None):
    """Answer ``index`` with a failure report (from an ``except`` block)."""
    text = traceback.format_exc()
    if what is not None:
        text = f"{what}:\n{text}"
    failure = Failure(code, cut(text), _pickled_exception(exc))
    _send_failure(task, index, generation, failure)


def _send_failure(task, index, generation, failure):
    ring, slot = task.ring, task.slot
    ring.cancel(slot)  # blocks the task reserved for its result
    task.reset()
    while True:
        try:
            _transport.send(ring, slot, index, generation, [failure], task, KIND_ERROR)
            return
        except _ring.TooLarge:
            # A report larger than a small fixed ring: shorter, down to nothing.
            ring.cancel(slot)
            task.reset()
            if not failure.text and failure.exc is None:
                break
            failure = Failure(failure.code, cut(failure.text, len(failure.text) // 4)
                              if len(failure.text) > 64 else "", None)
    while True:  # no room at all: a report without a block
        try:
            ring.post(slot, index, generation, KIND_ERROR)
            return
        except QueueFull:
            task.wait()


class Placement:
    """Where the arrays a task makes live: the one place that decides it.

    While a task runs (between :meth:`begin` and :meth:`end`, on the worker's main
    thread), its arrays are placed in blocks of the worker's ring, which travel to
    the parent with the result and are not copied again:

    - ``seqtools.stack`` (and ``_transport.out_block``) asks for a block through
      ``_task.out_block``: set here to ``_transport.out_block``;
    - numpy's large allocations go to ring blocks through the allocation hook
      (``_ring.hook_install``; off with ``SEQTOOLS_ALLOC_HOOK=0``, see
      :data:`ALLOC_HOOK`), switched on per task with ``_ring.hook_active``.

    Everything else is in the worker's own memory, and ``_transport.send`` copies
    it into a block once. Each way is given up for good when the task's code keeps
    an array placed in shared memory beyond its call (:meth:`check`, before each
    task): that memory belongs to the parent once sent.
    """

    def __init__(self, ring, slot, task):
        self.slot = slot
        self.task = task
        self.hooking = ALLOC_HOOK
        if self.hooking:
            _ring.hook_install(ring, slot)

    def check(self):
        """Stop placing in the ring what the last results showed is kept."""
        # Printed, not warnings.warn(): under -W error a warning would end the
        # worker's loop.
        task = self.task
        if not task.disabled and task.kept():
            task.disabled = True  # out_block() returns None from now on
            print(f"seqtools worker {self.slot}: {KEPT_WARNING}", file=sys.stderr,
                  flush=True)
        if self.hooking and _ring.hook_adopted_alive():
            self.hooking = False
            _ring.hook_disable()
            print(f"seqtools worker {self.slot}: {ADOPTED_WARNING}",
                  file=sys.stderr, flush=True)

    def begin(self):
        """The calling thread runs the task: place its arrays in the ring."""
        _transport.set_task(self.task)
        evaluating.out_block = _transport.out_block
        _ring.hook_active(self.hooking)

    def end(self):
        """The task is over: arrays go to the worker's memory again."""
        _ring.hook_active(False)
        evaluating.out_block = None
        _transport.set_task(None)


def _loop(ring, slot, task, target, call, alive, placement):
    claim = ring.claim
    send = _transport.send
    while not _retiring:
        placement.check()
        claimed = claim(slot, POLL)
        if claimed is None:
            alive.check()
            continue
        index, generation = claimed
        task.reset()
        placement.begin()
        evaluating.index = index
        try:
            # The list holds the only reference to the result: send() can then
            # tell which arrays nothing else references (those may cross in place).
            box = [target() if call else target[index]]
        except RingClosed:
            raise
        except BaseException as e:  # SystemExit too: it answers this task
            placement.end()
            _report(task, index, generation, ERR_USER, e)
            continue
        finally:
            placement.end()
            evaluating.index = None
        try:
            send(ring, slot, index, generation, box, task)
        except RingClosed:
            raise
        except _ring.TooLarge as e:
            _report(task, index, generation, ERR_TRANSFER, e,
                    f"the result does not fit in the shared-memory ring ({e}); "
                    "pass a larger shm_size")
        except Exception as e:
            _report(task, index, generation, ERR_TRANSFER, e,
                    "the result could not be sent to the parent process")
        del box
