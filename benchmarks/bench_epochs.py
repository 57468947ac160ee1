"""seqtools.epochs on the seed workload: throughput against its baselines, and the
first batch after a resume, against torchdata's StatefulDataLoader.

Seed workload: 64x248 float64 batches (plus int labels) from memory-mapped .npy
chunks, ``collate([concatenate(chunks), labels])[:-10000]`` (8000 samples, 125
batches per epoch).

Throughput (batches/s), interleaved in one run, medians, ratios to unordered
``load_buffers``. ``epochs(nworkers=2)`` runs next to that baseline in every
repetition, and the median of their per-repetition ratios is printed beside the
ratio of medians: the machine's speed drifts within seconds, and rows run back to
back see the same speed.

- ``load_buffers(minibatches(dataset, 64), max_cached=10, nworkers=2)``: random
  minibatches with replacement, yielded in completion order (the baseline);
- ``load_buffers(..., ordered=True)``: the same minibatches in call order, through
  the ordered machinery ``epochs`` uses (``prefetch``): what ordering costs;
- ``load_buffers(epochs' batches, nworkers=2)``, unordered: call ``k`` stacks the
  rows of epochs' batch ``k`` (``stack(gather(dataset, epoch_order(...)[...]))``),
  and the same code over rows drawn with replacement (``random batches``): the
  two differ only in which rows they read, so their ratio is what reading every
  sample once per epoch costs against drawing with replacement, the loaders
  aside;
- ``epochs(dataset, 64, seed=0, nworkers=2)``: ordered, epochs without
  replacement, process workers (the default), and with ``method='thread'``;
- ``epochs(..., nworkers=0)``: inline, in the training loop's own thread;
- ``torch.utils.data.DataLoader(shuffle=True, batch_size=64, num_workers=2)`` over a
  map-style Dataset of the same memory-mapped arrays (item ``i``: its row and
  label, collated by DataLoader's default), as specified, and with
  ``persistent_workers=True`` (the default starts new workers each epoch);
  skipped when torch is not importable.

First batch after ``load_state_dict`` (seconds, median of ``--latency-repeats``):
the time from ``load_state_dict(state)`` on a new loader to its first batch,
worker start included, for a state at batch 10 and at batch 10**6:

- on the seed workload, ``epochs`` with 2 workers and inline (batch 10**6 is epoch
  8000 there);
- over one long epoch: the seed's training set cycled to 2**26 samples
  (``seqtools.cycle``; 1,048,576 batches an epoch, so that batch 10**6 lies inside
  the epoch), ``epochs(nworkers=2)`` against
  ``torchdata.stateful_dataloader.StatefulDataLoader(shuffle=True,
  num_workers=2)`` over the same samples. Both draw an epoch's permutation of
  2**26 indices (seconds, whatever the position); StatefulDataLoader then
  replays the sampler up to the position. Its state at batch 10**6 is made from
  its own state at batch 10 by setting the counters of batches and samples
  yielded (checked at batch 20 against a state it gave there), since running
  10**6 of its batches would take most of an hour. Skipped when torchdata is not
  importable.

The long epoch takes minutes and some 6 GB (StatefulDataLoader holds its
permutation as a Python list): one repetition by default (``--long-repeats``),
none with ``--no-long-epoch`` or ``--quick``.

Usage: python benchmarks/bench_epochs.py [--batches N] [--repeats R] [--quick]
       [--long-repeats R] [--no-long-epoch]

``--repeats`` sets the repetitions of the throughput and the latency tables
(default: 9 and 3).
"""

import copy
import os
import statistics
import sys
import time
import warnings

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common  # noqa: E402
from _common import (  # noqa: E402
    CHUNK_SIZE,
    MIN_SECONDS,
    SeedWorkdir,
    calls_per_second,
    interleaved,
    load_seed_dataset,
    summarize,
)

import seqtools  # noqa: E402
from seqtools.loaders.epochs import epoch_order  # noqa: E402

BATCH = 64
TRAIN = 8000  # the seed's training set: the first 8000 samples
LONG = 2**26  # samples of the long epoch: 2**20 batches of 64


class SeedDataset:
    """A map-style dataset for torch's loaders: sample ``i`` (modulo the 8000
    training samples) is its row of the memory-mapped chunks and its label."""

    def __init__(self, chunks, labels, length=TRAIN):
        self.chunks = chunks
        self.labels = labels
        self.length = length

    def __len__(self):
        return self.length

    def __getitem__(self, i):
        i %= TRAIN
        c, r = divmod(i, CHUNK_SIZE)
        return self.chunks[c][r], self.labels[i]


