"""The header of a ``.npy`` file read from its first bytes: dtype, shape, where the
data starts.

A remote array reads the header once, when it is opened, from one range request,
and then reads rows as byte ranges after it. The format (numpy's NEP 1): the magic
``\\x93NUMPY``, a major and a minor version byte, the header length (2 bytes little
endian in version 1, 4 bytes in versions 2 and 3), and the header, a Python dict
literal with the keys ``descr``, ``fortran_order`` and ``shape`` (latin-1 text,
UTF-8 in version 3). Anything else is a :class:`~.errors.CorruptObject`.
"""

import ast
import math
import struct

import numpy as np

from .errors import CorruptObject

__all__ = ["MAGIC", "PROBE_BYTES", "header_length", "parse_header"]

MAGIC = b"\x93NUMPY"
#: Bytes read first: numpy writes headers of 128 bytes, a few KiB for wide records.
PROBE_BYTES = 4096
# numpy's own bound for a header it reads (np.load's max_header_size), with room:
# a longer one is corruption, not a dtype.
_MAX_HEADER = 1 << 20


def header_length(prefix, url):
    """The total length (prefix, length field and header) of the header that
    ``prefix``, the first bytes of the file, starts; raises CorruptObject if they
    are not the start of a ``.npy`` file."""
    if len(prefix) < 10 or prefix[:6] != MAGIC:
        raise CorruptObject(
            f"{url} is not a .npy file: it does not start with the .npy magic "
            f"(first bytes {bytes(prefix[:8])!r}); open_npy reads files written by "
            "numpy.save", url, (0, min(len(prefix), 8)))
    major = prefix[6]
    if major == 1:
        (n,) = struct.unpack("<H", bytes(prefix[8:10]))
        return 10 + n
    if major in (2, 3):
        if len(prefix) < 12:
            raise CorruptObject(f"{url}: the .npy header is truncated "
                                f"({len(prefix)} bytes)", url, (0, len(prefix)))
        (n,) = struct.unpack("<I", bytes(prefix[8:12]))
        if n > _MAX_HEADER:
            raise CorruptObject(
                f"{url}: the .npy header claims {n} bytes, more than any dtype "
                "needs: the file is corrupt", url, (8, 12))
        return 12 + n
    raise CorruptObject(
        f"{url}: unsupported .npy format version {major}.{prefix[7]} (numpy "
        "writes 1.0, 2.0 and 3.0)", url, (6, 8))


def parse_header(head, url, size):
    """``(dtype, shape, data_offset)`` of the ``.npy`` file whose first bytes are
    ``head`` (at least :func:`header_length` of them) and whose size is ``size``.

    Raises CorruptObject when the header cannot be read, describes data that rows
    cannot be read from (Fortran order with more than one dimension, Python
    objects, zero dimensions), or the size does not match it.
    """
    total = header_length(head, url)
    if len(head) < total:
        raise CorruptObject(
            f"{url}: the .npy header is truncated: it needs {total} bytes, the "
            f"object holds {len(head)}", url, (0, total))
    start = 10 if head[6] == 1 else 12
    encoding = "utf8" if head[6] == 3 else "latin1"
    try:
        text = bytes(head[start:total]).decode(encoding)
        header = ast.literal_eval(text)
        descr, fortran, shape = (header["descr"], header["fortran_order"],
                                 header["shape"])
        dtype = np.lib.format.descr_to_dtype(descr)
        if (not isinstance(shape, tuple)
                or not all(type(d) is int and d >= 0 for d in shape)
                or type(fortran) is not bool):
            raise ValueError("bad shape or fortran_order")
    except Exception as exc:  # any failure to read it is a corrupt header
        raise CorruptObject(
            f"{url}: the .npy header is corrupt ({type(exc).__name__}: {exc}); "
            "write the file again with numpy.save", url, (0, total)) from None
    if len(shape) == 0:
        raise CorruptObject(
            f"{url} holds a 0-d array: open_npy needs arrays with rows (ndim >= 1)",
            url, (0, total))
    if dtype.hasobject:
        raise CorruptObject(
            f"{url} holds Python objects (dtype {dtype}), pickled: they cannot be "
            "read as byte ranges; save an array of numbers or bytes", url,
            (0, total))
    if fortran and len(shape) > 1:
        raise CorruptObject(
            f"{url} is in Fortran order: its rows are not contiguous bytes; save "
            "it with numpy.save(path, numpy.ascontiguousarray(a))", url, (0, total))
    expected = total + math.prod(shape) * dtype.itemsize
    if size != expected:
        what = "truncated" if size < expected else "longer than its header says"
        raise CorruptObject(
            f"{url} is {what}: its header describes {shape} {dtype} data ending at "
            f"byte {expected}, the object holds {size} bytes; upload it again",
            url, (min(size, expected), max(size, expected)))
    return dtype, shape, total
