"""arange, gather/take, concatenate and collate against Python list semantics.

Hypothesis runs derandomized (a fixed seed), so a failure replays identically.
"""

import pickle

import numpy as np
import pytest
from conftest import Naturals, slice_strategy
from hypothesis import given, settings
from hypothesis import strategies as st

import seqtools
from seqtools import arange, collate, concatenate, gather, take
from seqtools.views.core import SliceView, View
from seqtools.views.indexing import Concatenation, Gathering

view_settings = settings(max_examples=120, deadline=None, derandomize=True)

slices = slice_strategy(25, 4)


def check_like_list(view, ref):
    """Length, items (positive and negative keys), iteration and errors."""
    assert len(view) == len(ref)
    assert list(view) == ref
    assert [view[i] for i in range(len(ref))] == ref
    assert [view[-i - 1] for i in range(len(ref))] == ref[::-1]
    for key in (len(ref), -len(ref) - 1):
        with pytest.raises(IndexError):
            view[key]


def apply_ops(data, view, ref):
    """Apply a random chain of slices and gathers to a view and to a list."""
    for _ in range(data.draw(st.integers(0, 4))):
        if data.draw(st.booleans()):
            s = data.draw(slices)
            view, ref = view[s], ref[s]
        else:
            n = len(ref)
            idx = data.draw(st.lists(st.integers(-n, n - 1), max_size=12)) if n else []
            view, ref = gather(view, idx), [ref[i] for i in idx]
    return view, ref


# -- properties against lists --------------------------------------------------------


@view_settings
@given(data=st.data(), n=st.integers(0, 30))
def test_gather_and_slices_behave_like_lists(data, n):
    ref = [f"x{i}" for i in range(n)]
    source = data.draw(st.sampled_from(["list", "array", "view"]))
    base = {"list": list(ref), "array": np.array(ref), "view": gather(ref, range(n))}
    view, expected = apply_ops(data, base[source], list(ref))
    if isinstance(view, View):
        check_like_list(view, expected)
        # Stacks of index-only views collapse onto the innermost source.
        if isinstance(view, (Gathering, SliceView)):
            assert not isinstance(view._base, (Gathering, SliceView))
    else:
        assert list(view) == expected


@view_settings
@given(data=st.data(), parts=st.lists(st.integers(0, 6), max_size=5))
def test_concatenate_behaves_like_lists(data, parts):
    chunks, start = [], 0
    for k, size in enumerate(parts):
        chunk = list(range(start, start + size))
        chunks.append(chunk if k % 2 else np.array(chunk, dtype=np.int64))
        start += size
    ref = list(range(start))
    view = concatenate(chunks)
    check_like_list(view, ref)
    view, ref = apply_ops(data, view, ref)
    check_like_list(view, ref)


@view_settings
@given(data=st.data(), n=st.integers(0, 20))
def test_collate_behaves_like_zip(data, n):
    a, b, c = list(range(n)), [f"s{i}" for i in range(n)], np.arange(n) * 2
    view = collate([a, b, c])
    ref = list(zip(a, b, c.tolist()))
    check_like_list(view, ref)
    view2 = collate([a, b])
    check_like_list(view2, list(zip(a, b)))
    view, ref = apply_ops(data, view, ref)
    check_like_list(view, ref)


@view_settings
@given(
    args=st.tuples(
        st.integers(-20, 20), st.integers(-20, 20), st.integers(-5, 5)
    ).filter(lambda t: t[2] != 0),
    s1=slices,
    s2=slices,
)
def test_arange_behaves_like_range(args, s1, s2):
    view, ref = arange(*args), list(range(*args))
    check_like_list(view, ref)
    check_like_list(view[s1], ref[s1])
    check_like_list(view[s1][s2], ref[s1][s2])


# -- construction and collapse -------------------------------------------------------


