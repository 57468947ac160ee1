"""The public functions of the loaders: ``prefetch``, ``load_buffers`` and
``call_index``.

Each checks its arguments, picks an engine (worker processes over the
shared-memory ring, Python worker threads, or native copy threads when every
item is one copy: see :mod:`.engine`) and puts a front on it (:mod:`.fronts`),
which holds what every loader promises.
"""

import functools
import os

from .._checks import check_int, check_seconds, length
from .._task import evaluating
from ..errors import creation_site
from .copies import CopyEngine, first_copy_job
from .fronts import BufferLoader, OrderedLoader
from .process import ProcessEngine
from .threads import ThreadEngine
from .tuning import MAX_WINDOW, Tuner

__all__ = ["prefetch", "load_buffers", "BufferLoader", "call_index"]

# The window of prefetch when max_buffered is None: NARROW at first, and for
# process workers WIDE at the first item if the ring for that many stays under
# process.WIDEN_BUDGET (see prefetch's docstring).
NARROW, WIDE = 10, 16


AUTO = "auto"
AUTO_START = 4  # workers nworkers="auto" starts with (fewer with fewer cores)


class _Default(int):
    """A window default the caller left as it is: ``nworkers="auto"`` tunes
    it (it is the same int otherwise)."""

    __slots__ = ()

    def __repr__(self):
        return int.__repr__(self)


_TEN, _TWO = _Default(10), _Default(2)  # prefetch's and load_buffers' defaults


def cores():
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _nworkers(nworkers, func):
    """``(workers to start, most workers or None)``: ``nworkers``, or the cores
    minus ``-nworkers``; for ``"auto"``, up to AUTO_START to start with and the
    cores as the tuner's limit."""
    if isinstance(nworkers, str):
        if nworkers == AUTO:
            most = cores()
            return min(most, AUTO_START), most
        raise ValueError(f"{func}(): nworkers must be an integer or 'auto', got "
                         f"{nworkers!r}")
    nworkers = check_int(nworkers, "nworkers", func)
    if nworkers > 0:
        return nworkers, None
    return max(1, (os.cpu_count() or 1) + nworkers), None


def _window(value, name, func, nworkers, most=None):
    """``(window, widen, tuned)``: the window given, or the automatic one for
    None and the wider one it may take (else None); with ``most`` workers
    (``nworkers="auto"``) and the window left at its default, a tuned window
    that starts at the automatic one."""
    if most is not None and (value is None or type(value) is _Default):
        # process workers take the widest window whose ring stays small at
        # the first result (see process.WIDEN_BUDGET); the tuner goes on there
        return max(NARROW, 2 * most), MAX_WINDOW, True
    if value is None:
        return max(NARROW, 2 * nworkers), max(WIDE, 4 * nworkers), False
    return check_int(value, name, func, 1), None, False


def _tune(front, engine, most, window):
    """Put a tuner on ``front`` (``nworkers="auto"``: ``most`` workers at
    most, the window too if ``window``)."""
    if most is not None:
        front._meter.tuner = Tuner(engine, most, window)
    return front


# The default of stall_report: seconds with no result before a wait is logged.
STALL_REPORT = 60.0


def _engine(target, call, end, method, methods, nworkers, window, widen, start_hook,
            shm_size, start_method, shm_budget, timeout, stall_report, origin,
            what, most=None):
    """The engine of a loader of ``target`` (see :mod:`.engine`): worker
    processes, or with ``method='thread'``, native copy threads when its items
    are each one copy (no start_hook), else Python worker threads. ``most``:
    the most workers a tuner may run (``nworkers="auto"``), else None."""
    if method == "thread":
        first = first_copy_job(target, start_hook) if end != 0 else None
        if first is not None:  # copy threads, as many as the cores under auto
            read = call_reader(target) if call else target.__getitem__
            return CopyEngine(target, read, most or nworkers, window, end, first,
                              origin, timeout, stall_report, call=call)
        return ThreadEngine(target, call, end, nworkers, window, start_hook, what,
                            origin, timeout, stall_report)
    if method == "process":
        return ProcessEngine(target, call, end, nworkers, window, start_hook,
                             shm_size, start_method, origin, widen, timeout,
                             stall_report, shm_budget, slots=most,
                             widest=MAX_WINDOW if most is not None else None)
    raise ValueError(f"method must be {methods[0]!r} or {methods[1]!r}, got "
                     f"{method!r}")


def _budget(shm_budget, func):
    return None if shm_budget is None else check_int(
        shm_budget, "shm_budget", func, 1)


def _check_hook(start_hook):
    if start_hook is not None and not callable(start_hook):
        raise TypeError("start_hook must be callable")


