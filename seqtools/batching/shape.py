"""Views that regroup items: batches of ``k`` items, their inverse, and splits.

:func:`batch` turns a sequence of items into a sequence of minibatches,
:func:`unbatch` flattens a sequence of batches back into items, and :func:`split`
cuts a sequence into parts. They sit between a dataset (list, array, memory-mapped
chunks, other views) and a training loop; the index arithmetic runs in the
``_indexmaps`` Cython kernels.
"""

import itertools

import numpy as np

from .._checks import check_int, length
from ..errors import raise_evaluation_error
from ..views import _indexmaps
from ..views.access import (
    check_array_slice,
    check_item,
    item_setter,
    plain_array,
    reworded,
)
from ..views.core import SliceView, View
from ..views.fusion import Items, Rows, fuse, merge_source_maps
from .stacking import copy_job, stack, stack_range

__all__ = ["batch", "unbatch", "split"]

# Sources whose native slicing returns a same-kind sequence (an ndarray slice is a
# view, a View slice is a view); other sequences are sliced with a SliceView.
_NATIVE_SLICING = (list, tuple, np.ndarray, View, range, str, bytes)


def _slice_of(seq, start, stop):
    """Items ``start:stop`` of ``seq``, as the source's own type when it can slice."""
    if isinstance(seq, _NATIVE_SLICING):
        return seq[start:stop]
    return SliceView(seq, start, 1, stop - start)


def _group_values(values, what):
    """The values assigned to a batch or a part, as a list, tuple or numpy array.

    Other iterables are read once into a list: the values are read twice, checked
    then written.
    """
    if type(values) in (list, tuple) or (
        isinstance(values, np.ndarray) and values.ndim > 0
    ):
        return values
    if not hasattr(values, "__len__"):
        raise TypeError(
            f"a {what} must be assigned a sequence of items, got "
            f"{type(values).__name__}"
        )
    return list(values)


def _check_items(seq, start, values, m):
    """The values ``_write_items(seq, start, values, m)`` will write, checked.

    Raises TypeError or ValueError, writing nothing, where the write would fail
    (see :func:`seqtools.views.access.check_item`); ``values`` is a list, tuple or
    array.
    """
    if isinstance(seq, list):
        return values
    if isinstance(seq, np.ndarray):
        if plain_array(seq):
            check_array_slice(seq, values[:m])  # the write is one slice assignment
        return values
    checked = []
    for j in range(m):
        try:
            checked.append(check_item(seq, start + j, values[j]))
        except (TypeError, ValueError) as exc:
            context = f"value {j} (for item {start + j} of the source)"
            raise reworded(exc, context) from exc
    return checked


def _write_items(seq, start, values, m):
    """Write ``values[:m]`` over items ``start .. start + m - 1`` of ``seq``.

    ``values`` comes from :func:`_check_items`.
    """
    if isinstance(seq, (list, np.ndarray)):
        # Same-size slice assignment: a list keeps its length.
        seq[start : start + m] = values[:m]
        return
    if isinstance(seq, View):
        seq._set_many(range(start, start + m), values)
        return
    for j in range(m):
        seq[start + j] = values[j]


def _pad_batch(chunk, pad, missing):
    """``chunk`` followed by ``missing`` copies of ``pad``, keeping its type."""
    if isinstance(chunk, list):
        return chunk + [pad] * missing
    if isinstance(chunk, tuple):
        return chunk + (pad,) * missing
    if isinstance(chunk, np.ndarray):
        out = np.empty((len(chunk) + missing,) + chunk.shape[1:], dtype=chunk.dtype)
        out[: len(chunk)] = chunk
        out[len(chunk) :] = pad
        return out
    return _PaddedView(chunk, pad, missing)


class _PaddedView(View):
    """Items of ``seq`` followed by ``missing`` copies of ``pad`` (read-only pad)."""

    __slots__ = ("_seq", "_m", "_pad")

    def __init__(self, seq, pad, missing):
        self._m = len(seq)
        View.__init__(self, self._m + missing)
        self._seq = seq
        self._pad = pad

    def _get(self, i):
        return self._seq[i] if i < self._m else self._pad

    def _check(self, i, value):
        if i >= self._m:
            raise TypeError(
                f"item {i} of this batch is padding (only the first {self._m} items "
                "come from the source) and cannot be assigned; assign only to "
                f"batch[:{self._m}]"
            )
        return check_item(self._seq, i, value)

    def _set(self, i, value):
        item_setter(self._seq)(i, value)

    def _fuse(self, indices):
        # The padding is stacked once, as a one-row source repeated where needed.
        inside = np.flatnonzero(indices < self._m)
        outside = np.flatnonzero(indices >= self._m)
        maps, positions = [], []
        if len(inside):
            maps.append(fuse(self._seq, indices[inside]))
            positions.append(inside)
        if len(outside):
            try:
                pad = _repeated_rows(stack([self._pad]), len(outside))
            except (TypeError, ValueError):
                pad = None
            if pad is None:
                return Items(self, indices)
            maps.append(pad)
            positions.append(outside)
        merged = merge_source_maps(maps, positions, len(indices))
        return Items(self, indices) if merged is None else merged