def test_arange_signatures():
    assert list(arange(4)) == [0, 1, 2, 3]
    assert list(arange(2, 5)) == [2, 3, 4]
    assert list(arange(10, 2, -3)) == [10, 7, 4]
    assert list(arange(np.int32(3))) == [0, 1, 2]
    with pytest.raises(TypeError):
        arange(4.0)
    with pytest.raises(ValueError):
        arange(0, 4, 0)
    assert type(arange(10)[::-2]) is type(arange(1))


def test_gather_collapses_to_one_index_array():
    data = list(range(100))
    g = gather(gather(data[::-1], [5, 3, 99]), [2, 0, -1])
    assert list(g) == [0, 94, 0]
    assert type(g) is Gathering and g._base is not None and g._base == data[::-1]

    arr = np.arange(100)
    g = gather(arr[10:90][::3], [0, -1])  # numpy slices stay numpy
    assert list(g) == [10, 88]

    col = collate([arr, data])
    g = gather(col[:-10][::-2], [0, 1, -1])
    assert type(g) is Gathering and g._base is col
    assert g.indices.tolist() == [89, 87, 1]
    assert g[0] == (89, 89)

    sub = g[1:]
    assert type(sub) is Gathering and sub._base is col
    assert list(sub) == [(87, 87), (1, 1)]

    g2 = gather(sub, [1, 1])
    assert g2._base is col and g2.indices.tolist() == [1, 1]


def test_gather_index_types():
    data = list("abcdef")
    for idx in (
        np.array([5, 0], dtype=np.uint8),
        np.array([-1, 0], dtype=np.int16),
        np.array([5, 0], dtype=">i8"),
        [np.int64(5), 0],
        range(5, -1, -5),
        arange(5, -1, -5),
    ):
        assert list(gather(data, idx)) == ["f", "a"]


@pytest.mark.parametrize(
    "idx, exc, match",
    [
        ([0, 6], IndexError, "index 6 at position 1"),
        (np.array([0, -7]), IndexError, "index -7 at position 1"),
        ([0.0], TypeError, "position 0"),
        (np.array([True] * 6), TypeError, "boolean"),
        (np.zeros((2, 1), dtype=int), ValueError, "one-dimensional"),
    ],
)
def test_gather_rejects_bad_indices_at_construction(idx, exc, match):
    with pytest.raises(exc, match=match):
        gather(list("abcdef"), idx)


def test_gather_rejects_non_sequences():
    with pytest.raises(TypeError):
        gather(iter([1, 2]), [0])
    with pytest.raises(TypeError):
        gather(3, [0])


def test_gather_keeps_its_own_indices():
    idx = np.array([0, 1])
    g = gather([10, 11], idx)
    idx[0] = 1
    assert list(g) == [10, 11]


def test_take_is_gather():
    assert list(take([1, 2, 3], [2, 2])) == [3, 3]


def test_gather_of_infinite_view():
    g = gather(Naturals(), [10**12, 3])
    assert list(g) == [10**12, 3]
    with pytest.raises(IndexError, match="infinite"):
        gather(Naturals(), [-1])
    g = gather(Naturals()[5::2], [0, 3])
    assert list(g) == [5, 11] and type(g._base) is Naturals


def test_concatenate_flattens_and_accepts_empty():
    a, b = [1, 2], [3]
    cat = concatenate([concatenate([a, []]), b, concatenate([])])
    assert type(cat) is Concatenation and len(cat._parts) == 3
    assert list(cat) == [1, 2, 3]
    assert len(concatenate([])) == 0 and list(concatenate([])) == []
    assert list(concatenate(iter([a, b]))) == [1, 2, 3]
    assert list(concatenate([a, gather(b, [0, 0])])) == [1, 2, 3, 3]


@pytest.mark.parametrize(
    "arg, exc",
    [
        (3, TypeError),
        ([1, 2], TypeError),
        ("ab", TypeError),
        ([[1], Naturals()], TypeError),  # infinite: no len(), as in SeqTools 1.4.1
    ],
)
def test_concatenate_errors(arg, exc):
    with pytest.raises(exc):
        concatenate(arg)


