"""The README's example runs as written, under forkserver as the process-wide
default start method (Python 3.14's default on Linux) and under spawn."""

import pathlib
import re
import subprocess
import sys

import pytest

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"

PRELUDE = """\
import multiprocessing, os, sys
import numpy as np
if __name__ == "__main__":
    multiprocessing.set_start_method({method!r})
folder = {folder!r}
files = [os.path.join(folder, f"data_{{i}}.npy") for i in range(3)]
if __name__ == "__main__":
    rng = np.random.default_rng(0)
    for i, f in enumerate(files):
        np.save(f, rng.random((5000, 248)) + np.arange(5000)[:, None] + 5000 * i)
labels = np.arange(15000)
"""

BODY = """\
        assert X.shape == (64, 248) and y.shape == (64,)
        assert (X[:, 0].astype(int) == y).all()  # rows match their labels
        assert multiprocessing.get_start_method() == {method!r}
        seen = globals().setdefault("seen", [0])
        seen[0] += 1
        if seen[0] == 200:
            print("README example ok")
            break
"""


def readme_example():
    """The README's python block of load_buffers (the seed example)."""
    blocks = [b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
              if "load_buffers(" in b]
    assert blocks, "README.md has no load_buffers example"
    return blocks[0]


def test_readme_opens_with_the_tested_training_loop():
    # tests/test_training_example.py runs docs/examples/train_epochs.py
    if not README.exists():
        pytest.skip("README.md is not next to the tests (not a source checkout)")
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    example = README.parent / "docs" / "examples" / "train_epochs.py"
    assert blocks[0] == example.read_text()


@pytest.mark.timeout(300)
@pytest.mark.parametrize("method", ["forkserver", "spawn"])
def test_readme_example_runs_under(method, tmp_path):
    if not README.exists():
        pytest.skip("README.md is not next to the tests (not a source checkout)")
    code = readme_example()
    loop_body = re.compile(r"^( +)\.\.\.  #.*$", re.M)
    assert loop_body.search(code), "the README example's loop body changed"
    code = loop_body.sub(lambda m: BODY.format(method=method).rstrip("\n"), code)
    script = tmp_path / "example.py"
    script.write_text(PRELUDE.format(method=method, folder=str(tmp_path)) + code)
    done = subprocess.run([sys.executable, str(script)], cwd="/", capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "README example ok" in done.stdout


def test_readme_example_without_main_guard_says_what_to_do(tmp_path):
    if not README.exists():
        pytest.skip("README.md is not next to the tests (not a source checkout)")
    code = readme_example()
    # the loop at top level, as a user might write it
    code = code.replace('if __name__ == "__main__":  # see below\n', "if True:\n")
    code = re.sub(r"^( +)\.\.\.  #.*$", "        break", code, flags=re.M)
    script = tmp_path / "example.py"
    prelude = PRELUDE.format(method="spawn", folder=str(tmp_path))
    guard = 'if __name__ == "__main__":\n    rng'
    prelude = prelude.replace(guard, "if True:\n    rng")
    script.write_text(prelude + code)
    done = subprocess.run([sys.executable, str(script)], cwd="/", capture_output=True,
                          text=True, timeout=240)
    assert done.returncode != 0
    assert "if __name__ == '__main__':" in done.stderr
    assert "cannot start" in done.stderr
