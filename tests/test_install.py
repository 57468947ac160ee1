"""Importing seqtools from a source folder, built or not (seqtools/_unbuilt.py).

Each test lays out a copy of the checkout's ``seqtools/`` tree in ``tmp_path``,
with none, some or all of its compiled modules (copied from the ones this test
run imports), and imports it in a new interpreter whose working folder, first on
``sys.path``, holds the copy. An unbuilt source folder must fail with the error
that says so and how to get out; a built folder must import; any other failure,
and any failure of an installed layout (no ``.pyx``), must keep its own message.

The editable-install test builds the extensions (minutes): it runs only with
SEQTOOLS_TEST_EDITABLE=1.
"""

import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import textwrap

import pytest

import seqtools

REPO = pathlib.Path(__file__).resolve().parents[1]
SOURCE = REPO / "seqtools"
# The compiled modules, by their Cython sources.
EXTENSIONS = sorted(
    ".".join(p.relative_to(REPO).with_suffix("").parts) for p in SOURCE.rglob("_*.pyx"))
MARK = "whose compiled modules are not built"

pytestmark = pytest.mark.skipif(
    not EXTENSIONS, reason="needs the checkout's seqtools/ sources next to tests/")


def lay_out(where, built=(), sources=True):
    """A copy of the checkout's seqtools/ in *where*, with the compiled modules
    named in *built* (copied from this run's), without .pyx/.pxd if not
    *sources*."""
    skip = ["__pycache__", "*.so", "*.pyd", "*.c"]
    if not sources:
        skip += ["*.pyx", "*.pxd"]
    shutil.copytree(SOURCE, where / "seqtools", ignore=shutil.ignore_patterns(*skip))
    for name in built:
        origin = pathlib.Path(importlib.util.find_spec(name).origin)
        package = name.rsplit(".", 1)[0].split(".")
        shutil.copy2(origin, where.joinpath(*package, origin.name))
    return where


def run(cwd, code="import seqtools; print(seqtools.__file__)", args=("-c",)):
    # No PYTHONPATH, and no PYTHONSAFEPATH (which keeps the working folder off
    # sys.path): the child finds what a user running from cwd would.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONSAFEPATH")}
    cmd = [sys.executable, *args] if code is None else [sys.executable, *args, code]
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=120)


def installed_here():
    """The folder of the seqtools this run tests if it is installed outside the
    checkout (pip install ., a wheel), else None (an editable install)."""
    folder = pathlib.Path(seqtools.__file__).parent
    return None if folder.resolve() == SOURCE else folder


def assert_explained(proc, clone):
    assert proc.returncode != 0, proc.stdout
    err = proc.stderr
    last = err.split("The above exception was the direct cause", 1)
    assert len(last) == 2, err  # chained: the original error stays visible
    folder = clone / "seqtools"
    assert f"ImportError: `import seqtools` found the source folder {folder}, {MARK}" \
        in last[1], err
    assert "so this folder shadows any installed seqtools" in last[1]
    assert "run Python from another directory" in last[1]
    assert f"`pip install -e {clone}`" in last[1]
    return last[1]


# -- not built: the error says what and how out ------------------------------------


@pytest.mark.parametrize("how", ["-c", "script"])
def test_unbuilt_source_folder_says_so(tmp_path, how):
    clone = lay_out(tmp_path)
    if how == "-c":  # the working folder first on sys.path
        proc = run(clone)
    else:  # a script in the clone, run from elsewhere: its folder first on sys.path
        (clone / "train.py").write_text("import seqtools\n")
        proc = run("/", code=None, args=(str(clone / "train.py"),))
    message = assert_explained(proc, clone)
    assert f"none of its {len(EXTENSIONS)} Cython sources (_*.pyx)" in message
    installed = installed_here()
    if installed is not None:  # the installed copy it shadows is named
        assert f"(here: {installed})" in message, message


