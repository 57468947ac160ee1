"""Tests of seqtools.batching.stacking: every result is compared with np.stack per
field.

The reference (`reference_stack`) walks the structure in Python and calls
``np.stack`` on each field; results must match it bit for bit, with the same
structure, shape and dtype, and be C-contiguous.
"""

import array
import collections
import doctest
import pickle
import re
from multiprocessing import shared_memory

import numpy as np
import pytest
from fused_helpers import assert_same
from hypothesis import given, settings
from hypothesis import strategies as st

import seqtools
import seqtools.batching.stacking
from seqtools import stack
from seqtools.batching.stacking import ALIGNMENT, plan

DTYPES = [
    np.bool_,
    np.int8,
    np.int16,
    np.int32,
    np.int64,
    np.uint8,
    np.uint16,
    np.uint32,
    np.uint64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
    np.complex128,
    np.dtype(">f8"),  # non-native byte order: copied as bytes, like numpy does
    np.dtype("S3"),  # itemsize 3: the kernel's generic memcpy path
    np.dtype([("a", "<i2"), ("b", "<f4"), ("c", "u1")]),  # packed, itemsize 7
]
SHAPES = [(), (1,), (5,), (0,), (3, 4), (2, 0, 3), (2, 3, 4), (1, 2, 1, 3, 2)]
LAYOUTS = ["c", "step", "reverse", "transpose", "fortran", "outer", "unaligned"]

Point = collections.namedtuple("Point", "x y")


# -- reference and helpers ------------------------------------------------------------


def reference_stack(samples):
    first = samples[0]
    if isinstance(first, tuple):
        items = [reference_stack([s[k] for s in samples]) for k in range(len(first))]
        return type(first)._make(items) if hasattr(first, "_fields") else tuple(items)
    if isinstance(first, list):
        return [reference_stack([s[k] for s in samples]) for k in range(len(first))]
    if isinstance(first, dict):
        return {key: reference_stack([s[key] for s in samples]) for key in first}
    arrays = [np.asarray(s) for s in samples]
    # np.stack converts non-native byte orders to native; stack() keeps the
    # samples' dtype exactly, so the reference is cast back (a lossless byteswap).
    return np.stack(arrays).astype(arrays[0].dtype, copy=False)


def random_array(rng, shape, dtype):
    dtype = np.dtype(dtype)
    if dtype == np.bool_:
        return rng.integers(0, 2, size=shape).astype(bool)
    n = int(np.prod(shape)) * dtype.itemsize
    raw = rng.integers(0, 256, size=n, dtype=np.uint8)
    return raw.view(dtype).reshape(shape)


def with_layout(a, layout, rng):
    """Return an array equal to a, with the memory layout named by `layout`."""
    if a.ndim == 0 or layout == "c":
        return a.copy()
    if layout == "step":  # every other element of the last axis
        big = np.empty(a.shape[:-1] + (2 * a.shape[-1],), a.dtype)
        big[..., ::2] = a
        return big[..., ::2]
    if layout == "reverse":
        return np.ascontiguousarray(a[::-1])[::-1]
    if layout == "transpose":
        return np.ascontiguousarray(a.T).T
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "outer":  # rows 3 apart, contiguous within a row
        big = np.empty((3 * a.shape[0],) + a.shape[1:], a.dtype)
        big[::3] = a
        return big[::3]
    if layout == "unaligned":  # odd byte offset and strides: memcpy must not assume
        raw = np.empty(a.nbytes * 2 + 1, np.uint8)[1:]
        big = raw.view(a.dtype).reshape(a.shape[:-1] + (2 * a.shape[-1],))
        big[..., ::2] = a
        return big[..., ::2]
    raise AssertionError(layout)