def test_collate_errors():
    with pytest.raises(ValueError, match="at least one"):
        collate([])
    with pytest.raises(ValueError, match=r"different lengths \[3, 2\]"):
        collate([[1, 2, 3], [1, 2]])
    with pytest.raises(TypeError):
        collate([1, 2])
    c = collate([Naturals(), Naturals()])
    assert c[10**9] == (10**9, 10**9)
    with pytest.raises(TypeError, match="infinite"):
        len(c)


# -- indexing with numpy keys --------------------------------------------------------


@pytest.mark.parametrize(
    "view",
    [
        gather(list(range(10)), range(10)),
        concatenate([[0, 1, 2], range(3, 10)]),
        arange(10),
        collate([list(range(10))])[:],
    ],
)
def test_numpy_keys(view):
    def plain(x):
        return x[0] if isinstance(x, tuple) else x

    assert plain(view[np.int64(-1)]) == 9
    assert plain(view[np.uint8(3)]) == 3
    assert plain(view[np.array(4)]) == 4
    sub = view[np.array([9, -10, 2], dtype=np.int32)]
    assert [plain(x) for x in sub] == [9, 0, 2]
    with pytest.raises(IndexError, match="position 0"):
        view[np.array([10])]
    for key in (1.0, "1", [1], None, np.float32(1)):
        with pytest.raises(TypeError):
            view[key]
    with pytest.raises(IndexError):
        view[2**70]


# -- assignment ----------------------------------------------------------------------


def test_gather_writes_through():
    data = list(range(6))
    g = gather(data, [5, 0, 2])
    g[0] = "a"
    g[-1] = "b"
    g[1:][::-1] = ["c", "d"]
    assert data == ["d", 1, "c", 3, 4, "a"]
    g[np.array([0, 0])] = ["x", "y"]
    assert data[5] == "y"
    arr = np.zeros(4)
    gather(arr, [3, 1])[:] = [1.0, 2.0]
    assert arr.tolist() == [0.0, 2.0, 0.0, 1.0]


def test_concatenate_writes_through():
    a, b = [0, 1], np.zeros(3, dtype=int)
    cat = concatenate([a, [], b])
    cat[1] = 7
    cat[-1] = 8
    cat[1:4] = [4, 5, 6]
    assert a == [0, 4] and b.tolist() == [5, 6, 8]
    with pytest.raises(TypeError, match="does not support item assignment"):
        concatenate([(1, 2)])[0] = 3


def test_collate_writes_one_value_per_source():
    a, b = [1, 2, 3], ["a", "b", "c"]
    c = collate([a, b])
    c[0] = (10, "x")
    c[1:][::-1] = [(30, "z"), (20, "y")]
    assert a == [10, 20, 30] and b == ["x", "y", "z"]
    for bad in ((1,), (1, 2, 3)):
        with pytest.raises(ValueError, match="one per source"):
            c[0] = bad
    with pytest.raises(TypeError, match="one per source"):
        c[0] = 5


def test_assignment_errors():
    with pytest.raises(TypeError, match="read-only"):
        arange(3)[0] = 1
    with pytest.raises(TypeError, match="read-only"):
        arange(3)[1:][0] = 1
    g = gather([1, 2, 3], [0, 1])
    with pytest.raises(ValueError, match="cannot change size"):
        g[:] = [1]
    with pytest.raises(IndexError):
        g[2] = 0
    with pytest.raises(TypeError):
        g["a"] = 0


# -- memory-mapped sources -----------------------------------------------------------


@pytest.fixture
def chunks(tmp_path):
    rng = np.random.default_rng(0)
    out = []
    for k, n in enumerate([50, 30, 20]):
        path = tmp_path / f"chunk{k}.npy"
        np.save(path, rng.standard_normal((n, 16)))
        out.append(np.load(path, mmap_mode="r"))
    return out


def test_memmap_items_are_plain_arrays(chunks):
    cat = concatenate(chunks)
    full = np.concatenate(chunks)
    assert type(cat[0]) is np.ndarray
    assert np.array_equal(cat[57], full[57])
    g = gather(chunks[0], [3])
    assert type(g[0]) is np.ndarray and np.array_equal(g[0], chunks[0][3])


