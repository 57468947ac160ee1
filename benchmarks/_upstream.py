"""The benchmarks' other interpreters: SeqTools 1.4.1's, and ours in a child process.

SeqTools 1.4.1 and seqtools share an import name, so the upstream rows run in an
interpreter of their own. ``--upstream-python PATH`` names one; ``--upstream-python
auto`` uses a virtual environment with SeqTools 1.4.1 and this interpreter's numpy
version, created on first use in the user's cache folder (:func:`interpreter`).

Every benchmark runs code there one way, :class:`Child`: a function of a benchmark
module, called in the other interpreter, that reads requests and writes answers as
JSON lines. The child imports seqtools first and says where from; the parent
checks that before it lets the function run:

- upstream: run isolated (``python -I``: neither the current folder, the script's
  folder nor PYTHONPATH on ``sys.path``) from a temporary folder, and it must
  import SeqTools 1.4.1 from that interpreter's own prefix. Run from a checkout of
  ours, a plain ``python -c`` would import *our* package under the same name, and
  time it instead;
- ours (a child of this interpreter, so that both sides of a comparison run
  alike): this process's environment unchanged, and it must import the very
  package this process imports.

Only then does the benchmarks folder join the child's ``sys.path``, so that the
benchmark module's own ``import seqtools`` finds the package already imported.
"""

import json
import os
import select
import subprocess
import sys
import tempfile
from contextlib import closing

VERSION = "1.4.1"
TIMEOUT = 600  # seconds a child may take to answer, the longest measurement included
HERE = os.path.dirname(os.path.abspath(__file__))

# Runs in the child (any Python 3.8+): argv is [benchmarks folder, "module:function"
# or "", the function's argument as JSON].
BOOTSTRAP = """
import json, sys
from importlib.metadata import version
import numpy, seqtools
print(json.dumps({"file": seqtools.__file__, "prefix": sys.prefix,
                  "version": version("seqtools"), "numpy": numpy.__version__,
                  "python": sys.version.split()[0]}), flush=True)
if sys.argv[2] and sys.stdin.readline().strip() == "go":
    sys.path.insert(0, sys.argv[1])
    module, function = sys.argv[2].split(":")
    getattr(__import__(module), function)(json.loads(sys.argv[3]))
"""


class ChildFailed(RuntimeError):
    """A child did not start, imported the wrong seqtools, or stopped answering."""


def reply(obj):
    """In a child: send ``obj`` to the parent (one JSON line)."""
    print(json.dumps(obj), flush=True)


def requests():
    """In a child: the parent's requests, until it closes our input."""
    for line in sys.stdin:
        yield json.loads(line)


class Child:
    """``target`` ("module:function" in benchmarks/, or None to only say what it
    imports) called with ``spec`` in interpreter ``python``, upstream's or ours.

    ``upstream`` True: isolated, and checked to import SeqTools 1.4.1 from that
    interpreter's own prefix; False: this environment, checked to import the
    seqtools this process imports. :attr:`hello` is what the child imported
    (file, prefix, version, numpy, python). Raises :class:`ChildFailed`.
    """

    def __init__(self, python, target, spec=None, upstream=True):
        self.proc = None
        self.err = tempfile.TemporaryFile(mode="w+")  # a pipe could fill and block
        cmd = [python, "-I"] if upstream else [python]
        try:
            self.proc = subprocess.Popen(
                cmd + ["-c", BOOTSTRAP, HERE, target or "", json.dumps(spec)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err,
                text=True, cwd=tempfile.gettempdir())
        except OSError as e:
            raise ChildFailed(f"{python}: {e}") from None
        self.hello = self.read()
        problem = (_not_upstream(self.hello) if upstream
                   else _not_ours(self.hello))
        if problem:
            self.close()
            raise ChildFailed(f"{python} {problem}")
        if target:
            self._send("go")

    def _send(self, line):
        try:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
        except OSError:
            self._fail("stopped reading")

    def read(self, timeout=TIMEOUT):
        """The child's next answer (a dict)."""
        # One line per request and nothing unasked, so nothing waits in the
        # reader's buffer while select looks at the pipe.
        if not select.select([self.proc.stdout], [], [], timeout)[0]:
            self.proc.kill()
            self._fail(f"did not answer within {timeout} s")
        line = self.proc.stdout.readline()
        if not line:
            self._fail("exited")
        return json.loads(line)

    def ask(self, request, timeout=TIMEOUT):
        """Send ``request`` (JSON-able), return the answer."""
        self._send(json.dumps(request))
        return self.read(timeout)

    def _fail(self, what):
        self.close()
        self.err.seek(0)
        last = self.err.read().strip().splitlines()[-3:]
        raise ChildFailed(f"child {what}: " + (" | ".join(last) or "no error output"))

    def close(self):
        """Close the child's input (its cue to finish) and wait for it."""
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _not_upstream(hello):
    own = os.path.realpath(hello["prefix"]) + os.sep
    if hello["version"] != VERSION or not os.path.realpath(hello["file"]).startswith(
            own):
        return (f"imported seqtools {hello['version']} from {hello['file']}, not "
                f"SeqTools {VERSION} from its own site-packages")
    return None


def _not_ours(hello):
    import seqtools

    if os.path.realpath(hello["file"]) != os.path.realpath(seqtools.__file__):
        return (f"imported seqtools from {hello['file']}, not {seqtools.__file__} "
                "as this process does")
    return None


def describe(python):
    """"SeqTools 1.4.1 (numpy X, Python Y)" for the interpreter, or why not."""
    try:
        with closing(Child(python, None)) as child:
            h = child.hello
    except ChildFailed as e:
        return f"not usable: {e}"
    return f"SeqTools {h['version']} (numpy {h['numpy']}, Python {h['python']})"


def default_venv():
    """The virtual environment ``--upstream-python auto`` uses, one per Python."""
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    tag = f"py{sys.version_info[0]}.{sys.version_info[1]}"
    return os.path.join(cache, "seqtools-benchmarks", f"upstream-{VERSION}-{tag}")


def interpreter(choice, log=None):
    """The interpreter for the upstream rows, from ``--upstream-python``.

    None or "" gives None (no upstream rows); "auto" the python of
    :func:`default_venv`, created there first if it is missing (with pip:
    SeqTools 1.4.1 and the numpy version this interpreter has), or None if that
    fails (said through ``log``); anything else is taken as the path it is.
    """
    if choice != "auto":
        return choice or None
    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    venv = default_venv()
    python = os.path.join(venv, "bin", "python")
    done = os.path.join(venv, "complete")  # written last: a half-made venv lacks it
    if os.path.exists(done):
        return python
    from importlib.metadata import version

    log(f"creating {venv} with SeqTools {VERSION} (once)")
    import shutil

    shutil.rmtree(venv, ignore_errors=True)
    steps = [[sys.executable, "-m", "venv", venv],
             [python, "-m", "pip", "install", "-q", f"seqtools=={VERSION}",
              f"numpy=={version('numpy')}"]]
    for cmd in steps:
        out = subprocess.run(cmd, capture_output=True, text=True,
                             cwd=tempfile.gettempdir())
        if out.returncode:
            last = (out.stderr or out.stdout).strip().splitlines()[-2:]
            log(f"upstream rows skipped: {' '.join(cmd[:3])} failed: "
                + " | ".join(last))
            return None
    with open(done, "w") as f:
        f.write(describe(python) + "\n")
    return python
