"""Argument checks shared by the public functions: one rule, one message per kind.

A wrong type raises TypeError, a wrong value of the right type ValueError. Every
message starts with the function's name (``"batch(): k must be ..."``). The view
layer and the loaders both use these; this module imports only
:mod:`seqtools.views.core`.
"""

import operator

import numpy as np

from .views.core import View

__all__ = ["check_int", "check_seconds", "check_seed", "length"]


def check_int(value, name, func, minimum=None):
    """``value`` as an int, checked to be ``>= minimum`` (if given).

    Integers and numpy integers pass; ``bool``, ``float`` and anything else without
    ``__index__`` raise TypeError; a value below ``minimum`` raises ValueError.
    """
    try:
        if isinstance(value, (float, bool)):
            raise TypeError
        value = operator.index(value)
    except TypeError:
        raise TypeError(
            f"{func}(): {name} must be an integer, got {type(value).__name__} "
            f"{value!r}"
        ) from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{func}(): {name} must be >= {minimum}, got {value}")
    return value


def length(seq, func, what="sequence", infinite=False):
    """``len(seq)`` for a sequence given to ``func``, or TypeError saying what is wrong.

    Views answer with their length, None for an infinite view (accepted only when
    ``infinite`` is true); other objects must have ``__getitem__`` and ``len()``.
    """
    if View in type(seq).__mro__:  # cheaper than isinstance on the ABC
        n = seq._n
        if n is None and not infinite:
            raise TypeError(
                f"{func}() needs a finite {what}, but this {type(seq).__name__} has "
                "no len() (an infinite view, or a uniter() without size); take a "
                "finite slice first, e.g. seq[:1000]"
            )
        return n
    if not hasattr(seq, "__getitem__"):
        raise TypeError(
            f"{func}() needs an indexable {what}, got {type(seq).__name__}; "
            "wrap iterables with seqtools.uniter"
        )
    try:
        return len(seq)
    except TypeError:
        raise TypeError(
            f"{func}() needs a {what} with a len(), got {type(seq).__name__}"
        ) from None


def check_seed(seed, func):
    """``seed`` as an int or a list of ints, checked (``rng=`` of smap, epochs)."""
    if isinstance(seed, (list, tuple)) and seed:
        items = list(seed)
    else:
        items = [seed]
    for x in items:
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
            raise TypeError(
                f"{func}: a seed is an int >= 0 or a non-empty list of them, not "
                f"{type(seed).__name__}"
                + (" (pass the seed the generator was made from)"
                   if isinstance(seed, (np.random.Generator,
                                        np.random.BitGenerator)) else ""))
        if x < 0:
            raise ValueError(f"{func}: a seed must be >= 0, got {x}")
    if isinstance(seed, (list, tuple)):
        return [int(x) for x in items]
    return int(seed)


def check_seconds(value, name, func):
    """``value`` as a positive number of seconds (a float), or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{func}(): {name} must be a number of seconds or None, got "
                        f"{type(value).__name__} {value!r}")
    if not value > 0:
        raise ValueError(f"{func}(): {name} must be > 0 seconds (or None: "
                         f"no limit), got {value!r}")
    return float(value)
