"""Loader statistics: where a training loop's time goes.

Every loader keeps a :class:`Meter` on its consumer's side: the items handed
out and the seconds the consumer spent inside reads (waiting for its engine),
and every :data:`MARK` seconds a mark of those counts and of the workers' busy
time (each engine's ``busy()``: per worker, the seconds spent with a task in
hand). The recent figures of :meth:`Meter.stats` are differences between now
and the oldest of the last :data:`MARKS` marks, a window of about
``MARK * MARKS`` seconds: what the loader does now, not since it started.

A read costs the meter two clock readings and three additions; the figures are
worked out at most every :data:`REFRESH` seconds (``items`` is always current),
so that ``stats()`` may be called at every step of a loop.
"""

import logging
from collections import deque
from time import perf_counter

__all__ = ["Meter", "verdict", "report"]

log = logging.getLogger("seqtools")

MARK = 0.5  # seconds between marks
MARKS = 10  # marks kept: the recent window is about MARK * MARKS seconds
REFRESH = 0.1  # seconds a computed snapshot is served again
# The verdict, from the consumer's wait (fraction of wall time in reads):
INPUT_BOUND = 0.10  # above: the loop waits for its input
COMPUTE_BOUND = 0.05  # below: its input keeps up (results wait for the loop)

_NO_ENGINE = {"nworkers": 0, "window": 0, "method": "inline"}


class Meter:
    """The consumer side's counts of one loader (see the module docstring).

    ``engine``: the engine whose workers' busy times are marked, or None (a
    loader computing in the consumer's thread, or not started yet).
    """

    __slots__ = ("items", "waited", "tick", "marks", "engine", "cached",
                 "cached_until", "tuner")

    def __init__(self, engine=None, tuner=None):
        self.engine = engine
        self.tuner = tuner  # a .tuning.Tuner with nworkers="auto", else None
        self.items = 0  # results and failures handed out
        self.waited = 0.0  # seconds the consumer spent in reads
        now = perf_counter()
        self.tick = now + MARK  # when the next mark is due
        self.marks = deque([(now, 0, 0.0, self._busy())], maxlen=MARKS + 1)
        self.cached = None
        self.cached_until = 0.0

    def _busy(self):
        engine = self.engine
        if engine is None:
            return ()
        try:
            return engine.busy()
        except Exception:  # closed meanwhile: no worker is busy any more
            return ()

    def attach(self, engine, tuner=None):
        """Count the busy time of ``engine``'s workers from now on (a loader
        whose engine was replaced: an ``epochs`` resumed elsewhere), tuned by
        ``tuner``."""
        self.engine = engine
        self.tuner = tuner
        now = perf_counter()
        self.marks.clear()
        self.marks.append((now, self.items, self.waited, self._busy()))
        self.tick = now + MARK
        self.cached_until = 0.0

    def mark(self, now, tune=True):
        """Record the counts at ``now`` (called by reads past ``tick``, which
        also let the tuner act: in the consumer's thread, between reads)."""
        busy = self._busy()
        self.marks.append((now, self.items, self.waited, busy))
        self.tick = now + MARK
        if tune and self.tuner is not None:
            try:
                self.tuner.step(self, now, busy)
            except Exception as e:  # a read must not fail for the tuner's sake
                log.warning("seqtools: nworkers='auto' stops tuning this loader "
                            "(%s: %s); it keeps its %s workers", type(e).__name__,
                            e, self.engine.info()["nworkers"])
                self.tuner = None

    def stats(self):
        """The statistics dict of :meth:`seqtools.BufferLoader.stats`."""
        now = perf_counter()
        if now < self.cached_until:  # (0.0 when there is no snapshot)
            out = self.cached.copy()
            out["items"] = self.items
            return out
        if now > self.tick:
            self.mark(now, tune=False)  # (stats() may come from any thread)
        then, items, waited, busy0 = self.marks[0]
        span = max(now - then, 1e-9)
        busy = self._busy()
        worker_busy = []
        for w, b in enumerate(busy):
            b0 = busy0[w] if w < len(busy0) else 0.0
            worker_busy.append(min(1.0, max(0.0, (b - b0) / span)))
        engine = self.engine
        if engine is not None:
            info = engine.info()
            in_use, reserved = engine.memory()
            buffered, restarts = engine.buffered(), engine.restarts
        else:
            info, in_use, reserved, buffered, restarts = _NO_ENGINE, 0, 0, 0, 0
        wait = min(1.0, max(0.0, (self.waited - waited) / span))
        out = {
            "items": self.items,
            "rate": (self.items - items) / span,
            "consumer_wait": wait,
            "worker_busy": worker_busy,
            "buffered": buffered,
            "memory": {"in_use": in_use, "reserved": reserved},
            "restarts": restarts,
            "verdict": verdict(wait),
            "nworkers": info["nworkers"],
            "window": info["window"],
            "method": info["method"],
            "span": span,
            "autotune": None if self.tuner is None else self.tuner.state(),
        }
        self.cached = out
        self.cached_until = now + REFRESH
        return out.copy()


