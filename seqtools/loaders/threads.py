"""The engine of Python worker threads (``method='thread'``).

Workers are daemon threads of this process that run the target's own Python:
items of a sequence or calls of a sampler, which must then be thread-safe. They
pay off when the work releases the GIL (I/O, numpy on large arrays) or on a
free-threaded Python. See :mod:`.engine` for the protocol.
"""

import collections
import functools
import logging
import queue
import sys
import threading
import time
import traceback
from itertools import islice

from ..errors import LoaderTimeout, WorkersCannotStart, passthrough
from . import _worker
from .engine import EngineClosed

__all__ = ["ThreadEngine"]

log = logging.getLogger("seqtools")

POLL = 0.1  # seconds: the longest a thread waits before checking ``closed``
WATCH_EVERY = 0.5  # seconds between timeout checks while results flow


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
        self.inbox = collections.deque()  # results taken from the queue (see take)
        self.feed = iter(functools.partial(self.results.get, True, POLL), None)
        self.generation = 0  # bumped by reset()
        self.issued = 0  # next task index to hand out
        self.consumed = 0  # tasks whose result was taken
        self.done = {}  # index -> result that came ahead of its turn
        self.last_result = time.monotonic()  # when take last returned one
        self.closed = False
        self.nworkers = 0  # workers running (slots 0 to nworkers - 1)
        # Per worker slot: (task, when it started, thread id, thread token)
        # while it runs one (a retired slot's thread too, until it ends).
        self.current = []
        # Per worker slot, a list of one float of its own (no object two threads
        # write): seconds spent computing tasks, for statistics.
        self.busy = []
        self.restarts = 0  # threads replaced after a timeout
        self.tokens = []  # per worker slot: the token of its thread
        self.abandoned = set()  # tokens of threads left to a stuck task

    def issue(self):
        """Hand out the tasks the window allows (the consumer's side)."""
        limit = self.consumed + self.window
        if self.end is not None:
            limit = min(limit, self.end)
        generation, put = self.generation, self.tasks.put
        # issued counts a task before its put, with no call in between: an
        # interrupt between two puts leaves no task to be put twice
        while self.issued < limit:
            k = self.issued
            self.issued = k + 1
            put((generation, k))

    def close(self):
        self.closed = True
        self.done.clear()
        for _ in range(len(self.tokens)):
            self.tasks.put(None)  # wakes a worker, which then ends
        self.results.put(self._CLOSED)

    def work(self, start_hook, index, token, hook=True):
        evaluating = _worker.evaluating
        if hook:
            try:
                _worker.run_start_hook(start_hook, index)
            except BaseException as e:
                self.results.put((None, -1, None, e))
                return
        target, call = self.target, self.call
        get, put = self.tasks.get, self.results.put
        current, ident, clock = self.current, threading.get_ident(), time.monotonic
        busy = self.busy[index]
        abandoned, tokens = self.abandoned, self.tokens
        Empty = queue.Empty
        while True:
            try:
                task = get(timeout=POLL)
            except Empty:
                if self.closed or tokens[index] is not token:
                    return  # closed, or retired (ThreadEngine.resize)
                continue
            if task is None or self.closed:
                return
            if tokens[index] is not token:  # retired: the task is another's
                self.tasks.put(task)
                return
            generation, k = task
            if generation != self.generation:
                continue  # issued before a reset: nobody waits for it
            evaluating.index = k
            started = clock()
            current[index] = (k, started, ident, token)
            try:
                result = (generation, k, target() if call else target[k], None)
            except BaseException as e:  # SystemExit too: it answers this task
                result = (generation, k, None, e)
            finally:
                evaluating.index = None
                busy[0] += clock() - started
            if self.closed or token in abandoned:
                return  # left behind after a timeout: its task was given again
            current[index] = None
            put(result)
            del result

    def take(self, k, watch):
        """``(index, value, exception)`` of task ``k``, or of the next task to
        complete when ``k`` is None. Raises EngineClosed once closed, and
        what a start_hook raised; ``watch(began)`` is called between waits.

        A KeyboardInterrupt raised anywhere in here (Python runs signal
        handlers as calls return and at loop ends) loses no result and leaves
        the window whole: a result moves from the queue to ``inbox`` in C,
        with no Python in between (``deque.extend`` of an ``islice`` of
        ``feed``, which calls ``results.get``); it leaves ``inbox`` with the
        count of results consumed, between two calls.
        """
        self.issue()  # after a take interrupted before its issue
        if k is not None and k in self.done:
            result = self.done.pop(k)
            self.last_result = time.monotonic()
            self.consumed += 1
            self.issue()
            return result
        inbox, feed, Empty = self.inbox, self.feed, queue.Empty
        began = time.monotonic()
        while True:
            if self.closed:
                raise EngineClosed
            if not inbox:
                try:
                    inbox.extend(islice(feed, 1))
                except Empty:
                    watch(k, began)
                    continue
            r = inbox[0]
            if r is self._CLOSED:
                del inbox[0]
                continue  # closed: the check above ends the wait
            generation, i, value, exc = r
            if generation is None:  # a worker's start_hook failed
                del inbox[0]
                raise _StartHookFailed(exc)
            if generation != self.generation:
                del inbox[0]
                continue  # a task of before a reset
            if k is None or i == k:
                self.last_result = time.monotonic()
                del inbox[0]
                self.consumed += 1
                self.issue()
                return i, value, exc
            self.done[i] = (i, value, exc)
            del inbox[0]


class _StartHookFailed(Exception):
    def __init__(self, exc):
        self.exc = exc


