"""SeqTools 1.4.1's module path of these views, now in :mod:`seqtools.views`."""

from .views.combine import case, cycle, interleave, repeat, switch
from .views.indexing import arange, collate, concatenate, gather, take
from .views.uniter import uniter

__all__ = ["arange", "case", "collate", "concatenate", "cycle", "gather",
           "interleave", "repeat", "switch", "take", "uniter"]
