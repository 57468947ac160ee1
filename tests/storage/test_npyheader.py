"""Tests of seqtools.storage.npyheader against numpy's own writer: every format
version, dtypes, and the damaged headers it must refuse."""

import io

import numpy as np
import pytest

from seqtools.storage.errors import CorruptObject
from seqtools.storage.npyheader import header_length, parse_header


def saved(arr, version=None):
    buf = io.BytesIO()
    if version is None:
        np.save(buf, arr)
    else:
        np.lib.format.write_array(buf, arr, version=version)
    return buf.getvalue()


@pytest.mark.parametrize("version", [None, (1, 0), (2, 0), (3, 0)])
@pytest.mark.parametrize("arr", [
    np.zeros((3, 4)), np.arange(5, dtype=">i2"), np.zeros((0, 7), np.uint8),
    np.zeros((2, 2), dtype=[("a", "<i4"), ("b", "S3")]),
    np.zeros((4, 2, 3), np.complex64),
], ids=["f8", "be-i2", "empty", "record", "c8-3d"])
def test_reads_what_numpy_writes(arr, version):
    raw = saved(arr, version)
    dtype, shape, offset = parse_header(raw, "x.npy", len(raw))
    assert dtype == arr.dtype and shape == arr.shape
    assert offset == header_length(raw, "x.npy")
    assert raw[offset:] == arr.tobytes()


def test_refuses_what_rows_cannot_be_read_from():
    raw = saved(np.array(3.0))
    with pytest.raises(CorruptObject, match="0-d"):
        parse_header(raw, "x.npy", len(raw))
    raw = saved(np.asfortranarray(np.zeros((3, 2))))
    with pytest.raises(CorruptObject, match="Fortran"):
        parse_header(raw, "x.npy", len(raw))
    raw = saved(np.zeros((3, 2)))
    with pytest.raises(CorruptObject, match="truncated") as info:
        parse_header(raw, "s3://b/x.npy", len(raw) - 1)
    assert "s3://b/x.npy" in str(info.value)
    with pytest.raises(CorruptObject, match="longer"):
        parse_header(raw, "x.npy", len(raw) + 1)
    with pytest.raises(CorruptObject, match="not a .npy"):
        parse_header(b"PK\x03\x04" + raw[4:], "x.npy", len(raw))
    with pytest.raises(CorruptObject, match="version"):
        parse_header(raw[:6] + b"\x09\x00" + raw[8:], "x.npy", len(raw))
    with pytest.raises(CorruptObject, match="corrupt"):
        parse_header(raw.replace(b"'shape'", b"'shapX'"), "x.npy", len(raw))
    with pytest.raises(CorruptObject, match="truncated"):
        parse_header(raw[:30], "x.npy", len(raw))
