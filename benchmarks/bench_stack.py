"""Benchmark batch stacking: seqtools.stack against np.stack per field (and torch).

Cases (each sample is an ``(array, int label)`` tuple):

- 64 samples of a (248,) float64 array: per-call overhead dominates;
- 128 samples of a (3, 112, 112) float32 image: copy bandwidth dominates;
- the same images as Fortran-order (non-contiguous) views: the strided kernel.
  ``np.stack`` keeps their F layout (its result is not C-contiguous), so this case
  adds ``np.ascontiguousarray(np.stack(...))``, which returns what we do.

Rows: ``seqtools.stack`` allocating its outputs, ``seqtools.stack(out=...)`` into
preallocated arrays (the shared-memory path), ``np.stack`` on the arrays plus
``np.array`` on the labels (the baseline), and ``torch.utils.data.default_collate``
when torch is installed (with one thread, as in DataLoader workers). Within each
repetition every configuration is timed once, in turn, so that drifts of the machine
hit them all alike; the table gives the median time per call, its min-max over the
repetitions, and the ratio of medians to the baseline (below 1: faster).

Run: ``python benchmarks/bench_stack.py [--repeat 30]``.
"""

import argparse
import platform
import statistics
import time

import numpy as np

import seqtools
from seqtools.stacking import plan

try:
    import torch
    from torch.utils.data import default_collate
except ImportError:
    torch = None


def make_cases(rng):
    vectors = [(rng.standard_normal(248), int(rng.integers(10))) for _ in range(64)]
    images = [
        (rng.standard_normal((3, 112, 112), dtype=np.float32), int(rng.integers(10)))
        for _ in range(128)
    ]
    fortran = [(np.asfortranarray(x), y) for x, y in images]
    return {
        "64 x ((248,) float64, int)": vectors,
        "128 x ((3,112,112) float32, int)": images,
        "128 x ((3,112,112) float32 F-order, int)": fortran,
    }


def np_stack(samples):
    return np.stack([s[0] for s in samples]), np.array([s[1] for s in samples])


def np_stack_c(samples):
    return (
        np.ascontiguousarray(np.stack([s[0] for s in samples])),
        np.array([s[1] for s in samples]),
    )


def methods_for(samples):
    p = plan(samples)
    out = p.views(np.empty(p.nbytes, np.uint8))
    methods = {
        "np.stack + np.array (baseline)": lambda: np_stack(samples),
        "seqtools.stack": lambda: seqtools.stack(samples),
        "seqtools.stack(out=)": lambda: seqtools.stack(samples, out=out),
    }
    if not samples[0][0].flags.c_contiguous:
        # np.stack keeps each row's layout (an F-order row stays F-order, so it is a
        # plain copy); seqtools.stack always returns C-contiguous batches.
        methods["np.ascontiguousarray(np.stack) + np.array"] = lambda: np_stack_c(
            samples
        )
    if torch is not None:
        methods["torch default_collate"] = lambda: default_collate(samples)
    return methods


def check(samples):
    expected = np_stack(samples)
    for got in (seqtools.stack(samples),):
        for g, e in zip(got, expected):
            assert g.dtype == e.dtype and np.array_equal(g, e)


def calibrate(fn, target_s=0.005):
    """Number of calls that take about target_s."""
    number = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        dt = time.perf_counter() - t0
        if dt >= target_s or number >= 1 << 16:
            return number
        number *= 2


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if torch is not None:
        # As in DataLoader workers, which set one thread each.
        torch.set_num_threads(1)

    rng = np.random.default_rng(args.seed)
    cases = make_cases(rng)
    configs = []  # (case, method, fn, number)
    for case, samples in cases.items():
        check(samples)
        for name, fn in methods_for(samples).items():
            fn()  # warm up
            configs.append((case, name, fn, calibrate(fn)))

    times = {(case, name): [] for case, name, _, _ in configs}
    for _ in range(args.repeat):
        for case, name, fn, number in configs:  # interleaved
            t0 = time.perf_counter()
            for _ in range(number):
                fn()
            times[case, name].append((time.perf_counter() - t0) / number)

    print(
        f"python {platform.python_version()}, numpy {np.__version__}, "
        f"torch {torch.__version__ + ' (1 thread)' if torch else 'absent'}, "
        f"{platform.machine()}, {args.repeat} repetitions (interleaved)"
    )
    if torch is None:
        print("torch default_collate rows skipped: torch is not installed")
    print()
    print("| case | method | median (us) | min-max (us) | ratio to np.stack |")
    print("| --- | --- | ---: | ---: | ---: |")
    for case in cases:
        base = statistics.median(times[case, "np.stack + np.array (baseline)"])
        for (c, name), ts in times.items():
            if c != case:
                continue
            med = statistics.median(ts)
            print(
                f"| {case} | {name} | {med * 1e6:.1f} | "
                f"{min(ts) * 1e6:.1f}-{max(ts) * 1e6:.1f} | {med / base:.2f} |"
            )


if __name__ == "__main__":
    main()
