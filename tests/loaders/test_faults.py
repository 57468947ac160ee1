"""Faults of the background loaders, as a user meets them: one scenario each.

These tests describe how ``prefetch(method='process')`` and ``load_buffers`` must
behave when user code misbehaves (huge or odd errors, workers that cannot start,
hooks that crash, results of numpy subclasses, threads, forked children, a killed
parent, memory maps). They use the public API only.

Anything that could hang runs either in a subprocess with a timeout (a script
written to ``tmp_path``) or under ``pytest.mark.timeout``: timeouts are safety nets
against hangs, never measurements of speed. Samplers and sequences live at module
level so that spawn and forkserver workers can import them (pytest imports this
file as the module ``test_faults``).
"""

import gc
import json
import multiprocessing
import os
import re
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from conftest import pid_alive, run_threads, wait_gone

import seqtools
from seqtools import EvaluationError

METHODS = ["fork", "spawn", "forkserver"]
linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="needs Linux (/proc, signals, fork)")


# -- helpers -------------------------------------------------------------------------
def _new_children(before):
    """multiprocessing children of this process that were not in ``before``."""
    return [p for p in multiprocessing.active_children() if p not in before]


def _run_script(path, timeout, args=()):
    """Run ``python path``; (returncode, stdout, stderr), or pytest.fail on timeout.

    The script runs in a session of its own so that, should it hang, it and every
    process it started can be stopped together.
    """
    proc = subprocess.Popen([sys.executable, str(path), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc.pid)
        out, err = proc.communicate()
        pytest.fail(f"{path.name} did not end within {timeout} s (a hang); "
                    f"stderr: {err[-3000:]}")
    finally:
        _kill_group(proc.pid)  # and whatever it left behind
        if proc.poll() is None:
            proc.communicate()
    return proc.returncode, out, err


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


# -- samplers and sequences (module level: spawned workers import them) --------------
HUGE = 200_000

_calls = 0  # calls made in this (worker) process


def _count():
    global _calls
    _calls += 1
    return _calls


def sample_huge_error():
    raise ValueError("x" * HUGE)


def sample_huge_error_on_odd_calls():
    n = _count()
    if n % 2:
        raise ValueError("x" * HUGE)
    return np.full(4, n)


def _recurse(n):
    return _recurse(n + 1) + 1


def _ping(n):
    return _pong(n + 1) + 1


def _pong(n):
    return _ping(n + 1) + 1


def sample_recursion():
    return _recurse(0)


def sample_mutual_recursion():
    # frames alternate, so the traceback does not collapse into "repeated N times"
    return _ping(0)


class HugeErrorItems:
    """Item i is np.full(3, i); item `bad` raises a ValueError of 200,000 chars."""

    def __init__(self, n, bad):
        self.n, self.bad = n, bad

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if i == self.bad:
            raise ValueError("x" * HUGE)
        return np.full(3, i)


class Items:
    """A sequence whose item i is (array of `size` filled with i, i)."""

    def __init__(self, n, size=3):
        self.n, self.size = n, size

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        if not 0 <= i < self.n:
            raise IndexError(i)
        return np.full(self.size, i, dtype=np.int64), i


def sample_seeded():
    return np.random.randint(0, 2**31, size=8)


def hook_exit3():
    os._exit(3)


def hook_segfault():
    import ctypes

    ctypes.string_at(0)


def sample_two_arrays():
    return (seqtools.stack([(np.random.rand(248), 1)] * 64),
            np.zeros((128, 550)))


def sample_full_1000():
    k = np.random.randint(1 << 30)
    return np.full(1000, k, dtype=np.int64)


def _batch_rows(k, j):
    """The 16 rows helper thread ``j`` stacks in call ``k``."""
    return [np.arange(100, dtype=np.float64) + (k * 1000 + j * 100 + r)
            for r in range(16)]


def sample_stack_in_threads():
    k = np.random.randint(1 << 20)
    with ThreadPoolExecutor(4) as ex:
        batches = list(ex.map(lambda j: seqtools.stack(_batch_rows(k, j)), range(4)))
    return k, batches


class ExitsThreeTimes:
    """Calls sys.exit(3) on its first three calls, in whichever worker process
    (files in ``folder`` count them: a worker may be replaced), then returns."""

    def __init__(self, folder):
        self.folder = folder

    def __call__(self):
        for k in range(3):
            try:
                os.close(os.open(os.path.join(self.folder, str(k)),
                                 os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                continue
            sys.exit(3)
        return np.arange(4)


def sample_40_stacks():
    rows = [np.arange(10.0) + r for r in range(4)]
    return [seqtools.stack(rows) for _ in range(40)]


def sample_33_dims():
    return np.zeros((1,) * 33)


def bad_at_3_7_11(i):
    if i in (3, 7, 11):
        raise ValueError(f"bad item {i}")
    return np.full(3, i), i


def _masked():
    return np.ma.MaskedArray([1, -999, 3], mask=[0, 1, 0])


def _matrix():
    # a view, not np.matrix(...): the constructor warns (PendingDeprecationWarning)
    return np.arange(6.0).reshape(2, 3).view(np.matrix)


def _recarray():
    return np.rec.array([(1, 2.0), (3, 4.0)], dtype=[("a", "i8"), ("b", "f8")])


def _plain():
    return np.arange(5)


class Subclassed:
    """Sampler (call) and sequence (item) of one kind of array, bare and nested."""

    def __init__(self, kind, path=None):
        self.kind, self.path = kind, path

    def make(self):
        if self.kind == "memmap":
            return np.load(self.path, mmap_mode="r")[2:5]
        return {"masked": _masked, "matrix": _matrix, "recarray": _recarray,
                "plain": _plain}[self.kind]()

    def __call__(self):
        x = self.make()
        return x, {"nested": (self.make(), 7)}

    def __len__(self):
        return 6

    def __getitem__(self, i):
        if not 0 <= i < 6:
            raise IndexError(i)
        return self()


# -- 1. huge error texts -------------------------------------------------------------
def _check_huge(e):
    msg = str(e)
    assert "ValueError" in msg
    assert len(msg) < 100_000, f"message of {len(msg)} characters"
    assert "truncated" in msg


@pytest.mark.timeout(60)
def test_load_buffers_huge_error_text_is_raised_truncated():
    with seqtools.load_buffers(sample_huge_error, nworkers=2) as it:
        with pytest.raises(EvaluationError) as info:
            next(it)
        _check_huge(info.value)


@pytest.mark.timeout(60)
def test_prefetch_huge_error_text_is_raised_truncated():
    with seqtools.prefetch(HugeErrorItems(12, bad=5), nworkers=2,
                           method="process", max_buffered=4) as p:
        for i in range(12):
            if i == 5:
                with pytest.raises(EvaluationError) as info:
                    p[i]
                _check_huge(info.value)
            else:
                assert p[i].tolist() == [i, i, i]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("sampler", [sample_recursion, sample_mutual_recursion])
def test_load_buffers_recursion_error(sampler):
    with seqtools.load_buffers(sampler, nworkers=2) as it:
        with pytest.raises(EvaluationError) as info:
            next(it)
        msg = str(info.value)
        assert "RecursionError" in msg
        assert len(msg) < 100_000, f"message of {len(msg)} characters"


@pytest.mark.timeout(60)
def test_load_buffers_keeps_working_after_huge_errors():
    # every worker fails on its odd calls with a huge text, succeeds on even ones
    errors = good = 0
    with seqtools.load_buffers(sample_huge_error_on_odd_calls, max_cached=4,
                               nworkers=2) as it:
        for _ in range(40):
            try:
                a = next(it)
            except EvaluationError as e:
                _check_huge(e)
                errors += 1
            else:
                assert a.shape == (4,) and a[0] % 2 == 0 and (a == a[0]).all()
                good += 1
    assert errors >= 10 and good >= 10, (errors, good)


# -- 2. workers that cannot start ----------------------------------------------------
SAMPLER_IN_MAIN_GUARD = textwrap.dedent("""
    import numpy as np
    import seqtools

    if __name__ == "__main__":
        def sampler_in_main_block():
            return np.zeros(3)

        it = seqtools.load_buffers(sampler_in_main_block, nworkers=2,
                                   start_method="spawn")
        print(next(it))
        it.close()
""")

NO_MAIN_GUARD = textwrap.dedent("""
    import numpy as np
    import seqtools

    def unguarded_sampler():
        return np.zeros(3)

    it = seqtools.load_buffers(unguarded_sampler, nworkers=2, start_method="spawn")
    print(next(it))
    it.close()
""")


def _failing_script_stderr(tmp_path, name, text):
    """Write ``text`` to ``tmp_path / name`` and run it; it must fail: its stderr."""
    script = tmp_path / name
    script.write_text(text)
    code, out, err = _run_script(script, timeout=120)
    assert code != 0, out
    return err


@linux_only
@pytest.mark.timeout(180)
def test_spawn_sampler_defined_in_main_block_fails_clearly(tmp_path):
    err = _failing_script_stderr(tmp_path, "guarded.py", SAMPLER_IN_MAIN_GUARD)
    assert "__main__" in err and "sampler_in_main_block" in err, err[-3000:]


@linux_only
@pytest.mark.timeout(180)
def test_spawn_without_main_guard_fails_clearly(tmp_path):
    err = _failing_script_stderr(tmp_path, "unguarded.py", NO_MAIN_GUARD)
    assert "__main__" in err, err[-3000:]


UNGUARDED_LOADERS = {
    "load_buffers": "seqtools.load_buffers(sampler, 2, nworkers=2, "
                    "start_method=METHOD)",
    "prefetch": "seqtools.prefetch([1.0, 2.0, 3.0], 2, 'process', "
                "start_method=METHOD)",
    "epochs": "seqtools.epochs(np.arange(10.0), 2, seed=0, nworkers=2, "
              "start_method=METHOD)",
}


@linux_only
@pytest.mark.timeout(180)
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
@pytest.mark.parametrize("kind", sorted(UNGUARDED_LOADERS))
def test_a_missing_main_guard_is_said_first_and_once(tmp_path, method, kind):
    # The workers import the script again and create the loader again: each
    # ends at once, quietly, and the parent says so, naming the line that
    # created the loader (for epochs, the epochs() line, not the first next()).
    script = "\n".join([
        "import numpy as np",
        "import seqtools",
        "def sampler():",
        "    return np.zeros(3)",
        f"loader = {UNGUARDED_LOADERS[kind].replace('METHOD', repr(method))}",
        "print(next(iter(loader)))",
    ]) + "\n"
    err = _failing_script_stderr(tmp_path, "unguarded.py", script)
    last = err.strip().splitlines()[-1]
    assert last.startswith("seqtools.errors.WorkersCannotStart:"), err[-3000:]
    assert "if __name__ == '__main__':" in last, err[-3000:]
    assert "unguarded.py:5 cannot start its worker processes" in last, last
    assert repr(method) in last
    # nothing but the parent's own traceback: no worker tracebacks before it
    assert err.count("Traceback") == 1, err[-3000:]
    assert len(err.splitlines()) < 40, err[-3000:]


@linux_only
@pytest.mark.timeout(60)
@pytest.mark.parametrize("start_method", ["fork", "spawn"])
@pytest.mark.parametrize("hook, expected", [
    (hook_exit3, "exit code 3"),
    (hook_segfault, "signal 11"),
])
def test_start_hook_killing_its_worker_raises_once(start_method, hook, expected):
    before = multiprocessing.active_children()
    it = seqtools.load_buffers(sample_seeded, nworkers=2, start_hook=hook,
                               start_method=start_method)
    try:
        with pytest.raises(Exception) as info:
            next(it)
        assert "start_hook" in str(info.value) and expected in str(info.value), \
            str(info.value)
    finally:
        it.close()
    # no worker is left, nor restarted behind the error
    assert _new_children(before) == []


# -- 3. a stacked batch and another array --------------------------------------------
@pytest.mark.timeout(60)
def test_load_buffers_stacked_batch_and_another_array():
    n = 0
    with seqtools.load_buffers(sample_two_arrays, max_cached=4, nworkers=2) as it:
        for (x, y), z in it:
            assert x.shape == (64, 248) and y.shape == (64,) and (y == 1).all()
            assert z.shape == (128, 550) and not z.any()
            n += 1
            if n == 50:
                break
    assert n == 50


@pytest.mark.timeout(60)
def test_load_buffers_stacked_batch_and_another_array_all_kept_raises():
    held = []
    with seqtools.load_buffers(sample_two_arrays, max_cached=4, nworkers=2,
                               shm_budget=16 << 20) as it:
        with pytest.raises(BufferError, match="shm_budget"):
            for _ in range(10_000):
                held.append(next(it))
        assert len(held) < 10_000
        del held


# -- 4. threads ----------------------------------------------------------------------
def _run_threads(target, args_list, timeout=50.0):
    """Run target(*args) in threads; the first exception one raised is raised here."""
    errors = run_threads(target, args_list, timeout)
    if errors:
        raise errors[0]


@pytest.mark.timeout(90)
def test_two_threads_read_one_process_prefetch_in_order():
    n = 60
    with seqtools.prefetch(Items(n), nworkers=2, method="process",
                           max_buffered=4) as p:
        def read_all():
            for i in range(n):
                a, j = p[i]
                assert j == i and a.tolist() == [i, i, i], (i, j, a)

        _run_threads(read_all, [(), ()])


@pytest.mark.timeout(90)
def test_two_threads_read_one_process_prefetch_at_random(rng):
    n = 60
    orders = [rng.integers(0, n, 150).tolist() for _ in range(2)]
    with seqtools.prefetch(Items(n), nworkers=2, method="process",
                           max_buffered=4) as p:
        def read(order):
            for i in order:
                a, j = p[i]
                assert j == i and a.tolist() == [i, i, i], (i, j, a)

        _run_threads(read, [(o,) for o in orders])


def _four_threads_take(count, timeout):
    """Four threads start at once, each taking ``count`` results of one new
    load_buffers."""
    start = threading.Barrier(4)
    with seqtools.load_buffers(sample_full_1000, max_cached=4, nworkers=2) as it:
        def take():
            start.wait()
            for _ in range(count):
                a = next(it)
                assert a.shape == (1000,) and (a == a[0]).all()

        _run_threads(take, [()] * 4, timeout=timeout)


@pytest.mark.timeout(90)
def test_four_threads_share_one_load_buffers():
    _four_threads_take(1500, timeout=80.0)


@pytest.mark.timeout(90)
def test_four_threads_take_the_first_results_of_a_new_load_buffers():
    # the first results, which size the shared memory, are wanted by every thread
    for _ in range(5):
        _four_threads_take(20, timeout=15.0)


@pytest.mark.timeout(90)
def test_sampler_stacking_from_helper_threads_is_exact():
    with seqtools.load_buffers(sample_stack_in_threads, max_cached=4,
                               nworkers=2) as it:
        for _ in range(200):
            k, batches = next(it)
            assert len(batches) == 4
            for j, b in enumerate(batches):
                np.testing.assert_array_equal(b, np.stack(_batch_rows(k, j)))


# -- 5. a forked child and the parent's loader ---------------------------------------
def child_deletes(box):
    box.pop()
    gc.collect()


def child_closes(box):
    box[0].close()
    box.pop()
    gc.collect()


@linux_only
@pytest.mark.timeout(90)
@pytest.mark.parametrize("loader_start", ["fork", "spawn"])
@pytest.mark.parametrize("child", [child_deletes, child_closes])
def test_forked_child_leaves_parents_loader_working(loader_start, child):
    # The box holds the parent's only reference, so that the child's pop drops
    # the last reference there (and the child's copy of the loader is collected).
    box = [seqtools.load_buffers(sample_seeded, max_cached=4, nworkers=2,
                                 start_method=loader_start)]
    try:
        for _ in range(5):
            assert next(box[0]).shape == (8,)
        proc = multiprocessing.get_context("fork").Process(target=child, args=(box,))
        proc.start()
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join()
        for _ in range(20):
            assert next(box[0]).shape == (8,)
    finally:
        box[0].close()


@linux_only
@pytest.mark.timeout(90)
@pytest.mark.parametrize("loader_start", ["fork", "spawn"])
def test_raw_forked_child_dropping_the_loader_leaves_it_working(loader_start):
    loader = seqtools.load_buffers(sample_seeded, max_cached=4, nworkers=2,
                                   start_method=loader_start)
    keep = loader  # the parent's own reference, closed at the end
    try:
        for _ in range(5):
            assert next(loader).shape == (8,)
        pid = os.fork()
        if pid == 0:  # the child: drop the loader, collect, leave at once
            try:
                del loader, keep
                gc.collect()
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        for _ in range(20):
            assert next(keep).shape == (8,)
    finally:
        keep.close()


# -- 6. workers of a killed parent ---------------------------------------------------
ORPHAN_SCRIPT = textwrap.dedent("""
    import multiprocessing, os, sys, time
    import numpy as np
    import seqtools

    MARKS = sys.argv[4]

    def busy_or_sleep():
        open(os.path.join(MARKS, str(os.getpid())), "w").close()
        if sys.argv[3] == "sleep":
            time.sleep(60)
        else:
            deadline = time.monotonic() + 60
            n = 0
            while time.monotonic() < deadline:
                n += 1
        return np.zeros(3)

    class Slow:
        def __len__(self):
            return 100

        def __getitem__(self, i):
            return busy_or_sleep()

    if __name__ == "__main__":
        loader, start_method = sys.argv[1], sys.argv[2]
        if loader == "load_buffers":
            it = seqtools.load_buffers(busy_or_sleep, max_cached=2, nworkers=2,
                                       start_method=start_method)
            block = lambda: next(it)
        else:
            it = seqtools.prefetch(Slow(), nworkers=2, method="process",
                                   max_buffered=2, start_method=start_method)
            block = lambda: it[0]
        pids = [p.pid for p in multiprocessing.active_children()]
        print(" ".join(map(str, pids)), flush=True)
        block()
""")


@linux_only
@pytest.mark.timeout(120)
@pytest.mark.parametrize("loader", ["load_buffers", "prefetch"])
@pytest.mark.parametrize("start_method", METHODS)
@pytest.mark.parametrize("busy", ["sleep", "busy"])
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL],
                         ids=["SIGTERM", "SIGKILL"])
def test_workers_busy_in_user_code_die_with_parent(tmp_path, loader, start_method,
                                                   busy, sig):
    script = tmp_path / "orphans.py"
    script.write_text(ORPHAN_SCRIPT)
    marks = tmp_path / "marks"
    marks.mkdir()
    errfile = tmp_path / "stderr.txt"
    # stderr goes to a file: the workers inherit it, and may outlive the script
    with open(errfile, "w") as err:
        proc = subprocess.Popen(
            [sys.executable, str(script), loader, start_method, busy, str(marks)],
            stdout=subprocess.PIPE, stderr=err, text=True, start_new_session=True)
    pids = []
    try:
        line = proc.stdout.readline()
        pids = [int(x) for x in line.split()]
        assert len(pids) == 2, (line, errfile.read_text()[-3000:])
        # wait (a safety net) until both workers are inside the user's code
        deadline = time.monotonic() + 60
        while len(os.listdir(marks)) < 2 and time.monotonic() < deadline:
            assert proc.poll() is None, errfile.read_text()[-3000:]
            time.sleep(0.05)
        assert sorted(int(m) for m in os.listdir(marks)) == sorted(pids)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        assert wait_gone(pids, timeout=10.0) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for pid in pids:  # leave nothing running behind a failure
            if pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
        proc.stdout.close()


# -- 7. numpy subclasses -------------------------------------------------------------
def _check_kind(kind, x):
    if kind == "masked":
        assert isinstance(x, np.ma.MaskedArray), type(x)
        assert x.mask.tolist() == [False, True, False]
        assert x.data.tolist() == [1, -999, 3]
    elif kind == "matrix":
        assert isinstance(x, np.matrix), type(x)
        assert x.shape == (2, 3) and x.tolist() == [[0, 1, 2], [3, 4, 5]]
    elif kind == "recarray":
        assert isinstance(x, np.recarray), type(x)
        assert x.a.tolist() == [1, 3] and x.b.tolist() == [2.0, 4.0]
    elif kind == "plain":
        assert type(x) is np.ndarray and x.tolist() == [0, 1, 2, 3, 4]
    else:  # memmap
        assert isinstance(x, np.ndarray)
        assert x.tolist() == [2.0, 3.0, 4.0]


def _check_result(kind, result):
    x, d = result
    _check_kind(kind, x)
    _check_kind(kind, d["nested"][0])
    assert d["nested"][1] == 7


@pytest.fixture
def small_npy(tmp_path):
    path = str(tmp_path / "small.npy")
    np.save(path, np.arange(10.0))
    return path


KINDS = ["masked", "matrix", "recarray", "plain", "memmap"]
# np.matrix warns when constructed; these tests are about the transport, not that.
matrix_warning = pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")


@matrix_warning
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_load_buffers_results_keep_their_array_type(kind, small_npy):
    with seqtools.load_buffers(Subclassed(kind, small_npy), max_cached=2,
                               nworkers=2) as it:
        for _ in range(5):
            _check_result(kind, next(it))


@matrix_warning
@pytest.mark.timeout(60)
@pytest.mark.parametrize("kind", KINDS)
def test_prefetch_results_keep_their_array_type(kind, small_npy):
    with seqtools.prefetch(Subclassed(kind, small_npy), nworkers=2,
                           method="process", max_buffered=2) as p:
        for i in range(6):
            _check_result(kind, p[i])


# -- 8. memory maps are sent by reference --------------------------------------------
ROWS, COLS = 8192, 1024  # float64: 64 MiB


@pytest.fixture(scope="module")
def big_npy(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("mmap") / "big.npy")
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float64,
                                    shape=(ROWS, COLS))
    for start in range(0, ROWS, 1024):
        out[start:start + 1024] = (np.arange(start, start + 1024)[:, None] * COLS
                                   + np.arange(COLS))
    out.flush()
    del out
    return path


