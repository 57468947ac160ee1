"""How a view reaches the items of its sources: reads, checked writes.

A view compiles its reads over whatever its sources are -- lists, numpy arrays,
user sequences, other views -- through the functions here: :func:`item_getter`
and :func:`item_reader` (an ``_indexing.Reader``, so that ``view[i]`` costs one C
call per view), :func:`item_setter` and :func:`check_item` for writes. Views take
part through the hooks of :class:`Accessible`, the base of
:class:`seqtools.views.core.View`; a view whose item is an item of one of its
sources inherits its writes from :class:`WriteThrough`.

Item writes
-----------
An assignment (``view[i] = x``, ``view[2:6] = values``, ``view[idx] = values``)
checks every value before it writes any, so that a failed assignment leaves the
sources as they were: ``_check(i, value)`` raises TypeError or ValueError where
``_set(i, value)`` would fail, down the view graph to the sources
(:func:`check_item`: views ask their own ``_check``, numpy arrays try the value on
a scratch row, sequences without ``__setitem__`` refuse), and only then are the
items written. A source that refuses a value it cannot be asked about beforehand
(a user sequence whose ``__setitem__`` raises) can still leave a partial write.

Memory-mapped arrays (``np.memmap``) are read through a plain ``ndarray`` view of
the same memory (:func:`as_source`: ``np.memmap.__getitem__`` is Python code, ten
times slower per item).
"""

import numpy as np

from . import _indexing

__all__ = ["Accessible", "WriteThrough", "item_getter", "item_reader", "item_setter",
           "check_item", "check_items", "as_source"]


class Accessible:
    """The hooks a view offers the views built over it (base of ``View``).

    ``_get(i)`` reads item ``i`` (normalised: ``0 <= i < len``, or any ``i >= 0``
    for an infinite view); ``_getter()`` and ``_reader()`` hand out cheaper ways
    to do the same; ``_check(i, value)`` and ``_set(i, value)`` write an item in
    two steps (see "Item writes" above). Subclasses set ``_n``, the length.
    """

    __slots__ = ()

    def _get(self, i):
        raise NotImplementedError

    def _set(self, i, value):
        """Write ``value``, what ``_check(i, value)`` returned, as item ``i``.

        The base class is read-only.
        """
        raise TypeError(
            f"{type(self).__name__} views do not support item assignment; assign to "
            "their source instead"
        )

    def _check(self, i, value):
        """The value ``_set(i, value)`` will write; raises instead if it would fail.

        Raises TypeError or ValueError (writing nothing) where the write would fail,
        checking the view's sources through :func:`check_item`. Returns ``value``,
        or its items read once (into a list or tuple) when the view reads them
        several times (batch, collate...), so that a lazy value is evaluated once.

        The default refuses on views that do not define ``_set`` (read-only) and
        accepts any value on views that do: a subclass that defines only ``_set``
        (the documented hook) stays writable, but cannot be checked beforehand.
        """
        if type(self)._set is Accessible._set:
            self._set(i, value)  # raises the read-only TypeError
        return value

    def _getter(self):
        """A callable returning item ``i`` for a normalised ``i``, for outer views.

        Defaults to ``self._get``; views override it to hand out something cheaper
        to call (a closure, or a kernel's bound ``read``), since stacked views pay
        one such call per view and per item.
        """
        return self._get

    def _reader(self):
        """An ``_indexing.Reader`` of the items, for outer views to compile into theirs.

        Defaults to calling ``_getter()``; views with a compiled reader return it.
        """
        return _indexing.CallReader(self._getter(), self._n)


class WriteThrough:
    """Checked writes for a view whose item ``i`` is an item of one of its sources.

    A subclass (listed before ``View`` among its bases) defines
    ``_item_source(i) -> (source, j)``: item ``i`` of the view is item ``j`` of
    ``source``, where its writes are checked and made.
    """

    __slots__ = ()

    def _check(self, i, value):
        source, j = self._item_source(i)
        return check_item(source, j, value)

    def _set(self, i, value):
        source, j = self._item_source(i)
        item_setter(source)(j, value)


def item_getter(seq):
    """A callable returning item ``i`` of ``seq`` for a normalised index ``i``.

    Views hand out ``_getter()``, which skips the index checks already done by the
    caller.
    """
    if Accessible in type(seq).__mro__:  # cheaper than isinstance on the ABC
        return seq._getter()
    return seq.__getitem__


def item_reader(seq):
    """An ``_indexing.Reader`` of ``seq``'s items, for a view to compile into its own.

    Views hand out ``_reader()``; lists, tuples, ranges and plain numpy arrays are
    read by their ``sq_item``, other sequences by their ``__getitem__``.
    """
    if isinstance(seq, Accessible):
        return seq._reader()
    kind = type(seq)
    if kind is list or kind is tuple or kind is range or (
        kind is np.ndarray and seq.ndim > 0
    ):
        return _indexing.SequenceReader(seq)
    return _indexing.CallReader(seq.__getitem__, len(seq))