# -- leaves: dtypes, shapes and layouts -----------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_leaf_dtypes_shapes_layouts(rng, dtype, shape):
    n = 7
    rows = [random_array(rng, shape, dtype) for _ in range(n)]
    samples = [
        with_layout(r, LAYOUTS[i % len(LAYOUTS)], rng) for i, r in enumerate(rows)
    ]
    if len(shape) >= 1 and shape[-1] > 1 and 0 not in shape:
        assert not all(s.flags.c_contiguous for s in samples)
    assert_same(stack(samples), reference_stack(rows))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize(
    "dtype", [np.uint8, np.int16, np.float32, np.float64, np.complex128, "S3"], ids=str
)
def test_each_layout_alone(rng, layout, dtype):
    rows = [random_array(rng, (3, 4, 5), dtype) for _ in range(4)]
    assert_same(stack([with_layout(r, layout, rng) for r in rows]), np.stack(rows))


def test_many_dimensions(rng):
    shape = (2, 1, 3, 1, 2, 2, 1, 3, 2, 2)
    rows = [random_array(rng, shape, np.int32) for _ in range(3)]
    samples = [r.transpose(np.roll(np.arange(r.ndim), 3)) for r in rows]
    assert_same(stack(samples), np.stack(samples))
    samples = [r[:, :, ::2, :, ::-1] for r in rows]
    assert_same(stack(samples), np.stack(samples))


def test_numpy_scalars(rng):
    for dtype in DTYPES:
        if np.dtype(dtype).kind in "SU":
            # A bytes/str scalar drops trailing NULs, hence its itemsize: such
            # samples legitimately differ in dtype (tested as mismatches elsewhere).
            continue
        samples = [random_array(rng, (), dtype)[()] for _ in range(5)]
        assert all(isinstance(s, np.generic) for s in samples)
        assert_same(stack(samples), reference_stack(samples))


@pytest.mark.parametrize(
    "values",
    [
        [True, False, True],
        [0, -1, 2**63 - 1, -(2**63)],
        [0.5, -0.0, float("nan"), float("inf")],
        [1j, 2 + 3j, complex("nan")],
    ],
    ids=["bool", "int", "float", "complex"],
)
def test_python_scalars_get_numpy_default_dtypes(values):
    result = stack(values)
    assert_same(result, np.array(values))
    assert result.dtype == np.asarray(values[0]).dtype


def test_python_and_numpy_scalars_of_one_dtype_mix():
    assert_same(stack([1.5, np.float64(2.5), np.array(3.5)]), np.array([1.5, 2.5, 3.5]))
    assert_same(stack([np.int64(1), 2]), np.array([1, 2]))


def test_buffer_protocol_leaves():
    samples = [array.array("f", [i, i + 1.5]) for i in range(3)]
    assert_same(stack(samples), np.stack([np.asarray(s) for s in samples]))
    samples = [memoryview(bytearray([i, 2 * i, 3])) for i in range(4)]
    assert_same(stack(samples), np.stack([np.asarray(s) for s in samples]))
    samples = [memoryview(np.arange(12.0).reshape(3, 4))[::2] for _ in range(2)]
    assert_same(stack(samples), np.stack([np.asarray(s) for s in samples]))


def test_strings_of_one_width():
    assert_same(stack(["ab", "cd"]), np.stack(["ab", "cd"]))
    assert_same(stack([b"ab", b"cd"]), np.stack([b"ab", b"cd"]))


def test_memory_mapped_inputs(rng, tmp_path):
    data = random_array(rng, (20, 6, 5), np.float32)
    labels = rng.integers(0, 10, size=20)
    np.save(tmp_path / "x.npy", data)
    mm = np.load(tmp_path / "x.npy", mmap_mode="r")
    assert isinstance(mm, np.memmap) and not mm.flags.writeable
    idx = rng.permutation(20)[:8]
    samples = [(mm[i], int(labels[i])) for i in idx]
    assert_same(stack(samples), (data[idx], labels[idx]))
    samples = [mm[i, ::2, ::-1] for i in idx]  # strided reads from the mapping
    assert_same(stack(samples), np.stack([data[i, ::2, ::-1] for i in idx]))
    samples = [mm[:, 1, i % 5] for i in idx]  # a column: stride 120 bytes
    assert_same(stack(samples), np.stack([data[:, 1, i % 5] for i in idx]))


