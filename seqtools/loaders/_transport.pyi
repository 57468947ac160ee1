"""Stub of the worker-to-parent result transport (seqtools/loaders/_transport.pyx);
see seqtools.loaders._worker and seqtools.loaders.api."""

from collections.abc import Callable
from typing import Any, Final

import numpy as np
from typing_extensions import disjoint_base

from ._ring import Ring

__all__ = ["REF", "HEADROOM", "MAX_NDIM", "SLOT_BLOCKS", "TaskBlocks", "Unsendable",
           "out_block", "send", "decode"]

HEADROOM: int
MAX_NDIM: int
SLOT_BLOCKS: int

class Unsendable(Exception): ...

class _RefType:
    def __reduce__(self) -> str: ...

REF: Final[_RefType]

@disjoint_base
class TaskBlocks:
    """Blocks reserved in the ring by the worker's own code for the current task."""

    @property
    def ring(self) -> Ring: ...
    @property
    def slot(self) -> int: ...
    wait: Callable[[], object]
    disabled: bool
    def __init__(
        self,
        ring: Ring,
        slot: int,
        reserve: Callable[[int], int],
        wait: Callable[[], object],
    ) -> None: ...
    def reset(self) -> None: ...
    def kept(self) -> bool: ...
    def new(self, nbytes: int) -> np.ndarray[Any, np.dtype[np.uint8]]: ...

def set_task(task: TaskBlocks | None) -> None: ...
def current_task() -> TaskBlocks | None: ...
def out_block(nbytes: int) -> np.ndarray[Any, np.dtype[np.uint8]] | None: ...
def send(
    ring: Ring,
    slot: int,
    index: int,
    generation: int,
    box: list[Any],
    task: TaskBlocks,
    kind: int = ...,
) -> None: ...
def decode(ring: Ring, offset: int, nbytes: int) -> Any: ...
def _shareable(skel: object) -> bool: ...
