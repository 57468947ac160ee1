"""Item reads through a stack of index views, seqtools vs upstream SeqTools 1.4.1.

The stack is the one a shuffled training loop reads from::

    gather(collate([concatenate(chunks), labels])[:-10000], idx)[i]

over memory-mapped ``.npy`` chunks (18000 x 248 float64 in chunks of 5000) and int
labels. Each implementation runs in its own worker process (ours with this
interpreter, upstream with ``--upstream-python``, both started and checked by
``_upstream.Child``), both build the stack over the same files and answer timing
requests; repetitions are interleaved between the two and medians reported.

Usage::

    python benchmarks/bench_views.py [--repeats R] [--quick]
        [--upstream-python PATH|auto]
"""

import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
import _upstream  # noqa: E402

ROWS, COLS, CHUNK, HOLDOUT = 18000, 248, 5000, 10000


def serve(spec):
    """In a child (ours or upstream's, see _upstream.Child): build the stack over
    the files in ``spec["dir"]``, answer a checksum, then each request "single" or
    "iter" with the items/s of one pass over the view."""
    import seqtools

    data_dir = spec["dir"]
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

    _upstream.reply({"checksum": checksum()})
    for mode in _upstream.requests():
        _upstream.reply({"rate": single() if mode == "single" else iterate()})


def make_data(directory, seed=0):
    rng = np.random.default_rng(seed)
    for k, start in enumerate(range(0, ROWS, CHUNK)):
        size = min(CHUNK, ROWS - start)
        np.save(os.path.join(directory, f"chunk{k:02d}.npy"), rng.random((size, COLS)))
    np.save(os.path.join(directory, "labels.npy"), rng.integers(0, 10, ROWS))
    np.save(os.path.join(directory, "idx.npy"), rng.permutation(ROWS - HOLDOUT))


def main(argv=None):
    parser = _common.parser(
        __doc__, repeats=9, batches="none: each timing is one pass over the view")
    args = _common.parse_args(parser, argv)
    repeats = _common.repeats(args, 9)

    with tempfile.TemporaryDirectory(prefix="bench_views_") as directory:
        make_data(directory)
        spec = {"dir": directory}
        workers = {"ours": _upstream.Child(sys.executable, "bench_views:serve", spec,
                                           upstream=False)}
        skipped = None
        if args.upstream_python is None:
            skipped = "pass --upstream-python PATH or auto"
        else:
            try:
                workers["upstream"] = _upstream.Child(args.upstream_python,
                                                      "bench_views:serve", spec)
            except _upstream.ChildFailed as e:
                skipped = f"upstream worker failed to start: {e}"
        checksums = {name: w.read()["checksum"] for name, w in workers.items()}
        if "upstream" in workers:
            a, b = checksums["ours"], checksums["upstream"]
            if not np.isclose(a, b):
                raise SystemExit(f"checksums differ: ours {a} != upstream {b}")

        modes = {
            "single": "single item read  view[i]",
            "iter": "iteration  for x in view",
        }
        rates = {(w, m): [] for w in workers for m in modes}
        for _ in range(repeats):  # interleave implementations and modes
            for mode in modes:
                for name, worker in workers.items():
                    rates[name, mode].append(worker.ask(mode)["rate"])
        for worker in workers.values():
            worker.close()

    print(
        f"stack: gather(collate([concatenate(chunks), labels])[:-{HOLDOUT}], idx) over "
        f"{ROWS}x{COLS} float64 memmap chunks of {CHUNK}; median of {repeats} "
        "interleaved rounds"
    )
    versions = ", ".join(f"{n} {w.hello['version']}" for n, w in workers.items())
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
