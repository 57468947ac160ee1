"""seqtools.loaders._transport: results written into ring blocks by send() and
rebuilt by decode(), in one process (the cross-process paths are in test_api.py, but
for the limits of csrc/sq_limits.h, at the end).

Each test sends through a real ring (shared memory, the C allocator) and checks the
rebuilt result against the original: values, dtypes, shapes, structure types, and
that arrays view the ring (zero-copy) and keep their blocks until dropped.
"""

import collections
import functools
import gc
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import seqtools
from seqtools import _testing
from seqtools.loaders import _transport
from seqtools.loaders._ring import Ring

Point = collections.namedtuple("Point", "x y")


class Channel:
    """One producer slot and the consumer of a small ring, in this process."""

    def __init__(self, capacity=1 << 20):
        self.ring = Ring.create(1, 16, capacity, capacity)
        self.ring.task_reset(0, -1, 1 << 30)
        self.task = _transport.TaskBlocks(self.ring, 0, self._reserve, self._wait)

    def _reserve(self, nbytes):
        offset = self.ring.reserve(0, nbytes, 0.0)
        if offset is None:
            raise RuntimeError("ring full in a test")
        return offset

    def _wait(self):
        raise RuntimeError("completion queue full in a test")

    def begin(self):
        index, generation = self.ring.claim(0, 0.0)
        self.task.reset()
        return index, generation

    def roundtrip(self, result, build=None):
        """Send ``result`` (or what ``build(out_block)`` returns) and decode it."""
        index, generation = self.begin()
        if build is not None:
            _transport.set_task(self.task)
            try:
                result = build(_transport.out_block)
            finally:
                _transport.set_task(None)
        _transport.send(self.ring, 0, index, generation, [result], self.task)
        offset, nbytes, got_index, _, _, _ = self.ring.pop(0.0)
        assert got_index == index
        self.ring.task_advance(index + 1)
        return result, _transport.decode(self.ring, offset, nbytes)

    def used(self):
        gc.collect()
        return self.ring.stats()["used"]


