"""seqtools.epochs when things go wrong: a dataset whose length changes between
epochs, a batch that fails (the error names the epoch, the batch and its samples;
the batch is made again), datasets whose samples stack() refuses.

Every behaviour is checked inline (nworkers=0) and through 2 worker processes and
2 worker threads; process tests run under the start method the suite runs with
(SEQTOOLS_START_METHOD), so their datasets live at module level and share state
with the test through files only. Waits poll a condition, with a deadline as a
safety net only.
"""

import os
import re
import time

import numpy as np
import pytest
from conftest import passthrough_errors, shm_leftovers, shm_listing

import seqtools
from seqtools import EvaluationError
from seqtools.loaders.epochs import DatasetLengthChanged, epoch_order
from seqtools.loaders.sharding import BatchStream, Sharding
from seqtools.views.mapping import current_epoch

MODES = [{"nworkers": 0}, {"nworkers": 2, "method": "process"},
         {"nworkers": 2, "method": "thread"}]
MODE_IDS = ["inline", "process", "thread"]

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(autouse=True)
def no_shm_leak():
    before = shm_listing()
    yield
    assert shm_leftovers(before) == []


@pytest.fixture(params=MODES, ids=MODE_IDS)
def mode(request):
    return request.param


def wait_for(path, timeout=60.0):
    """Poll until ``path`` exists (``timeout`` is a safety net, not a measure)."""
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.01)


class Samples:
    """A list-backed dataset whose length the test changes; a read of a sample
    in epoch ``mark_epoch`` or later creates the file ``mark`` (wherever the
    read happens: workers tell the test that they have read ahead)."""

    def __init__(self, n, mark=None, mark_epoch=1):
        self.items = list(range(n))
        self.mark, self.mark_epoch = mark, mark_epoch

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        if self.mark is not None and current_epoch() >= self.mark_epoch:
            if not os.path.exists(self.mark):
                open(self.mark, "w").close()
        return self.items[i]


def ids(batch):
    return np.asarray(batch).tolist()


# -- datasets that change length -------------------------------------------------------


