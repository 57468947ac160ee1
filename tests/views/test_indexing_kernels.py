"""The ``_indexing`` kernels against pure-Python references (hypothesis).

Hypothesis runs derandomized (a fixed seed), so a failure replays identically.
"""

import bisect
import collections
import itertools
import pickle

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from seqtools.views import _indexing

kernel_settings = settings(max_examples=100, deadline=None, derandomize=True)

SSIZE_MAX = 2**63 - 1
lengths = st.integers(0, 40)
any_int = st.one_of(
    st.integers(-60, 60),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([2**63, -(2**63) - 1, 2**70, -(2**70)]),
)
slice_bound = st.one_of(
    st.none(), st.integers(-60, 60), st.sampled_from([2**70, -(2**70)])
)
slice_step = st.one_of(
    st.none(),
    st.integers(-7, 7).filter(bool),
    st.sampled_from([2**62, -(2**62), 2**70, -(2**70)]),
)
slices = st.builds(slice, slice_bound, slice_bound, slice_step)


# -- pure-Python references ----------------------------------------------------------


def py_normalize(key, n):
    """List semantics (``n`` None: infinite, non-negative keys only)."""
    if n is None:
        if key < 0:
            raise IndexError
        if key > SSIZE_MAX:
            raise IndexError
        return key
    return range(n).index(range(n)[key])


def py_slice_items(s, n):
    return list(range(n)[s])


def py_as_indices(values, n):
    """Wrapped indices, or ('IndexError', position) of the first bad one."""
    out = []
    for k, v in enumerate(values):
        v = int(v)
        if n is None:
            if v < 0 or v > SSIZE_MAX:
                return ("IndexError", k)
        elif not -n <= v < n:
            return ("IndexError", k)
        out.append(v % n if n else v)
    return out


def py_locate(lengths, i):
    offsets = [0, *itertools.accumulate(lengths)]
    p = bisect.bisect_right(offsets, i) - 1
    p = min(p, len(lengths) - 1)
    return p, i - offsets[p]


# -- normalize_index -----------------------------------------------------------------


@kernel_settings
@given(key=any_int, n=st.one_of(st.none(), lengths))
@example(key=0, n=0)
@example(key=-1, n=None)
def test_normalize_index_matches_lists(key, n):
    try:
        expected = py_normalize(key, n)
    except IndexError:
        with pytest.raises(IndexError):
            _indexing.normalize_index(key, n)
    else:
        assert _indexing.normalize_index(key, n) == expected


@pytest.mark.parametrize("key", [1.0, "1", None, [1], slice(1), np.float64(1)])
def test_normalize_index_rejects_non_integers(key):
    with pytest.raises(TypeError, match="integers or slices"):
        _indexing.normalize_index(key, 10)


@pytest.mark.parametrize(
    "key", [np.int8(-2), np.uint64(3), np.int64(7), np.array(4), True]
)
def test_normalize_index_accepts_integer_likes(key):
    assert _indexing.normalize_index(key, 8) == list(range(8))[key]


def test_normalize_index_rejects_negative_length():
    with pytest.raises(ValueError):
        _indexing.normalize_index(0, -1)


# -- slice_range and compose_slice ---------------------------------------------------


@kernel_settings
@given(s=slices, n=lengths)
@example(s=slice(None, None, -1), n=0)
@example(s=slice(2**70, -(2**70), -(2**70)), n=5)
def test_slice_range_matches_lists(s, n):
    start, step, length = _indexing.slice_range(s, n)
    assert [start + k * step for k in range(length)] == py_slice_items(s, n)
    assert length > 1 or step == 1


@kernel_settings
@given(
    start=st.one_of(st.none(), st.integers(0, 50)),
    stop=st.one_of(st.none(), st.integers(0, 50)),
    step=st.one_of(st.none(), st.integers(1, 7)),
)
def test_slice_range_infinite(start, stop, step):
    s = slice(start, stop, step)
    got_start, got_step, length = _indexing.slice_range(s, None)
    if stop is None:
        assert length is None
        assert (got_start, got_step) == (start or 0, step or 1)
    else:
        expected = list(range(start or 0, stop, step or 1))
        assert [got_start + k * got_step for k in range(length)] == expected


