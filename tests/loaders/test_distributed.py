"""seqtools.epochs under a real torch.distributed job: ``torchrun`` with the gloo
backend on CPU, over a small memory-mapped dataset.

Two ranks run two whole epochs and part of a third, all-gathering each epoch's
sample ids and saving the loader's state (torch.save) mid-epoch; then one rank
resumes from that state and takes the rest of the epoch. The test checks that each
epoch is a permutation split between the ranks (the tail padded as documented) and
that the first run's part and the resumed run's rest cover the epoch exactly once.
Skipped when torch is not installed.
"""

import collections
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from seqtools.loaders.epochs import epoch_order

N, BATCH, SEED, WIDTH = 203, 8, 123, 4
STOP_AFTER = 5  # batches per rank of the third epoch before the checkpoint

SCRIPT = textwrap.dedent("""
    import json, os, sys
    import numpy as np
    import torch
    import torch.distributed as dist
    import seqtools

    workdir, phase = sys.argv[1], sys.argv[2]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    data = np.load(os.path.join(workdir, "data.npy"), mmap_mode="r")
    ids = np.load(os.path.join(workdir, "ids.npy"), mmap_mode="r")
    dataset = seqtools.collate([data, ids])
    # rank and world size come from the process group
    loader = seqtools.epochs(dataset, {batch}, seed={seed},
                             nworkers=1 if phase == "first" else 0)
    assert (loader.rank, loader.world_size) == (rank, world)

    def batch():
        x, y = next(loader)
        assert (x[:, 0] == y * {width}).all()  # each row holds its sample's data
        return y.tolist()

    def gather(value):
        everyone = [None] * world
        dist.all_gather_object(everyone, value)
        return everyone

    report = {{"world": world}}
    ckpt = os.path.join(workdir, "loader.pt")
    if phase == "first":
        report["epochs"] = []
        for epoch in range(2):
            mine = []
            for _ in range(loader.batches_per_epoch):
                mine.append(batch())
                assert loader.epoch == epoch
            report["epochs"].append(gather(mine))
        report["before"] = gather([batch() for _ in range({stop})])
        states = gather(loader.state_dict())
        assert all(s == states[0] for s in states), states  # a global position
        report["state"] = states[0]
        if rank == 0:
            torch.save({{"loader": states[0]}}, ckpt)
    else:
        state = torch.load(ckpt)["loader"]
        loader.load_state_dict(state)
        rest = []
        while loader.state_dict()["epoch"] == state["epoch"]:
            rest.append(batch())
        report["rest"] = gather(rest)
    if rank == 0:
        with open(os.path.join(workdir, phase + ".json"), "w") as f:
            json.dump(report, f)
    loader.close()
    dist.destroy_process_group()
""").format(batch=BATCH, seed=SEED, width=WIDTH, stop=STOP_AFTER)


def torchrun(tmp_path, nproc, phase):
    script = tmp_path / "train.py"
    script.write_text(SCRIPT)
    # cwd="/": the installed seqtools, not the checkout's source folder
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone",
         f"--nproc_per_node={nproc}", str(script), str(tmp_path), phase],
        capture_output=True, text=True, cwd="/", timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return json.loads((tmp_path / f"{phase}.json").read_text())


@pytest.mark.timeout(600)
def test_torchrun_two_ranks_then_resume_on_one(tmp_path):
    pytest.importorskip("torch.distributed", reason="torch is not installed "
                        "(pip install torch==2.13.0, the CPU build)")
    np.save(tmp_path / "data.npy",
            np.arange(N * WIDTH, dtype=np.float32).reshape(N, WIDTH))
    np.save(tmp_path / "ids.npy", np.arange(N))

    first = torchrun(tmp_path, 2, "first")
    assert first["world"] == 2
    for epoch, ranks in enumerate(first["epochs"]):
        # as many batches on each rank; together, each sample once, and the short
        # tail (203 - 12 * 16 = 11 samples, 6 per rank) padded with one repeat
        assert len(ranks[0]) == len(ranks[1]) == 13
        counts = collections.Counter(i for r in ranks for b in r for i in b)
        order = epoch_order(N, SEED, epoch)
        assert set(counts) == set(range(N)) and sum(counts.values()) == N + 1
        assert counts[int(order[0])] == 2
        assert [len(b) for b in ranks[0]] == [8] * 12 + [6]
        # in the documented layout: step j, rank r takes order[16j + 8r : ...]
        assert ranks[1][3] == order[56:64].tolist()
    assert first["epochs"][0] != first["epochs"][1]  # each epoch its own order

    state = first["state"]
    assert state["epoch"] == 2 and state["position"] == 2 * BATCH * STOP_AFTER
    assert len(json.dumps(state)) < 1024

    second = torchrun(tmp_path, 1, "second")
    assert second["world"] == 1
    before = [i for r in first["before"] for b in r for i in b]
    rest = [i for b in second["rest"][0] for i in b]
    assert len(second["rest"][0]) == -(-(N - state["position"]) // BATCH)
    assert sorted(before + rest) == list(range(N))  # the epoch, exactly once
    assert rest == epoch_order(N, SEED, 2)[state["position"]:].tolist()
