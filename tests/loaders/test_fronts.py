"""What every loader kind promises, written once in seqtools.loaders.fronts:
closing, errors that name the task, threads taking turns, forked children.

Each test runs over every engine behind each front: prefetch and ordered or
unordered load_buffers on worker processes, Python worker threads and native
copy threads, and epochs on processes and threads.
"""

import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import seqtools
from seqtools import EvaluationError, LoaderClosed
from seqtools.loaders.copies import CopyEngine
from seqtools.loaders.process import ProcessEngine
from seqtools.loaders.threads import ThreadEngine

ROWS = np.arange(600.0).reshape(200, 3)


def square(x):
    if x == 3:
        raise ValueError("item 3 is bad")
    return x * x


class Sampler:
    """Call k returns k (and fails for k == 3): the stream is checkable."""

    def __call__(self):
        k = seqtools.call_index()
        if k == 3:
            raise ValueError("call 3 is bad")
        return np.full(2, k)


def fused_batches():
    return seqtools.batch(ROWS, 10, collate_fn=seqtools.stack)


# name -> (make a loader, its engine type, how task k reads, ordered)
KINDS = {
    "prefetch-thread": (
        lambda: seqtools.prefetch(seqtools.smap(square, list(range(50))), 2, "thread"),
        ThreadEngine),
    "prefetch-copy": (
        lambda: seqtools.prefetch(fused_batches(), 2, "thread"), CopyEngine),
    "prefetch-process": (
        lambda: seqtools.prefetch(seqtools.smap(square, list(range(50))), 2,
                                  "process"), ProcessEngine),
    "load_buffers-process": (
        lambda: seqtools.load_buffers(Sampler(), 4, 2), ProcessEngine),
    "load_buffers-process-ordered": (
        lambda: seqtools.load_buffers(Sampler(), 4, 2, ordered=True), ProcessEngine),
    "load_buffers-thread": (
        lambda: seqtools.load_buffers(Sampler(), 4, 2, method="thread"), ThreadEngine),
    "load_buffers-thread-ordered": (
        lambda: seqtools.load_buffers(Sampler(), 4, 2, method="thread",
                                      ordered=True), ThreadEngine),
    "load_buffers-copy": (
        lambda: seqtools.load_buffers(seqtools.minibatches(ROWS, 8, seed=0), 4, 2,
                                      method="thread"), CopyEngine),
}


def read(loader, k):
    return loader[k] if isinstance(loader, seqtools.View) else next(loader)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_each_kind_runs_on_its_engine(kind):
    make, engine = KINDS[kind]
    with make() as loader:
        assert type(loader._engine) is engine
        read(loader, 0)


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_a_closed_loader_raises_loader_closed(kind):
    make, _ = KINDS[kind]
    loader = make()
    first = read(loader, 0)
    loader.close()
    loader.close()  # closing twice is harmless
    for k in (1, 0):  # in order or not, for views
        with pytest.raises(LoaderClosed, match="closed"):
            read(loader, k)
    assert issubclass(LoaderClosed, ValueError)  # as I/O on a closed file
    with pytest.raises(LoaderClosed):
        for _ in loader:  # a for loop does not just end
            pass
    assert first is not None  # results handed out stay valid
    np.asarray(first).sum()


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_leaving_a_with_block_closes(kind):
    make, _ = KINDS[kind]
    with make() as loader:
        read(loader, 0)
    with pytest.raises(LoaderClosed):
        read(loader, 1)


