"""Error reporting for failures in user code evaluated through seqtools views.

Views that call user code (``smap``, ``starmap``, ``uniter``, workers of ``prefetch``
and ``load_buffers``...) wrap failures in :class:`EvaluationError`, which names the
item and where the view was created, unless ``seterr('passthrough')`` is in force.
"""

import os
import sys
import threading

__all__ = ["EvaluationError", "LoaderClosed", "LoaderTimeout", "WorkerTraceback",
           "WorkersCannotStart", "seterr"]

_PKG_DIR = os.path.dirname(os.path.abspath(__file__))
_MODES = ("wrap", "passthrough")
_settings = {"evaluation": "wrap"}
_lock = threading.Lock()


class EvaluationError(Exception):
    """Raised when evaluating an item of a view fails in user code.

    The original exception is chained as ``__cause__`` (in worker processes, its
    traceback text is carried in the message since the object itself may not cross
    the process boundary).
    """


class WorkersCannotStart(EvaluationError):
    """Raised by a loader whose workers cannot start: a main script without
    ``if __name__ == '__main__':`` under spawn or forkserver, a ``start_hook``
    that fails, a sampler that does not unpickle, workers that keep dying before
    their first task. The loader is closed; the message says what to do.
    """


class LoaderTimeout(TimeoutError):
    """Raised by a loader's read when a task (an item, or a call of the sampler)
    has run longer than the loader's ``timeout``.

    The message names the task, the worker, the time spent and the worker's
    Python stack at that moment. The loader stays usable: a stuck worker process
    is stopped and replaced, a stuck thread is left to finish alone and replaced,
    and reading again retries the task.

    Attributes
    ----------
    index : int
        The item or call.
    seconds : float
        How long it had run.
    stack : str
        The worker's Python stack, as text (empty for a native copy thread).
    """

    def __init__(self, message, index, seconds, stack):
        super().__init__(message)
        self.index, self.seconds, self.stack = index, seconds, stack


class LoaderClosed(ValueError):
    """Raised by reading a loader after its ``close()``, like I/O on a closed file.

    Every loader kind raises it (``prefetch``, ``load_buffers``, with processes or
    threads); results handed out before the close stay valid.
    """


def seterr(evaluation=None):
    """Set how errors raised by user code are propagated.

    Parameters
    ----------
    evaluation : {'wrap', 'passthrough'} or None
        ``'wrap'`` raises :class:`EvaluationError` with the original error as its
        cause; ``'passthrough'`` lets the original error propagate unchanged, which
        helps step-by-step debugging; ``None`` leaves the setting unchanged.

    Returns
    -------
    str
        The setting in force before the call.

    Examples
    --------
    >>> import seqtools
    >>> old = seqtools.seterr('passthrough')
    >>> seqtools.seterr(old)
    'passthrough'
    """
    with _lock:
        old = _settings["evaluation"]
        if evaluation is not None:
            if evaluation not in _MODES:
                raise ValueError(
                    f"seterr(evaluation={evaluation!r}): expected one of {_MODES}"
                )
            _settings["evaluation"] = evaluation
    return old


def passthrough():
    """True when errors from user code should propagate unwrapped."""
    return _settings["evaluation"] == "passthrough"


_inside = {}  # co_filename -> True if the file belongs to this package


def _in_package(filename):
    inside = _inside.get(filename)
    if inside is None:
        inside = os.path.abspath(filename).startswith(_PKG_DIR + os.sep)
        _inside[filename] = inside
    return inside


class _OnBehalf(threading.local):
    origin = None  # set by created_at() for the block it covers


_on_behalf = _OnBehalf()


class created_at:
    """Within the block, views and loaders report ``origin`` as where they were
    created: for one made on behalf of another (the loader behind an ``epochs``
    iterator is made at its first batch, for the iterator the user created)."""

    __slots__ = ("origin", "saved")

    def __init__(self, origin):
        self.origin = origin

    def __enter__(self):
        self.saved, _on_behalf.origin = _on_behalf.origin, self.origin

    def __exit__(self, *exc):
        _on_behalf.origin = self.saved


def creation_site(depth=2):
    """Return ``"file:line"`` of the first caller frame outside the package.

    Cheap (no traceback formatting, one dict lookup per frame) so that views
    created once per batch, such as ``gather(dataset, idx)`` in a sampler, do not
    pay for it.
    """
    origin = _on_behalf.origin
    if origin is not None:
        return origin
    try:
        frame = sys._getframe(depth)
    except ValueError:
        return "<unknown>"
    while frame is not None:
        code = frame.f_code
        if not _in_package(code.co_filename):
            return f"{code.co_filename}:{frame.f_lineno}"
        frame = frame.f_back
    return "<unknown>"


def raise_evaluation_error(view, index, exc):
    """Re-raise ``exc`` from user code, wrapped unless in passthrough mode.

    Must be called from an ``except`` block. ``EvaluationError`` raised by an inner
    view is propagated unchanged so that the innermost failure is reported once.
    """
    if isinstance(exc, EvaluationError) or passthrough():
        raise exc
    site = getattr(view, "_origin", "<unknown>")
    raise EvaluationError(
        f"failed to evaluate item {index} of {type(view).__name__} created at {site}: "
        f"{type(exc).__name__}: {exc}"
    ) from exc


class WorkerTraceback(Exception):
    """The traceback text of an exception raised in a worker process, chained as
    the ``__cause__`` of that exception when it is re-raised in the parent."""

    def __str__(self):
        return self.args[0]
