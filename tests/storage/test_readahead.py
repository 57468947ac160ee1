"""Read-ahead in ``epochs`` over remote arrays, against the real S3 server of
``conftest.py``: the stream is the local one whatever the read-ahead, the batches
read ahead are the ones the loader reads next, their blocks are in the cache
before the loop asks for them, and ``readahead=0`` fetches nothing ahead.

Waits are bounded by the prefetch futures' results (with a timeout) and by the
reads' own time budget, never by sleeps.
"""

import gc
import subprocess
import sys
import weakref
from concurrent.futures import Future

import numpy as np
import pytest

import seqtools
import seqtools.storage.remote as remote_module
from seqtools.errors import EvaluationError
from seqtools.loaders.epochs import DEFAULT_READAHEAD
from seqtools.storage import StoreUnavailable, open_npy


def same(a, b):
    """Same structure, dtypes, shapes and bytes."""
    if isinstance(a, (tuple, list)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(same(x, y) for x, y in zip(a, b)))
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def open_remote(s3, url, **kw):
    return open_npy(url, storage_options=s3.storage_options(), **kw)


class Recorder:
    """``seqtools.storage.remote.prefetch`` as it is, recording what the loader
    asks for and the futures it gets (the fetches themselves are the real
    ones)."""

    def __init__(self, monkeypatch, busy=False):
        self.real = remote_module.prefetch
        self.indices, self.futures = [], []
        # busy: every request looks like one with blocks to fetch, so that the
        # loader never finds read-ahead idle and stops asking
        self.busy = busy
        monkeypatch.setattr(remote_module, "prefetch", self)

    def __call__(self, dataset, indices):
        self.indices.append(np.array(indices))
        futures = self.real(dataset, indices)
        if self.busy:
            futures = [f if f is not remote_module.prefetch_done else done_future()
                       for f in futures]
        self.futures += futures
        return futures

    def wait(self):
        """Until every fetch asked for so far is over (cached or failed)."""
        for f in self.futures:
            f.exception(timeout=60)


def done_future():
    future = Future()
    future.set_result(0)
    return future


def local_stream(ref, batch_size, rank, world_size, count, **kw):
    with seqtools.epochs(ref, batch_size, seed=11, rank=rank, world_size=world_size,
                         **kw) as loader:
        return [next(loader) for _ in range(count)]


# -- the stream ------------------------------------------------------------------------


@pytest.mark.timeout(240)
@pytest.mark.parametrize("world_size", [1, 2])
@pytest.mark.parametrize("method", ["process", "thread"])
def test_stream_is_the_local_one(s3, dataset, tmp_path, method, world_size):
    """Two epochs and then some, with a state_dict resume inside the second:
    each rank's batches are the local ones, bit for bit, read ahead or not."""
    url, local, labels = dataset
    remote = open_remote(s3, url, cache_dir=str(tmp_path / "cache"), block_size=512)
    data = seqtools.collate([seqtools.concatenate(remote), labels])
    ref = seqtools.collate([seqtools.concatenate(local), labels])
    for rank in range(world_size):
        with seqtools.epochs(ref, 24, seed=11, rank=rank,
                             world_size=world_size) as probe:
            per_epoch = probe.batches_per_epoch
        count = 2 * per_epoch + 3
        expected = local_stream(ref, 24, rank, world_size, count)
        cut = per_epoch + 2  # inside the second epoch
        options = dict(seed=11, rank=rank, world_size=world_size, nworkers=2,
                       method=method, readahead=3)
        with seqtools.epochs(data, 24, **options) as loader:
            assert loader._readahead is not None  # read-ahead is on here
            got = [next(loader) for _ in range(cut)]
            state = loader.state_dict()
        with seqtools.epochs(data, 24, **options) as loader:
            loader.load_state_dict(state)
            got += [next(loader) for _ in range(count - cut)]
        assert len(got) == len(expected)
        for k, (a, b) in enumerate(zip(got, expected)):
            assert same(a, b), (rank, k)


