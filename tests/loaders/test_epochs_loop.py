"""The loop shape of torch's DataLoader on ``epochs``: ``one_epoch()``,
``len()``, the state at an epoch's end; ``transform=`` and ``start_hook=`` (on
``load_buffers`` too)."""

import os
import time

import numpy as np
import pytest

import seqtools
from seqtools import EvaluationError

DATA = seqtools.collate([np.arange(50.0).reshape(25, 2), np.arange(25)])


def labels(batches):
    return [np.asarray(y).tolist() for _, y in batches]


def stream(num_epochs, **kw):
    """The endless stream's batches, epoch by epoch."""
    loader = seqtools.epochs(DATA, 4, seed=3, **kw)
    return [labels(next(loader) for _ in range(len(loader)))
            for _ in range(num_epochs)]


@pytest.mark.parametrize("world", [(0, 1), (1, 2)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_one_epoch_is_an_epoch_of_the_stream(world, drop_last):
    rank, world_size = world
    kw = dict(rank=rank, world_size=world_size, drop_last=drop_last)
    loader = seqtools.epochs(DATA, 4, seed=3, **kw)
    expected = 25 // (4 * world_size) + (not drop_last and 25 % (4 * world_size) > 0)
    assert len(loader) == loader.batches_per_epoch == expected
    got = []
    for epoch in range(loader.epoch, 3):
        batches = loader.one_epoch()
        assert len(batches) == len(loader)
        got.append(labels(batches))
        assert len(batches) == 0 and loader.epoch == epoch
    assert got == stream(3, **kw)


@pytest.mark.parametrize("nworkers", [0, 2])
def test_one_epoch_resumes_mid_epoch_and_at_an_epoch_end(nworkers):
    expected = stream(3)
    loader = seqtools.epochs(DATA, 4, seed=3, nworkers=nworkers)
    it = loader.one_epoch()
    first = labels([next(it), next(it)])
    state = loader.state_dict()
    resumed = seqtools.epochs(DATA, 4, seed=3, nworkers=nworkers)
    resumed.load_state_dict(state)
    assert resumed.epoch == 0
    rest = resumed.one_epoch()
    assert len(rest) == len(loader) - 2
    assert first + labels(rest) == expected[0]
    end = resumed.state_dict()  # after the last batch of epoch 0
    assert (end["epoch"], end["position"]) == (1, 0)
    again = seqtools.epochs(DATA, 4, seed=3, nworkers=nworkers)
    again.load_state_dict(end)
    assert again.epoch == 1  # the loop's range(loader.epoch, ...) starts there
    assert [labels(again.one_epoch()) for _ in range(again.epoch, 3)] == expected[1:]
    for x in (loader, resumed, again):
        x.close()


def test_one_epoch_ends_with_num_epochs_and_when_the_loader_moves():
    loader = seqtools.epochs(DATA, 4, seed=3, num_epochs=1)
    assert len(labels(loader.one_epoch())) == len(loader)
    assert labels(loader.one_epoch()) == []  # num_epochs is over
    loader = seqtools.epochs(DATA, 4, seed=3)
    it = loader.one_epoch()
    next(it)
    loader.load_state_dict(loader.state_dict())  # moved: this epoch's run ends
    assert len(it) == 0 and list(it) == []


def double(batch):
    x, y = batch
    return {"x": (x * 2).astype(np.float32), "y": y, "n": len(y)}


@pytest.mark.parametrize("nworkers,method", [(0, "process"), (2, "process"),
                                             (2, "thread")])
def test_transform_runs_on_each_batch(nworkers, method):
    plain = seqtools.epochs(DATA, 4, seed=3, num_epochs=2)
    loader = seqtools.epochs(DATA, 4, seed=3, num_epochs=2, nworkers=nworkers,
                             method=method, transform=double)
    for (x, y), got in zip(plain, loader):
        assert sorted(got) == ["n", "x", "y"] and got["x"].dtype == np.float32
        np.testing.assert_array_equal(got["x"], x * 2)
        np.testing.assert_array_equal(got["y"], y)
        assert got["n"] == len(y)
    loader.close()


def fails_on_batch_1(batch):
    if 0 in batch[1]:
        raise ValueError("a bad batch")
    return batch


@pytest.mark.parametrize("nworkers", [0, 2])
def test_a_failing_transform_is_named_with_its_batch(nworkers):
    loader = seqtools.epochs(DATA, 4, seed=3, nworkers=nworkers,
                             transform=fails_on_batch_1)
    with pytest.raises(EvaluationError) as info:
        for _ in range(len(loader)):
            next(loader)
    message = str(info.value)
    assert message.startswith("epochs(): batch ") and "a bad batch" in message
    if nworkers:  # the worker's traceback
        assert "fails_on_batch_1" in message
    else:  # raised from the transform's own error
        assert isinstance(info.value.__cause__, ValueError)
    loader.close()


class MarkStart:
    """Leaves a mark ``<worker>-<pid>``, then waits (30 s at most) for the other
    worker's: no batch is made before both hooks ran."""

    def __init__(self, folder, nworkers=2):
        self.folder, self.nworkers = folder, nworkers

    def __call__(self, i):
        open(os.path.join(self.folder, f"{i}-{os.getpid()}"), "w").close()
        deadline = time.monotonic() + 30
        while (len(os.listdir(self.folder)) < self.nworkers
               and time.monotonic() < deadline):
            time.sleep(0.01)


@pytest.mark.parametrize("method", ["process", "thread"])
def test_start_hook_runs_in_each_worker(tmp_path, method):
    loader = seqtools.epochs(DATA, 4, seed=3, nworkers=2, method=method,
                             start_hook=MarkStart(str(tmp_path)), num_epochs=1)
    assert labels(loader) == stream(1)[0]
    marks = sorted(os.listdir(tmp_path))
    assert sorted(m.split("-")[0] for m in marks) == ["0", "1"]
    pids = {m.split("-")[1] for m in marks}
    assert (str(os.getpid()) in pids) == (method == "thread")
    inline = seqtools.epochs(DATA, 4, seed=3, start_hook=MarkStart(str(tmp_path)),
                             num_epochs=1)
    list(inline)
    assert sorted(os.listdir(tmp_path)) == marks  # not called inline


def test_transform_and_start_hook_must_be_callable():
    with pytest.raises(TypeError, match="transform must be callable"):
        seqtools.epochs(DATA, 4, seed=0, transform=3)
    with pytest.raises(TypeError, match="start_hook must be callable"):
        seqtools.epochs(DATA, 4, seed=0, start_hook="x")
    with pytest.raises(TypeError, match="transform must be callable"):
        seqtools.load_buffers(lambda: 1, transform=3)


def scaled(x):
    return x * 10


@pytest.mark.parametrize("method", ["process", "thread"])
@pytest.mark.parametrize("sampler", ["minibatches", "plain"])
def test_load_buffers_transform(method, sampler):
    rows = np.arange(40.0).reshape(20, 2)
    make = (lambda: seqtools.minibatches(rows, 4, seed=1)) if sampler == "minibatches" \
        else (lambda: seqtools.minibatches(rows, 4, seed=1).__call__)
    reference = make()
    with seqtools.load_buffers(make(), 4, 2, method=method, ordered=True,
                               transform=scaled) as loader:
        for _ in range(10):
            np.testing.assert_array_equal(next(loader), reference() * 10)


def test_torch_tensors_without_a_copy():
    torch = pytest.importorskip("torch")
    with seqtools.epochs(DATA, 4, seed=3, nworkers=2, num_epochs=1) as loader:
        for x, y in loader:
            # the recipe of docs/torch.rst: from_numpy shares the batch's memory
            tx, ty = torch.from_numpy(x), torch.from_numpy(y)
            assert tx.data_ptr() == x.ctypes.data and ty.data_ptr() == y.ctypes.data
