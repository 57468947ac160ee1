import itertools
import pickle

import pytest
from conftest import passthrough_errors, run_threads
from hypothesis import given, settings
from hypothesis import strategies as st

import seqtools


class Counting:
    """A re-iterable that counts how many iterators were started and items made."""

    def __init__(self, n, fail_at=None):
        self.n = n
        self.fail_at = fail_at
        self.starts = 0
        self.produced = 0

    def __iter__(self):
        self.starts += 1
        for i in range(self.n):
            if i == self.fail_at:
                raise OSError(f"disk error at {i}")
            self.produced += 1
            yield i * 10


@settings(max_examples=40, deadline=None)
@given(
    st.integers(0, 20),
    st.integers(0, 5),
    st.integers(1, 3),
    st.booleans(),
    st.lists(st.integers(-25, 25), max_size=15),
)
def test_random_reads_like_lists(n, cache_size, n_parallel, sized, reads):
    ref = [i * 10 for i in range(n)]
    view = seqtools.uniter(
        Counting(n), cache_size, n_parallel, size=n if sized else None
    )
    for i in reads:
        if sized or i >= 0:
            try:
                expected = ref[i]
            except IndexError:
                with pytest.raises(IndexError):
                    view[i]
            else:
                assert view[i] == expected
        else:
            with pytest.raises(IndexError):
                view[i]
    assert list(view) == ref
    if sized:
        assert len(view) == n and list(view[::-1]) == ref[::-1]


def test_upstream_example():
    a = seqtools.uniter(range(5000), cache_size=10, n_parallel=5, size=5000)
    assert (a[10], a[1], a[-1]) == (10, 1, 4999)
    assert list(a[3:6]) == [3, 4, 5]


def test_cache_and_parallel_iterators_save_restarts():
    src = Counting(100)
    view = seqtools.uniter(src, cache_size=5)
    assert view[10] == 100 and src.starts == 1
    assert view[7] == 70 and src.starts == 1  # stepped over, still cached
    assert view[2] == 20 and src.starts == 2  # evicted: restart
    src = Counting(100)
    view = seqtools.uniter(src, n_parallel=2)
    view[50]
    view[3]
    produced = src.produced
    view[51]  # the iterator at 51 continues
    view[4]  # and so does the one at 4
    assert src.starts == 2 and src.produced == produced + 2


def test_one_shot_iterator():
    view = seqtools.uniter((i * i for i in range(6)), cache_size=2)
    assert view[3] == 9
    assert view[2] == 4  # cached
    assert view[5] == 25
    with pytest.raises(RuntimeError, match="one-shot iterator"):
        view[0]
    assert list(seqtools.uniter(iter("abc"))) == ["a", "b", "c"]


def test_unknown_length():
    view = seqtools.uniter(range(3))
    with pytest.raises(TypeError, match="pass size="):
        len(view)
    with pytest.raises(IndexError, match="only 3 items"):
        view[5]
    with pytest.raises(IndexError):
        view[-1]
    assert list(itertools.islice(view, 10)) == [0, 1, 2]
    assert list(view[1:3]) == [1, 2]
    # A slice has the length asked for: reading past the end of the data fails.
    with pytest.raises(IndexError, match="only 3 items"):
        list(view[1:10])
    with pytest.raises(TypeError, match="no len"):
        seqtools.batch(view, 2)


def test_size_larger_than_iterable():
    view = seqtools.uniter(range(3), size=5)
    with pytest.raises(IndexError, match="ended after 3 items.*size=5"):
        view[4]
    with pytest.raises(IndexError, match="size=5"):
        list(view)


def test_iterable_errors_name_the_item():
    src = Counting(10, fail_at=4)
    view = seqtools.uniter(src, size=10)
    assert view[3] == 30
    with pytest.raises(seqtools.EvaluationError, match=r"item 6 of Uniter") as e:
        view[6]
    assert isinstance(e.value.__cause__, OSError)
    with passthrough_errors(), pytest.raises(OSError):
        view[5]

    class BadIter:
        def __iter__(self):
            raise ValueError("cannot open")

    with pytest.raises(seqtools.EvaluationError, match="item 0") as e:
        seqtools.uniter(BadIter())[0]
    assert isinstance(e.value.__cause__, ValueError)


def test_read_only():
    with pytest.raises(TypeError, match="assignment"):
        seqtools.uniter([1, 2], size=2)[0] = 3


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(iterable=5), TypeError, "expected an iterable"),
        (dict(iterable=[], cache_size=-1), ValueError, "cache_size must be >= 0"),
        (dict(iterable=[], n_parallel=0), ValueError, "n_parallel must be >= 1"),
        (dict(iterable=[], size=-1), ValueError, "size must be >= 0"),
        (dict(iterable=[], size=2.0), TypeError, "size must be an integer"),
        (dict(iterable=[], cache_size="1"), TypeError, "cache_size must be an int"),
    ],
)
def test_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        seqtools.uniter(**kwargs)


def test_thread_safe():
    view = seqtools.uniter(range(2000), cache_size=16, n_parallel=2, size=2000)

    def read(offset):
        for i in range(offset, 2000, 7):
            assert view[i] == i

    errors = run_threads(read, [(k,) for k in range(4)])
    assert errors == []


def test_pickle_starts_afresh():
    view = seqtools.uniter(range(5), cache_size=2, size=5)
    view[3]
    copy = pickle.loads(pickle.dumps(view))
    assert list(copy) == [0, 1, 2, 3, 4] and len(copy) == 5
