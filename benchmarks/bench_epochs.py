"""seqtools.epochs on the seed workload: throughput against its baselines and
torch's loaders, and the first batch after a resume, against torchdata's
StatefulDataLoader and torch's DataLoader + DistributedSampler.

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
- torch's loaders over a map-style Dataset of the same memory-mapped arrays (item
  ``i``: its row and label, collated by torch's default), ``batch_size=64,
  num_workers=2``, each taken epoch after epoch:
  ``torch.utils.data.DataLoader(shuffle=True)``, as specified, and with
  ``persistent_workers=True`` (the default starts new workers each epoch);
  ``DataLoader(sampler=DistributedSampler(shuffle=True, num_replicas=1,
  rank=0))``, what a DistributedDataParallel script runs on each rank, here on
  the only one (the same work as ``epochs`` on one rank), with
  ``sampler.set_epoch(epoch)`` before each epoch as torch asks; and
  ``torchdata.stateful_dataloader.StatefulDataLoader(shuffle=True)``. The torch
  rows are skipped when torch is not importable, StatefulDataLoader's when
  torchdata is not.

First batch after a resume (seconds, median and min-max of the repetitions),
worker start included. For ``epochs`` and StatefulDataLoader: from
``load_state_dict(state)`` on a new loader to its first batch. DataLoader +
DistributedSampler have no state to load: a torch user resuming at batch ``k``
calls ``set_epoch`` on a new loader and takes the epoch's first ``k`` batches
and drops them; timed from ``set_epoch`` to the first batch after those.

- on the seed workload, ``epochs`` with 2 workers and inline, for states at batch
  10 and at batch 10**6 (epoch 8000 there);
- over one long epoch: the seed's training set cycled to 2**26 samples
  (``seqtools.cycle``; 1,048,576 batches an epoch), for the states after 10
  batches and after 1,048,575: the state just before the epoch's last batch
  (columns named by the batch resumed at, counted from 0).
  ``epochs(nworkers=2)``,
  ``torchdata.stateful_dataloader.StatefulDataLoader(shuffle=True,
  num_workers=2)`` and DataLoader + DistributedSampler over the same samples.
  All three draw an epoch's permutation of 2**26 indices (seconds, whatever the
  position); StatefulDataLoader then replays its sampler up to the position, and
  DataLoader loads and drops every batch before it. StatefulDataLoader's state
  before the last batch is made from its own state at batch 10 by setting the
  counters of batches and samples yielded (checked against the states it gives
  at batch 20, and before the last batch of a 125-batch epoch), since running
  its 1,048,575 batches would take most of an hour; a resumed loader is checked
  to end its epoch after the one batch. DataLoader + DistributedSampler is
  timed at batch 10 only: at the last batch it would load 1,048,575 batches
  first, and the table says so instead of a figure. No row is timed cold: the
  process's first resume over the long epoch is the slowest, so epochs is
  resumed once untimed, and StatefulDataLoader has made its states by then.
  Skipped when the package is not importable.

The long epoch takes minutes and some 6 GB (StatefulDataLoader and
DistributedSampler hold their permutation as a Python list): one repetition by
default (``--long-repeats``), none with ``--no-long-epoch``; ``--quick`` runs it
over 2**16 samples, a check that its code runs.

Usage: python benchmarks/bench_epochs.py [--batches N] [--repeats R] [--quick]
       [--long-repeats R] [--no-long-epoch]

``--repeats`` sets the repetitions of the throughput and the seed workload's
latency tables (default: 9 and 3).
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
QUICK_LONG = 2**16  # the long epoch under --quick: a check that its code runs

# The torch rows of the throughput table
DL = "torch DataLoader(shuffle=True, num_workers=2)"
PDL = "torch DataLoader(..., persistent_workers=True)"
DDL = "torch DataLoader(num_workers=2) + DistributedSampler(shuffle=True), 1 replica"
SDL = "torchdata StatefulDataLoader(shuffle=True, num_workers=2)"


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


def endless(loader, sampler=None):
    """A torch loader's batches, epoch after epoch; with a DistributedSampler,
    ``sampler.set_epoch(epoch)`` before each epoch, as torch's documentation asks
    (without it every epoch has the first one's order)."""
    epoch = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        yield from loader
        epoch += 1


def distributed_loader(dataset):
    """torch DataLoader over a DistributedSampler of one replica, rank 0: what a
    DistributedDataParallel script runs on each rank, here the only one (the same
    work as ``epochs`` on one rank). Returns (loader, sampler)."""
    from torch.utils.data import DataLoader
    from torch.utils.data.distributed import DistributedSampler

    sampler = DistributedSampler(dataset, num_replicas=1, rank=0, shuffle=True,
                                 seed=0)
    return DataLoader(dataset, batch_size=BATCH, sampler=sampler,
                      num_workers=2), sampler


def state_at(k, batches_per_epoch, n, seed=0):
    """The epochs state after batch k, as documented (single rank)."""
    epoch, j = divmod(k, batches_per_epoch)
    return {"version": 1, "epoch": epoch, "position": j * BATCH, "seed": seed,
            "dataset_length": n, "batch_size": BATCH, "shuffle": True}


def consumed(state):
    """Samples an epochs state is past, all epochs counted: (epoch 0, position n)
    and (epoch 1, position 0) are one place."""
    return state["epoch"] * state["dataset_length"] + state["position"]


def resume_latency(make, state):
    """Seconds from load_state_dict(state) on a new loader to its first batch.
    The loader's state after that batch is checked to be one batch past
    ``state`` (after the timing)."""
    loader = make()
    t0 = time.perf_counter()
    loader.load_state_dict(state)
    next(loader)
    seconds = time.perf_counter() - t0
    after = loader.state_dict()
    loader.close()
    n = state["dataset_length"]
    want = state["epoch"] * n + min(state["position"] + BATCH, n)
    if consumed(after) != want:
        raise RuntimeError(f"epochs resumed from {state} is at {after} after one "
                           "batch: not the batch the state is at")
    return seconds


def epochs_latencies(dataset, nworkers, positions, repeats, progress, label,
                     warm=False):
    """{k: [seconds]} for epochs(nworkers=nworkers) over ``dataset`` resumed after
    batch k, for each k of ``positions``; ``warm``: after one resume not timed."""
    n = len(dataset)
    per_epoch = -(-n // BATCH)

    def make():
        return seqtools.epochs(dataset, BATCH, seed=0, nworkers=nworkers)

    if warm:
        progress(f"{label}: one resume, not timed")
        resume_latency(make, state_at(positions[0], per_epoch, n))
    results = {k: [] for k in positions}
    for r in range(repeats):
        for k in positions if r % 2 == 0 else positions[::-1]:
            progress(f"rep {r + 1}/{repeats}: {label} at batch {k}")
            results[k].append(resume_latency(make, state_at(k, per_epoch, n)))
    return results


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


def sdl_latencies(dataset, positions, repeats, progress, short):
    """{k: [seconds]} for StatefulDataLoader over ``dataset`` resumed after batch
    k, for each k of ``positions``. Its states are made from its own state at
    batch 10 by :func:`sdl_state_at`, checked against the states it gives at
    batch 20 of ``dataset`` and before the last batch of ``short`` (a dataset of
    one short epoch)."""
    import torch
    from torchdata.stateful_dataloader import StatefulDataLoader

    def make(data):  # seeded, as the epochs loaders are: states can be compared
        return StatefulDataLoader(data, batch_size=BATCH, shuffle=True,
                                  num_workers=2,
                                  generator=torch.Generator().manual_seed(0))

    def state_after(data, k):
        loader = make(data)
        it = iter(loader)
        for _ in range(k):
            next(it)
        state = loader.state_dict()
        del it
        return state

    last_short = -(-len(short) // BATCH) - 1
    progress(f"StatefulDataLoader: its states at batches 10 and 20, and at batches "
             f"10 and {last_short} (the last) of a {len(short)}-sample epoch")
    at10 = state_after(dataset, 10)
    for data, base, k in ((dataset, at10, 20),
                          (short, state_after(short, 10), last_short)):
        real = state_after(data, k)
        if not same_state(sdl_state_at(base, k), real):
            raise RuntimeError(
                "the StatefulDataLoader state recipe does not match its own state "
                f"at batch {k} of {len(data)} samples: fix sdl_state_at\n{real}")

    last = -(-len(dataset) // BATCH) - 1

    def latency(state, k):
        loader = make(dataset)
        t0 = time.perf_counter()
        loader.load_state_dict(state)
        it = iter(loader)
        next(it)
        seconds = time.perf_counter() - t0
        if k == last and next(it, None) is not None:
            raise RuntimeError(f"StatefulDataLoader resumed at batch {k}, the last "
                               "of its epoch, yields another batch after it")
        del it
        return seconds

    results = {k: [] for k in positions}
    for r in range(repeats):
        for k in positions if r % 2 == 0 else positions[::-1]:
            progress(f"rep {r + 1}/{repeats}: StatefulDataLoader at batch {k}")
            results[k].append(latency(sdl_state_at(at10, k), k))
    return results


def distributed_latencies(dataset, positions, repeats, progress):
    """{k: [seconds]} for torch DataLoader + DistributedSampler over ``dataset``
    resumed after batch k as its users do: neither has a state to load, so the
    epoch is started again (``set_epoch``) and its first k batches are taken and
    dropped. Timed from ``set_epoch`` on a new loader to the first batch past the
    k dropped ones."""
    results = {k: [] for k in positions}
    for r in range(repeats):
        for k in positions if r % 2 == 0 else positions[::-1]:
            progress(f"rep {r + 1}/{repeats}: DataLoader + DistributedSampler, "
                     f"{k} batches skipped")
            loader, sampler = distributed_loader(dataset)
            t0 = time.perf_counter()
            sampler.set_epoch(0)
            it = iter(loader)
            for _ in range(k):
                next(it)
            next(it)
            results[k].append(time.perf_counter() - t0)
            del it
    return results


def latency_table(rows, columns):
    """Markdown: one row per ``(name, {k: [seconds] or why not measured})`` ({}:
    the whole row skipped), one column per ``(k, heading)``, and the ratio of the
    second column to the first."""
    (k0, head0), (k1, head1) = columns
    lines = [f"| loader | {head0} (s) | {head1} (s) | {head1} / {head0} |",
             "|---|---:|---:|---:|"]

    def cell(values):
        if isinstance(values, str):
            return values
        return (f"{statistics.median(values):.3f} "
                f"({min(values):.3f}-{max(values):.3f})")

    for name, by_k in rows:
        if not by_k:
            lines.append(f"| {name} | skipped | | |")
            continue
        a, b = by_k[k0], by_k[k1]
        ratio = ("" if isinstance(a, str) or isinstance(b, str) else
                 f"{statistics.median(b) / statistics.median(a):.2f}x")
        lines.append(f"| {name} | {cell(a)} | {cell(b)} | {ratio} |")
    return "\n".join(lines)


def main():
    parser = _common.parser(__doc__, repeats="9 for throughput, 3 for latencies",
                            batches=3000)
    parser.add_argument("--long-repeats", type=int, default=1,
                        help="repetitions of the long-epoch table (minutes each)")
    parser.add_argument("--no-long-epoch", action="store_true",
                        help="skip the long-epoch latency table (the slowest; "
                             f"--quick runs it over {QUICK_LONG} samples)")
    args = _common.parse_args(parser)
    n = args.batches = _common.batches(args, 3000)
    args.latency_repeats = _common.repeats(args, 3)
    args.repeats = _common.repeats(args, 9)
    long_n = QUICK_LONG if args.quick else LONG
    last = long_n // BATCH - 1  # the long epoch's last batch

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
        # torch's loaders, each taking its batches epoch after epoch; a row whose
        # package is not importable stays in the table as "skipped"
        torch_loaders = {}
        if has_torch:
            from torch.utils.data import DataLoader

            torch_ds = SeedDataset(chunks, labels)
            for name, persistent in ((DL, False), (PDL, True)):
                torch_loaders[name] = endless(DataLoader(
                    torch_ds, shuffle=True, batch_size=BATCH, num_workers=2,
                    persistent_workers=persistent))
            torch_loaders[DDL] = endless(*distributed_loader(torch_ds))
        if has_torchdata:
            from torchdata.stateful_dataloader import StatefulDataLoader

            torch_loaders[SDL] = endless(StatefulDataLoader(
                SeedDataset(chunks, labels), shuffle=True, batch_size=BATCH,
                num_workers=2))
        for name in (DL, PDL, DDL, SDL):
            it = torch_loaders.get(name)
            if it is None:
                configs.append((name, lambda: None))
                continue
            next(it)
            configs.append((name, calls_per_second(it.__next__, max(n // 10, 100))))
        results = interleaved(configs, args.repeats, progress=progress)
        for loader in (baseline, ordered, epoch_reads, random_reads, ours, threads,
                       inline):
            loader.close()
        for it in torch_loaders.values():
            it.close()

        short_at = (10, 10**6)
        short = [
            ("epochs(nworkers=2)", epochs_latencies(
                dataset, 2, short_at, args.latency_repeats, progress,
                "epochs(nworkers=2)")),
            ("epochs(nworkers=0)", epochs_latencies(
                dataset, 0, short_at, args.latency_repeats, progress,
                "epochs(nworkers=0)")),
        ]
        long_rows = []
        if not args.no_long_epoch:
            long_at = (10, last)
            long_ds = seqtools.cycle(dataset, long_n)
            # The first resume over the long epoch in this process takes seconds
            # more than the next ones, at any position (13.7 s, then 6.2 s at
            # batch 10 in one run on the 2-core machine). StatefulDataLoader
            # runs twice over the long epoch (its states) before its timed
            # resumes, and DataLoader comes after it: one untimed resume of
            # epochs first, so that no row is timed cold.
            long_rows.append(("epochs(nworkers=2)", epochs_latencies(
                long_ds, 2, long_at, args.long_repeats, progress,
                "long epoch, epochs(nworkers=2)", warm=True)))
            sdl_row = {}
            if has_torchdata:
                sdl_row = sdl_latencies(SeedDataset(chunks, labels, long_n), long_at,
                                        args.long_repeats, progress,
                                        SeedDataset(chunks, labels))
            long_rows.append(("torchdata StatefulDataLoader(shuffle=True, "
                              "num_workers=2)", sdl_row))
            ddl_row = {}
            if has_torch:
                ddl_row = distributed_latencies(SeedDataset(chunks, labels, long_n),
                                                (10,), args.long_repeats, progress)
                # Not run: the DataLoader would read, collate and send every batch
                # of the epoch before the last one (minutes at the throughput
                # table's rate), and a figure made from that rate is no
                # measurement of the resume.
                ddl_row[last] = f"not run: replays {last:,} batches first"
            long_rows.append(("torch DataLoader + DistributedSampler(shuffle=True): "
                              "set_epoch, the batches before skipped", ddl_row))

    med = statistics.median
    base = "load_buffers(minibatches, nworkers=2), unordered"
    print(f"\nepochs on the seed workload ({TRAIN} samples, batches of {BATCH}): "
          f"each row timed over {n} batches at a time (torch rows: {max(n // 10, 100)})"
          f" for at least {MIN_SECONDS:g} s, x {args.repeats} repetitions (every "
          f"other one in reverse order), {os.cpu_count()} cores")
    if not has_torch:
        print("(torch rows skipped: torch is not importable; "
              "pip install torch==2.13.0, the CPU build)")
    elif not has_torchdata:
        print("(StatefulDataLoader rows skipped: torchdata is not importable; "
              "pip install torchdata)")
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
    for name, what in ((DL, DL + " (issue 14 asks >= 30x)"),
                       (PDL, "DataLoader with persistent workers"),
                       (DDL, "DataLoader + DistributedSampler"),
                       (SDL, "StatefulDataLoader")):
        if results[name]:
            print(f"epochs(nworkers=2) / {what}: "
                  f"{med(mine) / med(results[name]):.1f}x")

    per_epoch = -(-TRAIN // BATCH)
    print(f"\nFirst batch after load_state_dict, seed workload ({per_epoch} "
          f"batches an epoch: batch 10**6 is epoch {10**6 // per_epoch}), "
          f"median (min-max) of {args.latency_repeats}, worker start included\n")
    print(latency_table(short, [(10, "batch 10"), (10**6, "batch 10^6")]))
    if long_rows:
        print(f"\nFirst batch after a resume inside one long epoch of {long_n:,} "
              f"samples ({long_n // BATCH:,} batches): after 10 batches, and after "
              f"{last:,} (the state just before the epoch's last batch); "
              f"median (min-max) of {args.long_repeats}, worker start included. "
              "epochs and StatefulDataLoader: from load_state_dict on a new loader "
              "to its first batch; DataLoader + DistributedSampler, which have no "
              "state to load: from set_epoch on a new loader to the first batch "
              "after skipping the k before it\n")
        if not has_torch:
            print("(torch rows skipped: torch is not importable; "
                  "pip install torch==2.13.0, the CPU build)\n")
        elif not has_torchdata:
            print("(StatefulDataLoader row skipped: torchdata is not importable; "
                  "pip install torchdata)\n")
        print(latency_table(long_rows, [(10, "batch 10"),
                                        (last, f"batch {last:,}, the last")]))
    else:
        print("\n(long-epoch latency table skipped: --no-long-epoch)")


if __name__ == "__main__":
    main()
