"""Shared pieces of the benchmarks: the seed dataset and samplers, timing, the table,
the machine's description, SeqTools 1.4.1's loader on the seed workload, and the
flags every benchmark takes.

Every benchmark measures its configurations side by side in one run, interleaved
within each repetition (the machine is shared and noisy), and reports medians with
min-max and ratios to a baseline measured in the same run.
"""

import os
import statistics
import sys
import tempfile
import time

import _upstream
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
        noise = rng.standard_normal((hi - lo, *SAMPLE_SHAPE)) * 0.1
        data = means[labels[lo:hi]] + noise
        np.save(os.path.join(workdir, f"data_{i:02d}.npy"), data)


def seed_collate(samples):
    """The seed example's collate: np.stack per field."""
    batch_data = np.stack([sample[0] for sample in samples])
    batch_labels = np.stack([sample[1] for sample in samples])
    return batch_data, batch_labels


class SeedSampler:
    """The seed example's sampler, unchanged: items one by one, then np.stack."""

    def __init__(self, dataset, batch_size):
        self.dataset = dataset
        self.batch_size = batch_size

    def __call__(self):
        import seqtools

        subset = np.random.choice(len(self.dataset), self.batch_size)
        samples = list(seqtools.gather(self.dataset, subset))
        return seed_collate(samples)


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


# The shortest a measurement of calls_per_second lasts. On this shared VM the
# machine's speed drifts by 10-30% within seconds: a fast configuration timed over
# a fixed number of calls (3000 batches: 0.3 s at 10,000/s) would sample that drift
# over a much shorter window than a slow one it is compared with (2 s at 1,500/s),
# and so scatter far more from one repetition to the next.
MIN_SECONDS = 1.0


def calls_per_second(step, n, cpu=None):
    """A function that times ``step()`` and returns calls per second (a measurement
    for :func:`interleaved`): ``n`` calls, then ``n`` more at a time until
    :data:`MIN_SECONDS` have passed. ``cpu``: a list that gets calls per second of
    this process's own CPU time (the parent's, for a loader)."""
    def run():
        calls = 0
        t0, c0 = time.perf_counter(), time.process_time()
        while True:
            for _ in range(n):
                step()
            calls += n
            wall = time.perf_counter() - t0
            if wall >= MIN_SECONDS:
                break
        if cpu is not None:
            cpu.append(calls / (time.process_time() - c0))
        return calls / wall
    return run


def interleaved(configs, repeats, progress=None):
    """Run each ``(name, fn)`` once per repetition, interleaved; fn returns a rate.

    Every other repetition runs them in reverse order (A B C, C B A, ...), so that
    a steady drift of the machine's speed favours no configuration over its
    neighbours. Returns ``{name: [rates]}`` in the order given.
    """
    results = {name: [] for name, _ in configs}
    for r in range(repeats):
        for name, fn in (configs if r % 2 == 0 else configs[::-1]):
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


# -- The machine a run happened on, and the plot ---------------------------------------


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine()


