"""The shared memory of process loaders grows as a loop needs it, within a budget.

A loop that keeps batches (their labels, as torch users do: ``kept.append(y)``)
holds ring blocks: the automatically sized ring grows for them, with one
warning, up to ``shm_budget``; a larger result than the first (an epochs
stream resumed at an epoch's short tail) grows it too. Past the budget the
error names the option (tests/loaders/test_api.py).
"""

import logging

import numpy as np
import pytest

import seqtools

N, ROW = 3000, 248


@pytest.fixture(scope="module")
def dataset():
    rng = np.random.default_rng(0)
    x = rng.random((N, ROW), dtype=np.float32)
    y = np.arange(N)
    return seqtools.collate([x, y])


def growth_warnings(caplog):
    return [r.getMessage() for r in caplog.records if "grows from" in r.getMessage()]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["process", "thread"])
def test_keeping_every_batch_of_epochs_works(dataset, method, caplog):
    caplog.set_level(logging.WARNING, logger="seqtools")
    inline = seqtools.epochs(dataset, 64, seed=0, num_epochs=2)
    expected = [(x.copy(), y.copy()) for x, y in inline]
    kept = []
    with seqtools.epochs(dataset, 64, seed=0, num_epochs=2, nworkers=2,
                         method=method) as loader:
        for x, y in loader:
            kept.append((x, y))  # every batch, arrays and all, as they came
    assert len(kept) == len(expected) == 2 * 47
    for (x, y), (ex, ey) in zip(kept, expected):
        assert (y == ey).all() and (x == ex).all()  # nothing overwritten
    warnings = growth_warnings(caplog)
    if method == "process":
        assert len(warnings) == 1, warnings  # one warning, when it first grows
        assert "keeps" in warnings[0] and "shm_budget" in warnings[0]
        assert "np.array" in warnings[0]
    else:
        assert warnings == []  # threads hand over their own arrays


@pytest.mark.timeout(120)
@pytest.mark.parametrize("ordered", [False, True])
def test_load_buffers_grows_for_a_loop_that_keeps_results(dataset, ordered, caplog):
    caplog.set_level(logging.WARNING, logger="seqtools")
    sampler = seqtools.minibatches(dataset, 64, seed=1)
    with seqtools.load_buffers(sampler, 4, 2, ordered=ordered) as loader:
        kept = [next(loader) for _ in range(300)]
    for x, y in kept:  # nothing overwritten
        assert (x == seqtools.stack(seqtools.gather(dataset, y))[0]).all()
    if ordered:
        again = seqtools.minibatches(dataset, 64, seed=1)
        assert all((y == again()[1]).all() for _, y in kept)
    assert len(growth_warnings(caplog)) == 1


@pytest.mark.timeout(120)
def test_prefetch_grows_for_a_reader_that_keeps_items(dataset):
    view = seqtools.batch(dataset, 64, collate_fn=seqtools.stack)
    with seqtools.prefetch(view, 2, "process") as loader:
        kept = list(loader)
    assert len(kept) == len(view)
    for k, (_, y) in enumerate(kept):
        assert (y == np.arange(64 * k, min(64 * (k + 1), N))).all()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("start_at", [2100, 2992])
def test_epochs_resumed_at_a_short_tail_goes_on_with_full_batches(dataset, start_at):
    # the first batch after the resume is short: the ring is sized for it, and
    # grows for the full batches after it
    state = {"version": 1, "epoch": 0, "position": start_at, "seed": 0,
             "dataset_length": N, "batch_size": 2048, "shuffle": True}
    inline = seqtools.epochs(dataset, 2048, seed=0, num_epochs=3)
    inline.load_state_dict(state)
    expected = [y.copy() for _, y in inline]
    loader = seqtools.epochs(dataset, 2048, seed=0, num_epochs=3, nworkers=2)
    loader.load_state_dict(state)
    got = [y.copy() for _, y in loader]
    assert len(got[0]) < 1000 and len(got[1]) == 2048
    assert len(got) == len(expected) and all((a == b).all()
                                             for a, b in zip(got, expected))


def test_shm_budget_is_checked():
    with pytest.raises(ValueError, match="shm_budget"):
        seqtools.load_buffers(np.zeros, shm_budget=0)
    with pytest.raises(TypeError, match="shm_budget"):
        seqtools.prefetch([1, 2], 1, "process", shm_budget=1.5)
