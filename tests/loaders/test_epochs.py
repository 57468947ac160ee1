"""seqtools.epochs: epochs as pure functions of (seed, epoch, position), their
coverage under ranks, O(1) and elastic resume, per-sample generators of smap.

The reference stream of every comparison is the inline loader (nworkers=0);
streams through workers (threads, processes under each start method, a worker
killed mid-epoch) must be bit-identical to it. Coverage and resume properties are
checked on datasets whose samples are their own ids. Functions given to smap live
at module level so that spawn/forkserver workers can import them.
"""

import collections
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from conftest import pid_alive, shm_leftovers, shm_listing, wait_gone
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import seqtools
import seqtools.batching.stacking
import seqtools.views.core
from seqtools import EvaluationError
from seqtools.loaders.epochs import epoch_order
from seqtools.views.mapping import sample_rng

# the module that draws the epochs' orders
sharding_module = sys.modules["seqtools.loaders.sharding"]


@pytest.fixture(autouse=True)
def no_shm_leak():
    before = shm_listing()
    yield
    assert shm_leftovers(before) == []


def memmapped(tmp_path, n, width=3, chunk=37):
    """``collate([concatenate(memory-mapped chunks), ids])``: row i of the data
    holds ``i * width + [0, 1, ...]``, the label of sample i is i."""
    data = np.arange(n * width, dtype=np.float64).reshape(n, width)
    chunks = []
    for k, lo in enumerate(range(0, n, chunk)):
        path = tmp_path / f"chunk{k}.npy"
        np.save(path, data[lo : lo + chunk])
        chunks.append(np.load(path, mmap_mode="r"))
    return seqtools.collate([seqtools.concatenate(chunks), np.arange(n)]), data


def noise(i, rng):
    """A random 'augmentation': the sample id and a draw from its generator."""
    return np.array([i, rng.integers(2**62)], dtype=np.int64)


def with_noise(tmp_path, n):
    """The memory-mapped dataset plus a random smap part (read item by item)."""
    dataset, _ = memmapped(tmp_path, n)
    return seqtools.collate([dataset, seqtools.smap(noise, np.arange(n), rng=5)])


def take(loader, count):
    """``count`` batches, copied (they may view shared memory)."""
    out = []
    for _ in range(count):
        out.append(copy(next(loader)))
    return out


def copy(batch):
    if isinstance(batch, tuple):
        return tuple(copy(b) for b in batch)
    return np.array(batch)


def same(a, b):
    if isinstance(a, tuple):
        return (isinstance(b, tuple) and len(a) == len(b)
                and all(same(x, y) for x, y in zip(a, b)))
    return (a.dtype == b.dtype and a.shape == b.shape
            and a.tobytes() == b.tobytes())


def same_streams(a, b):
    return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))