def test_samples_sequence_types(rng):
    rows = random_array(rng, (6, 4), np.float64)
    assert_same(stack(rows), rows.copy())  # an array is a sequence of its rows
    assert_same(stack(tuple(rows)), rows.copy())

    class Seq(collections.abc.Sequence):
        def __len__(self):
            return 6

        def __getitem__(self, i):
            return rows[i]

    assert_same(stack(Seq()), rows.copy())


# -- structures -----------------------------------------------------------------------


def test_nested_structure(rng):
    samples = [
        (
            random_array(rng, (3, 2), np.float32).T,
            [i, {"label": float(i), "mask": random_array(rng, (4,), np.bool_)}],
            Point(np.int8(i), 1j * i),
            {"deep": ({"deeper": [random_array(rng, (2,), np.uint16)]},)},
        )
        for i in range(5)
    ]
    result = stack(samples)
    assert_same(result, reference_stack(samples))
    assert type(result[2]) is Point


def test_dict_keys_follow_the_first_sample():
    samples = [{"b": 1, "a": 2.0}, {"a": 3.0, "b": 4}]
    result = stack(samples)
    assert list(result) == ["b", "a"]
    assert_same(result, {"b": np.array([1, 4]), "a": np.array([2.0, 3.0])})


def test_container_subclasses_become_plain():
    samples = [collections.OrderedDict(a=1), collections.OrderedDict(a=2)]
    assert_same(stack(samples), {"a": np.array([1, 2])})


def test_empty_containers():
    assert stack([(), ()]) == ()
    assert stack([[], []]) == []
    assert stack([{}, {}]) == {}
    assert_same(stack([((), 1), ((), 2)]), ((), np.array([1, 2])))


# -- random structures (hypothesis) ---------------------------------------------------

leaf_specs = st.tuples(
    st.sampled_from(DTYPES + ["py_bool", "py_int", "py_float", "py_complex"]),
    st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple),
)
structures = st.recursive(
    leaf_specs,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda c: ("tuple", c)),
        st.lists(children, max_size=3).map(lambda c: ("list", c)),
        st.dictionaries(
            st.text("abcxyz", min_size=1, max_size=3), children, max_size=3
        ).map(lambda c: ("dict", c)),
    ),
    max_leaves=6,
)
PY_SCALARS = {
    "py_bool": lambda rng: bool(rng.integers(2)),
    "py_int": lambda rng: int(rng.integers(-(2**63), 2**63 - 1)),
    "py_float": lambda rng: float(rng.normal()),
    "py_complex": lambda rng: complex(rng.normal(), rng.normal()),
}


def make_sample(spec, rng):
    kind = spec[0]
    if kind in ("tuple", "list"):
        items = [make_sample(c, rng) for c in spec[1]]
        return tuple(items) if kind == "tuple" else items
    if kind == "dict":
        return {k: make_sample(c, rng) for k, c in spec[1].items()}
    dtype, shape = spec
    if isinstance(dtype, str):
        return PY_SCALARS[dtype](rng)
    a = random_array(rng, shape, dtype)
    # numpy scalar (always of native byte order); not of a flexible dtype, whose
    # scalars drop trailing NULs and so change their dtype (S3 -> S2)
    if (rng.random() < 0.2 and a.ndim == 0 and a.dtype.isnative
            and a.dtype.kind not in "SUV"):
        return a[()]
    return with_layout(a, LAYOUTS[rng.integers(len(LAYOUTS))], rng)


@settings(max_examples=200, deadline=None, database=None)
@given(spec=structures, n=st.integers(1, 6), seed=st.integers(0, 2**32 - 1))
def test_random_structures_match_reference(spec, n, seed):
    rng = np.random.default_rng(seed)
    samples = [make_sample(spec, rng) for _ in range(n)]
    expected = reference_stack(samples)
    assert_same(stack(samples), expected)
    p = plan(samples)
    block = bytearray(p.nbytes + 1)
    out = stack(samples, out=p.views(block))
    assert_same(out, expected)


# -- mismatches name the field and the sample -----------------------------------------


