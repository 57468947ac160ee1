"""Lazy list-like views: the base class, item access and the view functions.

The lowest wing: it imports nothing of :mod:`seqtools.batching` nor of
:mod:`seqtools.loaders`. Index arithmetic runs in two compiled modules:
``_indexing`` (index normalisation, item readers, offset tables) and
``_indexmaps`` (where an item of a combined view lives in its sources).
"""
