import importlib.util
import pickle
import subprocess
import sys
import textwrap
import traceback

import pytest

import seqtools
from seqtools import SerializableFunc

SCRIPT = '''
import seqtools

LOADS = []
LOADS.append(1)


@seqtools.SerializableFunc
def transform(x):
    """Add the offset."""
    return x + {offset}


def plain(x):
    return x * {offset}


@seqtools.SerializableFunc
def total(items):
    return sum(items) + {offset}


def fails(x):
    raise ValueError("failing line of version {offset}")


class Holder:
    @seqtools.SerializableFunc
    def method(self, x):
        return x - {offset}


if __name__ == "__main__":
    raise SystemExit("the main block must not run on unpickling")
'''


@pytest.fixture
def script(tmp_path):
    """Write the script with an offset, import it under a unique module name."""
    path = tmp_path / "user_script.py"
    names = []

    def write(offset):
        path.write_text(SCRIPT.format(offset=offset))

    def load(offset):
        write(offset)
        name = f"user_script_{len(names)}_{id(path)}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        names.append(name)
        return module

    load.write = write
    load.path = path
    yield load
    for name in names:
        sys.modules.pop(name, None)


def test_behaves_like_the_function(script):
    mod = script(1)
    assert mod.transform(1) == 2
    assert mod.transform.__name__ == "transform"
    assert mod.transform.__doc__ == "Add the offset."
    assert mod.Holder().method(5) == 4
    assert "transform" in repr(mod.transform)


def test_unpickled_copy_uses_the_source_at_decoration_time(script):
    mod = script(1)
    blob = pickle.dumps(mod.transform)
    script.write(1000)  # the file changes on disk
    del sys.modules[mod.__name__]  # as in a fresh process
    copy = pickle.loads(blob)
    assert copy(1) == 2
    assert isinstance(copy, SerializableFunc)
    assert pickle.loads(pickle.dumps(copy))(1) == 2  # pickles again
    # The rebuilt module ran once, not as __main__ (that block would raise).
    assert len(sys.modules[copy.__wrapped__.__module__].LOADS) == 1
    assert pickle.loads(blob) is copy  # one execution per source and process


def test_fresh_process(script, tmp_path):
    mod = script(3)
    blob_path = tmp_path / "func.pkl"
    blob_path.write_bytes(pickle.dumps([mod.transform, SerializableFunc(mod.plain)]))
    script.write(1000)
    code = textwrap.dedent(
        f"""
        import pickle
        f, g = pickle.loads(open({str(blob_path)!r}, "rb").read())
        print(f(1), g(2))
        """
    )
    # cwd: a `python -c` child puts its working folder first on sys.path, where a
    # source checkout's uncompiled seqtools/ would shadow the installed package.
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True,
        cwd=tmp_path,
    )
    assert out.stdout.split() == ["4", "6"]


def test_reuses_the_live_module(script):
    mod = script(2)
    copy = pickle.loads(pickle.dumps(mod.transform))
    assert copy is mod.transform


def test_wrapping_an_undecorated_function_and_methods(script):
    mod = script(5)
    wrapped = SerializableFunc(mod.plain)
    assert SerializableFunc(wrapped).__wrapped__ is mod.plain
    blob = pickle.dumps(wrapped)
    del sys.modules[mod.__name__]
    assert pickle.loads(blob)(2) == 10
    mod = script(5)
    method = pickle.loads(pickle.dumps(mod.Holder.method))
    assert method(None, 7) == 2


def test_tracebacks_show_the_snapshot(script):
    mod = script(7)
    blob = pickle.dumps(SerializableFunc(mod.fails))
    script.write(8)
    del sys.modules[mod.__name__]
    copy = pickle.loads(blob)
    with pytest.raises(ValueError) as e:
        copy(0)
    # (the one-argument form of format_exception is Python 3.10+)
    text = "".join(traceback.format_exception(e.type, e.value, e.tb))
    assert "seqtools snapshot" in text and "failing line of version 7" in text


def test_refuses_what_cannot_be_found_again():
    with pytest.raises(TypeError, match="lambdas and nested"):
        SerializableFunc(lambda x: x)

    def nested(x):
        return x

    with pytest.raises(TypeError, match="lambdas and nested"):
        SerializableFunc(nested)
    with pytest.raises(TypeError, match="function defined with def"):
        SerializableFunc(len)
    with pytest.raises(TypeError, match="function defined with def"):
        SerializableFunc(3)
    namespace = {}
    exec(compile("def f(x):\n    return x\n", "<generated>", "exec"), namespace)
    with pytest.raises(TypeError, match="source file"):
        SerializableFunc(namespace["f"])


def test_missing_name_after_execution(script):
    mod = script(1)
    func = SerializableFunc(mod.plain)
    func._qualname = "renamed"  # as if the source no longer defined it
    blob = pickle.dumps(func)
    del sys.modules[mod.__name__]
    with pytest.raises(AttributeError, match="renamed is not defined"):
        pickle.loads(blob)


def test_in_a_pipeline(script):
    mod = script(10)
    view = seqtools.batch([1, 2, 3, 4], 2, collate_fn=mod.total)
    blob = pickle.dumps(view)
    script.write(0)
    del sys.modules[mod.__name__]
    assert list(pickle.loads(blob)) == [13, 17]
