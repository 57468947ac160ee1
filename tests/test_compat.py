"""View behaviours of SeqTools 1.4.1 that code written for it relies on (issue 15).

Each test states what 1.4.1 documents or does (observed with 1.4.1 installed from
the package index, in its own interpreter), then checks that the same code gives
the same result here. Where we deliberately do better (docs/differences.rst), the
test also pins down the better behaviour. The loader points (start_hook's worker
index, passthrough from process workers) are in test_compat_loaders.py.
"""

import inspect
import itertools

import numpy as np
import pytest

import seqtools
from seqtools import (
    add_cache,
    batch,
    case,
    collate,
    concatenate,
    cycle,
    gather,
    interleave,
    repeat,
    split,
    unbatch,
    uniter,
)


def head(iterable, n=12):
    return list(itertools.islice(iterable, n))


# -- point 3: interleave of sequences without a length --------------------------------


def test_interleave_of_endless_sequences_iterates_in_turn():
    # 1.4.1 iterates these; its view cannot be indexed, ours can.
    view = interleave(cycle([1, 2, 3, 4, 5]), cycle("abc"), cycle([0.1, 0.2, 0.3, 0.4]))
    expected = [1, "a", 0.1, 2, "b", 0.2, 3, "c", 0.3, 4, "a", 0.4, 5, "b", 0.1]
    assert head(view, 15) == expected
    assert [view[i] for i in range(15)] == expected
    # Finite and infinite inputs: the finite ones drop out once they run out.
    assert head(interleave([1, 2, 3], cycle("ab"))) == [
        1, "a", 2, "b", 3, "a", "b", "a", "b", "a", "b", "a"]
    assert head(interleave(cycle("ab"), [1, 2, 3])) == [
        "a", 1, "b", 2, "a", 3, "b", "a", "b", "a", "b", "a"]
    assert head(interleave(repeat(0), [1, 2, 3])) == [0, 1, 0, 2, 0, 3] + [0] * 6
    mixed = interleave(repeat(0), [1, 2, 3])
    assert [mixed[i] for i in range(12)] == head(mixed)
    # Inputs without a length at all (generators, a uniter without size): 1.4.1
    # iterates them, turns going on between the inputs left.
    assert list(interleave((x for x in range(3)), [7, 8])) == [0, 7, 1, 8, 2]
    assert list(interleave(uniter(range(3)), [7, 8])) == [0, 7, 1, 8, 2]
    assert list(interleave(repeat(0, 2), [1, 2, 3])) == [0, 1, 0, 2, 3]


# -- point 4: repeat write-through ----------------------------------------------------


def test_repeat_holds_one_value_that_assignments_replace():
    r = repeat(3, 100)
    r[-3] = 2
    assert list(r) == [2] * 100 and len(r) == 100
    r[5:8] = [7, 8, 9]  # the last value assigned wins
    assert list(r) == [9] * 100
    r[5:5] = []
    assert r[0] == 9
    with pytest.raises(ValueError):  # one value per item, as 1.4.1 requires
        r[5:8] = [7, 8]
    with pytest.raises(IndexError):
        r[100] = 1
    part = r[2:5]
    part[0] = "z"  # a slice writes through, as in 1.4.1
    assert r[0] == r[99] == "z"

    endless = repeat(3)
    endless[10] = 5
    assert endless[0] == endless[10**12] == 5
    endless[2:5] = [1, 2, 3]
    assert endless[0] == 3
    with pytest.raises(IndexError):
        endless[-1] = 1
    with pytest.raises(IndexError):
        endless[-1]


