"""Item reads through a stack of index views, seqtools vs upstream SeqTools 1.4.1.

The stack is the one a shuffled training loop reads from::

    gather(collate([concatenate(chunks), labels])[:-10000], idx)[i]

over memory-mapped ``.npy`` chunks (18000 x 248 float64 in chunks of 5000) and int
labels. Each implementation runs in its own worker process (ours with this
interpreter, upstream with ``--upstream-python``), both build the stack over the
same files and answer timing requests; repetitions are interleaved between the two
and medians reported.

Usage::

    python benchmarks/bench_views.py --upstream-python /path/to/venv/bin/python
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import textwrap

import numpy as np

ROWS, COLS, CHUNK, HOLDOUT = 18000, 248, 5000, 10000
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Runs in the worker processes; plain Python 3.8 syntax, any seqtools version.
WORKER = textwrap.dedent(
    """
    import json, os, sys, time
    import numpy as np
    import seqtools

    data_dir = sys.argv[1]
    names = sorted(f for f in os.listdir(data_dir) if f.startswith("chunk"))
    chunks = [np.load(os.path.join(data_dir, f), mmap_mode="r") for f in names]
    labels = np.load(os.path.join(data_dir, "labels.npy"))
    idx = np.load(os.path.join(data_dir, "idx.npy"))
    view = seqtools.gather(
        seqtools.collate([seqtools.concatenate(chunks), labels])[:-HOLDOUT], idx
    )
    n = len(view)

    def checksum():
        total = 0.0
        for i in range(0, n, 997):
            x, y = view[i]
            total += float(x[0]) + float(x[-1]) + int(y)
        return total

    def single():
        get = view.__getitem__  # what a sampler does, minus the attribute lookup
        t = time.perf_counter()
        for i in range(n):
            get(i)
        return n / (time.perf_counter() - t)

    def iterate():
        t = time.perf_counter()
        for _ in view:
            pass
        return n / (time.perf_counter() - t)

    try:
        from importlib.metadata import version
        release = version("seqtools")
    except Exception:
        release = getattr(seqtools, "__version__", "?")
    print(json.dumps({"version": release, "checksum": checksum()}))
    sys.stdout.flush()
    for line in sys.stdin:
        mode = line.strip()
        rate = single() if mode == "single" else iterate()
        print(json.dumps({"rate": rate}))
        sys.stdout.flush()
    """
).replace("HOLDOUT", str(HOLDOUT))


def make_data(directory, seed=0):
    rng = np.random.default_rng(seed)
    for k, start in enumerate(range(0, ROWS, CHUNK)):
        size = min(CHUNK, ROWS - start)
        np.save(os.path.join(directory, f"chunk{k:02d}.npy"), rng.random((size, COLS)))
    np.save(os.path.join(directory, "labels.npy"), rng.integers(0, 10, ROWS))
    np.save(os.path.join(directory, "idx.npy"), rng.permutation(ROWS - HOLDOUT))


class Worker:
    """A worker process that built the stack and answers 'single'/'iter' requests."""

    def __init__(self, python, directory, env):
        script = os.path.join(directory, "worker.py")
        with open(script, "w") as f:
            f.write(WORKER)
        self.proc = subprocess.Popen(
            [python, script, directory],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=directory,  # so that `import seqtools` does not pick this checkout
            env=env,
        )
        hello = self.proc.stdout.readline()
        if not hello:
            err = self.proc.stderr.read().strip().splitlines()
            self.proc.wait()
            raise RuntimeError(err[-1] if err else "worker exited without output")
        info = json.loads(hello)
        self.version, self.checksum = info["version"], info["checksum"]

    def rate(self, mode):
        self.proc.stdin.write(mode + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())["rate"]

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--upstream-python",
        help="interpreter with upstream SeqTools installed (adds the comparison)",
    )
    parser.add_argument("--repeats", type=int, default=9, help="interleaved rounds")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench_views_") as directory:
        ours_dir = os.path.join(directory, "ours")
        os.mkdir(ours_dir)
        make_data(directory)
        for name in os.listdir(directory):
            if name.endswith(".npy"):
                os.symlink(os.path.join(directory, name), os.path.join(ours_dir, name))
        env = dict(os.environ)
        ours_env = dict(
            env, PYTHONPATH=os.pathsep.join(filter(None, [REPO, env.get("PYTHONPATH")]))
        )
        upstream_env = {k: v for k, v in env.items() if k != "PYTHONPATH"}

        workers = {"ours": Worker(sys.executable, ours_dir, ours_env)}
        skipped = None
        if args.upstream_python is None:
            skipped = "no --upstream-python given"
        else:
            up_dir = os.path.join(directory, "upstream")
            os.mkdir(up_dir)
            for name in os.listdir(directory):
                if name.endswith(".npy"):
                    os.symlink(
                        os.path.join(directory, name), os.path.join(up_dir, name)
                    )
            try:
                workers["upstream"] = Worker(args.upstream_python, up_dir, upstream_env)
            except (OSError, RuntimeError, ValueError) as e:
                skipped = f"upstream worker failed to start: {e}"
        if "upstream" in workers:
            a, b = workers["ours"].checksum, workers["upstream"].checksum
            if not np.isclose(a, b):
                raise SystemExit(f"checksums differ: ours {a} != upstream {b}")

        modes = {
            "single": "single item read  view[i]",
            "iter": "iteration  for x in view",
        }
        rates = {(w, m): [] for w in workers for m in modes}
        for _ in range(args.repeats):  # interleave implementations and modes
            for mode in modes:
                for name, worker in workers.items():
                    rates[name, mode].append(worker.rate(mode))
        for worker in workers.values():
            worker.close()

    print(
        f"stack: gather(collate([concatenate(chunks), labels])[:-{HOLDOUT}], idx) over "
        f"{ROWS}x{COLS} float64 memmap chunks of {CHUNK}; median of {args.repeats} "
        "interleaved rounds"
    )
    versions = ", ".join(f"{n} {w.version}" for n, w in workers.items())
    print(f"versions: {versions}\n")
    header = "{:28s} {:>14s} {:>17s} {:>14s}".format(
        "", "ours items/s", "upstream items/s", "ours/upstream"
    )
    print(header)
    print("-" * len(header))
    for mode, label in modes.items():
        ours = statistics.median(rates["ours", mode])
        if "upstream" in workers:
            up = statistics.median(rates["upstream", mode])
            print(f"{label:28s} {ours:14,.0f} {up:17,.0f} {ours / up:13.1f}x")
        else:
            print(f"{label:28s} {ours:14,.0f} {'skipped':>17s} {'-':>14s}")
    if skipped:
        print(f"\nupstream rows skipped: {skipped}")


if __name__ == "__main__":
    main()
