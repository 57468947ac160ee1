"""Views that watch a pipeline without changing it: read hooks and timing.

:func:`debug` calls a function on the items read (to print, log or check them) and
:func:`monitor_throughput` measures how long reads take, to find the slow stage of a
pipeline. Both pass items, assignments and errors through unchanged.
"""

import threading
import time

from .._checks import check_int, length
from ..errors import raise_evaluation_error
from .access import WriteThrough
from .core import View

__all__ = ["debug", "monitor_throughput"]

# Read at each call (not bound at import) so that tests can substitute a clock.
_clock = time.perf_counter


class DebugView(WriteThrough, View):
    """Calls ``func(i, item)`` on reads (see :func:`debug`)."""

    __slots__ = ("_seq", "_func", "_max_calls", "_interval", "_calls", "_last",
                 "_lock")
    _transient = ("_lock",)

    def __init__(self, seq, n, func, max_calls, interval):
        View.__init__(self, n)
        self._seq = seq
        self._func = func
        self._max_calls = max_calls
        self._interval = interval
        self._calls = 0
        self._last = None
        self._bind()

    def _bind(self):
        self._lock = threading.Lock()

    def _due(self):
        with self._lock:
            if self._max_calls is not None and self._calls >= self._max_calls:
                return False
            if self._interval:
                now = _clock()
                if self._last is not None and now - self._last < self._interval:
                    return False
                self._last = now
            self._calls += 1
            return True

    def _get(self, i):
        value = self._seq[i]
        if self._due():
            try:
                self._func(i, value)
            except Exception as exc:
                raise_evaluation_error(self, i, exc)
        return value

    def _item_source(self, i):
        return self._seq, i


def debug(sequence, func, max_calls=None, max_rate=None):
    """Wrap a sequence to call a function on the items read.

    Parameters
    ----------
    sequence : Sequence
        Source sequence.
    func : callable
        Called as ``func(i, item)`` after item ``i`` (a non-negative index) is read.
        Its errors raise :class:`~seqtools.EvaluationError` naming the item.
    max_calls : int, optional
        Stop calling `func` after this many calls.
    max_rate : float, optional
        Call `func` at most this many times per second: reads closer than
        ``1 / max_rate`` seconds to the last call are skipped (the first read is
        always reported).

    Returns
    -------
    Sequence
        A view returning the items of `sequence` unchanged; assignments write through.

    Raises
    ------
    TypeError
        If `func` is not callable, `max_calls` is not an integer or `max_rate` not a
        number.
    ValueError
        If `max_calls` < 0 or `max_rate` <= 0.

    Examples
    --------
    >>> import seqtools
    >>> report = lambda i, v: print(i, v)
    >>> watched = seqtools.instrument.debug([1, 2, 3, 4, 5], report, max_calls=2)
    >>> x = watched[0]
    0 1
    >>> y = watched[-1]
    4 5
    >>> z = watched[3]  # max_calls reached: silent
    """
    if not callable(func):
        raise TypeError(f"debug(): func must be callable, got {type(func).__name__}")
    n = length(sequence, "debug", infinite=True)
    if max_calls is not None:
        max_calls = check_int(max_calls, "max_calls", "debug", 0)
    interval = 0.0
    if max_rate is not None:
        if isinstance(max_rate, bool) or not isinstance(max_rate, (int, float)):
            raise TypeError(
                f"debug(): max_rate must be a number of calls per second, got "
                f"{type(max_rate).__name__}"
            )
        if not max_rate > 0:
            raise ValueError(f"debug(): max_rate must be > 0, got {max_rate}")
        interval = 1.0 / max_rate
    return DebugView(sequence, n, func, max_calls, interval)


class MonitorView(WriteThrough, View):
    """Measures the time taken by reads (see :func:`monitor_throughput`)."""

    __slots__ = ("_seq", "_total", "_count", "_lock")
    _transient = ("_lock",)

    def __init__(self, seq, n):
        View.__init__(self, n)
        self._seq = seq
        self._total = 0.0
        self._count = 0
        self._bind()

    def _bind(self):
        self._lock = threading.Lock()

    def _get(self, i):
        start = _clock()
        value = self._seq[i]  # failed reads are not counted
        elapsed = _clock() - start
        with self._lock:
            self._total += elapsed
            self._count += 1
        return value

    def _item_source(self, i):
        return self._seq, i

    def read_delay(self):
        """Average time taken to read an item, in seconds.

        Raises
        ------
        RuntimeError
            If no item was read since the view was created or last reset.
        """
        with self._lock:
            if self._count == 0:
                raise RuntimeError(
                    "cannot measure the read delay: no item has been read since the "
                    "view was created or reset()"
                )
            return self._total / self._count

    def throughput(self):
        """Average number of items read per second (the inverse of the read delay).

        Raises
        ------
        RuntimeError
            If no item was read since the view was created or last reset.
        """
        delay = self.read_delay()
        return float("inf") if delay == 0 else 1.0 / delay

    def reset(self):
        """Forget the reads measured so far."""
        with self._lock:
            self._total = 0.0
            self._count = 0


def monitor_throughput(sequence):
    """Wrap a sequence to measure how long reading its items takes.

    Parameters
    ----------
    sequence : Sequence
        Source sequence, typically the end of a lazy pipeline.

    Returns
    -------
    Sequence
        A view returning the items of `sequence` unchanged, with three more methods:
        ``read_delay()`` (average seconds per item read), ``throughput()`` (items
        per second) and ``reset()``. Time spent outside reads (the consumer's own
        work) is not counted. Thread safe.

    Examples
    --------
    >>> import seqtools
    >>> monitored = seqtools.instrument.monitor_throughput([1, 2, 3])
    >>> list(monitored)
    [1, 2, 3]
    >>> monitored.read_delay() >= 0, monitored.throughput() > 0
    (True, True)
    >>> monitored.reset()
    """
    return MonitorView(sequence, length(sequence, "monitor_throughput", infinite=True))