class EpochBatches:
    """A load_buffers sampler: call ``k`` (``call_index()``) returns batch ``k`` of
    ``epochs(dataset, BATCH, seed=0)``, read by ``stack(gather(...))``; with
    ``replace=True``, the same code over rows drawn with replacement."""

    def __init__(self, dataset, replace=False):
        self.dataset = dataset
        self.replace = replace
        self.per_epoch = -(-len(dataset) // BATCH)
        self.order = (-1, None)

    def __call__(self):
        epoch, j = divmod(seqtools.call_index(), self.per_epoch)
        if self.order[0] != epoch:
            n = len(self.dataset)
            self.order = (epoch, np.random.default_rng(epoch).integers(0, n, n)
                          if self.replace else epoch_order(n, 0, epoch))
        rows = self.order[1][j * BATCH:(j + 1) * BATCH]
        return seqtools.stack(seqtools.gather(self.dataset, rows))


def endless(loader):
    """A torch loader's batches, epoch after epoch."""
    while True:
        yield from loader


def state_at(k, batches_per_epoch, n, seed=0):
    """The epochs state after batch k, as documented (single rank)."""
    epoch, j = divmod(k, batches_per_epoch)
    return {"version": 1, "epoch": epoch, "position": j * BATCH, "seed": seed,
            "dataset_length": n, "batch_size": BATCH, "shuffle": True}


def resume_latency(make, state):
    """Seconds from load_state_dict(state) on a new loader to its first batch."""
    loader = make()
    t0 = time.perf_counter()
    loader.load_state_dict(state)
    next(loader)
    seconds = time.perf_counter() - t0
    loader.close()
    return seconds


def sdl_state_at(state, k):
    """A StatefulDataLoader state (num_workers > 0, map-style, one epoch) moved to
    batch k: its counters of batches and samples yielded set."""
    state = copy.deepcopy(state)
    snap = state["_snapshot"]
    main = snap["_main_snapshot"]
    main["_sampler_iter_yielded"] = k
    main["_sampler_iter_state"]["samples_yielded"] = k * BATCH
    main["_sampler_iter_state"]["sampler_iter_state"]["yielded"] = k * BATCH
    snap["_snapshot_step"] = k
    snap["_last_yielded_worker_id"] = (k - 1) % main["_num_workers"]
    return state


def same_state(a, b):
    import torch

    if isinstance(a, dict):
        return (isinstance(b, dict) and a.keys() == b.keys()
                and all(same_state(a[k], b[k]) for k in a))
    if torch.is_tensor(a):
        return torch.is_tensor(b) and torch.equal(a, b)
    return a == b


def sdl_latencies(dataset, repeats, progress):
    """{k: [seconds]} for StatefulDataLoader over ``dataset`` resumed at batch k."""
    from torchdata.stateful_dataloader import StatefulDataLoader

    def make():  # seeded, as the epochs loaders are: states can be compared
        import torch

        return StatefulDataLoader(dataset, batch_size=BATCH, shuffle=True,
                                  num_workers=2,
                                  generator=torch.Generator().manual_seed(0))

    def state_after(k):
        loader = make()
        it = iter(loader)
        for _ in range(k):
            next(it)
        state = loader.state_dict()
        del it
        return state

    progress("StatefulDataLoader: states at batches 10 and 20")
    at10 = state_after(10)
    at20 = state_after(20)
    if not same_state(sdl_state_at(at10, 20), at20):
        raise RuntimeError("the StatefulDataLoader state recipe does not match "
                           f"its own state at batch 20: fix sdl_state_at\n{at20}")

    def latency(state):
        loader = make()
        t0 = time.perf_counter()
        loader.load_state_dict(state)
        it = iter(loader)
        next(it)
        seconds = time.perf_counter() - t0
        del it
        return seconds

    results = {10: [], 10**6: []}
    for r in range(repeats):
        for k in (10, 10**6) if r % 2 == 0 else (10**6, 10):
            progress(f"rep {r + 1}/{repeats}: StatefulDataLoader at batch {k}")
            results[k].append(latency(sdl_state_at(at10, k)))
    return results


def latency_table(rows):
    lines = ["| loader | batch 10 (s) | batch 10^6 (s) | 10^6 / 10 |",
             "|---|---:|---:|---:|"]
    for name, by_k in rows:
        if not by_k:
            lines.append(f"| {name} | skipped | | |")
            continue
        a, b = statistics.median(by_k[10]), statistics.median(by_k[10**6])
        lines.append(f"| {name} | {a:.3f} ({min(by_k[10]):.3f}-{max(by_k[10]):.3f})"
                     f" | {b:.3f} ({min(by_k[10**6]):.3f}-{max(by_k[10**6]):.3f})"
                     f" | {b / a:.2f}x |")
    return "\n".join(lines)


def epochs_latencies(dataset, nworkers, repeats, progress, label):
    n = len(dataset)
    per_epoch = -(-n // BATCH)
    results = {10: [], 10**6: []}
    for r in range(repeats):
        for k in (10, 10**6) if r % 2 == 0 else (10**6, 10):
            progress(f"rep {r + 1}/{repeats}: {label} at batch {k}")
            results[k].append(resume_latency(
                lambda: seqtools.epochs(dataset, BATCH, seed=0, nworkers=nworkers),
                state_at(k, per_epoch, n)))
    return results


def main():
    parser = _common.parser(__doc__, repeats="9 for throughput, 3 for latencies",
                            batches=3000)
    parser.add_argument("--long-repeats", type=int, default=1,
                        help="repetitions of the long-epoch table (minutes each)")
    parser.add_argument("--no-long-epoch", action="store_true",
                        help="skip the long-epoch latency table (the slowest; "
                             "--quick skips it too)")
    args = _common.parse_args(parser)
    n = args.batches = _common.batches(args, 3000)
    args.latency_repeats = _common.repeats(args, 3)
    args.repeats = _common.repeats(args, 9)
    args.no_long_epoch = args.no_long_epoch or args.quick

    def progress(s):
        print(s, file=sys.stderr, flush=True)

    has_torch = _common.available("torch")
    has_torchdata = has_torch and _common.available("torchdata.stateful_dataloader")
    if has_torch:
        import torch

        torch.set_num_threads(1)  # as in DataLoader workers; one thread per core
        # default_collate warns that memory-mapped (read-only) rows make read-only
        # tensors; it stacks them into a new tensor, so the warning does not apply.
        warnings.filterwarnings("ignore", message="The given NumPy array is not "
                                "writable")
        warnings.filterwarnings("ignore", message="'set_vital' is deprecated")

    with SeedWorkdir() as workdir:
        chunks, labels = load_seed_dataset(workdir)
        dataset = seqtools.collate([seqtools.concatenate(chunks), labels])[:-10000]
        assert len(dataset) == TRAIN

        # the loaders, started and warm before any timing
        sampler = seqtools.minibatches(dataset, BATCH, seed=0)
        baseline = seqtools.load_buffers(sampler, max_cached=10, nworkers=2)
        ordered = seqtools.load_buffers(seqtools.minibatches(dataset, BATCH, seed=0),
                                        max_cached=10, nworkers=2, ordered=True)
        epoch_reads = seqtools.load_buffers(EpochBatches(dataset), max_cached=10,
                                            nworkers=2)
        random_reads = seqtools.load_buffers(EpochBatches(dataset, replace=True),
                                             max_cached=10, nworkers=2)
        ours = seqtools.epochs(dataset, BATCH, seed=0, nworkers=2)
        threads = seqtools.epochs(dataset, BATCH, seed=0, nworkers=2, method="thread")
        inline = seqtools.epochs(dataset, BATCH, seed=0)
        # the first batch, whatever makes it: epoch 0's first 64 samples
        want = seqtools.stack(seqtools.gather(dataset,
                                              epoch_order(TRAIN, 0, 0)[:BATCH]))
        for loader in (ours, threads, inline):
            got = next(loader)
            assert all(np.array_equal(a, b) for a, b in zip(got, want))
        next(baseline), next(ordered), next(epoch_reads), next(random_reads)
        # The rows of a ratio the issue sets a target for are next to each other
        # (the machine's speed drifts within seconds), epochs' first.
        configs = [
            ("epochs(nworkers=2), processes", calls_per_second(ours.__next__, n)),
            ("load_buffers(minibatches, nworkers=2), unordered",
             calls_per_second(baseline.__next__, n)),
            ("load_buffers(minibatches, nworkers=2, ordered=True)",
             calls_per_second(ordered.__next__, n)),
            ("load_buffers(epochs' batches, nworkers=2), unordered",
             calls_per_second(epoch_reads.__next__, n)),
            ("load_buffers(random batches, same code, nworkers=2), unordered",
             calls_per_second(random_reads.__next__, n)),
            ("epochs(nworkers=2, method='thread')",
             calls_per_second(threads.__next__, n)),
            ("epochs(nworkers=0), inline", calls_per_second(inline.__next__, n)),
        ]
        torch_loaders = []
        if has_torch:
            from torch.utils.data import DataLoader

            torch_ds = SeedDataset(chunks, labels)
            for persistent in (False, True):
                it = endless(DataLoader(torch_ds, shuffle=True, batch_size=BATCH,
                                        num_workers=2,
                                        persistent_workers=persistent))
                next(it)
                torch_loaders.append(it)
            configs += [
                ("torch DataLoader(shuffle=True, num_workers=2)",
                 calls_per_second(torch_loaders[0].__next__, max(n // 10, 100))),
                ("torch DataLoader(..., persistent_workers=True)",
                 calls_per_second(torch_loaders[1].__next__, max(n // 10, 100))),
            ]
        else:
            configs.append(("torch DataLoader(shuffle=True, num_workers=2)",
                            lambda: None))
        results = interleaved(configs, args.repeats, progress=progress)
        for loader in (baseline, ordered, epoch_reads, random_reads, ours, threads,
                       inline):
            loader.close()
        for it in torch_loaders:
            it.close()

        short = [
            ("epochs(nworkers=2)", epochs_latencies(
                dataset, 2, args.latency_repeats, progress, "epochs(nworkers=2)")),
            ("epochs(nworkers=0)", epochs_latencies(
                dataset, 0, args.latency_repeats, progress, "epochs(nworkers=0)")),
        ]
        long_rows = []
        if not args.no_long_epoch:
            long_ds = seqtools.cycle(dataset, LONG)
            long_rows.append(("epochs(nworkers=2)", epochs_latencies(
                long_ds, 2, args.long_repeats, progress,
                "long epoch, epochs(nworkers=2)")))
            if has_torchdata:
                long_rows.append(("torchdata StatefulDataLoader(num_workers=2)",
                                  sdl_latencies(SeedDataset(chunks, labels, LONG),
                                                args.long_repeats, progress)))
            else:
                long_rows.append(("torchdata StatefulDataLoader(num_workers=2)", {}))

    med = statistics.median
    base = "load_buffers(minibatches, nworkers=2), unordered"
    print(f"\nepochs on the seed workload ({TRAIN} samples, batches of {BATCH}): "
          f"each row timed over {n} batches at a time (torch rows: {max(n // 10, 100)})"
          f" for at least {MIN_SECONDS:g} s, x {args.repeats} repetitions (every "
          f"other one in reverse order), {os.cpu_count()} cores")
    if not has_torch:
        print("(torch DataLoader rows skipped: torch is not importable; "
              "pip install torch==2.13.0, the CPU build)")
    print()
    print(summarize(results, baseline=base))
    mine = results["epochs(nworkers=2), processes"]
    paired = [a / b for a, b in zip(mine, results[base])]
    print(f"\nepochs(nworkers=2) / load_buffers(minibatches): "
          f"{med(mine) / med(results[base]):.2f}x (issue 14 asks >= 0.9x); "
          f"median of the per-repetition ratios (the two rows run back to back): "
          f"{med(paired):.2f}x; per repetition: "
          + ", ".join(f"{r:.2f}x" for r in paired))
    in_order = results["load_buffers(minibatches, nworkers=2, ordered=True)"]
    print(f"load_buffers ordered / unordered: {med(in_order) / med(results[base]):.2f}x"
          "; epochs(nworkers=2) / load_buffers ordered: "
          f"{med(mine) / med(in_order):.2f}x")
    reads = results["load_buffers(epochs' batches, nworkers=2), unordered"]
    rand = results["load_buffers(random batches, same code, nworkers=2), unordered"]
    print(f"epochs' batches / random batches, same code, unordered load_buffers "
          f"(which rows are read, alone): {med(reads) / med(rand):.2f}x; "
          f"epochs(nworkers=2) / load_buffers of epochs' batches (the loaders "
          f"alone): {med(mine) / med(reads):.2f}x")
    dl = results["torch DataLoader(shuffle=True, num_workers=2)"]
    if dl:
        print(f"epochs(nworkers=2) / torch DataLoader(shuffle=True, num_workers=2): "
              f"{med(mine) / med(dl):.1f}x (issue 14 asks >= 30x)")
        pdl = results["torch DataLoader(..., persistent_workers=True)"]
        print(f"epochs(nworkers=2) / DataLoader with persistent workers: "
              f"{med(mine) / med(pdl):.1f}x")

    per_epoch = -(-TRAIN // BATCH)
    print(f"\nFirst batch after load_state_dict, seed workload ({per_epoch} "
          f"batches an epoch: batch 10**6 is epoch {10**6 // per_epoch}), "
          f"median (min-max) of {args.latency_repeats}, worker start included\n")
    print(latency_table(short))
    if long_rows:
        print(f"\nFirst batch after load_state_dict inside one long epoch of {LONG} "
              f"samples ({LONG // BATCH} batches), median (min-max) of "
              f"{args.long_repeats}\n")
        if not has_torchdata:
            print("(StatefulDataLoader row skipped: torchdata is not importable; "
                  "pip install torchdata)\n")
        print(latency_table(long_rows))
    else:
        print("\n(long-epoch latency table skipped: --no-long-epoch or --quick)")


if __name__ == "__main__":
    main()
