"""Shared pieces of the benchmarks: the seed dataset, timing, and the table.

Every benchmark measures its configurations side by side in one run, interleaved
within each repetition (the machine is shared and noisy), and reports medians with
min-max and ratios to a baseline measured in the same run.
"""

import os
import statistics
import tempfile
import time

import numpy as np

N_SAMPLES = 18000
N_CLASSES = 10
SAMPLE_SHAPE = (248,)
CHUNK_SIZE = 5000


def make_seed_dataset(workdir, seed=0):
    """Write the seed example's files (labels.npy, data_XX.npy) into ``workdir``."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((N_CLASSES, *SAMPLE_SHAPE)) * 3
    labels = rng.integers(N_CLASSES, size=N_SAMPLES)
    np.save(os.path.join(workdir, "labels.npy"), labels)
    n_chunks = -(-N_SAMPLES // CHUNK_SIZE)
    for i in range(n_chunks):
        lo, hi = i * CHUNK_SIZE, min((i + 1) * CHUNK_SIZE, N_SAMPLES)
        data = means[labels[lo:hi]] + rng.standard_normal((hi - lo, *SAMPLE_SHAPE)) * 0.1
        np.save(os.path.join(workdir, f"data_{i:02d}.npy"), data)


def load_seed_dataset(workdir):
    """(data_chunks as read-only memory maps, labels) of a seed dataset folder."""
    labels = np.load(os.path.join(workdir, "labels.npy"))
    files = sorted(f for f in os.listdir(workdir) if f.startswith("data_"))
    chunks = [np.load(os.path.join(workdir, f), mmap_mode="r") for f in files]
    return chunks, labels


class SeedWorkdir:
    """A temporary folder holding the seed dataset."""

    def __enter__(self):
        self._tmp = tempfile.TemporaryDirectory(prefix="seqtools-bench-")
        make_seed_dataset(self._tmp.name)
        return self._tmp.name

    def __exit__(self, *exc):
        self._tmp.cleanup()


def rate(fn, n):
    """Items per second of ``fn(n)``, which must process n items."""
    t0 = time.perf_counter()
    fn(n)
    return n / (time.perf_counter() - t0)


def interleaved(configs, repeats, progress=None):
    """Run each ``(name, fn)`` once per repetition, interleaved; fn returns a rate.

    Returns ``{name: [rates]}`` in the order given.
    """
    results = {name: [] for name, _ in configs}
    for r in range(repeats):
        for name, fn in configs:
            if progress:
                progress(f"rep {r + 1}/{repeats}: {name}")
            value = fn()
            if value is not None:
                results[name].append(value)
    return results


def summarize(results, baseline=None, unit="batches/s"):
    """Markdown table of median (min-max) rates and ratios to ``baseline``."""
    base = statistics.median(results[baseline]) if baseline in results else None
    lines = [f"| configuration | {unit} (median) | min-max | ratio to {baseline} |",
             "|---|---:|---:|---:|"]
    for name, values in results.items():
        if not values:
            lines.append(f"| {name} | skipped | | |")
            continue
        med = statistics.median(values)
        ratio = f"{med / base:.2f}x" if base else ""
        lines.append(f"| {name} | {med:,.0f} | {min(values):,.0f}-{max(values):,.0f} "
                     f"| {ratio} |")
    return "\n".join(lines)