@pytest.mark.parametrize("change", [8, -4], ids=["grows", "shrinks"])
def test_length_change_is_raised_before_the_next_epoch(tmp_path, mode, change):
    mark = str(tmp_path / "read-ahead")
    data = Samples(12, mark)
    loader = seqtools.epochs(data, 4, seed=3, **mode)
    first = [ids(next(loader)) for _ in range(3)]  # epoch 0, all of it
    assert sorted(i for b in first for i in b) == list(range(12))
    if mode["nworkers"]:
        wait_for(mark)  # the workers have made epoch 1's batches from 12 samples
    if change > 0:
        data.items.extend(range(12, 12 + change))
    else:
        del data.items[change:]
    n = 12 + change
    for _ in range(2):  # again and again while the length differs
        with pytest.raises(DatasetLengthChanged) as info:
            next(loader)
        message = str(info.value)
        assert f"has {n} samples at the start of epoch 1" in message
        assert "made for 12" in message and "seqtools.epochs(dataset, ...)" in message
        assert "load_state_dict(loader.state_dict())" in message
        assert (info.value.expected, info.value.found, info.value.epoch) == (12, n, 1)
        assert isinstance(info.value, ValueError)
    state = loader.state_dict()
    assert (state["epoch"], state["position"], state["dataset_length"]) == (1, 0, 12)
    assert loader._loader is None  # the workers were stopped
    # what the message says: a new loader, the position carried over
    with seqtools.epochs(data, 4, seed=3, **mode) as new:
        new.load_state_dict(state)
        assert new.state_dict()["epoch"] == 1 and new.epoch == 1
        got = [ids(next(new)) for _ in range(-(-n // 4))]
    assert sum(got, []) == epoch_order(n, 3, 1).tolist()  # epoch 1 of n samples
    loader.close()


def test_loader_goes_on_when_the_length_comes_back(mode):
    data = Samples(10)
    reference = [ids(b) for b in seqtools.epochs(Samples(10), 3, seed=1, num_epochs=3)]
    loader = seqtools.epochs(data, 3, seed=1, num_epochs=3, **mode)
    got = [ids(next(loader)) for _ in range(4)]
    data.items.append(10)
    with pytest.raises(DatasetLengthChanged, match="start of epoch 1"):
        next(loader)
    data.items.pop()
    got += [ids(b) for b in loader]
    assert got == reference  # nothing skipped, nothing repeated


def test_length_checked_when_a_resumed_stream_starts(mode):
    data = Samples(20)
    loader = seqtools.epochs(data, 4, seed=0, **mode)
    loader.load_state_dict({**loader.state_dict(), "epoch": 2, "position": 8})
    data.items.append(20)
    with pytest.raises(DatasetLengthChanged, match="before batch 2 of epoch 2") as info:
        next(loader)
    # a position inside an epoch does not carry over to another length
    assert "'epoch': 3, 'position': 0" in str(info.value)
    assert loader.state_dict()["position"] == 8
    new = seqtools.epochs(data, 4, seed=0)
    with pytest.raises(ValueError, match="dataset_length=20.*position 0"):
        new.load_state_dict(loader.state_dict())
    new.load_state_dict({**loader.state_dict(), "epoch": 3, "position": 0})
    assert ids(next(new)) == epoch_order(21, 0, 3)[:4].tolist()
    loader.close()


@pytest.mark.parametrize("mode", [MODES[0], {**MODES[2], "max_buffered": 1}],
                         ids=["inline", "thread"])
def test_shrink_seen_when_a_batch_fails_mid_epoch(mode):
    # inline and thread workers read the dataset itself: a removed sample fails
    # to read, and the error says why (with a window of 1, batch 2 is read
    # after the shrink)
    data = Samples(40)
    loader = seqtools.epochs(data, 10, seed=0, shuffle=False, **mode)
    assert ids(next(loader)) == list(range(10))
    del data.items[20:]
    with pytest.raises(DatasetLengthChanged, match="has 20 samples in epoch 0, where "
                       "batch 2 failed") as info:
        while True:  # batch 1 may have been read before the shrink
            next(loader)
    assert isinstance(info.value.__cause__, (IndexError, EvaluationError))
    assert loader.state_dict()["position"] == 20


def test_length_is_read_once_per_epoch():
    class Counted(Samples):
        calls = 0

        def __len__(self):
            Counted.calls += 1
            return Samples.__len__(self)

    loader = seqtools.epochs(Counted(10), 3, seed=0, num_epochs=3)
    before = Counted.calls  # epochs() itself
    assert len(list(loader)) == 12
    assert Counted.calls - before == 3


@pytest.mark.parametrize("n,batch_size,world_size,drop_last,position", [
    (10, 3, 1, False, 0), (10, 3, 2, False, 4), (10, 3, 2, True, 0),
    (10, 3, 2, True, 7), (10, 4, 2, True, 9), (7, 1, 1, False, 6),
    (11, 2, 3, False, 10), (30, 4, 3, True, 25)])
def test_checks_fall_on_the_first_batch_of_each_epoch(n, batch_size, world_size,
                                                      drop_last, position):
    sharding = Sharding(n, batch_size, 0, world_size, drop_last)
    stream = BatchStream(np.arange(n), sharding, 0, True, 5, position, None)
    checks, k = [], 0
    while k < 40:
        checks.append(k)
        k = stream.next_epoch(k)
    # every batch whose epoch differs from the one before it
    firsts = [k for k in range(1, 40) if stream.where(k)[0] != stream.where(k - 1)[0]]
    assert checks == [0] + firsts


def test_load_state_dict_across_lengths_only_at_epoch_starts():
    state = seqtools.epochs(np.arange(50), 8, seed=1).state_dict()
    other = seqtools.epochs(np.arange(70), 8, seed=1, shuffle=True)
    other.load_state_dict({**state, "epoch": 4})  # position 0: any length
    assert ids(next(other)) == epoch_order(70, 1, 4)[:8].tolist()
    other.load_state_dict({**state, "epoch": 4, "position": 50})  # its end
    assert other.state_dict()["epoch"] == 5 and other.state_dict()["position"] == 0
    with pytest.raises(ValueError, match="dataset_length=50"):
        other.load_state_dict({**state, "position": 8})
    with pytest.raises(ValueError, match="batch_size=8"):
        seqtools.epochs(np.arange(70), 4, seed=1).load_state_dict(state)


# -- errors name the epoch, the batch and the samples; the batch is made again --------


class FailOnce:
    """``f(i) = i``, except that reading sample ``victim`` in epoch ``epoch``
    raises once: the file ``flag`` says it did (worker processes see it too)."""

    def __init__(self, victim, flag, error=ValueError, epoch=0):
        self.victim, self.flag, self.error, self.epoch = victim, flag, error, epoch

    def __call__(self, i):
        if (i == self.victim and current_epoch() == self.epoch
                and not os.path.exists(self.flag)):
            open(self.flag, "w").close()
            raise self.error(f"bad sample {i}")
        return i


class FlakyList:
    """A plain sequence (no view) whose item ``victim`` raises KeyError once."""

    def __init__(self, n, victim, flag, epoch):
        self.n, self.read = n, FailOnce(victim, flag, KeyError, epoch)

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return self.read(i)


def failing(kind, tmp_path, n, victim, epoch=0):
    """A dataset of ``n`` samples whose sample ``victim`` fails once in
    ``epoch``, and the flag file that says it did."""
    flag = str(tmp_path / "failed")
    if kind == "smap":
        return seqtools.smap(FailOnce(victim, flag, epoch=epoch), np.arange(n)), flag
    return FlakyList(n, victim, flag, epoch), flag


@pytest.mark.parametrize("kind", ["smap", "sequence"])
def test_failed_batch_is_named_and_made_again(tmp_path, mode, kind):
    n, victim = 50, 23
    dataset, flag = failing(kind, tmp_path, n, victim, epoch=1)
    open(flag, "w").close()
    expected = [ids(b) for b in seqtools.epochs(dataset, 8, seed=5, num_epochs=2)]
    os.unlink(flag)
    order = epoch_order(n, 5, 1)
    where = order.tolist().index(victim)
    got = []
    with seqtools.epochs(dataset, 8, seed=5, num_epochs=2, **mode) as loader:
        while len(got) < len(expected):
            try:
                got.append(ids(next(loader)))
            except EvaluationError as e:
                failure = e
                state = loader.state_dict()
        assert list(loader) == []
    assert got == expected  # the failed batch was made again: none skipped
    batch = where // 8
    lo = batch * 8
    samples = ", ".join(map(str, order[lo:lo + 8].tolist()))
    assert str(failure).startswith(
        f"epochs(): batch {batch} of epoch 1 (position {lo} of the epoch's order; "
        f"samples [{samples}]) failed: ")
    assert f"bad sample {victim}" in str(failure)
    assert ("KeyError" if kind == "sequence" else "ValueError") in str(failure)
    if mode["nworkers"] and mode["method"] == "process":
        assert "in a worker process" in str(failure)  # the worker's traceback
    assert failure.__cause__ is not None
    assert state == {**state, "epoch": 1, "position": lo}  # not consumed


def test_long_batches_list_a_few_samples(tmp_path):
    dataset, flag = failing("smap", tmp_path, 100, 45)
    loader = seqtools.epochs(dataset, 40, seed=0, shuffle=False, rank=1,
                             world_size=2)
    with pytest.raises(EvaluationError) as info:
        next(loader)
    assert str(info.value).startswith(
        "epochs(): batch 0 of epoch 0 on rank 1 (position 40 of the epoch's order; "
        "samples [40, 41, 42, 43, 44, 45, 46, 47, ... (40 in all)]) failed: ")
    # a failure of stack() (not of user code) is named the same way
    ragged = [np.zeros(2), np.zeros(2), np.zeros(3)]
    with pytest.raises(EvaluationError, match=r"(?s)batch 0 of epoch 0 .*samples "
                       r"\[0, 1, 2\]\) failed: ValueError: sample\[2\]"):
        next(seqtools.epochs(ragged, 3, seed=0, shuffle=False))


@pytest.mark.parametrize("kind", ["smap", "sequence"])
def test_passthrough_raises_the_users_exception(tmp_path, mode, kind):
    dataset, flag = failing(kind, tmp_path, 20, 7)
    error = KeyError if kind == "sequence" else ValueError
    with passthrough_errors(), seqtools.epochs(dataset, 5, seed=0, shuffle=False,
                                               **mode) as loader:
        assert ids(next(loader)) == [0, 1, 2, 3, 4]
        with pytest.raises(error, match="bad sample 7") as info:
            next(loader)
        assert not isinstance(info.value, EvaluationError)
        assert "epochs()" not in str(info.value)
        assert loader.state_dict()["position"] == 5
        assert ids(next(loader)) == [5, 6, 7, 8, 9]  # made again


# -- samples stack() refuses -----------------------------------------------------------


@pytest.mark.parametrize("strings", [np.array(["a", "bb", "ccc"]),
                                     np.array([b"a", b"bb", b"ccc"])],
                         ids=["unicode", "bytes"])
def test_1d_string_arrays_are_refused_with_a_way_out(mode, strings):
    with pytest.raises(TypeError, match=rf"1-D array of .*dtype "
                       rf"{re.escape(strings.dtype.str)}.*np.arange\(len"):
        seqtools.epochs(strings, 2, seed=0, **mode)
    # the ways out the message gives: indices, or rows of one column
    with seqtools.epochs(np.arange(3), 2, seed=0, num_epochs=1, **mode) as loader:
        got = [strings[b] for b in loader]
    with seqtools.epochs(strings[:, None], 2, seed=0, num_epochs=1, **mode) as loader:
        rows = [np.array(b) for b in loader]
    order = epoch_order(3, 0, 0)
    for batch, row, lo in zip(got, rows, [0, 2]):
        assert batch.dtype == strings.dtype and row.dtype == strings.dtype
        assert batch.tolist() == strings[order[lo:lo + 2]].tolist()
        assert row.shape == (len(batch), 1) and row[:, 0].tolist() == batch.tolist()