MMAP_SCRIPT = textwrap.dedent("""
    import json, multiprocessing, sys, time
    import numpy as np
    import seqtools

    COLS = %d

    class MemmapRows:
        \"\"\"A random row of a memory-mapped matrix (copied).\"\"\"

        def __init__(self, path):
            self.mm = np.load(path, mmap_mode="r")

        def __call__(self):
            i = np.random.randint(len(self.mm))
            return i, np.array(self.mm[i])

    def row(i):
        return np.arange(COLS, dtype=np.float64) + i * COLS

    def maps(pid, path):
        try:
            with open(f"/proc/{pid}/maps") as f:
                return path in f.read()
        except OSError:
            return False

    def anon_kb(pid):
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    return int(line.split()[1])

    if __name__ == "__main__":
        loader, start_method, path = sys.argv[1:4]
        if loader == "prefetch":
            mm = np.load(path, mmap_mode="r")
            it = seqtools.prefetch(mm, nworkers=2, method="process",
                                   start_method=start_method)
            reads = iter(range(len(mm)))

            def read():
                i = next(reads)
                assert np.array_equal(it[i], row(i)), i
        else:
            it = seqtools.load_buffers(MemmapRows(path), max_cached=4, nworkers=2,
                                       start_method=start_method)

            def read():
                i, r = next(it)
                assert np.array_equal(r, row(i)), i

        read()  # the first result
        # Workers may still be starting: read on until each maps the file
        # (a safety net, not a measure of time).
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not all(
                maps(w.pid, path) for w in multiprocessing.active_children()):
            read()
            time.sleep(0.05)
        report = [{"pid": w.pid, "maps": maps(w.pid, path), "anon_kb": anon_kb(w.pid)}
                  for w in multiprocessing.active_children()]
        for _ in range(20):
            read()
        it.close()
        print(json.dumps(report), flush=True)
""" % COLS)


