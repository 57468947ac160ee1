"""smap and starmap: on-demand evaluation, list semantics, errors from user code."""

import pickle

import numpy as np
import pytest
from conftest import Naturals, slice_strategy
from hypothesis import given, settings
from hypothesis import strategies as st

import seqtools
from seqtools import EvaluationError, gather, smap, starmap
from seqtools.views.core import View

map_settings = settings(max_examples=100, deadline=None, derandomize=True)
slices = slice_strategy(15, 3)


def inverse(x):
    return 1 / x


def add(a, b):
    return a + b


@map_settings
@given(values=st.lists(st.integers(-50, 50), max_size=20), s1=slices, s2=slices)
def test_smap_behaves_like_list_comprehension(values, s1, s2):
    ref = [v * 3 for v in values]
    m = smap(lambda v: v * 3, values)
    assert len(m) == len(ref) and list(m) == ref
    assert [m[i] for i in range(-len(ref), len(ref))] == ref + ref
    assert list(m[s1]) == ref[s1]
    assert list(m[s1][s2]) == ref[s1][s2]
    for key in (len(ref), -len(ref) - 1):
        with pytest.raises(IndexError):
            m[key]


@map_settings
@given(a=st.lists(st.integers(-(2**40), 2**40), max_size=10), s=slices)
def test_smap_several_sequences_zips(a, s):
    b = np.arange(len(a))
    m = smap(add, a, b)
    ref = [x + y for x, y in zip(a, b.tolist())]
    assert list(m) == ref and [m[i] for i in range(len(a))] == ref
    assert list(m[s]) == ref[s]


def test_smap_evaluates_on_demand():
    calls = []

    def f(x):
        calls.append(x)
        return -x

    m = smap(f, [1, 2, 3])
    assert calls == []
    assert m[-1] == -3 and calls == [3]
    assert m[2] == -3 and calls == [3, 3]  # no caching
    assert list(m[:2]) == [-1, -2] and calls == [3, 3, 1, 2]


def test_starmap():
    args = [(2, 3), (3, 2), (10, 0)]
    m = starmap(pow, args)
    assert list(m) == [8, 9, 1] and m[-2] == 9 and len(m) == 3
    assert list(m[::-1]) == [1, 9, 8]
    assert list(starmap(add, seqtools.collate([[1, 2], [10, 20]]))) == [11, 22]


@pytest.mark.parametrize("bad", [(3,), ()])
def test_smap_argument_errors(bad):
    with pytest.raises((TypeError, ValueError)):
        smap(*bad) if bad else smap(abs)


def test_smap_argument_checks():
    with pytest.raises(TypeError, match="callable"):
        smap(3, [1])
    with pytest.raises(ValueError, match="at least one sequence"):
        smap(abs)
    with pytest.raises(ValueError, match=r"different lengths \[3, 2\]"):
        smap(add, [1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match=r"different lengths \[2, 'inf'\]"):
        smap(add, [1, 2], Naturals())
    with pytest.raises(TypeError, match="sequence 1"):
        smap(add, [1], iter([1]))
    with pytest.raises(TypeError, match="callable"):
        starmap(None, [(1,)])


def test_infinite_sources():
    m = smap(add, Naturals(), Naturals())
    assert m[10**6] == 2 * 10**6
    assert list(m[3:6]) == [6, 8, 10]
    with pytest.raises(IndexError):
        m[-1]
    with pytest.raises(TypeError, match="infinite"):
        len(m)


def test_mapped_views_are_read_only():
    for m in (smap(abs, [1, -2]), smap(add, [1], [2]), starmap(add, [(1, 2)])):
        with pytest.raises(TypeError, match="read-only"):
            m[0] = 1
        with pytest.raises(TypeError, match="read-only"):
            m[:1] = [1]


def test_errors_name_item_and_creation_site():
    m = smap(inverse, [1, 0, 2])
    line = test_errors_name_item_and_creation_site.__code__.co_firstlineno + 1
    with pytest.raises(
        EvaluationError, match=rf"item 1 of .*test_mapping.py:{line}"
    ) as e:
        m[1]
    assert isinstance(e.value.__cause__, ZeroDivisionError)
    with pytest.raises(EvaluationError, match="item 1 "):
        list(m)
    with pytest.raises(EvaluationError, match="item 1 of Mapping"):  # smap's index
        m[1:][0]
    with pytest.raises(EvaluationError, match="item 1 "):
        starmap(add, [(1, 2), (1, "a")])[1]
    with pytest.raises(EvaluationError, match="item 1 "):
        list(starmap(add, [(1, 2), (1, "a")]))
    with pytest.raises(EvaluationError, match="item 0 "):
        list(smap(add, [1], ["a"]))
    with pytest.raises(EvaluationError, match="item 0 "):
        smap(add, [1], ["a"])[0]


def test_innermost_error_is_reported_once():
    inner = smap(inverse, [1, 0])
    outer = smap(str, gather(inner, [1]))
    with pytest.raises(EvaluationError, match=r"item 1 of Mapping") as e:
        outer[0]
    assert isinstance(e.value.__cause__, ZeroDivisionError)
    with pytest.raises(EvaluationError, match=r"item 1 of Mapping"):
        list(outer)


def test_source_errors_are_not_wrapped():
    class Broken(View):
        def __init__(self):
            View.__init__(self, 2)

        def _get(self, i):
            raise KeyError(i)

    with pytest.raises(KeyError):
        smap(abs, Broken())[0]
    with pytest.raises(KeyError):
        list(smap(abs, Broken()))


def test_passthrough(passthrough):
    m = smap(inverse, [0])
    with pytest.raises(ZeroDivisionError):
        m[0]
    with pytest.raises(ZeroDivisionError):
        list(m)
    with pytest.raises(TypeError):
        starmap(add, [(1, "a")])[0]


def test_mapped_views_pickle():
    m = smap(add, gather([1, 2, 3], [2, 0]), [10, 20])
    clone = pickle.loads(pickle.dumps(m))
    assert list(clone) == [13, 21] and clone[-1] == 21
    clone = pickle.loads(pickle.dumps(starmap(pow, [(2, 3)])[::-1]))
    assert list(clone) == [8]


def test_memmap_items_reach_f_as_plain_arrays(tmp_path):
    path = tmp_path / "x.npy"
    np.save(path, np.ones((4, 3)))
    m = smap(type, np.load(path, mmap_mode="r"))
    assert m[0] is np.ndarray and set(m) == {np.ndarray}


def test_public_names():
    assert {"smap", "starmap"} <= set(seqtools.__all__)


def test_mapped_part_refuses_assignment_before_any_write():
    data = [0, 1, 2]
    cat = seqtools.concatenate([data, smap(abs, [3, 4])])
    with pytest.raises(TypeError, match=r"values\[2\] \(for item 3\): Mapping views "
                       r"are read-only: their items are computed by abs\(\)"):
        cat[1:] = [10, 11, 12, 13]
    assert data == [0, 1, 2]
    with pytest.raises(TypeError, match="ZipMapping views are read-only"):
        seqtools.collate([data, smap(max, data, data)])[0] = (5, 6)
    assert data == [0, 1, 2]
