"""The two fronts every loader is: an ordered view and an iterator.

:class:`OrderedLoader` is what ``prefetch`` returns and what ``epochs`` reads
through: a :class:`~seqtools.View` whose item ``i`` is task ``i`` of its
engine; reading out of order resets the engine there. :class:`BufferLoader` is
what ``load_buffers`` returns: an endless iterator of the calls' results, in
completion order, or in call order with ``ordered=True``.

What a loader promises lives here, once, whatever its engine (see
:mod:`.engine`): threads sharing a loader take their turns; a loader used in a
process forked from its creator's raises at once; ``close()`` (or leaving a
``with`` block, or dropping the loader) stops the workers, after which reads
raise :class:`~seqtools.errors.LoaderClosed`; a KeyboardInterrupt while waiting
leaves the loader usable, the next read going on with the task it was waiting
for; a task's failure is raised as an error naming the task and where the loader
was created, and the next read goes on with the next task.
"""

import threading
import weakref
from time import perf_counter

from ..errors import LoaderClosed, LoaderTimeout
from ..views.core import View
from .engine import PROCESS, EngineClosed, call_name, raise_failure
from .stats import Meter, report

__all__ = ["OrderedLoader", "BufferLoader"]


class _Front:
    """What both fronts share: the lock, ownership, closing and errors.

    ``what`` names the loader in messages ("prefetch", "load_buffers"); tasks
    are calls of ``func`` when it is given, else items.
    """

    def _attach(self, engine, what, origin, func=None):
        self._engine = engine
        self._what = what
        self._origin = origin
        self._func = func
        self._owner = PROCESS.pid
        self._closed = False
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, engine.close)
        self._meter = Meter(engine)

    def _take(self, k):
        """Task ``k``'s value (the next to complete when ``k`` is None); the
        caller holds the lock."""
        if self._closed:
            raise LoaderClosed(f"this {self._what} loader was closed")
        if PROCESS.pid != self._owner:
            raise RuntimeError(
                f"this loader belongs to process {self._owner}, and this process "
                f"({PROCESS.pid}) is a child forked from it: its workers answer "
                "that process only; create a loader in the child process")
        engine = self._engine
        began = perf_counter()
        try:
            index, value, failure = (engine.take_next() if k is None
                                     else engine.take(k))
        except EngineClosed:
            raise LoaderClosed(f"this {self._what} loader was closed") from None
        except KeyboardInterrupt:
            self._meter.waited += perf_counter() - began
            self._interrupted(k)
            raise
        except LoaderTimeout:
            self._meter.waited += perf_counter() - began
            # the engine gives the task again, in its place: read it again
            self._interrupted(k, reset=False)
            raise
        now = perf_counter()
        meter = self._meter
        meter.items += 1
        meter.waited += now - began
        if now > meter.tick:
            meter.mark(now)
        if failure is not None:
            raise_failure(failure, self._failed(index))
        return value

    def _failed(self, index):
        """What failed, for the message of task ``index``'s error."""
        where = self._engine.where
        if self._func is not None:
            return (f"{call_name(self._func)}() failed in a worker {where} (call "
                    f"{index}) of {self._what} created at {self._origin}")
        return (f"failed to evaluate item {index} of {self._what} created at "
                f"{self._origin} in a worker {where}")

    def stats(self):
        """Where the time goes, as a plain dict: cheap enough to call at every
        step (figures other than ``items`` are worked out at most every 0.1 s).

        ``items``
            Results handed out (failures included).
        ``rate``
            Items per second over the recent window (``span`` seconds, about
            the last 5).
        ``consumer_wait``
            The fraction of that time the consumer spent inside reads, waiting
            for results.
        ``worker_busy``
            Per worker, the fraction of that time it had a task in hand
            (computing it or handing it over).
        ``buffered``
            Results ready, not yet read.
        ``memory``
            ``{"in_use": bytes, "reserved": bytes}`` of shared memory (process
            workers; 0 for threads, whose results are ordinary objects).
        ``restarts``
            Workers replaced (after a death or a timeout).
        ``verdict``
            ``"input-bound"`` (the consumer waits more than 10% of the time:
            the workers are the bottleneck), ``"compute-bound"`` (less than 5%:
            results wait for the consumer) or ``"balanced"``.
        ``nworkers``, ``window``, ``method``
            The workers, the window (``max_buffered``/``max_cached``) and what
            runs the tasks (``"process"``, ``"thread"``, ``"copy"``: native copy
            threads).
        """
        return self._meter.stats()

    def report(self):
        """A few lines a person reads: the figures of :meth:`stats` and one
        sentence of advice."""
        return report(self.stats(), self._what)

    def close(self):
        """Stop the workers now; results already handed out stay valid. Reading
        a closed loader raises :class:`~seqtools.errors.LoaderClosed`."""
        self._closed = True
        self._finalizer()
        self._meter.cached_until = 0.0  # the figures of a closed loader from now on

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class OrderedLoader(_Front, View):
    """Items of a sequence computed ahead, in order, by an engine's workers.

    Reading item ``i`` lets the workers compute up to the window past it; read
    in order for best effect (reading elsewhere resets the engine there).
    """

    def __init__(self, engine, n, what, origin, func=None):
        View.__init__(self, n)
        self._attach(engine, what, origin, func)
        self._next = 0

    def _get(self, i):
        with self._lock:  # threads sharing the view take their turns
            if i != self._next and not self._closed:
                self._engine.reset(i)
            self._next = i + 1
            return self._take(i)

    def _interrupted(self, k, reset=True):
        # Whatever the engine was doing, reading item k again starts it anew
        # there: nothing is lost, nothing comes twice.
        self._next = None

    def __reduce__(self):
        raise TypeError(f"a {self._what} view cannot be pickled; prefetch inside "
                        "the workers' sequence instead of sending one")


class BufferLoader(_Front):
    """Iterator over results of a function called repeatedly by background
    workers: see :func:`seqtools.load_buffers`. Use ``close()`` (or a ``with``
    block) to stop the workers early; they also stop when the loader is
    garbage-collected.
    """

    def __init__(self, engine, func, ordered, origin):
        self._attach(engine, "load_buffers", origin, func)
        self._ordered = ordered
        self._consumed = 0

    def __iter__(self):
        return self

    def __next__(self):
        k = None
        try:
            with self._lock:  # threads sharing the loader take their turns
                k = self._consumed
                self._consumed = k + 1  # a failed call is passed over, as unordered
                return self._take(k if self._ordered else None)
        except KeyboardInterrupt:
            # Raised after the take (Python runs signal handlers as calls
            # return, the lock's release included): the value never reached
            # the caller, call k is still the next one. (Raised within the
            # take, it was seen to there.)
            if k is not None:
                with self._lock:
                    if self._consumed == k + 1:
                        self._interrupted(k, taken=True)
            raise

    def _interrupted(self, k, reset=True, taken=False):
        self._consumed -= 1  # the call waited for is still the next one
        if (reset or taken) and (self._ordered or self._engine.in_order):
            # The engine goes on from that call, whatever it was doing: nothing
            # is lost, nothing comes twice. (An engine that takes in order may
            # have moved past it before the interrupt landed, even unordered.)
            self._engine.reset(self._consumed)
