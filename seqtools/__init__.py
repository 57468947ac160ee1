"""seqtools: lazy sequence views and background loading for training loops."""

from .core import View
from .errors import EvaluationError, seterr
from .evaluation import load_buffers, prefetch

__all__ = ["View", "EvaluationError", "seterr", "prefetch", "load_buffers"]
__version__ = "2.0.0.dev0"
