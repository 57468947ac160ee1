"""Batches: views that group items, and whole batches read in compiled code.

Sits on :mod:`seqtools.views`: ``batch``/``unbatch``/``split`` (``shape``), the
stacking of nested samples into arrays (``stacking``, kernels in ``_stack``) and
the call-indexed samplers of loaders (``samplers``).
"""
