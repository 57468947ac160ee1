"""SeqTools 1.4.1's module path of ``smap``, now :mod:`seqtools.views.mapping`."""

from .views.mapping import sample_rng, smap, starmap

__all__ = ["smap", "starmap", "sample_rng"]
