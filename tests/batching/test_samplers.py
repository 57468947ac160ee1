"""Tests of seqtools.batching.samplers: minibatches, inline and pickled."""

import pickle
import subprocess
import sys

import pytest
from fused_helpers import assert_same, call_stream, seed_like_dataset

import seqtools


def test_minibatches_inline(rng, tmp_path):
    dataset, data, labels = seed_like_dataset(rng, tmp_path)
    sampler = seqtools.minibatches(dataset, 16, seed=42)
    x, y = sampler()
    assert x.shape == (16, 6) and y.shape == (16,)
    # reproducible: batch k's indices come from SeedSequence(42, spawn_key=(k // 256,))
    idx = call_stream(42, 0, 16, 103)
    assert_same((x, y), (data[idx], labels[idx]))
    again = pickle.loads(pickle.dumps(seqtools.minibatches(dataset, 16, seed=42)))
    assert_same(again(), (x, y))
    auto = seqtools.minibatches(dataset, 4)
    assert isinstance(auto.seed, int)
    with pytest.raises(ValueError):
        seqtools.minibatches(dataset, 0)
    with pytest.raises(TypeError):
        seqtools.minibatches(dataset, 2.0)


def test_sampler_pickled_to_a_subprocess(rng, tmp_path):
    dataset, data, labels = seed_like_dataset(rng, tmp_path)
    sampler = seqtools.minibatches(dataset, 8, seed=3)
    first = sampler()  # compiles and caches the program before pickling
    code = ("import pickle, sys; s = pickle.load(sys.stdin.buffer); "
            "pickle.dump([s(), s()], sys.stdout.buffer)")
    # cwd: a `python -c` child puts its working folder first on sys.path, where a
    # source checkout's uncompiled seqtools/ would shadow the installed package.
    done = subprocess.run([sys.executable, "-c", code], check=True, cwd=tmp_path,
                          input=pickle.dumps(sampler), capture_output=True)
    got = pickle.loads(done.stdout)
    # a pickled sampler goes on from its position: calls 1 and 2
    fresh = seqtools.minibatches(dataset, 8, seed=3)
    assert_same(fresh(), first)
    assert_same(got[0], fresh())
    assert_same(got[1], fresh())
    for x, y in got:
        assert_same(x, data[y])
