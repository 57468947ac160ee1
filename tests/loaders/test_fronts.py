"""What every loader kind promises, written once in seqtools.loaders.fronts:
closing, errors that name the task, threads taking turns, forked children.

Each test runs over every engine behind each front: prefetch and ordered or
unordered load_buffers on worker processes, Python worker threads and native
copy threads, and epochs on processes and threads.
"""

import _thread
import functools
import gc
import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from conftest import pid_alive

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


# -- timeouts, stall reports, interrupts ---------------------------------------------

def wait_for_flag(flag):
    """Block until the file ``flag`` exists (a task that hangs until released)."""
    while not os.path.exists(flag):
        time.sleep(0.01)


class Hanging(seqtools.View):
    """Item i is i * i, item 3 hangs until ``flag`` exists."""

    def __init__(self, flag, n=30):
        seqtools.View.__init__(self, n)
        self.flag = flag

    def _get(self, i):
        if i == 3:
            wait_for_flag(self.flag)
        return i * i


class HangingSampler:
    """Call k returns [k, k]; call 3 hangs until ``flag`` exists."""

    def __init__(self, flag):
        self.flag = flag

    def __call__(self):
        k = seqtools.call_index()
        if k == 3:
            wait_for_flag(self.flag)
        return np.full(2, k)


HANGING = {
    "prefetch-thread": lambda flag, n=2, **kw: seqtools.prefetch(
        Hanging(flag), n, "thread", **kw),
    "prefetch-process": lambda flag, n=2, **kw: seqtools.prefetch(
        Hanging(flag), n, "process", **kw),
    "load_buffers-process": lambda flag, n=2, **kw: seqtools.load_buffers(
        HangingSampler(flag), 4, n, **kw),
    "load_buffers-process-ordered": lambda flag, n=2, **kw: seqtools.load_buffers(
        HangingSampler(flag), 4, n, ordered=True, **kw),
    "load_buffers-thread": lambda flag, n=2, **kw: seqtools.load_buffers(
        HangingSampler(flag), 4, n, method="thread", **kw),
    "load_buffers-thread-ordered": lambda flag, n=2, **kw: seqtools.load_buffers(
        HangingSampler(flag), 4, n, method="thread", ordered=True, **kw),
}
# Unordered, the other workers go on while one hangs: with one worker, a read
# waits for the hanging call (a stall, a read to interrupt).
WAITING = {kind: 1 if "load_buffers" in kind and "ordered" not in kind else 2
           for kind in HANGING}


def value_of(x):
    return int(np.asarray(x).ravel()[0])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", sorted(HANGING))
def test_a_task_past_the_timeout_raises_and_the_loader_goes_on(kind, tmp_path):
    flag = str(tmp_path / "release")
    ordered = "prefetch" in kind or "ordered" in kind
    with HANGING[kind](flag, timeout=0.5, stall_report=None) as loader:
        got = []
        with pytest.raises(seqtools.LoaderTimeout) as info:
            # unordered, the other calls go on meanwhile: read until it raises
            for k in range(30 if ordered else 10**6):
                got.append(value_of(read(loader, k)))
        e = info.value
        assert isinstance(e, TimeoutError) and e.index == 3 and e.seconds > 0.5
        assert ("item 3" if "prefetch" in kind else "call 3") in str(e)
        assert "timeout=0.5" in str(e) and __file__ in str(e)
        assert "wait_for_flag" in e.stack and "wait_for_flag" in str(e)
        open(flag, "w").close()  # released: reading again retries the task
        if ordered:
            assert got == ([0, 1, 4] if "prefetch" in kind else [0, 1, 2])
            rest = [value_of(read(loader, k)) for k in range(3, 8)]
            assert rest == ([9, 16, 25, 36, 49] if "prefetch" in kind
                            else [3, 4, 5, 6, 7])
        else:  # call 3 comes, once, among the next results
            for _ in range(10**4):
                got.append(value_of(next(loader)))
                if 3 in got:
                    break
            assert got.count(3) == 1 and len(got) == len(set(got))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", sorted(HANGING))
