"""seqtools: lazy sequence views and background loading for training loops."""

from .core import View
from .errors import EvaluationError, seterr

__all__ = ["View", "EvaluationError", "seterr"]
__version__ = "2.0.0.dev0"
