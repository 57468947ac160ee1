import contextlib
import multiprocessing
import os
import random
import threading
import time

import numpy as np
import pytest
from hypothesis import strategies as st

import seqtools
from seqtools.views.core import View


def pytest_configure(config):
    # SEQTOOLS_START_METHOD=spawn|forkserver|fork runs the suite with that start
    # method as the process-wide default, as Python 3.14 makes forkserver the
    # default on Linux: every loader that does not name one uses it.
    method = os.environ.get("SEQTOOLS_START_METHOD")
    if method:
        multiprocessing.set_start_method(method, force=True)


@pytest.fixture
def rng(request):
    """A numpy Generator whose seed is printed, so a failure can be replayed."""
    seed = int(os.environ.get("SEQTOOLS_TEST_SEED", random.randrange(2**32)))
    print(f"rng seed: {seed} (replay with SEQTOOLS_TEST_SEED={seed})")
    return np.random.default_rng(seed)


@contextlib.contextmanager
def passthrough_errors():
    """Errors of user code propagate unchanged inside the block (seterr)."""
    old = seqtools.seterr("passthrough")
    try:
        yield
    finally:
        seqtools.seterr(old)


@pytest.fixture
def passthrough():
    """The whole test runs with errors of user code passed through unchanged."""
    with passthrough_errors():
        yield


class Naturals(View):
    """An infinite view of the naturals: item i is i (slotted, as views are)."""

    __slots__ = ()

    def __init__(self):
        View.__init__(self, None)

    def _get(self, i):
        return i


def slice_strategy(bound, step):
    """Hypothesis strategy: slices with start and stop in [-bound, bound] or None,
    and a step in [-step, step] other than 0, or None."""
    slice_bound = st.one_of(st.none(), st.integers(-bound, bound))
    return st.builds(slice, slice_bound, slice_bound,
                     st.one_of(st.none(), st.integers(-step, step).filter(bool)))


def run_threads(target, args_list, timeout=50.0):
    """Run ``target(*args)`` for each ``args`` of ``args_list``, each in its own
    thread, all at once; the exceptions the threads raised, in the order raised.

    ``timeout`` is a safety net against a deadlock (every thread must have ended
    by then), never a measure of speed.
    """
    errors = []

    def run(*args):
        try:
            target(*args)
        except BaseException as e:  # noqa: B036 - reported to the test
            errors.append(e)

    threads = [threading.Thread(target=run, args=args, daemon=True)
               for args in args_list]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()))
    assert not any(t.is_alive() for t in threads), "threads deadlocked"
    return errors


def pid_alive(pid):
    """True if ``pid`` runs (a zombie, or a pid that is gone, counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat") as f:
            # the state follows the command name, which is in parentheses
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait_gone(pids, timeout=10.0):
    """The pids of ``pids`` still running after ``timeout`` seconds (a safety net)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
        time.sleep(0.05)
    return [p for p in pids if pid_alive(p)]


def shm_listing():
    """Names in /dev/shm ([] where there is no such folder)."""
    return sorted(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else []


def shm_leftovers(before, settle=3.0):
    """Names in /dev/shm now that were not in ``before``, once transient ones are gone.

    Other processes on the machine (another test run, multiprocessing's own
    semaphores) may create and remove entries at any moment; a leak is an entry
    that stays, so differences are given a few seconds to disappear.
    """
    deadline = time.monotonic() + settle
    while True:
        extra = sorted(set(shm_listing()) - set(before))
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.1)