def test_a_stall_is_reported_once_with_the_busy_tasks(kind, tmp_path, caplog):
    flag = str(tmp_path / "release")
    caplog.set_level(logging.WARNING, logger="seqtools")
    task = "item 3" if "prefetch" in kind else "call 3"

    def reports():
        # the stall on the hanging task; on a loaded machine, workers slow to
        # start make a stall of their own before it, reported as such
        return [r.getMessage() for r in caplog.records
                if "no result" in r.getMessage() and task in r.getMessage()]

    with HANGING[kind](flag, WAITING[kind], stall_report=0.5) as loader:
        ordered = "prefetch" in kind or "ordered" in kind
        released = threading.Event()

        def release():  # once the stall was reported, let the task go on
            deadline = time.monotonic() + 60  # a safety net
            while time.monotonic() < deadline and not reports():
                time.sleep(0.05)
            open(flag, "w").close()
            released.set()

        helper = threading.Thread(target=release)
        helper.start()
        got = [value_of(read(loader, k)) for k in range(12)]
        helper.join(60)
        assert released.is_set()
        if ordered:
            assert got == ([k * k for k in range(12)] if "prefetch" in kind
                           else list(range(12)))
        stalls = reports()
        assert len(stalls) == 1, stalls  # once per stall
        assert "wait_for_flag" in stalls[0]  # the busy worker's stack
        assert "stall_report=0.5" in stalls[0]
        assert sorted(got) == sorted(set(got))


def epochs_of_hanging(flag, **kw):
    return seqtools.epochs(Hanging(flag), 5, seed=0, num_epochs=2, **kw)


INTERRUPTED = dict({kind: functools.partial(make, n=WAITING[kind])
                    for kind, make in HANGING.items()}, **{
    "epochs-process": lambda flag: epochs_of_hanging(flag, nworkers=2),
    "epochs-thread": lambda flag: epochs_of_hanging(flag, nworkers=2,
                                                    method="thread"),
})


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler, as in a terminal, for the test: a process
    that a shell starts in the background (CI's suites) inherits SIGINT
    ignored, and interrupt_main then does nothing."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", sorted(INTERRUPTED))
def test_a_caught_keyboard_interrupt_leaves_the_loader_usable(kind, tmp_path,
                                                             python_sigint):
    # Ctrl-C as a notebook sends it, to the main thread only, while a read waits
    # (for a task that hangs until released): caught, the loader goes on with
    # the task it was waiting for, nothing lost or repeated.
    flag = str(tmp_path / "release")
    loader = INTERRUPTED[kind](flag)
    ordered = "ordered" in kind or "prefetch" in kind or "epochs" in kind

    def interrupt_then_release():
        time.sleep(0.5)  # the main thread waits for the hanging task by then
        _thread.interrupt_main()
        time.sleep(0.2)
        open(flag, "w").close()

    helper = threading.Thread(target=interrupt_then_release)
    helper.start()
    got, interrupts = [], 0
    try:
        while len(got) < 12:
            try:
                if "epochs" in kind:
                    got.append(next(loader).tolist())
                else:
                    got.append(value_of(read(loader, len(got))))
            except KeyboardInterrupt:
                interrupts += 1
    finally:
        helper.join(60)
        loader.close()
    assert interrupts == 1
    if "epochs" in kind:
        open(flag, "w").close()
        inline = seqtools.epochs(Hanging(flag), 5, seed=0, num_epochs=2)
        assert got == [b.tolist() for b in inline]
    elif ordered:
        assert got == ([k * k for k in range(12)] if "prefetch" in kind
                       else list(range(12)))
    else:  # completion order: none twice; the waited-for call still comes
        assert len(set(got)) == len(got) == 12


@pytest.mark.timeout(120)
@pytest.mark.parametrize("method", ["process", "thread"])
def test_an_epochs_batch_past_the_timeout_is_made_again(method, tmp_path):
    flag = str(tmp_path / "release")
    loader = epochs_of_hanging(flag, nworkers=2, method=method, timeout=0.5,
                               stall_report=None)
    got = []
    with pytest.raises(seqtools.LoaderTimeout) as info:
        for batch in loader:
            got.append(batch.tolist())
    assert "timeout=0.5" in str(info.value) and "wait_for_flag" in info.value.stack
    # the batch that timed out is not consumed
    assert loader.state_dict()["position"] == 5 * len(got)
    open(flag, "w").close()
    got += [b.tolist() for b in loader]
    loader.close()
    inline = [b.tolist() for b in seqtools.epochs(Hanging(flag), 5, seed=0,
                                                   num_epochs=2)]
    assert got == inline
    with pytest.raises(ValueError, match="timeout"):
        seqtools.epochs(np.arange(10), 2, seed=0, timeout=0)
    with pytest.raises(TypeError, match="stall_report"):
        seqtools.epochs(np.arange(10), 2, seed=0, stall_report="1")


