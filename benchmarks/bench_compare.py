"""Before/after: the same rows timed on two builds of seqtools, side by side.

For a change that should not slow anything down (a refactoring, a move into
subpackages): build A is the other one (``--against``), build B the seqtools
installed in the interpreter running this script. Each (row, build) measurement
runs in a fresh subprocess of that build's interpreter (``bench_compare.py
--worker ROW``, which prints its rate as JSON), so that two installed seqtools never
meet in one process, and the row code uses only names ``import seqtools`` gives, so
it runs on either layout. A and B of a row run back to back in every repetition
(which goes first alternates), so that the machine's drift hits both alike; the
table gives each build's median rate and B/A as the median of the per-repetition
ratios (with their min-max) and as the ratio of medians.

Data: the seed workload in float32, 18000 x 248 rows in memory-mapped ``.npy``
chunks of 5000, with int labels; rows read the first 8000
(``collate([concatenate(chunks), labels])[:-10000]``), in batches of 64:

- seed_load_buffers: ``load_buffers(nworkers=2)`` of the seed's sampler written
  with seqtools (``stack(gather(dataset, <64 random rows>))``);
- seed_stats: the same, calling ``loader.stats()`` after every batch (on a
  build that has it: against one from before, what statistics cost);
- minibatches_load_buffers: ``load_buffers(minibatches(dataset, 64), nworkers=2)``;
- prefetch_process, prefetch_thread: ``prefetch(batch(gather(dataset, idx), 64,
  collate_fn=stack), nworkers=2)`` (fused batches of random rows), read in order;
- batch_inline: the items of that ``batch(...)`` view, read with no loader;
- epochs: ``epochs(dataset, 64, seed=0, nworkers=2)``;
- smap_items, gather_items: item reads through ``smap(f, dataset)`` and
  ``gather(dataset, permutation)``;
- stack: ``stack(gather(dataset, <64 rows>))``.

``--against`` takes a python interpreter where the other seqtools is installed, or
a git revision of this checkout: that one is built once (``git archive``, a venv,
``pip install``, with this interpreter's numpy version) into
``~/.cache/seqtools-benchmarks/compare-<full hash>/`` and reused. B must be an
installed build (``pip install .``, compiled modules present), not a source folder.

Usage: python benchmarks/bench_compare.py --against HEAD~1|PATH [--repeats 7]
       [--only ROW,ROW] [--seconds 0.8] [--timeout 120] [--quick] [--out DIR]

``--quick``: one repetition of short measurements (a check that all runs).
``--batches``, ``--scale`` and ``--upstream-python`` are not used: every
measurement lasts ``--seconds``.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import _common  # noqa: E402
from _common import CHUNK_SIZE, N_CLASSES, N_SAMPLES, SAMPLE_SHAPE  # noqa: E402

BATCH = 64
ROWS = {  # name: (unit, what it times)
    "seed_load_buffers": ("batches/s", "load_buffers(seed sampler, nworkers=2)"),
    "seed_stats": ("batches/s", "load_buffers(seed sampler) + stats() per batch"),
    "minibatches_load_buffers": ("batches/s",
                                 "load_buffers(minibatches, nworkers=2)"),
    "prefetch_process": ("batches/s", "prefetch(fused batches, 2, 'process')"),
    "prefetch_thread": ("batches/s", "prefetch(fused batches, 2, 'thread')"),
    "batch_inline": ("batches/s", "fused batches read inline"),
    "epochs": ("batches/s", "epochs(nworkers=2)"),
    "smap_items": ("items/s", "smap(f, dataset)[i]"),
    "gather_items": ("items/s", "gather(dataset, idx)[i]"),
    "stack": ("batches/s", "stack(gather(dataset, 64 rows))"),
}


# -- In a worker: one build, one row, one measurement ---------------------------------


def write_data(workdir, seed=0):
    """The seed workload's files in float32: labels.npy and data_XX.npy chunks."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((N_CLASSES, *SAMPLE_SHAPE)) * 3
    labels = rng.integers(N_CLASSES, size=N_SAMPLES)
    np.save(os.path.join(workdir, "labels.npy"), labels)
    for i, lo in enumerate(range(0, N_SAMPLES, CHUNK_SIZE)):
        rows = labels[lo:lo + CHUNK_SIZE]
        noise = rng.standard_normal((len(rows), *SAMPLE_SHAPE)) * 0.1
        data = (means[rows] + noise).astype(np.float32)
        np.save(os.path.join(workdir, f"data_{i:02d}.npy"), data)


