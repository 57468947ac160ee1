"""The engine of Python worker threads (``method='thread'``).

Workers are daemon threads of this process that run the target's own Python:
items of a sequence or calls of a sampler, which must then be thread-safe. They
pay off when the work releases the GIL (I/O, numpy on large arrays) or on a
free-threaded Python. See :mod:`.engine` for the protocol.
"""

import queue
import threading

from ..errors import WorkersCannotStart, passthrough
from . import _worker
from .engine import EngineClosed

__all__ = ["ThreadEngine"]

POLL = 0.1  # seconds: the longest a thread waits before checking ``closed``


class _Work:
    """The state worker threads share with their engine.

    Kept apart from the engine so that the threads do not keep the loader alive:
    when it is dropped, its finalizer closes this and the threads end.

    Work moves through two ``queue.SimpleQueue``: ``tasks`` holds ``(generation,
    k)``, the tasks workers may start, issued by the consumer at most ``window``
    ahead of it; ``results`` holds ``(generation, k, value, exception)`` as
    workers finish. A hand-off is one put and one blocking get, with no lock
    shared by workers and consumer: on a free-threaded build a contended lock
    spins before it sleeps, and a Condition's wait is always contended, so the
    loader would burn the cores its workers need. ``reset`` bumps the
    generation: workers skip tasks of older generations and the consumer drops
    their results. Every wait is bounded (POLL) and rechecks ``closed``.
    """

    _CLOSED = object()  # a result that wakes the consumer of a closed engine

    def __init__(self, target, call, end, window):
        self.target = target
        self.call = call  # True: target(), else target[k]
        self.end = end  # None: endless
        self.window = window
        self.tasks = queue.SimpleQueue()
        self.results = queue.SimpleQueue()
        self.generation = 0  # bumped by reset()
        self.issued = 0  # next task index to hand out
        self.consumed = 0  # tasks whose result was taken
        self.done = {}  # index -> result that came ahead of its turn
        self.closed = False
        self.nworkers = 0  # how many to wake on close

    def issue(self):
        """Hand out the tasks the window allows (the consumer's side)."""
        limit = self.consumed + self.window
        if self.end is not None:
            limit = min(limit, self.end)
        generation, put = self.generation, self.tasks.put
        for k in range(self.issued, limit):
            put((generation, k))
        self.issued = max(self.issued, limit)

    def close(self):
        self.closed = True
        self.done.clear()
        for _ in range(self.nworkers):
            self.tasks.put(None)  # wakes a worker, which then ends
        self.results.put(self._CLOSED)

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
            generation, k = task
            if generation != self.generation:
                continue  # issued before a reset: nobody waits for it
            evaluating.index = k
            try:
                result = (generation, k, target() if call else target[k], None)
            except BaseException as e:  # SystemExit too: it answers this task
                result = (generation, k, None, e)
            finally:
                evaluating.index = None
            if self.closed:
                return
            put(result)
            del result

    def take(self, k):
        """``(index, value, exception)`` of task ``k``, or of the next task to
        complete when ``k`` is None. Raises EngineClosed once closed, and
        what a start_hook raised."""
        result = self.done.pop(k, None) if k is not None else None
        get, Empty = self.results.get, queue.Empty
        while result is None:
            if self.closed:
                raise EngineClosed
            try:
                r = get(timeout=POLL)
            except Empty:
                continue
            if r is self._CLOSED:
                continue  # closed: the check above ends the wait
            generation, i, value, exc = r
            if generation is None:  # a worker's start_hook failed
                raise _StartHookFailed(exc)
            if generation != self.generation:
                continue  # a task of before a reset
            if k is None or i == k:
                result = (i, value, exc)
            else:
                self.done[i] = (i, value, exc)
        self.consumed += 1
        self.issue()
        return result


class _StartHookFailed(Exception):
    def __init__(self, exc):
        self.exc = exc


class ThreadEngine:
    """``nworkers`` Python threads computing tasks of ``target`` (see
    :mod:`.engine`); ``call``: tasks are calls ``target()``, else items
    ``target[k]`` for ``k < end`` (None: endless). ``name`` and ``origin`` name
    the loader in thread names and messages."""

    where = "thread"

    def __init__(self, target, call, end, nworkers, window, start_hook, name,
                 origin):
        self._work = work = _Work(target, call, end, window)
        self._name, self._origin = name, origin
        work.issue()
        threads = [threading.Thread(target=work.work, args=(start_hook, w),
                                    daemon=True, name=f"seqtools-{name}-{w}")
                   for w in range(nworkers)]
        work.nworkers = nworkers
        for t in threads:
            t.start()

    def reset(self, start):
        work = self._work
        work.generation += 1
        work.done.clear()
        work.issued = work.consumed = start
        work.issue()

    def take(self, k):
        return self._take(k)

    def take_next(self):
        return self._take(None)

    def _take(self, k):
        try:
            return self._work.take(k)
        except _StartHookFailed as e:  # the loader cannot go on
            self.close()
            if passthrough():
                raise e.exc from None
            raise WorkersCannotStart(
                f"start_hook failed in a worker thread of {self._name} created at "
                f"{self._origin}: {type(e.exc).__name__}: {e.exc}") from e.exc

    def close(self):
        self._work.close()

    def closer(self):
        """What closes the engine without referring to it (for a finalizer)."""
        return self._work.close
