"""Tests of seqtools.views.fusion: source maps and compiled programs, read through
``stack`` of a view graph, against numpy references and against the per-item path.

The fused path must give the same arrays as ``stack(list(view))``, bit for bit, for
random view graphs (concatenations of chunks of random lengths, empty ones included,
collations of arrays and lists, slices with negative steps, gathers of gathers,
padded batches) over random dtypes and shapes, non-contiguous and memory-mapped
sources.
"""

import doctest
import pickle

import numpy as np
import pytest
from fused_helpers import (
    DTYPES,
    assert_same,
    per_item,
    random_array,
    random_chunks,
    seed_like_dataset,
)
from hypothesis import given, settings
from hypothesis import strategies as st

import seqtools
import seqtools.batching.stacking
import seqtools.views.core
import seqtools.views.fusion
from seqtools import _testing, stack
from seqtools.batching import _stack
from seqtools.batching.stacking import stack_indices
from seqtools.views._indexing import Resolver
from seqtools.views.fusion import Items, Rows, fuse

# -- the protocol ----------------------------------------------------------------------


def test_source_map_of_the_seed_graph():
    chunks = [np.zeros((5, 3)), np.ones((4, 3))]
    labels = np.arange(9)
    view = seqtools.gather(seqtools.collate([seqtools.concatenate(chunks), labels])[1:],
                           [7, 0, 3])
    source_map = fuse(view, np.arange(3, dtype=np.int64))
    assert type(source_map) is tuple and len(source_map) == 2
    data, lab = source_map
    assert type(data) is Rows and data.sources == tuple(chunks)
    assert data.part.tolist() == [1, 0, 0] and data.local.tolist() == [3, 1, 4]
    assert type(lab) is Rows and lab.local.tolist() == [8, 1, 4]


def test_user_code_falls_back_for_its_part_only():
    x = np.arange(12.0).reshape(6, 2)
    labels = np.arange(6)
    calls = []

    def f(row):
        calls.append(1)
        return row * 2

    view = seqtools.collate([seqtools.smap(f, x), labels])
    source_map = fuse(view, np.arange(6, dtype=np.int64))
    assert type(source_map[0]) is Items and type(source_map[1]) is Rows
    got = stack(view)
    assert len(calls) == 6
    assert_same(got, (x * 2, labels))


def test_views_without_the_protocol_read_item_by_item():
    class Plain(seqtools.View):
        __slots__ = ()

        def __init__(self):
            seqtools.View.__init__(self, 4)

        def _get(self, i):
            return np.full(2, i)

    assert type(fuse(Plain(), np.arange(4, dtype=np.int64))) is Items
    assert_same(stack(Plain()), np.repeat(np.arange(4), 2).reshape(4, 2))


# -- random view graphs against numpy and the per-item path ---------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("row_shape", [(), (3,), (2, 3), (0,)])
@pytest.mark.parametrize("layout", ["c", "fortran", "reverse", "step"])
def test_gather_over_concatenated_chunks(rng, dtype, row_shape, layout):
    total = int(rng.integers(1, 40))
    chunks, data = random_chunks(rng, total, row_shape, dtype, layout)
    labels = rng.integers(0, 10, total)
    names = [float(i) for i in range(total)]  # a list: read item by item
    dataset = seqtools.collate([seqtools.concatenate(chunks), labels, names])
    idx = rng.integers(-total, total, size=int(rng.integers(1, 50)))
    view = seqtools.gather(dataset, idx)
    got = stack(view)
    expected = (data[idx], labels[idx], np.array([names[i] for i in idx]))
    if np.dtype(dtype).kind in "biufc" or row_shape:
        assert_same(got, per_item(view))
    assert got[0].tobytes() == np.ascontiguousarray(expected[0]).tobytes()
    assert got[0].shape == expected[0].shape
    assert (got[1] == expected[1]).all() and (got[2] == expected[2]).all()