def labelled(n, bad=None, value=None):
    """Samples (image, [flag, {'label': float}]) with sample `bad`'s label replaced."""
    samples = [(np.zeros((2, 3)), [True, {"label": float(i)}]) for i in range(n)]
    if bad is not None:
        samples[bad][1][1]["label"] = value
    return samples


def test_shape_mismatch_message():
    samples = labelled(5, bad=3, value=np.zeros(2))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "sample[3][1][1]['label']: expected shape () and dtype float64 "
            "(as in sample[0][1][1]['label']), got shape (2,)"
        ),
    ):
        stack(samples)
    samples = [np.zeros((2, 3))] * 4 + [np.zeros((3, 2))]
    with pytest.raises(ValueError, match=re.escape("sample[4]: expected shape (2, 3)")):
        stack(samples)


def test_dtype_mismatch_message_suggests_a_cast():
    samples = labelled(5, bad=2, value=np.float32(1))
    with pytest.raises(ValueError) as info:
        stack(samples)
    msg = str(info.value)
    assert msg.startswith(
        "sample[2][1][1]['label']: expected shape () and dtype float64"
    )
    assert "got shape () and dtype float32" in msg
    assert "astype(np.float64)" in msg
    with pytest.raises(
        ValueError,
        match=re.escape(
            "sample[1]: expected shape () and dtype float64 (as in sample[0]), "
            "got int (shape () and dtype int64)"
        ),
    ):
        stack([1.0, 2])
    with pytest.raises(ValueError, match=re.escape("sample[1]: ")):
        stack([1, True])
    with pytest.raises(ValueError, match=re.escape("x.astype(np.dtype('>f8'))")):
        stack([np.zeros(2, ">f8"), np.zeros(2)])
    hint = "x.astype(np.dtype([('a', '<i2')]))"
    with pytest.raises(ValueError, match=re.escape(hint)):
        stack([np.zeros(2, [("a", "<i2")]), np.zeros(2, [("a", "<i4")])])


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (
            (np.zeros((2, 3)),),
            "sample[3]: expected a tuple of 2 items (as in sample[0]), "
            "got a tuple of 1 items",
        ),
        (
            [np.zeros((2, 3)), [True, {"label": 1.0}]],
            "sample[3]: expected a tuple of 2 items (as in sample[0]), got a list",
        ),
        (
            (np.zeros((2, 3)), [True, {}]),
            "sample[3][1][1]: expected a dict with keys "
            "['label'] (as in sample[0][1][1]), got a dict "
            "with keys []; missing keys ['label']",
        ),
        ((np.zeros((2, 3)), [True, {"label": 1.0, "x": 2}]), "unexpected keys ['x']"),
        (
            (np.zeros((2, 3)), [True, {"lbl": 1.0}]),
            "missing keys ['label']; unexpected keys ['lbl']",
        ),
        (
            (np.zeros((2, 3)), [True, 1.0]),
            "sample[3][1][1]: expected a dict with keys "
            "['label'] (as in sample[0][1][1]), got float",
        ),
        (
            ((np.zeros((2, 3)),), [True, {"label": 1.0}]),
            "sample[3][0]: expected an array or scalar of shape (2, 3) and dtype "
            "float64 (as in sample[0][0]), got a tuple of 1 items",
        ),
    ],
)
def test_structure_mismatch_messages(bad, message):
    samples = labelled(5)
    samples[3] = bad
    with pytest.raises(ValueError, match=re.escape(message)):
        stack(samples)


def test_object_fields_are_refused():
    with pytest.raises(
        TypeError, match=re.escape("sample[0]['name']: cannot stack NoneType values")
    ):
        stack([{"name": None}, {"name": None}])
    with pytest.raises(TypeError, match=r"sample\[0\]\[1\]: .*dtype is object"):
        stack([(1, np.array([object()]))])
    with pytest.raises(TypeError, match="holds Python references"):
        stack([np.zeros(2, dtype=[("a", "O")])])
    # An object in a later sample is a dtype mismatch against the first sample.
    with pytest.raises(
        ValueError, match=re.escape("sample[1]: expected shape () and dtype float64")
    ):
        stack([1.0, None])