def open_fds():
    return sorted(os.listdir("/proc/self/fd"))


def ring_mappings():
    """How many of this process's mappings are of a loader's ring."""
    with open("/proc/self/maps") as f:
        return sum("seqtools-ring" in line for line in f)


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="needs /proc")
@pytest.mark.parametrize("kind", sorted(KINDS))
def test_close_releases_descriptors_and_workers_at_once(kind):
    make, _ = KINDS[kind]
    gc.collect()  # the rings of earlier tests' loaders, if still referenced
    before = open_fds()
    mapped = ring_mappings()
    loader = make()
    first = read(loader, 0)  # an array the user holds across the close
    copy = np.array(first)
    pool = getattr(loader._engine, "pool", None)
    pids = [p.pid for p in pool.procs] if hasattr(pool, "procs") else []
    loader.close()  # the loader is still referenced: released all the same
    assert open_fds() == before  # ring, pipes, process sentinels
    assert not any(pid_alive(pid) for pid in pids)  # workers joined
    assert (np.asarray(first) == copy).all()  # still valid until dropped
    if isinstance(pool, type(None)) or not hasattr(pool, "procs"):
        assert ring_mappings() == mapped  # no ring
    del first
    gc.collect()
    assert ring_mappings() == mapped  # gone, though the loader is referenced
    with pytest.raises(seqtools.LoaderClosed):
        read(loader, 1)
    del loader


class KillsOnce(seqtools.View):
    """Item i is i; item 4 kills its worker process the first time."""

    def __init__(self, flag):
        seqtools.View.__init__(self, 20)
        self.flag = flag

    def _get(self, i):
        if i == 4 and not os.path.exists(self.flag):
            open(self.flag, "w").close()
            os.kill(os.getpid(), 9)
        return i


@pytest.mark.timeout(120)
def test_a_replaced_worker_is_logged(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="seqtools")
    with seqtools.prefetch(KillsOnce(str(tmp_path / "killed")), 2, "process") as pf:
        assert list(pf) == list(range(20))  # item 4 retried by a new worker
    logged = [r.getMessage() for r in caplog.records
              if "replaces it" in r.getMessage()]
    assert len(logged) == 1, logged
    assert "signal 9" in logged[0] and "item 4 is retried" in logged[0]
    assert __file__ in logged[0]  # the loader's creation site


class SlowSampler:
    """Call k returns [k, k] after a millisecond: results come while reads wait."""

    def __call__(self):
        time.sleep(0.001)
        return np.full(2, seqtools.call_index())


def slow_square(x):
    time.sleep(0.001)
    return np.full(2, x * x)


def big_rows():
    return np.arange(256 * 16384.0).reshape(256, 16384)


def copied_batches():
    """100 batches of 4 MiB (32 rows of 128 KiB), read by the native copy
    threads."""
    rows = np.arange(100 * 32 * 16384.0).reshape(100 * 32, 16384)
    return seqtools.batch(rows, 32, collate_fn=seqtools.stack)


STORMED = {
    "prefetch-thread": lambda: seqtools.prefetch(
        seqtools.smap(slow_square, range(300)), 2, "thread"),
    "prefetch-process": lambda: seqtools.prefetch(
        seqtools.smap(slow_square, range(300)), 2, "process"),
    "prefetch-copy": lambda: seqtools.prefetch(copied_batches(), 2, "thread"),
    "load_buffers-process": lambda: seqtools.load_buffers(SlowSampler(), 4, 2),
    "load_buffers-process-ordered": lambda: seqtools.load_buffers(
        SlowSampler(), 4, 2, ordered=True),
    "load_buffers-thread": lambda: seqtools.load_buffers(
        SlowSampler(), 4, 2, method="thread"),
    "load_buffers-thread-ordered": lambda: seqtools.load_buffers(
        SlowSampler(), 4, 2, method="thread", ordered=True),
    "load_buffers-copy": lambda: seqtools.load_buffers(
        seqtools.minibatches(big_rows(), 32, seed=0), 4, 2, method="thread"),
    "epochs-process": lambda: seqtools.epochs(
        seqtools.smap(slow_square, range(60)), 4, seed=0, nworkers=2),
    "epochs-thread": lambda: seqtools.epochs(
        seqtools.smap(slow_square, range(60)), 4, seed=0, nworkers=2,
        method="thread"),
}