@linux_only
@pytest.mark.timeout(180)
@pytest.mark.parametrize("loader", ["prefetch", "load_buffers"])
@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_memmap_reaches_workers_by_reference(tmp_path, big_npy, loader,
                                             start_method):
    # (prefetch: the memmap is the sequence; load_buffers: an attribute of the
    # sampler.) Run in a script, so that the workers import no more than a user's
    # would (not pytest), and their anonymous memory is theirs.
    script = tmp_path / "mmap_workers.py"
    script.write_text(MMAP_SCRIPT)
    code, out, err = _run_script(script, 150, (loader, start_method, big_npy))
    assert code == 0, err[-3000:]  # every value read was right
    report = json.loads(out.strip().splitlines()[-1])
    assert report, "no worker process"
    for w in report:
        assert w["maps"], f"worker {w['pid']} does not map {big_npy}"
        assert w["anon_kb"] < 32 * 1024, f"worker {w['pid']}: RssAnon {w['anon_kb']} kB"


# -- 9. errors that used to be opaque ------------------------------------------------
@pytest.mark.timeout(60)
def test_load_buffers_sampler_calling_sys_exit(tmp_path):
    errors, good = 0, 0
    with seqtools.load_buffers(ExitsThreeTimes(str(tmp_path)), max_cached=4,
                               nworkers=2) as it:
        for _ in range(40):
            try:
                a = next(it)
            except EvaluationError as e:
                assert "SystemExit" in str(e), str(e)
                errors += 1
            else:
                assert a.tolist() == [0, 1, 2, 3]
                good += 1
                if good == 20:
                    break
    assert errors >= 1 and good == 20, (errors, good)


