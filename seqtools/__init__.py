"""seqtools: lazy sequence views and background loading for training loops."""

from . import instrument
from .cache import add_cache
from .combine import case, cycle, interleave, repeat, switch
from .core import View
from .errors import EvaluationError, seterr
from .evaluation import call_index, load_buffers, prefetch
from .indexing import arange, collate, concatenate, gather, take
from .mapping import smap, starmap
from .serialization import SerializableFunc
from .shape import batch, split, unbatch
from .stacking import minibatches, stack
from .training import epochs
from .uniter import uniter

__all__ = [
    "arange", "gather", "take", "concatenate", "collate",
    "smap", "starmap",
    "prefetch",
    "load_buffers", "call_index", "epochs",
    "View", "EvaluationError", "seterr", "stack", "minibatches",
    "batch", "unbatch", "split",
    "interleave", "cycle", "repeat", "switch", "case",
    "uniter", "add_cache", "SerializableFunc", "instrument"]
__version__ = "2.0.0.dev0"