class FusedSampler:
    """The seed's sampler, fused: 64 random rows by stack(gather(...))."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __call__(self):
        import seqtools

        rows = np.random.randint(0, len(self.dataset), BATCH)
        return seqtools.stack(seqtools.gather(self.dataset, rows))


def identity(item):
    return item


def build_row(row, dataset, seconds):
    """(step, items per step, objects to close) for ``row`` over ``dataset``."""
    import seqtools

    n = len(dataset)
    rng = np.random.default_rng(0)
    if row in ("seed_load_buffers", "minibatches_load_buffers"):
        sampler = (FusedSampler(dataset) if row == "seed_load_buffers"
                   else seqtools.minibatches(dataset, BATCH, seed=0))
        loader = seqtools.load_buffers(sampler, max_cached=10, nworkers=2)
        return loader.__next__, 1, [loader]
    if row == "seed_stats":
        loader = seqtools.load_buffers(FusedSampler(dataset), max_cached=10,
                                       nworkers=2)
        stats = getattr(loader, "stats", None)  # a build before stats(): none
        if stats is None:
            return loader.__next__, 1, [loader]

        def step():
            next(loader)
            stats()
        return step, 1, [loader]
    if row == "epochs":
        loader = seqtools.epochs(dataset, BATCH, seed=0, nworkers=2)
        return loader.__next__, 1, [loader]
    if row in ("prefetch_process", "prefetch_thread", "batch_inline"):
        # random rows, enough batches that reading does not wrap around (a wrap
        # restarts prefetching) below 100,000 batches/s
        nbatches = int(100_000 * seconds * 1.25) + 1000
        idx = rng.integers(0, n, nbatches * BATCH)
        view = seqtools.batch(seqtools.gather(dataset, idx), BATCH,
                              collate_fn=seqtools.stack)
        closing = []
        if row != "batch_inline":
            view = seqtools.prefetch(view, nworkers=2, method=row[len("prefetch_"):])
            closing.append(view)
        position = iter(range(10**12))

        def step():
            view[next(position) % nbatches]
        return step, 1, closing
    if row in ("smap_items", "gather_items"):
        view = (seqtools.smap(identity, dataset) if row == "smap_items"
                else seqtools.gather(dataset, rng.permutation(n)))

        def step():
            get = view.__getitem__
            for i in range(n):
                get(i)
        return step, n, []
    if row == "stack":
        rows = seqtools.gather(dataset, rng.integers(0, n, BATCH))
        return lambda: seqtools.stack(rows), 1, []
    raise SystemExit(f"unknown row {row!r}")


def measure(step, items, seconds):
    """Items per second of ``step()`` over ``seconds``, after a quarter as long of
    warm-up (workers started, buffers full, pages in the cache)."""
    end = time.perf_counter() + seconds / 4
    while time.perf_counter() < end:
        step()
    calls, t0 = 0, time.perf_counter()
    while True:
        step()
        calls += 1
        wall = time.perf_counter() - t0
        if wall >= seconds:
            return calls * items / wall


def describe_build():
    """What this interpreter imports as seqtools, and whether it is compiled."""
    from importlib.machinery import EXTENSION_SUFFIXES
    from importlib.metadata import distribution

    import seqtools

    package = os.path.dirname(os.path.abspath(seqtools.__file__))
    compiled = sorted(f for _, _, files in os.walk(package) for f in files
                      if f.endswith(tuple(EXTENSION_SUFFIXES)))
    try:
        dist = distribution("seqtools")
        version = dist.version
        source = json.loads(dist.read_text("direct_url.json") or "{}").get("url")
    except Exception:
        version, source = getattr(seqtools, "__version__", "?"), None
    return {"file": package, "version": version, "source": source,
            "compiled": len(compiled), "numpy": np.__version__,
            "python": sys.version.split()[0], "executable": sys.executable}


def worker(row, workdir, seconds):
    if row == "hello":
        print(json.dumps(describe_build()))
        return
    import seqtools

    chunks, labels = _common.load_seed_dataset(workdir)
    dataset = seqtools.collate([seqtools.concatenate(chunks), labels])[:-10000]
    step, items, closing = build_row(row, dataset, seconds)
    try:
        rate = measure(step, items, seconds)
    finally:
        for obj in closing:
            obj.close()
    print(json.dumps({"rate": rate}))


# -- In the parent: the builds, the interleaved runs, the table ------------------------


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run_worker(python, row, workdir, seconds, timeout):
    """(JSON answer, None) of a worker, or (None, why it failed).

    The worker runs in a session of its own, so that a timeout kills its loader
    processes along with it; ``-E``: no PYTHONPATH that could point at sources.
    """
    cmd = [python, "-E", os.path.abspath(__file__), "--worker", row,
           "--data", workdir, "--seconds", str(seconds)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=tempfile.gettempdir(),
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, f"timed out after {timeout:g} s"
    lines = out.strip().splitlines()
    if proc.returncode or not lines:
        tail = " | ".join(err.strip().splitlines()[-2:]) or "no error output"
        return None, f"exit {proc.returncode}: {tail}"
    return json.loads(lines[-1]), None


def git(repo, *args):
    out = subprocess.run(["git", "-C", repo, *args], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else None


def build_revision(repo, rev, full):
    """The python of a venv with revision ``full`` of ``repo`` installed, made in
    the user's cache on first use (a ``complete`` file marks a finished one)."""
    import shutil

    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    venv = os.path.join(cache, "seqtools-benchmarks", f"compare-{full}")
    python = os.path.join(venv, "bin", "python")
    done = os.path.join(venv, "complete")
    if os.path.exists(done):
        return python, venv
    log(f"building {rev} ({full[:10]}) into {venv} (once)")
    shutil.rmtree(venv, ignore_errors=True)
    with tempfile.TemporaryDirectory(prefix="seqtools-compare-") as src:
        archive = subprocess.Popen(["git", "-C", repo, "archive", full],
                                   stdout=subprocess.PIPE)
        untar = subprocess.run(["tar", "-x", "-C", src], stdin=archive.stdout,
                               capture_output=True, text=True)
        archive.stdout.close()
        steps = [[sys.executable, "-m", "venv", venv],
                 [python, "-m", "pip", "install", "-q", src,
                  f"numpy=={np.__version__}"]]
        if archive.wait() or untar.returncode:
            raise SystemExit(f"git archive {full} | tar -x failed: {untar.stderr}")
        for cmd in steps:
            out = subprocess.run(cmd, capture_output=True, text=True,
                                 cwd=tempfile.gettempdir())
            if out.returncode:
                tail = " | ".join((out.stderr or out.stdout).strip().splitlines()[-3:])
                raise SystemExit(f"{' '.join(cmd[:4])} failed: {tail}")
    with open(done, "w") as f:
        f.write(f"{rev} {full}\n")
    return python, venv


