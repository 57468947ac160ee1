import itertools
import pickle
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqtools
from seqtools import _testing
from seqtools.views import _indexmaps

FAST = settings(max_examples=40, deadline=None)


def outcome(f, *args):
    try:
        return "ok", f(*args)
    except Exception as exc:
        return "error", type(exc)


# -- pure-Python references of the kernels -----------------------------------------


def ref_interleave_locate(i, lengths):
    """Round robin, one item per sequence still holding some, as upstream does."""
    order = []
    for local in range(max(lengths, default=0)):
        order += [(s, local) for s, n in enumerate(lengths) if n > local]
    return order[i]


def ref_cycle_locate(i, n, limit):
    if limit is None:
        if i < 0:
            raise IndexError
        return i % n
    return (list(range(n)) * (limit // n + 1))[:limit][i] if n else [][i]


lengths_st = st.lists(st.integers(0, 12), max_size=6)


@FAST
@given(lengths_st, st.integers(-80, 80))
def test_interleave_locate_matches_reference(lengths, i):
    m = _indexmaps.InterleaveMap(lengths)
    assert m.size == sum(lengths)
    assert outcome(m.locate, i) == outcome(ref_interleave_locate, i, lengths)


@FAST
@given(lengths_st, st.lists(st.integers(-80, 80), max_size=12))
def test_interleave_locate_array_matches_scalar(lengths, idx):
    m = _indexmaps.InterleaveMap(lengths)
    expected = [outcome(m.locate, i) for i in idx]
    if all(s == "ok" for s, _ in expected):
        s, j = _testing.interleave_locate_array(m, np.array(idx, dtype=np.int32))
        assert list(zip(s.tolist(), j.tolist())) == [v for _, v in expected]
    else:
        with pytest.raises(IndexError):
            _testing.interleave_locate_array(m, idx)


@FAST
@given(st.lists(st.integers(0, 2**40), min_size=1, max_size=5), st.data())
def test_interleave_locate_huge_lengths(lengths, data):
    # No list reference at this size: check that the map is a bijection around
    # the phase boundaries, where off-by-one errors live.
    m = _indexmaps.InterleaveMap(lengths)
    i = data.draw(st.integers(0, max(m.size - 1, 0)))
    if m.size == 0:
        with pytest.raises(IndexError):
            m.locate(0)
        return
    s, j = m.locate(i)
    assert 0 <= j < lengths[s]
    if i + 1 < m.size:
        s2, j2 = m.locate(i + 1)
        assert (j2, s2) > (j, s)  # strictly later in round-robin order
    assert m.locate(i - m.size) == (s, j)


def test_interleave_map_bad_arguments():
    with pytest.raises(ValueError, match=r"\[0, 2\*\*63 - 1\]"):
        _indexmaps.InterleaveMap([3, -1])
    with pytest.raises(TypeError, match="integers"):
        _indexmaps.InterleaveMap([1.5])
    with pytest.raises(ValueError, match="more than 2\\*\\*63"):
        _indexmaps.InterleaveMap([2**62, 2**62, 2**62])
    with pytest.raises(TypeError, match="integers or slices"):
        _indexmaps.InterleaveMap([1]).locate(0.0)
    with pytest.raises(IndexError, match="64 bits"):
        _indexmaps.InterleaveMap([1]).locate(2**64)


@FAST
@given(st.integers(1, 8), st.one_of(st.none(), st.integers(0, 30)),
       st.integers(-40, 40))
def test_cycle_locate_matches_reference(n, limit, i):
    assert outcome(_testing.cycle_locate, i, n, limit) == outcome(
        ref_cycle_locate, i, n, limit
    )
    got = outcome(_indexmaps.cycle_locate_array, [i], n, limit)
    expected = outcome(ref_cycle_locate, i, n, limit)
    if expected[0] == "ok":
        assert got[1].tolist() == [expected[1]]
    else:
        assert got == expected


def test_cycle_locate_edges():
    big = 2**63 - 1
    assert _testing.cycle_locate(big, 10) == big % 10
    with pytest.raises(IndexError, match="64 bits"):
        _testing.cycle_locate(2**63, 10)
    with pytest.raises(IndexError, match="infinite"):
        _testing.cycle_locate(-1, 10)
    with pytest.raises(ValueError, match="empty"):
        _testing.cycle_locate(0, 0)
    with pytest.raises(ValueError, match="limit must be >= 0"):
        _testing.cycle_locate(0, 3, -1)
    with pytest.raises(TypeError, match="integer"):
        _testing.cycle_locate(0, 3.0)
    assert _indexmaps.cycle_locate_array([], 3).shape == (0,)


# -- interleave ----------------------------------------------------------------------


@FAST
@given(st.lists(st.integers(0, 8), max_size=5), st.integers(-40, 40))
def test_interleave_like_lists(lengths, i):
    seqs = [[(s, j) for j in range(n)] for s, n in enumerate(lengths)]
    ref = [seqs[s][j] for s, j in
           (ref_interleave_locate(k, lengths) for k in range(sum(lengths)))]
    view = seqtools.interleave(*seqs)
    assert len(view) == len(ref) and list(view) == ref
    assert outcome(view.__getitem__, i) == outcome(ref.__getitem__, i)
    assert list(view[i::3]) == ref[i::3]


def test_interleave_upstream_example_and_writes():
    a, b, c = [1, 2, 3, 4, 5], ["a", "b", "c"], [0.1, 0.2, 0.3, 0.4]
    view = seqtools.interleave(a, b, c)
    assert list(view) == [1, "a", 0.1, 2, "b", 0.2, 3, "c", 0.3, 4, 0.4, 5]
    view[-1] = "x"
    view[1::3] = ["A", "B", "C", "D"]
    assert a == [1, 2, 3, 4, "x"] and b == ["A", "B", "C"] and c[3] == "D"
    assert list(seqtools.interleave()) == []
    assert list(pickle.loads(pickle.dumps(view))) == list(view)


def test_interleave_bad_arguments():
    with pytest.raises(TypeError, match=r"argument 1 is neither a sequence nor an"):
        seqtools.interleave([1], 5)


def test_interleave_with_infinite_views_indexes_like_iteration():
    loop, rep = seqtools.cycle("ab"), seqtools.repeat(0)
    for seqs in ([[1, 2, 3], loop], [loop, [1, 2, 3], rep, [9]], [rep, loop],
                 [[], loop, []]):
        view = seqtools.interleave(*seqs)
        ref = list(itertools.islice(view, 40))
        assert [view[i] for i in range(40)] == ref
        assert list(view[3:40:4]) == ref[3:40:4]
    view = seqtools.interleave([1, 2, 3], loop, rep)
    assert view[10**30] == view[10**30 - 2 * 3 * 10**6]  # period 6 past the head
    with pytest.raises(IndexError, match="infinite"):
        view[-1]
    with pytest.raises(TypeError, match="no len"):
        len(view)
    data = [1, 2, 3]
    view = seqtools.interleave(data, seqtools.cycle([0, 0]))
    view[4] = "x"
    view[7:10:2] = ["y", "z"]  # past the head: items of the cycle only
    assert data == [1, 2, "x"] and view[7] == view[9] == "z"
    copy = pickle.loads(pickle.dumps(view))
    assert list(itertools.islice(copy, 10)) == list(itertools.islice(view, 10))


def test_interleave_of_iterables_iterates_only():
    view = seqtools.interleave((x for x in range(3)), "ab", iter([7]))
    assert list(view) == [0, "a", 7, 1, "b", 2]
    assert list(view) == ["a", "b"]  # the one-shot iterators are spent
    again = seqtools.interleave(range(3), {"k"})  # a set: iterable, no indexing
    assert list(again) == list(again) == [0, "k", 1, 2]
    with pytest.raises(TypeError):
        again[0]


# -- cycle and repeat ----------------------------------------------------------------


@FAST
@given(st.integers(1, 5), st.integers(0, 20), st.integers(-30, 30),
       st.integers(-30, 30), st.sampled_from([1, 2, -1, -3]))
def test_finite_cycle_like_lists(n, limit, i, start, step):
    data = list(range(n))
    ref = (data * (limit // n + 1))[:limit]
    view = seqtools.cycle(data, limit)
    assert len(view) == limit and list(view) == ref
    assert outcome(view.__getitem__, i) == outcome(ref.__getitem__, i)
    assert list(view[start::step]) == ref[start::step]


@FAST
@given(st.integers(1, 5), st.integers(0, 10**15), st.integers(0, 50),
       st.integers(1, 4))
def test_infinite_cycle(n, i, length, step):
    data = list(range(n))
    view = seqtools.cycle(data)
    assert view[i] == i % n
    assert list(view[i : i + length * step : step]) == [
        (i + k * step) % n for k in range(length)
    ]
    assert list(itertools.islice(view, length)) == [k % n for k in range(length)]
    assert list(itertools.islice(view[i:], 3)) == [(i + k) % n for k in range(3)]


def test_infinite_views_list_semantics():
    for view in (seqtools.cycle("abc"), seqtools.repeat("a")):
        with pytest.raises(TypeError, match="no len"):
            len(view)
        with pytest.raises(IndexError):
            view[-1]
        with pytest.raises(TypeError, match="integers or slices"):
            view[1.0]
        assert view[2**70] == view[2**70 % 3] and view[sys.maxsize] in "abc"
        assert bool(view)
        with pytest.raises(ValueError, match="unbounded"):
            view[2:] = "xyz"


def test_infinite_view_slice_past_64_bits_raises():
    # slice bounds are machine integers: past them, a clear error, never another
    # slice (items keep taking any integer)
    for view in (seqtools.cycle([1, 2, 3]), seqtools.repeat(5)):
        for key in (slice(10**19, 10**19 + 3), slice(0, 10**20), slice(2**63, None)):
            with pytest.raises(OverflowError, match="2\\*\\*63 - 1"):
                view[key]
        assert list(view[sys.maxsize - 2 : sys.maxsize]) == [
            view[sys.maxsize - 2], view[sys.maxsize - 1]]


def test_cycle_writes_through():
    data = [0, 1, 2]
    loop = seqtools.cycle(data)
    loop[4] = "x"
    assert data == [0, "x", 2]
    assert list(itertools.islice(loop, 5)) == [0, "x", 2, 0, "x"]
    finite = seqtools.cycle(data, 5)
    finite[-1] = "y"
    assert data == [0, "y", 2]


def test_cycle_bad_arguments():
    with pytest.raises(ValueError, match="empty sequence"):
        seqtools.cycle([])
    with pytest.raises(ValueError, match="empty sequence"):
        seqtools.cycle([], 3)
    assert list(seqtools.cycle([], 0)) == []
    with pytest.raises(ValueError, match="limit must be >= 0"):
        seqtools.cycle([1], -1)
    with pytest.raises(TypeError, match="limit must be an integer"):
        seqtools.cycle([1], 2.0)
    endless = seqtools.repeat(1)  # an infinite view is its own cycle
    assert seqtools.cycle(endless) is endless
    assert list(seqtools.cycle(seqtools.cycle([1, 2]), 3)) == [1, 2, 1]
    with pytest.raises(TypeError, match="indexable"):  # SeqTools 1.4.1 hangs
        seqtools.cycle(iter([1, 2]))


def test_cycle_locate_hook_maps_to_source():
    view = seqtools.cycle([10, 20, 30], 8)
    src, idx = view._locate(np.array([0, 4, 7]))
    assert idx.tolist() == [0, 1, 1] and src == [10, 20, 30]


@FAST
@given(st.integers(0, 12), st.integers(-20, 20), st.integers(-20, 20),
       st.sampled_from([1, 3, -1, -2]))
def test_finite_repeat_like_lists(times, i, start, step):
    ref = ["v"] * times
    view = seqtools.repeat("v", times)
    assert len(view) == times and list(view) == ref
    assert outcome(view.__getitem__, i) == outcome(ref.__getitem__, i)
    assert list(view[start::step]) == ref[start::step]


def test_repeat():
    obj = []
    view = seqtools.repeat(obj)
    assert view[10**12] is obj
    assert list(view[5:8]) == [obj] * 3
    assert list(itertools.islice(view, 2)) == [obj, obj]
    part = view[3:5]
    part[1] = 1  # one value shared by the view and its slices
    assert view[0] == view[10**30] == 1 and list(part) == [1, 1]
    view[10**30] = 2
    assert view[7] == 2
    with pytest.raises(ValueError, match="times must be >= 0"):
        seqtools.repeat(1, -1)
    with pytest.raises(TypeError, match="times must be an integer"):
        seqtools.repeat(1, 2.5)
    assert list(pickle.loads(pickle.dumps(seqtools.repeat(3, 2)))) == [3, 3]


# -- switch and case -----------------------------------------------------------------


@FAST
@given(st.lists(st.booleans(), max_size=15), st.integers(-20, 20))
def test_switch_like_lists(cond, i):
    x = [("x", k) for k in range(len(cond))]
    y = [("y", k) for k in range(len(cond))]
    ref = [a if c else b for c, a, b in zip(cond, x, y)]
    view = seqtools.switch(cond, x, y)
    assert len(view) == len(ref) and list(view) == ref
    assert outcome(view.__getitem__, i) == outcome(ref.__getitem__, i)
    assert list(view[::-2]) == ref[::-2]


def test_switch_reads_only_the_selected_side():
    reads = []

    class Spy:
        def __init__(self, name):
            self.name = name

        def __len__(self):
            return 3

        def __getitem__(self, i):
            reads.append((self.name, i))
            return self.name

    view = seqtools.switch([1, 0, 1], Spy("x"), Spy("y"))
    assert list(view) == ["x", "y", "x"]
    assert reads == [("x", 0), ("y", 1), ("x", 2)]


def test_switch_writes_and_infinite_inputs():
    x, y = [0, 0, 0], [1, 1, 1]
    view = seqtools.switch([True, False, True], x, y)
    view[:] = ["a", "b", "c"]
    assert x == ["a", 0, "c"] and y == [1, "b", 1]
    assert list(seqtools.switch([0, 1], [1, 2], seqtools.repeat(None))) == [None, 2]
    inf = seqtools.switch(seqtools.cycle([1, 0]), seqtools.repeat("a"),
                          seqtools.repeat("b"))
    assert list(itertools.islice(inf, 3)) == ["a", "b", "a"]
    with pytest.raises(TypeError, match="no len"):
        len(inf)


def test_switch_mismatched_lengths():
    with pytest.raises(ValueError, match=r"len\(condition\) = 2, len\(x\) = 3"):
        seqtools.switch([True, False], [1, 2, 3], "abc")
    with pytest.raises(TypeError, match="indexable"):
        seqtools.switch([True], 1, [2])


@FAST
@given(st.lists(st.integers(0, 2), max_size=15), st.integers(-20, 20))
def test_case_like_lists(selector, i):
    values = [[(v, k) for k in range(len(selector))] for v in range(3)]
    ref = [values[s][k] for k, s in enumerate(selector)]
    view = seqtools.case(selector, *values)
    assert len(view) == len(ref) and list(view) == ref
    assert outcome(view.__getitem__, i) == outcome(ref.__getitem__, i)


def test_case_writes_and_errors():
    a, b = [0, 0], [1, 1]
    view = seqtools.case(np.array([1, 0]), a, b)
    view[0] = "x"
    view[1] = "y"
    assert a == [0, "y"] and b == ["x", 1]
    bad = seqtools.case([0, 3, -3, 0.5], "abcd", "efgh")
    assert bad[0] == "a"
    with pytest.raises(ValueError, match=r"selector\[1\] = 3 but only 2"):
        bad[1]
    with pytest.raises(ValueError, match=r"selector\[2\] = -3 .*valid: -2 to 1"):
        bad[-2]
    assert list(seqtools.case([-1, -2], "ab", "cd")) == ["c", "b"]  # tuple-style
    with pytest.raises(TypeError, match=r"selector\[3\] = 0.5 is not an integer"):
        bad[3]
    with pytest.raises(ValueError, match="at least one value sequence"):
        seqtools.case([0])
    with pytest.raises(ValueError, match=r"len\(values\[1\]\) = 1"):
        seqtools.case([0, 1], "ab", "c")


# -- failed assignments write nothing ------------------------------------------------


def test_failed_interleave_assignment_writes_nothing():
    data, arr = [0, 1, 2], np.zeros(2)
    view = seqtools.interleave(data, arr)
    with pytest.raises(ValueError, match=r"values\[3\] \(for item 3\): cannot write "
                       "'x' into a numpy array of dtype float64"):
        view[:] = [10, 11, 12, "x", 14]
    assert data == [0, 1, 2] and not arr.any()


def test_failed_cycle_assignment_writes_nothing():
    arr = np.zeros(3)
    loop = seqtools.cycle(arr, 7)
    with pytest.raises(ValueError, match=r"values\[5\] \(for item 5\)"):
        loop[:6] = [1, 2, 3, 4, 5, "x"]
    with pytest.raises(TypeError, match="'tuple' object does not support"):
        seqtools.cycle((1, 2))[0:2] = [3, 4]
    assert not arr.any()


def test_failed_repeat_assignment_writes_nothing():
    data, rep = [0, 1], seqtools.repeat(0, 2)
    with pytest.raises(TypeError, match="'tuple' object.*nothing was assigned"):
        seqtools.interleave(data, rep, (7, 8))[:] = [1, 2, 3, 4, 5, 6]
    assert data == [0, 1] and list(rep) == [0, 0]


def test_failed_switch_assignment_writes_nothing():
    x, y = [0, 1, 2], (10, 11, 12)
    view = seqtools.switch([True, False, True], x, y)
    with pytest.raises(TypeError, match=r"values\[1\] \(for item 1\): 'tuple' object "
                       "does not support item assignment"):
        view[:] = ["a", "b", "c"]
    assert x == [0, 1, 2]


def test_failed_case_assignment_writes_nothing():
    a, b = list("abcd"), list("efgh")
    view = seqtools.case([0, 1, 7, 0], a, b)
    with pytest.raises(ValueError, match=r"values\[2\] \(for item 2\): case\(\): "
                       r"selector\[2\] = 7 but only 2 value sequences"):
        view[:] = "wxyz"
    assert a == list("abcd") and b == list("efgh")
