"""SeqTools 1.4.1's module path of these views, now in :mod:`seqtools.batching`
and :mod:`seqtools.views`."""

from .batching.shape import batch, split, unbatch
from .views.indexing import collate, concatenate

__all__ = ["batch", "collate", "concatenate", "split", "unbatch"]
