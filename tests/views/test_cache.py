import pickle
import threading

import numpy as np
import pytest
from conftest import passthrough_errors, run_threads
from hypothesis import given, settings
from hypothesis import strategies as st

import seqtools


class Expensive:
    """A sequence counting evaluations per index."""

    def __init__(self, n, fail=()):
        self.n = n
        self.fail = set(fail)
        self.calls = {}
        self.data = list(range(n))

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        self.calls[i] = self.calls.get(i, 0) + 1
        if i in self.fail:
            raise ZeroDivisionError(f"bad item {i}")
        return self.data[i]

    def __setitem__(self, i, v):
        self.data[i] = v


def ref_lru_misses(reads, size):
    """Number of evaluations an LRU cache of ``size`` entries leads to."""
    cache, misses = [], 0
    for i in reads:
        if i in cache:
            cache.remove(i)
        else:
            misses += 1
            if size == 0:
                continue
        cache.append(i)
        if len(cache) > size:
            cache.pop(0)
    return misses


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 4), st.lists(st.integers(-8, 7), max_size=30))
def test_lru_like_reference(size, reads):
    src = Expensive(8)
    view = seqtools.add_cache(src, size)
    for i in reads:
        assert view[i] == i % 8
    assert sum(src.calls.values()) == ref_lru_misses([i % 8 for i in reads], size)
    assert list(view) == list(range(8)) and len(view) == 8
    assert list(view[::-3]) == list(range(8))[::-3]


def test_upstream_example():
    src = Expensive(7)
    cached = seqtools.add_cache(src)
    assert cached[3] == 3 and cached[3] == 3 and src.calls == {3: 1}


def test_list_semantics_errors():
    view = seqtools.add_cache([1, 2, 3])
    with pytest.raises(IndexError):
        view[3]
    with pytest.raises(TypeError, match="integers or slices"):
        view["a"]


def test_assignment_writes_through_and_refreshes_cache():
    arr = np.zeros(4, dtype=int)
    view = seqtools.add_cache(arr, 4)
    assert view[1] == 0
    view[1] = 2.7  # the array stores 2: the cache must not return 2.7
    assert arr[1] == 2 and view[1] == 2
    view[2:4] = [5, 6]
    assert list(view) == [0, 2, 5, 6]
    with pytest.raises(TypeError):
        seqtools.add_cache((1, 2))[0] = 3


def test_failures_name_the_item_and_are_not_cached():
    src = Expensive(5, fail={2})
    view = seqtools.add_cache(src, 3)
    with pytest.raises(seqtools.EvaluationError, match=r"item 2 of CachedView") as e:
        view[-3]
    assert isinstance(e.value.__cause__, ZeroDivisionError)
    with pytest.raises(seqtools.EvaluationError):
        view[2]
    assert src.calls[2] == 2
    with passthrough_errors(), pytest.raises(ZeroDivisionError):
        view[2]


def test_custom_container_and_infinite_source():
    store = {}
    view = seqtools.add_cache(Expensive(5), 2, cache=store)
    view[0]
    view[1]
    view[2]
    assert store == {1: 1, 2: 2}
    shared = {3: "precomputed"}
    assert seqtools.add_cache(Expensive(5), 2, cache=shared)[3] == "precomputed"
    loop = seqtools.add_cache(seqtools.cycle([1, 2]))
    assert loop[10**9 + 1] == 2
    with pytest.raises(TypeError, match="no len"):
        len(loop)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(cache_size=-1), ValueError, "cache_size must be >= 0"),
        (dict(cache_size=1.5), TypeError, "cache_size must be an integer"),
        (dict(cache=[]), TypeError, "mutable mapping"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        seqtools.add_cache([1, 2], **kwargs)
    with pytest.raises(TypeError, match="indexable"):
        seqtools.add_cache(iter([1]))


def test_cache_size_zero_disables():
    src = Expensive(3)
    view = seqtools.add_cache(src, 0)
    view[1]
    view[1]
    assert src.calls == {1: 2}


def test_thread_safe():
    src = Expensive(50)
    view = seqtools.add_cache(src, 8)

    def read(offset):
        for r in range(20):
            for i in range(offset, 50, 3):
                assert view[(i + r) % 50] == (i + r) % 50

    errors = run_threads(read, [(k,) for k in range(4)])
    assert errors == []
    assert len(view._order) <= 8 and set(view._cache) == set(view._order)


def test_pickle():
    view = seqtools.add_cache([1, 2, 3], 2)
    view[0]
    copy = pickle.loads(pickle.dumps(view))
    assert list(copy) == [1, 2, 3]
    copy[0] = 5
    assert copy[0] == 5 and view[0] == 1


class Blocking(Expensive):
    """Reads of item ``block`` pause, the old value in hand, until ``resume`` is set."""

    def __init__(self, n, block):
        Expensive.__init__(self, n)
        self.block = block
        self.reading = threading.Event()
        self.resume = threading.Event()

    def __getitem__(self, i):
        value = Expensive.__getitem__(self, i)
        if i == self.block:
            self.block = None
            self.reading.set()
            if not self.resume.wait(60):  # a safety net against a hang, not a timing
                raise RuntimeError("the test never resumed the read")
        return value


def test_write_during_a_miss_is_not_undone():
    src = Blocking(4, block=2)
    view = seqtools.add_cache(src, 2)
    got = []
    reader = threading.Thread(target=lambda: got.append(view[2]))
    reader.start()
    assert src.reading.wait(60)
    view[2] = "new"  # lands while the reader holds the old value
    src.resume.set()
    reader.join(60)
    assert got == [2]  # the read began before the write
    assert src.data[2] == "new"
    assert view[2] == "new" and view[2] == "new"
    assert src.calls[2] == 2  # the value read after the write is cached again


def test_write_of_another_item_during_a_miss_keeps_cache_consistent():
    src = Blocking(4, block=1)
    view = seqtools.add_cache(src, 4)
    reader = threading.Thread(target=lambda: view[1])
    reader.start()
    assert src.reading.wait(60)
    view[3] = "x"
    src.resume.set()
    reader.join(60)
    assert list(view) == [0, 1, 2, "x"]
    assert all(view._cache[i] == src.data[i] for i in view._cache)


class FailingWrite(Expensive):
    """A source that changes the item, then reports a failure (say, a flush)."""

    def __setitem__(self, i, v):
        self.data[i] = v
        raise OSError("flush failed")


def test_failed_write_still_drops_the_cached_item():
    src = FailingWrite(3)
    view = seqtools.add_cache(src, 2)
    assert view[1] == 1
    with pytest.raises(OSError, match="flush failed"):
        view[1] = "half"
    assert view[1] == "half" == src.data[1]


def test_slice_assignment_checked_before_writing():
    arr = np.zeros(3)
    view = seqtools.add_cache(arr, 3)
    assert list(view) == [0.0] * 3
    with pytest.raises(ValueError, match=r"values\[2\].*float64.*nothing was assigned"):
        view[:] = [1.0, 2.0, "x"]
    assert arr.tolist() == [0.0] * 3 and list(view) == [0.0] * 3
    view[:] = [1.0, 2.0, 3.0]
    assert list(view) == [1.0, 2.0, 3.0]
