"""The seed example's sampler feeding a loop whose step costs almost nothing:
an input-bound loop, and what its loader says about it.

Run: python docs/examples/input_bound.py
"""

import os
import tempfile
import time

import numpy as np

import seqtools


def collate(samples):
    """The seed example's collate: samples into a minibatch."""
    return (np.stack([sample[0] for sample in samples]),
            np.stack([sample[1] for sample in samples]))


class MinibatchSampler:
    """The seed example's sampler: 64 random samples, gathered in Python."""

    def __init__(self, dataset, batch_size):
        self.dataset = dataset
        self.batch_size = batch_size

    def __call__(self):
        subset = np.random.choice(len(self.dataset), self.batch_size)
        return collate(list(seqtools.gather(self.dataset, subset)))


def main(seconds=5.0):
    rng = np.random.default_rng(0)
    labels = rng.integers(10, size=18000)
    means = rng.standard_normal((10, 248)) * 3
    with tempfile.TemporaryDirectory() as workdir:
        chunks = []
        for i, lo in enumerate(range(0, 18000, 5000)):
            path = os.path.join(workdir, f"data_{i:02d}.npy")
            rows = labels[lo:lo + 5000]
            np.save(path, means[rows] + rng.standard_normal((len(rows), 248)) * 0.1)
            chunks.append(np.load(path, mmap_mode="r"))
        dataset = seqtools.collate([seqtools.concatenate(chunks), labels])
        sampler = MinibatchSampler(dataset[:-10000], 64)
        with seqtools.load_buffers(sampler, max_cached=10, nworkers=2) as loader:
            total = np.zeros(248)
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                X, y = next(loader)
                total += X[0]  # a step that costs almost nothing
            print(loader.report())


if __name__ == "__main__":
    main()