@pytest.mark.parametrize("kind", [k for k in sorted(KINDS) if "copy" not in k])
def test_a_failure_names_its_task_and_the_loader_goes_on(kind):
    make, _ = KINDS[kind]
    with make() as loader:
        seen = []
        failures = 0
        # unordered, the failure's report (a formatted traceback) may come
        # after many results of later calls: read on until it has come
        for k in range(8 if "ordered" in kind or "prefetch" in kind else 10**5):
            if k >= 8 and failures:
                break
            try:
                value = read(loader, k)
            except EvaluationError as e:
                failures += 1
                assert "3" in str(e) and "is bad" in str(e)
                assert __file__ in str(e)  # where the loader was created
                # the innermost view that failed names itself (smap, in a
                # thread), else the loader (a worker process's traceback follows)
                assert ("item 3 of " in str(e)
                        or "(call 3) of load_buffers" in str(e))
                continue
            seen.append(int(np.asarray(value).ravel()[0]))
        assert failures == 1
        if "ordered" in kind or "prefetch" in kind:
            expected = [0, 1, 2, 4, 5, 6, 7]
            if "prefetch" in kind:
                expected = [k * k for k in expected]
            assert seen == expected
        else:  # completion order: no call twice, and the failed one never
            assert len(seen) == len(set(seen)) >= 7 and 3 not in seen


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_threads_sharing_a_loader_take_their_turns(kind):
    make, _ = KINDS[kind]
    with make() as loader:
        if "prefetch" in kind:
            # a view read by several threads, each its own items: each gets
            # the right one (prefetch restarts where it is read)
            def work(t, out):
                for k in range(t, 40, 4):
                    k %= len(loader)
                    try:
                        out.append((k, loader[k]))
                    except EvaluationError:
                        out.append((k, None))
        else:
            def work(t, out):
                for _ in range(10):
                    try:
                        out.append((None, next(loader)))
                    except EvaluationError:
                        out.append((None, None))
        outs = [[] for _ in range(4)]
        threads = [threading.Thread(target=work, args=(t, outs[t]))
                   for t in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
            assert not t.is_alive()
        results = [r for out in outs for r in out]
        assert len(results) == 40
        if kind == "prefetch-copy":
            for k, value in results:
                assert (value == fused_batches()[k]).all()
        elif "prefetch" in kind:
            for k, value in results:
                assert value == (None if k == 3 else k * k)
        elif kind != "load_buffers-copy":
            got = sorted(int(v[0]) for _, v in results if v is not None)
            if "ordered" in kind:  # calls 0 .. 39, each once
                assert got == [k for k in range(40) if k != 3]
            else:  # completion order: no call twice, the failed one never
                # (its report may come after many later calls' results)
                assert len(got) == len(set(got)) >= 39 and 3 not in got


FORK_SCRIPT = """
import os, sys
import numpy as np
import seqtools

def sampler():
    return np.full(2, seqtools.call_index())

rows = np.arange(600.0).reshape(200, 3)
kinds = {
    "prefetch-thread": lambda: seqtools.prefetch(
        seqtools.smap(float, list(range(50))), 2, "thread"),
    "prefetch-copy": lambda: seqtools.prefetch(
        seqtools.batch(rows, 10, collate_fn=seqtools.stack), 2, "thread"),
    "prefetch-process": lambda: seqtools.prefetch(list(range(50)), 2, "process"),
    "load_buffers-process": lambda: seqtools.load_buffers(sampler, 4, 2),
    "load_buffers-thread": lambda: seqtools.load_buffers(
        sampler, 4, 2, method="thread"),
    "load_buffers-copy": lambda: seqtools.load_buffers(
        seqtools.minibatches(rows, 8, seed=0), 4, 2, method="thread"),
    "epochs-process": lambda: seqtools.epochs(rows, 8, seed=0, nworkers=2),
    "epochs-thread": lambda: seqtools.epochs(rows, 8, seed=0, nworkers=2,
                                             method="thread"),
}

def read(loader, k):
    return loader[k] if isinstance(loader, seqtools.View) else next(loader)

for name, make in kinds.items():
    loader = make()
    read(loader, 0)
    pid = os.fork()
    if pid == 0:
        try:
            read(loader, 1)
        except RuntimeError as e:
            os._exit(0 if "create a loader in the child" in str(e) else 3)
        os._exit(4)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    assert code == 0, (name, code)
    read(loader, 1)  # the parent's loader is untouched
    # a child that just exits leaves the parent's loader alone too
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    read(loader, 2)
    loader.close()
    print(name, "ok", flush=True)
"""


def test_a_forked_child_is_refused_by_every_kind(tmp_path):
    # in a subprocess: forking pytest's multi-threaded process would warn
    script = tmp_path / "fork_child.py"  # run from tmp_path: the installed seqtools
    script.write_text(textwrap.dedent(FORK_SCRIPT))
    res = subprocess.run([sys.executable, str(script)], capture_output=True,
                         text=True, timeout=240, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    assert [line.split()[0] for line in res.stdout.split("\n") if line] == [
        "prefetch-thread", "prefetch-copy", "prefetch-process",
        "load_buffers-process", "load_buffers-thread", "load_buffers-copy",
        "epochs-process", "epochs-thread"]