@pytest.mark.parametrize(
    "s, exc",
    [
        (slice(None, None, 0), ValueError),
        (slice(None, None, -1), ValueError),
        (slice(-1, None), IndexError),
        (slice(0, -3), IndexError),
        (slice(0.5, None), TypeError),
        (slice("a", None), TypeError),
    ],
)
def test_slice_range_infinite_errors(s, exc):
    with pytest.raises(exc):
        _indexing.slice_range(s, None)


def test_slice_range_errors():
    with pytest.raises(ValueError, match="zero"):
        _indexing.slice_range(slice(None, None, 0), 5)
    with pytest.raises(TypeError):
        _indexing.slice_range(slice(1.5, None), 5)
    with pytest.raises(TypeError, match="expected a slice"):
        _indexing.slice_range(3, 5)


@kernel_settings
@given(s1=slices, s2=slices, n=lengths)
@example(s1=slice(None, None, -1), s2=slice(None, None, -1), n=7)
def test_compose_slice_matches_lists(s1, s2, n):
    start1, step1, len1 = _indexing.slice_range(s1, n)
    start2, step2, len2 = _indexing.slice_range(s2, len1)
    start, step = _indexing.compose_slice(start1, step1, start2, step2)
    expected = list(range(n))[s1][s2]
    assert [start + k * step for k in range(len2)] == expected


def test_compose_slice_overflow_and_zero():
    with pytest.raises(OverflowError):
        _indexing.compose_slice(0, 2**40, 0, 2**40)
    with pytest.raises(OverflowError):
        _indexing.compose_slice(2**62, 2**40, 2**30, 1)
    with pytest.raises(ValueError):
        _indexing.compose_slice(0, 0, 0, 1)


# -- as_indices ----------------------------------------------------------------------

int_dtypes = st.sampled_from(
    [
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        ">i4",
        ">u8",
    ]
)


@kernel_settings
@given(
    data=st.data(),
    dtype=int_dtypes,
    n=st.one_of(st.none(), lengths),
    size=st.integers(0, 30),
)
def test_as_indices_matches_reference(data, dtype, n, size):
    info = np.iinfo(np.dtype(dtype))
    lo, hi = int(info.min), int(info.max)
    values = data.draw(
        st.lists(
            st.one_of(st.integers(max(lo, -45), min(hi, 45)), st.integers(lo, hi)),
            min_size=size,
            max_size=size,
        )
    )
    arr = np.array(values, dtype=dtype)
    expected = py_as_indices(values, n)
    if isinstance(expected, tuple):
        with pytest.raises(IndexError, match=f"position {expected[1]} "):
            _indexing.as_indices(arr, n)
        return
    out = _indexing.as_indices(arr, n)
    assert out.dtype == np.int64 and not out.flags.writeable
    assert out.tolist() == expected


@kernel_settings
@given(values=st.lists(any_int, max_size=20), n=st.one_of(st.none(), lengths))
def test_as_indices_from_lists(values, n):
    expected = py_as_indices(values, n)
    if isinstance(expected, tuple):
        with pytest.raises(IndexError, match=f"position {expected[1]} "):
            _indexing.as_indices(values, n)
    else:
        assert _indexing.as_indices(values, n).tolist() == expected


def test_as_indices_strided_and_range():
    arr = np.arange(20, dtype=np.int32)[::-3]
    assert _indexing.as_indices(arr, 20).tolist() == arr.tolist()
    assert _indexing.as_indices(range(5, -6, -2), 6).tolist() == [5, 3, 1, 5, 3, 1]
    big = np.arange(10_000) % 7 - 7
    assert _indexing.as_indices(big, 7).tolist() == (big + 7).tolist()


def test_as_indices_copies():
    src = np.array([1, 2])
    out = _indexing.as_indices(src, 3)
    src[0] = 0
    assert out.tolist() == [1, 2]


@pytest.mark.parametrize(
    "bad, exc, match",
    [
        ([1, 2.0], TypeError, "float 2.0 at position 1"),
        (["a"], TypeError, "position 0"),
        (np.array([1.0]), TypeError, "dtype float64"),
        (np.array([True, False]), TypeError, "boolean masks"),
        ([True, False], TypeError, "boolean masks"),
        (np.zeros((2, 2), dtype=int), ValueError, "one-dimensional"),
        ([[1, 2]], ValueError, "one-dimensional"),
        (np.array([2**63], dtype=np.uint64), IndexError, "position 0"),
        ([0, 2**70], IndexError, "index 1180591620717411303424 at position 1"),
        ([0, 1, 9], IndexError, "index 9 at position 2"),
        (np.array([0, -4]), IndexError, "index -4 at position 1"),
    ],
)
def test_as_indices_errors(bad, exc, match):
    with pytest.raises(exc, match=match):
        _indexing.as_indices(bad, 3)


