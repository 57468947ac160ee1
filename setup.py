"""Extension list and build switches; all metadata lives in pyproject.toml.

Environment switches:
  SEQTOOLS_DEBUG=1     Cython bounds/wraparound checks on, -O0 -g.
  SEQTOOLS_SANITIZE=1  build with -fsanitize=address,undefined (run the tests with
                       LD_PRELOAD of libasan, see .ci/sanitize).
"""

import os

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

DEBUG = os.environ.get("SEQTOOLS_DEBUG", "") == "1"
SANITIZE = os.environ.get("SEQTOOLS_SANITIZE", "") == "1"

cflags = ["-O0", "-g"] if DEBUG else ["-O3"]
ldflags = []
if SANITIZE:
    cflags += ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g"]
    ldflags += ["-fsanitize=address,undefined"]
# The numpy C API of the oldest numpy supported (pyproject: numpy>=1.23): the
# allocation-handler functions (NEP 49, numpy 1.22) are declared only from there,
# and numpy 2.0's headers target 1.19 by default (what Python 3.9 builds get).
macros = [("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION"),
          ("NPY_TARGET_VERSION", "NPY_1_23_API_VERSION")]


def ext(name, sources, **kw):
    return Extension(
        name,
        sources,
        define_macros=macros + kw.pop("define_macros", []),
        extra_compile_args=cflags + kw.pop("extra_compile_args", []),
        extra_link_args=ldflags + kw.pop("extra_link_args", []),
        **kw,
    )


extensions = [
    ext(
        "seqtools.views._indexing",
        ["seqtools/views/_indexing.pyx"],
        include_dirs=[numpy.get_include()],  # the numpy C API, for index arrays
    ),
    ext("seqtools.views._indexmaps", ["seqtools/views/_indexmaps.pyx"]),
    # csrc/copypool.h for the job struct only (its copy jobs run in _copypool).
    ext("seqtools.batching._stack", ["seqtools/batching/_stack.pyx"],
        include_dirs=["csrc"]),
    # The pool of copy threads (csrc/copypool.c) of thread loaders.
    ext("seqtools.loaders._copypool",
        ["seqtools/loaders/_copypool.pyx", "csrc/copypool.c"],
        include_dirs=["csrc"], extra_compile_args=["-pthread"],
        extra_link_args=["-pthread"]),
    ext(
        "seqtools.loaders._ring",
        ["seqtools/loaders/_ring.pyx", "csrc/ringbuf.c", "csrc/watchdog.c", "csrc/shm.c",
         "csrc/allochook.c"],
        include_dirs=["csrc", numpy.get_include()],  # the allocation hook (NEP 49)
        define_macros=[("_GNU_SOURCE", "1")],
        extra_compile_args=["-pthread"],
        extra_link_args=["-pthread"],
    ),
    # Test-only entry points into the modules above (tests/ import it, the package
    # does not); the ring through _ring's declarations, not linked again.
    ext("seqtools._testing", ["seqtools/_testing.pyx"], include_dirs=["csrc"]),
    # A cached remote object's block files mapped side by side (seqtools.storage).
    ext("seqtools.storage._objmap", ["seqtools/storage/_objmap.pyx"]),
    # Reads and writes ring payloads in place; calls the ring through _ring.Ring.
    ext("seqtools.loaders._transport", ["seqtools/loaders/_transport.pyx"],
        include_dirs=[numpy.get_include(), "csrc"]),
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": DEBUG,
            "wraparound": DEBUG,
            "cdivision": not DEBUG,
            "initializedcheck": DEBUG,
            "embedsignature": True,
            # Py_mod_gil = Py_MOD_GIL_NOT_USED: importing the modules leaves a
            # free-threaded (3.13t) interpreter's GIL off, so their shared state
            # must be guarded or per call (tests/test_freethreading.py).
            # Cython >= 3.1 (pyproject's floor): 3.0 rejects the directive.
            "freethreading_compatible": True,
        },
    )
)