@pytest.mark.timeout(120)
def test_reads_ahead_the_batches_the_loader_reads_next(s3, dataset, tmp_path,
                                                       monkeypatch):
    """The rows handed to prefetch are those of the batches to come, in the
    loader's order: rank 1 of 2, shuffled, over an epoch boundary, up to
    num_epochs' end, and again from a resumed position (inline: no window)."""
    url, local, labels = dataset
    rec = Recorder(monkeypatch, busy=True)
    remote = open_remote(s3, url, cache_dir=str(tmp_path / "cache"))
    data = seqtools.collate([seqtools.concatenate(remote), labels])
    ids = np.arange(len(labels))
    ref = seqtools.collate([ids, labels])  # batch k's first field: its indices
    R = 4
    options = dict(seed=11, rank=1, world_size=2, num_epochs=2, readahead=R)
    expected = [b[0] for b in seqtools.epochs(ref, 32, **options)]
    n = len(expected)
    assert n > 2 * R  # the read-ahead crosses the epoch boundary, then stops
    loader = seqtools.epochs(data, 32, **options)
    for k in range(n):
        next(loader)
        # batch k handed out inline (no workers' window): batches 1 to k + R
        # asked for, each once, in order
        asked = rec.indices
        assert len(asked) == min(k + R, n - 1), k
        for j, idx in enumerate(asked):
            assert np.array_equal(idx, expected[1 + j]), (k, j)
    with pytest.raises(StopIteration):
        next(loader)
    assert len(rec.indices) == n - 1  # nothing past the last epoch
    # resumed mid-way: batches from the state's position on
    cut = 3
    state = seqtools.epochs(ref, 32, **options)
    for _ in range(cut):
        next(state)
    rec.indices.clear()
    loader.load_state_dict(state.state_dict())
    next(loader)
    assert len(rec.indices) == R
    for j, idx in enumerate(rec.indices):
        assert np.array_equal(idx, expected[cut + 1 + j]), j
    rec.wait()
    loader.close()


@pytest.mark.timeout(120)
def test_read_ahead_idles_once_an_epoch_finds_everything_cached(
        s3, dataset, tmp_path, monkeypatch):
    """Once a whole epoch of read-ahead found every block cached (the rows the
    loader reads are all there), it looks at one batch an epoch instead of
    each batch; the batches stay the local ones."""
    url, local, labels = dataset
    rec = Recorder(monkeypatch)
    remote = open_remote(s3, url, cache_dir=str(tmp_path / "cache"), block_size=256)
    data = seqtools.collate([seqtools.concatenate(remote), labels])
    ref = seqtools.collate([seqtools.concatenate(local), labels])
    options = dict(seed=5, num_epochs=6, readahead=2)
    loader = seqtools.epochs(data, 16, **options)
    per_epoch = loader.batches_per_epoch
    asked = []
    for got, want in zip(loader, seqtools.epochs(ref, 16, **options)):
        assert same(got, want)
        rec.wait()  # so that what is asked next finds the blocks cached
        asked.append(len(rec.indices))
    assert len(asked) == 6 * per_epoch
    # every batch asked for in the first epoch; an epoch in the fifth and sixth
    per_epoch_asked = [asked[e * per_epoch - 1] - (asked[(e - 1) * per_epoch - 1]
                                                   if e > 1 else 0)
                       for e in range(1, 7)]
    assert per_epoch_asked[0] >= per_epoch - 2
    assert per_epoch_asked[4] <= 1 and per_epoch_asked[5] <= 1, per_epoch_asked


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["process", "thread"])
def test_reads_ahead_past_the_workers_window(s3, dataset, tmp_path, monkeypatch,
                                             method):
    """With workers, the batches asked for are those past the window the
    workers make themselves: after batch 0, batches w + 1 to w + R."""
    url, local, labels = dataset
    rec = Recorder(monkeypatch)
    remote = open_remote(s3, url, cache_dir=str(tmp_path / "cache"))
    data = seqtools.collate([seqtools.concatenate(remote), labels])
    ref = seqtools.collate([np.arange(len(labels)), labels])
    R, w = 3, 4
    expected = [b[0] for b in seqtools.epochs(ref, 8, seed=2, num_epochs=1)]
    assert len(expected) > w + R
    with seqtools.epochs(data, 8, seed=2, num_epochs=1, readahead=R,
                         nworkers=1, method=method, max_buffered=w) as loader:
        next(loader)
        assert len(rec.indices) == R
        for j, idx in enumerate(rec.indices):
            assert np.array_equal(idx, expected[w + 1 + j]), j
        rec.wait()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("readahead", [0, 3])
