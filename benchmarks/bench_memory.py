"""Flat memory over a long run: a million batches through load_buffers.

Prints the resident memory of the parent and of each worker (from /proc) at regular
points of the run, and the growth between the first point (after warm-up) and
the last. A leak of even a few bytes per batch shows as megabytes here.

Usage: python benchmarks/bench_memory.py [--batches 1000000] [--points 10] [--quick]
"""

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402

import seqtools  # noqa: E402


def rss(pid="self"):
    """Resident set size in bytes (Linux /proc)."""
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Sampler:
    """A small minibatch with a dict, a string and two arrays, drawn at random."""

    def __init__(self):
        self.data = np.random.rand(1000, 16)

    def __call__(self):
        idx = np.random.randint(0, 1000, size=32)
        return {"x": self.data[idx], "y": idx, "tag": "batch"}


def main():
    parser = _common.parser(__doc__, repeats="none: one run",
                            batches="1000000 in all")
    parser.add_argument("--points", type=int, default=10)
    args = _common.parse_args(parser)
    args.batches = _common.batches(args, 1_000_000)

    step = args.batches // args.points
    rows = []
    t0 = time.perf_counter()
    with seqtools.load_buffers(Sampler(), max_cached=8, nworkers=2) as it:
        pids = [p.pid for p in it._pool.procs]
        for _ in range(2000):  # warm-up: the ring is sized, caches are filled
            next(it)
        for k in range(args.points + 1):
            rows.append((k * step, time.perf_counter() - t0, rss(),
                         [rss(p) for p in pids]))
            if k == args.points:
                break
            for _ in range(step):
                batch = next(it)
            del batch
    print(f"load_buffers, {args.batches:,} batches of "
          "{x: 32x16 float64, y: 32 int64, tag: str}, 2 workers\n")
    print("| batches | seconds | parent RSS MiB | worker RSS MiB |")
    print("|---:|---:|---:|---|")
    for n, t, parent, workers in rows:
        w = ", ".join(f"{x / 2**20:.1f}" for x in workers)
        print(f"| {n:,} | {t:.0f} | {parent / 2**20:.1f} | {w} |")
    growth = rows[-1][2] - rows[0][2]
    wgrowth = max(b - a for a, b in zip(rows[0][3], rows[-1][3]))
    rate = args.batches / (rows[-1][1] - rows[0][1])
    print(f"\nparent RSS growth: {growth / 2**20:+.2f} MiB "
          f"({growth / args.batches:+.2f} bytes/batch); largest worker growth: "
          f"{wgrowth / 2**20:+.2f} MiB; {rate:,.0f} batches/s")


if __name__ == "__main__":
    main()