def _repeated_rows(stacked, count):
    """A source map repeating the one-sample stack ``stacked`` count times, or None."""
    if type(stacked) is tuple:
        children = [_repeated_rows(x, count) for x in stacked]
        return None if None in children else tuple(children)
    if isinstance(stacked, np.ndarray):
        return Rows((stacked,), None, np.zeros(count, np.int64), stacked.dtype,
                    stacked.shape[1:])
    return None


class BatchView(View):
    """Batches of ``k`` consecutive items of a sequence (see :func:`batch`)."""

    __slots__ = ("_seq", "_k", "_src_n", "_pad", "_collate", "_reads_views",
                 "_reads_ranges")

    def __init__(self, seq, k, drop_last, pad, collate_fn):
        src_n = length(seq, "batch")
        View.__init__(self, _indexmaps.batch_count(src_n, k, drop_last))
        self._seq = seq
        self._k = k
        self._src_n = src_n
        self._pad = pad
        self._collate = collate_fn
        # stack reads a view of items in one fused pass: it gets the view itself.
        # Other collate functions may read the items more than once (the seed
        # example's reads them once per field): they get a list, as in SeqTools
        # 1.x, so that items computed by smap & co. are computed once.
        self._reads_views = collate_fn is stack
        # stack of a view or array reads rows start:stop of it directly, without
        # the slice view (stacking.stack_range).
        self._reads_ranges = self._reads_views and isinstance(seq, (View, np.ndarray))

    def _get(self, b):
        start = b * self._k
        stop = min(start + self._k, self._src_n)
        if self._reads_ranges and (self._pad is None or stop - start == self._k):
            try:
                return stack_range(self._seq, start, stop)
            except Exception as exc:
                raise_evaluation_error(self, b, exc)
        chunk = _slice_of(self._seq, start, stop)
        if self._pad is not None and stop - start < self._k:
            chunk = _pad_batch(chunk, self._pad, self._k - (stop - start))
        if self._collate is None:
            return chunk
        if not self._reads_views and isinstance(chunk, View):
            chunk = list(chunk)
        try:
            return self._collate(chunk)
        except Exception as exc:
            raise_evaluation_error(self, b, exc)

    def _copy_job(self, b):
        """Batch ``b`` as a copy to run (see View._copy_job), or None."""
        start = b * self._k
        stop = min(start + self._k, self._src_n)
        if not self._reads_ranges or (self._pad is not None and stop - start < self._k):
            return None
        try:
            return copy_job(self._seq, np.arange(start, stop, dtype=np.int64))
        except Exception as exc:
            raise_evaluation_error(self, b, exc)

    def _check(self, b, values):
        start = b * self._k
        m = min(self._k, self._src_n - start)
        values = _group_values(values, "batch")
        size = len(values)
        padded = self._pad is not None and m < self._k
        if size != m and not (padded and size == self._k):
            expected = f"{m}" + (f" (or {self._k} with padding)" if padded else "")
            raise ValueError(
                f"batch {b} holds {m} items but {size} values were assigned; "
                f"assign exactly {expected} values"
            )
        return _check_items(self._seq, start, values, m)

    def _set(self, b, values):
        start = b * self._k
        _write_items(self._seq, start, values, min(self._k, self._src_n - start))