def test_cycle_writes_into_its_source():
    src = [1, 2, 3]
    loop = cycle(src, 10)
    loop[4] = "x"
    assert src == [1, "x", 3] and list(loop) == [1, "x", 3] * 3 + [1]
    loop[-1] = "y"
    assert src[0] == "y"
    loop[0:6] = list("abcdef")  # later items overwrite earlier ones
    assert src == ["d", "e", "f"]
    with pytest.raises(IndexError):
        loop[10] = 1
    # 1.4.1 refuses to write through an endless cycle; we write, as for a finite one.
    endless = cycle(src)
    endless[10**10] = "big"
    assert src[10**10 % 3] == "big"
    with pytest.raises(IndexError):
        endless[-1] = 0


# -- point 5: unbatch(..., last_batch_size=0) ------------------------------------------


@pytest.mark.parametrize("n, k", [(12, 4), (10, 4), (0, 3), (3, 3)])
def test_unbatch_last_batch_size_zero_means_full(n, k):
    items = list(range(n))
    batches = batch(items, k)
    view = unbatch(batches, k, len(items) % k)  # the natural 1.4.1 argument
    assert len(view) == n and list(view) == items
    assert list(unbatch([[1, 2], [3, 4]], 2, 0)) == [1, 2, 3, 4]
    assert len(unbatch([[1, 2], [3, 4]], 2, 0)) == 4


# -- point 6: introspection attributes ------------------------------------------------


def test_gather_indexes_and_concatenate_sequences():
    data = [1, 2, 3, 4, 5]
    g = gather(data, [4, 3, 2, 1, 0])
    assert g.indexes == [4, 3, 2, 1, 0] and type(g.indexes) is list
    assert g[1:4].indexes == [3, 2, 1]
    assert g[::-2].indexes == [0, 2, 4]
    assert g[1:4][1:].indexes == [2, 1]
    assert g[10:20].indexes == []
    assert g.sequence is data
    nested = gather(gather(data, [4, 3, 2]), [0, 2])  # composed, as in 1.4.1
    assert nested.indexes == [4, 2] and nested.sequence is data
    assert all(nested[k] == nested.sequence[i] for k, i in enumerate(nested.indexes))
    arr = gather(data, np.array([4, 3, 2, 1, 0]))
    assert isinstance(arr.indexes, np.ndarray)  # an array when given one
    assert arr[1:3].indexes.tolist() == [3, 2]

    a, b, c = [1], [2, 3], [4]
    cat = concatenate([a, b])
    assert cat.sequences == [a, b] and type(cat.sequences) is list
    assert cat.sequences[0] is a
    assert concatenate([concatenate([a, b]), c]).sequences == [a, b, c]
    assert concatenate([a, [], b]).sequences == [a, [], b]
    assert concatenate([concatenate([a, b]), concatenate([c])]).sequences == [a, b, c]


# -- point 7: add_cache iteration -----------------------------------------------------


class Recorded:
    """A sequence that records the indices read."""

    def __init__(self, data):
        self.data = list(data)
        self.reads = []

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        if not -len(self.data) <= i < len(self.data):
            raise IndexError(i)
        self.reads.append(i)
        return self.data[i]


def test_add_cache_iterates_the_source():
    src = Recorded([1, 2, 3])
    cached = add_cache(src, 3)
    assert (cached[0], cached[1]) == (1, 2)
    src.data[0], src.data[1] = "x", "y"  # modified behind the cache
    assert list(cached) == ["x", "y", 3]  # iteration reads the source, as in 1.4.1
    assert cached[0] == 1  # indexing is served by the cache
    assert src.reads == [0, 1, 0, 1, 2]
    src.data[2] = "z"
    assert cached[2] == "z"  # iteration did not fill the cache


# -- other 1.4.1 behaviours found while checking its documentation --------------------


# Parameter names of 1.4.1's signatures (views of this package's view modules).
SIGNATURES_1_4_1 = {
    "add_cache": ["arr", "cache_size", "cache"],
    "arange": ["start", "stop", "step"],
    "batch": ["sequence", "k", "drop_last", "pad", "collate_fn"],
    "case": ["selector", "values"],
    "collate": ["sequences"],
    "concatenate": ["sequences"],
    "cycle": ["sequence", "limit"],
    "gather": ["sequence", "indexes"],
    "interleave": ["sequences"],
    "repeat": ["value", "times"],
    "split": ["sequence", "edges"],
    "switch": ["condition", "x", "y"],
    "take": ["sequence", "indexes"],
    "unbatch": ["sequence", "batch_size", "last_batch_size"],
}