def reference_epoch(n, batch_size, world_size, drop_last, order, start=0):
    """Per rank, the batches of an epoch from ``start``, by the documented rule."""
    step = batch_size * world_size
    rest = n - start
    steps = rest // step if drop_last else -(-rest // step)
    batches = [[] for _ in range(world_size)]
    for j in range(steps):
        g = start + j * step
        b = batch_size if g + step <= n else -(-(n - g) // world_size)
        for r in range(world_size):
            batches[r].append([int(order[p if p < n else (p - n) % n])
                               for p in range(g + r * b, g + (r + 1) * b)])
    return batches


# -- one epoch: a permutation, split between ranks ------------------------------------


@settings(max_examples=150, deadline=None)
@given(n=st.integers(1, 300), batch_size=st.integers(1, 17),
       world_size=st.integers(1, 6), drop_last=st.booleans(), shuffle=st.booleans(),
       seed=st.integers(0, 2**64))
def test_epoch_coverage(n, batch_size, world_size, drop_last, shuffle, seed):
    if drop_last and n < batch_size * world_size:
        with pytest.raises(ValueError, match="every epoch would be empty"):
            seqtools.epochs(np.arange(n), batch_size, seed=seed, drop_last=True,
                            rank=0, world_size=world_size)
        return
    step = batch_size * world_size
    loaders = [seqtools.epochs(np.arange(n), batch_size, seed=seed, shuffle=shuffle,
                               drop_last=drop_last, num_epochs=2, rank=r,
                               world_size=world_size) for r in range(world_size)]
    per_epoch = loaders[0].batches_per_epoch
    assert per_epoch == (n // step if drop_last else -(-n // step))
    streams = []
    for loader in loaders:
        batches = [(loader.epoch, b.tolist()) for b in loader]
        assert len(batches) == 2 * per_epoch  # the same count on every rank
        streams.append(batches)
    for epoch in range(2):
        order = epoch_order(n, seed, epoch, shuffle)
        if not shuffle:
            assert order.tolist() == list(range(n))
        got = [[b for e, b in s if e == epoch] for s in streams]
        assert got == reference_epoch(n, batch_size, world_size, drop_last, order)
        counts = collections.Counter(i for rank in got for b in rank for i in b)
        sizes = [[len(b) for b in rank] for rank in got]
        assert all(s == sizes[0] for s in sizes)  # ranks in lockstep
        if drop_last:
            assert all(s == batch_size for s in sizes[0])
            assert max(counts.values()) == 1
            assert len(counts) == n - n % step  # the tail dropped, less than a step
        else:
            assert set(counts) == set(range(n))  # each sample at least once
            assert all(s == batch_size for s in sizes[0][:-1])
            extra = sum(counts.values()) - n
            assert extra < world_size  # padding: fewer repeats than ranks
            repeats = collections.Counter(
                {i: c - 1 for i, c in counts.items() if c > 1})
            pad = collections.Counter(order[k % n] for k in range(extra))
            assert repeats == pad  # the epoch's first samples


def test_orders_differ_between_epochs_and_seeds():
    a, b = epoch_order(100, 0, 0), epoch_order(100, 0, 1)
    assert sorted(a.tolist()) == list(range(100)) and a.tolist() != b.tolist()
    assert epoch_order(100, 1, 0).tolist() != a.tolist()
    assert epoch_order(100, [0, 1], 0).tolist() != a.tolist()
    assert a.dtype == np.int64 and epoch_order(100, 0, 0).tolist() == a.tolist()


def test_batches_are_what_stack_gives(tmp_path):
    dataset, data = memmapped(tmp_path, 100)
    loader = seqtools.epochs(dataset, 16, seed=3, rank=1, world_size=2)
    order = epoch_order(100, 3, 0)
    for j in range(4):
        x, y = next(loader)
        b = 16 if j < 3 else 2  # the tail: 100 - 96 = 4 samples, 2 per rank
        lo = 32 * j + 16 if j < 3 else 96 + 2
        idx = order[lo : lo + b]
        assert same((x, y), seqtools.stack(seqtools.gather(dataset, idx)))
        assert same(x, data[idx])
        assert x.flags.c_contiguous and x.flags.writeable
    # structures stack as stack() does: dicts of items read one by one
    records = [{"x": np.full(2, i), "id": i} for i in range(10)]
    batch = next(seqtools.epochs(records, 4, seed=0, shuffle=False))
    assert batch["id"].tolist() == [0, 1, 2, 3] and batch["x"].shape == (4, 2)


# -- the same stream whatever computes it ---------------------------------------------

LAYOUTS = [(1, "thread", None), (2, "thread", None), (4, "thread", None),
           (1, "process", "fork"), (2, "process", "fork"), (4, "process", "fork"),
           (2, "process", "spawn"), (2, "process", "forkserver")]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("nworkers,method,start_method", LAYOUTS,
                         ids=[f"{m}-{s or ''}{w}" for w, m, s in LAYOUTS])
def test_stream_is_the_same_with_any_workers(tmp_path, nworkers, method, start_method):
    dataset = with_noise(tmp_path, 75)  # 10 batches of 8 per epoch, a short last
    expected = take(seqtools.epochs(dataset, 8, seed=11), 25)
    with seqtools.epochs(dataset, 8, seed=11, nworkers=nworkers, method=method,
                         start_method=start_method, max_buffered=3) as loader:
        got = take(loader, 25)
    assert same_streams(got, expected)
    # the smap part drew from (seed, epoch, sample)
    for k, ((_, ids), drawn) in enumerate(expected):
        assert drawn[:, 0].tolist() == ids.tolist()
        want = [sample_rng(5, i, k // 10).integers(2**62) for i in ids.tolist()]
        assert drawn[:, 1].tolist() == want


@pytest.mark.timeout(120)
def test_process_window_widens_for_small_batches(tmp_path, monkeypatch):
    dataset = with_noise(tmp_path, 75)
    expected = take(seqtools.epochs(dataset, 8, seed=11), 40)

    def run(**kw):
        """The window after the first batch, and the stream."""
        with seqtools.epochs(dataset, 8, seed=11, nworkers=2, **kw) as loader:
            got = take(loader, 1)
            window = loader._loader._engine.pool.window
            got += take(loader, 39)
        assert same_streams(got, expected)  # whatever the window
        return window

    assert run() == 16  # small batches: the wider window, at the first batch
    assert run(max_buffered=10) == 10  # a window the user gives stays
    monkeypatch.setattr(seqtools.loaders.process, "WIDEN_BUDGET", 0)
    assert run() == 10  # batches too large for the budget: max(10, 2 * nworkers)


class KillOnce:
    """An augmentation that kills its worker process the first time it sees
    sample ``victim`` (the flag file remembers)."""

    def __init__(self, victim, flag):
        self.victim, self.flag = victim, flag

    def __call__(self, i, rng):
        if i == self.victim and not os.path.exists(self.flag):
            open(self.flag, "w").close()
            os.kill(os.getpid(), signal.SIGKILL)
        return np.array([i, rng.integers(2**62)])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
def test_worker_killed_mid_epoch_changes_nothing(tmp_path, start_method):
    ids = np.arange(60)
    victim = int(epoch_order(60, 2, 1)[33])  # in batch 4 of epoch 1
    flag = str(tmp_path / "killed")
    dataset = seqtools.collate([ids, seqtools.smap(KillOnce(victim, flag), ids, rng=1)])
    open(flag, "w").close()  # the reference run kills nobody
    expected = take(seqtools.epochs(dataset, 10, seed=2), 18)
    os.unlink(flag)
    with seqtools.epochs(dataset, 10, seed=2, nworkers=2,
                         start_method=start_method) as loader:
        got = take(loader, 18)
    assert os.path.exists(flag)  # a worker died, and its batch was made again
    assert same_streams(got, expected)


@pytest.mark.timeout(120)
def test_worker_killed_from_outside_changes_nothing(tmp_path):
    dataset, _ = memmapped(tmp_path, 200)
    reference = seqtools.epochs(dataset, 16, seed=4)
    with seqtools.epochs(dataset, 16, seed=4, nworkers=2, max_buffered=4) as loader:
        for _ in range(7):
            assert same(copy(next(loader)), next(reference))
        pool = loader._loader._engine.pool
        victim = pool.procs[0]
        os.kill(victim.pid, signal.SIGKILL)
        victim.join(30)  # a safety net: it dies at once
        # on until the pool has replaced it (its check runs twice a second)
        deadline = time.monotonic() + 60  # a safety net
        count = 0
        while (pool.procs[0] is victim or count < 50) and time.monotonic() < deadline:
            assert same(copy(next(loader)), next(reference))
            count += 1
        assert pool.procs[0] is not victim and pool.procs[0].is_alive()


# -- the fused read path --------------------------------------------------------------


def ring_block(a):
    """The ring Block an array received from a worker views."""
    base = a
    while isinstance(base, np.ndarray):
        base = base.base
    return base.obj if isinstance(base, memoryview) else base


def refuse(*args, **kwargs):
    raise AssertionError("a sample was read item by item")


@pytest.mark.timeout(120)
def test_batches_take_the_fused_path(tmp_path, monkeypatch):
    dataset, data = memmapped(tmp_path, 90)
    expected = take(seqtools.epochs(dataset, 8, seed=0), 12)
    # The per-item paths: a fusion plan's Items leaves, and stacking a list.
    monkeypatch.setattr(seqtools.views.fusion.Items, "read", refuse)
    monkeypatch.setattr(seqtools.batching.stacking, "_as_list", refuse)
    assert same_streams(take(seqtools.epochs(dataset, 8, seed=0), 12), expected)
    # forked workers inherit the patches, and stack into the shared ring
    with seqtools.epochs(dataset, 8, seed=0, nworkers=2,
                         start_method="fork") as loader:
        for want in expected:
            x, y = next(loader)
            assert same((x, y), want)
            block = ring_block(x)
            assert type(block).__name__ == "Block" and ring_block(y) is block


# -- per-sample generators ------------------------------------------------------------


def test_smap_rng_is_a_function_of_seed_epoch_and_index():
    ids = np.arange(100)
    view = seqtools.smap(noise, ids, rng=9)
    draws = [int(view[i][1]) for i in range(100)]
    assert draws == [int(view[i][1]) for i in range(100)]  # read again: the same
    assert draws == [int(x[1]) for x in view]  # iterated: the same
    assert len(set(draws)) == 100  # no two samples share a stream
    assert draws[7] == sample_rng(9, 7, epoch=0).integers(2**62)  # epoch 0 here
    assert draws != [int(x[1]) for x in seqtools.smap(noise, ids, rng=10)]
    pickled = __import__("pickle").loads(__import__("pickle").dumps(view))
    assert [int(pickled[i][1]) for i in range(100)] == draws
    # several sequences: the generator comes last
    both = seqtools.smap(lambda a, b, rng: (a, b, rng.random()), [1, 2], [3, 4],
                         rng=[1, 2])
    assert both[1][:2] == (2, 4) and both[1][2] == sample_rng([1, 2], 1).random()
    # the stream of an item in an epoch is apart from every other's
    streams = {tuple(sample_rng(9, i, e).integers(2**62, size=4))
               for i in range(20) for e in range(5)}
    assert len(streams) == 100


def test_smap_rng_epoch_set_by_the_loader():
    ids = np.arange(30)
    dataset = seqtools.collate([ids, seqtools.smap(noise, ids, rng=4)])
    loader = seqtools.epochs(dataset, 10, seed=0, num_epochs=3)
    seen = collections.defaultdict(set)
    for k, (i, draws) in enumerate(loader):
        epoch = k // 3
        assert loader.epoch == epoch
        for sample, d in zip(i.tolist(), draws[:, 1].tolist()):
            assert d == sample_rng(4, sample, epoch).integers(2**62)
            seen[sample].add(d)
    assert all(len(d) == 3 for d in seen.values())  # a new draw each epoch
    assert seqtools.views.mapping.current_epoch() == 0  # left as it was


def test_smap_rng_errors():
    with pytest.raises(TypeError, match="pass the seed"):
        seqtools.smap(noise, [1], rng=np.random.default_rng(0))
    with pytest.raises(TypeError, match="a seed is an int"):
        seqtools.smap(noise, [1], rng=True)
    with pytest.raises(TypeError, match="a seed is an int"):
        seqtools.smap(noise, [1], rng=[])
    with pytest.raises(ValueError, match=">= 0"):
        seqtools.smap(noise, [1], rng=-1)

    def fails(x, rng):
        raise KeyError(x)

    with pytest.raises(EvaluationError, match="item 1"):
        seqtools.smap(fails, [0, 1], rng=0)[1]


# -- resume ---------------------------------------------------------------------------


@settings(max_examples=120, deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(n=st.integers(1, 120), batch_size=st.integers(1, 9),
       world_size=st.integers(1, 4),
       data=st.data(), drop_last=st.booleans(), shuffle=st.booleans(),
       seed=st.integers(0, 1000))
def test_resume_at_any_position(n, batch_size, world_size, data, drop_last, shuffle,
                                seed):
    if drop_last and n < batch_size * world_size:
        return
    rank = data.draw(st.integers(0, world_size - 1), label="rank")
    args = dict(seed=seed, shuffle=shuffle, drop_last=drop_last, rank=rank,
                world_size=world_size)
    loader = seqtools.epochs(np.arange(n), batch_size, **args)
    k = data.draw(st.integers(0, 3 * loader.batches_per_epoch), label="k")
    m = data.draw(st.integers(1, 12), label="m")
    for _ in range(k):
        next(loader)
    state = json.loads(json.dumps(loader.state_dict()))
    assert len(json.dumps(state)) < 1024
    resumed = seqtools.epochs(np.arange(n), batch_size, **args)
    resumed.load_state_dict(state)
    assert resumed.state_dict() == state
    assert resumed.epoch == loader.epoch or k == 0 or state["position"] == 0
    assert same_streams(take(resumed, m), take(loader, m))
    assert resumed.state_dict() == loader.state_dict()


@settings(max_examples=120, deadline=None)
@given(n=st.integers(1, 150), batch_size=st.integers(1, 8),
       world_size=st.integers(1, 5),
       new_world_size=st.integers(1, 5), data=st.data(), drop_last=st.booleans(),
       seed=st.integers(0, 1000))
def test_elastic_resume_covers_the_rest_once(n, batch_size, world_size, new_world_size,
                                             data, drop_last, seed):
    if drop_last and n < batch_size * max(world_size, new_world_size):
        return
    old = [seqtools.epochs(np.arange(n), batch_size, seed=seed, drop_last=drop_last,
                           rank=r, world_size=world_size) for r in range(world_size)]
    per_epoch = old[0].batches_per_epoch
    k = data.draw(st.integers(0, 2 * per_epoch), label="k")
    seen = [[(o.epoch, b.tolist()) for b in (next(o) for _ in range(k))] for o in old]
    states = [o.state_dict() for o in old]
    assert all(s == states[0] for s in states)  # a global position
    epoch, position = states[0]["epoch"], states[0]["position"]
    assert epoch == k // per_epoch
    done = [i for rank in seen for e, b in rank if e == epoch for i in b]
    assert len(done) == position and len(set(done)) == position

    new = [seqtools.epochs(np.arange(n), batch_size, seed=seed, drop_last=drop_last,
                           rank=r, world_size=new_world_size)
           for r in range(new_world_size)]
    rest = []
    for loader in new:
        loader.load_state_dict(states[0])
        mine = []
        while loader.state_dict()["epoch"] == epoch:
            mine.append(next(loader).tolist())
        assert loader.epoch == epoch or not mine
        rest.append(mine)
    assert len({len(r) for r in rest}) == 1  # every new rank, as many batches
    order = epoch_order(n, seed, epoch)
    assert rest == reference_epoch(n, batch_size, new_world_size, drop_last, order,
                                   start=position)
    counts = collections.Counter(done + [i for r in rest for b in r for i in b])
    if drop_last:
        assert max(counts.values()) == 1
        assert n - len(counts) < new_world_size * batch_size
    else:
        assert set(counts) == set(range(n))
        extra = sum(counts.values()) - n  # repeats padding the new world's tail
        assert extra < new_world_size
        assert all(c == 1 for i, c in counts.items() if i not in order[:extra])


def test_resume_costs_the_same_anywhere(monkeypatch):
    reads = []

    def record(i, rng):
        reads.append(i)
        return i

    made = []
    order = sharding_module.order_of
    monkeypatch.setattr(sharding_module, "order_of",
                        lambda *a: made.append(a[2]) or order(*a))
    dataset = seqtools.smap(record, np.arange(1000), rng=0)
    far = {"version": 1, "epoch": 10**15, "position": 512, "seed": 0,
           "dataset_length": 1000, "batch_size": 64, "shuffle": True}
    loader = seqtools.epochs(dataset, 64, seed=0)
    loader.load_state_dict(far)
    batch = next(loader)
    # one batch read, one order made: nothing replayed
    assert len(reads) == 64 and made == [10**15] and loader.epoch == 10**15
    assert batch.tolist() == epoch_order(1000, 0, 10**15)[512:576].tolist()
    assert loader.state_dict()["position"] == 576


def test_state_dict_format_and_refusals():
    loader = seqtools.epochs(np.arange(50), 8, seed=[2**63, 2**64 - 1, 5, 7])
    next(loader)
    state = loader.state_dict()
    assert state == {"version": 1, "epoch": 0, "position": 8,
                     "seed": [2**63, 2**64 - 1, 5, 7], "dataset_length": 50,
                     "batch_size": 8, "shuffle": True}
    state["epoch"] = 10**18
    assert len(json.dumps(state)) < 1024
    loader.load_state_dict(json.loads(json.dumps(state)))  # lists, ints: JSON's own
    for kwargs, key in [({"dataset": np.arange(51)}, "dataset_length=50"),
                        ({"batch_size": 4}, "batch_size=8"),
                        ({"seed": 3}, "seed="),
                        ({"shuffle": False}, "shuffle=True")]:
        args = {"dataset": np.arange(50), "batch_size": 8,
                "seed": [2**63, 2**64 - 1, 5, 7], **kwargs}
        other = seqtools.epochs(args.pop("dataset"), args.pop("batch_size"), **args)
        with pytest.raises(ValueError, match=key):
            other.load_state_dict(state)
    for bad, error, match in [
        ([1, 2], TypeError, "expected the dict"),
        ({"epoch": 0}, ValueError, "not a seqtools.epochs state"),
        ({**state, "version": 2}, ValueError, "version 2"),
        ({**state, "position": 51}, ValueError, "past the end"),
        ({**state, "epoch": -1}, ValueError, "epoch must be"),
        ({**state, "position": 1.5}, ValueError, "position must be"),
    ]:
        with pytest.raises(error, match=match):
            loader.load_state_dict(bad)
    loader.load_state_dict({**state, "position": 50})  # the end: the next epoch
    assert loader.state_dict()["epoch"] == 10**18 + 1


@pytest.mark.filterwarnings("ignore:torch.distributed is disabled, unavailable or "
                            "uninitialized")  # dcp in one process, as intended
def test_state_saves_with_torch(tmp_path):
    torch = pytest.importorskip("torch")
    loader = seqtools.epochs(np.arange(40), 8, seed=1)
    take(loader, 3)
    torch.save({"loader": loader.state_dict()}, tmp_path / "ckpt.pt")
    state = torch.load(tmp_path / "ckpt.pt")["loader"]  # weights_only: plain data
    resumed = seqtools.epochs(np.arange(40), 8, seed=1)
    resumed.load_state_dict(state)
    assert same_streams(take(resumed, 4), take(loader, 4))
    # torch.distributed.checkpoint calls the Stateful methods itself
    import torch.distributed.checkpoint as dcp

    dcp.save({"loader": loader}, checkpoint_id=str(tmp_path / "dcp"))
    again = seqtools.epochs(np.arange(40), 8, seed=1)
    dcp.load({"loader": again}, checkpoint_id=str(tmp_path / "dcp"))
    assert again.state_dict() == loader.state_dict()
    assert same_streams(take(again, 4), take(loader, 4))
    try:
        from torchdata.stateful_dataloader import Stateful
    except ImportError:
        return
    assert isinstance(loader, Stateful)


# -- epochs, ranks, arguments ---------------------------------------------------------


def test_num_epochs_and_the_epoch_attribute():
    loader = seqtools.epochs(np.arange(10), 4, seed=0, num_epochs=2)
    assert loader.epoch == 0 and loader.batches_per_epoch == 3
    epochs_seen = [loader.epoch for _ in loader]
    assert epochs_seen == [0, 0, 0, 1, 1, 1]
    with pytest.raises(StopIteration):
        next(loader)
    assert loader.state_dict()["epoch"] == 2 and loader.state_dict()["position"] == 0
    loader.load_state_dict({**loader.state_dict(), "epoch": 1, "position": 8})
    assert [b.tolist() for b in loader] == [epoch_order(10, 0, 1)[8:].tolist()]
    loader.load_state_dict({**loader.state_dict(), "epoch": 5, "position": 0})
    assert list(loader) == []
    endless = seqtools.epochs(np.arange(10), 4, seed=0)
    assert len(take(endless, 100)) == 100 and endless.epoch == 33


def test_rank_and_world_size_defaults(monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    torch_dist = sys.modules.get("torch.distributed")
    if torch_dist is not None:
        assert not torch_dist.is_initialized()
    loader = seqtools.epochs(np.arange(10), 2, seed=0)
    assert (loader.rank, loader.world_size) == (0, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "3")
    loader = seqtools.epochs(np.arange(10), 2, seed=0)
    assert (loader.rank, loader.world_size) == (2, 3) and loader.batches_per_epoch == 2
    assert next(loader).tolist() == epoch_order(10, 0, 0)[4:6].tolist()
    loader = seqtools.epochs(np.arange(10), 2, seed=0, rank=0)
    assert (loader.rank, loader.world_size) == (0, 3)
    loader = seqtools.epochs(np.arange(10), 2, seed=0, rank=1, world_size=2)
    assert (loader.rank, loader.world_size) == (1, 2)
    monkeypatch.delenv("RANK")
    with pytest.raises(ValueError, match="sets WORLD_SIZE but not RANK"):
        seqtools.epochs(np.arange(10), 2, seed=0)
    monkeypatch.setenv("RANK", "one")
    with pytest.raises(ValueError, match="not integers"):
        seqtools.epochs(np.arange(10), 2, seed=0)
    monkeypatch.setenv("RANK", "3")
    with pytest.raises(ValueError, match="rank 3 is not below world_size 3"):
        seqtools.epochs(np.arange(10), 2, seed=0)


TORCH_DEFAULTS = textwrap.dedent("""
    import os, sys
    import numpy as np
    import torch.distributed as dist
    import seqtools
    os.environ.update(RANK="2", WORLD_SIZE="3")  # what the process group overrides
    dist.init_process_group("gloo", init_method="file://" + sys.argv[1], rank=0,
                            world_size=1)
    loader = seqtools.epochs(np.arange(10), 2, seed=0)
    print(loader.rank, loader.world_size)
    dist.destroy_process_group()
""")


@pytest.mark.timeout(180)
def test_rank_and_world_size_from_torch_distributed(tmp_path):
    pytest.importorskip("torch.distributed")
    out = subprocess.run([sys.executable, "-c", TORCH_DEFAULTS, str(tmp_path / "pg")],
                         capture_output=True, text=True, cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", "1"]


def test_torch_is_not_imported_for_the_defaults():
    code = ("import sys, numpy as np, seqtools; seqtools.epochs(np.arange(4), 2, "
            "seed=0); print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd="/")
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_argument_errors():
    data = np.arange(10)
    for kwargs, error, match in [
        ({"batch_size": 0}, ValueError, "batch_size must be >= 1"),
        ({"batch_size": 2.0}, TypeError, "batch_size must be an integer"),
        ({"seed": None}, TypeError, "a seed is an int"),
        ({"nworkers": -1}, ValueError, "nworkers must be >= 0"),
        ({"method": "fiber"}, ValueError, "method must be"),
        ({"method": "thread", "start_method": "spawn"}, ValueError, "start_method"),
        ({"max_buffered": 0}, ValueError, "max_buffered must be >= 1"),
        ({"num_epochs": -1}, ValueError, "num_epochs must be >= 0"),
        ({"rank": 2, "world_size": 2}, ValueError, "not below world_size"),
        ({"world_size": 0, "rank": 0}, ValueError, "world_size must be >= 1"),
        ({"batch_size": 11, "drop_last": True}, ValueError, "every epoch would be"),
    ]:
        args = {"batch_size": 2, "seed": 0, **kwargs}
        with pytest.raises(error, match=match):
            seqtools.epochs(data, args.pop("batch_size"), **args)
    with pytest.raises(ValueError, match="empty"):
        seqtools.epochs([], 2, seed=0)
    with pytest.raises(TypeError, match="finite"):
        seqtools.epochs(seqtools.cycle([1, 2]), 2, seed=0)
    with pytest.raises(TypeError):
        seqtools.epochs(data, 2)  # seed is required


def broken(i, rng):
    if i == 13:
        raise ValueError("bad sample 13")
    return i


@pytest.mark.timeout(120)
@pytest.mark.parametrize("nworkers", [0, 2])
def test_errors_in_user_code(nworkers):
    dataset = seqtools.smap(broken, np.arange(20), rng=0)
    with seqtools.epochs(dataset, 5, seed=0, shuffle=False, nworkers=nworkers) as L:
        assert next(L).tolist() == [0, 1, 2, 3, 4]
        next(L)
        with pytest.raises(EvaluationError, match="bad sample 13"):
            next(L)
        assert L.state_dict()["position"] == 10  # the failed batch is not consumed


@pytest.mark.timeout(120)
def test_close_and_restart_workers(tmp_path):
    dataset, _ = memmapped(tmp_path, 64)
    expected = take(seqtools.epochs(dataset, 8, seed=0), 20)
    with seqtools.epochs(dataset, 8, seed=0, nworkers=2) as loader:
        got = take(loader, 5)
        # pids: a closed loader closes its Process objects (their descriptors)
        pids = [p.pid for p in loader._loader._engine.pool.procs]
        state = loader.state_dict()
        loader.load_state_dict(state)  # a new stream: the workers are replaced
        assert wait_gone(pids) == []  # they stop within 2 s
        got += take(loader, 15)
        pids = [p.pid for p in loader._loader._engine.pool.procs]
    assert not any(pid_alive(pid) for pid in pids)
    assert same_streams(got, expected)
