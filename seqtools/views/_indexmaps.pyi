"""Stub of the index-map kernels (seqtools/views/_indexmaps.pyx); see
seqtools.batching.shape and seqtools.views.combine."""
from collections.abc import Sequence
from typing import SupportsIndex

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

_Int64Array = npt.NDArray[np.int64]
_Indices = npt.ArrayLike

def batch_count(n: SupportsIndex, k: SupportsIndex, drop_last: bool) -> int: ...
def unbatch_locate(
    i: SupportsIndex, n: SupportsIndex, k: SupportsIndex
) -> tuple[int, int]: ...
def split_bounds_from_cuts(
    cuts: Sequence[SupportsIndex] | npt.ArrayLike, n: SupportsIndex
) -> tuple[_Int64Array, _Int64Array]: ...
def split_check_pairs(
    starts: npt.ArrayLike, stops: npt.ArrayLike, n: SupportsIndex
) -> tuple[_Int64Array, _Int64Array]: ...

@disjoint_base
class InterleaveMap:
    lengths: _Int64Array
    def __init__(self, lengths: npt.ArrayLike) -> None: ...
    @property
    def size(self) -> int: ...
    def locate(self, i: SupportsIndex) -> tuple[int, int]: ...

def cycle_locate_array(
    idx: _Indices, n: SupportsIndex, limit: SupportsIndex | None = None
) -> _Int64Array: ...