def _call_as(sampler, k):
    """``sampler()`` as call ``k`` of a loader (see :func:`call_index`)."""
    evaluating.index = k
    try:
        return sampler()
    finally:
        evaluating.index = None


class _Transformed:
    """``transform(sampler())``: what load_buffers' workers call with a
    transform (picklable when both are)."""

    __slots__ = ("sampler", "transform")

    def __init__(self, sampler, transform):
        self.sampler, self.transform = sampler, transform

    def __call__(self):
        return self.transform(self.sampler())

    def __reduce__(self):
        return _Transformed, (self.sampler, self.transform)


def call_reader(sampler):
    """``read(k)``: ``sampler()`` called as call ``k`` of a loader."""
    return functools.partial(_call_as, sampler)


def prefetch(seq, nworkers=0, method="thread", max_buffered=_TEN,
             start_hook=None,
             shm_size=0, *, start_method=None, timeout=None,
             stall_report=STALL_REPORT, shm_budget=None):
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
    nworkers : int or 'auto'
        Number of workers; ``0`` or negative means the number of cores minus that.
        ``'auto'``: up to 4 to start with, then as many as the loop needs, up
        to the cores, and with ``max_buffered`` left at its default
        the window too (see "Is my training input-bound?" in the
        documentation); the items are the same.
    method : {'thread', 'process'}
        Threads suit I/O-bound items; processes give full parallelism. Batches
        of ``batch(..., collate_fn=stack)`` over arrays (no ``start_hook``) are
        an exception: with threads, the reading thread prepares each batch ahead
        and ``nworkers`` native threads copy its rows with no GIL, which
        beats process workers there.
    max_buffered : int or None
        At most this many items are computed ahead of the last one read (>= 1):
        what :func:`load_buffers` calls ``max_cached``.
        None: ``max(10, 2 * nworkers)``, and with processes, widened to
        ``max(16, 4 * nworkers)`` at the first item if the shared memory for
        that many items stays under 64 MiB (small items come so fast that a
        narrow window leaves workers idle while the reader waits for the one
        item it needs next).
    start_hook : callable, optional
        Called in each worker when it starts: ``start_hook(i)`` with the worker's
        index ``0 <= i < nworkers`` (a replacement keeps the index of the worker
        it replaces), or ``start_hook()`` if it takes no argument.
    shm_size : int
        Bytes of shared memory for results in flight (processes only); 0 sizes it
        from the first result to hold ``max_buffered + nworkers + 2`` such results,
        and grows it for larger results and while the reader keeps results alive,
        up to ``shm_budget``.
    start_method : {'fork', 'spawn', 'forkserver'}, optional
        multiprocessing start method (default: multiprocessing's current default).
    timeout : float, optional
        Seconds an item may take: a read whose item runs longer raises
        :class:`~seqtools.LoaderTimeout`, naming the item, the worker and its
        Python stack. A stuck worker process is stopped and replaced, a stuck
        thread left to finish alone and replaced; reading the item again
        retries it. None (the default): no limit.
    stall_report : float, optional
        Seconds a read may wait with no result before a warning is logged
        (logger ``seqtools``) with each busy worker's item and Python stack,
        once per stall. None: never.
    shm_budget : int, optional
        Bytes an automatically sized ring (``shm_size=0``) may grow to; past it,
        a reader that keeps results gets a BufferError saying so. None: half of
        the memory available when the loader is made.

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
    origin = creation_site(2)
    nworkers, most = _nworkers(nworkers, "prefetch")
    max_buffered, widen, tuned = _window(max_buffered, "max_buffered", "prefetch",
                                         nworkers, most)
    _check_hook(start_hook)
    timeout = check_seconds(timeout, "timeout", "prefetch")
    stall_report = check_seconds(stall_report, "stall_report", "prefetch")
    engine = _engine(seq, False, n, method, ("thread", "process"), nworkers,
                     max_buffered, widen, start_hook, shm_size, start_method,
                     _budget(shm_budget, "prefetch"), timeout, stall_report, origin,
                     "prefetch", most)
    return _tune(OrderedLoader(engine, n, "prefetch", origin), engine, most, tuned)


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
    return evaluating.index


def load_buffers(sampler, max_cached=_TWO, nworkers=0, start_hook=None,
                 shm_size=0, *,
                 start_method=None, ordered=False, method="process", timeout=None,
                 stall_report=STALL_REPORT, shm_budget=None, transform=None):
    """Call ``sampler()`` over and over in background workers and iterate its results.

    Typical use is a minibatch sampler feeding a training loop: the loading cost is
    hidden behind the loop's own work. Results are yielded as they complete, or
    in call order with ``ordered=True``. With process workers (the default), arrays
    in results view shared memory, zero-copy, and remain valid for as long as they
    are referenced; large arrays that ``sampler`` makes with numpy are built in shared
    memory to begin with and are not copied at all (see "How background loading
    works" in the documentation). Each worker process seeds Python's and numpy's
    global random generators differently, so workers never repeat each other's
    draws; for a stream that does not depend on the workers, make each result a
    function of :func:`call_index` (as :func:`minibatches` does).

    Parameters
    ----------
    sampler : callable
        Called without arguments; returns arrays, scalars or picklable objects,
        possibly nested in tuples, lists and dicts.
    max_cached : int
        At most this many results are computed ahead of the consumer (>= 1):
        what :func:`prefetch` calls ``max_buffered``.
    nworkers : int or 'auto'
        Number of workers; ``0`` or negative: cores minus that. ``'auto'``:
        up to 4 to start with, then as many as the loop needs, up to the
        cores, and with ``max_cached`` left at its default the window too (see
        "Is my training input-bound?" in the documentation).
    start_hook : callable, optional
        Called in each worker when it starts: ``start_hook(i)`` with the worker's
        index ``0 <= i < nworkers``, or ``start_hook()`` if it takes no argument.
    shm_size : int
        Bytes of shared memory for results in flight (processes only); 0 sizes it
        from the first result, and grows it for larger results and while the
        loop keeps results alive, up to ``shm_budget``.
    start_method : {'fork', 'spawn', 'forkserver'}, optional
        multiprocessing start method (default: multiprocessing's current default).
    ordered : bool
        Yield the result of call ``k`` in position ``k`` (a slow call holds back
        those after it, up to ``max_cached``); by default, as they complete.
    method : {'process', 'thread'}
        Worker processes, or threads of this process: threads share the sampler
        (it must be thread-safe) and pay off when it releases the GIL or on a
        free-threaded Python. A :func:`minibatches` sampler over arrays (no
        ``start_hook``) is prepared call by call in the consuming thread and
        copied by ``nworkers`` native threads with no GIL, in call order.
    timeout : float, optional
        Seconds a call may take: ``next()`` raises
        :class:`~seqtools.LoaderTimeout` for a call that runs longer, naming
        the call, the worker and its Python stack (with ``ordered=True``, for
        the call waited for; else for any). A stuck worker process is stopped
        and replaced, a stuck thread left to finish alone and replaced, and the
        call is made again. None (the default): no limit.
    stall_report : float, optional
        Seconds ``next()`` may wait with no result before a warning is logged
        (logger ``seqtools``) with each busy worker's call and Python stack,
        once per stall. None: never.
    shm_budget : int, optional
        Bytes an automatically sized ring (``shm_size=0``) may grow to; past it,
        a loop that keeps results gets a BufferError saying so. None: half of
        the memory available when the loader is made.
    transform : callable, optional
        Applied in the worker to each result before it is handed over,
        ``transform(sampler())``: a step kept apart from the sampler
        (normalise, cast). Its result is handed over as the sampler's would
        be. Picklable for process workers under spawn and forkserver.

    Returns
    -------
    BufferLoader
        An endless iterator of results. ``close()`` (or leaving a ``with`` block)
        stops the workers; reading a closed loader raises
        :class:`~seqtools.errors.LoaderClosed`.

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
    if not callable(sampler):
        raise TypeError(f"load_buffers needs a callable, got {type(sampler).__name__}")
    origin = creation_site(2)
    nworkers, most = _nworkers(nworkers, "load_buffers")
    if max_cached is None:
        raise TypeError("load_buffers(): max_cached must be an integer, got None")
    max_cached, widen, tuned = _window(max_cached, "max_cached", "load_buffers",
                                       nworkers, most)
    if not tuned:
        widen = None  # load_buffers keeps the window it was given
    _check_hook(start_hook)
    if not isinstance(ordered, bool):
        raise TypeError(f"ordered must be True or False, got {ordered!r}")
    timeout = check_seconds(timeout, "timeout", "load_buffers")
    stall_report = check_seconds(stall_report, "stall_report", "load_buffers")
    target = sampler
    if transform is not None:
        if not callable(transform):
            raise TypeError(f"load_buffers: transform must be callable, got "
                            f"{type(transform).__name__}")
        target = _Transformed(sampler, transform)
    engine = _engine(target, True, None, method, ("process", "thread"), nworkers,
                     max_cached, widen, start_hook, shm_size, start_method,
                     _budget(shm_budget, "load_buffers"), timeout, stall_report,
                     origin, "load_buffers", most)
    return _tune(BufferLoader(engine, sampler, ordered, origin), engine, most,
                 tuned)
