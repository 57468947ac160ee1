"""Stub of a cached remote object seen as one array
(seqtools/storage/_objmap.pyx); see seqtools.storage.remote."""

import numpy as np
import numpy.typing as npt
from typing_extensions import disjoint_base

PAGE_SIZE: int

@disjoint_base
class ObjectMap:
    """``size`` bytes of address space for one object of blocks of
    ``block_size`` bytes, exported through the buffer protocol; :meth:`map`
    places its blocks."""

    def __init__(self, size: int, block_size: int) -> None: ...
    @property
    def size(self) -> int: ...
    @property
    def nblocks(self) -> int: ...
    @property
    def nmapped(self) -> int: ...
    @property
    def full(self) -> bool: ...
    def mapped_blocks(self) -> list[int]: ...
    def map(self, fd: int, block: int, length: int) -> None: ...
    def missing(self, local: npt.NDArray[np.int64], part: npt.NDArray[np.int64] | None,
                j: int, offset: int, rowbytes: int) -> list[int]: ...
