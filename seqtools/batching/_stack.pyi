"""Stub of the batch stacking kernels (seqtools/batching/_stack.pyx); see
seqtools.batching.stacking."""

from collections.abc import Sequence
from typing import Any

import numpy as np
from typing_extensions import disjoint_base

@disjoint_base
class Structure:
    """The stacked structure planned from one sample."""

    def __init__(self, sample: Any, labels: Sequence[str] | None = None) -> None: ...
    @property
    def nfields(self) -> int: ...
    def field_info(self) -> list[tuple[str, tuple[int, ...], np.dtype[Any]]]: ...
    def unflatten(self, arrays: Sequence[Any]) -> Any: ...
    def flatten_out(self, out: Any, n: int) -> list[np.ndarray[Any, Any]]: ...

def stack_into(
    structure: Structure,
    samples: list[Any] | tuple[Any, ...],
    arrays: list[np.ndarray[Any, Any]] | None = None,
) -> list[np.ndarray[Any, Any]]: ...

# (sources, part, local, out) per field: see RowGather.
_GatherFields = list[
    tuple[
        Sequence[np.ndarray[Any, Any]],
        np.ndarray[Any, Any] | None,
        np.ndarray[Any, Any] | None,
        np.ndarray[Any, Any],
    ]
]

@disjoint_base
class RowGather:
    """Rows of source arrays gathered into outputs: checked now, copied by run()."""

    def __init__(self, fields: _GatherFields) -> None: ...
    def run(self) -> None: ...

@disjoint_base
class RowSources:
    """The source arrays of fused fields, acquired once for many batches."""

    sources: tuple[tuple[np.ndarray[Any, Any], ...], ...]
    def __init__(self, fields: list[Sequence[np.ndarray[Any, Any]]]) -> None: ...
    def copy(
        self,
        resolved: list[tuple[np.ndarray[Any, Any] | None, np.ndarray[Any, Any]]],
        outs: list[np.ndarray[Any, Any]],
    ) -> None: ...
    def job(
        self,
        resolved: list[tuple[np.ndarray[Any, Any] | None, np.ndarray[Any, Any]]],
        outs: list[np.ndarray[Any, Any]],
    ) -> CopyJob: ...

@disjoint_base
class CopyRunner:
    """Where a submitted :class:`CopyJob` runs (seqtools.loaders._copypool.CopyPool)."""

@disjoint_base
class CopyJob:
    """One checked batch copy (made by :meth:`RowSources.job`)."""

    def run(self) -> None: ...
    def wait(self, timeout: float = -1.0) -> bool: ...

