import multiprocessing
import os
import random

import numpy as np
import pytest


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


def shm_listing():
    """Names in /dev/shm ([] where there is no such folder)."""
    return sorted(os.listdir("/dev/shm")) if os.path.isdir("/dev/shm") else []


def shm_leftovers(before, settle=3.0):
    """Names in /dev/shm now that were not in ``before``, once transient ones are gone.

    Other processes on the machine (another test run, multiprocessing's own
    semaphores) may create and remove entries at any moment; a leak is an entry
    that stays, so differences are given a few seconds to disappear.
    """
    import time

    deadline = time.monotonic() + settle
    while True:
        extra = sorted(set(shm_listing()) - set(before))
        if not extra or time.monotonic() > deadline:
            return extra
        time.sleep(0.1)
