"""The training loop the README and docs/torch.rst open with
(docs/examples/train_epochs.py) runs as written: killed and resumed, it ends
with the very model of an uninterrupted run; under ``torchrun
--nproc_per_node=2`` each epoch is every sample once; a two-rank run killed
mid-epoch resumes on one process and covers the rest of that epoch once.
Skipped when torch is not installed."""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "docs" / "examples" / "train_epochs.py"
ROWS, CHUNKS = 15000, 3

# Instruments the example: after each optimizer step, the batch's sample ids
# (column 0 of the test data) go to trained-<rank>.log, and the process kills
# itself at the KILL_AT-th step of rank KILL_RANK.
PRELUDE = '''\
import json as _json, os as _os, signal as _signal
_steps = [0]
def _log(epoch, X):
    rank = _os.environ.get("RANK", "0")
    with open(f"trained-{rank}.log", "a") as f:
        f.write(_json.dumps([epoch, X[:, 0].astype(int).tolist()]) + "\\n")
    _steps[0] += 1
    if (str(_steps[0]) == _os.environ.get("KILL_AT")
            and rank == _os.environ.get("KILL_RANK", "0")):
        _os.kill(_os.getpid(), _signal.SIGKILL)
'''
STEP = "            optimizer.step()\n"

pytestmark = [
    pytest.mark.timeout(600),
    pytest.mark.skipif(not EXAMPLE.exists(), reason="not a source checkout"),
]


@pytest.fixture
def workdir(tmp_path):
    pytest.importorskip("torch", reason="torch is not installed (pip install "
                        "torch==2.13.0, the CPU build)")
    code = EXAMPLE.read_text()
    assert code.count(STEP) == 1, "the example's training step changed"
    script = PRELUDE + code.replace(STEP, STEP + "            _log(epoch, X)\n")
    (tmp_path / "train.py").write_text(script)
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    rows = rng.random((ROWS, 248), dtype=np.float32)
    rows[:, 0] = np.arange(ROWS)  # the sample's id, exact in float32
    for i, chunk in enumerate(np.split(rows, CHUNKS)):
        np.save(data / f"train-{i}.npy", chunk)
    np.save(data / "labels.npy", rng.integers(0, 10, ROWS))
    return tmp_path


def run(folder, nproc=None, **env):
    """The example in ``folder``: one process, or ``nproc`` ranks under torchrun."""
    command = [sys.executable, "train.py"] if nproc is None else [
        sys.executable, "-m", "torch.distributed.run", "--standalone",
        f"--nproc_per_node={nproc}", "train.py"]
    environment = dict(os.environ, OMP_NUM_THREADS="1", **env)
    return subprocess.run(command, cwd=folder, env=environment, capture_output=True,
                          text=True, timeout=400)


def ok(done):
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]


def trained(folder, rank=0):
    """[(epoch, [sample ids])] of each step of rank ``rank``, in order."""
    path = folder / f"trained-{rank}.log"
    return [tuple(json.loads(line)) for line in path.read_text().splitlines()]


def weights(folder):
    import torch
    return {k: v.numpy() for k, v in torch.load(folder / "model.pt").items()}


def checkpoint(folder):
    import torch
    return torch.load(folder / "checkpoint.pt")["loader"]


def test_a_killed_run_resumes_to_the_model_of_an_uninterrupted_one(workdir,
                                                                    tmp_path_factory):
    reference = tmp_path_factory.mktemp("reference")
    for item in workdir.iterdir():
        os.symlink(item, reference / item.name)
    ok(run(reference))
    steps = trained(reference)
    per_epoch = -(-ROWS // 64)
    assert len(steps) == 3 * per_epoch
    for epoch in range(3):  # each epoch: every sample once
        ids = sum((s for e, s in steps if e == epoch), [])
        assert sorted(ids) == list(range(ROWS))

    killed = run(workdir, KILL_AT=str(per_epoch + 70))  # epoch 1, step 70
    assert killed.returncode == -9
    state = checkpoint(workdir)  # saved after step 49 of epoch 1
    assert (state["epoch"], state["position"]) == (1, 50 * 64)
    ok(run(workdir))
    steps_run = trained(workdir)
    # trained: up to the kill, then again from the checkpoint to the end
    assert steps_run[:per_epoch + 70] == steps[:per_epoch + 70]
    assert steps_run[per_epoch + 70:] == steps[per_epoch + 50:]
    assert all((weights(workdir)[k] == v).all() for k, v in weights(reference).items())


def test_torchrun_two_ranks_then_an_elastic_resume_on_one(workdir):
    per_epoch = -(-ROWS // 128)  # steps of each rank (the tail split evenly)
    killed = run(workdir, nproc=2, KILL_AT=str(per_epoch + 80), KILL_RANK="1")
    assert killed.returncode != 0
    state = checkpoint(workdir)  # rank 0's, after step 49 of epoch 1
    assert (state["epoch"], state["position"]) == (1, 50 * 128)
    first = [trained(workdir, rank) for rank in (0, 1)]
    ids = sum((s for r in first for e, s in r if e == 0), [])
    assert sorted(ids) == list(range(ROWS))  # epoch 0: every sample once
    before = sum((s for r in first for e, s in r[per_epoch:per_epoch + 50]), [])
    for name in ("trained-0.log", "trained-1.log"):
        os.remove(workdir / name)
    ok(run(workdir))  # one process: the rest of epoch 1, then epoch 2
    rest = trained(workdir)
    after = sum((s for e, s in rest if e == 1), [])
    assert sorted(before + after) == list(range(ROWS))  # each sample once
    assert sorted(sum((s for e, s in rest if e == 2), [])) == list(range(ROWS))