def test_as_indices_empty():
    for empty in ([], (), np.array([]), np.empty(0, dtype=np.uint8)):
        out = _indexing.as_indices(empty, 0)
        assert out.dtype == np.int64 and out.shape == (0,)


# -- affine_indices and compose_indices ----------------------------------------------

idx_arrays = st.lists(st.integers(0, 1000), max_size=30).map(
    lambda v: np.array(v, dtype=np.int64)
)


@kernel_settings
@given(idx=idx_arrays, start=st.integers(-(2**40), 2**40), step=st.integers(-50, 50))
def test_affine_indices_matches_reference(idx, start, step):
    out = _indexing.affine_indices(idx, start, step)
    assert out.tolist() == [start + int(i) * step for i in idx]
    assert not out.flags.writeable


@kernel_settings
@given(idx=idx_arrays, step=st.sampled_from([2**62, -(2**62), 2**63 - 1]))
def test_affine_indices_overflow(idx, step):
    results = [int(i) * step for i in idx]
    bad = [k for k, r in enumerate(results) if not -(2**63) <= r < 2**63]
    if bad:
        with pytest.raises(OverflowError, match=f"position {bad[0]} "):
            _indexing.affine_indices(idx, 0, step)
    else:
        assert _indexing.affine_indices(idx, 0, step).tolist() == results


def test_affine_indices_strided_input():
    idx = np.arange(10, dtype=np.int64)[::-2]
    assert _indexing.affine_indices(idx, 1, 3).tolist() == [1 + 3 * i for i in idx]


@kernel_settings
@given(
    inner=st.lists(st.integers(-5, 10**6), max_size=20),
    outer=st.lists(st.integers(-3, 25), max_size=20),
)
def test_compose_indices_matches_reference(inner, outer):
    a, b = np.array(inner, dtype=np.int64), np.array(outer, dtype=np.int64)
    bad = [k for k, j in enumerate(outer) if not 0 <= j < len(inner)]
    if bad:
        with pytest.raises(IndexError, match=f"position {bad[0]} "):
            _indexing.compose_indices(a, b)
    else:
        assert _indexing.compose_indices(a, b).tolist() == [inner[j] for j in outer]


@pytest.mark.parametrize(
    "args",
    [
        ([1, 2], np.array([0])),
        (np.array([1], dtype=np.int32), np.array([0])),
        (np.zeros((1, 1), dtype=np.int64), np.array([0])),
    ],
)
def test_index_kernels_check_arguments(args):
    with pytest.raises(TypeError, match="1-D int64"):
        _indexing.compose_indices(*args)
    with pytest.raises(TypeError, match="1-D int64"):
        _indexing.affine_indices(args[0], 0, 1)


def test_as_indices_reads_any_integer_layout():
    values = [3, -1, 0, 7]
    raw = np.zeros(4 * 8 + 1, dtype=np.uint8)
    unaligned = raw[1:].view(np.int64)  # misaligned by one byte
    unaligned[:] = values
    assert not unaligned.flags.aligned
    for arr in (
        unaligned,
        np.array(values, dtype=">i4"),
        np.array(values, dtype=np.int16)[::-1],
        np.array(values * 2, dtype=np.int64)[::2],
        np.array([3, 1, 0, 7], dtype=np.uint8),
    ):
        out = _indexing.as_indices(arr, 8)
        assert out.tolist() == [v % 8 for v in arr.tolist()]
        assert out.dtype == np.int64 and not out.flags.writeable
        assert out.flags.c_contiguous


# -- IndexTable ----------------------------------------------------------------------


@kernel_settings
@given(values=st.lists(st.integers(0, 100), max_size=12), key=any_int)
def test_index_table_at_matches_lists(values, key):
    table = _indexing.IndexTable(np.array(values, dtype=np.int64))
    assert len(table) == len(values)
    try:
        expected = values[key]
    except IndexError:
        with pytest.raises(IndexError):
            table.at(key)
    else:
        assert table.at(key) == expected
        assert type(table.at(key)) is int