def verdict(wait):
    """``"input-bound"``, ``"compute-bound"`` or ``"balanced"`` for a loop that
    spends the fraction ``wait`` of its time waiting in reads."""
    if wait > INPUT_BOUND:
        return "input-bound"
    if wait < COMPUTE_BOUND:
        return "compute-bound"
    return "balanced"


def _percent(x):
    return f"{100 * x:.0f}%" if x >= 0.1 else f"{100 * x:.1f}%"


def _advice(s):
    """One sentence of advice for statistics ``s``."""
    wait, busy = s["consumer_wait"], s["worker_busy"]
    n = len(busy)
    mean = sum(busy) / n if n else 0.0
    if s["method"] == "inline":
        if s["verdict"] == "compute-bound":
            return ("compute-bound: reading batches in the loop's own thread "
                    f"takes {_percent(wait)} of its time; nothing to gain from "
                    "workers")
        return (f"{s['verdict']}: the loop spends {_percent(wait)} of its time "
                "reading batches itself: nworkers=2 or more would read them ahead "
                "in the background")
    workers = f"{n} worker{'s' if n != 1 else ''}"
    if s["verdict"] == "input-bound":
        if mean >= 0.8:
            return (f"input-bound: the loop waited {_percent(wait)} of the time "
                    f"with its {workers} busy {_percent(mean)}: more workers or "
                    "cheaper samples would help")
        return (f"input-bound: the loop waited {_percent(wait)} of the time while "
                f"its {workers} were busy only {_percent(mean)}: the workers are "
                "not what holds it back; a wider window (max_cached, "
                "max_buffered) evens out slow samples, and with large results "
                "the hand-over is the cost")
    if s["verdict"] == "compute-bound":
        spare = (f"; the {workers} were busy {_percent(mean)}, so fewer would do"
                 if n > 1 and mean < 0.5 else "")
        return (f"compute-bound: the loop waited {_percent(wait)} of the time: "
                f"its input keeps up{spare}")
    if mean < 0.5:
        return (f"balanced: the loop waited {_percent(wait)} of the time while its "
                f"{workers} were busy only {_percent(mean)}: the wait is the "
                "hand-over of results, not the workers")
    return (f"balanced: the loop waited {_percent(wait)} of the time with its "
            f"{workers} busy {_percent(mean)}: one more worker would remove most "
            "of the wait")


def report(s, what):
    """The lines of ``loader.report()`` for statistics ``s`` of loader ``what``."""
    lines = [
        f"{what} ({s['method']}, {s['nworkers']} workers, window {s['window']}): "
        f"{s['items']} items, {s['rate']:.1f} items/s over the last "
        f"{s['span']:.1f} s",
        f"the loop waited in reads {_percent(s['consumer_wait'])} of the time",
    ]
    if s["worker_busy"]:
        lines.append("workers busy: " + ", ".join(map(_percent, s["worker_busy"])))
    memory = s["memory"]
    extra = f"buffered: {s['buffered']}; restarts: {s['restarts']}"
    if memory["reserved"]:
        extra += (f"; shared memory: {memory['in_use'] / 2**20:.1f} MiB in use of "
                  f"{memory['reserved'] / 2**20:.1f} MiB")
    lines.append(extra)
    lines.append(_advice(s))
    return "\n".join(lines)