def test_datetime_fields_are_refused():
    with pytest.raises(TypeError, match=re.escape("view('int64')")):
        stack([np.zeros(2, "M8[s]")] * 2)


def test_int_overflow_names_the_sample():
    with pytest.raises(
        ValueError,
        match=re.escape("sample[1]: int 9223372036854775808 does not fit in int64"),
    ):
        stack([1, 2**63])


def test_bad_samples_argument():
    with pytest.raises(ValueError, match="empty sequence of samples"):
        stack([])
    with pytest.raises(ValueError, match="empty sequence of samples"):
        plan(np.zeros((0, 3)))
    for bad in (5, "abc", {"a": 1}, (x for x in [1, 2])):
        with pytest.raises(TypeError, match="samples must be a sequence"):
            stack(bad)


# -- out= -----------------------------------------------------------------------------


def test_out_is_filled_in_place_and_returned(rng):
    samples = [(random_array(rng, (4, 3), np.float32).T, i) for i in range(6)]
    out = (np.full((6, 3, 4), -1, np.float32), np.zeros(6, np.int64))
    assert stack(samples, out=out) is out
    assert_same(out, reference_stack(samples))


def test_out_in_shared_memory(rng):
    samples = [
        {"x": random_array(rng, (5,), np.float64), "y": [i, float(i)]} for i in range(8)
    ]
    p = plan(samples)
    shm = shared_memory.SharedMemory(create=True, size=p.nbytes)
    try:
        out = p.views(shm.buf)
        assert stack(samples, out=out) is out
        assert_same(out, reference_stack(samples))
        copy = {"x": out["x"].copy(), "y": [a.copy() for a in out["y"]]}
        del out
    finally:
        shm.close()
        shm.unlink()
    assert_same(copy, reference_stack(samples))


def read_only(a):
    a.flags.writeable = False
    return a


def good_out(n=5):
    return (np.empty((n, 2, 3)), [np.empty(n, bool), {"label": np.empty(n)}])


@pytest.mark.parametrize(
    ("mutate", "error", "message"),
    [
        (
            lambda o: (o[0][:, :1], o[1]),
            ValueError,
            "out[0]: expected an array of shape (5, 2, 3) and dtype float64, got shape "
            "(5, 1, 3) and dtype float64",
        ),
        (lambda o: (o[0][:4], o[1]), ValueError, "got shape (4, 2, 3)"),
        (
            lambda o: (o[0], [o[1][0], {"label": np.zeros(5, np.float32)}]),
            ValueError,
            "out[1][1]['label']: expected an array of shape (5,) and dtype "
            "float64, got shape (5,) and dtype float32",
        ),
        (
            lambda o: (np.empty((3, 2, 5)).T, o[1]),
            ValueError,
            "out[0]: the output array must be C-contiguous",
        ),
        (
            lambda o: (np.empty((5, 2, 6))[:, :, ::2], o[1]),
            ValueError,
            "must be C-contiguous",
        ),
        (
            lambda o: (o[0], [read_only(o[1][0]), o[1][1]]),
            ValueError,
            "out[1][0]: the output array is read-only",
        ),
        (
            lambda o: [o[0], o[1]],
            ValueError,
            "out: expected a tuple of 2 items (as in the stacked result), got a list",
        ),
        (lambda o: (o[0], [o[1][0], {}]), ValueError, "missing keys ['label']"),
        (
            lambda o: (o[0], [o[1][0], {"label": [0.0] * 5}]),
            TypeError,
            "out[1][1]['label']: expected a numpy array of shape (5,) and dtype "
            "float64, got a list of 5 items",
        ),
        (
            lambda o: (memoryview(o[0]), o[1]),
            TypeError,
            "out[0]: expected a numpy array of shape (5, 2, 3) and dtype float64, "
            "got memoryview",
        ),
    ],
)
def test_out_misuse(mutate, error, message):
    samples = labelled(5)
    out = mutate(good_out())
    with pytest.raises(error, match=re.escape(message)):
        stack(samples, out=out)