def test_index_table_checks():
    table = _indexing.IndexTable(np.arange(6, dtype=np.int64)[::-2])
    assert [table.at(k) for k in range(3)] == [5, 3, 1]
    assert table.at(np.int16(-1)) == 1
    for key in (1.0, "0", None):
        with pytest.raises(TypeError, match="integers or slices"):
            table.at(key)
    with pytest.raises(TypeError):
        _indexing.IndexTable(np.arange(3, dtype=np.int32))
    assert pickle.loads(pickle.dumps(table)).array.tolist() == [5, 3, 1]


# -- OffsetTable ---------------------------------------------------------------------

part_lengths = st.lists(st.integers(0, 6), max_size=8)


@kernel_settings
@given(parts=part_lengths, data=st.data())
@example(parts=[], data=None)
@example(parts=[0, 0, 3, 0], data=None)
def test_offset_table_matches_reference(parts, data):
    table = _indexing.OffsetTable(parts)
    total = sum(parts)
    assert table.offsets.tolist() == [0, *itertools.accumulate(parts)]
    assert table.total == total and table.nparts == len(parts)
    for i in range(total):
        assert table.locate(i) == py_locate(parts, i)
    for i in (-1, total, 2**40):
        with pytest.raises(IndexError):
            table.locate(i)
    if data is None or total == 0:
        return
    dtype = data.draw(st.sampled_from(["int8", "uint16", "int32", "int64", "uint64"]))
    idx = np.array(
        data.draw(st.lists(st.integers(0, min(total - 1, 127)), max_size=20)),
        dtype=dtype,
    )
    p, local = table.locate_many(idx)
    assert list(zip(p.tolist(), local.tolist())) == [
        py_locate(parts, int(i)) for i in idx
    ]


def test_offset_table_errors():
    table = _indexing.OffsetTable([3, 0, 2])
    with pytest.raises(IndexError, match="index 5 at position 1"):
        table.locate_many([0, 5])
    with pytest.raises(IndexError, match="index -1 at position 0"):
        table.locate_many(np.array([-1]))
    with pytest.raises(IndexError, match="position 0"):
        table.locate_many(np.array([2**64 - 1], dtype=np.uint64))
    with pytest.raises(TypeError):
        table.locate_many(np.array([1.0]))
    with pytest.raises(ValueError, match="part 1"):
        _indexing.OffsetTable([1, -2])
    with pytest.raises(ValueError, match="part 1"):
        _indexing.OffsetTable([2**62, 2**62])
    with pytest.raises(TypeError):
        _indexing.OffsetTable([1.5])
    p, local = table.locate_many(np.empty(0, dtype=np.int64))
    assert p.shape == local.shape == (0,)
    assert pickle.loads(pickle.dumps(table)).offsets.tolist() == [0, 3, 3, 5]


