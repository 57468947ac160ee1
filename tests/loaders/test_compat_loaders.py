"""Loader behaviours of SeqTools 1.4.1 that code written for it relies on.

Samplers and hooks live at module level so that spawn/forkserver children can
import them.
"""

import numpy as np
import pytest

import seqtools
from seqtools import EvaluationError
from seqtools.evaluation import WorkerTraceback

WORKER = {"id": None, "calls": 0}


def hook_with_index(worker_id):
    WORKER["id"] = worker_id


def hook_without_argument():
    WORKER["calls"] += 1


def worker_id(*_):
    return np.array([-1 if WORKER["id"] is None else WORKER["id"], WORKER["calls"]])


class Unpicklable(Exception):
    def __reduce__(self):
        raise TypeError("not today")


def raise_value_error(i):
    if i == 3:
        raise ValueError(f"item {i} is bad")
    return i


def raise_unpicklable(i):
    if i == 3:
        raise Unpicklable("odd one")
    return i


@pytest.mark.parametrize("method", ["process", "thread"])
def test_start_hook_gets_the_worker_index(method):
    with seqtools.load_buffers(worker_id, max_cached=4, nworkers=3, method=method,
                               start_hook=hook_with_index) as loader:
        ids = {int(next(loader)[0]) for _ in range(60)}
    assert ids and ids <= {0, 1, 2}
    if method == "thread":  # threads share the global: the last one to start
        return
    p = seqtools.prefetch(seqtools.smap(worker_id, range(40)), nworkers=2,
                          method="process", start_hook=hook_with_index)
    assert {int(x[0]) for x in p} <= {0, 1}
    p.close()


@pytest.mark.parametrize("method", ["process", "thread"])
def test_start_hook_without_argument_still_works(method):
    p = seqtools.prefetch(seqtools.smap(worker_id, range(20)), nworkers=2,
                          method=method, start_hook=hook_without_argument)
    calls = [int(x[1]) for x in p]
    assert min(calls) >= 1  # the hook ran (once per worker process, or per thread)
    p.close()


def test_passthrough_reraises_the_workers_exception_type(passthrough):
    p = seqtools.prefetch(seqtools.smap(raise_value_error, range(8)), nworkers=2,
                          method="process")
    assert [p[i] for i in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="item 3 is bad") as info:
        p[3]
    # the worker's traceback comes along as the cause
    assert isinstance(info.value.__cause__, WorkerTraceback)
    assert "raise_value_error" in str(info.value.__cause__)
    assert p[4] == 4
    p.close()


def test_passthrough_unpicklable_exception_falls_back_to_evaluation_error(passthrough):
    p = seqtools.prefetch(seqtools.smap(raise_unpicklable, range(8)), nworkers=2,
                          method="process")
    with pytest.raises(EvaluationError, match="(?s)Unpicklable.*odd one"):
        p[3]
    p.close()


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_passthrough_reaches_workers_that_do_not_fork(passthrough, start_method):
    # a spawned worker does not inherit the parent's seterr setting: it is sent
    p = seqtools.prefetch(seqtools.smap(raise_value_error, range(8)), nworkers=1,
                          method="process", start_method=start_method)
    with pytest.raises(ValueError, match="item 3 is bad"):
        p[3]
    p.close()