def resolve_against(against):
    """(python, label) of build A: an interpreter path, or a revision built."""
    if os.path.isfile(against) and os.access(against, os.X_OK):
        return against, f"interpreter {against}"
    repo = git(HERE, "rev-parse", "--show-toplevel")
    full = repo and git(repo, "rev-parse", "--verify", "--quiet",
                        f"{against}^{{commit}}")
    if not full:
        raise SystemExit(f"--against {against}: neither an interpreter nor a "
                         f"revision of {repo or HERE}")
    python, venv = build_revision(repo, against, full)
    subject = git(repo, "log", "-1", "--format=%h %s", full)
    return python, f"revision {against} = {subject} (venv {venv})"


def describe(label, hello):
    source, url = "", hello["source"] or ""
    folder = url[len("file://"):] if url.startswith("file://") else None
    if url and (folder is None or os.path.isdir(folder)):  # not a build's temp dir
        head = folder and git(folder, "log", "-1", "--format=%h %s")
        source = f", installed from {url}" + (f" (its HEAD now: {head})" if head
                                                else "")
    return (f"{label}: seqtools {hello['version']} from {hello['file']}{source}; "
            f"numpy {hello['numpy']}, Python {hello['python']}")


def table(rates, rows, failures):
    med = statistics.median
    lines = ["| row | unit | A (median) | B (median) | B/A per repetition: median "
             "(min-max) | B/A of medians |", "|---|---|---:|---:|---:|---:|"]
    for row in rows:
        unit, what = ROWS[row]
        a, b = rates[row]["A"], rates[row]["B"]
        paired = [y / x for x, y in zip(a, b) if x and y]
        a, b = [x for x in a if x], [y for y in b if y]
        if not paired:
            why = "; ".join(sorted(set(failures.get(row, [])))) or "no result"
            lines.append(f"| {what} | {unit} | failed | failed | {why} | |")
            continue
        note = " (some runs failed)" if row in failures else ""
        lines.append(
            f"| {what} | {unit} | {med(a):,.0f} | {med(b):,.0f} | {med(paired):.3f} "
            f"({min(paired):.3f}-{max(paired):.3f}){note} | {med(b) / med(a):.3f} |")
    return "\n".join(lines)