def test_offset_table_large_releases_gil_path():
    lengths = np.full(100, 1000)
    table = _indexing.OffsetTable(lengths)
    idx = np.arange(0, 100_000, 7)
    p, local = table.locate_many(idx)
    assert (p == idx // 1000).all() and (local == idx % 1000).all()


# -- readers -------------------------------------------------------------------------


def expect_like(reference, key, read):
    """``read(key)`` returns ``reference[key]``, or raises the same error type."""
    try:
        expected = reference[key]
    except (IndexError, TypeError) as e:
        with pytest.raises(type(e)):
            read(key)
    else:
        assert read(key) == expected


def sequence_reader(items):
    return _indexing.SequenceReader(list(items))


@kernel_settings
@given(values=st.lists(st.integers(0, 9), max_size=12), key=any_int)
def test_take_reader_matches_lists(values, key):
    source = [f"s{i}" for i in range(10)]
    table = _indexing.IndexTable(np.array(values, dtype=np.int64))
    reader = _indexing.TakeReader(table, sequence_reader(source))
    reference = [source[v] for v in values]
    assert len(reader) == len(values)
    expect_like(reference, key, reader.__getitem__)
    assert list(reader) == reference
    if 0 <= key < len(values):
        assert reader.read(key) == reference[key]
    else:
        with pytest.raises((IndexError, OverflowError)):
            reader.read(key)


@kernel_settings
@given(parts=part_lengths, key=any_int)
@example(parts=[], key=0)
@example(parts=[0, 3, 0, 0, 2], key=-1)
def test_parts_reader_matches_reference(parts, key):
    chunks, start = [], 0
    for size in parts:
        chunks.append([f"x{i}" for i in range(start, start + size)])
        start += size
    reference = [x for c in chunks for x in c]
    reader = _indexing.PartsReader(
        _indexing.OffsetTable(parts), [sequence_reader(c) for c in chunks]
    )
    assert len(reader) == start
    expect_like(reference, key, reader.__getitem__)
    assert list(reader) == reference


@kernel_settings
@given(s=slices, n=lengths, key=any_int)
def test_slice_reader_matches_lists(s, n, key):
    source = [f"s{i}" for i in range(n)]
    start, step, length = _indexing.slice_range(s, n)
    reader = _indexing.SliceReader(sequence_reader(source), start, step, length)
    expect_like(source[s], key, reader.__getitem__)
    assert list(reader) == source[s]


@kernel_settings
@given(n=lengths, m=st.integers(1, 4), key=any_int)
def test_tuple_reader_matches_zip(n, m, key):
    sources = [[f"s{j}.{i}" for i in range(n)] for j in range(m)]
    reference = list(zip(*sources))
    reader = _indexing.TupleReader([sequence_reader(s) for s in sources], n)
    expect_like(reference, key, reader.__getitem__)
    assert list(reader) == reference
    assert all(type(t) is tuple for t in reader)


def test_call_reader_and_infinite_readers():
    calls = []

    def func(i):
        calls.append(i)
        return -i

    reader = _indexing.CallReader(func, None)
    assert reader[10**12] == -(10**12) and reader.read(3) == -3
    with pytest.raises(IndexError, match="negative indices"):
        reader[-1]
    with pytest.raises(TypeError, match="infinite"):
        len(reader)
    it = iter(reader)
    assert [next(it) for _ in range(3)] == [0, -1, -2]
    assert it.__length_hint__() is NotImplemented
    assert _indexing.CallReader(func, 4)[-1] == -3


def test_sequence_reader_items_are_those_of_getitem(tmp_path):
    # Rows of 2-D+ arrays are prefetched as they are handed out: contiguous or
    # not, larger than the prefetch limit, empty, memory-mapped, subclasses.
    mm = np.lib.format.open_memmap(tmp_path / "m.npy", mode="w+", dtype=np.float32,
                                   shape=(5, 7))
    mm[:] = np.arange(35).reshape(5, 7)
    arrays = [
        np.arange(12.0).reshape(4, 3),
        np.asfortranarray(np.arange(12.0).reshape(4, 3)),
        np.arange(3 * 5000.0).reshape(3, 5000),
        np.arange(3 * 5000.0).reshape(3, 5000)[:, ::3],
        np.zeros((3, 0)),
        mm,
        np.load(tmp_path / "m.npy", mmap_mode="r"),
        np.arange(24, dtype=np.int16).reshape(4, 3, 2)[:, ::2],
        np.arange(4, dtype=">i4"),
        np.array([b"a\0", b"bc"]),
        np.array(["x", "yz"]),
        np.array([1, "a", None], dtype=object),
        np.zeros(3, dtype=[("a", "i4"), ("b", "f8", (2,))]),
        np.arange(3).astype("datetime64[D]"),
        np.array([True, False]),
    ]
    ro = np.arange(6.0).reshape(3, 2)
    ro.setflags(write=False)
    arrays.append(ro)
    for arr in arrays:
        reader = _indexing.SequenceReader(arr)
        for i in range(-len(arr), len(arr)):
            got, expected = reader[i], arr[i]
            assert type(got) is type(expected)
            if isinstance(expected, np.ndarray):
                assert got.dtype == expected.dtype and got.shape == expected.shape
                assert got.strides == expected.strides
                assert got.flags.writeable == expected.flags.writeable
                assert np.shares_memory(got, arr) or got.size == 0
                assert got.base is expected.base
                np.testing.assert_array_equal(got, expected)
            else:
                assert repr(got) == repr(expected)
    for seq in ([1, 2], (3, 4), range(5, 9, 2), "ab"):
        assert list(_indexing.SequenceReader(seq)) == list(seq)


def test_reader_iterator_moves_on_after_an_error_like_map():
    def func(i):
        if i == 1:
            raise KeyError(i)
        return i

    it = iter(_indexing.CallReader(func, 3))
    assert it.__length_hint__() == 3
    assert next(it) == 0
    with pytest.raises(KeyError):
        next(it)
    assert list(it) == [2]


def test_readers_check_arguments():
    table = _indexing.OffsetTable([1, 2])
    with pytest.raises(ValueError, match="expected 2 readers"):
        _indexing.PartsReader(table, [sequence_reader([1])])
    with pytest.raises(TypeError, match="Reader"):
        _indexing.PartsReader(table, [sequence_reader([1]), [2, 3]])
    with pytest.raises(TypeError, match="callable"):
        _indexing.CallReader(3, 1)
    with pytest.raises(ValueError):
        _indexing.CallReader(len, -1)
    with pytest.raises(TypeError, match="sequence"):
        _indexing.SequenceReader({1: 2})
    with pytest.raises(ValueError, match="at least one"):
        _indexing.TupleReader([], 0)
    with pytest.raises(TypeError, match="Reader"):
        _indexing.TupleReader([len], 0)
    with pytest.raises(TypeError):
        _indexing.TakeReader(np.arange(2), sequence_reader([1]))
    with pytest.raises(OverflowError):
        _indexing.SliceReader(sequence_reader([1]), 2**62, 2**62, 3)
    with pytest.raises(ValueError, match="length"):
        _indexing.SliceReader(sequence_reader([1]), 0, 1, -1)
    reader = _indexing.TupleReader([sequence_reader([1, 2])], 2)
    for key in (1.0, "0", None):
        with pytest.raises(TypeError, match="integers or slices"):
            reader[key]
    with pytest.raises(IndexError, match="out of range"):
        reader.read(2)


# -- permutation: Fisher-Yates with Lemire's bounded draws ----------------------------


def _uint32_draws(bit_generator):
    """numpy's ``next_uint32`` of a PCG64, in Python: each 64-bit output gives its
    low half, then its high half."""
    while True:
        x = int(bit_generator.random_raw())
        yield x & 0xFFFFFFFF
        yield x >> 32


def reference_permutation(n, bit_generator, wide=2**32 - 1):
    """The documented algorithm (seqtools.loaders.epochs.epoch_order), draw by draw."""
    a = list(range(n))
    draws32 = _uint32_draws(bit_generator)
    for i in range(n - 1, 0, -1):
        s = i + 1
        bits, draw = (64, lambda: int(bit_generator.random_raw())) if i >= wide else (
            32, lambda: next(draws32))
        m = draw() * s
        reject = (2**bits - s) % s  # 2**bits mod s
        while m % 2**bits < reject:
            m = draw() * s
        j = m >> bits
        a[i], a[j] = a[j], a[i]
    return a


@kernel_settings
@given(st.integers(0, 300), st.integers(0, 2**64 - 1),
       st.sampled_from([1, 7, 2**32 - 1]))
def test_permutation_is_the_documented_algorithm(n, seed, wide):
    got = _indexing.permutation(n, np.random.PCG64(seed), wide)
    assert got.dtype == np.int64 and got.flags.c_contiguous
    assert got.tolist() == reference_permutation(n, np.random.PCG64(seed), wide)


@pytest.mark.parametrize("wide", [1, 2**32 - 1])  # 64-bit draws, 32-bit draws
def test_permutation_is_uniform(wide):
    # 4! orders of 4 items from 48,000 generators: each about 2,000 times. The
    # seeds are fixed, so are the counts; a bias of a few percent (a modulo
    # instead of the rejection, an off-by-one bound) shows far outside 6%.
    counts = collections.Counter(
        tuple(_indexing.permutation(4, np.random.PCG64(s), wide))
        for s in range(48_000))
    assert len(counts) == 24
    assert all(abs(c - 2000) < 120 for c in counts.values()), sorted(counts.values())


def test_permutation_rejects_bad_arguments():
    with pytest.raises(ValueError, match="n must be >= 0"):
        _indexing.permutation(-1, np.random.PCG64(0))
    with pytest.raises(ValueError, match="wide must be"):
        _indexing.permutation(3, np.random.PCG64(0), 0)
    with pytest.raises(AttributeError):
        _indexing.permutation(3, np.random.default_rng(0))  # a Generator: no capsule
