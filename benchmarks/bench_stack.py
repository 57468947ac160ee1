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

Second table, the seed workload (64 random rows of 248 float64 from memory-mapped
``.npy`` chunks under ``collate([concatenate(chunks), labels])[:-10000]``), in
batches/s, interleaved, medians with min-max, ratios to numpy fancy indexing:

- one thread: the fused sampler (the seed's sampler written
  ``seqtools.stack(seqtools.gather(dataset, subset))``), ``seqtools.minibatches``,
  the seed's own sampler (items read one by one, then ``np.stack``), and numpy
  fancy indexing per chunk (the baseline);
- through ``load_buffers(nworkers=2)``: the fused sampler, ``minibatches``, the
  seed's own sampler;
- with ``--upstream-python PATH|auto`` (an interpreter with SeqTools 1.4.1, which
  shares our import name, so it runs in a subprocess): its ``prefetch(method='process',
  shm_size=...)`` running the seed's sampler and a numpy fancy-indexing sampler.

Run: ``python benchmarks/bench_stack.py [--repeats R] [--batches 3000] [--quick]
[--upstream-python PATH|auto] [--skip-stacking]``; ``--repeats`` sets the
repetitions of both tables (default: 30 and 5).
"""

import os
import platform
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from _common import (  # noqa: E402
    MIN_SECONDS,
    FancySampler,
    SeedSampler,
    SeedWorkdir,
    UpstreamPrefetch,
    calls_per_second,
    interleaved,
    load_seed_dataset,
)

import seqtools  # noqa: E402
from seqtools.batching.stacking import plan  # noqa: E402

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


# -- the seed workload -------------------------------------------------------------


class FusedSampler(SeedSampler):
    """The seed's sampler written with seqtools calls: a fused read."""

    def __call__(self):
        subset = np.random.choice(len(self.dataset), self.batch_size)
        return seqtools.stack(seqtools.gather(self.dataset, subset))


def seed_workload(args):
    n = args.batches
    with SeedWorkdir() as workdir:
        chunks, labels = load_seed_dataset(workdir)
        dataset = seqtools.collate([seqtools.concatenate(chunks), labels])[:-10000]
        fused = FusedSampler(dataset, 64)
        seed = SeedSampler(dataset, 64)
        fancy = FancySampler(chunks, labels, len(dataset), 64)
        mini = seqtools.minibatches(dataset, 64, seed=args.seed)
        np.random.seed(args.seed)
        for s in (fused, mini):  # the fused samplers return what the seed's does
            x, y = s()
            assert x.shape == (64, 248) and x.dtype == np.float64
            assert y.shape == (64,) and y.dtype == labels.dtype
        ref_subset = np.random.RandomState(1).choice(len(dataset), 64)
        got = seqtools.stack(seqtools.gather(dataset, ref_subset))
        exp = list(seqtools.gather(dataset, ref_subset))
        assert np.array_equal(got[0], np.stack([e[0] for e in exp]))
        assert np.array_equal(got[1], np.stack([e[1] for e in exp]))
        loaders = {
            "fused": seqtools.load_buffers(fused, max_cached=10, nworkers=2),
            "minibatches": seqtools.load_buffers(mini, max_cached=10, nworkers=2),
            "seed": seqtools.load_buffers(seed, max_cached=10, nworkers=2),
        }
        for loader in loaders.values():
            next(loader)

        def inline(fn):
            return calls_per_second(fn, n)

        def through(loader):
            return calls_per_second(loader.__next__, n)

        upstreams = {kind: UpstreamPrefetch(args.upstream_python, workdir, kind)
                     for kind in ("seed", "fancy")}

        def upstream(kind):
            return lambda: upstreams[kind].rate(n)

        configs = [
            ("numpy fancy indexing per chunk, inline (baseline)", inline(fancy)),
            ("fused sampler: stack(gather(...)), inline", inline(fused)),
            ("seqtools.minibatches, inline", inline(mini)),
            ("seed's own sampler, inline", inline(seed)),
            ("fused sampler, load_buffers(nworkers=2)", through(loaders["fused"])),
            ("seqtools.minibatches, load_buffers(nworkers=2)",
             through(loaders["minibatches"])),
            ("seed's own sampler, load_buffers(nworkers=2)", through(loaders["seed"])),
            ("SeqTools 1.4.1 prefetch(process, shm), seed's sampler",
             upstream("seed")),
            ("SeqTools 1.4.1 prefetch(process, shm), numpy fancy sampler",
             upstream("fancy")),
        ]
        results = interleaved(configs, args.seed_repeats,
                              progress=lambda s: print(s, file=sys.stderr))
        for loader in list(loaders.values()) + list(upstreams.values()):
            loader.close()
    return results


def print_seed_table(results, args):
    load = os.getloadavg()
    print()
    print(f"Seed workload: 64 x (248,) float64 + int64 label per batch, each row "
          f"timed over {args.batches} batches at a time for at least {MIN_SECONDS:g} s, "
          f"x {args.seed_repeats} interleaved repetitions (every other one in "
          "reverse order), "
          f"{os.cpu_count()} cores, load average {load[0]:.1f} / {load[1]:.1f} "
          "(1 / 5 min) at the end")
    if not args.upstream_python:
        print("(SeqTools 1.4.1 rows skipped: pass --upstream-python PATH or auto)")
    print()
    base_name = "numpy fancy indexing per chunk, inline (baseline)"
    base = statistics.median(results[base_name])
    up = results["SeqTools 1.4.1 prefetch(process, shm), seed's sampler"]
    up_med = statistics.median(up) if up else None
    print("| configuration | batches/s (median) | min-max | ratio to fancy "
          "indexing | ratio to 1.4.1 seed |")
    print("|---|---:|---:|---:|---:|")
    for name, values in results.items():
        if not values:
            print(f"| {name} | skipped | | | |")
            continue
        med = statistics.median(values)
        to_up = f"{med / up_med:.2f}x" if up_med else ""
        print(f"| {name} | {med:,.0f} | {min(values):,.0f}-{max(values):,.0f} | "
              f"{med / base:.2f}x | {to_up} |")
    mine = results["seed's own sampler, load_buffers(nworkers=2)"]
    if up and len(up) == len(mine):
        paired = [a / b for a, b in zip(mine, up)]
        print(f"\nthe seed's own sampler through load_buffers(nworkers=2) / SeqTools "
              f"1.4.1 on it, timed back to back: per repetition "
              f"{', '.join(f'{r:.2f}x' for r in paired)} (median "
              f"{statistics.median(paired):.2f}x; issue 4 aims at >= 5x)")


def main():
    parser = _common.parser(__doc__, repeats="30 for stacking, 5 for the seed table",
                            batches="3000, the seed table")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-stacking", action="store_true",
                        help="only the seed-workload table")
    args = _common.parse_args(parser)
    args.repeat = _common.repeats(args, 30)
    args.seed_repeats = _common.repeats(args, 5)
    args.batches = _common.batches(args, 3000)
    if args.skip_stacking:
        print_seed_table(seed_workload(args), args)
        return
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
    print_seed_table(seed_workload(args), args)


if __name__ == "__main__":
    main()