def main():
    parser = _common.parser(__doc__, repeats=7, batches="unused")
    parser.add_argument("--against", help="build A: python interpreter or git rev")
    parser.add_argument("--only", help="comma-separated rows: " + ",".join(ROWS))
    parser.add_argument("--seconds", type=float, default=None,
                        help="length of each measurement (default 0.8; --quick 0.2)")
    parser.add_argument("--timeout", type=float, default=120,
                        help="seconds a worker may take before it counts as failed")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    args = parser.parse_args()
    seconds = args.seconds or (0.2 if args.quick else 0.8)
    if args.worker:
        return worker(args.worker, args.data, seconds)
    if not args.against:
        parser.error("--against PYTHON|REVISION is required")
    repeats = args.repeats or (1 if args.quick else 7)
    rows = [r.strip() for r in args.only.split(",")] if args.only else list(ROWS)
    if set(rows) - set(ROWS):
        parser.error(f"unknown rows {sorted(set(rows) - set(ROWS))}; choose from "
                     + ",".join(ROWS))

    python_a, label_a = resolve_against(args.against)
    builds = {"A": python_a, "B": sys.executable}
    hello = {}
    for name, python in builds.items():
        hello[name], error = run_worker(python, "hello", "", seconds, args.timeout)
        if error:
            raise SystemExit(f"build {name} ({python}) does not import seqtools: "
                             f"{error}")
        if not hello[name]["compiled"]:
            raise SystemExit(f"build {name} imports seqtools from "
                             f"{hello[name]['file']}, with no compiled modules: a "
                             "source folder? Install it (pip install .)")

    monitor = _common.LoadMonitor()
    rates = {row: {"A": [], "B": []} for row in rows}
    failures = {}
    with tempfile.TemporaryDirectory(prefix="seqtools-compare-") as workdir:
        write_data(workdir)
        for r in range(repeats):
            for row in rows:
                for name in ("A", "B") if r % 2 == 0 else ("B", "A"):
                    answer, error = run_worker(builds[name], row, workdir, seconds,
                                               args.timeout)
                    rate = answer["rate"] if answer else None
                    rates[row][name].append(rate)
                    if error:
                        failures.setdefault(row, []).append(f"{name}: {error}")
                    shown = f"{rate:,.0f} {ROWS[row][0]}" if rate else f"FAILED {error}"
                    log(f"rep {r + 1}/{repeats}: {row} {name}: {shown}")

    info = {"cores": os.cpu_count(), "cpu": _common._cpu_model()}
    report = [
        f"seqtools before/after: {repeats} repetition(s), each row's A and B run back "
        f"to back in fresh processes (who goes first alternates), {seconds:g} s per "
        "measurement; ratios above 1: B is faster\n",
        "- " + describe(f"A, {label_a}", hello["A"]),
        "- " + describe(f"B, {sys.executable}", hello["B"]),
        _common.machine_markdown(info, monitor.summary()), "",
        table(rates, rows, failures)]
    print("\n".join(report))
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "compare.md"), "w") as f:
            f.write("\n".join(report) + "\n")
        with open(os.path.join(args.out, "compare.json"), "w") as f:
            json.dump({"A": hello["A"], "B": hello["B"], "rates": rates}, f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