def _memory_gib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def machine_info(upstream_python=None):
    """What a result depends on: cores, CPU, memory, versions, and the load now."""
    import platform

    info = {
        "cores": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory": f"{_memory_gib():.1f} GiB" if _memory_gib() else "?",
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    try:
        from importlib.metadata import version

        info["seqtools"] = version("seqtools")
    except Exception:
        info["seqtools"] = "?"
    try:
        import torch

        info["torch"] = torch.__version__
    except ImportError:
        info["torch"] = "not installed"
    if upstream_python:
        info["upstream"] = _upstream.describe(upstream_python)
    info["load average at start (1, 5, 15 min)"] = " ".join(
        f"{x:.2f}" for x in os.getloadavg())
    return info


class LoadMonitor:
    """CPU time the *other* processes took while a run went on.

    The machine's busy time (``/proc/stat``) minus this process's and its waited-for
    descendants' (``os.times``: benchmark subprocesses, worker processes, the
    upstream interpreter). The load average cannot tell them apart: it counts this
    run's own workers too.
    """

    def __init__(self):
        self.start = self._snapshot()

    @staticmethod
    def _snapshot():
        busy = steal = None
        try:
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            hz = os.sysconf("SC_CLK_TCK")
            busy = (v[0] + v[1] + v[2] + v[5] + v[6]) / hz  # user nice system irq soft
            steal = v[7] / hz if len(v) > 7 else 0.0
        except (OSError, ValueError, IndexError):
            pass
        t = os.times()
        own = t.user + t.system + t.children_user + t.children_system
        return time.monotonic(), busy, steal, own

    def summary(self):
        """{'wall_s', 'others_cpu_s', 'others_share', 'steal_s'}, or {} off Linux."""
        t1, b1, s1, o1 = self._snapshot()
        t0, b0, s0, o0 = self.start
        if b0 is None or b1 is None:
            return {}
        wall = t1 - t0
        others = max(0.0, (b1 - b0) - (o1 - o0))
        return {"wall_s": wall, "others_cpu_s": others,
                "others_share": others / (wall * (os.cpu_count() or 1)),
                "steal_s": s1 - s0}


def machine_markdown(info, load=None):
    """``info`` (and a LoadMonitor summary) as a markdown list, saying if shared."""
    lines = [f"- {k}: {v}" for k, v in info.items()]
    if load:
        share = load["others_share"]
        lines.append(
            f"- other processes during the run: {load['others_cpu_s']:.0f} core-s in "
            f"{load['wall_s']:.0f} s, {share:.0%} of the machine's {info['cores']} "
            f"cores (hypervisor steal: {load['steal_s']:.0f} s)")
        if share > 0.05:
            lines.append("- **note: the machine was shared during this run; the "
                         "parallel rows suffer most, expect noise**")
    return "\n".join(lines)


def plot_workers(report, path):
    """PNG of throughput against nworkers, one panel per workload, one line per loader.

    ``report`` is bench_peers' report: ``{"workloads": {name: {"rows": [...]}}}``
    where each row has ``family``, ``nworkers`` and ``rates``. Rows measured at one
    worker count only (inline, memcpy) are drawn as horizontal lines.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    workloads = report["workloads"]
    fig, axes = plt.subplots(1, len(workloads), figsize=(5.2 * len(workloads), 4.8),
                             squeeze=False)
    styles = {}  # one (colour, marker) per loader family, the same in every panel

    def style(family):
        if family == "memcpy":
            return "black", "s"
        if family not in styles:
            # tab20's ten dark colours, then its ten light ones with another marker
            k = len(styles) % 20
            styles[family] = (plt.get_cmap("tab20")(2 * (k % 10) + k // 10),
                              "o" if k < 10 else "^")
        return styles[family]

    for ax, (name, wl) in zip(axes[0], workloads.items()):
        families = {}
        for row in wl["rows"]:
            if row["rates"]:
                families.setdefault(row["family"], []).append(
                    (row["nworkers"], statistics.median(row["rates"]),
                     min(row["rates"]), max(row["rates"])))
        for family, points in families.items():
            color, marker = style(family)
            points.sort()
            xs = [p[0] for p in points]
            med = [p[1] for p in points]
            err = [[m - p[2] for m, p in zip(med, points)],
                   [p[3] - m for m, p in zip(med, points)]]
            if len(points) == 1:  # inline, memcpy: a reference level across the plot
                ax.axhline(med[0], color=color, linewidth=1,
                           linestyle=":" if family == "memcpy" else "--")
                ax.errorbar(xs, med, yerr=err, marker="s", capsize=3, color=color,
                            linestyle="none", label=family)
                continue
            ax.errorbar(xs, med, yerr=err, marker=marker, capsize=3, color=color,
                        label=family)
        ax.set_yscale("log")
        ax.set_xticks([0, 1, 2])
        ax.set_xlabel("workers (0: in the main process)")
        ax.set_ylabel("batches/s (median, bars: min-max)")
        ax.set_title(f"{name}: {wl['batch_bytes'] / 1e6:.2f} MB/batch", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    handles, labels = [], []
    for ax in axes[0]:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.17, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def copy_target(src):
    """An empty array like ``src`` placed 2 KiB away from it modulo 4 KiB.

    A copy between buffers whose addresses nearly coincide modulo 4096 (as two
    back-to-back allocations often do) runs up to 10x slower on this hardware
    (4K aliasing of loads with earlier stores), which would make a memcpy
    reference row measure the allocator's luck rather than the bandwidth.
    """
    import numpy as np

    raw = np.empty(src.nbytes + 8192, dtype=np.uint8)
    shift = (src.ctypes.data - raw.ctypes.data - 2048) % 4096
    return raw[shift : shift + src.nbytes].view(src.dtype).reshape(src.shape)


class FancySampler:
    """numpy fancy indexing per chunk (a baseline), same draws as the seed's."""

    def __init__(self, chunks, labels, n, batch_size):
        self.chunks = [np.asarray(c) for c in chunks]
        self.offsets = np.cumsum([0] + [len(c) for c in chunks])
        self.labels = labels
        self.n = n
        self.batch_size = batch_size

    def __call__(self):
        subset = np.random.choice(self.n, self.batch_size)
        part = np.searchsorted(self.offsets, subset, side="right") - 1
        out = np.empty((self.batch_size,) + self.chunks[0].shape[1:],
                       self.chunks[0].dtype)
        for j, c in enumerate(self.chunks):
            mask = part == j
            if mask.any():
                out[mask] = c[subset[mask] - self.offsets[j]]
        return out, self.labels[subset]


def serve_upstream_prefetch(spec):
    """In SeqTools 1.4.1's interpreter (see UpstreamPrefetch): its process prefetch
    with shared memory over the seed workload of ``spec["workdir"]``, the seed's
    sampler (``spec["kind"]`` "seed") or numpy fancy indexing ("fancy"). Answers
    "ready" once warm, then each request ``{"n", "seconds"}`` with the rate of
    taking ``n`` batches at a time until ``seconds`` have passed."""
    import seqtools

    chunks, labels = load_seed_dataset(spec["workdir"])
    dataset = seqtools.collate([seqtools.concatenate(chunks), labels])[:-10000]
    if spec["kind"] == "seed":
        sampler = SeedSampler(dataset, 64)
    else:
        sampler = FancySampler(chunks, labels, len(dataset), 64)
    batches = seqtools.smap(lambda _: sampler(), range(10 ** 9))
    loader = seqtools.prefetch(batches, nworkers=2, method="process",
                               max_buffered=10, shm_size=64 * 1024 ** 2)
    for i in range(100):
        x = loader[i]
    i = 100
    _upstream.reply("ready")
    for request in _upstream.requests():
        n, seconds, calls = request["n"], request["seconds"], 0
        t0 = time.perf_counter()
        while True:
            for _ in range(n):
                x = loader[i]
                del x  # upstream's shm slots come back when results are dropped
                i += 1
            calls += n
            wall = time.perf_counter() - t0
            if wall >= seconds:
                break
        _upstream.reply({"rate": calls / wall})


class UpstreamPrefetch:
    """SeqTools 1.4.1's process prefetch on the seed workload (``kind`` "seed" or
    "fancy", see :func:`serve_upstream_prefetch`), kept running in ``python``
    between measurements.

    Its workers start once and sit idle (their buffer full) while other rows are
    measured, so that its rows can be timed like ours: ``rate(n)`` takes ``n``
    batches at a time for at least :data:`MIN_SECONDS`, with no start-up inside
    the window. ``python`` None, or a failure (said on stderr), leaves the rows
    out: ``rate`` then returns None.
    """

    def __init__(self, python, workdir, kind):
        self.child = None
        if not python:
            return
        try:
            self.child = _upstream.Child(python, "_common:serve_upstream_prefetch",
                                         {"workdir": workdir, "kind": kind})
            self.child.read()  # "ready"
        except _upstream.ChildFailed as e:
            self._skip(e)

    def _skip(self, error):
        print(f"upstream row skipped: {error}", file=sys.stderr)
        self.close()

    def rate(self, n):
        """batches/s over at least MIN_SECONDS, or None."""
        if self.child is None:
            return None
        try:
            return self.child.ask({"n": n, "seconds": MIN_SECONDS})["rate"]
        except _upstream.ChildFailed as e:
            self._skip(e)
            return None

    def close(self):
        if self.child is not None:
            child, self.child = self.child, None
            child.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# -- The flags every benchmark takes -------------------------------------------------
# One set, so that ``python -m benchmarks`` passes them to each benchmark as given.

QUICK_REPEATS = 2
QUICK_SCALE = 0.1
FLAGS = ("repeats", "batches", "scale", "quick", "upstream_python", "out")


def parser(doc, repeats="each benchmark's own", batches="each benchmark's own"):
    """An ArgumentParser with the common flags; ``repeats`` and ``batches`` are the
    benchmark's defaults, for the help text."""
    import argparse

    p = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=None,
                   help=f"interleaved repetitions (default: {repeats}; "
                        f"--quick: {QUICK_REPEATS})")
    p.add_argument("--batches", type=int, default=None,
                   help=f"batches per measurement, exactly (default: {batches}, "
                        "times --scale)")
    p.add_argument("--scale", type=float, default=None,
                   help=f"multiplies the default batch counts (default 1; "
                        f"--quick: {QUICK_SCALE})")
    p.add_argument("--quick", action="store_true",
                   help="the smallest settings: checks that everything runs; "
                        "its figures are no measurement")
    p.add_argument("--upstream-python", default=None, metavar="PATH|auto",
                   help=f"interpreter with SeqTools {_upstream.VERSION}, for the "
                        "upstream rows; auto: a virtual environment made for them "
                        f"(in {os.path.dirname(_upstream.default_venv())})")
    p.add_argument("--out", default=None,
                   help="folder for files written beside the printed tables "
                        "(python -m benchmarks: every table and results.md; "
                        "bench_peers: peers.md, peers.json, peers.png)")
    return p


def parse_args(p, argv=None):
    """``p.parse_args``, with ``--upstream-python auto`` made a path (or None: the
    upstream rows are then skipped)."""
    args = p.parse_args(argv)
    args.upstream_python = _upstream.interpreter(args.upstream_python)
    return args


def repeats(args, default):
    """The repetitions a benchmark runs: ``--repeats``, else its default."""
    return args.repeats or (QUICK_REPEATS if args.quick else default)


def batches(args, default):
    """The batches per measurement: ``--batches``, else the default, scaled."""
    scale = args.scale or (QUICK_SCALE if args.quick else 1.0)
    return args.batches or max(1, round(default * scale))


def forward(args):
    """The common flags given in ``args``, as a command line for a benchmark."""
    argv = []
    for name in FLAGS:
        value = getattr(args, name)
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value not in (None, False):
            argv += [flag, str(value)]
    return argv


def available(module):
    """Whether an optional peer (torch, grain, ...) can be imported here."""
    try:
        __import__(module)
    except Exception:  # absent, or broken in this environment
        return False
    return True