def test_slices_with_negative_steps_and_gathers_of_gathers(rng):
    for _ in range(50):
        n = int(rng.integers(1, 60))
        arr = random_array(rng, n, (3,), np.float32)
        chunks, _ = random_chunks(rng, n, (3,), np.float32)
        cat = seqtools.concatenate([arr[: n // 2], arr[n // 2 :]])
        step = int(rng.choice([-3, -2, -1, 1, 2]))
        sl = cat[::step]
        expected = arr[::step]
        if len(sl) == 0:
            continue
        i1 = rng.integers(0, len(sl), size=int(rng.integers(1, 20)))
        i2 = rng.integers(0, len(i1), size=int(rng.integers(1, 20)))
        view = seqtools.gather(seqtools.gather(sl, i1), i2)[::-1]
        assert_same(stack(view), expected[i1][i2][::-1].copy())
        assert_same(stack(view), per_item(view))


def test_mixed_parts_merge_or_fall_back(rng):
    a = random_array(rng, 5, (2,), np.int64)
    b = random_array(rng, 4, (2,), np.int64)
    # an array, a gather, a slice of an array and a list part: the list makes the
    # whole concatenation fall back, still right.
    for parts in ([a, seqtools.gather(b, [3, 1]), a[::-2]],
                  [a, [np.zeros(2, np.int64)], b],
                  [a, np.zeros((0,)), b]):  # an empty part of another shape
        view = seqtools.concatenate(parts)
        idx = rng.integers(0, len(view), 30)
        g = seqtools.gather(view, idx)
        assert_same(stack(g), per_item(g))
    mixed = seqtools.concatenate([a, seqtools.gather(b, [3, 1]), a[::-2]])
    assert type(fuse(mixed, np.arange(len(mixed), dtype=np.int64))) is Rows


def test_memory_mapped_chunks(tmp_path, rng):
    chunks = []
    for k, n in enumerate([7, 0, 5, 9]):
        np.save(tmp_path / f"c{k}.npy", random_array(rng, n, (4, 2), np.float32))
        chunks.append(np.load(tmp_path / f"c{k}.npy", mmap_mode="r"))
    labels = np.arange(21)
    dataset = seqtools.collate([seqtools.concatenate(chunks), labels])[:-3]
    idx = rng.integers(0, len(dataset), 40)
    view = seqtools.gather(dataset, idx)
    data = np.concatenate([np.asarray(c) for c in chunks])
    assert_same(stack(view), (data[idx], labels[idx]))
    # also through a pickled copy (memmaps travel by reference)
    assert_same(stack(pickle.loads(pickle.dumps(view))), (data[idx], labels[idx]))


def test_arange_and_plain_arrays(rng):
    view = seqtools.collate([seqtools.arange(3, 40, 3), np.arange(13.0)])
    g = seqtools.gather(view, [12, 0, 5])
    assert_same(stack(g), per_item(g))
    arr = random_array(rng, 6, (2,), np.float32, "fortran")
    assert_same(stack(arr), per_item(arr))


def test_quirky_scalar_dtypes_stay_on_the_per_item_path():
    # numpy turns items of these 1-D arrays into scalars of another dtype
    for arr in (np.arange(5, dtype=">f8"), np.array([b"a", b"bb", b"c"], "S3"),
                np.array([None, 1], object)):
        assert type(fuse(arr, np.arange(len(arr), dtype=np.int64))) is Items
    assert stack(np.arange(5, dtype=">f8")).dtype == np.float64


@settings(max_examples=60, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 6), min_size=1, max_size=5),
    picks=st.lists(st.integers(-40, 40), min_size=1, max_size=30),
    step=st.sampled_from([-2, -1, 1, 3]),
)
def test_property_against_list_semantics(lengths, picks, step):
    total = sum(lengths)
    rows = np.arange(total * 2, dtype=np.int32).reshape(total, 2)
    chunks, lo = [], 0
    for n in lengths:
        chunks.append(rows[lo : lo + n])
        lo += n
    pylist = [tuple(r) for r in rows.tolist()][::step]
    view = seqtools.collate([seqtools.concatenate(chunks), np.arange(total)])[::step]
    picks = [p for p in picks if -len(pylist) <= p < len(pylist)]
    if not picks:
        return
    x, y = stack(seqtools.gather(view, picks))
    assert x.tolist() == [list(pylist[p]) for p in picks]
    assert y.tolist() == [list(range(total))[::step][p] for p in picks]


# -- compiled programs: the Resolver and RowSources kernels, the per-view cache --------


def reference_resolve(indices, ops, offsets):
    """numpy reference of one Resolver leaf: apply ``ops``, then split by offsets."""
    i = indices.copy()
    for op in ops:
        i = op[1] + i * op[2] if op[0] == "affine" else op[1][i]
    if offsets is None:
        return None, i
    part = np.searchsorted(offsets, i, side="right") - 1
    return part, i - offsets[part]


def test_resolver_against_numpy(rng):
    for _ in range(200):
        base = int(rng.integers(1, 50))
        # a concatenation of random parts (empty ones included) under a random
        # chain of slices and gathers, each valid for the level below
        lengths = np.diff(np.sort(np.r_[0, rng.integers(0, base + 1, 3), base]))
        offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
        ops, n = [], base
        for _ in range(int(rng.integers(0, 4))):
            if rng.random() < 0.5:
                table = rng.integers(0, n, int(rng.integers(1, 20)))
                ops.insert(0, ("take", table))
                n = len(table)
            else:
                step = int(rng.choice([-2, -1, 1, 3]))
                start = int(rng.integers(0, n)) if step > 0 else n - 1
                stop = n if step > 0 else -1
                m = len(range(start, stop, step))
                if m == 0:
                    continue
                ops.insert(0, ("affine", start, step))
                n = m
        idx = rng.integers(0, n, int(rng.integers(0, 30)))
        split = offsets if rng.random() < 0.7 else None
        resolver = Resolver(n, [(tuple(ops), split), ((), None)])
        (part, local), (part0, local0) = resolver.resolve(idx)
        ref_part, ref_local = reference_resolve(idx, ops, split)
        assert local.tolist() == ref_local.tolist()
        assert (part is None) == (split is None)
        if split is not None:
            assert part.tolist() == ref_part.tolist()
            assert (lengths[part] > local).all()  # never an empty part
        assert part0 is None and local0 is idx  # the identity hands indices on


def test_resolver_errors():
    resolver = Resolver(5, [((("take", np.array([4, 0])),), None)])
    with pytest.raises(IndexError, match="index 5 at position 1 is out of range "
                                         "for a sequence of 5 items"):
        resolver.resolve(np.array([0, 5]))
    with pytest.raises(IndexError, match="index -1 at position 0"):
        resolver.resolve(np.array([-1]))
    # a table shorter than the view's length: caught, not read out of bounds
    with pytest.raises(IndexError, match="leaves the index maps of leaf 0"):
        resolver.resolve(np.array([3]))
    with pytest.raises(TypeError, match="int64"):
        resolver.resolve(np.array([0], np.int32))
    strided = np.arange(10, dtype=np.int64)[::3]  # not contiguous: copied
    assert resolver.resolve(np.zeros(2, np.int64))[0][1].tolist() == [4, 4]
    assert Resolver(None, [((), np.array([0, 2, 10]))]).resolve(
        strided)[0][1].tolist() == [0, 1, 4, 7]
    with pytest.raises(ValueError, match="unknown index map"):
        Resolver(3, [((("roll", 1),), None)])
    with pytest.raises(IndexError, match="position 1 leaves the index maps"):
        Resolver(None, [((("affine", 1, 2**62),), None)]).resolve(
            np.array([1, 4]))  # overflows


@pytest.mark.parametrize("layout", ["c", "fortran", "reverse", "step"])
def test_row_sources_against_numpy(rng, layout):
    a = [random_array(rng, n, (2, 3), np.float32, layout) for n in (4, 0, 7)]
    b = random_array(rng, 9, (), np.int16)
    sources = _stack.RowSources([a, (b,)])
    both = np.concatenate(a)
    for _ in range(20):  # one RowSources, many batches
        m = int(rng.integers(0, 12))
        part = rng.choice([0, 2], m)
        local = rng.integers(0, 4, m)
        outs = [np.empty((m, 2, 3), np.float32), np.empty(m, np.int16)]
        sources.copy([(part, local), (None, local * 2)], outs)
        assert outs[0].tobytes() == both[np.where(part == 2, 4, 0) + local].tobytes()
        assert outs[1].tolist() == b[local * 2].tolist()


def test_row_sources_check_before_writing():
    sources = _stack.RowSources([(np.zeros((5, 2)),), (np.arange(3), np.arange(4))])
    out = [np.full((2, 2), 7.0), np.full(2, 7)]
    with pytest.raises(IndexError, match="row 1 of the batch: index 3 is out of range "
                                         "for source 0 of 3 items"):
        sources.copy([(None, np.array([0, 1])), (np.array([1, 0]), np.array([3, 3]))],
                     out)
    with pytest.raises(IndexError, match="source 2 out of range"):
        sources.copy([(None, np.array([0, 1])), (np.array([2, 0]), np.array([0, 0]))],
                     out)
    assert (out[0] == 7).all() and (out[1] == 7).all()  # nothing written
    with pytest.raises(ValueError, match="dtype"):
        sources.copy([(None, np.array([0])), (None, np.array([0]))],
                     [np.empty((1, 2), np.float32), np.empty(1, np.int64)])
    with pytest.raises(ValueError, match="bytes"):
        sources.copy([(None, np.array([0])), (None, np.array([0]))],
                     [np.empty((2, 2)), np.empty(1, np.int64)])
    with pytest.raises(ValueError, match="fields"):
        sources.copy([(None, np.array([0]))], [np.empty((1, 2))])
    with pytest.raises(ValueError, match="rows of shape"):
        _stack.RowSources([(np.zeros((2, 2)), np.zeros((2, 3)))])
    with pytest.raises(ValueError, match="no source arrays"):
        _stack.RowSources([()])


def test_programs_are_cached_per_view_and_match_the_dynamic_path(rng):
    chunks, data = random_chunks(rng, 30, (3,), np.float64)
    labels = rng.integers(0, 10, 30)
    col = seqtools.collate([seqtools.concatenate(chunks), labels])
    prog = seqtools.views.fusion.program(col)
    assert prog is seqtools.views.fusion.program(col) and prog.rows_only
    idx = rng.integers(0, 30, 17)
    compiled, dynamic = fuse(col, idx), type(col)._fuse(col, idx)
    for c, d in zip(compiled, dynamic):
        assert c.sources == d.sources and c.dtype == d.dtype and c.shape == d.shape
        assert c.local.tolist() == d.local.tolist()
        assert (c.part is None) == (d.part is None)
    # index-only views are not compiled at the top: their source's program serves
    sl = col[3:20:2]
    assert seqtools.views.fusion.program(sl) is None and sl._program is False
    assert_same(stack(seqtools.gather(sl, [0, 8])), (data[[3, 19]], labels[[3, 19]]))
    assert seqtools.views.fusion.program(col) is prog
    # two datasets of one structure: each its own program and rows
    other = seqtools.collate([seqtools.concatenate([data[::-1]]), labels[::-1]])
    assert_same(stack(seqtools.gather(other, [0, 1])), (data[[29, 28]],
                                                       labels[[29, 28]]))
    assert_same(stack(seqtools.gather(col, [0, 1])), (data[[0, 1]], labels[[0, 1]]))
    # item assignment writes to the sources, which the program reads
    col[1] = (np.full(3, 5.0), 99)
    assert_same(stack(seqtools.gather(col, [1])),
                (np.full((1, 3), 5.0), np.array([99])))


def test_compiled_graph_with_user_views_and_subclasses(rng):
    x = random_array(rng, 12, (2,), np.float64)

    class Reversed(seqtools.View):  # index-only, through _locate
        __slots__ = ("_src",)

        def __init__(self, src):
            seqtools.View.__init__(self, len(src))
            self._src = src

        def _get(self, i):
            return self._src[len(self._src) - 1 - i]

        def _locate(self, indices):
            return self._src, len(self._src) - 1 - indices

    class MyCollation(type(seqtools.collate([x]))):  # inherits no _compile
        __slots__ = ()

    inner = seqtools.collate([Reversed(x), seqtools.smap(lambda v: v * 2, x)])
    view = seqtools.collate([inner, seqtools.gather(x, np.arange(12)[::-1])])
    source_map = fuse(view, np.arange(12, dtype=np.int64))
    assert type(source_map[0][0]) is Rows and type(source_map[0][1]) is Items
    assert not seqtools.views.fusion.program(view).rows_only
    g = seqtools.gather(view, rng.integers(0, 12, 9))
    assert_same(stack(g), per_item(g))
    mine = MyCollation((x, np.arange(12)), 12)
    assert seqtools.views.fusion.program(mine) is None
    assert_same(stack(seqtools.gather(mine, [3, 1])), (x[[3, 1]], np.array([3, 1])))


def test_a_view_after_an_error_and_after_pickling(rng, tmp_path):
    dataset, data, labels = seed_like_dataset(rng, tmp_path)
    col = dataset._base  # the compiled view: the slice's indices are checked above it
    with pytest.raises(IndexError, match="index 123 at position 1"):
        stack_indices(col, np.array([0, 123]))
    out = (np.full((2, 6), 7.0), np.full(2, 7))
    with pytest.raises(IndexError, match="index -1 at position 0"):
        stack_indices(col, np.array([-1, 0]), out)
    assert (out[0] == 7).all() and (out[1] == 7).all()
    with pytest.raises(ValueError, match="shape"):
        stack(seqtools.gather(dataset, [1, 2]), out=(np.empty((2, 5)), out[1]))
    # the program cached before the errors still serves
    assert_same(stack(seqtools.gather(dataset, [5, 2])), (data[[5, 2]], labels[[5, 2]]))
    assert seqtools.views.fusion.program(dataset._base) is not None
    # programs are not pickled: the copy compiles its own
    copy = pickle.loads(pickle.dumps(dataset))
    assert copy._program is None and copy._base._program is None
    assert_same(stack(seqtools.gather(copy, [5, 2])), (data[[5, 2]], labels[[5, 2]]))


def test_batch_padding_is_fused():
    x = np.arange(10.0)
    view = seqtools.batch(seqtools.gather(x, np.arange(10)), 4, pad=np.float64(-1),
                          collate_fn=stack)
    last = view[-1]
    assert last.tolist() == [8.0, 9.0, -1.0, -1.0]
    # Without collate_fn, the padded last batch is the view that stack reads fused.
    padded = seqtools.batch(seqtools.gather(x, np.arange(10)), 4, pad=-1.0)[-1]
    assert list(padded) == [8.0, 9.0, -1.0, -1.0]
    assert type(fuse(padded, np.arange(4, dtype=np.int64))) is Rows


# -- errors ----------------------------------------------------------------------------


def test_out_of_range_index_names_it():
    data = seqtools.collate([np.zeros((5, 2)), np.arange(5)])
    with pytest.raises(IndexError, match="position 2"):
        stack(seqtools.gather(data, [0, 1, 5]))
    # the kernel checks every index itself, before anything is written
    out = np.full((3, 2), 7.0)
    with pytest.raises(IndexError, match="row 1 of the batch: index 9"):
        _testing.gather_rows([((np.zeros((5, 2)),), None, np.array([0, 9, 1]), out)])
    assert (out == 7).all()
    with pytest.raises(IndexError, match="row 0 of the batch: source 3"):
        _testing.gather_rows([((np.zeros((5, 2)),), np.array([3]), np.array([0]),
                             np.empty((1, 2)))])


def test_kernel_argument_checks():
    src = np.zeros((4, 3))
    with pytest.raises(ValueError, match="dtype"):
        _testing.gather_rows([((src,), None, np.array([0]), np.empty((1, 3), "f4"))])
    with pytest.raises(ValueError, match="bytes"):
        _testing.gather_rows([((src,), None, np.array([0]), np.empty((2, 3)))])
    with pytest.raises(ValueError, match="rows of shape"):
        _testing.gather_rows([((src, np.zeros((2, 4))), np.array([0]), np.array([0]),
                             np.empty((1, 3)))])
    with pytest.raises(TypeError, match="int64"):
        _testing.gather_rows([((src,), None, np.array([0], np.int32),
                                np.empty((1, 3)))])
    with pytest.raises(ValueError, match="read-only"):
        ro = np.empty((1, 3))
        ro.flags.writeable = False
        _testing.gather_rows([((src,), None, np.array([0]), ro)])


def test_mismatch_in_a_fallback_part_names_the_field():
    f = seqtools.smap(lambda i: np.zeros(2 if i != 3 else 3), range(5))
    view = seqtools.collate([np.arange(5.0), f])
    with pytest.raises(ValueError, match=r"sample\[3\]\[1\]: expected shape \(2,\)"):
        stack(view)


def test_errors_of_user_code_and_out_untouched():
    def f(i):
        if i == 2:
            raise KeyError("boom")
        return float(i)

    view = seqtools.collate([np.arange(4.0), seqtools.smap(f, range(4))])
    out = (np.full(4, 9.0), np.full(4, 9.0))
    with pytest.raises(seqtools.EvaluationError, match="boom"):
        stack(view, out=out)
    assert (out[0] == 9).all() and (out[1] == 9).all()


def test_empty_and_infinite():
    with pytest.raises(ValueError, match="empty"):
        stack(seqtools.gather(np.zeros(3), []))
    with pytest.raises(TypeError, match="infinite"):
        stack(seqtools.repeat(np.zeros(3)))


def test_doctests():
    for mod in (seqtools.batching.stacking, seqtools.batching.shape,
                seqtools.views.core):
        result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
        assert result.failed == 0, mod.__name__


# -- rows prepared on demand (the hook of remote arrays) -------------------------------


class OnDemand(seqtools.View):
    """Rows of ``data`` that become readable when prepared: reads of rows not
    prepared yet are caught (the array handed out is a copy with those rows
    poisoned), every preparation is recorded, and ``refuse`` makes it fail."""

    __slots__ = ("data", "ready", "calls", "refuse", "array")

    def __init__(self, data):
        seqtools.View.__init__(self, len(data))
        self.data = data
        self.ready = np.zeros(len(data), bool)
        self.calls = []
        self.refuse = False
        self.array = None

    @property
    def _rows_spec(self):
        return self.data.dtype, self.data.shape[1:]

    def _get(self, i):
        return self.data[i]

    def _prepare_rows(self, local, part, j):
        rows = local if part is None else local[part == j]
        self.calls.append(np.sort(rows))
        if self.refuse:
            return None
        self.ready[rows] = True
        if len(rows) or self.array is None:
            # a new array when rows become readable, poison where they are not
            ready = self.ready.reshape((-1,) + (1,) * (self.data.ndim - 1))
            self.array = np.where(ready, self.data, -1).astype(self.data.dtype)
        return self.array


@pytest.mark.parametrize("compiled", [True, False])
def test_rows_prepared_on_demand(rng, compiled):
    """Views that prepare their rows are Rows sources of concatenations and
    compiled programs: each batch prepares exactly its rows of each of them
    before the copy, results match the per-item path; a view that cannot
    prepare is read through the fallback, still right."""
    a = rng.integers(0, 100, (30, 3)).astype(np.int32)
    b = rng.integers(0, 100, (20, 3)).astype(np.int32)
    c = rng.integers(0, 100, (25, 3)).astype(np.int32)
    lb, lc = OnDemand(b), OnDemand(c)
    cat = seqtools.concatenate([a, lb, lc])
    ref = np.concatenate([a, b, c])
    labels = np.arange(75)
    view = seqtools.collate([cat, labels]) if compiled else cat
    for round_ in range(6):
        idx = rng.integers(0, 75, 16)
        lb.calls.clear()
        lc.calls.clear()
        lb.refuse = round_ == 4
        got = stack(seqtools.gather(view, idx))
        want = (ref[idx], labels[idx]) if compiled else ref[idx]
        assert_same(got, want)
        mine_b = np.sort(idx[(idx >= 30) & (idx < 50)] - 30)
        assert any(np.array_equal(c_, mine_b) for c_ in lb.calls)
        if not lb.refuse:  # (refused, the batch is read without preparing)
            mine_c = np.sort(idx[idx >= 50] - 50)
            assert any(np.array_equal(c_, mine_c) for c_ in lc.calls)
    # through the native copy threads of a thread loader (copy jobs)
    lb.refuse = False
    idx = rng.integers(0, 75, 64)
    batches = seqtools.batch(seqtools.gather(view, idx), 16, collate_fn=stack)
    with seqtools.prefetch(batches, nworkers=2, method="thread") as loaded:
        for k in range(4):
            want = (ref[idx[16 * k:16 * k + 16]], labels[idx[16 * k:16 * k + 16]])
            assert_same(loaded[k], want if compiled else want[0])


def test_many_parts_prepared_are_asked_only_when_read(rng):
    """Past a few parts, a compiled read asks only the parts a batch reads (a
    batch costs what it reads, not what the dataset holds); results match."""
    chunks = [rng.integers(0, 100, (10, 2)).astype(np.int16) for _ in range(12)]
    parts = [OnDemand(c) for c in chunks]
    view = seqtools.collate([seqtools.concatenate(parts), np.arange(120)])
    ref = np.concatenate(chunks)
    stack(seqtools.gather(view, [0]))  # the first read asks every part once
    for _ in range(5):
        idx = rng.integers(0, 40, 8)  # rows of parts 0 to 3 only
        for p in parts:
            p.calls.clear()
        assert_same(stack(seqtools.gather(view, idx)), (ref[idx], idx))
        assert all(p.calls for p in parts[:4] if np.any(idx // 10 == parts.index(p)))
        assert not any(p.calls for p in parts[4:])
