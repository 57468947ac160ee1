"""SeqTools 1.4.1's module path of the loaders: :mod:`seqtools.loaders`."""

from .errors import WorkerTraceback
from .loaders.api import BufferLoader, call_index, load_buffers, prefetch

__all__ = ["prefetch", "load_buffers", "call_index", "BufferLoader", "WorkerTraceback"]
