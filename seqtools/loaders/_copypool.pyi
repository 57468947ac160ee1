"""Stub of the native copy threads (seqtools/loaders/_copypool.pyx); see
seqtools.loaders.api."""

from typing_extensions import disjoint_base

from ..batching._stack import CopyJob, CopyRunner

@disjoint_base
class CopyPool(CopyRunner):
    """``nthreads`` native threads running submitted copy jobs in order."""

    def __init__(self, nthreads: int) -> None: ...
    def submit(self, job: CopyJob) -> None: ...
    def close(self) -> None: ...
    @property
    def pid(self) -> int: ...
    @property
    def nthreads(self) -> int: ...