def same(a, b):
    """Structure, types, dtypes and values equal (NaN equal to NaN)."""
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert b.flags.c_contiguous
        if a.dtype.hasobject:
            assert a.tolist() == b.tolist()
        else:
            assert a.tobytes() == np.ascontiguousarray(a).tobytes() == b.tobytes()
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for k in a:
            same(a[k], b[k])
    elif isinstance(a, (tuple, list)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            same(x, y)
    elif isinstance(a, float) and a != a:
        assert b != b
    else:
        assert a == b


def in_ring(array):
    base = array
    while isinstance(base, np.ndarray) and base.base is not None:
        base = base.base
    return type(base).__name__ == "Block"


@pytest.fixture
def channel():
    ch = Channel()
    yield ch
    assert ch.used() == 0, "a block was not released"


CASES = {
    "array": np.arange(12.0).reshape(3, 4),
    "tuple": (np.ones((2, 3), np.float32), np.arange(5)),
    "nested": {"x": [np.zeros(3, np.int8), (np.ones(2), 7)], "y": Point(1.5, "s")},
    "scalars": (1, 1.0, True, None, "s", b"b", np.float32(2.5), 3 + 4j),
    "zero-size": (np.empty((0, 5)), np.empty(0, np.int16)),
    "0-d": np.array(3.25),
    "F-order": np.asfortranarray(np.arange(24.0).reshape(4, 6)),
    "strided": np.arange(100)[::7],
    "big-endian": np.arange(6, dtype=">i4"),
    "structured": np.array([(1, 2.0), (3, 4.0)], dtype=[("a", "<i4"), ("b", "<f8")]),
    "subarray dtype": np.zeros(3, dtype=("<f4", (2,))),
    "object array": np.array([{"a": 1}, None], dtype=object),
    "buffers": (bytearray(b"abc"), memoryview(b"xyz")),
    # numpy subclasses travel by pickle and keep their type (issue 12, point 7)
    "subclass": np.ma.masked_array([1, -999, 3], mask=[0, 1, 0]),
    "empty containers": ((), [], {}),
    "plain objects": ({"k": [1, 2]}, {3, 4}),
}


@pytest.mark.parametrize("name", list(CASES))
def test_roundtrip(channel, name):
    sent, got = channel.roundtrip(CASES[name])
    if name == "buffers":
        sent = (np.frombuffer(bytearray(b"abc"), np.uint8),
                np.frombuffer(b"xyz", np.uint8))
    if name == "subclass":
        assert type(got) is np.ma.MaskedArray
        assert got.mask.tolist() == [False, True, False]
        assert got.data.tolist() == [1, -999, 3]
        return
    same(sent, got)
    del got


def test_many_dtypes_in_a_row_keep_their_own(channel):
    # More dtype objects than send() remembers the names of, each sent twice:
    # the second time its name comes from what send() remembers, if it still does.
    dtypes = [np.dtype(f"<U{n}") for n in range(1, 300)] + [np.dtype(">u2")]
    for dt in dtypes + dtypes[::-1]:
        sent, got = channel.roundtrip(np.array(["12", "3"]).astype(dt))
        same(sent, got)
        del got


def test_arrays_view_the_ring_and_hold_their_block(channel):
    _, got = channel.roundtrip((np.arange(1000.0), np.arange(10)))
    x, y = got
    assert in_ring(x) and in_ring(y)
    assert x.flags.writeable
    del got, y
    gc.collect()
    assert channel.used() > 0  # x still holds the block
    np.testing.assert_array_equal(x, np.arange(1000.0))
    del x


def test_same_layout_twice_gives_independent_results(channel):
    # The layout (meta) is cached on both sides; values must never be.
    a = channel.roundtrip((np.full(4, 1.0), np.arange(3)))[1]
    b = channel.roundtrip((np.full(4, 2.0), np.arange(3) + 10))[1]
    assert a[0].tolist() == [1.0] * 4 and b[0].tolist() == [2.0] * 4
    assert a[1].tolist() == [0, 1, 2] and b[1].tolist() == [10, 11, 12]
    assert a is not b and a[0] is not b[0]


@pytest.mark.parametrize("values", [
    [(np.zeros(2), 1), (np.zeros(2), 1.0), (np.zeros(2), True)],
    [Point(np.zeros(2), np.ones(2)), (np.zeros(2), np.ones(2))],
    [{"a": np.zeros(2), "b": np.ones(2)}, {"b": np.zeros(2), "a": np.ones(2)}],
    [[np.zeros(2)], (np.zeros(2),)],
    [{1: np.zeros(2)}, {True: np.zeros(2)}, {1.0: np.zeros(2)}],
    # same containers and arrays, in other places (hypothesis found the first)
    [(np.zeros(2, np.int16), {}), ({}, np.zeros(2, np.int16))],
    [((np.zeros(2),), np.ones(2)), (np.zeros(2), (np.ones(2),))],
    [{"a": np.zeros(2), "b": {}}, {"a": {}, "b": np.zeros(2)}],
])
def test_layouts_that_compare_equal_stay_apart(channel, values):
    # 1 == 1.0 == True and a namedtuple equals a tuple: the layout caches must not
    # hand one result's skeleton to another.
    for v in values * 2:
        sent, got = channel.roundtrip(v)
        same(sent, got)
        if isinstance(v, dict):
            assert [type(k) for k in got] == [type(k) for k in v]
        del got


def test_mutable_skeletons_are_not_shared(channel):
    a = channel.roundtrip([np.zeros(1), {"k": []}])[1]
    a[1]["k"].append(1)
    b = channel.roundtrip([np.zeros(1), {"k": []}])[1]
    assert b[1]["k"] == []


def test_out_block_result_goes_over_as_one_block(channel):
    def build(out_block):
        buf = out_block(8 * 10 + 64 + 8 * 4)
        x = buf[:80].view(np.float64)
        y = buf[128:160].view(np.int64)
        x[:] = np.arange(10)
        y[:] = [5, 6, 7, 8]
        return x, y

    sent, (x, y) = channel.roundtrip(None, build)
    assert x.tolist() == list(range(10)) and y.tolist() == [5, 6, 7, 8]
    bx = x.base
    while not type(bx).__name__ == "Block":
        bx = bx.base
    need = _transport.HEADROOM + 8 * 10 + 64 + 8 * 4
    assert bx.nbytes == -(-need // 64) * 64  # one block (its payload size, rounded)
    start = np.frombuffer(bx, np.uint8).ctypes.data
    assert x.ctypes.data == start + _transport.HEADROOM
    assert channel.ring.stats()["popped"] == 1
    del sent, x, y, bx


def test_out_blocks_mixed_with_copied_arrays(channel):
    def build(out_block):
        a = out_block(80).view(np.float64)
        b = out_block(16).view(np.int32)
        a[:] = 1.5
        b[:] = 7
        return {"a": a, "b": b, "c": np.arange(3), "a_again": a}

    sent, got = channel.roundtrip(None, build)
    assert got["a"].tolist() == [1.5] * 10 and got["b"].tolist() == [7] * 4
    assert got["c"].tolist() == [0, 1, 2] and got["a_again"].tolist() == [1.5] * 10
    # The first out block carries the header and the copy of c in its headroom
    # and goes over as the main block; the second goes with it.
    assert channel.ring.stats()["popped"] == 2
    del sent, got


def test_out_block_with_copies_too_large_for_its_headroom(channel):
    big = np.arange(2000.0)  # 16 kB: more than an out block's headroom

    def build(out_block):
        a = out_block(64).view(np.int64)
        a[:] = 3
        return a, big

    sent, got = channel.roundtrip(None, build)
    assert got[0].tolist() == [3] * 8
    same(big, got[1])
    assert channel.ring.stats()["popped"] == 2  # a main block, and the out block
    del sent, got


def test_array_partly_outside_out_block_is_copied(channel):
    other = np.arange(5.0)

    def build(out_block):
        out_block(64)
        return other  # not in the block: copied into the main block

    sent, got = channel.roundtrip(None, build)
    same(other, got)
    del sent, got


def test_unsendable_result_raises_and_commits_nothing(channel):
    index, generation = channel.begin()
    with pytest.raises(_transport.Unsendable, match="cannot be sent.*lambda"):
        _transport.send(channel.ring, 0, index, generation, [(np.zeros(2), lambda: 0)],
                        channel.task)
    assert channel.ring.pop(0.0) is None
    channel.ring.cancel(0)


def test_corrupt_header_is_an_error_not_a_crash(channel):
    index, generation = channel.begin()
    _transport.send(channel.ring, 0, index, generation, [np.arange(4)], channel.task)
    offset, nbytes = channel.ring.pop(0.0)[:2]
    block = np.frombuffer(_testing.ring_block(channel.ring, offset, nbytes), np.uint64)
    good = block[0]
    block[0] = np.uint64(1 << 40)  # an absurd number of auxiliary blocks
    with pytest.raises(RuntimeError, match="corrupt"):
        _transport.decode(channel.ring, offset, nbytes)
    block[0] = good
    got = _transport.decode(channel.ring, offset, nbytes)
    assert got.tolist() == [0, 1, 2, 3]
    del got, block


def test_out_block_outside_a_worker_is_none():
    assert _transport.current_task() is None
    assert _transport.out_block(16) is None


def test_ref_placeholder_pickles_as_the_singleton():
    assert pickle.loads(pickle.dumps(_transport.REF)) is _transport.REF


leaves = st.one_of(
    st.integers(0, 5).map(
        lambda n: np.arange(n * 3, dtype=np.int16).reshape(-1, 3)),
    st.sampled_from(["<f8", ">f4", "u1", "?", "<c16"]).map(
        lambda d: np.ones((2, 2), dtype=d)),
    st.integers(), st.floats(allow_nan=False), st.text(max_size=3), st.none(),
)
structures = st.recursive(
    leaves,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.tuples(inner, inner),
        st.dictionaries(st.text(max_size=2), inner, max_size=3),
        st.builds(Point, inner, inner)),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(structures)
def test_roundtrip_any_structure(value):
    ch = Channel()
    for _ in range(2):  # the second time through the layout caches
        sent, got = ch.roundtrip(value)
        same(sent, got)
        del got
    assert ch.used() == 0


# -- limits (csrc/sq_limits.h), through process workers -------------------------------


def _deep(i):
    return np.full((1,) * (_transport.MAX_NDIM - 1) + (3,), i, dtype=np.int16)


def test_arrays_of_every_numpy_ndim_go_over_in_place():
    # 33 dimensions and more (numpy 2 allows 64) were once reported as a corrupt
    # result header in the parent.
    try:
        _deep(0)
    except ValueError:
        pytest.skip("this numpy allows fewer dimensions")
    p = seqtools.prefetch(seqtools.smap(_deep, range(6)), nworkers=2,
                          method="process", max_buffered=2)
    for i in range(6):
        a = p[i]
        assert a.shape == _deep(i).shape
        assert (a == i).all()
    del p


def _too_deep(i):
    return np.zeros((1,) * (_transport.MAX_NDIM + 1))


def test_array_over_the_ndim_limit_is_an_error_naming_it():
    try:
        _too_deep(0)
    except ValueError:
        pytest.skip(f"numpy builds no array of more than {_transport.MAX_NDIM} "
                    "dimensions")
    p = seqtools.prefetch(seqtools.smap(_too_deep, range(3)), nworkers=1,
                          method="process")
    with pytest.raises(seqtools.EvaluationError, match="SQ_MAX_NDIM"):
        p[0]


def _many_batches(i, nbatches):
    return tuple(seqtools.stack([np.full(1000, i + k) for k in range(4)])
                 for k in range(nbatches))


@pytest.mark.parametrize("nbatches", [_transport.SLOT_BLOCKS + 1,
                                      2 * _transport.SLOT_BLOCKS])
def test_too_many_stacked_batches_is_an_error_naming_the_limit(nbatches):
    # Each stack() in a worker reserves a block for its batch, and the task may
    # hold SLOT_BLOCKS (with SLOT_BLOCKS of them, the result's header goes in the
    # first one's headroom if it fits, else it needs one more block: refused too).
    p = seqtools.prefetch(
        seqtools.smap(functools.partial(_many_batches, nbatches=nbatches),
                      range(4)),
        nworkers=2, method="process", max_buffered=2)
    for i in range(4):
        with pytest.raises(seqtools.EvaluationError, match="SQ_SLOT_BLOCKS"):
            p[i]
    del p


def test_stacked_batches_up_to_the_limit_go_over():
    n = _transport.SLOT_BLOCKS - 1
    p = seqtools.prefetch(
        seqtools.smap(functools.partial(_many_batches, nbatches=n), range(4)),
        nworkers=2, method="process", max_buffered=2)
    for i in range(4):
        got = p[i]
        assert len(got) == n
        for b in got:
            assert b.shape == (4, 1000) and (b[:, 0] == i + np.arange(4)).all()
    del p, got
