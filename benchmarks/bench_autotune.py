"""nworkers="auto" against every fixed setting, per workload.

For each workload, ``load_buffers`` (worker processes) runs with each fixed
setting of nworkers in {1, 2, 3, 4} and window (``max_cached``) in {2, 8, 32},
and with ``nworkers="auto"`` (window left at its default, so tuned too). Each
loader warms up for ``--warmup`` seconds (the tuner explores and settles there;
the fixed ones start their workers and fill their windows), then its rate is
measured over ``--seconds``, the consumer doing nothing but read. The table
gives every fixed rate, their spread, the auto rate, what the tuner chose and
auto / best fixed (target >= 0.9).

Workloads (see bench_peers.py): the seed example's own sampler (items one by
one, ``np.stack``); W1, the same rows with the fused ``stack(gather(...))``;
W2, image-like samples with a per-sample Python augmentation; W3, rows of 1 MiB.

Usage: python benchmarks/bench_autotune.py [--workloads seed,W1,W2,W3]
       [--warmup 8] [--seconds 4] [--quick] [--out DIR (autotune.json)]
"""

import json
import os
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _common  # noqa: E402
import bench_peers  # noqa: E402

import seqtools  # noqa: E402

FIXED = [(n, w) for n in (1, 2, 3, 4) for w in (2, 8, 32)]


def log(msg):
    """Progress, on stderr (stdout has the tables)."""
    print(msg, file=sys.stderr, flush=True)


def samplers(names, workdir):
    """name -> (sampler, title) of each workload asked for."""
    out = {}
    for name in names:
        if name == "seed":
            wl = bench_peers.WORKLOADS["W1"]
            folder = os.path.join(workdir, "W1")
            if not os.path.isdir(folder):
                os.makedirs(folder)
                wl.make(folder)
            out[name] = (_common.SeedSampler(wl.open(folder), 64),
                         "the seed example's sampler (items one by one, np.stack)")
            continue
        wl = bench_peers.WORKLOADS[name]
        folder = os.path.join(workdir, name)
        if not os.path.isdir(folder):
            os.makedirs(folder)
            wl.make(folder)
        out[name] = (bench_peers.Sampler(wl, wl.open(folder), fused=True),
                     wl.title + ", fused stack")
    return out


def measure(loader, warmup, seconds):
    """Items/s of ``loader`` over ``seconds`` after ``warmup`` seconds."""
    end = time.perf_counter() + warmup
    while time.perf_counter() < end:
        next(loader)
    n, t0 = 0, time.perf_counter()
    while True:
        next(loader)
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= seconds:
            return n / elapsed


def run(sampler, warmup, seconds):
    rows = {}
    for n, w in FIXED:
        with seqtools.load_buffers(sampler, max_cached=w, nworkers=n) as loader:
            rows[(n, w)] = measure(loader, warmup, seconds)
        log(f"  nworkers={n} window={w}: {rows[(n, w)]:,.1f} batches/s")
    with seqtools.load_buffers(sampler, nworkers="auto") as loader:
        auto = measure(loader, warmup, seconds)
        s = loader.stats()
    log(f"  auto: {auto:,.1f} batches/s (nworkers={s['nworkers']}, "
        f"window={s['window']}, {s['autotune']})")
    return rows, auto, s


def markdown(name, title, rows, auto, s):
    best = max(rows, key=rows.get)
    lines = [f"### {name}: {title}", "",
             "| window \\ nworkers | 1 | 2 | 3 | 4 |", "|---|---:|---:|---:|---:|"]
    for w in (2, 8, 32):
        lines.append(f"| {w} | " + " | ".join(
            f"{rows[(n, w)]:,.0f}" for n in (1, 2, 3, 4)) + " |")
    lo, hi = min(rows.values()), max(rows.values())
    lines += ["", f"Fixed settings: {lo:,.0f} to {hi:,.0f} batches/s (best: "
              f"nworkers={best[0]}, window={best[1]}). **auto: {auto:,.0f} "
              f"batches/s = {auto / rows[best]:.2f}x the best fixed** (chose "
              f"nworkers={s['nworkers']}, window={s['window']}; {s['autotune']})."]
    return "\n".join(lines)


def main(argv=None):
    p = _common.parser(__doc__)
    p.add_argument("--workloads", default="seed,W1,W2,W3")
    p.add_argument("--warmup", type=float, default=8.0,
                   help="seconds each loader runs before it is measured")
    p.add_argument("--seconds", type=float, default=4.0,
                   help="seconds each loader is measured")
    args = _common.parse_args(p, argv)
    if args.quick:
        args.warmup, args.seconds = 0.5, 0.3
    names = [x.strip() for x in args.workloads.split(",")]
    unknown = set(names) - {"seed", *bench_peers.WORKLOADS}
    if unknown:
        p.error(f"unknown workloads {sorted(unknown)}: choose from seed,W1,W2,W3")
    sections, report = [], {"machine": _common.machine_info(), "workloads": {}}
    with tempfile.TemporaryDirectory() as workdir:
        for name, (sampler, title) in samplers(names, workdir).items():
            log(f"{name}: {title}")
            rows, auto, s = run(sampler, args.warmup, args.seconds)
            best = max(rows.values())
            report["workloads"][name] = {
                "fixed": {f"{n},{w}": r for (n, w), r in rows.items()},
                "auto": auto, "auto_over_best": auto / best,
                "chosen": {"nworkers": s["nworkers"], "window": s["window"],
                           "state": s["autotune"]}}
            sections.append(markdown(name, title, rows, auto, s))
    text = "\n\n".join(sections)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "autotune.json"), "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
