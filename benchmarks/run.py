"""Run every benchmark, one after the other, and write their results to one folder.

Each benchmark runs as its own subprocess (``python benchmarks/bench_<topic>.py``,
the same command that runs it alone), so that none inherits another's workers,
threads or memory; their progress lines go to stderr as they come, their tables to
``<out>/<name>.md``. Then ``<out>/results.md`` gathers the machine's description and
every table, and ``bench_peers`` adds ``peers.png`` (throughput against workers, per
loader) and ``peers.json`` (every measurement).

Benchmarks: bench_views, bench_stack, bench_load_buffers, bench_peers,
bench_epochs, bench_autotune, and with ``--seed-example`` the seed example (it
needs scikit-learn: ``pip install .[bench]``).

Usage::

    python -m benchmarks [--out benchmarks/results] [--only peers,stack]
        [--seed-example] [--repeats R] [--batches N] [--scale F] [--quick]
        [--upstream-python PATH|auto]

Every benchmark takes the same flags (``_common.parser``), and this runner passes
those given to each one as they are: ``--repeats`` and ``--batches`` replace each
benchmark's defaults, ``--scale`` multiplies its batch counts, ``--quick`` is the
smallest run (a check that everything runs), ``--out`` receives bench_peers'
files. ``--upstream-python auto`` is resolved here, once (see ``_upstream``).
"""

import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, HERE)
import _common  # noqa: E402

BENCHMARKS = ["views", "stack", "load_buffers", "peers", "epochs", "autotune",
              "seed_example"]
TITLES = {
    "views": "Item reads through a stack of views (bench_views.py)",
    "stack": "Batch stacking (bench_stack.py)",
    "load_buffers": "load_buffers on the seed workload (bench_load_buffers.py)",
    "peers": "Loaders against their peers, W1-W3 (bench_peers.py)",
    "epochs": "Epochs, resume, against DataLoader, DistributedSampler and "
              "StatefulDataLoader (bench_epochs.py)",
    "autotune": 'nworkers="auto" against fixed settings (bench_autotune.py)',
    "seed_example": "The seed example, timed (seed_example.py)",
}


def command(name, args):
    """The command line that runs benchmark ``name`` alone, with the common flags."""
    script = "seed_example.py" if name == "seed_example" else f"bench_{name}.py"
    return [sys.executable, os.path.join(HERE, script)] + _common.forward(args)


def main(argv=None):
    parser = _common.parser(__doc__)
    parser.set_defaults(out=os.path.join("benchmarks", "results"))
    parser.add_argument("--only", default=None,
                        help="comma-separated subset of " + ",".join(BENCHMARKS))
    parser.add_argument("--seed-example", action="store_true",
                        help="also run the seed example (needs scikit-learn)")
    args = _common.parse_args(parser, argv)
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