class Storm:
    """SIGUSR1 to the main thread every 2 ms while running; its handler raises
    KeyboardInterrupt when ``armed``, in the loader's own code only: elsewhere
    (a destructor the garbage collector runs meanwhile, pytest's hooks) Python
    would report the interrupt as unraisable, which is not the loader's doing.
    One interrupt per read, as from one Ctrl-C: a second one landing in the
    loader's own recovery from the first is not covered."""

    package = os.path.dirname(seqtools.__file__)

    def __init__(self):
        self.armed = False
        self.main = threading.get_ident()
        self.done = threading.Event()

    def interrupt(self, signum, frame):
        if (self.armed and frame is not None
                and frame.f_code.co_filename.startswith(self.package)
                and frame.f_code.co_name != "__del__"):
            self.armed = False
            raise KeyboardInterrupt

    def send(self):
        while not self.done.wait(0.002):
            signal.pthread_kill(self.main, signal.SIGUSR1)

    def __enter__(self):
        self.previous = signal.signal(signal.SIGUSR1, self.interrupt)
        self.sender = threading.Thread(target=self.send)
        self.sender.start()
        return self

    def __exit__(self, *exc):
        self.armed = False
        self.done.set()
        self.sender.join()
        signal.signal(signal.SIGUSR1, self.previous)


@pytest.mark.timeout(180)
@pytest.mark.skipif(sys.version_info < (3, 11), reason=(
    "Python 3.9 and 3.10 run signal handlers between almost any two bytecodes; "
    "the hand-over is covered from 3.11 on, where they run as calls return"))
@pytest.mark.parametrize("kind", sorted(STORMED))
def test_interrupts_at_every_instant_lose_nothing_and_leak_nothing(kind):
    # A KeyboardInterrupt every 2 ms while reads wait, so that some land as a
    # result is handed over: the loader neither hangs, nor repeats or (in
    # order) skips a result, nor leaks a ring block or a window slot. A read
    # after an interrupted one is left alone: an ordered loader starts its
    # work anew after an interrupt, which may take longer than 2 ms.
    loader = STORMED[kind]()
    views = isinstance(loader, seqtools.View)
    n = 80 if "copy" in kind else 250
    # The loader is read on until interrupted at least once (a loaded
    # free-threaded build runs fewer handlers): the test must not pass idle.
    # A view is read round again from its start (an ordered front starts
    # anew there).
    most = 8 * n
    at = (lambda k: k % len(loader)) if views else None
    got, interrupts, interrupted = [], 0, False
    try:
        with Storm() as storm:
            while len(got) < n or (interrupts == 0 and len(got) < most):
                try:
                    storm.armed = not interrupted
                    x = loader[at(len(got))] if views else next(loader)
                    storm.armed = interrupted = False
                    got.append(np.asarray(x).ravel()[:2].tolist())
                except KeyboardInterrupt:
                    storm.armed, interrupted = False, True
                    interrupts += 1
        assert interrupts > 0
        n = len(got)
        engine = getattr(loader, "_engine", None)
        if isinstance(engine, ThreadEngine) and "ordered" not in kind:
            work = engine._work
            assert work.issued - work.consumed == work.window
        if "ordered" in kind or "load_buffers" not in kind or "copy" in kind:
            with STORMED[kind]() as quiet:  # exactly in order
                assert got == [np.asarray(quiet[at(k)] if views else next(quiet))
                               .ravel()[:2].tolist() for k in range(n)]
        else:  # completion order: none twice
            assert len(set(map(tuple, got))) == len(got)
        for k in range(n, n + 20):  # and it goes on
            x = loader[at(k)] if views else next(loader)
        if isinstance(engine, ProcessEngine):
            del x
            gc.collect()  # no result alive: the ring holds only those ahead
            assert engine.pool.ring.stats()["popped"] == sum(
                1 for offset, _, _ in engine.ready.values() if offset)
    finally:
        loader.close()
