import pytest

import seqtools
from seqtools.core import View


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


def test_seterr_roundtrip():
    assert seqtools.seterr() == "wrap"
    assert seqtools.seterr("passthrough") == "wrap"
    assert seqtools.seterr("wrap") == "passthrough"
    with pytest.raises(ValueError, match="expected one of"):
        seqtools.seterr("ignore")