def test_views_pickle_memmaps_by_reference(chunks):
    labels = np.arange(100)
    stack = gather(collate([concatenate(chunks), labels])[:-10], np.arange(90)[::-1])
    blob = pickle.dumps(stack)
    assert len(blob) < 3000  # the data itself is 100 * 16 * 8 = 12800 bytes
    clone = pickle.loads(blob)
    for i in (0, 5, 89):
        assert np.array_equal(clone[i][0], stack[i][0]) and clone[i][1] == stack[i][1]
    assert type(clone._base._sources[0]._parts[1].base) is np.memmap


def test_memmap_reference_keeps_offset_strides_and_mode(tmp_path):
    path = tmp_path / "data.npy"
    np.save(path, np.arange(600, dtype=np.float32).reshape(20, 30))
    mm = np.load(path, mmap_mode="r+")
    for sub in (mm[3:7], mm[::-2, 5:1:-2], mm.T[4], mm[7:8, 29]):
        g = gather(sub, range(len(sub)))
        blob = pickle.dumps(g)
        assert len(blob) < 1500
        clone = pickle.loads(blob)
        assert np.array_equal(np.array(list(clone)), np.asarray(sub))
    # Same file, shared mapping: a write through one is seen by the other.
    clone = pickle.loads(pickle.dumps(concatenate([mm[2:4]])))
    mm[3, 0] = -1.0
    mm.flush()
    assert clone[1][0] == -1.0
    clone[0][1] = -2.0  # 'r+' is kept
    assert mm[2, 1] == -2.0


def test_plain_arrays_pickle_by_value():
    arr = np.arange(10)
    clone = pickle.loads(pickle.dumps(gather(arr, [1, 2])))
    arr[1] = 100
    assert list(clone) == [1, 2]


def test_views_pickle():
    data = list(range(10))
    for view in (
        gather(data, [3, 1]),
        concatenate([data, data[:2]])[::-3],
        collate([data, data]),
        collate([data, data, data]),
        arange(3, 9)[1:],
        take(Naturals(), [4]),
    ):
        clone = pickle.loads(pickle.dumps(view))
        assert list(clone) == list(view)
        assert clone[0] == view[0]


def test_large_gather_iteration():
    data = np.arange(20_000)
    idx = np.random.default_rng(1).permutation(20_000)
    assert np.array_equal(np.fromiter(gather(data, idx), dtype=np.int64), idx)


def test_locate_maps_to_innermost_source():
    data = list(range(50))
    g = gather(data, [10, 20, 30])[::-1]
    src, idx = g._locate(np.array([0, 2], dtype=np.int64))
    assert src is data and idx.tolist() == [30, 10]
    cat = concatenate([data, data])
    parts, local = cat._locate_parts(np.array([0, 49, 50, 99]))
    assert parts.tolist() == [0, 0, 1, 1] and local.tolist() == [0, 49, 0, 49]


# -- compiled item reads (readers) ---------------------------------------------------


@pytest.fixture(scope="module")
def seed_chunks(tmp_path_factory):
    """Memory-mapped chunks of unequal lengths and int64 labels (seed example)."""
    folder = tmp_path_factory.mktemp("seed")
    rng = np.random.default_rng(0)
    chunks = []
    for k, n in enumerate([7, 0, 5, 3]):
        np.save(folder / f"data_{k}.npy", rng.standard_normal((n, 6)))
        chunks.append(np.load(folder / f"data_{k}.npy", mmap_mode="r"))
    labels = rng.integers(10, size=15)
    return chunks, labels


def seed_reference(chunks, labels):
    """Item ``i`` of ``collate([concatenate(chunks), labels])``, by plain indexing."""
    rows = [(c, j) for c in chunks for j in range(len(c))]
    return [(rows[i], labels[i]) for i in range(len(labels))]


