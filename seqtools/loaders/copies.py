"""The engine of native copy threads, for items that are each one copy.

Batches of ``batch(..., collate_fn=stack)`` over arrays and the calls of
:func:`seqtools.minibatches` are each one copy of rows: the target says so by
answering ``_copy_job(k)`` (see :meth:`seqtools.View._copy_job`) with the job
and the arrays it fills. The consumer's thread prepares item ``k`` ahead
(Python: index arithmetic, allocation, checks) and submits its copy to a pool of
native threads (``_copypool.CopyPool``, C in ``csrc/copypool.c``), which run it
with no GIL. On a GIL build the copies then overlap the consumer's Python and
each other, with no GIL hand-over per item; threads running Python could do
neither. Items are answered in order, which is also a completion order, so the
unordered iterator of ``load_buffers`` takes them in turn. See :mod:`.engine`
for the protocol.
"""

import logging
import time

from ..errors import LoaderTimeout
from ._copypool import CopyPool
from .engine import EngineClosed

log = logging.getLogger("seqtools")

__all__ = ["CopyEngine", "first_copy_job"]


def first_copy_job(target, start_hook):
    """``target._copy_job(0)`` when a thread loader of ``target`` can run on copy
    threads (no start_hook to run in worker threads, item 0 one copy), else
    None. The job is item 0's: the engine submits it."""
    prepare = getattr(target, "_copy_job", None)
    if prepare is None or start_hook is not None:
        return None
    try:
        return prepare(0)
    except Exception:
        return None  # item 0 fails: the thread workers report it as usual


class CopyEngine:
    """Items of ``target`` prepared ahead by ``target._copy_job(k) -> (job,
    value)`` and copied by ``nthreads`` native threads; ``read(k)`` reads an
    item that is not one copy (``_copy_job`` answered None). ``first`` is
    ``_copy_job(0)``, already made by :func:`first_copy_job`."""

    where = "thread"
    in_order = True  # take_next is take(next)
    _READ = object()  # entry value: the consumer reads the item itself

    def __init__(self, target, read, nthreads, window, end, first, origin="?",
                 timeout=None, stall_report=None, call=False):
        self.prepare, self.read = target._copy_job, read
        self.task = "call" if call else "item"
        self.origin, self.timeout, self.stall_report = origin, timeout, stall_report
        # The first wait for a copy: the nearer of the two limits (None: none).
        limits = [x for x in (timeout, stall_report) if x is not None]
        self.first_wait = min(limits) if limits else -1.0
        self.window, self.end = window, end
        self.pool = CopyPool(nthreads)
        self.pending = {}  # k -> (job, value, exception): issued, not taken
        self.issued = 1
        self.next = 0  # take_next's position
        self.pending[0] = self._submit(first)
        self._issue(0)

    def _submit(self, prepared):
        if prepared is None:
            return None, self._READ, None
        job, value = prepared
        try:
            self.pool.submit(job)
        except ValueError:  # closed, by another thread
            raise EngineClosed from None
        return job, value, None

    def _entry(self, k):
        try:
            prepared = self.prepare(k)
        except Exception as e:  # the item's error: raised when it is taken
            return None, None, e
        return self._submit(prepared)

    def _issue(self, k):
        """Prepare and submit the items after ``k`` that the window allows."""
        limit = k + self.window + 1
        if self.end is not None:
            limit = min(limit, self.end)
        for j in range(self.issued, limit):
            self.pending[j] = self._entry(j)
        self.issued = max(self.issued, limit)

    def reset(self, start):
        """Drop the items ahead (their copies are cancelled or waited for)."""
        self.pending.clear()
        self.issued = self.next = start

    def take(self, k):
        # Item k stays pending until its copy is done: a take interrupted
        # while it waits (a KeyboardInterrupt) leaves it to the next take.
        entry = self.pending.get(k)
        if entry is None:
            entry = self.pending[k] = self._entry(k)
            self.issued = max(self.issued, k + 1)
        self._issue(k)
        job, value, exc = entry
        if value is self._READ:
            try:
                value = self.read(k)
            except Exception as e:
                value, exc = None, e
        elif job is not None:
            try:
                # Most copies are done long before either limit: one wait.
                if not job.wait(self.first_wait):
                    self._wait(job, k)
            except RuntimeError:  # the pool was closed before the job ran
                raise EngineClosed from None
        self.pending.pop(k, None)  # (close() may have cleared it meanwhile)
        self.next = k + 1
        return k, value, exc

    def _wait(self, job, k):
        """``job.wait()`` within the timeout, reporting a stall once, after a
        first wait of ``first_wait`` seconds."""
        began = time.monotonic() - self.first_wait
        limits = [x for x in (self.timeout, self.stall_report) if x is not None]
        reported = False
        while True:
            waited = time.monotonic() - began
            if self.timeout is not None and waited > self.timeout:
                raise LoaderTimeout(
                    f"{self.task} {k} of the loader created at {self.origin} has "
                    f"waited {waited:.1f} s for its copy on the native copy threads, "
                    "past "
                    f"timeout={self.timeout:g} s (a copy runs no Python: a read of "
                    "memory-mapped data that stalls in the kernel, or a copy "
                    "thread held up, can do this). Reading again retries it.",
                    k, waited, "")
            if (not reported and self.stall_report is not None
                    and waited > self.stall_report):
                reported = True
                log.warning("seqtools: %s %d of the loader created at %s has "
                            "waited %.0f s for its copy on the native copy threads "
                            "(stall_report=%s)", self.task, k, self.origin, waited,
                            self.stall_report)
            # until the nearer limit still ahead, or in steps once both passed
            ahead = [x - waited for x in limits if x > waited]
            if job.wait(max(min(ahead), 0.001) if ahead else 0.1):
                return

    def take_next(self):
        return self.take(self.next)

    # Statistics (see .stats): what the consumer's meter reads.

    restarts = 0  # copy threads are never replaced

    def info(self):
        return {"nworkers": self.pool.nthreads, "window": self.window,
                "method": "copy"}

    def busy(self):
        return self.pool.busy()

    def buffered(self):
        done = 0  # copies done, not yet taken
        for job, _, _ in list(self.pending.values()):
            try:
                done += job is not None and job.wait(0.0)
            except RuntimeError:  # closed meanwhile
                pass
        return done

    def memory(self):
        return 0, 0

    # A tuner's moves (see .tuning): the window only; the copy threads are
    # as many as the cores from the start.

    def resize(self, n):
        return False

    def set_window(self, window):
        self.window = window
        return True

    def close(self):
        self.pool.close()
        self.pending.clear()