def test_unbuilt_source_folder_with_no_seqtools_installed(tmp_path):
    # numpy, seqtools' one dependency, comes from site-packages; then every
    # folder holding a seqtools other than the copy leaves sys.path.
    code = textwrap.dedent("""
        import os, sys
        import numpy
        sys.path[1:] = [p for p in sys.path[1:]
                        if not os.path.exists(os.path.join(p or ".", "seqtools"))]
        import seqtools
        """)
    clone = lay_out(tmp_path)
    message = assert_explained(run(clone, code), clone)
    assert "(no other seqtools is on sys.path)" in message


def test_partly_built_source_folder_names_the_missing_module(tmp_path):
    # As after a pull that brings a new .pyx into a clone built earlier.
    missing = "seqtools.loaders._transport"
    clone = lay_out(tmp_path, built=[m for m in EXTENSIONS if m != missing])
    message = assert_explained(run(clone), clone)
    assert f"{missing} has no extension module for this Python" in message


# -- built, or installed: no false alarm ---------------------------------------------


def test_built_source_folder_imports(tmp_path):
    # An in-place build, as pip install -e leaves it.
    clone = lay_out(tmp_path, built=EXTENSIONS)
    proc = run(clone, "import seqtools; print(seqtools.__file__, "
                      "list(seqtools.gather('abcd', [3, 0])))")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == [str(clone / "seqtools" / "__init__.py"),
                                   "['d',", "'a']"]


def test_built_source_folder_keeps_other_import_errors(tmp_path):
    clone = lay_out(tmp_path, built=EXTENSIONS)
    proc = run(clone, "import sys; sys.modules['numpy'] = None; import seqtools")
    assert proc.returncode != 0
    assert "import of numpy halted" in proc.stderr
    assert MARK not in proc.stderr


def test_installed_layout_keeps_its_import_error(tmp_path):
    # A wheel's or pip install .'s layout (no .pyx) with a compiled module gone:
    # not a source folder, so the original error stands.
    missing = "seqtools.loaders._transport"
    site = lay_out(tmp_path, built=[m for m in EXTENSIONS if m != missing],
                   sources=False)
    proc = run(site)
    assert proc.returncode != 0
    assert "_transport" in proc.stderr.strip().splitlines()[-1], proc.stderr
    assert MARK not in proc.stderr


def test_an_import_that_works_never_reads_the_folder():
    # The check is imported only after a failure.
    proc = run("/", "import sys, seqtools; print('seqtools._unbuilt' in sys.modules)")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["False"]


# -- pip install -e ------------------------------------------------------------------


@pytest.mark.skipif(os.environ.get("SEQTOOLS_TEST_EDITABLE") != "1",
                    reason="builds the extensions (minutes): SEQTOOLS_TEST_EDITABLE=1")
@pytest.mark.timeout(1200)
def test_editable_install(tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    lay_out(clone)
    for name in ["pyproject.toml", "setup.py", "MANIFEST.in", "README.md"]:
        shutil.copy2(REPO / name, clone / name)
    shutil.copytree(REPO / "csrc", clone / "csrc",
                    ignore=shutil.ignore_patterns("test_ringbuf*", "*.o"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    pip = subprocess.run([python, "-m", "pip", "install", "-q", "-e", clone],
                         capture_output=True, text=True, timeout=1100)
    assert pip.returncode == 0, pip.stdout + pip.stderr

    code = ("import seqtools; print(seqtools.__file__, "
            "list(seqtools.gather('abcd', [3, 0])))")
    expected = [str(clone / "seqtools" / "__init__.py"), "['d',", "'a']"]
    for cwd in ["/", clone, REPO / "tests"]:  # REPO/tests: holds no seqtools/
        proc = subprocess.run([python, "-c", code], cwd=cwd, capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, (cwd, proc.stderr)
        assert proc.stdout.split() == expected, cwd

    # An extension gone (as after a pull that adds a .pyx), imported through the
    # editable install from elsewhere: the error says to build again.
    ext = importlib.util.find_spec("seqtools.loaders._transport").origin
    (clone / "seqtools" / "loaders" / pathlib.Path(ext).name).unlink()
    proc = subprocess.run([python, "-c", "import seqtools"], cwd="/",
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last == f"Build them in place again: `pip install -e {clone}`.", proc.stderr
