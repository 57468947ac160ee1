"""Helpers of the fused-read tests (test_fusion, test_stacking, test_shape,
test_worker): reference results, random arrays and view graphs.

The per-item path is ``stack(list(view))``: every item read through the views, then
stacked. The fused path must give the same arrays, bit for bit, with the same
structure, shapes and dtypes.
"""

import numpy as np

import seqtools
from seqtools import stack

DTYPES = [np.float64, np.float32, np.int64, np.int8, np.uint16, np.bool_,
          np.complex64, np.dtype([("a", "<i2"), ("b", "<f4")])]


def assert_same(result, expected):
    assert type(result) is type(expected)
    if isinstance(expected, (tuple, list)):
        assert len(result) == len(expected)
        for r, e in zip(result, expected):
            assert_same(r, e)
    elif isinstance(expected, dict):
        assert list(result) == list(expected)
        for k in expected:
            assert_same(result[k], expected[k])
    else:
        assert result.dtype == expected.dtype
        assert result.shape == expected.shape
        assert result.flags.c_contiguous
        # Bit for bit (NaN payloads, -0.0, padding bytes of strings included).
        assert result.tobytes() == expected.tobytes()


def per_item(view):
    """The reference: every item read through the views, then stacked."""
    return stack(list(view))


def random_array(rng, n, row_shape, dtype, layout="c"):
    shape = (n,) + row_shape
    if np.dtype(dtype).names:
        a = np.zeros(shape, dtype)
        a["a"] = rng.integers(-100, 100, shape)
        a["b"] = rng.standard_normal(shape)
    elif np.dtype(dtype).kind == "b":
        a = rng.integers(0, 2, shape).astype(dtype)
    elif np.dtype(dtype).kind == "c":
        a = (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)
    else:
        a = (rng.standard_normal(shape) * 50).astype(dtype)
    if layout == "fortran":
        a = np.asfortranarray(a)
    elif layout == "reverse":  # negative outer stride
        a = np.ascontiguousarray(a[::-1])[::-1]
    elif layout == "step" and len(row_shape) and row_shape[-1] > 1:
        wide = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)
        wide[..., ::2] = a
        a = wide[..., ::2]
    return a


def random_chunks(rng, total, row_shape, dtype, layout="c"):
    """Arrays of random lengths (empty ones included) holding ``total`` rows."""
    cuts = np.sort(rng.integers(0, total + 1, size=rng.integers(0, 5)))
    bounds = [0, *cuts.tolist(), total]
    data = random_array(rng, total, row_shape, dtype)
    chunks = []
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        c = data[lo:hi]
        if layout != "c":
            c = random_array(rng, 0, row_shape, dtype, layout)[:0] if hi == lo else c
            c = np.asfortranarray(c) if layout == "fortran" else c
        chunks.append(c)
    return chunks, data


def seed_like_dataset(rng, tmp_path):
    chunks = []
    for k, n in enumerate([50, 50, 23]):
        np.save(tmp_path / f"d{k}.npy", random_array(rng, n, (6,), np.float64))
        chunks.append(np.load(tmp_path / f"d{k}.npy", mmap_mode="r"))
    labels = np.arange(123)  # unique: a batch's labels are its indices
    data = np.concatenate([np.asarray(c) for c in chunks])
    return seqtools.collate([seqtools.concatenate(chunks), labels])[:-20], data, labels


def call_stream(seed, k, batch_size, n):
    """The indices of call ``k`` of minibatches(seed), as documented."""
    block, offset = divmod(k, 256)
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block,)))
    drawn = rng.integers(0, n, 256 * batch_size, dtype=np.int64)
    return drawn[offset * batch_size : (offset + 1) * batch_size]


def ring_block(a):
    """The ring Block an array received from a worker views."""
    base = a
    while isinstance(base, np.ndarray):
        base = base.base
    return base.obj if isinstance(base, memoryview) else base
