"""Tests of seqtools.storage.remote: ``open_npy`` and remote arrays, read from a real
S3 server (SeaweedFS, see conftest.py) and compared bit for bit with the same
arrays read locally, through views, ``stack``, ``load_buffers`` and ``epochs``
(process and thread workers); the faults of a store (restarts, missing objects,
corrupt or truncated headers, wrong credentials) end in clear errors within
bounded time.
"""

import io
import os
import pickle
import subprocess
import sys
import threading

import numpy as np
import pytest

import seqtools
from seqtools.storage import (
    AccessDenied,
    CorruptObject,
    ObjectNotFound,
    RemoteArray,
    StoreUnavailable,
    fetch,
    open_npy,
    prefetch,
)
from seqtools.storage import remote as remote_module

# -- helpers ---------------------------------------------------------------------------


def same(a, b):
    """Same structure, dtypes, shapes and bytes."""
    if isinstance(a, (tuple, list)):
        return (type(a) is type(b) and len(a) == len(b)
                and all(same(x, y) for x, y in zip(a, b)))
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def chunks_of(rng, sizes, row_shape=(5, 3), dtype=np.float32):
    return [rng.standard_normal((n, *row_shape)).astype(dtype) for n in sizes]


def open_remote(s3, url, **kw):
    return open_npy(url, storage_options=s3.storage_options(), **kw)


# -- local files (no server) -----------------------------------------------------------


