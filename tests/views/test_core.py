import pickle

import numpy as np
import pytest
from conftest import Naturals

import seqtools
from seqtools.views.core import SliceView, View
from seqtools.views.memmaps import memmap_ref, pickle_source


class ListView(View):
    """The simplest view: reads and writes through to a list."""

    def __init__(self, data):
        View.__init__(self, len(data))
        self.data = data

    def _get(self, i):
        return self.data[i]

    def _set(self, i, value):
        self.data[i] = value


@pytest.mark.parametrize("key", [0, 3, -1, -10, 9])
def test_index_like_list(key):
    ref = list(range(10))
    assert ListView(ref)[key] == ref[key]


@pytest.mark.parametrize("key", [10, -11, 2**70])
def test_index_out_of_range(key):
    with pytest.raises(IndexError):
        ListView(list(range(10)))[key]


@pytest.mark.parametrize("key", ["a", 1.0, None, [1]])
def test_index_bad_type(key):
    with pytest.raises(TypeError, match="integers or slices"):
        ListView(list(range(10)))[key]


def test_slice_of_slice_is_one_view():
    ref = list(range(20))
    v = ListView(ref)[2:18:3][::-1][1:4]
    assert list(v) == ref[2:18:3][::-1][1:4]
    assert isinstance(v._base, ListView)


def test_setitem_writes_through():
    data = list(range(6))
    v = ListView(data)
    v[-1] = "x"
    v[1:4][0] = "y"
    v[::2] = ["a", "b", "c"]
    assert data == ["a", "y", "b", 3, "c", "x"]
    with pytest.raises(ValueError, match="cannot change size"):
        v[0:2] = [1, 2, 3]


# -- added with the index views: pickling, numpy keys, memmap references ------------


def test_views_with_dict_and_slots_pickle():
    v = ListView(list(range(5)))[::-2]
    clone = pickle.loads(pickle.dumps(v))
    assert type(clone) is SliceView and list(clone) == [4, 2, 0]
    inf = pickle.loads(pickle.dumps(Naturals()[3::4]))
    assert inf[2] == 11


def test_array_keys_gather_and_assign():
    data = list(range(6))
    v = ListView(data)
    assert list(v[np.array([5, -6, 2])]) == [5, 0, 2]
    v[np.array([0, -1])] = ["a", "b"]
    assert data[0] == "a" and data[-1] == "b"
    with pytest.raises(IndexError, match="position 1"):
        v[np.array([0, 6])]
    with pytest.raises(TypeError, match="boolean"):
        v[np.ones(6, dtype=bool)]


def test_infinite_slices():
    v = Naturals()
    s = v[10::3]
    assert s._n is None and s[4] == 22
    it = iter(s)
    assert [next(it) for _ in range(3)] == [10, 13, 16]
    assert list(v[2:11:4]) == [2, 6, 10]
    with pytest.raises(ValueError):
        v[::-1]
    with pytest.raises(IndexError):
        v[-5:]
    with pytest.raises(ValueError, match="unbounded"):
        v[3:] = [1]


def test_huge_steps_compose():
    ref = list(range(10))
    v = ListView(ref)
    assert list(v[:: 2**62][:: 2**62]) == ref[:: 2**62][:: 2**62]
    assert list(v[:: -(2**70)][1:]) == ref[:: -(2**70)][1:]
    assert list(Naturals()[:: 2**40][:3][:: 2**30]) == [0]


def test_slice_iteration_paths():
    ref = list(range(10))
    assert list(ListView(ref)[8:1:-3]) == ref[8:1:-3]  # view base
    assert list(SliceView(ref, 9, -2, 5)) == ref[9::-2]  # native slicing
    assert list(SliceView(ref, 9, -1, 10)) == ref[::-1]  # stop below zero


def test_default_locate_is_identity():
    v = ListView([1, 2, 3])
    idx = np.array([2, 0], dtype=np.int64)
    src, out = v._locate(idx)
    assert src is v and out is idx
    src, out = v[::-1]._locate(idx)
    assert src is v and out.tolist() == [0, 2]


def test_memmap_ref_only_for_file_backed_arrays(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.arange(12.0).reshape(3, 4))
    mm = np.load(path, mmap_mode="c")
    assert memmap_ref(np.arange(3)) is None
    assert memmap_ref(mm[:0]) is None
    assert memmap_ref(mm.view(np.ndarray)[1]) is not None
    assert pickle_source((1, np.arange(2)))[0] == 1
    clone = pickle.loads(pickle.dumps(pickle_source(mm.view(np.ndarray)[1:, ::3])))
    assert clone.tolist() == [[4.0, 7.0], [8.0, 11.0]]


# -- assignments check every value before writing any --------------------------------


class ReadOnly(View):
    """A user view without ``_set``: read-only, like prefetch() or uniter()."""

    def __init__(self, n):
        View.__init__(self, n)

    def _get(self, i):
        return i


def test_read_only_view_refuses_before_writing():
    data = [0, 1, 2]
    cat = seqtools.concatenate([data, ReadOnly(2)])
    with pytest.raises(TypeError, match="ReadOnly views do not support") as e:
        cat[1:4] = ["a", "b", "c"]
    assert "values[2] (for item 3)" in str(e.value)
    assert str(e.value).endswith("nothing was assigned")
    assert data == [0, 1, 2]


def test_view_defining_only_set_stays_writable():
    data = [0, 1, 2]
    v = ListView(data)
    v[::-1] = iter("abc")  # any iterable, read once
    assert data == ["c", "b", "a"]


def test_slice_of_view_assigned_onto_itself_reads_it_first():
    data = [0, 1, 2, 3, 4]
    ref = list(data)
    v = ListView(data)
    v[1:5] = v[0:4]
    ref[1:5] = ref[0:4]
    assert data == ref == [0, 0, 1, 2, 3]


def test_slice_assignment_checks_numpy_sources_first():
    arr = np.zeros(5)
    v = SliceView(seqtools.gather(arr, [4, 3, 2, 1, 0]), 1, 1, 4)
    with pytest.raises(ValueError, match="could not convert") as e:
        v[:] = [1.0, 2.0, "x", 4.0]
    msg = str(e.value)
    assert "values[2] (for item 2)" in msg and "dtype float64" in msg
    assert "nothing was assigned" in msg
    assert arr.tolist() == [0.0] * 5
    with pytest.raises(TypeError, match="sequence of values, one per item, not int"):
        v[:] = 5
    v[np.array([0, 3])] = [7, 8]
    assert arr.tolist() == [8.0, 0.0, 0.0, 7.0, 0.0]


def test_read_only_numpy_source_refused_before_writing():
    arr = np.zeros(3)
    frozen = np.zeros(3)
    frozen.flags.writeable = False
    cat = seqtools.concatenate([arr, frozen])
    with pytest.raises(ValueError, match="read-only.*mmap_mode='r\\+'"):
        cat[1:5] = [1, 2, 3, 4]
    assert arr.tolist() == [0.0] * 3
