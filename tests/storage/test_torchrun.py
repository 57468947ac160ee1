"""seqtools.epochs over an object store under a real torch.distributed job:
``torchrun --nproc_per_node=2`` (gloo backend, CPU) reading ``.npy`` chunks from
the S3 server of ``conftest.py`` through one block cache shared by the two ranks,
with read-ahead on.

Each rank reads one epoch (rank and world size from the process group), checks
that every row holds its sample's data, and the sample ids are all-gathered. The
test checks that the two ranks together read every sample of the epoch exactly
once, each in the place the epoch's order gives it. Skipped when torch is not
installed.
"""

import collections
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from seqtools.loaders.epochs import epoch_order

N, BATCH, SEED, WIDTH = 408, 12, 7, 6  # 408 = 17 steps of 2 x 12: no padding
CHUNKS = [100, 150, 158]

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import torch.distributed as dist
    import seqtools

    workdir = sys.argv[1]
    with open(os.path.join(workdir, "store.json")) as f:
        store = json.load(f)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    chunks = seqtools.open_npy(store["url"], storage_options=store["options"],
                               cache_dir=os.path.join(workdir, "cache"),
                               block_size=4096)
    ids = np.arange(sum(len(c) for c in chunks))
    dataset = seqtools.collate([seqtools.concatenate(chunks), ids])
    loader = seqtools.epochs(dataset, {batch}, seed={seed}, nworkers=1)
    assert (loader.rank, loader.world_size) == (rank, world)
    assert loader._readahead is not None  # remote arrays with a cache: on
    mine = []
    for x, y in loader.one_epoch():
        # each row holds its sample's data: id * width + column
        assert (x == y[:, None] * {width} + np.arange({width})).all(), y
        mine.append(y.tolist())
    everyone = [None] * world
    dist.all_gather_object(everyone, mine)
    if rank == 0:
        with open(os.path.join(workdir, "epoch.json"), "w") as f:
            json.dump({{"world": world, "ranks": everyone}}, f)
    loader.close()
    dist.destroy_process_group()
""").format(batch=BATCH, seed=SEED, width=WIDTH)


@pytest.mark.timeout(600)
def test_torchrun_two_ranks_read_each_sample_once(s3, tmp_path):
    pytest.importorskip("torch.distributed", reason="torch is not installed "
                        "(pip install torch==2.13.0, the CPU build)")
    data = np.arange(N * WIDTH, dtype=np.float32).reshape(N, WIDTH)
    start = 0
    for k, n in enumerate(CHUNKS):
        s3.upload(f"torchrun/part-{k}.npy", data[start:start + n])
        start += n
    (tmp_path / "store.json").write_text(json.dumps(
        {"url": s3.url("torchrun/part-*.npy"), "options": s3.storage_options()}))
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    # cwd="/": the installed seqtools, not the checkout's source folder
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         "--nproc_per_node=2", str(script), str(tmp_path)],
        capture_output=True, text=True, cwd="/", timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    report = json.loads((tmp_path / "epoch.json").read_text())
    assert report["world"] == 2
    ranks = report["ranks"]
    steps = N // (2 * BATCH)
    assert [len(r) for r in ranks] == [steps, steps]
    counts = collections.Counter(i for r in ranks for b in r for i in b)
    assert set(counts) == set(range(N)) and set(counts.values()) == {1}
    # in the documented layout: step j, rank r takes order[24j + 12r : ...]
    order = epoch_order(N, SEED, 0)
    for r in range(2):
        for j, b in enumerate(ranks[r]):
            lo = j * 2 * BATCH + r * BATCH
            assert b == order[lo:lo + BATCH].tolist(), (r, j)