@pytest.mark.timeout(60)
def test_load_buffers_sampler_stacking_too_many_batches():
    with seqtools.load_buffers(sample_40_stacks, nworkers=2) as it:
        with pytest.raises(EvaluationError) as info:
            next(it)
    msg = str(info.value)
    assert "blocks" in msg and "killed" not in msg, msg


def sample_12_stacks_and_an_array():
    rows = [np.arange(10.0) + r for r in range(4)]
    return [seqtools.stack(rows) for _ in range(12)] + [np.ones(100_000)]


@pytest.mark.timeout(60)
def test_load_buffers_result_at_the_block_limit_sent_or_explained():
    # 12 batches stacked in shared memory and one large array that numpy built:
    # at the edge of what one task may hold. It arrives, or the error says why.
    with seqtools.load_buffers(sample_12_stacks_and_an_array, nworkers=2) as it:
        for _ in range(3):
            try:
                r = next(it)
            except EvaluationError as e:
                assert "blocks" in str(e) and "killed" not in str(e), str(e)
            else:
                assert len(r) == 13 and (r[12] == 1).all()
                for b in r[:12]:
                    np.testing.assert_array_equal(
                        b, [np.arange(10.0) + k for k in range(4)])


@pytest.mark.timeout(60)
def test_load_buffers_result_of_too_many_dimensions():
    # More dimensions than an array viewed in place may have: it travels by
    # pickle instead, and arrives whole.
    with seqtools.load_buffers(sample_33_dims, nworkers=2) as it:
        for _ in range(3):
            got = next(it)
            assert type(got) is np.ndarray and got.shape == (1,) * 33


