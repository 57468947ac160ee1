import pickle

import numpy as np
import pytest
from conftest import passthrough_errors
from fused_helpers import assert_same, random_chunks
from hypothesis import given, settings
from hypothesis import strategies as st

import seqtools
from seqtools import _testing, stack
from seqtools.views import _indexmaps
from seqtools.views.core import View

FAST = settings(max_examples=40, deadline=None)
sizes = st.integers(0, 60)
ks = st.integers(1, 12)
big = st.integers(-(2**64), 2**64)


# -- pure-Python references of the kernels -----------------------------------------


def ref_batch_count(n, k, drop_last):
    batches = [list(range(n))[j : j + k] for j in range(0, n, k)]
    if drop_last and batches and len(batches[-1]) < k:
        batches.pop()
    return len(batches)


def ref_unbatch_locate(i, n, k):
    flat = [(b, o) for b in range((n + k - 1) // k) for o in range(k)][:n]
    return flat[i]  # list semantics, IndexError included


def ref_split_bounds(cuts, n):
    edges = [0, *cuts, n]
    return [(edges[j], edges[j + 1]) for j in range(len(edges) - 1)]


def ref_split_locate(i, bounds):
    flat = [(p, j) for p, (a, b) in enumerate(bounds) for j in range(b - a)]
    return flat[i]


def outcome(f, *args):
    try:
        return "ok", f(*args)
    except Exception as exc:
        return "error", type(exc)


# -- kernels against the references --------------------------------------------------


@FAST
@given(sizes, ks, st.booleans())
def test_batch_count_matches_reference(n, k, drop_last):
    assert _indexmaps.batch_count(n, k, drop_last) == ref_batch_count(n, k, drop_last)


@FAST
@given(sizes, ks, st.integers(-70, 70))
def test_unbatch_locate_matches_reference(n, k, i):
    assert outcome(_indexmaps.unbatch_locate, i, n, k) == outcome(
        ref_unbatch_locate, i, n, k
    )


@FAST
@given(sizes, ks, st.lists(st.integers(-70, 70), max_size=20))
def test_unbatch_locate_array_matches_scalar(n, k, idx):
    expected = [outcome(_indexmaps.unbatch_locate, i, n, k) for i in idx]
    if all(s == "ok" for s, _ in expected):
        b, o = _testing.unbatch_locate_array(np.array(idx, dtype=np.int64), n, k)
        assert list(zip(b.tolist(), o.tolist())) == [v for _, v in expected]
    else:
        with pytest.raises(IndexError):
            _testing.unbatch_locate_array(idx, n, k)


@FAST
@given(st.integers(0, 2**62), st.integers(1, 2**62), big)
def test_unbatch_locate_huge_values(n, k, i):
    # The reference is arithmetic here: lists of 2**62 items do not fit in memory.
    j = i + n if i < 0 else i
    if 0 <= j < n:
        assert _indexmaps.unbatch_locate(i, n, k) == divmod(j, k)
    else:
        with pytest.raises(IndexError):
            _indexmaps.unbatch_locate(i, n, k)


@pytest.mark.parametrize(
    "args, exc",
    [
        ((0, 10, 0), ValueError),
        ((0, -1, 3), ValueError),
        ((0, 10, 2.0), TypeError),
        ((1.0, 10, 2), TypeError),
        (("0", 10, 2), TypeError),
        ((0, 2**64, 2), ValueError),
        ((2**64, 10, 2), IndexError),
    ],
)
def test_unbatch_locate_bad_arguments(args, exc):
    with pytest.raises(exc):
        _indexmaps.unbatch_locate(*args)


def test_index_arrays_bad_types():
    with pytest.raises(TypeError, match="integers"):
        _testing.unbatch_locate_array(np.array([0.5]), 10, 2)
    with pytest.raises(ValueError, match="1-D"):
        _testing.unbatch_locate_array(np.zeros((2, 2), dtype=int), 10, 2)
    with pytest.raises(IndexError, match="64 bits"):
        _testing.unbatch_locate_array(np.array([2**63], dtype=np.uint64), 10, 2)
    b, o = _testing.unbatch_locate_array(np.array([], dtype=np.uint8), 10, 2)
    assert b.shape == o.shape == (0,)


cut_lists = st.integers(0, 40).flatmap(
    lambda n: st.tuples(st.just(n), st.lists(st.integers(-3, n + 3), max_size=8))
)


@FAST
@given(cut_lists)
def test_split_bounds_from_cuts_matches_reference(case):
    n, cuts = case
    valid = all(0 <= c <= n for c in cuts) and cuts == sorted(cuts)
    if valid:
        starts, stops = _indexmaps.split_bounds_from_cuts(cuts, n)
        assert list(zip(starts.tolist(), stops.tolist())) == ref_split_bounds(cuts, n)
    else:
        with pytest.raises(ValueError):
            _indexmaps.split_bounds_from_cuts(cuts, n)


@FAST
@given(cut_lists, st.integers(-50, 50))
def test_split_locate_matches_reference(case, i):
    n, cuts = case
    cuts = sorted(min(max(c, 0), n) for c in cuts)
    bounds = ref_split_bounds(cuts, n)
    stops = [b for _, b in bounds]
    assert outcome(_testing.split_locate, i, stops) == outcome(
        ref_split_locate, i, bounds
    )
    expected = outcome(ref_split_locate, i, bounds)
    got = outcome(_testing.split_locate_array, [i], stops)
    if expected[0] == "ok":
        assert (got[1][0][0], got[1][1][0]) == expected[1]
    else:
        assert got == expected


def test_split_kernel_bad_arguments():
    with pytest.raises(TypeError, match="integers"):
        _indexmaps.split_bounds_from_cuts([1.5], 4)
    with pytest.raises(ValueError, match="non-decreasing"):
        _testing.split_locate(0, [3, 1])
    with pytest.raises(ValueError, match="part 1 = .3, 2."):
        _indexmaps.split_check_pairs([0, 3], [2, 2], 5)
    with pytest.raises(ValueError, match="same length"):
        _indexmaps.split_check_pairs([0, 3], [2], 5)
    with pytest.raises(IndexError):
        _testing.split_locate(0, [])


# -- views against list semantics ----------------------------------------------------


def ref_batch(data, k, drop_last=False, pad=None):
    out = [data[j : j + k] for j in range(0, len(data), k)]
    if out and len(out[-1]) < k:
        if drop_last:
            out.pop()
        elif pad is not None:
            out[-1] = out[-1] + [pad] * (k - len(out[-1]))
    return out


@FAST
@given(sizes, ks, st.booleans(), st.sampled_from([None, -1]), st.integers(-20, 20))
def test_batch_like_lists(n, k, drop_last, pad, i):
    data = list(range(n))
    ref = ref_batch(data, k, drop_last, pad)
    view = seqtools.batch(data, k, drop_last=drop_last, pad=pad)
    assert len(view) == len(ref)
    assert list(view) == ref
    assert outcome(view.__getitem__, i) == outcome(ref.__getitem__, i)
    assert list(view[i::-2]) == ref[i::-2]


def test_batch_types():
    arr = np.arange(10)
    b = seqtools.batch(arr, 4, pad=0)
    assert isinstance(b[0], np.ndarray) and np.shares_memory(b[0], arr)
    assert b[-1].tolist() == [8, 9, 0, 0] and b[-1].dtype == arr.dtype
    assert seqtools.batch(tuple(range(5)), 2, pad=None)[-1] == (4,)
    assert seqtools.batch(tuple(range(5)), 2, pad=7)[-1] == (4, 7)
    assert seqtools.batch("abcde", 2)[2] == "e"
    # A sequence that cannot slice gives views, padded lazily.
    r = seqtools.batch(seqtools.cycle([1, 2, 3], 5), 3, pad=0)
    assert list(r[1]) == [1, 2, 0]
    inner = seqtools.batch(_NoSlice(5), 2, pad=9)
    assert isinstance(inner[0], View) and list(inner[2]) == [4, 9]


class _NoSlice:
    """A sequence supporting only integer indices."""

    def __init__(self, n):
        self.data = list(range(n))

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        if not isinstance(i, int):
            raise TypeError("integers only")
        return self.data[i]

    def __setitem__(self, i, v):
        self.data[i] = v


def test_batch_collate_fn():
    b = seqtools.batch(list(range(7)), 3, pad=0, collate_fn=np.array)
    assert b[-1].tolist() == [6, 0, 0]
    assert [x.tolist() for x in b] == [[0, 1, 2], [3, 4, 5], [6, 0, 0]]


def test_batch_drop_last_wins_over_pad():
    assert list(seqtools.batch(list(range(5)), 2, drop_last=True, pad=0)) == [
        [0, 1],
        [2, 3],
    ]


def test_batch_collate_error_names_item():
    def fail(items):
        raise KeyError("boom")

    b = seqtools.batch(list(range(5)), 2, collate_fn=fail)
    match = r"item 2 of BatchView created at .*test_shape"
    with pytest.raises(seqtools.EvaluationError, match=match) as e:
        b[-1]
    assert isinstance(e.value.__cause__, KeyError)
    with passthrough_errors(), pytest.raises(KeyError):
        b[0]


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(k=0), ValueError, "k .the batch size. must be >= 1"),
        (dict(k=-2), ValueError, ">= 1"),
        (dict(k=2.0), TypeError, "must be an integer"),
        (dict(k=True), TypeError, "must be an integer"),
        (dict(k=None), TypeError, "must be an integer"),
        (dict(k=2, collate_fn=3), TypeError, "callable"),
    ],
)
def test_batch_bad_arguments(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        seqtools.batch([1, 2, 3], **kwargs)


def test_batch_bad_sources():
    with pytest.raises(TypeError, match="infinite"):
        seqtools.batch(seqtools.repeat(1), 2)
    with pytest.raises(TypeError, match="uniter"):
        seqtools.batch(iter([1, 2]), 2)
    with pytest.raises(TypeError, match="uniter.. without size"):
        seqtools.batch(seqtools.uniter(range(3)), 2)


def test_batch_assignment_writes_items():
    data = list(range(7))
    b = seqtools.batch(data, 3, pad=-1)
    b[0] = ["a", "b", "c"]
    b[-1] = ["z"]
    assert data == ["a", "b", "c", 3, 4, 5, "z"]
    b[-1] = ["y", -1, -1]  # the padded batch as read back
    assert data[-1] == "y" and len(data) == 7
    b[1:2] = [[7, 8, 9]]
    assert data[3:6] == [7, 8, 9]
    with pytest.raises(ValueError, match="holds 3 items but 2"):
        b[0] = [1, 2]
    with pytest.raises(TypeError, match="sequence of items"):
        b[0] = 5
    arr = np.zeros(5)
    seqtools.batch(arr, 2)[1] = np.array([1.0, 2.0])
    assert arr.tolist() == [0, 0, 1, 2, 0]
    ns = _NoSlice(4)
    seqtools.batch(ns, 2)[1] = (8, 9)
    assert ns.data == [0, 1, 8, 9]
    with pytest.raises(TypeError):
        seqtools.batch((1, 2), 1)[0] = [3]


def ref_unbatch(batches, last):
    flat = [x for b in batches[:-1] for x in b]
    return flat + list(batches[-1][:last]) if batches else []


@FAST
@given(st.integers(0, 8), ks, st.data())
def test_unbatch_like_lists(nb, k, data):
    last = data.draw(st.integers(1, k))
    batches = [[(b, j) for j in range(k)] for b in range(nb)]
    ref = ref_unbatch(batches, last)
    view = seqtools.unbatch(batches, k, last)
    assert len(view) == len(ref) and list(view) == ref
    i = data.draw(st.integers(-60, 60))
    assert outcome(view.__getitem__, i) == outcome(ref.__getitem__, i)
    assert list(view[i : i + 7 : 3]) == ref[i : i + 7 : 3]


def test_unbatch_reverses_batch():
    data = list(range(11))
    for k in (1, 3, 4, 11, 20):
        last = len(data) - (len(data) - 1) // k * k
        b = seqtools.batch(data, k, pad=None)
        assert list(seqtools.unbatch(b, k, last)) == data
        bp = seqtools.batch(data, k, pad=-1)
        assert list(seqtools.unbatch(bp, k, last)) == data


def test_unbatch_writes_through():
    batches = [[0, 1], [2, 3], [4]]
    u = seqtools.unbatch(batches, 2, 1)
    u[-1] = "x"
    u[1:3] = ["a", "b"]
    assert batches == [[0, "a"], ["b", 3], ["x"]]


def test_unbatch_short_batches_explained():
    u = seqtools.unbatch([[0, 1], [2]], 2)
    with pytest.raises(ValueError, match="batch 1 of the source has fewer than 2"):
        u[3]
    with pytest.raises(ValueError, match="batch 1"):
        list(u)
    with pytest.raises(ValueError, match="batch 1"):
        u[3] = 5


@pytest.mark.parametrize(
    "args, exc, match",
    [
        ((0,), ValueError, "batch_size must be >= 1"),
        ((2.5,), TypeError, "integer"),
        ((2, 3), ValueError, "cannot exceed"),
        ((2, -1), ValueError, "last_batch_size must be >= 0"),
        ((2, "1"), TypeError, "integer"),
    ],
)
def test_unbatch_bad_arguments(args, exc, match):
    with pytest.raises(exc, match=match):
        seqtools.unbatch([[1, 2]], *args)


def ref_split(data, edges):
    if isinstance(edges, int):
        size = len(data) // (edges + 1)
        return [data[j * size : (j + 1) * size] for j in range(edges + 1)]
    if edges and isinstance(edges[0], tuple):
        return [data[a:b] for a, b in edges]
    return [data[a:b] for a, b in ref_split_bounds(edges, len(data))]


split_cases = st.integers(0, 30).flatmap(
    lambda n: st.tuples(
        st.just(n),
        st.one_of(
            st.lists(st.integers(0, n), max_size=6).map(sorted),
            st.lists(
                st.tuples(st.integers(0, n), st.integers(0, n)).map(
                    lambda p: (min(p), max(p))
                ),
                min_size=1,
                max_size=6,
            ),
            st.sampled_from([d - 1 for d in range(1, n + 1) if n % d == 0] or [0]),
        ),
    )
)


@FAST
@given(split_cases, st.integers(-10, 10))
def test_split_like_lists(case, i):
    n, edges = case
    data = list(range(n))
    ref = ref_split(data, edges)
    view = seqtools.split(data, edges)
    assert len(view) == len(ref) and list(view) == ref
    assert outcome(view.__getitem__, i) == outcome(ref.__getitem__, i)
    assert list(view[::-1]) == ref[::-1]


def test_split_edge_forms():
    data = list(range(10))
    assert list(seqtools.split(data, [])) == [data]
    parts = seqtools.split(data, np.array([4, 6]))
    assert list(parts) == [data[:4], data[4:6], data[6:]]
    assert list(seqtools.split(data, np.array([[1, 3], [0, 2]]))) == [[1, 2], [0, 1]]
    assert list(seqtools.split(data, [0, 0, 10])) == [[], [], data, []]
    assert list(seqtools.split(data, 0)) == [data]
    arr = np.arange(6)
    assert np.shares_memory(seqtools.split(arr, 2)[1], arr)


def test_split_writes_through():
    data = list(range(6))
    parts = seqtools.split(data, [2])
    parts[1] = "wxyz"
    assert data == [0, 1, "w", "x", "y", "z"]
    with pytest.raises(ValueError, match="cannot change size"):
        parts[0] = [1]
    with pytest.raises(TypeError, match="sequence of items"):
        parts[0] = 3


@pytest.mark.parametrize(
    "edges, exc, match",
    [
        (3, ValueError, "4 parts, which does not divide the 10 items"),
        (-1, ValueError, ">= 0"),
        (2.0, TypeError, "edges must be"),
        (True, TypeError, "edges must be"),
        ([6, 4], ValueError, "non-decreasing"),
        ([4, 11], ValueError, r"out of range \[0, 10\]"),
        ([-1], ValueError, "out of range"),
        ([1.5], TypeError, "integer"),
        ([(0, 11)], ValueError, "part 0 = .0, 11."),
        ([(3, 2)], ValueError, "start <= stop"),
        ([(0, 1, 2)], ValueError, "shape"),
        ([(0, 1), (2,)], TypeError, "pairs"),
        ("ab", TypeError, "integer"),
        ([[[1]]], ValueError, "shape"),
    ],
)
def test_split_bad_edges(edges, exc, match):
    with pytest.raises(exc, match=match):
        seqtools.split(list(range(10)), edges)


def test_shape_views_pickle():
    data = list(range(7))
    for view in (
        seqtools.batch(data, 3, pad=0),
        seqtools.unbatch([[1, 2], [3]], 2, 1),
        seqtools.split(data, [2, 5]),
    ):
        assert list(pickle.loads(pickle.dumps(view))) == list(view)


def test_slice_of_batch_is_one_view():
    b = seqtools.batch(list(range(20)), 3)
    s = b[1:6][::2]
    assert s._base is b and list(s) == [b[1], b[3], b[5]]


@pytest.mark.parametrize("bad", [None, "1", 1.5, np.float64(1.0), [1], object()])
def test_kernels_refuse_non_integer_indices(bad):
    calls = [
        lambda: _indexmaps.unbatch_locate(bad, 10, 2),
        lambda: _testing.split_locate(bad, [4, 10]),
        lambda: _testing.cycle_locate(bad, 3),
        lambda: _indexmaps.InterleaveMap([2, 3]).locate(bad),
    ]
    for call in calls:
        with pytest.raises(TypeError, match="integers or slices"):
            call()
    for name in ("n", "k"):
        args = {"n": 10, "k": 2, name: bad}
        with pytest.raises(TypeError, match="must be an integer"):
            _indexmaps.unbatch_locate(0, args["n"], args["k"])


def test_collate_fn_gets_a_list_so_items_are_computed_once():
    calls = []

    def compute(x):
        calls.append(x)
        return x * 10

    def two_fields(samples):  # reads the samples twice, as the seed example does
        return [s for s in samples], [s + 1 for s in samples]

    b = seqtools.batch(seqtools.smap(compute, range(10)), 4, collate_fn=two_fields)
    assert b[1] == ([40, 50, 60, 70], [41, 51, 61, 71])
    assert sorted(calls) == [4, 5, 6, 7]


# -- failed assignments write nothing ------------------------------------------------


def test_failed_batch_assignment_writes_nothing():
    data = list(range(7))
    b = seqtools.batch(data, 3, pad=-1)
    with pytest.raises(ValueError, match=r"values\[1\] \(for item 1\): batch 1 holds "
                       "3 items but 2 values were assigned"):
        b[0:2] = [["a", "b", "c"], ["d", "e"]]
    with pytest.raises(TypeError, match="a batch must be assigned a sequence of "
                       "items, got int; nothing was assigned"):
        b[::-1] = [["z"], [1, 2, 3], 5]
    assert data == list(range(7))
    arr = np.zeros((5, 2))
    ba = seqtools.batch(arr, 2)
    with pytest.raises(ValueError, match="cannot write these 2 values into a numpy "
                       r"array of dtype float64 and items of shape \(2,\)"):
        ba[0:2] = [[[1, 2], [3, 4]], [[5, 6], [7, 8, 9]]]
    assert not arr.any()
    # Over a view, the items are checked down to its sources.
    src = np.zeros(5)
    bv = seqtools.batch(seqtools.gather(src, [4, 3, 2, 1, 0]), 2)
    with pytest.raises(ValueError, match=r"value 1 \(for item 3 of the source\): "
                       "cannot write 'x'"):
        bv[:] = [[1, 2], [3, "x"], [5]]
    assert not src.any()
    bv[:] = [[1, 2], [3, 4], [5]]
    assert src.tolist() == [5, 4, 3, 2, 1]


def test_failed_padded_batch_assignment_writes_nothing():
    data = list(range(5))
    last = seqtools.batch(seqtools.gather(data, range(5)), 2, pad=-1)[2]
    assert list(last) == [4, -1]
    with pytest.raises(TypeError, match=r"item 1 of this batch is padding .* assign "
                       r"only to batch\[:1\]; nothing was assigned"):
        last[:] = [10, 11]
    assert data == list(range(5))
    last[:1] = [10]
    assert data == [0, 1, 2, 3, 10]


def test_failed_unbatch_assignment_writes_nothing():
    batches = [[0, 1], [2]]
    u = seqtools.unbatch(batches, 2)
    with pytest.raises(ValueError, match="batch 1 of the source has fewer than 2"):
        u[1:4] = ["a", "b", "c"]
    arr = np.zeros((2, 2))
    ua = seqtools.unbatch(arr, 2)
    with pytest.raises(ValueError, match=r"values\[2\] \(for item 3\): cannot write"):
        ua[1:] = [1, 2, "x"]
    assert batches == [[0, 1], [2]] and not arr.any()


def test_failed_split_assignment_writes_nothing():
    data = list(range(6))
    parts = seqtools.split(data, [2])
    with pytest.raises(ValueError, match=r"values\[1\] \(for item 1\): part 1 holds "
                       "4 items but 2 values were assigned"):
        parts[:] = [["a", "b"], ["c", "d"]]
    with pytest.raises(TypeError, match="a part must be assigned a sequence"):
        parts[:] = [["a", "b"], None]
    assert data == list(range(6))
    arr = np.zeros(6, dtype=np.int8)
    with pytest.raises(ValueError, match="dtype int8"):
        seqtools.split(arr, 2)[:] = [[1, 2], [3, 4], [5, 1000]]
    assert not arr.any()
    ns = _NoSlice(4)
    with pytest.raises(TypeError, match="'tuple' object does not support"):
        seqtools.split(seqtools.concatenate([ns, (4, 5)]), 1)[:] = [[7, 8, 9], [1] * 3]
    assert ns.data == [0, 1, 2, 3]


# -- batch(..., collate_fn=stack): fused batches ---------------------------------------


@pytest.mark.parametrize("drop_last", [False, True])
@pytest.mark.parametrize("pad", [None, "zero"])
def test_batch_with_stack(rng, drop_last, pad):
    n = int(rng.integers(1, 30))
    k = int(rng.integers(1, 8))
    chunks, data = random_chunks(rng, n, (3,), np.float64)
    labels = rng.integers(0, 10, n)
    dataset = seqtools.collate([seqtools.concatenate(chunks), labels])
    padding = (np.zeros(3), np.int64(-1)) if pad else None
    batches = seqtools.batch(dataset, k, drop_last=drop_last, pad=padding,
                             collate_fn=stack)
    ref = seqtools.batch(dataset, k, drop_last=drop_last, pad=padding,
                         collate_fn=lambda items: stack(list(items)))
    assert len(batches) == len(ref)
    for b in range(len(batches)):
        assert_same(batches[b], ref[b])
        x, y = batches[b]
        m = min(k, n - b * k)
        assert (x[:m] == data[b * k : b * k + m]).all()
        assert (y[:m] == labels[b * k : b * k + m]).all()
        if pad:
            assert (y[m:] == -1).all() and (x[m:] == 0).all()


@pytest.mark.parametrize("kind", ["array", "gather", "smap", "list"])
def test_batch_with_stack_sources(rng, kind):
    # batch(collate_fn=stack) reads each batch of a view or array straight from the
    # source (stacking.stack_range); what it returns is stack of the batch's items
    data = rng.standard_normal((23, 2, 3))
    order = rng.permutation(23)
    source = {
        "array": data,
        "gather": seqtools.gather(data, order),
        "smap": seqtools.smap(lambda x: x * 2, seqtools.gather(data, order)),
        "list": list(data),
    }[kind]
    batches = seqtools.batch(source, 5, collate_fn=stack)
    for b in range(len(batches)):
        items = [source[i] for i in range(b * 5, min(b * 5 + 5, 23))]
        assert_same(batches[b], np.stack(items))
    failing = seqtools.batch(seqtools.smap(lambda x: 1 / 0, data), 5, collate_fn=stack)
    with pytest.raises(seqtools.EvaluationError):
        failing[1]


def test_batch_default_returns_items():
    view = seqtools.batch(seqtools.gather(np.arange(6), [5, 4, 3, 2, 1]), 2)
    assert list(view[0]) == [5, 4]