@pytest.mark.parametrize("name", sorted(SIGNATURES_1_4_1))
def test_parameters_have_1_4_1_names(name):
    params = list(inspect.signature(getattr(seqtools, name)).parameters)
    assert params[: len(SIGNATURES_1_4_1[name])] == SIGNATURES_1_4_1[name]


def test_keyword_arguments_as_1_4_1_code_passes_them():
    data = list(range(10))
    assert batch(sequence=data, k=4, drop_last=True, pad=None, collate_fn=None)[1] == [
        4, 5, 6, 7]
    assert list(unbatch(sequence=[[1, 2], [3]], batch_size=2, last_batch_size=1)) == [
        1, 2, 3]
    assert list(split(sequence=data, edges=[5])[0]) == [0, 1, 2, 3, 4]
    assert list(cycle(sequence=[1, 2], limit=3)) == [1, 2, 1]
    assert list(repeat(value=1, times=2)) == [1, 1]
    assert list(gather(sequence=data, indexes=[1])) == [1]
    assert list(add_cache(arr=data, cache_size=2, cache=None)) == data


def test_collate_pairs_finite_with_infinite_views():
    # 1.4.1: collate([images, repeat(label)]) has the finite length.
    images = np.arange(6.0).reshape(3, 2)
    view = collate([images, repeat(7)])
    assert len(view) == 3 and [y for _, y in view] == [7, 7, 7]
    x, y = seqtools.stack(view)
    assert x.shape == (3, 2) and y.tolist() == [7, 7, 7]
    assert list(collate([cycle([1]), [1, 2]])) == [(1, 1), (1, 2)]
    with pytest.raises(ValueError, match="different lengths"):
        collate([[1, 2], [1, 2, 3], repeat(0)])


def test_case_with_negative_selector_counts_from_the_end():
    assert list(case([0, -1, 0], "abc", "xyz")) == ["a", "y", "c"]


def test_cycle_of_an_endless_view():
    assert list(cycle(cycle([1, 2]), 3)) == [1, 2, 1]
    assert head(cycle(repeat(0)), 3) == [0, 0, 0]


def test_concatenate_of_an_endless_view_is_a_type_error():
    with pytest.raises(TypeError, match="infinite"):
        concatenate([cycle([1])])


# -- deliberate differences (docs/differences.rst) -------------------------------------


def test_edge_cases_that_hang_in_1_4_1_raise():
    for call in (lambda: cycle([], 3), lambda: cycle([])):
        with pytest.raises(ValueError, match="empty"):
            call()
    with pytest.raises(TypeError):
        cycle(x for x in range(3))
    assert list(cycle([1], 0)) == []


def test_slices_past_the_end_and_padding_follow_list_semantics():
    data = [1, 2, 3]
    assert len(concatenate([[1, 2], [3]])[5:9]) == len(data[5:9]) == 0
    assert list(seqtools.arange(5)[10:20]) == list(range(5)[10:20])
    assert seqtools.arange(5)[-1] == 4  # 1.4.1 gives -1
    assert len(unbatch([], 2)) == 0  # 1.4.1 says 2
    padded = batch(list(range(10)), 4, pad=-1)
    assert list(unbatch(padded, 4, 2)) == list(range(10))  # padding left out
    assert list(batch(list(range(10)), 4, pad=0, drop_last=True)[-1]) == [4, 5, 6, 7]


def test_gather_indices_checked_at_construction():
    with pytest.raises(IndexError, match="position 0"):
        gather([1, 2, 3], [5])
    with pytest.raises(TypeError, match="boolean"):
        gather([1, 2, 3], [True, False])
