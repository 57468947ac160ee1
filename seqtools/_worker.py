"""The loop run by each worker process of ``prefetch`` and ``load_buffers``.

A worker claims a task (an item index, or a call number for ``load_buffers``)
from the shared ring, evaluates it, reserves a block, copies the result in and
commits it. Errors in user code travel as traceback text on the worker's own pipe,
announced by an entry without a block, so the ring never has to be sized for them.
Every wait is short, so a worker notices within a fraction of a second that the
parent died or closed the ring, and exits.
"""

import os
import pickle
import random
import signal
import sys
import traceback

import numpy as np

from . import _ring, _transport
from ._ring import KIND_ERROR, RingClosed

POLL = 0.1  # seconds between checks that the parent is alive

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

# Error codes sent with a traceback text.
ERR_USER = "user"
ERR_TRANSFER = "transfer"
ERR_HOOK = "hook"


def _parent_alive(parent_pid, ppid0):
    if os.getppid() != ppid0:
        return False
    try:
        os.kill(parent_pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _seed(seed):
    """Seed Python's and numpy's global generators differently in every worker."""
    random.seed(seed)
    np.random.seed(seed % 2**32)


def main(ring, slot, errconn, target, call, start_hook, seed, parent_pid):
    """Worker entry point. ``call``: True to run ``target()``, else ``target[i]``."""
    # Ctrl-C is the parent's to handle: it shuts the workers down cleanly.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    ppid0 = os.getppid()
    _seed(seed)
    if ALLOC_HOOK:
        _ring.hook_install(ring, slot)
    try:
        if start_hook is not None:
            start_hook()
    except BaseException:
        _report(ring, errconn, slot, -1, 0, ERR_HOOK, traceback.format_exc())
        return
    try:
        _loop(ring, slot, errconn, target, call, parent_pid, ppid0)
    except RingClosed:
        pass
    finally:
        errconn.close()
        sys.stdout.flush()


def _report(ring, errconn, slot, index, epoch, code, text):
    errconn.send((index, epoch, code, text))
    ring.post(slot, index, epoch, KIND_ERROR)


def _loop(ring, slot, errconn, target, call, parent_pid, ppid0):
    def reserve(nbytes):
        while True:
            offset = ring.reserve(slot, nbytes, POLL)
            if offset is not None:
                return offset
            if not _parent_alive(parent_pid, ppid0):
                raise RingClosed("the parent process is gone")

    task = _transport.TaskBlocks(ring, slot, reserve)
    claim = ring.claim
    send = _transport.send
    hook_active = _ring.hook_active
    adopted_alive = _ring.hook_adopted_alive
    hooking = ALLOC_HOOK
    while True:
        # Printed, not warnings.warn(): under -W error a warning would end the
        # worker's loop.
        if not task.disabled and task.kept():
            task.disabled = True
            print(f"seqtools worker {slot}: {KEPT_WARNING}", file=sys.stderr,
                  flush=True)
        if hooking and adopted_alive():
            hooking = False
            _ring.hook_disable()
            print(f"seqtools worker {slot}: {ADOPTED_WARNING}", file=sys.stderr,
                  flush=True)
        claimed = claim(slot, POLL)
        if claimed is None:
            if not _parent_alive(parent_pid, ppid0):
                return
            continue
        index, epoch = claimed
        task.reset()
        _transport._task = task
        hook_active(hooking)
        try:
            # The list holds the only reference to the result: send() can then
            # tell which arrays nothing else references (those may cross in place).
            box = [target() if call else target[index]]
        except RingClosed:
            raise
        except Exception:
            _fail(ring, errconn, slot, index, epoch, ERR_USER, traceback.format_exc())
            continue
        finally:
            hook_active(False)
            _transport._task = None
        try:
            send(ring, slot, index, epoch, box, task)
        except _transport.Unsendable as e:
            _fail(ring, errconn, slot, index, epoch, ERR_TRANSFER, str(e))
        except ValueError as e:  # larger than the ring
            _fail(ring, errconn, slot, index, epoch, ERR_TRANSFER,
                  f"{e}; pass a larger shm_size")
        del box


def _fail(ring, errconn, slot, index, epoch, code, text):
    ring.cancel(slot)  # blocks the task reserved for its result
    _report(ring, errconn, slot, index, epoch, code, text)


def check_picklable(obj, what):
    """Raise a clear TypeError now if ``obj`` cannot be sent to a spawned worker."""
    try:
        pickle.dumps(obj)
    except Exception as e:
        raise TypeError(
            f"{what} must be picklable to run in spawned worker processes "
            f"({type(e).__name__}: {e}); define it at module level, or use the "
            "'fork' start method"
        ) from e
