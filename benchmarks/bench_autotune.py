"""nworkers="auto" against every fixed setting, per workload.

For each workload, ``load_buffers`` (worker processes) runs with each fixed
setting of nworkers in {1, 2, 3, 4} and window (``max_cached``) in {2, 8, 32},
and with ``nworkers="auto"`` (window left at its default, so tuned too). An
auto loader warms up for ``--warmup`` seconds (the tuner explores and settles
there), a fixed one for ``--fixed-warmup`` (its workers start, its window
fills); then its rate is measured over ``--seconds``, the consumer doing
nothing but read. All of that is done ``--rounds`` times, interleaved, and
each setting's rate is its median over the rounds: single measurements on a
shared machine swing by 10-20%, and the best of twelve noisy settings would
otherwise be the luckiest, not the best. The table gives every fixed rate,
their spread, the auto rate (and its rounds), what the tuner chose and auto /
best fixed (target >= 0.9).

Workloads (see bench_peers.py): the seed example's own sampler (items one by
one, ``np.stack``); W1, the same rows with the fused ``stack(gather(...))``;
W2, image-like samples with a per-sample Python augmentation; W3, rows of 1 MiB.

Usage: python benchmarks/bench_autotune.py [--workloads seed,W1,W2,W3]
       [--rounds 3] [--warmup 8] [--fixed-warmup 2] [--seconds 3] [--quick]
       [--out DIR (autotune.json)]
"""

import json
import os
import statistics
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


def run(sampler, rounds, warmup, fixed_warmup, seconds):
    """(median rate per fixed setting, median auto rate, auto's rates, the
    last auto loader's stats())."""
    rates = {setting: [] for setting in FIXED}
    autos = []
    for r in range(rounds):
        for n, w in FIXED:
            with seqtools.load_buffers(sampler, max_cached=w, nworkers=n) as loader:
                rates[(n, w)].append(measure(loader, fixed_warmup, seconds))
            log(f"  round {r + 1}: nworkers={n} window={w}: "
                f"{rates[(n, w)][-1]:,.1f} batches/s")
        with seqtools.load_buffers(sampler, nworkers="auto") as loader:
            autos.append(measure(loader, warmup, seconds))
            s = loader.stats()
        log(f"  round {r + 1}: auto: {autos[-1]:,.1f} batches/s (nworkers="
            f"{s['nworkers']}, window={s['window']}, {s['autotune']})")
    rows = {k: statistics.median(v) for k, v in rates.items()}
    return rows, statistics.median(autos), autos, s


def markdown(name, title, rows, auto, autos, s):
    best = max(rows, key=rows.get)
    lines = [f"### {name}: {title}", "",
             "| window \\ nworkers | 1 | 2 | 3 | 4 |", "|---|---:|---:|---:|---:|"]
    for w in (2, 8, 32):
        lines.append(f"| {w} | " + " | ".join(
            f"{rows[(n, w)]:,.0f}" for n in (1, 2, 3, 4)) + " |")
    lo, hi = min(rows.values()), max(rows.values())
    lines += ["", f"Fixed settings: {lo:,.0f} to {hi:,.0f} batches/s (best: "
              f"nworkers={best[0]}, window={best[1]}). **auto: {auto:,.0f} "
              f"batches/s = {auto / rows[best]:.2f}x the best fixed** (rounds: "
              + ", ".join(f"{a:,.0f}" for a in autos) + f"; the last chose "
              f"nworkers={s['nworkers']}, window={s['window']}; {s['autotune']})."]
    return "\n".join(lines)


def main(argv=None):
    p = _common.parser(__doc__)
    p.add_argument("--workloads", default="seed,W1,W2,W3")
    p.add_argument("--rounds", type=int, default=3,
                   help="interleaved rounds; a setting's rate is its median")
    p.add_argument("--warmup", type=float, default=8.0,
                   help="seconds an auto loader runs before it is measured")
    p.add_argument("--fixed-warmup", type=float, default=2.0,
                   help="seconds a fixed loader runs before it is measured")
    p.add_argument("--seconds", type=float, default=3.0,
                   help="seconds each loader is measured")
    args = _common.parse_args(p, argv)
    if args.quick:
        args.rounds, args.warmup, args.fixed_warmup, args.seconds = 1, 0.5, 0.2, 0.3
    names = [x.strip() for x in args.workloads.split(",")]
    unknown = set(names) - {"seed", *bench_peers.WORKLOADS}
    if unknown:
        p.error(f"unknown workloads {sorted(unknown)}: choose from seed,W1,W2,W3")
    sections, report = [], {"machine": _common.machine_info(), "workloads": {}}
    with tempfile.TemporaryDirectory() as workdir:
        for name, (sampler, title) in samplers(names, workdir).items():
            log(f"{name}: {title}")
            rows, auto, autos, s = run(sampler, args.rounds, args.warmup,
                                       args.fixed_warmup, args.seconds)
            best = max(rows.values())
            report["workloads"][name] = {
                "fixed": {f"{n},{w}": r for (n, w), r in rows.items()},
                "auto": auto, "auto_rounds": autos,
                "auto_over_best": auto / best,
                "chosen": {"nworkers": s["nworkers"], "window": s["window"],
                           "state": s["autotune"]}}
            sections.append(markdown(name, title, rows, auto, autos, s))
    text = "\n\n".join(sections)
    print(text)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "autotune.json"), "w") as f:
            json.dump(report, f, indent=1)
    return report


if __name__ == "__main__":
    main()
