"""Autotuning: ``nworkers="auto"`` sizes a loader's workers and window online.

A :class:`Tuner` runs in the consumer's thread, at the marks of the loader's
meter (see :mod:`.stats`). It measures each setting over :data:`PERIODS`
periods of :data:`PERIOD` seconds and keeps the best one: the consumer's wait,
the rate, and how busy the workers were.

- The window starts wide where that is cheap: worker processes take
  :data:`MAX_WINDOW` (or the widest of its halves) at the first result if the
  ring for it stays within ``process.WIDEN_BUDGET`` (small results, which a
  narrow window holds back), so the tuner does not spend its noisy
  measurements finding that out.
- While the consumer waits (input-bound), it tries one move at a time: a
  worker more (when the workers are busy, up to the cores), then a window
  four times as wide (up to :data:`MAX_WINDOW`, within the shared-memory
  budget): a step large enough that its effect stands out of the noise of a
  one-second measurement.
  A move is kept if the rate measured after it (from :data:`SETTLE` seconds
  later) is at least :data:`GAIN` times the rate before it (a worker takes a
  core from the training step; a wider window of large results, memory);
  else it is undone and not tried again.
- While results wait for the consumer (compute-bound) with workers mostly
  idle, it tries a worker fewer, kept if the consumer still does not wait: the
  cores go back to the training step.
- With no move left to try, it settles, and looks again after :data:`REVISIT`
  seconds (what the loop does may change: a validation pass, a new epoch).

The tasks themselves do not change: an ordered loader (``prefetch``,
``epochs``, ``load_buffers(ordered=True)``) gives the same stream whatever the
tuner does.
"""

from .stats import COMPUTE_BOUND, INPUT_BOUND

__all__ = ["Tuner"]

PERIOD = 1.0  # seconds of one measurement of a setting
PERIODS = 2  # measurements of a setting; the best one counts (a dip caused
#              elsewhere on the machine does not count against the setting)
SETTLE = 0.5  # seconds after a move before its measurement starts (a new
#               worker starting, a wider window filling)
GAIN = 1.05  # a move up is kept if the rate grows this much
MAX_WINDOW = 64  # the widest window the tuner takes
REVISIT = 30.0  # seconds settled before the tuner tries moves again
BUSY = 0.5  # workers busier than this (mean) are the bottleneck


class Tuner:
    """Moves ``engine``'s workers (``engine.resize(n)``, 1 to ``max_workers``)
    and, if ``window`` is True, its window (``engine.set_window(w)``); both
    return whether they were done."""

    def __init__(self, engine, max_workers, window):
        self.engine = engine
        self.max_workers = max(1, max_workers)
        self.window = window
        self.since = None  # (time, items, waited, busy) at the period's start
        # (move, undo, rate and wait before it, when its measurement may start)
        self.pending = None
        self.periods = []  # (rate, wait, mean busy) of the setting's periods
        self.tried = set()  # moves that did not pay, until the next revisit
        self.settled_at = None
        self.moves = 0  # moves kept

    def state(self):
        """``"exploring"`` or ``"settled"``, for stats()."""
        return "exploring" if self.settled_at is None else "settled"

    def step(self, meter, now, busy):
        """At a mark of ``meter`` (``busy``: the workers' busy times then):
        judge the period if one has passed."""
        engine = self.engine
        since = self.since
        self.since = (now, meter.items, meter.waited, busy)
        if since is None:
            return
        then, items, waited, busy0 = since
        if self.pending is not None and then < self.pending[4]:
            return  # the move settles: its period starts now
        span = now - then
        if span < PERIOD:
            self.since = since  # the period goes on
            return
        n = engine.info()["nworkers"]
        spent = [b - (busy0[w] if w < len(busy0) else 0.0)
                 for w, b in enumerate(busy[:n])]
        self.periods.append(((meter.items - items) / span,
                             (meter.waited - waited) / span,
                             sum(spent) / span / max(1, len(spent))))
        if len(self.periods) < PERIODS:
            return
        rate, wait, mean_busy = max(self.periods)
        self.periods = []
        if self.pending is not None:
            move, undo, rate0, wait0, _ = self.pending
            self.pending = None
            if move == "workers-":
                kept = wait < INPUT_BOUND / 2
            else:
                kept = rate >= rate0 * GAIN
            if kept:
                self.moves += 1
            else:  # back where it was: the next move starts from there
                undo()
                self.tried.add(move)
                rate, wait = rate0, wait0
                n = engine.info()["nworkers"]
        elif self.settled_at is not None:
            if now - self.settled_at < REVISIT:
                return
            self.settled_at = None
            self.tried.clear()
        for move in self._moves(wait, mean_busy, n):
            if move in self.tried:
                continue
            undo = self._apply(move, n)
            if undo is None:
                self.tried.add(move)
                continue
            self.pending = (move, undo, rate, wait, now + SETTLE)
            return
        self.settled_at = now

    def _moves(self, wait, mean_busy, n):
        if wait > INPUT_BOUND:
            moves = []
            if n < self.max_workers and mean_busy > BUSY:
                moves.append("workers+")
            if self.window:
                moves.append("window+")
            return moves
        if wait < COMPUTE_BOUND and n > 1 and mean_busy < BUSY:
            return ["workers-"]
        return []

    def _apply(self, move, n):
        """Make ``move``; return how to undo it, or None if it cannot be made."""
        engine = self.engine
        if move == "window+":
            window = engine.info()["window"]
            wider = min(MAX_WINDOW, 4 * window)
            if wider <= window or not engine.set_window(wider):
                return None
            return lambda: engine.set_window(window)
        target = n + 1 if move == "workers+" else n - 1
        if not engine.resize(target):
            return None
        return lambda: engine.resize(n)