class ThreadEngine:
    """``nworkers`` Python threads computing tasks of ``target`` (see
    :mod:`.engine`); ``call``: tasks are calls ``target()``, else items
    ``target[k]`` for ``k < end`` (None: endless). ``name`` and ``origin`` name
    the loader in thread names and messages; ``timeout`` and ``stall_report``
    are the loader's (seconds or None).

    A thread cannot be stopped: one whose task passes the timeout is left to
    finish alone (its result is dropped), a new thread takes its place, and the
    task is handed out again.
    """

    where = "thread"
    in_order = False

    def __init__(self, target, call, end, nworkers, window, start_hook, name,
                 origin, timeout=None, stall_report=None):
        self._work = work = _Work(target, call, end, window)
        self._name, self._origin = name, origin
        self._start_hook = start_hook
        self._timeout, self._stall_report = timeout, stall_report
        self._last_watch = time.monotonic()
        self._stall_reported = False
        work.issue()
        work.nworkers = nworkers
        work.current = [None] * nworkers
        work.tokens = [None] * nworkers
        work.busy = [[0.0] for _ in range(nworkers)]
        for w in range(nworkers):
            self._start(w, True)

    def _start(self, w, hook):
        work = self._work
        work.tokens[w] = token = object()
        threading.Thread(target=work.work, args=(self._start_hook, w, token, hook),
                         daemon=True, name=f"seqtools-{self._name}-{w}").start()

    def _watch(self, k, began):
        """Between waits: a task past the timeout (task ``k``, or any when None)
        raises LoaderTimeout; no result for ``stall_report`` seconds is logged
        once, with what each busy thread runs."""
        now = time.monotonic()
        current = self._work.current
        if self._timeout is not None:
            for w, running in enumerate(current):
                if (running is not None and now - running[1] > self._timeout
                        and k in (None, running[0])):
                    self._time_out(w, running, now)
        since = max(began, self._work.last_result)
        if (self._stall_report is not None and not self._stall_reported
                and now - since > self._stall_report):
            self._stall_reported = True
            busy = [f"thread {w} on {self._task(r[0])} for {now - r[1]:.1f} s:\n"
                    f"{_thread_stack(r[2])}"
                    for w, r in enumerate(current) if r is not None]
            log.warning(
                "seqtools: the %s loader created at %s has had no result for %.0f s "
                "(stall_report=%s). %s", self._name, self._origin, now - since,
                self._stall_report, "\n".join(busy) if busy else
                "No thread holds a task.")

    def _task(self, k):
        return f"{'call' if self._work.call else 'item'} {k}"

    def _time_out(self, w, running, now):
        work = self._work
        k, started, ident, token = running
        stack = _thread_stack(ident)
        work.abandoned.add(token)
        work.current[w] = None
        work.busy[w] = [0.0]  # the abandoned thread keeps adding to its own
        if w < work.nworkers:  # (a retired slot's thread is not replaced)
            work.restarts += 1
            self._start(w, False)
        work.tasks.put((work.generation, k))  # handed out again
        name = self._task(k)
        raise LoaderTimeout(
            f"{name} of the {self._name} loader created at {self._origin} has run "
            f"for {now - started:.1f} s in worker thread {w}, past "
            f"timeout={self._timeout:g} s. The thread's Python stack:\n{stack}\n"
            f"A thread cannot be stopped: it is left to finish alone (its result "
            f"is dropped) and a new thread takes its place; reading again retries "
            f"{name}.", k, now - started, stack)

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
        if self._timeout is not None:  # while results flow too (unordered)
            now = time.monotonic()
            if now - self._last_watch > WATCH_EVERY:
                self._last_watch = now
                self._watch(k, now)
        try:
            result = self._work.take(k, self._watch)
            self._stall_reported = False
            return result
        except _StartHookFailed as e:  # the loader cannot go on
            self.close()
            if passthrough():
                raise e.exc from None
            raise WorkersCannotStart(
                f"start_hook failed in a worker thread of {self._name} created at "
                f"{self._origin}: {type(e.exc).__name__}: {e.exc}") from e.exc

    # Statistics (see .stats): what the consumer's meter reads.

    def info(self):
        return {"nworkers": self._work.nworkers, "window": self._work.window,
                "method": "thread"}

    def resize(self, n):
        """Run ``n`` worker threads from now on (the tuner's move): new ones
        start in the slots after the last, the last ones retire after their
        task (a retired thread's next task goes back to the queue)."""
        work = self._work
        if n < 1 or work.closed:
            return False
        while len(work.tokens) < n:
            work.tokens.append(None)
            work.current.append(None)
            work.busy.append([0.0])
        for w in range(n, work.nworkers):
            work.tokens[w] = None  # its thread ends at its next task
        for w in range(work.nworkers, n):
            work.busy[w] = [0.0]
            self._start(w, True)
        work.nworkers = n
        return True

    def set_window(self, window):
        """Hand out tasks up to ``window`` past the last taken (the tuner's
        move)."""
        self._work.window = window
        self._work.issue()
        return True

    def busy(self):
        now, work = time.monotonic(), self._work
        out = []
        for cell, running in zip(work.busy[:work.nworkers],
                                 work.current[:work.nworkers]):
            out.append(cell[0] + (now - running[1] if running is not None else 0.0))
        return out

    def buffered(self):
        work = self._work
        return len(work.done) + len(work.inbox) + work.results.qsize()

    def memory(self):
        return 0, 0

    @property
    def restarts(self):
        return self._work.restarts

    def close(self):
        self._work.close()


def _thread_stack(ident):
    """The Python stack of thread ``ident``, as a traceback prints it."""
    frame = sys._current_frames().get(ident)
    if frame is None:
        return "(the thread has ended)"
    return "".join(traceback.format_stack(frame)).rstrip()