def check_seed_item(item, ref):
    (chunk, j), label = ref
    assert type(item) is tuple and len(item) == 2
    row, lab = item
    assert type(row) is np.ndarray  # not np.memmap
    assert row.shape == chunk.shape[1:] and row.dtype == chunk.dtype
    assert np.array_equal(row, chunk[j]) and np.shares_memory(row, chunk)
    assert not row.flags.writeable
    assert type(lab) is np.int64 and lab == label


@view_settings
@given(data=st.data())
def test_seed_chunks_items_match_plain_indexing(seed_chunks, data):
    chunks, labels = seed_chunks
    view = collate([concatenate(chunks), labels])
    ref = seed_reference(chunks, labels)
    if data.draw(st.booleans()):
        view, ref = view[:-3], ref[:-3]
    view, ref = apply_ops(data, view, ref)
    if not isinstance(view, View):
        return
    assert len(view) == len(ref)
    for k in range(-len(ref), len(ref)):
        check_seed_item(view[k], ref[k])
    items = list(view)
    assert len(items) == len(ref)
    for item, r in zip(items, ref):
        check_seed_item(item, r)
    for key in (len(ref), -len(ref) - 1, 2**70):
        with pytest.raises(IndexError):
            view[key]


def test_seed_sampler_batch_matches_fancy_indexing(seed_chunks):
    chunks, labels = seed_chunks
    dataset = collate([concatenate(chunks), labels])[:-2]
    subset = np.random.default_rng(3).choice(len(dataset), 64)
    samples = list(gather(dataset, subset))
    full = np.concatenate([np.asarray(c) for c in chunks])
    assert np.array_equal(np.stack([s[0] for s in samples]), full[subset])
    assert np.array_equal(np.stack([s[1] for s in samples]), labels[subset])
    assert all(type(s[1]) is np.int64 for s in samples)


def test_item_reads_through_other_sources():
    class Squares:  # a sequence that is neither a list nor an array
        def __len__(self):
            return 5

        def __getitem__(self, i):
            if not 0 <= i < 5:
                raise IndexError(i)
            return i * i

    objects = [object() for _ in range(3)]
    sources = [Squares(), "abcde", (0, 1, 2, 3, 4), range(10, 15), arange(5),
               np.array([{"k": i} for i in range(5)], dtype=object)]
    for source in sources:
        ref = [source[i] for i in range(5)]
        check_like_list(gather(source, [4, -1, 0]), [ref[4], ref[4], ref[0]])
        check_like_list(concatenate([source, objects])[2:], ref[2:] + objects)
        check_like_list(collate([source, source])[::-2], list(zip(ref, ref))[::-2])
    assert all(a is b for a, b in zip(gather(objects, [2, 1]), objects[::-1]))


def test_item_reads_follow_changes_to_the_sources():
    data = [0, 1, 2, 3]
    view = collate([gather(data, [3, 0]), concatenate([data[:2], data])[4:]])
    data[3] = "x"
    assert view[0] == ("x", 2) and list(view) == [("x", 2), (0, "x")]
    arr = np.zeros((3, 2))
    g = gather(arr, [2, 0])
    g[0][1] = 5.0  # a row is a view of the array
    g[1] = [7.0, 8.0]
    assert arr.tolist() == [[7.0, 8.0], [0.0, 0.0], [0.0, 5.0]]
    del data[:]
    with pytest.raises(IndexError):  # as data[3] would
        view[0]


def test_item_reads_wrap_user_errors_as_before():
    def f(x):
        if x == 3:
            raise ValueError("boom")
        return x * 10

    m = seqtools.smap(f, list(range(6)))
    g = gather(collate([m, np.arange(6)]), [5, 3, 1])
    assert g[0] == (50, 5) and g[-1] == (10, 1)
    reads = (lambda: g[1], lambda: list(g), lambda: g[-2], lambda: list(g[1:]),
             lambda: collate([m, m])[3], lambda: list(concatenate([m, m])[:5]))
    for read in reads:
        with pytest.raises(seqtools.EvaluationError, match="item 3 of Mapping") as e:
            read()
        assert type(e.value.__cause__) is ValueError
    it = iter(g)
    assert next(it) == (50, 5)
    with pytest.raises(seqtools.EvaluationError):
        next(it)
    assert next(it) == (10, 1)  # iteration moves on, as map() did