def batch(sequence, k, drop_last=False, pad=None, collate_fn=None):
    """Return a view of a sequence in groups of ``k`` items.

    Parameters
    ----------
    sequence : Sequence
        The items. Lists, tuples, arrays and views give batches of their own type
        (a numpy batch is a view of the array); other sequences give lazy views.
        (SeqTools 1.4.1 gives lists: pass ``collate_fn=list`` for those.)
    k : int
        Number of items per batch, ``>= 1``.
    drop_last : bool, optional
        Leave out the last batch when it holds fewer than ``k`` items (it then takes
        precedence over `pad`).
    pad : object, optional
        Value used to fill the last batch up to ``k`` items; ``None`` (the default)
        leaves it short.
    collate_fn : callable, optional
        Called on each batch of items to consolidate it. ``None`` (the default)
        returns the items themselves (a list, array or view, as above). Pass
        :func:`seqtools.stack` for stacked batches (one array per field): when
        `sequence` is a view graph over arrays (gather, slices, concatenate, collate of
        numpy or memory-mapped arrays) the batch is read fused, rows copied
        straight from the sources by one kernel call, padding included; parts that
        run user code (smap...) are read item by item. Failures of `collate_fn`
        raise :class:`~seqtools.EvaluationError` naming the batch.

    Returns
    -------
    Sequence
        ``ceil(len(sequence) / k)`` batches (``floor`` with `drop_last`).
        Assigning a batch writes its items into `sequence`.

    Raises
    ------
    TypeError
        If `k` is not an integer or `sequence` has no length.
    ValueError
        If `k` < 1.

    Examples
    --------
    >>> import seqtools
    >>> data = list(range(10))
    >>> batches = seqtools.batch(data, 4, pad=-1)
    >>> batches[0], batches[-1]
    ([0, 1, 2, 3], [8, 9, -1, -1])
    >>> len(seqtools.batch(data, 4, drop_last=True))
    2
    >>> import numpy as np
    >>> pairs = seqtools.collate([np.arange(20.0).reshape(10, 2), data])
    >>> x, y = seqtools.batch(pairs, 4, pad=(np.zeros(2), -1),
    ...                       collate_fn=seqtools.stack)[-1]
    >>> x.shape, y
    ((4, 2), array([ 8,  9, -1, -1]))
    """
    k = check_int(k, "k (the batch size)", "batch", 1)
    if collate_fn is not None and not callable(collate_fn):
        raise TypeError(
            f"batch(): collate_fn must be callable, got {type(collate_fn).__name__}"
        )
    return BatchView(sequence, k, bool(drop_last), pad, collate_fn)


class UnbatchView(View):
    """The items of a sequence of batches, in order (see :func:`unbatch`)."""

    __slots__ = ("_seq", "_bs", "_nb", "_last")

    def __init__(self, seq, batch_size, last_batch_size):
        nb = length(seq, "unbatch", "sequence of batches")
        n = 0 if nb == 0 else (nb - 1) * batch_size + last_batch_size
        View.__init__(self, n)
        self._seq = seq
        self._bs = batch_size
        self._nb = nb
        self._last = last_batch_size

    def _short_batch(self, b, exc):
        size = self._last if b == self._nb - 1 else self._bs
        raise ValueError(
            f"unbatch(): batch {b} of the source has fewer than {size} items; check "
            "batch_size and last_batch_size (the last batch may be shorter)"
        ) from exc

    def _get(self, i):
        b, o = _indexmaps.unbatch_locate(i, self._n, self._bs)
        try:
            return self._seq[b][o]
        except IndexError as exc:
            self._short_batch(b, exc)

    def _check(self, i, value):
        b, o = _indexmaps.unbatch_locate(i, self._n, self._bs)
        batch = self._seq[b]
        if hasattr(batch, "__len__") and o >= len(batch):
            self._short_batch(b, None)
        return check_item(batch, o, value)

    def _set(self, i, value):
        b, o = _indexmaps.unbatch_locate(i, self._n, self._bs)
        try:
            item_setter(self._seq[b])(o, value)
        except IndexError as exc:
            self._short_batch(b, exc)

    def _iter(self):
        seq, nb = self._seq, self._nb
        for b in range(nb):
            size = self._last if b == nb - 1 else self._bs
            count = 0
            for count, item in enumerate(itertools.islice(seq[b], size), 1):  # noqa: B007
                yield item
            if count < size:
                self._short_batch(b, None)


def unbatch(sequence, batch_size, last_batch_size=None):
    """Return a view of the items of a sequence of batches, concatenated.

    Reverses the effect of :func:`batch`.

    Parameters
    ----------
    sequence : Sequence of Sequence
        The batches.
    batch_size : int
        Number of items of every batch but the last, ``>= 1``.
    last_batch_size : int, optional
        Number of items of the last batch, ``0 <= last_batch_size <= batch_size``,
        where ``None`` (the default) and 0 mean `batch_size` (a full last batch):
        ``len(items) % batch_size`` is the natural argument. Items past these
        sizes (padding) are left out.

    Returns
    -------
    Sequence
        A view of ``(len(sequence) - 1) * batch_size + last_batch_size`` items.
        Assigning an item writes it into its batch.

    Raises
    ------
    TypeError
        If a size is not an integer or `sequence` has no length.
    ValueError
        If a size is out of range. Reading from a batch shorter than announced also
        raises ValueError.

    Examples
    --------
    >>> import seqtools
    >>> batches = [[0, 1, 2], [3, 4, 5], [6, -1, -1]]
    >>> list(seqtools.unbatch(batches, 3, last_batch_size=1))
    [0, 1, 2, 3, 4, 5, 6]
    >>> items = list(range(9))
    >>> len(seqtools.unbatch(seqtools.batch(items, 3), 3, len(items) % 3))
    9
    """
    batch_size = check_int(batch_size, "batch_size", "unbatch", 1)
    if last_batch_size is None:
        last_batch_size = batch_size
    else:
        last_batch_size = check_int(last_batch_size, "last_batch_size", "unbatch", 0)
        if last_batch_size > batch_size:
            raise ValueError(
                f"unbatch(): last_batch_size ({last_batch_size}) cannot exceed "
                f"batch_size ({batch_size})"
            )
        if last_batch_size == 0:  # as SeqTools 1.4.1 reads it: len(items) % k
            last_batch_size = batch_size
    return UnbatchView(sequence, batch_size, last_batch_size)


