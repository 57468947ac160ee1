"""Stub of the test-only entry points (seqtools/_testing.pyx), for tests/ alone."""

from collections.abc import Sequence
from typing import Any, SupportsIndex

import numpy as np
import numpy.typing as npt

from .loaders._ring import Block, Ring
from .views._indexmaps import InterleaveMap

_Int64Array = npt.NDArray[np.int64]
_Indices = npt.ArrayLike

def ring_block(ring: Ring, offset: int, nbytes: int) -> Block: ...
def ring_lease(ring: Ring, offset: int, nbytes: int) -> Block: ...
def ring_release(ring: Ring, offset: int) -> None: ...
def ring_commit(
    ring: Ring, worker: int, offset: int, index: int, generation: int, kind: int = ...
) -> None: ...
def ring_commit_adopt(
    ring: Ring,
    worker: int,
    offset: int,
    index: int,
    generation: int,
    adopt: list[int] | tuple[int, ...],
    kind: int = ...,
) -> None: ...
def ring_keep(ring: Ring, worker: int, nbytes: int) -> int | None: ...
def ring_unkeep(ring: Ring, worker: int, offset: int) -> None: ...
def hook_stats() -> dict[str, int | bool]: ...
def unbatch_locate_array(
    idx: _Indices, n: SupportsIndex, k: SupportsIndex
) -> tuple[_Int64Array, _Int64Array]: ...
def split_locate(i: SupportsIndex, stops: npt.ArrayLike) -> tuple[int, int]: ...
def split_locate_array(
    idx: _Indices, stops: npt.ArrayLike
) -> tuple[_Int64Array, _Int64Array]: ...
def interleave_locate_array(
    imap: InterleaveMap, idx: _Indices
) -> tuple[_Int64Array, _Int64Array]: ...
def cycle_locate(
    i: SupportsIndex, n: SupportsIndex, limit: SupportsIndex | None = None
) -> int: ...
def gather_rows(
    fields: list[
        tuple[
            Sequence[np.ndarray[Any, Any]],
            np.ndarray[Any, Any] | None,
            np.ndarray[Any, Any] | None,
            np.ndarray[Any, Any],
        ]
    ],
) -> None: ...
