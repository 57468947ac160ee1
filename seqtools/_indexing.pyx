# Index arithmetic kernels behind the views (see seqtools/core.py).
from cpython.number cimport PyNumber_Index


def normalize_index(key, n):
    """Return ``key`` as an int in ``[0, n)`` (``n`` None: infinite, ``key >= 0``).

    Raises TypeError for non-integers and IndexError when out of range, as lists do.
    """
    cdef Py_ssize_t i, length
    if isinstance(key, float) or not hasattr(key, "__index__"):
        raise TypeError(
            f"sequence indices must be integers or slices, not {type(key).__name__}"
        )
    try:
        i = PyNumber_Index(key)
    except OverflowError:
        raise IndexError(f"index {key} out of range: cannot fit into an index-sized integer") from None
    if n is None:
        if i < 0:
            raise IndexError("negative indices are not supported on infinite views")
        return i
    length = n
    if i < 0:
        i += length
    if i < 0 or i >= length:
        raise IndexError(f"index {key} out of range for a sequence of {length} items")
    return i


def slice_range(s, n):
    """Return ``(start, step, length)`` of slice ``s`` over ``n`` items."""
    cdef Py_ssize_t start, stop, step, length
    if n is not None:
        start, stop, step = s.indices(n)
        length = len(range(start, stop, step))
        return start, step, length
    step = 1 if s.step is None else PyNumber_Index(s.step)
    if step <= 0:
        raise ValueError("only positive slice steps are supported on infinite views")
    start = 0 if s.start is None else PyNumber_Index(s.start)
    if start < 0 or (s.stop is not None and PyNumber_Index(s.stop) < 0):
        raise IndexError("negative slice bounds are not supported on infinite views")
    if s.stop is None:
        return start, step, None
    stop = PyNumber_Index(s.stop)
    return start, step, len(range(start, stop, step))


def compose_slice(Py_ssize_t start1, Py_ssize_t step1,
                  Py_ssize_t start2, Py_ssize_t step2):
    """Compose slice (start2, step2) taken of slice (start1, step1)."""
    return start1 + start2 * step1, step1 * step2