# -- 10. each error with its own item ------------------------------------------------
BAD = (3, 7, 11)


def _read_checked(p, i):
    if i in BAD:
        with pytest.raises(EvaluationError) as info:
            p[i]
        named = set(re.findall(r"bad item (\d+)", str(info.value)))
        assert named == {str(i)}, (i, str(info.value))
    else:
        a, j = p[i]
        assert j == i and a.tolist() == [i, i, i], (i, j, a)


@pytest.mark.timeout(90)
def test_prefetch_errors_are_raised_by_their_own_items(rng):
    f = seqtools.smap(bad_at_3_7_11, range(20))
    with seqtools.prefetch(f, nworkers=2, method="process", max_buffered=4) as p:
        for i in range(20):
            _read_checked(p, i)
        for i in rng.integers(0, 20, 200).tolist():
            _read_checked(p, i)
        for i in range(20):
            _read_checked(p, i)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("max_buffered", [2, 10])
def test_prefetch_random_access_is_never_stale(rng, max_buffered):
    with seqtools.prefetch(Items(100, size=1024), nworkers=2, method="process",
                           max_buffered=max_buffered) as p:
        for i in rng.integers(0, 100, 300).tolist():
            a, j = p[i]
            assert j == i and a.shape == (1024,) and (a == i).all(), (i, j)