def test_local_paths_are_memory_maps(tmp_path):
    for k in (2, 0, 1):
        np.save(tmp_path / f"c{k}.npy", np.full((3, 2), k))
    arrays = open_npy(str(tmp_path / "c*.npy"))
    assert [int(a[0, 0]) for a in arrays] == [0, 1, 2]
    assert all(isinstance(a, np.memmap) for a in arrays)
    one = open_npy([tmp_path / "c2.npy", "file://" + str(tmp_path / "c0.npy")])
    assert [int(a[0, 0]) for a in one] == [2, 0]
    with pytest.raises(ObjectNotFound, match="nothing matches"):
        open_npy(str(tmp_path / "none-*.npy"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        open_npy(str(tmp_path / "missing.npy"))
    with pytest.raises(ValueError, match="timeout"):
        open_npy(str(tmp_path / "c0.npy"), timeout=0)
    with pytest.raises(TypeError, match="paths"):
        open_npy(3)


def test_coalesce_and_runs():
    from seqtools.storage.remote import _coalesce, _runs

    # adjacent rows: one range; a gap under the limit: merged; over: split
    assert _coalesce([0, 10, 20], 10, 0, 1000) == [(0, 30, 0, 3)]
    assert _coalesce([0, 15, 100], 10, 5, 1000) == [(0, 25, 0, 2), (100, 110, 2, 3)]
    assert _coalesce([0, 10, 20, 30], 10, 0, 20) == [(0, 20, 0, 2), (20, 40, 2, 4)]
    assert _runs([1, 2, 3, 7, 8], 10) == [(1, 4), (7, 9)]
    assert _runs([1, 2, 3, 4], 2) == [(1, 3), (3, 5)]


# -- reads against local ---------------------------------------------------------------


@pytest.mark.parametrize("cached", [False, True], ids=["direct", "cached"])
def test_views_and_stack_match_local(s3, dataset, tmp_path, rng, cached):
    url, local, labels = dataset
    kw = {"cache_dir": str(tmp_path / "cache"), "block_size": 1000} if cached else {}
    remote = open_remote(s3, url, **kw)
    assert [type(r) for r in remote] == [RemoteArray] * len(local)
    assert [r.shape for r in remote] == [c.shape for c in local]
    assert all(r.dtype == c.dtype for r, c in zip(remote, local))
    data, ref = seqtools.concatenate(remote), seqtools.concatenate(local)
    n = len(ref)
    assert len(data) == n
    for i in [0, 1, 130, 131, n - 1, -1, -n]:
        assert same(data[i], ref[i])
    assert same(list(data[3:200:7]), list(ref[3:200:7]))
    assert same(list(remote[0]), list(local[0]))  # iteration, block by block
    assert same(np.asarray(remote[3]), local[3])
    # fused batches: random (repeats included), sorted runs, one chunk, all
    for idx in [rng.integers(0, n, 64), np.arange(100, 180), np.array([5]),
                np.arange(n)[::-1], rng.permutation(n)]:
        assert same(seqtools.stack(seqtools.gather(data, idx)),
                    seqtools.stack(seqtools.gather(ref, idx)))
    pairs = seqtools.collate([data, labels])
    pairs_ref = seqtools.collate([ref, labels])
    idx = rng.integers(0, n, 50)
    assert same(seqtools.stack(seqtools.gather(pairs, idx)),
                seqtools.stack(seqtools.gather(pairs_ref, idx)))
    batches = seqtools.batch(pairs, 32, collate_fn=seqtools.stack)
    batches_ref = seqtools.batch(pairs_ref, 32, collate_fn=seqtools.stack)
    for k in [0, 3, len(batches) - 1]:
        assert same(batches[k], batches_ref[k])
    if cached:
        assert os.listdir(tmp_path / "cache")  # blocks were written


@pytest.mark.parametrize("block_size", [97, 4096], ids=["blocks", "mapped"])
def test_dtypes_and_row_layouts(s3, tmp_path, rng, block_size):
    """Row sizes that straddle blocks, 1-D arrays (items are scalars), records,
    big-endian and unaligned rows; read block by block from the cache (blocks
    of 97 bytes) or as one mapped array (blocks of a page)."""
    arrays = {
        "f64.npy": rng.standard_normal((50, 248)),
        "i16-3d.npy": rng.integers(-99, 99, (40, 3, 7)).astype(np.int16),
        "u8-odd.npy": rng.integers(0, 255, (33, 13)).astype(np.uint8),
        "1d.npy": rng.standard_normal(60).astype(np.float32),
        "be.npy": rng.standard_normal((20, 3)).astype(">f8"),
        "be-1d.npy": np.arange(10, dtype=">i4"),
        "rec.npy": np.array([(i, i * 0.5, b"ab") for i in range(30)],
                            dtype=[("a", "<i4"), ("b", "<f8"), ("c", "S3")]),
    }
    for name, arr in arrays.items():
        s3.upload(f"dtypes/{name}", arr)
    for cache in [None, str(tmp_path / "c")]:
        for name, arr in arrays.items():
            (remote,) = open_remote(s3, s3.url(f"dtypes/{name}"), cache_dir=cache,
                                    block_size=block_size)
            assert remote.dtype == arr.dtype and remote.shape == arr.shape
            idx = rng.integers(0, len(arr), 25)
            assert same(seqtools.stack(seqtools.gather(remote, idx)),
                        seqtools.stack(seqtools.gather(arr, idx))), name
            assert same(remote[7], arr[7]), name
            assert same(remote.read_rows(idx), arr[idx]), name


def test_batch_reads_are_coalesced(s3, dataset, monkeypatch):
    """A batch of rows is one set of range requests: adjacent rows in one range."""
    url, local, _ = dataset
    remote = open_remote(s3, url)
    calls = []
    real = fetch._cat

    def counting(fs, u, ranges, timeout):
        calls.append(list(ranges))
        return real(fs, u, ranges, timeout)

    monkeypatch.setattr(fetch, "_cat", counting)
    seqtools.stack(seqtools.gather(remote[0], np.arange(10, 60)))
    assert len(calls) == 1 and len(calls[0]) == 1  # 50 rows, one range
    calls.clear()
    rows = np.array([3, 4, 5, 100, 101, 7])  # a run, a far pair, a near row
    out = seqtools.stack(seqtools.gather(remote[0], rows))
    assert same(out, local[0][rows])
    assert len(calls) == 1 and len(calls[0]) <= 2
    calls.clear()
    # across chunks: one attempt per chunk, never one per row
    idx = np.arange(0, 400, 3)
    seqtools.stack(seqtools.gather(seqtools.concatenate(remote), idx))
    assert len(calls) <= len(remote)


def test_pickles_as_a_reference(s3, dataset):
    url, local, _ = dataset
    remote = open_remote(s3, url)
    blob = pickle.dumps(remote[0])
    assert len(blob) < 1000  # the URL and the layout, never the data
    again = pickle.loads(blob)
    assert same(again.read_rows([5, 1]), local[0][[5, 1]])
    view = seqtools.gather(seqtools.concatenate(remote), [3, 2, 1])
    assert len(pickle.dumps(view)) < 5000
    assert same(seqtools.stack(pickle.loads(pickle.dumps(view))),
                seqtools.stack(seqtools.gather(seqtools.concatenate(local), [3, 2, 1])))


def test_forked_child_makes_its_own_filesystem(s3, dataset):
    """After fork, a child reads with a filesystem of its own (fsspec's event
    loop does not survive a fork)."""
    url, local, _ = dataset
    (remote,) = open_remote(s3, url.replace("part-*", "part-00"))
    remote.read_rows([0])  # the parent's filesystem exists
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running pytest's cleanup
        try:
            ok = same(remote.read_rows([9, 8]), local[0][[9, 8]])
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    try:
        _, status = os.waitpid(pid, 0)
        assert os.read(r, 1) == b"1"
    finally:
        os.close(r)


# -- loaders ---------------------------------------------------------------------------


class Sampler:
    """Batch ``k`` of a fixed list of index arrays, picked by call_index()."""

    def __init__(self, dataset, orders):
        self.dataset, self.orders = dataset, orders

    def __call__(self):
        k = seqtools.call_index()
        return seqtools.stack(seqtools.gather(self.dataset, self.orders[k % 8]))


@pytest.mark.timeout(120)
def test_load_buffers_process_workers(s3, dataset, tmp_path, rng):
    url, local, labels = dataset
    remote = open_remote(s3, url, cache_dir=str(tmp_path / "cache"))
    data = seqtools.collate([seqtools.concatenate(remote), labels])
    ref = seqtools.collate([seqtools.concatenate(local), labels])
    orders = [rng.integers(0, len(ref), 32) for _ in range(8)]
    loader = seqtools.load_buffers(Sampler(data, orders), max_cached=4, nworkers=2,
                                   ordered=True)
    try:
        for k in range(16):
            got = next(loader)
            assert same(got, seqtools.stack(seqtools.gather(ref, orders[k % 8])))
    finally:
        loader.close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["process", "thread"])
def test_epochs_match_local(s3, dataset, tmp_path, method):
    url, local, labels = dataset
    remote = open_remote(s3, url, cache_dir=str(tmp_path / "cache"))
    data = seqtools.collate([seqtools.concatenate(remote), labels])
    ref = seqtools.collate([seqtools.concatenate(local), labels])
    expected = []
    with seqtools.epochs(ref, 24, seed=5, num_epochs=2) as loader:
        expected = [b for b in loader]
    with seqtools.epochs(data, 24, seed=5, num_epochs=2, nworkers=2,
                         method=method) as loader:
        got = [b for b in loader]
    assert len(got) == len(expected)
    assert all(same(a, b) for a, b in zip(got, expected))


# -- the cache and read-ahead ----------------------------------------------------------


@pytest.mark.timeout(120)
def test_cache_serves_a_stopped_store_and_prefetch_fills_it(s3, dataset, tmp_path):
    """Warm blocks are read with the store down; blocks read ahead by
    prefetch_rows too; the rest fail with StoreUnavailable within the budget."""
    url, local, labels = dataset
    cache = str(tmp_path / "cache")
    remote = open_remote(s3, url, cache_dir=cache, block_size=4096, timeout=3)
    data = seqtools.concatenate(remote)
    ref = seqtools.concatenate(local)
    warm = np.arange(0, 60)
    assert same(seqtools.stack(seqtools.gather(data, warm)),
                seqtools.stack(seqtools.gather(ref, warm)))
    ahead = np.arange(300, 360)  # rows of the last chunk
    futures = prefetch(seqtools.collate([data, labels]), ahead)
    assert len(futures) == 1
    assert futures[0].result(timeout=30) > 0
    assert remote[0].prefetch_rows([]) is None
    s3.kill()
    try:
        for idx in (warm, ahead):
            assert same(seqtools.stack(seqtools.gather(data, idx)),
                        seqtools.stack(seqtools.gather(ref, idx)))
        # never read: the store must answer. A hang would be caught by the
        # test's timeout (no wall-clock assertion here: the budget is 3 s).
        with pytest.raises(StoreUnavailable) as info:
            data[200]
        message = str(info.value)
        assert remote[3].url in message and "bytes" in message
        assert info.value.url == remote[3].url
        lo, hi = info.value.byte_range
        assert hi > lo
        # in a worker process: the loop gets the error, naming the object
        sampler = Sampler(data, [np.array([200, 3])] * 8)
        with seqtools.load_buffers(sampler, nworkers=1) as loader:
            with pytest.raises(Exception) as info:
                next(loader)
        text = f"{info.value} {info.value.__cause__}"
        assert remote[3].url in text and "StoreUnavailable" in text, text
    finally:
        s3.start()
    assert same(data[200], ref[200])  # the store is back


def test_a_small_cache_stays_bounded_and_reads_stay_right(s3, dataset, tmp_path,
                                                          rng):
    """A cache of a few blocks, read over and over: blocks are evicted (some
    while this process still knows them), reads stay bit for bit."""
    from seqtools.storage.blockcache import cache_for

    url, local, _ = dataset
    cache = str(tmp_path / "cache")
    remote = open_remote(s3, url, cache_dir=cache, cache_size=4096, block_size=512)
    data, ref = seqtools.concatenate(remote), seqtools.concatenate(local)
    for _ in range(20):
        idx = rng.integers(0, len(ref), 40)
        assert same(seqtools.stack(seqtools.gather(data, idx)),
                    seqtools.stack(seqtools.gather(ref, idx)))
    total, _ = cache_for(cache, 4096).scan()
    assert total <= 4096 + 4096 // 16 + 512


def mapped_of(arr):
    """The process's map of ``arr``'s cached object (None: not mapped)."""
    return remote_module._maps.get((arr._cache_dir, arr._key))


@pytest.mark.parametrize("row_shape", [(5, 3), (40, 30)], ids=["small", "wide"])
def test_cached_objects_are_read_as_one_mapped_array(s3, tmp_path, rng, row_shape):
    """Blocks of a page are mapped side by side: rows across two blocks (60-byte
    rows) or longer than a block (4800 bytes) read bit for bit, in the parent
    and in a forked child, and an object read whole is mapped whole."""
    local = chunks_of(rng, [300, 141], row_shape)
    for k, arr in enumerate(local):
        s3.upload(f"mapped-{row_shape[0]}/part-{k}.npy", arr)
    remote = open_remote(s3, s3.url(f"mapped-{row_shape[0]}/part-*.npy"),
                         cache_dir=str(tmp_path / "cache"),
                         block_size=remote_module.PAGE_SIZE)
    data, ref = seqtools.concatenate(remote), seqtools.concatenate(local)
    n = len(ref)
    for idx in [rng.integers(0, n, 64), np.arange(n)[::-1], np.array([n - 1])]:
        assert same(seqtools.stack(seqtools.gather(data, idx)),
                    seqtools.stack(seqtools.gather(ref, idx)))
        assert same(remote[0].read_rows(idx % 300), local[0][idx % 300])
    assert same(np.asarray(remote[1]), local[1])
    for arr in remote:
        m = mapped_of(arr)
        assert m is not None and m.objmap.full and m.objmap.nblocks > 1
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # a child: its own maps, the same rows
        try:
            idx = np.arange(n)[::-3]
            ok = same(seqtools.stack(seqtools.gather(data, idx)),
                      seqtools.stack(seqtools.gather(ref, idx)))
            os.write(w, b"1" if ok else b"0")
        finally:
            os._exit(0)
    os.close(w)
    try:
        os.waitpid(pid, 0)
        assert os.read(r, 1) == b"1"
    finally:
        os.close(r)


def test_an_evicted_mapped_block_lets_its_map_go(s3, dataset, tmp_path,
                                                   monkeypatch):
    """A mapped block removed from the cache (another process's eviction) is
    noticed at the next bump: the map is dropped, so its disk space goes, and
    the next read maps what it fetches again, bit for bit."""
    url, local, _ = dataset
    cache = tmp_path / "cache"
    (remote,) = open_remote(s3, url.replace("part-*", "part-00"),
                            cache_dir=str(cache), block_size=remote_module.PAGE_SIZE)
    rows = np.arange(len(local[0]))
    assert same(remote.read_rows(rows), local[0][rows])
    old = mapped_of(remote)
    assert old is not None and old.objmap.full
    folder = cache / remote._key
    for name in os.listdir(folder):
        os.unlink(folder / name)
    monkeypatch.setattr(remote_module, "BUMP_SECONDS", -1.0)  # bump at every read
    assert same(remote.read_rows(rows), local[0][rows])  # the old map's bytes
    assert mapped_of(remote) is not old
    assert same(remote.read_rows(rows[::-1]), local[0][rows[::-1]])
    assert mapped_of(remote).objmap.full and os.listdir(folder)


def test_mapped_blocks_stay_within_the_budgets(s3, dataset, tmp_path, rng,
                                               monkeypatch):
    """At most MAP_BLOCKS blocks mapped in a process, and no more bytes than
    the cache's size: other objects' maps go first, then reads go block by
    block; every read stays bit for bit."""
    url, local, _ = dataset
    page = remote_module.PAGE_SIZE
    monkeypatch.setattr(remote_module, "MAP_BLOCKS", 2)
    remote = open_remote(s3, url, cache_dir=str(tmp_path / "a"), block_size=page)
    data, ref = seqtools.concatenate(remote), seqtools.concatenate(local)

    def mapped_blocks():
        return sum(m.objmap.nmapped for m in remote_module._maps.values())

    for _ in range(10):
        idx = rng.integers(0, len(ref), 40)
        assert same(seqtools.stack(seqtools.gather(data, idx)),
                    seqtools.stack(seqtools.gather(ref, idx)))
        assert mapped_blocks() <= 2
    monkeypatch.setattr(remote_module, "MAP_BLOCKS", 1000)
    remote = open_remote(s3, url, cache_dir=str(tmp_path / "b"), block_size=page,
                         cache_size=2 * page)
    data = seqtools.concatenate(remote)
    for _ in range(10):
        idx = rng.integers(0, len(ref), 40)
        assert same(seqtools.stack(seqtools.gather(data, idx)),
                    seqtools.stack(seqtools.gather(ref, idx)))
        assert sum(m.objmap.nmapped for m in remote_module._maps.values()
                   if m.key[0] == str(tmp_path / "b")) <= 2


def test_two_caches_of_one_object(s3, dataset, tmp_path):
    """What one cache holds says nothing of another's: each fills its own."""
    url, local, _ = dataset
    rows = np.arange(0, 120, 7)
    for name in ("a", "b"):
        (remote,) = open_remote(s3, url.replace("part-*", "part-00"),
                                cache_dir=str(tmp_path / name), block_size=256)
        assert same(remote.read_rows(rows), local[0][rows])
        assert os.listdir(tmp_path / name)


def test_prefetch_without_cache_does_nothing(s3, dataset):
    url, _, _ = dataset
    remote = open_remote(s3, url)
    assert remote[0].prefetch_rows([1, 2, 3]) is None
    assert prefetch(seqtools.concatenate(remote), [1, 2, 3]) == []


@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", ["process"])
def test_store_restarts_mid_epoch(s3, dataset, method):
    """A crash and restart of the store during an epoch: reads retry and the
    stream is the local one, batch for batch."""
    url, local, labels = dataset
    remote = open_remote(s3, url, timeout=60)
    data = seqtools.collate([seqtools.concatenate(remote), labels])
    ref = seqtools.collate([seqtools.concatenate(local), labels])
    with seqtools.epochs(ref, 16, seed=3, num_epochs=1) as loader:
        expected = list(loader)
    got = []
    restarter = None
    with seqtools.epochs(data, 16, seed=3, num_epochs=1, nworkers=2,
                         method=method, max_buffered=2) as loader:
        for k, batch in enumerate(loader):
            got.append(batch)
            if k == 3:
                s3.kill()
                restarter = threading.Timer(2.0, s3.start)
                restarter.start()
    restarter.join(90)
    assert s3.proc is not None
    assert len(got) == len(expected)
    assert all(same(a, b) for a, b in zip(got, expected))


# -- faults ----------------------------------------------------------------------------


@pytest.mark.timeout(45)  # less than the 60 s budget a retry loop would spend
def test_missing_object_and_empty_glob(s3):
    with pytest.raises(ObjectNotFound) as info:
        open_remote(s3, s3.url("nowhere/x.npy"))
    assert "nowhere/x.npy" in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    with pytest.raises(ObjectNotFound, match="nothing matches"):
        open_remote(s3, s3.url("nowhere/*.npy"))


def test_object_deleted_after_opening(s3, rng):
    arr = rng.standard_normal((10, 4))
    url = s3.upload("deleted/a.npy", arr)
    (remote,) = open_remote(s3, url, timeout=1)
    s3.fs().rm(url)
    with pytest.raises(ObjectNotFound, match="gone"):
        remote.read_rows([0])


DAMAGES = {
    "cut-in-header": (lambda b: b[:40], "truncated"),
    "cut-in-data": (lambda b: b[:-8], "truncated"),
    "trailing-bytes": (lambda b: b + b"xx", "longer"),
    "no-magic": (lambda b: b"NOTNUMPY" + b[8:], "not a .npy"),
    "bad-key": (lambda b: b.replace(b"'shape'", b"'shaXe'"), "corrupt"),
    "bad-literal": (lambda b: b.replace(b"(3, 4)", b"(3, x)"), "corrupt"),
    "huge-length": (lambda b: b[:8] + b"\xff\xff" + b[10:], "truncated"),
    "empty": (lambda b: b"", "not a .npy"),
}


@pytest.mark.parametrize("name", list(DAMAGES))
def test_corrupt_objects(s3, name):
    damage, match = DAMAGES[name]
    buf = io.BytesIO()
    np.save(buf, np.arange(12.0).reshape(3, 4))
    url = s3.upload(f"corrupt/{name}.npy", damage(buf.getvalue()))
    with pytest.raises(CorruptObject, match=match) as info:
        open_remote(s3, url)
    assert url in str(info.value) and isinstance(info.value, ValueError)


def test_fortran_order_is_refused(s3):
    url = s3.upload("layout/f.npy", np.asfortranarray(np.ones((3, 4))))
    with pytest.raises(CorruptObject, match="Fortran"):
        open_remote(s3, url)
    url = s3.upload("layout/f1.npy", np.asfortranarray(np.ones(4)))
    (remote,) = open_remote(s3, url)  # 1-D: the same bytes either way
    assert same(remote[2], np.float64(1.0))


@pytest.mark.timeout(45)  # less than the 60 s budget a retry loop would spend
def test_wrong_credentials(s3, dataset):
    url, _, _ = dataset
    # refused at once, not retried for the 60 s budget (the test's timeout
    # would catch a retry loop)
    with pytest.raises(AccessDenied, match="credentials") as info:
        open_npy(url.replace("part-*", "part-00"),
                 storage_options=s3.storage_options(secret="wrong"))
    assert isinstance(info.value, PermissionError)


def test_missing_fsspec_says_what_to_install(tmp_path):
    code = ("import sys; sys.modules['fsspec'] = None\n"
            "import seqtools\n"
            "try:\n"
            "    seqtools.open_npy('s3://bucket/x.npy')\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, cwd=str(tmp_path))
    assert "pip install 'seqtools[remote]'" in out.stdout, out.stderr