def test_blocks_read_ahead_are_cached_before_the_loop_asks(s3, dataset, tmp_path,
                                                           monkeypatch, readahead):
    """After batch 0, with the read-ahead's fetches over, the store goes down:
    with readahead=R batches 1 to R come from the cache, bit for bit; with
    readahead=0 nothing was fetched ahead and batch 1 needs the store.

    Blocks of 512 bytes (about 8 rows of 60 bytes) in dataset order: batch 1's
    rows are in blocks batch 0 does not touch, so only read-ahead can have
    cached them; row 200 is read by neither (it shows the store is down)."""
    url, local, labels = dataset
    rec = Recorder(monkeypatch)
    remote = open_remote(s3, url, cache_dir=str(tmp_path / "cache"), block_size=512,
                         timeout=3)
    data = seqtools.concatenate(remote)
    ref = seqtools.concatenate(local)
    batch = 16
    expected = local_stream(ref, batch, 0, 1, readahead + 2, shuffle=False)
    loader = seqtools.epochs(data, batch, seed=11, shuffle=False,
                             readahead=readahead)
    try:
        assert same(next(loader), expected[0])
        rec.wait()
        assert len(rec.indices) == readahead
        s3.kill()
        for k in range(1, readahead + 1):
            assert same(next(loader), expected[k]), k
        with pytest.raises(StoreUnavailable):
            data[200]
        # the next batch was not read ahead yet (asked for only as batch 1 was
        # handed out, from a store already down): it needs the store
        with pytest.raises(EvaluationError) as info:
            next(loader)
        assert isinstance(info.value.__cause__, StoreUnavailable)
    finally:
        loader.close()
        rec.wait()  # the read-ahead meeting the dead store is over
        if s3.proc is None:  # killed above (not if a check before failed)
            s3.start()


# -- what it holds and costs -----------------------------------------------------------


def test_the_loader_is_not_kept_alive(s3, dataset, tmp_path):
    url, local, labels = dataset
    remote = open_remote(s3, url, cache_dir=str(tmp_path / "cache"), block_size=512)
    data = seqtools.collate([seqtools.concatenate(remote), labels])
    loader = seqtools.epochs(data, 16, seed=1, readahead=DEFAULT_READAHEAD)
    assert loader._readahead is not None
    next(loader)
    ref = weakref.ref(loader)
    del loader
    gc.collect()
    assert ref() is None


def test_no_cache_or_local_data_reads_nothing_ahead(s3, dataset):
    url, local, labels = dataset
    remote = open_remote(s3, url)  # no cache_dir: nowhere to read ahead into
    loader = seqtools.epochs(seqtools.concatenate(remote), 16, seed=1)
    assert loader._readahead is None
    loader = seqtools.epochs(seqtools.concatenate(local), 16, seed=1)
    assert loader._readahead is None


def test_local_data_does_not_import_fsspec():
    code = ("import sys, numpy as np, seqtools\n"
            "data = seqtools.collate([np.zeros((50, 3)), np.arange(50)])\n"
            "loader = seqtools.epochs(data, 8, seed=0, readahead=4)\n"
            "next(loader)\n"
            "assert loader._readahead is None\n"
            "assert 'fsspec' not in sys.modules, 'fsspec imported'\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, cwd="/", timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]


@pytest.mark.parametrize("value, error", [(-1, ValueError), (1.5, TypeError),
                                          (True, TypeError), ("8", TypeError),
                                          (None, TypeError)])
def test_bad_readahead(value, error):
    with pytest.raises(error, match=r"epochs\(\): readahead must be .*0 turns "
                                    r"read-ahead off"):
        seqtools.epochs(np.zeros((10, 2)), 4, seed=0, readahead=value)