def item_setter(seq):
    """A callable writing item ``i`` of ``seq`` for a normalised index ``i``.

    Writes what :func:`check_item` returned, without checking again.
    """
    if isinstance(seq, Accessible):
        return seq._set
    try:
        return seq.__setitem__
    except AttributeError:
        error = _not_assignable(seq)

        def refuse(i, value):
            raise error

        return refuse


# -- checked writes ------------------------------------------------------------------


def _not_assignable(seq):
    return TypeError(
        f"'{type(seq).__name__}' object does not support item assignment; build "
        "the view over a list or a numpy array to assign items"
    )


def reworded(exc, context, advice=None):
    """A new exception of ``exc``'s kind (TypeError or ValueError) saying where.

    The message is ``"{context}: {exc}"``, followed by ``advice`` if given; the
    caller raises it ``from exc``.
    """
    kind = TypeError if isinstance(exc, TypeError) else ValueError
    message = f"{context}: {exc}"
    if advice:
        message = f"{message.rstrip('.')}; {advice}"
    return kind(message)


def _shown(value, width=60):
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _array_refused(arr, exc, what):
    """``exc`` (numpy refusing ``what``) reworded to name the array's dtype."""
    kind = f"dtype {arr.dtype}"
    if arr.ndim > 1:
        kind += f" and items of shape {arr.shape[1:]}"
    return reworded(exc, f"cannot write {what} into a numpy array of {kind}")


def _check_writeable(arr):
    if not arr.flags.writeable:
        raise ValueError(
            "the numpy array is read-only (its writeable flag is False); assign into "
            "a copy (np.array(a)), or open memory-mapped files with mmap_mode='r+'"
        )


def plain_array(seq):
    """True for numpy arrays whose writes :func:`check_array_rows` can foresee.

    Plain and memory-mapped arrays; subclasses (masked arrays...) convert values
    their own way, and are written unchecked, like lists.
    """
    return type(seq) is np.ndarray or type(seq) is np.memmap


def check_array_rows(arr, rows):
    """Raise, writing nothing, if a numpy ``arr`` refuses one of ``rows`` as an item.

    Each value is tried on a scratch row of the array's dtype and row shape, which
    goes through the same conversion as ``arr[i] = value``; errors name the value
    (TypeError or ValueError, numpy's OverflowError becoming a ValueError).
    """
    _check_writeable(arr)
    scratch = np.empty((1,) + arr.shape[1:], arr.dtype)
    for value in rows:
        try:
            scratch[0] = value
        except (TypeError, ValueError, OverflowError) as exc:
            raise _array_refused(arr, exc, _shown(value)) from exc


def check_array_slice(arr, values):
    """Raise, writing nothing, if ``arr[a:a + len(values)] = values`` would fail.

    Tried on a scratch array of the slice's dtype and shape: a slice assignment
    converts all the values at once, which differs from item by item (a ragged list
    of rows, say).
    """
    _check_writeable(arr)
    scratch = np.empty((len(values),) + arr.shape[1:], arr.dtype)
    try:
        scratch[:] = values
    except (TypeError, ValueError, OverflowError) as exc:
        raise _array_refused(arr, exc, f"these {len(values)} values") from exc


def check_item(seq, i, value):
    """The value to write as item ``i`` (normalised) of ``seq``, checked.

    Raises TypeError or ValueError, writing nothing, where ``seq[i] = value`` would
    fail and it can be known: views answer through their ``_check`` (and return
    the value to hand to their ``_set``), numpy arrays try it on a scratch row,
    sequences without ``__setitem__`` refuse. Other sequences (lists, numpy array
    subclasses...) accept any value.
    """
    if Accessible in type(seq).__mro__:
        return seq._check(i, value)
    if plain_array(seq):
        check_array_rows(seq, (value,))
    elif not hasattr(seq, "__setitem__"):
        raise _not_assignable(seq)
    return value


def check_items(seq, indices, values):
    """The list of values to write over items ``indices`` of ``seq``, checked.

    As :func:`check_item` for each, the error naming the first refused value.
    """
    checked = []
    append = checked.append
    for k, i in enumerate(indices):
        value = values[k]
        try:
            append(check_item(seq, i, value))
        except (TypeError, ValueError) as exc:
            raise reworded(exc, f"values[{k}] (for item {i})") from exc
    return checked


def assigned_values(value, n):
    """``value`` as ``n`` values to assign to ``n`` items.

    Lists, tuples and numpy arrays are taken as they are; other iterables (views,
    generators) are read once into a list, since the values are read twice (checked,
    then written) and a slice of the same view may be assigned onto itself.
    """
    if not (type(value) in (list, tuple)
            or (isinstance(value, np.ndarray) and value.ndim > 0)):
        try:
            value = list(value)
        except TypeError:
            raise TypeError(
                "assigning to a slice or to an index array takes a sequence of "
                f"values, one per item, not {type(value).__name__}"
            ) from None
    if len(value) != n:
        raise ValueError(
            f"attempt to assign a sequence of size {len(value)} to a slice "
            f"of size {n}: views cannot change size"
        )
    return value


def as_source(seq):
    """``seq``, with a memory-mapped array replaced by a plain view of its memory."""
    if isinstance(seq, np.memmap):
        return seq.view(np.ndarray)
    return seq
