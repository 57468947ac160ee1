import itertools
import pickle

import pytest
from conftest import passthrough_errors

import seqtools
from seqtools.views import instrument


class FakeClock:
    """A clock that moves only when told to."""

    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(instrument, "_clock", fake)
    return fake


class Slow:
    """Reading item i advances the fake clock by delays[i] seconds."""

    def __init__(self, clock, delays):
        self.clock = clock
        self.delays = delays

    def __len__(self):
        return len(self.delays)

    def __getitem__(self, i):
        if self.delays[i] is None:
            raise OSError("unreadable")
        self.clock.now += self.delays[i]
        return i


# -- debug ---------------------------------------------------------------------------


def test_debug_calls_on_reads_with_normalised_indices():
    calls = []
    view = seqtools.instrument.debug([1, 2, 3], lambda i, v: calls.append((i, v)))
    assert view[-1] == 3 and list(view) == [1, 2, 3] and list(view[:1]) == [1]
    assert calls == [(2, 3), (0, 1), (1, 2), (2, 3), (0, 1)]
    assert len(view) == 3
    with pytest.raises(IndexError):
        view[3]


def test_debug_max_calls():
    calls = []
    view = instrument.debug(list(range(10)), lambda i, v: calls.append(i), max_calls=2)
    assert list(view) == list(range(10))
    assert calls == [0, 1]
    silent = instrument.debug([1], lambda i, v: calls.append(i), max_calls=0)
    silent[0]
    assert calls == [0, 1]


def test_debug_max_rate(clock):
    calls = []
    view = instrument.debug(list(range(10)), lambda i, v: calls.append(i), max_rate=2)
    view[0]  # the first read is reported
    clock.now += 0.3
    view[1]  # too soon after the last call (0.5 s interval)
    clock.now += 0.3
    view[2]
    view[3]
    clock.now += 10
    view[4]
    assert calls == [0, 2, 4]


def test_debug_func_errors_name_the_item():
    def fail(i, v):
        raise ValueError(f"bad {v}")

    view = instrument.debug([1, 2], fail)
    with pytest.raises(seqtools.EvaluationError, match=r"item 1 of DebugView") as e:
        view[-1]
    assert isinstance(e.value.__cause__, ValueError)
    with passthrough_errors(), pytest.raises(ValueError, match="bad 1"):
        view[0]


def test_debug_writes_through_and_infinite_sources():
    data = [1, 2]
    calls = []
    view = instrument.debug(data, lambda i, v: calls.append(i))
    view[0] = 5
    assert data == [5, 2] and calls == []
    loop = instrument.debug(seqtools.cycle("ab"), lambda i, v: calls.append(i))
    assert list(itertools.islice(loop, 3)) == ["a", "b", "a"]
    assert loop[10**9] == "a" and calls[-1] == 10**9


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(func=None), TypeError, "func must be callable"),
        (dict(max_calls=-1), ValueError, "max_calls must be >= 0"),
        (dict(max_calls=1.5), TypeError, "max_calls must be an integer"),
        (dict(max_rate=0), ValueError, "max_rate must be > 0"),
        (dict(max_rate=float("nan")), ValueError, "max_rate must be > 0"),
        (dict(max_rate="1"), TypeError, "calls per second"),
    ],
)
def test_debug_bad_arguments(kwargs, exc, match):
    kwargs.setdefault("func", print)
    with pytest.raises(exc, match=match):
        instrument.debug([1], **kwargs)


# -- monitor_throughput ----------------------------------------------------------------


def test_monitor_read_delay_with_controlled_clock(clock):
    view = instrument.monitor_throughput(Slow(clock, [0.5, 1.5, 1.0, None]))
    with pytest.raises(RuntimeError, match="no item has been read"):
        view.read_delay()
    with pytest.raises(RuntimeError, match="no item has been read"):
        view.throughput()
    assert view[0] == 0 and view[1] == 1
    assert view.read_delay() == pytest.approx(1.0)
    assert view.throughput() == pytest.approx(1.0)
    clock.now += 50  # time spent by the consumer between reads is not counted
    assert list(view[2:3]) == [2]
    assert view.read_delay() == pytest.approx(1.0)
    with pytest.raises(OSError):
        view[3]  # failed reads are not counted
    assert view.read_delay() == pytest.approx(1.0)
    view.reset()
    with pytest.raises(RuntimeError):
        view.read_delay()
    view[2]
    assert view.throughput() == pytest.approx(1.0)


def test_monitor_zero_delay_and_real_clock():
    view = instrument.monitor_throughput([1, 2, 3])
    assert list(view) == [1, 2, 3] and len(view) == 3
    # Only relative sanity with the real clock: no assumption on speed.
    assert view.read_delay() >= 0 and view.throughput() > 0


def test_monitor_writes_through_and_pickles():
    data = [1, 2]
    view = instrument.monitor_throughput(data)
    view[1] = 3
    assert data == [1, 3]
    view[0]
    copy = pickle.loads(pickle.dumps(view))
    assert list(copy) == [1, 3]
    with pytest.raises(TypeError, match="indexable"):
        instrument.monitor_throughput(5)


@pytest.mark.parametrize("wrap", [
    lambda s: instrument.debug(s, lambda i, v: None),
    instrument.monitor_throughput,
])
def test_failed_assignment_writes_nothing(wrap):
    np = pytest.importorskip("numpy")
    arr = np.zeros(3)
    view = wrap(arr)
    with pytest.raises(ValueError, match=r"values\[2\] \(for item 2\): cannot write "
                       "'x'.*nothing was assigned"):
        view[:] = [1.0, 2.0, "x"]
    assert not arr.any()
    with pytest.raises(TypeError, match="'tuple' object does not support"):
        wrap((1, 2))[0] = 3
    view[:] = [1.0, 2.0, 3.0]
    assert arr.tolist() == [1.0, 2.0, 3.0]
