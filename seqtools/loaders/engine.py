"""The protocol between a loader's front and its engine, and what they share.

A loader is a front (:mod:`.fronts`: the ordered view of ``prefetch`` and
``epochs``, the iterator of ``load_buffers``) over an engine: the workers that
compute *tasks* 0, 1, 2, ... of a target, where task ``k`` is ``target[k]`` (a
sequence) or the ``k``-th call of ``target()`` (a sampler). Three engines keep
this protocol: worker processes over a shared-memory ring (:mod:`.process`),
Python worker threads (:mod:`.threads`) and native copy threads for items that
are one copy (:mod:`.copies`).

``reset(start)``
    Drop all work under way and every result not taken, and hand out tasks
    ``start, start + 1, ...`` (below the end the engine was made with, if any).
    Engines start at task 0.
``take(k)``
    Block until task ``k`` is answered and return ``(k, value, failure)``. The
    front asks for the tasks in order (``k`` is the task after the one taken
    last, or ``reset`` came first); results that complete early wait in the
    engine.
``take_next()``
    Block until any task is answered and return ``(index, value, failure)``:
    the unordered iterator of ``load_buffers``.
``close()``
    Stop the workers and release what the engine holds. Idempotent, from any
    thread; a ``take`` waiting meanwhile raises :class:`EngineClosed`.
``info()``, ``busy()``, ``buffered()``, ``memory()``, ``restarts``
    What the statistics read (:mod:`.stats`): ``info()`` is ``{"nworkers",
    "window", "method"}`` as they are now (a tuner may change them, and
    ``epochs``' read-ahead reads the window to know how far the workers are
    ahead).

An engine hands out tasks at most ``window`` past the last one taken (the
front's ``max_buffered``/``max_cached``), and every wait in it is bounded and
checks the workers' liveness: a dead worker is replaced and its task retried,
workers that cannot start raise :class:`~seqtools.EvaluationError`. ``failure``
is None for a value, else how the task failed: an exception object (thread
engines) or a :class:`._worker.Failure` report (process workers); the front
turns it into the error the user sees (:func:`raise_failure`). ``where`` names
the workers in messages ("process" or "thread"); ``in_order`` says that
``take_next`` answers tasks in order, so that a front may ``reset`` there to
give back a result the caller never received.

Only the process that made an engine may use it: ``PROCESS.pid`` is the
current process id, kept across fork, that fronts compare with their owner's.
"""

import os

from ..errors import EvaluationError, WorkerTraceback, passthrough
from . import _worker

__all__ = ["EngineClosed", "PROCESS", "raise_failure", "call_name"]


class EngineClosed(Exception):
    """Raised by ``take``/``take_next`` of an engine closed meanwhile."""


class _Process:
    """This process's id, kept current across fork: ``PROCESS.pid`` costs one
    attribute read where ``os.getpid()`` is a system call."""

    __slots__ = ("pid",)

    def __init__(self):
        self.pid = os.getpid()

    def after_fork(self):
        self.pid = os.getpid()


PROCESS = _Process()
os.register_at_fork(after_in_child=PROCESS.after_fork)


def call_name(func):
    """How messages name a sampler: its qualified name, else its type's."""
    return getattr(func, "__qualname__", type(func).__name__)


def raise_failure(failure, what):
    """Raise the error of a failed task, ``what`` saying which task of what.

    An exception object (raised in a thread of this process) is wrapped in
    :class:`~seqtools.EvaluationError`, or raised as it is under
    ``seterr('passthrough')`` or when it is one already (an inner view's). A
    worker process's :class:`._worker.Failure` carries its traceback text: the
    error quotes it, and under passthrough the worker's own exception is raised
    (when it could be pickled), chained to that text.
    """
    if isinstance(failure, BaseException):
        if isinstance(failure, EvaluationError) or passthrough():
            raise failure
        raise EvaluationError(
            f"{what}: {type(failure).__name__}: {failure}") from failure
    if passthrough() and failure.code == _worker.ERR_USER:
        exc = failure.exception()
        if exc is not None:
            raise exc from WorkerTraceback(failure.text)
    raise EvaluationError(f"{what}:\n{failure.text}")