def test_item_reads_of_empty_and_infinite_views(seed_chunks):
    chunks, labels = seed_chunks
    dataset = collate([concatenate(chunks), labels])
    for view in (gather(dataset, []), dataset[5:5], concatenate([]),
                 collate([[], np.empty(0)]), gather(dataset, [1])[1:]):
        assert len(view) == 0 and list(view) == []
        with pytest.raises(IndexError):
            view[0]
    loop = seqtools.cycle([1, 2, 3])
    assert loop[1::2][2**62] == 1  # indices past 64 bits, once composed
    assert list(gather(loop, [2**40, 7])) == [2, 2]
    assert collate([loop, Naturals()])[10**12] == (2, 10**12)


def test_public_names():
    for name in ("arange", "gather", "take", "concatenate", "collate"):
        assert name in seqtools.__all__ and callable(getattr(seqtools, name))


# -- failed assignments write nothing ------------------------------------------------


def test_failed_gather_assignment_writes_nothing():
    arr = np.zeros(4)
    g = gather(arr, [3, 1, 0])
    with pytest.raises(ValueError, match=r"values\[2\] \(for item 2\): cannot write "
                       r"'x' into a numpy array of dtype float64"):
        g[:] = [1.0, 2.0, "x"]
    with pytest.raises(ValueError, match="nothing was assigned"):
        g[np.array([0, 2])] = [5.0, "y"]
    assert arr.tolist() == [0.0] * 4
    rows = np.zeros((3, 2))
    with pytest.raises(ValueError, match="items of shape \\(2,\\)"):
        gather(rows, [2, 0])[:] = [[1, 2], [1, 2, 3]]
    assert not rows.any()


def test_failed_concatenate_assignment_writes_nothing():
    data, arr = [0, 1, 2], np.zeros(3)
    cat = concatenate([data, arr])
    with pytest.raises(ValueError, match="could not convert"):
        cat[1:5] = [10, 20, 30, "x"]
    assert data == [0, 1, 2] and arr.tolist() == [0.0] * 3
    frozen = concatenate([data, (3, 4)])
    with pytest.raises(TypeError, match="'tuple' object does not support item "
                       "assignment; build the view over a list"):
        frozen[1:4] = ["a", "b", "c"]
    with pytest.raises(TypeError, match="'tuple' object does not support"):
        frozen[1:][:] = ["a", "b", "c", "d"]  # through a slice view
    with pytest.raises(TypeError, match="arange views are read-only"):
        concatenate([data, arange(2)])[:] = [5, 6, 7, 8, 9]
    assert data == [0, 1, 2]


def test_failed_collate_assignment_writes_nothing():
    a, b = [1, 2, 3], ["a", "b", "c"]
    c = collate([a, b])
    with pytest.raises(TypeError, match=r"values\[2\] \(for item 2\): collate: "
                       "assign a sequence of 2 values, one per source, not int 5"):
        c[:] = [(10, "x"), (20, "y"), 5]
    with pytest.raises(ValueError, match="one per source, not 1 values"):
        c[::-1] = [(10, "x"), (20, "y"), (30,)]
    assert a == [1, 2, 3] and b == ["a", "b", "c"]
    # One item: every source is checked before the first is written.
    arr = np.zeros(3)
    mixed = collate([a, arr])
    with pytest.raises(ValueError, match=r"collate: value 1 \(for source 1\): "
                       "cannot write 'x' into a numpy array"):
        mixed[0] = (10, "x")
    with pytest.raises(ValueError, match="nothing was assigned"):
        gather(mixed, [2, 1])[:] = [(30, 3.0), (20, "y")]
    assert a == [1, 2, 3] and arr.tolist() == [0.0] * 3
    mixed[1] = [7, 8.0]
    assert a == [1, 7, 3] and arr.tolist() == [0.0, 8.0, 0.0]