class SplitView(View):
    """Parts ``seq[starts[p]:stops[p]]`` of a sequence (see :func:`split`)."""

    __slots__ = ("_seq", "_starts", "_stops")

    def __init__(self, seq, starts, stops):
        View.__init__(self, len(starts))
        self._seq = seq
        self._starts = starts.tolist()
        self._stops = stops.tolist()

    def _get(self, p):
        return _slice_of(self._seq, self._starts[p], self._stops[p])

    def _check(self, p, values):
        start, stop = self._starts[p], self._stops[p]
        values = _group_values(values, "part")
        size = len(values)
        if size != stop - start:
            raise ValueError(
                f"part {p} holds {stop - start} items but {size} values were "
                "assigned; parts cannot change size"
            )
        return _check_items(self._seq, start, values, size)

    def _set(self, p, values):
        start, stop = self._starts[p], self._stops[p]
        _write_items(self._seq, start, values, stop - start)


def split(sequence, edges):
    """Split a sequence into a succession of parts.

    Parameters
    ----------
    sequence : Sequence
        The sequence to cut. Lists, tuples, arrays and views give parts of their own
        type; other sequences give lazy views.
    edges : int, Sequence of int, or Sequence of (int, int)
        How to cut:

        - an int ``m >= 0``: ``m`` cuts into ``m + 1`` parts of equal size, which
          must divide ``len(sequence)``;
        - cut points: non-decreasing indices in ``[0, len(sequence)]``, the beginning
          and the end being implicit (equal cuts give empty parts);
        - ``(start, stop)`` pairs with ``0 <= start <= stop <= len(sequence)``, in any
          order, possibly overlapping.

    Returns
    -------
    Sequence
        A view of the parts. Assigning a part writes its items into `sequence`.

    Raises
    ------
    TypeError
        If `edges` holds non-integers or `sequence` has no length.
    ValueError
        If a cut point or a pair is out of range, cut points decrease, or the
        number of parts does not divide the length.

    Examples
    --------
    >>> import seqtools
    >>> data = list(range(10))
    >>> list(seqtools.split(data, [4, 6]))
    [[0, 1, 2, 3], [4, 5], [6, 7, 8, 9]]
    >>> list(seqtools.split(data, [(0, 2), (5, 8)]))
    [[0, 1], [5, 6, 7]]
    >>> list(seqtools.split(data, 1))
    [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]
    """
    n = length(sequence, "split")
    if isinstance(edges, (float, bool)):
        raise TypeError(
            f"split(): edges must be an int, cut points or (start, stop) pairs, "
            f"got {type(edges).__name__}"
        )
    scalar = not isinstance(edges, np.ndarray) or edges.ndim == 0
    if scalar and hasattr(edges, "__index__"):
        cuts = check_int(edges, "edges (a number of cuts)", "split", 0)
        parts = cuts + 1
        if n % parts:
            raise ValueError(
                f"split(): {cuts} cuts make {parts} parts, which does not divide the "
                f"{n} items; pass explicit cut points for unequal parts"
            )
        size = n // parts
        starts = np.arange(parts, dtype=np.int64) * size
        return SplitView(sequence, starts, starts + size)
    try:
        arr = np.asarray(edges)
    except ValueError:  # ragged
        arr = np.asarray(edges, dtype=object)
    if arr.dtype == bool or (arr.size and arr.dtype.kind not in "iu"):
        raise TypeError(
            "split(): edges must be integer cut points or (start, stop) pairs of "
            f"integers, got {edges!r}"
        )
    if arr.ndim == 1:
        starts, stops = _indexmaps.split_bounds_from_cuts(arr, n)
    elif arr.ndim == 2 and arr.shape[1] == 2:
        starts, stops = _indexmaps.split_check_pairs(arr[:, 0], arr[:, 1], n)
    else:
        raise ValueError(
            "split(): edges must be a 1-D sequence of cut points or a sequence of "
            f"(start, stop) pairs, got an array of shape {arr.shape}"
        )
    return SplitView(sequence, starts, stops)
