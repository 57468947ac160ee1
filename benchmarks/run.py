"""Run every benchmark, one after the other, and write their results to one folder.

Each benchmark runs as its own subprocess (``python benchmarks/bench_<topic>.py``,
the same command that runs it alone), so that none inherits another's workers,
threads or memory; their progress lines go to stderr as they come, their tables to
``<out>/<name>.md``. Then ``<out>/results.md`` gathers the machine's description and
every table, and ``bench_peers`` adds ``peers.png`` (throughput against workers, per
loader) and ``peers.json`` (every measurement).

Benchmarks: bench_views, bench_stack, bench_load_buffers, bench_peers,
bench_epochs, and with
``--seed-example`` the seed example (it needs scikit-learn: ``pip install
.[bench]``).

Usage::

    python -m benchmarks [--out benchmarks/results] [--upstream-python PATH]
        [--only peers,stack] [--repeats R] [--scale F] [--batches N]
        [--seed-example]

``--repeats`` is passed to every benchmark (each otherwise keeps its own default);
``--scale`` multiplies the batch counts of bench_stack's seed table,
bench_load_buffers, bench_peers and the seed example; ``--batches`` sets the first
three exactly. ``--upstream-python`` goes to every benchmark that has upstream rows.
"""

import argparse
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import _common  # noqa: E402

BENCHMARKS = ["views", "stack", "load_buffers", "peers", "epochs", "seed_example"]
TITLES = {
    "views": "Item reads through a stack of views (bench_views.py)",
    "stack": "Batch stacking (bench_stack.py)",
    "load_buffers": "load_buffers on the seed workload (bench_load_buffers.py)",
    "peers": "Loaders against their peers, W1-W3 (bench_peers.py)",
    "epochs": "Epochs, resume, against DataLoader and StatefulDataLoader "
              "(bench_epochs.py)",
    "seed_example": "The seed example, timed (seed_example.py)",
}


# Each benchmark's own flags for the shared options, and its default batch count.
REPEAT_FLAGS = {"stack": ["--repeat", "--seed-repeats"], "views": ["--repeats"],
                "load_buffers": ["--repeats"], "peers": ["--repeats"],
                "epochs": ["--repeats", "--latency-repeats"],
                "seed_example": ["--repeats"]}
UPSTREAM = {"views", "stack", "load_buffers", "peers"}
BATCH_FLAGS = {"stack": ("--batches", 3000), "load_buffers": ("--batches", 3000),
               "epochs": ("--batches", 3000),
               "seed_example": ("--iterations", 4000)}


def command(name, args):
    """The command line that runs benchmark ``name`` alone, with ``args`` mapped in."""
    script = "seed_example.py" if name == "seed_example" else f"bench_{name}.py"
    cmd = [sys.executable, os.path.join(HERE, script)]
    if args.repeats is not None:
        for flag in REPEAT_FLAGS[name]:
            cmd += [flag, str(args.repeats)]
    if args.upstream_python and name in UPSTREAM:
        cmd += ["--upstream-python", args.upstream_python]
    if name == "peers":  # its workloads have their own defaults, scaled there
        cmd += ["--out", args.out]
        if args.scale != 1:
            cmd += ["--scale", str(args.scale)]
        if args.batches:
            cmd += ["--batches", str(args.batches)]
    elif name in BATCH_FLAGS and (args.batches or args.scale != 1):
        flag, default = BATCH_FLAGS[name]
        count = args.batches if args.batches and name != "seed_example" else None
        cmd += [flag, str(count or max(1, round(default * args.scale)))]
    return cmd


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=os.path.join("benchmarks", "results"),
                        help="results folder (default: benchmarks/results)")
    parser.add_argument("--upstream-python", default=None,
                        help="interpreter with SeqTools 1.4.1, for the upstream rows")
    parser.add_argument("--only", default=None,
                        help="comma-separated subset of " + ",".join(BENCHMARKS))
    parser.add_argument("--repeats", type=int, default=None,
                        help="repetitions, for every benchmark (default: their own)")
    parser.add_argument("--scale", type=float, default=1.0,
                        help="multiplies the default batch counts")
    parser.add_argument("--batches", type=int, default=None,
                        help="timed batches per measurement (load_buffers, peers)")
    parser.add_argument("--seed-example", action="store_true",
                        help="also run the seed example (needs scikit-learn)")
    args = parser.parse_args(argv)
    args.out = os.path.abspath(args.out)

    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        unknown = sorted(set(names) - set(BENCHMARKS))
        if unknown:
            parser.error(f"unknown benchmark(s) {unknown}; choose from {BENCHMARKS}")
    else:
        names = [n for n in BENCHMARKS if n != "seed_example" or args.seed_example]
    os.makedirs(args.out, exist_ok=True)

    def log(msg):
        print(msg, file=sys.stderr, flush=True)

    info = _common.machine_info(upstream_python=args.upstream_python)
    monitor = _common.LoadMonitor()
    sections, failed = [], []
    t_all = time.perf_counter()
    for i, name in enumerate(names, 1):
        cmd = command(name, args)
        log(f"[{i}/{len(names)}] {name}: {' '.join(cmd[1:])}")
        t0 = time.perf_counter()
        section_load = _common.LoadMonitor()
        # stderr (progress) passes through; stdout (the tables) is kept.
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=REPO)
        elapsed = time.perf_counter() - t0
        others = section_load.summary().get("others_share")
        busy = "" if others is None else f"; other processes: {others:.0%} of machine"
        status = "done" if proc.returncode == 0 else f"FAILED (exit {proc.returncode})"
        log(f"[{i}/{len(names)}] {name}: {status} in {elapsed:.0f} s")
        with open(os.path.join(args.out, f"{name}.md"), "w") as f:
            f.write(proc.stdout)
        body = proc.stdout.strip()
        if proc.returncode != 0:
            failed.append(name)
            body += f"\n\n**failed with exit code {proc.returncode}**"
        if name == "peers" and os.path.exists(os.path.join(args.out, "peers.png")):
            body += "\n\n![throughput against workers, per loader](peers.png)"
        shown = " ".join(os.path.relpath(c, REPO) if os.path.isabs(c) and
                         c.startswith(REPO) else c for c in cmd[1:])
        sections.append(f"## {TITLES[name]}\n\n`python {shown}` "
                        f"({elapsed:.0f} s{busy})\n\n{body}\n")

    machine = _common.machine_markdown(info, monitor.summary())
    header = (f"# seqtools benchmarks\n\n{machine}\n"
              f"- total time: {time.perf_counter() - t_all:.0f} s\n")
    path = os.path.join(args.out, "results.md")
    with open(path, "w") as f:
        f.write(header + "\n" + "\n".join(sections))
    log(f"wrote {path}")
    if failed:
        log(f"failed: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
