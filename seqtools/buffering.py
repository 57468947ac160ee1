"""SeqTools 1.4.1's module path of ``add_cache``, now :mod:`seqtools.views.cache`."""

from .views.cache import add_cache

__all__ = ["add_cache"]