def test_out_untouched_when_a_sample_fails():
    out = good_out()
    out[0][...] = 7.0
    samples = labelled(5, bad=4, value="oops")
    with pytest.raises(ValueError, match=re.escape("sample[4][1][1]['label']")):
        stack(samples, out=out)
    assert (out[0] == 7.0).all()


# -- plan -----------------------------------------------------------------------------


def test_plan_layout(rng):
    samples = [
        (
            random_array(rng, (3, 5), np.float32),
            {"id": i, "empty": np.zeros((0, 2))},
            np.uint8(i),
        )
        for i in range(10)
    ]
    p = plan(samples)
    assert p.length == 10
    assert p.structure == (0, {"id": 1, "empty": 2}, 3)
    assert [f.path for f in p.fields] == ["[0]", "[1]['id']", "[1]['empty']", "[2]"]
    assert [f.shape for f in p.fields] == [(10, 3, 5), (10,), (10, 0, 2), (10,)]
    assert [f.dtype for f in p.fields] == [np.float32, np.int64, np.float64, np.uint8]
    assert [f.nbytes for f in p.fields] == [600, 80, 0, 10]
    assert [f.offset for f in p.fields] == [0, 640, 768, 768]
    assert p.nbytes == 832
    for f in p.fields:
        assert f.offset % ALIGNMENT == 0
    assert p.nbytes % ALIGNMENT == 0
    assert pickle.loads(pickle.dumps(p)) == p
    assert plan(samples[:3]) != p
    out = p.views(np.zeros(p.nbytes, np.uint8))
    assert_same(stack(samples, out=out), reference_stack(samples))
    raw = np.zeros(p.nbytes + 64, np.uint8)
    out = p.views(raw)
    stack(samples, out=out)
    assert raw[p.nbytes :].sum() == 0  # nothing written past the plan
    assert raw[600:640].sum() == 0  # nor into the padding


def test_plan_of_a_single_leaf_and_namedtuples():
    p = plan([np.zeros(3)] * 4)
    assert p.structure == 0
    assert p.fields[0].path == ""
    p = plan([Point(1, 2.0)] * 2)
    assert p.structure == Point(0, 1) and type(p.structure) is Point
    out = p.views(bytearray(p.nbytes))
    assert type(out) is Point
    assert_same(
        stack([Point(1, 2.0)] * 2, out=out),
        Point(np.array([1, 1]), np.array([2.0, 2.0])),
    )


def test_plan_views_misuse():
    p = plan([np.zeros(3)] * 4)
    with pytest.raises(ValueError, match="holds 64 bytes, the plan needs 128"):
        p.views(bytearray(64))
    with pytest.raises(ValueError, match="writable"):
        p.views(bytes(128))
    with pytest.raises(ValueError, match="C-contiguous"):
        p.views(memoryview(bytearray(512))[::2])
    with pytest.raises(TypeError, match="object"):
        plan([object()])


# -- integration ----------------------------------------------------------------------


def test_is_exported():
    assert seqtools.stack is stack
    assert "stack" in seqtools.__all__


def test_as_collate_fn_of_batch(rng):
    if not hasattr(seqtools, "batch"):
        pytest.skip("seqtools.batch is not available yet")
    data = [(random_array(rng, (4,), np.float32), i) for i in range(10)]
    batches = seqtools.batch(data, 4, collate_fn=stack)
    assert_same(batches[1], reference_stack(data[4:8]))


def test_docstring_examples():
    result = doctest.testmod(seqtools.batching.stacking, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# -- fused reads: stack(view, out=...), minibatches ---------------------------------


def test_out_is_checked_and_filled():
    view = seqtools.collate([np.arange(6.0).reshape(3, 2), np.arange(3)])
    out = (np.empty((3, 2)), np.empty(3, np.int64))
    assert stack(view, out=out) is out
    assert out[0].tolist() == [[0, 1], [2, 3], [4, 5]] and out[1].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="shape"):
        stack(view, out=(np.empty((3, 3)), np.empty(3, np.int64)))
